#!/usr/bin/env bash
# fuzz/smoke.sh: a short run of every fuzz target for the test suite (scripts/test.sh, phase "fuzz
# smoke"): one instrumented build, then SECONDS_TO_RUN (default 8) seconds per target, starting
# from the seeds alone (FRESH_CORPUS=1, so the time is the same on every run). Exits non-zero if
# any target finds a crash, a trap, a leak or a hang. TARGET=name runs one. See fuzz/run.sh.
set -euo pipefail
SECONDS_TO_RUN=${SECONDS_TO_RUN:-8} FRESH_CORPUS=${FRESH_CORPUS:-1} exec "$(dirname "$0")/run.sh" "$@"

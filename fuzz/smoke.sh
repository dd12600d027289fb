#!/usr/bin/env bash
# fuzz/smoke.sh: a short run of every fuzz target for the test suite (scripts/test.sh, phase "fuzz
# smoke"): one instrumented build, then SECONDS_TO_RUN (default 8) seconds per target, two targets
# at a time (JOBS, default 2: one per core), each from its seeds alone (FRESH_CORPUS=1, so a run
# takes the same time however large the working corpus has grown). Exits non-zero if any target
# finds a crash, a trap, a leak or a hang. TARGET=name runs one. See fuzz/run.sh.
set -euo pipefail
SECONDS_TO_RUN=${SECONDS_TO_RUN:-8} FRESH_CORPUS=${FRESH_CORPUS:-1} JOBS=${JOBS:-2} \
    exec "$(dirname "$0")/run.sh" "$@"

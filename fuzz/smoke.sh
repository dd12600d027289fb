#!/usr/bin/env bash
# fuzz/smoke.sh: a short fuzz run of the config loader for the test suite (about 20 s after the
# build): exits non-zero if libFuzzer finds a crash, a hang or a leak. See fuzz/run.sh.
set -euo pipefail
SECONDS_TO_RUN=${SECONDS_TO_RUN:-20} exec "$(dirname "$0")/run.sh" "$@"

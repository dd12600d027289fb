#!/usr/bin/env bash
# test.sh: THE test command (CI's .ci/run calls it). Phases: setup, build, unit tests, integration tests.
# Unit = `swift test` (Swift Testing and XCTest); integration = pytest on Tests/integration against the
# debug engine-server and vllm-sim binaries. Exits non-zero if any phase fails; extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

suite_start=$SECONDS
summary=()
failed=0
failed_prefixes=()  # xUnit file prefixes of the test phases that failed (for test_summary.py)
results=.build/test-results
rm -rf "$results"
mkdir -p "$results"

banner() {
    printf '\n######## test.sh: %s ########\n' "$1"
}

# run_phase NAME CMD...: runs CMD, records its status and wall time; never aborts the script.
run_phase() {
    local name=$1
    shift
    banner "$name"
    local start=$SECONDS status=0
    "$@" || status=$?
    local took=$((SECONDS - start))
    if ((status == 0)); then
        summary+=("$(printf '%-20s ok      %4ds' "$name" "$took")")
    else
        summary+=("$(printf '%-20s FAILED  %4ds  (exit %d)' "$name" "$took" "$status")")
        failed=1
    fi
    echo "######## test.sh: $name: exit $status in ${took}s"
    return "$status"
}

finish() {
    banner "summary"
    printf '%s\n' "${summary[@]}"
    echo "total: $((SECONDS - suite_start))s"
    python3 scripts/test_summary.py "$results" "${failed_prefixes[@]}" || true
    if ((failed)); then
        echo "test.sh: FAILED"
        exit 1
    fi
    echo "test.sh: all phases passed"
    exit 0
}

run_phase "setup" bash scripts/setup.sh || {
    failed_prefixes+=(setup)
    finish
}
run_phase "build" swift build --build-tests || {
    failed_prefixes+=(build)
    finish
}

bin_path=$(swift build --show-bin-path)
export ENGINE_BIN="$bin_path/engine-server"
export SIM_BIN="$bin_path/vllm-sim"

# Unit and integration tests both run even if the other fails, so one run shows everything.
# Each writes xUnit XML into $results; test_summary.py adds them up into the closing line.
run_phase "unit tests" swift test --skip-build --xunit-output "$results/swift.xml" ||
    failed_prefixes+=(swift)
# `timeout` bounds the integration phase (the whole suite must stay well under CI's limit);
# the fixtures kill every process they start, whatever happens.
run_phase "integration tests" \
    timeout --kill-after=30 900 .venv/bin/python -m pytest -q --junitxml="$results/pytest.xml" \
    Tests/integration "$@" ||
    failed_prefixes+=(pytest)

finish

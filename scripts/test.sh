#!/usr/bin/env bash
# test.sh: THE test command (CI's .ci/run calls it). Phases: setup, build, style checks, unit tests,
# fuzz smoke, integration tests. Unit = `swift test` (Swift Testing and XCTest); fuzz smoke =
# fuzz/smoke.sh (every libFuzzer target a few seconds); integration = pytest on Tests/integration
# against the debug engine-server and vllm-sim binaries. Exits non-zero if any phase fails; extra args
# go to pytest.
# shellcheck disable=SC2317 # the phase functions are called through run_phase "$@"
set -euo pipefail
cd "$(dirname "$0")/.."

suite_start=$SECONDS
summary=()
failed=0
failed_prefixes=() # xUnit file prefixes of the phases that failed (see scripts/test_summary.py)
results=.build/test-results
unit_redis_pid=""

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

# Prints the phase table and, last, one line "tests: N passed, N failed, N skipped"; exits.
finish() {
    stop_unit_redis
    banner "summary"
    printf '%s\n' "${summary[@]}"
    echo "total: $((SECONDS - suite_start))s"
    if ((failed)); then
        echo "test.sh: FAILED"
    else
        echo "test.sh: all phases passed"
    fi
    python3 scripts/test_summary.py "$results" "${failed_prefixes[@]}" || true
    exit "$failed"
}

# A private redis-server for the Swift live Redis tests (ENGINE_TEST_REDIS_URL), unless one is
# named already. The Python fixtures start their own.
start_unit_redis() {
    local port i
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
        --dir "$PWD/$results" --enable-debug-command local >"$results/unit-redis.log" 2>&1 &
    unit_redis_pid=$!
    for ((i = 0; i < 100; i++)); do
        if [[ "$(redis-cli -p "$port" ping 2>/dev/null)" == PONG ]]; then
            export ENGINE_TEST_REDIS_URL="redis://127.0.0.1:$port"
            echo "test.sh: redis-server for the unit tests at $ENGINE_TEST_REDIS_URL"
            return 0
        fi
        kill -0 "$unit_redis_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "test.sh: redis-server for the unit tests did not start:" >&2
    cat "$results/unit-redis.log" >&2
    return 1
}

stop_unit_redis() {
    if [[ -n "$unit_redis_pid" ]]; then
        kill "$unit_redis_pid" 2>/dev/null || true
        wait "$unit_redis_pid" 2>/dev/null || true
        unit_redis_pid=""
    fi
}

unit_tests() {
    if [[ -z "${ENGINE_TEST_REDIS_URL:-}" ]]; then
        start_unit_redis || return 1
    fi
    local status=0
    swift test --skip-build --xunit-output "$results/swift.xml" || status=$?
    stop_unit_redis
    return "$status"
}

integration_tests() {
    local bin_path
    bin_path=$(swift build --show-bin-path)
    # `timeout` bounds the phase (the suite must stay well under CI's limit); the fixtures kill
    # every process they start, whatever happens.
    ENGINE_BIN="$bin_path/engine-server" SIM_BIN="$bin_path/vllm-sim" \
        timeout --kill-after=30 900 .venv/bin/python -m pytest -q --junitxml="$results/pytest.xml" \
        Tests/integration "$@"
}

# One instrumented build of Sources/fuzz-engine (its own scratch path, .build-fuzz), then each fuzz
# target for a few seconds from its seeds; a crash, trap, leak or hang fails the phase (the report
# is in the output, the input in fuzz/findings/).
fuzz_smoke() {
    bash fuzz/smoke.sh
}

build() {
    swift build --build-tests 2>&1 | tee "$results/build.log"
}

# A Swift file that is pure (style.md A and B: standard library only, no I/O) says so with this
# exact line in its header; every *Machine.swift is pure by its name, marker or not.
pure_marker='// Pure: no imports, no I/O.'

# Pure files import nothing: no module, not even Glibc or one of our C targets. Any form counts:
# `import M`, `import struct M.T`, attributed (`@testable`, `@preconcurrency`, `@_spi(X)`), and
# indented (inside `#if canImport(...)`).
purity_check() {
    local pure offenders
    mapfile -t pure < <({
        find Sources -name '*Machine.swift'
        grep -rlxF --include='*.swift' -- "$pure_marker" Sources
    } | sort -u)
    offenders=$(grep -lE '^[[:space:]]*(@[[:alnum:]_]+(\([^)]*\))?[[:space:]]+)*import[[:space:]]' /dev/null "${pure[@]}" || true)
    if [[ -n "$offenders" ]]; then
        echo "style: these pure files (*Machine.swift or '$pure_marker') import modules:"
        echo "$offenders"
        return 1
    fi
    echo "style: ${#pure[@]} pure files import nothing"
}

# House rules a machine can check (style.md A and L): pure files import nothing (purity_check),
# and our own sources compile without warnings.
style_checks() {
    local status=0 warnings
    purity_check || status=1
    # Only this repository's files (dependencies under .build/ have their own Sources/).
    warnings=$(grep -E "^$PWD/(Sources|Tests)/[^:]+:[0-9]+:[0-9]+: warning:" "$results/build.log" | sort -u || true)
    if [[ -n "$warnings" ]]; then
        echo "style: compiler warnings in our sources:"
        echo "$warnings"
        status=1
    fi
    ((status == 0)) && echo "style: ok (pure files, no warnings)"
    return "$status"
}

trap stop_unit_redis EXIT
rm -rf "$results"
mkdir -p "$results"

if ! run_phase "setup" bash scripts/setup.sh --promtool; then
    failed_prefixes+=(setup)
    finish
fi
if ! run_phase "build" build; then
    failed_prefixes+=(build)
    finish
fi
run_phase "style checks" style_checks || failed_prefixes+=(style)
# The test phases all run even if one fails, so one run shows everything.
run_phase "unit tests" unit_tests || failed_prefixes+=(swift)
run_phase "fuzz smoke" fuzz_smoke || failed_prefixes+=(fuzz)
run_phase "integration tests" integration_tests "$@" || failed_prefixes+=(pytest)
finish

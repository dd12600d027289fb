#!/usr/bin/env bash
# fuzz/run.sh: build the fuzz targets (Sources/fuzz-engine, one executable) with libFuzzer and
# AddressSanitizer, then run them: `TARGET=name SECONDS_TO_RUN=N fuzz/run.sh` runs one target for
# N seconds (default 60); without TARGET every target runs, one after another, N seconds each.
# Targets: config, request, upstream, sse, usage (Sources/fuzz-engine/*Target.swift say what each
# one feeds and checks). Extra arguments go to libFuzzer. Exits non-zero if any target failed.
#
# Per target: the working corpus is .build-fuzz/corpus/<target> (it grows as libFuzzer finds new
# coverage; FRESH_CORPUS=1 uses an emptied .build-fuzz/corpus-fresh/<target> instead, so a short
# run's time goes to fuzzing, not to replaying a large corpus), the seeds fuzz/seeds/<target>/ (read only; config also reads configs/), the
# dictionary fuzz/dicts/<target>.dict when there is one, and the findings (crash-*, leak-*,
# timeout-*, oom-*) land in fuzz/findings/<target>-*. Replay one without sanitizers:
# `swift build --product fuzz-engine && .build/debug/fuzz-engine fuzz/findings/sse-crash-…`
# (the file name's prefix picks the target; FUZZ_TARGET overrides it). JOBS=N runs N targets at
# once (default 1).
#
# How the entry point works: -sanitize=fuzzer links libFuzzer and instruments the Swift code;
# LLVMFuzzerTestOneInput is our @_cdecl function. libFuzzer's own `main` cannot be used, because
# SwiftPM links every executable with `--defsym main=<module>_main` (its entry point renamed, for
# testable executables), so the link fails unless `fuzz_engine_main` exists. So -D FUZZING swaps
# the target's `@main` replay tool for a `fuzz_engine_main` that reads FUZZ_TARGET and calls
# LLVMFuzzerRunDriver (libFuzzer's documented driver entry). The target has no main.swift on
# purpose: a main.swift always defines an entry point, and -parse-as-library (which SwiftPM passes
# when there is none) rejects its top-level code even inside an inactive `#if`.
# The C and C++ targets (CEventShim, CRequestScan: the request validator) are instrumented too
# (-fsanitize=fuzzer-no-link,address), so libFuzzer sees their coverage; Debian's libraries
# (http-parser, jansson, simdjson, libyaml) are not.
# A separate scratch path keeps the instrumented objects away from the normal .build.
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(config request upstream sse usage)
seconds=${SECONDS_TO_RUN:-60}
scratch=.build-fuzz
findings=fuzz/findings

if [[ -n "${TARGET:-}" ]]; then
    targets=("$TARGET")
else
    targets=("${all_targets[@]}")
fi
for t in "${targets[@]}"; do
    if [[ ! " ${all_targets[*]} " == *" $t "* ]]; then
        echo "fuzz/run.sh: unknown TARGET '$t' (expected one of: ${all_targets[*]})" >&2
        exit 2
    fi
done

# The grep drops gold's harmless "Cannot export local symbol '__asan_…'" warnings (hundreds of
# lines per link); pipefail keeps swift build's status.
build_start=$SECONDS
swift build -c debug --product fuzz-engine --scratch-path "$scratch" \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING \
    -Xcc -fsanitize=fuzzer-no-link,address -Xcxx -fsanitize=fuzzer-no-link,address 2>&1 |
    { grep -v "Cannot export local symbol '__asan" || true; }
echo "fuzz/run.sh: build took $((SECONDS - build_start))s"

# A trap must reach libFuzzer's deadly-signal handler (which saves the input) directly: the Swift
# runtime's backtracer would run first and trip ASan reading the stack.
export SWIFT_BACKTRACE=enable=no
mkdir -p "$findings" "$scratch/logs"

# Runs target $1; its output goes to .build-fuzz/logs/<target>.log, its exit status to .status.
run_target() {
    local t=$1 corpus=$scratch/corpus/$1 status=0
    shift
    if [[ "${FRESH_CORPUS:-0}" == 1 ]]; then
        corpus=$scratch/corpus-fresh/$t
        rm -rf "$corpus"
    fi
    mkdir -p "$corpus"
    local seeds=("fuzz/seeds/$t")
    [[ "$t" == config ]] && seeds+=(configs)
    local opts=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$findings/$t-")
    # -max_len: short inputs mutate faster; the config loader refuses more than 1 MiB anyway.
    if [[ "$t" == config ]]; then opts+=(-max_len=16384); else opts+=(-max_len=8192); fi
    [[ -f "fuzz/dicts/$t.dict" ]] && opts+=(-dict="fuzz/dicts/$t.dict")
    FUZZ_TARGET=$t "$scratch/debug/fuzz-engine" "$corpus" "${seeds[@]}" "${opts[@]}" "$@" \
        >"$scratch/logs/$t.log" 2>&1 || status=$?
    echo "$status" >"$scratch/logs/$t.status"
}

# JOBS targets at a time (default 1; each libFuzzer process uses one core).
jobs=${JOBS:-1}
running=0
for t in "${targets[@]}"; do
    echo "fuzz/run.sh: $t for ${seconds}s (log: $scratch/logs/$t.log)"
    rm -f "$scratch/logs/$t.status"
    run_target "$t" "$@" &
    running=$((running + 1))
    if ((running >= jobs)); then
        wait -n || true
        running=$((running - 1))
    fi
done
wait

summary=()
failed=0
for t in "${targets[@]}"; do
    log=$scratch/logs/$t.log
    status=$(cat "$scratch/logs/$t.status" 2>/dev/null || echo 1)
    # The last status line: "#N DONE cov: … ft: … corp: … exec/s: … rss: …".
    done_line=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -E 's/^#([0-9]+)\s+\S+\s+/\1 execs, /' || true)
    if ((status == 0)); then
        summary+=("$(printf '%-9s ok      %s' "$t" "$done_line")")
    else
        failed=1
        summary+=("$(printf '%-9s FAILED  (exit %d) %s' "$t" "$status" "$done_line")")
        # The report: from the first error line (a Swift trap's message, the sanitizer's or
        # libFuzzer's report) on.
        pattern='Fatal error|Precondition failed|^==[0-9]+==|ERROR: libFuzzer'
        first=$(grep -n -m1 -E "$pattern" "$log" | cut -d: -f1 || true)
        echo "fuzz/run.sh: $t failed:"
        if [[ -n "$first" ]]; then sed -n "$first,\$p" "$log" | head -60; else tail -30 "$log"; fi
    fi
done

echo "fuzz/run.sh: summary"
printf '  %s\n' "${summary[@]}"
ls "$findings"/*-{crash,leak,timeout,oom,slow-unit}-* >/dev/null 2>&1 && echo "fuzz/run.sh: findings in $findings/"
exit "$failed"

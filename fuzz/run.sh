#!/usr/bin/env bash
# fuzz/run.sh: build the config loader's libFuzzer target (Sources/fuzz-config) with libFuzzer and
# AddressSanitizer and run it for SECONDS_TO_RUN seconds (default 60), seeded from configs/*.yaml
# and fuzz/seeds/ (hand-written edge cases). Extra arguments go to libFuzzer.
# Findings (crash-*, timeout-*, oom-*) land in fuzz/findings/; replay one without sanitizers with
# `swift build --product fuzz-config && .build/debug/fuzz-config fuzz/findings/crash-…`.
#
# How the entry point works: -sanitize=fuzzer links libFuzzer and instruments the Swift code;
# LLVMFuzzerTestOneInput is our @_cdecl function. libFuzzer's own `main` cannot be used, because
# SwiftPM links every executable with `--defsym main=<module>_main` (its entry point renamed, for
# testable executables), so the link fails unless `fuzz_config_main` exists. So -D FUZZING swaps
# the target's `@main` replay tool for a `fuzz_config_main` that calls LLVMFuzzerRunDriver
# (libFuzzer's documented driver entry). The target has no main.swift on purpose: a main.swift
# always defines an entry point, and -parse-as-library (which SwiftPM passes when there is none)
# rejects its top-level code even inside an inactive `#if`.
# A separate scratch path keeps the instrumented objects away from the normal .build.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${SECONDS_TO_RUN:-60}
scratch=.build-fuzz
corpus=$scratch/corpus
findings=fuzz/findings

# The grep drops gold's harmless "Cannot export local symbol '__asan_…'" warnings (hundreds of
# lines per link); pipefail keeps swift build's status.
swift build -c debug --product fuzz-config --scratch-path "$scratch" \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING 2>&1 |
    { grep -v "Cannot export local symbol '__asan" || true; }

# The working corpus grows as libFuzzer finds new coverage; the seeds are copied in each run.
mkdir -p "$corpus" "$findings"
cp configs/*.yaml fuzz/seeds/*.yaml "$corpus"/

# -max_len: the loader refuses more than 1 MiB anyway, and short inputs mutate faster.
# -timeout: one input taking over 10 s is a hang. -rss_limit_mb: ASan's overhead included.
"$scratch/debug/fuzz-config" "$corpus" \
    -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$findings/" -print_final_stats=1 "${@}"

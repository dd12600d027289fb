// FuzzConfig.swift: a libFuzzer target for the config loader (fuzz/run.sh builds and runs it).
// Every input goes through ConfigLoader.parse(bytes:environment:), which may throw but must never
// crash, trap or hang. Built normally (`swift build`), this is a plain program that runs each file
// named on its command line through the same function, so a crash input found by libFuzzer can be
// replayed without the sanitizers: `.build/debug/fuzz-config crash-<sha1>`.
// The entry point (fuzz/run.sh explains why it is built this way): a plain build gets the `@main`
// replay tool; the fuzz build (-D FUZZING) instead gets `fuzz_config_main`, which hands control
// to libFuzzer's driver.

import Engine

#if canImport(Glibc)
import Glibc
#endif

/// One input: parse it, ignore the outcome. Errors are expected for most inputs; only a crash
/// (or a hang, which libFuzzer reports as a timeout) is a finding.
func run(_ bytes: [UInt8]) {
    _ = try? ConfigLoader.parse(bytes: bytes, environment: [:])
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    run(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

#if FUZZING
/// libFuzzer's driver, from libclang_rt.fuzzer (linked by -sanitize=fuzzer): parses the libFuzzer
/// flags in argv and runs `callback` on each input.
// STYLE-EXCEPTION: declared with @_silgen_name rather than in a C header, because only the fuzz
// build links libFuzzer and a C target for one prototype is more machinery than this. Every
// argument is a pointer, which Swift's calling convention passes exactly as C's does.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

/// SwiftPM links every executable with `main` renamed to `<module>_main`, so that name, not
/// `main`, is the program's entry point; without this function the link fails. Were SwiftPM to
/// stop renaming, libFuzzer's own `main` would run instead, to the same effect.
@_cdecl("fuzz_config_main")
public func fuzzConfigMain(
    _ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        // libFuzzer never passes a null pointer, not even for an empty input.
        data.map { fuzz($0, size) } ?? 0
    }
}
#else
/// The replay tool: runs each file named on the command line through `run`.
@main
enum ReplayFiles {
    static func main() {
        var failed = false
        for path in CommandLine.arguments.dropFirst() {
            guard let bytes = readFile(path) else {
                print("fuzz-config: cannot read \(path)")
                failed = true
                continue
            }
            run(bytes)
            print("fuzz-config: \(path): ok")
        }
        exit(failed ? 1 : 0)
    }

    /// Reads a whole file, or nil if it cannot be opened.
    static func readFile(_ path: String) -> [UInt8]? {
        guard let file = fopen(path, "rb") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            bytes.append(contentsOf: chunk[0..<count])
            if count < chunk.count { break }
        }
        return bytes
    }
}
#endif

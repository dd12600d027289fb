// FuzzMain.swift: the one libFuzzer executable (fuzz/run.sh builds and runs it) holding every fuzz
// target; FUZZ_TARGET (config | request | upstream | sse | usage) picks one, read once at start.
// One executable means one instrumented build. Each target takes any bytes and must never crash,
// trap, leak or hang; the targets also trap (precondition) when an invariant of the code under
// test breaks, so libFuzzer reports that too. Built normally (`swift build`), this is a replay
// tool that runs each file named on its command line through the same target, without sanitizers.
// The entry point (fuzz/run.sh explains why it is built this way): a plain build gets the `@main`
// replay tool; the fuzz build (-D FUZZING) instead gets `fuzz_engine_main`, which hands control
// to libFuzzer's driver.

#if canImport(Glibc)
import Glibc
#endif

/// The fuzz targets; each `run` takes one input.
enum FuzzTarget: String, CaseIterable, Sendable {
    case config, request, upstream, sse, usage

    func run(_ bytes: UnsafeRawBufferPointer) {
        switch self {
        case .config: ConfigTarget.run(bytes)
        case .request: RequestTarget.run(bytes)
        case .upstream: UpstreamTarget.run(bytes)
        case .sse: SSETarget.run(bytes)
        case .usage: UsageTarget.run(bytes)
        }
    }

    /// FUZZ_TARGET, or nil when it is unset.
    static func fromEnvironment() -> Result<FuzzTarget, FuzzTargetError>? {
        guard let raw = getenv("FUZZ_TARGET") else { return nil }
        let name = String(cString: raw)
        guard let t = FuzzTarget(rawValue: name) else { return .failure(FuzzTargetError(name: name)) }
        return .success(t)
    }

    static var names: String { allCases.map(\.rawValue).joined(separator: " | ") }
}

struct FuzzTargetError: Error {
    let name: String
    var description: String { "unknown FUZZ_TARGET '\(name)' (expected \(FuzzTarget.names))" }
}

/// The target of this process, set once before the first input (libFuzzer calls back through a
/// C function pointer, which cannot capture it).
// STYLE-EXCEPTION: process-wide state of a single-threaded test program; written once in main
// before libFuzzer runs, read-only afterwards.
nonisolated(unsafe) var selectedTarget = FuzzTarget.config

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    selectedTarget.run(UnsafeRawBufferPointer(start: data, count: size))
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
/// stop renaming, libFuzzer's own `main` would run instead (and FUZZ_TARGET would go unread: the
/// config target).
@_cdecl("fuzz_engine_main")
public func fuzzEngineMain(
    _ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    switch FuzzTarget.fromEnvironment() {
    case .success(let t)?:
        selectedTarget = t
    case .failure(let e)?:
        print("fuzz-engine: \(e.description)")
        return 2
    case nil:
        print("fuzz-engine: set FUZZ_TARGET (\(FuzzTarget.names))")
        return 2
    }
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        // libFuzzer never passes a null pointer, not even for an empty input.
        data.map { fuzzOneInput($0, size) } ?? 0
    }
}
#else
/// The replay tool: runs each file named on the command line through its target: FUZZ_TARGET, or
/// else the file name's prefix (run.sh names findings `<target>-crash-…`) or its folder's name.
@main
enum ReplayFiles {
    static func main() {
        var fixed: FuzzTarget?
        switch FuzzTarget.fromEnvironment() {
        case .success(let t)?: fixed = t
        case .failure(let e)?:
            print("fuzz-engine: \(e.description)")
            exit(2)
        case nil: break
        }
        var failed = false
        for path in CommandLine.arguments.dropFirst() {
            guard let target = fixed ?? target(fromFileName: path) else {
                print("fuzz-engine: \(path): set FUZZ_TARGET (\(FuzzTarget.names)), or name the file <target>-… or its folder <target>")
                failed = true
                continue
            }
            guard let bytes = readFile(path) else {
                print("fuzz-engine: cannot read \(path)")
                failed = true
                continue
            }
            selectedTarget = target
            bytes.withUnsafeBytes { target.run($0) }
            print("fuzz-engine: \(target.rawValue): \(path): ok")
        }
        exit(failed ? 1 : 0)
    }

    /// "sse" for "fuzz/findings/sse-crash-…" (the name's prefix) or "fuzz/seeds/sse/…" and
    /// ".build-fuzz/corpus/sse/…" (the folder's name).
    static func target(fromFileName path: String) -> FuzzTarget? {
        let parts = path.split(separator: "/")
        if let base = parts.last, let dash = base.firstIndex(of: "-"),
           let t = FuzzTarget(rawValue: String(base[..<dash])) {
            return t
        }
        return parts.dropLast().reversed().lazy.compactMap { FuzzTarget(rawValue: String($0)) }.first
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

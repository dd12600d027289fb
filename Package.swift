// swift-tools-version:6.0
// The Engine: an OpenAI-compatible proxy in front of vLLM, one libevent loop per process.
import PackageDescription

let releaseFast: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

// Release builds of the server link with the toolchain's lld and pack the executable's relative
// relocations (DT_RELR, glibc >= 2.36): a position-independent Swift binary has ~120,000 of them
// (~1 MB of .rela.dyn that every process reads at start-up); packed they take 8 KB. Idle RSS of
// the default config's three processes falls by ~2.2 MB (docs/performance.md).
let packedRelocations: LinkerSetting = .unsafeFlags(
    ["-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs"], .when(configuration: .release))

let package = Package(
    name: "Engine",
    products: [
        .executable(name: "engine-server", targets: ["engine-server"]),
        .executable(name: "vllm-sim", targets: ["vllm-sim"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // Plain C: Debian's libevent, hiredis, libyaml, http-parser, jansson and nettle (SHA-256),
        // plus ces_* wrappers for what Swift cannot call (macros, bitfields, the hiredis libevent adapter).
        .target(
            name: "CEventShim",
            linkerSettings: [
                .linkedLibrary("event_core"),
                .linkedLibrary("hiredis"),
                .linkedLibrary("yaml"),
                .linkedLibrary("http_parser"),
                .linkedLibrary("jansson"),
                .linkedLibrary("nettle"),
            ]
        ),
        // C++ over Debian's simdjson behind a C header: validates a request body and reads the few
        // fields the pipeline needs without building a tree (jansson builds one only when a stage
        // rewrites the body or keys the cache).
        .target(
            name: "CRequestScan",
            linkerSettings: [.linkedLibrary("simdjson"), .linkedLibrary("stdc++")]
        ),
        // The response cache the worker processes of one host share (a memfd segment, a robust
        // process-shared mutex): plain C because it is a layout of structs several processes use.
        .target(name: "CSharedCache"),
        // Plain C over Debian's libzmq and msgpack-c: vLLM's KV-cache events (subscribe, decode
        // strictly, and encode for the simulator). docs/vllm-kv-events.md has the wire format.
        // libzmq is loaded with dlopen when KV events are configured, not linked (kvevents.c).
        .target(
            name: "CKVEvents",
            linkerSettings: [.linkedLibrary("msgpackc")]
        ),
        // Release builds skip Swift's dynamic exclusivity checks on the data path (they showed up
        // as ~2 % of CPU under load); debug builds and tests keep them.
        .target(name: "Reactor", dependencies: ["CEventShim"], swiftSettings: releaseFast),
        .target(
            name: "Engine",
            dependencies: [
                "Reactor", "CEventShim", "CRequestScan", "CSharedCache", "CKVEvents",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: releaseFast
        ),
        .executableTarget(
            name: "engine-server",
            dependencies: [
                "Engine", "Reactor",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            linkerSettings: [packedRelocations]
        ),
        .executableTarget(
            name: "vllm-sim",
            dependencies: [
                "Reactor", "CEventShim", "CKVEvents",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // The libFuzzer targets (config, request, upstream, sse, usage; FUZZ_TARGET picks one);
        // fuzz/run.sh builds it with the sanitizers. A plain `swift build` gives a replay tool
        // for crash files.
        .executableTarget(name: "fuzz-engine", dependencies: ["Engine", "Reactor", "CEventShim"]),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "Reactor", "CSharedCache", "CKVEvents"]),
        .testTarget(name: "ReactorTests", dependencies: ["Reactor", "CEventShim"]),
        // The simulator's pure parts (request parsing, rendering, the embedding model).
        .testTarget(name: "VLLMSimTests", dependencies: ["vllm-sim"]),
    ],
    cxxLanguageStandard: .cxx17
)

// ConfigTarget (FUZZ_TARGET=config): every input goes through ConfigLoader.parse(bytes:environment:),
// which may throw but must never crash, trap or hang (the loader refuses deep nesting and big
// documents up front).
import Engine

enum ConfigTarget {
    static func run(_ bytes: UnsafeRawBufferPointer) {
        _ = try? ConfigLoader.parse(bytes: Array(bytes), environment: [:])
    }
}

// SSEUsageFilter: removes the usage-only chunk (`"choices":[]` with `"usage"`) from a relayed SSE
// stream. The Engine always asks vLLM for usage (stream_options.include_usage) so it can count
// tokens and cache complete answers, and strips that chunk for clients that did not ask for it.
// Pure value; events pass through untouched and unbuffered except a partial trailing event.

public struct SSEUsageFilter: Sendable {
    /// Bytes of an event whose end ("\n\n") has not arrived yet.
    private var partial: [UInt8] = []
    public private(set) var droppedEvents = 0

    public init() {}

    /// Appends to `out` what the client should get for `bytes`.
    public mutating func filter(_ bytes: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        var start = 0
        let n = bytes.count
        var i = 0
        // Find event ends ("\n\n"), counting a partial event carried from the last call.
        while i < n {
            if bytes[i] == 0x0A {
                let prevIsLF = i > 0 ? bytes[i - 1] == 0x0A : (partial.last == 0x0A)
                if prevIsLF {
                    emit(UnsafeRawBufferPointer(rebasing: bytes[start...i]), into: &out)
                    start = i + 1
                }
            }
            i += 1
        }
        if start < n { partial.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start..<n])) }
    }

    private mutating func emit(_ tail: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        if partial.isEmpty {
            if Self.isUsageOnly(tail) { droppedEvents += 1 } else { out.append(contentsOf: tail) }
            return
        }
        partial.append(contentsOf: tail)
        let ev = partial
        partial.removeAll(keepingCapacity: true)
        ev.withUnsafeBytes { p in
            if Self.isUsageOnly(p) { droppedEvents += 1 } else { out.append(contentsOf: p) }
        }
    }

    /// A `data: {...}` event whose choices are empty and that carries usage.
    static func isUsageOnly(_ ev: UnsafeRawBufferPointer) -> Bool {
        contains(ev, "\"choices\":[]") && contains(ev, "\"usage\":{")
    }

    private static func contains(_ hay: UnsafeRawBufferPointer, _ needle: StaticString) -> Bool {
        let nl = needle.utf8CodeUnitCount
        guard hay.count >= nl else { return false }
        let np = needle.utf8Start
        var i = 0
        while i + nl <= hay.count {
            if hay[i] == np[0] {
                var k = 1
                while k < nl && hay[i + k] == np[k] { k += 1 }
                if k == nl { return true }
            }
            i += 1
        }
        return false
    }
}

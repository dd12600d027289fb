// RequestID: a request's id before anything needs it as a String — the client's X-Request-Id
// when it sent a usable one, else 16 hex digits of a number from the loop's generator. A cache
// hit writes it from its bytes (its X-Request-Id header and the reply's id); the paths that keep
// it (sessions, errors, the access log) make the String, which for a new id is a heap allocation
// (16 bytes: one more than a small String holds).
// Pure: no imports, no I/O.

struct RequestID {
    /// The client's id (non-empty, at most 128 bytes), or nil: then `generated` is the id.
    let client: String?
    let generated: UInt64

    /// The id as the rest of the Engine passes it.
    var string: String {
        if let client { return client }
        return String(unsafeUninitializedCapacity: 16) { buf in
            writeHex(to: buf.baseAddress!)
            return 16
        }
    }

    /// Calls `body` with the id's bytes (valid only during the call).
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        if var client { return client.withUTF8 { body(UnsafeRawBufferPointer($0)) } }
        var digits: (UInt64, UInt64) = (0, 0)
        return withUnsafeMutableBytes(of: &digits) { d in
            writeHex(to: d.baseAddress!.assumingMemoryBound(to: UInt8.self))
            return body(UnsafeRawBufferPointer(d))
        }
    }

    /// `generated`'s 16 hex digits at `p`, its bytes most significant first.
    private func writeHex(to p: UnsafeMutablePointer<UInt8>) {
        for i in 0..<8 { Digest.writeHex(UInt8(truncatingIfNeeded: generated >> UInt64(56 - 8 * i)), to: p + 2 * i) }
    }
}

// Digest: SHA-256 (Debian's nettle) and lowercase hex, shared by the cache key, the
// API-key identities and the Redis script ids.
import CEventShim

enum Digest {
    static func sha256<C: Collection>(_ bytes: C) -> [UInt8] where C.Element == UInt8 {
        var md = [UInt8](repeating: 0, count: Int(CES_SHA256_BYTES))
        let done: Void? = bytes.withContiguousStorageIfAvailable { p in _ = ces_sha256(p.baseAddress, p.count, &md) }
        if done == nil {
            let copy = Array(bytes)
            copy.withUnsafeBufferPointer { p in _ = ces_sha256(p.baseAddress, p.count, &md) }
        }
        return md
    }

    static func sha256(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        var md = [UInt8](repeating: 0, count: Int(CES_SHA256_BYTES))
        _ = ces_sha256(bytes.baseAddress, bytes.count, &md)
        return md
    }

    /// SHA-256 of `bytes` in lowercase hex, the digest kept on the stack (no array per call).
    static func sha256Hex(_ bytes: UnsafeRawBufferPointer) -> String {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: Int(CES_SHA256_BYTES)) { md in
            _ = ces_sha256(bytes.baseAddress, bytes.count, md.baseAddress)
            return hex(UnsafeBufferPointer(md))
        }
    }

    /// A SHA-256 digest as a value (four words, no allocation), for tables keyed by digests.
    struct Value: Hashable {
        let w0, w1, w2, w3: UInt64

        init(sha256 bytes: UnsafeRawBufferPointer) {
            (w0, w1, w2, w3) = withUnsafeTemporaryAllocation(of: UInt64.self, capacity: 4) { md in
                _ = ces_sha256(bytes.baseAddress, bytes.count, UnsafeMutableRawPointer(md.baseAddress!).assumingMemoryBound(to: UInt8.self))
                return (md[0], md[1], md[2], md[3])
            }
        }

        /// The digest's 32 bytes, in order.
        func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
            var words = (w0, w1, w2, w3)
            return Swift.withUnsafeBytes(of: &words, body)
        }

        var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

        /// One word of the digest is already uniform: the tables keyed by digests (HitMemo, one
        /// lookup on every request) hash 8 bytes instead of 32; equality still compares all four.
        func hash(into h: inout Hasher) { h.combine(w0) }
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.withUnsafeBufferPointer { hex($0) }
    }

    static func hex(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
        String(unsafeUninitializedCapacity: bytes.count * 2) { out in
            guard let o = out.baseAddress else { return 0 }
            for (i, b) in bytes.enumerated() { writeHex(b, to: o + 2 * i) }
            return bytes.count * 2
        }
    }

    /// Every byte's two lowercase hex digits, in byte order ("00", "01", ... "ff").
    private static let hexPairs: StaticString = """
        000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
        202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\
        404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f\
        606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f\
        808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f\
        a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf\
        c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf\
        e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff
        """

    /// `b`'s two lowercase hex digits at `p` and `p + 1`: one two-byte copy from a table (a digit
    /// at a time cost ~13 instructions a byte; a digest is 32 bytes, a request id 8).
    @inline(__always)
    static func writeHex(_ b: UInt8, to p: UnsafeMutablePointer<UInt8>) {
        let pair = UnsafeRawPointer(hexPairs.utf8Start + 2 * Int(b)).loadUnaligned(as: UInt16.self)
        UnsafeMutableRawPointer(p).storeBytes(of: pair, as: UInt16.self)
    }
}

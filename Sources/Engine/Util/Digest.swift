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
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.withUnsafeBufferPointer { hex($0) }
    }

    static func hex(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
        String(unsafeUninitializedCapacity: bytes.count * 2) { out in
            let digits: StaticString = "0123456789abcdef"
            let d = digits.utf8Start
            for (i, b) in bytes.enumerated() {
                out[2 * i] = d[Int(b >> 4)]
                out[2 * i + 1] = d[Int(b & 0x0F)]
            }
            return bytes.count * 2
        }
    }
}

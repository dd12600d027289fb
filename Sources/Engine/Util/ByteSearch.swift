// ByteSearch: libc's memchr (vectorised) for the byte scans on the data path, e.g. the line ends
// of a relayed SSE stream, where a Swift loop over each byte showed up in profiles.
#if canImport(Glibc)
import Glibc
#endif

enum ByteSearch {
    /// The index of the first `byte` in `b[from...]`, or nil.
    @inline(__always)
    static func index(of byte: UInt8, in b: UnsafeRawBufferPointer, from: Int) -> Int? {
        guard from < b.count, let base = b.baseAddress, let p = memchr(base + from, Int32(byte), b.count - from) else { return nil }
        return base.distance(to: UnsafeRawPointer(p))
    }
}

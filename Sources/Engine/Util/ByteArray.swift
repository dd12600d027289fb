// ByteArray: a [UInt8] written in place, allocated by specialised code when it is small. The
// stdlib's `init(unsafeUninitializedCapacity:initializingWith:)` allocates in an unspecialised
// function (`_allocateBufferUninitialized`), which looks up `_ContiguousArrayStorage<UInt8>`'s
// type metadata at run time on every call: ~450 instructions, more than a cache hit's whole
// splice. Copying a buffer into an array allocates through specialised code instead.
// Pure: no imports, no I/O.

extension Array where Element == UInt8 {
    /// Like `init(unsafeUninitializedCapacity:initializingWith:)` (`body` writes at most `capacity`
    /// bytes and sets how many), for the request path's small arrays: up to 1 KiB is written on
    /// the stack (the size `withUnsafeTemporaryAllocation` always keeps there) and copied into
    /// the array; larger ones take the stdlib's initializer.
    init(smallCapacity capacity: Int, initializingWith body: (UnsafeMutableBufferPointer<UInt8>, inout Int) -> Void) {
        guard capacity <= 1024 else {
            self.init(unsafeUninitializedCapacity: capacity) { buf, n in body(buf, &n) }
            return
        }
        self = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: capacity) { buf in
            var n = 0
            body(buf, &n)
            precondition(n >= 0 && n <= capacity, "wrote \(n) bytes into \(capacity)")
            return Array(UnsafeBufferPointer(rebasing: buf[..<n]))
        }
    }
}

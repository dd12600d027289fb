// Array.removeAllKeepingCapacity(): a buffer reused from one read (or drain) to the next is
// emptied only when it holds something. removeAll(keepingCapacity:) on an array that never had
// storage still makes a new empty buffer: a call per array per read for nothing.
// Pure: no imports, no I/O.

extension Array {
    @inline(__always)
    mutating func removeAllKeepingCapacity() {
        if !isEmpty { removeAll(keepingCapacity: true) }
    }
}

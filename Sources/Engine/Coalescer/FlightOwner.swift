// FlightOwner: this process's name for one of its flights in claims and Redis ("<instance>-<n>",
// the flight's number in decimal), as a value: the claims in shared memory read its bytes from
// the stack, so a flight nobody follows never builds the name as a String (a heap string of ~20
// bytes, built and freed once per miss). Redis keys and commands use `string`.
// ClaimOwnerName: whatever names a claim's owner as bytes (this, or a String read from a claim).
// Pure: no imports, no I/O.

protocol ClaimOwnerName {
    /// The owner's name, as UTF-8 bytes valid only inside `body`.
    func withOwnerBytes<R>(_ body: (UnsafeBufferPointer<UInt8>) -> R) -> R
}

extension String: ClaimOwnerName {
    func withOwnerBytes<R>(_ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        var s = self
        return s.withUTF8(body)
    }
}

struct FlightOwner: ClaimOwnerName, Equatable {
    /// The process's instance id (EngineRuntime.instanceId).
    let instance: String
    /// The flight's number (its FlightID's raw value).
    let flight: UInt64

    /// Writes the name at the end of `out` (room for the instance's bytes, a dash and 20 digits),
    /// the number's digits first, from the last (no pass to count them: a claim and its end each
    /// write the name); where it starts.
    private func write(_ id: UnsafeBufferPointer<UInt8>, toEndOf out: UnsafeMutableBufferPointer<UInt8>) -> Int {
        var i = out.count
        var v = flight
        repeat {
            i -= 1
            out[i] = UInt8(truncatingIfNeeded: 48 &+ v % 10)
            v /= 10
        } while v > 0
        i -= 1
        out[i] = UInt8(ascii: "-")
        i -= id.count
        if let src = id.baseAddress, id.count > 0 { (out.baseAddress! + i).update(from: src, count: id.count) }
        return i
    }

    func withOwnerBytes<R>(_ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        var id = instance
        return id.withUTF8 { p in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: p.count + 21) { out in
                let start = write(p, toEndOf: out)
                return body(UnsafeBufferPointer(rebasing: out[start...]))
            }
        }
    }

    /// The name as a String (for Redis keys and commands).
    var string: String { withOwnerBytes { String(decoding: $0, as: UTF8.self) } }
}

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

    /// The number's decimal digits.
    private var digits: Int {
        var n = 1
        var v = flight
        while v >= 10 { v /= 10; n += 1 }
        return n
    }

    /// Writes the name at `out` (room for the instance's bytes, a dash and `digits`); its length.
    private func write(_ id: UnsafeBufferPointer<UInt8>, to out: UnsafeMutableBufferPointer<UInt8>, digits: Int) -> Int {
        if let src = id.baseAddress, id.count > 0 { out.baseAddress!.update(from: src, count: id.count) }
        out[id.count] = UInt8(ascii: "-")
        var v = flight
        var i = id.count + digits
        repeat {
            out[i] = UInt8(truncatingIfNeeded: 48 &+ v % 10)
            v /= 10
            i -= 1
        } while v > 0
        return id.count + 1 + digits
    }

    func withOwnerBytes<R>(_ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        var id = instance
        let d = digits
        return id.withUTF8 { p in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: p.count + 1 + d) { out in
                let n = write(p, to: out, digits: d)
                return body(UnsafeBufferPointer(rebasing: out[0..<n]))
            }
        }
    }

    /// The name as a String (for Redis keys and commands).
    var string: String {
        var id = instance
        let d = digits
        return id.withUTF8 { p in
            String(unsafeUninitializedCapacity: p.count + 1 + d) { out in write(p, to: out, digits: d) }
        }
    }
}

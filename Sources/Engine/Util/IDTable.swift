// IDTable: a map from an id our own code hands out (a counter: the coalescer's request ids) to a
// value. Linear probing with backward-shift deletion (OpenAddressing) and a multiplicative hash
// instead of Dictionary's seeded SipHash, which cost ~200 instructions per lookup, insertion or
// removal — a handful of each for every request that misses the cache. Only for keys no client
// chooses or can compute (our own ids, or a hash keyed with a secret seed): a seeded hash is what
// keeps crafted keys from piling into one run of the table.
// Pure: no imports, no I/O.

struct IDTable<Value> {
    private var slots: [(key: UInt64, value: Value)?]
    /// log2 of the slot count (a power of two).
    private var bits: Int
    private(set) var count = 0

    init() {
        bits = 4
        slots = Array(repeating: nil, count: 1 << 4)
    }

    var isEmpty: Bool { count == 0 }

    /// Fibonacci hashing: the top `bits` bits of the id times 2^64 / φ (consecutive ids spread).
    @inline(__always)
    private func home(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> UInt64(64 - bits))
    }

    /// The slot holding `key`, or nil.
    @inline(__always)
    private func find(_ key: UInt64) -> Int? {
        let mask = slots.count - 1
        var i = home(key)
        while let k = slots[i]?.key {
            if k == key { return i }
            i = (i + 1) & mask
        }
        return nil
    }

    subscript(key: UInt64) -> Value? {
        get { find(key).map { slots[$0]!.value } }
        set {
            if let v = newValue { insert(v, for: key) } else { removeValue(for: key) }
        }
    }

    func contains(_ key: UInt64) -> Bool { find(key) != nil }

    /// Sets `key`'s value (replacing any).
    mutating func insert(_ value: Value, for key: UInt64) {
        // At most half full: probe runs stay short. (Grown first, even when `key` is there and
        // only its value changes: then one probe run finds it or the empty slot it goes into — a
        // key is never past the first empty slot from its home.)
        if (count + 1) * 2 > slots.count { grow() }
        let mask = slots.count - 1
        var i = home(key)
        while let k = slots[i]?.key {
            if k == key {
                slots[i] = (key, value)
                return
            }
            i = (i + 1) & mask
        }
        slots[i] = (key, value)
        count += 1
    }

    @discardableResult
    mutating func removeValue(for key: UInt64) -> Value? {
        guard let found = find(key) else { return nil }
        let old = slots[found]!.value
        slots[found] = nil
        count -= 1
        // Backward shift: move later entries of the run into the hole unless that would put one
        // before its home.
        let mask = slots.count - 1
        var hole = found
        var j = (found + 1) & mask
        while let s = slots[j] {
            if !OpenAddressing.staysInPlace(home: home(s.key), hole: hole, at: j) {
                slots[hole] = s
                slots[j] = nil
                hole = j
            }
            j = (j + 1) & mask
        }
        return old
    }

    private mutating func grow() {
        let old = slots
        bits += 1
        slots = Array(repeating: nil, count: 1 << bits)
        count = 0
        for case let s? in old { insert(s.value, for: s.key) }
    }
}

extension IDTable: Sendable where Value: Sendable {}

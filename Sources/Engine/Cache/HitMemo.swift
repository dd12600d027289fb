// HitMemo: exact request bytes → the canonical cache key (and routing outcome) they produced, so
// a byte-identical repeat is answered from the in-process cache without parsing JSON, routing or
// canonicalising again. Keyed by SHA-256 over (endpoint, tenant, body): a collision would be
// SHA-256's. Only fresh entries are served this way (the embedded store at once, a Redis store
// after its GET); Cache-Control requests and everything else take the full pipeline. Bounded:
// cleared when full.
// Owns: its dictionary; loop-confined.

final class HitMemo {
    /// A class, not a struct: a hit takes the entry out of the table and hands it on, and a
    /// struct of three Strings cost a retain and a release of each per copy (~400 instructions a
    /// hit); an entry is one reference. Immutable.
    final class Entry {
        let cacheKey: String
        let servedModel: String
        /// The `model` the body named (nil when absent), for the access log of a hit.
        let requestedModel: String?
        let routed: Bool
        let stream: Bool
        let includeUsage: Bool

        init(cacheKey: String, servedModel: String, requestedModel: String?, routed: Bool, stream: Bool, includeUsage: Bool) {
            self.cacheKey = cacheKey
            self.servedModel = servedModel
            self.requestedModel = requestedModel
            self.routed = routed
            self.stream = stream
            self.includeUsage = includeUsage
        }
    }

    /// The SHA-256 of (endpoint, tenant, body), as a value: no string per request, and four words
    /// to hash in the table.
    typealias Key = Digest.Value

    // An open-addressing table (linear probing) indexed by the digest's first word, which is
    // already uniform: a Dictionary hashed it again (SipHash) on every lookup, ~230 instructions
    // a hit. Nothing is ever deleted (the table is cleared when full), so probing stops at the
    // first empty slot. Slots grow by doubling, at most three quarters full.
    private var keys: [Key?] = []
    private var entries: [Entry?] = []
    private(set) var count = 0
    let capacity: Int

    init(capacity: Int) { self.capacity = max(1, capacity) }

    static func rawKey(kind: EndpointKind, identity: String?, body: UnsafeRawBufferPointer) -> Key {
        let idCount = identity?.utf8.count ?? 0
        // The hashed bytes are assembled on the stack when they are small (a heap buffer otherwise).
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 2 + idCount + body.count) { buf in
            buf[0] = kind == .chat ? 0x63 : 0x70
            var n = 1
            if let identity {
                for b in identity.utf8 {
                    buf[n] = b
                    n += 1
                }
            }
            buf[n] = 0
            n += 1
            if let src = body.baseAddress, body.count > 0 { UnsafeMutableRawPointer(buf.baseAddress! + n).copyMemory(from: src, byteCount: body.count) }
            n += body.count
            return Key(sha256: UnsafeRawBufferPointer(start: buf.baseAddress, count: n))
        }
    }

    func get(_ key: Key) -> Entry? {
        guard !keys.isEmpty else { return nil }
        let i = slot(of: key)
        return keys[i] == nil ? nil : entries[i]
    }

    func put(_ key: Key, _ e: Entry) {
        if count >= capacity {
            // Full: start over (as the Dictionary was cleared), keeping the slots.
            for i in keys.indices {
                keys[i] = nil
                entries[i] = nil
            }
            count = 0
        }
        if 4 * (count + 1) > 3 * keys.count { grow() }
        let i = slot(of: key)
        if keys[i] == nil {
            keys[i] = key
            count += 1
        }
        entries[i] = e
    }

    /// Where `key` is, or the empty slot where it would go (the table is never full).
    private func slot(of key: Key) -> Int {
        keys.withUnsafeBufferPointer { k in
            let mask = k.count - 1
            var i = Int(truncatingIfNeeded: key.w0) & mask
            while let found = k[i], found != key { i = (i + 1) & mask }
            return i
        }
    }

    /// Twice the slots (64 at first), every entry placed again.
    private func grow() {
        let oldKeys = keys
        let oldEntries = entries
        let n = max(64, 2 * oldKeys.count)
        keys = [Key?](repeating: nil, count: n)
        entries = [Entry?](repeating: nil, count: n)
        for (i, k) in oldKeys.enumerated() {
            guard let k else { continue }
            let j = slot(of: k)
            keys[j] = k
            entries[j] = oldEntries[i]
        }
    }
}

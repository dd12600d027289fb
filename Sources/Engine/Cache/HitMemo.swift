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

    private var map: [Key: Entry] = [:]
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

    func get(_ key: Key) -> Entry? { map[key] }

    func put(_ key: Key, _ e: Entry) {
        if map.count >= capacity { map.removeAll(keepingCapacity: true) }
        map[key] = e
    }
}

// HitMemo: exact request bytes → the canonical cache key (and routing outcome) they produced, so
// a byte-identical repeat is answered from the in-process cache without parsing JSON, routing or
// canonicalising again. Keyed by SHA-256 over (endpoint, tenant, body): a collision would be
// SHA-256's. Only fresh entries are served this way (the embedded store at once, a Redis store
// after its GET); Cache-Control requests and everything else take the full pipeline. Bounded:
// cleared when full.
// Owns: its dictionary; loop-confined.

final class HitMemo {
    struct Entry {
        let cacheKey: String
        let servedModel: String
        /// The `model` the body named (nil when absent), for the access log of a hit.
        let requestedModel: String?
        let routed: Bool
        let stream: Bool
        let includeUsage: Bool
    }

    private var map: [String: Entry] = [:]
    let capacity: Int

    init(capacity: Int) { self.capacity = max(1, capacity) }

    static func rawKey(kind: EndpointKind, identity: String?, body: [UInt8]) -> String {
        var bytes: [UInt8] = [kind == .chat ? 0x63 : 0x70]
        if let identity { bytes += Array(identity.utf8) }
        bytes.append(0)
        bytes += body
        return Digest.hex(Digest.sha256(bytes))
    }

    func get(_ key: String) -> Entry? { map[key] }

    func put(_ key: String, _ e: Entry) {
        if map.count >= capacity { map.removeAll(keepingCapacity: true) }
        map[key] = e
    }
}

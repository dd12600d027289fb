// CacheKey: the response-cache key of a request, and the Cache-Control policy.
// Key = hex SHA-256 of (format tag, endpoint kind, served model, tenant or none, SHA-256 of the
// body's canonical form). The canonical form is written by CRequestScan from the same simdjson
// parse that validates the request (OpenAIRequest.canonicalDigest): the body minus the fields that
// do not change the output (stream, stream_options, user, model), object keys sorted at every
// depth, compact. Every variable-length field is length-prefixed, so no two inputs run together.
// Pure: no imports, no I/O.

public enum CacheKey {
    public static func make(kind: EndpointKind, servedModel: String, canonicalDigest: [UInt8], tenant: String?) -> String {
        let tag = "engine-cache-v2".utf8
        var bytes: [UInt8] = []
        bytes.reserveCapacity(tag.count + 3 + 3 * 8 + servedModel.utf8.count + (tenant?.utf8.count ?? 0) + canonicalDigest.count + 64)
        bytes += tag
        switch kind {
        case .chat: bytes.append(1)
        case .completion: bytes.append(2)
        case .relay(let r):
            bytes.append(3)
            appendField(&bytes, r.target.utf8)
        }
        appendField(&bytes, servedModel.utf8)
        if let tenant {
            bytes.append(1)
            appendField(&bytes, tenant.utf8)
        } else {
            bytes.append(0)
        }
        bytes += canonicalDigest
        return Digest.hex(Digest.sha256(bytes))
    }

    /// With `deterministicOnly`, only requests whose output is reproducible qualify:
    /// `temperature` exactly 0, or a non-null `seed`. Without it, every generation qualifies.
    /// A relayed route qualifies only when its answers are deterministic (embeddings).
    public static func isCacheable(_ request: OpenAIRequest, deterministicOnly: Bool) -> Bool {
        if case .relay(let r) = request.kind { return r.cacheable }
        return !deterministicOnly || request.isDeterministic
    }

    private static func appendField<C: Collection<UInt8>>(_ out: inout [UInt8], _ field: C) {
        var n = UInt64(field.count).bigEndian
        withUnsafeBytes(of: &n) { out += $0 }
        out += field
    }
}

/// The request's Cache-Control, as far as the response cache is concerned.
public enum CachePolicy {
    /// `no-store` → neither look up nor store; `no-cache` → skip the lookup but store the fresh
    /// answer; anything else (absent, `max-age=...`, unknown directives) → both.
    public static func from(cacheControl: String?) -> (lookup: Bool, store: Bool) {
        guard let cacheControl else { return (true, true) }
        var lookup = true
        var store = true
        for raw in cacheControl.split(separator: ",") {
            // Directive names are case-insensitive; ignore arguments (`no-cache="x"`).
            let name = raw.split(separator: "=", maxSplits: 1).first.map {
                $0.trimmingWhitespace().lowercased()
            } ?? ""
            switch name {
            case "no-store":
                lookup = false
                store = false
            case "no-cache":
                lookup = false
            default:
                break
            }
        }
        return (lookup, store)
    }
}

extension Substring {
    fileprivate func trimmingWhitespace() -> Substring {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return s
    }
}

// CacheKey: the response-cache key of a request, and the Cache-Control policy.
// Key = hex SHA-256 of (format tag, endpoint kind, served model, tenant or none, SHA-256 of the
// body's canonical form). The canonical form is written by CRequestScan from the same simdjson
// parse that validates the request (OpenAIRequest.canonicalDigest): the body minus the fields that
// do not change the output (stream, stream_options, user, model), object keys sorted at every
// depth, compact. Every variable-length field is length-prefixed, so no two inputs run together.
// Pure: no imports, no I/O.

public enum CacheKey {
    public static func make(kind: EndpointKind, servedModel: String, canonicalDigest: [UInt8], tenant: String?) -> String {
        canonicalDigest.withUnsafeBytes { make(kind: kind, servedModel: servedModel, canonicalDigest: $0, tenant: tenant) }
    }

    /// The same over OpenAIRequest's digest value (the request path: no array).
    static func make(kind: EndpointKind, servedModel: String, canonicalDigest: Digest.Value, tenant: String?) -> String {
        canonicalDigest.withUnsafeBytes { make(kind: kind, servedModel: servedModel, canonicalDigest: $0, tenant: tenant) }
    }

    private static func make(kind: EndpointKind, servedModel: String, canonicalDigest: UnsafeRawBufferPointer, tenant: String?) -> String {
        let tag = "engine-cache-v2".utf8
        var target: String?
        if case .relay(let r) = kind { target = r.target }
        let capacity = tag.count + 3 + 3 * 8 + (target?.utf8.count ?? 0) + servedModel.utf8.count + (tenant?.utf8.count ?? 0)
            + canonicalDigest.count
        // The hashed bytes are written on the stack (a heap buffer only for outsized names).
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: capacity) { buf in
            var w = Writer(buf: buf)
            w.append(tag)
            switch kind {
            case .chat: w.append(1)
            case .completion: w.append(2)
            case .relay:
                w.append(3)
                w.appendField(target!.utf8)
            }
            w.appendField(servedModel.utf8)
            if let tenant {
                w.append(1)
                w.appendField(tenant.utf8)
            } else {
                w.append(0)
            }
            w.append(canonicalDigest)
            return Digest.sha256Hex(UnsafeRawBufferPointer(start: buf.baseAddress, count: w.count))
        }
    }

    /// Appends into a buffer sized for what is written (`make` counts it first).
    private struct Writer {
        let buf: UnsafeMutableBufferPointer<UInt8>
        var count = 0

        mutating func append(_ b: UInt8) {
            buf[count] = b
            count += 1
        }

        mutating func append<C: Collection<UInt8>>(_ bytes: C) {
            // Contiguous bytes (a String's UTF-8, the digest) in one copy; a byte at a time cost
            // ~9 instructions a byte.
            let copied: Void? = bytes.withContiguousStorageIfAvailable { p in
                _ = UnsafeMutableBufferPointer(rebasing: buf[count..<(count + p.count)]).update(fromContentsOf: p)
                count += p.count
            }
            if copied == nil { for b in bytes { append(b) } }
        }

        /// A length-prefixed field: its byte count as a big-endian UInt64, then its bytes.
        mutating func appendField<C: Collection<UInt8>>(_ field: C) {
            let n = UInt64(field.count)
            for shift in stride(from: 56, through: 0, by: -8) { append(UInt8(truncatingIfNeeded: n >> UInt64(shift))) }
            append(field)
        }
    }

    /// With `deterministicOnly`, only requests whose output is reproducible qualify:
    /// `temperature` exactly 0, or a non-null `seed`. Without it, every generation qualifies.
    /// A relayed route qualifies only when its answers are deterministic (embeddings).
    public static func isCacheable(_ request: OpenAIRequest, deterministicOnly: Bool) -> Bool {
        if case .relay(let r) = request.kind { return r.cacheable }
        return !deterministicOnly || request.isDeterministic
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

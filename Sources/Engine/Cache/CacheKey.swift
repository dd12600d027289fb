// CacheKey: the response-cache key of a request, plus the cacheability and Cache-Control policy.
// Owns: a temporary shallow jansson copy of the request body (decref'd before returning); the
// caller's JSONDocument is never modified. Key = hex SHA-256 (OpenSSL) of the canonical form:
// body minus fields that do not change the output (stream, stream_options, user, model), plus
// __kind/__model/__tenant, dumped JSON_COMPACT | JSON_SORT_KEYS (jansson sorts recursively).
import CEventShim

public enum CacheKey {
    /// Top-level fields dropped from the canonical form: they change the framing or bookkeeping,
    /// not the generated tokens. `model` is replaced by the served model (aliases share entries).
    static let ignoredFields = ["stream", "stream_options", "user", "model"]

    public static func make(kind: EndpointKind, servedModel: String, document: JSONDocument, tenant: String?) -> String {
        hex(sha256(canonicalBytes(kind: kind, servedModel: servedModel, document: document, tenant: tenant)))
    }

    /// The exact bytes hashed (exposed for tests and debugging).
    public static func canonicalBytes(kind: EndpointKind, servedModel: String, document: JSONDocument,
                                      tenant: String?) -> [UInt8] {
        let root = document.root
        let copy: UnsafeMutablePointer<json_t>
        // A shallow copy is enough: only top-level keys are removed or added, nested values are
        // shared read-only (and it costs one allocation instead of one per node).
        if JSONValue.type(root) == JSONValue.object, let c = json_copy(root) {
            copy = c
        } else {
            // Not an object (the parser rejects these, but stay total): hash it under one field.
            copy = json_object()
            json_object_set_new(copy, "__body", json_deep_copy(root) ?? json_null())
        }
        defer { json_decref(copy) }
        for f in ignoredFields { json_object_del(copy, f) }
        let kindName: String
        switch kind {
        case .chat: kindName = "chat"
        case .completion: kindName = "completion"
        }
        json_object_set_new(copy, "__kind", jsonString(kindName))
        json_object_set_new(copy, "__model", jsonString(servedModel))
        json_object_set_new(copy, "__tenant", tenant.map(jsonString) ?? json_null())
        let flags = Int(JSON_COMPACT) | Int(JSON_SORT_KEYS) | Int(JSON_ENCODE_ANY)
        // One pass for typical bodies: dump into 4 KiB, and only measure-then-dump when larger.
        var out = [UInt8](repeating: 0, count: 4096)
        let n = out.withUnsafeMutableBytes { p in
            json_dumpb(copy, p.baseAddress!.assumingMemoryBound(to: CChar.self), p.count, flags)
        }
        guard n > 0 else { return [] }
        if n <= out.count {
            out.removeSubrange(n...)
            return out
        }
        out = [UInt8](repeating: 0, count: n)
        out.withUnsafeMutableBytes { p in
            _ = json_dumpb(copy, p.baseAddress!.assumingMemoryBound(to: CChar.self), n, flags)
        }
        return out
    }

    /// With `deterministicOnly`, only requests whose output is reproducible qualify:
    /// `temperature` exactly 0, or a non-null `seed`. Without it, everything qualifies.
    public static func isCacheable(document: JSONDocument, deterministicOnly: Bool) -> Bool {
        guard deterministicOnly else { return true }
        let root = document.root
        guard JSONValue.type(root) == JSONValue.object else { return false }
        if let t = JSONValue.number(json_object_get(root, "temperature")), t == 0 { return true }
        if let seed = json_object_get(root, "seed"), JSONValue.type(seed) != JSONValue.null { return true }
        return false
    }

    static func jsonString(_ s: String) -> UnsafeMutablePointer<json_t> {
        // json_stringn keeps embedded NULs; a Swift String is valid UTF-8, so it cannot fail.
        let bytes = Array(s.utf8) + [0]  // never empty: baseAddress is non-nil
        let j = bytes.withUnsafeBufferPointer { p in
            p.withMemoryRebound(to: CChar.self) { c in json_stringn(c.baseAddress, c.count - 1) }
        }
        return j ?? json_null()
    }

    static func sha256(_ bytes: [UInt8]) -> [UInt8] { Digest.sha256(bytes) }

    static func hex(_ bytes: [UInt8]) -> String { Digest.hex(bytes) }
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

// TenantTable: who a request's tenant is (issue 14), an immutable table built once at start-up from
// TenantConfig lists. A tenant is the API key when auth is on (its SHA-256 identity; never the key)
// or the value of `admission_control.tenant_header`; configured tenants carry weight, priority
// and token/request limits, everyone else gets the defaults and the metrics label "other" (label
// cardinality: configured tenants + 1). Pure: no imports, no I/O.

/// One request's tenant, as admission and the rate limiter see it.
public struct Tenant: Equatable, Sendable {
    /// Fairness and rate-limit key: "k:<key identity>", "h:<header value>", or "" (no tenant named).
    public var id: String
    /// Index into `TenantTable.labels` (a configured tenant, or the last one, "other").
    public var label: Int
    public var weight: Double
    public var priority: Int
    public var tokensPerMinute: Int?
    public var requestsPerMinute: Int?

    public var hasLimits: Bool { tokensPerMinute != nil || requestsPerMinute != nil }
}

// A class, immutable: a struct read through the runtime was copied (its four tables retained and
// released) on every request's `resolve`.
public final class TenantTable: Sendable {
    /// Metrics labels: configured tenants in config order, then "other".
    public let labels: [String]
    private let byIdentity: [String: Int]
    private let byName: [String: Int]
    private let configs: [TenantConfig]
    /// Lowercase header name, or nil.
    public let header: String?
    /// Longest header value kept (a longer one is cut: an unconfigured value only names a queue).
    static let maxHeaderValueBytes = 128

    /// `keyTenants`: (SHA-256 identity, config) of each `auth.api_keys` mapping; `headerTenants`:
    /// `admission_control.tenants`.
    public init(keyTenants: [(identity: String, config: TenantConfig)], headerTenants: [TenantConfig], header: String?) {
        var labels: [String] = []
        var configs: [TenantConfig] = []
        var byIdentity: [String: Int] = [:]
        var byName: [String: Int] = [:]
        for (identity, c) in keyTenants where byIdentity[identity] == nil {
            byIdentity[identity] = labels.count
            labels.append(c.name ?? "key-" + String(identity.prefix(8)))
            configs.append(c)
        }
        for c in headerTenants {
            let n = c.name ?? ""
            guard byName[n] == nil else { continue }
            byName[n] = labels.count
            labels.append(n)
            configs.append(c)
        }
        labels.append("other")
        self.labels = labels
        self.configs = configs
        self.byIdentity = byIdentity
        self.byName = byName
        self.header = header
    }

    public var other: Int { labels.count - 1 }
    public var hasLimits: Bool { configs.contains { $0.hasLimits } }

    /// The tenant of a request: its key's identity when authenticated, else the header's value.
    public func resolve(identity: String?, headerValue: String?) -> Tenant {
        if let identity {
            return tenant(id: "k:" + identity, index: byIdentity[identity])
        }
        if header != nil, var v = headerValue, !v.isEmpty {
            if v.utf8.count > Self.maxHeaderValueBytes { v = String(decoding: v.utf8.prefix(Self.maxHeaderValueBytes), as: UTF8.self) }
            return tenant(id: "h:" + v, index: byName[v])
        }
        return tenant(id: "", index: nil)
    }

    private func tenant(id: String, index: Int?) -> Tenant {
        guard let i = index else { return Tenant(id: id, label: other, weight: 1, priority: 0) }
        let c = configs[i]
        return Tenant(id: id, label: i, weight: c.weight, priority: c.priority, tokensPerMinute: c.tokensPerMinute,
                      requestsPerMinute: c.requestsPerMinute)
    }
}

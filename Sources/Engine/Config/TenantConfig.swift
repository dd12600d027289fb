// TenantConfig: one tenant's fair-admission settings (issue 14), from an `auth.api_keys` entry
// written as a mapping or from `admission_control.tenants`. Plain values; the runtime turns them
// into a TenantTable (Admission/TenantTable.swift). `priority`: smaller is served first.

public struct TenantConfig: Sendable, Equatable {
    /// The metrics label; for `admission_control.tenants` also the header value that names it.
    /// nil only for an API key given without a name (then `key-<first 8 hex of its SHA-256>`).
    public var name: String?
    /// `auth.api_keys` entries only: the key, plain or `sha256:<hex>`.
    public var key: String?
    /// Share of the queue's service (tokens) relative to the other tenants of its band.
    public var weight: Double
    public var priority: Int
    public var tokensPerMinute: Int?
    public var requestsPerMinute: Int?

    public init(name: String? = nil, key: String? = nil, weight: Double = 1, priority: Int = 0,
                tokensPerMinute: Int? = nil, requestsPerMinute: Int? = nil) {
        self.name = name
        self.key = key
        self.weight = weight
        self.priority = priority
        self.tokensPerMinute = tokensPerMinute
        self.requestsPerMinute = requestsPerMinute
    }

    public var hasLimits: Bool { tokensPerMinute != nil || requestsPerMinute != nil }
}

/// `admission_control.fairness`: who leaves the queue first when admission must queue.
public enum FairnessPolicy: String, Sendable, Equatable {
    /// One FIFO per process (the behaviour before issue 14).
    case fifo
    /// Priority bands, then start-time fair queueing on tokens across tenants, then EDF.
    case fair
}

// Backend: one configured vLLM instance as the data path sees it — its endpoint, its pool of
// keep-alive connections, what it serves and whether its last health check answered.
// BackendSet: all of them plus the round-robin cursor. Owned by EngineRuntime, loop-confined.
// (Per-backend circuit breakers and KV-aware admission plug in here: see the routing issue.)
import Reactor

public final class Backend {
    public let id: BackendID
    public let url: String
    public let endpoint: Endpoint
    public let pool: HTTPClientPool
    public let apiKey: String?
    public let weight: Int
    /// Models from the config (fixed) or learned from GET /v1/models.
    public let configuredModels: [String]?
    public internal(set) var discoveredModels: [String] = []
    /// Raw JSON objects from the backend's /v1/models `data`, for the union listing.
    public internal(set) var modelObjects: [[UInt8]] = []
    public internal(set) var isHealthy = false
    public internal(set) var lastCheckedNanos: UInt64 = 0

    init(id: BackendID, url: String, endpoint: Endpoint, loop: Loop, apiKey: String?, weight: Int, models: [String]?) {
        self.id = id
        self.url = url
        self.endpoint = endpoint
        self.pool = HTTPClientPool(loop: loop, endpoint: endpoint)
        self.apiKey = apiKey
        self.weight = weight
        self.configuredModels = models
    }

    public var models: [String] { configuredModels ?? discoveredModels }

    /// True when this backend may serve `model` (unknown lists serve anything).
    public func serves(_ model: String?) -> Bool {
        guard let model else { return true }
        let m = models
        return m.isEmpty || m.contains(model)
    }
}

public final class BackendSet {
    public private(set) var all: [Backend] = []
    private var cursor = 0

    init(_ backends: [Backend]) { all = backends }

    /// Whether some backend serves `model`: nil while any backend's model list is still unknown.
    public func isKnown(_ model: String) -> Bool? {
        var unknown = false
        for b in all {
            let m = b.models
            if m.isEmpty { unknown = true } else if m.contains(model) { return true }
        }
        return unknown ? nil : false
    }

    public var healthyCount: Int { all.reduce(0) { $0 + ($1.isHealthy ? 1 : 0) } }

    public subscript(id: BackendID) -> Backend { all[id.index] }

    /// Round-robin pick among backends serving `model`, preferring ones not yet tried and
    /// healthy ones; nil when none serves the model.
    public func pick(model: String?, excluding: [BackendID]) -> BackendID? {
        let n = all.count
        guard n > 0 else { return nil }
        var fallback: BackendID?
        for i in 0..<n {
            let b = all[(cursor + i) % n]
            guard b.serves(model) else { continue }
            if !excluding.contains(b.id) && (b.isHealthy || b.lastCheckedNanos == 0) {
                cursor = (cursor + i + 1) % n
                return b.id
            }
            if fallback == nil || (excluding.contains(fallback!) && !excluding.contains(b.id)) { fallback = b.id }
        }
        if let f = fallback { cursor = (f.index + 1) % n }
        return fallback
    }
}

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
    public internal(set) var discoveredModels: [String] = [] {
        didSet { modelsVersion &+= 1 }
    }
    /// Counts the changes of `discoveredModels`: BackendSet.isKnown's memo holds while no
    /// backend's count moved.
    private(set) var modelsVersion = 0
    /// Raw JSON objects from the backend's /v1/models `data`, for the union listing.
    public internal(set) var modelObjects: [[UInt8]] = []
    public internal(set) var isHealthy = false
    public internal(set) var lastCheckedNanos: UInt64 = 0
    /// Consecutive-failure breaker (connect errors, timeouts, 5xx, error events, failed checks).
    public var breaker: CircuitBreaker
    /// Last polled vLLM load (nil: never read, or the last poll failed).
    public internal(set) var load: BackendLoad?
    public internal(set) var requestsSent = 0
    /// Attempts of this process to this backend not yet ended (the router's fresh load signal).
    public internal(set) var inFlight = 0
    /// kv_cache_size_tokens from the last polled vllm:cache_config_info; nil when unknown.
    public internal(set) var kvCacheTokens: Int?
    /// The fixed header lines of every generation request to this backend, built once.
    let requestHeaderBlock: [UInt8]

    init(id: BackendID, url: String, endpoint: Endpoint, loop: Loop, apiKey: String?, weight: Int, models: [String]?,
         breaker: CircuitBreaker) {
        self.id = id
        self.url = url
        self.endpoint = endpoint
        self.pool = HTTPClientPool(loop: loop, endpoint: endpoint)
        self.apiKey = apiKey
        self.weight = weight
        self.configuredModels = models
        self.breaker = breaker
        var block = "content-type: application/json\r\n"
        if let k = apiKey { block += "authorization: Bearer " + k + "\r\n" }
        self.requestHeaderBlock = Array(block.utf8)
    }

    public var models: [String] { configuredModels ?? discoveredModels }

    /// The x-cache and x-routed-backend lines of a response this backend answered, for each
    /// cache outcome (SessionHeaders.tail), built on first use.
    private lazy var sessionHeaderTails: [HTTPHeaders] = CacheOutcome.allCases.map {
        SessionHeaders.tail(cache: $0.rawValue, backendURL: url)
    }

    func sessionHeaderTail(_ outcome: CacheOutcome) -> HTTPHeaders { sessionHeaderTails[outcome.index] }

    /// True when this backend may serve `model` (unknown lists serve anything).
    public func serves(_ model: String?) -> Bool {
        guard let model else { return true }
        let m = models
        return m.isEmpty || m.contains(model)
    }
}

public final class BackendSet {
    public private(set) var all: [Backend] = []
    private var selector: BackendSelector
    /// routing.policy prefix_aware; nil for round_robin.
    public internal(set) var routing: BackendRouting?

    init(_ backends: [Backend]) {
        all = backends
        selector = BackendSelector(weights: backends.map(\.weight))
    }

    /// May `b` take a request for `model` now? (Serves it and its breaker lets traffic through.)
    func isEligible(_ b: Backend, model: String?, now: UInt64) -> Bool {
        b.serves(model) && b.breaker.isAvailable(now: now)
    }

    /// The pool of `model` in preference order: the weighted round-robin pick first, then the
    /// other eligible backends. Empty when none serves the model or every breaker is open.
    /// Refilled in place by the next call (its capacity kept): the usual caller, admission's fast
    /// path, lets go of the list within the request's call, so no array is allocated per request.
    /// A list still held (a queued request's) is shared, and copy-on-write leaves it alone: the
    /// refill then gets a new buffer.
    public func candidates(model: String?, now: UInt64) -> [BackendID] {
        guard let first = selector.pick(eligible: { self.isEligible(self.all[$0.index], model: model, now: now) }) else {
            return []
        }
        // removeLast, not removeAll(keepingCapacity:), whose replaceSubrange cost more than the
        // list's usual one element.
        while !lastCandidates.isEmpty { lastCandidates.removeLast() }
        lastCandidates.append(first)
        for b in all where b.id != first && isEligible(b, model: model, now: now) { lastCandidates.append(b.id) }
        return lastCandidates
    }
    private var lastCandidates: [BackendID] = []

    /// `candidates` as routing.policy orders them: the scorer's order for prefix_aware (by the
    /// prompt's chunks), the round-robin order otherwise; and why the first is first.
    func routedCandidates(model: String?, chunks: PromptChunks?, tokenIDs: [UInt32]? = nil, excluding: [BackendID] = [],
                          now: UInt64) -> (order: [BackendID], reason: RoutingScorer.Reason, exact: [BackendID: Double]?) {
        guard let r = routing else {
            if excluding.isEmpty { return (candidates(model: model, now: now), .roundRobin, nil) }
            return (pick(model: model, excluding: excluding, now: now).map { [$0] } ?? [], .roundRobin, nil)
        }
        var eligible = all.filter { isEligible($0, model: model, now: now) && !excluding.contains($0.id) }
        if eligible.isEmpty { eligible = all.filter { isEligible($0, model: model, now: now) } }
        if eligible.isEmpty { return ([], .single, nil) }
        return r.order(eligible, chunks: chunks, tokenIDs: tokenIDs, model: model)
    }

    /// Whether some backend serves `model`: nil while any backend's model list is still unknown.
    public func isKnown(_ model: String) -> Bool? {
        let versions = modelsVersions
        if let k = knownModel, versions == knownVersions, k == model { return true }
        var unknown = false
        for b in all {
            let m = b.models
            if m.isEmpty {
                unknown = true
            } else if m.contains(model) {
                knownModel = model
                knownVersions = versions
                return true
            }
        }
        return unknown ? nil : false
    }

    /// The last model `isKnown` found served, and `modelsVersions` then: a request asks three or
    /// four times (routing, fallback, the metrics' model label), each walk copying every backend's
    /// list and comparing its names; until some list changes, the same model is one compare.
    private var knownModel: String?
    private var knownVersions = 0

    /// The backends' model-list versions summed: each only grows, so any change moves the sum.
    private var modelsVersions: Int {
        var v = 0
        for b in all { v &+= b.modelsVersion }
        return v
    }

    /// Every model the backends serve, sorted; nil while some backend's list is not known yet.
    public func servedModels() -> [String]? {
        var names: Set<String> = []
        for b in all {
            let m = b.models
            if m.isEmpty { return nil }
            names.formUnion(m)
        }
        return names.sorted()
    }

    public var healthyCount: Int { all.reduce(0) { $0 + ($1.isHealthy ? 1 : 0) } }

    public subscript(id: BackendID) -> Backend { all[id.index] }

    /// Weighted round-robin pick among eligible backends of `model`, avoiding `excluding` (already
    /// tried) unless nothing else is eligible; nil when none is eligible.
    public func pick(model: String?, excluding: [BackendID], now: UInt64) -> BackendID? {
        selector.pick(eligible: { self.isEligible(self.all[$0.index], model: model, now: now) }, excluding: excluding)
    }
}

extension Backend {
    /// The headers of a relayed route's request to this backend. A JSON body was validated as
    /// JSON (sent as such, like a generation's); a form keeps its boundary.
    func relayHeaders(_ r: RelayRoute, requestId: String) -> HTTPHeaders {
        var h = HTTPHeaders()
        if r.body == .multipart { h.add("content-type", r.contentType ?? "multipart/form-data") }
        if r.body == .json { h.add("content-type", "application/json") }
        if let k = apiKey { h.add("authorization", "Bearer " + k) }
        h.add("x-request-id", requestId)
        return h
    }

    /// Tells the breaker how an attempt went: success (2xx–4xx: a client's error is not the
    /// backend's), failure, or no verdict (the client left; a half-open probe is released).
    /// True when the breaker opened or closed.
    func endAttempt(_ permit: CircuitBreaker.Permit, _ verdict: RequestMachine.Finish.Verdict, now: UInt64) -> Bool {
        switch verdict {
        case .success: return breaker.recordSuccess(now: now) == .closed
        case .failure: return breaker.recordFailure(now: now) == .opened
        case .noVerdict:
            if permit == .probe { breaker.release() }
            return false
        }
    }
}

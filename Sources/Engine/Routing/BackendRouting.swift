// BackendRouting: routing.policy prefix_aware for one process (loop-confined, owned by BackendSet).
// It builds RoutingScorer's candidates from what the process knows — the estimated PrefixIndex
// (what this process sent each backend), the last /metrics poll (queue, KV usage, KV size) and the
// Engine's own in-flight count per backend — and records each request's chunks where it went.
// No I/O: the pure parts are PromptChunks, PrefixIndex and RoutingScorer; this keeps their state
// and the counters /metrics shows (decisions by reason, estimated hit ratio per backend).
// Exact mode (routing.kv_events): when the request carries its prompt's token ids (PromptTokenizer,
// from the backend's /tokenize), the prefix term is KVBlockIndex.overlap(tokenIDs:) from `exact`
// instead — the share of the prompt in leading KV blocks each backend reported holding; a backend
// that publishes no events scores 0 there and competes on load. Without the ids (tokenize too
// slow or failed, a relayed route) the estimated index decides, which every mode keeps recording.

public final class BackendRouting {
    public let config: EngineConfig.RoutingConfig
    public private(set) var index: PrefixIndex
    public let scorer: RoutingScorer
    private var rng = FastRandom()
    /// Decisions by reason (RoutingScorer.Reason's raw values).
    public private(set) var decisions: [RoutingScorer.Reason: Int] = [:]
    /// Per backend: chunks of requests sent there, and those the index thought it held.
    public private(set) var queriedChunks: [Int]
    public private(set) var matchedChunks: [Int]
    /// Exact mode's KV-event index (nil in estimated mode).
    var exact: KVEventsDriver?
    /// Per backend, exact mode: prompt tokens of requests sent there with token ids, and the
    /// tokens of those in leading blocks the KV index said it held at the decision.
    public private(set) var exactQueriedTokens: [Int]
    public private(set) var exactMatchedTokens: [Int]
    /// The KV size each backend's capacity was last derived from.
    private var sizedFrom: [Int?]
    private var cands: [RoutingScorer.Candidate] = []
    private var ids: [Int] = []
    private var matched: [Int] = []

    init(config: EngineConfig.RoutingConfig, backendCount: Int) {
        self.config = config
        let fixed = config.indexChunksPerBackend
        index = PrefixIndex(backendCount: backendCount, capacity: fixed > 0 ? fixed : PrefixIndex.defaultCapacity)
        scorer = RoutingScorer(weights: .init(prefix: config.prefixWeight, queue: config.queueWeight, kv: config.kvWeight),
                               imbalanceAbsolute: config.imbalanceAbsolute, imbalanceRatio: config.imbalanceRatio)
        queriedChunks = Array(repeating: 0, count: backendCount)
        matchedChunks = Array(repeating: 0, count: backendCount)
        exactQueriedTokens = Array(repeating: 0, count: backendCount)
        exactMatchedTokens = Array(repeating: 0, count: backendCount)
        sizedFrom = Array(repeating: nil, count: backendCount)
    }

    /// Bytes of prompt the scan renders: no more than the chunks looked at.
    public var promptLimit: Int { config.chunkChars * config.maxPrefixChunks }

    /// `eligible` best first, and why; with `tokenIDs` in exact mode, also the KV index's overlap
    /// per backend (absent: none), which `sent` counts for the backend chosen.
    func order(_ eligible: [Backend], chunks: PromptChunks?, tokenIDs: [UInt32]? = nil,
               model: String?) -> (order: [BackendID], reason: RoutingScorer.Reason, exact: [BackendID: Double]?) {
        if let kv = exact, let t = tokenIDs, !t.isEmpty {
            let overlaps = kv.index.overlap(tokenIDs: t)
            cands.removeAll(keepingCapacity: true)
            for b in eligible { cands.append(candidate(b, overlap: overlaps[b.id] ?? 0)) }
            let r = scorer.order(cands, random: rng.next())
            return (r.order, r.reason == .prefix ? .exactPrefix : r.reason, overlaps)
        }
        ids.removeAll(keepingCapacity: true)
        for b in eligible { ids.append(b.id.index) }
        let total = chunks?.count ?? 0
        if let c = chunks, total > 0 {
            index.matchedChunks(c, salt: PromptChunks.salt(model: model), backends: ids, into: &matched)
        } else {
            matched.removeAll(keepingCapacity: true)
            matched.append(contentsOf: repeatElement(0, count: ids.count))
        }
        cands.removeAll(keepingCapacity: true)
        for (k, b) in eligible.enumerated() {
            cands.append(candidate(b, overlap: total > 0 ? Double(matched[k]) / Double(total) : 0))
        }
        let r = scorer.order(cands, random: rng.next())
        return (r.order, r.reason, nil)
    }

    private func candidate(_ b: Backend, overlap: Double) -> RoutingScorer.Candidate {
        let polled: Double? = b.load.flatMap { l in
            l.running == nil && l.waiting == nil ? nil : (l.running ?? 0) + (l.waiting ?? 0)
        }
        return RoutingScorer.Candidate(backend: b.id, prefixOverlap: overlap, polledQueue: polled, inFlight: b.inFlight,
                                       kvUsage: b.load?.kvUsage)
    }

    /// A request was sent to `b` after a decision for `reason`: count it, remember its chunks there
    /// (and, when the decision was exact, what share of its tokens the KV index said `b` held).
    func sent(_ chunks: PromptChunks?, model: String?, tokenCount: Int = 0, exact: [BackendID: Double]? = nil,
              to b: Backend, reason: RoutingScorer.Reason) {
        decisions[reason, default: 0] += 1
        let i = b.id.index
        if let e = exact, tokenCount > 0 {
            exactQueriedTokens[i] += tokenCount
            exactMatchedTokens[i] += Int(((e[b.id] ?? 0) * Double(tokenCount)).rounded())
        }
        if config.indexChunksPerBackend == 0, sizedFrom[i] != b.kvCacheTokens {
            sizedFrom[i] = b.kvCacheTokens
            index.setCapacity(i, PrefixIndex.capacity(kvTokens: b.kvCacheTokens, charsPerToken: config.charsPerToken,
                                                      chunkChars: config.chunkChars))
        }
        guard let c = chunks, !c.isEmpty else { return }
        queriedChunks[i] += c.count
        matchedChunks[i] += index.record(c, salt: PromptChunks.salt(model: model), backend: i)
    }
}

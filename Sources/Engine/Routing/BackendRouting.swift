// BackendRouting: routing.policy prefix_aware for one process (loop-confined, owned by BackendSet).
// It builds RoutingScorer's candidates from what the process knows — the estimated PrefixIndex
// (what this process sent each backend), the last /metrics poll (queue, KV usage, KV size) and the
// Engine's own in-flight count per backend — and records each request's chunks where it went.
// No I/O: the pure parts are PromptChunks, PrefixIndex and RoutingScorer; this keeps their state
// and the counters /metrics shows (decisions by reason, estimated hit ratio per backend).
// Exact mode (routing.kv_events): the prefix term is the share of the prompt in leading KV blocks
// each backend reported holding (KVBlockIndex, from `exact`), for the block hashes `blockMap`
// (ChunkBlockMap) learned for the prompt's leading chunks from an earlier /tokenize answer, or
// from token ids the request carries; a backend that publishes no events scores 0 there and
// competes on load. A prompt whose prefix the map does not know yet is tokenized first (the
// Frontend: `shouldLearn` → PromptTokenizer → `learned`, and the ids ride on the request), so
// later requests with that prefix need no round trip. Without either (a fetch for the same prefix
// pending, tokenize too slow or failed, a relayed route) the estimated index decides, which every
// mode keeps recording.
// Every mode: `recent` feeds RoutingScorer's share guard (assignments per backend, decayed).

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
    /// Exact mode: chunk prefixes → KV block hashes, learned from /tokenize answers.
    public private(set) var blockMap: ChunkBlockMap
    /// Exact mode: decisions whose prefix term came from `blockMap`, and the /tokenize fetches
    /// asked to teach it (answered, failed or refused as busy).
    public private(set) var mappedDecisions = 0
    public private(set) var learnsAsked = 0
    public private(set) var learnsBusy = 0
    public private(set) var recent: RecentAssignments
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
                               imbalanceAbsolute: config.imbalanceAbsolute, imbalanceRatio: config.imbalanceRatio,
                               shareRatio: config.shareRatio)
        blockMap = ChunkBlockMap(chunkBytes: config.chunkChars)
        recent = RecentAssignments(backendCount: backendCount, window: config.shareWindow)
        queriedChunks = Array(repeating: 0, count: backendCount)
        matchedChunks = Array(repeating: 0, count: backendCount)
        exactQueriedTokens = Array(repeating: 0, count: backendCount)
        exactMatchedTokens = Array(repeating: 0, count: backendCount)
        sizedFrom = Array(repeating: nil, count: backendCount)
    }

    /// Bytes of prompt the scan renders: no more than the chunks looked at.
    public var promptLimit: Int { config.chunkChars * config.maxPrefixChunks }

    /// `eligible` best first, and why; in exact mode with `tokenIDs` or a prefix `blockMap`
    /// knows, also the KV index's overlap per backend (absent: none), which `sent` counts for the
    /// backend chosen.
    func order(_ eligible: [Backend], chunks: PromptChunks?, tokenIDs: [UInt32]? = nil,
               model: String?) -> (order: [BackendID], reason: RoutingScorer.Reason, exact: [BackendID: Double]?) {
        if let kv = exact {
            var overlaps: [BackendID: Double]?
            if let t = tokenIDs, !t.isEmpty {
                overlaps = kv.index.overlap(tokenIDs: t)
            } else if let c = chunks, !c.isEmpty,
                      let p = blockMap.prefix(c, salt: PromptChunks.salt(model: model), promptBytes: c.promptBytes) {
                mappedDecisions += 1
                overlaps = kv.index.overlap(chains: p.chains, blockSize: p.blockSize, promptTokens: p.promptTokens)
            }
            if let o = overlaps {
                cands.removeAll(keepingCapacity: true)
                for b in eligible { cands.append(candidate(b, overlap: o[b.id] ?? 0)) }
                let r = scorer.order(cands, random: rng.next())
                return (r.order, r.reason == .prefix ? .exactPrefix : r.reason, o)
            }
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
                                       kvUsage: b.load?.kvUsage, recent: recent.counts[b.id.index] / Double(max(1, b.weight)))
    }

    /// Exact mode: whether the Frontend should ask /tokenize for this prompt to teach `blockMap`
    /// (its prefix is new, nothing for it is pending, the KV events have said the block size).
    /// True makes it pending: answer with `learned`.
    func shouldLearn(_ chunks: PromptChunks?, model: String?) -> Bool {
        guard let kv = exact, kv.index.anyBlockSize > 0, let c = chunks, !c.isEmpty else { return false }
        switch blockMap.plan(c, salt: PromptChunks.salt(model: model)) {
        case .learn:
            learnsAsked += 1
            return true
        case .busy:
            learnsBusy += 1
            return false
        case .known:
            return false
        }
    }

    /// The /tokenize answer `shouldLearn` asked for (nil: it failed or came too late).
    func learned(_ chunks: PromptChunks, model: String?, tokenIDs: [UInt32]?) {
        let salt = PromptChunks.salt(model: model)
        guard let ids = tokenIDs, let kv = exact else { return blockMap.failed(chunks, salt: salt) }
        blockMap.learned(chunks, salt: salt, promptBytes: chunks.promptBytes, tokenIDs: ids, blockSize: kv.index.anyBlockSize)
    }

    /// A request was sent to `b` after a decision for `reason`: count it, remember its chunks there
    /// (and, when the decision was exact, what share of its tokens the KV index said `b` held).
    func sent(_ chunks: PromptChunks?, model: String?, tokenCount: Int = 0, exact: [BackendID: Double]? = nil,
              to b: Backend, reason: RoutingScorer.Reason) {
        decisions[reason, default: 0] += 1
        let i = b.id.index
        recent.assigned(i)
        // A decision from the block map: its estimate of the prompt's tokens (the ids never came).
        let tokens = tokenCount > 0 || exact == nil ? tokenCount
            : chunks.map { Int((Double($0.promptBytes) * blockMap.tokensPerByte($0, salt: PromptChunks.salt(model: model))).rounded()) } ?? 0
        if let e = exact, tokens > 0 {
            exactQueriedTokens[i] += tokens
            exactMatchedTokens[i] += Int(((e[b.id] ?? 0) * Double(tokens)).rounded())
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

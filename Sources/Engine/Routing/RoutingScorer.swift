// RoutingScorer: ranks the candidate backends of one request (GIE's filter → score → pick), a pure
// value (standard library only). The driver filters (model served, breaker, health) and fills one
// Candidate per backend; the prefix overlap may come from any source (estimated mode's PrefixIndex
// today; exact mode's KV-event index can hand its own fraction in the same field).
//   score = w_prefix · overlap + w_queue · queueTerm + w_kv · (1 − kvUsage)
//   queueTerm = (maxQ − q) / (maxQ − minQ) over the candidates, 1 for all when they are equal (GIE)
//   q = max(polled running + waiting, the Engine's own in-flight requests to it): the poll sees
//       every worker's traffic but is up to a poll interval old; our own count is exact and fresh.
//   kvUsage unknown (never polled) counts as 0.5: neither preferred nor avoided.
// Ties (within 1e-9) are broken by a random value passed in, mixed with each backend id.
// Imbalance guard (SGLang's cache-aware policy): when the candidates' in-flight counts differ by
// more than `imbalanceAbsolute` and the largest exceeds `imbalanceRatio` × the smallest, prefix is
// ignored and the least loaded (q, then in-flight) goes first: a hot prefix cannot pile up on one.
// Share guard (ours): in-flight counts stay small at moderate load, so the guard above rarely
// fires while a hot tenant's replica still takes far more than its share of requests. Each
// candidate also carries its recent assignments (RecentAssignments: a decayed count, ÷ its
// weight); a candidate above `shareRatio` × the candidates' mean loses its prefix term (it still
// competes on queue and KV), so the hot prefix spills to a second replica instead of piling up.
// It acts only once the mean is at least `shareMinimum` (a few assignments: no verdict on noise).
// Pure: no imports, no I/O.

public struct RoutingScorer: Equatable, Sendable {
    public struct Weights: Equatable, Sendable {
        public var prefix: Double
        public var queue: Double
        public var kv: Double
        public init(prefix: Double = 3, queue: Double = 2, kv: Double = 2) {
            self.prefix = prefix
            self.queue = queue
            self.kv = kv
        }
    }

    public struct Candidate: Equatable, Sendable {
        public var backend: BackendID
        /// Matched leading chunks ÷ total chunks, 0...1.
        public var prefixOverlap: Double
        /// Polled num_requests_running + num_requests_waiting; nil when unknown.
        public var polledQueue: Double?
        /// Requests this process has in flight to the backend now.
        public var inFlight: Int
        /// Polled kv_cache_usage_perc, 0...1; nil when unknown.
        public var kvUsage: Double?
        /// Recent assignments to it (decayed, ÷ weight: RecentAssignments); 0 when not tracked.
        public var recent: Double

        public init(backend: BackendID, prefixOverlap: Double, polledQueue: Double?, inFlight: Int, kvUsage: Double?,
                    recent: Double = 0) {
            self.backend = backend
            self.prefixOverlap = prefixOverlap
            self.polledQueue = polledQueue
            self.inFlight = inFlight
            self.kvUsage = kvUsage
            self.recent = recent
        }

        var queue: Double { max(polledQueue ?? 0, Double(inFlight)) }
    }

    /// Why the first backend of an order was chosen (a metrics label: a closed set).
    public enum Reason: String, CaseIterable, Sendable {
        /// The winner holds part of the prompt's prefix (its prefix term was > 0), by the
        /// estimated index (estimated mode, or exact mode without the prompt's token ids).
        case prefix
        /// Exact mode: the winner holds leading KV blocks of the prompt, by its KV events. The
        /// scorer never returns it; BackendRouting relabels `prefix` when the term was exact.
        case exactPrefix = "exact_prefix"
        /// No prefix anywhere (or none on the winner): queue and KV terms decided.
        case load
        /// The imbalance guard fired: least loaded first, prefix ignored.
        case imbalance
        /// The share guard dropped the prefix term of a candidate that held more of the prompt
        /// than the winner (its recent share was above share_ratio × the mean).
        case share
        /// One candidate only.
        case single
        /// routing.policy round_robin (the selector's order).
        case roundRobin = "round_robin"
    }

    public var weights: Weights
    public var imbalanceAbsolute: Int
    public var imbalanceRatio: Double
    /// Share guard: a candidate whose `recent` exceeds this × the mean loses its prefix term
    /// (0: off).
    public var shareRatio: Double
    /// The mean `recent` below which the share guard does not act.
    public var shareMinimum: Double

    public init(weights: Weights = Weights(), imbalanceAbsolute: Int = 8, imbalanceRatio: Double = 1.5,
                shareRatio: Double = 0, shareMinimum: Double = 4) {
        self.weights = weights
        self.imbalanceAbsolute = imbalanceAbsolute
        self.imbalanceRatio = imbalanceRatio
        self.shareRatio = shareRatio
        self.shareMinimum = shareMinimum
    }

    /// The share guard's bound on `recent` for these candidates (infinity: it does not act).
    public func shareCap(_ cands: [Candidate]) -> Double {
        guard shareRatio > 0, cands.count > 1 else { return .infinity }
        var sum = 0.0
        for c in cands { sum += c.recent }
        let mean = sum / Double(cands.count)
        return mean >= shareMinimum ? shareRatio * mean : .infinity
    }

    /// Whether the guard fires for these in-flight counts.
    public func isImbalanced(_ cands: [Candidate]) -> Bool {
        guard cands.count > 1 else { return false }
        var lo = Int.max, hi = Int.min
        for c in cands {
            lo = min(lo, c.inFlight)
            hi = max(hi, c.inFlight)
        }
        return hi - lo > imbalanceAbsolute && Double(hi) > imbalanceRatio * Double(lo)
    }

    /// Each candidate's score (same order as `cands`), the share guard applied.
    public func scores(_ cands: [Candidate]) -> [Double] {
        let (lo, hi) = Self.queueRange(cands)
        let cap = shareCap(cands)
        return cands.map { score($0, lo: lo, hi: hi, cap: cap) }
    }

    @inline(__always) static func queueRange(_ cands: [Candidate]) -> (Double, Double) {
        var lo = Double.infinity, hi = -Double.infinity
        for c in cands {
            lo = min(lo, c.queue)
            hi = max(hi, c.queue)
        }
        return (lo, hi)
    }

    @inline(__always) func score(_ c: Candidate, lo: Double, hi: Double, cap: Double) -> Double {
        let q = hi > lo ? (hi - c.queue) / (hi - lo) : 1
        let kv = 1 - min(max(c.kvUsage ?? 0.5, 0), 1)
        let p = c.recent > cap ? 0 : min(max(c.prefixOverlap, 0), 1)
        return weights.prefix * p + weights.queue * q + weights.kv * kv
    }

    /// The candidates best first, and why the first is first. Empty in → empty out.
    /// Ranked in a stack buffer by insertion sort (a handful of candidates): one allocation, the
    /// answer's.
    public func order(_ cands: [Candidate], random: UInt64) -> (order: [BackendID], reason: Reason) {
        if cands.count <= 1 { return (cands.map(\.backend), .single) }
        let imbalanced = isImbalanced(cands)
        let (lo, hi) = Self.queueRange(cands)
        let cap = shareCap(cands)
        let n = cands.count
        return withUnsafeTemporaryAllocation(of: Ranked.self, capacity: n) { buf in
            for i in 0..<n {
                let c = cands[i]
                // Imbalanced: lower load first; negated so that "higher is better" holds below.
                let s = imbalanced ? -(c.queue * 1e6 + Double(c.inFlight)) : score(c, lo: lo, hi: hi, cap: cap)
                let r = Ranked(index: i, score: s, tie: Self.tie(random, c.backend))
                var j = i
                while j > 0 && r.precedes(buf[j - 1]) {
                    buf[j] = buf[j - 1]
                    j -= 1
                }
                buf[j] = r
            }
            let first = cands[buf[0].index]
            let why: Reason
            if imbalanced {
                why = .imbalance
            } else if cands.contains(where: { $0.recent > cap && $0.prefixOverlap > first.prefixOverlap }) {
                why = .share
            } else {
                why = first.recent <= cap && first.prefixOverlap > 0 ? .prefix : .load
            }
            return ((0..<n).map { cands[buf[$0].index].backend }, why)
        }
    }

    struct Ranked {
        var index: Int
        var score: Double
        var tie: UInt64

        /// Higher score first; scores within 1e-9 are equal and the lower tie value goes first.
        @inline(__always) func precedes(_ o: Ranked) -> Bool {
            if abs(score - o.score) > 1e-9 { return score > o.score }
            return tie < o.tie
        }
    }

    @inline(__always) static func tie(_ random: UInt64, _ b: BackendID) -> UInt64 {
        PromptChunks.finish(random ^ (UInt64(b.index) &* 0x9E37_79B9_7F4A_7C15))
    }
}

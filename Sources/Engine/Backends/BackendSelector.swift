// BackendSelector: smooth weighted round-robin over the configured backends (nginx's
// ngx_http_upstream_get_peer), a pure value (standard library only), one per process. The pool
// driver says which backends may take this request (model served, breaker available, admission)
// and which were already tried; the selector spreads load by weight without bursts (3:1 → a a b a).
// BackendID.index is the position in `weights`.
// Pure: no imports, no I/O.

public struct BackendSelector: Equatable, Sendable {
    /// Configured weights; a weight ≤ 0 means "never picked" (drained).
    public private(set) var weights: [Int]
    /// nginx's `current_weight` per backend.
    private(set) var current: [Int]

    public init(weights: [Int]) {
        self.weights = weights
        self.current = Array(repeating: 0, count: weights.count)
    }

    /// Picks among backends with `eligible` true, avoiding `excluding` (already tried) unless no
    /// other is eligible; nil when none is. Each round, every participant's current weight grows
    /// by its weight, the largest wins (lowest index on ties) and pays back the round's total.
    /// Only participants change, as in nginx, so an ineligible backend keeps its place.
    public mutating func pick(eligible: (BackendID) -> Bool, excluding: [BackendID] = []) -> BackendID? {
        if let b = round(eligible: { eligible($0) && !excluding.contains($0) }) { return b }
        return round(eligible: eligible)
    }

    private mutating func round(eligible: (BackendID) -> Bool) -> BackendID? {
        var best = -1
        var total = 0
        for i in weights.indices where weights[i] > 0 && eligible(BackendID(i)) {
            current[i] += weights[i]
            total += weights[i]
            if best < 0 || current[i] > current[best] { best = i }
        }
        guard best >= 0 else { return nil }
        current[best] -= total
        return BackendID(best)
    }
}

// RecentAssignments: how many requests each backend was given lately, as a count that decays by
// (1 − 1/window) at every assignment (to any backend), so the counts sum to about `window` once
// that many were made and a backend's share of the last ~window decisions is its count ÷ the
// sum. No clock: the decay follows this process's own decisions. RoutingScorer's share guard
// reads it (÷ each backend's weight). Pure value, one Double per backend.
// Pure: no imports, no I/O.

public struct RecentAssignments: Equatable, Sendable {
    public let window: Int
    public private(set) var counts: [Double]
    private let keep: Double

    public init(backendCount: Int, window: Int) {
        self.window = max(1, window)
        counts = Array(repeating: 0, count: max(1, backendCount))
        keep = 1 - 1 / Double(self.window)
    }

    /// A request was sent to `backend`.
    public mutating func assigned(_ backend: Int) {
        for i in counts.indices { counts[i] *= keep }
        counts[backend] += 1
    }

    public var total: Double { counts.reduce(0, +) }
}

// Metrics: this process's counters (one process per core; scrape each). Plain values mutated on
// the loop only. Rendered as JSON (/metrics) and Prometheus text (/metrics/prometheus).

public final class Metrics {
    public let startedNanos: UInt64
    public var requestsTotal = 0
    /// Responses by status class: index 1..5 for 1xx..5xx.
    public var responsesByClass = [Int](repeating: 0, count: 6)
    public var requestsInFlight = 0
    public var streamsStarted = 0
    public var openConnections = 0
    public var connectionsTotal = 0
    public var upstreamRetries = 0
    /// Termination counts by code ("--", "CD", "SH", ...), counted without building strings.
    public var terminationCounts: [Termination: Int] = [:]
    public var clientErrors = 0
    public var cacheHits = 0
    public var cacheMisses = 0
    public var cacheBypasses = 0
    public var cacheStaleServed = 0
    public var cacheStores = 0
    public var cacheErrors = 0
    public var coalescedFollowers = 0

    init(now: UInt64) { startedNanos = now }

    func recordStatus(_ status: Int) {
        let c = status / 100
        if c >= 1 && c <= 5 { responsesByClass[c] += 1 }
    }
}

// Metrics: this process's counters (one process per core; scrape each). Plain values mutated on
// the loop only. Rendered as Prometheus text (/metrics, /metrics/prometheus) and JSON (/metrics
// with Accept: application/json).

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
    var terminationCounts = CounterTable<Termination>()
    public var cacheHits = 0
    public var cacheMisses = 0
    public var cacheBypasses = 0
    public var cacheStaleServed = 0
    public var cacheStores = 0
    public var cacheErrors = 0
    public var coalescedFollowers = 0
    /// Live followers closed because their client fell too far behind the shared stream.
    public var clientSlowClosed = 0

    /// Finished generation requests by (route, served model, status class, cache outcome).
    /// Models are bounded by the configured/discovered set; anything else counts as "other".
    struct RequestKey: Hashable {
        var route: String
        var model: String
        var statusClass: String
        var cache: String
    }
    var requestsByKey = CounterTable<RequestKey>()
    /// The `model` label's values: every served model the backends know, up to this many per
    /// process; the rest count as "other" (the `backend` label is bounded by the config).
    var modelLabels = LabelLimiter(maxValues: Metrics.maxModelLabels)
    static let maxModelLabels = 64
    var e2eSeconds = HistogramTable<LatencyLabels>(buckets: Histogram.latencySeconds)
    var ttftSeconds = HistogramTable<LatencyLabels>(buckets: Histogram.ttftSeconds)
    var overheadSeconds = HistogramTable<LatencyLabels>(buckets: Histogram.engineOverheadSeconds)
    /// Time to the first content event a client received (not the SSE head). Registered here;
    /// observed through EngineRuntime.firstTokenRelayed, which RequestSession does not call yet.
    var firstTokenSeconds = HistogramTable<LatencyLabels>(buckets: Histogram.ttftSeconds)
    var interChunkSeconds = Histogram(buckets: Histogram.interChunkSeconds)
    var queueWaitSeconds = Histogram(buckets: Histogram.queueWaitSeconds)
    /// By model label (bounded: LabelLimiter). A table, not a Dictionary: a request's increment
    /// compares with the last label instead of hashing it twice.
    var promptTokens = CounterTable<String>()
    var completionTokens = CounterTable<String>()

    init(now: UInt64) { startedNanos = now }

    static func statusClass(_ status: Int) -> String {
        switch status / 100 {
        case 2: return "2xx"
        case 3: return "3xx"
        case 4: return "4xx"
        case 5: return "5xx"
        default: return "other"
        }
    }

    func recordStatus(_ status: Int) {
        let c = status / 100
        if c >= 1 && c <= 5 { responsesByClass[c] += 1 }
    }
}

/// Counters keyed by a small label set (tens of keys): a linear table that checks the last key
/// hit first, so the per-request increment hashes nothing (a Dictionary hashed four strings).
struct CounterTable<Key: Equatable> {
    private var keys: [Key] = []
    private var counts: [Int] = []
    private var last = 0

    mutating func increment(_ key: Key, by n: Int = 1) {
        if last < keys.count && keys[last] == key {
            counts[last] += n
            return
        }
        if let i = keys.firstIndex(of: key) {
            last = i
            counts[i] += n
            return
        }
        keys.append(key)
        counts.append(n)
        last = keys.count - 1
    }

    subscript(_ key: Key) -> Int { keys.firstIndex(of: key).map { counts[$0] } ?? 0 }

    /// Every key with its count, in first-seen order.
    var entries: [(key: Key, value: Int)] { zip(keys, counts).map { (key: $0, value: $1) } }
}

extension Metrics {
    /// The counters a request event moves, once the machine has handled it: its cache outcome
    /// and isFollower then (`wasFollower`: before the event). Values, not the machine: a call
    /// the optimizer does not inline would copy the whole machine per event.
    func count(_ e: RequestMachine.Event, outcome: CacheOutcome, isFollower: Bool, wasFollower: Bool) {
        switch e {
        case .cacheAnswered(let l):
            if outcome == .hit { cacheHits += 1 } else { cacheMisses += 1 }
            if case .unavailable = l { cacheErrors += 1 }
        case .staleAnswered:
            if outcome == .stale { cacheStaleServed += 1 }
        case .flight:
            if isFollower && !wasFollower { coalescedFollowers += 1 }
        default:
            break
        }
    }
}

// HistogramTable: one Histogram per label set, created on first observation (a series that never
// saw a request is not exported), and LabelLimiter, which keeps a label's value set bounded.
// Owned by the per-process Metrics, mutated on the loop; rendered by Metrics+Prometheus.
// Pure: no imports, no I/O.

/// The labels of the Engine's latency histograms.
struct LatencyLabels: Equatable, Sendable {
    /// The served model, bounded by LabelLimiter (unknown or excess models are "other").
    var model: String
    /// The backend URL from the config, or "none" when no backend answered (cache hit, follower
    /// of another request, rejection).
    var backend: String
}

struct HistogramTable<Key: Equatable> {
    let buckets: [Double]
    private var keys: [Key] = []
    private var histograms: [Histogram] = []
    /// The last key observed: consecutive requests usually share one, so most observations
    /// compare one key instead of scanning.
    private var last = 0

    init(buckets: [Double]) { self.buckets = buckets }

    mutating func observe(_ key: Key, _ value: Double) {
        if last < keys.count && keys[last] == key {
            histograms[last].observe(value)
            return
        }
        if let i = keys.firstIndex(of: key) {
            last = i
        } else {
            keys.append(key)
            histograms.append(Histogram(buckets: buckets))
            last = keys.count - 1
        }
        histograms[last].observe(value)
    }

    /// Every series, in first-seen order.
    var series: [(key: Key, histogram: Histogram)] { zip(keys, histograms).map { (key: $0, histogram: $1) } }

    var isEmpty: Bool { keys.isEmpty }
}

/// Admits the first `maxValues` distinct values of a label and maps every later one to "other",
/// so that no input (a client naming models, a backend announcing many) can grow a process's
/// series without bound. Values admitted once stay admitted.
struct LabelLimiter {
    let maxValues: Int
    private var admitted: Set<String> = []
    /// The last value admitted: most requests repeat it, and comparing it costs less than hashing
    /// (the per-request path hashes nothing, as CounterTable).
    private var last: String?

    init(maxValues: Int) { self.maxValues = maxValues }

    static let other = "other"

    mutating func label(_ value: String) -> String {
        if value == last { return value }
        if !admitted.contains(value) {
            guard admitted.count < maxValues, value != LabelLimiter.other else { return LabelLimiter.other }
            admitted.insert(value)
        }
        last = value
        return value
    }
}

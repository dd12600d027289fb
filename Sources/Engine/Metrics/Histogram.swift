// Histogram: a Prometheus-style histogram with fixed upper bounds, as a plain value (standard
// library only). Owned by whoever holds it (the per-process Metrics object, mutated on the loop);
// rendered by PrometheusWriter. `observe` is a binary search plus three stores: no allocation
// while the storage is uniquely referenced (a copy taken for rendering makes the next observe copy once).
// Pure: no imports, no I/O.

public struct Histogram: Sendable, Equatable {
    /// Finite, strictly increasing upper bounds (`le`); the implicit `+Inf` bucket is not listed.
    public let upperBounds: [Double]
    /// Per-bucket (non-cumulative) counts; one more than `upperBounds`, the last being `+Inf`.
    /// Cumulating happens at scrape time, so `observe` touches one slot instead of every bucket.
    private var bucketCounts: [UInt64]
    /// Observations recorded (NaN observations are dropped, see `observe`).
    public private(set) var count: UInt64 = 0
    /// Sum of the observations recorded.
    public private(set) var sum: Double = 0
    /// `upperBounds` in nanoseconds, for `observe(nanoseconds:)`: per bound, the largest n whose
    /// reading in seconds, Double(n) / 1e9, is at most the bound (-1: no n is).
    private let nanosecondBounds: [Int64]

    /// `buckets` must be strictly increasing and not NaN; a trailing `+Inf` is accepted and dropped,
    /// because the `+Inf` bucket is always present. Bucket layouts are constants in our code, so a
    /// bad one is our bug: precondition.
    public init(buckets: [Double]) {
        var bounds = buckets
        if bounds.last == .infinity { bounds.removeLast() }
        for (i, b) in bounds.enumerated() {
            precondition(b.isFinite, "histogram bound \(b) must be finite (+Inf is implicit)")
            precondition(i == 0 || bounds[i - 1] < b, "histogram bounds must be strictly increasing: \(bounds)")
        }
        upperBounds = bounds
        bucketCounts = [UInt64](repeating: 0, count: bounds.count + 1)
        nanosecondBounds = bounds.map(Self.largestNanoseconds(atMost:))
    }

    /// The largest n >= 0 with Double(n) / 1e9 <= `bound` (-1 when there is none; Int64.max when
    /// every n is). Double(n) / 1e9 never decreases as n grows, so for every n:
    /// n <= largestNanoseconds(atMost: b) exactly when Double(n) / 1e9 <= b.
    static func largestNanoseconds(atMost bound: Double) -> Int64 {
        if bound < 0 { return -1 }
        if bound * 1e9 >= 9e18 { return Int64.max }
        var n = Int64((bound * 1e9).rounded(.down))
        while n >= 0 && Double(n) / 1e9 > bound { n -= 1 }
        while Double(n + 1) / 1e9 <= bound { n += 1 }
        return n
    }

    /// Records `v` in the first bucket whose bound is >= `v` (Prometheus `le` semantics: a value equal
    /// to a bound belongs to that bound's bucket). NaN is dropped rather than counted: it would poison
    /// `sum` for the life of the process, and it can only come from a bad clock reading.
    public mutating func observe(_ v: Double) {
        if v.isNaN { return }
        // Lower bound: the first index whose bound is >= v; `upperBounds.count` means +Inf.
        var lo = 0
        var hi = upperBounds.count
        while lo < hi {
            let mid = (lo &+ hi) >> 1
            if upperBounds[mid] < v { lo = mid &+ 1 } else { hi = mid }
        }
        bucketCounts[lo] &+= 1
        count &+= 1
        sum += v
    }

    /// Records `n` nanoseconds in seconds, exactly as `observe(Double(n) / 1e9)` would (the same
    /// bucket, count and sum), with the bucket found by integer compares from the first: a
    /// stream observes the gap before each read it relays, and its gaps sit in the first buckets.
    public mutating func observe(nanoseconds n: UInt64) {
        let v = Int64(clamping: n)
        var i = 0
        nanosecondBounds.withUnsafeBufferPointer { b in
            while i < b.count && b[i] < v { i &+= 1 }
        }
        bucketCounts[i] &+= 1
        count &+= 1
        sum += Double(n) / 1e9
    }

    /// Records a duration in seconds (all our time histograms are `_seconds`).
    public mutating func observe(_ d: Duration) {
        let (s, atto) = d.components
        observe(Double(s) + Double(atto) * 1e-18)
    }

    /// Cumulative counts per bucket, in bound order, ending with the `+Inf` bucket (== `count`).
    public func cumulativeCounts() -> [UInt64] {
        var out = [UInt64]()
        out.reserveCapacity(bucketCounts.count)
        var running: UInt64 = 0
        for c in bucketCounts {
            running &+= c
            out.append(running)
        }
        return out
    }
}

extension Histogram {
    /// End-to-end request latency: 1 ms to 2 min, roughly 1-2.5-5 per decade (16 buckets).
    public static let latencySeconds: [Double] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
    ]

    /// The Engine's own added latency (upstream time excluded): 50 µs to 100 ms.
    public static let engineOverheadSeconds: [Double] = [
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    ]

    /// Time to first token: the same bounds as vLLM v1's `vllm:time_to_first_token_seconds`, so the
    /// Engine's and the backend's histograms can be compared bucket by bucket.
    public static let ttftSeconds: [Double] = [
        0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
        1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560,
    ]

    /// Gaps between SSE chunks relayed to a client: 0.5 ms to 5 s.
    public static let interChunkSeconds: [Double] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
    ]

    /// Time spent queued by admission control: 10 ms to 1 min.
    public static let queueWaitSeconds: [Double] = [
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
    ]
}

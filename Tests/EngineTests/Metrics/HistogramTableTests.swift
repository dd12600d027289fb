// HistogramTable and LabelLimiter: labelled latency series and their bound.
import Testing

@testable import Engine

@Suite struct HistogramTableTests {
    @Test func oneSeriesPerKeyInFirstSeenOrder() {
        var t = HistogramTable<LatencyLabels>(buckets: [0.1, 1])
        #expect(t.isEmpty)
        let a = LatencyLabels(model: "m", backend: "http://a")
        let b = LatencyLabels(model: "m", backend: "none")
        t.observe(a, 0.05)
        t.observe(a, 0.5)
        t.observe(b, 5)
        t.observe(a, 0.2)
        #expect(t.series.map(\.key) == [a, b])
        #expect(t.series[0].histogram.count == 3)
        #expect(t.series[0].histogram.cumulativeCounts() == [1, 3, 3])
        #expect(t.series[1].histogram.cumulativeCounts() == [0, 0, 1])
        #expect(t.series[0].histogram.upperBounds == [0.1, 1])
    }

    @Test func limiterAdmitsTheFirstValuesThenSaysOther() {
        var l = LabelLimiter(maxValues: 2)
        #expect(l.label("a") == "a")
        #expect(l.label("b") == "b")
        #expect(l.label("c") == "other")
        #expect(l.label("a") == "a")
        #expect(l.label("b") == "b")
        #expect(l.label("other") == "other")
        var m = LabelLimiter(maxValues: 1)
        #expect(m.label("other") == "other")  // "other" takes no slot
        #expect(m.label("x") == "x")
    }

    /// However many distinct models clients name, a process exports a bounded set of series.
    @Test func manyModelsStayBounded() {
        var l = LabelLimiter(maxValues: Metrics.maxModelLabels)
        var t = HistogramTable<LatencyLabels>(buckets: Histogram.latencySeconds)
        for i in 0..<10_000 { t.observe(LatencyLabels(model: l.label("model-\(i)"), backend: "none"), 0.01) }
        #expect(t.series.count == Metrics.maxModelLabels + 1)
        #expect(t.series.last?.key.model == "other")
        #expect(t.series.last?.histogram.count == UInt64(10_000 - Metrics.maxModelLabels))
    }
}

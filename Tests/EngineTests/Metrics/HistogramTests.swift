// Histogram: bucket placement at and around the bounds, cumulative counts, sum/count, the standard
// bucket sets, copy-on-write independence, and the binary search against a linear reference.
import Testing
@testable import Engine

@Suite struct HistogramTests {
    @Test func valueEqualToABoundLandsInThatBucket() {
        var h = Histogram(buckets: [0.005, 0.1, 1])
        h.observe(0.005)
        h.observe(0.1)
        h.observe(1)
        #expect(h.cumulativeCounts() == [1, 2, 3, 3])
    }

    @Test func valuesJustAroundABound() {
        var h = Histogram(buckets: [0.005, 0.1, 1])
        h.observe(0.005.nextDown)  // ≤ 0.005
        h.observe(0.005.nextUp)  // first bucket above: 0.1
        h.observe(0.1.nextUp)  // → 1
        h.observe(1.0.nextUp)  // → +Inf
        #expect(h.cumulativeCounts() == [1, 2, 3, 4])
    }

    @Test func belowTheFirstBoundZeroAndNegative() {
        var h = Histogram(buckets: [0.005, 0.1])
        h.observe(0)
        h.observe(-3)
        h.observe(0.0001)
        #expect(h.cumulativeCounts() == [3, 3, 3])
        #expect(h.sum == -3 + 0.0001)
    }

    @Test func aboveTheLastBoundAndInfinityGoToPlusInf() {
        var h = Histogram(buckets: [1, 2])
        h.observe(2.5)
        h.observe(1e300)
        h.observe(.infinity)
        #expect(h.cumulativeCounts() == [0, 0, 3])
        #expect(h.count == 3)
        #expect(h.sum == .infinity)
    }

    @Test func nanIsDroppedAndDoesNotPoisonTheSum() {
        var h = Histogram(buckets: [1])
        h.observe(0.5)
        h.observe(.nan)
        #expect(h.count == 1)
        #expect(h.sum == 0.5)
        #expect(h.cumulativeCounts() == [1, 1])
    }

    @Test func cumulativeCountsSumAndCount() {
        var h = Histogram(buckets: [0.25, 0.5, 1, 2])
        for v in [0.125, 0.25, 0.375, 0.75, 0.75, 1.5, 4, 8] { h.observe(v) }
        #expect(h.cumulativeCounts() == [2, 3, 5, 6, 8])
        #expect(h.count == 8)
        #expect(h.sum == 15.75)
        #expect(h.cumulativeCounts().last == h.count)
    }

    @Test func emptyHistogram() {
        let h = Histogram(buckets: Histogram.latencySeconds)
        #expect(h.count == 0)
        #expect(h.sum == 0)
        #expect(h.cumulativeCounts() == [UInt64](repeating: 0, count: 17))
    }

    @Test func noBoundsMeansOnlyPlusInf() {
        var h = Histogram(buckets: [])
        h.observe(3)
        #expect(h.upperBounds.isEmpty)
        #expect(h.cumulativeCounts() == [1])
    }

    @Test func trailingPlusInfIsAcceptedAndDropped() {
        let h = Histogram(buckets: [0.1, 1, .infinity])
        #expect(h.upperBounds == [0.1, 1])
        #expect(h.cumulativeCounts().count == 3)
    }

    @Test func observesDurationsInSeconds() {
        var h = Histogram(buckets: [0.001, 0.01, 1])
        h.observe(Duration.microseconds(1000))  // exactly on 0.001
        h.observe(Duration.milliseconds(5))
        h.observe(Duration.seconds(2))
        h.observe(Duration.milliseconds(-1500))
        #expect(h.cumulativeCounts() == [2, 3, 3, 4])
        #expect(abs(h.sum - (0.001 + 0.005 + 2 - 1.5)) < 1e-12)
    }

    @Test func copiesAreIndependent() {
        var a = Histogram(buckets: [1])
        a.observe(0.5)
        let snapshot = a
        a.observe(2)
        #expect(snapshot.cumulativeCounts() == [1, 1])
        #expect(a.cumulativeCounts() == [1, 2])
        #expect(snapshot != a)
    }

    @Test func binarySearchAgreesWithALinearScan() {
        var rng = TestRNG(seed: 0x5EED)
        let bounds = Histogram.ttftSeconds
        var h = Histogram(buckets: bounds)
        var reference = [UInt64](repeating: 0, count: bounds.count + 1)
        for i in 0..<5000 {
            // Mix exact bounds, their neighbours and random values spread over the whole range.
            let v: Double
            switch i % 4 {
            case 0: v = bounds[Int(rng.next() % UInt64(bounds.count))]
            case 1: v = bounds[Int(rng.next() % UInt64(bounds.count))].nextUp
            case 2: v = bounds[Int(rng.next() % UInt64(bounds.count))].nextDown
            default: v = Double(rng.next() % 1_000_000) / 1_000_000 * 3000
            }
            h.observe(v)
            reference[bounds.firstIndex { v <= $0 } ?? bounds.count] += 1
        }
        var cumulative: [UInt64] = []
        var running: UInt64 = 0
        for c in reference {
            running += c
            cumulative.append(running)
        }
        #expect(h.cumulativeCounts() == cumulative)
        #expect(h.count == 5000)
    }

    @Test(arguments: [
        ("latencySeconds", Histogram.latencySeconds, 0.001, 120.0),
        ("engineOverheadSeconds", Histogram.engineOverheadSeconds, 0.00005, 0.1),
        ("ttftSeconds", Histogram.ttftSeconds, 0.001, 2560.0),
        ("interChunkSeconds", Histogram.interChunkSeconds, 0.0005, 5.0),
        ("queueWaitSeconds", Histogram.queueWaitSeconds, 0.01, 60.0),
    ])
    func standardBucketSets(name: String, bounds: [Double], first: Double, last: Double) {
        #expect(bounds.first == first, "\(name)")
        #expect(bounds.last == last, "\(name)")
        #expect(zip(bounds, bounds.dropFirst()).allSatisfy { $0 < $1 }, "\(name) must be strictly increasing")
        #expect(bounds.allSatisfy { $0.isFinite }, "\(name)")
        #expect((10...24).contains(bounds.count), "\(name) has \(bounds.count) buckets")
        #expect(Histogram(buckets: bounds).upperBounds == bounds)
    }

    @Test func latencyHasSixteenBucketsAndTTFTMatchesVLLM() {
        #expect(Histogram.latencySeconds.count == 16)
        // vllm/v1/metrics/loggers.py, histogram_time_to_first_token.
        #expect(Histogram.ttftSeconds == [
            0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
            1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
        ])
    }

    @Test func badBoundsAreOurBug() async {
        await #expect(processExitsWith: .failure) { _ = Histogram(buckets: [1, 0.5]) }
        await #expect(processExitsWith: .failure) { _ = Histogram(buckets: [1, 1]) }
        await #expect(processExitsWith: .failure) { _ = Histogram(buckets: [.nan]) }
    }

    /// observe(nanoseconds:) is observe(Double(n) / 1e9): the same buckets, count and sum, for
    /// every standard layout, at each bound's edge in nanoseconds and at random gaps.
    @Test func nanosecondsLandAsTheirSecondsWould() {
        var rng = SystemRandomNumberGenerator()
        for layout in [Histogram.latencySeconds, Histogram.engineOverheadSeconds, Histogram.interChunkSeconds,
                       Histogram.queueWaitSeconds, [-1, 0, 1e-9, 2.5e-9, 0.3, 0.7]] {
            var viaSeconds = Histogram(buckets: layout)
            var viaNanos = Histogram(buckets: layout)
            var ns: [UInt64] = [0, 1, 2, UInt64.max, UInt64(Int64.max)]
            for b in layout where b >= 0 {
                let n = UInt64(Histogram.largestNanoseconds(atMost: b))
                #expect(Double(n) / 1e9 <= b && Double(n + 1) / 1e9 > b)
                ns += [n, n + 1, n > 0 ? n - 1 : 0]
            }
            for _ in 0..<2000 { ns.append(UInt64.random(in: 0...200_000_000_000, using: &rng)) }
            for _ in 0..<2000 { ns.append(UInt64.random(in: 0...20_000_000, using: &rng)) }
            for n in ns {
                viaSeconds.observe(Double(n) / 1e9)
                viaNanos.observe(nanoseconds: n)
            }
            #expect(viaNanos.cumulativeCounts() == viaSeconds.cumulativeCounts())
            #expect(viaNanos.count == viaSeconds.count && viaNanos.sum == viaSeconds.sum)
        }
    }
}

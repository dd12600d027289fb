// CounterTable: the per-request labelled counters (last-hit first, first-seen order).
import Testing
@testable import Engine

@Suite struct CounterTableTests {
    @Test func countsPerKeyInFirstSeenOrder() {
        var t = CounterTable<String>()
        #expect(t.entries.isEmpty)
        for k in ["a", "a", "b", "a", "c", "b"] { t.increment(k) }
        t.increment("c", by: 5)
        #expect(t["a"] == 3)
        #expect(t["b"] == 2)
        #expect(t["c"] == 6)
        #expect(t["missing"] == 0)
        #expect(t.entries.map(\.key) == ["a", "b", "c"])
        #expect(t.entries.map(\.value) == [3, 2, 6])
    }

    @Test func requestKeysCompareByAllLabels() {
        var t = CounterTable<Metrics.RequestKey>()
        let hit = Metrics.RequestKey(route: "chat", model: "m", statusClass: "2xx", cache: "HIT")
        let miss = Metrics.RequestKey(route: "chat", model: "m", statusClass: "2xx", cache: "MISS")
        t.increment(hit); t.increment(miss); t.increment(hit)
        #expect(t[hit] == 2 && t[miss] == 1)
    }
}

// ChainCounts: the open-addressing multiset against a Dictionary model, with keys crowded into
// few buckets (long probe runs, wrap-around) so backward-shift deletion is exercised.
import Testing

@testable import Engine

@Suite struct ChainCountsTests {
    @Test func randomAddsAndRemovesAgreeWithADictionary() {
        var rng = TestRNG(seed: 21)
        var set = ChainCounts()
        var model: [UInt64: Int] = [:]
        for step in 0..<8_000 {  // (debug build: long probe runs make each step slow)
            // Low bits from a small range (collisions), high bits distinct; some keys end in all
            // ones (the last bucket: probes wrap to the start).
            let r = rng.next()
            let key = (r % 500) << 40 | (r % 7 == 0 ? UInt64.max >> 24 : r % 37)
            if rng.next() % 3 == 0 {
                set.remove(key)
                if let n = model[key] { model[key] = n > 1 ? n - 1 : nil }
            } else {
                set.add(key)
                model[key, default: 0] += 1
            }
            if step % 499 == 0 {
                for k in model.keys { #expect(set.contains(k)) }
            }
            #expect(set.contains(key) == (model[key] != nil))
            #expect(set.count == model.count)
        }
        for (k, n) in model {
            for _ in 0..<n { set.remove(k) }
            #expect(!set.contains(k))
        }
        #expect(set.isEmpty)
        set.remove(12345)  // absent: nothing happens
        #expect(set.isEmpty)
    }
}

// MemoryCacheStore: LRU order and TTL/stale arithmetic with injected monotonic times.
import Testing
@testable import Engine

private let s: UInt64 = 1_000_000_000

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

private func get(_ m: MemoryCacheStore, _ k: String, at now: UInt64) -> CacheLookup {
    var out: CacheLookup?
    m.get(key: k, now: now, wallMillis: 0) { out = $0 }
    return out!  // synchronous by contract
}

@Suite struct MemoryCacheStoreTests {
    @Test func evictsLeastRecentlyUsed() {
        let m = MemoryCacheStore(maxEntries: 3)
        for k in ["a", "b", "c"] { m.store(k, bytes(k), ttl: .seconds(60), staleTTL: .zero, now: 0) }
        #expect(m.keysByRecency == ["c", "b", "a"])
        #expect(get(m, "a", at: 1) == .fresh(bytes("a")))
        #expect(m.keysByRecency == ["a", "c", "b"])
        m.store("d", bytes("d"), ttl: .seconds(60), staleTTL: .zero, now: 2)
        #expect(m.keysByRecency == ["d", "a", "c"])
        #expect(get(m, "b", at: 3) == .miss)
        #expect(m.evictions == 1)
        // Updating an existing key refreshes it and does not evict.
        m.store("c", bytes("c2"), ttl: .seconds(60), staleTTL: .zero, now: 4)
        #expect(m.keysByRecency == ["c", "d", "a"])
        #expect(get(m, "c", at: 5) == .fresh(bytes("c2")))
        #expect(m.entryCount == 3)
        #expect(m.evictions == 1)
    }

    @Test func getStaleDoesNotTouchRecency() {
        let m = MemoryCacheStore(maxEntries: 2)
        m.store("a", bytes("a"), ttl: .seconds(1), staleTTL: .seconds(10), now: 0)
        m.store("b", bytes("b"), ttl: .seconds(1), staleTTL: .seconds(10), now: 0)
        var peek: CacheLookup?
        m.getStale(key: "a", now: 2 * s, wallMillis: 0) { peek = $0 }
        #expect(peek == .stale(bytes("a")))
        #expect(m.keysByRecency == ["b", "a"])
        m.store("c", bytes("c"), ttl: .seconds(1), staleTTL: .zero, now: 2 * s)
        #expect(m.keysByRecency == ["c", "b"])
    }

    @Test func freshThenStaleThenGoneWithFractionalTTLs() {
        let m = MemoryCacheStore(maxEntries: 10)
        let t0: UInt64 = 5 * s
        m.store("k", bytes("v"), ttl: .milliseconds(1500), staleTTL: .milliseconds(250), now: t0)
        #expect(get(m, "k", at: t0) == .fresh(bytes("v")))
        #expect(get(m, "k", at: t0 + 1_499_999_999) == .fresh(bytes("v")))
        #expect(get(m, "k", at: t0 + 1_500_000_000) == .stale(bytes("v")), "stale entries are never fresh")
        #expect(get(m, "k", at: t0 + 1_749_999_999) == .stale(bytes("v")))
        #expect(get(m, "k", at: t0 + 1_750_000_000) == .miss)
        #expect(m.entryCount == 0, "expired entries are dropped when met")
    }

    @Test func zeroStaleTTLExpiresAtTheTTL() {
        let m = MemoryCacheStore(maxEntries: 10)
        m.store("k", bytes("v"), ttl: .nanoseconds(10), staleTTL: .zero, now: 100)
        #expect(get(m, "k", at: 109) == .fresh(bytes("v")))
        #expect(get(m, "k", at: 110) == .miss)
    }

    @Test func refusesZeroTTLAndOversizedValues() {
        let m = MemoryCacheStore(maxEntries: 10, maxBytes: 8)
        var ok: Bool?
        m.put(key: "z", value: bytes("v"), ttl: .zero, staleTTL: .seconds(1), now: 0, wallMillis: 0) { ok = $0 }
        #expect(ok == false)
        m.store("big", bytes("v"), ttl: .seconds(1), staleTTL: .zero, now: 0)
        #expect(!m.store("big", bytes("123456789"), ttl: .seconds(1), staleTTL: .zero, now: 0))
        #expect(get(m, "big", at: 1) == .miss, "a refused update does not leave the old body behind")
    }

    @Test func evictsByTotalBytes() {
        let m = MemoryCacheStore(maxEntries: 100, maxBytes: 10)
        m.store("a", bytes("aaaa"), ttl: .seconds(1), staleTTL: .zero, now: 0)
        m.store("b", bytes("bbbb"), ttl: .seconds(1), staleTTL: .zero, now: 0)
        m.store("c", bytes("cccc"), ttl: .seconds(1), staleTTL: .zero, now: 0)
        #expect(m.keysByRecency == ["c", "b"])
        #expect(m.totalBytes == 8)
        m.store("d", bytes("dddddddddd"), ttl: .seconds(1), staleTTL: .zero, now: 0)
        #expect(m.keysByRecency == ["d"])
        #expect(m.totalBytes == 10)
    }

    @Test func hugeTTLsSaturateInsteadOfOverflowing() {
        let m = MemoryCacheStore(maxEntries: 1)
        m.store("k", bytes("v"), ttl: .seconds(Int64.max), staleTTL: .seconds(Int64.max), now: UInt64.max - 5)
        #expect(get(m, "k", at: UInt64.max - 1) == .fresh(bytes("v")))
    }

    @Test func matchesAReferenceModelUnderRandomOperations() {
        var rng = TestRNG(seed: 0xC0FFEE)
        let m = MemoryCacheStore(maxEntries: 16)
        var model: [(key: String, value: [UInt8], fresh: UInt64, stale: UInt64)] = []  // most recent first
        var now: UInt64 = 0
        for step in 0..<20_000 {
            now += rng.next() % 50_000_000
            let k = "k\(rng.next() % 40)"
            if rng.next() % 3 == 0 {
                let v = bytes("\(step)")
                let ttl = rng.next() % 400_000_000 + 1
                let stale = rng.next() % 200_000_000
                m.store(k, v, ttl: .nanoseconds(Int64(ttl)), staleTTL: .nanoseconds(Int64(stale)), now: now)
                model.removeAll { $0.key == k }
                model.insert((k, v, now + ttl, now + ttl + stale), at: 0)
                if model.count > 16 { model.removeLast() }
            } else {
                let got = get(m, k, at: now)
                let want: CacheLookup
                if let i = model.firstIndex(where: { $0.key == k }) {
                    let e = model[i]
                    if now >= e.stale {
                        model.remove(at: i)
                        want = .miss
                    } else {
                        model.remove(at: i)
                        model.insert(e, at: 0)
                        want = now < e.fresh ? .fresh(e.value) : .stale(e.value)
                    }
                } else {
                    want = .miss
                }
                #expect(got == want, "step \(step)")
                if got != want { return }
            }
            #expect(m.keysByRecency == model.map(\.key), "step \(step)")
            if m.keysByRecency != model.map(\.key) { return }
        }
    }
}

@Suite struct MemoryCacheStoreProtocolTests {
    /// Through the protocol's put without a completion (what the driver calls).
    @Test func putWithoutCompletionStores() {
        let store: CacheStore = MemoryCacheStore(maxEntries: 4)
        store.put(key: "k", value: [1, 2, 3], ttl: .seconds(10), staleTTL: .seconds(10), now: 1_000, wallMillis: 0)
        var got: CacheLookup?
        store.get(key: "k", now: 2_000, wallMillis: 0) { got = $0 }
        #expect(got == .fresh([1, 2, 3]))
    }
}

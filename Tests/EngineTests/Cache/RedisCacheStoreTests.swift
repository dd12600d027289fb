// RedisCacheStore against a real redis-server named by ENGINE_TEST_REDIS_URL (suite disabled,
// reported as skipped, when unset), plus the Redis-down path, which needs no server.
import CEventShim
import Reactor
import Testing
@testable import Engine

#if canImport(Glibc)
import Glibc
#endif

private func sleepLoop(_ loop: Loop, _ d: Duration) { spin(loop, timeout: d) { false } }

private func wallMillis() -> UInt64 { UInt64(Loop.wallSeconds() * 1000) }

/// Synchronous wrappers: run the loop until the completion fires.
private struct Sync {
    let loop: Loop
    let store: RedisCacheStore

    func get(_ k: String, wall: UInt64) -> CacheLookup? {
        var r: CacheLookup?
        store.get(key: k, now: Loop.nowNanos(), wallMillis: wall) { r = $0 }
        spin(loop) { r != nil }
        return r
    }

    func getStale(_ k: String, wall: UInt64) -> CacheLookup? {
        var r: CacheLookup?
        store.getStale(key: k, now: Loop.nowNanos(), wallMillis: wall) { r = $0 }
        spin(loop) { r != nil }
        return r
    }

    @discardableResult
    func put(_ k: String, _ v: [UInt8], ttl: Duration, stale: Duration = .zero, wall: UInt64) -> Bool? {
        var r: Bool?
        store.put(key: k, value: v, ttl: ttl, staleTTL: stale, now: Loop.nowNanos(), wallMillis: wall) { r = $0 }
        spin(loop) { r != nil }
        return r
    }

    func count() -> Int? {
        var r: Int?? = .none
        store.count { r = .some($0) }
        spin(loop) { r != nil }
        return r ?? nil
    }

    func raw(_ argv: [String]) -> RedisValue? {
        var r: RedisValue?
        store.connection.send(argv) { r = $0 }
        spin(loop) { r != nil }
        return r
    }
}

private func namespace(_ tag: String) -> String {
    "enginetest:cache:\(tag):\(getpid()):\(UInt64.random(in: 0...UInt64.max))"
}

@Suite struct RedisCacheStoreOfflineTests {
    @Test func redisDownIsUnavailableNotAnError() {
        let loop = Loop()
        let conn = RedisConnection(loop: loop, host: "127.0.0.1", port: 1, commandTimeout: .milliseconds(100),
                                   connectTimeout: .milliseconds(100))
        defer { conn.close() }
        conn.connect()
        let s = Sync(loop: loop, store: RedisCacheStore(connection: conn, maxEntries: 10, namespace: namespace("down")))
        #expect(s.get("k", wall: 0) == .unavailable)
        #expect(s.getStale("k", wall: 0) == .unavailable)
        #expect(s.put("k", [1], ttl: .seconds(1), wall: 0) == false)
        #expect(s.count() == nil)
    }

    @Test func blobHeaderRoundTripsAndRejectsForeignValues() {
        #expect(RedisCacheStore.decode(Array("v1:123\nbody".utf8))! == (123, Array("body".utf8)))
        #expect(RedisCacheStore.decode(Array("v1:123\n".utf8))! == (123, []))
        #expect(RedisCacheStore.decode(Array("v1:x\nbody".utf8)) == nil)
        #expect(RedisCacheStore.decode(Array("hello".utf8)) == nil)
        #expect(RedisCacheStore.lookup(from: .string(Array("garbage".utf8)), wallMillis: 0) == .miss)
        #expect(RedisCacheStore.lookup(from: .error("ERR"), wallMillis: 0) == .unavailable)
        #expect(RedisCacheStore.lookup(from: .null, wallMillis: 0) == .miss)
        #expect(RedisCacheStore.lookup(from: .string(Array("v1:10\nb".utf8)), wallMillis: 9) == .fresh([98]))
        #expect(RedisCacheStore.lookup(from: .string(Array("v1:10\nb".utf8)), wallMillis: 10) == .stale([98]))
        // SHA1 used for EVALSHA matches what Redis computes (SHA1 of "" is well known).
        #expect(RedisScript("").sha == Array("da39a3ee5e6b4b0d3255bfef95601890afd80709".utf8))
        #expect(RedisScript("abc").sha == Array("a9993e364706816aba3e25717850c26c9cd0d89d".utf8))
    }
}

@Suite(.enabled(if: testRedisURL != nil, "set ENGINE_TEST_REDIS_URL to a running redis-server"))
struct RedisCacheStoreLiveTests {
    @Test func putGetRoundTripWithBinaryBodies() {
        let loop = Loop()
        let conn = connectTestRedis(loop)
        defer { conn.close() }
        let s = Sync(loop: loop, store: RedisCacheStore(connection: conn, maxEntries: 10, namespace: namespace("rt")))
        let body: [UInt8] = [0, 10, 13, 255] + Array("{\"x\":1}\n".utf8)
        let w = wallMillis()
        #expect(s.get("k", wall: w) == .miss)
        #expect(s.put("k", body, ttl: .seconds(30), stale: .seconds(30), wall: w) == true)
        #expect(s.get("k", wall: w) == .fresh(body))
        #expect(s.getStale("k", wall: w) == .fresh(body))
        #expect(s.count() == 1)
        #expect(s.put("k", [7], ttl: .seconds(30), wall: w) == true)
        #expect(s.get("k", wall: w) == .fresh([7]))
        #expect(s.count() == 1)
    }

    @Test func fractionalTTLsFreshStaleAndExpiry() {
        let loop = Loop()
        let conn = connectTestRedis(loop)
        defer { conn.close() }
        let store = RedisCacheStore(connection: conn, maxEntries: 10, namespace: namespace("ttl"))
        let s = Sync(loop: loop, store: store)
        let w = wallMillis()
        #expect(s.put("k", [1], ttl: .milliseconds(300), stale: .milliseconds(450), wall: w) == true)
        // Freshness comes from the stored header, so injected wall times decide it exactly.
        #expect(s.get("k", wall: w + 299) == .fresh([1]))
        #expect(s.get("k", wall: w + 300) == .stale([1]))
        #expect(s.getStale("k", wall: w + 500) == .stale([1]))
        // Redis expires the key at ttl + staleTTL = 750 ms.
        guard case .int(let pttl) = s.raw(["PTTL", store.valueKey("k")]) else {
            Issue.record("PTTL")
            return
        }
        #expect(pttl > 500 && pttl <= 750, "pttl \(pttl)")
        sleepLoop(loop, .milliseconds(800))
        #expect(s.get("k", wall: wallMillis()) == .miss)
        // The ghost member stays in the LRU set until a store finds it at the cold end.
        s.put("k2", [2], ttl: .seconds(30), wall: wallMillis())
        #expect(s.raw(["ZSCORE", store.namespace + ":lru", "k"]) == .null)
        #expect(s.count() == 1)
        #expect(s.put("z", [1], ttl: .zero, stale: .seconds(1), wall: w) == false, "zero TTL is not stored")
    }

    @Test func evictsTheLeastRecentlyUsedAcrossConnections() {
        let loop = Loop()
        let c1 = connectTestRedis(loop)
        let c2 = connectTestRedis(loop)
        defer {
            c1.close()
            c2.close()
        }
        let ns = namespace("lru")
        // Two "workers" sharing one namespace.
        let w1 = Sync(loop: loop, store: RedisCacheStore(connection: c1, maxEntries: 3, namespace: ns))
        let w2 = Sync(loop: loop, store: RedisCacheStore(connection: c2, maxEntries: 3, namespace: ns))
        // Scores are wall-clock ms (exact order within one process only): a millisecond apart.
        var t = wallMillis()
        func w() -> UInt64 { t += 1; return t }
        w1.put("a", [1], ttl: .seconds(30), wall: w())
        w2.put("b", [2], ttl: .seconds(30), wall: w())
        w1.put("c", [3], ttl: .seconds(30), wall: w())
        #expect(w2.get("a", wall: w()) == .fresh([1]))  // a is now the most recent
        w2.put("d", [4], ttl: .seconds(30), wall: w())  // evicts b
        #expect(w1.get("b", wall: w()) == .miss)
        #expect(w1.raw(["EXISTS", w1.store.valueKey("b")]) == .int(0))
        #expect(w1.raw(["ZRANGE", ns + ":lru", "0", "-1"])
            == .array(["c", "a", "d"].map { .string(Array($0.utf8)) }))
        #expect(w2.count() == 3)
        // getStale does not bump: c stays coldest and goes next.
        #expect(w1.getStale("c", wall: w()) == .fresh([3]))
        w1.put("e", [5], ttl: .seconds(30), wall: w())
        #expect(w2.get("c", wall: w()) == .miss)
        #expect(w2.get("a", wall: w()) == .fresh([1]))
    }

    @Test func expiredGhostsAtTheColdEndAreCleanedOnInsert() {
        let loop = Loop()
        let conn = connectTestRedis(loop)
        defer { conn.close() }
        let store = RedisCacheStore(connection: conn, maxEntries: 10, namespace: namespace("ghost"))
        let s = Sync(loop: loop, store: store)
        let w = wallMillis()
        s.put("old", [1], ttl: .milliseconds(50), wall: w)
        s.put("keep", [2], ttl: .seconds(30), wall: w)
        sleepLoop(loop, .milliseconds(120))
        #expect(s.count() == 2, "the ghost is still a member")
        s.put("new", [3], ttl: .seconds(30), wall: w)
        #expect(s.raw(["ZRANGE", store.namespace + ":lru", "0", "-1"])
            == .array(["keep", "new"].map { .string(Array($0.utf8)) }))
    }

    @Test func nearCopiesAnswerWithoutRedisOnlyWhileFresh() {
        let loop = Loop()
        let conn = connectTestRedis(loop)
        defer { conn.close() }
        let ns = namespace("near")
        let near = MemoryCacheStore(maxEntries: 16)
        let s = Sync(loop: loop, store: RedisCacheStore(connection: conn, maxEntries: 10, namespace: ns, near: near))
        let plain = Sync(loop: loop, store: RedisCacheStore(connection: conn, maxEntries: 10, namespace: ns))
        let w = wallMillis()
        // Fresh long enough for a loaded machine (a parallel suite can hold the process for a
        // while): the copy must still be fresh when it is read below.
        #expect(s.put("k", [7], ttl: .seconds(5), stale: .seconds(5), wall: w) == true)
        #expect(s.raw(["DEL", plain.store.valueKey("k")]) == .int(1))
        #expect(plain.get("k", wall: w) == .miss, "gone from Redis")
        #expect(s.get("k", wall: w) == .fresh([7]), "the near copy answers, no round trip")
        // Read from Redis by another store: its near copy starts with that read.
        #expect(plain.put("r", [8], ttl: .seconds(30), wall: w) == true)
        #expect(s.get("r", wall: w) == .fresh([8]))
        #expect(s.raw(["DEL", plain.store.valueKey("r")]) == .int(1))
        #expect(s.get("r", wall: w) == .fresh([8]))
        // Past its freshness the copy is gone: Redis decides (here: stale, then nothing).
        #expect(s.put("f", [9], ttl: .milliseconds(100), stale: .seconds(5), wall: w) == true)
        sleepLoop(loop, .milliseconds(150))
        #expect(s.get("f", wall: wallMillis()) == .stale([9]))
    }

    @Test func noscriptFallsBackToEval() {
        let loop = Loop()
        let conn = connectTestRedis(loop)
        defer { conn.close() }
        let s = Sync(loop: loop, store: RedisCacheStore(connection: conn, maxEntries: 10, namespace: namespace("noscript")))
        // Other suites sharing this server fall back to EVAL as well, which is the behaviour under test.
        #expect(s.raw(["SCRIPT", "FLUSH"]) == .status("OK"))
        let w = wallMillis()
        #expect(s.put("k", [9], ttl: .seconds(30), wall: w) == true)
        #expect(s.get("k", wall: w) == .fresh([9]))
        #expect(s.raw(["SCRIPT", "EXISTS", String(decoding: RedisCacheStore.put.sha, as: UTF8.self)]) == .array([.int(1)]))
    }
}

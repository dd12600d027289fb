// SharedMemoryCacheStore over a real segment: the MemoryCacheStore semantics (TTL, stale, LRU by
// entries and bytes), values spanning many blocks, bucket collisions, two mappings of one segment
// (as two workers see it), and a process that dies holding the lock.
import CSharedCache
import Testing
@testable import Engine

#if canImport(Glibc)
import Glibc
#endif

private let s: UInt64 = 1_000_000_000

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// A fresh segment and one mapping of it; the fd stays open for more mappings.
private func segment(entries: Int, bytes: Int) throws -> (Int32, SharedMemoryCacheStore) {
    let fd = try SharedMemoryCacheStore.create(maxEntries: entries, maxBytes: bytes).get()
    return (fd, try #require(SharedMemoryCacheStore(fd: fd)))
}

@Suite struct SharedMemoryCacheStoreTests {
    @Test func freshThenStaleThenGone() throws {
        let (fd, m) = try segment(entries: 8, bytes: 1 << 20)
        defer { close(fd) }
        #expect(m.store("k", bytes("v"), ttl: .seconds(1), staleTTL: .seconds(2), now: 10 * s))
        #expect(m.lookup("k", now: 10 * s + 1, touch: true) == .fresh(bytes("v")))
        #expect(m.lookup("k", now: 11 * s, touch: true) == .stale(bytes("v")))
        #expect(m.lookup("k", now: 13 * s - 1, touch: false) == .stale(bytes("v")))
        #expect(m.lookup("k", now: 13 * s, touch: true) == .miss)
        #expect(m.entryCount == 0)
        #expect(m.lookup("other", now: 0, touch: true) == .miss)
    }

    /// withFresh lends what lookup gives fresh (a value larger than the scratch buffer too), and
    /// nothing for a stale or absent entry; MemoryCacheStore's default does the same.
    @Test func withFreshLendsTheFreshValueOnly() throws {
        let (fd, m) = try segment(entries: 8, bytes: 1 << 20)
        defer { close(fd) }
        let big = (0..<(200 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let mem = MemoryCacheStore(maxEntries: 8, maxBytes: 1 << 20)
        for store in [m as SynchronousCacheStore, mem] {
            #expect(store.store("k", bytes("v"), ttl: .seconds(1), staleTTL: .seconds(2), now: 10 * s))
            #expect(store.store("big", big, ttl: .seconds(1), staleTTL: .seconds(2), now: 10 * s))
            #expect(store.withFresh("k", now: 10 * s + 1) { Array($0) } == bytes("v"))
            #expect(store.withFresh("big", now: 10 * s + 1) { Array($0) } == big)
            var called = false
            #expect(store.withFresh("k", now: 11 * s) { _ in called = true } == nil)
            #expect(store.withFresh("other", now: 10 * s) { _ in called = true } == nil)
            #expect(!called)
            #expect(store.lookup("k", now: 11 * s, touch: false) == .stale(bytes("v")))
        }
    }

    @Test func replacesAndRefusesWithoutLeavingTheOldValue() throws {
        let (fd, m) = try segment(entries: 8, bytes: 4096)
        defer { close(fd) }
        #expect(m.store("k", bytes("one"), ttl: .seconds(60), staleTTL: .zero, now: 0))
        #expect(m.store("k", bytes("two"), ttl: .seconds(60), staleTTL: .zero, now: 0))
        #expect(m.lookup("k", now: 1, touch: true) == .fresh(bytes("two")))
        #expect(m.entryCount == 1)
        // Larger than the whole segment, or no fresh time: refused, and "two" is gone too.
        #expect(!m.store("k", [UInt8](repeating: 7, count: 5000), ttl: .seconds(60), staleTTL: .zero, now: 0))
        #expect(m.lookup("k", now: 1, touch: true) == .miss)
        #expect(m.store("k", bytes("three"), ttl: .seconds(60), staleTTL: .zero, now: 0))
        #expect(!m.store("k", bytes("four"), ttl: .zero, staleTTL: .seconds(60), now: 0))
        #expect(m.lookup("k", now: 1, touch: true) == .miss)
    }

    @Test func evictsLeastRecentlyUsedByEntries() throws {
        let (fd, m) = try segment(entries: 3, bytes: 1 << 20)
        defer { close(fd) }
        for k in ["a", "b", "c"] { m.store(k, bytes(k), ttl: .seconds(60), staleTTL: .zero, now: 0) }
        #expect(m.lookup("a", now: 1, touch: true) == .fresh(bytes("a")))   // a is now the newest
        #expect(m.lookup("b", now: 1, touch: false) == .fresh(bytes("b")))  // a peek does not touch
        m.store("d", bytes("d"), ttl: .seconds(60), staleTTL: .zero, now: 2)
        #expect(m.lookup("b", now: 3, touch: true) == .miss)
        for k in ["a", "c", "d"] { #expect(m.lookup(k, now: 3, touch: false) == .fresh(bytes(k))) }
        #expect(m.stats.evictions == 1)
        #expect(m.entryCount == 3)
    }

    /// A hit on the newest entry leaves the list as it is (no relink): the order stays exact.
    @Test func touchingTheNewestEntryKeepsTheOrder() throws {
        let (fd, m) = try segment(entries: 3, bytes: 1 << 20)
        defer { close(fd) }
        for k in ["a", "b", "c"] { m.store(k, bytes(k), ttl: .seconds(60), staleTTL: .zero, now: 0) }
        for _ in 0..<3 { #expect(m.lookup("c", now: 1, touch: true) == .fresh(bytes("c"))) }
        #expect(m.lookup("a", now: 1, touch: true) == .fresh(bytes("a")))   // newest first: a, c, b
        #expect(m.lookup("a", now: 1, touch: true) == .fresh(bytes("a")))
        m.store("d", bytes("d"), ttl: .seconds(60), staleTTL: .zero, now: 2)  // evicts b: d, a, c
        #expect(m.lookup("b", now: 3, touch: false) == .miss)
        m.store("e", bytes("e"), ttl: .seconds(60), staleTTL: .zero, now: 3)  // evicts c: e, d, a
        #expect(m.lookup("c", now: 3, touch: false) == .miss)
        for k in ["a", "d", "e"] { #expect(m.lookup(k, now: 3, touch: false) == .fresh(bytes(k))) }
        #expect(m.stats.evictions == 2)
    }

    @Test func evictsByBytesAndKeepsLargeValuesWhole() throws {
        // 6 KiB: 7 blocks of 1,020 payload bytes; a 3,000-byte value (plus its key) takes 3, so
        // two fit and a third pushes the oldest out.
        let (fd, m) = try segment(entries: 100, bytes: 6 << 10)
        defer { close(fd) }
        func value(_ seed: UInt8) -> [UInt8] { (0..<3000).map { UInt8(truncatingIfNeeded: Int($0) &* 31 &+ Int(seed)) } }
        #expect(m.store("x", value(1), ttl: .seconds(60), staleTTL: .zero, now: 0))
        #expect(m.store("y", value(2), ttl: .seconds(60), staleTTL: .zero, now: 0))
        #expect(m.store("z", value(3), ttl: .seconds(60), staleTTL: .zero, now: 0))
        #expect(m.lookup("x", now: 1, touch: true).body == nil)
        #expect(m.lookup("y", now: 1, touch: true) == .fresh(value(2)))
        #expect(m.lookup("z", now: 1, touch: true) == .fresh(value(3)))
        // A value larger than the first scratch buffer (64 KiB) comes back whole.
        let (fd2, big) = try segment(entries: 4, bytes: 1 << 20)
        defer { close(fd2) }
        let v = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        #expect(big.store("big", v, ttl: .seconds(60), staleTTL: .zero, now: 0))
        #expect(big.lookup("big", now: 1, touch: true) == .fresh(v))
    }

    @Test func manyKeysInFewBucketsStayApart() throws {
        // 64 entries → 128 buckets; 64 keys that differ only in their last bytes share buckets.
        let (fd, m) = try segment(entries: 64, bytes: 1 << 20)
        defer { close(fd) }
        let keys = (0..<64).map { "key-\(String(repeating: "x", count: 1100))-\($0)" }  // keys span two blocks
        for (i, k) in keys.enumerated() { #expect(m.store(k, bytes("value \(i)"), ttl: .seconds(60), staleTTL: .zero, now: 0)) }
        for (i, k) in keys.enumerated() { #expect(m.lookup(k, now: 1, touch: true) == .fresh(bytes("value \(i)"))) }
        #expect(m.lookup(keys[0] + "!", now: 1, touch: true) == .miss)
        // Removing every other key leaves the rest reachable through the shared chains.
        for k in keys.enumerated().filter({ $0.offset % 2 == 0 }).map(\.element) {
            #expect(!m.store(k, [], ttl: .zero, staleTTL: .zero, now: 2))
        }
        for (i, k) in keys.enumerated() {
            #expect(m.lookup(k, now: 3, touch: true) == (i % 2 == 0 ? .miss : .fresh(bytes("value \(i)"))))
        }
        #expect(m.entryCount == 32)
    }

    /// Where a key lands is the segment's own: its hash is keyed by a seed drawn when the segment
    /// is created, so nobody outside can grind prompts into one bucket chain. Two mappings of one
    /// segment (two workers) agree; two segments do not.
    @Test func bucketsAreKeyedByTheSegmentsSeed() throws {
        let (fd1, _) = try segment(entries: 64, bytes: 1 << 20)
        let (fd2, _) = try segment(entries: 64, bytes: 1 << 20)
        defer { close(fd1); close(fd2) }
        let a = try #require(sc_attach(fd1)), a2 = try #require(sc_attach(fd1)), b = try #require(sc_attach(fd2))
        defer { sc_detach(a); sc_detach(a2); sc_detach(b) }
        func buckets(_ s: OpaquePointer) -> [UInt64] {
            (0..<64).map { i in Array("key-\(i)".utf8).withUnsafeBytes { sc_test_bucket_of(s, $0.baseAddress, $0.count) } }
        }
        #expect(buckets(a) == buckets(a2))
        #expect(buckets(a) != buckets(b))   // 64 keys over 128 buckets: equal by chance ~128^-64
    }

    @Test func twoMappingsShareEntries() throws {
        let (fd, a) = try segment(entries: 16, bytes: 1 << 20)
        defer { close(fd) }
        let b = try #require(SharedMemoryCacheStore(fd: fd))
        #expect(a.store("k", bytes("from a"), ttl: .seconds(60), staleTTL: .zero, now: 0))
        #expect(b.lookup("k", now: 1, touch: true) == .fresh(bytes("from a")))
        #expect(b.store("k", bytes("from b"), ttl: .seconds(60), staleTTL: .zero, now: 2))
        #expect(a.lookup("k", now: 3, touch: true) == .fresh(bytes("from b")))
        #expect(a.entryCount == 1 && b.entryCount == 1)
    }

    @Test func notASegmentIsRefused() throws {
        var name = Array("/tmp/engine-not-a-segment-XXXXXX".utf8CString)
        let fd = name.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        defer { close(fd) }
        name.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        #expect(ftruncate(fd, 1 << 16) == 0)
        #expect(SharedMemoryCacheStore(fd: fd) == nil)
        #expect(SharedMemoryCacheStore(fd: -1) == nil)
    }

    @Test func aProcessDyingWithTheLockEmptiesTheCacheAndItGoesOn() throws {
        let (fd, m) = try segment(entries: 16, bytes: 1 << 20)
        defer { close(fd) }
        #expect(m.store("k", bytes("v"), ttl: .seconds(60), staleTTL: .zero, now: 0))
        let seg = try #require(sc_attach(fd))
        defer { sc_detach(seg) }
        #expect(sc_test_die_holding_lock(seg) == 0)
        // The next locker finds the owner dead: it cannot trust what was half-written, so it starts empty.
        #expect(m.lookup("k", now: 1, touch: true) == .miss)
        #expect(m.stats.resets == 1)
        #expect(m.entryCount == 0)
        #expect(m.store("k", bytes("again"), ttl: .seconds(60), staleTTL: .zero, now: 2))
        #expect(m.lookup("k", now: 3, touch: true) == .fresh(bytes("again")))
    }
}

/// Flight claims: one leader per key across mappings, readers, closing, ending, leases.
@Suite struct SharedFlightClaimTests {
    @Test func oneLeaderPerKeyAndReadersJoinIt() throws {
        let (fd, a) = try segment(entries: 8, bytes: 1 << 20)
        defer { close(fd) }
        let b = try #require(SharedMemoryCacheStore(fd: fd))
        #expect(a.claim("k", owner: "A-1", now: 0) == .won)
        #expect(b.claim("k", owner: "B-1", now: 1) == .lost(owner: "A-1"))
        #expect(b.claim("other", owner: "B-2", now: 1) == .won)
        #expect(a.claimReaders("k", owner: "A-1", now: 2) == 0)
        #expect(b.joinClaim("k", owner: "A-1", now: 3))
        #expect(!b.joinClaim("k", owner: "Z-9", now: 3))  // not the owner's claim
        #expect(a.claimReaders("k", owner: "A-1", now: 4) == 1)
        #expect(b.claimReaders("k", owner: "B-1", now: 4) == nil)  // B does not hold it
        // With a reader, the end keeps the claim (ENDING) until released; readers may still join.
        #expect(a.endClaim("k", owner: "A-1", now: 5, keep: false) == 1)
        #expect(b.claimHeld("k", owner: "A-1", now: 6))
        #expect(b.joinClaim("k", owner: "A-1", now: 6))
        #expect(b.claim("k", owner: "B-3", now: 6) == .lost(owner: "A-1"))
        a.releaseClaim("k", owner: "A-1", now: 7)
        #expect(!b.claimHeld("k", owner: "A-1", now: 8))
        #expect(b.claim("k", owner: "B-4", now: 8) == .won)
    }

    /// The leader's look without the lock (every upstream read): no readers, none; a reader that
    /// joined (through the other mapping), seen; another key, an ended claim, an expired one: none.
    @Test func theUnlockedLookSeesAJoinedReader() throws {
        let (fd, a) = try segment(entries: 8, bytes: 1 << 20)
        defer { close(fd) }
        let b = try #require(SharedMemoryCacheStore(fd: fd))
        #expect(a.claim("k", owner: "A-1", now: 0) == .won)
        #expect(b.claim("j", owner: "B-1", now: 0) == .won)
        #expect(!a.claimMayHaveReaders("k", now: 1))
        #expect(a.joinClaim("j", owner: "B-1", now: 1))  // a reader on another key
        #expect(!a.claimMayHaveReaders("k", now: 2))
        #expect(b.joinClaim("k", owner: "A-1", now: 2))
        #expect(a.claimMayHaveReaders("k", now: 3))
        #expect(a.claimReaders("k", owner: "A-1", now: 3) == 1)
        #expect(!a.claimMayHaveReaders("k", now: SharedMemoryCacheStore.claimLease.nanoseconds + 10))  // lease ran out
        #expect(a.endClaim("j", owner: "B-1", now: 4, keep: false) == 1)
        b.releaseClaim("j", owner: "B-1", now: 5)
        #expect(!b.claimMayHaveReaders("j", now: 6))
    }

    @Test func anEndWithoutReadersRemovesTheClaimAtOnce() throws {
        let (fd, a) = try segment(entries: 8, bytes: 1 << 20)
        defer { close(fd) }
        #expect(a.claim("k", owner: "A-1", now: 0) == .won)
        #expect(a.endClaim("k", owner: "A-1", now: 1, keep: false) == 0)
        #expect(!a.claimHeld("k", owner: "A-1", now: 2))
        #expect(a.claim("k", owner: "A-2", now: 2) == .won)
        // keep (the stream was already written): it stays until released.
        #expect(a.endClaim("k", owner: "A-2", now: 3, keep: true) == 0)
        #expect(a.claimHeld("k", owner: "A-2", now: 4))
        a.releaseClaim("k", owner: "A-2", now: 5)
        #expect(a.claim("k", owner: "A-3", now: 6) == .won)
        // Release by someone else does nothing.
        a.releaseClaim("k", owner: "A-2", now: 7)
        #expect(a.claimHeld("k", owner: "A-3", now: 7))
    }

    @Test func aClosedClaimTakesNoReadersAndLaterArrivalsGoAlone() throws {
        let (fd, a) = try segment(entries: 8, bytes: 1 << 20)
        defer { close(fd) }
        #expect(a.claim("k", owner: "A-1", now: 0) == .won)
        #expect(a.claimReaders("k", owner: "A-1", now: 1, closeIfNone: true) == 0)
        #expect(!a.joinClaim("k", owner: "A-1", now: 2))
        #expect(a.claim("k", owner: "B-1", now: 2) == .unavailable)
        #expect(a.claimHeld("k", owner: "A-1", now: 2))
        // With a reader already there, closeIfNone does not close.
        #expect(a.claim("j", owner: "A-2", now: 0) == .won)
        #expect(a.joinClaim("j", owner: "A-2", now: 1))
        #expect(a.claimReaders("j", owner: "A-2", now: 2, closeIfNone: true) == 1)
        #expect(a.joinClaim("j", owner: "A-2", now: 3))
    }

    @Test func aLeaseThatRunsOutFreesTheKey() throws {
        let (fd, a) = try segment(entries: 8, bytes: 1 << 20)
        defer { close(fd) }
        let lease = SharedMemoryCacheStore.claimLease.nanoseconds
        #expect(a.claim("k", owner: "A-1", now: 0) == .won)
        #expect(a.refreshClaim("k", owner: "A-1", now: lease - 1))  // now held until 2 × lease - 1
        #expect(a.claimHeld("k", owner: "A-1", now: lease + 1))
        #expect(!a.claimHeld("k", owner: "A-1", now: 2 * lease))   // the leader died: it ran out
        #expect(!a.refreshClaim("k", owner: "A-1", now: 2 * lease))
        #expect(a.claim("k", owner: "B-1", now: 2 * lease) == .won)
    }

    @Test func tooLongKeysAndAFullNeighbourhoodAreUnavailable() throws {
        let (fd, a) = try segment(entries: 8, bytes: 1 << 20)
        defer { close(fd) }
        #expect(a.claim(String(repeating: "k", count: 97), owner: "A", now: 0) == .unavailable)
        #expect(a.claim("k", owner: String(repeating: "o", count: 65), now: 0) == .unavailable)
        // 4,096 keys fit in 4,096 slots only approximately: claims keep working until some
        // neighbourhood is full, and then say unavailable rather than fail.
        var won = 0, unavailable = 0
        for i in 0..<5000 {
            switch a.claim("key-\(i)", owner: "A", now: 0) {
            case .won: won += 1
            case .unavailable: unavailable += 1
            case .lost: Issue.record("key-\(i) lost to nobody")
            }
        }
        #expect(won > 3000 && won <= 4096 && unavailable == 5000 - won)
    }
}

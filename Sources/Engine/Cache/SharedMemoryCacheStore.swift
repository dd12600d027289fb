// SharedMemoryCacheStore: the cache the worker processes of one host share without a round trip,
// over the segment CSharedCache lays out (nginx's keys_zone): the supervisor creates it before it
// starts the workers (`create`), each worker maps it (`attach`). Same semantics as
// MemoryCacheStore — fresh until T, stale until T + staleTTL, LRU by entries and bytes — and,
// like it, synchronous: a lookup is a lock and a copy. The default config (`workers: 0`, no
// `redis.url`) keeps its answers here; cross-process coalescing still goes through the private
// Redis (RemoteFlight), and a user's `redis.url` keeps the whole cache in Redis (shared by hosts).
// Owns: its mapping (unmapped in `close`) and a scratch buffer that grows to the largest value read.
import CSharedCache
import Reactor

#if canImport(Glibc)
import Glibc
#endif

public final class SharedMemoryCacheStore: SynchronousCacheStore {
    /// The environment variable through which the supervisor tells a worker the segment's fd.
    public static let environmentKey = "ENGINE_SHARED_CACHE_FD"

    private var segment: OpaquePointer?
    private var scratch: UnsafeMutableRawBufferPointer

    /// Creates a segment for `maxEntries` entries and `maxBytes` of keys and values; its fd (kept
    /// open by the caller, inherited by the workers it spawns), or nil with the reason.
    public static func create(maxEntries: Int, maxBytes: Int) -> Result<Int32, SharedCacheError> {
        let fd = sc_create(UInt32(clamping: maxEntries), UInt64(clamping: maxBytes))
        guard fd >= 0 else { return .failure(SharedCacheError(message: "memfd: \(String(cString: strerror(errno)))")) }
        return .success(fd)
    }

    /// Maps the segment behind `fd`; nil when it is not one.
    public init?(fd: Int32) {
        guard let s = sc_attach(fd) else { return nil }
        segment = s
        scratch = .allocate(byteCount: 64 << 10, alignment: 16)
    }

    deinit { close() }

    public func close() {
        if let s = segment { sc_detach(s) }
        segment = nil
        if scratch.count > 0 {
            scratch.deallocate()
            scratch = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        }
    }

    public func lookup(_ key: String, now: UInt64, touch: Bool) -> CacheLookup {
        switch read(key, now: now, touch: touch) {
        case (Int32(SC_FRESH), let len): return .fresh(Array(UnsafeRawBufferPointer(rebasing: scratch[0..<len])))
        case (Int32(SC_STALE), let len): return .stale(Array(UnsafeRawBufferPointer(rebasing: scratch[0..<len])))
        case (Self.closedStatus, _): return .unavailable
        default: return .miss
        }
    }

    /// The value read in place from the scratch buffer (it is this process's: no lock is held
    /// while `body` runs), without the array `lookup` copies it into.
    public func withFresh<R>(_ key: String, now: UInt64, _ body: (UnsafeRawBufferPointer) -> R) -> R? {
        guard case (Int32(SC_FRESH), let len) = read(key, now: now, touch: true) else { return nil }
        return body(UnsafeRawBufferPointer(rebasing: scratch[0..<len]))
    }

    /// `read`'s status once the segment is closed (not one of sc_get's).
    private static let closedStatus: Int32 = -1

    /// sc_get into the scratch buffer (grown to the value's size when it is too small): the
    /// status and the value's length.
    private func read(_ key: String, now: UInt64, touch: Bool) -> (Int32, Int) {
        guard let s = segment else { return (Self.closedStatus, 0) }
        // The key's bytes borrowed in place (a `var` copy to call withUTF8 retained and released
        // it on every hit); a String without contiguous UTF-8 (never ours) is copied.
        if let r = key.utf8.withContiguousStorageIfAvailable({ read(s, UnsafeRawBufferPointer($0), now: now, touch: touch) }) { return r }
        var key = key
        return key.withUTF8 { read(s, UnsafeRawBufferPointer($0), now: now, touch: touch) }
    }

    private func read(_ s: OpaquePointer, _ k: UnsafeRawBufferPointer, now: UInt64, touch: Bool) -> (Int32, Int) {
        while true {
            var len = 0
            let st = sc_get(s, k.baseAddress, k.count, now, touch ? 1 : 0, scratch.baseAddress, scratch.count, &len)
            guard st == Int32(SC_TOO_SMALL) else { return (st, len) }
            // Grow to the value's size and look again (it may have changed meanwhile).
            scratch.deallocate()
            scratch = .allocate(byteCount: max(len, scratch.count * 2), alignment: 16)
        }
    }

    /// Stores `value` fresh for `ttl` then stale for `staleTTL`; false when refused (a TTL of zero,
    /// larger than the segment), and then no older entry for the key remains.
    @discardableResult
    public func store(_ key: String, _ value: [UInt8], ttl: Duration, staleTTL: Duration, now: UInt64) -> Bool {
        store(key, head: value, payload: [], ttl: ttl, staleTTL: staleTTL, now: now)
    }

    /// The value `head` + `payload`, each copied straight into the entry (sc_put2).
    @discardableResult
    public func store(_ key: String, head: [UInt8], payload: [UInt8], ttl: Duration, staleTTL: Duration, now: UInt64) -> Bool {
        guard let s = segment else { return false }
        let ttlN = ttl.nanoseconds
        let fresh = ttlN <= 0 ? 0 : (now.addingReportingOverflow(ttlN).overflow ? UInt64.max : now + ttlN)
        let stale = fresh.addingReportingOverflow(staleTTL.nanoseconds).overflow ? UInt64.max : fresh + staleTTL.nanoseconds
        var key = key
        return key.withUTF8 { k in
            head.withUnsafeBytes { h in
                payload.withUnsafeBytes { p in
                    sc_put2(s, k.baseAddress, k.count, h.baseAddress, h.count, p.baseAddress, p.count, fresh, stale) == 1
                }
            }
        }
    }

    public var entryCount: Int { Int(stats.entries) }

    public var stats: sc_stats {
        var st = sc_stats()
        if let s = segment { sc_get_stats(s, &st) }
        return st
    }

    public func removeAll() {
        if let s = segment { sc_clear(s) }
    }

    // MARK: - Flight claims (single-flight across the workers; CSharedCache.h says how)

    /// How long a claim lives without its leader refreshing it (every second).
    public static let claimLease: Duration = .seconds(4)

    public enum ClaimAnswer: Equatable {
        case won
        case lost(owner: String)
        case unavailable
    }

    public func claim(_ key: String, owner: String, now: UInt64) -> ClaimAnswer { claim(key, ownerName: owner, now: now) }

    func claim(_ key: String, ownerName owner: some ClaimOwnerName, now: UInt64) -> ClaimAnswer {
        guard let s = segment else { return .unavailable }
        var key = key
        // The other owner's name is read into the stack (a claim is won far more often than lost).
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: Int(SC_CLAIM_OWNER_MAX)) { out in
            var len = 0
            let rc = key.withUTF8 { k in
                owner.withOwnerBytes { o in
                    sc_claim(s, k.baseAddress, k.count, o.baseAddress, o.count, now, Self.claimLease.nanoseconds,
                             out.baseAddress, out.count, &len)
                }
            }
            switch Int(rc) {
            case SC_CLAIM_WON: return .won
            case SC_CLAIM_LOST: return .lost(owner: String(decoding: UnsafeBufferPointer(rebasing: out[0..<min(len, out.count)]), as: UTF8.self))
            default: return .unavailable
            }
        }
    }

    private func withClaim<R>(_ key: String, _ owner: some ClaimOwnerName, _ body: (OpaquePointer, UnsafeBufferPointer<UInt8>, UnsafeBufferPointer<UInt8>) -> R,
                              otherwise: R) -> R {
        guard let s = segment else { return otherwise }
        var key = key
        return key.withUTF8 { k in owner.withOwnerBytes { o in body(s, k, o) } }
    }

    /// Extends the lease; false when `owner` no longer holds the claim.
    func refreshClaim(_ key: String, owner: some ClaimOwnerName, now: UInt64) -> Bool {
        withClaim(key, owner, { s, k, o in
            sc_claim_refresh(s, k.baseAddress, k.count, o.baseAddress, o.count, now, Self.claimLease.nanoseconds) == 1
        }, otherwise: false)
    }

    /// Readers joined so far (nil: not held). `closeIfNone`: with none, later arrivals go alone.
    func claimReaders(_ key: String, owner: some ClaimOwnerName, now: UInt64, closeIfNone: Bool = false) -> Int? {
        let n = withClaim(key, owner, { s, k, o in
            Int(sc_claim_readers(s, k.baseAddress, k.count, o.baseAddress, o.count, now, closeIfNone ? 1 : 0))
        }, otherwise: -1)
        return n < 0 ? nil : n
    }

    /// Whether `key`'s claim may have readers, looked at without the lock: false is exact as of
    /// the look, true must be confirmed with `claimReaders` (CSharedCache.h).
    func claimMayHaveReaders(_ key: String, now: UInt64) -> Bool {
        guard let s = segment else { return false }
        var key = key
        return key.withUTF8 { k in sc_claim_may_have_readers(s, k.baseAddress, k.count, now) == 1 }
    }

    /// A reader joins `owner`'s claim; false when it cannot (the flight ended, or takes no readers).
    func joinClaim(_ key: String, owner: some ClaimOwnerName, now: UInt64) -> Bool {
        withClaim(key, owner, { s, k, o in sc_claim_join(s, k.baseAddress, k.count, o.baseAddress, o.count, now) == 1 },
                  otherwise: false)
    }

    /// Whether `owner` still holds the claim (its lease running).
    func claimHeld(_ key: String, owner: some ClaimOwnerName, now: UInt64) -> Bool {
        withClaim(key, owner, { s, k, o in sc_claim_held(s, k.baseAddress, k.count, o.baseAddress, o.count, now) == 1 },
                  otherwise: false)
    }

    /// The leader ends: its readers (0 when it no longer held the claim). With readers, or `keep`,
    /// the claim stays (ENDING) until `releaseClaim`; else it is gone now.
    func endClaim(_ key: String, owner: some ClaimOwnerName, now: UInt64, keep: Bool) -> Int {
        max(0, withClaim(key, owner, { s, k, o in
            Int(sc_claim_end(s, k.baseAddress, k.count, o.baseAddress, o.count, now, keep ? 1 : 0))
        }, otherwise: -1))
    }

    func releaseClaim(_ key: String, owner: some ClaimOwnerName, now: UInt64) {
        withClaim(key, owner, { s, k, o in sc_claim_release(s, k.baseAddress, k.count, o.baseAddress, o.count, now) },
                  otherwise: ())
    }
}

public struct SharedCacheError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

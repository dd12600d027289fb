// CacheStore: where complete response bodies live, keyed by CacheKey.make (hex SHA-256).
// Owns nothing itself; MemoryCacheStore (embedded default, synchronous) and RedisCacheStore
// (shared across worker processes, asynchronous over RedisConnection) implement it.
// The cache stage's driver calls it; hits/misses are counted by the caller, not here.
// Store failures are values (`.unavailable`, `false`), never throws (style I).
import Reactor

/// Result of a lookup.
public enum CacheLookup: Equatable, Sendable {
    /// Within its TTL.
    case fresh([UInt8])
    /// TTL passed but still within the stale TTL (serve on upstream failure, or revalidate).
    case stale([UInt8])
    case miss
    /// The store could not answer (Redis down, timeout, error): treat as a miss, never as a 500.
    case unavailable

    public var body: [UInt8]? {
        switch self {
        case .fresh(let b), .stale(let b): return b
        case .miss, .unavailable: return nil
        }
    }
}

/// Who waits for a lookup's answer (a request's session, which queues it as an event);
/// EngineRuntime.lookUp asks the store for it.
protocol CacheWaiter: AnyObject {
    func cacheAnswered(_ lookup: CacheLookup, stale: Bool)
}

/// Times are passed in, never read (machines and tests control the clock):
/// `now` is monotonic nanoseconds (Loop.nowNanos(), used by MemoryCacheStore) and `wallMillis`
/// is wall-clock epoch milliseconds (used by RedisCacheStore, whose entries outlive a process).
/// Completions may run synchronously (MemoryCacheStore) or later on the loop (RedisCacheStore).
public protocol CacheStore: AnyObject {
    /// Fresh or stale entry, refreshing its LRU position; `.miss` when absent or past its stale TTL.
    func get(key: String, now: UInt64, wallMillis: UInt64, completion: @escaping (CacheLookup) -> Void)
    /// Read-only peek for the fallback chain (upstream failed): fresh or stale, without touching
    /// the LRU order, so serving a stale fallback does not keep a dead entry alive.
    func getStale(key: String, now: UInt64, wallMillis: UInt64, completion: @escaping (CacheLookup) -> Void)
    /// Stores `value`: fresh for `ttl`, then stale for `staleTTL`, then gone. Completion says
    /// whether it was stored (false: store unavailable, or the value is too large).
    func put(key: String, value: [UInt8], ttl: Duration, staleTTL: Duration, now: UInt64, wallMillis: UInt64,
             completion: ((Bool) -> Void)?)
    /// Number of entries (Redis: LRU set cardinality, may briefly include expired ghosts); nil if unknown.
    func count(completion: @escaping (Int?) -> Void)
}

/// A store that answers at once (the embedded and the shared-memory store): the fast paths look
/// entries up without a completion, and the CacheStore calls are these, completed at once.
public protocol SynchronousCacheStore: CacheStore {
    /// Fresh or stale, refreshing its LRU position when `touch`; `.miss` when absent or past its
    /// stale time.
    func lookup(_ key: String, now: UInt64, touch: Bool) -> CacheLookup
    /// A fresh entry's bytes lent to `body` (valid only inside it; `body` must not use this store),
    /// refreshing its LRU position; nil, without calling `body`, for a stale or absent entry. The
    /// memo hit's read: a store that copies the value out anyway need not copy it once more.
    func withFresh<R>(_ key: String, now: UInt64, _ body: (UnsafeRawBufferPointer) -> R) -> R?
    /// Stores `value` fresh for `ttl`, then stale for `staleTTL`; false when refused.
    @discardableResult
    func store(_ key: String, _ value: [UInt8], ttl: Duration, staleTTL: Duration, now: UInt64) -> Bool
    /// `store` of the value `head` + `payload`; a store that copies it anyway takes the parts
    /// as they are (no joined copy).
    @discardableResult
    func store(_ key: String, head: [UInt8], payload: [UInt8], ttl: Duration, staleTTL: Duration, now: UInt64) -> Bool
    /// Entries stored now.
    var entryCount: Int { get }
}

extension SynchronousCacheStore {
    public func withFresh<R>(_ key: String, now: UInt64, _ body: (UnsafeRawBufferPointer) -> R) -> R? {
        guard case .fresh(let value) = lookup(key, now: now, touch: true) else { return nil }
        return value.withUnsafeBytes(body)
    }

    @discardableResult
    public func store(_ key: String, head: [UInt8], payload: [UInt8], ttl: Duration, staleTTL: Duration, now: UInt64) -> Bool {
        store(key, head + payload, ttl: ttl, staleTTL: staleTTL, now: now)
    }

    public func get(key: String, now: UInt64, wallMillis: UInt64, completion: @escaping (CacheLookup) -> Void) {
        completion(lookup(key, now: now, touch: true))
    }

    public func getStale(key: String, now: UInt64, wallMillis: UInt64, completion: @escaping (CacheLookup) -> Void) {
        completion(lookup(key, now: now, touch: false))
    }

    public func put(key: String, value: [UInt8], ttl: Duration, staleTTL: Duration, now: UInt64, wallMillis: UInt64,
                    completion: ((Bool) -> Void)?) {
        // Not `completion?(store(...))`: optional chaining would skip the store when there is no completion.
        let stored = store(key, value, ttl: ttl, staleTTL: staleTTL, now: now)
        completion?(stored)
    }

    public func count(completion: @escaping (Int?) -> Void) { completion(entryCount) }
}

extension CacheStore {
    public func put(key: String, value: [UInt8], ttl: Duration, staleTTL: Duration, now: UInt64, wallMillis: UInt64) {
        put(key: key, value: value, ttl: ttl, staleTTL: staleTTL, now: now, wallMillis: wallMillis, completion: nil)
    }
}

/// Duration helper for the Redis store (saturating, sub-second precision kept); nanoseconds
/// come from Reactor's `Duration.nanoseconds`.
enum CacheTime {
    /// Milliseconds, rounded up so a 1.0005 s TTL does not become 1 s.
    static func millisRoundingUp(_ d: Duration) -> UInt64 {
        let n = d.nanoseconds
        return n == .max ? .max / 1_000_000 : (n + 999_999) / 1_000_000
    }
}

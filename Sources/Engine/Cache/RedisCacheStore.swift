// RedisCacheStore: the CacheStore shared by every worker process, over one RedisConnection per loop.
// Owns nothing but its script texts; the RedisConnection (and its hiredis context) belongs to the
// caller, who connects and closes it. A lookup is a plain GET (a hit then bumps its key with a
// ZADD, sent without waiting); a store is one Lua script run with EVALSHA (SCRIPT LOAD on every
// connect, EVAL on NOSCRIPT): write, bump, drop expired keys at the cold end, evict beyond max.
// (Lookups were a script too: Redis spent ~16 µs per script call beyond the commands in it.)
// Layout under `namespace` (default "engine:cache"):
//   <ns>:v:<key>  "v1:<fresh-until wall ms>\n" + body, PEXPIRE = ttl + staleTTL (ms, rounded up)
//   <ns>:lru      sorted set of keys scored by last use: wall-clock ms × 1000 + this store's
//                 counter (an approximate LRU across processes, exact within one)
// Standalone Redis only: the script touches value keys it is not passed (no Cluster slots).
import CEventShim
import Reactor

public final class RedisCacheStore: CacheStore {
    public let connection: RedisConnection
    public let namespace: String
    public let maxEntries: Int
    private let lruKey: String
    private let valuePrefix: String

    /// Write, bump, clean up to two ghosts (members whose value expired) at the cold end, then
    /// evict the coldest beyond max. ARGV: member, blob, px, max entries, value key prefix, score.
    static let putScript = """
        redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
        redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
        local cold = redis.call('ZRANGE', KEYS[2], 0, 1)
        for i = 1, #cold do
          if redis.call('EXISTS', ARGV[5] .. cold[i]) == 0 then
            redis.call('ZREM', KEYS[2], cold[i])
          end
        end
        local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
        if excess > 0 then
          local victims = redis.call('ZRANGE', KEYS[2], 0, excess - 1)
          for i = 1, #victims do
            redis.call('DEL', ARGV[5] .. victims[i])
          end
          redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
          return excess
        end
        return 0
        """

    static let put = RedisScript(putScript)
    /// Orders this store's bumps within one millisecond.
    private var bumps: UInt64 = 0

    public init(connection: RedisConnection, maxEntries: Int, namespace: String = "engine:cache",
                near: MemoryCacheStore? = nil) {
        self.near = near
        self.connection = connection
        self.maxEntries = max(1, maxEntries)
        self.namespace = namespace
        lruKey = namespace + ":lru"
        valuePrefix = namespace + ":v:"
        Self.put.register(on: connection)
    }

    public func valueKey(_ key: String) -> String { valuePrefix + key }

    /// This process's copies of fresh entries it read or wrote (nil: none), so a repeat is answered
    /// without a round trip. A copy lives until the entry's freshness ends or `nearMaxAge`, whichever
    /// is first, so an entry removed from Redis (evicted, or the database flushed) is served from
    /// here for at most that long. Bounded by entries and bytes; the least recently used go first.
    public let near: MemoryCacheStore?
    public static let nearMaxAge: Duration = .seconds(10)
    /// A hit from the near copy bumps the shared LRU one time in this many (the rest are local).
    static let nearBumpEvery: UInt64 = 16
    private var nearHits: UInt64 = 0

    public func get(key: String, now: UInt64, wallMillis: UInt64, completion: @escaping (CacheLookup) -> Void) {
        let score = lruScore(wallMillis)
        if let near, case .fresh(let body) = near.lookup(key, now: now, touch: true) {
            nearHits &+= 1
            if nearHits % Self.nearBumpEvery == 0 { connection.send(["ZADD", lruKey, score, key]) { _ in } }
            completion(.fresh(body))
            return
        }
        connection.send(["GET", valueKey(key)]) { [lruKey, connection, near] v in
            let (lookup, freshUntil) = Self.read(v, wallMillis: wallMillis)
            if case .fresh(let body) = lookup, let near {
                let left = Duration.milliseconds(Int64(clamping: freshUntil - wallMillis))
                near.store(key, body, ttl: min(left, Self.nearMaxAge), staleTTL: .zero, now: now)
            }
            if lookup.body != nil { connection.send(["ZADD", lruKey, score, key]) { _ in } }
            completion(lookup)
        }
    }

    /// Wall-clock ms × 1000 plus a counter: later uses score higher (within one process exactly).
    private func lruScore(_ wallMillis: UInt64) -> String {
        bumps &+= 1
        return String(wallMillis &* 1000 &+ bumps % 1000)
    }

    public func getStale(key: String, now: UInt64, wallMillis: UInt64, completion: @escaping (CacheLookup) -> Void) {
        connection.send(["GET", valueKey(key)]) { v in
            completion(Self.lookup(from: v, wallMillis: wallMillis))
        }
    }

    public func put(key: String, value: [UInt8], ttl: Duration, staleTTL: Duration, now: UInt64, wallMillis: UInt64,
                    completion: ((Bool) -> Void)?) {
        let ttlMs = CacheTime.millisRoundingUp(ttl)
        guard ttlMs > 0 else {
            completion?(false)
            return
        }
        let totalMs = max(1, ttlMs &+ CacheTime.millisRoundingUp(staleTTL))
        near?.store(key, value, ttl: min(ttl, Self.nearMaxAge), staleTTL: .zero, now: now)
        var blob = Array("v1:\(wallMillis &+ ttlMs)\n".utf8)
        blob.append(contentsOf: value)
        let args: [[UInt8]] = [Array(key.utf8), blob, Array(String(totalMs).utf8), Array(String(maxEntries).utf8),
                               Array(valuePrefix.utf8), Array(lruScore(wallMillis).utf8)]
        Self.put.run(on: connection, keys: [valueKey(key), lruKey].map { Array($0.utf8) }, args: args) { v in
            if case .int = v { completion?(true) } else { completion?(false) }
        }
        // Read your writes across processes: the store reaches Redis before the caller answers
        // its client, so that client's next request, in any worker, finds it.
        connection.flushNow()
    }

    public func count(completion: @escaping (Int?) -> Void) {
        connection.send(["ZCARD", lruKey]) { v in
            if case .int(let n) = v { completion(n) } else { completion(nil) }
        }
    }

    // MARK: - Helpers

    /// Decodes a stored blob; anything unexpected is a miss (a foreign or corrupt value).
    static func lookup(from v: RedisValue, wallMillis: UInt64) -> CacheLookup { read(v, wallMillis: wallMillis).lookup }

    /// The lookup, and (for a stored value) the wall-clock ms its freshness ends (else 0).
    static func read(_ v: RedisValue, wallMillis: UInt64) -> (lookup: CacheLookup, freshUntil: UInt64) {
        switch v {
        case .null: return (.miss, 0)
        case .string(let blob):
            guard let parsed = decode(blob) else { return (.miss, 0) }
            return (wallMillis < parsed.freshUntil ? .fresh(parsed.body) : .stale(parsed.body), parsed.freshUntil)
        default: return (.unavailable, 0)
        }
    }

    static func decode(_ blob: [UInt8]) -> (freshUntil: UInt64, body: [UInt8])? {
        let prefix = Array("v1:".utf8)
        guard blob.count > prefix.count, Array(blob[0..<prefix.count]) == prefix,
              let nl = blob[prefix.count...].prefix(24).firstIndex(of: UInt8(ascii: "\n")),
              let ms = UInt64(String(decoding: blob[prefix.count..<nl], as: UTF8.self)) else { return nil }
        return (ms, Array(blob[(nl + 1)...]))
    }
}

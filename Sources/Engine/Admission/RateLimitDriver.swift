// RateLimitDriver: performs the tenants' token and request budgets (RateLimiter's arithmetic).
// With a Redis connection (redis.url, or the supervisor's private redis-server that REDIS_URL
// names) the buckets live in Redis and every worker process and Engine replica shares them: one
// EVALSHA per reservation and one per settlement, atomic in Lua, on Redis's clock (TIME). Without
// one (a lone process) they live in this process's RateLimiter. Redis down or slow (its command
// timeout): fail open — the request is served unreserved and `redisFailures` counts it.
// Owns: the in-process RateLimiter; the RedisConnection belongs to the runtime. Loop-confined.
// Keys: engine:rl:<tenant id>:t and :r, hashes {l: level, s: stamp ms}, expiring once full.
import Reactor

/// Who waits for a reservation's answer (a request's session, which queues what follows as events).
protocol RateLimitWaiter: AnyObject {
    func budgetAnswered(_ d: RateLimitDecision, tenant: Tenant, cost: Int)
}

final class RateLimitDriver {
    private let redis: RedisConnection?
    private var local = RateLimiter()
    private(set) var redisFailures = 0

    init(redis: RedisConnection?) {
        self.redis = redis
        if let r = redis {
            Self.reserveScript.register(on: r)
            Self.settleScript.register(on: r)
        }
    }

    var isShared: Bool { redis != nil }

    /// Reserves `cost` tokens and one request for `tenant` (which has limits). `waiter` hears the
    /// answer once, maybe at once (in process), never inside a caller's transition (sessions post
    /// what follows); not at all if it went away meanwhile (held weakly while Redis answers).
    func reserve(_ tenant: Tenant, cost: Int, for waiter: any RateLimitWaiter) {
        guard let redis else {
            let d = local.reserve(tenant: tenant.id, tokensPerMinute: tenant.tokensPerMinute,
                                  requestsPerMinute: tenant.requestsPerMinute, cost: cost, now: Self.nowMillis())
            waiter.budgetAnswered(d, tenant: tenant, cost: cost)
            return
        }
        let keys = [Array((Self.prefix + tenant.id + ":t").utf8), Array((Self.prefix + tenant.id + ":r").utf8)]
        let args = [String(tenant.tokensPerMinute ?? 0), String(tenant.requestsPerMinute ?? 0), String(cost)].map { Array($0.utf8) }
        let tpm = tenant.tokensPerMinute
        let rpm = tenant.requestsPerMinute
        Self.reserveScript.run(on: redis, keys: keys, args: args) { [weak self, weak waiter] v in
            let d = Self.decision(v, tokensPerMinute: tpm, requestsPerMinute: rpm)
            if d == .unavailable { self?.redisFailures += 1 }
            waiter?.budgetAnswered(d, tenant: tenant, cost: cost)
        }
    }

    /// The reservation script's answer: {verdict (0 ok, 1 tokens, 2 requests), wait ms, tokens
    /// left, requests left}; anything else is `.unavailable`.
    static func decision(_ v: RedisValue, tokensPerMinute tpm: Int?, requestsPerMinute rpm: Int?) -> RateLimitDecision {
        guard case .array(let a) = v, a.count >= 4, case .int(let verdict) = a[0], case .int(let wait) = a[1],
              case .int(let tl) = a[2], case .int(let rl) = a[3] else { return .unavailable }
        let st = RateLimitStatus(limitTokens: tpm, remainingTokens: tpm == nil ? nil : tl,
                                 limitRequests: rpm, remainingRequests: rpm == nil ? nil : rl)
        switch verdict {
        case 0: return .allowed(st)
        case 1: return .denied(st, .tokens, retryAfterMillis: max(wait, 1))
        default: return .denied(st, .requests, retryAfterMillis: max(wait, 1))
        }
    }

    /// The request that reserved `reserved` tokens used `used`.
    func settle(_ tenant: Tenant, reserved: Int, used: Int) {
        guard let tpm = tenant.tokensPerMinute, used != reserved else { return }
        guard let redis else {
            local.settle(tenant: tenant.id, tokensPerMinute: tpm, reserved: reserved, used: used, now: Self.nowMillis())
            return
        }
        let keys = [Array((Self.prefix + tenant.id + ":t").utf8)]
        Self.settleScript.run(on: redis, keys: keys, args: [Array(String(tpm).utf8), Array(String(used - reserved).utf8)]) {
            [weak self] v in
            if case .int = v { return }
            self?.redisFailures += 1
        }
    }

    static let prefix = "engine:rl:"

    private static func nowMillis() -> UInt64 { Loop.nowNanos() / 1_000_000 }

    /// Shared by both scripts: now (ms, Redis's clock) and a bucket's refilled level.
    private static let common = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local function level(key, limit)
          local v = redis.call('HMGET', key, 'l', 's')
          local l = tonumber(v[1])
          if l == nil then return limit end
          local s = tonumber(v[2]) or now
          if s > now then s = now end
          l = l + (now - s) * limit / 60000
          if l > limit then l = limit end
          return l
        end
        local function save(key, l, limit)
          redis.call('HSET', key, 'l', tostring(l), 's', now)
          redis.call('PEXPIRE', key, math.ceil((limit - l) * 60000 / limit) + 1000)
        end

        """

    /// KEYS: tokens bucket, requests bucket. ARGV: tpm (0: none), rpm (0: none), cost.
    /// Returns {verdict, wait ms, tokens left, requests left} (RateLimiter.reserve in Lua).
    static let reserveScript = RedisScript(common + """
        local tpm = tonumber(ARGV[1])
        local rpm = tonumber(ARGV[2])
        local cost = tonumber(ARGV[3])
        local tl = 0
        local rl = 0
        if tpm > 0 then tl = level(KEYS[1], tpm) end
        if rpm > 0 then rl = level(KEYS[2], rpm) end
        local wait = 0
        local verdict = 0
        if rpm > 0 and rl < 1 then
          wait = math.ceil((1 - rl) * 60000 / rpm)
          verdict = 2
        end
        if tpm > 0 then
          local need = math.min(cost, tpm)
          if tl < need then
            local w = math.ceil((need - tl) * 60000 / tpm)
            if w > wait then
              wait = w
              verdict = 1
            end
          end
        end
        if verdict == 0 then
          if tpm > 0 then
            tl = tl - cost
            save(KEYS[1], tl, tpm)
          end
          if rpm > 0 then
            rl = rl - 1
            save(KEYS[2], rl, rpm)
          end
        end
        return {verdict, wait, math.floor(tl), math.floor(rl)}
        """)

    /// KEYS: tokens bucket. ARGV: tpm, used − reserved. Returns the tokens left.
    static let settleScript = RedisScript(common + """
        local tpm = tonumber(ARGV[1])
        local l = level(KEYS[1], tpm) - tonumber(ARGV[2])
        if l > tpm then l = tpm end
        save(KEYS[1], l, tpm)
        return math.floor(l)
        """)
}

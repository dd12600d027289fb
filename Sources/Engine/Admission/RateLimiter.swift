// RateLimiter: per-tenant tokens-per-minute and requests-per-minute budgets (issue 14), as token
// buckets that refill continuously (limit per 60 s) and hold at most one minute's budget. A
// request reserves its expected tokens (and one request) at admission; when it ends, `settle`
// moves the bucket by real usage − reserved, so a bucket may go below zero (debt) when a request
// used more than it reserved. A request needs min(cost, limit) tokens available, so one larger
// than the whole budget still runs once the bucket is full. This is the in-process form (one
// process alone); RateLimitDriver runs the same arithmetic in Redis (a Lua script) when workers
// or replicas share a Redis. Times are milliseconds. Pure: no imports, no I/O.

/// What a tenant has left, for the x-ratelimit-* headers (nil fields: no such limit).
public struct RateLimitStatus: Equatable, Sendable {
    public var limitTokens: Int?
    public var remainingTokens: Int?
    public var limitRequests: Int?
    public var remainingRequests: Int?

    public init(limitTokens: Int? = nil, remainingTokens: Int? = nil, limitRequests: Int? = nil, remainingRequests: Int? = nil) {
        self.limitTokens = limitTokens
        self.remainingTokens = remainingTokens
        self.limitRequests = limitRequests
        self.remainingRequests = remainingRequests
    }

    /// Milliseconds until a bucket with `remaining` of `limit` is full again.
    public static func resetMillis(limit: Int, remaining: Int) -> Int {
        guard limit > 0, remaining < limit else { return 0 }
        return Int((Double(limit - remaining) * 60_000 / Double(limit)).rounded(.up))
    }
}

public enum RateLimitDecision: Equatable, Sendable {
    public enum Exhausted: Equatable, Sendable { case tokens, requests }
    /// Reserved; the status after the reservation.
    case allowed(RateLimitStatus)
    /// Not reserved: come back in `retryAfterMillis`.
    case denied(RateLimitStatus, Exhausted, retryAfterMillis: Int)
    /// The shared store did not answer: served without a reservation (fail open).
    case unavailable
}

public struct RateBucket: Equatable, Sendable {
    public var level: Double
    public var stampMillis: UInt64

    /// The level at `now`, refilled at limit per minute, capped at limit.
    public func level(at now: UInt64, limit: Int) -> Double {
        let dt = now > stampMillis ? Double(now - stampMillis) : 0
        return min(Double(limit), level + dt * Double(limit) / 60_000)
    }
}

public struct RateLimiter: Sendable {
    /// Buckets by tenant id; absent = full.
    private(set) var tokens: [String: RateBucket] = [:]
    private(set) var requests: [String: RateBucket] = [:]

    public init() {}

    public mutating func reserve(tenant: String, tokensPerMinute tpm: Int?, requestsPerMinute rpm: Int?, cost: Int,
                                 now: UInt64) -> RateLimitDecision {
        let tl = tpm.map { tokens[tenant]?.level(at: now, limit: $0) ?? Double($0) }
        let rl = rpm.map { requests[tenant]?.level(at: now, limit: $0) ?? Double($0) }
        var wait = 0
        var which: RateLimitDecision.Exhausted?
        if let rpm, let rl, rl < 1 {
            wait = Int(((1 - rl) * 60_000 / Double(rpm)).rounded(.up))
            which = .requests
        }
        if let tpm, let tl {
            let need = Double(min(max(cost, 0), tpm))
            if tl < need {
                let w = Int(((need - tl) * 60_000 / Double(tpm)).rounded(.up))
                if w > wait { wait = w; which = .tokens }
            }
        }
        if let which {
            return .denied(Self.status(tpm, tl, rpm, rl), which, retryAfterMillis: max(wait, 1))
        }
        let newT = tl.map { $0 - Double(max(cost, 0)) }
        let newR = rl.map { $0 - 1 }
        if let v = newT { tokens[tenant] = RateBucket(level: v, stampMillis: now) }
        if let v = newR { requests[tenant] = RateBucket(level: v, stampMillis: now) }
        prune(now: now)
        return .allowed(Self.status(tpm, newT, rpm, newR))
    }

    /// The request that reserved `reserved` tokens used `used`: the difference goes back (or is
    /// taken, down to debt). Returns the tokens remaining.
    @discardableResult
    public mutating func settle(tenant: String, tokensPerMinute tpm: Int, reserved: Int, used: Int, now: UInt64) -> Int {
        let l = (tokens[tenant]?.level(at: now, limit: tpm) ?? Double(tpm)) - Double(used - reserved)
        tokens[tenant] = RateBucket(level: min(l, Double(tpm)), stampMillis: now)
        return Int(min(l, Double(tpm)).rounded(.down))
    }

    static func status(_ tpm: Int?, _ tl: Double?, _ rpm: Int?, _ rl: Double?) -> RateLimitStatus {
        RateLimitStatus(limitTokens: tpm, remainingTokens: tl.map { Int($0.rounded(.down)) },
                        limitRequests: rpm, remainingRequests: rl.map { Int($0.rounded(.down)) })
    }

    /// Buckets are only kept for configured tenants, so this only drops full ones now and then.
    private mutating func prune(now: UInt64) {
        guard tokens.count + requests.count > 4096 else { return }
        tokens = tokens.filter { now < $0.value.stampMillis + 60_000 }
        requests = requests.filter { now < $0.value.stampMillis + 60_000 }
    }
}

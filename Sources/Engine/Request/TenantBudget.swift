// TenantBudget: one request's part in fair admission (issue 14), held inline by its RequestSession.
// Before admission: a deadline already past is refused without an upstream call; a tenant with
// limits reserves the expected tokens and one request (RateLimitDriver: Redis or in process), and
// is refused (429 with Retry-After) when the budget is spent. When the request ends the reservation
// is settled with the real usage; a request that never reached a backend gets it all back. Counts
// the tenant's admissions, refusals, queue and tokens (TenantMetrics), and keeps what the budget
// said last (x-ratelimit-* headers). The session performs the reservation and the events.

struct TenantBudget {
    /// The request's tenant; nil: none was resolved (nothing is counted).
    let tenant: Tenant?
    /// The tokens reserved against the tenant's budget (settled when the request ends).
    private(set) var reservedTokens: Int?
    /// What the budget said (x-ratelimit-* headers).
    private(set) var rateStatus: RateLimitStatus?
    /// The request reached admission: it is charged when it ends.
    private(set) var reachedAdmission = false
    /// The request counts in the tenant's queued gauge.
    private(set) var isQueued = false

    init(tenant: Tenant?) { self.tenant = tenant }

    /// What the session does next, before admission and when the budget answered.
    enum Step: Equatable {
        /// Ask admission control now.
        case askAdmission
        /// Refused before admission: post `admissionRefused`.
        case refuse(AdmissionRefusal)
        /// Reserve the expected tokens against the tenant's budget (answered later, or at once).
        case reserve
        /// Nothing: the request ended while the budget answered.
        case none
    }

    /// The request asks for admission: its deadline, then its tenant's budget.
    mutating func beforeAdmission(deadline: UInt64?, now: UInt64, canReserve: Bool) -> Step {
        reachedAdmission = true
        if let d = deadline, d <= now { return .refuse(AdmissionRefusal(.deadline, retryAfterSeconds: 1)) }
        guard let t = tenant, t.hasLimits, canReserve else { return .askAdmission }
        return .reserve
    }

    /// The budget answered the reservation of `cost` tokens for `t`. A request that ended
    /// meanwhile (its client left) gives the reservation back.
    mutating func answered(_ d: RateLimitDecision, tenant t: Tenant, cost: Int, hasEnded: Bool,
                           metrics: TenantMetrics, limits: RateLimitDriver?) -> Step {
        if hasEnded {
            if case .allowed = d { limits?.settle(t, reserved: cost, used: 0) }
            return .none
        }
        switch d {
        case .allowed(let st):
            reservedTokens = cost
            rateStatus = st
            return .askAdmission
        case .denied(let st, let which, let ms):
            rateStatus = st
            let limit = which == .tokens ? t.tokensPerMinute : t.requestsPerMinute
            return .refuse(AdmissionRefusal(which == .tokens ? .tokens : .requests,
                                            retryAfterSeconds: max(1, (ms + 999) / 1000), limit: limit))
        case .unavailable:
            metrics.rateLimitUnavailable += 1
            return .askAdmission
        }
    }

    /// Fair queueing's view of the request (asked only when it cannot go at once).
    func ticket(cost: Int, deadline: UInt64?) -> AdmissionTicket {
        guard let t = tenant else { return AdmissionTicket(cost: cost, deadline: deadline) }
        return AdmissionTicket(tenant: t.id, weight: t.weight, priority: t.priority, cost: cost, deadline: deadline)
    }

    /// Prompt tokens (estimated) plus max_completion_tokens / max_tokens, else the configured
    /// expectation; at least 1.
    static func expectedTokens(prompt: Int, maxOutput: Int?, expectedOutput: Int) -> Int {
        max(1, prompt + (maxOutput ?? expectedOutput))
    }

    // MARK: counters and the settlement

    /// Counts what admission made of the request (admitted, or refused and why).
    func count(_ e: RequestMachine.Event, in m: TenantMetrics) {
        guard let t = tenant else { return }
        switch e {
        case .admitted: m.admit(t.label)
        case .admissionRejected: m.reject(t.label, .capacity)
        case .admissionRefused(let r):
            switch r.reason {
            case .deadline: m.reject(t.label, .deadline)
            case .displaced: m.reject(t.label, .displaced)
            case .tokens: m.reject(t.label, .tokens)
            case .requests: m.reject(t.label, .requests)
            }
        default: break
        }
    }

    mutating func enqueued(in m: TenantMetrics) {
        guard let t = tenant, !isQueued else { return }
        isQueued = true
        m.enqueued(t.label)
    }

    mutating func dequeued(waitedNanos: UInt64?, in m: TenantMetrics) {
        guard let t = tenant, isQueued else { return }
        isQueued = false
        m.dequeued(t.label, waitedSeconds: waitedNanos.map { Double($0) / 1e9 })
    }

    /// The request ended: leave the queue count, charge the tenant, settle the reservation.
    /// `usedTokens`: what vLLM reported; `askedBackend`: an attempt was made.
    mutating func finished(usedTokens: Int?, askedBackend: Bool, metrics: TenantMetrics, limits: RateLimitDriver?) {
        dequeued(waitedNanos: nil, in: metrics)
        guard let t = tenant, reachedAdmission else { return }
        let reserved = reservedTokens
        reservedTokens = nil
        // Real usage when vLLM reported it; else, if a backend was asked, the reservation stands
        // (a client that left mid-stream still cost tokens); else nothing was spent.
        let used = usedTokens ?? (askedBackend ? (reserved ?? 0) : 0)
        if used > 0 { metrics.charge(t.label, tokens: used) }
        if let reserved { limits?.settle(t, reserved: reserved, used: used) }
    }
}

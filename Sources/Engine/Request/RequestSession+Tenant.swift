// RequestSession+Tenant: the session's part in fair admission (issue 14). Before admission: a
// deadline already past is refused without an upstream call; a tenant with limits reserves its
// expected tokens and one request (RateLimitDriver: Redis or in process), answered 429 with
// Retry-After when the budget is spent. When the request ends the reservation is settled with the
// real usage (a stream's final usage chunk too); a request that never reached a backend gets it
// all back. Per-tenant counters (TenantMetrics) are moved here too.
import Reactor

extension RequestSession {
    /// True: go on to admission now. False: refused (an event is posted) or waiting for the budget.
    func beforeAdmission() -> Bool {
        reachedAdmission = true
        if let d = request.deadline, d <= Loop.nowNanos() {
            post(.admissionRefused(AdmissionRefusal(.deadline, retryAfterSeconds: 1)))
            return false
        }
        guard let t = request.tenant, t.hasLimits, let limits = runtime.rateLimits else { return true }
        let cost = expectedTokens
        limits.reserve(t, cost: cost) { [weak self] d in self?.budgetAnswered(d, tenant: t, cost: cost) }
        return false
    }

    private func budgetAnswered(_ d: RateLimitDecision, tenant t: Tenant, cost: Int) {
        if isFinished {
            // The client left while Redis answered: give the reservation back.
            if case .allowed = d { runtime.rateLimits?.settle(t, reserved: cost, used: 0) }
            return
        }
        switch d {
        case .allowed(let st):
            reservedTokens = cost
            rateStatus = st
            askAdmission()
        case .denied(let st, let which, let ms):
            rateStatus = st
            let limit = which == .tokens ? t.tokensPerMinute : t.requestsPerMinute
            post(.admissionRefused(AdmissionRefusal(which == .tokens ? .tokens : .requests,
                                                    retryAfterSeconds: max(1, (ms + 999) / 1000), limit: limit)))
        case .unavailable:
            runtime.tenantMetrics.rateLimitUnavailable += 1
            askAdmission()
        }
    }

    /// Fair queueing's view of this request (asked only when it cannot go at once).
    func admissionTicket() -> AdmissionTicket {
        guard let t = request.tenant else { return AdmissionTicket(cost: expectedTokens, deadline: request.deadline) }
        return AdmissionTicket(tenant: t.id, weight: t.weight, priority: t.priority, cost: expectedTokens,
                               deadline: request.deadline)
    }

    /// Prompt tokens (estimated) plus max_completion_tokens / max_tokens, else the configured
    /// expectation.
    func computeExpectedTokens() -> Int {
        let prompt = runtime.estimator.estimate(request.promptSize)
        let output = request.maxOutputTokens ?? runtime.config.admissionControl.expectedOutputTokens
        return max(1, prompt + output)
    }

    // MARK: counters and the settlement

    func countTenant(_ e: RequestMachine.Event) {
        guard let t = request.tenant else { return }
        let m = runtime.tenantMetrics
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

    func tenantEnqueued() {
        guard let t = request.tenant, !tenantQueued else { return }
        tenantQueued = true
        runtime.tenantMetrics.enqueued(t.label)
    }

    func tenantDequeued(waitedNanos: UInt64?) {
        guard let t = request.tenant, tenantQueued else { return }
        tenantQueued = false
        runtime.tenantMetrics.dequeued(t.label, waitedSeconds: waitedNanos.map { Double($0) / 1e9 })
    }

    /// The request ended: leave the queue count, charge the tenant, settle the reservation.
    func tenantFinished() {
        tenantDequeued(waitedNanos: nil)
        guard let t = request.tenant, reachedAdmission else { return }
        let reserved = reservedTokens
        reservedTokens = nil
        // Real usage when vLLM reported it; else, if a backend was asked, the reservation stands
        // (a client that left mid-stream still cost tokens); else nothing was spent.
        let used = usage.map { $0.prompt + $0.completion } ?? (backend != nil ? (reserved ?? 0) : 0)
        if used > 0 { runtime.tenantMetrics.charge(t.label, tokens: used) }
        if let reserved { runtime.rateLimits?.settle(t, reserved: reserved, used: used) }
    }

    /// OpenAI's x-ratelimit-* headers for a tenant with limits.
    static func addRateLimitHeaders(_ st: RateLimitStatus, to h: inout HTTPHeaders) {
        if let l = st.limitRequests, let r = st.remainingRequests {
            h.add("x-ratelimit-limit-requests", String(l))
            h.add("x-ratelimit-remaining-requests", String(max(0, r)))
            h.add("x-ratelimit-reset-requests", resetText(RateLimitStatus.resetMillis(limit: l, remaining: r)))
        }
        if let l = st.limitTokens, let r = st.remainingTokens {
            h.add("x-ratelimit-limit-tokens", String(l))
            h.add("x-ratelimit-remaining-tokens", String(max(0, r)))
            h.add("x-ratelimit-reset-tokens", resetText(RateLimitStatus.resetMillis(limit: l, remaining: r)))
        }
    }

    /// OpenAI's duration form: "120ms", "1.5s", "6m0s".
    static func resetText(_ ms: Int) -> String {
        if ms < 1000 { return "\(ms)ms" }
        let m = ms / 60_000
        let rest = ms % 60_000
        let secs = rest % 1000 == 0 ? "\(rest / 1000)" : trimmed(Double(rest) / 1000)
        return m > 0 ? "\(m)m\(secs)s" : "\(secs)s"
    }

    private static func trimmed(_ v: Double) -> String {
        var s = String((v * 1000).rounded() / 1000)
        while s.hasSuffix("0") { s.removeLast() }
        if s.hasSuffix(".") { s.removeLast() }
        return s
    }
}

// RequestSession's facts in: each callback of the client connection, the upstream connection,
// admission, the cache lookup, the tenant's budget and the timer becomes one machine Event
// (`post`), or, for an upstream read or a flight's events, bytes handled in place. Nothing here
// acts: the actions are RequestSession.perform's.
import Reactor

extension RequestSession {
    func clientClosed() {
        client.lost()
        post(.clientClosed)
    }
    func clientDrained() { post(.clientDrained) }
    func flightEvents(_ events: UnsafeRawBufferPointer) { handleInPlace(events, flight: true) }
}

extension RequestSession: HTTPClientConnectionDelegate {
    func upstream(_ c: HTTPClientConnection, didReceiveHead status: Int, headers: HTTPHeaders) {
        guard c === upstream.connection else { return }
        runtime.noteUpstreamStatus(self, status)
        post(UpstreamAttempt.headEvent(status: status, headers: headers, contentLength: c.declaredContentLength))
    }
    func upstream(_ c: HTTPClientConnection, didReceiveBody bytes: UnsafeRawBufferPointer) {
        guard c === upstream.connection else { return }
        handleInPlace(bytes, flight: false)
    }
    func upstreamDidFinish(_ c: HTTPClientConnection) {
        guard c === upstream.connection else { return }
        post(.upstreamEnd)
    }
    func upstream(_ c: HTTPClientConnection, didFail failure: HTTPClientFailure) {
        guard c === upstream.connection else { return }
        post(.upstreamFailed(upstream.failed(failure, exchangesCompleted: c.exchangesCompleted)))
    }
}

extension RequestSession: AdmissionWaiter {
    func admissionTicket() -> AdmissionTicket { admission.budget.ticket(cost: expectedTokens, deadline: request.deadline) }
    func admissionAdmitted(_ backend: BackendID) {
        admission.admitted(to: backend)
        post(.admitted(backend))
    }
    func admissionQueued() { admission.queued(&timings, tenants: runtime.tenantMetrics) }
    func admissionRejected(retryAfterSeconds: Int) { post(.admissionRejected(retryAfterSeconds: retryAfterSeconds)) }
    func admissionRefused(_ reason: AdmissionRefusal.Reason, retryAfterSeconds: Int) {
        post(.admissionRefused(AdmissionRefusal(reason, retryAfterSeconds: retryAfterSeconds)))
    }
    func admissionKeepAlive() { post(.admissionKeepAlive) }
}

extension RequestSession: CacheWaiter {
    func cacheAnswered(_ lookup: CacheLookup, stale: Bool) { post(stale ? .staleAnswered(lookup) : .cacheAnswered(lookup)) }
}

extension RequestSession: RateLimitWaiter {
    func budgetAnswered(_ d: RateLimitDecision, tenant t: Tenant, cost: Int) {
        take(admission.budget.answered(d, tenant: t, cost: cost, hasEnded: isFinished, metrics: runtime.tenantMetrics,
                                       limits: runtime.rateLimits))
    }
}

extension RequestSession: TimerTarget {
    func timerFired(_ t: Timer) {
        guard let kind = timer.woke(now: Loop.nowNanos()) else { return }
        post(.timerFired(kind))
    }
}

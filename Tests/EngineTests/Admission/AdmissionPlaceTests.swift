// AdmissionPlace as a value: an answer ends the queue wait (observed once) and the token; the
// tenant's counters follow; without an AdmissionDriver the end is only bookkeeping. Also the rate
// limit script's answers by name.
import Reactor
import Testing
@testable import Engine

@Suite struct AdmissionPlaceTests {
    @Test func anAnswerEndsTheWaitAndTheToken() {
        let metrics = Metrics(now: 0)
        let tenants = TenantMetrics(labels: ["a", "other"])
        let t = Tenant(id: "h:a", label: 0, weight: 1, priority: 0, tokensPerMinute: nil, requestsPerMinute: nil)
        var p = AdmissionPlace(tenant: t)
        var timings = RequestTimings(start: 1)
        p.token = RequestToken(7)
        p.queued(&timings, tenants: tenants)
        #expect(tenants.queued[0] == 1 && p.budget.isQueued)
        p.answered(.admitted(BackendID(1)), &timings, metrics: metrics, tenants: tenants)
        #expect(p.token == nil && timings.dequeued(at: .max) == nil) // the wait ended
        #expect(metrics.queueWaitSeconds.count == 1 && tenants.queued[0] == 0 && tenants.admitted[0] == 1)
        // Not queued: no wait observed, the tenant's refusal still counted.
        var q = AdmissionPlace(tenant: t)
        q.answered(.admissionRefused(AdmissionRefusal(.tokens, retryAfterSeconds: 1)), &timings, metrics: metrics, tenants: tenants)
        #expect(metrics.queueWaitSeconds.count == 1 && tenants.rejected[0][TenantMetrics.Reason.tokens.rawValue] == 1)
        p.admitted(to: BackendID(1))
        p.ended(leaveQueue: true, nil, now: 1)
        #expect(p.token == nil)
    }

    @Test func rateLimitScriptAnswers() {
        let ok = RedisValue.array([.int(0), .int(0), .int(90), .int(4)])
        #expect(RateLimitDriver.decision(ok, tokensPerMinute: 100, requestsPerMinute: nil)
                == .allowed(RateLimitStatus(limitTokens: 100, remainingTokens: 90)))
        let tokens = RedisValue.array([.int(1), .int(0), .int(-3), .int(4)])
        #expect(RateLimitDriver.decision(tokens, tokensPerMinute: 100, requestsPerMinute: 5)
                == .denied(RateLimitStatus(limitTokens: 100, remainingTokens: -3, limitRequests: 5, remainingRequests: 4), .tokens,
                           retryAfterMillis: 1))
        let requests = RedisValue.array([.int(2), .int(1500), .int(9), .int(0)])
        #expect(RateLimitDriver.decision(requests, tokensPerMinute: nil, requestsPerMinute: 5)
                == .denied(RateLimitStatus(limitRequests: 5, remainingRequests: 0), .requests, retryAfterMillis: 1500))
        #expect(RateLimitDriver.decision(.error("NOSCRIPT"), tokensPerMinute: 1, requestsPerMinute: 1) == .unavailable)
        #expect(RateLimitDriver.decision(.array([.int(0)]), tokensPerMinute: 1, requestsPerMinute: 1) == .unavailable)
    }
}

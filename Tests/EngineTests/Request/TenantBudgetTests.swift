// TenantBudget as a value: what comes before admission, what the budget's answer leads to, the
// tenant's counters and the settlement when the request ends (an in-process RateLimitDriver).
import Testing
@testable import Engine

private final class BudgetRecorder: RateLimitWaiter {
    var answers: [RateLimitDecision] = []
    func budgetAnswered(_ d: RateLimitDecision, tenant: Tenant, cost: Int) { answers.append(d) }
}

private let limited = Tenant(id: "k:a", label: 0, weight: 2, priority: 1, tokensPerMinute: 600, requestsPerMinute: 10)
private let plain = Tenant(id: "h:b", label: 1, weight: 1, priority: 0, tokensPerMinute: nil, requestsPerMinute: nil)

@Suite struct TenantBudgetTests {
    @Test func beforeAdmissionTheDeadlineThenTheBudget() {
        var b = TenantBudget(tenant: limited)
        #expect(b.beforeAdmission(deadline: 100, now: 100, canReserve: true) == .refuse(AdmissionRefusal(.deadline, retryAfterSeconds: 1)))
        #expect(b.reachedAdmission)
        #expect(b.beforeAdmission(deadline: 101, now: 100, canReserve: true) == .reserve)
        #expect(b.beforeAdmission(deadline: nil, now: 100, canReserve: false) == .askAdmission)
        var p = TenantBudget(tenant: plain)
        #expect(p.beforeAdmission(deadline: nil, now: 0, canReserve: true) == .askAdmission)
        var none = TenantBudget(tenant: nil)
        #expect(none.beforeAdmission(deadline: nil, now: 0, canReserve: true) == .askAdmission)
    }

    @Test func answersLeadToAdmissionOrARefusal() {
        let m = TenantMetrics(labels: ["a", "b", "other"])
        let st = RateLimitStatus(limitTokens: 600, remainingTokens: 100)
        var b = TenantBudget(tenant: limited)
        #expect(b.answered(.allowed(st), tenant: limited, cost: 500, hasEnded: false, metrics: m, limits: nil) == .askAdmission)
        #expect(b.reservedTokens == 500 && b.rateStatus == st)
        var d = TenantBudget(tenant: limited)
        #expect(d.answered(.denied(st, .tokens, retryAfterMillis: 1001), tenant: limited, cost: 5, hasEnded: false, metrics: m, limits: nil)
                == .refuse(AdmissionRefusal(.tokens, retryAfterSeconds: 2, limit: 600)))
        #expect(d.answered(.denied(st, .requests, retryAfterMillis: 1), tenant: limited, cost: 5, hasEnded: false, metrics: m, limits: nil)
                == .refuse(AdmissionRefusal(.requests, retryAfterSeconds: 1, limit: 10)))
        #expect(d.reservedTokens == nil && d.rateStatus == st)
        var u = TenantBudget(tenant: limited)
        #expect(u.answered(.unavailable, tenant: limited, cost: 5, hasEnded: false, metrics: m, limits: nil) == .askAdmission)
        #expect(m.rateLimitUnavailable == 1 && u.reservedTokens == nil)
    }

    @Test func aRequestThatEndedWhileTheBudgetAnsweredGivesTheReservationBack() {
        let m = TenantMetrics(labels: ["a", "b", "other"])
        let limits = RateLimitDriver(redis: nil)
        let w = BudgetRecorder()
        limits.reserve(limited, cost: 500, for: w)
        guard case .allowed(let st) = w.answers.first else { Issue.record("not allowed"); return }
        #expect(st.remainingTokens == 100)
        var b = TenantBudget(tenant: limited)
        #expect(b.answered(.allowed(st), tenant: limited, cost: 500, hasEnded: true, metrics: m, limits: limits) == .none)
        #expect(b.reservedTokens == nil)
        limits.reserve(limited, cost: 1, for: w)
        guard case .allowed(let again) = w.answers.last else { Issue.record("not allowed"); return }
        #expect(again.remainingTokens == 599)
    }

    @Test func theSettlementChargesRealUsageElseTheReservationIfABackendWasAsked() {
        let m = TenantMetrics(labels: ["a", "b", "other"])
        let limits = RateLimitDriver(redis: nil)
        let w = BudgetRecorder()
        func reserved(_ cost: Int) -> TenantBudget {
            limits.reserve(limited, cost: cost, for: w)
            var b = TenantBudget(tenant: limited)
            _ = b.beforeAdmission(deadline: nil, now: 0, canReserve: true)
            _ = b.answered(w.answers.last!, tenant: limited, cost: cost, hasEnded: false, metrics: m, limits: limits)
            return b
        }
        var used = reserved(100)
        used.finished(usedTokens: 30, askedBackend: true, metrics: m, limits: limits)
        #expect(m.tokensCharged[0] == 30 && used.reservedTokens == nil)
        var left = reserved(100)
        left.finished(usedTokens: nil, askedBackend: true, metrics: m, limits: limits)
        #expect(m.tokensCharged[0] == 130)
        var never = reserved(100)
        never.finished(usedTokens: nil, askedBackend: false, metrics: m, limits: limits)
        #expect(m.tokensCharged[0] == 130)
        // 600 - 30 - 100 - 0 left; the next reservation sees that.
        limits.reserve(limited, cost: 1, for: w)
        guard case .allowed(let st) = w.answers.last else { Issue.record("not allowed"); return }
        #expect(st.remainingTokens == 469)
        // Never reached admission: nothing charged.
        var early = TenantBudget(tenant: limited)
        early.finished(usedTokens: 50, askedBackend: true, metrics: m, limits: limits)
        #expect(m.tokensCharged[0] == 130)
    }

    @Test func queueGaugeAndAdmissionCounters() {
        let m = TenantMetrics(labels: ["a", "b", "other"])
        var b = TenantBudget(tenant: plain)
        b.enqueued(in: m)
        b.enqueued(in: m)
        #expect(m.queued[1] == 1 && b.isQueued)
        b.dequeued(waitedNanos: 2_000_000_000, in: m)
        b.dequeued(waitedNanos: 1, in: m)
        #expect(m.queued[1] == 0 && m.waitSeconds[1].count == 1)
        b.enqueued(in: m)
        b.finished(usedTokens: nil, askedBackend: false, metrics: m, limits: nil)
        #expect(m.queued[1] == 0 && m.waitSeconds[1].count == 1)
        b.count(.admitted(BackendID(0)), in: m)
        b.count(.admissionRejected(retryAfterSeconds: 1), in: m)
        b.count(.admissionRefused(AdmissionRefusal(.displaced, retryAfterSeconds: 1)), in: m)
        b.count(.start, in: m)
        #expect(m.admitted[1] == 1)
        #expect(m.rejected[1][TenantMetrics.Reason.capacity.rawValue] == 1)
        #expect(m.rejected[1][TenantMetrics.Reason.displaced.rawValue] == 1)
        TenantBudget(tenant: nil).count(.admitted(BackendID(0)), in: m)
        #expect(m.admitted == [0, 1, 0])
    }

    @Test func ticketAndExpectedTokens() {
        #expect(TenantBudget(tenant: limited).ticket(cost: 7, deadline: 9)
                == AdmissionTicket(tenant: "k:a", weight: 2, priority: 1, cost: 7, deadline: 9))
        #expect(TenantBudget(tenant: nil).ticket(cost: 7, deadline: nil) == AdmissionTicket(cost: 7))
        #expect(TenantBudget.expectedTokens(prompt: 10, maxOutput: 5, expectedOutput: 100) == 15)
        #expect(TenantBudget.expectedTokens(prompt: 10, maxOutput: nil, expectedOutput: 100) == 110)
        #expect(TenantBudget.expectedTokens(prompt: 0, maxOutput: 0, expectedOutput: 100) == 1)
    }
}

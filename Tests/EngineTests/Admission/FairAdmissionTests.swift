// Fair admission (issue 14) as values: FairShares' tags, AdmissionMachine under `.fair`
// (priority bands, weighted token shares, EDF inside a tenant, deadlines, displacement from a full
// queue), property tests over seeded random workloads (no tenant starves; shares follow weights),
// the in-process RateLimiter, and TenantTable.
import Testing
@testable import Engine

private let b0 = BackendID(0)
private func t(_ n: UInt64) -> RequestToken { RequestToken(n) }
private let busy = BackendLoad(kvUsage: 0.8)      // queue
private let oneSlot = BackendLoad(kvUsage: 0.5)   // accept, one release per update

private func fairMachine(maxQueue: Int = 64, fairness: AdmissionMachine.Fairness = .fair) -> AdmissionMachine {
    var p = AdmissionMachine.Policy(softLimit: 0.7, hardLimit: 0.9, maxQueue: maxQueue, maxWait: .seconds(3600),
                                    keepAliveInterval: .seconds(3600), maxReleasePerUpdate: 1)
    p.fairness = fairness
    return AdmissionMachine(policy: p)
}

private func ticket(_ tenant: String, cost: Int = 100, weight: Double = 1, priority: Int = 0, deadline: UInt64? = nil) -> AdmissionTicket {
    AdmissionTicket(tenant: tenant, weight: weight, priority: priority, cost: cost, deadline: deadline)
}

/// Releases one queued request (an update with room for one) and returns its token.
private func releaseOne(_ m: inout AdmissionMachine, now: UInt64) -> RequestToken? {
    let a = m.loadsUpdated(b0, oneSlot, now: now)
    _ = m.loadsUpdated(b0, busy, now: now)
    guard case .admit(let tok, _)? = a.first else { return nil }
    return tok
}


@Suite struct FairSharesTests {
    @Test func tagsFollowStartTimeFairQueueing() {
        var f = FairShares()
        f.joined("a"); f.joined("a"); f.joined("b")
        #expect(f.start("a") == 0 && f.start("b") == 0)
        f.served("a", cost: 100, weight: 1)
        #expect(f.start("a") == 100)        // its next request starts where the first finished
        #expect(f.start("b") == 0)
        f.served("b", cost: 100, weight: 2)
        #expect(f.virtualTime == 0)
        #expect(f.start("b") == 50)         // idle now: rejoins at max(v, last finish)
        f.served("a", cost: 100, weight: 1)
        #expect(f.virtualTime == 100)
        #expect(f.start("b") == 100)        // ... which v has passed
    }

    @Test func leavingUnservedIsFreeAndIdleTenantsAreForgotten() {
        var f = FairShares()
        f.joined("a")
        f.left("a")
        #expect(f.flows.isEmpty)
        for i in 0..<20 { f.joined("t\(i)") }
        for i in 0..<20 { f.served("t\(i)", cost: 1, weight: 1) }
        #expect(f.flows.count == 20)        // each finished at 1, still ahead of v = 0
        f.joined("z"); f.served("z", cost: 1, weight: 1)
        f.joined("z"); f.served("z", cost: 1, weight: 1)   // v = 1: the others would restart at v
        #expect(f.flows.count == 1)
    }
}

@Suite struct FairAdmissionMachineTests {
    @Test func aLightTenantOvertakesAFlood() {
        var m = fairMachine()
        _ = m.loadsUpdated(b0, busy, now: 0)
        for i in 1...20 { #expect(m.requestArrived(t(UInt64(i)), pool: "p", candidates: [b0], now: 0, ticket: ticket("heavy")) == [.enqueued(t(UInt64(i)))]) }
        _ = releaseOne(&m, now: 1)                        // heavy's first: v = 0, heavy at 100
        _ = m.requestArrived(t(100), pool: "p", candidates: [b0], now: 2, ticket: ticket("light"))
        #expect(releaseOne(&m, now: 3) == t(100))         // light starts at v = 0 < 100
        #expect(releaseOne(&m, now: 4) == t(2))
    }

    @Test func fifoKeepsArrivalOrderWhateverTheTenant() {
        var m = fairMachine(fairness: .fifo)
        _ = m.loadsUpdated(b0, busy, now: 0)
        for i in 1...5 { _ = m.requestArrived(t(UInt64(i)), pool: "p", candidates: [b0], now: 0, ticket: ticket("heavy")) }
        _ = m.requestArrived(t(100), pool: "p", candidates: [b0], now: 0, ticket: ticket("light"))
        var order: [RequestToken] = []
        while let x = releaseOne(&m, now: 1) { order.append(x) }
        #expect(order == [t(1), t(2), t(3), t(4), t(5), t(100)])
    }

    @Test func priorityBandsComeFirst() {
        var m = fairMachine()
        _ = m.loadsUpdated(b0, busy, now: 0)
        _ = m.requestArrived(t(1), pool: "p", candidates: [b0], now: 0, ticket: ticket("a", priority: 1))
        _ = m.requestArrived(t(2), pool: "p", candidates: [b0], now: 0, ticket: ticket("b", cost: 10_000, priority: 0))
        _ = m.requestArrived(t(3), pool: "p", candidates: [b0], now: 0, ticket: ticket("b", cost: 10_000, priority: 0))
        #expect(releaseOne(&m, now: 1) == t(2))
        #expect(releaseOne(&m, now: 1) == t(3))
        #expect(releaseOne(&m, now: 1) == t(1))
    }

    @Test func earliestDeadlineFirstInsideATenant() {
        var m = fairMachine()
        _ = m.loadsUpdated(b0, busy, now: 0)
        _ = m.requestArrived(t(1), pool: "p", candidates: [b0], now: 0, ticket: ticket("a"))
        _ = m.requestArrived(t(2), pool: "p", candidates: [b0], now: 0, ticket: ticket("a", deadline: 9_000))
        _ = m.requestArrived(t(3), pool: "p", candidates: [b0], now: 0, ticket: ticket("a", deadline: 5_000))
        #expect(releaseOne(&m, now: 1) == t(3))
        #expect(releaseOne(&m, now: 1) == t(2))
        #expect(releaseOne(&m, now: 1) == t(1))
    }

    @Test func aPastDeadlineIsRefusedOnArrivalAndAQueuedOneLeavesWhenItPasses() {
        var m = fairMachine()
        _ = m.loadsUpdated(b0, busy, now: 0)
        #expect(m.requestArrived(t(1), pool: "p", candidates: [b0], now: 100, ticket: ticket("a", deadline: 100))
                == [.deadlineMissed(t(1), retryAfterSeconds: 1)])
        #expect(m.queuedTotal == 0)
        _ = m.requestArrived(t(2), pool: "p", candidates: [b0], now: 100, ticket: ticket("a", deadline: 5_000))
        #expect(m.nextDeadline == 5_000)
        #expect(m.tick(now: 4_999) == [])
        #expect(m.tick(now: 5_000) == [.deadlineMissed(t(2), retryAfterSeconds: 1)])
        #expect(m.queuedTotal == 0 && m.nextDeadline == nil && m.shares.flows.isEmpty)
    }

    @Test func aFullQueueDisplacesTheFloodNotTheLightTenant() {
        var m = fairMachine(maxQueue: 4)
        _ = m.loadsUpdated(b0, busy, now: 0)
        for i in 1...4 { _ = m.requestArrived(t(UInt64(i)), pool: "p", candidates: [b0], now: 0, ticket: ticket("heavy")) }
        // Another heavy request: the queue is full of its own tenant — refused as before.
        #expect(m.requestArrived(t(5), pool: "p", candidates: [b0], now: 0, ticket: ticket("heavy")) == [.reject(t(5), retryAfterSeconds: 1)])
        // A light one pushes out heavy's newest.
        #expect(m.requestArrived(t(6), pool: "p", candidates: [b0], now: 0, ticket: ticket("light"))
                == [.displaced(t(4), retryAfterSeconds: 1), .enqueued(t(6))])
        #expect(m.queuedTotal == 4)
        let first = releaseOne(&m, now: 1)
        #expect(first == t(1) || first == t(6))
    }

    @Test func aNewcomerUnderItsShareGoesAheadOnAcceptingBackend() {
        var m = fairMachine()
        _ = m.loadsUpdated(b0, busy, now: 0)
        for i in 1...3 { _ = m.requestArrived(t(UInt64(i)), pool: "p", candidates: [b0], now: 0, ticket: ticket("heavy")) }
        _ = releaseOne(&m, now: 1)
        _ = m.loadsUpdated(b0, BackendLoad(kvUsage: 0.5), now: 2)   // releases heavy's second
        // Accepting, with a waiter: FIFO would admit the waiter; fair lets the light newcomer go.
        #expect(m.requestArrived(t(9), pool: "p", candidates: [b0], now: 2, ticket: ticket("light")) == [.admit(t(9), b0)])
        #expect(m.queuedTotal == 1)
        // And a heavy newcomer does not overtake its own tenant's waiter.
        #expect(m.requestArrived(t(10), pool: "p", candidates: [b0], now: 2, ticket: ticket("heavy")) == [.admit(t(3), b0), .enqueued(t(10))])
    }

    @Test func leavingKeepsTheBookkeepingWhole() {
        var m = fairMachine()
        _ = m.loadsUpdated(b0, busy, now: 0)
        _ = m.requestArrived(t(1), pool: "p", candidates: [b0], now: 0, ticket: ticket("a", deadline: 1_000_000))
        let left = m.requestLeft(t(1))
        #expect(left)
        #expect(m.queuedTotal == 0 && m.nextDeadline == nil && m.shares.flows.isEmpty)
    }

    // MARK: properties

    /// Tenants with random weights and random request costs keep their queues non-empty; one
    /// request is released at a time. Over the run each tenant's served tokens / weight agree
    /// within 5 % (weighted fairness), and no backlogged tenant waits more than a bounded number
    /// of releases (no starvation).
    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8] as [UInt64])
    func sharesFollowWeightsAndNobodyStarves(seed: UInt64) {
        var rng = TestRNG(seed: seed)
        let n = Int.random(in: 2...5, using: &rng)
        let weights = (0..<n).map { _ in Double(Int.random(in: 1...4, using: &rng)) }
        var m = fairMachine(maxQueue: 10_000)
        _ = m.loadsUpdated(b0, busy, now: 0)
        var next: UInt64 = 1
        var tenantOf: [RequestToken: (Int, Int)] = [:]
        var queued = [Int](repeating: 0, count: n)
        func add(_ i: Int) {
            let cost = Int.random(in: 50...500, using: &rng)
            let tok = t(next)
            next += 1
            tenantOf[tok] = (i, cost)
            queued[i] += 1
            _ = m.requestArrived(tok, pool: "p", candidates: [b0], now: 0, ticket: ticket("t\(i)", cost: cost, weight: weights[i]))
        }
        for i in 0..<n { for _ in 0..<3 { add(i) } }
        var served = [Double](repeating: 0, count: n)
        var sinceServed = [Int](repeating: 0, count: n)
        let releases = 4000
        for step in 0..<releases {
            guard let tok = releaseOne(&m, now: UInt64(step)) else { Issue.record("nothing released"); return }
            let (i, cost) = tenantOf[tok]!
            served[i] += Double(cost)
            queued[i] -= 1
            for j in 0..<n { sinceServed[j] = j == i ? 0 : sinceServed[j] + 1 }
            // No starvation: a backlogged tenant is served within a bound that depends only on the
            // weights and the cost spread (each other tenant can run ahead by ≤ one max cost/weight).
            let bound = n * Int((500.0 / 50.0) * (weights.max()! / weights.min()!)) + n
            #expect(sinceServed.max()! <= bound, "seed \(seed): a tenant waited \(sinceServed.max()!) releases (bound \(bound))")
            if queued[i] < 3 { add(i) }
        }
        let norm = (0..<n).map { served[$0] / weights[$0] }
        let mean = norm.reduce(0, +) / Double(n)
        for i in 0..<n {
            #expect(abs(norm[i] - mean) / mean < 0.05, "seed \(seed): tenant \(i) weight \(weights[i]) got \(norm[i]) vs mean \(mean)")
        }
    }

    /// The same random workload under FIFO and under fair with a single tenant: the same order.
    @Test func oneTenantUnderFairIsFifo() {
        var rng = TestRNG(seed: 42)
        var a = fairMachine(fairness: .fifo)
        var b = fairMachine()
        _ = a.loadsUpdated(b0, busy, now: 0)
        _ = b.loadsUpdated(b0, busy, now: 0)
        var oa: [RequestToken] = [], ob: [RequestToken] = []
        for i in 1...200 as ClosedRange<UInt64> {
            let c = Int.random(in: 1...1000, using: &rng)
            _ = a.requestArrived(t(i), pool: "p", candidates: [b0], now: i, ticket: ticket("", cost: c))
            _ = b.requestArrived(t(i), pool: "p", candidates: [b0], now: i, ticket: ticket("", cost: c))
            if Bool.random(using: &rng) {
                if let x = releaseOne(&a, now: i) { oa.append(x) }
                if let x = releaseOne(&b, now: i) { ob.append(x) }
            }
        }
        #expect(oa == ob)
    }
}

@Suite struct RateLimiterTests {
    @Test func reserveSettleAndRefill() {
        var r = RateLimiter()
        // 600 tokens/min = 10 per second; 3 requests/min.
        guard case .allowed(let s1) = r.reserve(tenant: "a", tokensPerMinute: 600, requestsPerMinute: 3, cost: 500, now: 0) else {
            Issue.record("denied"); return
        }
        #expect(s1 == RateLimitStatus(limitTokens: 600, remainingTokens: 100, limitRequests: 3, remainingRequests: 2))
        // Used 50 of 500: 450 come back.
        #expect(r.settle(tenant: "a", tokensPerMinute: 600, reserved: 500, used: 50, now: 0) == 550)
        guard case .denied(_, .tokens, let wait) = r.reserve(tenant: "a", tokensPerMinute: 600, requestsPerMinute: nil, cost: 600, now: 0) else {
            Issue.record("allowed"); return
        }
        #expect(wait == 5_000)  // 50 missing at 10 per second
        if case .denied = r.reserve(tenant: "a", tokensPerMinute: 600, requestsPerMinute: nil, cost: 600, now: 5_000) {
            Issue.record("denied after refill")
        }
    }

    @Test func requestsPerMinuteAndDebt() {
        var r = RateLimiter()
        for _ in 0..<2 { _ = r.reserve(tenant: "a", tokensPerMinute: nil, requestsPerMinute: 2, cost: 1, now: 0) }
        #expect(r.reserve(tenant: "a", tokensPerMinute: nil, requestsPerMinute: 2, cost: 1, now: 0)
                == .denied(RateLimitStatus(limitRequests: 2, remainingRequests: 0), .requests, retryAfterMillis: 30_000))
        // More used than reserved: the bucket goes into debt, and the wait covers it.
        _ = r.reserve(tenant: "b", tokensPerMinute: 60, requestsPerMinute: nil, cost: 10, now: 0)
        #expect(r.settle(tenant: "b", tokensPerMinute: 60, reserved: 10, used: 110, now: 0) == -50)
        guard case .denied(_, .tokens, let wait) = r.reserve(tenant: "b", tokensPerMinute: 60, requestsPerMinute: nil, cost: 1, now: 0) else {
            Issue.record("allowed in debt"); return
        }
        #expect(wait == 51_000)
        // A request larger than the whole budget still runs once the bucket is full.
        #expect(r.reserve(tenant: "c", tokensPerMinute: 60, requestsPerMinute: nil, cost: 1000, now: 0)
                == .allowed(RateLimitStatus(limitTokens: 60, remainingTokens: -940)))
    }

    @Test func resetText() {
        #expect(RateLimitStatus.resetMillis(limit: 600, remaining: 300) == 30_000)
        #expect(SessionHeaders.resetText(120) == "120ms")
        #expect(SessionHeaders.resetText(1500) == "1.5s")
        #expect(SessionHeaders.resetText(360_000) == "6m0s")
    }
}

@Suite struct TenantTableTests {
    @Test func keysHeadersAndOther() {
        let table = TenantTable(keyTenants: [("abcdef0123", TenantConfig(key: "x", weight: 2, priority: 1, tokensPerMinute: 100))],
                                headerTenants: [TenantConfig(name: "team-a", weight: 3)], header: "x-tenant")
        #expect(table.labels == ["key-abcdef01", "team-a", "other"])
        let k = table.resolve(identity: "abcdef0123", headerValue: "team-a")
        #expect(k.id == "k:abcdef0123" && k.label == 0 && k.weight == 2 && k.priority == 1 && k.hasLimits)
        let h = table.resolve(identity: nil, headerValue: "team-a")
        #expect(h.id == "h:team-a" && h.label == 1 && h.weight == 3 && !h.hasLimits)
        let o = table.resolve(identity: nil, headerValue: "someone")
        #expect(o.id == "h:someone" && o.label == 2 && o.weight == 1)
        #expect(table.resolve(identity: nil, headerValue: nil).id == "")
    }
}

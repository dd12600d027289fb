// AdmissionMachine scenarios: events in, actions out, time injected as nanoseconds.
import Testing
@testable import Engine

private func sec(_ x: Double) -> UInt64 { UInt64(x * 1_000_000_000) }
private let b0 = BackendID(0)
private let b1 = BackendID(1)
private func t(_ n: UInt64) -> RequestToken { RequestToken(n) }
private let free = BackendLoad(kvUsage: 0.5)        // accept, 1 release per update (running unknown)
private let busy = BackendLoad(kvUsage: 0.8)        // queue
private let full = BackendLoad(kvUsage: 0.95)       // reject

private func machine(maxQueue: Int = 8, maxWait: Duration = .seconds(30)) -> AdmissionMachine {
    AdmissionMachine(policy: .init(softLimit: 0.7, hardLimit: 0.9, maxQueue: maxQueue, maxWait: maxWait,
                                   keepAliveInterval: .seconds(5), maxReleasePerUpdate: 8))
}

@Suite struct AdmissionMachineTests {
    @Test func decisionsFollowTheLimits() {
        var m = machine()
        #expect(m.decision(for: b0) == .unknown)  // never read: unknown, not "0 % used"
        let cases: [(Double, AdmissionDecision)] = [(0, .accept), (0.69, .accept), (0.7, .queue), (0.89, .queue), (0.9, .reject), (1, .reject)]
        for (u, d) in cases {
            _ = m.loadsUpdated(b0, BackendLoad(kvUsage: u), now: 0)
            #expect(m.decision(for: b0) == d, "u=\(u)")
        }
        _ = m.loadsUpdated(b0, nil, now: 0)
        #expect(m.decision(for: b0) == .unknown)
        _ = m.loadsUpdated(b0, BackendLoad(kvUsage: nil, running: 3), now: 0)
        #expect(m.decision(for: b0) == .unknown)
    }

    @Test func acceptAdmitsAtOnce() {
        var m = machine()
        _ = m.loadsUpdated(b0, BackendLoad(kvUsage: 0.1), now: 0)
        #expect(m.requestArrived(t(1), pool: "tiny", candidates: [b0], now: 0) == [.admit(t(1), b0)])
        #expect(m.queuedTotal == 0)
    }

    @Test func unknownIsEligibleButRankedAfterAccepting() {
        var m = machine()
        _ = m.loadsUpdated(b1, BackendLoad(kvUsage: 0.2), now: 0)
        #expect(m.requestArrived(t(1), pool: "p", candidates: [b0, b1], now: 0) == [.admit(t(1), b1)])
        var m2 = machine()
        _ = m2.loadsUpdated(b1, busy, now: 0)
        #expect(m2.requestArrived(t(1), pool: "p", candidates: [b1, b0], now: 0) == [.admit(t(1), b0)])
    }

    @Test func aboveHardLimitRejects() {
        var m = machine()
        _ = m.loadsUpdated(b0, full, now: 0)
        _ = m.loadsUpdated(b1, full, now: 0)
        #expect(m.requestArrived(t(1), pool: "p", candidates: [b0, b1], now: 0) == [.reject(t(1), retryAfterSeconds: 1)])
        #expect(m.requestArrived(t(2), pool: "p", candidates: [], now: 0) == [.reject(t(2), retryAfterSeconds: 1)])
        #expect(!m.isQueued(t(1)))
    }

    @Test func softLimitQueuesThenUpdateReleasesInFIFOOrder() {
        var m = machine()
        _ = m.loadsUpdated(b0, busy, now: 0)
        for n in 1...4 as ClosedRange<UInt64> {
            #expect(m.requestArrived(t(n), pool: "p", candidates: [b0], now: sec(Double(n))) == [.enqueued(t(n))])
        }
        #expect(m.queuedCount(pool: "p") == 4)
        // Still busy: nothing moves.
        #expect(m.loadsUpdated(b0, busy, now: sec(5)) == [])
        // Accepting, running unknown: exactly one.
        #expect(m.loadsUpdated(b0, free, now: sec(6)) == [.admit(t(1), b0)])
        // u 0.25 with 1 running: each request ≈ 0.25, (0.7 − 0.25) / 0.25 → 1; with u 0.1, 1 running: 6.
        #expect(m.loadsUpdated(b0, BackendLoad(kvUsage: 0.25, running: 1), now: sec(7)) == [.admit(t(2), b0)])
        #expect(m.loadsUpdated(b0, BackendLoad(kvUsage: 0.1, running: 1), now: sec(8)) == [.admit(t(3), b0), .admit(t(4), b0)])
        #expect(m.queuedTotal == 0)
    }

    @Test func headroomEstimateIsClamped() {
        var m = machine(maxQueue: 16)
        _ = m.loadsUpdated(b0, busy, now: 0)
        for n in 1...12 as ClosedRange<UInt64> { _ = m.requestArrived(t(n), pool: "p", candidates: [b0], now: 0) }
        // 0.2 / (0.5 / 5) = 2 requests fit.
        #expect(m.loadsUpdated(b0, BackendLoad(kvUsage: 0.5, running: 5), now: 0) == [.admit(t(1), b0), .admit(t(2), b0)])
        // Empty backend: maxReleasePerUpdate (8).
        #expect(m.loadsUpdated(b0, BackendLoad(kvUsage: 0, running: 0), now: 0).count == 8)
        #expect(m.queuedCount(pool: "p") == 2)
    }

    @Test func unknownUpdateReleasesExactlyOne() {
        var m = machine()
        _ = m.loadsUpdated(b0, busy, now: 0)
        for n in 1...3 as ClosedRange<UInt64> { _ = m.requestArrived(t(n), pool: "p", candidates: [b0], now: 0) }
        #expect(m.loadsUpdated(b0, nil, now: 0) == [.admit(t(1), b0)])
        #expect(m.loadsUpdated(b0, full, now: 0) == [])
    }

    @Test func releaseOnlyToBackendsARequestListed() {
        var m = machine()
        _ = m.loadsUpdated(b0, busy, now: 0)
        _ = m.loadsUpdated(b1, busy, now: 0)
        _ = m.requestArrived(t(1), pool: "p", candidates: [b0], now: 0)
        _ = m.requestArrived(t(2), pool: "p", candidates: [b1], now: 0)
        #expect(m.loadsUpdated(b1, free, now: 0) == [.admit(t(2), b1)])
        #expect(m.isQueued(t(1)))
    }

    @Test func fifoAcrossPoolsSharingABackend() {
        var m = machine()
        _ = m.loadsUpdated(b0, busy, now: 0)
        _ = m.requestArrived(t(1), pool: "a", candidates: [b0], now: 0)
        _ = m.requestArrived(t(2), pool: "b", candidates: [b0], now: 0)
        _ = m.requestArrived(t(3), pool: "a", candidates: [b0], now: 0)
        let out = m.loadsUpdated(b0, BackendLoad(kvUsage: 0.1, running: 1), now: 0)
        #expect(out == [.admit(t(1), b0), .admit(t(2), b0), .admit(t(3), b0)])
    }

    @Test func newcomersDoNotOvertakeTheQueue() {
        var m = machine()
        _ = m.loadsUpdated(b0, busy, now: 0)
        _ = m.requestArrived(t(1), pool: "p", candidates: [b0], now: 0)
        _ = m.requestArrived(t(2), pool: "p", candidates: [b0], now: 0)
        #expect(m.loadsUpdated(b0, free, now: sec(1)) == [.admit(t(1), b0)])
        // b0 accepts, but t2 was first: it goes, t3 takes its place in the queue.
        #expect(m.requestArrived(t(3), pool: "p", candidates: [b0], now: sec(2)) == [.admit(t(2), b0), .enqueued(t(3))])
        #expect(m.requestArrived(t(4), pool: "p", candidates: [b0], now: sec(2)) == [.admit(t(3), b0), .enqueued(t(4))])
        #expect(m.queuedCount(pool: "p") == 1)
        // Another pool is not held up by this one.
        #expect(m.requestArrived(t(5), pool: "q", candidates: [b0], now: sec(2)) == [.admit(t(5), b0)])
    }

    @Test func overflowRejectsWithRetryAfterFromDrainRate() {
        var m = machine(maxQueue: 2)
        _ = m.loadsUpdated(b0, busy, now: 0)
        _ = m.requestArrived(t(1), pool: "p", candidates: [b0], now: 0)
        _ = m.requestArrived(t(2), pool: "p", candidates: [b0], now: 0)
        // Nothing drained yet: the default, 1 s.
        #expect(m.requestArrived(t(9), pool: "p", candidates: [b0], now: 0) == [.reject(t(9), retryAfterSeconds: 1)])
        #expect(m.loadsUpdated(b0, free, now: sec(10)) == [.admit(t(1), b0)])
        _ = m.loadsUpdated(b0, busy, now: sec(10))
        #expect(m.requestArrived(t(3), pool: "p", candidates: [b0], now: sec(10)) == [.enqueued(t(3))])
        #expect(m.loadsUpdated(b0, free, now: sec(12)) == [.admit(t(2), b0)])
        _ = m.loadsUpdated(b0, busy, now: sec(12))
        #expect(m.requestArrived(t(4), pool: "p", candidates: [b0], now: sec(12)) == [.enqueued(t(4))])
        // 2 releases over the 4 s since the first: 0.5/s; 2 queued + this one → 6 s.
        #expect(m.requestArrived(t(5), pool: "p", candidates: [b0], now: sec(14)) == [.reject(t(5), retryAfterSeconds: 6)])
        // t3 (queued at 10 s) times out at 40 s: 2 releases / 30 s, 1 left + itself → 30 s.
        #expect(m.tick(now: sec(40)) == [.reject(t(3), retryAfterSeconds: 30), .keepAlive(t(4))])
        #expect(m.queuedCount(pool: "p") == 1)
        // t4 at 42 s: 2 releases over 32 s, nobody left + itself → 16 s.
        #expect(m.tick(now: sec(42)) == [.reject(t(4), retryAfterSeconds: 16)])
    }

    @Test func retryAfterClampsAndForgetsOldReleases() {
        var m = machine(maxQueue: 2)
        _ = m.loadsUpdated(b0, busy, now: 0)
        _ = m.requestArrived(t(1), pool: "p", candidates: [b0], now: 0)
        _ = m.requestArrived(t(2), pool: "p", candidates: [b0], now: 0)
        _ = m.loadsUpdated(b0, free, now: 0)
        _ = m.loadsUpdated(b0, busy, now: 0)
        _ = m.requestArrived(t(3), pool: "p", candidates: [b0], now: 0)
        // One release in 50 s, 3 to drain → 150 s, clamped to 60.
        #expect(m.requestArrived(t(4), pool: "p", candidates: [b0], now: sec(50)) == [.reject(t(4), retryAfterSeconds: 60)])
        // A minute later that release no longer counts: unknown rate → 1.
        #expect(m.requestArrived(t(5), pool: "p", candidates: [b0], now: sec(61)) == [.reject(t(5), retryAfterSeconds: 1)])
        // Drain rate is per pool: another pool has seen nothing.
        _ = m.requestArrived(t(6), pool: "q", candidates: [b0], now: sec(62))
        _ = m.requestArrived(t(7), pool: "q", candidates: [b0], now: sec(62))
        #expect(m.requestArrived(t(8), pool: "q", candidates: [b0], now: sec(63)) == [.reject(t(8), retryAfterSeconds: 1)])
    }

    @Test func maxQueueZeroDisablesQueueing() {
        var m = machine(maxQueue: 0)
        _ = m.loadsUpdated(b0, busy, now: 0)
        #expect(m.requestArrived(t(1), pool: "p", candidates: [b0], now: 0) == [.reject(t(1), retryAfterSeconds: 1)])
    }

    @Test func requestLeftRemovesFromTheQueue() {
        var m = machine()
        _ = m.loadsUpdated(b0, busy, now: 0)
        _ = m.requestArrived(t(1), pool: "p", candidates: [b0], now: 0)
        _ = m.requestArrived(t(2), pool: "p", candidates: [b0], now: 0)
        let first = m.requestLeft(t(1))
        let again = m.requestLeft(t(1))
        let stranger = m.requestLeft(t(77))
        #expect(first)
        #expect(!again)
        #expect(!stranger)
        #expect(m.loadsUpdated(b0, free, now: 0) == [.admit(t(2), b0)])
        #expect(m.tick(now: sec(100)) == [])
    }

    @Test func keepAliveCadenceThenTimeout() {
        var m = machine()
        _ = m.loadsUpdated(b0, busy, now: 0)
        _ = m.requestArrived(t(1), pool: "p", candidates: [b0], now: 0)
        _ = m.requestArrived(t(2), pool: "p", candidates: [b0], now: sec(2))
        #expect(m.tick(now: sec(4.9)) == [])
        #expect(m.tick(now: sec(5)) == [.keepAlive(t(1))])
        #expect(m.tick(now: sec(6)) == [])
        #expect(m.tick(now: sec(7)) == [.keepAlive(t(2))])
        #expect(m.tick(now: sec(9.9)) == [])
        #expect(m.tick(now: sec(12)) == [.keepAlive(t(1)), .keepAlive(t(2))])
        // maxWait 30 s: t1 expires at 30 (no keepalive for it), t2 still gets one at 30 ≥ 12 + 5.
        #expect(m.tick(now: sec(30)) == [.reject(t(1), retryAfterSeconds: 1), .keepAlive(t(2))])
        #expect(m.tick(now: sec(32)) == [.reject(t(2), retryAfterSeconds: 1)])
        #expect(m.queuedTotal == 0)
    }
}

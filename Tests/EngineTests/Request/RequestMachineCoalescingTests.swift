// RequestMachine's cache and coalescing paths as values: hit, miss → lead or follow (in process
// or across processes: the coalescer decides), follower leaving, a vanished source, a cut stream.
import Testing
@testable import Engine

private func policy(lookup: Bool = true, coalesce: Bool = true, admission: Bool = false) -> RequestMachine.Policy {
    var p = RequestMachine.Policy(maxAttempts: 2, backoff: .milliseconds(10), upstreamTimeout: .seconds(5), usesAdmission: admission)
    p.lookupCache = lookup
    p.coalesce = coalesce
    return p
}

@Suite struct RequestMachineCoalescingTests {
    @Test func hitIsReplayedAndNothingElseHappens() {
        var m = RequestMachine(policy: policy())
        #expect(m.start() == .lookupCache)
        #expect(m.cacheLookedUp(found: true) == .replayCached)
        #expect(m.termination == .normal)
        #expect(m.clientClosed() == .none)
    }

    @Test func missLeadsWhenNobodyIsInFlight() {
        var m = RequestMachine(policy: policy())
        _ = m.start()
        #expect(m.cacheLookedUp(found: false) == .joinFlight)
        #expect(m.flightJoined(asLeader: true) == .pickBackend(excluding: []))
    }

    @Test func followerGetsTheFlightsAnswer() {
        var m = RequestMachine(policy: policy())
        _ = m.start()
        _ = m.cacheLookedUp(found: false)
        #expect(m.flightJoined(asLeader: false) == .none)
        #expect(m.upstreamBody(clientBlocked: false) == .none) // a follower has no upstream of its own
        #expect(m.flightFinished() == .deliverFromFlight)
        #expect(m.termination == .normal)
    }

    @Test func followerThatLeavesLeavesOnlyTheFlight() {
        var m = RequestMachine(policy: policy())
        _ = m.start()
        _ = m.cacheLookedUp(found: false)
        _ = m.flightJoined(asLeader: false)
        #expect(m.clientClosed() == .leaveFlight)
        #expect(m.termination?.description == "CD")
        #expect(m.flightFinished() == .none)
    }

    @Test func noCacheControlSkipsLookupButStillCoalesces() {
        var m = RequestMachine(policy: policy(lookup: false))
        #expect(m.start() == .joinFlight)
    }

    @Test func leaderGoesToAdmission() {
        var m = RequestMachine(policy: policy(admission: true))
        _ = m.start()
        _ = m.cacheLookedUp(found: false)
        #expect(m.flightJoined(asLeader: true) == .requestAdmission)
    }

    @Test func followerWhoseSourceVanishedAsksAgainAndMayLead() {
        var m = RequestMachine(policy: policy())
        _ = m.start()
        _ = m.cacheLookedUp(found: false)
        #expect(m.flightJoined(asLeader: false) == .none)
        #expect(m.flightRejoined() == .joinFlight)
        #expect(m.flightJoined(asLeader: true) == .pickBackend(excluding: []))
        #expect(m.backendChosen(BackendID(0)) == .sendUpstream(BackendID(0), timeout: .seconds(5)))
        // Both attempts are still ours: following did not use one.
        #expect(m.upstreamHead(status: 500, isEventStream: false) == .retry(after: .milliseconds(10)))
    }

    @Test func streamEndingWithoutDoneIsAFailureEvent() {
        var p = policy(lookup: false, coalesce: false)
        p.isStream = true
        var m = RequestMachine(policy: p)
        _ = m.start()
        _ = m.backendChosen(BackendID(0))
        _ = m.upstreamHead(status: 200, isEventStream: true)
        guard case .failStream(let e) = m.upstreamEnd(streamComplete: false) else { Issue.record("expected failStream"); return }
        #expect(e.status == 502)
        #expect(m.termination?.description == "SD")
    }

    @Test func exhaustedAttemptsCarryRetryAfter() {
        var m = RequestMachine(policy: policy(lookup: false, coalesce: false))
        _ = m.start()
        _ = m.backendChosen(BackendID(0))
        _ = m.upstreamFailed(.connect)
        _ = m.timerFired(.backoff)
        _ = m.backendChosen(BackendID(0))
        guard case .respondError(let e) = m.upstreamFailed(.connect) else { Issue.record("expected error"); return }
        #expect(e.status == 502 && e.retryAfterSeconds == 1)
    }
}

/// The untrusted upstream (issue 10): a 2xx that is not the endpoint's answer, or an answer in the
/// wrong form, is the backend's failure: retried, then a 502; never relayed as a success.
@Suite struct RequestMachineUpstreamShapeTests {
    private func sent(stream: Bool) -> RequestMachine {
        var p = RequestMachine.Policy(maxAttempts: 2, backoff: .milliseconds(10), upstreamTimeout: .seconds(5), isStream: stream)
        p.lookupCache = false
        var m = RequestMachine(policy: p)
        _ = m.start()
        _ = m.backendChosen(BackendID(0))
        return m
    }

    @Test func a200ThatIsNotAnAnswerIsRetriedThenA502() {
        var m = sent(stream: false)
        #expect(m.upstreamHead(status: 200, isEventStream: false) == .none)
        #expect(m.upstreamEnd(bodyIsAnswer: false) == .retry(after: .milliseconds(10)))
        _ = m.timerFired(.backoff)
        _ = m.backendChosen(BackendID(1))
        _ = m.upstreamHead(status: 200, isEventStream: false)
        guard case .respondError(let e) = m.upstreamEnd(bodyIsAnswer: false) else { Issue.record("expected 502"); return }
        #expect(e.status == 502)
    }

    @Test func otherSuccessStatusesAreNotAnswers() {
        for st in [201, 204, 206] {
            var m = sent(stream: false)
            _ = m.upstreamHead(status: st, isEventStream: false)
            #expect(m.upstreamEnd(bodyIsAnswer: true) == .retry(after: .milliseconds(10)), "\(st)")
        }
    }

    @Test func clientErrorsAreRelayedAsTheyAre() {
        var m = sent(stream: false)
        _ = m.upstreamHead(status: 400, isEventStream: false)
        #expect(m.upstreamEnd(bodyIsAnswer: false) == .respondBuffered(status: 400))
    }

    @Test func theWrongFormIsAFailure() {
        var plain = sent(stream: false)
        #expect(plain.upstreamHead(status: 200, isEventStream: true) == .retry(after: .milliseconds(10)))
        var stream = sent(stream: true)
        #expect(stream.upstreamHead(status: 200, isEventStream: false) == .retry(after: .milliseconds(10)))
        var ok = sent(stream: true)
        #expect(ok.upstreamHead(status: 200, isEventStream: true) == .startStream(timeout: .seconds(5)))
    }
}

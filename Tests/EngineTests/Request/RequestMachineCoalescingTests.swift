// RequestMachine's cache and coalescing paths as values: hit, miss → lead or follow (in process
// or across processes: the coalescer decides), what a follower is sent for each way a flight
// ends, a follower leaving, a leader whose client leaves, a vanished source.
import Testing
@testable import Engine

private func policy(lookup: Bool = true, coalesce: Bool = true, admission: Bool = false, stream: Bool = false) -> RequestMachine.Policy {
    var p = RequestMachine.Policy(maxAttempts: 2, backoff: .milliseconds(10), upstreamTimeout: .seconds(5), usesAdmission: admission,
                                  isStream: stream)
    p.lookupCache = lookup
    p.coalesce = coalesce
    p.mayLead = coalesce
    p.storesAnswer = true
    p.stamp = replayStamp
    return p
}

/// A replay is a response of its own: this request's id and created, not the stored ones.
private let replayStamp = ReplyStamp(kind: .chat, requestId: "r-7", created: 1_800_000_000)
private let replayedAnswer = replayStamp.stamped(json: chatAnswer)

private let f1 = CoalescerMachine.FlightID(1)
private let sse = "text/event-stream"

/// A machine that missed the cache and asked the coalescer.
private func asking(_ p: RequestMachine.Policy = policy()) -> RequestMachine {
    var m = RequestMachine(policy: p)
    _ = m.start()
    #expect(m.cacheAnswered(.miss) == .joinFlight)
    return m
}

@Suite struct RequestMachineCoalescingTests {
    /// A client that has its answer may ask again at once, on a connection another worker takes:
    /// by then the answer must be stored and the flight over, so the repeat is a hit or leads a
    /// flight of its own instead of joining this one (seen once as a 502 handed to the repeat).
    @Test func aRequestsEndStoresAndEndsItsFlightBeforeItsReply() {
        typealias Step = RequestMachine.Finish.Step
        let steps = RequestMachine.Finish.steps
        #expect(steps.count == Step.allCases.count && Set(Step.allCases.map { steps.firstIndex(of: $0) }).count == steps.count)
        func at(_ s: Step) -> Int { steps.firstIndex(of: s) ?? -1 }
        #expect(at(.store) >= 0 && at(.store) < at(.reply))
        #expect(at(.endFlight) >= 0 && at(.endFlight) < at(.reply))
        #expect(at(.upstream) == 0 && steps.last == .logged)
    }

    @Test func hitIsReplayedAndNothingElseHappens() {
        var m = RequestMachine(policy: policy())
        #expect(m.start() == .lookupCache)
        #expect(m.cacheAnswered(.fresh(StoredAnswer.json(chatAnswer).encoded())) == .finish(.init(reply: .answer(replayedAnswer))))
        #expect(String(decoding: replayedAnswer, as: UTF8.self).hasPrefix(#"{"id":"chatcmpl-r-7","object":"chat.completion","created":1800000000,"#))
        #expect(m.cacheOutcome == .hit && m.status == 200)
        #expect(m.termination == .normal)
        #expect(m.clientClosed() == .none)
    }

    @Test func aStreamClientGetsAStoredJSONAnswerAsEvents() {
        var m = RequestMachine(policy: policy(stream: true))
        _ = m.start()
        guard case .finish(let f) = m.cacheAnswered(.fresh(StoredAnswer.json(chatAnswer).encoded())),
              case .answer(let events)? = f.reply else { Issue.record("expected a replay"); return }
        let text = String(decoding: events, as: UTF8.self)
        #expect(text.hasPrefix("data: ") && text.hasSuffix("data: [DONE]\n\n"))
    }

    @Test func anEntryThatCannotBeRepliedIsAMiss() {
        var m = RequestMachine(policy: policy())
        _ = m.start()
        #expect(m.cacheAnswered(.fresh(Array("not an entry".utf8))) == .joinFlight)
        #expect(m.cacheOutcome == .miss)
        var s = RequestMachine(policy: policy())
        _ = s.start()
        #expect(s.cacheAnswered(.stale(StoredAnswer.json(chatAnswer).encoded())) == .joinFlight)
    }

    @Test func uncacheableIsBypass() {
        #expect(RequestMachine(policy: policy(lookup: false, coalesce: false), cacheable: false).cacheOutcome == .bypass)
        #expect(RequestMachine(policy: policy(lookup: false)).cacheOutcome == .bypass)
    }

    @Test func missLeadsWhenNobodyIsInFlight() {
        var m = asking()
        #expect(m.flight(.lead(f1)) == .pickBackend(excluding: [], fallBackTo: nil))
        #expect(m.leadsFlight == f1)
    }

    @Test func theLeadersAnswerGoesToItsFlight() {
        var m = asking()
        _ = m.flight(.lead(f1))
        _ = m.backendChosen(BackendID(0))
        _ = m.upstreamHead(status: 200, contentType: "application/json")
        _ = chatAnswer.withUnsafeBytes { m.upstreamBody($0, clientBlocked: false) }
        let f = RequestMachine.finish(m.upstreamEnd())
        #expect(f?.flight == f1)
        #expect(f?.outcome == .buffered(status: 200, contentType: "application/json", body: chatAnswer))
        #expect(f?.store == .json(chatAnswer))
        #expect(f?.leaveFlight == false)
    }

    @Test func aLeaderThatFailsFailsItsFollowers() {
        var m = asking()
        _ = m.flight(.lead(f1))
        let f = RequestMachine.finish(m.backendChosen(nil))
        guard case .failed(let st, _, _)? = f?.outcome else { Issue.record("expected a failed outcome"); return }
        #expect(st == 503 && f?.flight == f1)
    }

    @Test func aLeaderWhoseClientLeavesAsksWhetherToGoOn() {
        var m = asking()
        _ = m.flight(.lead(f1))
        _ = m.backendChosen(BackendID(0))
        #expect(m.clientClosed() == .leaderLeft)
        #expect(!m.isFinished)
        // Followers remain: it goes on without a client, and its answer still reaches them.
        #expect(m.flight(.continueHeadless) == .none)
        _ = m.upstreamHead(status: 200, contentType: "application/json")
        _ = chatAnswer.withUnsafeBytes { m.upstreamBody($0, clientBlocked: false) }
        let f = RequestMachine.finish(m.upstreamEnd())
        #expect(f?.reply == nil)
        #expect(f?.outcome == .buffered(status: 200, contentType: "application/json", body: chatAnswer))
        #expect(f?.store == .json(chatAnswer))
    }

    @Test func aLeaderWithNobodyFollowingAbortsAndAbandonsItsFlight() {
        var m = asking()
        _ = m.flight(.lead(f1))
        _ = m.backendChosen(BackendID(0))
        _ = m.clientClosed()
        let f = RequestMachine.finish(m.flight(.abort))
        #expect(f == .init(verdict: .noVerdict, flight: f1, outcome: .abandoned))
        #expect(m.termination?.description == "CH")
    }

    @Test func followerGetsTheFlightsAnswer() {
        var m = asking()
        #expect(m.flight(.follow(live: false, recorded: [])) == .none)
        #expect(m.isFollower)
        #expect(chatAnswer.withUnsafeBytes { m.upstreamBody($0, clientBlocked: false) } == .none) // no upstream of its own
        let f = RequestMachine.finish(m.flight(.ended(.answer(.buffered(status: 200, contentType: "application/json", body: chatAnswer)))))
        #expect(f == .init(reply: .answer(replayedAnswer)))
        #expect(m.termination == .normal)
    }

    @Test func followerGetsTheLeadersErrorWithItsRetryAfter() {
        var m = asking()
        _ = m.flight(.follow(live: false, recorded: []))
        let body = EngineError(.rateLimited, "full").jsonBody
        let f = RequestMachine.finish(m.flight(.ended(.answer(.failed(status: 429, body: body, retryAfterSeconds: 3)))))
        #expect(f?.reply == .json(status: 429, body: body, contentType: "application/json", retryAfter: 3))
        #expect(m.status == 429)
    }

    @Test func aPlainFollowerOfAStreamGetsItConvertedOrCallsItself() {
        var events: [UInt8] = []
        for e in [chunkEvent, finalEvent, usageEvent, doneEvent] { events += e }
        let whole = StreamedAnswer(events: events, usageRanges: [(chunkEvent.count + finalEvent.count)..<(chunkEvent.count + finalEvent.count + usageEvent.count)])
        var m = asking()
        _ = m.flight(.follow(live: false, recorded: []))
        guard case .answer(let body)? = RequestMachine.finish(m.flight(.ended(.answer(.streamed(whole)))))?.reply else {
            Issue.record("expected the stream as JSON"); return
        }
        #expect(String(decoding: body, as: UTF8.self).contains("\"chat.completion\""))
        // A stream that was not whole: this follower makes its own call.
        var n = asking()
        _ = n.flight(.follow(live: false, recorded: []))
        #expect(n.flight(.ended(.answer(.streamed(nil)))) == .joinFlight)
        #expect(n.flight(.lead(f1)) == .pickBackend(excluding: [], fallBackTo: nil))
    }

    @Test func aLiveFollowerRelaysTheFlightThenEndsWithIt() {
        var m = asking(policy(stream: true))
        #expect(m.flight(.follow(live: true, recorded: chunkEvent)) == .forwardFlight(writeHead: true))
        #expect(m.relay.clientEvents == chunkEvent)
        #expect(finalEvent.withUnsafeBytes { m.flightEvents($0) } == .forwardFlight(writeHead: false))
        #expect(m.relay.clientEvents.isEmpty) // the final chunk waits for the next event
        #expect(usageEvent.withUnsafeBytes { m.flightEvents($0) } == .forwardFlight(writeHead: false))
        #expect(m.relay.clientEvents == finalEvent) // without the usage chunk it did not ask for
        #expect(RequestMachine.finish(m.flight(.ended(.endLive)))?.reply == .endStream)
    }

    @Test func aLiveFollowerOfABrokenFlightGetsOneErrorEvent() {
        var m = asking(policy(stream: true))
        _ = m.flight(.follow(live: true, recorded: []))
        let body = EngineError(.badGateway, "broke").jsonBody
        let f = RequestMachine.finish(m.flight(.ended(.failLive(errorBody: body))))
        #expect(f?.reply == .lastEvents(RequestMachine.dataEvent(body), close: true))
        #expect(m.status == 200)
    }

    @Test func anAbandonedFlightSendsALiveFollowerAnErrorAndAPlainOneToLookAgain() {
        var live = asking(policy(stream: true))
        _ = live.flight(.follow(live: true, recorded: chunkEvent))
        guard case .lastEvents? = RequestMachine.finish(live.flight(.ended(.answer(.abandoned))))?.reply else {
            Issue.record("expected an SSE error"); return
        }
        var plain = asking()
        _ = plain.flight(.follow(live: false, recorded: []))
        #expect(plain.flight(.ended(.answer(.abandoned))) == .joinFlight)
    }

    @Test func followerThatLeavesLeavesOnlyTheFlight() {
        var m = asking()
        _ = m.flight(.follow(live: false, recorded: []))
        #expect(m.clientClosed() == .finish(.init(leaveFlight: true)))
        #expect(m.termination?.description == "CD")
        #expect(m.flight(.ended(.endLive)) == .none)
    }

    @Test func noCacheControlSkipsLookupButStillCoalesces() {
        var m = RequestMachine(policy: policy(lookup: false))
        #expect(m.start() == .joinFlight)
    }

    @Test func leaderGoesToAdmission() {
        var m = asking(policy(admission: true))
        #expect(m.flight(.lead(f1)) == .requestAdmission)
    }

    @Test func followerWhoseSourceVanishedAsksAgainAndMayLead() {
        var m = asking()
        #expect(m.flight(.follow(live: false, recorded: [])) == .none)
        #expect(m.flight(.rejoin) == .joinFlight)
        #expect(m.flight(.lead(f1)) == .pickBackend(excluding: [], fallBackTo: nil))
        #expect(m.backendChosen(BackendID(0)) == .sendUpstream(BackendID(0), timeout: .seconds(5)))
        // Both attempts are still ours: following did not use one.
        #expect(m.upstreamHead(status: 500, contentType: "application/json") == .retry(after: .milliseconds(10)))
    }

    @Test func exhaustedAttemptsCarryRetryAfter() {
        var m = RequestMachine(policy: policy(lookup: false, coalesce: false))
        _ = m.start()
        _ = m.backendChosen(BackendID(0))
        _ = m.upstreamFailed(.connect)
        _ = m.timerFired(.backoff)
        _ = m.backendChosen(BackendID(0))
        let e = RequestMachine.error(m.upstreamFailed(.connect))
        #expect(e?.status == 502 && e?.retryAfterSeconds == 1)
    }

    @Test func aRequestThatLeavesWhileAskingLeavesTheCoalescer() {
        var m = asking()
        #expect(RequestMachine.finish(m.clientClosed())?.leaveFlight == true)
        #expect(m.flight(.lead(f1)) == .none) // too late
        #expect(m.termination?.description == "CR")
    }
}

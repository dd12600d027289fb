// RequestMachine as a value: event sequences in, actions out, no sockets.
import Testing
@testable import Engine

private let policy = RequestMachine.Policy(maxAttempts: 3, backoff: .milliseconds(500), upstreamTimeout: .seconds(120))
/// The same for a client that asked for a stream (an SSE answer is only valid then).
private let streamPolicy = RequestMachine.Policy(maxAttempts: 3, backoff: .milliseconds(500), upstreamTimeout: .seconds(120), isStream: true)
private let b0 = BackendID(0)
private let b1 = BackendID(1)

@Suite struct RequestMachineTests {
    @Test func streamingHappyPath() {
        var m = RequestMachine(policy: streamPolicy)
        #expect(m.start() == .pickBackend(excluding: []))
        #expect(m.backendChosen(b0) == .sendUpstream(b0, timeout: .seconds(120)))
        #expect(m.upstreamHead(status: 200, isEventStream: true) == .startStream(timeout: .seconds(120)))
        #expect(m.upstreamBody(clientBlocked: false) == .forwardChunk(pauseUpstream: false, timeout: .seconds(120)))
        #expect(m.upstreamBody(clientBlocked: false) == .forwardChunk(pauseUpstream: false, timeout: .seconds(120)))
        #expect(m.upstreamEnd() == .finishStream)
        #expect(m.termination == .normal)
        #expect(m.clientClosed() == .none)
    }

    @Test func plainResponseIsBufferedThenRelayed() {
        var m = RequestMachine(policy: policy)
        _ = m.start()
        _ = m.backendChosen(b0)
        #expect(m.upstreamHead(status: 200, isEventStream: false) == .none)
        #expect(m.upstreamBody(clientBlocked: true) == .bufferBody)
        #expect(m.upstreamEnd() == .respondBuffered(status: 200))
        #expect(m.isFinished)
    }

    @Test func upstream4xxPassesThroughUnchanged() {
        var m = RequestMachine(policy: policy)
        _ = m.start()
        _ = m.backendChosen(b0)
        #expect(m.upstreamHead(status: 404, isEventStream: false) == .none)
        #expect(m.upstreamEnd() == .respondBuffered(status: 404))
    }

    @Test func serverErrorsRetryOnAnotherBackendThenFail() {
        var m = RequestMachine(policy: policy)
        _ = m.start()
        _ = m.backendChosen(b0)
        #expect(m.upstreamHead(status: 500, isEventStream: false) == .retry(after: .milliseconds(500)))
        #expect(m.timerFired(.backoff) == .pickBackend(excluding: [b0]))
        _ = m.backendChosen(b1)
        #expect(m.upstreamFailed(.connect) == .retry(after: .milliseconds(1000)))
        #expect(m.timerFired(.backoff) == .pickBackend(excluding: [b0, b1]))
        _ = m.backendChosen(b0)
        guard case .respondError(let e) = m.upstreamFailed(.connect) else { Issue.record("expected error"); return }
        #expect(e.status == 502)
        #expect(m.termination == Termination(.server, .connect))
    }

    @Test func timeoutBeforeHeadBecomes504WhenAttemptsRunOut() {
        var m = RequestMachine(policy: .init(maxAttempts: 1, backoff: .zero, upstreamTimeout: .seconds(1)))
        _ = m.start()
        _ = m.backendChosen(b0)
        guard case .respondError(let e) = m.timerFired(.upstream) else { Issue.record("expected error"); return }
        #expect(e.status == 504)
        #expect(m.termination?.description == "sH")
    }

    @Test func noBackendIs503() {
        var m = RequestMachine(policy: policy)
        _ = m.start()
        guard case .respondError(let e) = m.backendChosen(nil) else { Issue.record("expected error"); return }
        #expect(e.status == 503)
        #expect(e.retryAfterSeconds != nil)
    }

    @Test func failureMidStreamIsAnErrorEventNotARetry() {
        var m = RequestMachine(policy: streamPolicy)
        _ = m.start()
        _ = m.backendChosen(b0)
        _ = m.upstreamHead(status: 200, isEventStream: true)
        _ = m.upstreamBody(clientBlocked: false)
        guard case .failStream(let e) = m.upstreamFailed(.closed(reused: false)) else { Issue.record("expected failStream"); return }
        #expect(e.status == 502)
        #expect(m.termination?.description == "SD")
        #expect(m.upstreamEnd() == .none)
    }

    @Test func stallMidStreamTimesOut() {
        var m = RequestMachine(policy: streamPolicy)
        _ = m.start()
        _ = m.backendChosen(b0)
        _ = m.upstreamHead(status: 200, isEventStream: true)
        guard case .failStream = m.timerFired(.upstream) else { Issue.record("expected failStream"); return }
        #expect(m.termination?.description == "sD")
    }

    @Test func clientDisconnectAbortsUpstream() {
        var m = RequestMachine(policy: streamPolicy)
        _ = m.start()
        _ = m.backendChosen(b0)
        _ = m.upstreamHead(status: 200, isEventStream: true)
        #expect(m.clientClosed() == .abortUpstream)
        #expect(m.termination?.description == "CD")
        #expect(m.upstreamBody(clientBlocked: false) == .none)
    }

    @Test func slowClientPausesOnceAndResumesOnDrain() {
        var m = RequestMachine(policy: streamPolicy)
        _ = m.start()
        _ = m.backendChosen(b0)
        _ = m.upstreamHead(status: 200, isEventStream: true)
        #expect(m.upstreamBody(clientBlocked: true) == .forwardChunk(pauseUpstream: true, timeout: .seconds(120)))
        #expect(m.upstreamBody(clientBlocked: true) == .forwardChunk(pauseUpstream: false, timeout: .seconds(120)))
        #expect(m.clientDrained() == .resumeUpstream)
        #expect(m.clientDrained() == .none)
    }

    @Test func reusedConnectionRaceRetriesWithoutCountingAnAttempt() {
        var m = RequestMachine(policy: .init(maxAttempts: 1, backoff: .zero, upstreamTimeout: .seconds(1)))
        _ = m.start()
        _ = m.backendChosen(b0)
        #expect(m.upstreamFailed(.closed(reused: true)) == .pickBackend(excluding: []))
        #expect(m.backendChosen(b0) == .sendUpstream(b0, timeout: .seconds(1)))
    }

    @Test func staleTimersAreIgnored() {
        var m = RequestMachine(policy: policy)
        _ = m.start()
        #expect(m.timerFired(.backoff) == .none)
        _ = m.backendChosen(b0)
        #expect(m.timerFired(.backoff) == .none)
    }

    @Test func admissionAdmitsThenSends() {
        var m = RequestMachine(policy: .init(maxAttempts: 1, backoff: .zero, upstreamTimeout: .seconds(1), usesAdmission: true))
        #expect(m.start() == .requestAdmission)
        #expect(m.backendChosen(b0) == .none) // not before admission answers
        #expect(m.admitted(b1) == .sendUpstream(b1, timeout: .seconds(1)))
    }

    @Test func admissionRejectionIs429WithRetryAfterAndNoFallback() {
        var m = RequestMachine(policy: .init(maxAttempts: 1, backoff: .zero, upstreamTimeout: .seconds(1), usesAdmission: true,
                                             fallbackModel: "other", canUseStale: true))
        _ = m.start()
        guard case .respondError(let e) = m.admissionRejected(retryAfterSeconds: 7) else { Issue.record("expected error"); return }
        #expect(e.status == 429)
        #expect(e.retryAfterSeconds == 7)
        #expect(m.termination?.description == "RQ")
    }

    @Test func queuedStreamGetsKeepAlivesThenErrorsAsSSE() {
        var m = RequestMachine(policy: .init(maxAttempts: 1, backoff: .zero, upstreamTimeout: .seconds(1), usesAdmission: true, isStream: true))
        _ = m.start()
        #expect(m.queueKeepAliveDue() == .sendQueuedComment(writeHead: true))
        #expect(m.queueKeepAliveDue() == .sendQueuedComment(writeHead: false))
        guard case .failStream(let e) = m.admissionRejected(retryAfterSeconds: 1) else { Issue.record("expected failStream"); return }
        #expect(e.status == 429)
    }

    @Test func plainQueuedRequestGetsNoKeepAlive() {
        var m = RequestMachine(policy: .init(maxAttempts: 1, backoff: .zero, upstreamTimeout: .seconds(1), usesAdmission: true))
        _ = m.start()
        #expect(m.queueKeepAliveDue() == .none)
        #expect(m.clientClosed() == .leaveQueue)
        #expect(m.termination?.description == "CQ")
    }

    @Test func fallbackChainModelThenStaleThen503() {
        var m = RequestMachine(policy: .init(maxAttempts: 1, backoff: .zero, upstreamTimeout: .seconds(1),
                                             fallbackModel: "small", canUseStale: true))
        _ = m.start()
        #expect(m.backendChosen(nil) == .fallBackToModel("small"))
        #expect(m.usedFallback)
        _ = m.backendChosen(b1)
        #expect(m.upstreamHead(status: 503, isEventStream: false) == .lookupStale)
        guard case .respondError(let e) = m.staleLookedUp(found: false) else { Issue.record("expected error"); return }
        #expect(e.status == 502)
    }

    @Test func staleEntryAnswersWhenEverythingFailed() {
        var m = RequestMachine(policy: .init(maxAttempts: 1, backoff: .zero, upstreamTimeout: .seconds(1), canUseStale: true))
        _ = m.start()
        #expect(m.backendChosen(nil) == .lookupStale)
        #expect(m.staleLookedUp(found: true) == .replayStale)
        #expect(m.termination == .normal)
    }

    @Test func noBackendAtAllWithoutFallbackIs503WithRetryAfter() {
        var m = RequestMachine(policy: .init(maxAttempts: 3, backoff: .zero, upstreamTimeout: .seconds(1), usesAdmission: true))
        _ = m.start()
        guard case .respondError(let e) = m.admissionFoundNoBackend() else { Issue.record("expected error"); return }
        #expect(e.status == 503 && e.retryAfterSeconds != nil)
    }

    /// Seeded random event sequences: the machine ends exactly once, emits nothing after the end,
    /// never sends more attempts than allowed, and every terminal action comes with `finished`.
    @Test(arguments: 0..<200)
    func randomSequencesKeepInvariants(seed: Int) {
        var rng = TestRNG(seed: UInt64(seed))
        let p = RequestMachine.Policy(maxAttempts: 3, backoff: .milliseconds(1), upstreamTimeout: .seconds(1),
                                      usesAdmission: seed % 2 == 0, fallbackModel: seed % 3 == 0 ? "fb" : nil,
                                      canUseStale: seed % 5 < 2, isStream: seed % 7 < 3)
        var m = RequestMachine(policy: p)
        var ended = 0
        var sends = 0
        var a = m.start()
        for step in 0...40 {
            switch a {
            case .sendUpstream: sends += 1
            case .respondBuffered, .finishStream, .respondError, .failStream, .abortUpstream, .leaveQueue, .replayStale:
                ended += 1
                #expect(m.isFinished)
            default: break
            }
            if m.isFinished {
                // Nothing but .none after the end.
                let after = [m.clientClosed(), m.upstreamEnd(), m.timerFired(.upstream), m.upstreamBody(clientBlocked: false),
                             m.upstreamFailed(.connect), m.admitted(b0), m.admissionRejected(retryAfterSeconds: 1),
                             m.queueKeepAliveDue(), m.staleLookedUp(found: true), m.backendChosen(b0)]
                #expect(after.allSatisfy { $0 == .none })
                break
            }
            if step == 40 { break }
            switch rng.next() % 13 {
            case 10: a = m.admitted(BackendID(Int(rng.next() % 3)))
            case 11: a = rng.next() % 2 == 0 ? m.admissionRejected(retryAfterSeconds: 1) : m.queueKeepAliveDue()
            case 12: a = m.staleLookedUp(found: rng.next() % 2 == 0)
            case 0: a = m.backendChosen(rng.next() % 5 == 0 ? nil : BackendID(Int(rng.next() % 3)))
            case 1: a = m.upstreamHead(status: [200, 200, 400, 500, 503][Int(rng.next() % 5)], isEventStream: rng.next() % 2 == 0)
            case 2, 3: a = m.upstreamBody(clientBlocked: rng.next() % 3 == 0)
            case 4: a = m.upstreamEnd()
            case 5: a = m.upstreamFailed([.connect, .closed(reused: false), .closed(reused: true), .malformed][Int(rng.next() % 4)])
            case 6: a = m.timerFired(rng.next() % 2 == 0 ? .upstream : .backoff)
            case 7: a = m.clientDrained()
            case 8: a = rng.next() % 4 == 0 ? m.clientClosed() : .none
            default: a = m.backendChosen(BackendID(0))
            }
        }
        #expect(ended == (m.isFinished ? 1 : 0))
        #expect(sends >= (ended == 1 && m.termination?.cause == .normal ? 1 : 0))
    }
}

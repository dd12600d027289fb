// RequestMachine as a value: event sequences in, actions out, no sockets. The upstream's bytes
// are real vLLM-shaped JSON and SSE, since the machine reads them (whole answer, usage, [DONE]).
import Testing
@testable import Engine

private let policy = RequestMachine.Policy(maxAttempts: 3, backoff: .milliseconds(500), upstreamTimeout: .seconds(120))
/// The same for a client that asked for a stream (an SSE answer is only valid then).
private let streamPolicy = RequestMachine.Policy(maxAttempts: 3, backoff: .milliseconds(500), upstreamTimeout: .seconds(120), isStream: true)
private let b0 = BackendID(0)
private let b1 = BackendID(1)
private let sse = "text/event-stream; charset=utf-8"
private let json = "application/json"

let chatAnswer = Array(#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"total_tokens":5,"completion_tokens":2}}"#.utf8)
let chunkEvent = Array((#"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"logprobs":null,"finish_reason":null}]}"# + "\n\n").utf8)
let finalEvent = Array((#"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}"# + "\n\n").utf8)
let usageEvent = Array((#"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"total_tokens":5,"completion_tokens":2}}"# + "\n\n").utf8)
let doneEvent = Array("data: [DONE]\n\n".utf8)
/// vLLM's usage chunk: with include_usage, `system_fingerprint` moves here from the final chunk.
let fingerprintedUsageEvent = Array((#"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"total_tokens":5,"completion_tokens":2},"system_fingerprint":"vllm-0.32.0-x"}"# + "\n\n").utf8)
/// The final chunk as vLLM sends it to a client that did not ask for usage.
let fingerprintedFinalEvent = Array((#"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"system_fingerprint":"vllm-0.32.0-x"}"# + "\n\n").utf8)

extension RequestMachine {
    /// Feeds `bytes` as one upstream read.
    mutating func read(_ bytes: [UInt8], blocked: Bool = false) -> Action {
        bytes.withUnsafeBytes { upstreamBody($0, clientBlocked: blocked) }
    }

    mutating func head(_ status: Int, _ contentType: String) -> Action {
        upstreamHead(status: status, contentType: contentType)
    }

    /// The Finish of `a`, or nil.
    static func finish(_ a: Action) -> Finish? {
        if case .finish(let f) = a { return f }
        return nil
    }

    /// The error the client is sent by `a` (JSON, or the SSE error event's status).
    static func error(_ a: Action) -> EngineError? {
        if case .error(let e)? = finish(a)?.reply { return e }
        return nil
    }
}

@Suite struct RequestMachineTests {
    @Test func streamingHappyPathRelaysWholeEventsAndEnds() {
        var m = RequestMachine(policy: streamPolicy)
        #expect(m.start() == .pickBackend(excluding: [], fallBackTo: nil))
        #expect(m.backendChosen(b0) == .sendUpstream(b0, timeout: .seconds(120)))
        #expect(m.head(200, sse) == .startStream(timeout: .seconds(120), writeHead: true))
        // Half an event relays nothing yet; its end relays it whole.
        #expect(m.read(Array(chunkEvent[0..<20])) == .forward(.init(rearm: true)))
        #expect(m.relay.clientEvents.isEmpty)
        #expect(m.read(Array(chunkEvent[20...]) + finalEvent) == .forward(.init(rearm: true)))
        // The final chunk waits for the usage chunk the Engine asked for: the client, who did not
        // ask, gets it without the usage chunk and with the fingerprint vLLM moved there.
        #expect(m.relay.clientEvents == chunkEvent)
        _ = m.read(fingerprintedUsageEvent + doneEvent)
        #expect(m.relay.clientEvents == fingerprintedFinalEvent + doneEvent)
        #expect(m.relay.events == fingerprintedUsageEvent + doneEvent) // followers and the cache get vLLM's bytes
        #expect(m.usage == UpstreamJSON.Usage(prompt: 3, completion: 2))
        let f = RequestMachine.finish(m.upstreamEnd())
        #expect(f == .init(reuseUpstream: true, verdict: .success, reply: .endStream))
        #expect(m.termination == .normal)
        #expect(m.clientClosed() == .none)
    }

    @Test func plainResponseIsBufferedThenRelayed() {
        var m = RequestMachine(policy: policy)
        _ = m.start()
        _ = m.backendChosen(b0)
        #expect(m.head(200, json) == .none)
        #expect(m.read(Array(chatAnswer[0..<30]), blocked: true) == .none)
        #expect(m.read(Array(chatAnswer[30...])) == .none)
        let f = RequestMachine.finish(m.upstreamEnd())
        #expect(f?.reply == .json(status: 200, body: chatAnswer, contentType: json, retryAfter: nil))
        #expect(f?.reuseUpstream == true && f?.verdict == .success)
        #expect(f?.store == nil) // the policy stores nothing
        #expect(m.usage == UpstreamJSON.Usage(prompt: 3, completion: 2))
        #expect(m.status == 200 && m.isFinished)
    }

    @Test func aWholeAnswerIsStoredOnlyWhenThePolicySaysSo() {
        var p = policy
        p.storesAnswer = true
        var m = RequestMachine(policy: p)
        _ = m.start()
        _ = m.backendChosen(b0)
        _ = m.head(200, json)
        _ = m.read(chatAnswer)
        let stored = RequestMachine.finish(m.upstreamEnd())?.store
        #expect(stored == .json(chatAnswer))
        // Its id and created were found by the parse that checked it: the entry the store parsing
        // for them would write.
        if case .json(_, let spans)? = stored {
            #expect(spans != nil && spans == chatAnswer.withUnsafeBytes { ReplyStamp.spans(ofJSON: $0) })
        }
        #expect(stored?.encodedHead() == StoredAnswer.json(chatAnswer).encodedHead())

        var sp = streamPolicy
        sp.storesAnswer = true
        var s = RequestMachine(policy: sp)
        _ = s.start()
        _ = s.backendChosen(b0)
        _ = s.head(200, sse)
        _ = s.read(chunkEvent + finalEvent + doneEvent)
        guard case .stream(let a)? = RequestMachine.finish(s.upstreamEnd())?.store else { Issue.record("expected a stored stream"); return }
        #expect(a.events == chunkEvent + finalEvent + doneEvent)
    }

    @Test func anUnfinishedStreamIsNotStoredEvenWithDone() {
        var sp = streamPolicy
        sp.storesAnswer = true
        var s = RequestMachine(policy: sp)
        _ = s.start()
        _ = s.backendChosen(b0)
        _ = s.head(200, sse)
        _ = s.read(chunkEvent + doneEvent) // no finish_reason: not a whole answer
        let f = RequestMachine.finish(s.upstreamEnd())
        #expect(f?.reply == .endStream)
        #expect(f?.store == nil)
    }

    @Test func upstream4xxPassesThroughUnchanged() {
        var m = RequestMachine(policy: policy)
        _ = m.start()
        _ = m.backendChosen(b0)
        let body = Array(#"{"object":"error","message":"bad","type":"BadRequestError","param":null,"code":400}"#.utf8)
        #expect(m.head(404, json) == .none)
        _ = m.read(body)
        let f = RequestMachine.finish(m.upstreamEnd())
        #expect(f?.reply == .json(status: 404, body: body, contentType: json, retryAfter: nil))
        #expect(f?.verdict == .success) // a client's error is not the backend's
    }

    @Test func serverErrorsRetryOnAnotherBackendThenFail() {
        var m = RequestMachine(policy: policy)
        _ = m.start()
        _ = m.backendChosen(b0)
        #expect(m.head(500, json) == .retry(after: .milliseconds(500)))
        #expect(m.timerFired(.backoff) == .pickBackend(excluding: [b0], fallBackTo: nil))
        _ = m.backendChosen(b1)
        #expect(m.upstreamFailed(.connect) == .retry(after: .milliseconds(1000)))
        #expect(m.timerFired(.backoff) == .pickBackend(excluding: [b0, b1], fallBackTo: nil))
        _ = m.backendChosen(b0)
        let a = m.upstreamFailed(.connect)
        #expect(RequestMachine.error(a)?.status == 502)
        #expect(RequestMachine.finish(a)?.verdict == .failure)
        #expect(m.termination == Termination(.server, .connect))
        #expect(m.status == 502)
    }

    @Test func timeoutBeforeHeadBecomes504WhenAttemptsRunOut() {
        var m = RequestMachine(policy: .init(maxAttempts: 1, backoff: .zero, upstreamTimeout: .seconds(1)))
        _ = m.start()
        _ = m.backendChosen(b0)
        #expect(RequestMachine.error(m.timerFired(.upstream))?.status == 504)
        #expect(m.termination?.description == "sH")
    }

    @Test func noBackendIs503() {
        var m = RequestMachine(policy: policy)
        _ = m.start()
        let e = RequestMachine.error(m.backendChosen(nil))
        #expect(e?.status == 503)
        #expect(e?.retryAfterSeconds != nil)
    }

    @Test func failureMidStreamIsAnErrorEventNotARetry() {
        var m = RequestMachine(policy: streamPolicy)
        _ = m.start()
        _ = m.backendChosen(b0)
        _ = m.head(200, sse)
        _ = m.read(chunkEvent)
        let f = RequestMachine.finish(m.upstreamFailed(.closed(reused: false)))
        guard case .lastEvents(let bytes, close: true)? = f?.reply else { Issue.record("expected an SSE error event"); return }
        #expect(String(decoding: bytes, as: UTF8.self).hasPrefix("data: {\"error\""))
        #expect(f?.verdict == .failure)
        #expect(m.termination?.description == "SD")
        #expect(m.upstreamEnd() == .none)
    }

    @Test func streamEndingWithoutDoneIsAFailureEvent() {
        var m = RequestMachine(policy: streamPolicy)
        _ = m.start()
        _ = m.backendChosen(b0)
        _ = m.head(200, sse)
        _ = m.read(chunkEvent + finalEvent)
        guard case .lastEvents(_, close: true)? = RequestMachine.finish(m.upstreamEnd())?.reply else { Issue.record("expected an SSE error"); return }
        #expect(m.termination?.description == "SD")
    }

    @Test func afterDoneAFailureOrStallIsACompleteEnd() {
        for fault in 0..<2 {
            var m = RequestMachine(policy: streamPolicy)
            _ = m.start()
            _ = m.backendChosen(b0)
            _ = m.head(200, sse)
            _ = m.read(chunkEvent + finalEvent + doneEvent)
            let a = fault == 0 ? m.upstreamFailed(.closed(reused: false)) : m.timerFired(.upstream)
            let f = RequestMachine.finish(a)
            #expect(f?.reply == .endStream)
            #expect(f?.reuseUpstream == false) // its response never ended: not reusable
            #expect(m.termination == .normal)
        }
    }

    @Test func anEventThatCannotBeRelayedBreaksTheStream() {
        var m = RequestMachine(policy: streamPolicy)
        _ = m.start()
        _ = m.backendChosen(b0)
        _ = m.head(200, sse)
        let a = m.read(chunkEvent + Array("data: {not json\n\n".utf8))
        #expect(a == .forward(.init(rearm: true, broken: true)))
        #expect(m.relay.clientEvents == chunkEvent) // the events before it still go out
        guard case .lastEvents? = RequestMachine.finish(m.upstreamFailed(.invalidEvent))?.reply else { Issue.record("expected an SSE error"); return }
        #expect(m.termination?.description == "SD")
    }

    @Test func stallMidStreamTimesOut() {
        var m = RequestMachine(policy: streamPolicy)
        _ = m.start()
        _ = m.backendChosen(b0)
        _ = m.head(200, sse)
        guard case .lastEvents? = RequestMachine.finish(m.timerFired(.upstream))?.reply else { Issue.record("expected an SSE error"); return }
        #expect(m.termination?.description == "sD")
    }

    @Test func clientDisconnectAbortsUpstreamWithoutVerdict() {
        var m = RequestMachine(policy: streamPolicy)
        _ = m.start()
        _ = m.backendChosen(b0)
        _ = m.head(200, sse)
        #expect(m.clientClosed() == .finish(.init(reuseUpstream: false, verdict: .noVerdict)))
        #expect(m.termination?.description == "CD")
        #expect(m.read(chunkEvent) == .none)
    }

    @Test func slowClientPausesOnceAndResumesOnDrain() {
        var m = RequestMachine(policy: streamPolicy)
        _ = m.start()
        _ = m.backendChosen(b0)
        _ = m.head(200, sse)
        #expect(m.read(chunkEvent, blocked: true) == .forward(.init(pause: true)))
        #expect(m.read(chunkEvent, blocked: true) == .forward(.init())) // paused: no deadline
        #expect(m.clientDrained() == .resumeUpstream(timeout: .seconds(120)))
        #expect(m.clientDrained() == .none)
        #expect(m.read(chunkEvent) == .forward(.init(rearm: true)))
    }

    @Test func reusedConnectionRaceRetriesWithoutCountingAnAttempt() {
        var m = RequestMachine(policy: .init(maxAttempts: 1, backoff: .zero, upstreamTimeout: .seconds(1)))
        _ = m.start()
        _ = m.backendChosen(b0)
        #expect(m.upstreamFailed(.closed(reused: true)) == .pickBackend(excluding: [], fallBackTo: nil))
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
        let e = RequestMachine.error(m.admissionRejected(retryAfterSeconds: 7))
        #expect(e?.status == 429)
        #expect(e?.retryAfterSeconds == 7)
        #expect(m.termination?.description == "RQ")
    }

    @Test func queuedStreamGetsKeepAlivesThenErrorsAsSSE() {
        var m = RequestMachine(policy: .init(maxAttempts: 1, backoff: .zero, upstreamTimeout: .seconds(1), usesAdmission: true, isStream: true))
        _ = m.start()
        #expect(m.queueKeepAliveDue() == .sendQueuedComment(writeHead: true))
        #expect(m.queueKeepAliveDue() == .sendQueuedComment(writeHead: false))
        guard case .lastEvents(let bytes, close: true)? = RequestMachine.finish(m.admissionRejected(retryAfterSeconds: 1))?.reply else {
            Issue.record("expected an SSE error"); return
        }
        #expect(String(decoding: bytes, as: UTF8.self).contains("capacity"))
        #expect(m.status == 200)
    }

    @Test func queuedStreamThatGetsAPlainAnswerEndsWithItAsTheLastEvent() {
        var m = RequestMachine(policy: .init(maxAttempts: 1, backoff: .zero, upstreamTimeout: .seconds(1), usesAdmission: true, isStream: true))
        _ = m.start()
        _ = m.queueKeepAliveDue()
        _ = m.admitted(b0)
        // The stream's head went out already: no second head.
        #expect(m.head(200, sse) == .startStream(timeout: .seconds(1), writeHead: false))
    }

    @Test func plainQueuedRequestGetsNoKeepAlive() {
        var m = RequestMachine(policy: .init(maxAttempts: 1, backoff: .zero, upstreamTimeout: .seconds(1), usesAdmission: true))
        _ = m.start()
        #expect(m.queueKeepAliveDue() == .none)
        #expect(RequestMachine.finish(m.clientClosed())?.leaveQueue == true)
        #expect(m.termination?.description == "CQ")
    }

    @Test func fallbackChainModelThenStaleThen502() {
        var m = RequestMachine(policy: .init(maxAttempts: 1, backoff: .zero, upstreamTimeout: .seconds(1),
                                             fallbackModel: "small", canUseStale: true))
        _ = m.start()
        #expect(m.backendChosen(nil) == .pickBackend(excluding: [], fallBackTo: "small"))
        #expect(m.usedFallback)
        _ = m.backendChosen(b1)
        #expect(m.head(503, json) == .lookupStale)
        #expect(RequestMachine.error(m.staleAnswered(.miss))?.status == 502)
    }

    @Test func aFallbackAnswerIsNeverStored() {
        var p = RequestMachine.Policy(maxAttempts: 1, backoff: .zero, upstreamTimeout: .seconds(1), fallbackModel: "small")
        p.storesAnswer = true
        var m = RequestMachine(policy: p)
        _ = m.start()
        _ = m.backendChosen(nil)
        _ = m.backendChosen(b1)
        _ = m.head(200, json)
        _ = m.read(chatAnswer)
        let f = RequestMachine.finish(m.upstreamEnd())
        #expect(f?.reply == .json(status: 200, body: chatAnswer, contentType: json, retryAfter: nil))
        #expect(f?.store == nil)
    }

    @Test func staleEntryAnswersWhenEverythingFailed() {
        var p = RequestMachine.Policy(maxAttempts: 1, backoff: .zero, upstreamTimeout: .seconds(1), canUseStale: true)
        p.stamp = ReplyStamp(kind: .chat, requestId: "stale-1", created: 42)
        var m = RequestMachine(policy: p)
        _ = m.start()
        #expect(m.backendChosen(nil) == .lookupStale)
        let f = RequestMachine.finish(m.staleAnswered(.stale(StoredAnswer.json(chatAnswer).encoded())))
        #expect(f?.reply == .answer(p.stamp.stamped(json: chatAnswer)))
        #expect(m.cacheOutcome == .stale)
        #expect(m.termination == .normal)
    }

    @Test func noBackendAtAllWithoutFallbackIs503WithRetryAfter() {
        var m = RequestMachine(policy: .init(maxAttempts: 3, backoff: .zero, upstreamTimeout: .seconds(1), usesAdmission: true))
        _ = m.start()
        let e = RequestMachine.error(m.admissionFoundNoBackend())
        #expect(e?.status == 503 && e?.retryAfterSeconds != nil)
    }

    /// Seeded random event sequences: the machine ends exactly once, emits nothing after the end,
    /// never sends more attempts than allowed, and every finish comes with `finished`.
    @Test(arguments: 0..<200)
    func randomSequencesKeepInvariants(seed: Int) {
        var rng = TestRNG(seed: UInt64(seed))
        var p = RequestMachine.Policy(maxAttempts: 3, backoff: .milliseconds(1), upstreamTimeout: .seconds(1),
                                      usesAdmission: seed % 2 == 0, fallbackModel: seed % 3 == 0 ? "fb" : nil,
                                      canUseStale: seed % 5 < 2, isStream: seed % 7 < 3)
        p.storesAnswer = seed % 4 == 0
        var m = RequestMachine(policy: p)
        var ended = 0
        var sends = 0
        var a = m.start()
        let reads = [chunkEvent, finalEvent, doneEvent, chatAnswer, Array("garbage\n\n".utf8)]
        for step in 0...40 {
            switch a {
            case .sendUpstream: sends += 1
            case .finish(let f):
                ended += 1
                #expect(m.isFinished)
                #expect(f.store == nil || m.termination == .normal)
            default: break
            }
            if m.isFinished {
                // Nothing but .none after the end.
                let after = [m.clientClosed(), m.upstreamEnd(), m.timerFired(.upstream), m.read(chunkEvent),
                             m.upstreamFailed(.connect), m.admitted(b0), m.admissionRejected(retryAfterSeconds: 1),
                             m.queueKeepAliveDue(), m.staleAnswered(.miss), m.backendChosen(b0)]
                #expect(after.allSatisfy { $0 == .none })
                break
            }
            if step == 40 { break }
            switch rng.next() % 13 {
            case 10: a = m.admitted(BackendID(Int(rng.next() % 3)))
            case 11: a = rng.next() % 2 == 0 ? m.admissionRejected(retryAfterSeconds: 1) : m.queueKeepAliveDue()
            case 12: a = m.staleAnswered(rng.next() % 2 == 0 ? .stale(StoredAnswer.json(chatAnswer).encoded()) : .miss)
            case 0: a = m.backendChosen(rng.next() % 5 == 0 ? nil : BackendID(Int(rng.next() % 3)))
            case 1: a = m.head([200, 200, 400, 500, 503][Int(rng.next() % 5)], rng.next() % 2 == 0 ? sse : json)
            case 2, 3: a = m.read(reads[Int(rng.next() % UInt64(reads.count))], blocked: rng.next() % 3 == 0)
            case 4: a = m.upstreamEnd()
            case 5: a = m.upstreamFailed([.connect, .closed(reused: false), .closed(reused: true), .malformed, .invalidEvent][Int(rng.next() % 5)])
            case 6: a = m.timerFired(rng.next() % 2 == 0 ? .upstream : .backoff)
            case 7: a = m.clientDrained()
            case 8: a = rng.next() % 4 == 0 ? m.clientClosed() : .none
            default: a = m.backendChosen(BackendID(0))
            }
        }
        #expect(ended == (m.isFinished ? 1 : 0))
        #expect(sends <= 6) // 3 attempts, twice with the fallback model
    }
}

/// The untrusted upstream (issue 10): a 2xx that is not the endpoint's answer, or an answer in the
/// wrong form, is the backend's failure: retried, then a 502; never relayed as a success.
@Suite struct RequestMachineUpstreamShapeTests {
    private func sent(stream: Bool) -> RequestMachine {
        var p = RequestMachine.Policy(maxAttempts: 2, backoff: .milliseconds(10), upstreamTimeout: .seconds(5), isStream: stream)
        p.storesAnswer = true
        var m = RequestMachine(policy: p)
        _ = m.start()
        _ = m.backendChosen(BackendID(0))
        return m
    }

    @Test func a200ThatIsNotAnAnswerIsRetriedThenA502() {
        var m = sent(stream: false)
        #expect(m.head(200, json) == .none)
        _ = m.read(Array("<html>oops</html>".utf8))
        #expect(m.upstreamEnd() == .retry(after: .milliseconds(10)))
        _ = m.timerFired(.backoff)
        _ = m.backendChosen(BackendID(1))
        _ = m.head(200, json)
        _ = m.read(Array(#"{"object":"chat.completion","choices":"no"}"#.utf8))
        let a = m.upstreamEnd()
        #expect(RequestMachine.error(a)?.status == 502)
        #expect(RequestMachine.finish(a)?.store == nil)
    }

    @Test func aCompletionIsNotAChatAnswer() {
        var m = sent(stream: false)
        _ = m.head(200, json)
        _ = m.read(Array(#"{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"hi","finish_reason":"stop"}]}"#.utf8))
        #expect(m.upstreamEnd() == .retry(after: .milliseconds(10)))
    }

    @Test func otherSuccessStatusesAreNotAnswers() {
        for st in [201, 204, 206] {
            var m = sent(stream: false)
            _ = m.head(st, json)
            _ = m.read(chatAnswer)
            #expect(m.upstreamEnd() == .retry(after: .milliseconds(10)), "\(st)")
        }
    }

    @Test func theWrongFormIsAFailure() {
        var plain = sent(stream: false)
        #expect(plain.head(200, sse) == .retry(after: .milliseconds(10)))
        var stream = sent(stream: true)
        #expect(stream.head(200, json) == .retry(after: .milliseconds(10)))
        var ok = sent(stream: true)
        #expect(ok.head(200, sse) == .startStream(timeout: .seconds(5), writeHead: true))
    }

    @Test func aStreamAfterARetryIsStoredWhole() {
        var r = sent(stream: true)
        _ = r.upstreamFailed(.connect)
        _ = r.timerFired(.backoff)
        _ = r.backendChosen(BackendID(1))
        _ = r.head(200, sse)
        _ = r.read(chunkEvent + finalEvent + doneEvent)
        guard case .stream(let a)? = RequestMachine.finish(r.upstreamEnd())?.store else { Issue.record("expected a store"); return }
        #expect(a.events == chunkEvent + finalEvent + doneEvent)
    }
}

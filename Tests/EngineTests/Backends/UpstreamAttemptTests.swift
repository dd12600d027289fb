// UpstreamAttempt as a value: the machine's names for a connection's failures and heads, and an
// attempt's bookkeeping (breaker permit, counts, routing reason) without sending anything.
import Reactor
import Testing
@testable import Engine

private final class NoDelegate: HTTPClientConnectionDelegate {
    func upstream(_ c: HTTPClientConnection, didReceiveHead status: Int, headers: HTTPHeaders) {}
    func upstream(_ c: HTTPClientConnection, didReceiveBody bytes: UnsafeRawBufferPointer) {}
    func upstreamDidFinish(_ c: HTTPClientConnection) {}
    func upstream(_ c: HTTPClientConnection, didFail failure: HTTPClientFailure) {}
}

/// One backend behind a threshold-1 breaker (on a port nothing listens on: nothing is sent) and a
/// chat request for it.
private func backendAndRequest(_ loop: Loop, cooldown: Duration) throws -> (Backend, OpenAIRequest) {
    let b = Backend(id: BackendID(0), url: "http://b0:8000", endpoint: Endpoint(host: "127.0.0.1", port: 9)!, loop: loop,
                    apiKey: nil, weight: 1, models: nil, breaker: CircuitBreaker(threshold: 1, cooldown: cooldown))
    guard case .success(let req) = OpenAIRequest.parse(kind: .chat, body: Array(#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#.utf8)) else {
        throw ParseFailed()
    }
    return (b, req)
}

private struct ParseFailed: Error {}

@Suite struct UpstreamAttemptTests {
    @Test func aBackendsSessionHeaderTailNamesItForEachOutcome() throws {
        let (b, _) = try backendAndRequest(Loop(), cooldown: .seconds(1))
        for o in CacheOutcome.allCases {
            #expect(b.sessionHeaderTail(o) == SessionHeaders.tail(cache: o.rawValue, backendURL: "http://b0:8000"))
            #expect(b.sessionHeaderTail(o).items == [.init("x-cache", o.rawValue), .init("x-routed-backend", "http://b0:8000")])
        }
    }

    @Test func failuresByName() {
        #expect(UpstreamAttempt.failure(.connectFailed, exchangesCompleted: 3) == .connect)
        #expect(UpstreamAttempt.failure(.malformed, exchangesCompleted: 0) == .malformed)
        // A keep-alive race: a reused connection closed before this exchange's head.
        #expect(UpstreamAttempt.failure(.closed(receivedHead: false), exchangesCompleted: 1) == .closed(reused: true))
        #expect(UpstreamAttempt.failure(.closed(receivedHead: true), exchangesCompleted: 1) == .closed(reused: false))
        #expect(UpstreamAttempt.failure(.closed(receivedHead: false), exchangesCompleted: 0) == .closed(reused: false))
    }

    @Test func headEvents() {
        func head(_ status: Int, _ h: HTTPHeaders, _ length: Int?) -> (Int, String?, Int?)? {
            guard case .upstreamHead(let s, let ct, let cl) = UpstreamAttempt.headEvent(status: status, headers: h, contentLength: length)
            else { return nil }
            return (s, ct, cl)
        }
        var json = HTTPHeaders()
        json.add("content-type", "application/json")
        json.add("content-length", "12")
        #expect(head(200, json, 12)! == (200, "application/json", 12))
        var sse = HTTPHeaders()
        sse.add("content-type", "text/event-stream; charset=utf-8")
        #expect(head(503, sse, nil)! == (503, "text/event-stream; charset=utf-8", nil))
        #expect(head(204, HTTPHeaders(), nil)! == (204, nil, nil))
    }

    @Test func anAttemptHoldsItsPermitAndCountsUntilItsVerdict() throws {
        let loop = Loop()
        let (b, req) = try backendAndRequest(loop, cooldown: .seconds(60))
        var a = UpstreamAttempt()
        let none = a.end(.failure, now: 1)
        let released = a.release()
        #expect(none == nil && !released) // nothing open
        let d = NoDelegate()
        let started = a.start(b, routing: nil, req, model: "m", delegate: d, now: 1)
        let c = try #require(started)
        #expect(a.connection === c && c.delegate === d && a.backend === b)
        #expect(b.inFlight == 1 && b.requestsSent == 1)
        // A failure opens the threshold-1 breaker: its backend comes back, once.
        let opened = a.end(.failure, now: 2)
        let again = a.end(.failure, now: 3)
        #expect(opened === b && again == nil)
        #expect(b.inFlight == 0)
        a.close()
        #expect(a.connection == nil && c.delegate == nil)
        // Open breaker: refused, nothing counted, but the backend is the last one asked.
        let refused = a.start(b, routing: nil, req, model: "m", delegate: d, now: 4)
        #expect(refused == nil)
        #expect(b.requestsSent == 1 && b.inFlight == 0 && a.backend === b && a.connection == nil)
    }

    /// The keep-alive race: a reused connection closed before the head, and the machine retries
    /// at once, with no verdict on the first attempt. Starting the retry ends that attempt without
    /// one: the in-flight count does not leak, and a half-open breaker's single probe permit is
    /// handed on instead of staying out for good (the backend refused forever).
    @Test func aRetryWithoutAVerdictReleasesTheFirstAttempt() throws {
        let loop = Loop()
        let (b, req) = try backendAndRequest(loop, cooldown: .nanoseconds(10))
        let d = NoDelegate()
        var a = UpstreamAttempt()
        let first = a.start(b, routing: nil, req, model: "m", delegate: d, now: 1)
        #expect(first != nil)
        let opened = a.end(.failure, now: 2)
        #expect(opened === b)  // threshold 1: open
        a.close()
        // After the cooldown the next attempt is the half-open probe...
        let probe = a.start(b, routing: nil, req, model: "m", delegate: d, now: 100)
        #expect(probe != nil && b.inFlight == 1)
        a.close()
        // ...and its keep-alive retry gets the probe again, counted once.
        let retry = a.start(b, routing: nil, req, model: "m", delegate: d, now: 101)
        #expect(retry != nil && b.inFlight == 1 && b.requestsSent == 3)
        // The retry's success closes the breaker: the backend takes traffic again.
        let closed = a.end(.success, now: 102)
        #expect(closed === b && b.inFlight == 0)
        a.close()
        var other = UpstreamAttempt()
        let next = other.start(b, routing: nil, req, model: "m", delegate: d, now: 103)
        #expect(next != nil)
        other.close()
    }

    /// Three backends weighted 3:2:1, the last serving another model.
    private func weightedSet(_ loop: Loop) -> BackendSet {
        BackendSet((0..<3).map { i in
            Backend(id: BackendID(i), url: "http://b\(i):8000", endpoint: Endpoint(host: "127.0.0.1", port: 9)!, loop: loop,
                    apiKey: nil, weight: 3 - i, models: i == 2 ? ["other"] : ["m"],
                    breaker: CircuitBreaker(threshold: 1, cooldown: .seconds(1)))
        })
    }

    /// `candidates` refills one list in place: a list a caller still holds (a queued request's)
    /// keeps what it was given when the next call refills.
    @Test func candidatesHeldAcrossCallsKeepTheirOrder() {
        let set = weightedSet(Loop())
        var held: [[BackendID]] = []
        for _ in 0..<6 { held.append(set.candidates(model: "m", now: 0)) }
        // Smooth weighted round-robin over weights 3 and 2: a b a b a, then a again.
        let firsts = [0, 1, 0, 1, 0, 0].map(BackendID.init)
        for (list, first) in zip(held, firsts) {
            #expect(list == [first, BackendID(first.index == 0 ? 1 : 0)])
        }
        #expect(set.candidates(model: "none", now: 0).isEmpty)
        // A list let go of is refilled (and reads as its own call's).
        for _ in 0..<4 { _ = set.candidates(model: "other", now: 0) }
        #expect(set.candidates(model: "other", now: 0) == [BackendID(2)])
    }

    /// `routeFirst` (round-robin, no list) picks what `route`'s first would: the same selector
    /// rounds, with and without tried backends excluded.
    @Test func routeFirstPicksRoutesFirst() throws {
        let loop = Loop()
        let a = weightedSet(loop), b = weightedSet(loop)
        let (_, req) = try backendAndRequest(loop, cooldown: .seconds(1))
        var ua = UpstreamAttempt(), ub = UpstreamAttempt()
        for i in 0..<12 {
            let excluding = i % 3 == 0 ? [] : [BackendID(i % 2)]
            let first = ua.routeFirst(a, req, model: "m", excluding: excluding, now: 0)
            #expect(first != nil)
            #expect(first == ub.route(b, req, model: "m", excluding: excluding, now: 0).first)
        }
        #expect(ua.routeFirst(a, req, model: "none", now: 0) == nil)
    }

    /// `isKnown` remembers the last model it found served until some backend's discovered list
    /// changes: a model dropped from every list is no longer known, one added is.
    @Test func isKnownFollowsDiscoveredModelLists() {
        let loop = Loop()
        let set = BackendSet((0..<2).map { i in
            Backend(id: BackendID(i), url: "http://b\(i):8000", endpoint: Endpoint(host: "127.0.0.1", port: 9)!, loop: loop,
                    apiKey: nil, weight: 1, models: nil, breaker: CircuitBreaker(threshold: 1, cooldown: .seconds(1)))
        })
        #expect(set.isKnown("a") == nil)
        set.all[1].discoveredModels = ["a"]
        #expect(set.isKnown("a") == true)
        #expect(set.isKnown("a") == true)
        #expect(set.isKnown("b") == nil)
        set.all[0].discoveredModels = ["b"]
        #expect(set.isKnown("a") == true)
        #expect(set.isKnown("b") == true)
        set.all[1].discoveredModels = ["c"]
        #expect(set.isKnown("a") == false)
        #expect(set.isKnown("b") == true)
        set.all[0].discoveredModels = ["c"]
        #expect(set.isKnown("b") == false)
        set.all[1].discoveredModels = ["a", "c"]
        #expect(set.isKnown("a") == true)
    }
}

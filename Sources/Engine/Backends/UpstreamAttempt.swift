// UpstreamAttempt: one request's exchanges with its backends, one attempt at a time, held inline
// by its RequestSession (a struct: nothing allocated per request). Owns the pooled connection while
// an exchange runs (back to the backend's pool when the answer ended cleanly, else closed) and the
// circuit breaker's permit until the attempt's verdict. Remembers the last backend asked (the one
// that answered: headers, metrics, access line) and why routing put it first. The connection's
// delegate is the session, which turns its callbacks into RequestMachine events.
import Reactor

struct UpstreamAttempt {
    /// The connection of the exchange under way; nil between exchanges.
    private(set) var connection: HTTPClientConnection?
    /// The backend of the last attempt (nil: none was made).
    private(set) var backend: Backend?
    /// The attempt whose breaker verdict is still owed.
    private var open: (backend: Backend, permit: CircuitBreaker.Permit)?
    /// Why routing put the chosen backend first (prefix_aware), counted when the request is sent.
    private var routeReason: RoutingScorer.Reason = .roundRobin
    /// Exact mode: the KV index's overlap per backend at that decision (for the hit ratio).
    private var routeExact: [BackendID: Double]?

    /// The eligible backends in routing.policy's order (noting why the first is first).
    mutating func route(_ backends: BackendSet, _ request: OpenAIRequest, model: String?, excluding: [BackendID] = [],
                        now: UInt64) -> [BackendID] {
        let r = backends.routedCandidates(model: model, chunks: request.promptChunks, tokenIDs: request.promptTokenIDs,
                                          excluding: excluding, now: now)
        routeReason = r.reason
        routeExact = r.exact
        return r.order
    }

    /// `route`'s first backend, without the list when routing.policy has no scorer: the selector
    /// picks it as `candidates` picks its first (one round, the same state change), and the rest of
    /// that list, an array allocated per request, was never read here (no admission, no retry yet).
    mutating func routeFirst(_ backends: BackendSet, _ request: OpenAIRequest, model: String?,
                             excluding: [BackendID] = [], now: UInt64) -> BackendID? {
        guard backends.routing != nil else {
            routeReason = .roundRobin
            routeExact = nil
            return backends.pick(model: model, excluding: excluding, now: now)
        }
        return route(backends, request, model: model, excluding: excluding, now: now).first
    }

    /// Starts an attempt on `b`: its breaker's permit, its counts, a pooled connection that reports
    /// to `delegate` (returned, for `send`). Nil when the breaker refused: its half-open probe went
    /// out since `b` was chosen (e.g. while the request was queued); not this backend, and not a
    /// failure of it.
    mutating func start(_ b: Backend, routing: BackendRouting?, _ request: OpenAIRequest, model: String?,
                        delegate: any HTTPClientConnectionDelegate, now: UInt64) -> HTTPClientConnection? {
        // One attempt at a time: one still open ends here without a verdict. That is the keep-alive
        // race (RequestMachine.upstreamFailed retries at once, not the backend's fault): its
        // in-flight count goes back, and a half-open probe's permit is released for this attempt
        // instead of holding the breaker half-open with its probe "out" for good.
        _ = end(.noVerdict, now: now)
        backend = b
        let permit = b.breaker.acquire(now: now)
        guard permit.isGranted else { return nil }
        open = (b, permit)
        b.requestsSent += 1
        b.inFlight += 1
        routing?.sent(request.promptChunks, model: model, tokenCount: request.promptTokenIDs?.count ?? 0,
                      exact: routeExact, to: b, reason: routeReason)
        let c = b.pool.acquire()
        connection = c
        c.delegate = delegate
        return c
    }

    /// Sends the request (`body`: the bytes forwarded) on `c`, the connection `start` returned for
    /// `b`. Static: a write that fails at once reaches the delegate inside this call, and the
    /// delegate then updates the session's UpstreamAttempt (`failed`), which must not be in use.
    static func send(_ request: OpenAIRequest, body: [UInt8], requestId: String, on c: HTTPClientConnection, to b: Backend) {
        guard case .relay(let r) = request.kind else {
            return body.withUnsafeBytes {
                c.send(method: "POST", path: request.kind.upstreamPath, headerBlock: b.requestHeaderBlock,
                       name: "x-request-id", value: requestId, body: $0)
            }
        }
        let h = b.relayHeaders(r, requestId: requestId)
        body.withUnsafeBytes { c.send(method: r.method, path: r.target, headers: h, body: r.body == .none ? nil : $0) }
    }

    /// Tells the attempt's breaker its verdict (once); the backend when its breaker opened or closed.
    mutating func end(_ verdict: RequestMachine.Finish.Verdict, now: UInt64) -> Backend? {
        guard let (b, permit) = open else { return nil }
        open = nil
        b.inFlight -= 1
        return b.endAttempt(permit, verdict, now: now) ? b : nil
    }

    /// Closes the exchange's connection (if one is open), without a word to the delegate.
    mutating func close() {
        guard let c = connection else { return }
        connection = nil
        c.delegate = nil
        c.close()
    }

    /// The exchange ended cleanly: its connection goes back to the backend's pool. False when no
    /// connection was open.
    mutating func release() -> Bool {
        guard let c = connection else { return false }
        connection = nil
        backend?.pool.release(c)
        return true
    }

    /// The connection failed (it has closed itself): forgets it, and says what failed.
    mutating func failed(_ f: HTTPClientFailure, exchangesCompleted: Int) -> UpstreamFailure {
        connection = nil
        return Self.failure(f, exchangesCompleted: exchangesCompleted)
    }

    /// The machine's event for a response head. vLLM's usual content types are passed as literals
    /// (no String is made for them; another one is allocated). `contentLength`: the connection's
    /// `declaredContentLength` (http-parser read it; a second scan of the lines cost ~600
    /// instructions a response).
    static func headEvent(status: Int, headers: HTTPHeaders, contentLength: Int?) -> RequestMachine.Event {
        let contentType = headers.value("content-type", known: knownContentTypes)
        return .upstreamHead(status: status, contentType: contentType, contentLength: contentLength)
    }

    private static let knownContentTypes = ["application/json", "text/event-stream; charset=utf-8", "text/event-stream"]

    /// The machine's name for a connection's failure. A connection that had served earlier
    /// exchanges and closed before this one's head lost a keep-alive race.
    static func failure(_ f: HTTPClientFailure, exchangesCompleted: Int) -> UpstreamFailure {
        switch f {
        case .connectFailed: return .connect
        case .closed(let receivedHead): return .closed(reused: exchangesCompleted > 0 && !receivedHead)
        case .malformed: return .malformed
        }
    }
}

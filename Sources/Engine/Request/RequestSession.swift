// RequestSession: the driver of one RequestMachine (style C). Every fact — from the client, the
// cache, admission, the coalescer, the upstream connection, the timer — becomes a machine Event;
// facts that arrive while one is being handled wait in the queue (no re-entry: a call that
// completes at once, like the embedded cache or admission's fast path, is handled after the call
// returns). `perform` is the one switch over the machine's actions; it does the I/O and nothing
// the answer depends on. Upstream reads and a flight's events are handled in place (no copy)
// when nothing else is being handled.
// Owns: the upstream connection while an exchange runs (returned to the backend's pool or
// closed), one Timer, the breaker permit of the current attempt, the bytes sent upstream.
// Kept alive by its client connection's `context`, by the upstream connection (delegate) during
// an exchange, and by the CoalescerDriver while it takes part in a flight; it lets go of each when
// it ends. Admission control references it weakly (waiter).
import CEventShim
import Reactor

final class RequestSession: HTTPClientConnectionDelegate, AdmissionWaiter {
    let runtime: EngineRuntime
    private var client: HTTPServerConnection?
    private var machine: RequestMachine
    private var queue = EventQueue<RequestMachine.Event>()
    let request: OpenAIRequest
    /// The bytes forwarded upstream (the client's body, or a rewrite of it).
    private var body: [UInt8]
    let requestId: String
    /// The model the request asked for and the one actually served (after routing/fallback).
    let requestedModel: String?
    private(set) var servedModel: String?
    /// Headers every response of this session carries (X-Routed-Model, ...).
    private let extraHeaders: HTTPHeaders
    private let cachePlan: CachePlan
    private var upstream: HTTPClientConnection?
    private(set) var backend: Backend?
    private var attempt: (backend: Backend, permit: CircuitBreaker.Permit)?
    /// Why routing put the chosen backend first (prefix_aware), counted when the request is sent.
    private var routeReason: RoutingScorer.Reason = .roundRobin
    /// Exact mode: the KV index's overlap per backend at that decision (for the hit ratio).
    private var routeExact: [BackendID: Double]?
    private var admissionToken: RequestToken?
    /// The backend admission control released this request to: told when the request ends (its
    /// slot in admission's in-flight count frees).
    private var admittedTo: BackendID?
    /// Issue 14 (RequestSession+Tenant.swift): the tokens reserved against the tenant's budget
    /// (settled when the request ends), what the budget said (x-ratelimit-* headers), whether the
    /// request reached admission (then it is charged), and whether it counts as queued.
    var reservedTokens: Int?
    var rateStatus: RateLimitStatus?
    var reachedAdmission = false
    var tenantQueued = false
    lazy var expectedTokens: Int = computeExpectedTokens()
    private var coalescerId: CoalescerMachine.RequestID?
    /// Created on first use (hits never need one); back to the runtime's pool at the end.
    private var timer: Timer?
    private var armed: TimerKind = .upstream
    private var sawFirstToken = false
    private(set) var timings = RequestTimings(start: Loop.nowNanos())
    private(set) var bytesOut = 0
    var bytesIn: Int { body.count }
    var status: Int { machine.status }
    var cacheOutcome: String { machine.cacheOutcome.rawValue }
    var isFollower: Bool { machine.isFollower }
    var isFinished: Bool { machine.isFinished }
    var usage: (prompt: Int, completion: Int)? { machine.usage.map { ($0.prompt, $0.completion) } }
    /// The id and created every replay of this request carries.
    var replyStamp: ReplyStamp { machine.policy.stamp }

    init(runtime: EngineRuntime, client: HTTPServerConnection, request: OpenAIRequest, body: [UInt8],
         requestId: String, requestedModel: String?, servedModel: String?, extraHeaders: HTTPHeaders,
         cachePlan: CachePlan) {
        self.runtime = runtime
        self.client = client
        self.request = request
        self.body = body
        self.requestId = requestId
        self.requestedModel = requestedModel
        self.servedModel = servedModel
        self.extraHeaders = extraHeaders
        self.cachePlan = cachePlan
        var policy = runtime.requestPolicy(for: request, plan: cachePlan, servedModel: servedModel)
        policy.stamp = ReplyStamp(kind: request.kind, requestId: requestId, created: Int(Loop.wallSeconds()))
        self.machine = RequestMachine(policy: policy, cacheable: cachePlan.key != nil)
    }

    func start() { post(.start) }

    // MARK: facts in

    /// Handles `e` now, or after the event being handled (never inside it).
    func post(_ e: RequestMachine.Event) {
        guard queue.append(e) else { return }
        drain()
    }

    private func drain() {
        while let e = queue.next() {
            let wasFollower = machine.isFollower
            let a = machine.handle(e, clientBlocked: client?.isWriteBlocked ?? false)
            count(e, wasFollower: wasFollower)
            perform(a)
        }
    }

    /// Bytes handled in place when nothing else is (the hot path), else copied into the queue.
    private func handleInPlace(_ bytes: UnsafeRawBufferPointer, flight: Bool) {
        guard queue.enter() else {
            _ = queue.append(flight ? .flightEvents(Array(bytes)) : .upstreamBody(Array(bytes)))
            return
        }
        perform(flight ? machine.flightEvents(bytes) : machine.upstreamBody(bytes, clientBlocked: client?.isWriteBlocked ?? false))
        drain()
    }

    /// Counters that depend on what the machine made of an event.
    private func count(_ e: RequestMachine.Event, wasFollower: Bool) {
        runtime.metrics.count(e, by: machine, wasFollower: wasFollower)
        if case .admitted = e { dequeued() }
        if case .admissionRejected = e { dequeued() }
        if case .admissionRefused = e { dequeued() }
        countTenant(e)
    }

    private func dequeued() {
        admissionToken = nil
        let waited = timings.dequeued(at: Loop.nowNanos())
        if let waited { runtime.metrics.queueWaitSeconds.observe(Double(waited) / 1e9) }
        tenantDequeued(waitedNanos: waited)
    }

    func clientClosed() {
        client = nil
        post(.clientClosed)
    }
    func clientDrained() { post(.clientDrained) }
    func flightEvents(_ events: UnsafeRawBufferPointer) { handleInPlace(events, flight: true) }

    func admissionAdmitted(_ backend: BackendID) {
        admittedTo = backend
        post(.admitted(backend))
    }
    func admissionQueued() {
        timings.enqueued(at: Loop.nowNanos())
        tenantEnqueued()
    }
    func admissionRejected(retryAfterSeconds: Int) { post(.admissionRejected(retryAfterSeconds: retryAfterSeconds)) }
    func admissionRefused(_ reason: AdmissionRefusal.Reason, retryAfterSeconds: Int) {
        post(.admissionRefused(AdmissionRefusal(reason, retryAfterSeconds: retryAfterSeconds)))
    }
    func admissionKeepAlive() { post(.admissionKeepAlive) }

    func upstream(_ c: HTTPClientConnection, didReceiveHead status: Int, headers: HTTPHeaders) {
        guard c === upstream else { return }
        runtime.noteUpstreamStatus(self, status)
        // vLLM's usual type as a literal (no String made for it; a longer one would be allocated).
        let contentType = headers.hasValue("content-type", "application/json") ? "application/json" : headers["content-type"]
        post(.upstreamHead(status: status, contentType: contentType, contentLength: headers.integer("content-length")))
    }

    func upstream(_ c: HTTPClientConnection, didReceiveBody bytes: UnsafeRawBufferPointer) {
        guard c === upstream else { return }
        handleInPlace(bytes, flight: false)
    }

    func upstreamDidFinish(_ c: HTTPClientConnection) {
        guard c === upstream else { return }
        post(.upstreamEnd)
    }

    func upstream(_ c: HTTPClientConnection, didFail failure: HTTPClientFailure) {
        guard c === upstream else { return }
        upstream = nil
        switch failure {
        case .connectFailed: post(.upstreamFailed(.connect))
        case .closed(let receivedHead): post(.upstreamFailed(.closed(reused: c.exchangesCompleted > 0 && !receivedHead)))
        case .malformed: post(.upstreamFailed(.malformed))
        }
    }

    // MARK: the one place that performs actions

    private func perform(_ action: RequestMachine.Action) {
        switch action {
        case .lookupCache:
            guard let cache = runtime.cache, let key = cachePlan.key else { return post(.cacheAnswered(.miss)) }
            // The embedded and shared-memory stores answer at once: no completion, whose weak
            // reference would give the session a side table (an allocation, slower refcounts).
            if let sync = runtime.syncCache { return post(.cacheAnswered(sync.lookup(key, now: Loop.nowNanos(), touch: true))) }
            // Redis answers later: either way the answer comes through the queue.
            cache.get(key: key, now: Loop.nowNanos(), wallMillis: wallMillis()) { [weak self] in self?.post(.cacheAnswered($0)) }
        case .lookupStale:
            endAttempt(.failure)
            closeUpstream()
            guard let cache = runtime.cache, let key = cachePlan.key else { return post(.staleAnswered(.miss)) }
            cache.getStale(key: key, now: Loop.nowNanos(), wallMillis: wallMillis()) { [weak self] in self?.post(.staleAnswered($0)) }
        case .joinFlight:
            guard let key = cachePlan.key else { return post(.flight(.alone)) }
            let id = runtime.coalescer.newRequestID()
            coalescerId = id
            runtime.coalescer.arrive(self, CoalescerMachine.Arrival(
                id: id, key: key, isStream: request.stream, mayFollow: cachePlan.follow, mayLead: cachePlan.lead))
        case .leaderLeft:
            if let id = coalescerId { runtime.coalescer.left(id) }
        case .requestAdmission:
            // Deadline and the tenant's budget first (RequestSession+Tenant.swift); then, maybe
            // later, askAdmission().
            if beforeAdmission() { askAdmission() }
        case .sendQueuedComment(let writeHead):
            if writeHead { writeSSEHead() }
            write(Self.queuedComment)
        case .pickBackend(let excluding, let fallBack):
            if let model = fallBack {
                endAttempt(.failure)
                closeUpstream()
                if let b = OpenAIRequest.rewrite(body, model: model, includeUsage: false) { body = b }
                servedModel = model
            }
            post(.backendChosen(route(excluding: excluding).first))
        case .sendUpstream(let id, let timeout):
            send(to: runtime.backends[id], timeout: timeout)
        case .startStream(let timeout, let writeHead):
            arm(.upstream, timeout)
            if let f = machine.leadsFlight { runtime.coalescer.leaderHead(f, status: 200, contentType: "text/event-stream", isStream: true) }
            if writeHead { writeSSEHead() }
        case .forward(let f):
            if let gap = timings.chunk(at: Loop.nowNanos()) { runtime.metrics.interChunkSeconds.observe(Double(gap) / 1e9) }
            // The read's whole events go out in one write (and to the flight's followers).
            if let fl = machine.leadsFlight, !machine.relay.events.isEmpty {
                runtime.coalescer.leaderEvents(fl, machine.relay.events)
            }
            writeEvents()
            if f.pause {
                timer?.cancel()
                upstream?.pauseReading()
            } else if f.rearm {
                arm(.upstream, runtime.requestPolicy.upstreamTimeout)
            }
            if f.broken { post(.upstreamFailed(.invalidEvent)) }
        case .forwardFlight(let writeHead):
            if writeHead { writeSSEHead() }
            writeEvents()
            // The leader paces the stream for its own client; a follower cannot pause it. One that
            // falls this far behind is closed (style C's hard limit), so it cannot grow without bound.
            if let c = client, c.pendingOutputBytes > Self.followerMaxPendingBytes {
                runtime.metrics.clientSlowClosed += 1
                c.close()
            }
        case .resumeUpstream(let timeout):
            arm(.upstream, timeout)
            upstream?.resumeReading()
        case .retry(let after):
            endAttempt(.failure)
            runtime.metrics.upstreamRetries += 1
            closeUpstream()
            arm(.backoff, after)
        case .finish(let f):
            finish(f)
        case .none:
            break
        }
    }

    /// The eligible backends in routing.policy's order (noting why the first is first).
    private func route(excluding: [BackendID] = []) -> [BackendID] {
        let r = runtime.backends.routedCandidates(model: servedModel, chunks: request.promptChunks, tokenIDs: request.promptTokenIDs,
                                                  excluding: excluding, now: Loop.nowNanos())
        routeReason = r.reason
        routeExact = r.exact
        return r.order
    }

    /// Asks admission control (or, without it, takes the first candidate).
    func askAdmission() {
        let cands = route()
        if cands.isEmpty {
            post(.admissionFoundNoBackend)
        } else if let adm = runtime.admission {
            admissionToken = adm.request(self, pool: servedModel ?? "", candidates: cands)
        } else {
            post(.admitted(cands[0]))
        }
    }

    static let followerMaxPendingBytes = 1 << 20
    private static let queuedComment = Array(": queued\n\n".utf8)

    private func send(to b: Backend, timeout: Duration) {
        backend = b
        let permit = b.breaker.acquire(now: Loop.nowNanos())
        guard permit.isGranted else {
            // Its half-open probe went out since it was chosen (e.g. while we were queued): not
            // this backend, and not a failure of it. The next pick avoids it.
            return post(.upstreamFailed(.connect))
        }
        attempt = (b, permit)
        b.requestsSent += 1
        b.inFlight += 1
        runtime.backends.routing?.sent(request.promptChunks, model: servedModel, tokenCount: request.promptTokenIDs?.count ?? 0,
                                       exact: routeExact, to: b, reason: routeReason)
        let c = b.pool.acquire()
        upstream = c
        c.delegate = self
        arm(.upstream, timeout)
        timings.upstreamStarted(at: Loop.nowNanos())
        guard case .relay(let r) = request.kind else {
            return body.withUnsafeBytes {
                c.send(method: "POST", path: request.kind.upstreamPath, headerBlock: b.requestHeaderBlock,
                       name: "x-request-id", value: requestId, body: $0)
            }
        }
        let h = b.relayHeaders(r, requestId: requestId)
        body.withUnsafeBytes { c.send(method: r.method, path: r.target, headers: h, body: r.body == .none ? nil : $0) }
    }

    /// The request's end, in order: the upstream and the breaker, the store (before the client
    /// has its answer, so a repeat finds it whichever worker takes it), the reply, the followers.
    private func finish(_ f: RequestMachine.Finish) {
        timer?.cancel()
        endAttempt(f.verdict)
        if f.reuseUpstream, let c = upstream {
            upstream = nil
            timings.upstreamEnded(at: Loop.nowNanos())
            backend?.pool.release(c)
        } else {
            closeUpstream()
        }
        if f.leaveQueue, let t = admissionToken { runtime.admission?.leave(t) }
        admissionToken = nil
        if let b = admittedTo {
            admittedTo = nil
            runtime.admission?.ended(b)
        }
        tenantFinished()
        if let s = f.store, let key = cachePlan.key { runtime.store(s, key: key) }
        if let r = f.reply {
            reply(r)
            // A whole 200 answer is the client's first token too (after its head, never before).
            if machine.status == 200, case .answer = r { firstToken() }
            if case .json(200, _, _, _) = r { firstToken() }
        }
        if let fl = f.flight, let o = f.outcome { runtime.coalescer.leaderEnded(fl, o) }
        if f.leaveFlight, let id = coalescerId { runtime.coalescer.left(id) }
        coalescerId = nil
        runtime.requestFinished(self, termination: machine.termination ?? .normal)
        if let t = timer {
            timer = nil
            runtime.returnTimer(t)
        }
    }

    /// Writes the final response; detaches from the client first, since completing the response
    /// may start the next pipelined request on the same connection.
    private func reply(_ r: RequestMachine.Reply) {
        timings.firstByte(at: Loop.nowNanos())
        guard let c = client else { return }
        client = nil
        if c.context === self { c.context = nil }
        bytesOut += ResponseWriter.reply(r, to: c, stream: request.stream, headers: responseHeaders(), headSent: machine.clientHeadSent)
    }

    /// Headers on every response of this session.
    private func responseHeaders() -> HTTPHeaders {
        var h = extraHeaders
        if machine.usedFallback { h.add("x-fallback", "model") }
        if machine.isFollower { h.add("x-coalesced", "true") }
        h.add("x-request-id", requestId)
        h.add("x-cache", cacheOutcome)
        // The instance that answered (the last attempt's), on every proxied answer.
        if let b = backend { h.add("x-routed-backend", b.url) }
        if let st = rateStatus { Self.addRateLimitHeaders(st, to: &h) }
        return h
    }

    private func writeSSEHead() {
        timings.firstByte(at: Loop.nowNanos())
        client?.writeChunkedHead(status: 200, headers: ResponseWriter.sseHeaders(responseHeaders()))
    }

    /// The last read's events for this client; the first ones are the request's first token.
    private func writeEvents() {
        let events = machine.relay.clientEvents
        guard !events.isEmpty else { return }
        firstToken()
        write(events)
    }

    private func firstToken() {
        guard !sawFirstToken else { return }
        sawFirstToken = true
        runtime.firstTokenRelayed(self, now: Loop.nowNanos())
    }

    private func write(_ bytes: [UInt8]) {
        guard !bytes.isEmpty, let c = client else { return }
        bytesOut += bytes.count
        bytes.withUnsafeBytes { c.writeChunk($0) }
    }

    private func wallMillis() -> UInt64 { UInt64(Loop.wallSeconds() * 1000) }

    private func arm(_ kind: TimerKind, _ d: Duration) {
        armed = kind
        let t = timer ?? runtime.takeTimer()
        if timer == nil {
            t.onFire = { [unowned self] in self.post(.timerFired(self.armed)) }
            timer = t
        }
        t.schedule(after: d)
    }

    private func endAttempt(_ verdict: RequestMachine.Finish.Verdict) {
        guard let (b, permit) = attempt else { return }
        attempt = nil
        b.inFlight -= 1
        if b.endAttempt(permit, verdict, now: Loop.nowNanos()) { runtime.breakerChanged(b) }
    }

    private func closeUpstream() {
        timings.upstreamEnded(at: Loop.nowNanos())
        guard let c = upstream else { return }
        upstream = nil
        c.delegate = nil
        c.close()
    }
}

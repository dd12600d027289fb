// RequestSession: the driver of one RequestMachine (style C). Every fact (client, cache, budget,
// admission, coalescer, upstream, timer) becomes a machine Event, queued while another is handled
// (no re-entry); `perform` is the one switch over the actions. A fact that arrives when nothing
// else is being handled is handled in place (upstream reads and a flight's events as bytes).
// Inline parts: UpstreamAttempt, AdmissionPlace (with TenantBudget), SessionTimer, RequestTimings.
// The callbacks that bring those facts in are RequestSession+Facts.swift (the state they reach —
// client, upstream, admission, timer, post — is internal for it; nothing else touches it).
// Kept alive by the client connection's `context`, the upstream connection (delegate) and the
// CoalescerDriver; admission, the cache, the budget and the timer hold it weakly or unowned.
import Reactor

final class RequestSession {
    let runtime: EngineRuntime
    var client: SessionClient
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
    var upstream = UpstreamAttempt()
    var admission: AdmissionPlace
    lazy var expectedTokens: Int = TenantBudget.expectedTokens(
        prompt: runtime.estimator.estimate(request.promptSize), maxOutput: request.maxOutputTokens,
        expectedOutput: runtime.config.admissionControl.expectedOutputTokens)
    private var coalescerId: CoalescerMachine.RequestID?
    var timer = SessionTimer()
    private var sawFirstToken = false
    var timings = RequestTimings(start: Loop.nowNanos())
    var bytesOut: Int { client.bytesOut }
    var bytesIn: Int { body.count }
    /// The backend of the last attempt (the one that answered).
    var backend: Backend? { upstream.backend }
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
        self.client = SessionClient(client)
        self.request = request
        self.body = body
        self.requestId = requestId
        self.requestedModel = requestedModel
        self.servedModel = servedModel
        self.extraHeaders = extraHeaders
        self.cachePlan = cachePlan
        admission = AdmissionPlace(tenant: request.tenant)
        var policy = runtime.requestPolicy(for: request, plan: cachePlan, servedModel: servedModel)
        policy.stamp = ReplyStamp(kind: request.kind, requestId: requestId, created: Int(Loop.wallSeconds()))
        self.machine = RequestMachine(policy: policy, cacheable: cachePlan.key != nil)
    }

    /// The session's first step — the cache lookup, the flight, the budget, admission's pick —
    /// runs inside this call (unless a stage answers later), microseconds after the session was
    /// made: those stages take the clock reading `timings.start` rather than one read each (a
    /// read costs about as much as a small stage). Sending upstream reads its own.
    func start() {
        stepNanos = timings.start
        post(.start)
        stepNanos = nil
    }

    /// Set while `start` runs (see there).
    private var stepNanos: UInt64?
    private func now() -> UInt64 { stepNanos ?? Loop.nowNanos() }

    // MARK: the event queue (the facts come in through RequestSession+Facts.swift)

    /// Handles `e` now, or after the event being handled (never inside it). Now means in place:
    /// the event is not copied into the queue and out again.
    func post(_ e: consuming RequestMachine.Event) {
        guard queue.enter() else {
            _ = queue.append(e)
            return
        }
        handle(e)
        drain()
    }

    private func drain() {
        while let e = queue.next() { handle(e) }
    }

    private func handle(_ e: RequestMachine.Event) {
        let wasFollower = machine.isFollower
        // Only a body read asks whether the client is blocked (the machine reads it nowhere
        // else): every other event read the client output buffer's length (libevent) for nothing.
        var blocked = false
        if case .upstreamBody = e { blocked = client.isWriteBlocked }
        let a = machine.handle(e, clientBlocked: blocked)
        count(e, wasFollower: wasFollower)
        perform(a)
    }

    /// Bytes handled in place when nothing else is (the hot path), else copied into the queue.
    func handleInPlace(_ bytes: UnsafeRawBufferPointer, flight: Bool) {
        guard queue.enter() else {
            _ = queue.append(flight ? .flightEvents(Array(bytes)) : .upstreamBody(Array(bytes)))
            return
        }
        if flight {
            perform(machine.flightEvents(bytes))
        } else if let f = machine.upstreamRead(bytes, clientBlocked: client.isWriteBlocked) {
            forward(f)
        }
        drain()
    }

    /// Counters that depend on what the machine made of an event.
    private func count(_ e: RequestMachine.Event, wasFollower: Bool) {
        runtime.metrics.count(e, outcome: machine.cacheOutcome, isFollower: machine.isFollower, wasFollower: wasFollower)
        switch e {
        case .admitted, .admissionRejected, .admissionRefused:
            admission.answered(e, &timings, metrics: runtime.metrics, tenants: runtime.tenantMetrics)
        default:
            break
        }
    }

    // MARK: the one place that performs actions

    /// Consumed: the last action's Finish (the answer, the entry to store, the flight's outcome)
    /// moves into `finish` instead of being copied out of the action and destroyed twice.
    private func perform(_ action: consuming RequestMachine.Action) {
        switch consume action {
        case .lookupCache:
            runtime.lookUp(cachePlan.key, stale: false, now: now(), for: self)
        case .lookupStale:
            endAttempt(.failure)
            closeUpstream()
            runtime.lookUp(cachePlan.key, stale: true, now: now(), for: self)
        case .joinFlight:
            guard let key = cachePlan.key else { return post(.flight(.alone)) }
            let id = runtime.coalescer.newRequestID()
            coalescerId = id
            runtime.coalescer.arrive(self, CoalescerMachine.Arrival(
                id: id, key: key, isStream: request.stream, mayFollow: cachePlan.follow, mayLead: cachePlan.lead))
        case .leaderLeft:
            if let id = coalescerId { runtime.coalescer.left(id) }
        case .requestAdmission:
            // The deadline and the tenant's budget first; then, maybe later, askAdmission().
            take(admission.budget.beforeAdmission(deadline: request.deadline, now: now(), canReserve: runtime.rateLimits != nil))
        case .sendQueuedComment(let writeHead):
            if writeHead { writeSSEHead() }
            client.writeChunk(Self.queuedComment)
        case .pickBackend(let excluding, let fallBack):
            if let model = fallBack {
                endAttempt(.failure)
                closeUpstream()
                if let b = OpenAIRequest.rewrite(body, model: model, includeUsage: false) { body = b }
                servedModel = model
            }
            post(.backendChosen(upstream.routeFirst(runtime.backends, request, model: servedModel, excluding: excluding, now: Loop.nowNanos())))
        case .sendUpstream(let id, let timeout):
            let b = runtime.backends[id]
            let now = Loop.nowNanos()
            guard let c = upstream.start(b, routing: runtime.backends.routing, request, model: servedModel, delegate: self,
                                         now: now) else { return post(.upstreamFailed(.connect)) }
            arm(.upstream, timeout, now: now)
            timings.upstreamStarted(at: now)
            UpstreamAttempt.send(request, body: body, requestId: requestId, on: c, to: b)
        case .startStream(let timeout, let writeHead):
            arm(.upstream, timeout, now: Loop.nowNanos())
            if let f = machine.leadsFlight { runtime.coalescer.leaderHead(f, status: 200, contentType: "text/event-stream", isStream: true) }
            if writeHead { writeSSEHead() }
        case .forward(let f):
            forward(f)
        case .forwardFlight(let writeHead):
            if writeHead { writeSSEHead() }
            writeEvents()
            // The leader paces the stream for its own client; a follower cannot pause it. One that
            // falls this far behind is closed (style C's hard limit), so it cannot grow without bound.
            if client.closeIfBehind(by: Self.followerMaxPendingBytes) { runtime.metrics.clientSlowClosed += 1 }
        case .resumeUpstream(let timeout):
            arm(.upstream, timeout, now: Loop.nowNanos())
            upstream.connection?.resumeReading()
        case .retry(let after):
            endAttempt(.failure)
            runtime.metrics.upstreamRetries += 1
            closeUpstream()
            arm(.backoff, after, now: Loop.nowNanos())
        case .finish(let f):
            finish(consume f)
        case .none:
            break
        }
    }

    /// `.forward`, also called straight from an upstream read (`handleInPlace`).
    private func forward(_ f: RequestMachine.Forward) {
        let now = Loop.nowNanos()
        if let gap = timings.chunk(at: now) { runtime.metrics.interChunkSeconds.observe(nanoseconds: gap) }
        // The read's whole events go out in one write (and to the flight's followers).
        if let fl = machine.leadsFlight, !machine.relay.events.isEmpty { runtime.coalescer.leaderEvents(fl, machine.relay.events) }
        writeEvents()
        if f.pause {
            timer.cancel()
            upstream.connection?.pauseReading()
        } else if f.rearm {
            arm(.upstream, runtime.requestPolicy.upstreamTimeout, now: now)
        }
        if f.broken { post(.upstreamFailed(.invalidEvent)) }
    }

    static let followerMaxPendingBytes = 1 << 20
    private static let queuedComment = Array(": queued\n\n".utf8)

    /// The budget's next step before admission.
    func take(_ step: TenantBudget.Step) {
        switch step {
        case .askAdmission:
            // Admission control, or without it the first candidate.
            let cands = upstream.route(runtime.backends, request, model: servedModel, now: now())
            if cands.isEmpty {
                post(.admissionFoundNoBackend)
            } else if let adm = runtime.admission {
                // Not assigned in one statement: admission may answer inside the call.
                let token = adm.request(self, pool: servedModel ?? "", candidates: cands)
                admission.token = token
            } else {
                post(.admitted(cands[0]))
            }
        case .refuse(let r):
            post(.admissionRefused(r))
        case .reserve:
            guard let t = admission.budget.tenant else { break }
            runtime.rateLimits?.reserve(t, cost: expectedTokens, for: self)
        case .none:
            break
        }
    }

    /// The request's end, step by step in the machine's order (`Finish.steps`).
    private func finish(_ f: consuming RequestMachine.Finish) {
        // One clock read for the upstream's end, the breaker's verdict and the store, one for the
        // reply (they are microseconds apart; each read costs as much as a small stage).
        let now = Loop.nowNanos()
        for step in RequestMachine.Finish.steps {
            switch step {
            case .upstream:
                timer.cancel()
                endAttempt(f.verdict, now: now)
                timings.upstreamEnded(at: now)
                if !(f.reuseUpstream && upstream.release()) { upstream.close() }
            case .admission:
                admission.ended(leaveQueue: f.leaveQueue, runtime.admission, now: now)
                admission.budget.finished(usedTokens: usage.map { $0.prompt + $0.completion }, askedBackend: backend != nil,
                                          metrics: runtime.tenantMetrics, limits: runtime.rateLimits)
            case .store:
                if let s = f.store.take(), let key = cachePlan.key { runtime.store(s, key: key, now: now) }
            case .endFlight:
                if let fl = f.flight, let o = f.outcome.take() { runtime.coalescer.leaderEnded(fl, o, now: now) }
            case .reply:
                guard let r = f.reply.take() else { break }
                let replyAt = Loop.nowNanos()
                reply(r, at: replyAt)
                // A whole 200 answer is the client's first token too (after its head, never before).
                if machine.status == 200, case .answer = r { firstToken(at: replyAt) }
                if case .json(200, _, _, _) = r { firstToken(at: replyAt) }
            case .leaveFlight:
                if f.leaveFlight, let id = coalescerId { runtime.coalescer.left(id) }
                coalescerId = nil
            case .logged:
                runtime.requestFinished(self, termination: machine.termination ?? .normal)
                timer.giveBack(to: runtime)
            }
        }
    }

    private func reply(_ r: RequestMachine.Reply, at now: UInt64) {
        timings.firstByte(at: now)
        if case .endStream = r { return client.endStream(of: self) }
        guard client.connection != nil else { return }
        client.reply(r, of: self, stream: request.stream, headSent: machine.clientHeadSent, headers: responseHeaders())
    }

    private func responseHeaders() -> HTTPHeaders {
        let outcome = machine.cacheOutcome
        return SessionHeaders.make(extraHeaders, requestId: requestId,
                                   tail: backend?.sessionHeaderTail(outcome) ?? SessionHeaders.tails[outcome.index],
                                   usedFallback: machine.usedFallback, isFollower: machine.isFollower,
                                   rateStatus: admission.budget.rateStatus)
    }

    private func writeSSEHead() {
        timings.firstByte(at: Loop.nowNanos())
        client.writeSSEHead(responseHeaders())
    }

    /// The last read's events for this client, straight from the relay's buffers; the first ones
    /// are the request's first token. Asked and lent in place (inout, see SessionClient): through
    /// the property, the relay may be copied to ask it.
    private func writeEvents() {
        guard Self.hasClientEvents(&machine) else { return }
        firstToken()
        client.writeEvents(of: &machine)
    }

    private static func hasClientEvents(_ m: inout RequestMachine) -> Bool { m.relay.hasClientEvents }

    private func firstToken(at now: UInt64? = nil) {
        guard !sawFirstToken else { return }
        sawFirstToken = true
        runtime.firstTokenRelayed(self, now: now ?? Loop.nowNanos())
    }

    private func arm(_ kind: TimerKind, _ d: Duration, now: UInt64) { timer.arm(kind, after: d, now: now, for: self, from: runtime) }

    private func endAttempt(_ verdict: RequestMachine.Finish.Verdict, now: UInt64 = Loop.nowNanos()) {
        if let b = upstream.end(verdict, now: now) { runtime.breakerChanged(b) }
    }

    private func closeUpstream() {
        timings.upstreamEnded(at: Loop.nowNanos())
        upstream.close()
    }
}

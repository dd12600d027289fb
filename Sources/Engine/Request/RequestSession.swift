// RequestSession: the driver of one RequestMachine (style C). Every fact — from the client, the
// cache, admission, the coalescer, the upstream connection, the timer — is posted as an Event;
// events that arrive while one is being handled wait in the queue (no re-entry: a call that
// completes at once, like the embedded cache or admission's fast path, is handled after the call
// returns). `handle` turns an event into a machine transition and `run` performs the action.
// Owns: the upstream connection while an exchange runs (returned to the backend's pool or
// closed), one Timer, the buffered response body, the breaker permit of the current attempt.
// Kept alive by its client connection's `context`, by the upstream connection (delegate) during
// an exchange, and by the CoalescerDriver while it takes part in a flight; it lets go of each when
// it ends. Admission control references it weakly (waiter).
import CEventShim
import Reactor

#if canImport(Glibc)
import Glibc
#endif

final class RequestSession: HTTPClientConnectionDelegate, AdmissionWaiter {
    /// What the coalescer tells this session (CoalescerDriver → post).
    enum FlightEvent {
        /// Call upstream for the flight (followers get the answer through the driver).
        case lead(CoalescerMachine.FlightID)
        /// Call upstream outside any flight.
        case alone
        /// Follow; `live`: write the SSE head and `recorded` now, then relay events as they come.
        case follow(live: Bool, recorded: [UInt8])
        case goLive(recorded: [UInt8])
        case ended(FlightDelivery)
        /// The source vanished before sending anything: ask the coalescer again.
        case rejoin
        /// Our client left but followers remain: keep the upstream call going for them.
        case continueHeadless
        /// Our client left and nobody follows: abort.
        case abort
    }

    enum FlightDelivery {
        case endLive
        case failLive(errorBody: [UInt8])
        case answer(Flight.Outcome)
    }

    enum Event {
        case start
        case cacheAnswered(CacheLookup)
        case staleAnswered(CacheLookup)
        case admitted(BackendID)
        case admissionRejected(retryAfterSeconds: Int)
        case admissionKeepAlive
        case clientClosed
        case clientDrained
        case timerFired
        case upstreamHead(status: Int, contentType: String?)
        /// Body bytes that arrived while another event was being handled (copied).
        case upstreamBody([UInt8])
        case upstreamEnd
        case upstreamFailed(UpstreamFailure)
        case flight(FlightEvent)
    }

    private let runtime: EngineRuntime
    private var client: HTTPServerConnection?
    private var machine: RequestMachine
    private(set) var request: OpenAIRequest
    /// The bytes forwarded upstream (the client's body, or a rewrite of it).
    private var body: [UInt8]
    let requestId: String
    let startNanos: UInt64
    /// The model the request asked for and the one actually served (after routing/fallback).
    let requestedModel: String?
    private(set) var servedModel: String?
    /// Headers every response of this session carries (X-Routed-Model, X-Fallback, ...).
    private var extraHeaders: HTTPHeaders
    private var upstream: HTTPClientConnection?
    private(set) var backend: Backend?
    private var attempt: (backend: Backend, permit: CircuitBreaker.Permit)?
    private var admissionToken: RequestToken?
    /// Created on first use: cache hits never need one.
    private var timerStorage: Timer?
    private var timer: Timer {
        if let t = timerStorage { return t }
        let t = runtime.takeTimer()
        t.onFire = { [unowned self] in self.post(.timerFired) }
        timerStorage = t
        return t
    }
    private var armed: TimerKind = .upstream
    /// Set when the session finished and gave its timer back to the runtime's pool.
    private var timerRetired = false
    private var buffered: [UInt8] = []
    /// The buffered 200 body as the parser read it (usage, shape), once it is complete.
    private var bufferedJSON: UpstreamJSON?
    private var upstreamContentType: String?
    /// What the cache and coalescer may do for this request (decided by the Frontend).
    let cachePlan: CachePlan
    /// X-Cache outcome: HIT, MISS, STALE or BYPASS.
    private(set) var cacheOutcome: String
    /// A stored answer in this client's form (SSE events or a JSON body), to replay.
    private var cachedReply: [UInt8] = []
    /// The stale answer replayed, as stored (followers get it in their own form).
    private var staleAnswer: StoredAnswer?
    /// The relayed stream (or, for a live follower, the flight's): whole events, usage, the recording.
    private var relay: StreamRelay
    /// This request's part in single-flight.
    private enum Role {
        case none
        /// Asked the coalescer; waiting for lead / follow / alone.
        case asking
        case leader(CoalescerMachine.FlightID)
        /// `live`: relaying the flight's stream as it comes.
        case follower(live: Bool)
    }
    private var role: Role = .none
    private var coalescerId: CoalescerMachine.RequestID?
    /// The leader's client left; it keeps generating for its followers.
    private var isHeadless = false
    private(set) var bytesOut = 0
    /// Timing for metrics: the current upstream exchange, the last chunk relayed, the queue.
    private(set) var upstreamStartNanos: UInt64 = 0
    private(set) var upstreamNanos: UInt64 = 0
    private var lastChunkNanos: UInt64 = 0
    private var upstreamPaused = false
    /// Time spent waiting in admission queues (not the Engine's own overhead).
    private(set) var queueNanos: UInt64 = 0
    private var queuedAtNanos: UInt64 = 0
    /// Tokens from vLLM's usage (body or usage chunk), for the token counters.
    private(set) var usage: (prompt: Int, completion: Int)?
    var bytesIn: Int { body.count }
    /// Answered by another request's upstream call (in this process or another).
    private(set) var isFollower = false
    private(set) var firstByteNanos: UInt64 = 0
    private(set) var status = 0

    private var queue = EventQueue<Event>()

    init(runtime: EngineRuntime, client: HTTPServerConnection, request: OpenAIRequest, body: [UInt8],
         requestId: String, requestedModel: String?, servedModel: String?, extraHeaders: HTTPHeaders,
         cachePlan: CachePlan) {
        self.cachePlan = cachePlan
        self.cacheOutcome = cachePlan.key == nil ? "BYPASS" : (cachePlan.lookup ? "MISS" : "BYPASS")
        self.runtime = runtime
        self.client = client
        self.request = request
        self.body = body
        self.requestId = requestId
        self.requestedModel = requestedModel
        self.servedModel = servedModel
        self.extraHeaders = extraHeaders
        self.startNanos = Loop.nowNanos()
        var policy = runtime.requestPolicy
        policy.isStream = request.stream
        policy.lookupCache = cachePlan.key != nil && cachePlan.lookup
        policy.coalesce = cachePlan.coalesces
        policy.canUseStale = cachePlan.key != nil && runtime.cache != nil
        if let fb = runtime.config.modelRegistry.fallbackModel, fb != servedModel, runtime.backends.isKnown(fb) != false {
            policy.fallbackModel = fb
        }
        self.machine = RequestMachine(policy: policy)
        self.relay = RequestSession.newRelay(runtime, request, cachePlan)
    }

    /// Records the stream when it may be stored or shared as a whole.
    private static func newRelay(_ runtime: EngineRuntime, _ request: OpenAIRequest, _ plan: CachePlan) -> StreamRelay {
        StreamRelay(includeUsage: request.includeUsage, records: plan.store || plan.lead,
                    maxEventBytes: runtime.config.vllm.maxEventBytes)
    }

    func start() { post(.start) }

    // MARK: the event queue

    /// Handles `e` now, or after the event being handled (never inside it).
    func post(_ e: Event) {
        guard queue.append(e) else { return }
        while let e = queue.next() { handle(e) }
    }

    private func handle(_ e: Event) {
        switch e {
        case .start:
            run(machine.start())
        case .cacheAnswered(let lookup):
            switch lookup {
            case .fresh(let stored):
                // An entry this client cannot be given in its form (a stream that does not
                // rebuild as JSON, an unknown format) is a miss for it.
                guard let reply = StoredAnswer.reply(encoded: stored, stream: request.stream, includeUsage: request.includeUsage, stamp: replyStamp) else {
                    runtime.metrics.cacheMisses += 1
                    run(machine.cacheLookedUp(found: false))
                    return
                }
                cachedReply = reply
                cacheOutcome = "HIT"
                runtime.metrics.cacheHits += 1
                run(machine.cacheLookedUp(found: true))
            case .stale, .miss:
                runtime.metrics.cacheMisses += 1
                run(machine.cacheLookedUp(found: false))
            case .unavailable:
                runtime.metrics.cacheMisses += 1
                runtime.metrics.cacheErrors += 1
                run(machine.cacheLookedUp(found: false))
            }
        case .staleAnswered(let lookup):
            if let stored = lookup.body.flatMap(StoredAnswer.decode),
               let reply = stored.reply(stream: request.stream, includeUsage: request.includeUsage, stamp: replyStamp) {
                cachedReply = reply
                staleAnswer = stored
                cacheOutcome = "STALE"
                runtime.metrics.cacheStaleServed += 1
                run(machine.staleLookedUp(found: true))
            } else {
                run(machine.staleLookedUp(found: false))
            }
        case .admitted(let b):
            admissionToken = nil
            observeQueueWait()
            run(machine.admitted(b))
        case .admissionRejected(let ra):
            admissionToken = nil
            observeQueueWait()
            run(machine.admissionRejected(retryAfterSeconds: ra))
        case .admissionKeepAlive:
            run(machine.queueKeepAliveDue())
        case .clientClosed:
            client = nil
            if case .leader = role, !machine.isFinished, !isHeadless, let id = coalescerId {
                // Followers may still want this answer: the coalescer decides (continue or abort).
                runtime.coalescer.left(id)
                return
            }
            run(machine.clientClosed())
        case .clientDrained:
            run(machine.clientDrained())
        case .timerFired:
            if armed == .upstream && relay.sawDone {
                // As below: complete, only the chunked body's tail is late. The connection is not
                // reusable (its response never ended): close it, never pool it.
                closeUpstream()
                run(machine.upstreamEnd(streamComplete: true))
            } else {
                run(machine.timerFired(armed))
            }
        case .upstreamHead(let st, let ct):
            upstreamContentType = ct
            status = st
            let sse = ct.map { $0.hasPrefix("text/event-stream") } ?? false
            run(machine.upstreamHead(status: st, isEventStream: sse))
        case .upstreamBody(let bytes):
            bytes.withUnsafeBytes { handleBody($0) }
        case .upstreamEnd:
            bufferedJSON = status == 200 ? UpstreamJSON.inspect(buffered) : nil
            let answer = bufferedJSON?.isAnswer(for: request.kind) ?? false
            run(machine.upstreamEnd(streamComplete: relay.sawDone, bodyIsAnswer: answer))
        case .upstreamFailed(let f):
            if relay.sawDone {
                // The stream was complete ([DONE] relayed); only the chunked body's last bytes
                // went missing. It ends as a complete stream: no error event after [DONE].
                run(machine.upstreamEnd(streamComplete: true))
            } else {
                run(machine.upstreamFailed(f))
            }
        case .flight(let f):
            handleFlight(f)
        }
    }

    // MARK: events from the client side (via Frontend)

    func clientClosed() { post(.clientClosed) }
    func clientDrained() { post(.clientDrained) }

    // MARK: events from admission control

    func admissionAdmitted(_ backend: BackendID) { post(.admitted(backend)) }
    func admissionQueued() { queuedAtNanos = Loop.nowNanos() }
    func admissionRejected(retryAfterSeconds: Int) { post(.admissionRejected(retryAfterSeconds: retryAfterSeconds)) }
    func admissionKeepAlive() { post(.admissionKeepAlive) }

    private func observeQueueWait() {
        guard queuedAtNanos > 0 else { return }
        let waited = Loop.nowNanos() - queuedAtNanos
        queueNanos += waited
        runtime.metrics.queueWaitSeconds.observe(Double(waited) / 1e9)
        queuedAtNanos = 0
    }

    /// Closes the timing of the current upstream exchange.
    private func upstreamDone() {
        guard upstreamStartNanos > 0 else { return }
        upstreamNanos += Loop.nowNanos() - upstreamStartNanos
        upstreamStartNanos = 0
    }

    // MARK: events from the upstream connection

    func upstream(_ c: HTTPClientConnection, didReceiveHead status: Int, headers: HTTPHeaders) {
        guard c === upstream else { return }
        let ct = headers["content-type"]
        let sse = ct.map { $0.hasPrefix("text/event-stream") } ?? false
        if !sse, let cl = headers["content-length"], let n = Int(cl), n > 0, n < 64 << 20 { buffered.reserveCapacity(n) }
        post(.upstreamHead(status: status, contentType: ct))
    }

    func upstream(_ c: HTTPClientConnection, didReceiveBody bytes: UnsafeRawBufferPointer) {
        guard c === upstream else { return }
        // Handled in place, without a copy, unless another event is being handled (then queued).
        guard queue.enter() else {
            _ = queue.append(.upstreamBody(Array(bytes)))
            return
        }
        handleBody(bytes)
        while let e = queue.next() { handle(e) }
    }

    func upstreamDidFinish(_ c: HTTPClientConnection) {
        guard c === upstream else { return }
        post(.upstreamEnd)
    }

    func upstream(_ c: HTTPClientConnection, didFail failure: HTTPClientFailure) {
        guard c === upstream else { return }
        upstream = nil
        let f: UpstreamFailure
        switch failure {
        case .connectFailed: f = .connect
        case .closed(let receivedHead): f = .closed(reused: c.exchangesCompleted > 0 && !receivedHead)
        case .malformed: f = .malformed
        }
        post(.upstreamFailed(f))
    }

    /// Upstream body bytes: buffer, or relay whole SSE events.
    private func handleBody(_ bytes: UnsafeRawBufferPointer) {
        let blocked = client?.isWriteBlocked ?? false
        switch machine.upstreamBody(clientBlocked: blocked) {
        case .bufferBody:
            buffered.append(contentsOf: bytes)
        case .forwardChunk(let pause, let timeout):
            let now = Loop.nowNanos()
            if lastChunkNanos > 0 { runtime.metrics.interChunkSeconds.observe(Double(now - lastChunkNanos) / 1e9) }
            lastChunkNanos = now
            let read = relay.read(bytes)
            if let u = relay.usage { usage = (u.prompt, u.completion) }
            // The read's whole events go out in one write (and to the flight's followers).
            if case .leader(let f) = role, !relay.events.isEmpty { relay.events.withUnsafeBytes { runtime.coalescer.leaderEvents(f, $0) } }
            relay.clientEvents.withUnsafeBytes { writeChunk($0) }
            if read == .broken {
                // Not an SSE event we can relay (invalid JSON or UTF-8, longer than max_event_bytes):
                // the stream is broken; nothing of it is cached or shared as complete.
                run(machine.upstreamFailed(.malformed))
                return
            }
            if pause {
                // A slow client is not the backend's fault: no upstream deadline while paused.
                upstreamPaused = true
                timerStorage?.cancel()
                upstream?.pauseReading()
            } else if !upstreamPaused {
                arm(.upstream, timeout)
            }
        case let other:
            run(other)
        }
    }

    private func markCoalesced() {
        guard !isFollower else { return }
        isFollower = true
        runtime.metrics.coalescedFollowers += 1
        extraHeaders.add("x-coalesced", "true")
    }

    // MARK: the coalescer's decisions

    private func handleFlight(_ e: FlightEvent) {
        switch e {
        case .lead(let f):
            role = .leader(f)
            run(machine.flightJoined(asLeader: true))
        case .alone:
            role = .none
            coalescerId = nil
            run(machine.flightJoined(asLeader: true))
        case .follow(let live, let recorded):
            role = .follower(live: false)
            markCoalesced()
            run(machine.flightJoined(asLeader: false))
            if live { goLive(recorded) }
        case .goLive(let recorded):
            goLive(recorded)
        case .ended(let d):
            coalescerId = nil
            deliver(d)
        case .rejoin:
            role = .none
            coalescerId = nil
            run(machine.flightRejoined())
        case .continueHeadless:
            isHeadless = true
        case .abort:
            run(machine.clientClosed())
        }
    }

    /// The flight's stream: SSE head, the events so far, then `flightEvents` as they come.
    private func goLive(_ recorded: [UInt8]) {
        guard case .follower(live: false) = role, request.stream, let c = client else { return }
        role = .follower(live: true)
        // The flight's events are only split for this client here: nothing to record.
        relay = StreamRelay(includeUsage: request.includeUsage, records: false, maxEventBytes: runtime.config.vllm.maxEventBytes)
        status = 200
        firstByteNanos = Loop.nowNanos()
        writeChunkedHead(c)
        recorded.withUnsafeBytes { flightEvents($0) }
    }

    /// Whole events of the flight's stream (usage chunk included), for a live follower.
    func flightEvents(_ events: UnsafeRawBufferPointer) {
        guard case .follower(live: true) = role, let c = client else { return }
        _ = relay.read(events)  // the source checked them; here they are only split for this client
        relay.clientEvents.withUnsafeBytes { writeChunk($0) }
        // The leader paces the stream for its own client; a follower cannot pause it. One that
        // falls this far behind is closed (style C's hard limit), so it cannot grow without bound.
        if c.pendingOutputBytes > RequestSession.followerMaxPendingBytes {
            runtime.metrics.clientSlowClosed += 1
            c.close()
        }
    }

    static let followerMaxPendingBytes = 1 << 20

    private func deliver(_ d: FlightDelivery) {
        // A streamed answer in this client's form (nil: not whole, or not rebuildable as JSON).
        var streamedReply: [UInt8]?
        if case .answer(.streamed(let a)) = d {
            streamedReply = a.flatMap { StoredAnswer.stream($0).reply(stream: request.stream, includeUsage: request.includeUsage, stamp: replyStamp) }
        }
        var ownCall = false
        if case .answer(.streamed) = d, streamedReply == nil { ownCall = true }
        if case .answer(.abandoned) = d { ownCall = true }
        if ownCall, case .follower(live: false) = role, !machine.isFinished {
            role = .none
            run(machine.flightRejoined())
            return
        }
        guard machine.flightFinished() == .deliverFromFlight else { return }
        defer { finished() }
        let live: Bool
        if case .follower(live: true) = role { live = true } else { live = false }
        switch d {
        case .endLive:
            respond { $0.endChunked() }
        case .failLive(let errorBody):
            status = 200
            respond { c in
                if !self.relay.sawError { self.writeChunk(c, Array("data: ".utf8) + errorBody + Array("\n\n".utf8)) }
                c.endChunked(close: true)
            }
        case .answer(let o):
            switch o {
            case .streamed:
                status = 200
                respond { c in
                    if live { c.endChunked(); return }
                    self.writeReply(c, streamedReply ?? [])
                }
            case .buffered(let st, let ct, let body):
                status = st
                respond { c in
                    if st == 200 { self.writeStored(c, .json(body)); return }
                    self.bytesOut += ResponseWriter.json(c, status: st, body, headers: self.responseHeaders(), contentType: ct)
                }
            case .abandoned:
                status = live ? 200 : 502
                let err = EngineError(.badGateway, "The request this one shared ended without an answer.", source: .upstream)
                respond { c in
                    if live {
                        self.writeChunk(c, err.sseEvent)
                        c.endChunked(close: true)
                    } else {
                        self.writeError(c, err)
                    }
                }
            case .failed(let st, let body, let retryAfter):
                status = live ? 200 : st
                respond { c in
                    if live {
                        self.writeChunk(c, Array("data: ".utf8) + body + Array("\n\n".utf8))
                        c.endChunked(close: true)
                        return
                    }
                    var h = self.responseHeaders()
                    if let ra = retryAfter { h.add("retry-after", String(ra)) }
                    self.bytesOut += ResponseWriter.json(c, status: st, body, headers: h)
                }
            }
        }
    }

    // MARK: the one place that performs actions

    private func run(_ action: RequestMachine.Action) {
        switch action {
        case .lookupCache:
            guard let cache = runtime.cache, let key = cachePlan.key else { post(.cacheAnswered(.miss)); return }
            // Completes at once (embedded store) or later (Redis): either way through the queue.
            cache.get(key: key, now: Loop.nowNanos(), wallMillis: wallMillis()) { [weak self] lookup in
                self?.post(.cacheAnswered(lookup))
            }
        case .replayCached:
            status = 200
            respond { self.writeReply($0, self.cachedReply) }
            finished()
        case .joinFlight:
            guard let key = cachePlan.key else { post(.flight(.alone)); return }
            let id = runtime.coalescer.newRequestID()
            coalescerId = id
            role = .asking
            runtime.coalescer.arrive(self, CoalescerMachine.Arrival(
                id: id, key: key, isStream: request.stream, mayFollow: cachePlan.follow, mayLead: cachePlan.lead))
        case .deliverFromFlight:
            preconditionFailure("deliverFromFlight is performed by deliver")
        case .leaveFlight:
            if let id = coalescerId { runtime.coalescer.left(id) }
            coalescerId = nil
            finished()
        case .requestAdmission:
            let now = Loop.nowNanos()
            let cands = runtime.backends.candidates(model: servedModel, now: now)
            if cands.isEmpty {
                run(machine.admissionFoundNoBackend())
            } else if let adm = runtime.admission {
                admissionToken = adm.request(self, pool: servedModel ?? "", candidates: cands)
            } else {
                post(.admitted(cands[0]))
            }
        case .sendQueuedComment(let writeHead):
            guard let c = client else { return }
            if writeHead {
                firstByteNanos = Loop.nowNanos()
                status = 200
                writeChunkedHead(c)
            }
            writeChunk(c, Array(": queued\n\n".utf8))
        case .leaveQueue:
            if let t = admissionToken { runtime.admission?.leave(t) }
            admissionToken = nil
            finished()
        case .pickBackend(let excluding):
            let chosen = runtime.backends.pick(model: servedModel, excluding: excluding, now: Loop.nowNanos())
            run(machine.backendChosen(chosen))
        case .fallBackToModel(let model):
            endAttempt(success: false)
            rewriteModel(model)
            extraHeaders.add("x-fallback", "model")
            let chosen = runtime.backends.pick(model: model, excluding: [], now: Loop.nowNanos())
            run(machine.backendChosen(chosen))
        case .sendUpstream(let id, let timeout):
            let b = runtime.backends[id]
            backend = b
            let permit = b.breaker.acquire(now: Loop.nowNanos())
            guard permit.isGranted else {
                // Its half-open probe went out since it was chosen (e.g. while we were queued):
                // not this backend, and not a failure of it. The next pick avoids it.
                post(.upstreamFailed(.connect))
                return
            }
            attempt = (b, permit)
            b.requestsSent += 1
            buffered.removeAll(keepingCapacity: true)
            let c = b.pool.acquire()
            upstream = c
            c.delegate = self
            arm(.upstream, timeout)
            upstreamStartNanos = Loop.nowNanos()
            body.withUnsafeBytes {
                c.send(method: "POST", path: request.kind.upstreamPath, headerBlock: b.requestHeaderBlock,
                       name: "x-request-id", value: requestId, body: $0)
            }
        case .bufferBody, .forwardChunk:
            preconditionFailure("\(action) is performed inline in handleBody")
        case .startStream(let timeout):
            arm(.upstream, timeout)
            status = 200
            if case .leader(let f) = role {
                runtime.coalescer.leaderHead(f, status: 200, contentType: upstreamContentType ?? "text/event-stream", isStream: true)
            }
            guard firstByteNanos == 0 else { return } // SSE head already sent while queued
            firstByteNanos = Loop.nowNanos()
            if let c = client { writeChunkedHead(c) }
        case .resumeUpstream:
            upstreamPaused = false
            arm(.upstream, runtime.requestPolicy.upstreamTimeout)
            upstream?.resumeReading()
        case .respondBuffered(let st):
            timerStorage?.cancel()
            endAttempt(success: st < 500)
            releaseUpstream()
            status = st
            let ct = upstreamContentType ?? "application/json"
            upstreamDone()
            if st == 200, let u = bufferedJSON?.usage { usage = (u.prompt, u.completion) }
            if case .leader(let f) = role {
                runtime.coalescer.leaderHead(f, status: st, contentType: ct, isStream: false)
            }
            let answer = buffered
            // Stored before the client has its answer (the store is on its way to Redis first),
            // so a repeat from this client finds it whichever worker takes it.
            if st == 200 { store(.json(answer)) }
            if machine.clientHeadSent {
                // The SSE head went out while queued: the answer becomes the stream's last event.
                respond { c in
                    self.writeChunk(c, Array("data: ".utf8) + answer + Array("\n\n".utf8))
                    if st == 200 { self.writeChunk(c, Array("data: [DONE]\n\n".utf8)) }
                    c.endChunked(close: st != 200)
                }
            } else {
                let h = responseHeaders()
                respond { self.bytesOut += ResponseWriter.json($0, status: st, answer, headers: h, contentType: ct) }
            }
            // The client has its bytes; now tell the followers (maybe over Redis).
            leaderFinished(.buffered(status: st, contentType: ct, body: answer))
            finished()
        case .finishStream:
            timerStorage?.cancel()
            endAttempt(success: !relay.sawError)
            releaseUpstream()
            upstreamDone()
            // Stored before the client's stream ends, as for a buffered answer: the events as
            // relayed, when they are a whole answer.
            let whole = relay.answer
            if let a = whole { store(.stream(a)) }
            respond { $0.endChunked() }
            if relay.sawError {
                // vLLM reported an error inside the stream: followers that wait get an error too.
                leaderFinished(.failed(EngineError(.badGateway, "The backend reported an error in the middle of the stream.", source: .upstream)))
            } else {
                leaderFinished(.streamed(whole))
            }
            finished()
        case .retry(let after):
            endAttempt(success: false)
            runtime.metrics.upstreamRetries += 1
            closeUpstream()
            relay = RequestSession.newRelay(runtime, request, cachePlan)
            arm(.backoff, after)
        case .lookupStale:
            endAttempt(success: false)
            closeUpstream()
            guard let cache = runtime.cache, let key = cachePlan.key else { post(.staleAnswered(.miss)); return }
            cache.getStale(key: key, now: Loop.nowNanos(), wallMillis: wallMillis()) { [weak self] lookup in
                self?.post(.staleAnswered(lookup))
            }
        case .replayStale:
            status = 200
            respond { self.writeReply($0, self.cachedReply) }
            switch staleAnswer {
            case .json(let body)?: leaderFinished(.buffered(status: 200, contentType: "application/json", body: body))
            case .stream(let a)?: leaderFinished(.streamed(a))
            case nil: leaderFinished(.abandoned)
            }
            finished()
        case .respondError(let err):
            timerStorage?.cancel()
            endAttempt(success: false)
            closeUpstream()
            status = err.status
            respond { self.writeError($0, err) }
            leaderFinished(.failed(err))
            finished()
        case .failStream(let err):
            timerStorage?.cancel()
            endAttempt(success: false)
            closeUpstream()
            respond { c in
                self.writeChunk(c, err.sseEvent)
                c.endChunked(close: true)
            }
            leaderFinished(.failed(err))
            finished()
        case .abortUpstream:
            timerStorage?.cancel()
            endAttempt(success: nil)
            closeUpstream()
            finished()
        case .none:
            break
        }
    }

    private var isLeader: Bool { if case .leader = role { return true } else { return false } }

    /// Headers on every response of this session.
    private func responseHeaders() -> HTTPHeaders {
        var h = extraHeaders
        h.add("x-request-id", requestId)
        h.add("x-cache", cacheOutcome)
        return h
    }


    private func wallMillis() -> UInt64 { UInt64(Loop.wallSeconds() * 1000) }

    /// Stores a complete 200 answer under this request's key, unless policy says no or the answer
    /// came from the fallback model (never stored under the primary model's key).
    private func store(_ answer: StoredAnswer) {
        guard cachePlan.store, !machine.usedFallback, let key = cachePlan.key, let cache = runtime.cache else { return }
        if case .json(let body) = answer, body.isEmpty { return }
        let c = runtime.config.cache
        cache.put(key: key, value: answer.encoded(), ttl: .seconds(validated: c.ttlSeconds),
                  staleTTL: .seconds(validated: c.staleTtlSeconds), now: Loop.nowNanos(), wallMillis: wallMillis())
        runtime.metrics.cacheStores += 1
    }

    // MARK: client writes (every body byte the client receives is counted in bytesOut)

    private func writeChunkedHead(_ c: HTTPServerConnection) {
        c.writeChunkedHead(status: 200, headers: ResponseWriter.sseHeaders(responseHeaders()))
    }

    private func writeChunk(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0, let c = client else { return }
        bytesOut += bytes.count
        c.writeChunk(bytes)
    }

    private func writeChunk(_ c: HTTPServerConnection, _ bytes: [UInt8]) {
        bytesOut += bytes.count
        bytes.withUnsafeBytes { c.writeChunk($0) }
    }


    private func writeError(_ c: HTTPServerConnection, _ err: EngineError) {
        bytesOut += runtime.writeError(err, to: c, requestId: requestId, extra: responseHeaders(), counted: false)
    }

    /// Writes a complete answer in the form this client asked for.
    private func writeStored(_ c: HTTPServerConnection, _ answer: StoredAnswer) {
        guard let reply = answer.reply(stream: request.stream, includeUsage: request.includeUsage, stamp: replyStamp) else {
            status = 502
            writeError(c, EngineError(.badGateway, "A stored answer could not be replayed."))
            return
        }
        writeReply(c, reply)
    }

    /// Writes an answer already in this client's form: SSE events, or a JSON body.
    private func writeReply(_ c: HTTPServerConnection, _ body: [UInt8]) {
        bytesOut += ResponseWriter.answer(c, body, stream: request.stream, headers: responseHeaders(), headSent: machine.clientHeadSent)
    }

    // MARK: coalescing

    /// As the leader: hand the outcome to the followers (here and in other processes).
    private func leaderFinished(_ o: Flight.Outcome) {
        guard case .leader(let f) = role else { return }
        role = .none
        coalescerId = nil
        runtime.coalescer.leaderEnded(f, o)
    }

    private func arm(_ kind: TimerKind, _ d: Duration) {
        guard !timerRetired else { return }
        armed = kind
        timer.schedule(after: d)
    }

    /// Tells the current attempt's breaker how it went: true success (2xx-4xx: a client's error
    /// is not the backend's), false failure, nil no verdict (the client left).
    private func endAttempt(success: Bool?) {
        guard let (b, permit) = attempt else { return }
        attempt = nil
        let now = Loop.nowNanos()
        switch success {
        case .some(true):
            if b.breaker.recordSuccess(now: now) == .closed { runtime.breakerChanged(b) }
        case .some(false):
            if b.breaker.recordFailure(now: now) == .opened { runtime.breakerChanged(b) }
        case .none:
            if permit == .probe { b.breaker.release() }
        }
    }

    private func rewriteModel(_ model: String) {
        if let b = OpenAIRequest.rewrite(body, model: model, includeUsage: false) { body = b }
        servedModel = model
    }

    private func releaseUpstream() {
        guard let c = upstream else { return }
        upstream = nil
        backend?.pool.release(c)
    }

    private func closeUpstream() {
        upstreamDone()
        guard let c = upstream else { return }
        upstream = nil
        c.delegate = nil
        c.close()
    }

    private var isDone = false

    private func finished() {
        guard !isDone else { return }
        isDone = true
        // A leader that ends without an answer (its client left, ...) must not leave its flight
        // behind: followers that arrived meanwhile look again, new requests start fresh.
        leaderFinished(.abandoned)
        if let id = coalescerId {
            coalescerId = nil
            runtime.coalescer.left(id)
        }
        runtime.requestFinished(self, termination: machine.termination ?? .normal)
        timerRetired = true
        if let t = timerStorage {
            timerStorage = nil
            runtime.returnTimer(t)
        }
    }

    /// Writes the final response; detaches from the client first, since completing the response
    /// may start the next pipelined request on the same connection. The caller ends the session
    /// (`finished`) after it has stored the answer and told the followers.
    private func respond(_ write: (HTTPServerConnection) -> Void) {
        if firstByteNanos == 0 { firstByteNanos = Loop.nowNanos() }
        guard let c = client else { return }
        client = nil
        if c.context === self { c.context = nil }
        write(c)
    }
}

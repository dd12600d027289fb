// RequestSession: the driver of one RequestMachine (style C). Every entry point is
// `let a = machine.event(...)` then `run(a)`; `run` is one exhaustive switch that performs I/O.
// Owns: the upstream connection while an exchange runs (returned to the backend's pool or
// closed), one Timer, the buffered response body, the breaker permit of the current attempt.
// Kept alive by its client connection's `context`; weakly referenced by the upstream connection
// (delegate) and by admission control (waiter).
import CEventShim
import Reactor

#if canImport(Glibc)
import Glibc
#endif

final class RequestSession: HTTPClientConnectionDelegate, AdmissionWaiter {
    private let runtime: EngineRuntime
    private weak var client: HTTPServerConnection?
    private var machine: RequestMachine
    let request: OpenAIRequest
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
    private let timer: Timer
    private var armed: TimerKind = .upstream
    private var buffered: [UInt8] = []
    private var upstreamContentType: String?
    private var sawErrorEvent = false
    private(set) var bytesOut = 0
    private(set) var firstByteNanos: UInt64 = 0
    private(set) var status = 0

    init(runtime: EngineRuntime, client: HTTPServerConnection, request: OpenAIRequest, body: [UInt8],
         requestId: String, requestedModel: String?, servedModel: String?, extraHeaders: HTTPHeaders) {
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
        if let fb = runtime.config.modelRegistry.fallbackModel, fb != servedModel, runtime.backends.isKnown(fb) != false {
            policy.fallbackModel = fb
        }
        self.machine = RequestMachine(policy: policy)
        self.timer = Timer(loop: runtime.loop)
        timer.onFire = { [unowned self] in self.run(self.machine.timerFired(self.armed)) }
    }

    func start() { run(machine.start()) }

    // MARK: events from the client side (via Frontend)

    func clientClosed() { run(machine.clientClosed()) }
    func clientDrained() { run(machine.clientDrained()) }

    // MARK: events from admission control

    func admissionAdmitted(_ backend: BackendID) {
        admissionToken = nil
        run(machine.admitted(backend))
    }
    func admissionQueued() {}
    func admissionRejected(retryAfterSeconds: Int) {
        admissionToken = nil
        run(machine.admissionRejected(retryAfterSeconds: retryAfterSeconds))
    }
    func admissionKeepAlive() { run(machine.queueKeepAliveDue()) }

    // MARK: events from the upstream connection

    func upstream(_ c: HTTPClientConnection, didReceiveHead status: Int, headers: HTTPHeaders) {
        guard c === upstream else { return }
        let ct = headers["content-type"]
        upstreamContentType = ct
        let sse = ct.map { $0.hasPrefix("text/event-stream") } ?? false
        self.status = status
        run(machine.upstreamHead(status: status, isEventStream: sse))
    }

    func upstream(_ c: HTTPClientConnection, didReceiveBody bytes: UnsafeRawBufferPointer) {
        guard c === upstream else { return }
        let blocked = client?.isWriteBlocked ?? false
        switch machine.upstreamBody(clientBlocked: blocked) {
        case .bufferBody:
            buffered.append(contentsOf: bytes)
        case .forwardChunk(let pause, let timeout):
            if !sawErrorEvent && containsErrorEvent(bytes) { sawErrorEvent = true }
            client?.writeChunk(bytes)
            bytesOut += bytes.count
            arm(.upstream, timeout)
            if pause { c.pauseReading() }
        case let other:
            run(other)
        }
    }

    func upstreamDidFinish(_ c: HTTPClientConnection) {
        guard c === upstream else { return }
        run(machine.upstreamEnd())
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
        run(machine.upstreamFailed(f))
    }

    // MARK: the one place that performs actions

    private func run(_ action: RequestMachine.Action) {
        switch action {
        case .requestAdmission:
            let now = Loop.nowNanos()
            let cands = runtime.backends.candidates(model: servedModel, now: now)
            if cands.isEmpty {
                run(machine.admissionFoundNoBackend())
            } else if let adm = runtime.admission {
                admissionToken = adm.request(self, pool: servedModel ?? "", candidates: cands)
            } else {
                run(machine.admitted(cands[0]))
            }
        case .sendQueuedComment(let writeHead):
            guard let c = client else { return }
            if writeHead {
                firstByteNanos = Loop.nowNanos()
                status = 200
                c.writeChunkedHead(status: 200, headers: sseHeaders())
            }
            Array(": queued\n\n".utf8).withUnsafeBytes { c.writeChunk($0) }
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
            attempt = (b, b.breaker.acquire(now: Loop.nowNanos()))
            b.requestsSent += 1
            buffered.removeAll(keepingCapacity: true)
            let c = b.pool.acquire()
            upstream = c
            c.delegate = self
            var h = HTTPHeaders()
            h.add("content-type", "application/json")
            h.add("x-request-id", requestId)
            if let k = b.apiKey { h.add("authorization", "Bearer " + k) }
            arm(.upstream, timeout)
            body.withUnsafeBytes { c.send(method: "POST", path: request.kind.upstreamPath, headers: h, body: $0) }
        case .bufferBody, .forwardChunk:
            preconditionFailure("\(action) is performed inline in didReceiveBody")
        case .startStream(let timeout):
            arm(.upstream, timeout)
            status = 200
            guard firstByteNanos == 0 else { return } // SSE head already sent while queued
            firstByteNanos = Loop.nowNanos()
            client?.writeChunkedHead(status: 200, headers: sseHeaders())
        case .resumeUpstream:
            upstream?.resumeReading()
        case .respondBuffered(let st):
            timer.cancel()
            endAttempt(success: st < 500)
            releaseUpstream()
            status = st
            if machine.clientHeadSent {
                // The SSE head went out while queued: the answer becomes the stream's last event.
                respond { c in
                    var ev = Array("data: ".utf8) + buffered + Array("\n\n".utf8)
                    if st == 200 { ev += Array("data: [DONE]\n\n".utf8) }
                    ev.withUnsafeBytes { c.writeChunk($0) }
                    c.endChunked(close: st != 200)
                }
                return
            }
            var h = extraHeaders
            h.add("content-type", upstreamContentType ?? "application/json")
            h.add("x-request-id", requestId)
            respond { $0.writeResponse(status: st, headers: h, body: buffered) }
        case .finishStream:
            timer.cancel()
            endAttempt(success: !sawErrorEvent)
            releaseUpstream()
            respond { $0.endChunked() }
        case .retry(let after):
            endAttempt(success: false)
            runtime.metrics.upstreamRetries += 1
            closeUpstream()
            arm(.backoff, after)
        case .lookupStale:
            endAttempt(success: false)
            closeUpstream()
            // The stale cache plugs in here (cache issue); without one, nothing is found.
            run(machine.staleLookedUp(found: false))
        case .replayStale:
            respond { _ in }
        case .respondError(let err):
            timer.cancel()
            endAttempt(success: false)
            closeUpstream()
            status = err.status
            respond { runtime.writeError(err, to: $0, requestId: requestId) }
        case .failStream(let err):
            timer.cancel()
            endAttempt(success: false)
            closeUpstream()
            status = err.status
            respond { c in
                err.sseEvent.withUnsafeBytes { c.writeChunk($0) }
                c.endChunked(close: true)
            }
        case .abortUpstream:
            timer.cancel()
            endAttempt(success: nil)
            closeUpstream()
            finished()
        case .none:
            break
        }
    }

    private func sseHeaders() -> HTTPHeaders {
        var h = extraHeaders
        h.add("content-type", "text/event-stream; charset=utf-8")
        h.add("cache-control", "no-cache")
        h.add("x-accel-buffering", "no")
        h.add("x-request-id", requestId)
        return h
    }

    private func arm(_ kind: TimerKind, _ d: Duration) {
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
        json_object_set_new(request.document.root, "model", json_string(model))
        body = request.document.serialized()
        servedModel = model
    }

    private func releaseUpstream() {
        guard let c = upstream else { return }
        upstream = nil
        backend?.pool.release(c)
    }

    private func closeUpstream() {
        guard let c = upstream else { return }
        upstream = nil
        c.delegate = nil
        c.close()
    }

    private func finished() {
        runtime.requestFinished(self, termination: machine.termination ?? .normal)
        timer.close()
    }

    /// Writes the final response; detaches from the client first, since completing the response
    /// may dispatch the next pipelined request on the same connection.
    private func respond(_ write: (HTTPServerConnection) -> Void) {
        if firstByteNanos == 0 { firstByteNanos = Loop.nowNanos() }
        bytesOut += buffered.count
        finished()
        guard let c = client else { return }
        if c.context === self { c.context = nil }
        write(c)
    }
}

/// True when an SSE chunk carries an error event (vLLM reports some failures inside a 200 stream).
private func containsErrorEvent(_ bytes: UnsafeRawBufferPointer) -> Bool {
    guard let base = bytes.baseAddress, bytes.count >= 14 else { return false }
    return "data: {\"error\"".withCString { needle in ces_contains(base, bytes.count, needle, 14) != 0 }
}

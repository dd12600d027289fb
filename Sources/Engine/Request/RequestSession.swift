// RequestSession: the driver of one RequestMachine (style C). Every entry point is
// `let a = machine.event(...)` then `run(a)`; `run` is one exhaustive switch that performs I/O.
// Owns: the upstream connection while an exchange runs (returned to the backend's pool or
// closed), one Timer, the buffered response body. Kept alive by its client connection's
// `context`; weakly referenced by the upstream connection as its delegate.
import CEventShim
import Reactor

final class RequestSession: HTTPClientConnectionDelegate {
    private let runtime: EngineRuntime
    private weak var client: HTTPServerConnection?
    private var machine: RequestMachine
    let request: OpenAIRequest
    private let body: [UInt8]
    let requestId: String
    let startNanos: UInt64
    private var upstream: HTTPClientConnection?
    private(set) var backend: Backend?
    private let timer: Timer
    private var armed: TimerKind = .upstream
    private var buffered: [UInt8] = []
    private var upstreamContentType: String?
    private(set) var bytesOut = 0
    private(set) var firstByteNanos: UInt64 = 0
    private(set) var status = 0

    init(runtime: EngineRuntime, client: HTTPServerConnection, request: OpenAIRequest, body: [UInt8], requestId: String) {
        self.runtime = runtime
        self.client = client
        self.request = request
        self.body = body
        self.requestId = requestId
        self.startNanos = Loop.nowNanos()
        self.machine = RequestMachine(policy: runtime.requestPolicy)
        self.timer = Timer(loop: runtime.loop)
        timer.onFire = { [unowned self] in self.run(self.machine.timerFired(self.armed)) }
    }

    func start() { run(machine.start()) }

    // MARK: events from the client side (via Frontend)

    func clientClosed() { run(machine.clientClosed()) }
    func clientDrained() { run(machine.clientDrained()) }

    // MARK: events from the upstream connection

    func upstream(_ c: HTTPClientConnection, didReceiveHead status: Int, headers: HTTPHeaders) {
        guard c === upstream else { return }
        let ct = headers["content-type"]
        upstreamContentType = ct
        let sse = ct.map { $0.hasPrefix("text/event-stream") } ?? false
        run(machine.upstreamHead(status: status, isEventStream: sse))
        self.status = status
    }

    func upstream(_ c: HTTPClientConnection, didReceiveBody bytes: UnsafeRawBufferPointer) {
        guard c === upstream else { return }
        let blocked = client?.isWriteBlocked ?? false
        switch machine.upstreamBody(clientBlocked: blocked) {
        case .bufferBody:
            buffered.append(contentsOf: bytes)
        case .forwardChunk(let pause, let timeout):
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
        case .closed: f = .closed(reused: c.exchangesCompleted > 0 && !(failure == .closed(receivedHead: true)))
        case .malformed: f = .malformed
        }
        run(machine.upstreamFailed(f))
    }

    // MARK: the one place that performs actions

    private func run(_ action: RequestMachine.Action) {
        switch action {
        case .pickBackend(let excluding):
            let chosen = runtime.backends.pick(model: request.model, excluding: excluding)
            run(machine.backendChosen(chosen))
        case .sendUpstream(let id, let timeout):
            let b = runtime.backends[id]
            backend = b
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
            firstByteNanos = Loop.nowNanos()
            var h = HTTPHeaders()
            h.add("content-type", "text/event-stream; charset=utf-8")
            h.add("cache-control", "no-cache")
            h.add("x-accel-buffering", "no")
            h.add("x-request-id", requestId)
            client?.writeChunkedHead(status: 200, headers: h)
        case .resumeUpstream:
            upstream?.resumeReading()
        case .respondBuffered(let st):
            timer.cancel()
            releaseUpstream()
            var h = HTTPHeaders()
            h.add("content-type", upstreamContentType ?? "application/json")
            h.add("x-request-id", requestId)
            status = st
            respond { $0.writeResponse(status: st, headers: h, body: buffered) }
        case .finishStream:
            timer.cancel()
            releaseUpstream()
            respond { $0.endChunked() }
        case .retry(let after):
            closeUpstream()
            arm(.backoff, after)
        case .respondError(let err):
            timer.cancel()
            closeUpstream()
            status = err.status
            respond { runtime.writeError(err, to: $0, requestId: requestId) }
        case .failStream(let err):
            timer.cancel()
            closeUpstream()
            respond { c in
                let ev = err.sseEvent
                ev.withUnsafeBytes { c.writeChunk($0) }
                c.endChunked(close: true)
            }
        case .abortUpstream:
            timer.cancel()
            closeUpstream()
            runtime.requestFinished(self, termination: machine.termination ?? .normal)
            timer.close()
        case .none:
            break
        }
    }

    private func arm(_ kind: TimerKind, _ d: Duration) {
        armed = kind
        timer.schedule(after: d)
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

    /// Writes the final response; detaches from the client first, since completing the response
    /// may dispatch the next pipelined request on the same connection.
    private func respond(_ write: (HTTPServerConnection) -> Void) {
        if firstByteNanos == 0 { firstByteNanos = Loop.nowNanos() }
        bytesOut += buffered.count
        runtime.requestFinished(self, termination: machine.termination ?? .normal)
        timer.close()
        guard let c = client else { return }
        if c.context === self { c.context = nil }
        write(c)
    }
}

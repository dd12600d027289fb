// RequestMachine: the life of one proxied generation request, as a pure value (style B).
// Events in (backend chosen, upstream head/body/end/failure, client gone or drained, timer
// fired), one Action out; RequestSession performs it. No I/O, no clock, no logging here.
//
//   client ─▶ auth ─▶ parse ─▶ router ─▶ cache ─▶ coalescer ─▶ admission ─▶ pool/breaker ─▶ vLLM
//                                 │          │hit        │follower       │429         │none
//                                 ▼404       ▼replay     ▼attach         ▼            ▼ fallback model
//                                                                                     → stale cache → 503
//   This machine is the last box: it owns the upstream exchange and the relay back:
//
//   pickingBackend ─chosen─▶ awaitingHead ─head(SSE 200)─▶ streaming ─end─▶ finished(--)
//        ▲  │none                │  │head(other)              │ fail/timeout ─▶ finished(SD/sD) + SSE error
//        │  ▼                    │  ▼                          │ client gone  ─▶ finished(CD)
//        │ finished(503)         │ buffering ─end─▶ finished(--) (relay status + body)
//        │                       │  │ fail/5xx/timeout (retryable, attempts left)
//        └──────── backoff ◀─────┴──┘         (no attempts left ─▶ finished(502/504))

/// Identifies a backend in the pool (an index into the configured instances).
public struct BackendID: Hashable, Sendable, CustomStringConvertible {
    public let index: Int
    public init(_ index: Int) { self.index = index }
    public var description: String { "b\(index)" }
}

/// How a request ended: HAProxy-style cause and phase (style J).
public struct Termination: Equatable, Sendable, CustomStringConvertible {
    public enum Cause: Character, Sendable { case normal = "-", client = "C", server = "S", policy = "P", resource = "R", `internal` = "I", clientTimeout = "c", serverTimeout = "s" }
    public enum Phase: Character, Sendable { case none = "-", request = "R", queue = "Q", connect = "C", headers = "H", data = "D", last = "L" }
    public var cause: Cause
    public var phase: Phase
    public init(_ cause: Cause, _ phase: Phase) { self.cause = cause; self.phase = phase }
    public static let normal = Termination(.normal, .none)
    public var description: String { String(cause.rawValue) + String(phase.rawValue) }
}

/// What failed on the upstream side.
public enum UpstreamFailure: Equatable, Sendable {
    case connect
    /// Closed or reset before the response was complete; `reused` when the connection had
    /// served earlier exchanges (a keep-alive race, always safe to retry).
    case closed(reused: Bool)
    case malformed
}

public enum TimerKind: Equatable, Sendable {
    case upstream
    case backoff
}

public struct RequestMachine: Sendable {
    public struct Policy: Sendable, Equatable {
        /// Total upstream attempts (1 + vllm.retry_count).
        public var maxAttempts: Int
        public var backoff: Duration
        /// vllm.timeout_seconds: until the whole buffered response, or between stream chunks.
        public var upstreamTimeout: Duration
        public init(maxAttempts: Int, backoff: Duration, upstreamTimeout: Duration) {
            self.maxAttempts = max(1, maxAttempts)
            self.backoff = backoff
            self.upstreamTimeout = upstreamTimeout
        }
    }

    public struct Attempts: Sendable, Equatable {
        public var count = 0
        public var tried: [BackendID] = []
        /// The last retryable failure, reported if attempts run out.
        public var lastError: EngineError?
    }

    enum State: Sendable, Equatable {
        /// Waiting for the driver to choose a backend. Next: awaitingHead, finished.
        case pickingBackend(Attempts)
        /// Request sent; waiting for the response head. Next: buffering, streaming, backoff, finished.
        case awaitingHead(Attempts, BackendID)
        /// A non-SSE response is being collected to be relayed whole. Next: backoff, finished.
        case buffering(Attempts, BackendID, status: Int)
        /// SSE head sent to the client; chunks relayed as they come. Next: finished.
        case streaming(BackendID, paused: Bool)
        /// Waiting `policy.backoff` before the next attempt. Next: pickingBackend, finished.
        case backoff(Attempts)
        /// Ended; nothing more is done. Terminal.
        case finished(Termination)
    }

    public enum Action: Equatable, Sendable {
        /// Ask the pool for a backend not in `excluding` (preferably), then call `backendChosen`.
        case pickBackend(excluding: [BackendID])
        /// Open (or reuse) a connection to the backend, send the request, arm the upstream timer.
        case sendUpstream(BackendID, timeout: Duration)
        /// Keep the body bytes just received (buffered response).
        case bufferBody
        /// Write the client the SSE head (status 200, text/event-stream), re-arm the upstream timer.
        case startStream(timeout: Duration)
        /// Write the bytes just received as one chunk; re-arm the upstream timer; pause reading the
        /// upstream when `pauseUpstream` (the client is slow).
        case forwardChunk(pauseUpstream: Bool, timeout: Duration)
        case resumeUpstream
        /// Relay the buffered response (status, body); return the connection to the pool.
        case respondBuffered(status: Int)
        /// End the chunked SSE response; return the connection to the pool.
        case finishStream
        /// Close the upstream connection, then wait `after` and call `backoffElapsed`.
        case retry(after: Duration)
        /// Close the upstream (if any); answer the client with this JSON error.
        case respondError(EngineError)
        /// Close the upstream; send this error as a final SSE event; end and close the client.
        case failStream(EngineError)
        /// The client is gone: close the upstream (vLLM aborts the generation), cancel timers.
        case abortUpstream
        case none
    }

    let policy: Policy
    private(set) var state: State

    public init(policy: Policy) {
        self.policy = policy
        self.state = .pickingBackend(Attempts())
    }

    public var isFinished: Bool { if case .finished = state { return true } else { return false } }
    public var termination: Termination? { if case .finished(let t) = state { return t } else { return nil } }

    /// The first action: ask for a backend.
    public mutating func start() -> Action {
        guard case .pickingBackend(let a) = state else { preconditionFailure("start in \(state)") }
        return .pickBackend(excluding: a.tried)
    }

    public mutating func backendChosen(_ b: BackendID?) -> Action {
        guard case .pickingBackend(var a) = state else { return .none }
        guard let b else {
            let err = a.lastError ?? EngineError(.noBackend, "No backend is available to serve this request.", source: .upstream, retryAfterSeconds: 1)
            state = .finished(Termination(.server, .connect))
            return .respondError(err)
        }
        a.count += 1
        a.tried.append(b)
        state = .awaitingHead(a, b)
        return .sendUpstream(b, timeout: policy.upstreamTimeout)
    }

    public mutating func upstreamHead(status: Int, isEventStream: Bool) -> Action {
        guard case .awaitingHead(let a, let b) = state else { return .none }
        if status >= 500 {
            return retryOrFail(a, EngineError(.badGateway, "The backend answered HTTP \(status).", source: .upstream, retry: .yes), phase: .headers)
        }
        if status == 200 && isEventStream {
            state = .streaming(b, paused: false)
            return .startStream(timeout: policy.upstreamTimeout)
        }
        state = .buffering(a, b, status: status)
        return .none
    }

    /// Body bytes arrived; `clientBlocked` says the client's output buffer is above its mark.
    public mutating func upstreamBody(clientBlocked: Bool) -> Action {
        switch state {
        case .buffering:
            return .bufferBody
        case .streaming(let b, let paused):
            if clientBlocked && !paused { state = .streaming(b, paused: true) }
            return .forwardChunk(pauseUpstream: clientBlocked && !paused, timeout: policy.upstreamTimeout)
        default:
            return .none
        }
    }

    public mutating func upstreamEnd() -> Action {
        switch state {
        case .buffering(_, _, let status):
            state = .finished(.normal)
            return .respondBuffered(status: status)
        case .streaming:
            state = .finished(.normal)
            return .finishStream
        case .awaitingHead(let a, _):
            // A message with no head cannot complete; treat as a broken upstream.
            return retryOrFail(a, EngineError(.badGateway, "The backend sent an incomplete response.", source: .upstream, retry: .yes), phase: .headers)
        default:
            return .none
        }
    }

    public mutating func upstreamFailed(_ f: UpstreamFailure) -> Action {
        let err: EngineError
        switch f {
        case .connect: err = EngineError(.badGateway, "Could not connect to the backend.", source: .upstream, retry: .yes)
        case .closed: err = EngineError(.badGateway, "The backend closed the connection before the response was complete.", source: .upstream, retry: .yes)
        case .malformed: err = EngineError(.badGateway, "The backend sent a malformed HTTP response.", source: .upstream, retry: .yes)
        }
        switch state {
        case .awaitingHead(var a, _):
            if case .closed(reused: true) = f {
                // Keep-alive race on a reused connection: retry at once, not counted.
                a.count -= 1
                state = .pickingBackend(a)
                return .pickBackend(excluding: [])
            }
            return retryOrFail(a, err, phase: f == .connect ? .connect : .headers)
        case .buffering(let a, _, _):
            return retryOrFail(a, err, phase: .data)
        case .streaming:
            state = .finished(Termination(.server, .data))
            return .failStream(EngineError(.badGateway, "The backend failed in the middle of the stream.", source: .upstream))
        default:
            return .none
        }
    }

    public mutating func timerFired(_ kind: TimerKind) -> Action {
        switch (kind, state) {
        case (.upstream, .awaitingHead(let a, _)):
            return retryOrFail(a, EngineError(.upstreamTimeout, "The backend did not answer in time.", source: .upstream, retry: .yes), phase: .headers)
        case (.upstream, .buffering(let a, _, _)):
            return retryOrFail(a, EngineError(.upstreamTimeout, "The backend did not answer in time.", source: .upstream, retry: .yes), phase: .data)
        case (.upstream, .streaming):
            state = .finished(Termination(.serverTimeout, .data))
            return .failStream(EngineError(.upstreamTimeout, "The backend stopped sending in the middle of the stream.", source: .upstream))
        case (.backoff, .backoff(let a)):
            state = .pickingBackend(a)
            return .pickBackend(excluding: a.tried)
        default:
            return .none // stale firing
        }
    }

    public mutating func clientClosed() -> Action {
        switch state {
        case .finished:
            return .none
        case .streaming:
            state = .finished(Termination(.client, .data))
            return .abortUpstream
        case .buffering:
            state = .finished(Termination(.client, .data))
            return .abortUpstream
        case .awaitingHead:
            state = .finished(Termination(.client, .headers))
            return .abortUpstream
        case .pickingBackend, .backoff:
            state = .finished(Termination(.client, .connect))
            return .abortUpstream
        }
    }

    public mutating func clientDrained() -> Action {
        guard case .streaming(let b, paused: true) = state else { return .none }
        state = .streaming(b, paused: false)
        return .resumeUpstream
    }

    private mutating func retryOrFail(_ a: Attempts, _ err: EngineError, phase: Termination.Phase) -> Action {
        var a = a
        a.lastError = err
        if a.count < policy.maxAttempts {
            state = .backoff(a)
            return .retry(after: policy.backoff)
        }
        state = .finished(Termination(err.kind == .upstreamTimeout ? .serverTimeout : .server, phase))
        return .respondError(err)
    }
}

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
public struct Termination: Hashable, Sendable, CustomStringConvertible {
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
        /// Ask admission control (KV pressure) before the first attempt.
        public var usesAdmission: Bool
        /// The model to try when the requested model's pool cannot serve (nil: none, or the same).
        public var fallbackModel: String?
        /// Whether a stale cache entry may answer when every backend failed.
        public var canUseStale: Bool
        /// Whether the client asked for a stream (queued streams get `: queued` comments).
        public var isStream: Bool
        /// Look the response cache up first (a cacheable request without Cache-Control: no-cache).
        public var lookupCache: Bool = false
        /// Ask the coalescer (single-flight, in this process and across processes) before calling
        /// upstream: it says lead, follow, or go alone.
        public var coalesce: Bool = false
        public init(maxAttempts: Int, backoff: Duration, upstreamTimeout: Duration, usesAdmission: Bool = false,
                    fallbackModel: String? = nil, canUseStale: Bool = false, isStream: Bool = false) {
            self.maxAttempts = max(1, maxAttempts)
            self.backoff = backoff
            self.upstreamTimeout = upstreamTimeout
            self.usesAdmission = usesAdmission
            self.fallbackModel = fallbackModel
            self.canUseStale = canUseStale
            self.isStream = isStream
        }
    }

    public struct Attempts: Sendable, Equatable {
        public var count = 0
        public var tried: [BackendID] = []
        /// The last retryable failure, reported if attempts run out.
        public var lastError: EngineError?
    }

    enum State: Sendable, Equatable {
        /// Created; nothing asked yet. Next: lookingUpCache, joiningFlight, admitting, pickingBackend.
        case received
        /// Waiting for the response cache. Next: finished (hit), joiningFlight, admitting, pickingBackend.
        case lookingUpCache
        /// Asking the coalescer whether an identical request is in flight. Next: following, admitting, pickingBackend.
        case joiningFlight
        /// Attached to an identical request in flight; its answer will be ours. Next: finished,
        /// joiningFlight (the flight's source vanished before sending anything: look again).
        case following
        /// Waiting in admission control's queue (KV pressure). Next: awaitingHead, finished.
        case admitting
        /// Every backend failed; asking the cache for a stale entry. Next: finished.
        case lookingUpStale(EngineError, Termination)
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
        /// Look the cache up; answer with `cacheLookedUp`.
        case lookupCache
        /// Answer from the fresh cache entry the driver holds (X-Cache: HIT).
        case replayCached
        /// Ask the coalescer to lead, follow or go alone; answer with `flightJoined`.
        case joinFlight
        /// Deliver what the flight we followed produced (X-Coalesced: true).
        case deliverFromFlight
        /// Stop following (the client went away); the leader and other followers carry on.
        case leaveFlight
        /// Ask admission control for a backend; answer with admitted/queued/admissionRejected.
        case requestAdmission
        /// A queued request's keepalive: for a stream, write `: queued` (after the SSE head when
        /// `writeHead`, the first time).
        case sendQueuedComment(writeHead: Bool)
        /// Leave the admission queue (the client went away while queued).
        case leaveQueue
        /// The requested model's pool cannot serve: rewrite the request to this model, then pick a
        /// backend of its pool and call `backendChosen`.
        case fallBackToModel(String)
        /// Ask the cache for a stale entry of this request; answer with `staleLookedUp`.
        case lookupStale
        /// Answer from the stale entry the driver holds (X-Cache: STALE); return nothing upstream.
        case replayStale
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
    /// The SSE head went to the client (a queued stream's keepalive, or the stream itself).
    public private(set) var clientHeadSent = false
    public private(set) var usedFallback = false

    public init(policy: Policy) {
        self.policy = policy
        self.state = .received
    }

    public var isFinished: Bool { if case .finished = state { return true } else { return false } }
    public var termination: Termination? { if case .finished(let t) = state { return t } else { return nil } }

    /// The first action: the cache, the coalescer, admission control, or straight to the pool.
    public mutating func start() -> Action {
        guard case .received = state else { preconditionFailure("start in \(state)") }
        if policy.lookupCache {
            state = .lookingUpCache
            return .lookupCache
        }
        return afterCache()
    }

    public mutating func cacheLookedUp(found: Bool) -> Action {
        guard case .lookingUpCache = state else { return .none }
        if found {
            state = .finished(.normal)
            return .replayCached
        }
        return afterCache()
    }

    public mutating func flightJoined(asLeader: Bool) -> Action {
        guard case .joiningFlight = state else { return .none }
        if !asLeader {
            state = .following
            return .none
        }
        return toAdmission()
    }

    /// The flight we followed lost its source before it sent us anything: ask the coalescer again
    /// (now we may lead).
    public mutating func flightRejoined() -> Action {
        guard case .following = state else { return .none }
        state = .joiningFlight
        return .joinFlight
    }

    /// The flight we followed ended (with an answer or an error, the driver holds it).
    public mutating func flightFinished() -> Action {
        guard case .following = state else { return .none }
        state = .finished(.normal)
        return .deliverFromFlight
    }

    private mutating func afterCache() -> Action {
        if policy.coalesce {
            state = .joiningFlight
            return .joinFlight
        }
        return toAdmission()
    }

    private mutating func toAdmission() -> Action {
        if policy.usesAdmission {
            state = .admitting
            return .requestAdmission
        }
        state = .pickingBackend(Attempts())
        return .pickBackend(excluding: [])
    }

    /// Admission control chose `backend` (now or after a wait).
    public mutating func admitted(_ backend: BackendID) -> Action {
        guard case .admitting = state else { return .none }
        state = .pickingBackend(Attempts())
        return backendChosen(backend)
    }

    /// Admission control has no backend to offer at all (none serves or none is available).
    public mutating func admissionFoundNoBackend() -> Action {
        guard case .admitting = state else { return .none }
        state = .pickingBackend(Attempts())
        return backendChosen(nil)
    }

    /// A queued request's keepalive is due.
    public mutating func queueKeepAliveDue() -> Action {
        guard case .admitting = state, policy.isStream else { return .none }
        let first = !clientHeadSent
        clientHeadSent = true
        return .sendQueuedComment(writeHead: first)
    }

    /// KV pressure: every backend rejects, the queue is full, or the wait ran out. No fallback:
    /// the pool is healthy, just full.
    public mutating func admissionRejected(retryAfterSeconds: Int) -> Action {
        guard case .admitting = state else { return .none }
        return finish(EngineError(.rateLimited, "The backends for this model are at capacity (KV cache). Retry later.",
                                  source: .upstream, retryAfterSeconds: retryAfterSeconds), Termination(.resource, .queue))
    }

    public mutating func staleLookedUp(found: Bool) -> Action {
        guard case .lookingUpStale(let err, let t) = state else { return .none }
        if found {
            state = .finished(.normal)
            return .replayStale
        }
        return finish(err, t)
    }

    public mutating func backendChosen(_ b: BackendID?) -> Action {
        guard case .pickingBackend(var a) = state else { return .none }
        guard let b else {
            let err = a.lastError ?? EngineError(.noBackend, "No backend is available to serve this request.", source: .upstream, retryAfterSeconds: 1)
            return exhausted(err, phase: .connect)
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
        if status == 200 && isEventStream != policy.isStream {
            // A stream to a plain request, or a plain body to a stream request: not vLLM's
            // answer to what was asked (the untrusted upstream; never relayed or cached).
            return retryOrFail(a, EngineError(.badGateway, "The backend answered in the wrong form (stream or not).", source: .upstream, retry: .yes), phase: .headers)
        }
        if status == 200 && isEventStream {
            state = .streaming(b, paused: false)
            clientHeadSent = true
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

    /// The upstream response ended. `streamComplete`: for a stream, whether it ended as a stream
    /// must (`data: [DONE]`, no partial event); an end without it is a broken stream.
    /// `bodyIsAnswer`: for a buffered 2xx, whether the body is a JSON answer of the endpoint's
    /// shape; a 2xx that is not (garbage, HTML, 204, another status) is the backend's failure.
    public mutating func upstreamEnd(streamComplete: Bool = true, bodyIsAnswer: Bool = true) -> Action {
        switch state {
        case .buffering(let a, _, let status):
            if (200..<300).contains(status) && (status != 200 || !bodyIsAnswer) {
                return retryOrFail(a, EngineError(.badGateway, "The backend answered HTTP \(status) without a valid completion.", source: .upstream, retry: .yes), phase: .data)
            }
            state = .finished(.normal)
            return .respondBuffered(status: status)
        case .streaming:
            guard streamComplete else {
                state = .finished(Termination(.server, .data))
                return .failStream(EngineError(.badGateway, "The backend ended the stream without completing it.", source: .upstream))
            }
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
        case .pickingBackend, .backoff, .received, .lookingUpStale:
            state = .finished(Termination(.client, .connect))
            return .abortUpstream
        case .admitting:
            state = .finished(Termination(.client, .queue))
            return .leaveQueue
        case .following:
            state = .finished(Termination(.client, .data))
            return .leaveFlight
        case .lookingUpCache, .joiningFlight:
            state = .finished(Termination(.client, .request))
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
        var err = err
        // When the chain ends with it, tell the client when to come back (like the 503).
        if err.retryAfterSeconds == nil { err.retryAfterSeconds = 1 }
        a.lastError = err
        if a.count < policy.maxAttempts {
            state = .backoff(a)
            // Linear backoff: retry_backoff_seconds × attempt number.
            return .retry(after: policy.backoff * a.count)
        }
        return exhausted(err, phase: phase)
    }

    /// The pool could not serve: fallback model, then a stale cache entry, then the error.
    private mutating func exhausted(_ err: EngineError, phase: Termination.Phase) -> Action {
        if !usedFallback, let fb = policy.fallbackModel {
            usedFallback = true
            state = .pickingBackend(Attempts())
            return .fallBackToModel(fb)
        }
        let t = Termination(err.kind == .upstreamTimeout ? .serverTimeout : .server, phase)
        if policy.canUseStale {
            state = .lookingUpStale(err, t)
            return .lookupStale
        }
        return finish(err, t)
    }

    /// Ends with an error: JSON before the client saw a head, a final SSE event after.
    private mutating func finish(_ err: EngineError, _ t: Termination) -> Action {
        state = .finished(t)
        return clientHeadSent ? .failStream(err) : .respondError(err)
    }
}

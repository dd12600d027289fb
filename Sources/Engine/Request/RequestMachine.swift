// RequestMachine: the life of one generation request, as a pure value (style B). Every fact —
// the cache's answer, the coalescer's decision, admission, the backend chosen, the upstream head,
// each upstream read, its end or failure, a timer, the client leaving or draining — is an Event;
// `handle` returns the one Action the driver (RequestSession) performs. The machine decides
// everything a request's answer depends on: which stage comes next, what each upstream read
// relays (StreamRelay), what the client is sent in the end (a Reply), what is stored in the cache,
// what the flight's followers get, and how the exchange is judged by the breaker. No I/O, no
// clock, no logging here.
//
//   client ─▶ auth ─▶ parse ─▶ router ─▶ cache ─▶ coalescer ─▶ admission ─▶ pool/breaker ─▶ vLLM
//                                 │          │hit        │follower       │429         │none
//                                 ▼404       ▼replay     ▼attach         ▼            ▼ fallback model
//                                                                                     → stale cache → 503
//   received ─▶ lookingUpCache ─hit─▶ finished (replay)
//      │             │miss
//      ▼             ▼
//   joiningFlight ─follow─▶ following ─ended─▶ finished (the flight's answer, in this client's form)
//      │lead/alone              │source lost before anything was sent ─▶ joiningFlight
//      ▼
//   admitting ─▶ pickingBackend ─chosen─▶ awaitingHead ─head(SSE 200)─▶ streaming ─end─▶ finished
//                  ▲  │none                │  │head(other)                │ fail/timeout ─▶ finished + SSE error
//                  │  ▼                    │  ▼                           │ client gone  ─▶ finished(CD)
//                  │ fallback/stale/503    │ buffering ─end─▶ finished (status + body relayed)
//                  │                       │  │ fail/5xx/timeout (retryable, attempts left)
//                  └──────── backoff ◀─────┴──┘         (no attempts left ─▶ fallback, stale, 502/504)
// Pure: no imports, no I/O.

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
    /// A stream event that cannot be relayed (invalid JSON or UTF-8, too long): the stream broke.
    case invalidEvent
}

public enum TimerKind: Equatable, Sendable {
    case upstream
    case backoff
}

/// The X-Cache outcome of a request.
enum CacheOutcome: String, Equatable, CaseIterable {
    case hit = "HIT", miss = "MISS", stale = "STALE", bypass = "BYPASS"

    /// Its position in `allCases` (tables by outcome).
    var index: Int {
        switch self {
        case .hit: return 0
        case .miss: return 1
        case .stale: return 2
        case .bypass: return 3
        }
    }
}

struct RequestMachine {
    typealias FlightID = CoalescerMachine.FlightID

    struct Policy: Equatable {
        /// Total upstream attempts (1 + vllm.retry_count).
        var maxAttempts: Int
        var backoff: Duration
        /// vllm.timeout_seconds: until the whole buffered response, or between stream chunks.
        var upstreamTimeout: Duration
        /// Ask admission control (KV pressure) before the first attempt.
        var usesAdmission: Bool
        /// The model to try when the requested model's pool cannot serve (nil: none, or the same).
        var fallbackModel: String?
        /// Whether a stale cache entry may answer when every backend failed.
        var canUseStale: Bool
        /// Whether the client asked for a stream (an SSE answer is only valid then).
        var isStream: Bool
        var kind: EndpointKind = .chat
        /// The client asked for the usage chunk (else it is relayed to followers only).
        var includeUsage = false
        /// Look the response cache up first (a cacheable request without Cache-Control: no-cache).
        var lookupCache = false
        /// Store a complete 200 answer (cache.enabled, cacheable, no Cache-Control: no-store).
        var storesAnswer = false
        /// Ask the coalescer (single-flight, in this process and across processes) before calling
        /// upstream: it says lead, follow, or go alone.
        var coalesce = false
        /// May lead a flight others follow (then a stream is recorded for them).
        var mayLead = false
        /// vllm.max_event_bytes: an SSE event longer than this breaks the stream.
        var maxEventBytes = 1 << 20
        /// A replay's own id and created (a hit, a stale entry, a follower's copy): vLLM's id form
        /// for this request's X-Request-Id, and its arrival time.
        var stamp = ReplyStamp(id: "", created: 0)

        init(maxAttempts: Int, backoff: Duration, upstreamTimeout: Duration, usesAdmission: Bool = false,
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

    struct Attempts: Equatable {
        var count = 0
        /// The backends tried, in order: the first inline (a request that is not retried makes no
        /// array), the rest in `laterTried`.
        private var firstTried: BackendID?
        private var laterTried: [BackendID] = []
        /// The last retryable failure, reported if attempts run out.
        var lastError: EngineError?

        var tried: [BackendID] {
            guard let firstTried else { return [] }
            return [firstTried] + laterTried
        }

        mutating func noteTried(_ b: BackendID) {
            if firstTried == nil { firstTried = b } else { laterTried.append(b) }
        }
    }

    enum State: Equatable {
        /// Created; nothing asked yet. Next: lookingUpCache, joiningFlight, admitting, pickingBackend.
        case received
        /// Waiting for the response cache. Next: finished (hit), joiningFlight, admitting, pickingBackend.
        case lookingUpCache
        /// Asking the coalescer whether an identical request is in flight. Next: following, admitting, pickingBackend.
        case joiningFlight
        /// Attached to an identical request in flight; its answer will be ours. Next: finished,
        /// joiningFlight (the flight ended without an answer this client can use: look again).
        case following
        /// Waiting in admission control's queue (KV pressure). Next: awaitingHead, finished.
        case admitting
        /// Every backend failed; asking the cache for a stale entry. Next: finished.
        case lookingUpStale(EngineError, Termination)
        /// Waiting for the driver to choose a backend (`attempts` so far). Next: awaitingHead, finished.
        case pickingBackend
        /// Request sent; waiting for the response head. Next: buffering, streaming, backoff, finished.
        case awaitingHead(BackendID)
        /// A non-SSE response is being collected to be relayed whole. Next: backoff, finished.
        case buffering(BackendID, status: Int, contentType: String)
        /// SSE head sent to the client; whole events relayed as they come. Next: finished.
        case streaming(BackendID, paused: Bool)
        /// Waiting `policy.backoff` before the next attempt. Next: pickingBackend, finished.
        case backoff
        /// Ended; nothing more is done. Terminal.
        case finished(Termination)
    }

    /// This request's part in single-flight (orthogonal to `state`).
    enum Role: Equatable {
        case none
        /// Asked the coalescer; waiting for lead / follow / alone.
        case asking
        /// Calls upstream for the flight; `headless` once its own client left (it goes on for
        /// the followers).
        case leading(FlightID, headless: Bool)
        /// `live`: relaying the flight's stream as it comes.
        case following(live: Bool)
    }

    /// Everything the driver may tell the machine.
    enum Event {
        case start
        case cacheAnswered(CacheLookup)
        case staleAnswered(CacheLookup)
        case flight(FlightEvent)
        /// Whole events of the flight's stream (a live follower), copied because they arrived
        /// while another event was being handled.
        case flightEvents([UInt8])
        case admitted(BackendID)
        case admissionFoundNoBackend
        case admissionRejected(retryAfterSeconds: Int)
        /// A past deadline, a fairer tenant's displacement, or a spent token/request budget.
        case admissionRefused(AdmissionRefusal)
        case admissionKeepAlive
        case backendChosen(BackendID?)
        case upstreamHead(status: Int, contentType: String?, contentLength: Int?)
        /// Body bytes (copied because they arrived while another event was being handled).
        case upstreamBody([UInt8])
        case upstreamEnd
        case upstreamFailed(UpstreamFailure)
        case timerFired(TimerKind)
        case clientClosed
        case clientDrained
    }

    /// What the coalescer tells a request (CoalescerDriver → the session's queue).
    enum FlightEvent {
        /// Call upstream for the flight (followers get the answer through the coalescer).
        case lead(FlightID)
        /// Call upstream outside any flight.
        case alone
        /// Follow; `live`: start the SSE stream with `recorded` now, then relay events as they come.
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

    /// What the client is sent at the end (written once; the response is then complete).
    enum Reply: Equatable {
        /// A whole answer already in the client's form: SSE events (after the head unless it went
        /// out already) or a 200 JSON body.
        case answer([UInt8])
        /// A JSON body with this status (a relayed upstream answer or error).
        case json(status: Int, body: [UInt8], contentType: String, retryAfter: Int?)
        /// An OpenAI-style JSON error.
        case error(EngineError)
        /// The end of the SSE stream already under way.
        case endStream
        /// These last bytes on the SSE stream, then its end (`close`: and the connection's).
        case lastEvents([UInt8], close: Bool)
    }

    /// The request's last action: everything that happens when it ends, taken by the driver in
    /// the order of `Finish.steps`.
    struct Finish: Equatable {
        /// One part of a request's end.
        enum Step: Equatable, CaseIterable {
            /// The timer off, the breaker's verdict, the upstream connection kept or closed.
            case upstream
            /// The admission queue left, the tenant's budget settled.
            case admission
            /// The answer stored (`store`).
            case store
            /// The flight this request leads ended with `outcome`.
            case endFlight
            /// The reply written (`reply`).
            case reply
            /// The coalescer left (`leaveFlight`).
            case leaveFlight
            /// The request logged and counted.
            case logged
        }
        /// The store and the flight's end come before the reply: once the client has its answer it
        /// may send the same request again, on a new connection that another worker takes, and
        /// that request must find the answer stored and the flight over (a hit, or a flight of its
        /// own), never join this one and be handed this one's end.
        static let steps: [Step] = [.upstream, .admission, .store, .endFlight, .reply, .leaveFlight, .logged]
        enum Verdict: Equatable {
            /// 2xx–4xx (a client's error is not the backend's).
            case success
            case failure
            /// The client left: no verdict (a half-open probe is released).
            case noVerdict
        }
        /// Return the connection to the backend's pool (a whole response read), else close it.
        var reuseUpstream = false
        var verdict: Verdict = .noVerdict
        var leaveQueue = false
        var store: StoredAnswer?
        /// Nil: the client is gone.
        var reply: Reply?
        /// When this request leads a flight: what its followers get.
        var flight: FlightID?
        var outcome: Flight.Outcome?
        /// Leave the coalescer (asked it, or followed without being delivered).
        var leaveFlight = false
    }

    /// How a read of the stream is relayed (the events are in `relay`).
    struct Forward: Equatable {
        /// Pause reading the upstream (the client is slow); no upstream deadline while paused.
        var pause = false
        /// Re-arm the upstream deadline (a read arrived and reading goes on).
        var rearm = false
        /// The read held an event that cannot be relayed: after writing the events before it,
        /// report the stream broken (`upstreamFailed(.invalidEvent)`).
        var broken = false
    }

    enum Action: Equatable {
        /// Look the cache up; answer with `cacheAnswered`.
        case lookupCache
        /// Ask the coalescer to lead, follow or go alone; answer with `flight(...)`.
        case joinFlight
        /// Our client left while we lead: tell the coalescer (it answers continueHeadless or abort).
        case leaderLeft
        /// Ask admission control for a backend; answer with admitted/queued/admissionRejected.
        case requestAdmission
        /// A queued stream's keepalive: write `: queued` (after the SSE head when `writeHead`).
        case sendQueuedComment(writeHead: Bool)
        /// Ask the pool for a backend of `model`'s pool not in `excluding` (preferably);
        /// `fallBack`: this is the fallback model (rewrite the request to it first; the current
        /// attempt failed). Answer with `backendChosen`.
        case pickBackend(excluding: [BackendID], fallBackTo: String?)
        /// Open (or reuse) a connection to the backend, send the request, arm the upstream timer.
        case sendUpstream(BackendID, timeout: Duration)
        /// Write the client the SSE head unless `writeHead` is false (it went out while queued);
        /// re-arm the upstream timer; a leader tells its flight the stream started.
        case startStream(timeout: Duration, writeHead: Bool)
        /// Write `relay.clientEvents` (and, leading, hand `relay.events` to the flight).
        case forward(Forward)
        /// A live follower: write the SSE head (when `writeHead`), then `relay.clientEvents`.
        case forwardFlight(writeHead: Bool)
        case resumeUpstream(timeout: Duration)
        /// Close the upstream connection, then wait `after` and fire the backoff timer.
        case retry(after: Duration)
        /// Ask the cache for a stale entry; answer with `staleAnswered`. The attempt failed.
        case lookupStale
        case finish(Finish)
        case none
    }

    let policy: Policy
    private(set) var state: State = .received
    // STYLE-EXCEPTION: the attempts belong to pickingBackend, awaitingHead, buffering and backoff
    // (reset when the pool is asked afresh: admission, the fallback model), but live beside
    // `state`: carried in those cases, they were copied out and back (their array and error
    // retained and released) on every transition of every request.
    /// The upstream attempts of the current model (see the states above).
    private(set) var attempts = Attempts()
    private(set) var role: Role = .none
    /// The SSE head went to the client (a queued stream's keepalive, the stream, or a live flight).
    private(set) var clientHeadSent = false
    private(set) var usedFallback = false
    /// The client left (a headless leader goes on for its followers).
    private(set) var clientGone = false
    /// Answered by another request's upstream call (in this process or another), at some point.
    private(set) var isFollower = false
    private(set) var cacheOutcome: CacheOutcome
    /// The status the client sees (the upstream's, until a reply says otherwise).
    private(set) var status = 0
    /// Tokens from vLLM's usage (body or usage chunk).
    private(set) var usage: UpstreamJSON.Usage?
    /// The relayed stream (or, for a live follower, the flight's): whole events, usage, the recording.
    private(set) var relay: StreamRelay
    /// The non-SSE upstream answer, collected whole.
    private(set) var buffered: [UInt8] = []

    /// `bypassCache`: the request is not cacheable at all (X-Cache: BYPASS whatever happens).
    init(policy: consuming Policy, cacheable: Bool = true) {
        self.cacheOutcome = cacheable && policy.lookupCache ? .miss : .bypass
        self.relay = Self.newRelay(policy, records: policy.storesAnswer || policy.mayLead)
        // Last: the policy moves in (read after it was stored, it was copied).
        self.policy = policy
    }

    /// A relayed route's stream passes through unread; a generation's is read event by event.
    private static func newRelay(_ p: Policy, records: Bool) -> StreamRelay {
        var passthrough = false
        if case .relay = p.kind { passthrough = true }
        return StreamRelay(includeUsage: p.includeUsage, records: records, maxEventBytes: p.maxEventBytes, passthrough: passthrough)
    }

    var isFinished: Bool { if case .finished = state { return true } else { return false } }
    var termination: Termination? { if case .finished(let t) = state { return t } else { return nil } }
    /// The relay's last read for this client (StreamRelay.withClientEvents), lent in place.
    mutating func withClientEvents<R>(_ body: (UnsafeBufferPointer<UnsafeRawBufferPointer>) -> R) -> R {
        relay.withClientEvents(body)
    }
    var leadsFlight: FlightID? { if case .leading(let f, _) = role { return f } else { return nil } }

    /// The one entry point for the driver.
    mutating func handle(_ e: Event, clientBlocked: Bool = false) -> Action {
        switch e {
        case .start: return start()
        case .cacheAnswered(let l): return cacheAnswered(l)
        case .staleAnswered(let l): return staleAnswered(l)
        case .flight(let f): return flight(f)
        case .flightEvents(let b): return b.withUnsafeBytes { flightEvents($0) }
        case .admitted(let b): return admitted(b)
        case .admissionFoundNoBackend: return admissionFoundNoBackend()
        case .admissionRejected(let ra): return admissionRejected(retryAfterSeconds: ra)
        case .admissionRefused(let r): return admissionRefused(r)
        case .admissionKeepAlive: return queueKeepAliveDue()
        case .backendChosen(let b): return backendChosen(b)
        case .upstreamHead(let st, let ct, let cl): return upstreamHead(status: st, contentType: ct, contentLength: cl)
        case .upstreamBody(let b): return b.withUnsafeBytes { upstreamBody($0, clientBlocked: clientBlocked) }
        case .upstreamEnd: return upstreamEnd()
        case .upstreamFailed(let f): return upstreamFailed(f)
        case .timerFired(let k): return timerFired(k)
        case .clientClosed: return clientClosed()
        case .clientDrained: return clientDrained()
        }
    }

    // MARK: cache, coalescer, admission

    /// The first action: the cache, the coalescer, admission control, or straight to the pool.
    mutating func start() -> Action {
        guard case .received = state else { return .none }
        if policy.lookupCache {
            state = .lookingUpCache
            return .lookupCache
        }
        return afterCache()
    }

    /// A fresh entry this client can be given in its form is a hit; anything else (a stream that
    /// does not rebuild as JSON, an unknown format, stale, a miss, the store down) is a miss.
    mutating func cacheAnswered(_ lookup: CacheLookup) -> Action {
        guard case .lookingUpCache = state else { return .none }
        if case .fresh(let stored) = lookup,
           let reply = StoredAnswer.reply(encoded: stored, stream: policy.isStream, includeUsage: policy.includeUsage, stamp: policy.stamp) {
            cacheOutcome = .hit
            status = 200
            return end(.normal, Finish(reply: .answer(reply)))
        }
        return afterCache()
    }

    private mutating func afterCache() -> Action {
        if policy.coalesce {
            state = .joiningFlight
            role = .asking
            return .joinFlight
        }
        return toAdmission()
    }

    mutating func flight(_ e: FlightEvent) -> Action {
        switch e {
        case .lead(let f):
            guard case .joiningFlight = state else { return .none }
            role = .leading(f, headless: false)
            return toAdmission()
        case .alone:
            guard case .joiningFlight = state else { return .none }
            role = .none
            return toAdmission()
        case .follow(let live, let recorded):
            guard case .joiningFlight = state else { return .none }
            state = .following
            role = .following(live: false)
            isFollower = true
            return live ? goLive(recorded) : .none
        case .goLive(let recorded):
            return goLive(recorded)
        case .ended(let d):
            return deliver(d)
        case .rejoin:
            guard case .following = state else { return .none }
            return afterCache()
        case .continueHeadless:
            guard case .leading(let f, _) = role, clientGone else { return .none }
            role = .leading(f, headless: true)
            return .none
        case .abort:
            return abandon()
        }
    }

    /// The flight's stream, for a follower that relays it as it comes: head, the events so far.
    private mutating func goLive(_ recorded: [UInt8]) -> Action {
        guard case .following(live: false) = role, policy.isStream, !clientGone else { return .none }
        role = .following(live: true)
        // The flight's events are only split for this client here: nothing to record.
        relay = StreamRelay(includeUsage: policy.includeUsage, records: false, maxEventBytes: policy.maxEventBytes)
        status = 200
        clientHeadSent = true
        _ = recorded.withUnsafeBytes { relay.read($0) }
        return .forwardFlight(writeHead: true)
    }

    /// Whole events of the flight's stream (usage chunk included), for a live follower.
    mutating func flightEvents(_ events: UnsafeRawBufferPointer) -> Action {
        guard case .following(live: true) = role, case .following = state, !clientGone else { return .none }
        _ = relay.read(events) // the source checked them; here they are only split for this client
        return .forwardFlight(writeHead: false)
    }

    /// The flight ended: its answer in this client's form, or (no answer it can use, and nothing
    /// relayed yet) a look for another flight.
    private mutating func deliver(_ d: FlightDelivery) -> Action {
        guard case .following = state, case .following(let live) = role else { return .none }
        var streamedReply: [UInt8]?
        if case .answer(.streamed(let a)) = d {
            streamedReply = a.flatMap { StoredAnswer.stream($0).reply(stream: policy.isStream, includeUsage: policy.includeUsage, stamp: policy.stamp) }
        }
        var ownCall = false
        if case .answer(.streamed) = d, streamedReply == nil { ownCall = true }
        if case .answer(.abandoned) = d { ownCall = true }
        if ownCall && !live { return afterCache() }
        role = .none // delivered: the coalescer is done with us
        let reply: Reply
        switch d {
        case .endLive:
            reply = .endStream
        case .failLive(let errorBody):
            reply = .lastEvents(relay.sawError ? [] : Self.dataEvent(errorBody), close: true)
        case .answer(.streamed):
            status = 200
            reply = live ? .endStream : .answer(streamedReply ?? [])
        case .answer(.buffered(let st, let ct, let body)):
            status = st
            if st != 200 {
                reply = .json(status: st, body: body, contentType: ct, retryAfter: nil)
            } else if let r = StoredAnswer.json(body).reply(stream: policy.isStream, includeUsage: policy.includeUsage, stamp: policy.stamp) {
                reply = .answer(r)
            } else {
                reply = errorReply(EngineError(.badGateway, "A stored answer could not be replayed."))
            }
        case .answer(.abandoned):
            reply = errorReply(EngineError(.badGateway, "The request this one shared ended without an answer.", source: .upstream))
        case .answer(.failed(let st, let body, let retryAfter)):
            if clientHeadSent {
                status = 200
                reply = .lastEvents(Self.dataEvent(body), close: true)
            } else {
                status = st
                reply = .json(status: st, body: body, contentType: "application/json", retryAfter: retryAfter)
            }
        }
        return end(.normal, Finish(reply: reply))
    }

    private mutating func toAdmission() -> Action {
        if policy.usesAdmission {
            state = .admitting
            return .requestAdmission
        }
        attempts = Attempts()
        state = .pickingBackend
        return .pickBackend(excluding: [], fallBackTo: nil)
    }

    /// Admission control chose `backend` (now or after a wait).
    mutating func admitted(_ backend: BackendID) -> Action {
        guard case .admitting = state else { return .none }
        attempts = Attempts()
        state = .pickingBackend
        return backendChosen(backend)
    }

    /// Admission control has no backend to offer at all (none serves or none is available).
    mutating func admissionFoundNoBackend() -> Action {
        guard case .admitting = state else { return .none }
        attempts = Attempts()
        state = .pickingBackend
        return backendChosen(nil)
    }

    /// A queued request's keepalive is due.
    mutating func queueKeepAliveDue() -> Action {
        guard case .admitting = state, policy.isStream, !clientGone else { return .none }
        let first = !clientHeadSent
        clientHeadSent = true
        if first { status = 200 }
        return .sendQueuedComment(writeHead: first)
    }

    /// KV pressure: every backend rejects, the queue is full, or the wait ran out. No fallback:
    /// the pool is healthy, just full.
    mutating func admissionRejected(retryAfterSeconds: Int) -> Action {
        guard case .admitting = state else { return .none }
        return fail(EngineError(.rateLimited, "The backends for this model are at capacity (KV cache). Retry later.",
                                source: .upstream, retryAfterSeconds: retryAfterSeconds), Termination(.resource, .queue))
    }

    /// Issue 14: refused for its deadline, its tenant's budget, or a fairer tenant (429 + Retry-After,
    /// never a fallback: the answer would be the same).
    mutating func admissionRefused(_ r: AdmissionRefusal) -> Action {
        guard case .admitting = state else { return .none }
        let message: String
        switch r.reason {
        case .deadline: message = "The request could not start before its deadline (X-Request-Deadline-Ms)."
        case .displaced: message = "The admission queue is full and other tenants are further below their fair share. Retry later."
        case .tokens: message = "Rate limit reached on tokens per min (TPM): Limit \(r.limit ?? 0). Please try again in \(r.retryAfterSeconds)s."
        case .requests: message = "Rate limit reached on requests per min (RPM): Limit \(r.limit ?? 0). Please try again in \(r.retryAfterSeconds)s."
        }
        let source: EngineError.Source = r.reason == .displaced ? .upstream : .client
        return fail(EngineError(.rateLimited, message, source: source, retryAfterSeconds: r.retryAfterSeconds),
                    Termination(r.reason == .displaced ? .resource : .policy, .queue))
    }

    mutating func staleAnswered(_ lookup: CacheLookup) -> Action {
        guard case .lookingUpStale(let err, let t) = state else { return .none }
        guard let stored = lookup.body.flatMap(StoredAnswer.decode),
              let reply = stored.reply(stream: policy.isStream, includeUsage: policy.includeUsage, stamp: policy.stamp) else {
            return fail(err, t)
        }
        cacheOutcome = .stale
        status = 200
        var f = Finish(reply: .answer(reply))
        switch stored {
        case .json(let body, _): f.outcome = .buffered(status: 200, contentType: "application/json", body: body)
        case .stream(let a): f.outcome = .streamed(a)
        }
        return end(.normal, f)
    }

    // MARK: the upstream exchange

    mutating func backendChosen(_ b: BackendID?) -> Action {
        guard case .pickingBackend = state else { return .none }
        guard let b else {
            let err = attempts.lastError ?? EngineError(.noBackend, "No backend is available to serve this request.", source: .upstream, retryAfterSeconds: 1)
            return exhausted(err, phase: .connect)
        }
        attempts.count += 1
        attempts.noteTried(b)
        state = .awaitingHead(b)
        buffered.removeAll(keepingCapacity: true)
        return .sendUpstream(b, timeout: policy.upstreamTimeout)
    }

    mutating func upstreamHead(status st: Int, contentType: String?, contentLength: Int? = nil) -> Action {
        guard case .awaitingHead(let b) = state else { return .none }
        let isEventStream = contentType?.hasPrefix("text/event-stream") ?? false
        if st >= 500 {
            return retryOrFail(EngineError(.badGateway, "The backend answered HTTP \(st).", source: .upstream, retry: .yes), phase: .headers)
        }
        if st == 200 && isEventStream != policy.isStream {
            // A stream to a plain request, or a plain body to a stream request: not vLLM's
            // answer to what was asked (the untrusted upstream; never relayed or cached).
            return retryOrFail(EngineError(.badGateway, "The backend answered in the wrong form (stream or not).", source: .upstream, retry: .yes), phase: .headers)
        }
        status = st
        if st == 200 && isEventStream {
            state = .streaming(b, paused: false)
            let writeHead = !clientHeadSent
            clientHeadSent = true
            return .startStream(timeout: policy.upstreamTimeout, writeHead: writeHead)
        }
        if let n = contentLength, n > 0, n < 64 << 20 { buffered.reserveCapacity(n) }
        state = .buffering(b, status: st, contentType: contentType ?? "application/json")
        return .none
    }

    /// Body bytes arrived; `clientBlocked` says the client's output buffer is above its mark.
    mutating func upstreamBody(_ bytes: UnsafeRawBufferPointer, clientBlocked: Bool) -> Action {
        upstreamRead(bytes, clientBlocked: clientBlocked).map { .forward($0) } ?? .none
    }

    /// `upstreamBody`'s one action, `.forward`, or nil for `.none`: the session's per-read path
    /// takes this, so no Action is made, switched over and destroyed per read.
    mutating func upstreamRead(_ bytes: UnsafeRawBufferPointer, clientBlocked: Bool) -> Forward? {
        switch state {
        case .buffering:
            buffered.append(contentsOf: bytes)
            return nil
        case .streaming(let b, let paused):
            let read = relay.read(bytes)
            if let u = relay.usage { usage = u }
            var f = Forward()
            if clientBlocked && !paused && !clientGone {
                // A slow client is not the backend's fault: no upstream deadline while paused.
                state = .streaming(b, paused: true)
                f.pause = true
            } else {
                f.rearm = !paused
            }
            // Not an SSE event we can relay (invalid JSON or UTF-8, longer than max_event_bytes):
            // the stream is broken; nothing of it is cached or shared as complete.
            f.broken = read == .broken
            return f
        default:
            return nil
        }
    }

    /// The upstream response ended. A stream must have ended as a stream must (`data: [DONE]`);
    /// a buffered 2xx must be a JSON answer of the endpoint's shape (a 2xx that is not — garbage,
    /// HTML, 204, another status — is the backend's failure).
    mutating func upstreamEnd() -> Action {
        switch state {
        case .buffering(_, let st, let ct):
            var body = UpstreamJSON?.none
            // When it may be stored, the same parse finds its identity values for the entry.
            var identitySpans: [Range<Int>]?
            if st == 200 {
                body = policy.storesAnswer ? UpstreamJSON.inspect(buffered, identitySpans: &identitySpans) : UpstreamJSON.inspect(buffered)
            }
            if (200..<300).contains(st) && !isAnswer(status: st, body, contentType: ct) {
                return retryOrFail(EngineError(.badGateway, "The backend answered HTTP \(st) without a valid completion.", source: .upstream, retry: .yes), phase: .data)
            }
            if let u = body?.usage { usage = u }
            var store: StoredAnswer?
            if st == 200 && policy.storesAnswer && !usedFallback && !buffered.isEmpty {
                // The values as the store would find them by parsing (none for an object with more
                // than ReplyStamp.maxSpans); what is not an object is parsed when stored.
                store = .json(buffered, identitySpans: body?.kind == .object ? identitySpans ?? [] : nil)
            }
            // The SSE head went out while queued: the answer becomes the stream's last event.
            let reply: Reply = clientHeadSent
                ? .lastEvents(Self.dataEvent(buffered) + (st == 200 ? Self.doneEvent : []), close: st != 200)
                : .json(status: st, body: buffered, contentType: ct, retryAfter: nil)
            // Made whole in one step: each field set afterwards destroyed the value it replaced
            // first (a call per field, through the payload enums' value witnesses), and the
            // Finish was copied into `end`.
            let f = Finish(reuseUpstream: true, verdict: st < 500 ? .success : .failure, store: store, reply: reply,
                           outcome: .buffered(status: st, contentType: ct, body: buffered))
            return end(.normal, consume f)
        case .streaming:
            guard relay.sawDone || relay.passthrough else {
                return fail(EngineError(.badGateway, "The backend ended the stream without completing it.", source: .upstream), Termination(.server, .data))
            }
            return streamEnded(reusable: true)
        case .awaitingHead:
            // A message with no head cannot complete; treat as a broken upstream.
            return retryOrFail(EngineError(.badGateway, "The backend sent an incomplete response.", source: .upstream, retry: .yes), phase: .headers)
        default:
            return .none
        }
    }

    /// Whether a 2xx buffered body is the endpoint's answer: a generation's must be a 200 JSON
    /// answer of its shape; a relayed route's must be valid JSON when it says it is JSON
    /// (anything else — text, an empty 204 — is relayed as it is), and, when it may be cached, an
    /// object without an error.
    private func isAnswer(status: Int, _ body: UpstreamJSON?, contentType: String) -> Bool {
        guard case .relay(let route) = policy.kind else { return status == 200 && (body?.isAnswer(for: policy.kind) ?? false) }
        if route.cacheable {
            return status == 200 && body?.kind == .object && body?.hasError == false
        }
        guard contentType.hasPrefix("application/json"), !buffered.isEmpty else { return true }
        let j = body ?? UpstreamJSON.inspect(buffered)
        return j.kind != .invalid && j.kind != .done
    }

    /// A stream that relayed `[DONE]`: complete (stored when whole); an error event inside it
    /// fails the followers that wait.
    private mutating func streamEnded(reusable: Bool) -> Action {
        var f = Finish(reuseUpstream: reusable, verdict: relay.sawError ? .failure : .success, reply: .endStream)
        let whole = relay.answer
        if let whole, policy.storesAnswer && !usedFallback { f.store = .stream(whole) }
        f.outcome = relay.sawError
            ? .failed(EngineError(.badGateway, "The backend reported an error in the middle of the stream.", source: .upstream))
            : .streamed(whole)
        return end(.normal, f)
    }

    mutating func upstreamFailed(_ failure: UpstreamFailure) -> Action {
        let err: EngineError
        switch failure {
        case .connect: err = EngineError(.badGateway, "Could not connect to the backend.", source: .upstream, retry: .yes)
        case .closed: err = EngineError(.badGateway, "The backend closed the connection before the response was complete.", source: .upstream, retry: .yes)
        case .malformed, .invalidEvent: err = EngineError(.badGateway, "The backend sent a malformed HTTP response.", source: .upstream, retry: .yes)
        }
        switch state {
        case .awaitingHead:
            if case .closed(reused: true) = failure {
                // Keep-alive race on a reused connection: retry at once, not counted.
                attempts.count -= 1
                state = .pickingBackend
                return .pickBackend(excluding: [], fallBackTo: nil)
            }
            return retryOrFail(err, phase: failure == .connect ? .connect : .headers)
        case .buffering:
            return retryOrFail(err, phase: .data)
        case .streaming:
            // After [DONE] the stream was complete; only the chunked body's tail went missing:
            // a complete end, never an error event after [DONE].
            if relay.sawDone && failure != .invalidEvent { return streamEnded(reusable: false) }
            return fail(EngineError(.badGateway, "The backend failed in the middle of the stream.", source: .upstream), Termination(.server, .data))
        default:
            return .none
        }
    }

    mutating func timerFired(_ kind: TimerKind) -> Action {
        switch (kind, state) {
        case (.upstream, .awaitingHead):
            return retryOrFail(EngineError(.upstreamTimeout, "The backend did not answer in time.", source: .upstream, retry: .yes), phase: .headers)
        case (.upstream, .buffering):
            return retryOrFail(EngineError(.upstreamTimeout, "The backend did not answer in time.", source: .upstream, retry: .yes), phase: .data)
        case (.upstream, .streaming):
            // Complete, only the chunked body's end is late: the connection is not reusable
            // (its response never ended), the stream is.
            if relay.sawDone { return streamEnded(reusable: false) }
            return fail(EngineError(.upstreamTimeout, "The backend stopped sending in the middle of the stream.", source: .upstream), Termination(.serverTimeout, .data))
        case (.backoff, .backoff):
            state = .pickingBackend
            return .pickBackend(excluding: attempts.tried, fallBackTo: nil)
        default:
            return .none // stale firing
        }
    }

    // MARK: the client

    mutating func clientClosed() -> Action {
        guard !isFinished, !clientGone else { return .none }
        clientGone = true
        if case .leading(_, headless: false) = role {
            // Followers may still want this answer: the coalescer decides (continueHeadless or abort).
            return .leaderLeft
        }
        return abandon()
    }

    /// Ends without an answer: the client left (or, leading, the coalescer said nobody follows).
    private mutating func abandon() -> Action {
        var f = Finish()
        let phase: Termination.Phase
        switch state {
        case .finished: return .none
        case .streaming, .buffering, .following: phase = .data
        case .awaitingHead: phase = .headers
        case .pickingBackend, .backoff, .received, .lookingUpStale: phase = .connect
        case .admitting:
            phase = .queue
            f.leaveQueue = true
        case .lookingUpCache, .joiningFlight: phase = .request
        }
        clientGone = true
        return end(Termination(.client, phase), f)
    }

    mutating func clientDrained() -> Action {
        guard case .streaming(let b, paused: true) = state else { return .none }
        state = .streaming(b, paused: false)
        return .resumeUpstream(timeout: policy.upstreamTimeout)
    }

    // MARK: endings

    private mutating func retryOrFail(_ err: EngineError, phase: Termination.Phase) -> Action {
        var err = err
        // When the chain ends with it, tell the client when to come back (like the 503).
        if err.retryAfterSeconds == nil { err.retryAfterSeconds = 1 }
        attempts.lastError = err
        if attempts.count < policy.maxAttempts {
            state = .backoff
            relay = Self.newRelay(policy, records: relay.records)
            // Linear backoff: retry_backoff_seconds × attempt number.
            return .retry(after: policy.backoff * attempts.count)
        }
        return exhausted(err, phase: phase)
    }

    /// The pool could not serve: fallback model, then a stale cache entry, then the error.
    private mutating func exhausted(_ err: EngineError, phase: Termination.Phase) -> Action {
        if !usedFallback, let fb = policy.fallbackModel {
            usedFallback = true
            attempts = Attempts()
            state = .pickingBackend
            return .pickBackend(excluding: [], fallBackTo: fb)
        }
        let t = Termination(err.kind == .upstreamTimeout ? .serverTimeout : .server, phase)
        if policy.canUseStale {
            state = .lookingUpStale(err, t)
            return .lookupStale
        }
        return fail(err, t)
    }

    /// Ends with an error: JSON before the client saw a head, a final SSE event after.
    private mutating func fail(_ err: EngineError, _ t: Termination) -> Action {
        var f = Finish(verdict: .failure, reply: errorReply(err))
        f.outcome = .failed(err)
        return end(t, f)
    }

    private mutating func errorReply(_ err: EngineError) -> Reply {
        if clientHeadSent {
            status = 200
            return .lastEvents(err.sseEvent, close: true)
        }
        status = err.status
        return .error(err)
    }

    /// Every ending goes through here: a leader's flight always gets an outcome (abandoned when
    /// nothing better), an asking or following request always leaves the coalescer.
    private mutating func end(_ t: Termination, _ f: consuming Finish) -> Action {
        switch role {
        case .leading(let id, _):
            f.flight = id
            // Compared with nil, not matched: a match copied the outcome out (and destroyed it).
            if f.outcome == nil { f.outcome = .abandoned }
        case .asking, .following:
            f.leaveFlight = true
            f.outcome = nil
        case .none:
            f.outcome = nil
        }
        if clientGone { f.reply = nil }
        role = .none
        state = .finished(t)
        return .finish(consume f)
    }

    static let doneEvent = Array("data: [DONE]\n\n".utf8)

    static func dataEvent(_ json: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(json.count + 8)
        out += "data: ".utf8
        out += json
        out += "\n\n".utf8
        return out
    }
}

// RequestSession: the driver of one RequestMachine (style C). Every entry point is
// `let a = machine.event(...)` then `run(a)`; `run` is one exhaustive switch that performs I/O.
// Owns: the upstream connection while an exchange runs (returned to the backend's pool or
// closed), one Timer, the buffered response body, the breaker permit of the current attempt.
// Kept alive by its client connection's `context` and, during an exchange, by the upstream
// connection (delegate); it holds both strongly and lets go of them when it ends (respond,
// clientClosed, releaseUpstream/closeUpstream), which breaks those cycles. Admission control
// references it weakly (waiter).
import CEventShim
import Reactor

#if canImport(Glibc)
import Glibc
#endif

final class RequestSession: HTTPClientConnectionDelegate, AdmissionWaiter, RemoteFlightReaderDelegate {
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
        t.onFire = { [unowned self] in self.run(self.machine.timerFired(self.armed)) }
        timerStorage = t
        return t
    }
    private var armed: TimerKind = .upstream
    /// Set when the session finished and gave its timer back to the runtime's pool.
    private var timerRetired = false
    private var buffered: [UInt8] = []
    private var upstreamContentType: String?
    private var sawErrorEvent = false
    /// What the cache and coalescer may do for this request (decided by the Frontend).
    let cachePlan: CachePlan
    /// X-Cache outcome: HIT, MISS, STALE or BYPASS.
    private(set) var cacheOutcome: String
    private var cachedBody: [UInt8] = []
    /// Records a streamed answer to store it (and to hand followers a JSON form).
    private var assembler: StreamAssembler?
    /// The flight this session leads or follows.
    private var flight: Flight?
    private var isLeader = false
    /// A follower relaying the leader's stream live.
    private var followsLive = false
    /// Cross-process single-flight: what we publish as leader, or read as follower.
    private var publisher: RemoteFlightPublisher?
    private var remoteReader: RemoteFlightReader?
    private var remoteOwner: String?
    /// Strips the usage chunk the Engine asked for on the client's behalf.
    private var usageFilter: SSEUsageFilter?
    private var filtered: [UInt8] = []
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
        policy.coalesce = cachePlan.key != nil && cachePlan.coalesce
        policy.coalesceAcrossProcesses = policy.coalesce && runtime.redis != nil
        policy.canUseStale = cachePlan.key != nil && runtime.cache != nil
        if let fb = runtime.config.modelRegistry.fallbackModel, fb != servedModel, runtime.backends.isKnown(fb) != false {
            policy.fallbackModel = fb
        }
        self.machine = RequestMachine(policy: policy)
        if request.stream && !request.includeUsage { usageFilter = SSEUsageFilter() }
    }

    func start() { run(machine.start()) }

    // MARK: events from the client side (via Frontend)

    func clientClosed() {
        client = nil
        if isLeader, let f = flight, !f.followers.isEmpty {
            // Followers still want this answer: keep generating for them, write to nobody.
            return
        }
        run(machine.clientClosed())
    }
    func clientDrained() { run(machine.clientDrained()) }

    // MARK: events from admission control

    func admissionAdmitted(_ backend: BackendID) {
        admissionToken = nil
        observeQueueWait()
        run(machine.admitted(backend))
    }
    func admissionQueued() { queuedAtNanos = Loop.nowNanos() }
    func admissionRejected(retryAfterSeconds: Int) {
        admissionToken = nil
        observeQueueWait()
        run(machine.admissionRejected(retryAfterSeconds: retryAfterSeconds))
    }
    func admissionKeepAlive() { run(machine.queueKeepAliveDue()) }

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
        upstreamContentType = ct
        let sse = ct.map { $0.hasPrefix("text/event-stream") } ?? false
        if !sse, let cl = headers["content-length"], let n = Int(cl), n > 0, n < 64 << 20 { buffered.reserveCapacity(n) }
        self.status = status
        run(machine.upstreamHead(status: status, isEventStream: sse))
    }

    func upstream(_ c: HTTPClientConnection, didReceiveBody bytes: UnsafeRawBufferPointer) {
        guard c === upstream else { return }
        handleBody(bytes, from: c)
    }

    /// Upstream (or remote leader) body bytes: buffer, or relay as stream chunks.
    private func handleBody(_ bytes: UnsafeRawBufferPointer, from c: HTTPClientConnection?) {
        let blocked = client?.isWriteBlocked ?? false
        switch machine.upstreamBody(clientBlocked: blocked) {
        case .bufferBody:
            buffered.append(contentsOf: bytes)
        case .forwardChunk(let pause, let timeout):
            if !sawErrorEvent && containsErrorEvent(bytes) { sawErrorEvent = true }
            let now = Loop.nowNanos()
            if lastChunkNanos > 0 { runtime.metrics.interChunkSeconds.observe(Double(now - lastChunkNanos) / 1e9) }
            lastChunkNanos = now
            if usage == nil, let base = bytes.baseAddress, ces_contains(base, bytes.count, "\"usage\":{", 9) != 0 {
                usage = UsageScanner.scan(bytes)
            }
            publisher?.chunk(bytes)
            assembler?.feed(bytes)
            if usageFilter != nil {
                filtered.removeAll(keepingCapacity: true)
                usageFilter!.filter(bytes, into: &filtered)
                filtered.withUnsafeBytes { relay($0) }
            } else {
                relay(bytes)
            }
            if pause {
                // A slow client is not the backend's fault: no upstream deadline while paused.
                upstreamPaused = true
                timerStorage?.cancel()
                c?.pauseReading()
            } else if !upstreamPaused {
                arm(.upstream, timeout)
            }
        case let other:
            run(other)
        }
    }

    private func markCoalesced() {
        isFollower = true
        runtime.metrics.coalescedFollowers += 1
        extraHeaders.add("x-coalesced", "true")
    }

    // MARK: cross-process claim

    private var preClaim: ClaimResult?
    private var preClaimPending = false
    private var preClaimWaiting = false
    private var claimOwner: String { runtime.instanceId + "-" + requestId }
    private var isFollowerOfLocalFlight: Bool { flight != nil && !isLeader }

    private func handleClaim(_ result: ClaimResult, redis: RedisConnection, key: String) {
        switch result {
        case .leader:
            if machine.isFinished || isFollowerOfLocalFlight {
                RemoteFlightPublisher.release(redis: redis, key: key, owner: claimOwner)
                return
            }
            publisher = RemoteFlightPublisher(redis: redis, loop: runtime.loop, key: key, owner: claimOwner)
            run(machine.globalLeadClaimed(true))
        case .unavailable:
            run(machine.globalLeadClaimed(true))
        case .follower(let leaderOwner):
            markCoalesced()
            remoteOwner = leaderOwner
            run(machine.globalLeadClaimed(false))
        }
    }

    /// A lock taken by the pipelined claim that turned out not to be needed (hit, local follower).
    private func releasePreClaim() {
        guard let r = preClaim, let redis = runtime.redis, let key = cachePlan.key else { return }
        preClaim = nil
        if case .leader = r { RemoteFlightPublisher.release(redis: redis, key: key, owner: claimOwner) }
    }

    // MARK: events from another process's flight (Redis)

    func remoteHead(status: Int, contentType: String) {
        upstreamContentType = contentType
        self.status = status
        run(machine.upstreamHead(status: status, isEventStream: contentType.hasPrefix("text/event-stream")))
    }

    func remoteBody(_ bytes: UnsafeRawBufferPointer) { handleBody(bytes, from: nil) }

    func remoteEnd(status: Int, contentType: String, body: [UInt8]?) {
        if let body {
            remoteHead(status: status, contentType: contentType)
            body.withUnsafeBytes { handleBody($0, from: nil) }
        }
        run(machine.upstreamEnd())
    }

    func remoteLost() {
        remoteReader?.stop()
        remoteReader = nil
        run(machine.remoteLeaderLost())
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

    /// Writes stream bytes to the client and to live followers.
    private func relay(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        if isLeader { flight?.chunk(bytes) }
        client?.writeChunk(bytes)
        bytesOut += bytes.count
    }

    // MARK: the one place that performs actions

    private func run(_ action: RequestMachine.Action) {
        switch action {
        case .claimGlobalLead:
            guard let redis = runtime.redis, let key = cachePlan.key else { run(machine.globalLeadClaimed(true)); return }
            if let r = preClaim {
                preClaim = nil
                handleClaim(r, redis: redis, key: key)
            } else if preClaimPending {
                preClaimWaiting = true
            } else {
                RemoteFlightPublisher.claim(redis: redis, key: key, owner: claimOwner) { [weak self] r in
                    self?.handleClaim(r, redis: redis, key: key)
                }
            }
        case .followRemote:
            guard let redis = runtime.redis, let key = cachePlan.key, let owner = remoteOwner else {
                run(machine.remoteLeaderLost())
                return
            }
            // Same deadline as an upstream call, so a silent leader cannot hold us forever.
            arm(.upstream, runtime.requestPolicy.upstreamTimeout)
            let r = RemoteFlightReader(redis: redis, loop: runtime.loop, key: key, owner: owner, delegate: self)
            remoteReader = r
            r.start()
        case .lookupCache:
            guard let cache = runtime.cache, let key = cachePlan.key else { run(machine.cacheLookedUp(found: false)); return }
            if machine.policy.coalesceAcrossProcesses, let redis = runtime.redis {
                // Pipelined with the lookup: on a miss the cross-process lock is already ours (or
                // not), so a miss costs one Redis round trip, not two.
                preClaimPending = true
                let owner = claimOwner
                RemoteFlightPublisher.claim(redis: redis, key: key, owner: owner) { [weak self] r in
                    guard let self else {
                        if case .leader = r { RemoteFlightPublisher.release(redis: redis, key: key, owner: owner) }
                        return
                    }
                    self.preClaimPending = false
                    if self.preClaimWaiting {
                        self.preClaimWaiting = false
                        self.handleClaim(r, redis: redis, key: key)
                    } else if self.machine.isFinished || self.isFollowerOfLocalFlight {
                        if case .leader = r { RemoteFlightPublisher.release(redis: redis, key: key, owner: self.claimOwner) }
                    } else {
                        self.preClaim = r
                    }
                }
            }
            runtime.logger.debug("cache lookup", metadata: ["eng.req": "\(requestId)", "key": "\(key)"])
            cache.get(key: key, now: Loop.nowNanos(), wallMillis: wallMillis()) { [weak self] lookup in
                guard let self else { return }
                switch lookup {
                case .fresh(let body):
                    self.cachedBody = body
                    self.cacheOutcome = "HIT"
                    self.runtime.metrics.cacheHits += 1
                    self.run(self.machine.cacheLookedUp(found: true))
                case .stale, .miss:
                    self.runtime.metrics.cacheMisses += 1
                    self.run(self.machine.cacheLookedUp(found: false))
                case .unavailable:
                    self.runtime.metrics.cacheMisses += 1
                    self.runtime.metrics.cacheErrors += 1
                    self.run(self.machine.cacheLookedUp(found: false))
                }
            }
        case .replayCached:
            releasePreClaim()
            status = 200
            respond { self.writeStored($0, self.cachedBody) }
        case .joinFlight:
            guard let key = cachePlan.key else { run(machine.flightJoined(asLeader: true)); return }
            if let f = runtime.flights[key] {
                releasePreClaim()
                flight = f
                markCoalesced()
                run(machine.flightJoined(asLeader: false))
                f.add(self)
            } else {
                let f = Flight(key: key, leader: self)
                runtime.flights[key] = f
                flight = f
                isLeader = true
                run(machine.flightJoined(asLeader: true))
            }
        case .deliverFromFlight:
            deliverFlightOutcome()
        case .leaveFlight:
            flight?.remove(self)
            flight = nil
            finished()
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
            remoteReader?.stop()
            remoteReader = nil
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
                run(machine.upstreamFailed(.connect))
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
            preconditionFailure("\(action) is performed inline in didReceiveBody")
        case .startStream(let timeout):
            arm(.upstream, timeout)
            status = 200
            if cachePlan.store || (isLeader && flight != nil) { assembler = StreamAssembler() }
            if isLeader { flight?.streamStarted() }
            publisher?.head(status: 200, contentType: upstreamContentType ?? "text/event-stream")
            guard firstByteNanos == 0 else { return } // SSE head already sent while queued
            firstByteNanos = Loop.nowNanos()
            client?.writeChunkedHead(status: 200, headers: sseHeaders())
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
            if st == 200 { usage = buffered.withUnsafeBytes { UsageScanner.scan($0) } }
            // The client gets its bytes first; storing and telling followers (maybe over Redis)
            // come after, off the client's latency.
            deferredOutcome = .buffered(status: st, contentType: ct, body: buffered)
            if machine.clientHeadSent {
                // The SSE head went out while queued: the answer becomes the stream's last event.
                respond { c in
                    var ev = Array("data: ".utf8) + buffered + Array("\n\n".utf8)
                    if st == 200 { ev += Array("data: [DONE]\n\n".utf8) }
                    ev.withUnsafeBytes { c.writeChunk($0) }
                    c.endChunked(close: st != 200)
                }
            } else {
                var h = responseHeaders()
                h.add("content-type", ct)
                respond { $0.writeResponse(status: st, headers: h, body: buffered) }
            }
            if st == 200 { store(buffered) }
            deliverDeferredOutcome()
        case .finishStream:
            timerStorage?.cancel()
            endAttempt(success: !sawErrorEvent)
            releaseUpstream()
            upstreamDone()
            deferredOutcome = .streamed(completeBody: nil)
            respond { $0.endChunked() }
            // After the client's last chunk: rebuild, store, tell followers.
            var complete: [UInt8]?
            if let a = assembler, !sawErrorEvent { complete = a.completeBody() }
            if let body = complete { store(body) }
            deferredOutcome = .streamed(completeBody: complete)
            deliverDeferredOutcome()
        case .retry(let after):
            remoteReader?.stop()
            remoteReader = nil
            endAttempt(success: false)
            runtime.metrics.upstreamRetries += 1
            closeUpstream()
            arm(.backoff, after)
        case .lookupStale:
            endAttempt(success: false)
            closeUpstream()
            guard let cache = runtime.cache, let key = cachePlan.key else { run(machine.staleLookedUp(found: false)); return }
            cache.getStale(key: key, now: Loop.nowNanos(), wallMillis: wallMillis()) { [weak self] lookup in
                guard let self else { return }
                if let body = lookup.body {
                    self.cachedBody = body
                    self.cacheOutcome = "STALE"
                    self.runtime.metrics.cacheStaleServed += 1
                    self.run(self.machine.staleLookedUp(found: true))
                } else {
                    self.run(self.machine.staleLookedUp(found: false))
                }
            }
        case .replayStale:
            status = 200
            leaderFinished(.buffered(status: 200, contentType: "application/json", body: cachedBody))
            respond { self.writeStored($0, self.cachedBody) }
        case .respondError(let err):
            timerStorage?.cancel()
            endAttempt(success: false)
            closeUpstream()
            status = err.status
            leaderFinished(.failed(err))
            respond { self.runtime.writeError(err, to: $0, requestId: self.requestId, extra: self.responseHeaders(), counted: false) }
        case .failStream(let err):
            timerStorage?.cancel()
            endAttempt(success: false)
            closeUpstream()
            leaderFinished(.failed(err))
            respond { c in
                err.sseEvent.withUnsafeBytes { c.writeChunk($0) }
                c.endChunked(close: true)
            }
        case .abortUpstream:
            timerStorage?.cancel()
            endAttempt(success: nil)
            closeUpstream()
            leaderFinished(.failed(EngineError(.badGateway, "The request this one was coalesced with was cancelled.", source: .client)))
            finished()
        case .none:
            break
        }
    }

    /// Headers on every response of this session.
    private func responseHeaders() -> HTTPHeaders {
        var h = extraHeaders
        h.add("x-request-id", requestId)
        h.add("x-cache", cacheOutcome)
        return h
    }

    private func sseHeaders() -> HTTPHeaders {
        var h = responseHeaders()
        h.add("content-type", "text/event-stream; charset=utf-8")
        h.add("cache-control", "no-cache")
        h.add("x-accel-buffering", "no")
        return h
    }

    private func wallMillis() -> UInt64 { UInt64(Loop.wallSeconds() * 1000) }

    /// Stores a complete 200 answer under this request's key, unless policy says no or the answer
    /// came from the fallback model (never stored under the primary model's key).
    private func store(_ body: [UInt8]) {
        guard cachePlan.store, !machine.usedFallback, let key = cachePlan.key, let cache = runtime.cache, !body.isEmpty else { return }
        let c = runtime.config.cache
        cache.put(key: key, value: body, ttl: .seconds(validated: c.ttlSeconds),
                  staleTTL: .seconds(validated: c.staleTtlSeconds), now: Loop.nowNanos(), wallMillis: wallMillis())
        runtime.metrics.cacheStores += 1
        runtime.logger.debug("cache store", metadata: ["eng.req": "\(requestId)", "key": "\(key)", "bytes": "\(body.count)", "ttl": "\(c.ttlSeconds)", "n": "\((cache as? MemoryCacheStore)?.entryCount ?? -1)"])
    }

    /// Writes a stored complete JSON answer in the form this client asked for.
    private func writeStored(_ c: HTTPServerConnection, _ body: [UInt8]) {
        bytesOut += body.count
        if request.stream {
            guard let sse = ReplayWriter.sse(fromCompleteBody: body, includeUsage: request.includeUsage) else {
                runtime.writeError(EngineError(.internalError, "A stored answer could not be replayed."), to: c, requestId: requestId)
                return
            }
            if !machine.clientHeadSent { c.writeChunkedHead(status: 200, headers: sseHeaders()) }
            sse.withUnsafeBytes { c.writeChunk($0) }
            c.endChunked()
        } else {
            var h = responseHeaders()
            h.add("content-type", "application/json")
            c.writeResponse(status: 200, headers: h, body: body)
        }
    }

    // MARK: coalescing

    /// As the leader: hand the outcome to the followers (here and in other processes) and
    /// retire the flight.
    private func leaderFinished(_ o: Flight.Outcome) {
        if let p = publisher {
            publisher = nil
            switch o {
            case .buffered(let st, let ct, let body): p.end(status: st, contentType: ct, body: body)
            case .streamed: p.end(status: 200, contentType: "text/event-stream", body: nil)
            case .failed: p.fail()
            }
        }
        guard isLeader, let f = flight else { return }
        flight = nil
        isLeader = false
        if runtime.flights[f.key] === f { runtime.flights[f.key] = nil }
        f.finish(o)
    }

    /// As a follower: the leader's stream started; go live if its bytes fit this client exactly.
    func flightStreamStarted(_ f: Flight) {
        guard request.stream, request.includeUsage == f.leader.request.includeUsage, !f.streamedOverflow,
              let c = client else { return }
        followsLive = true
        status = 200
        firstByteNanos = Loop.nowNanos()
        c.writeChunkedHead(status: 200, headers: sseHeaders())
        if !f.streamed.isEmpty { f.streamed.withUnsafeBytes { c.writeChunk($0) } }
    }

    func flightChunk(_ bytes: UnsafeRawBufferPointer) {
        guard followsLive else { return }
        bytesOut += bytes.count
        client?.writeChunk(bytes)
    }

    func flightFinished(_ f: Flight) { run(machine.flightFinished()) }

    private func deliverFlightOutcome() {
        guard let f = flight, let outcome = f.outcome else { return }
        flight = nil
        let live = followsLive
        switch outcome {
        case .streamed(let complete): status = live || complete != nil ? 200 : 502
        case .buffered(let st, _, _): status = st
        case .failed(let err): status = live ? 200 : err.status
        }
        respond { c in
            switch outcome {
            case .streamed(let complete):
                if live { c.endChunked(); return }
                if let body = complete { self.status = 200; self.writeStored(c, body); return }
                self.status = 502
                self.runtime.writeError(EngineError(.badGateway, "The shared answer could not be rebuilt for this request."), to: c, requestId: self.requestId, counted: false)
            case .buffered(let st, let ct, let body):
                self.status = st
                if st == 200 { self.writeStored(c, body); return }
                var h = self.responseHeaders()
                h.add("content-type", ct)
                c.writeResponse(status: st, headers: h, body: body)
            case .failed(let err):
                self.status = err.status
                if live {
                    err.sseEvent.withUnsafeBytes { c.writeChunk($0) }
                    c.endChunked(close: true)
                } else {
                    self.runtime.writeError(err, to: c, requestId: self.requestId, extra: self.responseHeaders(), counted: false)
                }
            }
        }
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
        // The Frontend loaded the tree when a fallback model was configured; this load is a no-op.
        if case .success(let doc) = request.loadDocument() {
            json_object_set_new(doc.root, "model", json_string(model))
            body = doc.serialized()
        }
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

    /// A success outcome handed to followers after the client's response is written.
    private var deferredOutcome: Flight.Outcome?

    private func deliverDeferredOutcome() {
        guard let o = deferredOutcome else { return }
        deferredOutcome = nil
        leaderFinished(o)
    }

    private func finished() {
        // A leader that ends without an answer (its client left while queued, ...) must not leave
        // its flight (or its Redis lock) behind: followers get the failure, new requests start fresh.
        if deferredOutcome == nil {
            leaderFinished(.failed(EngineError(.badGateway, "The request this one was coalesced with ended without an answer.", source: .client)))
        }
        releasePreClaim()
        remoteReader?.stop()
        remoteReader = nil
        runtime.requestFinished(self, termination: machine.termination ?? .normal)
        timerRetired = true
        if let t = timerStorage {
            timerStorage = nil
            runtime.returnTimer(t)
        }
    }

    /// Writes the final response; detaches from the client first, since completing the response
    /// may dispatch the next pipelined request on the same connection.
    private func respond(_ write: (HTTPServerConnection) -> Void) {
        if firstByteNanos == 0 { firstByteNanos = Loop.nowNanos() }
        bytesOut += buffered.count
        finished()
        guard let c = client else { return }
        client = nil
        if c.context === self { c.context = nil }
        write(c)
    }
}

/// True when an SSE chunk carries an error event (vLLM reports some failures inside a 200 stream).
private func containsErrorEvent(_ bytes: UnsafeRawBufferPointer) -> Bool {
    guard let base = bytes.baseAddress, bytes.count >= 14 else { return false }
    return "data: {\"error\"".withCString { needle in ces_contains(base, bytes.count, needle, 14) != 0 }
}

// EngineRuntime: everything one process serves with — config snapshot, the loop, the listener,
// the backends and their health monitor, metrics — and the Frontend that routes each request.
// Built by engine-server's main; loop-confined; one per process.
import CEventShim
import Logging
import Reactor

#if canImport(Glibc)
import Glibc
#endif

public final class EngineRuntime {
    public let config: EngineConfig
    public let loop: Loop
    public let backends: BackendSet
    public let metrics: Metrics
    public var logger: Logger
    /// Every request's policy before its own facts (requestPolicy(for:)); read from the config once.
    let requestPolicy: RequestMachine.Policy
    /// model_registry.fallback_model, read once (not per request from the config tree).
    private let fallbackModel: String?
    let router: ModelRouter
    let estimator = TokenEstimator()
    let auth: APIKeyAuth?
    private(set) var admission: AdmissionDriver?
    /// Issue 14: who each request's tenant is, their counters, and their token/request budgets
    /// (nil: no tenant has limits). Built in `init`; see Admission/TenantTable.swift.
    let tenants: TenantTable
    let tenantMetrics: TenantMetrics
    private(set) var rateLimits: RateLimitDriver?
    /// Exact-mode routing's KV-event subscribers and block index; nil unless routing.kv_events.
    public private(set) var kvEvents: KVEventsDriver?
    /// Exact mode: /tokenize fetches that teach the routing block map; nil unless routing.kv_events.
    private(set) var promptTokenizer: PromptTokenizer?
    /// The response cache: in process (no redis.url) or Redis; nil when cache.enabled is false.
    private(set) var cache: CacheStore?
    /// The same store when it answers synchronously (in-process or shared memory): what the hit
    /// fast path uses. Cast once here, not per request (a protocol cast costs a conformance lookup).
    private(set) var syncCache: SynchronousCacheStore?
    private(set) var redis: RedisConnection?
    /// The workers' shared-memory segment, whose flight claims replace the Redis lock (nil: none).
    private(set) var sharedClaims: SharedMemoryCacheStore?
    private(set) var accessLog: AccessLog?
    /// Byte-identical repeats → cache key, for the embedded cache's fast hit path.
    private(set) var hitMemo: HitMemo?
    /// Names this process in cross-process flight locks.
    let instanceId: String = {
        var rng = SystemRandomNumberGenerator()
        return String(getpid()) + "." + String(rng.next() as UInt32, radix: 16)
    }()
    /// Single-flight: identical requests in flight share one upstream call (here and, with
    /// Redis, across processes).
    private(set) lazy var coalescer = CoalescerDriver(runtime: self)
    private var listener: Listener?
    private var monitor: HealthMonitor?
    private lazy var frontend = Frontend(runtime: self)

    /// `sharedCache`: the host's shared-memory store, for a worker of the default config (the
    /// supervisor made it); the cache then lives there and Redis carries only the flights.
    public init(config: EngineConfig, loop: Loop, logger: Logger, sharedCache: SharedMemoryCacheStore? = nil) throws(ConfigError) {
        self.config = config
        self.loop = loop
        self.logger = logger
        var list: [Backend] = []
        for (i, inst) in config.vllm.instances.enumerated() {
            guard let ep = Endpoint(host: inst.host, port: inst.port, basePath: inst.basePath) else {
                throw ConfigError.invalid(key: "vllm.instances[\(i)].url", message: "cannot resolve host \(inst.host)")
            }
            list.append(Backend(id: BackendID(i), url: inst.url, endpoint: ep, loop: loop,
                                apiKey: inst.apiKey, weight: inst.weight, models: inst.models,
                                breaker: CircuitBreaker(threshold: config.circuitBreaker.failureThreshold,
                                                        cooldown: .seconds(validated: config.circuitBreaker.cooldownSeconds))))
        }
        router = ModelRouter(fastModel: config.modelRegistry.fastModel, largeModel: config.modelRegistry.largeModel,
                             threshold: config.modelRegistry.fastModelTokenThreshold,
                             fallbackModel: config.modelRegistry.fallbackModel)
        if config.auth.isEnabled {
            var keys = config.auth.apiKeys
            if let file = config.auth.apiKeysFile {
                guard let text = readTextFile(file) else {
                    throw ConfigError.invalid(key: "auth.api_keys_file", message: "cannot read \(file)")
                }
                keys += APIKeyAuth.parseKeysFile(text)
            }
            auth = try APIKeyAuth(keys: keys)
        } else {
            auth = nil
        }
        backends = BackendSet(list)
        if config.routing.policy == .prefixAware {
            backends.routing = BackendRouting(config: config.routing, backendCount: list.count)
        }
        metrics = Metrics(now: Loop.nowNanos())
        var policy = RequestMachine.Policy(
            maxAttempts: 1 + config.vllm.retryCount,
            backoff: .seconds(validated: config.vllm.retryBackoffSeconds),
            upstreamTimeout: .seconds(validated: config.vllm.timeoutSeconds),
            usesAdmission: true)
        policy.maxEventBytes = config.vllm.maxEventBytes
        requestPolicy = policy
        fallbackModel = config.modelRegistry.fallbackModel
        accessLog = try AccessLog.open(config.server.accessLog, loop: loop)
        if config.cache.isEnabled {
            if config.redis.url.isEmpty {
                cache = sharedCache ?? MemoryCacheStore(maxEntries: config.cache.maxSize, maxBytes: config.cache.maxBytes)
            } else {
                guard let u = RedisURL.parse(config.redis.url) else {
                    throw ConfigError.invalid(key: "redis.url", message: "not a redis:// URL")
                }
                let timeout = Duration.seconds(validated: config.redis.socketTimeoutSeconds)
                let conn = RedisConnection(loop: loop, url: u, commandTimeout: timeout, connectTimeout: max(timeout, .milliseconds(500)))
                redis = conn
                // Near copies of fresh entries (RedisCacheStore.near): a repeat costs no round trip.
                // At most an eighth of the shared cache, so what a process keeps near is among the
                // most recently used and the shared LRU stays what decides eviction (none for a
                // cache smaller than 8 entries); at most 4,096 entries and 32 MiB a process.
                if let sharedCache {
                    cache = sharedCache
                    sharedClaims = sharedCache
                } else {
                    let nearEntries = min(config.cache.maxSize / 8, 4096)
                    let near = nearEntries > 0 ? MemoryCacheStore(maxEntries: nearEntries, maxBytes: 32 << 20) : nil
                    cache = RedisCacheStore(connection: conn, maxEntries: config.cache.maxSize, near: near)
                }
                RemoteFlightPublisher.registerScripts(on: conn)
            }
            hitMemo = HitMemo(capacity: max(1024, 4 * config.cache.maxSize))
            syncCache = cache as? SynchronousCacheStore
        }
        if config.admissionControl.isEnabled {
            let a = config.admissionControl
            var policy = AdmissionMachine.Policy(softLimit: a.softLimit, hardLimit: a.hardLimit, maxQueue: a.maxQueue,
                                                 maxWait: .seconds(validated: a.maxWaitSeconds))
            policy.fairness = a.fairness == .fair ? .fair : .fifo
            // Issue 14: release only what a backend can start now (AdmissionMachine's header).
            policy.maxInflightPerBackend = a.maxInflightPerBackend
            // Only with a cap: then an end releases the next waiter at once. Without one, a
            // "waiting" reading would hold every new request until the next poll (up to
            // poll_interval_seconds), and a vLLM that queues briefly in normal batching would
            // starve in waves between polls.
            policy.queueWhileBackendWaits = a.maxInflightPerBackend > 0
            admission = AdmissionDriver(loop: loop, backends: backends, policy: policy,
                                        pollInterval: .seconds(validated: a.pollIntervalSeconds))
        }
        tenants = TenantTable(keyTenants: config.auth.keyTenants.map { (APIKeyAuth.configuredIdentity($0.key ?? ""), $0) },
                              headerTenants: config.admissionControl.tenants,
                              header: config.auth.isEnabled ? nil : config.admissionControl.tenantHeader)
        tenantMetrics = TenantMetrics(labels: tenants.labels)
        if tenants.hasLimits {
            // Budgets hold across workers and replicas through Redis whenever there is one (the
            // default config's workers get the supervisor's private redis-server as REDIS_URL).
            if redis == nil && !config.redis.url.isEmpty {
                guard let u = RedisURL.parse(config.redis.url) else {
                    throw ConfigError.invalid(key: "redis.url", message: "not a redis:// URL")
                }
                let timeout = Duration.seconds(validated: config.redis.socketTimeoutSeconds)
                redis = RedisConnection(loop: loop, url: u, commandTimeout: timeout, connectTimeout: max(timeout, .milliseconds(500)))
            }
            rateLimits = RateLimitDriver(redis: redis)
        }
        let publishers = Self.kvEventPublishers(config: config)
        if !publishers.isEmpty, let routing = backends.routing {
            let kv = KVEventsDriver(loop: loop, publishers: publishers)
            kvEvents = kv
            routing.exact = kv
            promptTokenizer = PromptTokenizer(loop: loop, timeout: .milliseconds(Int64(config.routing.tokenizeTimeoutMillis)))
        }
    }

    /// Which backends publish KV events, and where (exact-mode routing, issue 13): with
    /// routing.kv_events, every instance that has a kv_events_url (validation made sure one does).
    static func kvEventPublishers(config: EngineConfig) -> [(BackendID, String)] {
        guard config.routing.kvEvents else { return [] }
        return config.vllm.instances.enumerated().compactMap { i, inst in inst.kvEventsUrl.map { (BackendID(i), $0) } }
    }

    var serverLimits: HTTPServerLimits {
        HTTPServerLimits(
            maxHeaderBytes: config.server.maxHeaderBytes,
            maxBodyBytes: config.server.maxBodyBytes,
            readTimeout: .seconds(validated: config.server.readTimeoutSeconds),
            idleTimeout: .seconds(validated: config.server.idleTimeoutSeconds))
    }

    /// Starts the health monitor (and admission, KV events, Redis), then binds once the backends'
    /// first check has ended (at most `settleLimit`); returns the bound port. Before that a
    /// request naming a model would be routed as if every backend served every model (a backend
    /// whose list is not known yet serves anything): with SO_REUSEPORT the workers already
    /// listening take the connections meanwhile, and a lone process starts a few milliseconds later.
    public func start(host: String, port: Int, reusePort: Bool = true,
                      settleLimit: Duration = .seconds(2)) throws(ListenerError) -> Int {
        let m = HealthMonitor(loop: loop, backends: backends,
                              interval: .seconds(validated: config.vllm.healthCheckIntervalSeconds))
        m.onBreakerOpened = { [unowned self] b in self.breakerChanged(b) }
        m.onChange = { [unowned self] b in
            self.logger.notice("backend \(b.isHealthy ? "up" : "down")", metadata: ["eng.upstream": "\(b.url)"])
            // A backend that stopped answering may restart with an empty cache and publish
            // nothing until its next store: forget its blocks now rather than on its next batch.
            if !b.isHealthy { self.kvEvents?.purge(b.id) }
        }
        m.onModelsDiscovered = { [unowned self] _ in self.checkModelRegistry() }
        monitor = m
        checkModelRegistry()  // instances with configured `models` are known already
        m.start()
        admission?.start()
        if let kv = kvEvents {
            let failed = kv.start()
            if !failed.isEmpty && !KVEventsDriver.libraryAvailable {
                logger.error("cannot subscribe to KV events: libzmq.so.5 (Debian's libzmq5) cannot be loaded")
            }
            for url in failed {
                logger.error("cannot subscribe to KV events", metadata: ["eng.upstream": "\(url)"])
            }
        }
        if let r = redis {
            let where_ = redactedRedisURL
            r.onStateChange = { [unowned self] up in
                // Once per change, not per request.
                if up {
                    self.logger.notice("redis connected", metadata: ["eng.redis": "\(where_)"])
                } else {
                    self.logger.warning("redis lost: serving without the shared cache until it returns",
                                        metadata: ["eng.redis": "\(where_)", "error": "\(r.lastError ?? "-")"])
                }
            }
            r.connect()
            // Down from the start: say so once (onStateChange only reports changes).
            let t = Timer(loop: loop)
            t.onFire = { [unowned self] in
                if !r.isConnected {
                    self.logger.warning("redis unavailable at start-up: serving without the shared cache until it answers",
                                        metadata: ["eng.redis": "\(where_)", "error": "\(r.lastError ?? "-")"])
                }
            }
            t.schedule(after: .seconds(2))
            startupRedisCheck = t
        }
        runUntilSettled(m, limit: settleLimit)
        let fe = frontend
        let l = try Listener(loop: loop, host: host, port: port, reusePort: reusePort) { fd in fe.accept(fd) }
        listener = l
        return l.port
    }

    /// Runs the loop (before anything listens: nothing else is being handled) until the health
    /// monitor's first round has ended or `limit` has passed (a backend that does not answer).
    private func runUntilSettled(_ m: HealthMonitor, limit: Duration) {
        guard !m.isSettled else { return }
        let deadline = Loop.nowNanos() &+ limit.nanoseconds
        let wake = Timer(loop: loop)  // the loop returns by the deadline, even with nothing else to do
        wake.onFire = {}
        wake.schedule(after: limit)
        while !m.isSettled && Loop.nowNanos() < deadline { loop.runOnce() }
        wake.close()
        if !m.isSettled {
            logger.warning("backends not checked within \(limit): listening anyway (their models count as unknown)")
        }
    }

    /// The last registry report logged (each distinct one once, not at every health check).
    private var lastRegistryReport: [String] = []

    /// Once every backend's model list is known: warns about each model_registry name that no
    /// backend serves, saying what requests without a model do instead (ModelRouter's rules).
    func checkModelRegistry() {
        guard let served = backends.servedModels() else { return }
        let reg = config.modelRegistry
        let servedList = served.isEmpty ? "none" : served.joined(separator: ", ")
        var report: [String] = []
        var names = [("fast_model", reg.fastModel), ("large_model", reg.largeModel)]
        if reg.largeModel == reg.fastModel { names.removeLast() }
        for (key, name) in names where !served.contains(name) {
            let instead: String
            if served.count == 1 {
                instead = "requests without a model go to `\(served[0])`, the only model served"
            } else if let fb = reg.fallbackModel, served.contains(fb) {
                instead = "requests routed to it are answered by the fallback model `\(fb)`"
            } else {
                instead = "requests without a model routed to it are answered 404 model_not_found"
            }
            report.append("model_registry.\(key) `\(name)` is not served by any backend (served: \(servedList)): \(instead)")
        }
        if let fb = reg.fallbackModel, !served.contains(fb) {
            report.append("model_registry.fallback_model `\(fb)` is not served by any backend (served: \(servedList)): no fallback")
        }
        guard report != lastRegistryReport else { return }
        lastRegistryReport = report
        for line in report { logger.warning("\(line)") }
    }

    func breakerChanged(_ b: Backend) {
        let names = ["closed", "open", "half-open"]
        logger.notice("circuit breaker \(names[b.breaker.gauge])", metadata: ["eng.upstream": "\(b.url)"])
    }

    /// Graceful drain (SIGTERM): stop accepting, let in-flight requests and streams finish, then
    /// call `done` — when the last connection closes, or after server.drain_timeout_seconds.
    public func drain(done: @escaping () -> Void) {
        logger.notice("draining: no new connections; waiting for in-flight requests")
        listener?.close()
        listener = nil
        metricsListener?.close()
        metricsListener = nil
        frontend.drain()
        let deadline = Loop.nowNanos() + Duration.seconds(validated: config.server.drainTimeoutSeconds).nanoseconds
        let t = Timer(loop: loop)
        drainTimer = t
        t.onFire = { [unowned self] in
            if self.frontend.connections.isEmpty || Loop.nowNanos() >= deadline {
                if !self.frontend.connections.isEmpty {
                    self.logger.warning("drain timeout: closing \(self.frontend.connections.count) connections")
                }
                done()
            } else {
                self.drainTimer?.schedule(after: .milliseconds(50))
            }
        }
        t.schedule(after: .zero)
    }
    private var drainTimer: Timer?
    private var startupRedisCheck: Timer?

    /// redis.url without its password, for logs.
    var redactedRedisURL: String {
        guard let u = RedisURL.parse(config.redis.url) else { return "(invalid)" }
        if let path = u.socketPath { return "unix://\(path)?db=\(u.db)" }
        return "redis://\(u.password != nil ? "***@" : "")\(u.host):\(u.port)/\(u.db)"
    }
    private var metricsListener: Listener?

    /// server.metrics_port: a second listener for this process alone (with SO_REUSEPORT on the
    /// main port, scrapes there reach a random worker; each worker's metrics port is
    /// metrics_port + worker index).
    public func startMetricsListener(host: String, port: Int) throws(ListenerError) -> Int {
        let fe = frontend
        let l = try Listener(loop: loop, host: host, port: port, reusePort: false) { fd in fe.accept(fd) }
        metricsListener = l
        return l.port
    }

    public func stop() {
        startupRedisCheck?.close()
        accessLog?.close()
        accessLog = nil
        drainTimer?.close()
        metricsListener?.close()
        listener?.close()
        monitor?.stop()
        admission?.stop()
        kvEvents?.stop()
        coalescer.stop()
        redis?.close()
        for b in backends.all { b.pool.closeAll() }
        for t in idleTimers { t.timer.close() }
        idleTimers.removeAll()
    }

    // MARK: helpers for drivers

    /// `counted: false` when a session answers: its requestFinished counts the status once.
    /// Returns the body bytes written (for the access log's bytes_out).
    @discardableResult
    func writeError(_ err: EngineError, to c: HTTPServerConnection, requestId: String?, extra: HTTPHeaders? = nil,
                    counted: Bool = true) -> Int {
        var h = extra ?? HTTPHeaders()
        if extra == nil, let r = requestId { h.add("x-request-id", r) }
        if counted { metrics.recordStatus(err.status) }
        return ResponseWriter.error(err, to: c, headers: h)
    }

    /// The RequestMachine policy of one request: the configured one, with what the request asks
    /// (stream, usage), what the cache and coalescer may do for it, and its fallback model.
    func requestPolicy(for request: OpenAIRequest, plan: CachePlan, servedModel: String?) -> RequestMachine.Policy {
        var p = requestPolicy
        p.isStream = request.stream
        p.kind = request.kind
        p.includeUsage = request.includeUsage
        let cacheable = plan.key != nil
        p.lookupCache = cacheable && plan.lookup
        p.storesAnswer = cacheable && plan.store && cache != nil
        p.coalesce = plan.coalesces
        p.mayLead = plan.coalesces && plan.lead
        p.canUseStale = cacheable && cache != nil
        if let fb = fallbackModel, fb != servedModel, backends.isKnown(fb) != false {
            p.fallbackModel = fb
        }
        return p
    }

    /// Looks `key` up for `waiter`: fresh (refreshing its LRU position), or for the fallback chain
    /// `stale` (a peek that leaves the LRU order alone); a miss without a cache or a key. The
    /// embedded and shared-memory stores answer at once, without a completion, whose weak reference
    /// would give the waiter a side table (an allocation, slower refcounts). Redis answers later,
    /// and not at all to a waiter that went away meanwhile.
    func lookUp(_ key: String?, stale: Bool, now: UInt64, for waiter: any CacheWaiter) {
        guard let cache, let key else { return waiter.cacheAnswered(.miss, stale: stale) }
        if let sync = syncCache { return waiter.cacheAnswered(sync.lookup(key, now: now, touch: !stale), stale: stale) }
        if stale {
            cache.getStale(key: key, now: now, wallMillis: Loop.wallMillis()) { [weak waiter] in waiter?.cacheAnswered($0, stale: true) }
        } else {
            cache.get(key: key, now: now, wallMillis: Loop.wallMillis()) { [weak waiter] in waiter?.cacheAnswered($0, stale: false) }
        }
    }

    /// Stores a complete answer under `key` for the configured TTLs.
    func store(_ answer: StoredAnswer, key: String, now: UInt64 = Loop.nowNanos()) {
        guard let cache else { return }
        let c = config.cache
        if let sync = syncCache {
            sync.store(key, head: answer.encodedHead(), payload: answer.payload, ttl: .seconds(validated: c.ttlSeconds), staleTTL: .seconds(validated: c.staleTtlSeconds),
                       now: now)
        } else {
            cache.put(key: key, value: answer.encoded(), ttl: .seconds(validated: c.ttlSeconds),
                      staleTTL: .seconds(validated: c.staleTtlSeconds), now: now, wallMillis: Loop.wallMillis())
        }
        metrics.cacheStores += 1
    }

    /// Idle session timers (a libevent event each), reused instead of one allocation per request,
    /// each with when it is still set to wake (nil: not set). A timer given back set stays set:
    /// the next request's deadline is later, and the timer then needs no `event_add` (SessionTimer).
    /// One that wakes while idle has no target and does nothing (`isArmed` turns false).
    private var idleTimers: [(timer: Timer, wakes: UInt64?)] = []

    /// An idle timer (or a new one) that tells `target` when it fires, and when it is set to wake.
    func takeTimer(for target: any TimerTarget) -> (Timer, wakes: UInt64?) {
        guard let (t, wakes) = idleTimers.popLast() else {
            let t = Timer(loop: loop)
            t.target = target
            return (t, nil)
        }
        t.target = target
        return (t, t.isArmed ? wakes : nil)
    }

    /// Takes `t` back (`wakes`: when it is set to wake; nil: it is cancelled here).
    func returnTimer(_ t: Timer, wakes: UInt64?) {
        if wakes == nil { t.cancel() }
        t.onFire = nil
        t.target = nil
        if idleTimers.count < 4096 { idleTimers.append((t, wakes)) } else { t.close() }
    }

    // MARK: access log and latency metrics

    /// Access-log facts only the front end has (method, path, client, user agent), by session,
    /// from the session's start to `requestFinished`; empty when the access log is off. Kept here
    /// rather than in RequestSession while that file is being restructured; it can carry them
    /// itself afterwards. The upstream status (`noteUpstreamStatus`) rides along.
    private var sessionAccess: [ObjectIdentifier: (request: AccessRequestInfo, upstreamStatus: Int?)] = [:]

    /// What the access log says about the request on `c` with `head`; nil when the log is off
    /// (nothing is read or copied then).
    func accessInfo(_ head: HTTPRequestHead, _ c: HTTPServerConnection) -> AccessRequestInfo? {
        guard accessLog != nil else { return nil }
        return AccessRequestInfo(method: head.method, path: head.path, client: c.peerAddress,
                                 userAgent: head.headers["user-agent"])
    }

    /// The Frontend hands over a session's request facts before starting it.
    func sessionStarted(_ s: RequestSession, request: AccessRequestInfo?) {
        guard let request else { return }
        sessionAccess[ObjectIdentifier(s)] = (request, nil)
    }

    /// The status of an upstream response head the session received (the last one counts when
    /// it retried). TODO(ops): RequestSession calls this in its `.upstreamHead` event, not yet.
    func noteUpstreamStatus(_ s: RequestSession, _ status: Int) {
        // Without the access log the table is empty: skip the in-place update, whose accessor
        // costs two allocations even then.
        guard !sessionAccess.isEmpty else { return }
        sessionAccess[ObjectIdentifier(s)]?.upstreamStatus = status
    }

    /// The bounded `model` label of a served model: a model the backends do not know, or one
    /// past Metrics.maxModelLabels, is "other".
    func modelLabel(_ model: String?) -> String {
        guard let model, backends.isKnown(model) != false else { return LabelLimiter.other }
        return metrics.modelLabels.label(model)
    }

    func latencyLabels(model: String?, backend: Backend?) -> LatencyLabels {
        LatencyLabels(model: modelLabel(model), backend: backend?.url ?? "none")
    }

    /// The first event of a stream reached the client (vLLM sends its first chunk with the first
    /// token; the SSE head and `: queued` comments do not count), or a whole 200 answer did.
    /// RequestSession calls this once per request.
    func firstTokenRelayed(_ s: RequestSession, now: UInt64) {
        metrics.firstTokenSeconds.observe(latencyLabels(model: s.servedModel, backend: s.backend),
                                          Double(now - s.timings.start) / 1e9)
    }

    func requestFinished(_ s: RequestSession, termination: Termination) {
        metrics.requestsInFlight -= 1
        metrics.recordStatus(s.status)
        metrics.terminationCounts.increment(termination)
        let now = Loop.nowNanos()
        let labels = latencyLabels(model: s.servedModel, backend: s.backend)
        let route = s.request.kind.name
        metrics.requestsByKey.increment(Metrics.RequestKey(route: route, model: labels.model, statusClass: Metrics.statusClass(s.status), cache: s.cacheOutcome))
        let t = s.timings
        let duration = now - t.start
        metrics.e2eSeconds.observe(labels, Double(duration) / 1e9)
        if t.firstByte > 0 { metrics.ttftSeconds.observe(labels, Double(t.firstByte - t.start) / 1e9) }
        // Overhead: what is left after the upstream exchange and admission waits. A follower's
        // wait for its leader counts as upstream time too.
        let waited = s.isFollower ? duration : min(duration, t.upstream + t.queued)
        metrics.overheadSeconds.observe(labels, Double(duration - waited) / 1e9)
        if let u = s.usage {
            metrics.promptTokens.increment(labels.model, by: u.prompt)
            metrics.completionTokens.increment(labels.model, by: u.completion)
        }
        let access = sessionAccess.isEmpty ? nil : sessionAccess.removeValue(forKey: ObjectIdentifier(s))
        guard let log = accessLog else { return }
        log.write(AccessLogEntry(
            requestId: s.requestId, request: access?.request, route: route,
            modelAsked: s.requestedModel, modelServed: s.servedModel, backend: s.backend?.url,
            upstreamStatus: access?.upstreamStatus, status: s.status, cache: s.cacheOutcome, coalesced: s.isFollower,
            bytesIn: s.bytesIn, bytesOut: s.bytesOut,
            ttfbSeconds: t.firstByte > 0 ? Double(t.firstByte - t.start) / 1e9 : nil,
            durationSeconds: Double(duration) / 1e9, termination: termination))
    }

    /// Metrics and access line for a hit answered by the Frontend's fast path. `requestedModel` is
    /// the `model` the client's body named (the memo remembers it from the first parse).
    func memoHitAnswered(kind: EndpointKind, servedModel: String, requestedModel: String?, requestId: RequestID,
                         request: AccessRequestInfo?, bytesIn: Int, bytesOut: Int, startNanos: UInt64) {
        let now = Loop.nowNanos()
        let route = kind.name
        let labels = latencyLabels(model: servedModel, backend: nil)
        metrics.cacheHits += 1
        metrics.recordStatus(200)
        metrics.terminationCounts.increment(.normal)
        metrics.requestsByKey.increment(Metrics.RequestKey(route: route, model: labels.model, statusClass: "2xx", cache: "HIT"))
        let d = Double(now - startNanos) / 1e9
        metrics.e2eSeconds.observe(labels, d)
        metrics.ttftSeconds.observe(labels, d)
        metrics.overheadSeconds.observe(labels, d)
        // The id's String only for the log (a hit writes its bytes; a new id's String is a heap one).
        accessLog?.write(AccessLogEntry(
            requestId: requestId.string, request: request, route: route, modelAsked: requestedModel, modelServed: servedModel,
            backend: nil, upstreamStatus: nil, status: 200, cache: "HIT", coalesced: false, bytesIn: bytesIn,
            bytesOut: bytesOut, ttfbSeconds: d, durationSeconds: d, termination: .normal))
    }

    /// Access line for a request answered by the Frontend itself (bad input, auth, routes).
    func frontendAnswered(route: String, status: Int, requestId: String, request: AccessRequestInfo?, bytesIn: Int,
                          bytesOut: Int, startNanos: UInt64, termination: Termination? = nil) {
        let term = termination ?? Termination(status >= 400 ? .policy : .normal, .request)
        metrics.terminationCounts.increment(term)
        guard let log = accessLog else { return }
        // A HEAD request's error body was not sent (HTTPServerConnection writes heads alone).
        let sent = request?.method == "HEAD" ? 0 : bytesOut
        log.write(AccessLogEntry(
            requestId: requestId, request: request, route: route, modelAsked: nil, modelServed: nil, backend: nil,
            upstreamStatus: nil, status: status, cache: "BYPASS", coalesced: false, bytesIn: bytesIn, bytesOut: sent,
            ttfbSeconds: nil, durationSeconds: Double(Loop.nowNanos() - startNanos) / 1e9, termination: term))
    }
}

/// Reads a whole text file at start-up (config helpers; never on the data path).
func readTextFile(_ path: String) -> String? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

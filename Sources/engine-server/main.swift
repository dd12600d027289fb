// engine-server: flags, config, one Loop, signals. No logic (style A).
import ArgumentParser
import CEventShim
import Engine
import Logging
import Reactor

#if canImport(Glibc)
import Glibc
#endif

struct EngineServer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine-server",
        abstract: "OpenAI-compatible proxy in front of vLLM: one libevent loop per process.",
        discussion: """
            Environment (applied after the config file):
              VLLM_URL   one backend URL (http://host:port); replaces vllm.instances
              REDIS_URL  redis.url: the cache and coalescing that workers and
                         Engines share (redis://host:port/db or unix:///path)

            Endpoints: /v1/chat/completions, /v1/completions, /v1/models,
            /health and /readyz (readiness), /livez (liveness), /metrics
            (Prometheus text; JSON with Accept: application/json).
            Every config key: docs/configuration.md.
            """,
        version: engineVersion)

    @Option(help: "Config file (YAML).") var config: String = "configs/default.yaml"
    @Option(help: "Listen address (overrides server.host).") var host: String?
    @Option(help: "Listen port (overrides server.port; 0 = any free port).") var port: Int?
    @Option(help: "Worker processes sharing the port (overrides server.workers; 0 = one per core).") var workers: Int?
    @Flag(help: "Let another engine-server or program listen on the same port (as server.share_port: true).") var sharePort = false
    @Option(help: .hidden) var workerIndex: Int?
    /// How many workers the supervisor runs (a worker's share of backend-wide limits).
    @Option(help: .hidden) var workerCount: Int?

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let env = currentEnvironment()
        let cfg: EngineConfig
        do {
            cfg = try ConfigLoader.load(path: config, environment: env)
        } catch {
            FileHandleStderr.write("\(error)\n")
            throw ExitCode(2)
        }
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = Logger.Level(rawValue: cfg.server.logLevel) ?? .info
            return h
        }
        var logger = Logger(label: "engine")
        logger.logLevel = Logger.Level(rawValue: cfg.server.logLevel) ?? .info
        ces_tune_malloc()
        let loop = Loop()
        var n = workers ?? cfg.server.workers
        if n <= 0 { n = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }
        let h = host ?? cfg.server.host
        // The first process on the port claims it (PortGuard says why); workers share their
        // supervisor's claim.
        var portClaim: PortGuard?
        if workerIndex == nil && !(sharePort || cfg.server.sharePort) {
            switch PortGuard.claim(host: h, port: port ?? cfg.server.port) {
            case .success(let g): portClaim = g
            case .failure(let refusal):
                FileHandleStderr.write("engine: \(refusal)\n")
                throw ExitCode(1)
            }
        }
        defer { portClaim?.release() }
        var sharedStore: PrivateRedis?
        // Only a segment this supervisor creates is handed to its workers (never one named by
        // the environment it was started with).
        if workerIndex == nil { unsetenv(SharedMemoryCacheStore.environmentKey) }
        // Token/request budgets (issue 14) must hold across workers too: they need the shared Redis.
        let hasBudgets = (cfg.auth.keyTenants + cfg.admissionControl.tenants).contains { $0.hasLimits }
        if n > 1 && workerIndex == nil && (cfg.cache.isEnabled || hasBudgets) && cfg.redis.url.isEmpty {
            // Workers must share one cache and flight table (PrivateRedis says why).
            if let exe = PrivateRedis.locate(environment: env), let r = PrivateRedis(executable: exe, environment: env), r.start() {
                setenv("REDIS_URL", r.url, 1)
                sharedStore = r
                logger.notice("workers share a private redis-server at \(r.url) for coalescing")
                // The answers themselves live in shared memory: a lookup or a store is a lock and
                // a copy, not a round trip (created after redis-server, which must not inherit it).
                if cfg.cache.isEnabled {
                    switch SharedMemoryCacheStore.create(maxEntries: cfg.cache.maxSize, maxBytes: cfg.cache.maxBytes) {
                    case .success(let fd):
                        setenv(SharedMemoryCacheStore.environmentKey, String(fd), 1)
                    case .failure(let e):
                        logger.warning("no shared-memory cache (\(e)): workers keep the cache in the private redis-server")
                    }
                }
            } else {
                logger.warning("redis-server not found or not starting: running ONE worker so that the cache and coalescing stay whole (install redis-server, or set redis.url, for one worker per core)")
                n = 1
            }
        }
        if n > 1 && workerIndex == nil {
            try superviseWorkers(n, host: h, config: cfg, loop: loop, logger: logger, env: env, sharedStore: sharedStore)
            return
        }
        // admission_control.max_inflight_per_backend is for all workers together: each holds its share.
        var workerConfig = cfg
        if let k = workerCount, k > 1, cfg.admissionControl.maxInflightPerBackend > 0 {
            workerConfig.admissionControl.maxInflightPerBackend = max(1, cfg.admissionControl.maxInflightPerBackend / k)
        }
        let runtime: EngineRuntime
        do {
            runtime = try EngineRuntime(config: workerConfig, loop: loop, logger: logger, sharedCache: attachSharedCache(env, logger: logger))
        } catch {
            FileHandleStderr.write("\(error)\n")
            throw ExitCode(2)
        }
        let bound: Int
        do {
            bound = try runtime.start(host: h, port: port ?? cfg.server.port)
        } catch {
            FileHandleStderr.write("engine: cannot listen on \(h):\(port ?? cfg.server.port): \(error)\n")
            throw ExitCode(1)
        }
        if let mp = cfg.server.metricsPort {
            let want = mp == 0 ? 0 : mp + (workerIndex ?? 0)
            do {
                let got = try runtime.startMetricsListener(host: h, port: want)
                logger.notice("metrics listener on \(h):\(got)")
            } catch {
                FileHandleStderr.write("engine: cannot listen for metrics on \(h):\(want): \(error)\n")
                throw ExitCode(1)
            }
        }
        print("engine listening on \(h):\(bound)")
        fflush(nil)
        // SIGTERM/SIGINT: graceful drain, then exit 0. A second signal more than a second later
        // stops at once (one sent to the whole process group reaches a worker twice: from the
        // terminal or systemd, and forwarded by the supervisor).
        var drainStarted: UInt64 = 0
        let onStop = {
            if drainStarted > 0 {
                if Loop.nowNanos() - drainStarted > 1_000_000_000 { loop.stop() }
                return
            }
            drainStarted = Loop.nowNanos()
            runtime.drain { loop.stop() }
        }
        let term = SignalWatcher(loop: loop, signal: SIGTERM, onSignal: onStop)
        let intr = SignalWatcher(loop: loop, signal: SIGINT, onSignal: onStop)
        // Config reload is the supervisor's job (new workers replace old ones); a lone worker
        // ignores SIGHUP rather than dying of it.
        let hup = SignalWatcher(loop: loop, signal: SIGHUP) {
            logger.warning("SIGHUP ignored: reload needs --workers (the supervisor replaces workers)")
        }
        loop.run()
        term.close()
        intr.close()
        hup.close()
        runtime.stop()
    }
}

extension EngineServer {
    /// Supervisor mode: reserve the port, start N workers (`--workers 1 --worker-index i`).
    func superviseWorkers(_ n: Int, host: String, config cfg: EngineConfig, loop: Loop, logger: Logger,
                          env: [String: String], sharedStore: PrivateRedis?) throws {
        guard let (_, port) = Supervisor.reservePort(host: host, port: port ?? cfg.server.port) else {
            sharedStore?.stop()
            FileHandleStderr.write("engine: cannot bind \(host):\(port ?? cfg.server.port)\n")
            throw ExitCode(1)
        }
        let configPath = config
        let sup = Supervisor(
            loop: loop, executable: Supervisor.selfExecutable(), count: n,
            drainTimeout: .seconds(validated: cfg.server.drainTimeoutSeconds), logger: logger,
            checkConfig: {
                do { _ = try ConfigLoader.load(path: configPath, environment: currentEnvironment()); return nil } catch { return "\(error)" }
            },
            argsForWorker: { i in
                ["--config", configPath, "--host", host, "--port", String(port), "--workers", "1", "--worker-index", String(i),
                 "--worker-count", String(n)]
            })
        logger.notice("supervising \(n) workers on \(host):\(port)")
        sup.privateRedis = sharedStore
        sup.start()
        loop.run()
        sup.close()
        if sup.gaveUp { throw ExitCode(1) }
    }

    /// A worker's view of its supervisor's shared-memory cache (nil for a lone process, or when the
    /// segment cannot be mapped: then the cache stays in Redis).
    func attachSharedCache(_ env: [String: String], logger: Logger) -> SharedMemoryCacheStore? {
        guard workerIndex != nil, let v = env[SharedMemoryCacheStore.environmentKey], let fd = Int32(v), fd > 2 else { return nil }
        guard let store = SharedMemoryCacheStore(fd: fd) else {
            logger.warning("\(SharedMemoryCacheStore.environmentKey)=\(v) is not a shared cache: keeping the cache in Redis")
            return nil
        }
        close(fd)  // the mapping outlives the descriptor; the supervisor keeps its own
        return store
    }
}

func currentEnvironment() -> [String: String] {
    var env: [String: String] = [:]
    var p = environ
    while let entry = p.pointee {
        let s = String(cString: entry)
        if let eq = s.firstIndex(of: "=") { env[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
        p += 1
    }
    return env
}

enum FileHandleStderr {
    static func write(_ s: String) {
        var s = s
        s.withUTF8 { p in _ = Glibc.write(2, p.baseAddress, p.count) }
    }
}

EngineServer.main()

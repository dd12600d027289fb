// Supervisor: `engine-server --workers N` — N single-loop worker processes sharing one port
// through SO_REUSEPORT. Restarts a worker that dies (backoff when it dies young), forwards
// SIGTERM/SIGINT to all and exits 0 once they have drained, and on SIGHUP replaces every worker
// with a fresh one that reads the config again (new first, then the old one drains: no dropped
// connection). Owns: the worker pids, the port reservation fd, its signal watchers and timers.
import CEventShim
import Logging
import Reactor

#if canImport(Glibc)
import Glibc
#endif

public final class Supervisor {
    private let loop: Loop
    private let executable: String
    private let argsForWorker: (Int) -> [String]
    private let count: Int
    private var logger: Logger
    private let drainTimeout: Duration
    /// Validates the config before a reload (nil = fine, else the error text).
    private let checkConfig: () -> String?
    /// pid → worker index.
    private var workers: [Int32: Int] = [:]
    private var startedAt: [Int32: UInt64] = [:]
    private var stopping = false
    private var watchers: [SignalWatcher] = []
    private var timers: [Timer] = []
    public private(set) var restarts = 0
    /// Workers that died within a second of starting, in a row: past `maxEarlyDeaths` the
    /// supervisor gives up (exit 1) instead of restarting a broken setup forever.
    private var earlyDeaths = 0
    private let maxEarlyDeaths = 5
    public private(set) var gaveUp = false
    /// The workers' shared store (default config), restarted when it dies.
    public var privateRedis: PrivateRedis?

    public init(loop: Loop, executable: String, count: Int, drainTimeout: Duration, logger: Logger,
                checkConfig: @escaping () -> String?, argsForWorker: @escaping (Int) -> [String]) {
        self.loop = loop
        self.executable = executable
        self.count = count
        self.drainTimeout = drainTimeout
        self.logger = logger
        self.checkConfig = checkConfig
        self.argsForWorker = argsForWorker
    }

    public func start() {
        watchers.append(SignalWatcher(loop: loop, signal: SIGCHLD) { [unowned self] in self.reap() })
        watchers.append(SignalWatcher(loop: loop, signal: SIGTERM) { [unowned self] in self.shutdown() })
        watchers.append(SignalWatcher(loop: loop, signal: SIGINT) { [unowned self] in self.shutdown() })
        watchers.append(SignalWatcher(loop: loop, signal: SIGHUP) { [unowned self] in self.reload() })
        for i in 0..<count { spawn(i) }
    }

    private func spawn(_ index: Int) {
        let argv = [executable] + argsForWorker(index)
        var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) }
        cargs.append(nil)
        defer { for p in cargs { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, nil, nil, cargs, environ)
        guard rc == 0 else {
            logger.error("cannot start worker \(index): errno \(rc)")
            return
        }
        workers[pid] = index
        startedAt[pid] = Loop.nowNanos()
        logger.info("worker \(index) started", metadata: ["pid": "\(pid)"])
    }

    private func reap() {
        while true {
            var status: Int32 = 0
            let pid = waitpid(-1, &status, WNOHANG)
            if pid <= 0 { break }
            if let r = privateRedis, pid == r.pid {
                guard !stopping else { continue }
                logger.warning("private redis-server exited; restarting (workers serve without the shared cache meanwhile)")
                r.start(wait: .zero)
                continue
            }
            guard let index = workers.removeValue(forKey: pid) else { continue }
            let age = Loop.nowNanos() - (startedAt.removeValue(forKey: pid) ?? 0)
            if stopping {
                if workers.isEmpty { loop.stop() }
                continue
            }
            if replaced.remove(pid) != nil { continue } // an old worker drained after a reload
            restarts += 1
            logger.warning("worker \(index) exited; restarting", metadata: ["pid": "\(pid)", "status": "\(status)"])
            // A worker that dies within a second of starting is restarted after a second, so a
            // broken config or port does not become a fork storm; five such deaths in a row and
            // the supervisor stops everything and exits 1.
            if age < 1_000_000_000 {
                earlyDeaths += 1
                if earlyDeaths >= maxEarlyDeaths {
                    logger.critical("workers keep dying at start-up (\(earlyDeaths) in a row); giving up")
                    gaveUp = true
                    shutdown()
                    if workers.isEmpty { loop.stop() }
                    return
                }
                let t = Timer(loop: loop)
                t.onFire = { [unowned self] in if !self.stopping { self.spawn(index) } }
                t.schedule(after: .seconds(1))
                timers.append(t)
            } else {
                earlyDeaths = 0
                spawn(index)
            }
        }
    }

    private var replaced: Set<Int32> = []

    private func reload() {
        if let problem = checkConfig() {
            logger.error("SIGHUP: config rejected, keeping the running workers: \(problem)")
            return
        }
        logger.notice("SIGHUP: replacing \(workers.count) workers with the new config")
        let old = workers
        for (_, index) in old { spawn(index) }
        // The old workers keep listening until the new ones have run their first health checks
        // and bound the port (EngineRuntime.start: at most 2 s); then they drain.
        let t = Timer(loop: loop)
        t.onFire = { [unowned self] in
            for (pid, _) in old where self.workers[pid] != nil {
                self.replaced.insert(pid)
                kill(pid, SIGTERM)
            }
        }
        t.schedule(after: .milliseconds(2500))
        timers.append(t)
    }

    private func shutdown() {
        guard !stopping else { return }
        stopping = true
        logger.notice("stopping \(workers.count) workers (graceful drain)")
        for pid in workers.keys { kill(pid, SIGTERM) }
        if workers.isEmpty { loop.stop(); return }
        let t = Timer(loop: loop)
        t.onFire = { [unowned self] in
            for pid in self.workers.keys { kill(pid, SIGKILL) }
        }
        t.schedule(after: drainTimeout + .seconds(5))
        timers.append(t)
    }

    public func close() {
        for w in watchers { w.close() }
        for t in timers { t.close() }
        privateRedis?.stop()
    }

    /// Path of the running executable.
    public static func selfExecutable() -> String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        return n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    }

    /// Reserves `port` (or an ephemeral one for 0) with SO_REUSEPORT without listening, so every
    /// worker binds the same number. Returns (fd, port); the fd stays open for the supervisor's life.
    /// `host` may be an IPv4 or IPv6 literal or a name (resolved once, first address).
    public static func reservePort(host: String, port: Int) -> (Int32, Int)? {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &res) == 0, let ai = res else { return nil }
        defer { freeaddrinfo(res) }
        let fd = socket(ai.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 else { Glibc.close(fd); return nil }
        var bound = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        let family = bound.ss_family
        let p: UInt16 = withUnsafePointer(to: &bound) { b in
            family == sa_family_t(AF_INET6)
                ? b.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_port }
                : b.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_port }
        }
        return (fd, Int(UInt16(bigEndian: p)))
    }
}

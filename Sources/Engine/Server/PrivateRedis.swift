// PrivateRedis: the store the default config's workers share. `server.workers` > 1 with the cache
// on and no `redis.url` would otherwise give each worker its own cache and flight table (a repeat
// misses whenever the kernel hands it to another worker; N identical requests make one upstream
// call per worker). So the supervisor starts Debian's redis-server on a Unix socket in a private
// directory (mode 0700, no TCP port, no persistence) and hands its URL to the workers through
// REDIS_URL: one code path with a user's own Redis, already tested. Restarted when it dies
// (workers keep serving meanwhile: Redis down degrades to misses). Owns: the child pid and the
// directory, removed in stop().
import CEventShim
import Reactor

#if canImport(Glibc)
import Glibc
#endif

public final class PrivateRedis {
    public let directory: String
    public let socketPath: String
    public private(set) var pid: pid_t = 0
    private let executable: String

    public var url: String { "unix://" + socketPath }

    /// Finds redis-server on PATH (or /usr/bin, /usr/sbin); nil when it is not installed.
    public static func locate(environment: [String: String]) -> String? {
        var dirs = (environment["PATH"] ?? "").split(separator: ":").map(String.init)
        dirs += ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
        for d in dirs where !d.isEmpty {
            let p = d + "/redis-server"
            if access(p, X_OK) == 0 { return p }
        }
        return nil
    }

    /// Makes the private directory; nil if it cannot.
    public init?(executable: String, environment: [String: String]) {
        let base = environment["XDG_RUNTIME_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array((base + "/engine-redis-XXXXXX").utf8CString)
        let made: String? = template.withUnsafeMutableBufferPointer { buf in
            guard let p = mkdtemp(buf.baseAddress!) else { return nil }
            return String(cString: p)
        }
        guard let dir = made else { return nil }
        directory = dir
        socketPath = dir + "/redis.sock"
        self.executable = executable
    }

    /// Starts redis-server and waits (at most `wait`) until its socket accepts connections.
    @discardableResult
    public func start(wait: Duration = .seconds(3)) -> Bool {
        unlink(socketPath)
        let argv = [executable, "--port", "0", "--unixsocket", socketPath, "--unixsocketperm", "700",
                    "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", directory,
                    "--logfile", directory + "/redis.log", "--loglevel", "warning"]
        var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) }
        cargs.append(nil)
        defer { for p in cargs { free(p) } }
        // SIGTERM when the supervisor dies, even by SIGKILL: no orphaned redis-server.
        let child = ces_spawn_dying_with_parent(executable, cargs, SIGTERM)
        guard child > 0 else { return false }
        pid = child
        let deadline = Loop.nowNanos() + wait.nanoseconds
        while Loop.nowNanos() < deadline {
            if accepts() { return true }
            usleep(10_000)
        }
        return false
    }

    /// True when a connection to the socket succeeds (start-up only: blocking, once per 10 ms).
    private func accepts() -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let path = Array(socketPath.utf8)
        guard path.count < MemoryLayout.size(ofValue: addr.sun_path) else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: path)
            raw[path.count] = 0
        }
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
            }
        }
    }

    /// Stops redis-server and removes the directory.
    public func stop() {
        if pid > 0 {
            kill(pid, SIGTERM)
            var status: Int32 = 0
            // redis-server exits within milliseconds of SIGTERM without persistence.
            for _ in 0..<200 {
                if waitpid(pid, &status, WNOHANG) != 0 { break }
                usleep(10_000)
            }
            if waitpid(pid, &status, WNOHANG) == 0 {
                kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
            }
            pid = 0
        }
        unlink(socketPath)
        unlink(directory + "/redis.log")
        rmdir(directory)
    }
}

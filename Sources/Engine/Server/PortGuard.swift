// PortGuard: start-up check that nobody else listens on host:port before this Engine binds it.
// Every Engine listener uses SO_REUSEPORT so that its own workers share the port; the kernel then
// also lets any other process of the same user bind beside them, and a second engine-server
// started by mistake would silently take half the connections. Unless the operator asks for
// sharing (server.share_port, --share-port), the supervisor (or a single process) claims the port:
//   1. an exclusive flock on /tmp/engine-server.<host>.<port>.lock, held for the life of the
//      process and released by the kernel however it ends: two Engines started at the same
//      moment cannot both pass, and the loser learns the holder's pid from the file;
//   2. a probe bind without SO_REUSEPORT (with SO_REUSEADDR, so TIME_WAIT left by a previous run
//      does not count): it fails with EADDRINUSE while any socket listens on the port, whoever
//      owns it (an Engine in another container or mount namespace, any other program).
// Owns: the lock file's fd (close-on-exec, so workers do not inherit it). Start-up only.

#if canImport(Glibc)
import Glibc
#endif

public final class PortGuard {
    public enum Refusal: Error, Equatable, CustomStringConvertible {
        /// Another engine-server holds the lock for this address (its pid when it wrote one).
        case heldByEngine(address: String, pid: Int32?)
        /// Something listens on the port.
        case listening(address: String)

        public var description: String {
            let advice = "; refusing to share it (SO_REUSEPORT would split connections, logs and metrics between the two). "
                + "Stop the other process, choose another port (--port, server.port), or set server.share_port: true "
                + "(or --share-port) to share the port on purpose."
            switch self {
            case .heldByEngine(let address, let pid):
                return "\(address) is already served by another engine-server" + (pid.map { " (pid \($0))" } ?? "") + advice
            case .listening(let address):
                return "\(address) is already in use: another process listens on it" + advice
            }
        }
    }

    private var lockFD: Int32

    private init(lockFD: Int32) { self.lockFD = lockFD }

    /// Claims `host:port`. Port 0 (an ephemeral port) needs no claim. A lock file that cannot be
    /// created (read-only /tmp, another user's file) leaves the probe alone to decide; an address
    /// the probe cannot bind for another reason (not local, privileged port) is left for the real
    /// bind to report.
    public static func claim(host: String, port: Int, lockDirectory: String = "/tmp") -> Result<PortGuard, Refusal> {
        let address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        guard port != 0 else { return .success(PortGuard(lockFD: -1)) }
        let path = lockDirectory + "/" + lockFileName(host: host, port: port)
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        if fd >= 0 {
            if flock(fd, LOCK_EX | LOCK_NB) != 0 {
                let pid = readPid(fd)
                close(fd)
                return .failure(.heldByEngine(address: address, pid: pid))
            }
            writePid(fd)
        }
        if isListenedOn(host: host, port: port) {
            if fd >= 0 { close(fd) }
            return .failure(.listening(address: address))
        }
        return .success(PortGuard(lockFD: fd))
    }

    /// Releases the claim (the process's exit does the same).
    public func release() {
        if lockFD >= 0 { close(lockFD) }
        lockFD = -1
    }

    deinit { release() }

    /// `engine-server.<host>.<port>.lock`, the host reduced to `[A-Za-z0-9.-]` (`:` of IPv6 → `_`).
    static func lockFileName(host: String, port: Int) -> String {
        var h = ""
        for u in host.unicodeScalars {
            let ok = (u >= "a" && u <= "z") || (u >= "A" && u <= "Z") || (u >= "0" && u <= "9") || u == "." || u == "-"
            h.unicodeScalars.append(ok ? u : "_")
        }
        return "engine-server.\(h.isEmpty ? "_" : h).\(port).lock"
    }

    /// The pid the holder wrote, if the file holds one.
    private static func readPid(_ fd: Int32) -> Int32? {
        var buf = [UInt8](repeating: 0, count: 16)
        let n = pread(fd, &buf, buf.count, 0)
        guard n > 0 else { return nil }
        return Int32(String(decoding: buf[0..<n], as: UTF8.self).filter { $0.isNumber })
    }

    /// Writes our pid for the next claimant's message, only into a plain file of our own with one
    /// link (never through a link planted in /tmp: O_NOFOLLOW above, the checks here).
    private static func writePid(_ fd: Int32) {
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_uid == geteuid(), st.st_nlink == 1 else { return }
        let text = Array("\(getpid())\n".utf8)
        guard ftruncate(fd, 0) == 0 else { return }
        _ = pwrite(fd, text, text.count, 0)
    }

    /// True when a bind of host:port without SO_REUSEPORT fails with EADDRINUSE: a socket listens
    /// there (or holds the port without sharing it).
    static func isListenedOn(host: String, port: Int) -> Bool {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &res) == 0, let ai = res else { return false }
        defer { freeaddrinfo(res) }
        let fd = socket(ai.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if bind(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 { return false }
        return errno == EADDRINUSE
    }
}

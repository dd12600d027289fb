// AccessLog: writes one JSON line per finished request (AccessLogEntry renders it) to its own
// destination, server.access_log: stdout (default), stderr, or a file opened for appending.
// Lines collect in an evbuffer and go out when 32 KiB have built up or 100 ms after the first
// line, so logging costs no syscall per request; each batch is whole lines, so workers appending
// to one file (O_APPEND) never interleave within a line. Operational events go through swift-log
// on stderr.
// Owns: the evbuffer, its flush Timer and, for a file, the fd; loop-confined.
import CEventShim
import Reactor

#if canImport(Glibc)
import Glibc
#endif

final class AccessLog {
    private let buffer: OpaquePointer
    private let timer: Timer
    private let fd: Int32
    /// A file this object opened (closed in close()); stdout and stderr are not ours to close.
    private let ownsFD: Bool

    init(loop: Loop, fd: Int32, ownsFD: Bool = false) {
        self.fd = fd
        self.ownsFD = ownsFD
        buffer = evbuffer_new()
        timer = Timer(loop: loop)
        timer.onFire = { [unowned self] in self.flush() }
    }

    /// The writer for `destination`; nil for `.off`. A file that cannot be opened is a start-up
    /// error naming the key.
    static func open(_ destination: EngineConfig.AccessLogDestination, loop: Loop) throws(ConfigError) -> AccessLog? {
        switch destination {
        case .off: return nil
        case .stdout: return AccessLog(loop: loop, fd: 1)
        case .stderr: return AccessLog(loop: loop, fd: 2)
        case .file(let path):
            let fd = Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else {
                throw .invalid(key: "server.access_log", message: "cannot open \(path): \(String(cString: strerror(errno)))")
            }
            return AccessLog(loop: loop, fd: fd, ownsFD: true)
        }
    }

    func write(_ e: AccessLogEntry) {
        evbufferAppend(buffer, e.jsonLine(wallSeconds: Loop.wallSeconds()))
        if evbuffer_get_length(buffer) >= 32 * 1024 {
            flush()
        } else if !timer.isArmed {
            timer.schedule(after: .milliseconds(100))
        }
    }

    func flush() {
        timer.cancel()
        while evbuffer_get_length(buffer) > 0 {
            if evbuffer_write(buffer, fd) <= 0 { break }
        }
    }

    func close() {
        flush()
        timer.close()
        evbuffer_free(buffer)
        if ownsFD { _ = Glibc.close(fd) }
    }
}

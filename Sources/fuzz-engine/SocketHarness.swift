// SocketHarness: the request and upstream targets drive a real Reactor connection over a
// socketpair on one Loop, created once for the process. The harness owns the peer end of each
// pair (the fuzzer's side: it writes the input and drains what the connection sends); the
// connection under test owns the other end and must close it. Single-threaded, like the Engine.
import Reactor

#if canImport(Glibc)
import Glibc
#endif

/// The process's loop (never closed: it lives as long as the fuzzer).
// STYLE-EXCEPTION: a Loop is not Sendable; this fuzz program has one thread and needs the loop
// in a C callback (LLVMFuzzerTestOneInput), which cannot capture it.
nonisolated(unsafe) let fuzzLoop = Loop()

struct SocketHarness {
    /// Our end of the pair (nonblocking).
    let peer: Int32
    /// The end handed to the connection under test.
    let engineSide: Int32
    /// Bytes the connection sent us.
    private(set) var received: [UInt8] = []
    private(set) var peerSawEOF = false
    /// Read what the connection sends. Off, its bytes stay unread in our end, so that closing it
    /// resets the connection (Linux reports ECONNRESET to the peer of a unix socket closed with
    /// unread data) instead of ending it with an orderly EOF.
    var drains = true
    private var peerClosed = false

    /// A new socketpair; traps if none can be made (an fd leak in an earlier input ends here).
    init() {
        _ = fuzzLoop  // created first: it ignores SIGPIPE (a write to a closed pair fails with EPIPE)
        var fds: [Int32] = [-1, -1]
        let rc = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
        precondition(rc == 0, "socketpair failed: errno \(errno) (leaked descriptors?)")
        peer = fds[1]
        engineSide = fds[0]
        _ = fcntl(peer, F_SETFL, fcntl(peer, F_GETFL) | O_NONBLOCK)
    }

    /// Runs up to `maxPasses` nonblocking loop passes, draining our end after each, until `done`.
    /// Returns whether `done` held.
    @discardableResult
    mutating func settle(maxPasses: Int = 64, until done: () -> Bool = { false }) -> Bool {
        for _ in 0..<maxPasses {
            if done() { return true }
            fuzzLoop.runOnce(nonBlocking: true)
            drain()
        }
        return done()
    }

    /// Writes `bytes` to the connection, running the loop while the socket buffer is full.
    mutating func send(_ bytes: UnsafeRawBufferPointer) {
        var at = 0
        var stalls = 0
        while at < bytes.count && !peerClosed {
            let n = write(peer, bytes.baseAddress! + at, bytes.count - at)
            if n > 0 {
                at += n
                continue
            }
            let e = errno
            // The connection closed its end (it refused the input): the rest is not needed.
            if e == EPIPE || e == ECONNRESET { return }
            precondition(n < 0 && (e == EAGAIN || e == EWOULDBLOCK), "write to the socketpair failed: errno \(e)")
            // The connection is not reading (paused, or closed its end: then EPIPE above).
            stalls += 1
            if stalls > 64 { return }
            settle(maxPasses: 4)
        }
    }

    /// Ends our direction (the connection reads EOF).
    func shutdownWrite() { _ = shutdown(peer, Int32(SHUT_WR)) }

    /// Closes our end now: with undrained bytes in it, a reset (see `drains`).
    mutating func closePeer() {
        guard !peerClosed else { return }
        peerClosed = true
        close(peer)
    }

    private mutating func drain() {
        guard drains, !peerClosed else { return }
        var buf = [UInt8](repeating: 0, count: 16_384)
        while !peerSawEOF {
            let n = buf.withUnsafeMutableBytes { read(peer, $0.baseAddress, $0.count) }
            if n > 0 {
                received.append(contentsOf: buf[0..<n])
            } else {
                if n == 0 { peerSawEOF = true }
                return
            }
        }
    }

    /// Closes our end and checks that the connection closed its own: its fd is no longer open
    /// (nothing else in this process opens descriptors meanwhile, so the number is not reused).
    mutating func finish() {
        closePeer()
        precondition(fcntl(engineSide, F_GETFD) == -1 && errno == EBADF,
                     "the connection under test left its descriptor \(engineSide) open")
    }
}

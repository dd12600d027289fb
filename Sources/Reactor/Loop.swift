// Loop: the one event_base of this process and its deferred-free graveyard.
// Owns: the event_base (freed in close()). Every Reactor object is confined to the thread that
// runs this loop; none is Sendable (style F). Objects that close themselves inside their own
// libevent callback park here and are dropped after the current pass (style E.3).
import CEventShim

#if canImport(Glibc)
import Glibc
#endif

public final class Loop {
    public let base: OpaquePointer
    /// Scratch space every socket on this loop reads into (see StreamSocket.onRead).
    let readScratch: UnsafeMutableRawPointer
    static let readScratchSize = 16 * 1024
    private var graveyard: [AnyObject] = []
    private var reaper: OpaquePointer?
    private var isClosed = false

    public init() {
        // Writes to a socket the peer closed must fail with EPIPE, not kill the process;
        // libevent writes with plain writev, so the process ignores SIGPIPE (NIO does the same).
        signal(SIGPIPE, SIG_IGN)
        guard let b = event_base_new() else { fatalError("event_base_new failed") }
        base = b
        readScratch = UnsafeMutableRawPointer.allocate(byteCount: Loop.readScratchSize, alignment: 16)
        reaper = event_new(base, -1, 0, { _, _, arg in
            Unmanaged<Loop>.fromOpaque(arg!).takeUnretainedValue().reap()
        }, Unmanaged.passUnretained(self).toOpaque())
    }

    // The scratch buffer lives as long as the loop object: sockets may outlive close() briefly.
    deinit { readScratch.deallocate() }

    /// Runs until `stop()` or until no events remain.
    public func run() { event_base_dispatch(base) }

    /// Runs one pass (tests).
    public func runOnce(nonBlocking: Bool = false) {
        _ = event_base_loop(base, nonBlocking ? EVLOOP_NONBLOCK : EVLOOP_ONCE)
    }

    public func stop() { event_base_loopbreak(base) }

    /// Keeps `object` alive until the current callback pass is over.
    public func bury(_ object: AnyObject) {
        graveyard.append(object)
        if graveyard.count == 1 && deferred.isEmpty, let r = reaper {
            var tv = timeval(tv_sec: 0, tv_usec: 0)
            event_add(r, &tv)
        }
    }

    private func reap() {
        graveyard.removeAll(keepingCapacity: true)
        // Work deferred to "after the current pass" (style C: no re-entry into a driver).
        let work = deferred
        deferred.removeAll(keepingCapacity: true)
        for w in work { w.runDeferred() }
    }

    private var deferred: [LoopDeferred] = []

    /// Calls `w.runDeferred()` after the current callback pass (once per call), never inside it.
    public func runSoon(_ w: LoopDeferred) {
        deferred.append(w)
        if deferred.count == 1 && graveyard.isEmpty, let r = reaper {
            var tv = timeval(tv_sec: 0, tv_usec: 0)
            event_add(r, &tv)
        }
    }

    /// Monotonic nanoseconds; the only clock drivers read (machines receive `now` as a value).
    public static func nowNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Monotonic nanoseconds from the coarse clock (a tick behind at most, a few ms; no TSC read):
    /// for timeouts counted in seconds (HTTPServerConnection's deadline).
    public static func coarseNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Wall-clock seconds since the epoch (for `created` fields and logs).
    public static func wallSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Wall-clock milliseconds since the epoch (the Redis cache's entries outlive a process).
    public static func wallMillis() -> UInt64 { UInt64(wallSeconds() * 1000) }

    public func close() {
        guard !isClosed else { return }
        isClosed = true
        if let r = reaper { event_free(r) }
        reaper = nil
        graveyard.removeAll()
        event_base_free(base)
    }
}

/// Something that asked to run after the current loop pass (Loop.runSoon).
public protocol LoopDeferred: AnyObject {
    func runDeferred()
}

/// Converts a duration to a timeval for event_add.
@inline(__always)
func makeTimeval(_ d: Duration) -> timeval {
    // Whole microseconds from the 128-bit attosecond count (`components` divides it by 10^18 in
    // software first: ~200 instructions, and a request arms three timers). 0 for a negative one.
    let a = d.attoseconds
    guard a > 0 else { return timeval(tv_sec: 0, tv_usec: 0) }
    let (s, us) = (a / 1_000_000_000_000).quotientAndRemainder(dividingBy: 1_000_000)
    return timeval(tv_sec: Int(s), tv_usec: Int(us))
}

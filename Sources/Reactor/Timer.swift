// Timer: one libevent timer event with a Swift handler.
// Owns: the `struct event` (freed in close()). The callback argument is passUnretained(self):
// safe because close() frees the event before the owner can go away (style E.2).
// Generations are the caller's business: machines tag timers and drop stale firings.
// A firing goes to `target` (a driver that conforms to TimerTarget, no closure: the way an
// HTTPClientConnection has a delegate), then to `onFire`.
import CEventShim

/// An object a Timer tells when it fires (held unowned: the target cancels or lets go of the
/// timer before it goes away).
public protocol TimerTarget: AnyObject {
    func timerFired(_ timer: Timer)
}

public final class Timer {
    private var event: OpaquePointer?
    public var onFire: (() -> Void)?
    public unowned var target: (any TimerTarget)?
    public private(set) var isArmed = false

    public init(loop: Loop, onFire: (() -> Void)? = nil) {
        self.onFire = onFire
        event = event_new(loop.base, -1, 0, { _, _, arg in
            let t = Unmanaged<Timer>.fromOpaque(arg!).takeUnretainedValue()
            t.isArmed = false
            t.target?.timerFired(t)
            t.onFire?()
        }, Unmanaged.passUnretained(self).toOpaque())
    }

    /// Arms (or re-arms) the timer.
    public func schedule(after d: Duration) {
        guard let e = event else { return }
        var tv = makeTimeval(d)
        event_add(e, &tv)
        isArmed = true
    }

    public func cancel() {
        guard let e = event, isArmed else { return }
        event_del(e)
        isArmed = false
    }

    public func close() {
        if let e = event { event_free(e) }
        event = nil
        isArmed = false
        onFire = nil
        target = nil
    }

    deinit { if let e = event { event_free(e) } }
}

/// Watches a POSIX signal on the loop (SIGTERM, SIGINT, SIGHUP).
public final class SignalWatcher {
    private var event: OpaquePointer?
    public var onSignal: (() -> Void)?

    public init(loop: Loop, signal: Int32, onSignal: @escaping () -> Void) {
        self.onSignal = onSignal
        event = event_new(loop.base, signal, Int16(EV_SIGNAL | EV_PERSIST), { _, _, arg in
            Unmanaged<SignalWatcher>.fromOpaque(arg!).takeUnretainedValue().onSignal?()
        }, Unmanaged.passUnretained(self).toOpaque())
        event_add(event, nil)
    }

    public func close() {
        if let e = event { event_free(e) }
        event = nil
    }

    deinit { close() }
}

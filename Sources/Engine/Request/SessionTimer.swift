// SessionTimer: a RequestSession's one timer, held inline. A libevent timer is taken from the
// runtime's pool on first use (a cache hit never needs one), armed for the upstream's silence
// or a retry's backoff, and given back when the request ends — still set, when it was: the next
// request that takes it, with a later deadline, need not set it again. When it must fire is
// TimerDeadline's decision (a deadline pushed back or cancelled leaves the libevent timer as it
// is); a wake reaches the session as a TimerTarget (no closure) and goes through `woke`.
import Reactor

struct SessionTimer {
    private var timer: Timer?
    private var deadline = TimerDeadline()
    /// The last duration armed and its nanoseconds (a 128-bit division; a stream arms the same
    /// upstream timeout at its head and on every read).
    private var lastDuration: Duration = .zero
    private var lastNanos: UInt64 = 0

    /// What the timer was last armed for (the machine drops a firing that no longer applies).
    var kind: TimerKind { deadline.kind }

    mutating func arm(_ kind: TimerKind, after d: Duration, now: UInt64, for target: any TimerTarget,
                      from runtime: EngineRuntime) {
        if d != lastDuration {
            lastDuration = d
            lastNanos = d.nanoseconds
        }
        if timer == nil {
            let (t, wakes) = runtime.takeTimer(for: target)
            timer = t
            deadline = TimerDeadline(wakes: wakes)
        }
        guard deadline.arm(kind, due: now &+ lastNanos) == .set else { return }
        timer?.schedule(after: d)
    }

    /// Nothing is due any more; the libevent timer stays set (it wakes, finds nothing, stops).
    mutating func cancel() {
        deadline.cancelled()
    }

    /// The libevent timer fired at `now`: what to handle (nil: it woke early for a deadline that
    /// moved, and is set again for the rest; or nothing is due).
    mutating func woke(now: UInt64) -> TimerKind? {
        switch deadline.woke(now: now) {
        case .fire(let kind):
            return kind
        case .setAgain(let ns):
            timer?.schedule(after: .nanoseconds(Int64(clamping: ns)))
            return nil
        case .idle:
            return nil
        }
    }

    /// The request ended: the timer goes back to the pool (its target cleared), with when it is
    /// still set to wake.
    mutating func giveBack(to runtime: EngineRuntime) {
        deadline.cancelled()
        guard let t = timer else { return }
        timer = nil
        runtime.returnTimer(t, wakes: deadline.wakes)
    }
}

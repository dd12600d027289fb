// SessionTimer: a RequestSession's one timer, held inline. A libevent timer is taken from the
// runtime's pool on first use (a cache hit never needs one), armed for the upstream's silence
// or a retry's backoff, and given back when the request ends. When it must fire is TimerDeadline's
// decision (a deadline pushed back moves without touching the libevent timer); a wake reaches the
// session as a TimerTarget (no closure) and goes through `woke`.
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
        guard deadline.arm(kind, due: now &+ lastNanos) == .set else { return }
        if timer == nil { timer = runtime.takeTimer(for: target) }
        timer?.schedule(after: d)
    }

    mutating func cancel() {
        deadline.cancelled()
        timer?.cancel()
    }

    /// The libevent timer fired at `now`: what to handle (nil: it woke early for a deadline that
    /// moved, and is set again for the rest).
    mutating func woke(now: UInt64) -> TimerKind? {
        switch deadline.woke(now: now) {
        case .fire(let kind):
            return kind
        case .setAgain(let ns):
            timer?.schedule(after: .nanoseconds(Int64(clamping: ns)))
            return nil
        }
    }

    /// The request ended: the timer goes back to the pool (cancelled, its target cleared).
    mutating func giveBack(to runtime: EngineRuntime) {
        deadline.cancelled()
        guard let t = timer else { return }
        timer = nil
        runtime.returnTimer(t)
    }
}

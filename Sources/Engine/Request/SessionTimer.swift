// SessionTimer: a RequestSession's one timer, held inline. A libevent timer is taken from the
// runtime's pool on first use (a cache hit never needs one), re-armed for the upstream's silence
// or a retry's backoff, and given back when the request ends. A firing reaches the session as a
// TimerTarget (no closure); `kind` says what the timer was last armed for.
import Reactor

struct SessionTimer {
    private var timer: Timer?
    /// What the timer was last armed for (the machine drops a firing that no longer applies).
    private(set) var kind: TimerKind = .upstream

    mutating func arm(_ kind: TimerKind, after d: Duration, for target: any TimerTarget, from runtime: EngineRuntime) {
        self.kind = kind
        if timer == nil { timer = runtime.takeTimer(for: target) }
        timer?.schedule(after: d)
    }

    func cancel() { timer?.cancel() }

    /// The request ended: the timer goes back to the pool (cancelled, its target cleared).
    mutating func giveBack(to runtime: EngineRuntime) {
        guard let t = timer else { return }
        timer = nil
        runtime.returnTimer(t)
    }
}

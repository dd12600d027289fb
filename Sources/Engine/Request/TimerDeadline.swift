// TimerDeadline: when a session's one timer must fire, kept apart from when the libevent timer
// under it is set to wake (SessionTimer drives it). An arm for a time no earlier than the timer
// already wakes — the upstream deadline, pushed back at the stream's head and by every read, a
// request's deadline on a pooled timer a previous request left set — only moves `due`, where
// re-adding the libevent timer updated its heap each time (an `event_add`: ~350 instructions);
// the timer then wakes at the earlier time, finds the deadline moved, and is set again for the
// rest. Cancelling only clears `due`: the timer stays set, wakes, finds nothing due and stops
// (an `event_del` per request cost ~160 instructions). Any earlier arm sets the timer.
// Pure: no imports, no I/O.

struct TimerDeadline: Equatable {
    /// What the timer was last armed for.
    private(set) var kind: TimerKind = .upstream
    /// When it must fire (nanoseconds on the loop's monotonic clock); nil when not armed.
    private(set) var due: UInt64?
    /// When the timer under it is set to wake; nil when it is not set.
    private(set) var wakes: UInt64?

    /// A wake this close to `due` fires: libevent measures time on its cached coarse clock, a few
    /// milliseconds behind the one `now` comes from, so the timer set for `due` may wake that
    /// much before it by ours (as it did when every arm set it).
    static let slackNanos: UInt64 = 10_000_000

    /// A deadline over a timer that is already set to wake at `wakes` (a pooled timer's), or not
    /// set (nil).
    init(wakes: UInt64? = nil) { self.wakes = wakes }

    enum Step: Equatable {
        /// Set the timer to wake after the armed duration (from now).
        case set
        /// Nothing to do: the timer is set to wake no later than `due`.
        case none
    }

    /// Armed for `kind`, to fire at `due` (`now` plus the duration asked).
    mutating func arm(_ kind: TimerKind, due: UInt64) -> Step {
        self.due = due
        self.kind = kind
        if let w = wakes, due >= w { return .none }
        wakes = due
        return .set
    }

    /// The timer was cancelled (or given back): nothing is due. The timer under it stays set.
    mutating func cancelled() {
        due = nil
    }

    enum Wake: Equatable {
        /// The deadline has come: the session handles `timerFired(kind)`.
        case fire(TimerKind)
        /// Woke early for a deadline that moved: set the timer to wake after this many
        /// nanoseconds, and nothing fires.
        case setAgain(afterNanos: UInt64)
        /// Nothing is due (cancelled since the timer was set): it stays unset, nothing fires.
        case idle
    }

    /// The timer woke at `now` (it is no longer set).
    mutating func woke(now: UInt64) -> Wake {
        wakes = nil
        guard let d = due else { return .idle }
        if d > now &+ Self.slackNanos {
            wakes = d
            return .setAgain(afterNanos: d &- now)
        }
        due = nil
        return .fire(kind)
    }
}

// ClaimLeaseMachine: when this process refreshes the leases of the flight claims it holds, as a
// pure value (style B). One timer per process refreshes every held claim together, instead of a
// Timer (an object, a closure and a libevent event) per flight: the CoalescerDriver says when it
// takes a claim and, when the timer fires, how many it still holds; the machine says when to arm.
// A claim taken at t is refreshed by t + interval at the latest (the next tick), as when each
// flight had its own timer; a process that dies stops ticking, so its claims run out one lease
// after their last refresh. Pure: no imports, no I/O.
//
//   idle ──taken──▶ ticking(armedAt) ──fired, claims held──▶ ticking(armedAt: now)  [refresh all, arm]
//                        │      ──taken──▶ ticking (the armed tick covers it too)
//                        └──fired, none held──▶ idle

struct ClaimLeaseMachine: Equatable {
    enum State: Equatable {
        /// No claim held, no timer armed. Next: ticking.
        case idle
        /// The timer was armed at `armedAt` (monotonic nanoseconds) to fire one `interval` later.
        /// Next: ticking, idle.
        case ticking(armedAt: UInt64)
    }

    enum Action: Equatable {
        /// Nothing to do.
        case none
        /// Arm the timer for `after`.
        case arm(after: Duration)
        /// Refresh every claim this process holds, then arm the timer for `after`.
        case refreshAll(thenArmAfter: Duration)
    }

    /// How often held claims are refreshed (well inside the lease, so a loop stall of a few
    /// seconds does not lose them).
    let interval: Duration
    private(set) var state: State = .idle

    init(interval: Duration) {
        self.interval = interval
    }

    /// This process took a claim at `now`.
    mutating func taken(now: UInt64) -> Action {
        guard case .idle = state else { return .none }
        state = .ticking(armedAt: now)
        return .arm(after: interval)
    }

    /// The timer fired at `now`; `held` claims are still this process's.
    mutating func fired(now: UInt64, held: Int) -> Action {
        guard case .ticking = state else { return .none }  // a stale firing
        guard held > 0 else {
            state = .idle
            return .none
        }
        state = .ticking(armedAt: now)
        return .refreshAll(thenArmAfter: interval)
    }
}

// CircuitBreaker: one backend's breaker (issue 4), a pure value (standard library only); the pool
// driver owns one per backend and per process. Times are monotonic nanoseconds (`Loop.nowNanos()`).
// Fixes original bug 20: HALF_OPEN lets exactly one probe through, and a probe that ends without
// a verdict (client gone) frees its slot via `release()`. Transitions are returned, so the driver
// logs and counts (`breaker_open`) once per change.
// Pure: no imports, no I/O.

public struct CircuitBreaker: Equatable, Sendable {
    public enum State: Equatable, Sendable {
        /// Traffic flows; `failures` consecutive failures so far. Next: open (at threshold).
        case closed(failures: Int)
        /// Traffic refused since `since` (ns). Next: halfOpen, on the first `acquire` after cooldown.
        case open(since: UInt64)
        /// Cooldown over: one probe may go. Next: closed (success), open (failure).
        case halfOpen(probeInFlight: Bool)
    }

    /// Answer to `acquire`.
    public enum Permit: Equatable, Sendable {
        /// Closed: send the request.
        case granted
        /// The single half-open probe: send it and report its verdict, or `release()` it.
        case probe
        /// Open, or half-open with the probe still out: do not send.
        case refused

        public var isGranted: Bool { self != .refused }
    }

    /// A change the driver should log (and count, for `.opened`). Open → half-open is signalled by
    /// `acquire` returning `.probe` instead.
    public enum Transition: Equatable, Sendable {
        /// Closed or half-open → open.
        case opened
        /// Open or half-open → closed.
        case closed
    }

    public let threshold: Int
    public let cooldown: Duration
    public private(set) var state: State = .closed(failures: 0)

    public init(threshold: Int, cooldown: Duration) {
        self.threshold = max(1, threshold)
        self.cooldown = cooldown
    }

    /// 0 closed, 1 open, 2 half-open (the `breaker_state` gauge).
    public var gauge: Int {
        switch state {
        case .closed: 0
        case .open: 1
        case .halfOpen: 2
        }
    }

    /// Whether `acquire(now:)` would grant, without changing anything (selector eligibility,
    /// `healthy_count`).
    public func isAvailable(now: UInt64) -> Bool {
        switch state {
        case .closed: true
        case .open(let since): cooldownElapsed(since: since, now: now)
        case .halfOpen(let busy): !busy
        }
    }

    /// Asks to send one request. Open past its cooldown becomes half-open here (lazily, on use,
    /// so an idle backend is not probed for nothing) and the caller gets `.probe`; a `.probe` in
    /// the result is the driver's cue to log "half-open".
    public mutating func acquire(now: UInt64) -> Permit {
        switch state {
        case .closed:
            return .granted
        case .open(let since):
            guard cooldownElapsed(since: since, now: now) else { return .refused }
            state = .halfOpen(probeInFlight: true)
            return .probe
        case .halfOpen(let busy):
            guard !busy else { return .refused }
            state = .halfOpen(probeInFlight: true)
            return .probe
        }
    }

    /// The backend answered: close from any state (a late success from a request sent before the
    /// breaker opened is still proof of life). Returns `.closed` when the state changed.
    @discardableResult
    public mutating func recordSuccess(now: UInt64) -> Transition? {
        let wasClosed = gauge == 0
        state = .closed(failures: 0)
        return wasClosed ? nil : .closed
    }

    /// The backend failed (connect error, reset, 5xx; never a 4xx or a client abort). Closed:
    /// count, and open at `threshold`. Half-open: re-open (the probe, or a late straggler, failed).
    /// Open: ignored; the cooldown runs from the opening, not from the last straggler.
    @discardableResult
    public mutating func recordFailure(now: UInt64) -> Transition? {
        switch state {
        case .closed(let failures):
            let n = failures + 1
            if n >= threshold {
                state = .open(since: now)
                return .opened
            }
            state = .closed(failures: n)
            return nil
        case .halfOpen:
            state = .open(since: now)
            return .opened
        case .open:
            return nil
        }
    }

    /// The probe ended without a verdict (client went away, request cancelled): free the slot so
    /// the next `acquire` probes again. Call it only for a `.probe` permit; elsewhere it is a no-op.
    public mutating func release() {
        if case .halfOpen(true) = state { state = .halfOpen(probeInFlight: false) }
    }

    private func cooldownElapsed(since: UInt64, now: UInt64) -> Bool {
        now >= since && Duration.nanoseconds(now - since) >= cooldown
    }
}

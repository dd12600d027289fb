// AdmissionMachine: load shedding in front of the pool (issue 4), a pure value (standard library
// only). Owns per-backend loads (from VLLMMetricsParser, fed by the poller) and one bounded FIFO
// queue per pool (pool = model name). The request driver asks it on arrival; the poller feeds
// `loadsUpdated`; a per-loop timer feeds `tick`. Fixes original bugs 9 (QUEUE meant ACCEPT) and 14
// (an unreadable backend read as 0 % used). Times are monotonic nanoseconds (`Loop.nowNanos()`).
// Issue 14: under `fairness: .fair` the queue is left by priority band, then by start-time fair
// queueing on tokens across tenants (FairShares), then earliest deadline first inside a tenant; a
// full queue pushes out the request of the tenant furthest past its share instead of refusing a
// lighter tenant. Under `.fifo` the order is arrival order, byte for byte as before. Either way a
// request's deadline (AdmissionTicket) ends its wait: `deadlineMissed`, and one that the queue's
// drain rate says cannot start in time is refused on arrival (`expectedWait`).
// "Releases only what a backend can start now": the machine counts the requests it let go to each
// backend that have not ended yet (`inflight`; the driver reports ends through `requestEnded`).
// With `maxInflightPerBackend` a backend at its cap reads QUEUE whatever its KV gauge says, and
// with `queueWhileBackendWaits` a reading that shows requests waiting inside the backend reads
// QUEUE too: a request released into the backend's own FIFO would lose its fair place. An end
// frees a slot and releases the next waiter at once (not at the next poll).
// Pure: no imports, no I/O.

/// Identifies one admission request (the driver maps it to its session).
public struct RequestToken: Hashable, Sendable, CustomStringConvertible {
    public let raw: UInt64
    public init(_ raw: UInt64) { self.raw = raw }
    public var description: String { "r\(raw)" }
}

/// What a backend's last reading says about new work.
public enum AdmissionDecision: Equatable, Sendable {
    /// kvUsage < soft: send now.
    case accept
    /// soft ≤ kvUsage < hard: hold new work until it drops.
    case queue
    /// kvUsage ≥ hard: refuse new work.
    case reject
    /// No reading: never polled, poll failed, or no KV gauge on the page. Treated as eligible (a
    /// backend we cannot read must not block traffic) but NOT as 0 % used: it ranks after every
    /// known-accepting backend, and releases at most one queued request per update.
    case unknown
}

/// What admission knows of a request beyond its pool: who asks, how much, and until when.
public struct AdmissionTicket: Equatable, Sendable {
    /// Fairness key (Tenant.id); "" is one anonymous tenant.
    public var tenant: String
    /// > 0; a tenant's share of service is proportional to it.
    public var weight: Double
    /// Smaller is served first.
    public var priority: Int
    /// Expected tokens: prompt (exact or estimated) plus max_tokens or the configured expectation.
    public var cost: Int
    /// Monotonic nanoseconds by which the request must have started; nil: none.
    public var deadline: UInt64?

    public init(tenant: String = "", weight: Double = 1, priority: Int = 0, cost: Int = 1, deadline: UInt64? = nil) {
        self.tenant = tenant
        self.weight = weight
        self.priority = priority
        self.cost = cost
        self.deadline = deadline
    }

    public static let standard = AdmissionTicket()
}

public struct AdmissionMachine: Sendable {
    public enum Fairness: Equatable, Sendable {
        /// Arrival order (the behaviour before issue 14).
        case fifo
        /// Priority, then SFQ across tenants on tokens, then EDF inside a tenant.
        case fair
    }

    public struct Policy: Equatable, Sendable {
        /// Fractions 0...1; the config validates 0 < soft < hard ≤ 1.
        public var softLimit: Double
        public var hardLimit: Double
        /// Queued requests per pool; 0 disables queueing (QUEUE then rejects).
        public var maxQueue: Int
        /// A queued request is rejected once it has waited this long.
        public var maxWait: Duration
        /// How often a queued request is told to keep its client alive.
        public var keepAliveInterval: Duration
        /// Upper bound of requests released to one backend by one `loadsUpdated`.
        public var maxReleasePerUpdate: Int
        public var fairness: Fairness = .fifo
        /// Requests this process may have started on one backend and not yet seen end; at the cap
        /// the backend reads QUEUE. 0 = no cap (the KV gauge alone decides).
        public var maxInflightPerBackend = 0
        /// A reading with `waiting > 0` reads QUEUE (the backend is not starting what it has).
        public var queueWhileBackendWaits = false

        /// Whether an end of a request releases the next waiter (FIFO without a cap: no, as before).
        var releasesOnEnd: Bool { maxInflightPerBackend > 0 || fairness == .fair }

        public init(softLimit: Double = 0.70, hardLimit: Double = 0.90, maxQueue: Int = 256,
                    maxWait: Duration = .seconds(30), keepAliveInterval: Duration = .seconds(5),
                    maxReleasePerUpdate: Int = 8) {
            self.softLimit = softLimit
            self.hardLimit = hardLimit
            self.maxQueue = maxQueue
            self.maxWait = maxWait
            self.keepAliveInterval = keepAliveInterval
            self.maxReleasePerUpdate = max(1, maxReleasePerUpdate)
        }
    }

    /// Actions carry the token they concern: one event can touch several requests (an update
    /// releases many, a tick expires many), so every event returns `Actions` in the order to
    /// perform them (FIFO by arrival). The common arrival path returns one action, which an
    /// ActionList holds inline (an array allocated per request).
    public typealias Actions = ActionList<Action>

    public enum Action: Equatable, Sendable {
        /// Send this request to this backend now (a newcomer, or a queued request being released).
        case admit(RequestToken, BackendID)
        /// The request now waits in its pool's queue; nothing to send yet.
        case enqueued(RequestToken)
        /// Answer 429 with `Retry-After: retryAfterSeconds`; the request is no longer tracked here.
        case reject(RequestToken, retryAfterSeconds: Int)
        /// The request is still queued: write `: queued` to a streaming client so proxies and the
        /// client keep the connection (non-streaming clients: nothing to do).
        case keepAlive(RequestToken)
        /// Its deadline passed before it could start (on arrival or while queued): answer at once
        /// (429 + Retry-After); the request is no longer tracked here.
        case deadlineMissed(RequestToken, retryAfterSeconds: Int)
        /// Fair queueing: a full queue pushed this request out for another tenant's (429); the
        /// request is no longer tracked here.
        case displaced(RequestToken, retryAfterSeconds: Int)
    }

    /// A queued request.
    struct Waiter: Equatable, Sendable {
        var token: RequestToken
        /// Arrival order across all pools (FIFO when one backend serves several pools).
        var seq: UInt64
        var candidates: [BackendID]
        var enqueuedAt: UInt64
        var lastKeepAlive: UInt64
        var ticket: AdmissionTicket = .standard
    }

    public let policy: Policy
    /// Last reading per backend; absent = unknown (never read, or the last read failed).
    private(set) var loads: [BackendID: BackendLoad] = [:]
    private(set) var queues: [String: [Waiter]] = [:]
    private var poolOf: [RequestToken: String] = [:]
    /// Instants of recent releases per pool (at most `drainSamples`, none older than `drainWindow`).
    private var releases: [String: [UInt64]] = [:]
    private var nextSeq: UInt64 = 0
    /// SFQ tags (used under `.fair` only).
    private(set) var shares = FairShares()
    /// Queued requests that carry a deadline (the driver's tick must come by the earliest).
    private var deadlines = 0
    /// Requests admitted to each backend whose end the driver has not reported yet, by
    /// `BackendID.index` (backends are numbered from 0; grown on first use). An array: a
    /// `[BackendID: Int]` hashed the id three times per request (~650 instructions).
    private var inflight: [Int] = []

    static let drainSamples = 64
    static let drainWindow: UInt64 = 60_000_000_000
    /// Releases this recent estimate the drain rate a deadline is judged by.
    static let rateWindow: UInt64 = 10_000_000_000

    public init(policy: Policy) { self.policy = policy }

    // MARK: - Queries

    public func decision(for backend: BackendID) -> AdmissionDecision {
        let full = policy.maxInflightPerBackend > 0 && inflight(on: backend) >= policy.maxInflightPerBackend
        guard let u = loads[backend]?.kvUsage, !u.isNaN else { return full ? .queue : .unknown }
        if u >= policy.hardLimit { return .reject }
        if u >= policy.softLimit || full { return .queue }
        if policy.queueWhileBackendWaits, let w = loads[backend]?.waiting, w > 0 { return .queue }
        return .accept
    }

    public func inflight(on backend: BackendID) -> Int { inflight.indices.contains(backend.index) ? inflight[backend.index] : 0 }

    public func queuedCount(pool: String) -> Int { queues[pool]?.count ?? 0 }
    public var queuedTotal: Int { poolOf.count }
    public func isQueued(_ token: RequestToken) -> Bool { poolOf[token] != nil }

    /// The earliest deadline among queued requests (nil: none has one).
    public var nextDeadline: UInt64? {
        guard deadlines > 0 else { return nil }
        var best: UInt64?
        for q in queues.values { for w in q { if let d = w.ticket.deadline, best == nil || d < best! { best = d } } }
        return best
    }

    // MARK: - Events

    /// A request for `pool` that may go to any of `candidates`, in the caller's preference order
    /// (e.g. the selector's pick first). Picks the first ACCEPT, else the first UNKNOWN. If the
    /// pool already has waiters, the oldest one that can use that backend goes instead and the
    /// newcomer takes a place at the tail (no overtaking; the queue drains at the arrival rate).
    /// Else, if some candidate says QUEUE, waits (or is rejected when the queue is full). All
    /// REJECT, or no candidates, → reject (the driver answers 503 itself before asking when the
    /// pool has no usable backend at all). A token must be new (reusing a live one is our bug: trap).
    public mutating func requestArrived(_ token: RequestToken, pool: String, candidates: [BackendID], now: UInt64,
                                        ticket: AdmissionTicket = .standard) -> Actions {
        precondition(poolOf[token] == nil, "\(token) arrived twice")
        if let d = ticket.deadline, d <= now {
            return [.deadlineMissed(token, retryAfterSeconds: retryAfter(pool: pool, now: now))]
        }
        var firstAccept: BackendID?
        var firstUnknown: BackendID?
        var anyQueue = false
        for c in candidates {
            switch decision(for: c) {
            case .accept: if firstAccept == nil { firstAccept = c }
            case .unknown: if firstUnknown == nil { firstUnknown = c }
            case .queue: anyQueue = true
            case .reject: break
            }
        }
        if let target = firstAccept ?? firstUnknown {
            if policy.fairness == .fair {
                guard queues[pool]?.isEmpty == false else {
                    started(on: target)
                    return [.admit(token, target)]
                }
                // The newcomer competes with the waiters: it goes first if its tenant is the most
                // under its share (a light tenant does not queue behind a flood).
                enqueue(token, pool: pool, candidates: candidates, now: now, ticket: ticket)
                let (p, i) = bestWaiter(for: target, in: pool)!
                let w = release(pool: p, at: i, now: now)
                started(on: target)
                return w.token == token ? [.admit(token, target)] : [.admit(w.token, target), .enqueued(token)]
            }
            if let i = queues[pool]?.firstIndex(where: { $0.candidates.contains(target) }) {
                let w = release(pool: pool, at: i, now: now)
                started(on: target)
                enqueue(token, pool: pool, candidates: candidates, now: now, ticket: ticket)
                return [.admit(w.token, target), .enqueued(token)]
            }
            started(on: target)
            return [.admit(token, target)]
        }
        if anyQueue, let d = ticket.deadline, let wait = expectedWait(pool: pool, ticket: ticket, now: now),
           now + wait > d {
            // It would wait past its deadline: refuse now rather than hold it until then.
            return [.deadlineMissed(token, retryAfterSeconds: retryAfter(pool: pool, now: now))]
        }
        if anyQueue && queuedCount(pool: pool) < policy.maxQueue {
            enqueue(token, pool: pool, candidates: candidates, now: now, ticket: ticket)
            return [.enqueued(token)]
        }
        if anyQueue && policy.fairness == .fair && policy.maxQueue > 0, let victim = displaceable(pool: pool, by: ticket) {
            let w = queues[pool]!.remove(at: victim)
            forget(w)
            enqueue(token, pool: pool, candidates: candidates, now: now, ticket: ticket)
            return [.displaced(w.token, retryAfterSeconds: retryAfter(pool: pool, now: now)), .enqueued(token)]
        }
        return [.reject(token, retryAfterSeconds: retryAfter(pool: pool, now: now))]
    }

    /// A new reading for `backend` (nil: the poll failed or the page had no KV gauge). An ACCEPT
    /// reading releases queued requests that list this backend, oldest first across pools, as many
    /// as the headroom allows: with R running and usage u, one request costs ≈ u/R, so
    /// ⌊(soft − u)/(u/R)⌋ fit, clamped to 1...maxReleasePerUpdate (the maximum when u = 0, 1 when R
    /// is unknown). An UNKNOWN reading releases exactly one. QUEUE and REJECT release none.
    public mutating func loadsUpdated(_ backend: BackendID, _ load: BackendLoad?, now: UInt64) -> Actions {
        loads[backend] = load
        let room: Int
        switch decision(for: backend) {
        case .accept: room = headroom(load!)
        // Unknown: one per reading, or as many as the cap leaves (the cap is what we know then).
        case .unknown: room = policy.maxInflightPerBackend > 0 ? policy.maxReleasePerUpdate : 1
        case .queue, .reject: return []
        }
        return releaseWaiters(to: backend, upTo: room, now: now)
    }

    /// The driver's fast path admitted a newcomer without `requestArrived` (nothing queued, the
    /// backend read ACCEPT): count it as started there.
    public mutating func admittedDirectly(_ backend: BackendID) { started(on: backend) }

    /// A request admitted to `backend` ended (answered, failed, or its client left): its slot is
    /// free. When the backend can take work, the next waiter goes now (one: the slot that freed),
    /// under `.fair` or with a cap; FIFO without a cap waits for the next reading, as before.
    public mutating func requestEnded(on backend: BackendID, now: UInt64) -> Actions {
        if inflight(on: backend) > 0 { inflight[backend.index] -= 1 }
        guard policy.releasesOnEnd, queuedTotal > 0 else { return [] }
        switch decision(for: backend) {
        case .accept, .unknown: return releaseWaiters(to: backend, upTo: 1, now: now)
        case .queue, .reject: return []
        }
    }

    /// How long a newcomer with `ticket` would wait in `pool` (nanoseconds): the requests that
    /// would leave before it, plus itself, at the pool's recent drain rate. Under `.fifo` that is
    /// every waiter; under `.fair`, the waiters of a better priority band and, in its own band, the
    /// ones whose virtual start (its tenant's start plus the cost/weight queued before them) comes
    /// before the newcomer's. nil: no rate known (fewer than two releases in `rateWindow`), so no
    /// estimate, and nobody is refused on a guess.
    public func expectedWait(pool: String, ticket: AdmissionTicket, now: UInt64) -> UInt64? {
        guard let rate = drainRate(pool: pool, now: now) else { return nil }
        let q = queues[pool] ?? []
        var ahead = 0
        if policy.fairness == .fifo {
            ahead = q.count
        } else {
            // Each tenant's queue in its service order (deadline, arrival), tagged by virtual start.
            var byTenant: [String: [Waiter]] = [:]
            for w in q where w.ticket.priority <= ticket.priority {
                if w.ticket.priority < ticket.priority { ahead += 1 } else { byTenant[w.ticket.tenant, default: []].append(w) }
            }
            func tags(_ tenant: String, _ ws: [Waiter]) -> [Double] {
                var v = shares.start(tenant)
                var out: [Double] = []
                for w in ws.sorted(by: { ($0.ticket.deadline ?? .max, $0.seq) < ($1.ticket.deadline ?? .max, $1.seq) }) {
                    out.append(v)
                    v += Double(max(w.ticket.cost, 1)) / w.ticket.weight
                }
                return out
            }
            // The newcomer's tag: after its tenant's requests due no later than it.
            var mine = shares.start(ticket.tenant)
            for w in byTenant[ticket.tenant] ?? [] where (w.ticket.deadline ?? .max) <= (ticket.deadline ?? .max) {
                mine += Double(max(w.ticket.cost, 1)) / w.ticket.weight
                ahead += 1
            }
            for (t, ws) in byTenant where t != ticket.tenant {
                ahead += tags(t, ws).filter { $0 < mine }.count
            }
        }
        let seconds = Double(ahead + 1) / rate
        return seconds >= 3600 ? 3_600_000_000_000 : UInt64(seconds * 1e9)
    }

    /// Releases per second out of `pool`'s queue, from the releases in the last `rateWindow`
    /// (count − 1 over the span between the first and last); nil with fewer than two.
    func drainRate(pool: String, now: UInt64) -> Double? {
        let recent = (releases[pool] ?? []).filter { Self.age($0, now) <= Self.rateWindow }
        guard recent.count >= 2, let first = recent.first, let last = recent.last, last > first else { return nil }
        return Double(recent.count - 1) / (Double(last - first) / 1e9)
    }

    /// Expires requests that waited `maxWait` (reject with Retry-After), and asks for a keepalive
    /// for each request whose last one (or arrival) is `keepAliveInterval` ago. FIFO order.
    public mutating func tick(now: UInt64) -> Actions {
        var out: [(seq: UInt64, action: Action)] = []
        for pool in Array(queues.keys) {
            var kept: [Waiter] = []
            var expired: [Waiter] = []
            var late: [Waiter] = []
            for w in queues[pool]! {
                if Self.waited(since: w.enqueuedAt, now) >= policy.maxWait {
                    expired.append(w)
                } else if let d = w.ticket.deadline, d <= now {
                    late.append(w)
                } else {
                    kept.append(w)
                }
            }
            for w in expired {
                forget(w)
                // Retry-After as if it re-joined the queue that is left.
                out.append((w.seq, .reject(w.token, retryAfterSeconds: retryAfter(pool: pool, queued: kept.count, now: now))))
            }
            for w in late {
                forget(w)
                out.append((w.seq, .deadlineMissed(w.token, retryAfterSeconds: retryAfter(pool: pool, queued: kept.count, now: now))))
            }
            for i in kept.indices where Self.waited(since: kept[i].lastKeepAlive, now) >= policy.keepAliveInterval {
                kept[i].lastKeepAlive = now
                out.append((kept[i].seq, .keepAlive(kept[i].token)))
            }
            queues[pool] = kept.isEmpty ? nil : kept
        }
        out.sort { $0.seq < $1.seq }
        return Actions(out.lazy.map(\.action))
    }

    /// The client went away: forget the request. Returns whether it was queued (an admitted
    /// request is no longer tracked here, so leaving then is a no-op).
    @discardableResult
    public mutating func requestLeft(_ token: RequestToken) -> Bool {
        guard let pool = poolOf[token], let i = queues[pool]?.firstIndex(where: { $0.token == token }) else { return false }
        forget(queues[pool]!.remove(at: i))
        return true
    }

    // MARK: - Internals

    @inline(__always) private mutating func started(on backend: BackendID) {
        precondition(backend.index >= 0, "\(backend) is not a backend")
        if backend.index >= inflight.count { inflight += repeatElement(0, count: backend.index + 1 - inflight.count) }
        inflight[backend.index] += 1
    }

    /// Up to `room` waiters that can use `backend`, best first, while it can still take work.
    private mutating func releaseWaiters(to backend: BackendID, upTo room: Int, now: UInt64) -> Actions {
        var actions = Actions()
        for _ in 0..<room {
            if policy.maxInflightPerBackend > 0 && inflight(on: backend) >= policy.maxInflightPerBackend { break }
            guard let (pool, i) = policy.fairness == .fair ? bestWaiter(for: backend, in: nil) : oldestWaiter(for: backend) else { break }
            let w = release(pool: pool, at: i, now: now)
            started(on: backend)
            actions.append(.admit(w.token, backend))
        }
        return actions
    }

    private mutating func enqueue(_ token: RequestToken, pool: String, candidates: [BackendID], now: UInt64,
                                  ticket: AdmissionTicket) {
        queues[pool, default: []].append(Waiter(token: token, seq: nextSeq, candidates: candidates, enqueuedAt: now,
                                                lastKeepAlive: now, ticket: ticket))
        nextSeq += 1
        poolOf[token] = pool
        if ticket.deadline != nil { deadlines += 1 }
        if policy.fairness == .fair { shares.joined(ticket.tenant) }
    }

    /// Takes the waiter at `i` of `pool` out to be sent (charged to its tenant under `.fair`).
    private mutating func release(pool: String, at i: Int, now: UInt64) -> Waiter {
        let w = queues[pool]!.remove(at: i)
        poolOf[w.token] = nil
        if w.ticket.deadline != nil { deadlines -= 1 }
        if policy.fairness == .fair { shares.served(w.ticket.tenant, cost: w.ticket.cost, weight: w.ticket.weight) }
        noteRelease(pool: pool, now: now)
        return w
    }

    /// Bookkeeping of a waiter that leaves unserved (already removed from its queue).
    private mutating func forget(_ w: Waiter) {
        poolOf[w.token] = nil
        if w.ticket.deadline != nil { deadlines -= 1 }
        if policy.fairness == .fair { shares.left(w.ticket.tenant) }
    }

    /// `.fair`: the waiter to serve next on `backend` (in `pool`, or in any pool when nil): the
    /// lowest (priority, tenant's start tag, deadline, arrival).
    private func bestWaiter(for backend: BackendID, in pool: String?) -> (String, Int)? {
        var best: (pool: String, index: Int, key: (Int, Double, UInt64, UInt64))?
        func consider(_ p: String, _ q: [Waiter]) {
            for (i, w) in q.enumerated() where w.candidates.contains(backend) {
                let k = (w.ticket.priority, shares.start(w.ticket.tenant), w.ticket.deadline ?? .max, w.seq)
                if best == nil || k < best!.key { best = (p, i, k) }
            }
        }
        if let pool {
            consider(pool, queues[pool] ?? [])
        } else {
            for (p, q) in queues { consider(p, q) }
        }
        return best.map { ($0.pool, $0.index) }
    }

    /// `.fair`, the pool's queue full: the waiter to push out for a newcomer with `ticket`, if any.
    /// Each tenant's queued work ends at start + Σcost/weight (its place in virtual time); the
    /// tenant whose end is furthest (worst priority first) loses its latest-deadline, newest
    /// request, unless the newcomer's own tenant, counting the newcomer, would end further still.
    private func displaceable(pool: String, by ticket: AdmissionTicket) -> Int? {
        guard let q = queues[pool], !q.isEmpty else { return nil }
        var queued: [String: Double] = [:]
        for w in q { queued[w.ticket.tenant, default: 0] += Double(max(w.ticket.cost, 1)) / w.ticket.weight }
        func end(_ t: String, _ w: Double) -> Double { shares.start(t) + queued[t, default: 0] - w }
        var victim: (index: Int, key: (Int, Double, UInt64, UInt64))?
        for (i, w) in q.enumerated() {
            // A tenant's last request ends where its queued work ends; rank by (priority, end), then
            // within the tenant by latest deadline, newest.
            let k = (w.ticket.priority, end(w.ticket.tenant, 0), w.ticket.deadline ?? .max, w.seq)
            if victim == nil || k > victim!.key { victim = (i, k) }
        }
        guard let v = victim else { return nil }
        let mine = (ticket.priority, end(ticket.tenant, 0) + Double(max(ticket.cost, 1)) / ticket.weight)
        let theirs = (v.key.0, v.key.1)
        if ticket.tenant == q[v.index].ticket.tenant { return nil }
        return mine < theirs ? v.index : nil
    }

    private func oldestWaiter(for backend: BackendID) -> (String, Int)? {
        var best: (pool: String, index: Int, seq: UInt64)?
        for (pool, q) in queues {
            guard let i = q.firstIndex(where: { $0.candidates.contains(backend) }) else { continue }
            if best == nil || q[i].seq < best!.seq { best = (pool, i, q[i].seq) }
        }
        return best.map { ($0.pool, $0.index) }
    }

    private func headroom(_ load: BackendLoad) -> Int {
        let cap = policy.maxReleasePerUpdate
        guard let u = load.kvUsage else { return 1 }
        if u <= 0 { return cap }
        guard let r = load.running, r >= 1 else { return 1 }
        // The epsilon keeps 0.2/0.1 = 1.9999… from losing a whole request to rounding.
        let fit = ((policy.softLimit - u) / (u / r) + 1e-9).rounded(.down)
        guard fit.isFinite else { return 1 }
        return fit >= Double(cap) ? cap : max(1, Int(fit))
    }

    private mutating func noteRelease(pool: String, now: UInt64) {
        var r = releases[pool, default: []]
        r.removeAll { Self.age($0, now) > Self.drainWindow }
        if r.count >= Self.drainSamples { r.removeFirst(r.count - Self.drainSamples + 1) }
        r.append(now)
        releases[pool] = r
    }

    private func retryAfter(pool: String, now: UInt64) -> Int {
        retryAfter(pool: pool, queued: queuedCount(pool: pool), now: now)
    }

    /// Seconds until `queued + 1` requests would drain at the observed rate (releases in the last
    /// minute over the time since the oldest of them, at least 1 s), clamped to 1...60; 1 when no
    /// release was seen in that window.
    func retryAfter(pool: String, queued: Int, now: UInt64) -> Int {
        let recent = (releases[pool] ?? []).filter { Self.age($0, now) <= Self.drainWindow }
        guard let oldest = recent.first else { return 1 }
        let span = max(Double(Self.age(oldest, now)) / 1e9, 1.0)
        // (queued + 1) / (count / span), written to keep exact inputs exact (2·30/2 = 30, not 30.000…4).
        let seconds = (Double(queued + 1) * span / Double(recent.count)).rounded(.up)
        return seconds >= 60 ? 60 : max(1, Int(seconds))
    }

    @inline(__always) static func age(_ then: UInt64, _ now: UInt64) -> UInt64 { now >= then ? now - then : 0 }

    /// `age` as a `Duration`, to compare with the policy's durations without converting them to
    /// nanoseconds (that conversion lives in Reactor, which a pure machine does not import).
    @inline(__always) static func waited(since then: UInt64, _ now: UInt64) -> Duration { .nanoseconds(age(then, now)) }
}

/// Why admission (or the rate limiter) refused a request other than for KV pressure; the request
/// machine turns it into a 429 with Retry-After.
public struct AdmissionRefusal: Equatable, Sendable {
    public enum Reason: String, Equatable, Sendable {
        /// X-Request-Deadline-Ms passed before the request could start.
        case deadline
        /// Fair queueing pushed it out of a full queue for a tenant further under its share.
        case displaced
        /// The tenant's tokens_per_minute budget is spent.
        case tokens
        /// The tenant's requests_per_minute budget is spent.
        case requests
    }
    public var reason: Reason
    public var retryAfterSeconds: Int
    /// For the message: the limit that was hit (tokens or requests per minute).
    public var limit: Int?

    public init(_ reason: Reason, retryAfterSeconds: Int, limit: Int? = nil) {
        self.reason = reason
        self.retryAfterSeconds = retryAfterSeconds
        self.limit = limit
    }
}

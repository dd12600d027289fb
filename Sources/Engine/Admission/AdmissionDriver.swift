// AdmissionDriver: performs AdmissionMachine's I/O. Every admission_control.poll_interval_seconds
// it reads each backend's GET /metrics (VLLMMetricsParser) and feeds the machine; a tick timer
// runs while requests wait (expiry, `: queued` keepalives). Sessions ask through `request` and
// hear back through AdmissionWaiter. Owns: two Timers and the machine; loop-confined.
import Reactor

protocol AdmissionWaiter: AnyObject {
    /// Who asks, how much, until when: asked only when the request cannot go at once.
    func admissionTicket() -> AdmissionTicket
    func admissionAdmitted(_ backend: BackendID)
    func admissionQueued()
    func admissionRejected(retryAfterSeconds: Int)
    /// Its deadline passed (`deadline`), or a fairer request pushed it out of a full queue.
    func admissionRefused(_ reason: AdmissionRefusal.Reason, retryAfterSeconds: Int)
    func admissionKeepAlive()
}

final class AdmissionDriver {
    private let loop: Loop
    private let backends: BackendSet
    private(set) var machine: AdmissionMachine
    private var waiters: [RequestToken: AdmissionWaiter] = [:]
    private var nextToken: UInt64 = 0
    private let pollTimer: Timer
    private let tickTimer: Timer
    private let pollInterval: Duration
    /// Per backend: a poll is in flight.
    private var polling: Set<Int> = []
    var onLoad: ((Backend) -> Void)?
    private(set) var admittedCount = 0
    private(set) var enqueuedCount = 0
    private(set) var rejectedCount = 0
    private(set) var waitNanosTotal: UInt64 = 0
    private(set) var deadlineMissedCount = 0
    private(set) var displacedCount = 0
    private var enqueuedAt: [RequestToken: UInt64] = [:]
    /// When the armed tick fires (monotonic ns), to bring it forward for a nearer deadline.
    private var tickAt: UInt64 = 0

    init(loop: Loop, backends: BackendSet, policy: AdmissionMachine.Policy, pollInterval: Duration) {
        self.loop = loop
        self.backends = backends
        self.machine = AdmissionMachine(policy: policy)
        self.pollInterval = pollInterval
        self.pollTimer = Timer(loop: loop)
        self.tickTimer = Timer(loop: loop)
        pollTimer.onFire = { [unowned self] in self.pollAll() }
        tickTimer.onFire = { [unowned self] in self.tick() }
    }

    func start() { pollAll() }

    func stop() {
        pollTimer.close()
        tickTimer.close()
    }

    var queuedTotal: Int { machine.queuedTotal }

    /// Asks for a backend of `pool` among `candidates`; answers through `waiter` (maybe at once).
    func request(_ waiter: AdmissionWaiter, pool: String, candidates: [BackendID]) -> RequestToken {
        nextToken += 1
        let token = RequestToken(nextToken)
        // Fast path, same decision the machine would take: nobody waits anywhere and the preferred
        // backend's last reading says ACCEPT, or it has no reading and no other candidate says
        // ACCEPT (the machine admits the first such "unknown"). No token bookkeeping, no action array.
        if machine.queuedTotal == 0, let first = candidates.first, admitsDirectly(first, of: candidates) {
            machine.admittedDirectly(first)
            admittedCount += 1
            waiter.admissionAdmitted(first)
            return token
        }
        waiters[token] = waiter
        perform(machine.requestArrived(token, pool: pool, candidates: candidates, now: Loop.nowNanos(),
                                       ticket: waiter.admissionTicket()))
        return token
    }

    private func admitsDirectly(_ first: BackendID, of candidates: [BackendID]) -> Bool {
        switch machine.decision(for: first) {
        case .accept: return true
        case .unknown: return !candidates.dropFirst().contains { machine.decision(for: $0) == .accept }
        case .queue, .reject: return false
        }
    }

    func leave(_ token: RequestToken) {
        waiters[token] = nil
        enqueuedAt[token] = nil
        machine.requestLeft(token)
    }

    /// A request this driver admitted to `backend` ended (the session's `finish`): its slot frees
    /// and may release the next waiter. Ends reported while actions are being performed (an
    /// admitted session that fails at once) wait until those are done: no re-entry.
    func ended(_ backend: BackendID, now: UInt64 = Loop.nowNanos()) {
        guard !performing else { return endedLater.append(backend) }
        perform(machine.requestEnded(on: backend, now: now))
    }

    private var performing = false
    private var endedLater: [BackendID] = []

    private func perform(_ actions: AdmissionMachine.Actions) {
        // A session admitted here may ask again at once (its pick's breaker closed meanwhile):
        // those actions run in place, as before; only ends are deferred.
        if performing { return run(actions) }
        performing = true
        run(actions)
        while !endedLater.isEmpty {
            let b = endedLater.removeFirst()
            run(machine.requestEnded(on: b, now: Loop.nowNanos()))
        }
        performing = false
    }

    private func run(_ actions: AdmissionMachine.Actions) {
        for a in actions {
            switch a {
            case .admit(let t, let b):
                admittedCount += 1
                if let at = enqueuedAt.removeValue(forKey: t) { waitNanosTotal += Loop.nowNanos() - at }
                waiters.removeValue(forKey: t)?.admissionAdmitted(b)
            case .enqueued(let t):
                enqueuedCount += 1
                enqueuedAt[t] = Loop.nowNanos()
                scheduleTick()
                waiters[t]?.admissionQueued()
            case .reject(let t, let ra):
                rejectedCount += 1
                enqueuedAt[t] = nil
                waiters.removeValue(forKey: t)?.admissionRejected(retryAfterSeconds: ra)
            case .keepAlive(let t):
                waiters[t]?.admissionKeepAlive()
            case .deadlineMissed(let t, let ra):
                deadlineMissedCount += 1
                enqueuedAt[t] = nil
                waiters.removeValue(forKey: t)?.admissionRefused(.deadline, retryAfterSeconds: ra)
            case .displaced(let t, let ra):
                displacedCount += 1
                enqueuedAt[t] = nil
                waiters.removeValue(forKey: t)?.admissionRefused(.displaced, retryAfterSeconds: ra)
            }
        }
    }

    private func tick() {
        tickAt = 0
        perform(machine.tick(now: Loop.nowNanos()))
        if machine.queuedTotal > 0 { scheduleTick() }
    }

    /// Every 250 ms while requests wait, sooner when a queued deadline comes first (so a request
    /// leaves when its deadline passes, not up to a tick later).
    private func scheduleTick() {
        let now = Loop.nowNanos()
        var at = now + 250_000_000
        if let d = machine.nextDeadline { at = min(at, max(d, now + 1_000_000)) }
        if tickTimer.isArmed && tickAt != 0 && tickAt <= at { return }
        tickAt = at
        tickTimer.schedule(after: .nanoseconds(at - now))
    }

    private func pollAll() {
        for b in backends.all where !polling.contains(b.id.index) { poll(b) }
        pollTimer.schedule(after: pollInterval)
    }

    private func poll(_ b: Backend) {
        polling.insert(b.id.index)
        var h = HTTPHeaders()
        if let k = b.apiKey { h.add("authorization", "Bearer " + k) }
        UpstreamFetch(loop: loop, pool: b.pool, path: "/metrics", headers: h, timeout: .seconds(2), maxBytes: 4 << 20) { [weak self] status, body in
            guard let self else { return }
            self.polling.remove(b.id.index)
            var load: BackendLoad?
            if status == 200 {
                let byModel = VLLMMetricsParser.parse(body)
                // One engine per backend: its KV cache is shared by what it serves; take the fullest.
                for (_, l) in byModel where l.kvUsage != nil {
                    if load == nil || (l.kvUsage ?? 0) > (load!.kvUsage ?? 0) { load = l }
                }
            }
            b.load = load
            if status == 200 { b.kvCacheTokens = VLLMMetricsParser.kvCacheSizeTokens(body) }
            self.onLoad?(b)
            self.perform(self.machine.loadsUpdated(b.id, load, now: Loop.nowNanos()))
        }
    }
}

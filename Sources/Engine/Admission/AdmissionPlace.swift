// AdmissionPlace: one request's dealings with admission control, held inline by its RequestSession:
// the tenant's budget (TenantBudget), the queue token while admission holds the request, the queue
// wait and the counters once admission answered, and the backend it was released to until the
// request ends (admission's in-flight count). The session is the AdmissionWaiter and calls
// AdmissionDriver.request itself (admission may answer inside that call), then stores the token.
import Reactor

struct AdmissionPlace {
    var budget: TenantBudget
    /// Admission's token while it holds the request (queued, or asked): left if the request ends.
    var token: RequestToken?
    /// The backend admission control released the request to: told when the request ends.
    private var admittedTo: BackendID?

    init(tenant: Tenant?) { budget = TenantBudget(tenant: tenant) }

    /// Admission released the request to `b`.
    mutating func admitted(to b: BackendID) { admittedTo = b }

    /// The request waits in admission's queue (it counts in its tenant's queued gauge).
    mutating func queued(_ timings: inout RequestTimings, tenants: TenantMetrics) {
        timings.enqueued(at: Loop.nowNanos())
        budget.enqueued(in: tenants)
    }

    /// Admission's answer `e` (admitted, rejected or refused) as the machine handles it: the queue
    /// wait ends (observed) and so does the token; the tenant's admission or refusal is counted.
    mutating func answered(_ e: RequestMachine.Event, _ timings: inout RequestTimings, metrics: Metrics, tenants: TenantMetrics) {
        token = nil
        // The clock only for a request that waited (most are admitted without queueing).
        let waited = timings.isQueued ? timings.dequeued(at: Loop.nowNanos()) : nil
        if let waited { metrics.queueWaitSeconds.observe(Double(waited) / 1e9) }
        budget.dequeued(waitedNanos: waited, in: tenants)
        budget.count(e, in: tenants)
    }

    /// The request ended (at `now`): out of the queue if it still waits there (`leaveQueue`), and
    /// its backend's slot frees.
    mutating func ended(leaveQueue: Bool, _ admission: AdmissionDriver?, now: UInt64) {
        if leaveQueue, let t = token { admission?.leave(t) }
        token = nil
        if let b = admittedTo {
            admittedTo = nil
            admission?.ended(b, now: now)
        }
    }
}

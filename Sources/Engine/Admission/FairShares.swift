// FairShares: start-time fair queueing (SFQ, Goyal et al.) over tenants, the tag arithmetic of
// AdmissionMachine's `fair` policy (issue 14). A pure value: no clock, no I/O.
// Only a tenant's head request holds a tag (its "start"), so the machine may pick *which* of a
// tenant's requests goes (earliest deadline first) without breaking the tenant's share:
//   joined:  a tenant with nothing queued starts at max(v, its last finish)
//   served:  v = start; finish = start + cost / weight; a tenant still backlogged restarts at finish
//   left:    a request leaves unserved (expired, client gone): no charge
// The machine serves the lowest (priority, start). Memory: a tenant is forgotten once nothing of
// it is queued and its last finish is behind v (it would restart at v anyway).

struct FairShares: Equatable, Sendable {
    struct Flow: Equatable, Sendable {
        var start: Double
        var lastFinish: Double
        var backlog: Int
    }
    /// The start tag of the last request served.
    private(set) var virtualTime: Double = 0
    private(set) var flows: [String: Flow] = [:]

    /// The tag a tenant's next request is served at (the tag it would get if it joined now).
    func start(_ tenant: String) -> Double {
        guard let f = flows[tenant] else { return virtualTime }
        return f.backlog > 0 ? f.start : max(virtualTime, f.lastFinish)
    }

    mutating func joined(_ tenant: String) {
        if var f = flows[tenant] {
            if f.backlog == 0 { f.start = max(virtualTime, f.lastFinish) }
            f.backlog += 1
            flows[tenant] = f
        } else {
            flows[tenant] = Flow(start: virtualTime, lastFinish: virtualTime, backlog: 1)
        }
    }

    /// One of `tenant`'s queued requests was served; `cost` in tokens, `weight` > 0.
    mutating func served(_ tenant: String, cost: Int, weight: Double) {
        guard var f = flows[tenant], f.backlog > 0 else { preconditionFailure("served \(tenant) with nothing queued") }
        virtualTime = max(virtualTime, f.start)
        f.lastFinish = f.start + Double(max(cost, 1)) / weight
        f.backlog -= 1
        if f.backlog > 0 { f.start = f.lastFinish }
        flows[tenant] = f
        forgetIdle()
    }

    mutating func left(_ tenant: String) {
        guard var f = flows[tenant], f.backlog > 0 else { preconditionFailure("left \(tenant) with nothing queued") }
        f.backlog -= 1
        flows[tenant] = f
        if f.backlog == 0 && f.lastFinish <= virtualTime { flows[tenant] = nil }
    }

    private mutating func forgetIdle() {
        // Bounded by the tenants seen since the last sweep; cheap next to a release's other work.
        guard flows.count > 8 else { return }
        let v = virtualTime
        flows = flows.filter { $0.value.backlog > 0 || $0.value.lastFinish > v }
    }
}

// TenantMetrics: this process's admission counters per tenant (issue 14). Labels are the
// configured tenants plus "other" (TenantTable.labels), so cardinality is bounded by the config.
// Plain values mutated on the loop by RequestSession; rendered by EngineRuntime (Prometheus and
// the JSON /metrics).

final class TenantMetrics {
    /// Why a tenant's request was refused (the `reason` label).
    enum Reason: Int, CaseIterable {
        /// KV pressure: every backend at the hard limit, the queue full, or max_wait ran out.
        case capacity
        case deadline
        case displaced
        case tokens
        case requests

        var label: String { ["capacity", "deadline", "displaced", "tokens", "requests"][rawValue] }
    }

    let labels: [String]
    private(set) var queued: [Int]
    private(set) var admitted: [Int]
    private(set) var rejected: [[Int]]
    private(set) var waitSeconds: [Histogram]
    private(set) var tokensCharged: [Int]
    /// Rate-limit calls answered without a reservation because Redis did not answer (fail open).
    var rateLimitUnavailable = 0

    init(labels: [String]) {
        self.labels = labels
        queued = Array(repeating: 0, count: labels.count)
        admitted = queued
        tokensCharged = queued
        rejected = Array(repeating: Array(repeating: 0, count: Reason.allCases.count), count: labels.count)
        waitSeconds = Array(repeating: Histogram(buckets: Histogram.queueWaitSeconds), count: labels.count)
    }

    func enqueued(_ t: Int) { queued[t] += 1 }
    func dequeued(_ t: Int, waitedSeconds: Double?) {
        queued[t] -= 1
        if let w = waitedSeconds { waitSeconds[t].observe(w) }
    }
    func admit(_ t: Int) { admitted[t] += 1 }
    func reject(_ t: Int, _ r: Reason) { rejected[t][r.rawValue] += 1 }
    func charge(_ t: Int, tokens: Int) { tokensCharged[t] += tokens }

    func json() -> String {
        var s = "{"
        for (i, l) in labels.enumerated() {
            if i > 0 { s += "," }
            s += "\(JSONText.quoted(l)):{\"queued\":\(queued[i]),\"admitted\":\(admitted[i]),\"tokens_charged\":\(tokensCharged[i]),"
            s += "\"queue_wait_count\":\(waitSeconds[i].count),\"queue_wait_sum_seconds\":\(waitSeconds[i].sum),\"rejected\":{"
            s += Reason.allCases.map { "\"\($0.label)\":\(rejected[i][$0.rawValue])" }.joined(separator: ",")
            s += "}}"
        }
        return s + "}"
    }

    func write(to w: inout PrometheusWriter) {
        let lab = labels
        w.gauge("engine_tenant_queued", help: "Requests of each tenant waiting in this process's admission queue.",
                samples: lab.indices.map { (labels: [("tenant", lab[$0])], value: Double(queued[$0])) })
        w.counter("engine_tenant_admitted_total", help: "Requests of each tenant admitted to a backend.",
                  samples: lab.indices.map { (labels: [("tenant", lab[$0])], value: Double(admitted[$0])) })
        w.counter("engine_tenant_rejected_total", help: "Requests of each tenant refused by admission, by reason.",
                  samples: lab.indices.flatMap { i in Reason.allCases.map { (labels: [("tenant", lab[i]), ("reason", $0.label)], value: Double(rejected[i][$0.rawValue])) } })
        w.histogram("engine_tenant_queue_wait_seconds", help: "Time each tenant's requests waited in the admission queue.",
                    series: lab.indices.map { (labels: [("tenant", lab[$0])], histogram: waitSeconds[$0]) })
        w.counter("engine_tenant_tokens_charged_total", help: "Tokens charged to each tenant (real usage, or the reservation when none was reported).",
                  samples: lab.indices.map { (labels: [("tenant", lab[$0])], value: Double(tokensCharged[$0])) })
        w.counter("engine_ratelimit_store_unavailable_total", help: "Rate-limit checks served without a reservation because Redis did not answer.",
                  value: Double(rateLimitUnavailable))
    }
}

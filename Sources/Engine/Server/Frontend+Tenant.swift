// Frontend+Tenant: what fair admission needs from a request's head (issue 14): its tenant (the
// API key's identity, or admission_control.tenant_header's value) and its deadline
// (`X-Request-Deadline-Ms: <milliseconds from now>`, a monotonic instant from here on; 0 or less
// is already past, and the session refuses it before any upstream call).
import Reactor

extension Frontend {
    func stampTenant(_ req: inout OpenAIRequest, head: HTTPRequestHead, identity: String?) {
        // Read in place: a local copy of the table retained each of its arrays per request.
        req.tenant = runtime.tenants.resolve(identity: identity, headerValue: runtime.tenants.header.flatMap { head.headers[$0] })
        if let raw = head.headers["x-request-deadline-ms"], let ms = Int64(raw.filter { $0 != " " && $0 != "\t" }) {
            let now = Loop.nowNanos()
            // Clamped to a day: a silly value must not overflow the instant.
            let ns = UInt64(min(max(ms, 0), 86_400_000)) * 1_000_000
            req.deadline = ms <= 0 ? now : now + ns
        }
    }
}

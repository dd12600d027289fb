// SessionHeaders: the headers on every response of a RequestSession, a function of values: the
// front end's (X-Routed-Model, ...), then x-fallback, x-coalesced, x-request-id, x-cache,
// x-routed-backend and, for a tenant with limits, OpenAI's x-ratelimit-* headers.
// Owns nothing; the session passes its facts in.
import Reactor

enum SessionHeaders {
    /// `base` plus what this request's answer says about itself. `backendURL`: the instance of
    /// the last attempt, on every proxied answer.
    static func make(_ base: HTTPHeaders, requestId: String, cache: String, usedFallback: Bool, isFollower: Bool,
                     backendURL: String?, rateStatus: RateLimitStatus?) -> HTTPHeaders {
        var h = base
        if usedFallback { h.add(name: "x-fallback", "model") }
        if isFollower { h.add(name: "x-coalesced", "true") }
        h.add(name: "x-request-id", requestId)
        h.add(name: "x-cache", cache)
        if let backendURL { h.add(name: "x-routed-backend", backendURL) }
        if let rateStatus { addRateLimitHeaders(rateStatus, to: &h) }
        return h
    }

    /// OpenAI's x-ratelimit-* headers for a tenant with limits.
    static func addRateLimitHeaders(_ st: RateLimitStatus, to h: inout HTTPHeaders) {
        if let l = st.limitRequests, let r = st.remainingRequests {
            h.add("x-ratelimit-limit-requests", String(l))
            h.add("x-ratelimit-remaining-requests", String(max(0, r)))
            h.add("x-ratelimit-reset-requests", resetText(RateLimitStatus.resetMillis(limit: l, remaining: r)))
        }
        if let l = st.limitTokens, let r = st.remainingTokens {
            h.add("x-ratelimit-limit-tokens", String(l))
            h.add("x-ratelimit-remaining-tokens", String(max(0, r)))
            h.add("x-ratelimit-reset-tokens", resetText(RateLimitStatus.resetMillis(limit: l, remaining: r)))
        }
    }

    /// OpenAI's duration form: "120ms", "1.5s", "6m0s".
    static func resetText(_ ms: Int) -> String {
        if ms < 1000 { return "\(ms)ms" }
        let m = ms / 60_000
        let rest = ms % 60_000
        let secs = rest % 1000 == 0 ? "\(rest / 1000)" : trimmed(Double(rest) / 1000)
        return m > 0 ? "\(m)m\(secs)s" : "\(secs)s"
    }

    private static func trimmed(_ v: Double) -> String {
        var s = String((v * 1000).rounded() / 1000)
        while s.hasSuffix("0") { s.removeLast() }
        if s.hasSuffix(".") { s.removeLast() }
        return s
    }
}

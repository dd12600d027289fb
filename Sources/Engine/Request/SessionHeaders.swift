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
        make(base, requestId: requestId, tail: tail(cache: cache, backendURL: backendURL), usedFallback: usedFallback,
             isFollower: isFollower, rateStatus: rateStatus)
    }

    /// `make` with the x-cache and x-routed-backend lines given as `tail` (built once per backend
    /// and outcome: Backend.sessionHeaderTail), appended in one copy where two adds each wrote
    /// and checked their name and value.
    static func make(_ base: HTTPHeaders, requestId: String, tail: HTTPHeaders, usedFallback: Bool, isFollower: Bool,
                     rateStatus: RateLimitStatus?) -> HTTPHeaders {
        var h = base
        if usedFallback { h.add(name: "x-fallback", "model") }
        if isFollower { h.add(name: "x-coalesced", "true") }
        h.add(name: "x-request-id", requestId)
        h.append(tail)
        if let rateStatus { addRateLimitHeaders(rateStatus, to: &h) }
        return h
    }

    /// The x-cache line, then x-routed-backend's when a backend answered.
    static func tail(cache: String, backendURL: String?) -> HTTPHeaders {
        var h = HTTPHeaders()
        h.add(name: "x-cache", cache)
        if let backendURL { h.add(name: "x-routed-backend", backendURL) }
        return h
    }

    /// `tail` without a backend, for each outcome (by `CacheOutcome.index`).
    static let tails: [HTTPHeaders] = CacheOutcome.allCases.map { tail(cache: $0.rawValue, backendURL: nil) }

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

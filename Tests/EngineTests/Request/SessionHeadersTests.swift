// SessionHeaders as a function of values: what every response of a session carries, in order.
import Reactor
import Testing
@testable import Engine

@Suite struct SessionHeadersTests {
    @Test func plainMissThenEveryOptionalHeader() {
        var base = HTTPHeaders()
        base.add("x-routed-model", "m")
        let plain = SessionHeaders.make(base, requestId: "r1", cache: "MISS", usedFallback: false, isFollower: false,
                                        backendURL: nil, rateStatus: nil)
        #expect(plain.items == [.init("x-routed-model", "m"), .init("x-request-id", "r1"), .init("x-cache", "MISS")])
        let all = SessionHeaders.make(HTTPHeaders(), requestId: "r2", cache: "HIT", usedFallback: true, isFollower: true,
                                      backendURL: "http://b:8000",
                                      rateStatus: RateLimitStatus(limitTokens: 600, remainingTokens: -5, limitRequests: 10, remainingRequests: 4))
        #expect(all.items.map(\.name) == ["x-fallback", "x-coalesced", "x-request-id", "x-cache", "x-routed-backend",
                                          "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
                                          "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"])
        #expect(all["x-routed-backend"] == "http://b:8000")
        #expect(all["x-ratelimit-remaining-tokens"] == "0") // debt shows as none left
        #expect(all["x-ratelimit-reset-requests"] == "36s")
        #expect(all["x-ratelimit-reset-tokens"] == "1m0.5s")
    }

    /// The tables the session takes its tails from hold the lines `tail` makes, in outcome order.
    @Test func prebuiltTailsAreTheLinesForEachOutcome() {
        #expect(CacheOutcome.allCases.map(\.index) == [0, 1, 2, 3])
        for o in CacheOutcome.allCases {
            #expect(SessionHeaders.tails[o.index].items == [.init("x-cache", o.rawValue)])
            let h = SessionHeaders.make(HTTPHeaders(), requestId: "r", tail: SessionHeaders.tail(cache: o.rawValue, backendURL: "http://b:1"),
                                        usedFallback: false, isFollower: true, rateStatus: nil)
            #expect(h.items == [.init("x-coalesced", "true"), .init("x-request-id", "r"), .init("x-cache", o.rawValue),
                                .init("x-routed-backend", "http://b:1")])
        }
    }

    @Test func onlyTheLimitsATenantHas() {
        var h = HTTPHeaders()
        SessionHeaders.addRateLimitHeaders(RateLimitStatus(limitTokens: 600, remainingTokens: 300), to: &h)
        #expect(h.items.map(\.name) == ["x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"])
        #expect(h["x-ratelimit-reset-tokens"] == "30s")
    }

    @Test func resetText() {
        #expect(SessionHeaders.resetText(0) == "0ms")
        #expect(SessionHeaders.resetText(999) == "999ms")
        #expect(SessionHeaders.resetText(1000) == "1s")
        #expect(SessionHeaders.resetText(61_250) == "1m1.25s")
    }
}

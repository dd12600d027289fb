// ModelRouter decisions: absent, "auto", explicit, unknown, and the threshold edge.
import Testing
@testable import Engine

private let router = ModelRouter(fastModel: "fast", largeModel: "large", threshold: 512)
private let known: @Sendable (String) -> Bool? = { ["fast", "large", "tiny"].contains($0) }
private let notYet: @Sendable (String) -> Bool? = { _ in nil }

@Suite struct ModelRouterTests {
    @Test func absentOrAutoRoutesByTokens() {
        #expect(router.route(requested: nil, promptTokens: 10, isKnown: known) == .model("fast", routed: true))
        #expect(router.route(requested: "auto", promptTokens: 10, isKnown: known) == .model("fast", routed: true))
        #expect(router.route(requested: "", promptTokens: 10, isKnown: known) == .model("fast", routed: true))
        #expect(router.route(requested: nil, promptTokens: 5000, isKnown: known) == .model("large", routed: true))
        #expect(router.route(requested: "auto", promptTokens: 5000, isKnown: known) == .model("large", routed: true))
    }

    @Test func thresholdEdgeGoesLarge() {
        #expect(router.route(requested: nil, promptTokens: 511, isKnown: known) == .model("fast", routed: true))
        #expect(router.route(requested: nil, promptTokens: 512, isKnown: known) == .model("large", routed: true))
    }

    @Test func explicitModelIsNeverRerouted() {
        #expect(router.route(requested: "tiny", promptTokens: 100_000, isKnown: known) == .model("tiny", routed: false))
        #expect(router.route(requested: "large", promptTokens: 1, isKnown: known) == .model("large", routed: false))
        #expect(router.route(requested: "Auto", promptTokens: 1, isKnown: notYet) == .model("Auto", routed: false))
    }

    @Test func unknownModelOnlyWhenListsAreKnown() {
        #expect(router.route(requested: "gpt-4", promptTokens: 1, isKnown: known) == .unknownModel("gpt-4"))
        #expect(router.route(requested: "gpt-4", promptTokens: 1, isKnown: notYet) == .model("gpt-4", routed: false))
    }

    @Test func routedChoicesAreNotLookedUp() {
        var asked: [String] = []
        let d = router.route(requested: nil, promptTokens: 1, isKnown: { asked.append($0); return false })
        #expect(d == .model("fast", routed: true))
        #expect(asked.isEmpty)
    }
}

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

    @Test func servedRoutedChoiceIsKept() {
        var asked = false
        let d = router.route(requested: nil, promptTokens: 1, isKnown: known, servedModels: { asked = true; return ["fast"] })
        #expect(d == .model("fast", routed: true))
        #expect(!asked)  // only looked up when the choice is not served
        #expect(router.route(requested: nil, promptTokens: 1, isKnown: notYet, servedModels: { nil }) == .model("fast", routed: true))
    }

    @Test func unservedRoutedChoiceGoesToTheOnlyServedModel() {
        let onlyTiny: (String) -> Bool? = { $0 == "tiny" }
        #expect(router.route(requested: nil, promptTokens: 1, isKnown: onlyTiny, servedModels: { ["tiny"] }) == .model("tiny", routed: true))
        #expect(router.route(requested: "auto", promptTokens: 5000, isKnown: onlyTiny, servedModels: { ["tiny"] }) == .model("tiny", routed: true))
        // An explicit model is still checked, never replaced.
        #expect(router.route(requested: "fast", promptTokens: 1, isKnown: onlyTiny, servedModels: { ["tiny"] }) == .unknownModel("fast"))
    }

    @Test func unservedRoutedChoiceAmongSeveralIsNamed() {
        let two: (String) -> Bool? = { ["a", "b"].contains($0) }
        #expect(router.route(requested: nil, promptTokens: 1, isKnown: two, servedModels: { ["a", "b"] })
                == .unservedDefault("fast", served: ["a", "b"]))
        // A served fallback keeps the pool's fallback path; an unserved one does not.
        var withFallback = router
        withFallback.fallbackModel = "b"
        #expect(withFallback.route(requested: nil, promptTokens: 1, isKnown: two, servedModels: { ["a", "b"] }) == .model("fast", routed: true))
        withFallback.fallbackModel = "c"
        #expect(withFallback.route(requested: nil, promptTokens: 1, isKnown: two, servedModels: { ["a", "b"] })
                == .unservedDefault("fast", served: ["a", "b"]))
    }
}

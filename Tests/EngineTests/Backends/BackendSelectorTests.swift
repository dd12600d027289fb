// BackendSelector: nginx smooth weighted round-robin, eligibility and last-resort exclusions.
import Testing
@testable import Engine

private let all: @Sendable (BackendID) -> Bool = { _ in true }

@Suite struct BackendSelectorTests {
    @Test func weightsThreeToOneInterleaveSmoothly() {
        var s = BackendSelector(weights: [3, 1])
        let picks = (0..<8).map { _ in s.pick(eligible: all)!.index }
        #expect(picks == [0, 0, 1, 0, 0, 0, 1, 0])
        #expect(picks.filter { $0 == 0 }.count == 6)
        #expect(picks.filter { $0 == 1 }.count == 2)
    }

    @Test func equalWeightsAlternate() {
        var s = BackendSelector(weights: [1, 1, 1])
        let picks = (0..<6).map { _ in s.pick(eligible: all)!.index }
        #expect(picks == [0, 1, 2, 0, 1, 2])
    }

    @Test func nginxFiveOneOne() {
        var s = BackendSelector(weights: [5, 1, 1])
        let picks = (0..<7).map { _ in s.pick(eligible: all)!.index }
        #expect(picks == [0, 0, 1, 0, 2, 0, 0])
    }

    @Test func skipsIneligible() {
        var s = BackendSelector(weights: [3, 1, 1])
        let picks = (0..<4).map { _ in s.pick(eligible: { $0.index != 0 })!.index }
        #expect(picks == [1, 2, 1, 2])
        #expect(s.pick(eligible: { _ in false }) == nil)
    }

    @Test func excludedOnlyAsLastResort() {
        var s = BackendSelector(weights: [1, 1])
        for _ in 0..<4 { #expect(s.pick(eligible: all, excluding: [BackendID(0)]) == BackendID(1)) }
        // b1 ineligible: the excluded b0 is all there is.
        #expect(s.pick(eligible: { $0.index == 0 }, excluding: [BackendID(0)]) == BackendID(0))
        #expect(s.pick(eligible: all, excluding: [BackendID(0), BackendID(1)]) != nil)
        #expect(s.pick(eligible: { $0.index == 1 }, excluding: [BackendID(0)]) == BackendID(1))
    }

    @Test func zeroWeightIsNeverPicked() {
        var s = BackendSelector(weights: [0, 2])
        for _ in 0..<4 { #expect(s.pick(eligible: all) == BackendID(1)) }
        #expect(s.pick(eligible: { $0.index == 0 }) == nil)
        var empty = BackendSelector(weights: [])
        #expect(empty.pick(eligible: all) == nil)
    }
}

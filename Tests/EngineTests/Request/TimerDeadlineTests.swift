// TimerDeadline as a value: which arms set the libevent timer, and what a wake does.
import Testing
@testable import Engine

@Suite struct TimerDeadlineTests {
    private let ms: UInt64 = 1_000_000

    @Test func aDeadlinePushedBackMovesWithoutSettingTheTimer() {
        var t = TimerDeadline()
        #expect(t.arm(.upstream, due: 1000 * ms) == .set)        // request sent
        #expect(t.arm(.upstream, due: 1010 * ms) == .none)       // stream head
        #expect(t.arm(.upstream, due: 1020 * ms) == .none)       // a read
        #expect(t.due == 1020 * ms)
        #expect(t.wakes == 1000 * ms)
        // The timer wakes at its first time: the deadline moved, so it is set for the rest.
        #expect(t.woke(now: 1000 * ms) == .setAgain(afterNanos: 20 * ms))
        #expect(t.wakes == 1020 * ms)
        #expect(t.woke(now: 1020 * ms) == .fire(.upstream))
        #expect(t.due == nil && t.wakes == nil)
    }

    @Test func anEarlierDeadlineOrAnotherKindSetsTheTimer() {
        var t = TimerDeadline()
        #expect(t.arm(.upstream, due: 1000 * ms) == .set)
        #expect(t.arm(.upstream, due: 900 * ms) == .set)        // sooner than it would wake
        #expect(t.wakes == 900 * ms)
        #expect(t.arm(.backoff, due: 950 * ms) == .set)         // another purpose
        #expect(t.kind == .backoff)
        #expect(t.woke(now: 950 * ms) == .fire(.backoff))
        #expect(t.arm(.backoff, due: 2000 * ms) == .set)        // after a firing nothing is set
    }

    @Test func afterCancellingTheNextArmSetsTheTimer() {
        var t = TimerDeadline()
        #expect(t.arm(.upstream, due: 1000 * ms) == .set)
        t.cancelled()                                           // upstream paused for a slow client
        #expect(t.arm(.upstream, due: 3000 * ms) == .set)       // resumed
        #expect(t.wakes == 3000 * ms)
    }

    @Test func aWakeWithinTheSlackFires() {
        // libevent's cached coarse clock runs a little behind ours: a timer set for the deadline
        // may wake just before it by our clock, and then fires as it did.
        var t = TimerDeadline()
        #expect(t.arm(.upstream, due: 1000 * ms) == .set)
        #expect(t.woke(now: 1000 * ms - TimerDeadline.slackNanos) == .fire(.upstream))
        #expect(t.arm(.upstream, due: 2000 * ms) == .set)
        #expect(t.woke(now: 2000 * ms - TimerDeadline.slackNanos - 1) == .setAgain(afterNanos: TimerDeadline.slackNanos + 1))
    }

    @Test func randomArmsFireAtTheLastDeadlineOfTheirKind() {
        // Against a model that sets the timer on every arm: a wake fires exactly when the model's
        // timer would (within the slack), and the real timer is never set to wake after the due time.
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            var t = TimerDeadline()
            var now: UInt64 = 1000 * ms
            var modelDue: UInt64?
            var modelKind = TimerKind.upstream
            var timerAt: UInt64?     // when the libevent timer would wake
            for _ in 0..<40 {
                switch Int.random(in: 0..<10, using: &rng) {
                case 0..<6:
                    let kind: TimerKind = Int.random(in: 0..<5, using: &rng) == 0 ? .backoff : .upstream
                    let due = now + UInt64.random(in: 1...2000, using: &rng) * ms
                    if t.arm(kind, due: due) == .set { timerAt = due }
                    modelDue = due
                    modelKind = kind
                case 6:
                    t.cancelled()
                    timerAt = nil
                    modelDue = nil
                default:
                    // Time passes to the timer's wake, if it is set.
                    guard let at = timerAt else { continue }
                    now = max(now, at)
                    timerAt = nil
                    switch t.woke(now: now) {
                    case .fire(let kind):
                        #expect(kind == modelKind)
                        #expect(modelDue.map { $0 <= now + TimerDeadline.slackNanos } == true)
                        modelDue = nil
                    case .setAgain(let after):
                        #expect(modelDue == now + after)
                        timerAt = now + after
                    }
                }
                if let d = modelDue { #expect(timerAt.map { $0 <= d } == true) }
            }
        }
    }
}

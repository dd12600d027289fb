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

    @Test func anEarlierDeadlineSetsTheTimerAndAnyKindFiresAsLastArmed() {
        var t = TimerDeadline()
        #expect(t.arm(.upstream, due: 1000 * ms) == .set)
        #expect(t.arm(.upstream, due: 900 * ms) == .set)        // sooner than it would wake
        #expect(t.wakes == 900 * ms)
        #expect(t.arm(.backoff, due: 950 * ms) == .none)        // another purpose, later: the wake re-checks
        #expect(t.kind == .backoff)
        #expect(t.woke(now: 900 * ms) == .setAgain(afterNanos: 50 * ms))
        #expect(t.woke(now: 950 * ms) == .fire(.backoff))
        #expect(t.arm(.backoff, due: 2000 * ms) == .set)        // after a firing nothing is set
        #expect(t.arm(.upstream, due: 1500 * ms) == .set)       // another purpose, sooner
        #expect(t.woke(now: 1500 * ms) == .fire(.upstream))
    }

    @Test func cancellingLeavesTheTimerSetAndItsWakeDoesNothing() {
        var t = TimerDeadline()
        #expect(t.arm(.upstream, due: 1000 * ms) == .set)
        t.cancelled()                                           // upstream paused for a slow client
        #expect(t.due == nil && t.wakes == 1000 * ms)
        #expect(t.arm(.upstream, due: 3000 * ms) == .none)      // resumed: the timer wakes first
        #expect(t.woke(now: 1000 * ms) == .setAgain(afterNanos: 2000 * ms))
        t.cancelled()
        #expect(t.woke(now: 3000 * ms) == .idle)                // nothing due: nothing fires
        #expect(t.due == nil && t.wakes == nil)
        #expect(t.arm(.upstream, due: 4000 * ms) == .set)       // not set any more
    }

    @Test func aPooledTimerStillSetServesTheNextRequestsLaterDeadline() {
        // The previous request gave its timer back set to wake at 1000 ms.
        var t = TimerDeadline(wakes: 1000 * ms)
        #expect(t.due == nil)
        #expect(t.arm(.upstream, due: 1500 * ms) == .none)
        #expect(t.woke(now: 1000 * ms) == .setAgain(afterNanos: 500 * ms))
        #expect(t.woke(now: 1500 * ms) == .fire(.upstream))
        // An earlier deadline than the pooled timer's wake sets it.
        var u = TimerDeadline(wakes: 1000 * ms)
        #expect(u.arm(.backoff, due: 200 * ms) == .set)
        #expect(u.wakes == 200 * ms)
        #expect(u.woke(now: 200 * ms) == .fire(.backoff))
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
        // Against a model that sets the timer on every arm and unsets it on cancel: a wake fires
        // exactly when the model's timer would (within the slack), a wake with nothing due does
        // nothing, and the real timer is never set to wake after the due time.
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
                    // The libevent timer stays set: its wake must do nothing.
                    t.cancelled()
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
                    case .idle:
                        #expect(modelDue == nil)
                    }
                }
                if let d = modelDue { #expect(timerAt.map { $0 <= d } == true) }
                #expect(t.wakes == timerAt)
            }
        }
    }
}

// Timer: a firing reaches its target (no closure), then `onFire`; a cancelled or closed timer
// tells nobody. Real libevent, no network.
import Testing
@testable import Reactor

private final class Counter: TimerTarget {
    var fired: [ObjectIdentifier] = []
    func timerFired(_ timer: Timer) { fired.append(ObjectIdentifier(timer)) }
}

@Suite struct TimerTests {
    @Test func firingReachesTheTargetThenTheHandler() {
        let loop = Loop()
        let target = Counter()
        let t = Timer(loop: loop)
        var order: [String] = []
        t.target = target
        t.onFire = { order.append(target.fired.isEmpty ? "handler first" : "handler after target") }
        t.schedule(after: .milliseconds(1))
        runLoop(loop) { !order.isEmpty }
        #expect(target.fired == [ObjectIdentifier(t)])
        #expect(order == ["handler after target"])
        #expect(!t.isArmed)
        t.close()
    }

    @Test func cancelledOrClosedTimersTellNobody() {
        let loop = Loop()
        let target = Counter()
        let a = Timer(loop: loop)
        let b = Timer(loop: loop)
        a.target = target
        b.target = target
        a.schedule(after: .milliseconds(1))
        b.schedule(after: .milliseconds(1))
        a.cancel()
        b.close()
        #expect(b.target == nil)
        runLoop(loop, for: .milliseconds(20))
        #expect(target.fired.isEmpty)
        a.close()
    }
}

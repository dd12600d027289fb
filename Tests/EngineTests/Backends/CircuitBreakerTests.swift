// CircuitBreaker transitions with an injected clock (nanoseconds).
import Testing
@testable import Engine

private func sec(_ x: Double) -> UInt64 { UInt64(x * 1_000_000_000) }

@Suite struct CircuitBreakerTests {
    @Test func opensAtThreshold() {
        var b = CircuitBreaker(threshold: 3, cooldown: .seconds(30))
        #expect(b.gauge == 0)
        #expect(b.acquire(now: 0) == .granted)
        #expect(b.recordFailure(now: sec(1)) == nil)
        #expect(b.recordFailure(now: sec(2)) == nil)
        #expect(b.state == .closed(failures: 2))
        #expect(b.recordFailure(now: sec(3)) == .opened)
        #expect(b.state == .open(since: sec(3)))
        #expect(b.gauge == 1)
        #expect(b.acquire(now: sec(4)) == .refused)
        #expect(!b.isAvailable(now: sec(4)))
        // Failures while open neither re-log nor extend the cooldown.
        #expect(b.recordFailure(now: sec(20)) == nil)
        #expect(b.state == .open(since: sec(3)))
    }

    @Test func successResetsTheCount() {
        var b = CircuitBreaker(threshold: 2, cooldown: .seconds(1))
        _ = b.recordFailure(now: 0)
        #expect(b.recordSuccess(now: 0) == nil)  // closed stays closed: nothing to log
        #expect(b.recordFailure(now: 0) == nil)
        #expect(b.state == .closed(failures: 1))
    }

    @Test func cooldownThenExactlyOneProbe() {
        var b = CircuitBreaker(threshold: 1, cooldown: .seconds(30))
        #expect(b.recordFailure(now: sec(10)) == .opened)
        #expect(b.acquire(now: sec(39.999)) == .refused)
        #expect(b.isAvailable(now: sec(40)))
        #expect(b.acquire(now: sec(40)) == .probe)
        #expect(b.state == .halfOpen(probeInFlight: true))
        #expect(b.gauge == 2)
        #expect(!b.isAvailable(now: sec(41)))
        for i in 0..<5 { #expect(b.acquire(now: sec(41 + Double(i))) == .refused) }
    }

    @Test func probeSuccessCloses() {
        var b = CircuitBreaker(threshold: 1, cooldown: .seconds(5))
        _ = b.recordFailure(now: 0)
        #expect(b.acquire(now: sec(5)) == .probe)
        #expect(b.recordSuccess(now: sec(6)) == .closed)
        #expect(b.state == .closed(failures: 0))
        #expect(b.acquire(now: sec(6)) == .granted)
        #expect(b.acquire(now: sec(6)) == .granted)
    }

    @Test func probeFailureReopensWithAFreshCooldown() {
        var b = CircuitBreaker(threshold: 3, cooldown: .seconds(5))
        for _ in 0..<3 { _ = b.recordFailure(now: 0) }
        #expect(b.acquire(now: sec(5)) == .probe)
        #expect(b.recordFailure(now: sec(7)) == .opened)  // one failure suffices in half-open
        #expect(b.state == .open(since: sec(7)))
        #expect(b.acquire(now: sec(11)) == .refused)
        #expect(b.acquire(now: sec(12)) == .probe)
    }

    @Test func releaseFreesTheProbeSlot() {
        var b = CircuitBreaker(threshold: 1, cooldown: .seconds(5))
        _ = b.recordFailure(now: 0)
        #expect(b.acquire(now: sec(5)) == .probe)
        b.release()
        #expect(b.state == .halfOpen(probeInFlight: false))
        #expect(b.isAvailable(now: sec(6)))
        #expect(b.acquire(now: sec(6)) == .probe)
        #expect(b.acquire(now: sec(6)) == .refused)
        // release outside a probe changes nothing.
        var c = CircuitBreaker(threshold: 1, cooldown: .seconds(5))
        c.release()
        #expect(c.state == .closed(failures: 0))
        _ = c.recordFailure(now: 0)
        c.release()
        #expect(c.state == .open(since: 0))
    }

    @Test func subSecondCooldownAndClockNeverUnderflows() {
        var b = CircuitBreaker(threshold: 1, cooldown: .milliseconds(250))
        _ = b.recordFailure(now: sec(1))
        #expect(b.acquire(now: sec(0.5)) == .refused)  // an earlier `now` must not trap
        #expect(b.acquire(now: sec(1.249)) == .refused)
        #expect(b.acquire(now: sec(1.25)) == .probe)
        #expect(CircuitBreaker(threshold: 0, cooldown: .zero).threshold == 1)
    }
}

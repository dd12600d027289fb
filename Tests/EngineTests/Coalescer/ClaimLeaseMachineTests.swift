// ClaimLeaseMachine as a value (one lease timer per process), and the leases it keeps in a real
// shared-memory segment: a leader whose request outlives the lease keeps its claim (another
// worker keeps finding it taken), and a leader that dies loses it one lease after its last
// refresh. Time is simulated: the machine and the segment both take `now`.
import Reactor
import Testing
@testable import Engine

#if canImport(Glibc)
import Glibc
#endif

private let second: UInt64 = 1_000_000_000

@Suite struct ClaimLeaseMachineTests {
    @Test func oneTimerForEveryClaimAndIdleWhenNoneIsHeld() {
        var m = ClaimLeaseMachine(interval: .seconds(1))
        #expect(m.fired(now: 0, held: 3) == .none)  // a stale firing while idle
        #expect(m.taken(now: 10) == .arm(after: .seconds(1)))
        #expect(m.state == .ticking(armedAt: 10))
        #expect(m.taken(now: 20) == .none)           // the armed tick covers it
        #expect(m.fired(now: 10 + second, held: 2) == .refreshAll(thenArmAfter: .seconds(1)))
        #expect(m.state == .ticking(armedAt: 10 + second))
        #expect(m.fired(now: 10 + 2 * second, held: 0) == .none)
        #expect(m.state == .idle)
        #expect(m.taken(now: 5 * second) == .arm(after: .seconds(1)))
    }

    /// The publishers of one process, driven the way CoalescerDriver drives them: the machine's
    /// arm actions set the next tick, a tick refreshes every publisher not yet finished.
    private struct Worker {
        var machine = ClaimLeaseMachine(interval: RemoteFlightPublisher.refreshInterval)
        var due: UInt64?
        var publishers: [RemoteFlightPublisher] = []
        var alive = true

        mutating func perform(_ a: ClaimLeaseMachine.Action, now: UInt64) {
            switch a {
            case .none: break  // an armed timer stays armed
            case .arm(let d): due = now + d.nanoseconds
            case .refreshAll(let d):
                for p in publishers { p.refreshLease(now: now) }
                due = now + d.nanoseconds
            }
        }

        mutating func took(_ p: RemoteFlightPublisher, now: UInt64) {
            publishers.append(p)
            perform(machine.taken(now: now), now: now)
        }

        mutating func advance(to now: UInt64) {
            guard alive, let d = due, now >= d else { return }
            due = nil  // it fired: armed again only if the machine says so
            perform(machine.fired(now: now, held: publishers.filter { !$0.isDone }.count), now: now)
        }
    }

    /// One segment as two workers map it (`a` the leader's, `b` another worker's), and a Redis
    /// connection the publishers never send on (nobody joins as a reader).
    private struct Segment {
        let loop = Loop()
        let redis: RedisConnection
        let fd: Int32
        let a, b: SharedMemoryCacheStore

        init() throws {
            redis = RedisConnection(loop: loop, host: "127.0.0.1", port: 1, commandTimeout: .seconds(1), connectTimeout: .seconds(1))
            fd = try SharedMemoryCacheStore.create(maxEntries: 16, maxBytes: 1 << 20).get()
            a = try #require(SharedMemoryCacheStore(fd: fd))
            b = try #require(SharedMemoryCacheStore(fd: fd))
        }

        func close() {
            redis.close()
            _ = Glibc.close(fd)
        }
    }

    @Test func aClaimHeldLongerThanTheLeaseStaysItsLeaders() throws {
        let seg = try Segment()
        defer { seg.close() }
        let (a, b, redis) = (seg.a, seg.b, seg.redis)
        let lease = SharedMemoryCacheStore.claimLease.nanoseconds

        var worker = Worker()
        let t0 = 7 * second + 300_000_000
        #expect(a.claim("k", owner: "A-1", now: t0) == .won)
        worker.took(RemoteFlightPublisher(redis: redis, key: "k", owner: FlightOwner(instance: "A", flight: 1), claims: a), now: t0)
        // A second claim half a tick later shares the timer.
        #expect(a.claim("j", owner: "A-2", now: t0 + 500_000_000) == .won)
        worker.took(RemoteFlightPublisher(redis: redis, key: "j", owner: FlightOwner(instance: "A", flight: 2), claims: a), now: t0 + 500_000_000)

        // Three leases long, in 50 ms steps: the other worker always finds both taken.
        var now = t0 + 500_000_000
        while now < t0 + 3 * lease {
            now += 50_000_000
            worker.advance(to: now)
            #expect(b.claim("k", owner: "B-1", now: now) == .lost(owner: "A-1"))
            #expect(b.claim("j", owner: "B-2", now: now) == .lost(owner: "A-2"))
        }
        // The first flight ends; the timer keeps the second one's lease alone.
        // (The publisher ends its claim at the loop's clock; here the segment's clock is simulated,
        // so the claim is ended at that time too.)
        worker.publishers[0].end(status: 200, contentType: "application/json", body: [])
        #expect(a.endClaim("k", owner: "A-1", now: now, keep: false) == 0)
        #expect(b.claim("k", owner: "B-3", now: now) == .won)
        for _ in 0..<Int(2 * lease / 50_000_000) {
            now += 50_000_000
            worker.advance(to: now)
            #expect(b.claim("j", owner: "B-2", now: now) == .lost(owner: "A-2"))
        }
        worker.publishers[1].end(status: 200, contentType: "application/json", body: [])
        now += second
        worker.advance(to: now)
        #expect(worker.machine.state == .idle)  // nothing held: the timer lapses
    }

    @Test func aDeadLeadersClaimRunsOutOneLeaseAfterItsLastRefresh() throws {
        let seg = try Segment()
        defer { seg.close() }
        let (a, b, redis) = (seg.a, seg.b, seg.redis)
        let lease = SharedMemoryCacheStore.claimLease.nanoseconds

        var worker = Worker()
        #expect(a.claim("k", owner: "A-1", now: second) == .won)
        worker.took(RemoteFlightPublisher(redis: redis, key: "k", owner: FlightOwner(instance: "A", flight: 1), claims: a), now: second)
        var now = second
        while now < 6 * second {
            now += 10_000_000
            worker.advance(to: now)
        }
        // The process dies (no more ticks, nothing finished): its last refresh was at 6 s.
        worker.alive = false
        let lastRefresh: UInt64 = 6 * second
        while now < lastRefresh + lease - 10_000_000 {
            now += 10_000_000
            worker.advance(to: now)
            #expect(b.claim("k", owner: "B-1", now: now) == .lost(owner: "A-1"))
        }
        #expect(b.claim("k", owner: "B-1", now: lastRefresh + lease) == .won)
        worker.publishers[0].close()
    }
}

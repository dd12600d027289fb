// CoalescerMachine as a value: scenarios (lead, follow, go live, every ending, claims across
// processes, leaving) and seeded random interleavings checked against a world model — a flight is
// joined only while it runs, no-cache never follows, every follower hears exactly one ending that
// matches how its flight ended, and answers after the end come from the cache alone (its TTL).
import Testing
@testable import Engine

private typealias M = CoalescerMachine
private func rid(_ n: UInt64) -> M.RequestID { M.RequestID(n) }
private func arrival(_ n: UInt64, _ key: String = "k", stream: Bool = false, follow: Bool = true, lead: Bool = true) -> M.Arrival {
    M.Arrival(id: rid(n), key: key, isStream: stream, mayFollow: follow, mayLead: lead)
}

@Suite struct CoalescerMachineTests {
    @Test func firstLeadsOthersFollowAndHearTheAnswer() {
        var m = M()
        guard case .lead(let l, let f, publish: false) = m.arrived(arrival(1), acrossProcesses: false).first else {
            Issue.record("expected lead"); return
        }
        #expect(l == rid(1))
        #expect(m.arrived(arrival(2), acrossProcesses: false) == [.follow(rid(2), f, live: false)])
        #expect(m.arrived(arrival(3, stream: true), acrossProcesses: false) == [.follow(rid(3), f, live: false)])
        #expect(m.ended(f, .answered) == [.deliverAnswer(rid(2)), .deliverAnswer(rid(3))])
        #expect(m.runningFlights == 0)
    }

    @Test func keysWhoseHashesCollideNeverShareAFlight() {
        var m = M()
        let a = M.FlightKey("a", hash: 7), b = M.FlightKey("b", hash: 7)
        guard case .lead(_, let fa, _) = m.arrived(arrival(1, "a"), acrossProcesses: false, key: a).first,
              case .lead(_, let fb, _) = m.arrived(arrival(2, "b"), acrossProcesses: false, key: b).first else {
            Issue.record("each key leads its own flight"); return
        }
        #expect(fa != fb && m.runningFlights == 2)
        // The indexed flight ("a") is still joined; "b" runs unindexed and takes no joiners.
        #expect(m.arrived(arrival(3, "a"), acrossProcesses: false, key: a) == [.follow(rid(3), fa, live: false)])
        guard case .lead(_, let fb2, _) = m.arrived(arrival(4, "b"), acrossProcesses: false, key: b).first else {
            Issue.record("b never follows a's flight"); return
        }
        // b's flights ending does not unindex a's.
        _ = m.ended(fb, .answered)
        _ = m.ended(fb2, .answered)
        #expect(m.arrived(arrival(5, "a"), acrossProcesses: false, key: a) == [.follow(rid(5), fa, live: false)])
        #expect(m.ended(fa, .answered) == [.deliverAnswer(rid(3)), .deliverAnswer(rid(5))])
        #expect(m.runningFlights == 0)
        guard case .lead(_, let fb3, _) = m.arrived(arrival(6, "b"), acrossProcesses: false, key: b).first else {
            Issue.record("b leads once a ended"); return
        }
        #expect(m.arrived(arrival(7, "b"), acrossProcesses: false, key: b) == [.follow(rid(7), fb3, live: false)])
        #expect(M.FlightKey.hash("x") == M.FlightKey("x").hash && M.FlightKey.hash("x") != M.FlightKey.hash("y"))
    }

    /// The flight keys' hash is keyed: a client cannot compute which keys pile into one run of
    /// the index without the process's seed; the machine hashes with the seed it was given.
    @Test func theFlightKeysHashIsKeyedWithTheMachinesSeed() {
        #expect(M.FlightKey("x", seed: 1).hash == M.FlightKey.hash("x", seed: 1))
        #expect(M.FlightKey.hash("x", seed: 1) != M.FlightKey.hash("x", seed: 2))
        var m = M(seed: 0xDEAD_BEEF)
        guard case .lead(_, let f, _) = m.arrived(arrival(1, "x"), acrossProcesses: false).first else {
            Issue.record("expected lead"); return
        }
        // Another arrival with the same key, hashed with the same seed, joins the flight.
        #expect(m.arrived(arrival(2, "x"), acrossProcesses: false, key: M.FlightKey("x", seed: 0xDEAD_BEEF))
                == [.follow(rid(2), f, live: false)])
    }

    @Test func aLeaderBelongsToItsFlightUntilItEndsAFollowerUntilItLeaves() {
        var m = M()
        guard case .lead(_, let f, _) = m.arrived(arrival(1), acrossProcesses: false).first else { return }
        _ = m.arrived(arrival(2), acrossProcesses: false)
        #expect(m.belongsToFlight(rid(1)) && m.belongsToFlight(rid(2)))
        #expect(m.left(rid(2)) == [])
        #expect(!m.belongsToFlight(rid(2)))
        #expect(m.left(rid(1)) == [.abortLeader(rid(1))])
        #expect(m.belongsToFlight(rid(1)))  // it still leads until its session ends the flight
        _ = m.ended(f, .lost)
        #expect(!m.belongsToFlight(rid(1)))
    }

    @Test func anEndedFlightIsNeverJoined() {
        var m = M()
        guard case .lead(_, let f, _) = m.arrived(arrival(1), acrossProcesses: false).first else { return }
        _ = m.ended(f, .answered)
        guard case .lead(let l, let f2, _) = m.arrived(arrival(2), acrossProcesses: false).first else {
            Issue.record("a request after the end must lead anew"); return
        }
        #expect(l == rid(2) && f2 != f)
    }

    @Test func noCacheNeverFollowsButMayLead() {
        var m = M()
        guard case .lead(_, let f, _) = m.arrived(arrival(1), acrossProcesses: false).first else { return }
        #expect(m.arrived(arrival(2, follow: false), acrossProcesses: false) == [.proceedAlone(rid(2))])
        _ = m.ended(f, .answered)
        guard case .lead = m.arrived(arrival(3, follow: false), acrossProcesses: false).first else {
            Issue.record("no-cache may lead when nothing runs"); return
        }
        #expect(m.arrived(arrival(4, follow: false, lead: false), acrossProcesses: false).isEmpty == false)
    }

    @Test func noStoreGoesAlone() {
        var m = M()
        #expect(m.arrived(arrival(1, follow: false, lead: false), acrossProcesses: false) == [.proceedAlone(rid(1))])
        #expect(m.runningFlights == 0)
    }

    @Test func streamFollowersGoLivePlainOnesWait() {
        var m = M()
        guard case .lead(_, let f, _) = m.arrived(arrival(1, stream: true), acrossProcesses: false).first else { return }
        _ = m.arrived(arrival(2, stream: true), acrossProcesses: false)
        _ = m.arrived(arrival(3), acrossProcesses: false)
        #expect(m.streamStarted(f) == [.goLive(rid(2), f)])
        // A stream joining now goes live at once (replay of the recording so far).
        #expect(m.arrived(arrival(4, stream: true), acrossProcesses: false) == [.follow(rid(4), f, live: true)])
        m.recordingOverflowed(f)
        // Past the recording's cap a late stream joiner waits for the ending instead.
        #expect(m.arrived(arrival(5, stream: true), acrossProcesses: false) == [.follow(rid(5), f, live: false)])
        #expect(m.ended(f, .answered) == [.endLive(rid(2)), .deliverAnswer(rid(3)), .endLive(rid(4)), .deliverAnswer(rid(5))])
    }

    @Test func aFailedFlightFailsLiveFollowersAndErrsWaitingOnes() {
        var m = M()
        guard case .lead(_, let f, _) = m.arrived(arrival(1, stream: true), acrossProcesses: false).first else { return }
        _ = m.arrived(arrival(2, stream: true), acrossProcesses: false)
        _ = m.arrived(arrival(3), acrossProcesses: false)
        _ = m.streamStarted(f)
        #expect(m.ended(f, .failed) == [.failLive(rid(2)), .deliverError(rid(3))])
    }

    @Test func aLostSourceSendsWaitingFollowersBackToLookAgain() {
        var m = M()
        guard case .claim(let f, _) = m.arrived(arrival(1), acrossProcesses: true).first else { return }
        #expect(m.claimAnswered(f, .lost(owner: "p2")) == [.follow(rid(1), f, live: false), .readRemote(f, key: "k", owner: "p2")])
        _ = m.arrived(arrival(2, stream: true), acrossProcesses: true)
        #expect(m.ended(f, .lost) == [.stopRemote(f), .rejoin(rid(1)), .rejoin(rid(2))])
        // Looking again, the first leads.
        guard case .claim = m.arrived(arrival(1), acrossProcesses: true).first else { Issue.record("expected claim"); return }
    }

    @Test func claimWonPublishesUnavailableDoesNot() {
        var m = M()
        guard case .claim(let f, _) = m.arrived(arrival(1), acrossProcesses: true).first else { return }
        _ = m.arrived(arrival(2), acrossProcesses: true)  // waits in this process meanwhile
        #expect(m.claimAnswered(f, .won) == [.lead(rid(1), f, publish: true)])
        var m2 = M()
        guard case .claim(let g, _) = m2.arrived(arrival(1), acrossProcesses: true).first else { return }
        #expect(m2.claimAnswered(g, .unavailable) == [.lead(rid(1), g, publish: false)])
    }

    @Test func claimerThatLeftHandsTheFlightBack() {
        var m = M()
        guard case .claim(let f, _) = m.arrived(arrival(1), acrossProcesses: true).first else { return }
        _ = m.arrived(arrival(2), acrossProcesses: true)
        #expect(m.left(rid(1)).isEmpty)
        #expect(m.claimAnswered(f, .won) == [.releaseClaim(f, key: "k"), .rejoin(rid(2))])
        #expect(m.runningFlights == 0)
    }

    @Test func leaderLeavingWithFollowersContinuesAloneItAborts() {
        var m = M()
        guard case .lead(_, let f, _) = m.arrived(arrival(1), acrossProcesses: false).first else { return }
        _ = m.arrived(arrival(2), acrossProcesses: false)
        #expect(m.left(rid(1)) == [.continueHeadless(rid(1))])
        #expect(m.left(rid(2)).isEmpty)
        #expect(m.ended(f, .answered).isEmpty)
        var m2 = M()
        _ = m2.arrived(arrival(1), acrossProcesses: false)
        #expect(m2.left(rid(1)) == [.abortLeader(rid(1))])
    }

    @Test func aPublishingLeaderAsksForRemoteReadersBeforeAborting() {
        var m = M()
        guard case .claim(let f, _) = m.arrived(arrival(1, stream: true), acrossProcesses: true).first else { return }
        _ = m.claimAnswered(f, .won)
        #expect(m.left(rid(1)) == [.countRemoteFollowers(rid(1), f)])
        #expect(m.remoteFollowersCounted(f, 2) == [.continueHeadless(rid(1))])
        #expect(m.remoteFollowersCounted(f, 0) == [.abortLeader(rid(1))])
    }

    @Test func eventsForEndedFlightsAreIgnored() {
        var m = M()
        guard case .lead(_, let f, _) = m.arrived(arrival(1), acrossProcesses: false).first else { return }
        _ = m.ended(f, .answered)
        #expect(m.ended(f, .failed).isEmpty)
        #expect(m.streamStarted(f).isEmpty)
        #expect(m.claimAnswered(f, .won).isEmpty)
    }
}

// MARK: - randomized interleavings against a world model

private struct World {
    enum Answer: Equatable { case cache, flight(M.FlightID, M.Ending), alone, rejoined }
    struct Req {
        var key: String
        var isStream: Bool
        var noCache: Bool
        var arrivedAt: Int
        var flight: M.FlightID?
        var isLeader = false
        var isLive = false
        var endings = 0
        var left = false
    }
    struct FlightInfo {
        var key: String
        var endedAt: Int?
        var ending: M.Ending?
        var leader: M.RequestID?
        var claiming = true
        var streaming = false
    }

    var m = M()
    var now = 0
    let ttl = 5
    var acrossProcesses: Bool
    var cacheFreshUntil: [String: Int] = [:]
    var reqs: [M.RequestID: Req] = [:]
    var flights: [M.FlightID: FlightInfo] = [:]
    var next: UInt64 = 0
    var problems: [String] = []

    mutating func check(_ ok: Bool, _ what: @autoclosure () -> String) {
        if !ok { problems.append("t=\(now): " + what()) }
    }

    mutating func arrive(key: String, isStream: Bool, noCache: Bool, id: M.RequestID? = nil) {
        let id = id ?? { next += 1; return M.RequestID(next) }()
        if !noCache, let until = cacheFreshUntil[key], now < until {
            reqs[id] = Req(key: key, isStream: isStream, noCache: noCache, arrivedAt: now, flight: nil, endings: 1)
            return  // a hit: the cache is the source once a flight ended
        }
        var r = reqs[id] ?? Req(key: key, isStream: isStream, noCache: noCache, arrivedAt: now, flight: nil)
        r.flight = nil
        r.isLeader = false
        r.isLive = false
        reqs[id] = r
        apply(m.arrived(M.Arrival(id: id, key: key, isStream: isStream, mayFollow: !noCache, mayLead: true),
                        acrossProcesses: acrossProcesses), trigger: nil)
    }

    mutating func apply(_ actions: M.Actions, trigger: (M.FlightID, M.Ending)?) {
        for a in actions {
            switch a {
            case .claim(let f, let key):
                check(flights[f] == nil, "claim for a known flight \(f)")
                flights[f] = FlightInfo(key: key, leader: nil)
            case .releaseClaim(let f, _):
                check(flights[f] != nil, "release of unknown flight")
                flights[f]?.endedAt = now
                flights[f]?.ending = .lost
            case .lead(let id, let f, _):
                if flights[f] == nil { flights[f] = FlightInfo(key: reqs[id]!.key, leader: id) }
                flights[f]!.claiming = false
                flights[f]!.leader = id
                check(flights[f]!.endedAt == nil, "lead of ended flight")
                reqs[id]!.flight = f
                reqs[id]!.isLeader = true
            case .proceedAlone(let id):
                reqs[id]!.endings += 1  // answered by its own call, outside any flight
            case .follow(let id, let f, let live):
                check(!(reqs[id]!.noCache), "no-cache request \(id) follows")
                check(flights[f] != nil && flights[f]!.endedAt == nil, "\(id) follows \(f) which is not running")
                check(!live || reqs[id]!.isStream, "plain \(id) went live")
                reqs[id]!.flight = f
                reqs[id]!.isLive = live
            case .readRemote(let f, _, _):
                check(acrossProcesses, "readRemote without Redis")
                flights[f]?.claiming = false
            case .stopRemote:
                break
            case .goLive(let id, let f):
                check(reqs[id]!.isStream, "plain \(id) went live")
                check(reqs[id]!.flight == f, "\(id) goes live on a flight it does not follow")
                reqs[id]!.isLive = true
            case .endLive(let id), .failLive(let id), .deliverAnswer(let id), .deliverError(let id), .rejoin(let id):
                var r = reqs[id]!
                check(!r.left, "\(id) hears an ending after it left")
                check(!r.isLeader, "leader \(id) hears its own ending")
                if let (f, ending) = trigger {
                    check(r.flight == f, "\(id) hears the ending of \(f) but follows \(String(describing: r.flight))")
                    switch a {
                    case .endLive: check(ending == .answered && r.isLive, "endLive for \(ending) live=\(r.isLive)")
                    case .deliverAnswer: check(ending == .answered && !r.isLive, "deliverAnswer for \(ending)")
                    case .failLive: check(ending != .answered && r.isLive, "failLive for \(ending)")
                    case .deliverError: check(ending == .failed && !r.isLive, "deliverError for \(ending)")
                    default: check(ending == .lost && !r.isLive, "rejoin for \(ending)")
                    }
                }
                if case .rejoin = a {
                    r.flight = nil
                    reqs[id] = r
                    arrive(key: r.key, isStream: r.isStream, noCache: r.noCache, id: id)
                } else {
                    r.endings += 1
                    reqs[id] = r
                }
            case .continueHeadless, .abortLeader, .countRemoteFollowers:
                break
            }
        }
    }

    mutating func end(_ f: M.FlightID, _ e: M.Ending) {
        guard var info = flights[f], info.endedAt == nil else { return }
        info.endedAt = now
        info.ending = e
        flights[f] = info
        if e == .answered { cacheFreshUntil[info.key] = now + ttl }
        if let l = info.leader { reqs[l]!.endings += 1 }
        apply(m.ended(f, e), trigger: (f, e))
    }

    mutating func step(_ rng: inout TestRNG) {
        let running = flights.filter { $0.value.endedAt == nil }.map(\.key).sorted { $0.raw < $1.raw }
        switch Int.random(in: 0..<10, using: &rng) {
        case 0, 1, 2:
            arrive(key: ["a", "b"].randomElement(using: &rng)!, isStream: Bool.random(using: &rng),
                   noCache: Int.random(in: 0..<5, using: &rng) == 0)
        case 3:
            if let f = running.filter({ flights[$0]!.claiming }).randomElement(using: &rng) {
                let c: M.Claim = [.won, .unavailable, .lost(owner: "other")].randomElement(using: &rng)!
                // Only a claim whose claimer left yields endings (rejoin): that flight is lost.
                apply(m.claimAnswered(f, c), trigger: (f, .lost))
            }
        case 4:
            if let f = running.filter({ !flights[$0]!.claiming }).randomElement(using: &rng) {
                flights[f]!.streaming = true
                apply(m.streamStarted(f), trigger: nil)
            }
        case 5:
            if let f = running.filter({ !flights[$0]!.claiming }).randomElement(using: &rng) {
                end(f, [.answered, .failed, .lost].randomElement(using: &rng)!)
            }
        case 6:
            if let f = running.randomElement(using: &rng) { m.recordingOverflowed(f) }
        case 7:
            let waiting = reqs.filter { $0.value.endings == 0 && !$0.value.left }.map(\.key).sorted { $0.raw < $1.raw }
            if let id = waiting.randomElement(using: &rng) {
                reqs[id]!.left = !reqs[id]!.isLeader
                var acts = m.left(id)
                if case .countRemoteFollowers(_, let f)? = acts.first {
                    // Redis answers with how many readers other processes started.
                    check(acrossProcesses, "counting remote followers without Redis")
                    acts = m.remoteFollowersCounted(f, Int.random(in: 0...1, using: &rng))
                }
                for a in acts {
                    switch a {
                    case .abortLeader(let l):
                        // The leader aborts: its flight fails.
                        if let f = reqs[l]!.flight { end(f, .failed) }
                    case .continueHeadless: break
                    default: check(false, "left() answered \(a)")
                    }
                }
            }
        default:
            now += 1
        }
    }

    mutating func finish() {
        // Settle: every claim answered, every flight ended; then every request has one ending.
        while let f = flights.first(where: { $0.value.endedAt == nil })?.key {
            if flights[f]!.claiming {
                apply(m.claimAnswered(f, .unavailable), trigger: (f, .lost))
                if flights[f]!.endedAt == nil, flights[f]!.claiming { flights[f]!.endedAt = now }
            } else {
                end(f, .answered)
            }
        }
        for (id, r) in reqs where !r.left {
            check(r.endings == 1, "\(id) heard \(r.endings) endings (leader=\(r.isLeader))")
        }
        let left = m.runningFlights
        check(left == 0, "flights left in the table: \(left)")
    }
}

@Suite struct CoalescerMachineRandomTests {
    @Test(arguments: 0..<200)
    func invariantsHoldUnderRandomInterleavings(seed: Int) {
        var rng = TestRNG(seed: UInt64(seed) &* 7919)
        var w = World(acrossProcesses: seed % 2 == 0)
        for _ in 0..<300 { w.step(&rng) }
        w.finish()
        #expect(w.problems.isEmpty, "seed \(seed): \(w.problems.prefix(5))")
    }
}

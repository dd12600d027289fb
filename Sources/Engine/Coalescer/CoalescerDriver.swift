// CoalescerDriver: performs CoalescerMachine's actions for this process (style C). Sessions and
// Redis readers report facts; each becomes an event, queued while an event is being handled (no
// re-entry: a session that answers inside an action's call only adds to the queue), then `run`
// performs the machine's actions in one switch. Decisions for a session reach it as a queued
// session event (RequestSession.post), never as a nested call into its half-finished state.
// Owns: the machine, the Flight records (bytes, publisher, reader) in the slots the machine's
// FlightIDs name, the sessions taking part by id (strongly: a headless leader lives until its
// flight ends), and the one lease Timer that refreshes every claim this process holds
// (ClaimLeaseMachine). Loop-confined; one per runtime.
import Reactor

final class CoalescerDriver: RemoteFlightReaderDelegate {
    typealias RequestID = CoalescerMachine.RequestID
    typealias FlightID = CoalescerMachine.FlightID

    // STYLE-EXCEPTION: unowned(unsafe): the runtime owns its CoalescerDriver and outlives it;
    // checked `unowned` paid an atomic retain and release on each of the per-request reads.
    private unowned(unsafe) let runtime: EngineRuntime
    /// Its flight keys' hash is keyed at random per process (CoalescerMachine.FlightKey.hash).
    private var machine = CoalescerMachine(seed: UInt64.random(in: .min ... .max))
    /// The sessions taking part, by request id (IDTable: ids counted out by `newRequestID`).
    private var sessions = IDTable<RequestSession>()
    /// Flight records by the slot of their FlightID (a record whose id is not the machine's
    /// flight in that slot is over: the next flight in the slot replaces it).
    private var flights: [Flight?] = []
    private var leases = ClaimLeaseMachine(interval: RemoteFlightPublisher.refreshInterval)
    /// Made with the first claim this process holds.
    private var leaseTimer: Timer?
    private var nextRequest: UInt64 = 0

    private enum Event {
        case arrived(CoalescerMachine.Arrival)
        case claimAnswered(FlightID, CoalescerMachine.Claim)
        case streamStarted(FlightID)
        case ended(FlightID, Flight.Outcome)
        case lost(FlightID)
        case left(RequestID)
        case remoteFollowersCounted(FlightID, Int)
    }
    private var queue = EventQueue<Event>()

    init(runtime: EngineRuntime) { self.runtime = runtime }

    /// The runtime stops: the lease timer goes (claims still held run out with their lease).
    func stop() {
        leaseTimer?.close()
        leaseTimer = nil
    }

    func newRequestID() -> RequestID {
        nextRequest += 1
        return RequestID(nextRequest)
    }

    // MARK: facts from sessions

    /// `s` missed the cache: it will hear lead / follow / alone through its event queue.
    func arrive(_ s: RequestSession, _ a: CoalescerMachine.Arrival) {
        sessions[a.id.raw] = s
        post(.arrived(a))
    }

    /// `id`'s client left, or its session ended, before its flight did.
    func left(_ id: RequestID) { post(.left(id)) }

    /// The leader's upstream answered: publish the head; an SSE 200 starts the followers' streams.
    func leaderHead(_ f: FlightID, status: Int, contentType: String, isStream: Bool) {
        guard let fl = flight(f), isStream else { return }
        // A plain answer needs no head entry: its end entry carries status, type and body.
        fl.publisher?.head(status: status, contentType: contentType)
        post(.streamStarted(f))
    }

    /// Whole SSE events the leader relayed (usage chunk included): record, publish, fan out.
    /// An array, not bytes: the flight's recording of a stream's first read is that array itself
    /// (Flight.record), not a copy.
    func leaderEvents(_ f: FlightID, _ events: [UInt8]) {
        guard events.count > 0, let fl = flight(f) else { return }
        if let p = fl.publisher {
            events.withUnsafeBytes { p.chunk($0, recorded: fl.recorded, recordingEnds: fl.wouldOverflow(events.count)) }
        }
        relay(fl, events)
    }

    /// The leader's request ended (answered, failed, or its client left with nobody following) at
    /// `now`.
    func leaderEnded(_ f: FlightID, _ o: consuming Flight.Outcome, now: UInt64 = Loop.nowNanos()) {
        guard let fl = flight(f) else { return }
        if let p = fl.publisher {
            fl.publisher = nil
            switch o {
            case .buffered(let st, let ct, let body): p.end(status: st, contentType: ct, body: body, now: now)
            case .streamed: p.end(status: 200, contentType: "text/event-stream", body: nil, recorded: fl.recorded, now: now)
            case .failed(let st, let body, _): p.fail(status: st, body: body, now: now)
            case .abandoned: p.abandon(now: now)
            }
        }
        post(.ended(f, o))
    }

    private func relay(_ fl: Flight, _ events: [UInt8]) {
        if !fl.record(events) { machine.recordingOverflowed(fl.id) }
        // Each live follower's copy carries its own id and created (the recording keeps the source's).
        for f in fl.live { f.stamp.stamped(events: events).withUnsafeBytes { f.session.flightEvents($0) } }
    }

    /// The id and created of `s`'s copy of a flight's answer (the session's own replay stamp).
    private func stamp(for s: RequestSession) -> ReplyStamp { s.replyStamp }

    // MARK: the queue

    /// Consumed: the event (an ending's outcome, with the answer) moves into the queue.
    private func post(_ e: consuming Event) {
        guard queue.append(e) else { return }
        while let e = queue.next() { handle(e) }
    }

    private func handle(_ e: Event) {
        switch e {
        case .arrived(let a):
            run(machine.arrived(a, acrossProcesses: runtime.redis != nil), outcome: nil)
        case .claimAnswered(let f, let c):
            run(machine.claimAnswered(f, c), outcome: nil)
        case .streamStarted(let f):
            run(machine.streamStarted(f), outcome: nil)
        case .ended(let f, let o):
            finishFlight(f)
            run(machine.ended(f, o.ending), outcome: o)
        case .lost(let f):
            finishFlight(f)
            run(machine.ended(f, .lost), outcome: nil)
        case .remoteFollowersCounted(let f, let n):
            run(machine.remoteFollowersCounted(f, n), outcome: nil)
        case .left(let id):
            run(machine.left(id), outcome: nil)
            // A follower that left is done with us; a leader stays until its flight ends (the
            // machine keeps it in its flight until then).
            if !machine.belongsToFlight(id), let s = sessions.removeValue(for: id.raw) {
                for case let fl? in flights where !fl.live.isEmpty { fl.live.removeAll { $0.session === s } }
            }
        }
    }

    /// The flight's records go (its leader, if in this process, is done with us too).
    private func finishFlight(_ f: FlightID) {
        guard let fl = flight(f) else { return }
        flights[f.slot] = nil
        if let l = fl.leader { sessions[l.raw] = nil }
        fl.reader?.stop()
        fl.reader = nil
        fl.publisher?.close()
        fl.publisher = nil
        fl.live.removeAll()
    }

    // MARK: the one place that performs actions

    private func run(_ actions: CoalescerMachine.Actions, outcome: Flight.Outcome?) {
        for a in actions {
            switch a {
            case .claim(let f, let key):
                let fl = Flight(id: f, key: key)
                setFlight(fl)
                guard let redis = runtime.redis else {
                    post(.claimAnswered(f, .unavailable))
                    continue
                }
                let owner = ownerName(f)
                if let claims = runtime.sharedClaims {
                    // The claim is in shared memory; Redis only carries answers to readers, so
                    // without it nobody coordinates.
                    guard redis.isConnected else {
                        post(.claimAnswered(f, .unavailable))
                        continue
                    }
                    switch claims.claim(key, ownerName: owner, now: Loop.nowNanos()) {
                    case .won: post(.claimAnswered(f, .won))
                    case .lost(let o): post(.claimAnswered(f, .lost(owner: o)))
                    case .unavailable: post(.claimAnswered(f, .unavailable))
                    }
                    continue
                }
                RemoteFlightPublisher.claim(redis: redis, key: key, owner: owner.string) { [weak self] c in
                    self?.post(.claimAnswered(f, c))
                }
            case .releaseClaim(let f, let key):
                if let claims = runtime.sharedClaims {
                    claims.releaseClaim(key, owner: ownerName(f), now: Loop.nowNanos())
                } else if let redis = runtime.redis {
                    RemoteFlightPublisher.release(redis: redis, key: key, owner: ownerName(f).string)
                }
            case .lead(let id, let f, let publish):
                let fl: Flight
                if let known = flight(f) {
                    fl = known
                } else {
                    fl = Flight(id: f, key: key(of: f))
                    setFlight(fl)
                }
                fl.leader = id
                if publish, let redis = runtime.redis, fl.publisher == nil, !fl.key.isEmpty {
                    fl.publisher = RemoteFlightPublisher(redis: redis, key: fl.key, owner: ownerName(f),
                                                         claims: runtime.sharedClaims)
                    performLease(leases.taken(now: Loop.nowNanos()))
                }
                sessions[id.raw]?.post(.flight(.lead(f)))
            case .proceedAlone(let id):
                sessions.removeValue(for: id.raw)?.post(.flight(.alone))
            case .follow(let id, let f, let live):
                guard let s = sessions[id.raw] else { continue }
                let fl = flight(f)
                let st = stamp(for: s)
                if live, let fl { fl.live.append(Flight.LiveFollower(session: s, stamp: st)) }
                s.post(.flight(.follow(live: live, recorded: live ? st.stamped(events: fl?.recorded ?? []) : [])))
            case .readRemote(let f, let key, let owner):
                guard let redis = runtime.redis, let fl = flight(f) else {
                    post(.lost(f))
                    continue
                }
                let r = RemoteFlightReader(redis: redis, loop: runtime.loop, key: key, owner: owner, flight: f, delegate: self,
                                           claims: runtime.sharedClaims)
                fl.reader = r
                r.start()
            case .stopRemote(let f):
                flight(f)?.reader?.stop()
            case .goLive(let id, let f):
                guard let s = sessions[id.raw], let fl = flight(f) else { continue }
                let st = stamp(for: s)
                fl.live.append(Flight.LiveFollower(session: s, stamp: st))
                s.post(.flight(.goLive(recorded: st.stamped(events: fl.recorded))))
            case .endLive(let id), .failLive(let id), .deliverAnswer(let id), .deliverError(let id):
                guard let s = sessions.removeValue(for: id.raw) else { continue }
                s.post(.flight(.ended(delivery(for: a, outcome))))
            case .rejoin(let id):
                sessions.removeValue(for: id.raw)?.post(.flight(.rejoin))
            case .continueHeadless(let id):
                sessions[id.raw]?.post(.flight(.continueHeadless))
            case .abortLeader(let id):
                sessions[id.raw]?.post(.flight(.abort))
            case .countRemoteFollowers(_, let f):
                guard let p = flight(f)?.publisher else {
                    post(.remoteFollowersCounted(f, 0))
                    continue
                }
                p.countReaders { [weak self] n in self?.post(.remoteFollowersCounted(f, n)) }
            }
        }
    }

    private func delivery(for a: CoalescerMachine.Action, _ o: Flight.Outcome?) -> RequestMachine.FlightDelivery {
        switch a {
        case .endLive: return .endLive
        case .failLive:
            if case .failed(_, let body, _)? = o { return .failLive(errorBody: body) }
            return .failLive(errorBody: EngineError(.badGateway, "The request this one shared broke off in the middle of the stream.", source: .upstream).jsonBody)
        case .deliverAnswer: return .answer(o ?? .failed(EngineError(.badGateway, "The shared answer was lost.", source: .upstream)))
        default:
            return .answer(o ?? .failed(EngineError(.badGateway, "The request this one shared failed.", source: .upstream)))
        }
    }

    private func key(of f: FlightID) -> String { machine.key(of: f) ?? "" }

    // MARK: flight records and leases

    /// The record of flight `f`, while it is the one in its slot.
    private func flight(_ f: FlightID) -> Flight? {
        let i = f.slot
        guard i < flights.count, let fl = flights[i], fl.id == f else { return nil }
        return fl
    }

    private func setFlight(_ fl: Flight) {
        let i = fl.id.slot
        while flights.count <= i { flights.append(nil) }
        flights[i] = fl
    }

    private func performLease(_ a: ClaimLeaseMachine.Action) {
        switch a {
        case .none:
            break
        case .arm(let after):
            armLeaseTimer(after: after)
        case .refreshAll(let after):
            let now = Loop.nowNanos()
            for case let fl? in flights { fl.publisher?.refreshLease(now: now) }
            armLeaseTimer(after: after)
        }
    }

    private func armLeaseTimer(after d: Duration) {
        let t = leaseTimer ?? Timer(loop: runtime.loop)
        if leaseTimer == nil {
            t.onFire = { [unowned self] in
                var held = 0
                for case let fl? in self.flights where fl.publisher.map({ !$0.isDone }) == true { held += 1 }
                self.performLease(self.leases.fired(now: Loop.nowNanos(), held: held))
            }
            leaseTimer = t
        }
        t.schedule(after: d)
    }

    /// The leader's name in claims and Redis: this process and the flight (a value; its bytes are
    /// written on the stack when a claim reads them, a String only for Redis).
    private func ownerName(_ f: FlightID) -> FlightOwner { FlightOwner(instance: runtime.instanceId, flight: f.raw) }

    // MARK: RemoteFlightReaderDelegate (another process leads)

    func remoteHead(_ r: RemoteFlightReader, status: Int, contentType: String) {
        guard let fl = flight(r.flight) else { return }
        fl.remote.contentType = contentType
        if status == 200 && contentType.hasPrefix("text/event-stream") {
            fl.remote.relay = StreamRelay(includeUsage: true, records: true, maxEventBytes: runtime.config.vllm.maxEventBytes)
            post(.streamStarted(r.flight))
        }
    }

    func remoteBody(_ r: RemoteFlightReader, _ bytes: UnsafeRawBufferPointer) {
        // Only a stream has body entries (a plain answer comes whole in its end entry).
        guard let fl = flight(r.flight), fl.remote.isStream else { return }
        // The leader published whole events; the scanner re-checks them (this process trusts
        // nothing it did not parse itself) and records them for followers that are not live.
        _ = fl.remote.relay?.read(bytes)
        if let events = fl.remote.relay?.events { relay(fl, events) }
    }

    func remoteEnd(_ r: RemoteFlightReader, status: Int, contentType: String, body: [UInt8]?) {
        guard let fl = flight(r.flight) else { return }
        if let body {
            post(.ended(r.flight, .buffered(status: status, contentType: contentType, body: body)))
            return
        }
        guard let relay = fl.remote.relay, relay.sawDone, !relay.sawError, relay.scanner.invalidEvents == 0 else {
            post(.ended(r.flight, .failed(EngineError(.badGateway, "The request this one shared ended without a complete answer.", source: .upstream))))
            return
        }
        post(.ended(r.flight, .streamed(relay.answer)))
    }

    func remoteFailed(_ r: RemoteFlightReader, status: Int, body: [UInt8]) {
        post(.ended(r.flight, .failed(status: status >= 400 ? status : 502, body: body, retryAfterSeconds: nil)))
    }

    func remoteLost(_ r: RemoteFlightReader) {
        // A stream whose [DONE] arrived is complete even if its leader died before the end entry.
        if let fl = flight(r.flight), fl.remote.relay?.sawDone == true {
            remoteEnd(r, status: 200, contentType: fl.remote.contentType, body: nil)
            return
        }
        post(.lost(r.flight))
    }
}

// CoalescerMachine: single-flight for one process, as a pure value (style B). One table of the
// flights that run now, keyed by cache key; requests arrive, lead or follow, and leave; flights
// start streaming and end. Each event returns the actions the CoalescerDriver performs (tell a
// session to lead, to follow, to go live, what its flight's ending means for it, talk to Redis).
// Pure: no imports, no I/O.
//
// The rules it exists for (issue 9), checked as invariants by the randomized tests:
//   - A request joins a flight only while that flight runs: an ended flight leaves the table in
//     the same step, so later arrivals lead anew (and the cache, with its TTL, is the only store).
//   - `mayFollow == false` (Cache-Control no-cache / no-store) never follows; no-store never leads.
//   - Every follower hears exactly one ending: the answer, the leader's error, or `rejoin` (the
//     source vanished before it sent anything: look again, lead or follow afresh). A follower that
//     went live and whose flight did not end with a complete answer gets `failLive`, never `endLive`.
//   - Only stream followers go live, and only while the flight's recording can still replay.
//
//   arrived ─▶ (no flight) claiming ─claim: us / no Redis─▶ leading ──ended──▶ (removed)
//                  │                 └claim: other process─▶ followingRemote ──ended/lost──▶ (removed)
//              (flight runs) ─▶ member (waiting ─streamStarted─▶ live) ─▶ one ending each
//
// The table is a slab: a flight lives in one slot from its first arrival to its removal, its
// FlightID names the slot (and a sequence number, so ids never repeat), and every event after the
// arrival finds it by that id and changes it in place. The only lookup by cache key is the
// arrival's (`running`: key → id), and the key's hash is computed once per flight.

public struct CoalescerMachine: Sendable {
    /// A request, as the driver names it.
    public struct RequestID: Hashable, Sendable, CustomStringConvertible {
        public let raw: UInt64
        public init(_ raw: UInt64) { self.raw = raw }
        public var description: String { "r\(raw)" }
    }

    /// One flight's identity: keys repeat (a new flight after the last ended), flights do not.
    /// The machine's ids carry their slot in the low bits and a sequence number above them.
    public struct FlightID: Hashable, Sendable, CustomStringConvertible {
        public let raw: UInt64
        public init(_ raw: UInt64) { self.raw = raw }
        init(sequence: UInt64, slot: Int) { raw = sequence << FlightID.slotBits | UInt64(slot) }
        static let slotBits: UInt64 = 24
        /// The slot of the table this flight occupies (meaningful for ids the machine made).
        var slot: Int { Int(truncatingIfNeeded: raw & (1 << FlightID.slotBits - 1)) }
        public var description: String { "f\(raw)" }
    }

    public struct Arrival: Equatable, Sendable {
        public var id: RequestID
        public var key: String
        /// The client wants a stream (may follow a live stream).
        public var isStream: Bool
        /// False with Cache-Control no-cache or no-store: this request never follows a flight.
        public var mayFollow: Bool
        /// False with no-store: its answer is shared with nobody.
        public var mayLead: Bool
        public init(id: RequestID, key: String, isStream: Bool, mayFollow: Bool = true, mayLead: Bool = true) {
            self.id = id
            self.key = key
            self.isStream = isStream
            self.mayFollow = mayFollow
            self.mayLead = mayLead
        }
    }

    /// What the Redis claim said.
    public enum Claim: Equatable, Sendable {
        case won
        /// Another process leads (its owner id names its answer stream).
        case lost(owner: String)
        /// Redis did not answer: lead without cross-process coalescing.
        case unavailable
    }

    /// How a flight ended.
    public enum Ending: Equatable, Sendable {
        /// A complete answer (a whole response of any status, or a stream that ended with [DONE]).
        case answered
        /// The leader's request failed (error JSON, or a stream that broke or ended without [DONE]).
        case failed
        /// The source vanished without a verdict (another process died, Redis failed): followers
        /// that have nothing yet look again; live ones fail.
        case lost
    }

    enum StreamPhase: Equatable, Sendable {
        /// No SSE head yet (or a plain answer): followers wait for the ending.
        case notStarted
        /// Streaming; the driver's recording can replay everything so far to a late joiner.
        case live
        /// Streaming, but the recording overflowed: late joiners wait for the ending.
        case unreplayable
    }

    struct Member: Equatable, Sendable {
        var id: RequestID
        var isStream: Bool
        var isLive: Bool
    }

    enum Phase: Equatable, Sendable {
        /// The first arrival (`leader`, nil once it left) asks Redis who leads. Next: leading,
        /// followingRemote, or removed (the claimer left: members rejoin).
        case claiming(leader: RequestID?, leaderIsStream: Bool, leaderMayFollow: Bool)
        /// `leader` calls upstream in this process; `publishes`: its answer also goes to Redis for
        /// other processes' followers. Next: removed (ended).
        case leading(leader: RequestID, stream: StreamPhase, publishes: Bool)
        /// Another process calls upstream; the driver reads its answer from Redis. Next: removed.
        case followingRemote(owner: String, stream: StreamPhase)
    }

    struct Flight: Equatable, Sendable {
        var id: FlightID
        var key: FlightKey
        var phase: Phase
        var members: [Member]
    }

    /// A cache key with its 64-bit hash, computed once per arrival: the running-flights index is
    /// keyed by the hash alone (an IDTable: no SipHash over the key's 64 bytes, then again over
    /// the Int), and the text confirms a match.
    struct FlightKey: Equatable, Sendable {
        let text: String
        let hash: UInt64
        init(_ text: String, seed: UInt64 = 0) {
            self.text = text
            hash = FlightKey.hash(text, seed: seed)
        }
        init(_ text: String, hash: UInt64) {
            self.text = text
            self.hash = hash
        }
        static func == (a: FlightKey, b: FlightKey) -> Bool { a.hash == b.hash && a.text == b.text }

        /// Eight bytes a step, each step a bijection of h for a given word, then murmur3's
        /// finalizer (the mix of CSharedCache's sc_hash, which this pure file cannot call): a
        /// cache key is 64 hex digits, ~40 instructions. Keyed with the process's `seed`: a
        /// cache key digests what a client sent, and with a hash anyone can compute a client
        /// could grind prompts whose keys pile into one probe run of the index. A collision only
        /// costs coalescing (`arrived`), never correctness.
        static func hash(_ s: String, seed: UInt64 = 0) -> UInt64 {
            var s = s
            return s.withUTF8 { p in
                let n = p.count
                var h: UInt64 = (1469598103934665603 ^ seed) ^ (UInt64(n) &* 0x9E37_79B9_7F4A_7C15)
                var i = 0
                let raw = UnsafeRawBufferPointer(p)
                while i + 8 <= n {
                    h = (h ^ raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0x9E37_79B9_7F4A_7C15
                    h ^= h >> 32
                    i += 8
                }
                while i < n {
                    h = (h ^ UInt64(p[i])) &* 1099511628211
                    i += 1
                }
                h ^= h >> 33
                h &*= 0xFF51_AFD7_ED55_8CCD
                h ^= h >> 33
                h &*= 0xC4CE_B9FE_1A85_EC53
                h ^= h >> 33
                return h
            }
        }
    }

    public enum Action: Equatable, Sendable {
        /// Ask Redis to lead this key across processes; answer with `claimAnswered`.
        case claim(FlightID, key: String)
        /// Give back a lock won for a flight nobody wants any more.
        case releaseClaim(FlightID, key: String)
        /// This request calls upstream for the flight; `publish`: write its answer to Redis for
        /// other processes (the lock is ours).
        case lead(RequestID, FlightID, publish: Bool)
        /// This request calls upstream alone, outside any flight (no-cache arrival, no-store).
        case proceedAlone(RequestID)
        /// This request follows the flight; `live`: write the SSE head and the recording so far.
        case follow(RequestID, FlightID, live: Bool)
        /// Read another process's answer for this flight from Redis.
        case readRemote(FlightID, key: String, owner: String)
        /// Stop reading Redis for this flight.
        case stopRemote(FlightID)
        /// The flight's stream started: this follower writes the SSE head and relays from now on.
        case goLive(RequestID, FlightID)
        /// Live follower: the stream completed; end the client's stream.
        case endLive(RequestID)
        /// Live follower: the stream broke; one SSE error event, then close.
        case failLive(RequestID)
        /// Waiting follower: answer with the flight's answer, converted to this client's form.
        case deliverAnswer(RequestID)
        /// Waiting follower: answer with the leader's error.
        case deliverError(RequestID)
        /// Waiting follower: the source vanished; look again (lead or follow afresh).
        case rejoin(RequestID)
        /// The leader's client left but followers still want the answer: keep generating.
        case continueHeadless(RequestID)
        /// The leader's client left and nobody follows: abort the upstream call.
        case abortLeader(RequestID)
        /// The leader's client left, nobody here follows, but other processes may: count their
        /// readers; answer with `remoteFollowersCounted`.
        case countRemoteFollowers(RequestID, FlightID)
    }

    /// What one event asks the driver to do, in order (none or one, usually: held inline).
    public typealias Actions = ActionList<Action>

    /// The flights that run now, by slot (nil: free); `free` lists the free slots.
    private var slots: [Flight?] = []
    private var free: [Int] = []
    /// The running flight of each key, by the key's hash (looked up only by arrivals; the flight's
    /// key text confirms it). A flight whose key's hash another key's flight holds is not in it:
    /// it runs unindexed, and nobody joins it.
    private var running = IDTable<FlightID>()
    /// Which flight each leader or member belongs to, by request id (ids the driver counts out:
    /// IDTable's unseeded hash, not Dictionary's SipHash, for these few operations per request).
    private var flightOf = IDTable<FlightID>()
    private var nextSequence: UInt64 = 0
    /// Keys the flight keys' hash (FlightKey.hash): the driver draws it at random, tests pick it.
    private let seed: UInt64

    public init(seed: UInt64 = 0) { self.seed = seed }

    public var runningFlights: Int { slots.count - free.count }

    /// The key of a running flight.
    public func key(of f: FlightID) -> String? { slot(of: f).map { slots[$0]!.key.text } }

    /// Whether `id` leads or follows a running flight (a leader whose client left still leads it
    /// until it ends).
    public func belongsToFlight(_ id: RequestID) -> Bool { flightOf.contains(id.raw) }

    // MARK: events

    /// A request missed the cache (or skipped it): lead, follow, or go alone.
    public mutating func arrived(_ a: Arrival, acrossProcesses: Bool) -> Actions {
        arrived(a, acrossProcesses: acrossProcesses, key: FlightKey(a.key, seed: seed))
    }

    /// `arrived` with the key's hash given (the tests make two keys collide).
    mutating func arrived(_ a: Arrival, acrossProcesses: Bool, key: FlightKey) -> Actions {
        precondition(!flightOf.contains(a.id.raw), "\(a.id) arrived twice")
        if let fid = running[key.hash], let i = slot(of: fid), slots[i]!.key.text == key.text {
            guard a.mayFollow else { return [.proceedAlone(a.id)] }
            let live: Bool
            switch slots[i]!.phase {
            case .leading(_, .live, _), .followingRemote(_, .live): live = a.isStream
            default: live = false
            }
            slots[i]!.members.append(Member(id: a.id, isStream: a.isStream, isLive: live))
            flightOf[a.id.raw] = fid
            return [.follow(a.id, fid, live: live)]
        }
        guard a.mayLead else { return [.proceedAlone(a.id)] }
        let phase: Phase = acrossProcesses
            ? .claiming(leader: a.id, leaderIsStream: a.isStream, leaderMayFollow: a.mayFollow)
            : .leading(leader: a.id, stream: .notStarted, publishes: false)
        let id = addFlight(key, phase)
        flightOf[a.id.raw] = id
        return acrossProcesses ? [.claim(id, key: a.key)] : [.lead(a.id, id, publish: false)]
    }

    /// Redis answered the claim of flight `fid`.
    public mutating func claimAnswered(_ fid: FlightID, _ claim: Claim) -> Actions {
        guard let i = slot(of: fid), case .claiming(let leader, let leaderIsStream, let leaderMayFollow) = slots[i]!.phase else { return [] }
        guard let leader else {
            // The claimer left while asking: nobody calls upstream for this flight. Give the lock
            // back and let the members look again (the first of them leads).
            let f = removeFlight(i)
            var out: Actions = claim == .won ? [.releaseClaim(fid, key: f.key.text)] : []
            for m in f.members { out.append(.rejoin(m.id)) }
            return out
        }
        switch claim {
        case .won, .unavailable:
            slots[i]!.phase = .leading(leader: leader, stream: .notStarted, publishes: claim == .won)
            return [.lead(leader, fid, publish: claim == .won)]
        case .lost(let owner):
            var out: Actions = []
            if leaderMayFollow {
                // The claimer becomes a member like any other (it may be a stream client).
                slots[i]!.members.insert(Member(id: leader, isStream: leaderIsStream, isLive: false), at: 0)
                out.append(.follow(leader, fid, live: false))
            } else {
                // A no-cache claimer wants an answer made for it: it calls upstream itself.
                flightOf[leader.raw] = nil
                out.append(.proceedAlone(leader))
            }
            guard !slots[i]!.members.isEmpty else {
                removeFlight(i)
                return out
            }
            slots[i]!.phase = .followingRemote(owner: owner, stream: .notStarted)
            out.append(.readRemote(fid, key: slots[i]!.key.text, owner: owner))
            return out
        }
    }

    /// The flight's answer is an SSE stream (the leader's upstream head, or the remote head).
    public mutating func streamStarted(_ fid: FlightID) -> Actions {
        guard let i = slot(of: fid) else { return [] }
        switch slots[i]!.phase {
        case .leading(let l, .notStarted, let p): slots[i]!.phase = .leading(leader: l, stream: .live, publishes: p)
        case .followingRemote(let o, .notStarted): slots[i]!.phase = .followingRemote(owner: o, stream: .live)
        default: return []
        }
        var out: Actions = []
        for m in slots[i]!.members.indices where slots[i]!.members[m].isStream {
            slots[i]!.members[m].isLive = true
            out.append(.goLive(slots[i]!.members[m].id, fid))
        }
        return out
    }

    /// The recording outgrew its cap: late joiners can no longer be replayed the stream so far.
    public mutating func recordingOverflowed(_ fid: FlightID) {
        guard let i = slot(of: fid) else { return }
        switch slots[i]!.phase {
        case .leading(let l, .live, let p): slots[i]!.phase = .leading(leader: l, stream: .unreplayable, publishes: p)
        case .followingRemote(let o, .live): slots[i]!.phase = .followingRemote(owner: o, stream: .unreplayable)
        default: break
        }
    }

    /// The flight ended. It leaves the table now: nobody joins it any more.
    public mutating func ended(_ fid: FlightID, _ ending: Ending) -> Actions {
        guard let i = slot(of: fid) else { return [] }
        let f = removeFlight(i)
        if f.members.isEmpty {
            if case .followingRemote = f.phase { return [.stopRemote(fid)] }
            return []
        }
        var out: Actions = []
        if case .followingRemote = f.phase { out.append(.stopRemote(fid)) }
        for m in f.members {
            switch (ending, m.isLive) {
            case (.answered, true): out.append(.endLive(m.id))
            case (.answered, false): out.append(.deliverAnswer(m.id))
            case (.failed, true), (.lost, true): out.append(.failLive(m.id))
            case (.failed, false): out.append(.deliverError(m.id))
            case (.lost, false): out.append(.rejoin(m.id))
            }
        }
        return out
    }

    /// How many readers other processes started on this flight's answer (after the leader's
    /// client left): any, or a follower here, and the leader keeps generating.
    public mutating func remoteFollowersCounted(_ fid: FlightID, _ n: Int) -> Actions {
        guard let i = slot(of: fid), case .leading(let l, _, _) = slots[i]!.phase else { return [] }
        return n > 0 || !slots[i]!.members.isEmpty ? [.continueHeadless(l)] : [.abortLeader(l)]
    }

    /// A request's client went away (or its session ended) before its flight did.
    public mutating func left(_ id: RequestID) -> Actions {
        guard let fid = flightOf[id.raw], let i = slot(of: fid) else {
            flightOf[id.raw] = nil
            return []
        }
        if let m = slots[i]!.members.firstIndex(where: { $0.id == id }) {
            slots[i]!.members.remove(at: m)
            flightOf[id.raw] = nil
            return []
        }
        switch slots[i]!.phase {
        case .claiming(_, let isStream, let mayFollow):
            slots[i]!.phase = .claiming(leader: nil, leaderIsStream: isStream, leaderMayFollow: mayFollow)
            flightOf[id.raw] = nil
            return []
        case .leading(_, _, let publishes):
            // The leader stays the flight's leader until the flight ends (its session ends it).
            if !slots[i]!.members.isEmpty { return [.continueHeadless(id)] }
            return publishes ? [.countRemoteFollowers(id, fid)] : [.abortLeader(id)]
        case .followingRemote:
            flightOf[id.raw] = nil
            return []
        }
    }

    // MARK: the table

    /// The slot of a running flight (nil: ended, or never this machine's).
    private func slot(of fid: FlightID) -> Int? {
        let i = fid.slot
        guard i < slots.count, slots[i]?.id == fid else { return nil }
        return i
    }

    private mutating func addFlight(_ key: FlightKey, _ phase: Phase) -> FlightID {
        let i: Int
        if let f = free.popLast() {
            i = f
        } else {
            precondition(slots.count < 1 << FlightID.slotBits, "more flights than FlightID can name")
            i = slots.count
            slots.append(nil)
        }
        nextSequence += 1
        let id = FlightID(sequence: nextSequence, slot: i)
        slots[i] = Flight(id: id, key: key, phase: phase, members: [])
        // Indexed unless another key with the same hash runs (then this flight takes no joiners).
        if !running.contains(key.hash) { running[key.hash] = id }
        return id
    }

    /// Empties the flight's slot and forgets who belonged to it; returns what it held.
    @discardableResult
    private mutating func removeFlight(_ i: Int) -> Flight {
        let f = slots[i].take()!
        free.append(i)
        if running[f.key.hash] == f.id { running[f.key.hash] = nil }
        for m in f.members { flightOf[m.id.raw] = nil }
        switch f.phase {
        case .leading(let l, _, _): flightOf[l.raw] = nil
        case .claiming(let l?, _, _): flightOf[l.raw] = nil
        default: break
        }
        return f
    }
}

// RemoteFlight: single-flight across processes through Redis.
// The in-process leader claims `engine:flight:lock:<key>` (SET NX PX, refreshed every second while it
// runs, so long generations stay deduplicated) and appends its upstream answer to a Redis stream
// `engine:flight:s:<key>:<owner>` (head, whole SSE events as they come, then end or fail). A
// process that finds the lock taken reads that stream from its first entry — nothing is lost to
// a late subscription — and hands it to its CoalescerDriver, which answers that process's
// followers in the form each asked for. The flight ends when the leader ends: the lock is deleted
// in the same script that writes the last entry, so a later request leads anew (or hits the
// cache); the stream itself lives 60 s more, only for readers that joined while it ran. A leader
// that dies stops refreshing: its lock expires within 4 s, readers see it gone with no end, and
// their followers look again.
// With the workers' shared-memory segment (the default config), the claim lives there instead
// (SharedMemoryCacheStore's flight claims): claiming, joining, counting readers and watching the
// leader cost no round trip, and the leader writes its stream to Redis only once a reader has
// joined — the events it recorded so far first — so a flight nobody follows costs Redis nothing.
// The claim stays (ENDING) until the leader's last entry is written, so a reader that sees it gone
// finds the end entry, or knows the leader died.
// The leader's claim is refreshed every second by the CoalescerDriver's one lease timer for the
// whole process (ClaimLeaseMachine), through `refreshLease`, until the publisher finishes.
// Owns: the reader's poll Timer; Redis errors degrade to "no cross-process coalescing", never to
// a failed request.
import Reactor

enum RemoteFlightKeys {
    static func lock(_ key: String) -> String { "engine:flight:lock:" + key }
    static func stream(_ key: String, owner: String) -> String { "engine:flight:s:" + key + ":" + owner }
    /// Readers started on a flight's stream (INCR by each; read by a leader whose client left).
    static func readers(_ key: String, owner: String) -> String { "engine:flight:n:" + key + ":" + owner }
}

/// Leader side: holds the lock and appends the answer to the stream.
final class RemoteFlightPublisher {
    private let redis: RedisConnection
    private let key: String
    let owner: FlightOwner
    /// The owner's name as a String, made when first needed (Redis keys and commands): in
    /// shared-memory mode most flights never write to Redis.
    private lazy var ownerText = owner.string
    /// Made when first needed: in shared-memory mode most flights never write to Redis.
    private lazy var streamKey = RemoteFlightKeys.stream(key, owner: ownerText)
    /// The last entry is written (or being written): the lease is no longer refreshed.
    private(set) var isDone = false
    /// The shared-memory claim (nil: the claim is the Redis lock).
    private let claims: SharedMemoryCacheStore?
    /// Shared-memory mode: the stream is being written to Redis (a reader joined).
    private var published = false
    /// Shared-memory mode: the recording outgrew what could be replayed before anyone joined.
    private var closedToJoins = false
    /// Shared-memory mode: the SSE head, written when (if) publishing starts.
    private var pendingHead: (status: Int, contentType: String)?
    /// Short, so followers behind a leader that died wait little (they look again once it is
    /// gone); refreshed every `refreshInterval`, so a live leader keeps it through loop stalls of ~3 s.
    static let lockMillis = 4_000
    static let refreshInterval: Duration = .seconds(1)

    // Compare-and-expire / compare-and-delete, so a leader never touches a lock it lost.
    static let refreshScript = RedisScript("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end")
    static let releaseScript = RedisScript("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end")
    /// Loads the flight's scripts on every connect of `redis` (EVALSHA from then on).
    static func registerScripts(on redis: RedisConnection) {
        for s in [refreshScript, releaseScript, finishScript] { s.register(on: redis) }
    }

    private static func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    /// Completes later on the loop, or at once when Redis is not connected: the caller (the
    /// CoalescerDriver) queues the answer either way.
    static func claim(redis: RedisConnection, key: String, owner: String,
                      completion: @escaping (CoalescerMachine.Claim) -> Void) {
        guard redis.isConnected else { completion(.unavailable); return }
        // SET NX with GET (Redis 7): nil when we set it, else the current owner, in one plain
        // command (a script cost Redis ~16 µs more per call).
        redis.send(["SET", RemoteFlightKeys.lock(key), owner, "NX", "PX", String(lockMillis), "GET"]) { v in
            switch v {
            case .null: completion(.won)
            case .string(let o): completion(.lost(owner: String(decoding: o, as: UTF8.self)))
            default: completion(.unavailable)  // an error (an older Redis refuses NX with GET)
            }
        }
    }

    /// Gives back a lock this owner took but turned out not to need (compare-and-delete).
    static func release(redis: RedisConnection, key: String, owner: String) {
        releaseScript.run(on: redis, keys: [bytes(RemoteFlightKeys.lock(key))], args: [bytes(owner)]) { _ in }
    }

    init(redis: RedisConnection, key: String, owner: FlightOwner, claims: SharedMemoryCacheStore? = nil) {
        self.redis = redis
        self.key = key
        self.owner = owner
        self.claims = claims
    }

    /// Extends the claim's lease (the driver's lease timer calls this about every second while
    /// the flight runs); nothing once the publisher finished.
    func refreshLease(now: UInt64) {
        guard !isDone else { return }
        if let claims {
            _ = claims.refreshClaim(key, owner: owner, now: now)
            return
        }
        Self.refreshScript.run(on: redis, keys: [Self.bytes(RemoteFlightKeys.lock(key))],
                               args: [Self.bytes(ownerText), Self.bytes(String(Self.lockMillis))]) { _ in }
    }

    private func add(_ fields: [[UInt8]]) {
        redis.send([Array("XADD".utf8), Array(streamKey.utf8), Array("*".utf8)] + fields) { _ in }
    }

    func head(status: Int, contentType: String) {
        if claims != nil && !published {
            pendingHead = (status, contentType)
            return
        }
        addHead(status: status, contentType: contentType)
    }

    private func addHead(status: Int, contentType: String) {
        add([Array("t".utf8), Array("h".utf8), Array("s".utf8), Array(String(status).utf8), Array("c".utf8), Array(contentType.utf8)])
    }

    /// Whole SSE events, with the usage chunk (each reader filters for its own clients).
    /// Shared-memory mode: `recorded` is every event before these (the flight's recording) and
    /// `recordingEnds` says these overflow it: with no reader yet, the claim then takes none.
    func chunk(_ bytes: UnsafeRawBufferPointer, recorded: [UInt8], recordingEnds: Bool) {
        if let claims, !published {
            guard !closedToJoins, !isDone else { return }
            // Every read asks; a look without the lock answers the usual "nobody" (the locked
            // count, with the owner's name built for it, cost ~880 instructions a read). A
            // reader that joins after the look is seen at the next read, or at the end (the
            // recording so far goes first either way); the recording's end asks under the lock,
            // since it may close the claim.
            let now = Loop.nowNanos()
            if !recordingEnds && !claims.claimMayHaveReaders(key, now: now) { return }
            let readers = claims.claimReaders(key, owner: owner, now: now, closeIfNone: recordingEnds) ?? 0
            if readers > 0 {
                startPublishing(recorded)
            } else {
                if recordingEnds { closedToJoins = true }
                return
            }
        }
        add([Array("t".utf8), Array("d".utf8), Array("b".utf8), Array(bytes)])
    }

    /// A reader joined: what it missed (the head, then the recording as one entry), then live.
    private func startPublishing(_ recorded: [UInt8]) {
        published = true
        if let h = pendingHead { addHead(status: h.status, contentType: h.contentType) }
        pendingHead = nil
        if !recorded.isEmpty { add([Array("t".utf8), Array("d".utf8), Array("b".utf8), recorded]) }
    }

    /// A whole non-SSE answer, or (body nil) the complete end of a stream. A whole answer is
    /// published only if some process reads this flight (its readers count, in the same script):
    /// one that starts reading after the end finds the lock gone and no entry, and looks again.
    func end(status: Int, contentType: String, body: [UInt8]?, recorded: [UInt8] = [], now: UInt64 = Loop.nowNanos()) {
        guard !isDone else { return }
        finish(always: body == nil, recorded: recorded, now: now) {
            var f = [Array("t".utf8), Array("e".utf8), Array("s".utf8), Array(String(status).utf8), Array("c".utf8), Array(contentType.utf8)]
            if let body { f += [Array("b".utf8), body] }
            return f
        }
    }

    /// The leader gave up without an answer (its client left): readers look again.
    func abandon(now: UInt64 = Loop.nowNanos()) {
        guard !isDone else { return }
        finish(now: now) { [Array("t".utf8), Array("a".utf8)] }
    }

    /// How many readers other processes started on this flight (0 when Redis does not answer).
    func countReaders(completion: @escaping (Int) -> Void) {
        if let claims {
            completion(claims.claimReaders(key, owner: owner, now: Loop.nowNanos()) ?? 0)
            return
        }
        redis.send(["GET", RemoteFlightKeys.readers(key, owner: ownerText)]) { v in
            if case .string(let b) = v, let n = Int(String(decoding: b, as: UTF8.self)) { completion(n) } else { completion(0) }
        }
    }

    /// The leader failed: the followers get the same status and error body.
    func fail(status: Int, body: [UInt8], now: UInt64 = Loop.nowNanos()) {
        guard !isDone else { return }
        finish(now: now) { [Array("t".utf8), Array("f".utf8), Array("s".utf8), Array(String(status).utf8), Array("b".utf8), body] }
    }

    // The last entry, the stream's expiry and the lock's deletion in one command: the flight ends
    // here for every process (a request arriving after this leads anew or hits the cache). The
    // entry is written when ARGV[2] is 1 or some reader counted itself (KEYS[3]); a reader counts
    // itself before it checks the lock, so either it is counted here or it finds the lock gone.
    static let finishScript = RedisScript("""
        if ARGV[2] == '1' or tonumber(redis.call('GET', KEYS[3]) or '0') > 0 then
          redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
          redis.call('EXPIRE', KEYS[1], 60)
        end
        if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
        return 1
        """)

    /// `fields` (the end entry) is built only when it is written: in shared-memory mode, only
    /// when a reader joined.
    private func finish(always: Bool = true, recorded: [UInt8] = [], now: UInt64, _ fields: () -> [[UInt8]]) {
        isDone = true
        if let claims {
            // Readers, or a stream already written: the claim stays (ENDING) until the end entry
            // is in Redis, then goes. Nobody joined: it goes now, and Redis hears nothing.
            let readers = claims.endClaim(key, owner: owner, now: now, keep: published)
            guard readers > 0 || published else { return }
            if !published { startPublishing(recorded) }
            add(fields())
            redis.send([Array("EXPIRE".utf8), Array(streamKey.utf8), Array("60".utf8)]) { [claims, key, owner] _ in
                claims.releaseClaim(key, owner: owner, now: Loop.nowNanos())
            }
            return
        }
        Self.finishScript.run(on: redis, keys: [Self.bytes(streamKey), Self.bytes(RemoteFlightKeys.lock(key)),
                                                Self.bytes(RemoteFlightKeys.readers(key, owner: ownerText))],
                              args: [Self.bytes(ownerText), Self.bytes(always ? "1" : "0")] + fields()) { _ in }
    }

    func close() {
        if !isDone {
            fail(status: 502, body: EngineError(.badGateway, "The shared request ended without an answer.", source: .upstream).jsonBody)
        }
    }
}

protocol RemoteFlightReaderDelegate: AnyObject {
    func remoteHead(_ r: RemoteFlightReader, status: Int, contentType: String)
    func remoteBody(_ r: RemoteFlightReader, _ bytes: UnsafeRawBufferPointer)
    /// The answer ended: for a non-SSE answer, `body` is all of it.
    func remoteEnd(_ r: RemoteFlightReader, status: Int, contentType: String, body: [UInt8]?)
    /// The leader failed with this status and error body.
    func remoteFailed(_ r: RemoteFlightReader, status: Int, body: [UInt8])
    /// The leader vanished (its lock gone without an end) or Redis failed.
    func remoteLost(_ r: RemoteFlightReader)
}

/// Follower side: polls the leader's stream (non-blocking XREAD every 10 ms: a blocking read
/// would hold the shared connection) and watches the lock.
final class RemoteFlightReader {
    private let redis: RedisConnection
    private let lockKey: String
    /// Made when first needed: in shared-memory mode most flights never write to Redis.
    private lazy var streamKey = RemoteFlightKeys.stream(key, owner: owner)
    private let readersKey: String
    /// The shared-memory claim (nil: the claim is the Redis lock).
    private let claims: SharedMemoryCacheStore?
    private let key: String
    private let owner: String
    /// The flight this reader feeds (the delegate's name for it).
    let flight: CoalescerMachine.FlightID
    private weak var delegate: RemoteFlightReaderDelegate?
    private let timer: Timer
    private var lastId = "0"
    private var inFlight = false
    private var polls = 0
    private var stopped = false
    private var lockGone = false

    init(redis: RedisConnection, loop: Loop, key: String, owner: String, flight: CoalescerMachine.FlightID,
         delegate: RemoteFlightReaderDelegate, claims: SharedMemoryCacheStore? = nil) {
        self.redis = redis
        self.claims = claims
        self.key = key
        self.owner = owner
        self.lockKey = RemoteFlightKeys.lock(key)
        self.readersKey = RemoteFlightKeys.readers(key, owner: owner)
        self.flight = flight
        self.delegate = delegate
        self.timer = Timer(loop: loop)
        timer.onFire = { [unowned self] in self.poll() }
    }

    func start() {
        if let claims {
            // Joined in the same step that checks the claim: the leader will write for us, or
            // the flight is over (then the first read decides: end entry, or look again).
            if !claims.joinClaim(key, owner: owner, now: Loop.nowNanos()) { lockGone = true }
            poll()
            return
        }
        // Counted, so a leader whose own client leaves keeps generating for us, and so that its
        // whole answer is published. Then the lock: gone means the flight ended before we were
        // counted (its answer maybe unpublished), so the first read decides (end entry, or lost:
        // look again, in the cache).
        redis.send(["INCR", readersKey]) { _ in }
        redis.send(["EXPIRE", readersKey, "60"]) { _ in }
        redis.send(["EXISTS", lockKey]) { [weak self] v in
            if case .int(0) = v { self?.lockGone = true }
        }
        poll()
    }

    func stop() {
        stopped = true
        timer.close()
    }

    private func poll() {
        guard !stopped, !inFlight else { return }
        inFlight = true
        polls += 1
        redis.send(["XREAD", "COUNT", "256", "STREAMS", streamKey, lastId]) { [weak self] v in
            guard let self, !self.stopped else { return }
            self.inFlight = false
            switch v {
            case .array(let streams):
                for s in streams {
                    guard case .array(let pair) = s, pair.count == 2, case .array(let entries) = pair[1] else { continue }
                    for e in entries where !self.stopped { self.deliver(e) }
                }
            case .null:
                break
            default:
                self.stop()
                self.delegate?.remoteLost(self)  // Redis failed: stop waiting for the other process
                return
            }
            guard !self.stopped else { return }
            if self.lockGone {
                // This read began after the lock was seen gone and found no end entry: the
                // leader died (an end writes its entry and deletes the lock in one script).
                self.stop()
                self.delegate?.remoteLost(self)
                return
            }
            if let claims = self.claims {
                // Gone (released after the end entry was written, or the lease ran out): read once more.
                if !claims.claimHeld(self.key, owner: self.owner, now: Loop.nowNanos()) { self.lockGone = true }
            } else if self.polls % 50 == 0 {
                self.checkLock()
            }
            self.timer.schedule(after: .milliseconds(10))
        }
    }

    private func checkLock() {
        redis.send(["EXISTS", lockKey]) { [weak self] v in
            guard let self, !self.stopped else { return }
            // Gone: read once more before deciding (the end entry may have come with it).
            if case .int(0) = v { self.lockGone = true }
        }
    }

    private func deliver(_ e: RedisValue) {
        guard case .array(let idAndFields) = e, idAndFields.count == 2,
              case .string(let id) = idAndFields[0], case .array(let kv) = idAndFields[1] else { return }
        lastId = String(decoding: id, as: UTF8.self)
        var f: [String: [UInt8]] = [:]
        var i = 0
        while i + 1 < kv.count {
            if case .string(let k) = kv[i], case .string(let v) = kv[i + 1] { f[String(decoding: k, as: UTF8.self)] = v }
            i += 2
        }
        let status = f["s"].flatMap { Int(String(decoding: $0, as: UTF8.self)) } ?? 502
        let ct = f["c"].map { String(decoding: $0, as: UTF8.self) } ?? "application/json"
        switch f["t"].map({ String(decoding: $0, as: UTF8.self) }) {
        case "h":
            delegate?.remoteHead(self, status: status, contentType: ct)
        case "d":
            if let b = f["b"] { b.withUnsafeBytes { delegate?.remoteBody(self, $0) } }
        case "e":
            stop()
            delegate?.remoteEnd(self, status: status, contentType: ct, body: f["b"])
        case "a":
            stop()
            delegate?.remoteLost(self)
        case "f":
            stop()
            delegate?.remoteFailed(self, status: status,
                                   body: f["b"] ?? EngineError(.badGateway, "The shared request failed.", source: .upstream).jsonBody)
        default:
            break
        }
    }
}

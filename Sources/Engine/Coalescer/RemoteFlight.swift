// RemoteFlight: single-flight across processes through Redis.
// The in-process leader claims `engine:flight:lock:<key>` (SET NX PX, refreshed every 3 s while it
// runs, so long generations stay deduplicated) and appends its upstream answer to a Redis stream
// `engine:flight:s:<key>:<owner>` (head, raw SSE chunks as they come, end or fail). A process that
// finds the lock taken reads that stream from its first entry — nothing is lost to a late
// subscription, and the stream outlives the answer by 60 s — and feeds it to its session as if
// it were an upstream response. A leader that dies stops refreshing: its lock expires within
// 10 s, followers see it gone with no end, and call upstream themselves.
// Owns: the publisher's refresh Timer and the reader's poll Timer; Redis errors degrade to "no
// cross-process coalescing", never to a failed request.
import Reactor

enum RemoteFlightKeys {
    static func lock(_ key: String) -> String { "engine:flight:lock:" + key }
    static func stream(_ key: String, owner: String) -> String { "engine:flight:s:" + key + ":" + owner }
}

enum ClaimResult {
    case leader
    case follower(owner: String)
    /// Redis is not answering: lead without cross-process coalescing.
    case unavailable
}

/// Leader side: holds the lock and appends the answer to the stream.
final class RemoteFlightPublisher {
    private let redis: RedisConnection
    private let key: String
    let owner: String
    private let streamKey: String
    private let refresh: Timer
    private var isDone = false
    static let lockMillis = 10_000

    // Compare-and-expire / compare-and-delete, so a leader never touches a lock it lost.
    static let refreshScript = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end"

    static func claim(redis: RedisConnection, key: String, owner: String, completion: @escaping (ClaimResult) -> Void) {
        guard redis.isConnected else { completion(.unavailable); return }
        let lock = RemoteFlightKeys.lock(key)
        redis.send(["SET", lock, owner, "NX", "PX", String(lockMillis)]) { v in
            switch v {
            case .status: completion(.leader)
            case .null:
                redis.send(["GET", lock]) { g in
                    if case .string(let o) = g { completion(.follower(owner: String(decoding: o, as: UTF8.self))) } else {
                        completion(.unavailable) // the leader finished in between: just lead
                    }
                }
            default: completion(.unavailable)
            }
        }
    }

    static let releaseScript = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end"

    /// Gives back a lock this owner took but turned out not to need (compare-and-delete).
    static func release(redis: RedisConnection, key: String, owner: String) {
        redis.send(["EVAL", releaseScript, "1", RemoteFlightKeys.lock(key), owner]) { _ in }
    }

    init(redis: RedisConnection, loop: Loop, key: String, owner: String) {
        self.redis = redis
        self.key = key
        self.owner = owner
        self.streamKey = RemoteFlightKeys.stream(key, owner: owner)
        self.refresh = Timer(loop: loop)
        refresh.onFire = { [unowned self] in self.refreshLock() }
        refresh.schedule(after: .seconds(3))
    }

    private func refreshLock() {
        guard !isDone else { return }
        redis.send(["EVAL", Self.refreshScript, "1", RemoteFlightKeys.lock(key), owner, String(Self.lockMillis)]) { _ in }
        refresh.schedule(after: .seconds(3))
    }

    private func add(_ fields: [[UInt8]]) {
        redis.send([Array("XADD".utf8), Array(streamKey.utf8), Array("*".utf8)] + fields) { _ in }
    }

    func head(status: Int, contentType: String) {
        add([Array("t".utf8), Array("h".utf8), Array("s".utf8), Array(String(status).utf8), Array("c".utf8), Array(contentType.utf8)])
    }

    func chunk(_ bytes: UnsafeRawBufferPointer) {
        add([Array("t".utf8), Array("d".utf8), Array("b".utf8), Array(bytes)])
    }

    /// A whole non-SSE answer, or (body nil) the end of a stream.
    func end(status: Int, contentType: String, body: [UInt8]?) {
        guard !isDone else { return }
        var f = [Array("t".utf8), Array("e".utf8), Array("s".utf8), Array(String(status).utf8), Array("c".utf8), Array(contentType.utf8)]
        if let body { f += [Array("b".utf8), body] }
        finish(f)
    }

    func fail() {
        guard !isDone else { return }
        finish([Array("t".utf8), Array("f".utf8)])
    }

    // The last entry, the stream's expiry and the lock's shorter life in one command: it shares
    // the connection with every cache lookup, so fewer commands mean less waiting behind them.
    static let finishScript = """
        redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
        redis.call('EXPIRE', KEYS[1], 60)
        if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
        return 1
        """

    /// The lock stays a few seconds past the end, so a process arriving just now still finds
    /// the stream (and its end) instead of calling upstream again.
    private func finish(_ fields: [[UInt8]]) {
        isDone = true
        refresh.close()
        let head: [[UInt8]] = ["EVAL", Self.finishScript, "2", streamKey, RemoteFlightKeys.lock(key), owner, "5000"].map { Array($0.utf8) }
        redis.send(head + fields) { _ in }
    }

    func close() {
        if !isDone { fail() }
        refresh.close()
    }
}

protocol RemoteFlightReaderDelegate: AnyObject {
    func remoteHead(status: Int, contentType: String)
    func remoteBody(_ bytes: UnsafeRawBufferPointer)
    /// The answer ended: for a non-SSE answer, `body` is all of it.
    func remoteEnd(status: Int, contentType: String, body: [UInt8]?)
    func remoteLost()
}

/// Follower side: polls the leader's stream (non-blocking XREAD every 10 ms: a blocking read
/// would hold the shared connection) and watches the lock.
final class RemoteFlightReader {
    private let redis: RedisConnection
    private let lockKey: String
    private let streamKey: String
    private weak var delegate: RemoteFlightReaderDelegate?
    private let timer: Timer
    private var lastId = "0"
    private var inFlight = false
    private var polls = 0
    private var stopped = false
    private var sawHead = false

    init(redis: RedisConnection, loop: Loop, key: String, owner: String, delegate: RemoteFlightReaderDelegate) {
        self.redis = redis
        self.lockKey = RemoteFlightKeys.lock(key)
        self.streamKey = RemoteFlightKeys.stream(key, owner: owner)
        self.delegate = delegate
        self.timer = Timer(loop: loop)
        timer.onFire = { [unowned self] in self.poll() }
    }

    func start() { poll() }

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
                self.delegate?.remoteLost() // Redis failed: stop waiting for the other process
                self.stop()
                return
            }
            guard !self.stopped else { return }
            if self.polls % 50 == 0 { self.checkLock() }
            self.timer.schedule(after: .milliseconds(10))
        }
    }

    private func checkLock() {
        redis.send(["EXISTS", lockKey]) { [weak self] v in
            guard let self, !self.stopped else { return }
            if case .int(0) = v {
                self.stop()
                self.delegate?.remoteLost()
            }
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
            sawHead = true
            delegate?.remoteHead(status: status, contentType: ct)
        case "d":
            if let b = f["b"] { b.withUnsafeBytes { delegate?.remoteBody($0) } }
        case "e":
            stop()
            delegate?.remoteEnd(status: status, contentType: ct, body: f["b"])
        case "f":
            stop()
            delegate?.remoteLost()
        default:
            break
        }
    }
}

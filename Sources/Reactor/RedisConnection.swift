// RedisConnection: one async hiredis 0.14 connection on the process's Loop, with our own deadlines,
// pipelining, AUTH/SELECT handshake and automatic reconnect (100 ms × 2^n, capped at 5 s).
// Owns: one RedisLink per hiredis context (ac->data = passUnretained(link), style E.2); the current
// link plus "doomed" links whose redisAsyncFree is queued on a zero Timer, never run inside a hiredis
// callback (E.6). Each command is a passRetained(RedisCommandBox), released by hiredis's single
// callback (E.4); a deadline marks it abandoned and fails the waiter, the box stays retained (E.7).
// Replies are copied into RedisValue inside the callback (E.5). Loop-confined, not Sendable (F).
import CEventShim

#if canImport(Glibc)
import Glibc
#endif

/// A Redis reply, copied out of hiredis inside the callback (style E.5).
public enum RedisValue: Equatable, Sendable {
    case null
    case int(Int)
    case string([UInt8])
    case status(String)
    case error(String)
    case array([RedisValue])

    public var isError: Bool {
        if case .error = self { return true }
        return false
    }

    /// Bulk string or status as text (lossy UTF-8), nil otherwise.
    public var text: String? {
        switch self {
        case .string(let b): return String(decoding: b, as: UTF8.self)
        case .status(let s): return s
        default: return nil
        }
    }

    init(copying r: UnsafePointer<redisReply>, depth: Int = 0) {
        let t = r.pointee.type
        func bytes() -> [UInt8] {
            guard let s = r.pointee.str, r.pointee.len > 0 else { return [] }
            return Array(UnsafeRawBufferPointer(start: s, count: Int(r.pointee.len)))
        }
        switch t {
        case REDIS_REPLY_STRING: self = .string(bytes())
        case REDIS_REPLY_INTEGER: self = .int(Int(r.pointee.integer))
        case REDIS_REPLY_NIL: self = .null
        case REDIS_REPLY_STATUS: self = .status(String(decoding: bytes(), as: UTF8.self))
        case REDIS_REPLY_ERROR: self = .error(String(decoding: bytes(), as: UTF8.self))
        case REDIS_REPLY_ARRAY:
            var out: [RedisValue] = []
            if let els = r.pointee.element, depth < 64 {
                out.reserveCapacity(Int(r.pointee.elements))
                for i in 0..<Int(r.pointee.elements) {
                    if let e = els[i] { out.append(RedisValue(copying: e, depth: depth + 1)) } else { out.append(.null) }
                }
            }
            self = .array(out)
        default: self = .error("unknown reply type \(t)")
        }
    }
}

/// `redis://[[user]:password@]host[:port][/db]` (also `[::1]` hosts and %XX escapes in credentials),
/// or `unix:///path/to/redis.sock[?db=N]` for a Unix socket (then `host` is the path, `port` 0).
public struct RedisURL: Equatable, Sendable {
    public var host: String
    public var port: Int
    public var db: Int
    public var username: String?
    public var password: String?

    public init(host: String, port: Int = 6379, db: Int = 0, username: String? = nil, password: String? = nil) {
        self.host = host
        self.port = port
        self.db = db
        self.username = username
        self.password = password
    }

    /// A Unix socket path instead of host and port.
    public var socketPath: String? { port == 0 ? host : nil }

    public static func parse(_ s: String) -> RedisURL? {
        if s.hasPrefix("unix://") {
            var rest = Substring(s.dropFirst("unix://".count))
            var db = 0
            if let q = rest.firstIndex(of: "?") {
                let query = rest[rest.index(after: q)...]
                rest = rest[..<q]
                guard query.hasPrefix("db="), let n = Int(query.dropFirst(3)), n >= 0 else { return nil }
                db = n
            }
            guard rest.hasPrefix("/"), rest.count > 1 else { return nil }
            return RedisURL(host: String(rest), port: 0, db: db)
        }
        let scheme = "redis://"
        guard s.hasPrefix(scheme) else { return nil }
        var rest = Substring(s.dropFirst(scheme.count))
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let cred = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = cred.firstIndex(of: ":") {
                let u = cred[..<colon]
                username = u.isEmpty ? nil : percentDecode(u)
                password = percentDecode(cred[cred.index(after: colon)...])
                if username == nil && u.count > 0 { return nil }
            } else if !cred.isEmpty {
                // `redis://secret@host` is how some tools spell a password-only URL.
                password = percentDecode(cred)
            }
            if password == nil && !cred.isEmpty && cred.contains(":") { return nil }
        }
        var db = 0
        if let slash = rest.firstIndex(of: "/") {
            let d = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !d.isEmpty {
                guard let n = Int(d), n >= 0 else { return nil }
                db = n
            }
        }
        var host: Substring
        var port = 6379
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { return nil }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let p = Int(after.dropFirst()) else { return nil }
                port = p
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            guard let p = Int(rest[rest.index(after: colon)...]) else { return nil }
            port = p
        } else {
            host = rest
        }
        guard !host.isEmpty, (1...65535).contains(port) else { return nil }
        return RedisURL(host: String(host), port: port, db: db, username: username, password: password)
    }

    private static func percentDecode(_ s: Substring) -> String? {
        var out: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let c = it.popFirst() {
            if c == UInt8(ascii: "%") {
                guard it.count >= 2, let v = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) else { return nil }
                out.append(v)
                it = it.dropFirst(2)
            } else {
                out.append(c)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// One hiredis context. Lives while hiredis may still call back with its `ac->data`.
final class RedisLink {
    /// nil once hiredis (or we) freed the context.
    var ac: UnsafeMutablePointer<redisAsyncContext>?
    weak var owner: RedisConnection?
    /// Handshake replies (AUTH, SELECT) still expected before the link is ready.
    var handshakePending = 0
    var isReady = false
    /// Commands submitted on this link whose hiredis callback has not arrived yet.
    var inflight = 0
    /// Last time the server showed life while commands were in flight (reply or first send).
    var lastProgressAt: UInt64 = 0

    init(ac: UnsafeMutablePointer<redisAsyncContext>, owner: RedisConnection) {
        self.ac = ac
        self.owner = owner
    }

    static func from(_ ac: UnsafePointer<redisAsyncContext>?) -> RedisLink? {
        guard let data = ac?.pointee.data else { return nil }
        return Unmanaged<RedisLink>.fromOpaque(data).takeUnretainedValue()
    }
}

/// One command in flight; the privdata hiredis hands back exactly once.
final class RedisCommandBox {
    enum State {
        /// Waiting for the reply. Next: .done, .abandoned
        case pending
        /// Deadline passed and the waiter was failed; hiredis still owes us the callback. Next: .done
        case abandoned
        /// Callback arrived (or the waiter was answered); nothing more to do.
        case done
    }
    var state = State.pending
    let deadline: UInt64
    var completion: ((RedisValue) -> Void)?
    let link: RedisLink

    init(deadline: UInt64, link: RedisLink, completion: @escaping (RedisValue) -> Void) {
        self.deadline = deadline
        self.link = link
        self.completion = completion
    }
}

public final class RedisConnection {
    public let loop: Loop
    public let host: String
    public let port: Int
    public let db: Int
    public let username: String?
    public let password: String?
    public let commandTimeout: Duration
    public let connectTimeout: Duration
    /// With commands in flight and no reply for this long, the link is considered dead and replaced
    /// (a peer that vanished without RST would otherwise hang every command until TCP gives up).
    public let unresponsiveTimeout: Duration

    /// True after the TCP connect and the AUTH/SELECT handshake succeeded, until the link is lost.
    public private(set) var isConnected = false
    /// Fired once per change of `isConnected` (not for the initial `false`, not on close()).
    public var onStateChange: ((Bool) -> Void)?
    /// Last connect/handshake/disconnect failure, for the Engine's log line.
    public private(set) var lastError: String?
    /// Connect attempts started so far (tests, metrics).
    public private(set) var connectAttempts = 0
    /// Consecutive failed attempts since the last ready link; drives the backoff.
    public private(set) var consecutiveFailures = 0
    /// Links replaced because they stopped answering (see `unresponsiveTimeout`).
    public private(set) var unresponsiveDrops = 0

    /// The current hiredis context (nil while disconnected or waiting to reconnect).
    public var context: UnsafeMutablePointer<redisAsyncContext>? { current?.ac }

    private var current: RedisLink?
    private var doomed: [RedisLink] = []
    private var setupCommands: [[[UInt8]]] = []
    private var isClosed = false
    private var isStarted = false
    private var callbackDepth = 0
    /// Keep self alive while a zero Timer still owes work (deferred free after close(), deferred
    /// failures); released through loop.bury, never inside our own timer's callback (E.3).
    private var reapPin: RedisConnection?
    private var failPin: RedisConnection?

    // Pending boxes in submission order; deadlines are monotonic in that order (one timeout for all).
    private var deadlineQueue: [RedisCommandBox] = []
    private var deadlineHead = 0
    private var deferredFailures: [((RedisValue) -> Void, RedisValue)] = []

    private let deadlineTimer: Timer
    private let connectTimer: Timer
    private let reconnectTimer: Timer
    private let reaperTimer: Timer
    private let failTimer: Timer

    public init(loop: Loop, host: String, port: Int, db: Int = 0, username: String? = nil, password: String? = nil,
                commandTimeout: Duration, connectTimeout: Duration, unresponsiveTimeout: Duration? = nil) {
        self.loop = loop
        self.host = host
        self.port = port
        self.db = db
        self.username = username
        self.password = password
        self.commandTimeout = commandTimeout
        self.connectTimeout = connectTimeout
        self.unresponsiveTimeout = unresponsiveTimeout ?? max(commandTimeout * 20, .seconds(2))
        deadlineTimer = Timer(loop: loop)
        connectTimer = Timer(loop: loop)
        reconnectTimer = Timer(loop: loop)
        reaperTimer = Timer(loop: loop)
        failTimer = Timer(loop: loop)
        deadlineTimer.onFire = { [weak self] in self?.deadlineFired() }
        connectTimer.onFire = { [weak self] in self?.connectTimedOut() }
        reconnectTimer.onFire = { [weak self] in self?.startAttempt() }
        reaperTimer.onFire = { [weak self] in self?.reapDoomed() }
        failTimer.onFire = { [weak self] in self?.flushDeferredFailures() }
    }

    public convenience init(loop: Loop, url: RedisURL, commandTimeout: Duration, connectTimeout: Duration) {
        self.init(loop: loop, host: url.host, port: url.port, db: url.db, username: url.username,
                  password: url.password, commandTimeout: commandTimeout, connectTimeout: connectTimeout)
    }

    deinit {
        assert(isClosed, "RedisConnection dropped without close()")
    }

    /// Starts connecting (idempotent). Failures are retried with backoff until close().
    public func connect() {
        guard !isClosed, !isStarted else { return }
        isStarted = true
        startAttempt()
    }

    /// A command sent (errors ignored) after AUTH/SELECT on every new link, e.g. SCRIPT LOAD.
    public func addSetupCommand(_ argv: [String]) {
        let a = argv.map { Array($0.utf8) }
        setupCommands.append(a)
        if let link = current, link.ac != nil { _ = submitInternal(link, a) { _ in } }
    }

    public func send(_ argv: [String], completion: @escaping (RedisValue) -> Void) {
        send(argv.map { Array($0.utf8) }, completion: completion)
    }

    /// Queues one command. `completion` runs exactly once, never before send returns: with the reply,
    /// `.error("timeout")` after commandTimeout, or `.error("disconnected")`.
    public func send(_ argv: [[UInt8]], completion: @escaping (RedisValue) -> Void) {
        guard let name = argv.first else {
            failLater(completion, .error("empty command"))
            return
        }
        // hiredis calls a (P)SUBSCRIBE/MONITOR callback once per message, which would release the
        // box more than once (E.4): this connection is request/reply only.
        if Self.isPushCommand(name) {
            failLater(completion, .error("push commands are not supported"))
            return
        }
        guard !isClosed, let link = current, link.ac != nil else {
            failLater(completion, .error("disconnected"))
            return
        }
        let box = RedisCommandBox(deadline: Loop.nowNanos() &+ commandTimeout.nanoseconds, link: link,
                                  completion: completion)
        guard submit(link, argv, box) else {
            box.state = .done
            box.completion = nil
            failLater(completion, .error("disconnected"))
            return
        }
        deadlineQueue.append(box)
        if !deadlineTimer.isArmed { deadlineTimer.schedule(after: commandTimeout) }
    }

    /// Writes the commands queued so far to the socket now instead of on the loop's next pass, so
    /// Redis receives them before anything the caller does next (a write that must be visible to
    /// another process's later read). Not inside a hiredis callback: hiredis writes after those.
    public func flushNow() {
        guard callbackDepth == 0, !isClosed, let link = current, let ac = link.ac, isConnected else { return }
        redisAsyncHandleWrite(ac)
    }

    /// Frees the context (now, or on the next pass when called inside a hiredis callback). Waiters
    /// still pending fail with `.error("disconnected")`. Does not fire onStateChange.
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        isConnected = false
        onStateChange = nil
        deadlineTimer.cancel()
        connectTimer.cancel()
        reconnectTimer.cancel()
        if let link = current {
            current = nil
            doomed.append(link)
        }
        if callbackDepth == 0 {
            reapDoomed()
        } else {
            reapPin = self
            reaperTimer.schedule(after: .zero)
        }
    }

    // MARK: - Connecting

    private func startAttempt() {
        guard !isClosed, current == nil else { return }
        connectAttempts += 1
        let connected = port == 0 ? redisAsyncConnectUnix(host) : redisAsyncConnect(host, Int32(port))
        guard let ac = connected else {
            attemptFailed("redisAsyncConnect returned NULL")
            return
        }
        if ac.pointee.err != 0 {
            let msg = ac.pointee.errstr.map { String(cString: $0) } ?? "connect error"
            redisAsyncFree(ac)  // not inside a hiredis callback; nothing is attached yet
            attemptFailed(msg)
            return
        }
        let link = RedisLink(ac: ac, owner: self)
        ac.pointee.data = Unmanaged.passUnretained(link).toOpaque()
        guard ces_redis_attach(ac, loop.base) == REDIS_OK else {
            link.ac = nil
            redisAsyncFree(ac)
            attemptFailed("libevent attach failed")
            return
        }
        redisAsyncSetConnectCallback(ac) { ac, status in
            guard let link = RedisLink.from(ac) else { return }
            link.owner?.linkConnected(link, ok: status == REDIS_OK)
        }
        redisAsyncSetDisconnectCallback(ac) { ac, status in
            guard let link = RedisLink.from(ac) else { return }
            link.owner?.linkDisconnected(link)
        }
        current = link
        connectTimer.schedule(after: connectTimeout)
        // Handshake first: hiredis keeps order, so user commands queued later run after it.
        if let password {
            var argv: [[UInt8]] = [Array("AUTH".utf8)]
            if let username { argv.append(Array(username.utf8)) }
            argv.append(Array(password.utf8))
            handshake(link, argv)
        }
        if db != 0 { handshake(link, [Array("SELECT".utf8), Array(String(db).utf8)]) }
        for cmd in setupCommands { _ = submitInternal(link, cmd) { _ in } }
    }

    private func handshake(_ link: RedisLink, _ argv: [[UInt8]]) {
        link.handshakePending += 1
        let name = String(decoding: argv[0], as: UTF8.self)
        let ok = submitInternal(link, argv) { [weak self, unowned link] v in
            guard let self, link === self.current else { return }
            switch v {
            case .error(let e):
                self.lastError = "\(name): \(e)"
                self.dropCurrent(deferFree: true)
            default:
                link.handshakePending -= 1
                self.becomeReadyIfDone(link)
            }
        }
        if !ok { link.handshakePending -= 1 }
    }

    private func linkConnected(_ link: RedisLink, ok: Bool) {
        callbackDepth += 1
        defer { callbackDepth -= 1 }
        if !ok {
            // hiredis frees the context right after this callback (E.6).
            let msg = link.ac.flatMap { $0.pointee.errstr.map { String(cString: $0) } } ?? "connect failed"
            link.ac = nil
            if link === current {
                current = nil
                connectTimer.cancel()
                attemptFailed(msg)
            } else {
                doomed.removeAll { $0 === link }
            }
            return
        }
        guard link === current else { return }
        becomeReadyIfDone(link)
    }

    private func becomeReadyIfDone(_ link: RedisLink) {
        guard link === current, !link.isReady, link.handshakePending == 0,
              let ac = link.ac, ac.pointee.c.flags & Int32(REDIS_CONNECTED) != 0 else { return }
        link.isReady = true
        connectTimer.cancel()
        consecutiveFailures = 0
        if !isConnected {
            isConnected = true
            onStateChange?(true)
        }
    }

    private func linkDisconnected(_ link: RedisLink) {
        callbackDepth += 1
        defer { callbackDepth -= 1 }
        // hiredis frees the context after this callback (E.6); pending commands were already
        // called back with a NULL reply before it.
        let msg = link.ac.flatMap { $0.pointee.errstr.map { String(cString: $0) } }
        link.ac = nil
        if link === current {
            current = nil
            lastError = (msg?.isEmpty ?? true) ? "connection closed" : msg
            lost()
        } else {
            doomed.removeAll { $0 === link }
        }
    }

    private func connectTimedOut() {
        guard current != nil, !(current!.isReady) else { return }
        lastError = "connect timeout"
        dropCurrent(deferFree: callbackDepth > 0)
    }

    /// Leaves the current link (its context is freed now or on the next pass) and schedules a retry.
    private func dropCurrent(deferFree: Bool) {
        guard let link = current else { return }
        current = nil
        doomed.append(link)
        lost()
        if deferFree {
            reaperTimer.schedule(after: .zero)
        } else {
            reapDoomed()
        }
    }

    /// The current link is gone: report the outage once and retry with backoff.
    private func lost() {
        connectTimer.cancel()
        if isConnected {
            isConnected = false
            onStateChange?(false)
        } else {
            consecutiveFailures += 1
        }
        scheduleReconnect()
    }

    private func attemptFailed(_ msg: String) {
        lastError = msg
        consecutiveFailures += 1
        scheduleReconnect()
    }

    private func scheduleReconnect() {
        guard !isClosed, !reconnectTimer.isArmed else { return }
        reconnectTimer.schedule(after: Self.backoff(failures: consecutiveFailures))
    }

    /// 100 ms × 2^(failures-1), capped at 5 s; the first retry after a drop waits 100 ms.
    public static func backoff(failures: Int) -> Duration {
        let n = max(0, min(failures - 1, 10))
        return min(.milliseconds(100) * (1 << n), .seconds(5))
    }

    /// Frees doomed contexts. Only ever called outside hiredis callbacks (timer or public API).
    private func reapDoomed() {
        while let link = doomed.popLast() {
            guard let ac = link.ac else { continue }
            link.ac = nil
            // Runs pending command callbacks with NULL (waiters fail) and, if connected, the
            // disconnect callback, which finds the link neither current nor doomed and ignores it.
            redisAsyncFree(ac)
        }
        if let me = reapPin {
            reapPin = nil
            loop.bury(me)
        }
    }

    // MARK: - Commands

    @discardableResult
    private func submitInternal(_ link: RedisLink, _ argv: [[UInt8]], _ completion: @escaping (RedisValue) -> Void) -> Bool {
        let box = RedisCommandBox(deadline: Loop.nowNanos() &+ commandTimeout.nanoseconds, link: link,
                                  completion: completion)
        // Handshake and setup commands are bounded by connectTimeout, not by the deadline queue.
        return submit(link, argv, box)
    }

    /// hiredis copies argv into its output buffer before returning, so temporary pointers suffice.
    private func submit(_ link: RedisLink, _ argv: [[UInt8]], _ box: RedisCommandBox) -> Bool {
        guard let ac = link.ac else { return false }
        var flat: [UInt8] = []
        flat.reserveCapacity(argv.reduce(1) { $0 + $1.count })
        var offsets: [Int] = []
        var lens: [Int] = []
        for a in argv {
            offsets.append(flat.count)
            lens.append(a.count)
            flat.append(contentsOf: a)
        }
        flat.append(0)  // never empty, so baseAddress is non-nil
        let priv = Unmanaged.passRetained(box).toOpaque()
        let rc = flat.withUnsafeBufferPointer { fp -> Int32 in
            let base = UnsafeRawPointer(fp.baseAddress!)
            var ptrs: [UnsafePointer<CChar>?] = offsets.map { (base + $0).assumingMemoryBound(to: CChar.self) }
            return redisAsyncCommandArgv(ac, { ac, reply, priv in
                guard let priv else { return }
                let box = Unmanaged<RedisCommandBox>.fromOpaque(priv).takeRetainedValue()
                let value = reply.map { RedisValue(copying: $0.assumingMemoryBound(to: redisReply.self)) }
                if let owner = box.link.owner {
                    owner.replied(box, value)
                } else {
                    RedisConnection.orphanReply(box, value)
                }
            }, priv, Int32(argv.count), &ptrs, &lens)
        }
        guard rc == REDIS_OK else {
            Unmanaged<RedisCommandBox>.fromOpaque(priv).release()  // E.4: submission failed
            return false
        }
        if link.inflight == 0 { link.lastProgressAt = Loop.nowNanos() }
        link.inflight += 1
        return true
    }

    private static func orphanReply(_ box: RedisCommandBox, _ value: RedisValue?) {
        guard box.state == .pending else { return }
        box.state = .done
        let c = box.completion
        box.completion = nil
        c?(value ?? .error("disconnected"))
    }

    private func replied(_ box: RedisCommandBox, _ value: RedisValue?) {
        callbackDepth += 1
        defer { callbackDepth -= 1 }
        box.link.inflight -= 1
        if value != nil { box.link.lastProgressAt = Loop.nowNanos() }
        guard box.state == .pending else {
            box.state = .done  // abandoned: the waiter already heard "timeout"
            return
        }
        box.state = .done
        let c = box.completion
        box.completion = nil
        c?(value ?? .error("disconnected"))
    }

    private func deadlineFired() {
        let now = Loop.nowNanos()
        // 1 ms slack: libevent may fire a hair early relative to our clock reading.
        while deadlineHead < deadlineQueue.count {
            let box = deadlineQueue[deadlineHead]
            if box.state == .pending {
                guard box.deadline <= now &+ 1_000_000 else { break }
                box.state = .abandoned
                let c = box.completion
                box.completion = nil
                c?(.error("timeout"))
            }
            deadlineHead += 1
        }
        if deadlineHead == deadlineQueue.count {
            deadlineQueue.removeAll(keepingCapacity: true)
            deadlineHead = 0
        } else if deadlineHead > 1024 && deadlineHead * 2 > deadlineQueue.count {
            deadlineQueue.removeFirst(deadlineHead)
            deadlineHead = 0
        }
        // Boxes that completed normally stay in the queue until they reach the head (lazy delete);
        // the timer is re-armed for the next pending one.
        while deadlineHead < deadlineQueue.count, deadlineQueue[deadlineHead].state != .pending { deadlineHead += 1 }
        if !isClosed, deadlineHead < deadlineQueue.count, !deadlineTimer.isArmed {
            let wait = deadlineQueue[deadlineHead].deadline > now ? deadlineQueue[deadlineHead].deadline - now : 0
            deadlineTimer.schedule(after: .nanoseconds(Int64(wait)))
        }
        if let link = current, link.inflight > 0,
           now &- link.lastProgressAt > unresponsiveTimeout.nanoseconds {
            unresponsiveDrops += 1
            lastError = "no reply for \(unresponsiveTimeout)"
            dropCurrent(deferFree: callbackDepth > 0)
        }
    }

    private func failLater(_ completion: @escaping (RedisValue) -> Void, _ value: RedisValue) {
        deferredFailures.append((completion, value))
        if !failTimer.isArmed {
            failPin = self
            failTimer.schedule(after: .zero)
        }
    }

    private func flushDeferredFailures() {
        let pending = deferredFailures
        deferredFailures.removeAll()
        for (c, v) in pending { c(v) }
        if let me = failPin, !failTimer.isArmed {
            failPin = nil
            loop.bury(me)
        }
    }

    static func isPushCommand(_ name: [UInt8]) -> Bool {
        guard name.count <= 12 else { return false }
        let upper = String(decoding: name.map { $0 >= 97 && $0 <= 122 ? $0 - 32 : $0 }, as: UTF8.self)
        return ["SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE",
                "MONITOR"].contains(upper)
    }
}

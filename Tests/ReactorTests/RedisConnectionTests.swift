// RedisConnection tests on the real loop. Two groups:
// - always run: URL parsing, backoff, and fake servers on loopback (refusing, silent, closing);
// - need a real redis-server: ENGINE_TEST_REDIS_URL (e.g. redis://127.0.0.1:16399) names it, and
//   the suite is disabled (reported as skipped, not passed) when unset. The restart test also
//   spawns its own redis-server and needs the binary on PATH.
import CEventShim
import Testing
@testable import Reactor

#if canImport(Glibc)
import Glibc
#endif

let redisTestURL: RedisURL? = getenv("ENGINE_TEST_REDIS_URL").flatMap { RedisURL.parse(String(cString: $0)) }

/// Runs the loop until `done()` or the timeout; returns done().
@discardableResult
func runLoop(_ loop: Loop, timeout: Duration = .seconds(5), until done: () -> Bool) -> Bool {
    let guardTimer = Timer(loop: loop)
    var expired = false
    guardTimer.onFire = { expired = true }
    guardTimer.schedule(after: timeout)
    while !done() && !expired { loop.runOnce() }
    guardTimer.close()
    return done()
}

/// Runs the loop for `d` regardless of activity.
func runLoop(_ loop: Loop, for d: Duration) {
    runLoop(loop, timeout: d) { false }
}

/// A TCP port that was free a moment ago.
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

func uniqueName(_ tag: String) -> String {
    "enginetest:\(tag):\(getpid()):\(UInt64.random(in: 0...UInt64.max))"
}

@Suite struct RedisURLTests {
    @Test func parsesForms() {
        #expect(RedisURL.parse("redis://localhost") == RedisURL(host: "localhost", port: 6379, db: 0))
        #expect(RedisURL.parse("redis://10.0.0.5:7000/3") == RedisURL(host: "10.0.0.5", port: 7000, db: 3))
        #expect(RedisURL.parse("redis://:s%40cret@h:1/2") == RedisURL(host: "h", port: 1, db: 2, password: "s@cret"))
        #expect(RedisURL.parse("redis://bob:pw@h") == RedisURL(host: "h", port: 6379, db: 0, username: "bob", password: "pw"))
        #expect(RedisURL.parse("redis://[::1]:6380") == RedisURL(host: "::1", port: 6380))
        #expect(RedisURL.parse("redis://h/") == RedisURL(host: "h"))
    }

    @Test func rejectsGarbage() {
        for s in ["", "http://h", "redis://", "redis://h:x", "redis://h:0", "redis://h:70000", "redis://h/x",
                  "redis://h/-1", "redis://[::1", "redis://:%zz@h", "redis://:pw@"] {
            #expect(RedisURL.parse(s) == nil, "\(s)")
        }
    }

    @Test func backoffDoublesFrom100msAndCapsAt5s() {
        let got = (1...9).map { RedisConnection.backoff(failures: $0) }
        #expect(got == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800),
                        .milliseconds(1600), .milliseconds(3200), .seconds(5), .seconds(5), .seconds(5)])
        #expect(RedisConnection.backoff(failures: 0) == .milliseconds(100))
    }
}

@Suite struct RedisConnectionOfflineTests {
    @Test func refusedConnectRetriesWithBackoffAndFailsCommandsAsynchronously() {
        let loop = Loop()  // never closed: objects still referencing it are released after the defers
        let conn = RedisConnection(loop: loop, host: "127.0.0.1", port: freePort(),
                                   commandTimeout: .milliseconds(200), connectTimeout: .milliseconds(500))
        defer { conn.close() }
        var changes: [Bool] = []
        conn.onStateChange = { changes.append($0) }
        conn.connect()
        // 100 + 200 + 400 ms of backoff: at least 3 attempts within ~1 s.
        runLoop(loop, timeout: .seconds(3)) { conn.connectAttempts >= 4 }
        #expect(conn.connectAttempts >= 4)
        #expect(!conn.isConnected)
        #expect(changes.isEmpty, "no state change while it never connected")
        var result: RedisValue?
        conn.send(["PING"]) { result = $0 }
        #expect(result == nil, "never completes before send returns")
        runLoop(loop) { result != nil }
        #expect(result == .error("disconnected"))
        conn.close()
    }

    @Test func pushCommandsAndEmptyCommandsAreRefused() {
        let loop = Loop()  // never closed: objects still referencing it are released after the defers
        let conn = RedisConnection(loop: loop, host: "127.0.0.1", port: freePort(),
                                   commandTimeout: .milliseconds(200), connectTimeout: .milliseconds(500))
        defer { conn.close() }
        var got: [RedisValue] = []
        conn.send(["subscribe", "ch"]) { got.append($0) }
        conn.send(["MONITOR"]) { got.append($0) }
        conn.send([[UInt8]]()) { got.append($0) }
        runLoop(loop) { got.count == 3 }
        #expect(got == [.error("push commands are not supported"), .error("push commands are not supported"),
                        .error("empty command")])
    }

    @Test func silentServerTimesOutCommandsThenDropsTheLink() throws {
        let loop = Loop()  // never closed: objects still referencing it are released after the defers
        var accepted: [Int32] = []
        let listener = try Listener(loop: loop, host: "127.0.0.1", port: 0, reusePort: false) { accepted.append($0) }
        defer {
            listener.close()
            for fd in accepted { close(fd) }
        }
        let conn = RedisConnection(loop: loop, host: "127.0.0.1", port: listener.port,
                                   commandTimeout: .milliseconds(100), connectTimeout: .seconds(1),
                                   unresponsiveTimeout: .milliseconds(400))
        defer { conn.close() }
        var changes: [Bool] = []
        conn.onStateChange = { changes.append($0) }
        conn.connect()
        runLoop(loop) { conn.isConnected }
        #expect(conn.isConnected)
        var replies: [RedisValue] = []
        let start = Loop.nowNanos()
        for _ in 0..<3 { conn.send(["PING"]) { replies.append($0) } }
        runLoop(loop) { replies.count == 3 }
        let took = Double(Loop.nowNanos() - start) / 1e6
        #expect(replies == [.error("timeout"), .error("timeout"), .error("timeout")])
        #expect(took >= 90 && took < 1000, "took \(took) ms")
        // Keep commands flowing: once nothing has answered for 400 ms the link is replaced.
        var more = 0
        runLoop(loop, timeout: .seconds(3)) {
            if conn.isConnected { conn.send(["PING"]) { _ in more += 1 } }
            return conn.unresponsiveDrops >= 1
        }
        #expect(conn.unresponsiveDrops >= 1)
        #expect(changes.first == true)
        #expect(changes.dropFirst().first == false)
        runLoop(loop) { conn.connectAttempts >= 2 && conn.isConnected }
        #expect(conn.connectAttempts >= 2)
        conn.close()
        runLoop(loop, for: .milliseconds(20))
        #expect(more > 0)
    }

    @Test func handshakeThatNeverAnswersHitsConnectTimeoutAndRetries() throws {
        let loop = Loop()  // never closed: objects still referencing it are released after the defers
        var accepted: [Int32] = []
        let listener = try Listener(loop: loop, host: "127.0.0.1", port: 0, reusePort: false) { accepted.append($0) }
        defer {
            listener.close()
            for fd in accepted { close(fd) }
        }
        // SELECT 1 is sent at connect; the silent server never answers, so the link never becomes ready.
        let conn = RedisConnection(loop: loop, host: "127.0.0.1", port: listener.port, db: 1,
                                   commandTimeout: .milliseconds(100), connectTimeout: .milliseconds(150))
        defer { conn.close() }
        conn.connect()
        runLoop(loop, timeout: .seconds(3)) { conn.connectAttempts >= 3 }
        #expect(conn.connectAttempts >= 3)
        #expect(conn.lastError == "connect timeout")
        #expect(!conn.isConnected)
        conn.close()
    }

    @Test func serverClosingFailsEveryWaiterOnceAndReconnects() throws {
        let loop = Loop()  // never closed: objects still referencing it are released after the defers
        var accepted: [Int32] = []
        let listener = try Listener(loop: loop, host: "127.0.0.1", port: 0, reusePort: false) { accepted.append($0) }
        defer {
            listener.close()
            for fd in accepted where fd >= 0 { close(fd) }
        }
        let conn = RedisConnection(loop: loop, host: "127.0.0.1", port: listener.port,
                                   commandTimeout: .seconds(5), connectTimeout: .seconds(1))
        defer { conn.close() }
        var changes: [Bool] = []
        conn.onStateChange = { changes.append($0) }
        conn.connect()
        runLoop(loop) { conn.isConnected && accepted.count == 1 }
        var replies: [Int: [RedisValue]] = [:]
        for i in 0..<10 { conn.send(["GET", "k\(i)"]) { replies[i, default: []].append($0) } }
        runLoop(loop, for: .milliseconds(20))
        close(accepted[0])
        accepted[0] = -1
        runLoop(loop) { replies.count == 10 }
        #expect(replies.count == 10)
        #expect(replies.values.allSatisfy { $0 == [.error("disconnected")] })
        #expect(changes == [true, false])
        runLoop(loop) { conn.isConnected }
        #expect(changes == [true, false, true])
        runLoop(loop, for: .milliseconds(50))
        #expect(replies.values.allSatisfy { $0.count == 1 }, "each waiter failed exactly once")
        conn.close()
    }

    @Test func closeInsideACompletionIsDeferred() throws {
        let loop = Loop()  // never closed: objects still referencing it are released after the defers
        var accepted: [Int32] = []
        let listener = try Listener(loop: loop, host: "127.0.0.1", port: 0, reusePort: false) { accepted.append($0) }
        defer {
            listener.close()
            for fd in accepted { close(fd) }
        }
        var conn: RedisConnection? = RedisConnection(loop: loop, host: "127.0.0.1", port: listener.port,
                                                     commandTimeout: .seconds(5), connectTimeout: .seconds(1))
        conn!.connect()
        runLoop(loop) { conn!.isConnected && accepted.count == 1 }
        var got: [RedisValue] = []
        conn!.send(["GET", "a"]) { v in
            got.append(v)
            conn?.close()
            conn = nil
        }
        conn!.send(["GET", "b"]) { got.append($0) }
        let reply = "$1\r\nx\r\n"
        _ = reply.withCString { write(accepted[0], $0, strlen($0)) }
        runLoop(loop) { got.count == 2 }
        #expect(got == [.string([UInt8(ascii: "x")]), .error("disconnected")])
        runLoop(loop, for: .milliseconds(20))
    }
}

@Suite(.enabled(if: redisTestURL != nil, "set ENGINE_TEST_REDIS_URL to a running redis-server"))
struct RedisConnectionLiveTests {
    let url = redisTestURL ?? RedisURL(host: "127.0.0.1")

    func connected(_ loop: Loop, timeout: Duration = .seconds(5)) -> RedisConnection {
        let c = RedisConnection(loop: loop, url: url, commandTimeout: timeout, connectTimeout: .seconds(2))
        c.connect()
        runLoop(loop) { c.isConnected }
        return c
    }

    @Test func connectsAndRoundTripsBinaryValues() {
        let loop = Loop()  // never closed: objects still referencing it are released after the defers
        let c = RedisConnection(loop: loop, url: url, commandTimeout: .seconds(5), connectTimeout: .seconds(2))
        defer { c.close() }
        var changes: [Bool] = []
        c.onStateChange = { changes.append($0) }
        c.connect()
        #expect(runLoop(loop) { c.isConnected })
        #expect(changes == [true])
        #expect(c.context != nil)
        let key = uniqueName("bin")
        let value: [UInt8] = [0, 1, 13, 10, 255, 36, 42] + Array("tail".utf8)
        var replies: [RedisValue] = []
        c.send([Array("SET".utf8), Array(key.utf8), value, Array("PX".utf8), Array("10000".utf8)]) { replies.append($0) }
        c.send([Array("GET".utf8), Array(key.utf8)]) { replies.append($0) }
        c.send(["GET", key + ":absent"]) { replies.append($0) }
        c.send(["INCRBY", key + ":n", "41"]) { replies.append($0) }
        c.send(["LPUSH", key + ":l", "a", "b"]) { replies.append($0) }
        c.send(["LRANGE", key + ":l", "0", "-1"]) { replies.append($0) }
        c.send(["NOSUCHCOMMAND"]) { replies.append($0) }
        c.send(["DEL", key, key + ":n", key + ":l"]) { replies.append($0) }
        runLoop(loop) { replies.count == 8 }
        #expect(replies.count == 8)
        #expect(replies[0] == .status("OK"))
        #expect(replies[1] == .string(value))
        #expect(replies[2] == .null)
        #expect(replies[3] == .int(41))
        #expect(replies[4] == .int(2))
        #expect(replies[5] == .array([.string(Array("b".utf8)), .string(Array("a".utf8))]))
        #expect(replies[6].isError)
        #expect(replies[7] == .int(3))
        c.close()
    }

    @Test func pipelinesAThousandCommandsInOrder() {
        let loop = Loop()  // never closed: objects still referencing it are released after the defers
        let c = connected(loop)
        defer { c.close() }
        #expect(c.isConnected)
        let key = uniqueName("pipe")
        var got: [RedisValue] = []
        for _ in 0..<1000 { c.send(["INCR", key]) { got.append($0) } }
        runLoop(loop, timeout: .seconds(10)) { got.count == 1000 }
        #expect(got == (1...1000).map { .int($0) })
        var del: RedisValue?
        c.send(["DEL", key]) { del = $0 }
        runLoop(loop) { del != nil }
        c.close()
    }

    @Test func commandTimesOutWhileTheServerIsBusyThenRecovers() {
        let loop = Loop()  // never closed: objects still referencing it are released after the defers
        let c = connected(loop, timeout: .milliseconds(100))
        defer { c.close() }
        #expect(c.isConnected)
        // Redis 7 refuses DEBUG unless enable-debug-command allows it; a 1 s BLPOP stalls this
        // connection the same way (replies queue behind it) without pausing anyone else.
        var probe: RedisValue?
        c.send(["DEBUG", "SLEEP", "0"]) { probe = $0 }
        runLoop(loop) { probe != nil }
        let stall = probe == .status("OK") ? ["DEBUG", "SLEEP", "1"] : ["BLPOP", uniqueName("stall"), "1"]
        var first: RedisValue?
        var second: RedisValue?
        let start = Loop.nowNanos()
        c.send(stall) { first = $0 }
        c.send(["PING"]) { second = $0 }
        runLoop(loop) { first != nil && second != nil }
        let took = Double(Loop.nowNanos() - start) / 1e6
        #expect(first == .error("timeout"))
        #expect(second == .error("timeout"))
        #expect(took >= 90 && took < 600, "took \(took) ms")
        // The abandoned boxes are released when the late replies arrive; the link stays usable.
        var after: RedisValue?
        runLoop(loop, for: .milliseconds(1100))
        c.send(["PING"]) { after = $0 }
        runLoop(loop) { after != nil }
        #expect(after == .status("PONG"))
        #expect(c.isConnected)
        c.close()
    }

    @Test func reconnectsAfterTheServerKillsTheConnection() {
        let loop = Loop()  // never closed: objects still referencing it are released after the defers
        let a = RedisConnection(loop: loop, url: url, commandTimeout: .seconds(5), connectTimeout: .seconds(2))
        defer { a.close() }
        var changes: [Bool] = []
        a.onStateChange = { changes.append($0) }
        a.connect()
        let b = connected(loop)
        defer { b.close() }
        runLoop(loop) { a.isConnected && b.isConnected }
        var idReply: RedisValue?
        a.send(["CLIENT", "ID"]) { idReply = $0 }
        runLoop(loop) { idReply != nil }
        guard case .int(let id) = idReply else {
            Issue.record("CLIENT ID: \(String(describing: idReply))")
            return
        }
        var blocked: [RedisValue] = []
        a.send(["BLPOP", uniqueName("never"), "4"]) { blocked.append($0) }
        var killed: RedisValue?
        b.send(["CLIENT", "KILL", "ID", String(id)]) { killed = $0 }
        runLoop(loop) { killed != nil && blocked.count == 1 }
        #expect(killed == .int(1))
        #expect(blocked == [.error("disconnected")])
        #expect(changes == [true, false])
        runLoop(loop) { a.isConnected }
        #expect(changes == [true, false, true])
        var pong: RedisValue?
        a.send(["PING"]) { pong = $0 }
        runLoop(loop) { pong != nil }
        #expect(pong == .status("PONG"))
        #expect(blocked.count == 1)
        a.close()
        b.close()
    }

    @Test(.enabled(if: redisServerBinary != nil, "redis-server not on PATH"))
    func reconnectsAfterTheServerRestarts() throws {
        let loop = Loop()  // never closed: objects still referencing it are released after the defers
        let port = freePort()
        var server = try #require(RedisServerProcess(port: port))
        defer { server.stop() }
        let c = RedisConnection(loop: loop, host: "127.0.0.1", port: port, db: 2,
                                commandTimeout: .seconds(2), connectTimeout: .seconds(1))
        defer { c.close() }
        var changes: [Bool] = []
        c.onStateChange = { changes.append($0) }
        c.connect()
        #expect(runLoop(loop) { c.isConnected })
        server.stop()
        runLoop(loop) { !c.isConnected }
        #expect(changes == [true, false])
        runLoop(loop, for: .milliseconds(700))  // a few backoff rounds against a dead port
        let attemptsWhileDown = c.connectAttempts
        #expect(attemptsWhileDown >= 3)
        server = try #require(RedisServerProcess(port: port))
        #expect(runLoop(loop, timeout: .seconds(8)) { c.isConnected })
        #expect(changes == [true, false, true])
        var pong: RedisValue?
        c.send(["SET", "k", "v"]) { pong = $0 }
        runLoop(loop) { pong != nil }
        #expect(pong == .status("OK"))
        c.close()
    }

    @Test(.enabled(if: redisServerBinary != nil, "redis-server not on PATH"))
    func authAndSelectRunBeforeUserCommandsAndBadPasswordNeverConnects() throws {
        let loop = Loop()  // never closed: objects still referencing it are released after the defers
        let port = freePort()
        var server = try #require(RedisServerProcess(port: port, extraArgs: ["--requirepass", "s3cret"]))
        defer { server.stop() }
        let good = try #require(RedisURL.parse("redis://:s3cret@127.0.0.1:\(port)/5"))
        let c = RedisConnection(loop: loop, url: good, commandTimeout: .seconds(2), connectTimeout: .seconds(1))
        defer { c.close() }
        c.connect()
        // Sent while still connecting: hiredis queues it behind AUTH and SELECT.
        var db: RedisValue?
        c.send(["CLIENT", "INFO"]) { db = $0 }
        runLoop(loop) { db != nil }
        #expect(c.isConnected)
        #expect(db?.text?.contains(" db=5 ") == true, "\(String(describing: db))")

        let bad = RedisConnection(loop: loop, host: "127.0.0.1", port: port, password: "wrong",
                                  commandTimeout: .seconds(2), connectTimeout: .seconds(1))
        defer { bad.close() }
        var changes: [Bool] = []
        bad.onStateChange = { changes.append($0) }
        bad.connect()
        runLoop(loop, timeout: .seconds(3)) { bad.connectAttempts >= 3 }
        #expect(bad.connectAttempts >= 3)
        #expect(!bad.isConnected)
        #expect(changes.isEmpty)
        #expect(bad.lastError?.hasPrefix("AUTH:") == true, "\(String(describing: bad.lastError))")
    }
}

let redisServerBinary: String? = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].first { access($0, X_OK) == 0 }

/// A throwaway redis-server child (no persistence), for the restart test.
struct RedisServerProcess {
    var pid: pid_t

    init?(port: Int, extraArgs: [String] = []) {
        guard let bin = redisServerBinary else { return nil }
        let args = [bin, "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--logfile", "/dev/null"] + extraArgs
        var cargs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) }
        cargs.append(nil)
        defer { for p in cargs { free(p) } }
        var child: pid_t = 0
        guard posix_spawn(&child, bin, nil, nil, &cargs, environ) == 0 else { return nil }
        pid = child
        // Wait until it accepts connections.
        for _ in 0..<200 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            close(fd)
            if rc == 0 { return }
            usleep(20_000)
        }
        kill(child, SIGKILL)
        var st: Int32 = 0
        waitpid(child, &st, 0)
        return nil
    }

    mutating func stop() {
        guard pid > 0 else { return }
        kill(pid, SIGKILL)
        var st: Int32 = 0
        waitpid(pid, &st, 0)
        pid = 0
    }
}

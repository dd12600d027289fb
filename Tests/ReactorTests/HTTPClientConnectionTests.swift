// Reactor tests for the upstream side: real libevent over loopback TCP. A scripted raw "upstream"
// accepts the HTTPClientConnection, reads its request and writes exactly the bytes a test gives,
// including the ones a misbehaving vLLM sends (interim 1xx, two answers, junk, bad status lines).
import CEventShim
import Testing
@testable import Reactor

#if canImport(Glibc)
import Glibc
#endif

private final class ClientRecorder: HTTPClientConnectionDelegate {
    var heads: [(Int, HTTPHeaders)] = []
    /// The connection's declaredContentLength when each head arrived.
    var lengths: [Int?] = []
    var body: [UInt8] = []
    var finished = 0
    var failures: [HTTPClientFailure] = []
    /// Like the Engine's drivers: a finished exchange hands its connection back to the pool.
    var pool: HTTPClientPool?

    var bodyText: String { String(decoding: body, as: UTF8.self) }

    func upstream(_ c: HTTPClientConnection, didReceiveHead status: Int, headers: HTTPHeaders) {
        heads.append((status, headers))
        lengths.append(c.declaredContentLength)
    }
    func upstream(_ c: HTTPClientConnection, didReceiveBody bytes: UnsafeRawBufferPointer) { body += bytes }
    func upstreamDidFinish(_ c: HTTPClientConnection) {
        finished += 1
        pool?.release(c)
    }
    func upstream(_ c: HTTPClientConnection, didFail failure: HTTPClientFailure) { failures.append(failure) }
}

/// A listening socket on 127.0.0.1 and the one connection it accepted, driven by the test.
private final class ScriptedUpstream {
    let loop = Loop()
    let endpoint: Endpoint
    private let listenFd: Int32
    private(set) var peers: [Int32] = []
    var peer: Int32 { peers.last ?? -1 }

    init() {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        precondition(fd >= 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        precondition(rc == 0 && listen(fd, 8) == 0)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        _ = evutil_make_socket_nonblocking(fd)
        listenFd = fd
        endpoint = Endpoint(host: "127.0.0.1", port: Int(UInt16(bigEndian: addr.sin_port)))!
    }

    deinit {
        for p in peers { close(p) }
        close(listenFd)
    }

    func spin(_ passes: Int = 20) {
        for _ in 0..<passes { loop.runOnce(nonBlocking: true) }
    }

    /// Accepts the next connection and reads one request head from it (the tests send no body).
    @discardableResult
    func awaitRequest(newConnection: Bool = true) -> String {
        let deadline = Loop.nowNanos() + 5_000_000_000
        if newConnection {
            var fd: Int32 = -1
            while fd < 0 && Loop.nowNanos() < deadline {
                spin(2)
                fd = accept(listenFd, nil, nil)
            }
            precondition(fd >= 0, "no connection")
            _ = evutil_make_socket_nonblocking(fd)
            peers.append(fd)
        }
        var got: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while Loop.nowNanos() < deadline {
            spin(2)
            let n = read(peer, &buf, buf.count)
            if n > 0 { got += buf[0..<n] }
            let s = String(decoding: got, as: UTF8.self)
            if s.hasSuffix("\r\n\r\n") { return s }
        }
        Issue.record("no request head")
        return ""
    }

    /// Closes the upstream's end of the current connection.
    func hangUp() {
        close(peers.removeLast())
        spin()
    }

    /// Writes `bytes` as one write and lets the loop read them.
    func reply(_ bytes: String) {
        var s = bytes
        s.withUTF8 { p in _ = write(peer, p.baseAddress, p.count) }
        spin()
    }
}

private func get(_ c: HTTPClientConnection) {
    c.send(method: "GET", path: "/v1/models", headers: HTTPHeaders(), body: nil)
}

/// A connection with `rec` as delegate that has sent its request and been accepted.
private func connected(_ up: ScriptedUpstream, _ rec: ClientRecorder) -> HTTPClientConnection {
    let c = HTTPClientConnection(loop: up.loop, endpoint: up.endpoint)
    c.delegate = rec
    get(c)
    up.awaitRequest()
    return c
}

@Suite struct HTTPClientConnectionTests {
    @Test func cleanResponseKeepsTheConnectionForReuse() {
        let up = ScriptedUpstream()
        let pool = HTTPClientPool(loop: up.loop, endpoint: up.endpoint)
        let rec = ClientRecorder()
        rec.pool = pool
        let c = pool.acquire()
        c.delegate = rec
        get(c)
        up.awaitRequest()
        up.reply("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
        #expect(rec.finished == 1 && rec.bodyText == "first")
        #expect(pool.idleCount == 1 && !c.isClosed)
        let again = pool.acquire()
        #expect(again === c)
        again.delegate = rec
        get(again)
        up.awaitRequest(newConnection: false)
        up.reply("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
        #expect(rec.finished == 2 && rec.bodyText == "firstsecond" && rec.failures.isEmpty)
        #expect(pool.opened == 1)
        // Each head's own length, as the delegate reads it when the head arrives.
        #expect(rec.lengths == [5, 6])
    }

    /// The head's lines in wire form whatever pieces http-parser hands them over in: a head read
    /// a byte at a time and the same head in one read give the same headers (a folded value's
    /// line break as a space, an empty value), and the next head on the connection is its own.
    @Test func headLinesAreTheSameWhateverThePieces() {
        let up = ScriptedUpstream()
        let pool = HTTPClientPool(loop: up.loop, endpoint: up.endpoint)
        let rec = ClientRecorder()
        rec.pool = pool
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Folded: one\r\n two\r\nX-Empty:\r\nContent-Length: 2\r\n\r\n"
        let want: [HTTPHeaders.Field] = [.init("Content-Type", "application/json"), .init("X-Folded", "one two"),
                                         .init("X-Empty", ""), .init("Content-Length", "2")]
        for byteAtATime in [true, false] {
            let c = pool.acquire()
            c.delegate = rec
            get(c)
            up.awaitRequest(newConnection: byteAtATime)
            if byteAtATime {
                for b in head.utf8 { up.reply(String(decoding: [b], as: UTF8.self)) }
                up.reply("ok")
            } else {
                up.reply(head + "ok")
            }
        }
        #expect(rec.heads.count == 2 && rec.finished == 2 && rec.failures.isEmpty && rec.bodyText == "okok")
        #expect(rec.heads.map { $0.1.items } == [want, want])
        #expect(rec.heads[0].1 == rec.heads[1].1)
        // The next head on the same connection is its own; the ones still held are unchanged.
        let again = pool.acquire()
        again.delegate = rec
        get(again)
        up.awaitRequest(newConnection: false)
        up.reply("HTTP/1.1 404 Not Found\r\nX-Only: this\r\nContent-Length: 0\r\n\r\n")
        #expect(rec.heads.count == 3 && rec.heads[2].0 == 404)
        #expect(rec.heads[2].1.items == [.init("X-Only", "this"), .init("Content-Length", "0")])
        #expect(rec.heads[0].1.items == want && rec.heads[1].1.items == want)
        #expect(pool.opened == 1)
    }

    @Test func declaredContentLengthIsEachFinalHeadsOwn() {
        let up = ScriptedUpstream()
        let pool = HTTPClientPool(loop: up.loop, endpoint: up.endpoint)
        let rec = ClientRecorder()
        rec.pool = pool
        func exchange(_ response: String, newConnection: Bool) {
            let c = pool.acquire()
            c.delegate = rec
            get(c)
            up.awaitRequest(newConnection: newConnection)
            up.reply(response)
        }
        // A length, then a chunked body (none), then an interim head's length that is not the
        // final one's, then an empty body's zero.
        exchange("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"id\":\"a\"}\n", newConnection: true)
        exchange("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", newConnection: false)
        exchange("HTTP/1.1 103 Early Hints\r\nContent-Length: 7\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", newConnection: false)
        #expect(rec.lengths == [11, nil, nil])
        #expect(rec.finished == 2 && rec.failures.isEmpty)
        up.hangUp()
        #expect(rec.finished == 3 && rec.bodyText == "{\"id\":\"a\"}\nhello")
        exchange("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", newConnection: true)
        #expect(rec.lengths == [11, nil, nil, 0] && rec.finished == 4 && rec.failures.isEmpty)
    }

    @Test func prebuiltHeadsStayExactAcrossRequestsOnOneConnection() {
        // The head up to the per-request value is kept from the last request when it matches:
        // every request's head must still be exactly its own.
        let up = ScriptedUpstream()
        let pool = HTTPClientPool(loop: up.loop, endpoint: up.endpoint)
        let rec = ClientRecorder()
        rec.pool = pool
        let block = Array("content-type: application/json\r\n".utf8)
        let host = "host: 127.0.0.1:\(up.endpoint.port)\r\n"
        func post(_ path: String, _ id: String, block: [UInt8], newConnection: Bool) -> String {
            let c = pool.acquire()
            c.delegate = rec
            c.send(method: "POST", path: path, headerBlock: block, name: "x-request-id", value: id,
                   body: UnsafeRawBufferPointer(start: nil, count: 0))
            let head = up.awaitRequest(newConnection: newConnection)
            up.reply("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            return head
        }
        #expect(post("/v1/chat/completions", "first-id", block: block, newConnection: true)
                == "POST /v1/chat/completions HTTP/1.1\r\n" + host + "content-type: application/json\r\nx-request-id: first-id\r\ncontent-length: 0\r\n\r\n")
        #expect(post("/v1/chat/completions", "2", block: block, newConnection: false)
                == "POST /v1/chat/completions HTTP/1.1\r\n" + host + "content-type: application/json\r\nx-request-id: 2\r\ncontent-length: 0\r\n\r\n")
        #expect(post("/v1/completions", "third", block: block, newConnection: false)
                == "POST /v1/completions HTTP/1.1\r\n" + host + "content-type: application/json\r\nx-request-id: third\r\ncontent-length: 0\r\n\r\n")
        // Another block (the same bytes in a new array, then other bytes).
        #expect(post("/v1/completions", "4", block: Array("content-type: application/json\r\n".utf8), newConnection: false)
                == "POST /v1/completions HTTP/1.1\r\n" + host + "content-type: application/json\r\nx-request-id: 4\r\ncontent-length: 0\r\n\r\n")
        #expect(post("/v1/completions", "5", block: Array("authorization: Bearer k\r\n".utf8), newConnection: false)
                == "POST /v1/completions HTTP/1.1\r\n" + host + "authorization: Bearer k\r\nx-request-id: 5\r\ncontent-length: 0\r\n\r\n")
        // A request of the other form in between, then the prebuilt form again.
        let c = pool.acquire()
        c.delegate = rec
        get(c)
        #expect(up.awaitRequest(newConnection: false) == "GET /v1/models HTTP/1.1\r\n" + host + "\r\n")
        up.reply("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        #expect(post("/v1/completions", "6", block: block, newConnection: false)
                == "POST /v1/completions HTTP/1.1\r\n" + host + "content-type: application/json\r\nx-request-id: 6\r\ncontent-length: 0\r\n\r\n")
        #expect(rec.finished == 7 && rec.failures.isEmpty && pool.opened == 1)
    }

    @Test func interim100IsSkippedAndTheFinalHeadDelivered() {
        let up = ScriptedUpstream()
        let rec = ClientRecorder()
        let c = connected(up, rec)
        up.reply("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"id\":\"a\"}\n")
        #expect(rec.heads.map(\.0) == [200])
        #expect(rec.heads.first?.1["content-type"] == "application/json")
        #expect(rec.bodyText == "{\"id\":\"a\"}\n")
        #expect(rec.finished == 1 && rec.failures.isEmpty)
        #expect(!c.isClosed)
        c.close()
    }

    @Test func interim100InItsOwnReadKeepsTheExchangeWaiting() {
        let up = ScriptedUpstream()
        let rec = ClientRecorder()
        let c = connected(up, rec)
        up.reply("HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n")
        #expect(rec.heads.isEmpty && rec.finished == 0 && rec.failures.isEmpty)
        #expect(c.inExchange && !c.isClosed)
        up.reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        #expect(rec.heads.map(\.0) == [200])
        #expect(rec.heads.first?.1["x-interim"] == nil)
        #expect(rec.bodyText == "ok" && rec.finished == 1)
        c.close()
    }

    @Test func earlyHints103IsSkipped() {
        let up = ScriptedUpstream()
        let rec = ClientRecorder()
        let c = connected(up, rec)
        up.reply("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                 + "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        #expect(rec.heads.map(\.0) == [200])
        #expect(rec.heads.first?.1["link"] == nil)
        #expect(rec.bodyText == "hello" && rec.finished == 1 && rec.failures.isEmpty)
        #expect(!c.isClosed)
        c.close()
    }

    @Test func endlessInterimResponsesAreMalformed() {
        let up = ScriptedUpstream()
        let rec = ClientRecorder()
        let c = connected(up, rec)
        up.reply(String(repeating: "HTTP/1.1 100 Continue\r\n\r\n", count: 6) + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        #expect(rec.heads.isEmpty && rec.failures == [.malformed])
        #expect(c.isClosed)
    }

    @Test func twoResponsesToOneRequestRetireTheConnection() {
        let up = ScriptedUpstream()
        let pool = HTTPClientPool(loop: up.loop, endpoint: up.endpoint)
        let rec = ClientRecorder()
        rec.pool = pool
        let c = pool.acquire()
        c.delegate = rec
        get(c)
        up.awaitRequest()
        up.reply("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
                 + "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nSTALE-SECOND")
        #expect(rec.heads.map(\.0) == [200])
        #expect(rec.bodyText == "first" && rec.finished == 1 && rec.failures.isEmpty)
        #expect(c.isClosed)
        #expect(pool.idleCount == 0)
        let next = pool.acquire()
        #expect(next !== c && pool.opened == 2)
        next.close()
    }

    @Test func garbageAfterTheBodyRetiresTheConnection() {
        let up = ScriptedUpstream()
        let pool = HTTPClientPool(loop: up.loop, endpoint: up.endpoint)
        let rec = ClientRecorder()
        rec.pool = pool
        let c = pool.acquire()
        c.delegate = rec
        get(c)
        up.awaitRequest()
        up.reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\u{01}junk\r\n")
        #expect(rec.bodyText == "ok" && rec.finished == 1 && rec.failures.isEmpty)
        #expect(c.isClosed && pool.idleCount == 0)
    }

    @Test func bytesAfterANoContentResponseRetireTheConnection() {
        // 204 ends at the blank line (RFC 9112 §6.3) whatever Content-Length says.
        let up = ScriptedUpstream()
        let rec = ClientRecorder()
        let c = connected(up, rec)
        up.reply("HTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\nbody")
        #expect(rec.heads.map(\.0) == [204] && rec.body.isEmpty && rec.finished == 1)
        #expect(c.isClosed)
    }

    @Test func bytesOnAnIdleConnectionCloseIt() {
        let up = ScriptedUpstream()
        let pool = HTTPClientPool(loop: up.loop, endpoint: up.endpoint)
        let rec = ClientRecorder()
        rec.pool = pool
        let c = pool.acquire()
        c.delegate = rec
        get(c)
        up.awaitRequest()
        up.reply("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
        #expect(rec.finished == 1 && pool.idleCount == 1 && !c.isClosed)
        up.reply("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nSTALE-SECOND")
        #expect(c.isClosed && pool.idleCount == 0)
        #expect(rec.bodyText == "first" && rec.heads.count == 1)
        let next = pool.acquire()
        #expect(next !== c && pool.opened == 2)
        next.close()
    }

    @Test func anIdleConnectionPausedByItsDriverStillNoticesStrayBytes() {
        let up = ScriptedUpstream()
        let pool = HTTPClientPool(loop: up.loop, endpoint: up.endpoint)
        final class Pauser: HTTPClientConnectionDelegate {
            let pool: HTTPClientPool
            init(_ pool: HTTPClientPool) { self.pool = pool }
            func upstream(_ c: HTTPClientConnection, didReceiveHead status: Int, headers: HTTPHeaders) {}
            func upstream(_ c: HTTPClientConnection, didReceiveBody bytes: UnsafeRawBufferPointer) { c.pauseReading() }
            func upstreamDidFinish(_ c: HTTPClientConnection) { pool.release(c) }
            func upstream(_ c: HTTPClientConnection, didFail failure: HTTPClientFailure) {}
        }
        let driver = Pauser(pool)
        let c = pool.acquire()
        c.delegate = driver
        get(c)
        up.awaitRequest()
        up.reply("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
        #expect(pool.idleCount == 1 && !c.isClosed)
        up.reply("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
        #expect(c.isClosed && pool.idleCount == 0)
    }

    @Test func malformedStatusLineFailsTheExchange() {
        let up = ScriptedUpstream()
        let rec = ClientRecorder()
        let c = connected(up, rec)
        up.reply("HTTX/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        #expect(rec.heads.isEmpty && rec.body.isEmpty && rec.finished == 0)
        #expect(rec.failures == [.malformed])
        #expect(c.isClosed)
    }

    @Test func switchingProtocolsIsMalformed() {
        let up = ScriptedUpstream()
        let rec = ClientRecorder()
        let c = connected(up, rec)
        up.reply("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
        #expect(rec.heads.isEmpty && rec.finished == 0)
        #expect(rec.failures == [.malformed])
        #expect(c.isClosed)
    }

    /// Heads that Debian's non-strict http-parser accepts and strict framing refuses.
    @Test(arguments: [
        "HTXP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "HTTP-1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 999 Whatever\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\rXContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\rXok",
        "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nContent Length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    ])
    func laxHeadIsMalformed(_ response: String) {
        let up = ScriptedUpstream()
        let rec = ClientRecorder()
        let c = connected(up, rec)
        up.reply(response)
        #expect(rec.heads.isEmpty && rec.body.isEmpty && rec.finished == 0)
        #expect(rec.failures == [.malformed])
        #expect(c.isClosed)
    }

    /// Chunked framing that Debian's http-parser accepts: the bad chunk's data never goes out.
    @Test(arguments: [
        "2\r\nhiXY0\r\n\r\n",       // chunk data not followed by CRLF
        "2\r\nhi\nX0\r\n\r\n",      // ... nor by a bare LF
        "2\r\nhi\r\n2\rXno\r\n0\r\n\r\n", // chunk-size line ends in CR without LF
        "2\r\nhi\r\n0\r\n\rX",      // last chunk's blank line
    ])
    func laxChunkFramingIsMalformed(_ chunks: String) {
        let up = ScriptedUpstream()
        let rec = ClientRecorder()
        let c = connected(up, rec)
        up.reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
        #expect(rec.heads.map(\.0) == [200])
        #expect(rec.bodyText == "hi")
        #expect(rec.finished == 0 && rec.failures == [.malformed])
        #expect(c.isClosed)
    }

    @Test func aResponseArrivingByteByByteIsFramedAsInOneRead() {
        let up = ScriptedUpstream()
        let rec = ClientRecorder()
        let c = connected(up, rec)
        let response = "HTTP/1.1 103 Early Hints\r\nLink: <x>\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "7\r\ndata: 1\r\n8;ext=1\r\n\ndata: 2\r\n0\r\nTrailer: x\r\n\r\n"
        for b in response.utf8 {
            up.reply(String(decoding: [b], as: UTF8.self))
            #expect(rec.failures.isEmpty)
        }
        #expect(rec.heads.map(\.0) == [200])
        #expect(rec.bodyText == "data: 1\ndata: 2")
        #expect(rec.finished == 1 && !c.isClosed)
        c.close()
    }

    @Test func closeDelimitedBodyStillCompletes() {
        let up = ScriptedUpstream()
        let rec = ClientRecorder()
        let c = connected(up, rec)
        up.reply("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close")
        up.hangUp()
        #expect(rec.heads.map(\.0) == [200] && rec.bodyText == "until close")
        #expect(rec.finished == 1 && rec.failures.isEmpty && c.isClosed)
    }

    /// The driver that holds a connection lets go of it inside its socket's read callback (the
    /// socket's events borrow the socket, the parser's callbacks the connection: neither may be
    /// freed there). Closed first or not, both are alive for the rest of the callback; a closed
    /// one is freed after the pass (the graveyard), an open one keeps itself until close().
    @Test(arguments: [true, false])
    func aConnectionLetGoInsideItsReadCallbackOutlivesIt(closesFirst: Bool) {
        let up = ScriptedUpstream()
        let holder = LettingGoHolder(closesFirst: closesFirst)
        weak var weakConnection: HTTPClientConnection?
        weak var weakSocket: StreamSocket?
        do {
            let c = HTTPClientConnection(loop: up.loop, endpoint: up.endpoint)
            holder.connection = c
            c.delegate = holder
            weakConnection = c
            get(c)
            up.awaitRequest()
            weakSocket = c.sock
        }
        #expect(weakConnection != nil && weakSocket != nil)
        holder.checkAlive = { weakConnection != nil && weakSocket != nil }
        up.reply("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst")
        #expect(holder.connection == nil && holder.aliveAfterLettingGo == true)
        if closesFirst {
            #expect(weakConnection == nil && weakSocket == nil)
        } else {
            // Still open: it keeps itself, reads the rest of its answer, and goes once closed.
            up.reply("-half")
            #expect(holder.body == "first-half" && holder.finished == 1)
            weakConnection?.close()
            up.spin()
            #expect(weakConnection == nil && weakSocket == nil)
        }
    }
}

/// A driver that drops its connection on the first body bytes (closing it first, or not).
private final class LettingGoHolder: HTTPClientConnectionDelegate {
    let closesFirst: Bool
    var connection: HTTPClientConnection?
    var checkAlive: () -> Bool = { false }
    var aliveAfterLettingGo: Bool?
    var body = ""
    var finished = 0

    init(closesFirst: Bool) { self.closesFirst = closesFirst }

    func upstream(_ c: HTTPClientConnection, didReceiveHead status: Int, headers: HTTPHeaders) {}
    func upstream(_ c: HTTPClientConnection, didReceiveBody bytes: UnsafeRawBufferPointer) {
        body += String(decoding: bytes, as: UTF8.self)
        guard connection != nil else { return }
        // No local reference: the holder's is the last one (the test let go of its own).
        if closesFirst {
            connection?.delegate = nil
            connection?.close()
        }
        connection = nil
        aliveAfterLettingGo = checkAlive()
    }
    func upstreamDidFinish(_ c: HTTPClientConnection) { finished += 1 }
    func upstream(_ c: HTTPClientConnection, didFail failure: HTTPClientFailure) {}
}

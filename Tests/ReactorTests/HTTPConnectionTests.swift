// Reactor tests: real libevent, no network — a socketpair carries bytes between a test "peer"
// and an HTTPServerConnection / HTTPClientConnection; timers run on the real loop.
import CEventShim
import Testing
@testable import Reactor

#if canImport(Glibc)
import Glibc
#endif

private final class Recorder: HTTPServerConnectionDelegate {
    var requests: [(HTTPRequestHead, [UInt8])] = []
    var failures: [HTTPServerFailure] = []
    var closed = 0
    var autoRespond = true

    func connection(_ c: HTTPServerConnection, didReceive head: HTTPRequestHead, body: [UInt8]) {
        requests.append((head, body))
        if autoRespond {
            c.writeResponse(status: 200, headers: HTTPHeaders([.init("content-type", "text/plain")]), body: Array("ok\(requests.count)".utf8))
        }
    }
    func connection(_ c: HTTPServerConnection, didFail failure: HTTPServerFailure) {
        failures.append(failure)
        c.writeResponse(status: 400, headers: HTTPHeaders(), body: Array("bad".utf8))
    }
    func connectionDidDrain(_ c: HTTPServerConnection) {}
    func connectionDidClose(_ c: HTTPServerConnection) { closed += 1 }
}

private func socketPair() -> (Int32, Int32) {
    var fds: [Int32] = [0, 0]
    let rc = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds)
    precondition(rc == 0)
    _ = evutil_make_socket_nonblocking(fds[0])
    return (fds[0], fds[1])
}

private func writeAll(_ fd: Int32, _ s: String) {
    var s = s
    s.withUTF8 { p in _ = write(fd, p.baseAddress, p.count) }
}

private func readAvailable(_ fd: Int32) -> String {
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    let flags = fcntl(fd, F_GETFL)
    _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    while true {
        let n = read(fd, &buf, buf.count)
        if n <= 0 { break }
        out += buf[0..<n]
    }
    _ = fcntl(fd, F_SETFL, flags)
    return String(decoding: out, as: UTF8.self)
}

/// A server connection on a socket pair, recorded by a Recorder, its peer nonblocking (the
/// tests that write and read in turns). Keep `c` alive for the test.
private func recordedServer(_ limits: HTTPServerLimits = HTTPServerLimits()) -> (Loop, Int32, Recorder, HTTPServerConnection) {
    let loop = Loop()
    let (a, peer) = socketPair()
    _ = fcntl(peer, F_SETFL, fcntl(peer, F_GETFL) | O_NONBLOCK)
    let rec = Recorder()
    let c = HTTPServerConnection(loop: loop, fd: a, id: 1, limits: limits)
    c.delegate = rec
    return (loop, peer, rec, c)
}

private func offset(of needle: String, in hay: String) -> Int {
    let h = Array(hay.utf8), n = Array(needle.utf8)
    guard h.count >= n.count else { return -1 }
    for i in 0...(h.count - n.count) where Array(h[i..<(i + n.count)]) == n { return i }
    return -1
}

private func spin(_ loop: Loop, _ passes: Int = 20) {
    for _ in 0..<passes { loop.runOnce(nonBlocking: true) }
}

/// A server connection that took "GET /s" from the returned peer and has sent a chunked SSE head
/// (its delegate answers nothing by itself).
private func chunkedStream(_ loop: Loop) -> (HTTPServerConnection, Int32) {
    let (a, peer) = socketPair()
    let rec = Recorder()
    rec.autoRespond = false
    let c = HTTPServerConnection(loop: loop, fd: a, id: 1, limits: HTTPServerLimits())
    c.delegate = rec
    writeAll(peer, "GET /s HTTP/1.1\r\n\r\n")
    spin(loop)
    c.writeChunkedHead(status: 200, headers: HTTPHeaders([.init("content-type", "text/event-stream")]))
    return (c, peer)
}

/// Reads `peer` (made nonblocking) while spinning `loop` until a chunked body's end arrives or
/// `timeout` ns pass, after the `already` bytes read; the body's chunks (after the head) and
/// whether the end came last with nothing after it.
private func readChunkedBody(_ peer: Int32, _ loop: Loop, already: [UInt8] = [], timeout: UInt64) -> ([[UInt8]], Bool) {
    var got = already
    var buf = [UInt8](repeating: 0, count: 65536)
    _ = fcntl(peer, F_SETFL, fcntl(peer, F_GETFL) | O_NONBLOCK)
    let deadline = Loop.nowNanos() + timeout
    while !got.suffix(5).elementsEqual("0\r\n\r\n".utf8) && Loop.nowNanos() < deadline {
        spin(loop, 2)
        let n = read(peer, &buf, buf.count)
        if n > 0 { got += buf[0..<n] }
    }
    // Past the head: each chunk is "<hex size>\r\n<bytes>\r\n", then "0\r\n\r\n".
    var at = offset(of: "\r\n\r\n", in: String(decoding: got.prefix(4096), as: UTF8.self)) + 4
    var chunks: [[UInt8]] = []
    while at < got.count {
        var line = at
        while line < got.count && got[line] != 0x0D { line += 1 }
        guard let size = Int(String(decoding: got[at..<line], as: UTF8.self), radix: 16) else { return (chunks, false) }
        at = line + 2
        if size == 0 { break }
        chunks.append(Array(got[at..<min(got.count, at + size)]))
        at += size
        guard at + 1 < got.count, got[at] == 0x0D, got[at + 1] == 0x0A else { return (chunks, false) }
        at += 2
    }
    return (chunks, at + 2 == got.count)
}

@Suite struct HTTPServerConnectionTests {
    @Test func parsesRequestWithBodyAndKeepsAlive() {
        let loop = Loop()
        let (a, peer) = socketPair()
        let rec = Recorder()
        let c = HTTPServerConnection(loop: loop, fd: a, id: 1, limits: HTTPServerLimits())
        c.delegate = rec
        writeAll(peer, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        spin(loop)
        #expect(rec.requests.count == 1)
        #expect(rec.requests.first?.0.method == "POST")
        #expect(rec.requests.first?.0.target == "/v1/completions")
        #expect(rec.requests.first?.0.headers["host"] == "x")
        #expect(rec.requests.first.map { String(decoding: $0.1, as: UTF8.self) } == "hello")
        let resp = readAvailable(peer)
        #expect(resp.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(resp.contains("content-length: 3\r\n"))
        #expect(resp.hasSuffix("\r\n\r\nok1"))
        #expect(!c.isClosed)
        close(peer)
        spin(loop)
        #expect(rec.closed == 1)
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() {
        let loop = Loop()
        let (a, peer) = socketPair()
        let rec = Recorder()
        let c = HTTPServerConnection(loop: loop, fd: a, id: 1, limits: HTTPServerLimits())
        c.delegate = rec
        writeAll(peer, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n")
        spin(loop)
        #expect(rec.requests.map { $0.0.target } == ["/a", "/b", "/c"])
        let resp = readAvailable(peer)
        let r1 = offset(of: "ok1", in: resp), r2 = offset(of: "ok2", in: resp), r3 = offset(of: "ok3", in: resp)
        #expect(r1 >= 0 && r1 < r2 && r2 < r3)
        close(peer)
        spin(loop)
    }

    /// HEAD gets GET's head (Content-Length of the body it would have had) and no body, so the
    /// pipelined GET after it is framed right; a chunked answer to HEAD sends no chunks either.
    @Test func headResponsesCarryNoBody() {
        let loop = Loop()
        let (a, peer) = socketPair()
        let rec = Recorder()
        let c = HTTPServerConnection(loop: loop, fd: a, id: 1, limits: HTTPServerLimits())
        c.delegate = rec
        writeAll(peer, "HEAD /metrics HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n")
        spin(loop)
        #expect(rec.requests.map { $0.0.method } == ["HEAD", "GET"])
        let resp = readAvailable(peer)
        #expect(resp == "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\n"
                + "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nok2")
        rec.autoRespond = false
        writeAll(peer, "HEAD /stream HTTP/1.1\r\n\r\n")
        spin(loop)
        c.writeChunkedHead(status: 200, headers: HTTPHeaders())
        Array("data: x\n\n".utf8).withUnsafeBytes { c.writeChunk($0) }
        c.endChunked()
        spin(loop)
        #expect(readAvailable(peer) == "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        #expect(!c.isClosed)
        close(peer)
        spin(loop)
    }

    @Test func peerAddressOfASocketPairIsUnix() {
        let loop = Loop()
        let (a, peer) = socketPair()
        let c = HTTPServerConnection(loop: loop, fd: a, id: 1, limits: HTTPServerLimits())
        #expect(c.peerAddress == "unix")
        c.close()
        close(peer)
        spin(loop)
    }

    @Test func waitsForResponseBeforeParsingTheNextPipelinedRequest() {
        let loop = Loop()
        let (a, peer) = socketPair()
        let rec = Recorder()
        rec.autoRespond = false
        let c = HTTPServerConnection(loop: loop, fd: a, id: 1, limits: HTTPServerLimits())
        c.delegate = rec
        writeAll(peer, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
        spin(loop)
        #expect(rec.requests.count == 1)
        c.writeResponse(status: 200, headers: HTTPHeaders(), body: [])
        spin(loop)
        #expect(rec.requests.count == 2)
        close(peer)
        spin(loop)
    }

    @Test func chunkedRequestBodyIsReassembled() {
        let loop = Loop()
        let (a, peer) = socketPair()
        let rec = Recorder()
        let c = HTTPServerConnection(loop: loop, fd: a, id: 1, limits: HTTPServerLimits())
        c.delegate = rec
        writeAll(peer, "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        spin(loop)
        #expect(rec.requests.first.map { String(decoding: $0.1, as: UTF8.self) } == "abcde")
        close(peer)
        spin(loop)
    }

    /// Bodies live in memory the connection reuses: a large one (past what it keeps), then small
    /// ones, then a chunked one growing past its first room, each arrive whole and alone, on one
    /// connection, through the array delegate method and the bytes one alike.
    @Test func bodiesOfEverySizeArriveWholeOnOneConnection() {
        let (loop, peer, rec, _) = recordedServer()  // the connection holds itself until closed
        let big = String(repeating: "0123456789", count: 10_000)
        var sent = Array("POST /big HTTP/1.1\r\nContent-Length: \(big.utf8.count)\r\n\r\n\(big)".utf8)
        sent += Array("POST /s HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".utf8)
        sent += Array("POST /e HTTP/1.1\r\nContent-Length: 0\r\n\r\n".utf8)
        let chunks = (0..<40).map { String(repeating: Character(UnicodeScalar(UInt8(65 + $0 % 26))), count: 100) }
        sent += Array("POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
        for ch in chunks { sent += Array("64\r\n\(ch)\r\n".utf8) }
        sent += Array("0\r\n\r\n".utf8)
        var at = 0
        let deadline = Loop.nowNanos() + 5_000_000_000
        var sink = [UInt8](repeating: 0, count: 65536)
        while rec.requests.count < 4 && Loop.nowNanos() < deadline {
            if at < sent.count {
                let n = sent.withUnsafeBytes { write(peer, $0.baseAddress! + at, min(8192, sent.count - at)) }
                if n > 0 { at += n }
            }
            spin(loop, 2)
            _ = read(peer, &sink, sink.count)
        }
        let bodies = rec.requests.map { String(decoding: $0.1, as: UTF8.self) }
        #expect(bodies == [big, "abc", "", chunks.joined()])
        close(peer)
        spin(loop)
    }

    /// A body in one read is lent where it lies; one that spans reads is copied before its first
    /// read goes (its first piece was lent until then): each arrives whole, then, on the same
    /// connection, a body after it in one read.
    @Test func bodiesSplitAcrossReadsArriveWhole() {
        let (loop, peer, rec, _) = recordedServer()  // the connection holds itself until closed
        var sink = [UInt8](repeating: 0, count: 65536)
        let sends: [[String]] = [
            // (the second read is longer than the first: read into the same memory, it covers
            // where the first piece lay, so a piece not copied in time would read its bytes)
            ["POST /a HTTP/1.1\r\nContent-Length: 205\r\n\r\nabcde", String(repeating: "f", count: 200)],
            ["POST /b HTTP/1.1\r\nContent-Length: 4\r\n\r\nwxyz"],
            ["POST /c HTTP/1.1\r\nContent-Length: 6\r\n\r\n1", "2", "3456"],
            ["POST /d HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", "3\r\ncde\r\n0\r\n\r\n"],
            ["POST /e HTTP/1.1\r\nContent-Length: 3\r\n\r\n", "xyz"],
        ]
        for pieces in sends {
            for piece in pieces {
                writeAll(peer, piece)
                spin(loop, 3)
            }
            _ = read(peer, &sink, sink.count)
        }
        #expect(rec.requests.map { String(decoding: $0.1, as: UTF8.self) } == ["abcde" + String(repeating: "f", count: 200), "wxyz", "123456", "abcde", "xyz"])
        close(peer)
        spin(loop)
    }

    /// A target is compared with the last one where the parser reads it; one that arrives in
    /// pieces (the first of which may equal the last target) is still collected whole.
    @Test func targetsRepeatedOrSplitAcrossReadsArriveWhole() {
        let (loop, peer, rec, _) = recordedServer()  // the connection holds itself until closed
        let sends: [[String]] = [
            ["GET /v1/x HTTP/1.1\r\n\r\n"], ["GET /v1/x HTTP/1.1\r\n\r\n"],
            ["GET /v1/", "x HTTP/1.1\r\n\r\n"], ["GET /v1/x", "y?q=1 HTTP/1.1\r\n\r\n"],
            ["GET /v1/xy?q=1 HTTP/1.1\r\n\r\n"], ["GET /z HTTP/1.1\r\n\r\n"], ["GET /v1/x", " HTTP/1.1\r\n\r\n"],
        ]
        var sink = [UInt8](repeating: 0, count: 65536)
        for pieces in sends {
            for piece in pieces {
                writeAll(peer, piece)
                spin(loop, 3)
            }
            _ = read(peer, &sink, sink.count)
        }
        #expect(rec.requests.map { $0.0.target } == ["/v1/x", "/v1/x", "/v1/x", "/v1/xy?q=1", "/v1/xy?q=1", "/z", "/v1/x"])
        close(peer)
        spin(loop)
    }

    @Test func oversizedBodyIsRefusedBeforeItIsRead() {
        let loop = Loop()
        let (a, peer) = socketPair()
        let rec = Recorder()
        let c = HTTPServerConnection(loop: loop, fd: a, id: 1, limits: HTTPServerLimits(maxBodyBytes: 10))
        c.delegate = rec
        writeAll(peer, "POST /x HTTP/1.1\r\nContent-Length: 11\r\n\r\n")
        spin(loop)
        #expect(rec.failures == [.bodyTooLarge])
        #expect(readAvailable(peer).hasPrefix("HTTP/1.1 400"))
        spin(loop)
        #expect(c.isClosed)
        close(peer)
    }

    @Test func oversizedChunkedBodyIsRefused() {
        let loop = Loop()
        let (a, peer) = socketPair()
        let rec = Recorder()
        let c = HTTPServerConnection(loop: loop, fd: a, id: 1, limits: HTTPServerLimits(maxBodyBytes: 4))
        c.delegate = rec
        writeAll(peer, "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n")
        spin(loop)
        #expect(rec.failures == [.bodyTooLarge])
        _ = c
        close(peer)
        spin(loop)
    }

    @Test func oversizedHeadersAreRefused() {
        let loop = Loop()
        let (a, peer) = socketPair()
        let rec = Recorder()
        let c = HTTPServerConnection(loop: loop, fd: a, id: 1, limits: HTTPServerLimits(maxHeaderBytes: 64))
        c.delegate = rec
        writeAll(peer, "GET /x HTTP/1.1\r\nX-Long: " + String(repeating: "a", count: 200) + "\r\n\r\n")
        spin(loop)
        #expect(rec.failures == [.headersTooLarge])
        _ = c
        close(peer)
        spin(loop)
    }

    @Test func garbageIsMalformed() {
        let loop = Loop()
        let (a, peer) = socketPair()
        let rec = Recorder()
        let c = HTTPServerConnection(loop: loop, fd: a, id: 1, limits: HTTPServerLimits())
        c.delegate = rec
        writeAll(peer, "\u{01}\u{02}garbage garbage\r\n\r\n")
        spin(loop)
        #expect(rec.failures.count == 1)
        if case .malformed = rec.failures.first { } else { Issue.record("expected malformed, got \(rec.failures)") }
        _ = c
        close(peer)
        spin(loop)
    }

    @Test func slowRequestTimesOut() {
        let loop = Loop()
        let (a, peer) = socketPair()
        let rec = Recorder()
        let c = HTTPServerConnection(loop: loop, fd: a, id: 1, limits: HTTPServerLimits(readTimeout: .milliseconds(50)))
        c.delegate = rec
        writeAll(peer, "POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
        spin(loop)
        let deadline = Loop.nowNanos() + 2_000_000_000
        while rec.failures.isEmpty && Loop.nowNanos() < deadline { loop.runOnce() }
        #expect(rec.failures == [.readTimeout])
        _ = c
        close(peer)
        spin(loop)
    }

    /// Response heads exactly: any status line (with its reason), a header block larger than the
    /// head buffer starts with, the length's digits, and `connection: close` on the last response.
    @Test func responseHeadsAreComposedExactly() {
        let (loop, peer, rec, c) = recordedServer()
        rec.autoRespond = false
        let big = String(repeating: "v", count: 2000)
        let cases: [(Int, HTTPHeaders, Int, String)] = [
            (200, HTTPHeaders([.init("x-a", "1")]), 0, "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n"),
            (431, HTTPHeaders(), 9, "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 9\r\n\r\n"),
            (299, HTTPHeaders([.init("x-big", big)]), 1234567,
             "HTTP/1.1 299 Status\r\nx-big: \(big)\r\ncontent-length: 1234567\r\n\r\n"),
            (503, HTTPHeaders([.init("x-b", "2")]), 10, "HTTP/1.1 503 Service Unavailable\r\nx-b: 2\r\ncontent-length: 10\r\nconnection: close\r\n\r\n"),
        ]
        for (i, (status, headers, length, want)) in cases.enumerated() {
            let last = i == cases.count - 1
            writeAll(peer, "HEAD /h HTTP/1.1\r\nHost: x\r\n\(last ? "Connection: close\r\n" : "")\r\n")
            spin(loop)
            #expect(rec.requests.count == i + 1)
            // A HEAD response: the head alone, with the length the body would have had.
            c.writeResponse(status: status, headers: headers, body: [UInt8](repeating: 0x61, count: length))
            spin(loop)
            #expect(readAvailable(peer) == want)
        }
        close(peer)
        spin(loop)
    }

    @Test func decimalDigits() {
        var buf = [UInt8](repeating: 0, count: 24)
        for v in [0, 7, 9, 10, 99, 100, 12345, 1 << 40, Int.max] {
            let n = buf.withUnsafeMutableBytes { writeDecimal(v, to: $0.baseAddress!) }
            #expect(String(decoding: buf[0..<n], as: UTF8.self) == String(v))
        }
        #expect(buf.withUnsafeMutableBytes { writeDecimal(-5, to: $0.baseAddress!) } == 1 && buf[0] == 0x30)
    }

    /// The connection's deadline is kept lazily (its timer is not moved per request): requests
    /// arriving within the idle timeout keep a connection open long past it, and once they stop,
    /// it closes one idle timeout after the last response (not earlier, not much later).
    @Test func keepAliveRequestsMoveTheIdleDeadline() {
        let (loop, peer, rec, c) = recordedServer(HTTPServerLimits(readTimeout: .milliseconds(60), idleTimeout: .milliseconds(150)))
        // Ten requests 50 ms apart: 500 ms, over three idle timeouts.
        for i in 1...10 {
            writeAll(peer, "GET /r\(i) HTTP/1.1\r\nHost: x\r\n\r\n")
            let until = Loop.nowNanos() + 50_000_000
            while Loop.nowNanos() < until { loop.runOnce(nonBlocking: true); usleep(1000) }
        }
        #expect(rec.requests.count == 10)
        #expect(rec.closed == 0)
        #expect(readAvailable(peer).split(separator: "HTTP/1.1 200 OK", omittingEmptySubsequences: true).count == 10)
        // The last answer went out ~50 ms ago: open for ~100 ms more, closed within a second.
        let last = Loop.nowNanos() - 50_000_000
        while rec.closed == 0 && Loop.nowNanos() < last + 2_000_000_000 { loop.runOnce(nonBlocking: true); usleep(1000) }
        let closedAfter = Loop.nowNanos() - last
        #expect(rec.closed == 1)
        #expect(closedAfter >= 140_000_000 && closedAfter < 1_000_000_000)
        _ = c
        close(peer)
        spin(loop)
    }

    /// A request that starts while the timer runs for a later idle deadline still times out one
    /// read timeout after its first byte.
    @Test func readTimeoutAfterAnAnsweredRequestCountsFromTheFirstByte() {
        let (loop, peer, rec, c) = recordedServer(HTTPServerLimits(readTimeout: .milliseconds(80), idleTimeout: .seconds(5)))
        writeAll(peer, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        spin(loop)
        #expect(rec.requests.count == 1)
        let idle = Loop.nowNanos() + 200_000_000
        while Loop.nowNanos() < idle { loop.runOnce(nonBlocking: true); usleep(1000) }
        writeAll(peer, "POST /b HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
        let start = Loop.nowNanos()
        while rec.failures.isEmpty && Loop.nowNanos() < start + 3_000_000_000 { loop.runOnce(nonBlocking: true); usleep(1000) }
        let took = Loop.nowNanos() - start
        #expect(rec.failures == [.readTimeout])
        #expect(took >= 70_000_000 && took < 1_000_000_000)
        _ = c
        close(peer)
        spin(loop)
    }

    @Test func slowReaderKeepsTheConnectionPastTheIdleTimeout() {
        let loop = Loop()
        let (a, peer) = socketPair()
        let rec = Recorder()
        rec.autoRespond = false
        let c = HTTPServerConnection(loop: loop, fd: a, id: 1, limits: HTTPServerLimits(idleTimeout: .milliseconds(100)))
        c.delegate = rec
        writeAll(peer, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        spin(loop)
        #expect(rec.requests.count == 1)
        let body = [UInt8](repeating: UInt8(ascii: "x"), count: 2 << 20)
        c.writeResponse(status: 200, headers: HTTPHeaders(), body: body)
        // Read 32 KiB every 20 ms: the response takes over a second to leave, ten idle periods.
        _ = fcntl(peer, F_SETFL, fcntl(peer, F_GETFL) | O_NONBLOCK)
        var buf = [UInt8](repeating: 0, count: 32768)
        var got = 0
        var sawEOF = false
        let deadline = Loop.nowNanos() + 30_000_000_000
        while got < body.count && !sawEOF && Loop.nowNanos() < deadline {
            usleep(20_000)
            spin(loop, 5)
            let n = read(peer, &buf, buf.count)
            if n == 0 { sawEOF = true } else if n > 0 { got += n }
        }
        #expect(!sawEOF)
        #expect(got >= body.count)  // head + the whole body (the head is a few dozen bytes)
        #expect(rec.closed == 0)
        _ = c
        close(peer)
        spin(loop)
    }

    /// Chunks made of several pieces, written straight from memory while the head is still
    /// queued, and far larger than the socket takes at once: the client gets every byte once, in
    /// order, in chunks of the right sizes, and (`last`) the end after the last one.
    @Test func chunksOfSeveralPiecesLeaveInOrderWhateverTheKernelTakes() {
        let loop = Loop()
        let (c, peer) = chunkedStream(loop)
        var sent: [[UInt8]] = []
        // First a chunk of more pieces than one writev takes (they are queued, then written).
        let many = (0..<300).map { Array("piece \($0);".utf8) }
        let joined = many.flatMap { $0 }
        sent.append(joined)
        joined.withUnsafeBytes { b in
            var at = 0
            let parts = many.map { p -> UnsafeRawBufferPointer in
                defer { at += p.count }
                return UnsafeRawBufferPointer(rebasing: b[at..<(at + p.count)])
            }
            parts.withUnsafeBufferPointer { c.writeChunk(parts: $0) }
        }
        for k in 0..<3 {
            let pieces: [[UInt8]] = [
                (0..<(100_000 + k)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ k) },
                Array("small\(k)".utf8),
                [],
                (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ k) },
            ]
            sent.append(pieces.flatMap { $0 })
            pieces[0].withUnsafeBytes { p0 in
                pieces[1].withUnsafeBytes { p1 in
                    pieces[2].withUnsafeBytes { p2 in
                        pieces[3].withUnsafeBytes { p3 in
                            [p0, p1, p2, p3].withUnsafeBufferPointer { c.writeChunk(parts: $0, last: k == 2) }
                        }
                    }
                }
            }
        }
        let (chunks, whole) = readChunkedBody(peer, loop, timeout: 10_000_000_000)
        #expect(chunks == sent)
        #expect(whole, "the end, then nothing")
        close(peer)
        spin(loop)
    }

    /// Thousands of small chunks written back to back to a peer that reads a little now and then
    /// (a flood of tokens to a slow reader: the output evbuffer holds many chains while the kernel
    /// takes part of a write): every byte arrives once and in order.
    @Test func manySmallChunksToAStalledReaderArriveWhole() {
        let loop = Loop()
        let (c, peer) = chunkedStream(loop)
        var sent: [[UInt8]] = []
        var got: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        _ = fcntl(peer, F_SETFL, fcntl(peer, F_GETFL) | O_NONBLOCK)
        for k in 0..<20_000 {
            let ev = Array("data: {\"n\":\(k),\"pad\":\"\(String(repeating: "x", count: k % 300))\"}\n\n".utf8)
            sent.append(ev)
            ev.withUnsafeBytes { c.writeChunk($0) }
            if k % 40 == 0 {
                // A little room now and then: the next writes are taken in part.
                let n = read(peer, &buf, 1 + k % 7000)
                if n > 0 { got += buf[0..<n] }
            }
            if k % 1000 == 0 { spin(loop, 1) }
        }
        c.endChunked()
        let (chunks, _) = readChunkedBody(peer, loop, already: got, timeout: 20_000_000_000)
        let firstDifference = chunks.indices.first { $0 >= sent.count || chunks[$0] != sent[$0] }
        #expect(chunks.count == sent.count && firstDifference == nil, "\(chunks.count) chunks; first wrong: \(String(describing: firstDifference))")
        close(peer)
        spin(loop)
    }

    @Test func chunkedResponseFraming() {
        let loop = Loop()
        let (c, peer) = chunkedStream(loop)
        Array("data: 1\n\n".utf8).withUnsafeBytes { c.writeChunk($0) }
        c.endChunked()
        spin(loop)
        let resp = readAvailable(peer)
        #expect(resp.contains("transfer-encoding: chunked\r\n"))
        #expect(resp.hasSuffix("\r\n\r\n9\r\ndata: 1\n\n\r\n0\r\n\r\n"))
        close(peer)
        spin(loop)
    }
}

// ResponseFramingCheck alone: the strict-mode rules on non-body bytes, whatever the read boundaries.
import Testing
@testable import Reactor

/// Feeds `parts` in order (a chunk's data ends after each part listed in `chunkEndsAfter`);
/// nil when every byte was accepted, else the index of the refused part.
private func firstRefused(_ parts: [String], chunkEndsAfter: Set<Int> = []) -> Int? {
    var check = ResponseFramingCheck()
    check.startMessage()
    for (i, p) in parts.enumerated() {
        let ok = Array(p.utf8).withUnsafeBytes { check.accept($0) }
        if !ok { return i }
        if chunkEndsAfter.contains(i) { check.chunkEnded() }
    }
    return nil
}

@Suite struct ResponseFramingCheckTests {
    @Test func strictHeadIsAcceptedAtEverySplit() {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        let bytes = Array(head.utf8)
        for cut in 0...bytes.count {
            let a = String(decoding: bytes[..<cut], as: UTF8.self), b = String(decoding: bytes[cut...], as: UTF8.self)
            #expect(firstRefused([a, b]) == nil, "cut at \(cut)")
        }
    }

    @Test func statusLineMustStartWithHTTPSlash() {
        #expect(firstRefused(["HTTX/1.1 200 OK\r\n"]) == 0)
        #expect(firstRefused(["HT", "TP-1.1 200 OK\r\n"]) == 1)
        #expect(firstRefused(["\r\nHTTP/1.1 200 OK\r\n"]) == 0)
        #expect(firstRefused(["HTTP/1.1 200 OK\n\n"]) == nil)  // bare LF lines: strict http-parser takes them too
    }

    @Test func carriageReturnMustBeFollowedByLineFeed() {
        #expect(firstRefused(["HTTP/1.1 200 OK\r", "X"]) == 1)
        #expect(firstRefused(["HTTP/1.1 200 OK\r", "\n"]) == nil)
    }

    @Test func chunkDataMustBeFollowedByCRLF() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n"
        #expect(firstRefused([head, "\r\n0\r\n\r\n"], chunkEndsAfter: [0]) == nil)
        #expect(firstRefused([head, "\r", "\n0\r\n\r\n"], chunkEndsAfter: [0]) == nil)
        #expect(firstRefused([head, "\n0\r\n\r\n"], chunkEndsAfter: [0]) == 1)
        #expect(firstRefused([head, "XY0\r\n\r\n"], chunkEndsAfter: [0]) == 1)
    }

    @Test func aNewMessageStartsTheStatusLineCheckAgain() {
        var check = ResponseFramingCheck()
        check.startMessage()
        #expect(Array("HTTP/1.1 100 Continue\r\n\r\n".utf8).withUnsafeBytes { check.accept($0) })
        check.startMessage()
        #expect(!Array("HTTX/1.1 200 OK\r\n".utf8).withUnsafeBytes { check.accept($0) })
    }
}

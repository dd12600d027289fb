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

/// The check skips from CR to CR inside header lines; over random framing bytes, random cuts and
/// chunk ends, it refuses exactly where the rules applied byte by byte do.
@Suite struct ResponseFramingCheckSkipTests {
    /// The rules one byte at a time (the definition the fast path must keep).
    struct ByteByByte {
        var matched = 0, afterCR = false, chunkEnded = false
        mutating func accept(_ b: UInt8) -> Bool {
            if matched < 5 {
                guard b == Array("HTTP/".utf8)[matched] else { return false }
                matched += 1
            } else if afterCR {
                guard b == 10 else { return false }
                afterCR = false
            } else if chunkEnded {
                guard b == 13 else { return false }
                chunkEnded = false
                afterCR = true
            } else if b == 13 {
                afterCR = true
            }
            return true
        }
    }

    @Test func skippingBetweenCRsRefusesWhereTheRulesDo() {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("HTTP/ 1a\r\n".utf8)
        for _ in 0..<3_000 {
            let prefix = Bool.random(using: &rng) ? Array("HTTP/1.1 200 OK\r\n".utf8) : []
            let bytes = prefix + (0..<Int.random(in: 0...40, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            var check = ResponseFramingCheck()
            check.startMessage()
            var ref = ByteByByte()
            var at = 0
            var refusedPart = -1, refRefusedPart = -1
            var part = 0
            while at < bytes.count {
                let end = min(bytes.count, at + Int.random(in: 1...9, using: &rng))
                let chunkEnds = Int.random(in: 0..<4, using: &rng) == 0
                if refusedPart < 0, !bytes[at..<end].withUnsafeBytes({ check.accept($0) }) { refusedPart = part }
                if refRefusedPart < 0, !bytes[at..<end].allSatisfy({ ref.accept($0) }) { refRefusedPart = part }
                if chunkEnds { check.chunkEnded(); ref.chunkEnded = true }
                at = end
                part += 1
            }
            #expect(refusedPart == refRefusedPart, "\(String(decoding: bytes, as: UTF8.self).debugDescription)")
        }
    }
}

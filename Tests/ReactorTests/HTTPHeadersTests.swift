// HTTPHeaders (wire-form lines) and HeaderAccumulator (http-parser's pieces) as values.
import Testing
@testable import Reactor

private func accumulate(_ steps: [(Bool, String)]) -> HTTPHeaders {
    var acc = HeaderAccumulator()
    for (isField, text) in steps {
        var t = text
        t.withUTF8 { p in
            p.withMemoryRebound(to: CChar.self) { c in
                if isField { acc.field(c.baseAddress!, c.count) } else { acc.value(c.baseAddress!, c.count) }
            }
        }
    }
    return acc.finish()
}

@Suite struct HTTPHeadersTests {
    @Test func addWritesWireLinesAndLooksUpCaseInsensitively() {
        var h = HTTPHeaders()
        #expect(h.isEmpty)
        h.add("Content-Type", "application/json")
        h.add("x-request-id", "abc")
        h.add("X-Request-Id", "second")
        #expect(h.block == Array("Content-Type: application/json\r\nx-request-id: abc\r\nX-Request-Id: second\r\n".utf8))
        #expect(h["content-type"] == "application/json")
        #expect(h["X-REQUEST-ID"] == "abc")  // the first one
        #expect(h["content-length"] == nil)
        #expect(h["content"] == nil)  // no prefix matches
        #expect(h.items == [.init("Content-Type", "application/json"), .init("x-request-id", "abc"), .init("X-Request-Id", "second")])
    }

    @Test func crAndLFCannotSplitALine() {
        var h = HTTPHeaders()
        h.add("x-a", "one\r\nx-injected: yes")
        #expect(h["x-injected"] == nil)
        #expect(h["x-a"] == "one  x-injected: yes")
        #expect(h.items.count == 1)
    }

    @Test func valuesWithColonsAndEmptyValues() {
        let h = HTTPHeaders([.init("host", "127.0.0.1:8000"), .init("x-empty", "")])
        #expect(h["host"] == "127.0.0.1:8000")
        #expect(h["x-empty"] == "")
        #expect(h.items.count == 2)
    }

    @Test func accumulatorJoinsPieces() {
        let h = accumulate([(true, "Cont"), (true, "ent-Type"), (false, "text/"), (false, "plain"),
                            (true, "X-Id"), (false, "7"), (true, "x-empty")])
        #expect(h["content-type"] == "text/plain")
        #expect(h["x-id"] == "7")
        #expect(h["x-empty"] == "")
        #expect(h.items.count == 3)
    }

    @Test func accumulatorIsEmptyAfterFinish() {
        var acc = HeaderAccumulator()
        "a".withCString { acc.field($0, 1) }
        "1".withCString { acc.value($0, 1) }
        #expect(acc.finish()["a"] == "1")
        #expect(acc.finish().isEmpty)
    }
}

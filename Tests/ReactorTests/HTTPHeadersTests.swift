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

    /// `add(name:_:)` (a literal name) writes what `add` writes, the value sanitized the same way.
    @Test func literalNameLookupsAreTheSubscripts() {
        var h = HTTPHeaders()
        h.add("Content-Type", "application/json")
        h.add("X-Request-Id", "abc")
        h.add("x-request-id", "second")
        h.add("Cache-Control", "")
        #expect(h.value("x-request-id") == "abc" && h.value("x-request-id") == h["x-request-id"])
        #expect(h.value("content-type") == "application/json")
        #expect(h.value("x-request") == nil && h.value("authorization") == nil)
        #expect(h.contains("cache-control") && h.contains("CONTENT-TYPE"))
        #expect(!h.contains("cache") && !h.contains("pragma") && !HTTPHeaders().contains("x-request-id"))
    }

    @Test func twoLookupsInOnePassAreTheTwoLookups() {
        var rng = SplitMix64(seed: 3)
        let names = ["Host", "X-Request-Id", "x-request-id", "Cache-Control", "cache-control", "X-Request", "Cache-Controls", "A"]
        for _ in 0..<2000 {
            var h = HTTPHeaders()
            for _ in 0..<Int.random(in: 0...6, using: &rng) {
                h.add(names.randomElement(using: &rng)!, ["", "v", " spaced", "a:b", "\tx"].randomElement(using: &rng)!)
            }
            let (a, b) = h.valueRanges("x-request-id", "cache-control")
            #expect(a.map { h.value(at: $0) } == h["x-request-id"] && (b != nil) == h.contains("cache-control"))
            #expect(b.map { h.value(at: $0) } == h["cache-control"])
        }
    }

    @Test func literalNamesWriteTheSameLines() {
        var a = HTTPHeaders(), b = HTTPHeaders()
        for v in ["abc", "", "with\r\nbreak", "lf\nonly", "cr\ronly"] {
            a.add("x-request-id", v)
            b.add(name: "x-request-id", v)
        }
        #expect(a.block == b.block)
        #expect(b["x-request-id"] == "abc")
        #expect(b.items.count == 5)
        #expect(!b.block.contains(10) || b.block.split(separator: 10).allSatisfy { $0.last == 13 })
    }

    /// `value(_:known:)` is the subscript's value, the known String itself when it is one;
    /// `append` adds another's lines as `add` wrote them.
    @Test func knownValuesAndAppendedLines() {
        var h = HTTPHeaders([.init("Content-Type", "text/event-stream")])
        let known = ["application/json", "text/event-stream"]
        #expect(h.value("content-type", known: known) == "text/event-stream")
        #expect(HTTPHeaders([.init("content-type", "text/event-streams")]).value("content-type", known: known) == "text/event-streams")
        #expect(HTTPHeaders([.init("content-type", "")]).value("content-type", known: known) == "")
        #expect(h.value("content-length", known: known) == nil)
        h.append(HTTPHeaders([.init("a", "1"), .init("b", "2")]))
        var same = HTTPHeaders([.init("Content-Type", "text/event-stream")])
        same.add("a", "1")
        same.add("b", "2")
        #expect(h == same)
        #expect(h["b"] == "2")
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

    /// The next message's headers are collected into the last message's buffer: what the last
    /// message's holder still sees must not change, and the new headers must be whole.
    @Test func reusingTheLastBufferLeavesHeldHeadersIntact() {
        func feed(_ acc: inout HeaderAccumulator, _ pairs: [(String, String)]) {
            for (n, v) in pairs {
                n.withCString { acc.field($0, n.utf8.count) }
                v.withCString { acc.value($0, v.utf8.count) }
            }
        }
        var acc = HeaderAccumulator()
        var last = HTTPHeaders()
        var rng = SystemRandomNumberGenerator()
        for round in 0..<50 {
            acc.reset(reusing: &last)
            let pairs = (0..<Int.random(in: 0...6, using: &rng)).map { i in ("x-h\(i)", String(repeating: "v", count: Int.random(in: 0...80, using: &rng)) + "\(round)") }
            feed(&acc, pairs)
            let h = acc.finish()
            let expected = pairs.map { HTTPHeaders.Field($0.0, $0.1) }
            #expect(h.items == expected)
            // Every other round the delegate keeps the headers: the next round must not touch them.
            let kept: HTTPHeaders? = round % 2 == 0 ? h : nil
            last = h
            acc.reset(reusing: &last)
            feed(&acc, [("x-other", "overwrites \(round)")])
            let next = acc.finish()
            #expect(next.items == [HTTPHeaders.Field("x-other", "overwrites \(round)")])
            if let kept { #expect(kept.items == expected) }
            last = next
        }
    }

    @Test func hasValueComparesTheFirstValueExactly() {
        let h = HTTPHeaders([.init("Content-Type", "application/json"), .init("content-type", "text/plain"), .init("x-a", "application/jsonx")])
        #expect(h.hasValue("content-type", "application/json"))
        #expect(!h.hasValue("content-type", "text/plain"))  // only the first counts, as the subscript
        #expect(!h.hasValue("x-a", "application/json"))
        #expect(!h.hasValue("x-missing", ""))
        #expect(HTTPHeaders([.init("x-e", "")]).hasValue("x-e", ""))
    }

    /// integer(_:) reads what Int(String) reads from the same value, on random near-numbers.
    @Test func integerAgreesWithIntOfTheString() {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("0123456789+- a9")
        var cases = ["", "0", "-0", "+7", "431", "-", "+", "9223372036854775807", "9223372036854775808",
                     "-9223372036854775808", "-9223372036854775809", "12a", "1 2", "00012"]
        for _ in 0..<2000 {
            cases.append(String((0..<Int.random(in: 0...21, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }))
        }
        for c in cases {
            let h = HTTPHeaders([.init("Content-Length", c)])
            // The stored value is what a lookup gives (leading blanks are not part of it).
            let stored = h["content-length"]!
            #expect(h.integer("content-length") == Int(stored), "\(c)")
        }
        #expect(HTTPHeaders().integer("content-length") == nil)
    }
}

@Suite struct HTTPRequestHeadPathTests {
    /// The path is the target up to the first `?` (bytes, so a multi-byte character before it stays whole).
    @Test func thePathStopsAtTheQuery() {
        func path(_ t: String) -> Substring { HTTPRequestHead(method: "GET", target: t, headers: HTTPHeaders(), keepAlive: true).path }
        #expect(path("/v1/chat/completions") == "/v1/chat/completions")
        #expect(path("/v1/models?x=1?y") == "/v1/models")
        #expect(path("/é/ü?q") == "/é/ü")
        #expect(path("?only") == "")
        #expect(path("") == "")
        #expect(path("/a?") == "/a")
    }

    /// Runs (the server's accumulator): fed the pieces a parser reports of one input, split into
    /// reads at any point (each read's bytes in a buffer of their own, `endOfInput` after each),
    /// the block is byte for byte what copying every piece gives — whatever the spacing, empty or
    /// missing values, bare LF, folded values with line breaks, trailing blanks.
    @Test func runsGiveTheBlockCopyingGives() {
        var rng = SplitMix64(seed: 11)
        let names = ["Host", "Content-Type", "X-A", "x-request-id", "Cache-Control", "A"]
        let separators = [":", ": ", ":  ", ":\t", ": \t"]
        let values = ["", "v", "a b", "trail  ", "x\ty", "fold\r\n more", "127.0.0.1:18511"]
        let ends = ["\r\n", "\n"]
        for _ in 0..<3000 {
            // The input, and the pieces as (isField, start, end) offsets into it.
            var input: [UInt8] = []
            var pieces: [(Bool, Int, Int)] = []
            for _ in 0..<Int.random(in: 1...5, using: &rng) {
                let name = Array(names.randomElement(using: &rng)!.utf8)
                pieces.append((true, input.count, input.count + name.count))
                input += name
                input += Array(separators.randomElement(using: &rng)!.utf8)
                let value = Array(values.randomElement(using: &rng)!.utf8)
                // An empty value is reported empty, or not at all.
                if !value.isEmpty || Bool.random(using: &rng) { pieces.append((false, input.count, input.count + value.count)) }
                input += value
                input += Array(ends.randomElement(using: &rng)!.utf8)
            }
            // Reads: split at up to two points; a piece across a split is reported in two parts.
            let cuts = (0..<Int.random(in: 0...2, using: &rng)).map { _ in Int.random(in: 0...input.count, using: &rng) }.sorted()
            let bounds = [0] + cuts + [input.count]
            var copying = HeaderAccumulator()
            var running = HeaderAccumulator()
            running.collectsRuns = true
            for r in 0..<(bounds.count - 1) {
                let lo = bounds[r], hi = bounds[r + 1]
                // Each read in a buffer of its own (so runs cannot span reads by accident).
                let read = UnsafeMutablePointer<UInt8>.allocate(capacity: max(1, hi - lo))
                input.withUnsafeBufferPointer { if hi > lo { read.update(from: $0.baseAddress! + lo, count: hi - lo) } }
                for (isField, a, b) in pieces {
                    let s = max(a, lo), e = min(b, hi)
                    guard s < e || (a == b && a >= lo && a < hi) || (a == b && a == hi && r == bounds.count - 2) else { continue }
                    let at = UnsafeRawPointer(read + (s - lo)).assumingMemoryBound(to: CChar.self)
                    if isField {
                        copying.field(at, e - s)
                        running.field(at, e - s)
                    } else {
                        copying.value(at, e - s)
                        running.value(at, e - s)
                    }
                }
                running.endOfInput()
                read.update(repeating: 0x5A, count: max(1, hi - lo))  // gone: a run left pointing here would show
                read.deallocate()
            }
            let want = copying.finish().block
            #expect(running.finish().block == want, "\(String(decoding: input, as: UTF8.self).debugDescription) cut at \(cuts)")
        }
    }
}

// ReplyStamp: a replayed answer's own id and created, written over the stored bytes guided by the
// parser. Exact bytes out: only the two top-level values change, whatever the spacing, escapes,
// key order, NUL characters or nested ids; SSE framing (CRLF, comments, several data lines) holds.
// Also: a stored answer with U+0000 inside, given in either form.
import Testing
@testable import Engine

private let stamp = ReplyStamp(id: "chatcmpl-new", created: 1_800_000_000)

private func stamped(_ json: String, _ s: ReplyStamp = stamp) -> String {
    String(decoding: s.stamped(json: Array(json.utf8)), as: UTF8.self)
}

private func stampedEvents(_ sse: String, _ s: ReplyStamp = stamp) -> String {
    String(decoding: s.stamped(events: Array(sse.utf8)), as: UTF8.self)
}

@Suite struct ReplyStampTests {
    @Test func idFollowsVLLMsFormForTheRequestId() {
        #expect(ReplyStamp(kind: .chat, requestId: "abc", created: 1).id == "chatcmpl-abc")
        #expect(ReplyStamp(kind: .completion, requestId: "abc", created: 1).id == "cmpl-abc")
    }

    @Test func onlyTheTopLevelValuesChange() {
        #expect(stamped(#"{"id":"chatcmpl-old","object":"chat.completion","created":1795614810,"model":"tiny"}"#)
                == #"{"id":"chatcmpl-new","object":"chat.completion","created":1800000000,"model":"tiny"}"#)
        // Spacing and newlines around the values are kept as they were.
        #expect(stamped("{ \"created\" :\n 12 ,\t\"id\" : \"x\" , \"model\":\"m\" }")
                == "{ \"created\" :\n 1800000000 ,\t\"id\" : \"chatcmpl-new\" , \"model\":\"m\" }")
        // An id nested in a choice (a tool call's) is not the response's.
        let nested = #"{"id":"old","choices":[{"message":{"tool_calls":[{"id":"call_1","created":5}]}}],"created":3}"#
        #expect(stamped(nested) == #"{"id":"chatcmpl-new","choices":[{"message":{"tool_calls":[{"id":"call_1","created":5}]}}],"created":1800000000}"#)
    }

    @Test func keysAreReadByTheParserNotMatchedAsText() {
        // An escaped key is still `id`; a value that merely contains `"id":` is left alone.
        #expect(stamped(#"{"\u0069d":"old","text":"\"id\":\"x\",\"created\":9","created":2}"#)
                == #"{"\u0069d":"chatcmpl-new","text":"\"id\":\"x\",\"created\":9","created":1800000000}"#)
        // A duplicated key: every copy (the client's parser may read either).
        #expect(stamped(#"{"id":"a","id":"b","created":1}"#) == #"{"id":"chatcmpl-new","id":"chatcmpl-new","created":1800000000}"#)
    }

    @Test func storedIdsWithEscapesAndNulAreReplacedWhole() {
        #expect(stamped(#"{"id":"chatcmpl-\"q\\ \u0000 é","created":1.5e9}"#)
                == #"{"id":"chatcmpl-new","created":1800000000}"#)
    }

    @Test func theNewIdIsWrittenAsAJSONString() {
        let odd = ReplyStamp(id: "chatcmpl-a\"b\\c\u{0}\u{1F}é", created: 0)
        #expect(stamped(#"{"id":"x","created":1}"#, odd) == #"{"id":"chatcmpl-a\"b\\c\u0000\u001fé","created":0}"#)
    }

    @Test func nulInsideContentIsCopiedAsItIs() {
        let body = #"{"id":"x","object":"chat.completion","created":1,"choices":[{"index":0,"message":{"role":"assistant","content":"a\u0000b"}}]}"#
        #expect(stamped(body) == body.replacing(#""id":"x""#, with: #""id":"chatcmpl-new""#).replacing(#""created":1,"#, with: #""created":1800000000,"#))
    }

    @Test func whatIsNotAnObjectWithThoseFieldsStaysAsItIs() {
        for s in ["[DONE]", "[1,2]", "\"id\"", "{\"id\":1,\"created\":\"now\"}", "{\"error\":{\"message\":\"x\"}}", "{not json", ""] {
            #expect(stamped(s) == s)
        }
    }

    @Test func everyEventOfAStreamIsStamped() {
        let sse = "data: {\"id\":\"c1\",\"created\":1,\"choices\":[]}\n\n"
            + ": a comment\n\n"
            + "data: {\"id\":\"c1\",\"created\":1,\"choices\":[{\"delta\":{\"content\":\"\\u0000\"}}]}\r\n\r\n"
            + "data: {\"error\":{\"message\":\"late\"}}\n\n"
            + "data: [DONE]\n\n"
        #expect(stampedEvents(sse) == "data: {\"id\":\"chatcmpl-new\",\"created\":1800000000,\"choices\":[]}\n\n"
            + ": a comment\n\n"
            + "data: {\"id\":\"chatcmpl-new\",\"created\":1800000000,\"choices\":[{\"delta\":{\"content\":\"\\u0000\"}}]}\r\n\r\n"
            + "data: {\"error\":{\"message\":\"late\"}}\n\n"
            + "data: [DONE]\n\n")
        // `data:` without the space is still a data line.
        #expect(stampedEvents("data:{\"id\":\"c\"}\n\n") == "data:{\"id\":\"chatcmpl-new\"}\n\n")
    }

    /// The spans of a stream's events are found once per shared head and reused only where that is
    /// provably right: always what parsing each event alone finds.
    @Test func reusedSpansAreWhatParsingEachEventFinds() {
        let events = [
            #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":12,"choices":[{"delta":{"content":"a"}}]}"#,
            #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":12,"choices":[{"delta":{"content":"b"}}]}"#,
            // The same head, then a second top-level id (the parser finds both; so must we).
            #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":12,"choices":[],"id":"again"}"#,
            // The same bytes up to the created value, which goes on (123, not 12).
            #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":123,"choices":[]}"#,
            // A key spelled with an escape, at the top and nested.
            #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":12,"created":5}"#,
            #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":12,"x":{"id":"n"}}"#,
            // A tool call's id is nested: not an identity value, but the text is there.
            #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":12,"choices":[{"delta":{"tool_calls":[{"id":"t"}]}}]}"#,
            #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":12,"choices":[{"delta":{"content":"c"}}]}"#,
        ]
        let sse = events.map { "data: \($0)\n\n" }.joined() + "data: [DONE]\n\n"
        let bytes = Array(sse.utf8)
        let reused = bytes.withUnsafeBytes { ReplyStamp.spans(ofEvents: $0) }
        var each: [Range<Int>] = []
        var at = 0
        for e in events {
            at += 6  // "data: "
            let found = Array(e.utf8).withUnsafeBytes { ReplyStamp.spans(ofJSON: $0) } ?? []
            each += found.map { (at + $0.lowerBound)..<(at + $0.upperBound) }
            at += e.utf8.count + 2
        }
        #expect(reused == each)
        #expect(each.count == 2 * events.count + 2)  // the extra id and the escaped created
    }

    /// The answer's own parse (UpstreamJSON.inspect(_:identitySpans:), which reads the positions
    /// from that parse) finds exactly the spans that parsing for them alone finds, over random
    /// objects: keys spelled with escapes, repeated, nested ids, values of every kind (brackets
    /// and quotes inside strings), any spacing, more values than a reply stamps; and over the same
    /// texts with a byte changed (then, for anything but an object, no spans at all).
    @Test func theAnswersParseFindsWhatParsingForTheSpansFinds() {
        var rng = TestRNG(seed: 29)
        func pick<T>(_ xs: [T]) -> T { xs[Int(rng.next() % UInt64(xs.count))] }
        func blank() -> String { rng.next() % 3 == 0 ? pick([" ", "\n", "\t ", "\r\n  "]) : "" }
        let keys = [#""id""#, #""created""#, #""\u0069d""#, #""cr\u0065ated""#, #""i\u0064""#, #""object""#, #""choices""#,
                    #""ids""#, #""Id""#, #""x""#, #""created ""#, #""\"id""#]
        let scalars = [#""chatcmpl-1""#, #""a\"b\\""#, #""[{\"id\":1}]""#, #""}{,:""#, #""\u0000é""#, "12", "-3.5e2", "0",
                       "1795614810", "true", "false", "null", #""""#]
        func value(_ depth: Int) -> String {
            switch rng.next() % (depth < 3 ? 4 : 2) {
            case 0, 1: return pick(scalars)
            case 2: return object(depth + 1, members: Int(rng.next() % 4))
            default: return "[" + (0..<Int(rng.next() % 4)).map { _ in blank() + value(depth + 1) + blank() }.joined(separator: ",") + "]"
            }
        }
        func object(_ depth: Int, members: Int) -> String {
            "{" + blank() + (0..<members).map { _ in pick(keys) + blank() + ":" + blank() + value(depth) + blank() }.joined(separator: "," + blank()) + "}"
        }
        var found = 0, objects = 0
        for round in 0..<4_000 {
            var text = Array((blank() + object(0, members: Int(rng.next() % 12)) + blank()).utf8)
            if round % 4 == 3 && !text.isEmpty {
                text[Int(rng.next() % UInt64(text.count))] = pick(Array(#"{}[]",:\ x0"#.utf8))
            }
            var spans: [Range<Int>]?
            let j = UpstreamJSON.inspect(text, identitySpans: &spans)
            #expect(j == UpstreamJSON.inspect(text))
            let alone = text.withUnsafeBytes { ReplyStamp.spans(ofJSON: $0) }
            if j.kind == .object {
                objects += 1
                #expect(spans == alone, "\(String(decoding: text, as: UTF8.self))")
                if let spans, !spans.isEmpty { found += 1 }
            } else {
                #expect(spans == nil)
            }
        }
        #expect(objects >= 3_000 && found > 800)
        // More values than a reply stamps: none, as parsing for them says.
        let many = Array(("{" + (0..<9).map { _ in #""id":"x""# }.joined(separator: ",") + "}").utf8)
        var spans: [Range<Int>]? = []
        _ = UpstreamJSON.inspect(many, identitySpans: &spans)
        #expect(spans == nil && many.withUnsafeBytes { ReplyStamp.spans(ofJSON: $0) } == nil)
    }

    /// The template reuses a head's spans only when the rest cannot hold another identity key:
    /// exactly when it has no `"id"`, no `"created"` and no `\u`, whatever else it holds
    /// (random texts over the characters those spell, checked against a plain substring search).
    @Test func templateRefusesExactlyTheRestsThatMightHoldAKey() throws {
        let head = #"{"id":"c","created":1,"#
        let first = Array((head + #""x":0}"#).utf8)
        let spans = try #require(first.withUnsafeBytes { ReplyStamp.spans(ofJSON: $0) })
        #expect(spans.count == 2)
        let template = try #require(first.withUnsafeBytes { ReplyStamp.IdentityTemplate($0, spans) })
        let alphabet = Array(#""idcreatu\x"#.utf8)
        var rng = TestRNG(seed: 11)
        var refused = 0
        for _ in 0..<20_000 {
            let rest = (0..<Int.random(in: 0...14, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            let text = String(decoding: rest, as: UTF8.self)
            let mayHold = text.contains(#""id""#) || text.contains(#""created""#) || text.contains(#"\u"#)
            let event = Array(head.utf8) + rest + [UInt8(ascii: "}")]
            let reused = event.withUnsafeBytes { template.spans(in: $0) }
            #expect((reused == nil) == mayHold, "rest: \(text)")
            if mayHold { refused += 1 }
        }
        #expect(refused > 500)  // the search does meet the keys
    }

    @Test func dataSplitOverSeveralLinesIsStampedAsOneDocument() {
        let sse = "event: x\ndata: {\"id\":\"c1\",\ndata: \"created\":1}\n\ndata: [DONE]\n\n"
        let out = stampedEvents(sse)
        #expect(out == "event: x\ndata: {\"id\":\"chatcmpl-new\",\ndata: \"created\":1800000000}\n\ndata: [DONE]\n\n")
        // Whatever the cuts, the SSE scanner sees the same events: whole, valid, two of them.
        var scanner = SSEEventScanner()
        var all: [UInt8] = []
        var none: [UInt8] = []
        Array(out.utf8).withUnsafeBytes { scanner.feed($0, all: &all, withoutUsage: &none, filterUsage: false) }
        #expect(scanner.invalidEvents == 0 && scanner.sawDone)
    }

    @Test func aStoredStreamWithNulRebuildsAndReplays() throws {
        let events = #"""
        data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}

        data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"a\u0000b"},"logprobs":null,"finish_reason":"stop"}]}

        data: [DONE]


        """#
        let answer = StoredAnswer.stream(StreamedAnswer(events: Array(events.utf8), usageRanges: []))
        let plain = try #require(answer.reply(stream: false, includeUsage: false, stamp: stamp))
        let text = String(decoding: plain, as: UTF8.self)
        #expect(text.hasPrefix(#"{"id":"chatcmpl-new","object":"chat.completion","created":1800000000,"#))
        #expect(text.contains(#""content":"a\u0000b""#))
        // And back: the plain body replays as a stream with the NUL intact.
        let sse = try #require(StoredAnswer.json(plain).reply(stream: true, includeUsage: false, stamp: stamp))
        let sseText = String(decoding: sse, as: UTF8.self)
        #expect(sseText.contains(#""delta":{"content":"a\u0000b"}"#))
        #expect(sseText.hasSuffix("data: [DONE]\n\n"))
        // A stored stream replayed as a stream: the same bytes but for the identity.
        let again = try #require(answer.reply(stream: true, includeUsage: false, stamp: stamp))
        #expect(String(decoding: again, as: UTF8.self)
                == events.replacing(#""id":"chatcmpl-1""#, with: #""id":"chatcmpl-new""#).replacing(#""created":1,"#, with: #""created":1800000000,"#))
    }
}

/// A cache entry notes where its id and created values are, so a hit in the stored form splices
/// without parsing: the result must be exactly what the parsing path gives, in all four forms.
@Suite struct CacheEntryStampTests {
    private static let events = #"""
    data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}

    data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"a\u0000b"},"logprobs":null,"finish_reason":"stop"}]}

    data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"total_tokens":5,"completion_tokens":2}}

    data: [DONE]


    """#
    private static let usageChunk: Range<Int> = {
        let b = Array(events.utf8)
        let start = Array(b.indices).first { i in b[i...].starts(with: Array(#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"#.utf8)) }!
        let end = Array(b.indices).first { i in i > start && b[i...].starts(with: Array("data: [DONE]".utf8)) }!
        return start..<end
    }()
    static let answers: [StoredAnswer] = [
        .json(Array(#"{"id":"chatcmpl-9","object":"chat.completion","created":17,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"x\u0000y","tool_calls":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"total_tokens":2,"completion_tokens":1}}"#.utf8)),
        .stream(StreamedAnswer(events: Array(events.utf8), usageRanges: [usageChunk])),
    ]

    @Test(arguments: answers)
    func theNotedPositionsGiveWhatParsingGives(answer: StoredAnswer) throws {
        let entry = answer.encoded()
        #expect(entry.first == UInt8(ascii: "j") || entry.first == UInt8(ascii: "s"))
        #expect(StoredAnswer.decode(entry) == answer)
        for (stream, usage) in [(false, false), (true, false), (true, true)] {
            let fast = try #require(StoredAnswer.reply(encoded: entry, stream: stream, includeUsage: usage, stamp: stamp))
            #expect(fast == answer.reply(stream: stream, includeUsage: usage, stamp: stamp))
            let text = String(decoding: fast, as: UTF8.self)
            #expect(!text.contains("chatcmpl-1\"") && !text.contains("chatcmpl-9") && text.contains(#""id":"chatcmpl-new""#))
            #expect(text.contains("1800000000") && !text.contains(#""created":1,"#) && !text.contains(#""created":17,"#))
            #expect(text.contains(#"\u0000"#))
        }
    }

    @Test func theUsageChunkIsLeftOutWithItsPositions() throws {
        let entry = StoredAnswer.stream(StreamedAnswer(events: Array(Self.events.utf8), usageRanges: [Self.usageChunk])).encoded()
        let text = String(decoding: try #require(StoredAnswer.reply(encoded: entry, stream: true, includeUsage: false, stamp: stamp)), as: UTF8.self)
        #expect(!text.contains("usage") && text.ranges(of: #""id":"chatcmpl-new""#).count == 2 && text.hasSuffix("data: [DONE]\n\n"))
    }

    @Test func entriesInThePreviousFormatAreStampedByParsing() throws {
        let body = #"{"id":"chatcmpl-9","object":"chat.completion","created":17,"choices":[]}"#
        let old = [UInt8(ascii: "J")] + Array(body.utf8)
        let plain = try #require(StoredAnswer.reply(encoded: old, stream: false, includeUsage: false, stamp: stamp))
        #expect(String(decoding: plain, as: UTF8.self) == #"{"id":"chatcmpl-new","object":"chat.completion","created":1800000000,"choices":[]}"#)
        let oldStream = [UInt8(ascii: "S"), 0, 0, 0, 0] + Array(Self.events.utf8)
        let sse = try #require(StoredAnswer.reply(encoded: oldStream, stream: true, includeUsage: true, stamp: stamp))
        #expect(String(decoding: sse, as: UTF8.self).ranges(of: #""id":"chatcmpl-new""#).count == 3)
    }

    /// The plain hit's splice (the id as bytes from writeIDText, into a buffer the Frontend reuses)
    /// writes what a stamp's splice writes, for every kind's prefix and ids JSON must escape; a
    /// non-"j" entry is not one it takes, and a damaged one it refuses as the stamp does.
    @Test func thePlainHitSpliceIsTheStampsSplice() throws {
        let answer = Self.answers[0]
        let entry = answer.encoded()
        let kinds: [EndpointKind] = [
            .chat, .completion,
            .relay(RelayRoute(name: "embeddings", method: "POST", target: "/v1/embeddings", body: .json, cacheable: true)),
            .relay(RelayRoute(name: "tokenize", method: "POST", target: "/tokenize", body: .json)),
        ]
        for kind in kinds {
            for rid in ["0123456789abcdef", "a\"b\\c\u{0}\u{1F}\n é", String(repeating: "\u{1}", count: 128), "x"] {
                for created in [1_800_000_000, 0, -42, Int.max] {
                    let want = try #require(StoredAnswer.reply(encoded: entry, stream: false, includeUsage: false,
                                                               stamp: ReplyStamp(kind: kind, requestId: rid, created: created)))
                    let got: [UInt8]? = entry.withUnsafeBytes { b in
                        guard let (payload, spans) = StoredAnswer.stampedJSON(encoded: b) else { return nil }
                        var id = rid
                        return id.withUTF8 { r -> [UInt8]? in
                            let raw = UnsafeRawBufferPointer(r)
                            let idMax = ReplyStamp.maxIDTextCount(raw.count)
                            var idText = [UInt8](repeating: 0, count: idMax)
                            let n = idText.withUnsafeMutableBytes { ReplyStamp.writeIDText(kind: kind, requestId: raw, to: $0.baseAddress) }
                            #expect(n <= idMax && n == ReplyStamp.writeIDText(kind: kind, requestId: raw, to: nil))
                            let cap = ReplyStamp.spliceCapacity(payload: payload.count, spans: spans, idCount: idMax)
                            var out = [UInt8](repeating: 0, count: cap)
                            let size = idText.withUnsafeBytes { t in
                                out.withUnsafeMutableBytes { o in
                                    ReplyStamp.splice(entry: payload, spans: spans, cuts: UnsafeRawBufferPointer(start: nil, count: 0),
                                                      skipping: false, idText: UnsafeRawBufferPointer(rebasing: t[0..<n]),
                                                      created: created, into: o.baseAddress!, capacity: cap)
                                }
                            }
                            return size.map { Array(out[0..<$0]) }
                        }
                    }
                    #expect(got == want, "\(kind) \(rid) \(created)")
                }
            }
        }
        // Only a stamped JSON body is taken.
        let stream = Self.answers[1].encoded()
        for other in [stream, [UInt8(ascii: "J")] + Array(#"{"id":"a","created":1}"#.utf8), [], [UInt8(ascii: "j"), 0, 0]] {
            #expect(other.withUnsafeBytes { StoredAnswer.stampedJSON(encoded: $0) } == nil)
        }
        // A damaged table: refused, as StoredAnswer.reply refuses it.
        let body = Array(#"{"id":"a","created":1}"#.utf8)
        let damaged: [UInt8] = [UInt8(ascii: "j"), 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 9] + body
        #expect(StoredAnswer.reply(encoded: damaged, stream: false, includeUsage: false, stamp: stamp) == nil)
        let refused = damaged.withUnsafeBytes { b -> Bool in
            guard let (payload, spans) = StoredAnswer.stampedJSON(encoded: b) else { return false }
            var out = [UInt8](repeating: 0, count: 256)
            return out.withUnsafeMutableBytes { o in
                ReplyStamp.splice(entry: payload, spans: spans, cuts: UnsafeRawBufferPointer(start: nil, count: 0), skipping: false,
                                  idText: UnsafeRawBufferPointer(start: nil, count: 0), created: 1, into: o.baseAddress!, capacity: 256)
            } == nil
        }
        #expect(refused)
    }

    @Test func createdDigitsAndPlainIdsAreWhatTheStampWrites() {
        for v in [0, 7, 1_800_000_000, -42, Int.max, Int.min] {
            #expect(ReplyStamp.CreatedText(v).withBytes { String(decoding: $0, as: UTF8.self) } == String(v))
        }
        var hex = "0123456789abcdef"
        hex.withUTF8 { h in
            let raw = UnsafeRawBufferPointer(h)
            var a = [UInt8](repeating: 0, count: 64), b = [UInt8](repeating: 0, count: 64)
            let n = a.withUnsafeMutableBytes { ReplyStamp.writeIDText(kind: .chat, requestId: raw, plain: true, to: $0.baseAddress) }
            let m = b.withUnsafeMutableBytes { ReplyStamp.writeIDText(kind: .chat, requestId: raw, to: $0.baseAddress) }
            #expect(n == m && a == b && String(decoding: a[0..<n], as: UTF8.self) == "\"chatcmpl-0123456789abcdef\"")
        }
    }

    @Test func aDamagedEntryIsAMissNotAWrongSplice() {
        let body = Array(#"{"id":"a","created":1}"#.utf8)
        func entry(_ spans: [(Int, Int)], usage: [(Int, Int)]? = nil) -> [UInt8] {
            func u32(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
            var out: [UInt8] = [usage == nil ? UInt8(ascii: "j") : UInt8(ascii: "s")]
            if let usage { out += u32(usage.count) + usage.flatMap { u32($0.0) + u32($0.1) } }
            out += u32(spans.count) + spans.flatMap { u32($0.0) + u32($0.1) }
            return out + body
        }
        #expect(StoredAnswer.reply(encoded: entry([(6, 9), (20, 21)]), stream: false, includeUsage: false, stamp: stamp) != nil)
        for bad in [entry([(7, 9)]),                       // not the start of a string or number
                    entry([(20, 21), (6, 9)]),             // out of order
                    entry([(6, 9), (20, 40)]),             // past the end
                    entry([(6, 9)], usage: [(0, 8)])] {    // across a usage chunk's edge
            #expect(StoredAnswer.reply(encoded: bad, stream: false, includeUsage: false, stamp: stamp) == nil)
            #expect(StoredAnswer.decode(bad) == nil)
        }
    }
}

/// The cache-hit splice in C (rs_splice: ReplyStamp.splice(entry:…)) against the
/// Swift splice over the same tables, and its check against the check Layout.read made in Swift
/// before: random payloads and tables, valid and damaged, the same bytes or the same refusal.
@Suite struct EntrySpliceTests {
    /// Layout.read's former check of a span table, kept here as the reference.
    private static func swiftCheck(_ spans: StoredAnswer.EntryRanges, usage: StoredAnswer.EntryRanges, payload: [UInt8]) -> Bool {
        guard spans.isOrdered(within: payload.count), usage.isOrdered(within: payload.count) else { return false }
        for i in 0..<spans.count {
            let r = spans.range(i)
            guard !r.isEmpty else { return false }
            let first = payload[r.lowerBound]
            guard first == 0x22 || first == 0x2D || (0x30...0x39).contains(first) else { return false }
            for k in 0..<usage.count {
                let u = usage.range(k)
                let apart = u.upperBound <= r.lowerBound || u.lowerBound >= r.upperBound
                guard apart || (u.lowerBound <= r.lowerBound && r.upperBound <= u.upperBound) else { return false }
            }
        }
        return true
    }

    private static func table(_ pairs: [(Int, Int)]) -> [UInt8] {
        var out: [UInt8] = []
        for (lo, hi) in pairs {
            for v in [lo, hi] {
                let u = UInt32(truncatingIfNeeded: v)
                out += [UInt8(u >> 24), UInt8(u >> 16 & 0xFF), UInt8(u >> 8 & 0xFF), UInt8(u & 0xFF)]
            }
        }
        return out
    }

    /// Sorted, mostly non-overlapping ranges inside `limit` (sometimes not: damaged tables).
    private static func ranges(_ n: Int, limit: Int, _ rng: inout TestRNG) -> [(Int, Int)] {
        var cuts = (0..<(2 * n)).map { _ in Int.random(in: 0...max(0, limit), using: &rng) }.sorted()
        if Int.random(in: 0..<8, using: &rng) == 0, cuts.count >= 2 { cuts.swapAt(0, cuts.count - 1) }  // out of order
        if Int.random(in: 0..<12, using: &rng) == 0, !cuts.isEmpty { cuts[cuts.count - 1] = limit + 3 }  // past the end
        return (0..<n).map { (cuts[2 * $0], cuts[2 * $0 + 1]) }
    }

    /// One case: the C check against the Swift one, and (when the tables fit) the C splice against
    /// the Swift splice, with and without the usage chunks. Returns how many splices compared.
    private static func compare(_ payload: [UInt8], _ spanPairs: [(Int, Int)], _ usagePairs: [(Int, Int)], _ s: ReplyStamp) -> Int {
        let spanTable = table(spanPairs)
        let usageTable = table(usagePairs)
        let what = "\(payload) \(spanPairs) \(usagePairs)"
        var compared = 0
        spanTable.withUnsafeBytes { (st: UnsafeRawBufferPointer) in
            usageTable.withUnsafeBytes { (ut: UnsafeRawBufferPointer) in
                payload.withUnsafeBytes { (p: UnsafeRawBufferPointer) in
                    let spans = StoredAnswer.EntryRanges(table: st)
                    let usage = StoredAnswer.EntryRanges(table: ut)
                    let fits = swiftCheck(spans, usage: usage, payload: payload)
                    #expect(ReplyStamp.entryTablesFit(p, spans: st, cuts: ut) == fits, "\(what)")
                    for skipping in [false, true] {
                        let c: [UInt8]? = s.splice(entry: p, spans: st, cuts: ut, skipping: skipping)
                        #expect((c != nil) == fits, "\(what)")
                        guard fits else { continue }
                        var swift: [UInt8] = []
                        s.splice(p, spans: spans, skipping: skipping ? usage : StoredAnswer.EntryRanges.none, into: &swift)
                        #expect(c == swift, "\(what) skipping \(skipping)")
                        compared += 1
                    }
                }
            }
        }
        return compared
    }

    @Test func theCSpliceIsTheSwiftSplice() {
        var rng = TestRNG(seed: 2024)
        let alphabet = Array("\"-0123456789abc,:{} \n".utf8)
        let stamps = [stamp, ReplyStamp(id: "chatcmpl-a\"b\\c\u{0}é", created: -42), ReplyStamp(id: "", created: 0)]
        var compared = 0
        for _ in 0..<4000 {
            let payload = (0..<Int.random(in: 0...120, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            let spanPairs = Self.ranges(Int.random(in: 0...8, using: &rng), limit: payload.count, &rng)
            var usagePairs = Self.ranges(Int.random(in: 0...2, using: &rng), limit: payload.count, &rng)
            if Int.random(in: 0..<4, using: &rng) == 0, let v = spanPairs.randomElement(using: &rng) {
                // Around a value (or across its edge).
                usagePairs = [(max(0, v.0 - Int.random(in: 0...3, using: &rng)), v.1 + Int.random(in: -1...3, using: &rng))]
            }
            compared += Self.compare(payload, spanPairs, usagePairs, stamps.randomElement(using: &rng)!)
        }
        #expect(compared > 1000)  // plenty of the random tables fit: spliced both ways
    }

    @Test func aKeyIsFoundQuotedOrMaybeEscaped() {
        func may(_ s: String) -> Bool { Array(s.utf8).withUnsafeBytes { UpstreamJSON.mayHoldFingerprint($0) } }
        #expect(may(#"{"system_fingerprint":"fp"}"#))
        #expect(may(#"{"a":{"system_fingerprint":null}}"#))
        #expect(may(#"{"\u0073ystem_fingerprint":"fp"}"#))
        #expect(may(#"{"a":"\u00e9"}"#))
        #expect(!may(#"{"usage":{"prompt_tokens":1},"system_fingerprints":1,"system_fingerprint_":2,"xsystem_fingerprint":3}"#))
        #expect(may(#"{"a":"system_fingerprint"}"#))  // quoted, even as a value: a parse decides
        #expect(!may(""))
        #expect(!may("\"system_fingerprint"))
        // Random bytes: exactly when they hold the key quoted or a `\u`.
        var rng = TestRNG(seed: 77)
        let pieces = ["\"system_fingerprint\"", "system_fingerprint", "\"system_fingerprin\"", "\\u", "\\", "u", "\"", "x", "{", ":"]
        for _ in 0..<2000 {
            let text = (0..<Int.random(in: 0...6, using: &rng)).map { _ in pieces.randomElement(using: &rng)! }.joined()
            let reference = text.contains("\"system_fingerprint\"") || text.contains("\\u")
            #expect(may(text) == reference, "\(text)")
        }
        // Wherever mayHoldFingerprint says no, the parser finds no fingerprint.
        for doc in [#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2},"system_fingerprint":"fp"}"#,
                    #"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2},"system\u005ffingerprint":"fp"}"#,
                    #"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#] {
            let b = Array(doc.utf8)
            let parsed = UpstreamJSON.inspect(b).fingerprint != nil
            #expect(b.withUnsafeBytes { UpstreamJSON.mayHoldFingerprint($0) } || !parsed)
        }
    }
}

// StoredAnswer's cache entry written in parts (encodedHead + payload, issue 11) against the encoding
// it replaced (kept here verbatim as the reference): byte-identical for random answers, and the
// same entry whether a shared-memory store gets it joined or in two parts.
import Testing
@testable import Engine

#if canImport(Glibc)
import Glibc
#endif

/// The previous `StoredAnswer.encoded()` (one array: tag, tables, payload).
private func referenceEncoded(_ a: StoredAnswer) -> [UInt8] {
    func append(_ out: inout [UInt8], _ ranges: [Range<Int>]) {
        var table: [UInt32] = []
        table.append(UInt32(truncatingIfNeeded: ranges.count).bigEndian)
        for r in ranges {
            table.append(UInt32(truncatingIfNeeded: r.lowerBound).bigEndian)
            table.append(UInt32(truncatingIfNeeded: r.upperBound).bigEndian)
        }
        table.withUnsafeBytes { out.append(contentsOf: $0) }
    }
    switch a {
    case .json(let body, _):
        let spans = body.withUnsafeBytes { ReplyStamp.spans(ofJSON: $0) } ?? []
        var out: [UInt8] = [UInt8(ascii: "j")]
        append(&out, spans)
        return out + body
    case .stream(let s):
        let spans = s.identitySpans ?? s.events.withUnsafeBytes { ReplyStamp.spans(ofEvents: $0) }
        var out: [UInt8] = [spans == nil ? UInt8(ascii: "S") : UInt8(ascii: "s")]
        append(&out, s.usageRanges)
        if let spans { append(&out, spans) }
        return out + s.events
    }
}

private extension TestRNG {
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// A random answer: a chunk stream (with or without a usage chunk, spans known, unknown or
/// noted wrong on purpose: the encoding writes what it is given), a multi-line-data stream
/// (no spans), or a JSON body with or without an id and created.
private func randomAnswer(_ rng: inout TestRNG) -> StoredAnswer {
    switch rng.below(4) {
    case 0:
        let id = rng.below(2) == 0 ? #""id":"chatcmpl-\#(rng.next())","# : ""
        let created = rng.below(2) == 0 ? #""created":\#(rng.next() % 10_000_000_000),"# : ""
        return .json(Array(#"{\#(id)"object":"chat.completion",\#(created)"choices":[]}"#.utf8))
    case 1:
        return .stream(StreamedAnswer(events: Array("data: {\"a\":\ndata: 1}\n\ndata: [DONE]\n\n".utf8), usageRanges: []))
    default:
        var events = ""
        var usage: [Range<Int>] = []
        var spans: [Range<Int>] = []
        for i in 0..<(1 + rng.below(60)) {
            let head = "data: {\"id\":\""
            let idValueStart = events.utf8.count + head.utf8.count - 1
            let idText = "chatcmpl-\(rng.next() % 1000)"
            events += head + idText + "\",\"object\":\"chat.completion.chunk\",\"created\":"
            let createdStart = events.utf8.count
            events += "\(1_700_000_000 + i)"
            let createdEnd = events.utf8.count
            events += ",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok\(i)\"},\"finish_reason\":null}]}\n\n"
            spans.append(idValueStart..<(idValueStart + idText.utf8.count + 2))
            spans.append(createdStart..<createdEnd)
        }
        if rng.below(2) == 0 {
            let start = events.utf8.count
            events += "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n"
            usage.append(start..<events.utf8.count)
        }
        events += "data: [DONE]\n\n"
        let known: [Range<Int>]? = rng.below(3) == 0 ? nil : spans
        return .stream(StreamedAnswer(events: Array(events.utf8), usageRanges: usage, identitySpans: known))
    }
}

@Suite struct StoredAnswerEncodingTests {
    @Test func headThenPayloadIsThePreviousEncoding() {
        var rng = TestRNG(seed: 11)
        for _ in 0..<300 {
            let a = randomAnswer(&rng)
            let reference = referenceEncoded(a)
            #expect(a.encodedHead() + a.payload == reference)
            #expect(a.encoded() == reference)
            #expect(StoredAnswer.decode(a.encoded()) == a)
        }
    }

    @Test func payloadIsTheAnswersOwnBytes() {
        let events = Array("data: [DONE]\n\n".utf8)
        #expect(StoredAnswer.stream(StreamedAnswer(events: events, usageRanges: [])).payload == events)
        #expect(StoredAnswer.json([0x7B, 0x7D]).payload == [0x7B, 0x7D])
    }

    @Test func sharedMemoryStoreInTwoPartsHoldsTheJoinedEntry() throws {
        let fd = try SharedMemoryCacheStore.create(maxEntries: 64, maxBytes: 4 << 20).get()
        defer { close(fd) }
        let m = try #require(SharedMemoryCacheStore(fd: fd))
        var rng = TestRNG(seed: 7)
        for i in 0..<100 {
            let a = randomAnswer(&rng)
            let key = "k\(i % 10)"  // replacing entries too
            #expect(m.store(key, head: a.encodedHead(), payload: a.payload, ttl: .seconds(60), staleTTL: .zero, now: 1))
            #expect(m.lookup(key, now: 2, touch: true) == .fresh(referenceEncoded(a)))
        }
        // Edge parts: an empty head or payload, and parts that end on a block's edge (1 KiB blocks
        // hold the key first).
        for (h, p) in [(0, 5), (5, 0), (0, 0), (1024 - 2, 1), (1, 3000), (2047, 2049)] {
            let head = (0..<h).map { UInt8(truncatingIfNeeded: $0 * 7) }
            let payload = (0..<p).map { UInt8(truncatingIfNeeded: $0 * 13) }
            #expect(m.store("ab", head: head, payload: payload, ttl: .seconds(60), staleTTL: .zero, now: 1))
            #expect(m.lookup("ab", now: 2, touch: true) == .fresh(head + payload))
        }
    }
}

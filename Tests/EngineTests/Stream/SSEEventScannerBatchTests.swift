// The relay's batch path (issue 11): a read's events found in one pass and their data read by the
// parser in one call (UpstreamJSON.withReadings over rs_inspect_upstream_many, a document stream
// when there are several). It must read exactly what reading each document on its own reads —
// invalid JSON, a document across two events, two in one, \u0000, [DONE] among them — and the
// scanner must relay, count and record the same as when it reads every event on its own.
import Testing
@testable import Engine

/// What `read` gives for each span, one call each.
private func eachAlone(_ bytes: [UInt8], _ spans: [Range<Int>]) -> [UpstreamJSON] {
    bytes.withUnsafeBytes { b in spans.map { UpstreamJSON(UpstreamJSON.read(UnsafeRawBufferPointer(rebasing: b[$0]))) } }
}

/// What one batch call gives for the spans.
private func batched(_ bytes: [UInt8], _ spans: [Range<Int>]) -> [UpstreamJSON] {
    bytes.withUnsafeBytes { b in UpstreamJSON.withReadings(of: spans, in: b) { r, _ in r.map { UpstreamJSON($0) } } }
}

/// Whether the batch was read as one document stream (else each document alone).
private func streamed(_ bytes: [UInt8], _ spans: [Range<Int>]) -> Bool {
    bytes.withUnsafeBytes { b in UpstreamJSON.withReadings(of: spans, in: b) { _, s in s } }
}

/// `docs` laid out as SSE events (`data: <doc>\n\n`), and where each doc is.
private func layout(_ docs: [String], separator: String = "\n\n") -> ([UInt8], [Range<Int>]) {
    var bytes: [UInt8] = []
    var spans: [Range<Int>] = []
    for d in docs {
        bytes += Array("data: ".utf8)
        let s = bytes.count
        bytes += Array(d.utf8)
        spans.append(s..<bytes.count)
        bytes += Array(separator.utf8)
    }
    return (bytes, spans)
}

private let chunkDoc = #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":" tok"},"logprobs":null,"finish_reason":null}]}"#
private let finalDoc = #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#
private let usageDoc = #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":"fp\u0000x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#

/// Documents that are fine on their own and documents that are not, whose pieces could join
/// across events in one batch.
private let docPool: [String] = [
    chunkDoc, finalDoc, usageDoc, "[DONE]",
    #"{"id":"x","choices":[{"index":0,"delta":{"content":"a\u0000b \"}{\" \\"},"finish_reason":null}]}"#,
    " { \"id\" : \"x\" , \"choices\" : [ ] }\t ",
    #"{"error":{"message":"boom","code":500}}"#,
    #"{"a":[1,"#, #"2]}"#, #"{"a":"open"#, #"x"}"#, "\"str\"", "12", "[1,2]", "true", "null", "",
    #"{"a":1}{"b":2}"#, #"{"a":1} {"b":2}"#, #"{"a":1} x"#, #"{"a":1}]"#, "}", "{", "\"", "\\",
    #"{"a":"\"#, #"{"\u0069d":"q","created":2}"#, "[DONE] ", " [DONE]", "{\"a\":\"\u{1}\"}",
    "{\"a\":\"é\"}", String(repeating: "[", count: 1500) + String(repeating: "]", count: 1500),
]

@Suite struct UpstreamJSONBatchTests {
    @Test func severalEventsReadAsEachAlone() {
        let (bytes, spans) = layout([chunkDoc, chunkDoc, finalDoc, usageDoc, "[DONE]"])
        let got = batched(bytes, spans)
        #expect(got == eachAlone(bytes, spans))
        #expect(got.map(\.kind) == [.object, .object, .object, .object, .done])
        #expect(got[3].isUsageOnly && got[3].fingerprint == Array(#""fp\u0000x""#.utf8))
        #expect(got[2].choicesFinished == 1)
        #expect(streamed(bytes, spans), "vLLM's events are read as one document stream")
        #expect(!streamed(bytes, [spans[0], spans[4]]), "one document is parsed alone")
    }

    @Test func aMalformedEventAmongGoodOnes() {
        let (bytes, spans) = layout([chunkDoc, #"{"a":"#, chunkDoc, "[1]", finalDoc])
        let got = batched(bytes, spans)
        #expect(got == eachAlone(bytes, spans))
        #expect(got.map(\.kind) == [.object, .invalid, .object, .notObject, .object])
        #expect(!streamed(bytes, spans))
    }

    /// A document that parses only when two events' data are joined is two invalid events; two
    /// documents in one event's data are one invalid event.
    @Test func documentsDoNotCrossEvents() {
        let (a, sa) = layout([#"{"a":[1,"#, #"2]}"#, chunkDoc])
        #expect(batched(a, sa).map(\.kind) == [.invalid, .invalid, .object])
        let (b, sb) = layout([#"{"a":1} {"b":2}"#, chunkDoc])
        #expect(batched(b, sb).map(\.kind) == [.invalid, .object])
        let (c, sc) = layout([#"{"a":"open"#, #"x"}"#, chunkDoc])
        #expect(batched(c, sc).map(\.kind) == [.invalid, .invalid, .object])
    }

    @Test func invalidUTF8InOneEvent() {
        var (bytes, spans) = layout([chunkDoc, #"{"a":"xx"}"#, chunkDoc])
        bytes[spans[1].lowerBound + 6] = 0xFF
        let got = batched(bytes, spans)
        #expect(got == eachAlone(bytes, spans))
        #expect(got.map(\.kind) == [.object, .invalid, .object])
    }

    @Test func spansOutOfOrderAreRefused() {
        let (bytes, spans) = layout([chunkDoc, chunkDoc])
        #expect(batched(bytes, [spans[1], spans[0]]).map(\.kind) == [.invalid, .invalid])
        #expect(batched(bytes, [spans[0].lowerBound..<(bytes.count + 1)]).map(\.kind) == [.invalid])
        #expect(batched(bytes, []).isEmpty)
    }

    /// Random batches of pool documents, laid out as events (and, some of them, packed with
    /// only whitespace or nothing between): one batch call reads what each read alone reads.
    @Test func randomBatchesReadAsEachAlone() {
        var rng = TestRNG(seed: 11)
        for _ in 0..<3000 {
            let n = Int.random(in: 1...8, using: &rng)
            let docs = (0..<n).map { _ in docPool.randomElement(using: &rng)! }
            let sep = ["\n\n", " ", "", "\r\n\r\n", "\n\ndata: x\n\n"].randomElement(using: &rng)!
            let (bytes, spans) = layout(docs, separator: sep)
            let alone = eachAlone(bytes, spans)
            #expect(batched(bytes, spans) == alone, "\(docs) sep \(sep.debugDescription)")
            // Objects (and [DONE]s) only: the fast path is taken.
            if alone.filter({ $0.kind == .object }).count > 1 && alone.allSatisfy({ $0.kind == .object || $0.kind == .done }) {
                #expect(streamed(bytes, spans), "\(docs) sep \(sep.debugDescription)")
            }
        }
    }
}

/// One scanner fed `reads`; every feed's outputs and the scanner's readings, to compare.
private struct Run: Equatable {
    var alls: [[UInt8]] = []
    var withouts: [[UInt8]] = []
    var usageRanges: [[Range<Int>]] = []
    var identitySpans: [[Range<Int>]] = []
    var counts: [Int] = []
    var usage: UpstreamJSON.Usage?
    var flags: [Bool] = []
    var choices: [UInt64] = []

    init(_ reads: [[UInt8]], eachAlone: Bool, filter: Bool, identity: Bool, maxEventBytes: Int = 1 << 20) {
        var sc = SSEEventScanner(maxEventBytes: maxEventBytes, findsIdentity: identity)
        sc.readsEachEvent = eachAlone
        for r in reads {
            var all: [UInt8] = [], without: [UInt8] = []
            r.withUnsafeBytes { sc.feed($0, all: &all, withoutUsage: &without, filterUsage: filter) }
            alls.append(all)
            withouts.append(without)
            usageRanges.append(sc.usageRangesInAll)
            identitySpans.append(sc.identitySpansInAll)
        }
        counts = [sc.invalidEvents, sc.eventsAfterDone, sc.bytesDroppedAfterDone, sc.usageEventsDropped, sc.foreignEvents,
                  sc.pendingBytes, sc.heldFinalBytes]
        usage = sc.usage
        flags = [sc.sawDone, sc.sawError, sc.identityKnown, sc.isWholeAnswer]
        choices = [sc.choicesSeen, sc.choicesFinished]
    }
}

private func event(_ doc: String) -> String { "data: " + doc + "\n\n" }

/// Events as an upstream might send them, good and bad.
private let eventPool: [String] = docPool.map(event) + [
    event(chunkDoc), event(chunkDoc), event(chunkDoc), event(finalDoc), event(usageDoc),
    ": keepalive\n\n", "\n", "\r\n", "event: x\ndata: " + chunkDoc + "\n\n",
    "data: {\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n",
    "data: " + chunkDoc + "\r\n\r\n", "data:" + chunkDoc + "\n\n", "id: 1\ndata: " + finalDoc + "\n\n",
    "data: " + #"{"id":"c","object":"text_completion","created":5,"choices":[{"index":70,"text":"x"}]}"# + "\n\n",
    "data: " + #"{"id":"c","object":"chat.completion.chunk","created":5,"choices":[{"index":1,"finish_reason":"length"}]}"# + "\n\n",
    "data: {\"a\":\"x\n\n", "garbage\n\n", "data: [DONE]\n\n",
]

/// `bytes` cut into reads at random places (or whole).
private func cuts(_ bytes: [UInt8], _ rng: inout TestRNG) -> [[UInt8]] {
    var reads: [[UInt8]] = []
    var i = 0
    while i < bytes.count {
        let step = Bool.random(using: &rng) ? bytes.count : Int.random(in: 1...max(1, bytes.count / 3), using: &rng)
        let j = min(bytes.count, i + step)
        reads.append(Array(bytes[i..<j]))
        i = j
    }
    return reads
}

@Suite struct SSEEventScannerBatchTests {
    /// vLLM's stream whole in one read, in reads of one event, and cut anywhere: the batch path
    /// relays, holds back and counts what the per-event path does.
    @Test func aWholeStreamInOneRead() {
        let text = event(chunkDoc) + event(chunkDoc) + event(finalDoc) + event(usageDoc) + event("[DONE]")
        let bytes = Array(text.utf8)
        for filter in [false, true] {
            for identity in [false, true] {
                let batch = Run([bytes], eachAlone: false, filter: filter, identity: identity)
                #expect(batch == Run([bytes], eachAlone: true, filter: filter, identity: identity))
                #expect(batch.alls == [bytes])
                #expect(batch.flags == [true, false, true, true])
                if identity { #expect(batch.identitySpans[0].count == 8) }
            }
        }
        let batch = Run([bytes], eachAlone: false, filter: true, identity: true)
        // The usage chunk left out; its fingerprint moved to the final chunk before it.
        #expect(String(decoding: batch.withouts[0], as: UTF8.self)
                == event(chunkDoc) + event(chunkDoc) + event(String(finalDoc.dropLast()) + #","system_fingerprint":"fp\u0000x"}"#) + event("[DONE]"))
        #expect(batch.usageRanges[0].count == 1)
    }

    @Test func anEventSplitAcrossReads() {
        let text = Array((event(chunkDoc) + event(chunkDoc) + event(finalDoc)).utf8)
        for cut in [1, 7, 100, 250, text.count - 1] {
            let reads = [Array(text[..<cut]), Array(text[cut...])]
            let batch = Run(reads, eachAlone: false, filter: true, identity: true)
            #expect(batch == Run(reads, eachAlone: true, filter: true, identity: true), "cut \(cut)")
            #expect(batch.alls.flatMap { $0 } == text)
        }
    }

    /// A malformed event among good ones in one read is counted and dropped; the others are
    /// relayed (the driver then ends the stream with an error event).
    @Test func aMalformedEventInABatch() {
        let text = event(chunkDoc) + event(#"{"a":"#) + event(chunkDoc) + "data: \"\u{FFFF}x\n\n" + event(finalDoc)
        let batch = Run([Array(text.utf8)], eachAlone: false, filter: true, identity: false)
        #expect(batch == Run([Array(text.utf8)], eachAlone: true, filter: true, identity: false))
        #expect(batch.counts[0] == 2)
        #expect(String(decoding: batch.alls[0], as: UTF8.self) == event(chunkDoc) + event(chunkDoc) + event(finalDoc))
    }

    @Test func nulInContentIsRelayed() {
        let doc = #"{"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"a\u0000b"}}]}"#
        let text = Array((event(doc) + event(doc)).utf8)
        let batch = Run([text], eachAlone: false, filter: true, identity: true)
        #expect(batch.alls == [text] && batch.counts[0] == 0)
        #expect(batch == Run([text], eachAlone: true, filter: true, identity: true))
    }

    /// Random streams of pool events, cut at random: the batch path and the per-event path agree
    /// on every feed's output, filtered output, usage ranges and identity spans, and every count.
    @Test func randomStreamsReadAsEachEventAlone() {
        var rng = TestRNG(seed: 1111)
        for _ in 0..<2000 {
            let n = Int.random(in: 1...12, using: &rng)
            var text = (0..<n).map { _ in eventPool.randomElement(using: &rng)! }.joined()
            if Bool.random(using: &rng) { text += String(eventPool.randomElement(using: &rng)!.prefix(9)) }
            let bytes = Array(text.utf8)
            let reads = cuts(bytes, &rng)
            let filter = Bool.random(using: &rng)
            let identity = Bool.random(using: &rng)
            let limit = Bool.random(using: &rng) ? 1 << 20 : Int.random(in: 16...400, using: &rng)
            let batch = Run(reads, eachAlone: false, filter: filter, identity: identity, maxEventBytes: limit)
            let alone = Run(reads, eachAlone: true, filter: filter, identity: identity, maxEventBytes: limit)
            #expect(batch == alone, "\(text.debugDescription) reads \(reads.map(\.count))")
        }
    }
}


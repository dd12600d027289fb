// StreamRelay as a value: per read, whole events for the flight and for this client (usage-only
// chunk stripped unless asked), one recording with the usage chunk's place, and a whole answer
// only when the stream is complete ([DONE], every choice finished, no error, nothing invalid).
import Testing
@testable import Engine

private func chunk(_ delta: String, finish: String? = nil, index: Int = 0) -> String {
    let fr = finish.map { "\"\($0)\"" } ?? "null"
    return #"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":\#(index),"delta":\#(delta),"logprobs":null,"finish_reason":\#(fr)}]}"# + "\n\n"
}
private let usageChunk = #"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"total_tokens":5,"completion_tokens":2}}"# + "\n\n"
private let done = "data: [DONE]\n\n"
private let whole = chunk(#"{"role":"assistant","content":""}"#) + chunk(#"{"content":"Hi"}"#) + chunk(#"{"content":"!"}"#, finish: "stop") + usageChunk + done

/// Feeds `text` in reads of `step` bytes; returns the relay and what the client and flight got.
private func relay(_ text: String, step: Int, includeUsage: Bool = false, records: Bool = true) -> (StreamRelay, String, String, [StreamRelay.Read]) {
    var r = StreamRelay(includeUsage: includeUsage, records: records, maxEventBytes: 1 << 20)
    var client: [UInt8] = []
    var flight: [UInt8] = []
    var reads: [StreamRelay.Read] = []
    let bytes = Array(text.utf8)
    var i = 0
    while i < bytes.count {
        let j = min(bytes.count, i + step)
        reads.append(bytes[i..<j].withUnsafeBytes { r.read($0) })
        client += r.clientEvents
        flight += r.events
        i = j
    }
    return (r, String(decoding: client, as: UTF8.self), String(decoding: flight, as: UTF8.self), reads)
}

@Suite struct StreamRelayTests {
    /// The recording takes a read's events as they are (no copy) for its first read; later reads
    /// must neither change what it holds nor the events a read handed out (values, not aliases).
    @Test(arguments: [7, 64, 150, 100_000])
    func theRecordingIsEveryReadsEventsInOrder(step: Int) {
        var r = StreamRelay(includeUsage: true, records: true, maxEventBytes: 1 << 20)
        let bytes = Array(whole.utf8)
        var handedOut: [[UInt8]] = []
        var recordings: [[UInt8]] = []
        var i = 0
        while i < bytes.count {
            let j = min(bytes.count, i + step)
            _ = bytes[i..<j].withUnsafeBytes { r.read($0) }
            handedOut.append(r.events)
            recordings.append(r.recording)
            i = j
        }
        #expect(r.recording == Array(whole.utf8))
        var joined: [UInt8] = []
        for (k, e) in handedOut.enumerated() {
            joined += e
            #expect(recordings[k] == joined, "the recording after read \(k) is every event so far")
        }
        #expect(r.answer?.events == Array(whole.utf8))
        let u = whole.utf8.count - done.utf8.count - usageChunk.utf8.count
        #expect(r.answer?.usageRanges == [u..<(u + usageChunk.utf8.count)])
    }

    /// vLLM sends an event a read: from the second read on the recording (and its identity
    /// spans) has room ahead, so a typical answer's recording stays in one buffer, and it is
    /// still every read's events in order, as is the identity the recording carries.
    @Test func theRecordingHasRoomAheadWhenEventsComeOneARead() throws {
        var r = StreamRelay(includeUsage: true, records: true, maxEventBytes: 1 << 20)
        var text = ""
        for k in 0..<40 { text += chunk(#"{"content":"t\#(k)"}"#) }
        text += chunk("{}", finish: "stop") + usageChunk + done
        var expected: [UInt8] = []
        var watch = RecordingBufferWatch()
        for (k, part) in text.split(separator: "\n\n", omittingEmptySubsequences: true).enumerated() {
            let ev = Array((part + "\n\n").utf8)
            #expect(ev.withUnsafeBytes { r.read($0) } == .relay)
            #expect(r.events == ev, "an event a read, relayed whole")
            expected += ev
            #expect(r.recording == expected)
            watch.saw(r.recording, afterRead: k)
        }
        #expect(watch.roomAheadEveryTime)
        #expect(watch.stayedInOneBuffer, "one buffer from the second read on")
        let a = try #require(r.answer)
        #expect(a.events == Array(text.utf8))
        #expect(a.identitySpans != nil && a.identitySpans == a.events.withUnsafeBytes { ReplyStamp.spans(ofEvents: $0) })
    }

    @Test(arguments: [1, 5, 64, 100_000])
    func aReadsEventsGoOutWholeAndOnce(step: Int) {
        let (r, client, flight, reads) = relay(whole, step: step)
        #expect(flight == whole, "followers get every event, usage included")
        #expect(client == whole.replacing(usageChunk, with: ""), "this client did not ask for usage")
        #expect(reads.allSatisfy { $0 == .relay })
        #expect(r.usage == UpstreamJSON.Usage(prompt: 3, completion: 2))
        #expect(r.sawDone && !r.sawError)
    }

    /// What the session writes (`withClientEvents`: pieces lent, not copied) is `clientEvents`,
    /// read after read, with usage asked for or not; a read with nothing to leave out is one
    /// piece, `events` itself.
    @Test(arguments: [1, 7, 64, 100_000])
    func theClientsPiecesAreItsEvents(step: Int) {
        for includeUsage in [false, true] {
            var r = StreamRelay(includeUsage: includeUsage, records: true, maxEventBytes: 1 << 20)
            let bytes = Array(whole.utf8)
            var client: [UInt8] = []
            var i = 0
            while i < bytes.count {
                let j = min(bytes.count, i + step)
                _ = bytes[i..<j].withUnsafeBytes { r.read($0) }
                let lent = r.withClientEvents { parts in parts.flatMap { Array($0) } }
                #expect(lent == r.clientEvents)
                #expect(r.hasClientEvents == !lent.isEmpty)
                client += lent
                i = j
            }
            #expect(String(decoding: client, as: UTF8.self) == (includeUsage ? whole : whole.replacing(usageChunk, with: "")))
        }
        var r = StreamRelay(includeUsage: false, records: false, maxEventBytes: 1 << 20)
        let two = Array((chunk(#"{"content":"a"}"#) + chunk(#"{"content":"b"}"#)).utf8)
        _ = two.withUnsafeBytes { r.read($0) }
        let base = r.events.withUnsafeBytes { $0.baseAddress }
        #expect(r.withClientEvents { $0.count == 1 && $0[0].baseAddress == base && $0[0].count == two.count })
    }

    @Test func onlyWholeEventsLeaveAndOneReadIsOneOutput() {
        var r = StreamRelay(includeUsage: true, records: true, maxEventBytes: 1 << 20)
        let bytes = Array(whole.utf8)
        let cut = chunk(#"{"role":"assistant","content":""}"#).utf8.count + 10
        _ = bytes[..<cut].withUnsafeBytes { r.read($0) }
        #expect(String(decoding: r.clientEvents, as: UTF8.self) == chunk(#"{"role":"assistant","content":""}"#), "the partial event waits")
        _ = bytes[cut...].withUnsafeBytes { r.read($0) }
        #expect(r.clientEvents.count == bytes.count - cut + 10, "the rest, in one buffer")
    }

    @Test(arguments: [1, 7, 100_000])
    func theRecordingIsTheStreamWithItsUsageChunkNoted(step: Int) throws {
        let (r, _, _, _) = relay(whole, step: step)
        let a = try #require(r.answer)
        #expect(String(decoding: a.events, as: UTF8.self) == whole)
        #expect(a.usageRanges.count == 1)
        #expect(String(decoding: a.events(includeUsage: false), as: UTF8.self) == whole.replacing(usageChunk, with: ""))
        #expect(a.events(includeUsage: true) == a.events)
        let body = try #require(a.completeBody().map { String(decoding: $0, as: UTF8.self) })
        #expect(body.contains(#""content":"Hi!""#) && body.contains(#""object":"chat.completion""#))
    }

    @Test(arguments: [
        ("no [DONE]", chunk(#"{"content":"Hi"}"#, finish: "stop") + usageChunk),
        ("a choice never finished", chunk(#"{"content":"Hi"}"#) + done),
        ("one of two choices unfinished", chunk(#"{"content":"a"}"#, finish: "stop") + chunk(#"{"content":"b"}"#, index: 1) + done),
        ("an error event", chunk(#"{"content":"Hi"}"#) + #"data: {"error":{"message":"boom","code":500}}"# + "\n\n" + done),
        ("a foreign object", chunk(#"{"content":"Hi"}"#, finish: "stop") + #"data: {"object":"chat.completion","choices":[]}"# + "\n\n" + done),
        ("a choice index out of range", chunk(#"{"content":"Hi"}"#, finish: "stop", index: 64) + done),
    ])
    func onlyAWholeAnswerIsKept(_ why: String, _ text: String) {
        let (r, _, _, _) = relay(text, step: 9)
        #expect(r.answer == nil, "\(why)")
    }

    /// The relay finds each recorded event's id and created values as it reads (reusing a parse
    /// where the parser's member count proves it right): exactly what parsing the recording
    /// finds, over random streams (escaped and repeated keys, nested ids, other spacings and
    /// framings, a created that grows) cut into random reads.
    @Test func theRecordedIdentityIsWhatParsingTheRecordingFinds() throws {
        let head = #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":12,"#
        let choice = #""choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]"#
        let variants = [
            "data: " + head + choice + "}\n\n",
            "data: " + head + choice + #","id":"again"}"# + "\n\n",
            "data: " + head.replacing(#""created":12"#, with: #""created":123"#) + choice + "}\n\n",
            "data: " + head + choice + #","\u0063reated":5}"# + "\n\n",
            "data: " + head + #""choices":[{"index":0,"delta":{"tool_calls":[{"id":"t","created":1}]},"finish_reason":null}]}"# + "\n\n",
            "data: " + head.replacing(#""id":"chatcmpl-1""#, with: #""id":7"#) + choice + "}\n\n",
            "data: " + head + choice + #","created":"late"}"# + "\n\n",
            ": keepalive\n\n",
            "data: " + head + choice + "}\r\n\r\n",
            "data:" + head + choice + "}\n\n",
            #"data: { "id" : "chatcmpl-2" , "object":"chat.completion.chunk", "created" : 13 , "# + choice + " }\n\n",
        ]
        let final = "data: " + head + #""choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"# + "\n\n" + done
        var rng = TestRNG(seed: 5)
        var compared = 0
        for round in 0..<300 {
            var text = ""
            for _ in 0..<Int.random(in: 1...12, using: &rng) { text += variants.randomElement(using: &rng)! }
            let split = round % 10 == 0  // now and then an event whose data takes two lines
            if split { text += "data: " + head + "\ndata: " + choice + "}\n\n" }
            text += final
            let (r, _, _, _) = relay(text, step: Int.random(in: 1...300, using: &rng))
            let a = try #require(r.answer)
            let parsed = a.events.withUnsafeBytes { ReplyStamp.spans(ofEvents: $0) }
            if split {
                #expect(a.identitySpans == nil && parsed == nil)
            } else {
                #expect(a.identitySpans != nil && a.identitySpans == parsed, "\(text)")
                compared += 1
            }
        }
        #expect(compared > 200)
    }

    @Test func anInvalidEventBreaksTheStream() {
        let (r, client, _, reads) = relay(chunk(#"{"content":"Hi"}"#) + "data: {not json}\n\n" + done, step: 100_000)
        #expect(reads == [.broken])
        #expect(!client.contains("not json"))
        #expect(r.answer == nil)
    }

    @Test func nothingIsRecordedWhenNotAskedOrTooLong() {
        #expect(relay(whole, step: 50, records: false).0.answer == nil)
        var r = StreamRelay(includeUsage: true, records: true, maxEventBytes: 1 << 20)
        let big = chunk(#"{"content":""# + String(repeating: "x", count: 1 << 20) + #""}"#)
        let n = StreamRelay.maxRecordedBytes / big.utf8.count + 1
        for _ in 0...n { _ = Array(big.utf8).withUnsafeBytes { r.read($0) } }
        _ = Array((chunk("{}", finish: "stop") + done).utf8).withUnsafeBytes { r.read($0) }
        #expect(r.recordingOverflowed && r.answer == nil && r.sawDone, "relayed whole, kept nothing")
    }
}

@Suite struct StoredAnswerTests {
    @Test func bothFormsRoundTripThroughTheCacheFormat() throws {
        let (r, _, _, _) = relay(whole, step: 100_000)
        let s = StoredAnswer.stream(try #require(r.answer))
        #expect(StoredAnswer.decode(s.encoded()) == s)
        let j = StoredAnswer.json(Array(#"{"id":"x"}"#.utf8))
        #expect(StoredAnswer.decode(j.encoded()) == j)
    }

    @Test func aStreamRepliesInEitherForm() throws {
        let (r, _, _, _) = relay(whole, step: 100_000)
        let s = StoredAnswer.stream(try #require(r.answer))
        // Every reply is a response of its own: this stamp's id and created, in every chunk.
        let stamp = ReplyStamp(id: "chatcmpl-r2", created: 7)
        let own = whole.replacing(#""id":"c","object""#, with: #""id":"chatcmpl-r2","object""#)
            .replacing(#""created":1,"#, with: #""created":7,"#)
        #expect(s.reply(stream: true, includeUsage: true, stamp: stamp).map { String(decoding: $0, as: UTF8.self) } == own)
        let plain = try #require(s.reply(stream: false, includeUsage: false, stamp: stamp).map { String(decoding: $0, as: UTF8.self) })
        #expect(plain.hasPrefix(#"{"id":"chatcmpl-r2","object":"chat.completion","created":7,"#) && plain.contains(#""prompt_tokens":3"#))
        let again = ReplyStamp(id: "chatcmpl-r3", created: 8)
        let back = try #require(StoredAnswer.json(Array(plain.utf8)).reply(stream: true, includeUsage: true, stamp: again))
        let backText = String(decoding: back, as: UTF8.self)
        #expect(backText.hasSuffix(done))
        let chunks = backText.ranges(of: "data: {").count
        #expect(chunks == 3 && backText.ranges(of: #""id":"chatcmpl-r3","object":"chat.completion.chunk","created":8,"#).count == chunks)
        #expect(!backText.contains("chatcmpl-r2"))
        let json = try #require(StoredAnswer.json(Array(plain.utf8)).reply(stream: false, includeUsage: false, stamp: again))
        #expect(String(decoding: json, as: UTF8.self) == plain.replacing("chatcmpl-r2", with: "chatcmpl-r3").replacing(#""created":7,"#, with: #""created":8,"#))
    }

    @Test(arguments: [
        "", "J", "{\"id\":1}", "X123",
        "S\u{0}\u{0}\u{0}\u{1}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{20}data: x\n\n",  // range past the end
        "S\u{FF}\u{FF}\u{FF}\u{FF}data",                                             // a count beyond the bytes
        "S\u{0}\u{0}\u{0}\u{0}",                                                     // no events
    ])
    func anythingElseIsAMiss(_ raw: String) {
        #expect(StoredAnswer.decode(Array(raw.utf8)) == nil)
    }
}

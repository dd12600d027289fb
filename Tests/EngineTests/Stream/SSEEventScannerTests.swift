// SSEEventScanner and UpstreamJSON: whole events at any read split, usage read by the parser
// whatever the spacing or escapes, usage-only chunks removed only from the filtered copy, invalid
// and post-[DONE] events refused, a partial event held.
import Testing
@testable import Engine

private let stream = """
data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}

data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"\\"usage\\": {"},"finish_reason":"length"}]}

data: { "id" : "c", "choices" : [ ], "usage" : { "prompt_tokens" : 8, "total_tokens" : 9, "completion_tokens" : 1 } }

data: [DONE]

""" + "\n"

func feed(_ text: String, step: Int, filter: Bool = true) -> (SSEEventScanner, String, String) {
    var sc = SSEEventScanner()
    var all: [UInt8] = []
    var without: [UInt8] = []
    let bytes = Array(text.utf8)
    var i = 0
    while i < bytes.count {
        let j = min(bytes.count, i + step)
        bytes[i..<j].withUnsafeBytes { sc.feed($0, all: &all, withoutUsage: &without, filterUsage: filter) }
        i = j
    }
    return (sc, String(decoding: all, as: UTF8.self), String(decoding: without, as: UTF8.self))
}

@Suite struct SSEEventScannerTests {
    @Test(arguments: [1, 2, 3, 7, 50, 10_000])
    func usageReadAndFilteredAtAnySplit(step: Int) {
        let (sc, all, without) = feed(stream, step: step)
        #expect(all == stream)
        #expect(sc.usage == UpstreamJSON.Usage(prompt: 8, completion: 1))
        #expect(sc.sawDone && !sc.sawError && sc.invalidEvents == 0 && sc.pendingBytes == 0)
        #expect(sc.usageEventsDropped == 1)
        #expect(!without.contains("prompt_tokens"))
        #expect(without.contains("\\\"usage\\\": {"))  // content that merely mentions usage stays
    }

    @Test func crlfEventsAndMultiLineData() {
        let text = "data: {\"choices\":[],\r\ndata: \"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\r\n\r\ndata: [DONE]\r\n\r\n"
        let (sc, all, _) = feed(text, step: 5)
        #expect(sc.usage == UpstreamJSON.Usage(prompt: 3, completion: 4))
        #expect(sc.sawDone)
        #expect(all == text)
    }

    @Test func partialEventIsHeld() {
        let (sc, all, _) = feed("data: {\"id\":\"a\",\"choices\":[]}\n\ndata: {\"id\"", step: 4)
        #expect(all == "data: {\"id\":\"a\",\"choices\":[]}\n\n")
        #expect(sc.pendingBytes == 11)
        #expect(!sc.sawDone)
    }

    @Test func invalidEventsAreRefused() {
        for bad in ["data: {\"id\":\n\n", "data: [1,2]\n\n", "data: \"\u{FFFF}x\n\n"] {
            let (sc, all, _) = feed(bad, step: 3)
            #expect(sc.invalidEvents == 1, "\(bad)")
            #expect(all.isEmpty, "\(bad)")
        }
        var sc = SSEEventScanner()
        var all: [UInt8] = [], w: [UInt8] = []
        let invalidUTF8: [UInt8] = Array("data: {\"a\":\"".utf8) + [0xFF, 0xFE] + Array("\"}\n\n".utf8)
        invalidUTF8.withUnsafeBytes { sc.feed($0, all: &all, withoutUsage: &w, filterUsage: false) }
        #expect(sc.invalidEvents == 1 && all.isEmpty)
    }

    @Test func nothingAfterDone() {
        let (sc, all, _) = feed("data: [DONE]\n\ndata: {\"choices\":[]}\n\n", step: 100)
        #expect(all == "data: [DONE]\n\n")
        #expect(sc.invalidEvents == 0 && sc.eventsAfterDone == 1)
        let (sc2, _, _) = feed("data: [DONE]\n\ndata: {\"partial", step: 3)
        #expect(sc2.pendingBytes == 0)  // nothing is held after [DONE] either
    }

    @Test func overlongEventIsRefused() {
        var sc = SSEEventScanner(maxEventBytes: 64)
        var all: [UInt8] = [], w: [UInt8] = []
        let big = Array(("data: \"" + String(repeating: "x", count: 100)).utf8)
        big.withUnsafeBytes { sc.feed($0, all: &all, withoutUsage: &w, filterUsage: false) }
        #expect(sc.invalidEvents == 1 && sc.pendingBytes == 0)
    }

    @Test func errorEventIsSeenByTheParser() {
        let (sc, _, _) = feed("data: {\"error\" : {\"message\":\"boom\",\"code\":500}}\n\n", step: 7)
        #expect(sc.sawError)
    }

    @Test func commentsPassThrough() {
        let (sc, all, _) = feed(": keepalive\n\n", step: 2)
        #expect(all == ": keepalive\n\n" && sc.invalidEvents == 0)
    }
}

@Suite struct UpstreamJSONTests {
    @Test func usageWithAnySpacingAndEscapes() {
        let bodies = [
            #"{"id":"x","choices":[{"index":0}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#,
            "{\n  \"id\": \"x\",\n  \"choices\": [{\"index\": 0}],\n  \"usage\": {\n    \"prompt_tokens\": 12,\n    \"completion_tokens\": 5\n  }\n}",
            #"{"\u0069d":"\u0000","choices":[{}],"\u0075sage":{"prompt_tokens":12,"completion_tokens":5}}"#,
        ]
        for b in bodies {
            let j = UpstreamJSON.inspect(Array(b.utf8))
            #expect(j.kind == .object && j.hasChoices && !j.choicesEmpty, "\(b)")
            #expect(j.usage == UpstreamJSON.Usage(prompt: 12, completion: 5), "\(b)")
        }
    }

    @Test func shapesAreToldApart() {
        #expect(UpstreamJSON.inspect(Array("[DONE]".utf8)).kind == .done)
        #expect(UpstreamJSON.inspect(Array("[1]".utf8)).kind == .notObject)
        #expect(UpstreamJSON.inspect(Array("{\"a\":".utf8)).kind == .invalid)
        #expect(UpstreamJSON.inspect([]).kind == .invalid)
        #expect(UpstreamJSON.inspect(Array(#"{"usage":null}"#.utf8)).usage == nil)
        #expect(UpstreamJSON.inspect(Array(#"{"usage":{"prompt_tokens":"8","completion_tokens":1}}"#.utf8)).usage == nil)
        #expect(UpstreamJSON.inspect(Array(#"{"error":{"message":"x"}}"#.utf8)).hasError)
    }

    /// A repeated key: the first one counts (as a lookup by key gives it), for the answer's shape,
    /// its choices and usage; every top-level string `id` and numeric `created` is an identity
    /// member (what the relay's reuse of a parsed head relies on), nested ones are not.
    @Test func repeatedKeysAndIdentityMembers() {
        let j = UpstreamJSON.inspect(Array(#"{"id":"a","object":"chat.completion.chunk","object":"x","created":1,"id":"b","choices":[{"index":1,"index":70,"finish_reason":"stop","finish_reason":null}],"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2},"usage":null,"x":{"id":"n","created":2},"created":"s","id":3}"#.utf8))
        #expect(j.object == .chatCompletionChunk)
        #expect(j.choicesSeen == 2 && j.choicesFinished == 2 && !j.choicesBeyond && !j.choicesEmpty)
        #expect(j.usage == UpstreamJSON.Usage(prompt: 1, completion: 2))
        #expect(j.identityMembers == 3)
        #expect(UpstreamJSON.inspect(Array(#"{"\u0069d":"a","cr\u0065ated":1.5}"#.utf8)).identityMembers == 2)
    }
}

/// fuzz/findings/sse-blank-line-after-done: a blank line more than an event's end is passed on
/// by itself, whatever the read boundaries (it used to be held as the start of the next event
/// when it came in a later read).
@Suite struct SSEEventScannerBlankLineTests {
    @Test(arguments: [1, 2, 3, 100])
    func extraBlankLinesDoNotDependOnReads(step: Int) {
        let text = "data: {\"choices\":[]}\n\n\n\r\ndata: [DONE]\n\n\n"
        let (sc, all, _) = feed(text, step: step)
        #expect(all == "data: {\"choices\":[]}\n\n\n\r\ndata: [DONE]\n\n")
        #expect(sc.pendingBytes == 0 && sc.invalidEvents == 0 && sc.sawDone)
        #expect(sc.eventsAfterDone == 1)
    }
}

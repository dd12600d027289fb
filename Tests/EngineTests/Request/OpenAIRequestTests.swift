// OpenAIRequest: the simdjson validation (CRequestScan) as values — every rule's error, the
// fields read, and the lazy jansson tree.
import CEventShim
import Testing
@testable import Engine

private func parse(_ json: String, _ kind: EndpointKind = .chat) -> Result<OpenAIRequest, EngineError> {
    OpenAIRequest.parse(kind: kind, body: Array(json.utf8))
}

private func failure(_ json: String, _ kind: EndpointKind = .chat) -> EngineError? {
    if case .failure(let e) = parse(json, kind) { return e }
    return nil
}

@Suite struct OpenAIRequestTests {
    @Test func readsModelStreamAndUsage() throws {
        let r = try parse(#"{"model":"m-1","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#).get()
        #expect(r.kind == .chat)
        #expect(r.model == "m-1")
        #expect(r.stream)
        #expect(r.includeUsage)
        #expect(r.promptSize == PromptSize(textBytes: 2, messages: 1))
        #expect(r.document == nil)  // no tree until a stage asks for one
    }

    @Test func nullAndAbsentFieldsAreDefaults() throws {
        let r = try parse(#"{"model":null,"prompt":"abc","stream":null,"stream_options":null}"#, .completion).get()
        #expect(r.model == nil)
        #expect(!r.stream)
        #expect(!r.includeUsage)
        #expect(r.promptSize == PromptSize(textBytes: 3, messages: 0))
    }

    @Test func escapedModelNameIsDecoded() throws {
        let r = try parse(#"{"model":"a\"b\u00e9","prompt":"x"}"#, .completion).get()
        #expect(r.model == "a\"bé")
    }

    @Test func badJSONIs400WithTheParsersReason() {
        for body in ["", "{", "{\"a\":1,}", "{\"a\":1} x", "{\"a\":tru}", "{\"model\":\"\u{FFFD}\"", "nul"] {
            let e = failure(body)
            #expect(e?.status == 400, "\(body)")
            #expect(e?.message.hasPrefix("We could not parse the JSON body") == true, "\(body)")
        }
        // Invalid UTF-8 inside a string.
        var bytes = Array(#"{"prompt":"ab"}"#.utf8)
        bytes[11] = 0xFF
        if case .failure(let e) = OpenAIRequest.parse(kind: .completion, body: bytes) {
            #expect(e.status == 400)
        } else {
            Issue.record("invalid UTF-8 accepted")
        }
    }

    @Test func notAnObject() {
        for body in ["[]", "1", "\"s\"", "null"] {
            #expect(failure(body)?.message == "The request body must be a JSON object.")
        }
    }

    @Test func fieldRules() {
        let cases: [(String, EndpointKind, String?)] = [
            (#"{"model":1,"messages":[{"role":"u"}]}"#, .chat, "model"),
            (#"{"stream":"yes","messages":[{"role":"u"}]}"#, .chat, "stream"),
            (#"{"stream_options":[],"messages":[{"role":"u"}]}"#, .chat, "stream_options"),
            (#"{}"#, .chat, "messages"),
            (#"{"messages":{}}"#, .chat, "messages"),
            (#"{"messages":[]}"#, .chat, "messages"),
            (#"{"messages":[{"role":"u"},3]}"#, .chat, "messages[1]"),
            (#"{"messages":[{"content":"x"}]}"#, .chat, "messages[0].role"),
            (#"{"messages":[{"role":"u","content":5}]}"#, .chat, "messages[0].content"),
            (#"{}"#, .completion, "prompt"),
            (#"{"prompt":null}"#, .completion, "prompt"),
            (#"{"prompt":5}"#, .completion, "prompt"),
            (#"{"prompt":[]}"#, .completion, "prompt"),
            (#"{"prompt":["a",1]}"#, .completion, "prompt"),
            (#"{"prompt":[1.5]}"#, .completion, "prompt"),
            (#"{"prompt":[[1,"a"]]}"#, .completion, "prompt"),
        ]
        for (body, kind, param) in cases {
            let e = failure(body, kind)
            #expect(e?.status == 400, "\(body)")
            #expect(e?.param == param, "\(body)")
        }
    }

    @Test func acceptedShapes() {
        let ok: [(String, EndpointKind)] = [
            (#"{"messages":[{"role":"u","content":null},{"role":"a","content":[{"type":"text","text":"x"}]}]}"#, .chat),
            (#"{"prompt":["a","b"]}"#, .completion),
            (#"{"prompt":[1,2,3]}"#, .completion),
            (#"{"prompt":[[1],[2,3]]}"#, .completion),
            (#"{"prompt":"x","extra":{"deep":[1,{"a":[true,false,null,1e5,-2.5]}]}}"#, .completion),
        ]
        for (body, kind) in ok {
            if case .failure(let e) = parse(body, kind) { Issue.record("\(body): \(e.message)") }
        }
    }

    @Test func largeBodyKeepsItsModel() throws {
        let text = String(repeating: "a", count: 400_000)
        let r = try parse(#"{"model":"big-model","prompt":"\#(text)"}"#, .completion).get()
        #expect(r.model == "big-model")
        #expect(r.promptSize.textBytes == 400_000)
        // The scanner works on after it freed its large buffers.
        #expect(try parse(#"{"model":"small","prompt":"x"}"#, .completion).get().model == "small")
    }

    @Test func loadDocumentParsesTheSameBodyOnce() throws {
        var r = try parse(#"{"model":"m","prompt":"p","n":2}"#, .completion).get()
        let d1 = try r.loadDocument().get()
        let d2 = try r.loadDocument().get()
        #expect(d1 === d2)
        #expect(JSONValue.number(json_object_get(d1.root, "n")) == 2)
    }

    @Test func janssonMayStillRejectWhatTheScannerAccepted() throws {
        // An integer beyond int64: simdjson reads it as uint64, jansson refuses it; the stage
        // that needs the tree answers 400.
        var r = try parse(#"{"prompt":"p","seed":18446744073709551615}"#, .completion).get()
        if case .failure(let e) = r.loadDocument() { #expect(e.status == 400) } else { Issue.record("jansson accepted") }
    }
}

/// fuzz/findings/request-duplicate-keys: a key twice would be read first by the validator and last
/// by jansson and vLLM; such a body is refused.
@Suite struct OpenAIRequestDuplicateKeyTests {
    @Test(arguments: [
        #"{"messages":[{"role":"u"}],"messages":[1]}"#,
        #"{"stream":false,"stream":true,"messages":[{"role":"user","content":"x"}]}"#,
        #"{"messages":[{"role":"user","content":"a","role":"system"}]}"#,
        #"{"stream":true,"stream_options":{"include_usage":false,"include_usage":true},"messages":[{"role":"user","content":"x"}]}"#,
    ])
    func duplicateKeysAreRefused(body: String) {
        guard case .failure(let e) = OpenAIRequest.parse(kind: .chat, body: Array(body.utf8)) else {
            Issue.record("accepted \(body)"); return
        }
        #expect(e.status == 400 && e.message.contains("Duplicate key"))
    }

    @Test func sameKeyInDifferentObjectsIsFine() {
        let body = #"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}"#
        guard case .success = OpenAIRequest.parse(kind: .chat, body: Array(body.utf8)) else { Issue.record("refused"); return }
    }
}

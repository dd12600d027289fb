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
        #expect(r.canonicalDigest == nil)  // no canonical form unless the cache asks for it
    }

    /// Admission's cost reads the allowed output by the parser: max_completion_tokens first, then
    /// max_tokens, only a non-negative integer (any spacing or escape in the key).
    @Test func maxOutputTokensIsReadByTheParser() throws {
        let cases: [(String, Int?)] = [
            (#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":16}"#, 16),
            (#"{"messages":[{"role":"user","content":"hi"}], "max_tokens" : 16 , "max_completion_tokens":7}"#, 7),
            (#"{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":null,"\u006dax_tokens":9}"#, 9),
            (#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":-3}"#, nil),
            (#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":12.5}"#, nil),
            (#"{"messages":[{"role":"user","content":"max_tokens: 5"}]}"#, nil),
            (#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":18446744073709551615}"#, Int.max),
        ]
        for (body, want) in cases {
            #expect(try parse(body, .chat).get().maxOutputTokens == want, "\(body)")
        }
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

    @Test func bigIntegersAndNULEscapesAreValidRequests() throws {
        // simdjson reads an integer beyond int64 as uint64, and keeps a \u0000 escape; the
        // canonical form and the rewrites keep both (jansson, the old tree, refused them).
        let r = try parse(#"{"prompt":"p\u0000q","seed":18446744073709551615}"#, .completion).get()
        #expect(r.isDeterministic)
        let out = try #require(OpenAIRequest.rewrite(Array(#"{"prompt":"p\u0000q","seed":18446744073709551615}"#.utf8),
                                                      model: "m", includeUsage: false))
        #expect(String(decoding: out, as: UTF8.self) == #"{"prompt":"p\u0000q","seed":18446744073709551615,"model":"m"}"#)
    }
}

/// The rewrites before forwarding, written from simdjson's view: the same fields in the same
/// order, compact, with `model` and `stream_options.include_usage` set.
@Suite struct OpenAIRequestRewriteTests {
    private func rewrite(_ s: String, model: String? = nil, usage: Bool = false) -> String? {
        OpenAIRequest.rewrite(Array(s.utf8), model: model, includeUsage: usage).map { String(decoding: $0, as: UTF8.self) }
    }

    @Test func setsTheModelInPlaceOrAddsIt() {
        #expect(rewrite(#"{ "model" : "auto", "prompt" : "p" }"#, model: "fast") == #"{"model":"fast","prompt":"p"}"#)
        #expect(rewrite(#"{"prompt":"p","model":null}"#, model: "fast") == #"{"prompt":"p","model":"fast"}"#)
        #expect(rewrite(#"{"prompt":"p"}"#, model: "fa\"st") == #"{"prompt":"p","model":"fa\"st"}"#)
    }

    @Test func setsIncludeUsageKeepingOtherStreamOptions() {
        #expect(rewrite(#"{"stream":true,"prompt":"p"}"#, usage: true) == #"{"stream":true,"prompt":"p","stream_options":{"include_usage":true}}"#)
        #expect(rewrite(#"{"stream_options":null,"prompt":"p"}"#, usage: true) == #"{"stream_options":{"include_usage":true},"prompt":"p"}"#)
        // continuous_usage_stats goes: vLLM reads it only with include_usage, which the client did
        // not ask for (with it, the client would get usage in every chunk: issue 12 item 8).
        #expect(rewrite(#"{"stream_options":{"include_usage":false,"continuous_usage_stats":true,"x":1},"prompt":"p"}"#, usage: true)
                == #"{"stream_options":{"x":1,"include_usage":true},"prompt":"p"}"#)
        #expect(rewrite(#"{"stream_options":{},"prompt":"p"}"#, model: "m", usage: true)
                == #"{"stream_options":{"include_usage":true},"prompt":"p","model":"m"}"#)
    }

    /// A stream's include_usage spliced in (no stream_options in the body) asks vLLM for the
    /// request `rewrite` writes: written compactly, the two are the same bytes, whatever the
    /// spacing, escapes and nesting of the client's body.
    @Test func includeUsageSplicedInIsTheRewrittenRequest() throws {
        let bodies = [
            #"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
            " {\n  \"prompt\" : \"p }\" ,\t\"stream\": true , \"x\" : {\"a\":[1,2,{\"}\":\"{\"}]}\r\n}\n\n ",
            #"{"messages":[{"role":"user","content":[{"type":"text","text":"\u00e9\"}"}]}],"stream":true,"n":1.50,"seed":-0}"#,
            #"{"prompt":["a","b"],"stream":true,"stream_options_x":{}}"#,
        ]
        var rng = TestRNG(seed: 77)
        for b in bodies {
            for round in 0..<20 {
                // The same body with spaces added after some commas and colons.
                var text = ""
                for ch in b {
                    text.append(ch)
                    if round > 0 && (ch == "," || ch == ":") && Bool.random(using: &rng) { text += String(repeating: " ", count: Int.random(in: 1...3, using: &rng)) }
                }
                let body = Array(text.utf8)
                let kind: EndpointKind = text.contains("messages") ? .chat : .completion
                guard case .success(let req) = OpenAIRequest.parse(kind: kind, body: body) else {
                    Issue.record("rejected: \(text)")
                    continue
                }
                #expect(!req.hasStreamOptions)
                let spliced = try #require(OpenAIRequest.addingIncludeUsage(to: body))
                guard case .success(let again) = OpenAIRequest.parse(kind: kind, body: spliced) else {
                    Issue.record("the spliced body is rejected: \(text)")
                    continue
                }
                #expect(again.includeUsage && again.hasStreamOptions)
                #expect(OpenAIRequest.rewrite(spliced, model: nil, includeUsage: false)
                        == OpenAIRequest.rewrite(body, model: nil, includeUsage: true), "\(text)")
            }
        }
        for s in [#"{"stream_options":null,"prompt":"p"}"#, #"{"prompt":"p","stream_options":{}}"#] {
            guard case .success(let r) = OpenAIRequest.parse(kind: .completion, body: Array(s.utf8)) else { throw CancellationError() }
            #expect(r.hasStreamOptions, "\(s): rewrite handles it")
        }
        #expect(OpenAIRequest.addingIncludeUsage(to: Array("{ }".utf8)) == nil)
        #expect(OpenAIRequest.addingIncludeUsage(to: Array("[1]".utf8)) == nil)
    }

    @Test func continuousUsageIsReadOnlyWithIncludeUsageOnAStream() throws {
        func cu(_ s: String) throws -> Bool {
            guard case .success(let r) = OpenAIRequest.parse(kind: .completion, body: Array(s.utf8)) else { throw CancellationError() }
            return r.continuousUsage
        }
        #expect(try cu(#"{"prompt":"p","stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true}}"#))
        #expect(try !cu(#"{"prompt":"p","stream":true,"stream_options":{"continuous_usage_stats":true}}"#))
        #expect(try !cu(#"{"prompt":"p","stream_options":{"include_usage":true,"continuous_usage_stats":true}}"#))
        #expect(try !cu(#"{"prompt":"p","stream":true,"stream_options":{"include_usage":true}}"#))
    }

    @Test func keepsValuesExactlyAsNumbersAndStrings() throws {
        let body = #"{"messages":[{"role":"user","content":"\u00e9\n\"x\"\u0001 \u2028"}],"temperature":0.7,"top_p":1e-7,"n":2,"logit_bias":{"5":-100},"x":[true,false,null,1.0]}"#
        let out = try #require(rewrite(body, model: "m"))
        // Re-parsed, it is the same request (and the same canonical form) as before.
        #expect(OpenAIRequest.canonicalForm(kind: .chat, body: Array(out.utf8)) == OpenAIRequest.canonicalForm(kind: .chat, body: Array(body.utf8)))
        #expect(out.contains(#""temperature":0.7,"top_p":1e-07,"n":2"#))
        #expect(out.contains(#""content":"é\n\"x\"\u0001 \#u{2028}""#))
        #expect(out.contains(#""x":[true,false,null,1.0]"#))
    }

    @Test func extractsOneField() {
        let b = Array(#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#.utf8)
        #expect(OpenAIRequest.extract(b, key: "messages").map { String(decoding: $0, as: UTF8.self) } == #"{"messages":[{"role":"user","content":"hi"}]}"#)
        #expect(OpenAIRequest.extract(b, key: "prompt").map { String(decoding: $0, as: UTF8.self) } == "{}")
        #expect(OpenAIRequest.extract(Array("[1]".utf8), key: "prompt") == nil)
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

/// The canonical form sorts the members of objects of any size (up to 8 on the stack, more in a
/// vector): shuffled bodies with large objects at two depths digest to the sorted text's SHA-256.
@Suite struct CanonicalFormSortingTests {
    @Test func largeObjectsInAnyOrderDigestAsTheirSortedText() {
        var rng = SystemRandomNumberGenerator()
        for n in [0, 1, 7, 8, 9, 20] {
            let inner = (0..<n).map { "\"i\(($0 < 10 ? "0\($0)" : "\($0)"))\":\($0)" }
            let innerSorted = "{" + inner.joined(separator: ",") + "}"
            let outer = (0..<n).map { "\"k\(($0 < 10 ? "0\($0)" : "\($0)"))\":\"v\($0)\"" } + ["\"messages\":[{\"content\":\"hi\",\"role\":\"user\",\"x\":\(innerSorted)}]"]
            let expected = "{" + outer.sorted().joined(separator: ",") + "}"
            let want = Digest.sha256(Array(expected.utf8))
            for _ in 0..<5 {
                let shuffledInner = "{" + inner.shuffled(using: &rng).joined(separator: ",") + "}"
                let members = outer.dropLast() + ["\"messages\":[{\"x\":\(shuffledInner),\"content\":\"hi\",\"role\":\"user\"}]", "\"model\":\"m\""]
                let body = "{" + members.shuffled(using: &rng).joined(separator: ",") + "}"
                guard case .success(let r) = OpenAIRequest.parse(kind: .chat, body: Array(body.utf8), canonical: true) else {
                    Issue.record("rejected \(body)")
                    continue
                }
                #expect(r.canonicalDigest == want, "\(body)")
            }
        }
    }
}

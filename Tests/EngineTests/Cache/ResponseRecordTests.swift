// StreamAssembler and ReplayWriter on the exact vLLM samples of ref/vllm-api.md sections 4-5,
// at every chunk boundary, plus truncation, errors, garbage and round trips.
import Testing
@testable import Engine

// Section 5, chat, "stream":true, max_tokens 3 (verbatim).
let chatStream = #"""
data: {"id":"chatcmpl-8eaad45c3bdb72fa","object":"chat.completion.chunk","created":1795614816,"model":"tiny","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"prompt_token_ids":null,"prompt_text":null}

data: {"id":"chatcmpl-8eaad45c3bdb72fa","object":"chat.completion.chunk","created":1795614816,"model":"tiny","choices":[{"index":0,"delta":{"content":"ream"},"logprobs":null,"finish_reason":null,"token_ids":null}]}

data: {"id":"chatcmpl-8eaad45c3bdb72fa","object":"chat.completion.chunk","created":1795614816,"model":"tiny","choices":[{"index":0,"delta":{"content":" res"},"logprobs":null,"finish_reason":null,"token_ids":null}]}

data: {"id":"chatcmpl-8eaad45c3bdb72fa","object":"chat.completion.chunk","created":1795614816,"model":"tiny","choices":[{"index":0,"delta":{"content":"ream"},"logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":null}],"system_fingerprint":"vllm-0.32.0-acb9755d"}

data: [DONE]


"""#

// Section 5, include_usage: the same events (first three as above, with this response's id), then the
// two chunks shown verbatim in the reference, then [DONE].
let chatUsageStream = #"""
data: {"id":"chatcmpl-9fd2943d69937ff0","object":"chat.completion.chunk","created":1795614816,"model":"tiny","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"prompt_token_ids":null,"prompt_text":null}

data: {"id":"chatcmpl-9fd2943d69937ff0","object":"chat.completion.chunk","created":1795614816,"model":"tiny","choices":[{"index":0,"delta":{"content":"ream"},"logprobs":null,"finish_reason":null,"token_ids":null}]}

data: {"id":"chatcmpl-9fd2943d69937ff0","object":"chat.completion.chunk","created":1795614816,"model":"tiny","choices":[{"index":0,"delta":{"content":" res"},"logprobs":null,"finish_reason":null,"token_ids":null}]}

data: {"id":"chatcmpl-9fd2943d69937ff0","object":"chat.completion.chunk","created":1795614816,"model":"tiny","choices":[{"index":0,"delta":{"content":"ream"},"logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":null}]}

data: {"id":"chatcmpl-9fd2943d69937ff0","object":"chat.completion.chunk","created":1795614816,"model":"tiny","choices":[],"usage":{"prompt_tokens":8,"total_tokens":11,"completion_tokens":3},"system_fingerprint":"vllm-0.32.0-acb9755d"}

data: [DONE]


"""#

// Section 5, completions, "stream":true (verbatim).
let completionStream = #"""
data: {"id":"cmpl-8b6eddfdd67c9c7d","object":"text_completion","created":1795614810,"model":"tiny","choices":[{"index":0,"text":"**","logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":null,"token_ids":null}]}

data: {"id":"cmpl-8b6eddfdd67c9c7d","object":"text_completion","created":1795614810,"model":"tiny","choices":[{"index":0,"text":" <=","logprobs":null,"finish_reason":null,"stop_reason":null,"prompt_token_ids":null,"token_ids":null}]}

data: {"id":"cmpl-8b6eddfdd67c9c7d","object":"text_completion","created":1795614810,"model":"tiny","choices":[{"index":0,"text":"FLAG","logprobs":null,"finish_reason":"length","stop_reason":null,"prompt_token_ids":null,"token_ids":null}],"system_fingerprint":"vllm-0.32.0-acb9755d"}

data: [DONE]


"""#

// Completions with include_usage: the reference's usage chunk (verbatim, from another request) before [DONE].
let completionUsageStream = completionStream.replacingDone(with: #"""
data: {"id":"cmpl-8435d43d4fbd725f","object":"text_completion","created":1795614816,"model":"tiny","choices":[],"usage":{"prompt_tokens":3,"total_tokens":5,"completion_tokens":2},"system_fingerprint":"vllm-0.32.0-acb9755d"}

data: [DONE]


"""#)

// Section 4 non-streaming bodies (verbatim).
let chatBody = #"{"id":"chatcmpl-b769eb5af4624e40","object":"chat.completion","created":1795614810,"model":"tiny","choices":[{"index":0,"message":{"role":"assistant","content":"ream resream resream resream res","refusal":null,"annotations":null,"audio":null,"function_call":null,"reasoning":null},"logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":null,"routed_experts":null}],"service_tier":null,"system_fingerprint":"vllm-0.32.0-acb9755d","usage":{"prompt_tokens":8,"total_tokens":16,"completion_tokens":8,"prompt_tokens_details":null,"completion_tokens_details":null},"prompt_logprobs":null,"prompt_token_ids":null,"prompt_text":null,"kv_transfer_params":null,"ec_transfer_params":null,"metrics":null}"#
let completionBody = #"{"id":"cmpl-b8eb8b7c3b3e7614","object":"text_completion","created":1795614810,"model":"tiny","choices":[{"index":0,"text":"** <=FLAG� ' ' ' '","logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":null,"prompt_logprobs":null,"prompt_token_ids":null,"routed_experts":null}],"service_tier":null,"system_fingerprint":"vllm-0.32.0-acb9755d","usage":{"prompt_tokens":6,"total_tokens":14,"completion_tokens":8,"prompt_tokens_details":null,"completion_tokens_details":null},"kv_transfer_params":null,"ec_transfer_params":null,"metrics":null}"#

extension String {
    fileprivate func replacingDone(with tail: String) -> String {
        let done = "data: [DONE]\n\n"
        guard let r = self.firstRange(of: done) else { return self }
        return String(self[..<r.lowerBound]) + tail
    }
}

private func assemble(_ s: String) -> StreamAssembler {
    var a = StreamAssembler()
    a.feed(Array(s.utf8))
    return a
}

private func text(_ b: [UInt8]?) -> String? { b.map { String(decoding: $0, as: UTF8.self) } }

@Suite struct StreamAssemblerTests {
    @Test func chatStreamBecomesTheNonStreamingBody() {
        let a = assemble(chatStream)
        #expect(a.isComplete)
        #expect(a.isCacheable)
        #expect(!a.sawError)
        #expect(a.kind == .chat)
        #expect(text(a.completeBody()) == #"{"id":"chatcmpl-8eaad45c3bdb72fa","object":"chat.completion","created":1795614816,"model":"tiny","choices":[{"index":0,"message":{"role":"assistant","content":"ream resream","refusal":null,"annotations":null,"audio":null,"function_call":null,"reasoning":null},"logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":null,"routed_experts":null}],"service_tier":null,"system_fingerprint":"vllm-0.32.0-acb9755d","usage":null,"prompt_logprobs":null,"prompt_token_ids":null,"prompt_text":null,"kv_transfer_params":null,"ec_transfer_params":null,"metrics":null}"#)
    }

    @Test func chatUsageChunkFillsUsage() {
        let a = assemble(chatUsageStream)
        #expect(a.isCacheable)
        let body = text(a.completeBody()) ?? ""
        #expect(body.contains(#""usage":{"prompt_tokens":8,"total_tokens":11,"completion_tokens":3,"prompt_tokens_details":null,"completion_tokens_details":null}"#))
        #expect(body.contains(#""system_fingerprint":"vllm-0.32.0-acb9755d""#))
        #expect(body.contains(#""content":"ream resream""#))
    }

    @Test func completionStreamBecomesTheNonStreamingBody() {
        let a = assemble(completionStream)
        #expect(a.isCacheable)
        #expect(a.kind == .completion)
        #expect(text(a.completeBody()) == #"{"id":"cmpl-8b6eddfdd67c9c7d","object":"text_completion","created":1795614810,"model":"tiny","choices":[{"index":0,"text":"** <=FLAG","logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":null,"prompt_logprobs":null,"prompt_token_ids":null,"routed_experts":null}],"service_tier":null,"system_fingerprint":"vllm-0.32.0-acb9755d","usage":null,"kv_transfer_params":null,"ec_transfer_params":null,"metrics":null}"#)
        let u = assemble(completionUsageStream)
        #expect(u.isCacheable)
        #expect(text(u.completeBody())?.contains(#""usage":{"prompt_tokens":3,"total_tokens":5,"completion_tokens":2,"#) == true)
    }

    @Test(arguments: [chatStream, chatUsageStream, completionStream, completionUsageStream])
    func everyChunkBoundaryGivesTheSameBody(_ sample: String) {
        let bytes = Array(sample.utf8)
        let whole = assemble(sample).completeBody()
        #expect(whole != nil)
        for cut in 0...bytes.count {
            var a = StreamAssembler()
            a.feed(Array(bytes[..<cut]))
            a.feed(Array(bytes[cut...]))
            #expect(a.completeBody() == whole, "cut at \(cut)")
            if a.completeBody() != whole { return }
        }
        var one = StreamAssembler()
        for b in bytes { one.feed([b]) }
        #expect(one.completeBody() == whole, "byte by byte")
        // Three pieces at a stride, to cross two boundaries inside one event.
        for i in stride(from: 0, to: bytes.count, by: 7) {
            let j = min(bytes.count, i + 13)
            var a = StreamAssembler()
            a.feed(Array(bytes[..<i]))
            a.feed(Array(bytes[i..<j]))
            a.feed(Array(bytes[j...]))
            #expect(a.completeBody() == whole, "cuts at \(i), \(j)")
        }
    }

    @Test func truncatedStreamIsIncomplete() {
        let bytes = Array(chatStream.utf8)
        // The [DONE] event only counts once its blank line arrives, i.e. with the very last byte.
        for cut in 0..<bytes.count {
            var a = StreamAssembler()
            a.feed(Array(bytes[..<cut]))
            #expect(!a.isComplete, "cut at \(cut)")
            #expect(a.completeBody() == nil)
        }
        let noDone = chatStream.replacingDone(with: "")
        #expect(!assemble(noDone).isComplete)
    }

    @Test func doneWithoutFinishReasonIsIncomplete() {
        let s = #"""
            data: {"id":"x","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":"a","finish_reason":null}]}

            data: [DONE]


            """#
        let a = assemble(s)
        #expect(a.sawDone)
        #expect(!a.isComplete)
        #expect(a.completeBody() == nil)
    }

    @Test func errorEventIsNotCacheable() {
        let s = chatStream.replacingDone(with: #"""
            data: {"error":{"message":"boom","type":"InternalServerError","param":null,"code":500}}

            data: [DONE]


            """#)
        let a = assemble(s)
        #expect(a.sawError)
        #expect(!a.isCacheable)
        #expect(a.completeBody() == nil)
    }

    @Test func sizeCapGivesUp() {
        var a = StreamAssembler(maxBytes: 200)
        a.feed(Array(chatStream.utf8))
        #expect(a.gaveUp == .tooLarge)
        #expect(a.completeBody() == nil)
    }

    @Test func logprobsInAStreamAreNotRebuilt() {
        let s = chatStream.replacingFirst(#""delta":{"content":"ream"},"logprobs":null"#,
                                          #""delta":{"content":"ream"},"logprobs":{"content":[]}"#)
        let a = assemble(s)
        #expect(a.gaveUp == .unsupported("logprobs"))
        #expect(a.completeBody() == nil)
    }

    @Test func crlfAndCommentsAndMultipleChoicesAndToolCalls() {
        let s = """
            : keep-alive\r
            data: {"id":"c","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":1,"delta":{"role":"assistant","content":""},"finish_reason":null},{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\r
            \r
            data: {"id":"c","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":1,"delta":{"content":"B"},"finish_reason":null}]}\r
            \r
            data: {"id":"c","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":"{\\"a\\""}}]},"finish_reason":null}]}\r
            \r
            data: {"id":"c","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]},"finish_reason":"tool_calls"}]}\r
            \r
            data: {"id":"c","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":1,"delta":{"content":"C"},"finish_reason":"stop","stop_reason":42}]}\r
            \r
            data: [DONE]\r
            \r

            """
        let a = assemble(s)
        #expect(a.isCacheable)
        #expect(text(a.completeBody()) == #"{"id":"c","object":"chat.completion","created":7,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":null,"annotations":null,"audio":null,"function_call":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"a\":1}"}}],"reasoning":null},"logprobs":null,"finish_reason":"tool_calls","stop_reason":null,"token_ids":null,"routed_experts":null},{"index":1,"message":{"role":"assistant","content":"BC","refusal":null,"annotations":null,"audio":null,"function_call":null,"reasoning":null},"logprobs":null,"finish_reason":"stop","stop_reason":42,"token_ids":null,"routed_experts":null}],"service_tier":null,"system_fingerprint":null,"usage":null,"prompt_logprobs":null,"prompt_token_ids":null,"prompt_text":null,"kv_transfer_params":null,"ec_transfer_params":null,"metrics":null}"#)
    }

    @Test func garbageNeverCrashesAndIsNeverCacheable() {
        let junk = ["data: {\n\n", "data: [1,2]\n\n", "data: {\"choices\":7}\n\n", "data: {\"object\":\"x\"}\n\n",
                    "data: \n\n", "\n\n\n", "data: {\"choices\":[{\"delta\":5}]}\n\n",
                    "data: {\"choices\":[{\"delta\":{\"tool_calls\":[3]}}]}\n\ndata: [DONE]\n\n"]
        for j in junk {
            let a = assemble(j)
            #expect(!a.isCacheable, "\(j)")
            #expect(a.completeBody() == nil)
        }
        var rng = TestRNG(seed: 99)
        let sample = Array(chatUsageStream.utf8)
        for _ in 0..<300 {
            var mutated = sample
            for _ in 0..<(1 + Int(rng.next() % 4)) {
                mutated[Int(rng.next() % UInt64(mutated.count))] = UInt8(truncatingIfNeeded: rng.next())
            }
            var a = StreamAssembler()
            var i = 0
            while i < mutated.count {
                let n = 1 + Int(rng.next() % 64)
                a.feed(Array(mutated[i..<min(mutated.count, i + n)]))
                i += n
            }
            if let body = a.completeBody() {
                // A mutation inside a string can survive; the body must then still replay.
                #expect(ReplayWriter.sse(fromCompleteBody: body, includeUsage: true) != nil)
            }
        }
        var random = StreamAssembler()
        for _ in 0..<2000 { random.feed([UInt8(truncatingIfNeeded: rng.next())]) }
        #expect(!random.isCacheable)
    }

    @Test func nulInsideADeltaIsKept() throws {
        // U+0000 is valid JSON text (vLLM emits it as \u0000); it must not end the string or the stream.
        let sse = chatStream.replacing(#""content":" res""#, with: #""content":" r\u0000s""#)
        let body = try #require(text(assemble(sse).completeBody()))
        #expect(body.contains(#""content":"ream r\u0000sream""#))
    }
}

@Suite struct ReplayWriterTests {
    @Test func chatBodyReplaysAsVLLMChunks() {
        let sse = text(ReplayWriter.sse(fromCompleteBody: Array(chatBody.utf8), includeUsage: false))
        #expect(sse == #"""
            data: {"id":"chatcmpl-b769eb5af4624e40","object":"chat.completion.chunk","created":1795614810,"model":"tiny","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"prompt_token_ids":null,"prompt_text":null}

            data: {"id":"chatcmpl-b769eb5af4624e40","object":"chat.completion.chunk","created":1795614810,"model":"tiny","choices":[{"index":0,"delta":{"content":"ream resream resream resream res"},"logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":null}],"system_fingerprint":"vllm-0.32.0-acb9755d"}

            data: [DONE]


            """#)
    }

    @Test func usageChunkOnlyWhenAskedAndFingerprintMovesThere() {
        let sse = text(ReplayWriter.sse(fromCompleteBody: Array(chatBody.utf8), includeUsage: true)) ?? ""
        #expect(sse.hasSuffix(#"""
            "choices":[{"index":0,"delta":{"content":"ream resream resream resream res"},"logprobs":null,"finish_reason":"length","stop_reason":null,"token_ids":null}]}

            data: {"id":"chatcmpl-b769eb5af4624e40","object":"chat.completion.chunk","created":1795614810,"model":"tiny","choices":[],"usage":{"prompt_tokens":8,"total_tokens":16,"completion_tokens":8},"system_fingerprint":"vllm-0.32.0-acb9755d"}

            data: [DONE]


            """#))
        let without = text(ReplayWriter.sse(fromCompleteBody: Array(chatBody.utf8), includeUsage: false)) ?? ""
        #expect(!without.contains("\"usage\""))
    }

    @Test func completionBodyReplaysAsVLLMChunks() {
        let sse = text(ReplayWriter.sse(fromCompleteBody: Array(completionBody.utf8), includeUsage: true))
        #expect(sse == #"""
            data: {"id":"cmpl-b8eb8b7c3b3e7614","object":"text_completion","created":1795614810,"model":"tiny","choices":[{"index":0,"text":"** <=FLAG� ' ' ' '","logprobs":null,"finish_reason":"length","stop_reason":null,"prompt_token_ids":null,"token_ids":null}]}

            data: {"id":"cmpl-b8eb8b7c3b3e7614","object":"text_completion","created":1795614810,"model":"tiny","choices":[],"usage":{"prompt_tokens":6,"total_tokens":14,"completion_tokens":8},"system_fingerprint":"vllm-0.32.0-acb9755d"}

            data: [DONE]


            """#)
    }

    @Test(arguments: [chatStream, chatUsageStream, completionStream, completionUsageStream])
    func assembledStreamReplaysAndReassemblesIdentically(_ sample: String) {
        guard let body = assemble(sample).completeBody() else {
            Issue.record("sample did not assemble")
            return
        }
        for usage in [false, true] {
            guard let sse = ReplayWriter.sse(fromCompleteBody: body, includeUsage: usage) else {
                Issue.record("no replay")
                return
            }
            let again = assemble(String(decoding: sse, as: UTF8.self))
            #expect(again.isCacheable)
            if usage || !sample.contains("\"usage\"") {
                #expect(again.completeBody() == body, "includeUsage \(usage)")
            } else {
                // Without the usage chunk the replayed stream cannot carry usage (as with vLLM).
                #expect(text(again.completeBody())?.contains(#""usage":null"#) == true)
            }
        }
    }

    @Test(arguments: [chatBody, completionBody])
    func nonStreamingBodyReplaysToTheSameContent(_ body: String) {
        guard let sse = ReplayWriter.sse(fromCompleteBody: Array(body.utf8), includeUsage: true) else {
            Issue.record("no replay")
            return
        }
        let a = assemble(String(decoding: sse, as: UTF8.self))
        #expect(a.isCacheable)
        // Same as the original except for fields vLLM only fills when asked (all null here).
        #expect(text(a.completeBody()) == body)
    }

    @Test func toolCallsAndReasoningReplay() {
        let body = #"{"id":"c","object":"chat.completion","created":7,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"reasoning":"think","tool_calls":[{"id":"call_1","type":"function","function":{"name":"get","arguments":"{}"}}]},"logprobs":null,"finish_reason":"tool_calls","stop_reason":null}],"usage":null}"#
        guard let sse = ReplayWriter.sse(fromCompleteBody: Array(body.utf8), includeUsage: true) else {
            Issue.record("no replay")
            return
        }
        let s = String(decoding: sse, as: UTF8.self)
        #expect(s.contains(#""delta":{"reasoning":"think"},"logprobs":null,"finish_reason":null"#))
        #expect(s.contains(#""delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":"{}"}}]},"logprobs":null,"finish_reason":"tool_calls""#))
        #expect(!s.contains("\"usage\""), "no usage known, no usage chunk")
        let a = assemble(s)
        #expect(a.isCacheable)
        #expect(text(a.completeBody())?.contains(#""tool_calls":[{"id":"call_1","type":"function","function":{"name":"get","arguments":"{}"}}],"reasoning":"think""#) == true)
    }

    @Test func garbageGivesNil() {
        let bad = ["", "{", "[]", "null", #"{"object":"chat.completion"}"#, #"{"object":"list","choices":[]}"#,
                   #"{"object":"chat.completion","choices":[]}"#, #"{"object":"chat.completion","choices":[1]}"#,
                   #"{"object":"chat.completion","choices":[{"message":"x"}]}"#,
                   #"{"object":"chat.completion","choices":[{"message":{"content":"a","audio":{"id":"x"}}}]}"#,
                   #"{"object":"chat.completion","choices":[{"message":{"content":[{"type":"text"}]}}]}"#,
                   #"{"object":"text_completion","choices":[{"text":5}]}"#]
        for b in bad {
            #expect(ReplayWriter.sse(fromCompleteBody: Array(b.utf8), includeUsage: true) == nil, "\(b)")
        }
    }

    @Test func nulInsideTheTextReplays() throws {
        let chat = chatBody.replacing(#""content":"ream res"#, with: #""content":"\u0000ream res"#)
        let sse = try #require(text(ReplayWriter.sse(fromCompleteBody: Array(chat.utf8), includeUsage: false)))
        #expect(sse.contains(#""delta":{"content":"\u0000ream resream resream resream res"}"#))
        let completion = completionBody.replacing(#""text":"**"#, with: #""text":"\u0000**"#)
        let sse2 = try #require(text(ReplayWriter.sse(fromCompleteBody: Array(completion.utf8), includeUsage: false)))
        #expect(sse2.contains(#""text":"\u0000** <=FLAG"#))
    }
}

extension String {
    fileprivate func replacingFirst(_ a: String, _ b: String) -> String {
        guard let r = firstRange(of: a) else { return self }
        return String(self[..<r.lowerBound]) + b + String(self[r.upperBound...])
    }
}

// /v1/responses in the simulator: ResponsesRequest's validation (vLLM's order and words, as
// captured in Tests/integration/captures/vllm-0.32.0.json) and Generation+Responses' bytes.
import Testing
@testable import vllm_sim

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }
func text(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self) }

let tiny = ModelCatalog(["tiny"])

func parseResponses(_ json: String, maxModelLen: Int = 2048) -> Result<ResponsesRequest, APIError> {
    ResponsesRequest.parse(body: bytes(json), contentType: "application/json", catalog: tiny, maxModelLen: maxModelLen)
}

func errorBody(_ r: Result<ResponsesRequest, APIError>) -> String? {
    if case .failure(let e) = r { return text(e.body) }
    return nil
}

func settings(maxModelLen: Int = 2048) -> SimSettings {
    SimSettings(host: "127.0.0.1", port: 0, models: ["tiny"], maxModelLen: maxModelLen, defaultMaxTokens: 16,
                kvBlocks: 256, blockSize: 16, maxNumSeqs: 128, seed: 1, keepAliveTimeout: .seconds(5))
}

@Suite struct ResponsesRequestTests {
    @Test func stringInputIsOneUserMessageAfterBOS() throws {
        let r = try parseResponses(#"{"model":"tiny","input":"hello world","max_output_tokens":8,"temperature":0}"#).get()
        // BOS + 4 template tokens + "hello world" (3 simulated tokens) + 2 for the generation prompt.
        #expect(r.generation.kind == .responses)
        #expect(r.generation.promptTokens == [1 + 4 + 3 + 2])
        #expect(r.generation.maxTokens == 8 && !r.generation.isRandomText && !r.generation.isStream)
        #expect(r.echo.maxOutputTokens == 8 && r.echo.temperature == 0 && r.echo.topP == 1)
        #expect(r.echo.instructions == nil && r.echo.metadata == nil && r.echo.user == nil)
    }

    @Test func instructionsAndMessagesCountAsPrompt() throws {
        let plain = try parseResponses(#"{"input":[{"role":"user","content":"hi"}]}"#).get()
        let more = try parseResponses(#"""
            {"input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}],
             "instructions":"Be \"brief\".","metadata":{"a":"b"},"user":"u1","stream":true,"seed":3}
            """#).get()
        #expect(plain.generation.promptTokens == [1 + 4 + 1 + 2])
        #expect(more.generation.promptTokens[0] == plain.generation.promptTokens[0] + 4 + 3)
        #expect(more.echo.instructions.map(text) == #"Be \"brief\"."#)
        #expect(more.echo.metadata == [.init(key: bytes("a"), value: bytes("b"))])
        #expect(more.echo.user.map(text) == "u1" && more.generation.isStream)
        // Without a temperature vLLM samples at 1.0; a seed makes it repeatable.
        #expect(plain.echo.temperature == 1 && plain.generation.isRandomText && !more.generation.isRandomText)
        // No max_output_tokens: the context that is left.
        #expect(plain.echo.maxOutputTokens == 2048 - plain.generation.promptTokens[0] && plain.generation.maxTokens == nil)
    }

    @Test func errorsAsCaptured() {
        #expect(errorBody(parseResponses(#"{"model":"tiny"}"#))
                == #"{"error":{"message":"1 validation error:\n  {'type': 'missing', 'loc': 'body.input', 'msg': 'Field required', 'input': '<dict of 2 items>'}","type":"Bad Request","param":"body.input","code":400}}"#)
        #expect(errorBody(parseResponses(#"{"model":"tiny","input":5}"#))
                == #"{"error":{"message":"2 validation errors:\n  {'type': 'string_type', 'loc': 'body.input', 'msg': 'Input should be a valid string', 'input': '5'}\n  {'type': 'list_type', 'loc': 'body.input', 'msg': 'Input should be a valid list', 'input': '5'}","type":"Bad Request","param":"body.input","code":400}}"#)
        #expect(errorBody(parseResponses(#"{"model":"nope","input":"hi"}"#))
                == #"{"error":{"message":"The model `nope` does not exist. Valid aliases: tiny.","type":"NotFoundError","param":"model","code":404}}"#)
        #expect(errorBody(parseResponses(#"{"model":"tiny","input":"hi","max_output_tokens":100000}"#))
                == #"{"error":{"message":"max_output_tokens=100000 cannot be greater than max_model_len=2048. Please request fewer output tokens. (parameter=max_output_tokens, value=100000)","type":"BadRequestError","param":"max_output_tokens","code":400}}"#)
        #expect(errorBody(parseResponses(#"{"model":"tiny","input":"hi","max_output_tokens":0}"#))
                == #"{"error":{"message":"max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)","type":"BadRequestError","param":"max_tokens","code":400}}"#)
        #expect(errorBody(parseResponses(#"{"model":"tiny","input":[]}"#))
                == #"{"error":{"message":"Cannot apply chat template to an empty conversation. Provide at least one message.","type":"BadRequestError","param":null,"code":400}}"#)
        #expect(errorBody(parseResponses(#"{"input":"hi","previous_response_id":"resp_abc"}"#))
                == #"{"error":{"message":"Response with id 'resp_abc' not found.","type":"invalid_request_error","param":"response_id","code":404}}"#)
        #expect(errorBody(parseResponses(#"{"input":"hi hi hi hi hi hi hi hi"}"#, maxModelLen: 8))?
                    .contains("maximum context length is 8 tokens") == true)
        // A tool_choice already there is not added again by vLLM's check_tool_usage.
        #expect(errorBody(parseResponses(#"{"tool_choice":"auto"}"#))?.contains("'<dict of 1 items>'") == true)
    }
}

@Suite struct ResponsesRenderTests {
    func generation(_ json: String) throws -> Generation {
        let r = try parseResponses(json).get()
        let knobs = SimKnobs(errorRate: 0, kvUsageOverride: -1, ttftMs: 0, itlMs: 0, disconnectAfterTokens: 0,
                             stallAfterTokens: 0, refuse: false)
        return Generation(id: GenerationID(raw: 1), request: r.generation, textSeed: r.generation.textSeed,
                          settings: settings(), responseID: bytes("resp_1"), model: bytes("tiny"), created: 7,
                          now: 0, pacing: Pacing(knobs), responsesEcho: r.echo, itemID: bytes("msg_1"))
    }

    func render(_ g: Generation, _ e: ResponsesStreamEvent) -> String {
        var w = ByteWriter()
        g.renderResponsesEvent(e, into: &w)
        return text(w.bytes)
    }

    @Test func answerIsVLLMsObjectFieldForField() throws {
        let g = try generation(#"{"input":"hello world","max_output_tokens":2,"temperature":0}"#)
        var w = ByteWriter()
        g.renderResponsesAnswer(into: &w)
        let words = text(SimText.word(seed: g.textSeed, choice: 0, step: 1) + SimText.word(seed: g.textSeed, choice: 0, step: 2))
        #expect(text(w.bytes) == #"{"id":"resp_1","created_at":7,"incomplete_details":{"reason":"max_output_tokens"},"instructions":null,"metadata":null,"model":"tiny","object":"response","output":[{"id":"msg_1","content":[{"annotations":[],"text":""# + words + #"","type":"output_text","logprobs":null}],"role":"assistant","status":"completed","type":"message","phase":null}],"parallel_tool_calls":true,"temperature":0.0,"tool_choice":"none","tools":[],"top_p":1.0,"background":false,"max_output_tokens":2,"max_tool_calls":null,"previous_response_id":null,"prompt":null,"reasoning":null,"service_tier":"auto","status":"incomplete","text":null,"top_logprobs":null,"truncation":"disabled","usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":0,"cache_write_tokens":0,"input_tokens_per_turn":[],"cached_tokens_per_turn":[]},"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0,"tool_output_tokens":0,"output_tokens_per_turn":[],"tool_output_tokens_per_turn":[]},"total_tokens":12},"user":null,"presence_penalty":0.0,"frequency_penalty":0.0,"kv_transfer_params":null,"ec_transfer_params":null,"input_messages":null,"output_messages":null}"#)
    }

    @Test func aModelThatStopsIsCompleted() throws {
        // No max_output_tokens: the simulated model stops after --default-max-tokens by itself.
        let g = try generation(#"{"input":"hi","metadata":{"k":"v"},"user":"u"}"#)
        var w = ByteWriter()
        g.renderResponsesAnswer(into: &w)
        let s = text(w.bytes)
        #expect(s.contains(#""incomplete_details":null,"#) && s.contains(#""status":"completed","text""#))
        #expect(s.contains(#""metadata":{"k":"v"},"#) && s.contains(#""user":"u","#))
        #expect(s.contains(#""output_tokens":16,"#))
    }

    @Test func streamEventsAreFramedAndNumbered() throws {
        let g = try generation(#"{"input":"hi","max_output_tokens":3,"temperature":0,"stream":true}"#)
        let order: [ResponsesStreamEvent] = [.created, .inProgress, .itemAdded, .partAdded, .delta(step: 1), .delta(step: 2),
                                             .delta(step: 3), .textDone, .partDone, .itemDone, .completed]
        let names = ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
                     "response.output_text.delta", "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", "response.completed"]
        for (i, e) in order.enumerated() {
            let s = render(g, e)
            #expect(s.hasPrefix("event: \(names[i])\ndata: {") && s.hasSuffix("}\n\n"))
            #expect(s.contains(#","sequence_number":\#(i),"#) && s.contains(#""type":"\#(names[i])"}"#))
            #expect(s.filter { $0 == "\n" }.count == 3)
        }
        #expect(render(g, .created).contains(#""output":[],"#) && render(g, .created).contains(#""status":"in_progress","#)
                && render(g, .created).contains(#""usage":null,"#))
        #expect(render(g, .completed).contains(#""status":"incomplete","#))
        #expect(render(g, .itemAdded) == "event: response.output_item.added\ndata: {\"item\":{\"id\":\"msg_1\",\"content\":[],\"role\":\"assistant\",\"status\":\"in_progress\",\"type\":\"message\",\"phase\":null},\"output_index\":0,\"sequence_number\":2,\"type\":\"response.output_item.added\"}\n\n")
        #expect(render(g, .partAdded) == "event: response.content_part.added\ndata: {\"content_index\":0,\"item_id\":\"msg_1\",\"output_index\":0,\"part\":{\"annotations\":[],\"text\":\"\",\"type\":\"output_text\",\"logprobs\":[]},\"sequence_number\":3,\"type\":\"response.content_part.added\"}\n\n")
        let word = text(SimText.word(seed: g.textSeed, choice: 0, step: 1))
        #expect(render(g, .delta(step: 1)) == "event: response.output_text.delta\ndata: {\"content_index\":0,\"delta\":\"\(word)\",\"item_id\":\"msg_1\",\"logprobs\":[],\"output_index\":0,\"sequence_number\":4,\"type\":\"response.output_text.delta\"}\n\n")
    }
}

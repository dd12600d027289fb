// ResponsesRequest: a POST /v1/responses body (OpenAI's Responses API as vLLM 0.32.0 serves it),
// validated in vLLM's order and reduced to a GenerationRequest (kind .responses) plus the request
// fields the response object echoes (ResponsesEcho). Shapes and messages: docs/vllm-surface.md §2.
// Reads a jansson document (through JSONNode), returns a value or an APIError; never throws.
// Pure: no imports, no I/O.
//
// vLLM's order, as captured: pydantic field errors → unknown model → previous_response_id (never
// stored, so always 404) → empty conversation → max_output_tokens > max_model_len → prompt too
// long → max_output_tokens < 1 (worded "max_tokens", as the sampling parameters check it).

/// What the response object repeats from the request (JSON-escaped where it is text).
struct ResponsesEcho: Sendable, Equatable {
    struct MetadataEntry: Sendable, Equatable {
        var key: [UInt8]
        var value: [UInt8]
    }

    var instructions: [UInt8]?
    /// In the request's order; nil prints `null`.
    var metadata: [MetadataEntry]?
    var user: [UInt8]?
    /// The sampling defaults vLLM reports when the request leaves them out.
    var temperature = 1.0
    var topP = 1.0
    var presencePenalty = 0.0
    var frequencyPenalty = 0.0
    /// The limit in force: max_output_tokens cut to what the context leaves, or all of it.
    var maxOutputTokens = 0
}

struct ResponsesRequest: Sendable {
    var generation: GenerationRequest
    var echo: ResponsesEcho

    /// The prompt vLLM renders: BOS, then the chat template over `instructions` (as a system
    /// message) and the input messages, then the generation prompt. A string input is one user
    /// message. The real tiny model counts "hello world" as 12 tokens this way (chat: 11).
    static let bosTokens = 1

    static func parse(body: [UInt8], contentType: String?, catalog: ModelCatalog,
                      maxModelLen: Int) -> Result<ResponsesRequest, APIError> {
        readJSONObject(body, contentType: contentType) { root in
            parseObject(root, catalog: catalog, maxModelLen: maxModelLen)
        }
    }

    private static func parseObject(_ root: JSONNode, catalog: ModelCatalog,
                                    maxModelLen: Int) -> Result<ResponsesRequest, APIError> {
        var f = FieldReader()
        var hash = fnvOffset
        var echo = ResponsesEcho()
        var prompt = bosTokens
        var isEmptyList = false

        let instructions = root["instructions"]
        switch instructions.kind {
        case .missing, .null:
            break
        case .string:
            echo.instructions = jsonEscaped(instructions.stringBytes!)
            prompt += SimTokenizer.templateTokensPerMessage + SimTokenizer.scan(instructions.stringBytes!, hash: &hash)
        default:
            f.fail(.validation("string_type", loc: "body.instructions", msg: "Input should be a valid string",
                               input: instructions.pydanticInput))
        }

        let input = root["input"]
        switch input.kind {
        case .missing:
            // vLLM's check_tool_usage runs first and, without tools, sets tool_choice to "none":
            // the body pydantic then reports has one key more than was sent.
            var keys = root.count
            if root["tool_choice"].kind == .missing && root["tools"].count == 0 { keys += 1 }
            f.fail(.validation("missing", loc: "body.input", msg: "Field required", input: "<dict of \(keys) items>"))
        case .string:
            prompt += SimTokenizer.templateTokensPerMessage + SimTokenizer.scan(input.stringBytes!, hash: &hash)
        case .array:
            isEmptyList = input.count == 0
            if let t = inputItemTokens(input, reader: &f, hash: &hash) { prompt += t }
        default:
            // `input: str | list[item]`: pydantic reports both alternatives.
            f.fail(.validation([
                .init(type: "string_type", loc: "body.input", msg: "Input should be a valid string", input: input.pydanticInput),
                .init(type: "list_type", loc: "body.input", msg: "Input should be a valid list", input: input.pydanticInput),
            ]))
        }
        prompt += SimTokenizer.generationPromptTokens

        let model = root["model"]
        if !model.isAbsent && model.kind != .string {
            f.fail(.validation("string_type", loc: "body.model", msg: "Input should be a valid string",
                               input: model.pydanticInput))
        }
        let maxTokens = f.int(root["max_output_tokens"], "body.max_output_tokens")
        let isStream = f.bool(root["stream"], "body.stream") ?? false
        let temperature = f.double(root["temperature"], "body.temperature")
        let topP = f.double(root["top_p"], "body.top_p")
        let presence = f.double(root["presence_penalty"], "body.presence_penalty")
        let frequency = f.double(root["frequency_penalty"], "body.frequency_penalty")
        let seed = f.int(root["seed"], "body.seed")
        echo.metadata = metadata(root["metadata"], reader: &f)
        let user = root["user"]
        switch user.kind {
        case .missing, .null: break
        case .string: echo.user = jsonEscaped(user.stringBytes!)
        default:
            f.fail(.validation("string_type", loc: "body.user", msg: "Input should be a valid string", input: user.pydanticInput))
        }
        let previous = root["previous_response_id"]
        if !previous.isAbsent && previous.kind != .string {
            f.fail(.validation("string_type", loc: "body.previous_response_id", msg: "Input should be a valid string",
                               input: previous.pydanticInput))
        }
        if let failure = f.failure { return .failure(failure) }

        // vLLM's own checks.
        var modelIndex = 0
        if let name = model.stringBytes {
            guard let i = catalog.index(of: name) else {
                return .failure(.unknownModel(model.string ?? "", aliases: catalog.aliases))
            }
            modelIndex = i
        }
        if let id = previous.string { return .failure(.responseNotFound(id)) }
        if isEmptyList { return .failure(.emptyConversation) }
        if let m = maxTokens, m > maxModelLen { return .failure(.maxOutputTokensTooLarge(m, maxModelLen: maxModelLen)) }
        if prompt >= maxModelLen { return .failure(.promptTooLong(maxModelLen: maxModelLen)) }
        if let m = maxTokens, m < 1 { return .failure(.maxTokensTooSmall(m)) }

        let room = maxModelLen - prompt
        echo.maxOutputTokens = min(maxTokens ?? room, room)
        echo.temperature = temperature ?? 1.0
        echo.topP = topP ?? 1.0
        echo.presencePenalty = presence ?? 0.0
        echo.frequencyPenalty = frequency ?? 0.0
        var textSeed = hash
        if let seed { textSeed = mix64(hash ^ UInt64(truncatingIfNeeded: seed)) }
        let generation = GenerationRequest(
            kind: .responses, modelIndex: modelIndex, promptTokens: [prompt], n: 1, maxTokens: maxTokens,
            isStream: isStream, includeUsage: false, continuousUsage: false, textSeed: textSeed,
            // vLLM's default temperature here is 1.0: sampled unless asked otherwise.
            isRandomText: seed == nil && echo.temperature != 0)
        return .success(ResponsesRequest(generation: generation, echo: echo))
    }

    /// Input items: messages (`{"role", "content"}`, optionally `"type": "message"`) whose content
    /// is a string or a list of parts with `text`. Other item kinds (tool calls, reasoning) count
    /// the text they carry. vLLM validates items against a union of ~20 item types and reports
    /// every alternative (a 231-error message for one bad item); the simulator names the first
    /// problem only.
    private static func inputItemTokens(_ items: JSONNode, reader f: inout FieldReader, hash: inout UInt64) -> Int? {
        var tokens = 0
        for i in 0..<items.count {
            let item = items[i]
            guard item.kind == .object else {
                f.fail(.validation("model_type", loc: "body.input.\(i)",
                                   msg: "Input should be a valid dictionary or object", input: item.pydanticInput))
                return nil
            }
            if let role = item["role"].stringBytes { _ = SimTokenizer.scan(role, hash: &hash) }
            tokens += SimTokenizer.templateTokensPerMessage
            let content = item["content"]
            switch content.kind {
            case .string:
                tokens += SimTokenizer.scan(content.stringBytes!, hash: &hash)
            case .array:
                for j in 0..<content.count {
                    if let text = content[j]["text"].stringBytes { tokens += SimTokenizer.scan(text, hash: &hash) }
                }
            case .missing where item["role"].kind == .string:
                f.fail(.validation("missing", loc: "body.input.\(i).content", msg: "Field required",
                                   input: item.pydanticInput))
                return nil
            default:
                for key in ["output", "arguments", "text"] {
                    if let text = item[key].stringBytes { tokens += SimTokenizer.scan(text, hash: &hash) }
                }
            }
        }
        return tokens
    }

    /// OpenAI's Metadata: a dict of strings, or null.
    private static func metadata(_ node: JSONNode, reader f: inout FieldReader) -> [ResponsesEcho.MetadataEntry]? {
        switch node.kind {
        case .missing, .null:
            return nil
        case .object:
            var out: [ResponsesEcho.MetadataEntry] = []
            for key in node.keys {
                let v = node[key]
                guard let b = v.stringBytes else {
                    f.fail(.validation("string_type", loc: "body.metadata.\(key)", msg: "Input should be a valid string",
                                       input: v.pydanticInput))
                    return nil
                }
                out.append(.init(key: jsonEscapedBytes(key), value: jsonEscaped(b)))
            }
            return out
        default:
            f.fail(.validation("dict_type", loc: "body.metadata", msg: "Input should be a valid dictionary",
                               input: node.pydanticInput))
            return nil
        }
    }
}

private func jsonEscaped(_ p: UnsafeRawBufferPointer) -> [UInt8] {
    var w = ByteWriter(capacity: p.count + 8)
    w.write(jsonEscaped: p)
    return w.bytes
}

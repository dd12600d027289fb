// GenerationRequest: a /v1/completions or /v1/chat/completions body, validated in vLLM 0.32.0's
// order and reduced to what the simulator needs (token counts, limits, stream options, a text
// seed). Also the shared body prelude (content type, JSON, object) and pydantic's lax coercions.
// Reads a jansson document (through JSONNode), returns a value or an APIError; never throws.
// Pure: no imports, no I/O.
//
// vLLM's order, as observed: pydantic field errors → stream_options without stream → missing
// prompt (completions) → unknown model → empty messages (chat) → n < 1 → max_tokens >
// max_model_len → prompt too long → max_tokens < 1.

/// Which endpoint a generation answers; /v1/responses bodies are parsed by ResponsesRequest.
enum GenerationKind: Sendable { case chat, completion, responses }

struct GenerationRequest: Sendable {
    var kind: GenerationKind
    var modelIndex: Int
    /// Prompt tokens of each prompt (chat and a plain completion prompt: exactly one).
    var promptTokens: [Int]
    /// Choices per prompt.
    var n: Int
    /// As requested (max_completion_tokens wins over max_tokens for chat); nil when absent.
    var maxTokens: Int?
    var isStream: Bool
    var includeUsage: Bool
    var continuousUsage: Bool
    /// Seeds the generated words: a hash of the prompt (and `seed`).
    var textSeed: UInt64
    /// Sampling is not greedy and unseeded: the text gets fresh randomness.
    var isRandomText: Bool
    /// With the echo knob: the prompt's text (the last message's for chat, the first prompt's for
    /// completions), which the answer starts with. Raw UTF-8 (a U+0000 stays a 0 byte).
    var echoText: [UInt8]?
    /// The prompt's token ids as the prefix cache sees them (PrefixCache, and the KV events it
    /// publishes): the ids /tokenize answers for this body (SimTokenizer.promptIDs, the body's own
    /// add_special_tokens and add_generation_prompt); completions, the first prompt's. Empty for
    /// token-id prompts.
    var promptIDs: [UInt32] = []

    static func parse(kind: GenerationKind, body: [UInt8], contentType: String?,
                      catalog: ModelCatalog, maxModelLen: Int, echo: Bool = false) -> Result<GenerationRequest, APIError> {
        readJSONObject(body, contentType: contentType) { root in
            parseObject(kind: kind, root: root, catalog: catalog, maxModelLen: maxModelLen).map { r in
                var r = r
                if echo { r.echoText = promptText(kind: kind, root) }
                r.promptIDs = renderedPromptIDs(kind: kind, root)
                return r
            }
        }
    }

    /// The text the echo knob repeats: chat, the last message's string content or its text parts;
    /// completions, the prompt string or the first string of a list.
    private static func promptText(kind: GenerationKind, _ root: JSONNode) -> [UInt8] {
        switch kind {
        case .chat:
            let messages = root["messages"]
            guard messages.count > 0 else { return [] }
            let content = messages[messages.count - 1]["content"]
            if let b = content.stringBytes { return Array(b) }
            var out: [UInt8] = []
            for j in 0..<content.count {
                if let t = content[j]["text"].stringBytes { out.append(contentsOf: t) }
            }
            return out
        case .completion:
            let prompt = root["prompt"]
            if let b = prompt.stringBytes { return Array(b) }
            return prompt[0].stringBytes.map { Array($0) } ?? []
        case .responses:
            // Responses parse their own body (ResponsesRequest); echo reads the input string.
            return root["input"].stringBytes.map { Array($0) } ?? []
        }
    }

    /// The ids /tokenize gives this body (vLLM's defaults for each form: special tokens for a
    /// completion prompt only, the generation prompt for chat).
    static func renderedPromptIDs(kind: GenerationKind, _ root: JSONNode) -> [UInt32] {
        let isChat = kind == .chat
        guard kind != .responses else { return [] }
        let special = root["add_special_tokens"], generation = root["add_generation_prompt"]
        let addSpecial = special.kind == .bool ? special.isTrue : !isChat
        let addGenerationPrompt = generation.kind == .bool ? generation.isTrue : true
        let ids = SimTokenizer.promptIDs(root, isChat: isChat, addSpecial: addSpecial, addGenerationPrompt: addGenerationPrompt)
        return ids.map { UInt32(truncatingIfNeeded: $0) }
    }

    private static func parseObject(kind: GenerationKind, root: JSONNode, catalog: ModelCatalog,
                                    maxModelLen: Int) -> Result<GenerationRequest, APIError> {
        var f = FieldReader()
        var hash = fnvOffset
        var promptTokens: [Int] = []
        var promptIsMissing = false
        var promptIsEmptyList = false
        var messagesAreEmpty = false

        // Pydantic: field types, in roughly the request model's order.
        switch kind {
        case .responses:
            preconditionFailure("/v1/responses bodies are ResponsesRequest's")
        case .chat:
            let messages = root["messages"]
            switch messages.kind {
            case .missing:
                f.fail(.missingField("body.messages", root: root))
            case .array:
                messagesAreEmpty = messages.count == 0
                if let t = chatPromptTokens(messages, reader: &f, hash: &hash) { promptTokens = [t] }
            default:
                f.fail(.validation("list_type", loc: "body.messages", msg: "Input should be a valid list",
                                   input: messages.pydanticInput))
            }
        case .completion:
            let prompt = root["prompt"]
            switch prompt.kind {
            case .missing, .null:
                promptIsMissing = true
            case .string:
                let b = prompt.stringBytes!
                if b.count == 0 {
                    promptIsMissing = true
                } else {
                    promptTokens = [1 + SimTokenizer.scan(b, hash: &hash)]
                }
            case .array:
                if prompt.count == 0 {
                    promptIsEmptyList = true
                } else {
                    promptTokens = completionPromptTokens(prompt, reader: &f, hash: &hash)
                }
            default:
                f.fail(.validation("string_type", loc: "body.prompt", msg: "Input should be a valid string",
                                   input: prompt.pydanticInput))
            }
        }
        let model = root["model"]
        if !model.isAbsent && model.kind != .string {
            f.fail(.validation("string_type", loc: "body.model", msg: "Input should be a valid string",
                               input: model.pydanticInput))
        }
        var maxTokens = f.int(root["max_tokens"], "body.max_tokens")
        if kind == .chat, let m = f.int(root["max_completion_tokens"], "body.max_completion_tokens") {
            maxTokens = m
        }
        let n = f.int(root["n"], "body.n") ?? 1
        let seed = f.int(root["seed"], "body.seed")
        let isStream = f.bool(root["stream"], "body.stream") ?? false
        let options = root["stream_options"]
        var includeUsage = false
        var continuousUsage = false
        switch options.kind {
        case .missing, .null:
            break
        case .object:
            includeUsage = f.bool(options["include_usage"], "body.stream_options.include_usage") ?? false
            continuousUsage = f.bool(options["continuous_usage_stats"], "body.stream_options.continuous_usage_stats") ?? false
        default:
            f.fail(.validation("dict_type", loc: "body.stream_options", msg: "Input should be a valid dictionary",
                               input: options.pydanticInput))
        }
        let temperature = f.double(root["temperature"], "body.temperature")
        if let failure = f.failure { return .failure(failure) }

        // vLLM's own checks.
        if !options.isAbsent && !isStream { return .failure(.streamOptionsWithoutStream) }
        if promptIsMissing { return .failure(.missingPrompt) }
        if promptIsEmptyList { return .failure(.emptyPromptList) }
        var modelIndex = 0
        if let name = model.stringBytes {
            guard let i = catalog.index(of: name) else {
                return .failure(.unknownModel(model.string ?? "", aliases: catalog.aliases))
            }
            modelIndex = i
        }
        if messagesAreEmpty { return .failure(.emptyConversation) }
        if n < 1 { return .failure(.nTooSmall(n)) }
        if let m = maxTokens, m > maxModelLen { return .failure(.maxTokensTooLarge(m, maxModelLen: maxModelLen)) }
        for p in promptTokens where p >= maxModelLen { return .failure(.promptTooLong(maxModelLen: maxModelLen)) }
        if let m = maxTokens, m < 1 { return .failure(.maxTokensTooSmall(m)) }

        var textSeed = hash
        if let seed { textSeed = mix64(hash ^ UInt64(truncatingIfNeeded: seed)) }
        return .success(GenerationRequest(
            kind: kind, modelIndex: modelIndex, promptTokens: promptTokens, n: n, maxTokens: maxTokens,
            isStream: isStream, includeUsage: includeUsage && isStream,
            // vLLM sends per-chunk usage only when include_usage is on as well.
            continuousUsage: continuousUsage && includeUsage && isStream,
            textSeed: textSeed, isRandomText: seed == nil && temperature != 0))
    }

    /// Chat template cost: per message 4 template tokens plus the content, then the generation
    /// prompt. Content is a string, a list of parts (their "text" counts) or null.
    private static func chatPromptTokens(_ messages: JSONNode, reader f: inout FieldReader,
                                         hash: inout UInt64) -> Int? {
        var tokens = 0
        for i in 0..<messages.count {
            let m = messages[i]
            guard m.kind == .object else {
                f.fail(.validation("model_attributes_type", loc: "body.messages.\(i)",
                                   msg: "Input should be a valid dictionary or object to extract fields from",
                                   input: m.pydanticInput))
                return nil
            }
            let role = m["role"]
            guard let roleBytes = role.stringBytes else {
                if role.kind == .missing {
                    f.fail(.missingField("body.messages.\(i).role", root: m))
                } else {
                    f.fail(.validation("string_type", loc: "body.messages.\(i).role",
                                       msg: "Input should be a valid string", input: role.pydanticInput))
                }
                return nil
            }
            _ = SimTokenizer.scan(roleBytes, hash: &hash)
            tokens += SimTokenizer.templateTokensPerMessage
            let content = m["content"]
            switch content.kind {
            case .string:
                tokens += SimTokenizer.scan(content.stringBytes!, hash: &hash)
            case .array:
                for j in 0..<content.count {
                    if let text = content[j]["text"].stringBytes {
                        tokens += SimTokenizer.scan(text, hash: &hash)
                    }
                }
            case .missing, .null:
                break
            default:
                f.fail(.validation("string_type", loc: "body.messages.\(i).content",
                                   msg: "Input should be a valid string", input: content.pydanticInput))
                return nil
            }
        }
        return tokens + SimTokenizer.generationPromptTokens
    }

    /// A list prompt: token ids (one prompt), or a batch of strings or of token-id lists.
    private static func completionPromptTokens(_ prompt: JSONNode, reader f: inout FieldReader,
                                               hash: inout UInt64) -> [Int] {
        let first = prompt[0]
        switch first.kind {
        case .integer:
            for i in 0..<prompt.count {
                let t = prompt[i]
                guard t.kind == .integer else {
                    f.fail(.validation("int_type", loc: "body.prompt.\(i)", msg: "Input should be a valid integer",
                                       input: t.pydanticInput))
                    return []
                }
                hash = (hash ^ UInt64(truncatingIfNeeded: t.integer)) &* fnvPrime
            }
            return [prompt.count]
        case .string, .array:
            var out: [Int] = []
            out.reserveCapacity(prompt.count)
            for i in 0..<prompt.count {
                let p = prompt[i]
                if let b = p.stringBytes {
                    out.append(1 + SimTokenizer.scan(b, hash: &hash))
                } else if p.kind == .array {
                    for j in 0..<p.count {
                        hash = (hash ^ UInt64(truncatingIfNeeded: p[j].integer)) &* fnvPrime
                    }
                    out.append(p.count)
                } else {
                    f.fail(.validation("string_type", loc: "body.prompt.\(i)", msg: "Input should be a valid string",
                                       input: p.pydanticInput))
                    return []
                }
            }
            return out
        default:
            f.fail(.validation("string_type", loc: "body.prompt.0", msg: "Input should be a valid string",
                               input: first.pydanticInput))
            return []
        }
    }
}

/// Content type, JSON and "is an object" checks that every JSON endpoint shares, then `read`.
/// vLLM rejects a missing content type too; the simulator accepts one (load scripts rarely send it).
func readJSONObject<T>(_ body: [UInt8], contentType: String?,
                       _ read: (JSONNode) -> Result<T, APIError>) -> Result<T, APIError> {
    if let ct = contentType, !isJSONMediaType(ct) { return .failure(.unsupportedMediaType) }
    if body.isEmpty { return .failure(.emptyBody) }
    let loaded = withJSONDocument(body) { root -> Result<T, APIError> in
        guard root.kind == .object else { return .failure(.notAnObject(root)) }
        return read(root)
    }
    switch loaded {
    case .success(let r): return r
    case .failure(let f): return .failure(.jsonInvalid(f))
    }
}

/// `application/json`, any case, optionally followed by parameters.
func isJSONMediaType(_ value: String) -> Bool {
    let want = Array("application/json".utf8)
    var it = value.utf8.makeIterator()
    var c = it.next()
    while c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") { c = it.next() }
    for w in want {
        guard var x = c else { return false }
        if x >= 65 && x <= 90 { x += 32 }
        if x != w { return false }
        c = it.next()
    }
    guard let rest = c else { return true }
    return rest == UInt8(ascii: ";") || rest == UInt8(ascii: " ") || rest == UInt8(ascii: "\t")
}

/// Pydantic's lax coercions for optional scalar fields. Absent or null gives nil; a bad value
/// records the first failure (pydantic lists them all; vLLM prints them, we print the first).
struct FieldReader {
    private(set) var failure: APIError?

    mutating func fail(_ e: APIError) { if failure == nil { failure = e } }

    mutating func int(_ v: JSONNode, _ loc: String) -> Int? {
        switch v.kind {
        case .missing, .null: return nil
        case .integer: return Int(clamping: v.integer)
        case .bool: return v.isTrue ? 1 : 0
        case .real:
            let r = v.real
            if r.isFinite && r.rounded(.towardZero) == r && abs(r) < 9e18 { return Int(r) }
            fail(.validation("int_from_float", loc: loc,
                             msg: "Input should be a valid integer, got a number with a fractional part",
                             input: v.pydanticInput))
        case .string:
            if let s = v.string, let i = Int(trimmed(s)) { return i }
            fail(.validation("int_parsing", loc: loc,
                             msg: "Input should be a valid integer, unable to parse string as an integer",
                             input: v.pydanticInput))
        case .object, .array:
            fail(.validation("int_type", loc: loc, msg: "Input should be a valid integer", input: v.pydanticInput))
        }
        return nil
    }

    mutating func double(_ v: JSONNode, _ loc: String) -> Double? {
        switch v.kind {
        case .missing, .null: return nil
        case .integer: return Double(v.integer)
        case .real: return v.real
        case .bool: return v.isTrue ? 1 : 0
        case .string:
            if let s = v.string, let d = Double(trimmed(s)) { return d }
            fail(.validation("float_parsing", loc: loc,
                             msg: "Input should be a valid number, unable to parse string as a number",
                             input: v.pydanticInput))
        case .object, .array:
            fail(.validation("float_type", loc: loc, msg: "Input should be a valid number", input: v.pydanticInput))
        }
        return nil
    }

    mutating func bool(_ v: JSONNode, _ loc: String) -> Bool? {
        switch v.kind {
        case .missing, .null: return nil
        case .bool: return v.isTrue
        case .integer:
            if v.integer == 0 || v.integer == 1 { return v.integer == 1 }
        case .real:
            if v.real == 0 || v.real == 1 { return v.real == 1 }
        case .string:
            switch trimmed(v.string ?? "").lowercased() {
            case "1", "on", "t", "true", "y", "yes": return true
            case "0", "off", "f", "false", "n", "no": return false
            default: break
            }
        case .object, .array:
            fail(.validation("bool_type", loc: loc, msg: "Input should be a valid boolean", input: v.pydanticInput))
            return nil
        }
        fail(.validation("bool_parsing", loc: loc, msg: "Input should be a valid boolean, unable to interpret input",
                         input: v.pydanticInput))
        return nil
    }
}

private func trimmed(_ s: String) -> Substring {
    var sub = s[...]
    while let c = sub.first, c == " " || c == "\t" || c == "\n" { sub = sub.dropFirst() }
    while let c = sub.last, c == " " || c == "\t" || c == "\n" { sub = sub.dropLast() }
    return sub
}

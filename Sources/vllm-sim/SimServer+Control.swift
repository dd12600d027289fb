// SimServer+Control: /tokenize and /detokenize (vLLM-shaped, using SimTokenizer) and the
// simulator's own /sim/config, /sim/stats and /sim/reset (see main.swift for their contract).

import Reactor

extension SimServer {
    // MARK: vLLM tokenizer endpoints

    func tokenize(_ head: HTTPRequestHead, _ body: [UInt8]) -> Result<[UInt8], APIError> {
        readJSONObject(body, contentType: head.headers["content-type"]) { root in
            let prompt = root["prompt"]
            let messages = root["messages"]
            // The body is a union (completion form | chat form): pydantic reports why each
            // alternative failed, the prompt one first.
            let input = root.pydanticInput
            let missingPrompt = APIError.FieldError(type: "missing", loc: "body.prompt", msg: "Field required", input: input)
            let missingMessages = APIError.FieldError(type: "missing", loc: "body.messages", msg: "Field required", input: input)
            if prompt.kind == .missing && messages.kind == .missing {
                return .failure(.validation([missingPrompt, missingMessages]))
            }
            let isChat = messages.kind != .missing
            if isChat && messages.kind != .array && prompt.kind == .missing {
                return .failure(.validation([missingPrompt, .init(type: "list_type", loc: "body.messages",
                                                                  msg: "Input should be a valid list", input: messages.pydanticInput)]))
            }
            if !isChat && prompt.kind != .string {
                return .failure(.validation([.init(type: "string_type", loc: "body.prompt", msg: "Input should be a valid string",
                                                   input: prompt.pydanticInput), missingMessages]))
            }
            var f = FieldReader()
            let addSpecial = f.bool(root["add_special_tokens"], "body.add_special_tokens") ?? !isChat
            let addGenerationPrompt = f.bool(root["add_generation_prompt"], "body.add_generation_prompt") ?? true
            let wantStrings = f.bool(root["return_token_strs"], "body.return_token_strs") ?? false
            if isChat && messages.kind != .array {
                f.fail(.validation("list_type", loc: "body.messages", msg: "Input should be a valid list",
                                   input: messages.pydanticInput))
            }
            if let failure = f.failure { return .failure(failure) }
            if let e = checkModel(root["model"]) { return .failure(e) }

            if isChat && messages.count == 0 { return .failure(.emptyConversation) }
            var strs: [String] = []
            let ids = SimTokenizer.promptIDs(root, isChat: isChat, addSpecial: addSpecial, addGenerationPrompt: addGenerationPrompt,
                                             onToken: wantStrings ? { strs.append($1) } : nil)

            var w = ByteWriter(capacity: 64 + ids.count * 6)
            w.write("{\"count\":")
            w.write(int: ids.count)
            w.write(",\"max_model_len\":")
            w.write(int: settings.maxModelLen)
            w.write(",\"tokens\":[")
            for (i, id) in ids.enumerated() {
                if i > 0 { w.write(byte: UInt8(ascii: ",")) }
                w.write(int: id)
            }
            w.write("],\"token_strs\":")
            if wantStrings {
                w.write(byte: UInt8(ascii: "["))
                for (i, s) in strs.enumerated() {
                    if i > 0 { w.write(byte: UInt8(ascii: ",")) }
                    w.write(jsonString: s)
                }
                w.write("]}")
            } else {
                w.write("null}")
            }
            return .success(w.bytes)
        }
    }

    func detokenize(_ head: HTTPRequestHead, _ body: [UInt8]) -> Result<[UInt8], APIError> {
        readJSONObject(body, contentType: head.headers["content-type"]) { root in
            let tokens = root["tokens"]
            switch tokens.kind {
            case .missing:
                return .failure(.missingField("body.tokens", root: root))
            case .array:
                break
            default:
                return .failure(.validation("list_type", loc: "body.tokens", msg: "Input should be a valid list",
                                            input: tokens.pydanticInput))
            }
            var f = FieldReader()
            var text = ""
            for i in 0..<tokens.count {
                guard let id = f.int(tokens[i], "body.tokens.\(i)") else { continue }
                if id < 0 {
                    f.fail(.validation([.init(type: "greater_than_equal", loc: "body.tokens.\(i)",
                                              msg: "Input should be greater than or equal to 0",
                                              input: tokens[i].pydanticInput, ctx: "'ge': 0")]))
                }
                text += SimTokenizer.text(of: id)
            }
            if let failure = f.failure { return .failure(failure) }
            if let e = checkModel(root["model"]) { return .failure(e) }
            var w = ByteWriter(capacity: 32 + text.utf8.count)
            w.write("{\"prompt\":")
            w.write(jsonString: text)
            w.write("}")
            return .success(w.bytes)
        }
    }

    private func checkModel(_ model: JSONNode) -> APIError? {
        if model.isAbsent { return nil }
        guard let name = model.stringBytes else {
            return .validation("string_type", loc: "body.model", msg: "Input should be a valid string",
                               input: model.pydanticInput)
        }
        return catalog.index(of: name) == nil ? .unknownModel(model.string ?? "", aliases: catalog.aliases) : nil
    }

    // MARK: /sim/*

    func configure(_ body: [UInt8]) -> Result<[UInt8], APIError> {
        let loaded = withJSONDocument(body) { root -> APIError? in
            guard root.kind == .object else { return .simControl("body must be a JSON object") }
            return knobs.apply(root)
        }
        switch loaded {
        case .failure:
            return .failure(.simControl("body is not valid JSON"))
        case .success(let e?):
            return .failure(e)
        case .success(nil):
            refuseTimer?.cancel()
            if knobs.refuse && knobs.refuseMs > 0 {
                let t = refuseTimer ?? Timer(loop: loop)
                t.onFire = { [unowned self] in
                    self.knobs.refuse = false
                    self.knobs.refuseMs = 0
                }
                t.schedule(after: .nanoseconds(Int64(nanos(milliseconds: knobs.refuseMs))))
                refuseTimer = t
            }
            return .success(knobs.json())
        }
    }

    func statsBody() -> [UInt8] {
        var w = ByteWriter(capacity: 1024 + stats.lastRequestBody.count)
        w.write("{\"requests_total\":")
        w.write(int: stats.requestsTotal)
        w.write(",\"chat_requests\":")
        w.write(int: stats.chatRequests)
        w.write(",\"completion_requests\":")
        w.write(int: stats.completionRequests)
        w.write(",\"responses_requests\":")
        w.write(int: stats.responsesRequests)
        w.write(",\"embedding_requests\":")
        w.write(int: stats.embeddingRequests)
        w.write(",\"pooling_requests\":")
        w.write(int: stats.poolingRequests)
        w.write(",\"stream_requests\":")
        w.write(int: stats.streamRequests)
        w.write(",\"aborted\":")
        w.write(int: stats.aborted)
        w.write(",\"running\":")
        w.write(int: scheduler.runningCount)
        w.write(",\"waiting\":")
        w.write(int: scheduler.waitingCount)
        w.write(",\"max_running_seen\":")
        w.write(int: stats.maxRunningSeen)
        w.write(",\"errors_injected\":")
        w.write(int: stats.errorsInjected)
        w.write(",\"refused_connections\":")
        w.write(int: stats.refusedConnections)
        w.write(",\"kv_cache_usage_perc\":")
        w.write(pythonFloat: kvUsage(now: Loop.nowNanos()))
        w.write(",\"last_request_headers\":{")
        // Lower-cased names; a repeated header keeps its last value.
        var seen: [String: String] = [:]
        var order: [String] = []
        for field in stats.lastRequestHeaders.items {
            let name = field.name.lowercased()
            if seen.updateValue(field.value, forKey: name) == nil { order.append(name) }
        }
        for (i, name) in order.enumerated() {
            if i > 0 { w.write(byte: UInt8(ascii: ",")) }
            w.write(jsonString: name)
            w.write(byte: UInt8(ascii: ":"))
            w.write(jsonString: seen[name]!)
        }
        w.write("},\"last_request_body\":")
        w.write(jsonString: String(decoding: stats.lastRequestBody, as: UTF8.self))
        w.write(",\"config\":")
        w.write(knobs.json())
        w.write("}")
        return w.bytes
    }

    func resetStats() {
        stats = SimStats()
        stats.maxRunningSeen = scheduler.runningCount
    }
}

// ReplayWriter: from a stored complete (non-streaming) JSON body, the SSE bytes vLLM would have
// streamed, for a stream request answered by a plain answer. Pure: std lib + jansson, no I/O;
// every jansson tree is created and decref'd inside one call. Returns nil on garbage. Strings are
// handled with their length (JSON_ALLOW_NUL): a U+0000 in the text replays as \u0000.
import CEventShim

/// From a stored complete (non-streaming) body, the SSE bytes vLLM would have streamed. Each choice
/// is replayed as a role chunk (chat only), then one chunk per kind of delta with the whole text
/// (reasoning, content, tool_calls; not token by token), the last of which carries finish_reason,
/// then the usage chunk (`"choices":[]`) only when `includeUsage`, then `data: [DONE]`. With a
/// `stamp`, every chunk carries its id and created instead of the stored body's.
public enum ReplayWriter {
    public static func sse(fromCompleteBody body: [UInt8], includeUsage: Bool, stamp: ReplyStamp? = nil) -> [UInt8]? {
        guard !body.isEmpty else { return nil }
        let parsed: JSONRef? = body.withUnsafeBufferPointer { p in
            p.withMemoryRebound(to: CChar.self) { c in json_loadb(c.baseAddress, c.count, Int(JSON_ALLOW_NUL), nil) }
        }
        guard let root = parsed else { return nil }
        defer { json_decref(root) }
        guard isType(root, JSONValue.object),
              let object = stringBytes(json_object_get(root, "object")).map({ String(decoding: $0, as: UTF8.self) }),
              let choices = json_object_get(root, "choices"), isType(choices, JSONValue.array) else { return nil }
        let isChat: Bool
        switch object {
        case "chat.completion": isChat = true
        case "text_completion": isChat = false
        default: return nil
        }
        let fingerprint = json_object_get(root, "system_fingerprint")
        let hasFingerprint = isType(fingerprint, JSONValue.string)
        var out: [UInt8] = []

        // Every chunk starts with the same four fields, copied from the stored body (id and created
        // from the stamp when there is one).
        let stampedId = stamp.map { jsonString(Array($0.id.utf8)) }
        let stampedCreated = stamp.map { json_integer(json_int_t($0.created))! }
        defer {
            if let stampedId { json_decref(stampedId) }
            if let stampedCreated { json_decref(stampedCreated) }
        }
        func chunk() -> JSONRef {
            let c = json_object()!
            for k in ["id", "object", "created", "model"] {
                if k == "object" {
                    set(c, k, jsonString(Array((isChat ? "chat.completion.chunk" : "text_completion").utf8)))
                } else if k == "id", let stampedId {
                    set(c, k, json_incref(stampedId))
                } else if k == "created", let stampedCreated {
                    set(c, k, json_incref(stampedCreated))
                } else {
                    set(c, k, json_deep_copy(json_object_get(root, k)) ?? json_null())
                }
            }
            return c
        }
        func emit(_ c: JSONRef) {
            out.append(contentsOf: "data: ".utf8)
            out.append(contentsOf: JSONDocument.serialize(c))
            out.append(contentsOf: "\n\n".utf8)
            json_decref(c)
        }

        let n = json_array_size(choices)
        var pending: [JSONRef] = []  // built first, so garbage aborts before anything is emitted
        defer { for p in pending { json_decref(p) } }
        for i in 0..<n {
            guard let ch = json_array_get(choices, i), isType(ch, JSONValue.object) else { return nil }
            let index = json_deep_copy(json_object_get(ch, "index")) ?? json_integer(json_int_t(i))
            defer { json_decref(index) }
            let finish = json_object_get(ch, "finish_reason")
            let logprobs = json_object_get(ch, "logprobs")
            if isChat {
                guard let msg = json_object_get(ch, "message"), isType(msg, JSONValue.object),
                      let deltas = chatDeltas(msg) else { return nil }
                let role = json_object_get(msg, "role")
                let first = chunk()
                let c0 = json_object()!
                set(c0, "index", json_incref(index))
                let d0 = json_object()!
                set(d0, "role", isType(role, JSONValue.string) ? json_incref(role) : jsonString(Array("assistant".utf8)))
                set(d0, "content", jsonString([]))
                set(c0, "delta", d0)
                set(c0, "logprobs", json_null())
                set(c0, "finish_reason", json_null())
                set(first, "choices", single(c0))
                set(first, "prompt_token_ids", json_null())
                set(first, "prompt_text", json_null())
                pending.append(first)
                let contentAt = deltas.firstIndex { json_object_get($0, "content") != nil } ?? (deltas.count - 1)
                for (k, d) in deltas.enumerated() {
                    let last = k == deltas.count - 1
                    let c = chunk()
                    let co = json_object()!
                    set(co, "index", json_incref(index))
                    set(co, "delta", d)
                    set(co, "logprobs", k == contentAt ? copyOrNull(logprobs) : json_null())
                    set(co, "finish_reason", last ? copyOrNull(finish) : json_null())
                    if last { set(co, "stop_reason", copyOrNull(json_object_get(ch, "stop_reason"))) }
                    set(co, "token_ids", json_null())
                    set(c, "choices", single(co))
                    pending.append(c)
                }
            } else {
                let text = json_object_get(ch, "text")
                guard isType(text, JSONValue.string) || isNull(text) else { return nil }
                let c = chunk()
                let co = json_object()!
                set(co, "index", json_incref(index))
                set(co, "text", isType(text, JSONValue.string) ? json_incref(text) : jsonString([]))
                set(co, "logprobs", copyOrNull(logprobs))
                set(co, "finish_reason", copyOrNull(finish))
                set(co, "stop_reason", copyOrNull(json_object_get(ch, "stop_reason")))
                set(co, "prompt_token_ids", json_null())
                set(co, "token_ids", json_null())
                set(c, "choices", single(co))
                pending.append(c)
            }
        }
        guard !pending.isEmpty else { return nil }
        let usage = json_object_get(root, "usage")
        let usageChunk = includeUsage && isType(usage, JSONValue.object)
        // vLLM puts system_fingerprint on the last content chunk, or on the usage chunk if any.
        if hasFingerprint && !usageChunk, let last = pending.last {
            set(last, "system_fingerprint", json_incref(fingerprint))
        }
        let chunks = pending
        pending = []
        for c in chunks { emit(c) }
        if usageChunk {
            let c = chunk()
            set(c, "choices", json_array())
            let u = json_object()!
            var it = json_object_iter(usage)
            while let cur = it {
                let v = json_object_iter_value(cur)
                if !isNull(v) { json_object_set(u, json_object_iter_key(cur), v) }
                it = json_object_iter_next(usage, cur)
            }
            set(c, "usage", u)
            if hasFingerprint { set(c, "system_fingerprint", json_incref(fingerprint)) }
            emit(c)
        }
        out.append(contentsOf: "data: [DONE]\n\n".utf8)
        return out
    }

    /// The delta objects for one chat choice, or nil when the message has something we cannot
    /// stream (audio, a refusal, a legacy function_call, or unknown non-null fields).
    private static func chatDeltas(_ msg: JSONRef) -> [JSONRef]? {
        var reasoning: [JSONRef] = []
        var content: JSONRef?
        var tools: JSONRef?
        var ok = true
        var it = json_object_iter(msg)
        while let cur = it, ok {
            let key = String(cString: json_object_iter_key(cur))
            let v = json_object_iter_value(cur)
            switch key {
            case "role":
                break
            case "content":
                if isType(v, JSONValue.string) {
                    if json_string_length(v) > 0 { content = v }
                } else if !isNull(v) {
                    ok = false  // multi-part content arrays are request-side only
                }
            case "reasoning", "reasoning_content":
                if isType(v, JSONValue.string) {
                    if json_string_length(v) > 0 {
                        let d = json_object()!
                        set(d, key, json_incref(v))
                        reasoning.append(d)
                    }
                } else if !isNull(v) {
                    ok = false
                }
            case "tool_calls":
                if isType(v, JSONValue.array) {
                    if json_array_size(v) > 0 { tools = v }
                } else if !isNull(v) {
                    ok = false
                }
            case "annotations":
                if !isNull(v) && !(isType(v, JSONValue.array) && json_array_size(v) == 0) { ok = false }
            default:
                if !isNull(v) { ok = false }
            }
            it = json_object_iter_next(msg, cur)
        }
        var out = reasoning
        var toolDelta: JSONRef?
        if ok, let tools {
            let arr = json_array()!
            for i in 0..<json_array_size(tools) {
                guard let t = json_array_get(tools, i), isType(t, JSONValue.object) else {
                    ok = false
                    break
                }
                let o = json_object()!
                set(o, "index", json_integer(json_int_t(i)))
                for k in ["id", "type", "function"] { set(o, k, copyOrNull(json_object_get(t, k))) }
                json_array_append_new(arr, o)
            }
            let d = json_object()!
            set(d, "tool_calls", arr)
            toolDelta = d
        }
        guard ok else {
            for d in out { json_decref(d) }
            if let toolDelta { json_decref(toolDelta) }
            return nil
        }
        if let content {
            let d = json_object()!
            set(d, "content", json_incref(content))
            out.append(d)
        }
        if let toolDelta { out.append(toolDelta) }
        if out.isEmpty {
            let d = json_object()!
            set(d, "content", jsonString([]))
            out.append(d)
        }
        return out
    }

    private static func single(_ o: JSONRef) -> JSONRef {
        let a = json_array()!
        json_array_append_new(a, o)
        return a
    }
}

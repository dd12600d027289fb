// ResponseRecord: converts between vLLM's streamed (SSE) and complete (JSON) response shapes, so
// one cache entry serves both stream and non-stream clients. Pure: std lib + jansson, no I/O.
// StreamAssembler (value type) owns only Swift arrays; every jansson tree it or ReplayWriter
// builds is created and decref'd inside one call. Shapes follow ref/vllm-api.md sections 4-5.
// Garbage in never crashes: it makes the assembler give up (not cacheable) or the writer return nil.
import CEventShim

private typealias JSONRef = UnsafeMutablePointer<json_t>

/// Feed it the SSE bytes of a streaming response exactly as relayed; at the end ask for the
/// equivalent non-streaming body. Anything it cannot rebuild faithfully (logprobs in a stream,
/// unknown non-null fields, malformed events, more than `maxBytes`) makes it give up.
public struct StreamAssembler {
    public enum GiveUp: Equatable, Sendable {
        case tooLarge
        case malformed
        case unsupported(String)
    }

    struct ToolCall {
        var index: Int
        var id: [UInt8]?
        var type: [UInt8]?
        var name: [UInt8] = []
        var arguments: [UInt8] = []
    }

    struct Choice {
        var index: Int
        var role: [UInt8]?
        var content: [UInt8] = []
        var text: [UInt8] = []
        /// "reasoning" / "reasoning_content" deltas, kept per key (vLLM versions differ).
        var reasoning: [(key: String, value: [UInt8])] = []
        var toolCalls: [ToolCall] = []
        var finishReason: [UInt8]?
        /// Serialized JSON (vLLM sends a string, an int token id, or null).
        var stopReason: [UInt8]?
    }

    public static let defaultMaxBytes = 8 << 20
    public let maxBytes: Int
    public private(set) var bytesSeen = 0
    public private(set) var sawDone = false
    /// An event carried an `error` key (vLLM's mid-stream error, or ours).
    public private(set) var sawError = false
    public private(set) var gaveUp: GiveUp?
    public private(set) var kind: EndpointKind?

    private var line: [UInt8] = []
    private var data: [UInt8] = []
    private var hasData = false
    private var id: [UInt8]?
    private var created: Int64?
    private var model: [UInt8]?
    private var fingerprint: [UInt8]?
    private var usage: [UInt8]?
    private var choices: [Choice] = []

    public init(maxBytes: Int = StreamAssembler.defaultMaxBytes) {
        self.maxBytes = maxBytes
    }

    /// `[DONE]` seen and every choice has a finish_reason.
    public var isComplete: Bool {
        sawDone && !choices.isEmpty && choices.allSatisfy { $0.finishReason != nil }
    }

    /// Complete, error-free, and nothing we could not rebuild.
    public var isCacheable: Bool {
        isComplete && !sawError && gaveUp == nil && kind != nil && id != nil
    }

    public mutating func feed(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { feed($0) }
    }

    public mutating func feed(_ bytes: UnsafeRawBufferPointer) {
        guard gaveUp == nil, bytes.count > 0 else { return }
        bytesSeen += bytes.count
        if bytesSeen > maxBytes {
            giveUp(.tooLarge)
            return
        }
        var start = 0
        var i = 0
        while i < bytes.count {
            if bytes[i] == 0x0A {
                line.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start..<i]))
                processLine()
                if gaveUp != nil { return }
                line.removeAll(keepingCapacity: true)
                start = i + 1
            }
            i += 1
        }
        if start < bytes.count { line.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start...])) }
    }

    private mutating func giveUp(_ why: GiveUp) {
        if gaveUp == nil { gaveUp = why }
        line = []
        data = []
        choices = []
    }

    /// One SSE line (LF-terminated; a trailing CR is tolerated). Only `data:` fields matter.
    private mutating func processLine() {
        if line.last == 0x0D { line.removeLast() }
        if line.isEmpty {
            if hasData { dispatch() }
            data.removeAll(keepingCapacity: true)
            hasData = false
            return
        }
        let prefix: [UInt8] = Array("data:".utf8)
        guard line.count >= prefix.count, line[0..<prefix.count].elementsEqual(prefix) else { return }
        var value = line[prefix.count...]
        if value.first == 0x20 { value = value.dropFirst() }
        if hasData { data.append(0x0A) }
        data.append(contentsOf: value)
        hasData = true
    }

    private mutating func dispatch() {
        if data.elementsEqual("[DONE]".utf8) {
            sawDone = true
            return
        }
        if sawDone { return }  // nothing legitimate follows [DONE]; ignore rather than guess
        let parsed: JSONRef? = data.withUnsafeBufferPointer { p in
            p.withMemoryRebound(to: CChar.self) { c in json_loadb(c.baseAddress, c.count, 0, nil) }
        }
        guard let root = parsed else {
            giveUp(.malformed)
            return
        }
        defer { json_decref(root) }
        guard isType(root, JSONValue.object) else {
            giveUp(.malformed)
            return
        }
        if let e = json_object_get(root, "error"), !isNull(e) {
            sawError = true
            return
        }
        var it = json_object_iter(root)
        while let cur = it, gaveUp == nil {
            let key = String(cString: json_object_iter_key(cur))
            let v = json_object_iter_value(cur)
            switch key {
            case "id":
                if id == nil { id = stringBytes(v) }
            case "object":
                switch stringBytes(v).map({ String(decoding: $0, as: UTF8.self) }) {
                case "chat.completion.chunk": kind = .chat
                case "text_completion": kind = .completion
                default: giveUp(.unsupported("object"))
                }
            case "created":
                if isType(v, JSONValue.integer) { created = Int64(json_integer_value(v)) }
            case "model":
                if model == nil { model = stringBytes(v) }
            case "system_fingerprint":
                if let s = stringBytes(v) { fingerprint = s }
            case "usage":
                if isType(v, JSONValue.object) { usage = JSONDocument.serialize(v) }
            case "choices":
                guard isType(v, JSONValue.array) else {
                    giveUp(.malformed)
                    break
                }
                for i in 0..<json_array_size(v) { absorbChoice(json_array_get(v, i)) }
            default:
                if !isNull(v) { giveUp(.unsupported(key)) }
            }
            it = json_object_iter_next(root, cur)
        }
    }

    private mutating func absorbChoice(_ c: JSONRef?) {
        guard gaveUp == nil else { return }
        guard let c, isType(c, JSONValue.object) else {
            giveUp(.malformed)
            return
        }
        let idxJ = json_object_get(c, "index")
        let index = isType(idxJ, JSONValue.integer) ? Int(json_integer_value(idxJ)) : 0
        let slot: Int
        if let s = choices.firstIndex(where: { $0.index == index }) {
            slot = s
        } else {
            guard choices.count < 128 else {
                giveUp(.unsupported("too many choices"))
                return
            }
            choices.append(Choice(index: index))
            slot = choices.count - 1
        }
        var it = json_object_iter(c)
        while let cur = it, gaveUp == nil {
            let key = String(cString: json_object_iter_key(cur))
            let v = json_object_iter_value(cur)
            switch key {
            case "index":
                break
            case "delta":
                if isType(v, JSONValue.object) {
                    absorbDelta(v, into: slot)
                } else if !isNull(v) {
                    giveUp(.malformed)
                }
            case "text":
                if let s = stringBytes(v) { choices[slot].text.append(contentsOf: s) } else if !isNull(v) { giveUp(.malformed) }
            case "finish_reason":
                if let s = stringBytes(v) { choices[slot].finishReason = s }
            case "stop_reason":
                if !isNull(v) { choices[slot].stopReason = JSONDocument.serialize(v) }
            default:
                // logprobs, token_ids, ...: non-null means data we would drop on replay.
                if !isNull(v) { giveUp(.unsupported(key)) }
            }
            it = json_object_iter_next(c, cur)
        }
    }

    private mutating func absorbDelta(_ d: JSONRef?, into slot: Int) {
        var it = json_object_iter(d)
        while let cur = it, gaveUp == nil {
            let key = String(cString: json_object_iter_key(cur))
            let v = json_object_iter_value(cur)
            switch key {
            case "role":
                if let s = stringBytes(v) { choices[slot].role = s }
            case "content":
                if let s = stringBytes(v) { choices[slot].content.append(contentsOf: s) } else if !isNull(v) { giveUp(.malformed) }
            case "reasoning", "reasoning_content":
                if let s = stringBytes(v) {
                    if let r = choices[slot].reasoning.firstIndex(where: { $0.key == key }) {
                        choices[slot].reasoning[r].value.append(contentsOf: s)
                    } else {
                        choices[slot].reasoning.append((key, s))
                    }
                } else if !isNull(v) {
                    giveUp(.malformed)
                }
            case "tool_calls":
                if isType(v, JSONValue.array) {
                    for i in 0..<json_array_size(v) { absorbToolCall(json_array_get(v, i), into: slot) }
                } else if !isNull(v) {
                    giveUp(.malformed)
                }
            default:
                if !isNull(v) { giveUp(.unsupported("delta.\(key)")) }
            }
            it = json_object_iter_next(d, cur)
        }
    }

    private mutating func absorbToolCall(_ t: JSONRef?, into slot: Int) {
        guard let t, isType(t, JSONValue.object) else {
            giveUp(.malformed)
            return
        }
        let idxJ = json_object_get(t, "index")
        let index = isType(idxJ, JSONValue.integer) ? Int(json_integer_value(idxJ)) : choices[slot].toolCalls.count
        let k: Int
        if let f = choices[slot].toolCalls.firstIndex(where: { $0.index == index }) {
            k = f
        } else {
            choices[slot].toolCalls.append(ToolCall(index: index))
            k = choices[slot].toolCalls.count - 1
        }
        if let s = stringBytes(json_object_get(t, "id")) { choices[slot].toolCalls[k].id = s }
        if let s = stringBytes(json_object_get(t, "type")) { choices[slot].toolCalls[k].type = s }
        if let f = json_object_get(t, "function"), isType(f, JSONValue.object) {
            if let s = stringBytes(json_object_get(f, "name")) { choices[slot].toolCalls[k].name.append(contentsOf: s) }
            if let s = stringBytes(json_object_get(f, "arguments")) {
                choices[slot].toolCalls[k].arguments.append(contentsOf: s)
            }
        }
    }

    /// The non-streaming vLLM body equivalent to what was streamed; nil unless `isCacheable`.
    /// `usage` is null when the stream carried none (ask upstream for include_usage to get it).
    public func completeBody() -> [UInt8]? {
        guard isCacheable, let kind, let id else { return nil }
        let root = json_object()!
        defer { json_decref(root) }
        set(root, "id", jsonString(id))
        set(root, "object", jsonString(Array((kind == .chat ? "chat.completion" : "text_completion").utf8)))
        set(root, "created", created.map { json_integer(json_int_t($0)) } ?? json_null())
        set(root, "model", model.map(jsonString) ?? json_null())
        let arr = json_array()!
        for c in choices.sorted(by: { $0.index < $1.index }) {
            let o = json_object()!
            set(o, "index", json_integer(json_int_t(c.index)))
            if kind == .chat {
                set(o, "message", message(c))
            } else {
                set(o, "text", jsonString(c.text))
            }
            set(o, "logprobs", json_null())
            set(o, "finish_reason", c.finishReason.map(jsonString) ?? json_null())
            set(o, "stop_reason", c.stopReason.flatMap(parse) ?? json_null())
            set(o, "token_ids", json_null())
            if kind == .completion {
                set(o, "prompt_logprobs", json_null())
                set(o, "prompt_token_ids", json_null())
            }
            set(o, "routed_experts", json_null())
            json_array_append_new(arr, o)
        }
        set(root, "choices", arr)
        set(root, "service_tier", json_null())
        set(root, "system_fingerprint", fingerprint.map(jsonString) ?? json_null())
        if let u = usage.flatMap(parse) {
            // Non-streaming usage spells out the detail fields (null); streamed usage omits them.
            for k in ["prompt_tokens_details", "completion_tokens_details"] where json_object_get(u, k) == nil {
                set(u, k, json_null())
            }
            set(root, "usage", u)
        } else {
            set(root, "usage", json_null())
        }
        if kind == .chat {
            for k in ["prompt_logprobs", "prompt_token_ids", "prompt_text"] { set(root, k, json_null()) }
        }
        for k in ["kv_transfer_params", "ec_transfer_params", "metrics"] { set(root, k, json_null()) }
        let out = JSONDocument.serialize(root)
        return out.isEmpty ? nil : out
    }

    private func message(_ c: Choice) -> JSONRef {
        let m = json_object()!
        set(m, "role", jsonString(c.role ?? Array("assistant".utf8)))
        if !c.content.isEmpty || c.toolCalls.isEmpty {
            set(m, "content", jsonString(c.content))
        } else {
            set(m, "content", json_null())
        }
        for k in ["refusal", "annotations", "audio", "function_call"] { set(m, k, json_null()) }
        if !c.toolCalls.isEmpty {
            let arr = json_array()!
            for t in c.toolCalls.sorted(by: { $0.index < $1.index }) {
                let o = json_object()!
                set(o, "id", t.id.map(jsonString) ?? json_null())
                set(o, "type", jsonString(t.type ?? Array("function".utf8)))
                let f = json_object()!
                set(f, "name", jsonString(t.name))
                set(f, "arguments", jsonString(t.arguments))
                set(o, "function", f)
                json_array_append_new(arr, o)
            }
            set(m, "tool_calls", arr)
        }
        var sawReasoningKey = false
        for r in c.reasoning {
            set(m, r.key, jsonString(r.value))
            if r.key == "reasoning" { sawReasoningKey = true }
        }
        if !sawReasoningKey { set(m, "reasoning", json_null()) }
        return m
    }
}

/// From a stored complete (non-streaming) body, the SSE bytes vLLM would have streamed. Each choice
/// is replayed as a role chunk (chat only), then one chunk per kind of delta with the whole text
/// (reasoning, content, tool_calls; not token by token), the last of which carries finish_reason,
/// then the usage chunk (`"choices":[]`) only when `includeUsage`, then `data: [DONE]`.
public enum ReplayWriter {
    public static func sse(fromCompleteBody body: [UInt8], includeUsage: Bool) -> [UInt8]? {
        guard !body.isEmpty else { return nil }
        let parsed: JSONRef? = body.withUnsafeBufferPointer { p in
            p.withMemoryRebound(to: CChar.self) { c in json_loadb(c.baseAddress, c.count, 0, nil) }
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

        // Every chunk starts with the same four fields, copied from the stored body.
        func chunk() -> JSONRef {
            let c = json_object()!
            for k in ["id", "object", "created", "model"] {
                if k == "object" {
                    set(c, k, jsonString(Array((isChat ? "chat.completion.chunk" : "text_completion").utf8)))
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

// MARK: - jansson helpers (file-private; every value handed to `set` is stolen by its parent)

private func isType(_ j: JSONRef?, _ t: Int32) -> Bool { j != nil && ces_json_type(j) == t }

private func isNull(_ j: JSONRef?) -> Bool { j == nil || ces_json_type(j) == JSONValue.null }

private func stringBytes(_ j: JSONRef?) -> [UInt8]? {
    guard isType(j, JSONValue.string), let p = json_string_value(j) else { return nil }
    return Array(UnsafeRawBufferPointer(start: p, count: json_string_length(j)))
}

/// A jansson string from UTF-8 bytes (json_null if they are not valid UTF-8).
private func jsonString(_ b: [UInt8]) -> JSONRef {
    let j = (b + [0]).withUnsafeBufferPointer { p in
        p.withMemoryRebound(to: CChar.self) { c in json_stringn(c.baseAddress, b.count) }
    }
    return j ?? json_null()
}

private func parse(_ b: [UInt8]) -> JSONRef? {
    b.withUnsafeBufferPointer { p in
        p.withMemoryRebound(to: CChar.self) { c in json_loadb(c.baseAddress, c.count, Int(JSON_DECODE_ANY), nil) }
    }
}

private func copyOrNull(_ j: JSONRef?) -> JSONRef { j.flatMap { json_deep_copy($0) } ?? json_null() }

/// json_object_set_new: steals `v`.
private func set(_ o: JSONRef, _ k: String, _ v: JSONRef?) {
    json_object_set_new(o, k, v ?? json_null())
}

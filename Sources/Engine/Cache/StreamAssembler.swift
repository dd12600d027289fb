// StreamAssembler: rebuilds the complete (non-streaming) JSON body from the SSE bytes of a
// streamed vLLM response, for a plain request answered by a stored or shared stream. Pure value:
// std lib + jansson, no I/O; it owns only Swift arrays, and every jansson tree it builds is created
// and decref'd inside one call. Shapes follow ref/vllm-api.md sections 4-5. Garbage in never
// crashes: it makes the assembler give up (no body). Strings keep their length (JSON_ALLOW_NUL):
// a U+0000 in a delta stays in the body.
import CEventShim

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
            p.withMemoryRebound(to: CChar.self) { c in json_loadb(c.baseAddress, c.count, Int(JSON_ALLOW_NUL), nil) }
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
    /// With a `stamp`, the body carries its id and created instead of the stream's.
    public func completeBody(stamp: ReplyStamp? = nil) -> [UInt8]? {
        guard isCacheable, let kind, let id else { return nil }
        let root = json_object()!
        defer { json_decref(root) }
        set(root, "id", jsonString(stamp.map { Array($0.id.utf8) } ?? id))
        set(root, "object", jsonString(Array((kind == .chat ? "chat.completion" : "text_completion").utf8)))
        let created = stamp.map { Int64($0.created) } ?? self.created
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

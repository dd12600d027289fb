// OpenAIRequest: a validated /v1/chat/completions or /v1/completions body.
// Validation is what must hold before anything reaches a backend (issue: bad input never
// reaches a backend): a JSON object, typed `messages` (chat) or `prompt` (completions),
// typed `model`, `stream`, `stream_options`. Everything else is vLLM's to judge.
// The body is validated by simdjson (CRequestScan: no tree, no allocation per request); the same
// parse yields the canonical form the cache key hashes, and the few rewrites the pipeline makes
// (routed model, stream_options.include_usage, a fallback model) are written from simdjson's view.
import CRequestScan

public enum EndpointKind: Sendable, Hashable {
    case chat
    case completion
    /// Another route of vLLM's OpenAI-compatible server, relayed as it is (embeddings, responses,
    /// tokenize, audio, ...): through auth, routing by `model`, admission, breakers and retries.
    case relay(RelayRoute)

    public var upstreamPath: String {
        switch self {
        case .chat: return "/v1/chat/completions"
        case .completion: return "/v1/completions"
        case .relay(let r): return r.target
        }
    }

    /// The route's name in metrics and the access log.
    public var name: String {
        switch self {
        case .chat: return "chat"
        case .completion: return "completions"
        case .relay(let r): return r.name
        }
    }

    var scanKind: Int32 {
        switch self {
        case .chat: return Int32(RS_KIND_CHAT)
        case .completion: return Int32(RS_KIND_COMPLETION)
        case .relay: return Int32(RS_KIND_OTHER)
        }
    }
}

/// One relayed route of vLLM's surface, for one request.
public struct RelayRoute: Sendable, Hashable {
    public enum Body: Sendable, Hashable {
        /// No body (GET).
        case none
        /// A JSON object: `model` and `stream` are read from it.
        case json
        /// multipart/form-data (audio): `model` and `stream` are read from its form fields.
        case multipart
    }
    /// Metrics and access-log label ("embeddings", "responses", ...).
    public let name: String
    public let method: String
    /// The upstream request target: the client's path and query, as vLLM serves it.
    public let target: String
    public let body: Body
    /// Its 200 answers may be cached and shared (deterministic: embeddings).
    public let cacheable: Bool
    /// The client's Content-Type, sent upstream with the body (a multipart boundary included).
    public let contentType: String?

    public init(name: String, method: String, target: String, body: Body, cacheable: Bool = false, contentType: String? = nil) {
        self.name = name
        self.method = method
        self.target = target
        self.body = body
        self.cacheable = cacheable
        self.contentType = contentType
    }
}

public struct OpenAIRequest {
    public let kind: EndpointKind
    /// The `model` field; nil when absent (or null).
    public var model: String?
    public let stream: Bool
    public let includeUsage: Bool
    /// stream_options.continuous_usage_stats with include_usage: vLLM puts usage in every chunk.
    public var continuousUsage = false
    /// The body has a `stream_options` member (null or an object).
    public var hasStreamOptions = false
    /// Prompt size measured during validation (TokenEstimator's rules).
    public let promptSize: PromptSize
    /// `temperature` 0 or a `seed`: what cache.deterministic_only admits.
    public let isDeterministic: Bool
    /// `max_completion_tokens`, else `max_tokens`, when a non-negative integer (admission's cost).
    public var maxOutputTokens: Int?
    /// SHA-256 of the body's canonical form (CacheKey's input); nil unless parse was asked for it.
    /// Held as four words: a 32-byte array per request cost an allocation and, through the
    /// stdlib's unspecialised array allocation, a run-time generic-metadata lookup (~1k
    /// instructions a request in all).
    let canonicalHash: Digest.Value?
    public var canonicalDigest: [UInt8]? { canonicalHash?.bytes }
    /// The prompt's chained chunk hashes for prefix-aware routing; nil unless parse was asked for them.
    public var promptChunks: PromptChunks?
    /// Issue 14: the request's tenant and its X-Request-Deadline-Ms as a monotonic instant (ns),
    /// set by the Frontend (Frontend+Tenant.swift) before the session starts.
    public var tenant: Tenant?
    public var deadline: UInt64?
    /// Exact-mode routing: the prompt's token ids from a backend's /tokenize (PromptTokenizer);
    /// nil otherwise, or when they did not come in time.
    public var promptTokenIDs: [UInt32]?

    /// Validates `body`; with `canonical`, also digests its canonical form for the cache key; with
    /// `chunking`, also hashes the prompt's leading chunks (routing.policy prefix_aware).
    public static func parse(kind: EndpointKind, body: [UInt8], canonical: Bool = false,
                             chunking: (chunkBytes: Int, maxChunks: Int)? = nil) -> Result<OpenAIRequest, EngineError> {
        var r = scan(kind: kind, body: body, flags: canonical ? Int32(RS_WANT_CANONICAL) : 0,
                     promptLimit: chunking.map { $0.chunkBytes * $0.maxChunks } ?? 0)
        var digest: Digest.Value?
        if canonical, r.status == RS_OK {
            digest = Digest.Value(sha256: UnsafeRawBufferPointer(start: r.canonical, count: r.canonical_len))
        }
        var chunks: PromptChunks?
        if let c = chunking, r.status == RS_OK {
            // A render cut at the limit may be the start of a longer prompt: its whole length is
            // then at most the text plus each message's role and two newlines (roles are short).
            let limit = c.chunkBytes * c.maxChunks
            let whole = r.prompt_len < limit ? r.prompt_len : max(r.prompt_len, Int(r.text_bytes) + 16 * Int(r.messages))
            chunks = PromptChunks(UnsafeRawBufferPointer(start: r.prompt, count: r.prompt_len),
                                  chunkBytes: c.chunkBytes, maxChunks: c.maxChunks, promptBytes: whole)
        }
        let model: String? = r.has_model != 0
            ? String(decoding: UnsafeRawBufferPointer(start: r.model, count: r.model_len), as: UTF8.self) : nil
        rs_trim()
        switch Int(r.status) {
        case RS_OK: break
        case RS_BAD_JSON:
            let why = withUnsafeBytes(of: &r.error) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            return .failure(EngineError(.invalidJSON, "We could not parse the JSON body of your request: \(why)", param: "body"))
        case RS_NOT_OBJECT:
            return .failure(EngineError(.invalidRequest, "The request body must be a JSON object.", param: "body"))
        default:
            let detail = withUnsafeBytes(of: &r.error) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            return .failure(validationError(field: Int(r.field), index: r.index, detail: detail))
        }
        // One initialiser, returned as it is: a `var` set member by member was copied into the
        // result (each reference retained) and then destroyed.
        return .success(OpenAIRequest(
            kind: kind, model: model, stream: r.stream != 0, includeUsage: r.include_usage != 0,
            continuousUsage: r.stream != 0 && r.include_usage != 0 && r.continuous_usage != 0,
            hasStreamOptions: r.has_stream_options != 0, promptSize: promptSize(r), isDeterministic: r.deterministic != 0,
            maxOutputTokens: r.max_output_tokens >= 0 ? Int(clamping: r.max_output_tokens) : nil, canonicalHash: digest,
            promptChunks: chunks))
    }

    /// A relayed request whose body is not JSON (none, or a multipart form): what its form said.
    static func relay(_ kind: EndpointKind, model: String?, stream: Bool) -> OpenAIRequest {
        OpenAIRequest(kind: kind, model: model, stream: stream, includeUsage: false,
                      promptSize: PromptSize(textBytes: 0, messages: 0, tokenIDs: nil), isDeterministic: false, canonicalHash: nil)
    }

    /// `body` (one `parse` accepted) with `model` set and/or `stream_options.include_usage` true;
    /// nil only if it no longer parses.
    public static func rewrite(_ body: [UInt8], model: String?, includeUsage: Bool) -> [UInt8]? {
        body.withUnsafeBytes { b in
            var n = 0
            let out: UnsafePointer<CChar>?
            if let model {
                var m = model
                out = m.withUTF8 { u in
                    u.withMemoryRebound(to: CChar.self) { rs_rewrite(b.baseAddress, b.count, $0.baseAddress, $0.count, includeUsage ? 1 : 0, nil, &n) }
                }
            } else {
                out = rs_rewrite(b.baseAddress, b.count, nil, 0, includeUsage ? 1 : 0, nil, &n)
            }
            return out.map { Array(UnsafeRawBufferPointer(start: $0, count: n)) }
        }
    }

    /// `body` with `"stream_options":{"include_usage":true}` as its last member: what `rewrite`
    /// asks for usage with, without a second parse and a rewrite of the rest. Only for a body
    /// `parse` accepted as an object with members and no `stream_options` (`hasStreamOptions`
    /// false): its last byte but JSON whitespace is the object's closing brace, and the member
    /// goes just before it. The rest of the body is forwarded as the client wrote it (rewrite
    /// writes it compactly; vLLM reads the same request). nil when the body does not end so.
    public static func addingIncludeUsage(to body: [UInt8]) -> [UInt8]? {
        func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D }
        var close = body.count - 1
        while close >= 0 && isSpace(body[close]) { close -= 1 }
        guard close > 0, body[close] == 0x7D else { return nil }  // "}"
        var last = close - 1
        while last >= 0 && isSpace(body[last]) { last -= 1 }
        guard last >= 0, body[last] != 0x7B else { return nil }  // "{": no member to follow
        var out: [UInt8] = []
        out.reserveCapacity(body.count + includeUsageMember.count)
        out += body[..<close]
        out += includeUsageMember
        out += body[close...]
        return out
    }

    private static let includeUsageMember = Array(#","stream_options":{"include_usage":true}"#.utf8)

    /// The canonical form `canonicalDigest` hashes (nil when the body is rejected); for tests and debugging.
    static func canonicalForm(kind: EndpointKind, body: [UInt8]) -> [UInt8]? {
        let r = scan(kind: kind, body: body, flags: Int32(RS_WANT_CANONICAL))
        guard r.status == RS_OK else { return nil }
        return Array(UnsafeRawBufferPointer(start: r.canonical, count: r.canonical_len))
    }

    /// `{"<key>": <its value>}` from `body` (`{}` when absent), e.g. the messages to tokenize.
    public static func extract(_ body: [UInt8], key: String) -> [UInt8]? {
        body.withUnsafeBytes { b in
            var n = 0
            return rs_rewrite(b.baseAddress, b.count, nil, 0, 0, key, &n).map { Array(UnsafeRawBufferPointer(start: $0, count: n)) }
        }
    }

    /// The prompt size of any JSON object body, valid or not (for tests of the measuring rules).
    static func measure(kind: EndpointKind, body: [UInt8]) -> PromptSize {
        promptSize(scan(kind: kind, body: body, flags: 0))
    }

    private static func scan(kind: EndpointKind, body: [UInt8], flags: Int32, promptLimit: Int = 0) -> rs_result {
        var r = rs_result()
        body.withUnsafeBytes { rs_scan_prompt($0.baseAddress, $0.count, kind.scanKind, flags, promptLimit, &r) }
        return r
    }

    /// The prompt as prefix routing reads it (the scan's rendering), for tests.
    static func routingPrompt(kind: EndpointKind, body: [UInt8], limit: Int = 1 << 20) -> [UInt8] {
        let r = scan(kind: kind, body: body, flags: 0, promptLimit: limit)
        guard r.status == RS_OK, r.prompt_len > 0 else { return [] }
        return Array(UnsafeRawBufferPointer(start: r.prompt, count: r.prompt_len))
    }

    private static func promptSize(_ r: rs_result) -> PromptSize {
        PromptSize(textBytes: r.text_bytes, messages: r.messages, tokenIDs: r.token_ids >= 0 ? r.token_ids : nil)
    }

    static func validationError(field: Int, index: Int, detail: String = "") -> EngineError {
        switch field {
        case RS_F_DUPLICATE_KEY:
            let at = index >= 0 ? "messages[\(index)]" : "the request body"
            return EngineError(.invalidRequest, "Duplicate key '\(detail)' in \(at): each key may appear once.", param: index >= 0 ? "messages[\(index)]" : nil)
        case RS_F_MODEL_TYPE:
            return EngineError(.invalidRequest, "'model' must be a string.", param: "model")
        case RS_F_STREAM_TYPE:
            return EngineError(.invalidRequest, "'stream' must be a boolean.", param: "stream")
        case RS_F_STREAM_OPTIONS_TYPE:
            return EngineError(.invalidRequest, "'stream_options' must be an object.", param: "stream_options")
        case RS_F_MESSAGES_MISSING:
            return EngineError(.invalidRequest, "'messages' is a required property.", param: "messages")
        case RS_F_MESSAGES_TYPE:
            return EngineError(.invalidRequest, "'messages' must be an array of message objects.", param: "messages")
        case RS_F_MESSAGES_EMPTY:
            return EngineError(.invalidRequest, "'messages' must contain at least one message.", param: "messages")
        case RS_F_MESSAGE_NOT_OBJECT:
            return EngineError(.invalidRequest, "'messages[\(index)]' must be an object.", param: "messages[\(index)]")
        case RS_F_MESSAGE_ROLE:
            return EngineError(.invalidRequest, "'messages[\(index)].role' is required and must be a string.", param: "messages[\(index)].role")
        case RS_F_MESSAGE_CONTENT:
            return EngineError(.invalidRequest, "'messages[\(index)].content' must be a string or an array of content parts.", param: "messages[\(index)].content")
        case RS_F_PROMPT_MISSING:
            return EngineError(.invalidRequest, "'prompt' is a required property.", param: "prompt")
        case RS_F_PROMPT_TOKENS:
            return EngineError(.invalidRequest, "'prompt' token arrays must hold integers.", param: "prompt")
        default:
            return EngineError(.invalidRequest, "'prompt' must be a string, an array of strings, or an array of token ids.", param: "prompt")
        }
    }
}

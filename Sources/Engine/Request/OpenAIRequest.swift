// OpenAIRequest: a validated /v1/chat/completions or /v1/completions body.
// Validation is what must hold before anything reaches a backend (issue: bad input never
// reaches a backend): a JSON object, typed `messages` (chat) or `prompt` (completions),
// typed `model`, `stream`, `stream_options`. Everything else is vLLM's to judge.
// The body is validated by simdjson (CRequestScan: no tree, no allocation per request); the
// jansson tree that rewrites and cache keys work on is parsed only when a stage asks for it.
import CEventShim
import CRequestScan

public enum EndpointKind: Sendable, Equatable {
    case chat
    case completion

    public var upstreamPath: String {
        switch self {
        case .chat: return "/v1/chat/completions"
        case .completion: return "/v1/completions"
        }
    }
}

public struct OpenAIRequest {
    public let kind: EndpointKind
    /// The `model` field; nil when absent (or null).
    public var model: String?
    public let stream: Bool
    public let includeUsage: Bool
    /// Prompt size measured during validation (TokenEstimator's rules).
    public let promptSize: PromptSize
    /// The body (shared with the session's copy: arrays are copy-on-write).
    private let body: [UInt8]
    /// The jansson tree of the body; nil until `loadDocument()` succeeded.
    public private(set) var document: JSONDocument?

    /// Parses the body into a jansson tree (once). Stages that rewrite the body or key the cache
    /// call this first; jansson may reject a body simdjson accepted (a NUL escape, an integer
    /// beyond 64 bits), which is then the client's 400.
    public mutating func loadDocument() -> Result<JSONDocument, EngineError> {
        if let d = document { return .success(d) }
        switch body.withUnsafeBytes({ JSONDocument.parse($0) }) {
        case .failure(let f):
            return .failure(EngineError(.invalidJSON, "We could not parse the JSON body of your request: \(f.message) (at byte \(f.position))", param: "body"))
        case .success(let d):
            document = d
            return .success(d)
        }
    }

    public static func parse(kind: EndpointKind, body: [UInt8]) -> Result<OpenAIRequest, EngineError> {
        var r = scan(kind: kind, body: body)
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
        return .success(OpenAIRequest(kind: kind, model: model, stream: r.stream != 0, includeUsage: r.include_usage != 0,
                                      promptSize: promptSize(r), body: body))
    }

    /// The prompt size of any JSON object body, valid or not (for tests of the measuring rules).
    static func measure(kind: EndpointKind, body: [UInt8]) -> PromptSize {
        promptSize(scan(kind: kind, body: body))
    }

    private static func scan(kind: EndpointKind, body: [UInt8]) -> rs_result {
        var r = rs_result()
        body.withUnsafeBytes { rs_scan($0.baseAddress, $0.count, kind == .chat ? 1 : 0, &r) }
        return r
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

// OpenAIRequest: a validated /v1/chat/completions or /v1/completions body.
// Validation is what must hold before anything reaches a backend (issue: bad input never
// reaches a backend): a JSON object, typed `messages` (chat) or `prompt` (completions),
// typed `model`, `stream`, `stream_options`. Everything else is vLLM's to judge.
import CEventShim

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
    public let document: JSONDocument

    public static func parse(kind: EndpointKind, body: [UInt8]) -> Result<OpenAIRequest, EngineError> {
        let parsed = body.withUnsafeBytes { JSONDocument.parse($0) }
        let doc: JSONDocument
        switch parsed {
        case .failure(let f):
            return .failure(EngineError(.invalidJSON, "We could not parse the JSON body of your request: \(f.message) (at byte \(f.position))", param: "body"))
        case .success(let d): doc = d
        }
        let root = doc.root
        guard JSONValue.type(root) == JSONValue.object else {
            return .failure(EngineError(.invalidRequest, "The request body must be a JSON object.", param: "body"))
        }
        var model: String?
        let m = json_object_get(root, "model")
        switch JSONValue.type(m) {
        case -1, JSONValue.null: model = nil
        case JSONValue.string: model = JSONValue.string(m)
        default: return .failure(EngineError(.invalidRequest, "'model' must be a string.", param: "model"))
        }
        var stream = false
        let s = json_object_get(root, "stream")
        switch JSONValue.type(s) {
        case -1, JSONValue.null: stream = false
        case JSONValue.jtrue, JSONValue.jfalse: stream = JSONValue.bool(s)!
        default: return .failure(EngineError(.invalidRequest, "'stream' must be a boolean.", param: "stream"))
        }
        var includeUsage = false
        let so = json_object_get(root, "stream_options")
        switch JSONValue.type(so) {
        case -1, JSONValue.null: break
        case JSONValue.object:
            includeUsage = JSONValue.bool(json_object_get(so, "include_usage")) ?? false
        default: return .failure(EngineError(.invalidRequest, "'stream_options' must be an object.", param: "stream_options"))
        }
        switch kind {
        case .chat:
            if let e = validateMessages(json_object_get(root, "messages")) { return .failure(e) }
        case .completion:
            if let e = validatePrompt(json_object_get(root, "prompt")) { return .failure(e) }
        }
        return .success(OpenAIRequest(kind: kind, model: model, stream: stream, includeUsage: includeUsage, document: doc))
    }

    static func validateMessages(_ j: UnsafeMutablePointer<json_t>?) -> EngineError? {
        guard JSONValue.type(j) != -1 else {
            return EngineError(.invalidRequest, "'messages' is a required property.", param: "messages")
        }
        guard JSONValue.type(j) == JSONValue.array else {
            return EngineError(.invalidRequest, "'messages' must be an array of message objects.", param: "messages")
        }
        let n = json_array_size(j)
        guard n > 0 else {
            return EngineError(.invalidRequest, "'messages' must contain at least one message.", param: "messages")
        }
        for i in 0..<n {
            let msg = json_array_get(j, i)
            guard JSONValue.type(msg) == JSONValue.object else {
                return EngineError(.invalidRequest, "'messages[\(i)]' must be an object.", param: "messages[\(i)]")
            }
            guard JSONValue.type(json_object_get(msg, "role")) == JSONValue.string else {
                return EngineError(.invalidRequest, "'messages[\(i)].role' is required and must be a string.", param: "messages[\(i)].role")
            }
            let c = JSONValue.type(json_object_get(msg, "content"))
            if c != -1 && c != JSONValue.null && c != JSONValue.string && c != JSONValue.array {
                return EngineError(.invalidRequest, "'messages[\(i)].content' must be a string or an array of content parts.", param: "messages[\(i)].content")
            }
        }
        return nil
    }

    static func validatePrompt(_ j: UnsafeMutablePointer<json_t>?) -> EngineError? {
        let t = JSONValue.type(j)
        if t == -1 || t == JSONValue.null {
            return EngineError(.invalidRequest, "'prompt' is a required property.", param: "prompt")
        }
        if t == JSONValue.string { return nil }
        guard t == JSONValue.array, json_array_size(j) > 0 else {
            return EngineError(.invalidRequest, "'prompt' must be a string, an array of strings, or an array of token ids.", param: "prompt")
        }
        // Array of strings, of integers, or of integer arrays.
        let first = JSONValue.type(json_array_get(j, 0))
        for i in 0..<json_array_size(j) {
            let e = json_array_get(j, i)
            let et = JSONValue.type(e)
            guard et == first, et == JSONValue.string || et == JSONValue.integer || et == JSONValue.array else {
                return EngineError(.invalidRequest, "'prompt' must be a string, an array of strings, or an array of token ids.", param: "prompt")
            }
            if et == JSONValue.array {
                for k in 0..<json_array_size(e) where JSONValue.type(json_array_get(e, k)) != JSONValue.integer {
                    return EngineError(.invalidRequest, "'prompt' token arrays must hold integers.", param: "prompt")
                }
            }
        }
        return nil
    }
}

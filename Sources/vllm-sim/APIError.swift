// APIError: an error response exactly as vLLM 0.32.0 words it (vllm-api.md section 7): a status
// and a ready JSON body. vLLM's own checks answer `{"error":{message,type,param,code}}`; the web
// framework's routing errors answer `{"detail":...}`. Plain values, built once per failure.

struct APIError: Error, Equatable, Sendable {
    var status: Int
    var body: [UInt8]

    /// `{"error":{"message":..,"type":..,"param":..,"code":status}}`.
    static func vllm(_ status: Int, message: String, type: StaticString, param: String?) -> APIError {
        var w = ByteWriter(capacity: 160 + message.utf8.count)
        w.write("{\"error\":{\"message\":")
        w.write(jsonString: message)
        w.write(",\"type\":\"")
        w.write(type)
        w.write("\",\"param\":")
        if let param { w.write(jsonString: param) } else { w.write("null") }
        w.write(",\"code\":")
        w.write(int: status)
        w.write("}}")
        return APIError(status: status, body: w.bytes)
    }

    /// A pydantic validation failure: type "Bad Request", param = the location.
    static func validation(_ errorType: String, loc: String, msg: String, input: String,
                           ctx: String? = nil) -> APIError {
        var m = "1 validation error:\n  {'type': '\(errorType)', 'loc': '\(loc)', 'msg': '\(msg)', 'input': \(pythonRepr(input))"
        if let ctx { m += ", 'ctx': {'error': \(pythonRepr(ctx))}" }
        m += "}"
        return .vllm(400, message: m, type: "Bad Request", param: loc)
    }

    /// One pydantic error, as vLLM prints it inside "N validation errors:".
    struct FieldError: Equatable, Sendable {
        var type: String
        var loc: String
        var msg: String
        var input: String
        /// Python's repr of the ctx dict's body, e.g. `'ge': 0`.
        var ctx: String? = nil
    }

    /// Several pydantic failures (a union type reports one per alternative); param = the first loc.
    static func validation(_ errors: [FieldError]) -> APIError {
        precondition(!errors.isEmpty, "validation([]) has nothing to report")
        var m = errors.count == 1 ? "1 validation error:" : "\(errors.count) validation errors:"
        for e in errors {
            m += "\n  {'type': '\(e.type)', 'loc': '\(e.loc)', 'msg': \(pythonRepr(e.msg)), 'input': \(pythonRepr(e.input))"
            if let ctx = e.ctx { m += ", 'ctx': {\(ctx)}" }
            m += "}"
        }
        return .vllm(400, message: m, type: "Bad Request", param: errors[0].loc)
    }

    static func missingField(_ loc: String, root: JSONNode) -> APIError {
        .validation("missing", loc: loc, msg: "Field required", input: root.pydanticInput)
    }

    static func jsonInvalid(_ f: JSONLoadFailure) -> APIError {
        .validation("json_invalid", loc: "body.\(f.position)", msg: "JSON decode error",
                    input: "<dict of 0 items>", ctx: f.reason)
    }

    static let emptyBody = APIError.validation("missing", loc: "body", msg: "Field required", input: "None")

    static func notAnObject(_ root: JSONNode) -> APIError {
        .validation("model_attributes_type", loc: "body",
                    msg: "Input should be a valid dictionary or object to extract fields from",
                    input: root.pydanticInput)
    }

    static let unsupportedMediaType = APIError.vllm(
        400, message: "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed",
        type: "Bad Request", param: nil)

    static func unknownModel(_ name: String, aliases: String) -> APIError {
        .vllm(404, message: "The model `\(name)` does not exist. Valid aliases: \(aliases).",
              type: "NotFoundError", param: "model")
    }

    /// The pooling endpoints (embeddings, pooling, classify, score, rerank) word it without the
    /// aliases and with no param.
    static func unknownPoolingModel(_ name: String) -> APIError {
        .vllm(404, message: "The model `\(name)` does not exist.", type: "NotFoundError", param: nil)
    }

    /// GET /v1/responses/{id}, its cancel, and previous_response_id: vLLM stores no responses
    /// unless VLLM_ENABLE_RESPONSES_API_STORE is set, and neither does the simulator.
    static func responseNotFound(_ id: String) -> APIError {
        .vllm(404, message: "Response with id '\(id)' not found.", type: "invalid_request_error", param: "response_id")
    }

    static let emptyConversation = APIError.vllm(
        400, message: "Cannot apply chat template to an empty conversation. Provide at least one message.",
        type: "BadRequestError", param: nil)

    static let missingPrompt = APIError.vllm(
        400, message: "Either prompt or prompt_embeds must be provided and non-empty. (parameter=prompt)",
        type: "BadRequestError", param: "prompt")

    static let emptyPromptList = APIError.vllm(
        400, message: "You must pass at least one prompt", type: "BadRequestError", param: nil)

    static let streamOptionsWithoutStream = APIError.vllm(
        400, message: "Stream options can only be defined when `stream=True`. (parameter=stream_options)",
        type: "BadRequestError", param: "stream_options")

    static func maxTokensTooLarge(_ v: Int, maxModelLen: Int) -> APIError {
        .vllm(400, message: "max_tokens=\(v) cannot be greater than max_model_len=\(maxModelLen). Please request fewer output tokens. (parameter=max_tokens, value=\(v))",
              type: "BadRequestError", param: "max_tokens")
    }

    /// /v1/responses names its own field in the upper-bound check (the lower bound, checked on
    /// the sampling parameters, still says max_tokens).
    static func maxOutputTokensTooLarge(_ v: Int, maxModelLen: Int) -> APIError {
        .vllm(400, message: "max_output_tokens=\(v) cannot be greater than max_model_len=\(maxModelLen). Please request fewer output tokens. (parameter=max_output_tokens, value=\(v))",
              type: "BadRequestError", param: "max_output_tokens")
    }

    static func matryoshkaUnsupported(model: String, dimensions: Int) -> APIError {
        .vllm(400, message: "Model \(pythonRepr(model)) does not support Matryoshka embeddings; dimensions must be unset (received dimensions=\(dimensions)).",
              type: "BadRequestError", param: nil)
    }

    static func dimensionsOutOfRange(model: String, dimensions: Int, size: Int) -> APIError {
        .vllm(400, message: "Model \(pythonRepr(model)) only supports dimensions in range [1, \(size)], got \(dimensions).",
              type: "BadRequestError", param: nil)
    }

    static let scoreLengths = APIError.vllm(
        400, message: "Input lengths must be either 1:1, 1:N or N:N", type: "BadRequestError", param: nil)
    static let scoreNoText = APIError.vllm(
        400, message: "At least one text element must be given", type: "BadRequestError", param: nil)
    static let scoreNoTextPair = APIError.vllm(
        400, message: "At least one text_pair element must be given", type: "BadRequestError", param: nil)

    static func maxTokensTooSmall(_ v: Int) -> APIError {
        .vllm(400, message: "max_tokens must be at least 1, got \(v). (parameter=max_tokens, value=\(v))",
              type: "BadRequestError", param: "max_tokens")
    }

    static func nTooSmall(_ v: Int) -> APIError {
        .vllm(400, message: "n must be at least 1, got \(v).", type: "BadRequestError", param: nil)
    }

    /// vLLM stops tokenizing at max_model_len + 1, so the count in the message is always that.
    static func promptTooLong(maxModelLen: Int) -> APIError {
        let n = maxModelLen + 1
        return .vllm(400, message: "This model's maximum context length is \(maxModelLen) tokens. However, your prompt contains at least \(n) input tokens, which exceeds this limit even without any output tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value=\(n))",
                     type: "BadRequestError", param: "input_tokens")
    }

    /// What an injected failure (`--error-rate`) answers: vLLM's reply when the engine core dies.
    static let injectedFailure = APIError.vllm(
        500, message: "EngineCore encountered an issue. See stack trace (above) for the root cause.",
        type: "InternalServerError", param: nil)

    static let notFound = APIError(status: 404, body: Array(#"{"detail":"Not Found"}"#.utf8))
    static let methodNotAllowed = APIError(status: 405, body: Array(#"{"detail":"Method Not Allowed"}"#.utf8))

    /// The simulator's own /sim/* errors (not vLLM-shaped on purpose).
    static func simControl(_ message: String) -> APIError {
        var w = ByteWriter()
        w.write("{\"error\":")
        w.write(jsonString: message)
        w.write("}")
        return APIError(status: 400, body: w.bytes)
    }
}

/// Python's `repr(str)`: single quotes unless the text has one and no double quote; backslashes
/// and control characters escaped.
func pythonRepr(_ s: String) -> String {
    let useDouble = s.contains("'") && !s.contains("\"")
    let quote: Character = useDouble ? "\"" : "'"
    var out = String(quote)
    for ch in s.unicodeScalars {
        switch ch {
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case "'" where !useDouble: out += "\\'"
        default:
            if ch.value < 0x20 || ch.value == 0x7F {
                let hex = String(ch.value, radix: 16)
                out += "\\x" + (hex.count < 2 ? "0" + hex : hex)
            } else {
                out.unicodeScalars.append(ch)
            }
        }
    }
    out.append(quote)
    return out
}

// EngineError: every failure the data path can report, as a value (style I), and the one table
// that maps it to an HTTP status plus an OpenAI-style body
// {"error":{"message","type","param","code"}}. Machines return these; drivers render them.

public struct EngineError: Error, Equatable, Sendable {
    public enum Kind: Sendable, Equatable {
        case invalidJSON
        case invalidRequest
        case unauthorized
        case routeNotFound
        case modelNotFound
        case methodNotAllowed
        case requestTimeout
        case bodyTooLarge
        case headersTooLarge
        case rateLimited
        case badGateway
        case noBackend
        case upstreamTimeout
        case internalError
    }
    public enum Source: Sendable, Equatable { case client, upstream, redis, `internal` }
    public enum Retry: Sendable, Equatable { case no, yes, reusedConnectionOnly }

    public var kind: Kind
    public var source: Source
    public var retry: Retry
    public var message: String
    public var param: String?
    /// Seconds for a Retry-After header (429, 503).
    public var retryAfterSeconds: Int?

    public init(_ kind: Kind, _ message: String, param: String? = nil, source: Source = .client,
                retry: Retry = .no, retryAfterSeconds: Int? = nil) {
        self.kind = kind
        self.message = message
        self.param = param
        self.source = source
        self.retry = retry
        self.retryAfterSeconds = retryAfterSeconds
    }

    /// (status, type, code) — the single table.
    public var wire: (status: Int, type: String, code: String) {
        switch kind {
        case .invalidJSON: return (400, "invalid_request_error", "invalid_json")
        case .invalidRequest: return (400, "invalid_request_error", "invalid_request")
        case .unauthorized: return (401, "invalid_request_error", "invalid_api_key")
        case .routeNotFound: return (404, "invalid_request_error", "not_found")
        case .modelNotFound: return (404, "invalid_request_error", "model_not_found")
        case .methodNotAllowed: return (405, "invalid_request_error", "method_not_allowed")
        case .requestTimeout: return (408, "invalid_request_error", "request_timeout")
        case .bodyTooLarge: return (413, "invalid_request_error", "request_too_large")
        case .headersTooLarge: return (431, "invalid_request_error", "headers_too_large")
        case .rateLimited: return (429, "rate_limit_error", "rate_limit_exceeded")
        case .badGateway: return (502, "server_error", "bad_gateway")
        case .noBackend: return (503, "server_error", "service_unavailable")
        case .upstreamTimeout: return (504, "server_error", "upstream_timeout")
        case .internalError: return (500, "server_error", "internal_error")
        }
    }

    public var status: Int { wire.status }

    /// `{"error":{...}}` as UTF-8 bytes.
    public var jsonBody: [UInt8] {
        let w = wire
        var s = "{\"error\":{\"message\":"
        JSONText.appendQuoted(&s, message)
        s += ",\"type\":\"" + w.type + "\",\"param\":"
        if let param { JSONText.appendQuoted(&s, param) } else { s += "null" }
        s += ",\"code\":\"" + w.code + "\"}}"
        return Array(s.utf8)
    }

    /// The final SSE event for a stream that fails after its head was sent.
    public var sseEvent: [UInt8] {
        var b = Array("data: ".utf8)
        b += jsonBody
        b += Array("\n\n".utf8)
        return b
    }
}

/// Minimal JSON text helpers for the few bodies the Engine writes itself.
public enum JSONText {
    public static func appendQuoted(_ s: inout String, _ v: String) {
        s.unicodeScalars.append("\"")
        for u in v.unicodeScalars {
            switch u {
            case "\"": s += "\\\""
            case "\\": s += "\\\\"
            case "\n": s += "\\n"
            case "\r": s += "\\r"
            case "\t": s += "\\t"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    s += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    s.unicodeScalars.append(u)
                }
            }
        }
        s.unicodeScalars.append("\"")
    }

    public static func quoted(_ v: String) -> String {
        var s = ""
        appendQuoted(&s, v)
        return s
    }
}

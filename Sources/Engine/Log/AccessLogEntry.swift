// AccessLogEntry: the facts of one access-log line and their rendering as one JSON object
// (docs/operations.md §4 lists the fields). EngineRuntime builds an entry when a request ends;
// AccessLog, the writer, batches the lines. AccessRequestInfo is what the front end read from the
// request's head and socket, clipped so that no client can make a line arbitrarily long.
// Pure: no imports, no I/O.

struct AccessRequestInfo: Equatable, Sendable {
    var method: String
    /// The request path without its query string (which may carry secrets), clipped.
    var path: String
    /// `ip:port` of the client socket.
    var client: String
    /// The User-Agent header, clipped; nil when absent.
    var userAgent: String?

    static let maxPathBytes = 256
    static let maxUserAgentBytes = 256

    init(method: String, path: Substring, client: String, userAgent: String?) {
        self.method = AccessRequestInfo.clipped(method, 32)
        self.path = AccessRequestInfo.clipped(path, AccessRequestInfo.maxPathBytes)
        self.client = client
        self.userAgent = userAgent.map { AccessRequestInfo.clipped($0, AccessRequestInfo.maxUserAgentBytes) }
    }

    /// `s` if it fits in `limit` UTF-8 bytes, else its longest prefix of whole scalars that leaves
    /// room for a trailing `...` within the limit.
    static func clipped(_ s: some StringProtocol, _ limit: Int) -> String {
        if s.utf8.count <= limit { return String(s) }
        var out = ""
        var used = 0
        for u in s.unicodeScalars {
            let n = String(u).utf8.count
            if used + n > limit - 3 { break }
            out.unicodeScalars.append(u)
            used += n
        }
        return out + "..."
    }
}

struct AccessLogEntry: Equatable, Sendable {
    var requestId: String
    /// Method, path, client and user agent; nil for a connection that failed before a request head
    /// was read (malformed, too large, too slow).
    var request: AccessRequestInfo?
    var route: String
    var modelAsked: String?
    var modelServed: String?
    var backend: String?
    /// The status of the last upstream response head; nil when no backend answered.
    var upstreamStatus: Int?
    var status: Int
    var cache: String
    var coalesced: Bool
    var bytesIn: Int
    var bytesOut: Int
    var ttfbSeconds: Double?
    var durationSeconds: Double
    var termination: Termination

    /// One JSON object and a newline. `time` (the wall clock at the end) comes first, as an ISO 8601
    /// UTC string with milliseconds.
    func jsonLine(wallSeconds: Double) -> String {
        var s = "{\"time\":\""
        s += ISO8601Time.format(epochSeconds: wallSeconds)
        s += "\",\"request_id\":"; JSONText.appendQuoted(&s, requestId)
        s += ",\"method\":"; appendOptional(&s, request?.method)
        s += ",\"path\":"; appendOptional(&s, request?.path)
        s += ",\"route\":"; JSONText.appendQuoted(&s, route)
        s += ",\"client\":"; appendOptional(&s, request?.client)
        s += ",\"user_agent\":"; appendOptional(&s, request?.userAgent)
        s += ",\"model\":"; appendOptional(&s, modelAsked)
        s += ",\"served_model\":"; appendOptional(&s, modelServed)
        s += ",\"backend\":"; appendOptional(&s, backend)
        s += ",\"upstream_status\":" + (upstreamStatus.map { String($0) } ?? "null")
        s += ",\"status\":" + String(status)
        s += ",\"cache\":"; JSONText.appendQuoted(&s, cache)
        s += ",\"coalesced\":" + (coalesced ? "true" : "false")
        s += ",\"bytes_in\":" + String(bytesIn)
        s += ",\"bytes_out\":" + String(bytesOut)
        s += ",\"ttfb_ms\":" + (ttfbSeconds.map { AccessLogEntry.milliseconds($0) } ?? "null")
        s += ",\"duration_ms\":" + AccessLogEntry.milliseconds(durationSeconds)
        s += ",\"termination\":"; JSONText.appendQuoted(&s, termination.description)
        s += "}\n"
        return s
    }

    /// Seconds as milliseconds with microsecond resolution (`0.623`).
    static func milliseconds(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "null" }
        return String((seconds * 1e6).rounded() / 1e3)
    }

    private func appendOptional(_ s: inout String, _ v: String?) {
        if let v { JSONText.appendQuoted(&s, v) } else { s += "null" }
    }
}

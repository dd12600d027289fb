// ResponseWriter: the one place that writes the Engine's own complete responses to a client — a
// stored or shared answer in the client's form (SSE events as a chunked stream, or a JSON body),
// an OpenAI-style error — with the headers every such response carries. Used by the Frontend's
// memo path, RequestSession's replays and deliveries, and EngineRuntime's error writer. Returns
// the body bytes written (for the access log and metrics). Stateless; loop-confined callers.
import Reactor

enum ResponseWriter {
    /// The head of every SSE response: `base` plus content type and no caching or buffering.
    static func sseHeaders(_ base: consuming HTTPHeaders) -> HTTPHeaders {
        base.append(sseFields)
        return base
    }

    /// Written once: three `add`s a stream cost more than the rest of its head.
    private static let sseFields = HTTPHeaders([
        .init("content-type", "text/event-stream; charset=utf-8"), .init("cache-control", "no-cache"), .init("x-accel-buffering", "no"),
    ])

    /// A whole answer already in the client's form: SSE events (`stream`; the chunked head unless
    /// `headSent`, the events, the end) or a 200 JSON body.
    @discardableResult
    static func answer(_ c: HTTPServerConnection, _ body: [UInt8], stream: Bool, headers: consuming HTTPHeaders,
                       headSent: Bool = false) -> Int {
        if stream {
            if !headSent { c.writeChunkedHead(status: 200, headers: sseHeaders(headers)) }
            // Head, events and the end in one write.
            lastChunk(body, to: c)
        } else {
            json(c, status: 200, body, headers: headers)
        }
        return body.count
    }

    /// One chunk of a stream under way (a `: queued` comment; a read's events go out from the
    /// relay's buffers, RequestSession.writeEvents); nothing when the client is gone.
    static func chunk(_ bytes: [UInt8], to c: HTTPServerConnection?) -> Int {
        guard !bytes.isEmpty, let c else { return 0 }
        bytes.withUnsafeBytes { c.writeChunk($0) }
        return bytes.count
    }

    /// The stream's last events and its end, in one write (`close`: close the connection after).
    static func lastChunk(_ bytes: [UInt8], to c: HTTPServerConnection, close: Bool = false) {
        bytes.withUnsafeBytes { b in
            withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: 1) { one in
                one.initializeElement(at: 0, to: b)
                c.writeChunk(parts: UnsafeBufferPointer(one), last: true, close: close)
            }
        }
    }

    /// A JSON body with `status`.
    @discardableResult
    static func json(_ c: HTTPServerConnection, status: Int, _ body: [UInt8], headers: consuming HTTPHeaders,
                     contentType: String = "application/json") -> Int {
        // Consumed, not copied: adding to a copy of the caller's headers would copy their bytes.
        headers.add(name: "content-type", contentType)
        c.writeResponse(status: status, headers: headers, body: body)
        return body.count
    }

    /// A request's reply (RequestMachine decides it; the session writes it here). `stream` and
    /// `headSent`: the client asked for a stream, and its SSE head went out already.
    @discardableResult
    static func reply(_ r: RequestMachine.Reply, to c: HTTPServerConnection, stream: Bool, headers: consuming HTTPHeaders,
                      headSent: Bool) -> Int {
        switch r {
        case .answer(let body):
            return answer(c, body, stream: stream, headers: headers, headSent: headSent)
        case .json(let st, let body, let ct, let retryAfter):
            if let ra = retryAfter { headers.add("retry-after", String(ra)) }
            return json(c, status: st, body, headers: headers, contentType: ct)
        case .error(let err):
            return error(err, to: c, headers: headers)
        case .endStream:
            c.endChunked()
            return 0
        case .lastEvents(let bytes, let close):
            lastChunk(bytes, to: c, close: close)
            return bytes.count
        }
    }

    /// An OpenAI-style error (with Retry-After when it has one).
    @discardableResult
    static func error(_ err: EngineError, to c: HTTPServerConnection, headers: consuming HTTPHeaders) -> Int {
        if let ra = err.retryAfterSeconds { headers.add("retry-after", String(ra)) }
        return json(c, status: err.status, err.jsonBody, headers: headers)
    }
}

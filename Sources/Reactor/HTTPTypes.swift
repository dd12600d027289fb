// HTTP value types shared by the server and client connections. Plain values, Sendable.
import CEventShim

/// Header list in arrival order; lookups are ASCII case-insensitive.
public struct HTTPHeaders: Sendable, Equatable {
    public var items: [Field]
    public struct Field: Sendable, Equatable {
        public var name: String
        public var value: String
        public init(_ name: String, _ value: String) { self.name = name; self.value = value }
    }

    public init(_ items: [Field] = []) { self.items = items }

    public subscript(_ name: String) -> String? {
        for f in items where asciiCaseEqual(f.name, name) { return f.value }
        return nil
    }

    public mutating func add(_ name: String, _ value: String) { items.append(Field(name, value)) }
}

@inline(__always)
public func asciiCaseEqual(_ a: String, _ b: String) -> Bool {
    var ia = a.utf8.makeIterator()
    var ib = b.utf8.makeIterator()
    while true {
        let ca = ia.next(), cb = ib.next()
        if ca == nil || cb == nil { return ca == cb }
        var x = ca!, y = cb!
        if x >= 65 && x <= 90 { x += 32 }
        if y >= 65 && y <= 90 { y += 32 }
        if x != y { return false }
    }
}

public struct HTTPRequestHead: Sendable, Equatable {
    public var method: String
    public var target: String
    public var headers: HTTPHeaders
    public var keepAlive: Bool

    public init(method: String, target: String, headers: HTTPHeaders, keepAlive: Bool) {
        self.method = method
        self.target = target
        self.headers = headers
        self.keepAlive = keepAlive
    }

    /// The path without the query string.
    public var path: Substring {
        // Byte search: Character-based firstIndex is needlessly slow on the hot path.
        if let q = target.utf8.firstIndex(of: UInt8(ascii: "?")) { return target[..<q] }
        return target[...]
    }
}

/// Limits a server connection enforces on what a client sends.
public struct HTTPServerLimits: Sendable, Equatable {
    public var maxHeaderBytes: Int
    public var maxBodyBytes: Int
    /// A request must arrive in full within this time of its first byte.
    public var readTimeout: Duration
    /// A keep-alive connection with no request in progress is closed after this.
    public var idleTimeout: Duration

    public init(maxHeaderBytes: Int = 32 * 1024, maxBodyBytes: Int = 4 * 1024 * 1024,
                readTimeout: Duration = .seconds(30), idleTimeout: Duration = .seconds(75)) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxBodyBytes = maxBodyBytes
        self.readTimeout = readTimeout
        self.idleTimeout = idleTimeout
    }
}

/// Why a server connection could not produce a request.
public enum HTTPServerFailure: Sendable, Equatable {
    case malformed(String)
    case headersTooLarge
    case bodyTooLarge
    case readTimeout
}

/// Why an upstream exchange failed.
public enum HTTPClientFailure: Sendable, Equatable {
    case connectFailed
    /// The peer closed or reset before a complete response.
    case closed(receivedHead: Bool)
    case malformed
}

public func reasonPhrase(_ status: Int) -> String {
    switch status {
    case 200: return "OK"
    case 204: return "No Content"
    case 400: return "Bad Request"
    case 401: return "Unauthorized"
    case 403: return "Forbidden"
    case 404: return "Not Found"
    case 405: return "Method Not Allowed"
    case 408: return "Request Timeout"
    case 413: return "Payload Too Large"
    case 422: return "Unprocessable Entity"
    case 429: return "Too Many Requests"
    case 431: return "Request Header Fields Too Large"
    case 500: return "Internal Server Error"
    case 502: return "Bad Gateway"
    case 503: return "Service Unavailable"
    case 504: return "Gateway Timeout"
    default: return "Status"
    }
}

/// Appends a Swift string's UTF-8 bytes to an evbuffer without a Foundation round trip.
@inline(__always)
public func evbufferAppend(_ buf: OpaquePointer, _ s: String) {
    var s = s
    s.withUTF8 { p in _ = evbuffer_add(buf, p.baseAddress, p.count) }
}

@inline(__always)
public func evbufferAppend(_ buf: OpaquePointer, _ bytes: [UInt8]) {
    bytes.withUnsafeBufferPointer { p in _ = evbuffer_add(buf, p.baseAddress, p.count) }
}

@inline(__always)
public func evbufferAppend(_ buf: OpaquePointer, _ bytes: UnsafeRawBufferPointer) {
    _ = evbuffer_add(buf, bytes.baseAddress, bytes.count)
}

/// Method name for http_parser's numeric method.
func httpMethodName(_ m: UInt32) -> String {
    String(cString: http_method_str(http_method(rawValue: m)))
}

/// Appends a static string (no allocation).
@inline(__always)
public func evbufferAppend(_ buf: OpaquePointer, _ s: StaticString) {
    _ = evbuffer_add(buf, s.utf8Start, s.utf8CodeUnitCount)
}

/// Appends a non-negative integer in decimal (or hex) without building a String.
@inline(__always)
public func evbufferAppendNumber(_ buf: OpaquePointer, _ value: Int, radix: Int = 10) {
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { p in
        var v = max(0, value)
        var i = 24
        repeat {
            i -= 1
            let d = v % radix
            p[i] = UInt8(d < 10 ? 48 + d : 87 + d)
            v /= radix
        } while v > 0
        _ = evbuffer_add(buf, p.baseAddress! + i, 24 - i)
    }
}

/// Writes `name: value\r\n` for each header (no intermediate String).
@inline(__always)
func evbufferAppendHeaders(_ buf: OpaquePointer, _ headers: HTTPHeaders) {
    for f in headers.items {
        evbufferAppend(buf, f.name)
        evbufferAppend(buf, ": " as StaticString)
        evbufferAppend(buf, f.value)
        evbufferAppend(buf, "\r\n" as StaticString)
    }
}

/// Collects header fields from http-parser's on_header_field / on_header_value callbacks (either
/// may arrive in pieces) into HTTPHeaders. Shared by the server and client connections.
struct HeaderAccumulator {
    private var fields: [HTTPHeaders.Field] = []
    private var name: [UInt8] = []
    private var value: [UInt8] = []
    private var lastWasValue = false

    mutating func reset() {
        fields.removeAll(keepingCapacity: true)
        name.removeAll(keepingCapacity: true)
        value.removeAll(keepingCapacity: true)
        lastWasValue = false
    }

    mutating func field(_ at: UnsafePointer<CChar>, _ len: Int) {
        if lastWasValue { flush() }
        name.append(contentsOf: UnsafeRawBufferPointer(start: at, count: len))
        lastWasValue = false
    }

    mutating func value(_ at: UnsafePointer<CChar>, _ len: Int) {
        value.append(contentsOf: UnsafeRawBufferPointer(start: at, count: len))
        lastWasValue = true
    }

    private mutating func flush() {
        fields.append(.init(String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
        name.removeAll(keepingCapacity: true)
        value.removeAll(keepingCapacity: true)
    }

    /// The headers so far; the accumulator is empty afterwards.
    mutating func finish() -> HTTPHeaders {
        if lastWasValue || !name.isEmpty { flush() }
        lastWasValue = false
        let h = HTTPHeaders(fields)
        fields = []
        return h
    }
}

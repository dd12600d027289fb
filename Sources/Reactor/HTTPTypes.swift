// HTTP value types shared by the server and client connections. Plain values, Sendable.
import CEventShim

#if canImport(Glibc)
import Glibc
#endif

/// Header list in arrival order, stored as it goes on the wire: one byte array of
/// `name: value\r\n` lines (one allocation per header set, written out with one copy).
/// Lookups are ASCII case-insensitive; CR and LF in added names or values become spaces.
public struct HTTPHeaders: Sendable, Equatable {
    public private(set) var block: [UInt8] = []

    public struct Field: Sendable, Equatable {
        public var name: String
        public var value: String
        public init(_ name: String, _ value: String) { self.name = name; self.value = value }
    }

    public init() {}
    public init(_ items: [Field]) { for f in items { add(f.name, f.value) } }
    /// Wraps lines already in wire form (the parser's accumulator).
    init(block: [UInt8]) { self.block = block }

    /// Hands the block's storage back (the headers are empty afterwards): a connection reuses
    /// the last message's buffer for the next one when nobody else holds it any more.
    mutating func takeBlock() -> [UInt8] {
        var b: [UInt8] = []
        swap(&b, &block)
        return b
    }

    public var isEmpty: Bool { block.isEmpty }

    /// The fields, parsed out of the block (not for the data path).
    public var items: [Field] {
        var out: [Field] = []
        forEachLine { name, value in
            out.append(Field(String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
            return true
        }
        return out
    }

    /// The first value of `name`, or nil.
    public subscript(_ name: String) -> String? {
        var name = name
        return name.withUTF8 { needle in
            block.withUnsafeBufferPointer { p -> String? in
                guard let r = HTTPHeaders.valueRange(in: p, of: needle) else { return nil }
                return String(decoding: UnsafeBufferPointer(rebasing: p[r]), as: UTF8.self)
            }
        }
    }

    public mutating func add(_ name: String, _ value: String) {
        if block.isEmpty { block.reserveCapacity(256) }
        appendSanitized(name)
        appendValue(value)
    }

    /// `add` for a name the Engine spells itself: a literal has no line break to look for (two
    /// memchr less a header; a response carries four or five of these).
    public mutating func add(name: StaticString, _ value: String) {
        if block.isEmpty { block.reserveCapacity(256) }
        name.withUTF8Buffer { block.append(contentsOf: $0) }
        appendValue(value)
    }

    /// The rest of a line after its name: `: value\r\n`.
    private mutating func appendValue(_ value: String) {
        block.append(UInt8(ascii: ":"))
        block.append(UInt8(ascii: " "))
        appendSanitized(value)
        block.append(13)
        block.append(10)
    }

    private mutating func appendSanitized(_ s: String) {
        var s = s
        s.withUTF8 { p in
            let start = block.count
            block.append(contentsOf: p)
            if hasLineBreak(p) { replaceLineBreaks(&block, from: start) }
        }
    }

    /// The value bytes of the first line named `needle` (ASCII case-insensitive). Lines are
    /// `name: value\r\n`; names hold no ':' (http-parser checks token characters), values no CR/LF.
    static func valueRange(in p: UnsafeBufferPointer<UInt8>, of needle: UnsafeBufferPointer<UInt8>) -> Range<Int>? {
        guard let base = p.baseAddress else { return nil }
        let n = p.count, k = needle.count
        var i = 0
        while i < n {
            let rest = UnsafeRawPointer(base + i)
            let endPtr = memchr(rest, 13, n - i)
            let end = endPtr.map { UnsafeRawPointer($0) - UnsafeRawPointer(base) } ?? n
            // A match needs `name:` with exactly the needle's length.
            if i + k < end && base[i + k] == UInt8(ascii: ":")
                && asciiCaseEqual(UnsafeBufferPointer(start: base + i, count: k), needle) {
                var v = i + k + 1
                while v < end && (base[v] == 32 || base[v] == 9) { v += 1 }
                return v..<end
            }
            i = end + 2
        }
        return nil
    }

    /// Appends `other`'s lines (prepared once, e.g. a response's constant headers).
    public mutating func append(_ other: HTTPHeaders) {
        if block.isEmpty { block.reserveCapacity(256) }
        block += other.block
    }

    /// The first value of `name`: the String of `known` it equals when there is one (no String
    /// made; pass literals), else a new String; nil when absent.
    public func value(_ name: StaticString, known: [String]) -> String? {
        block.withUnsafeBufferPointer { p -> String? in
            let needle = UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount)
            guard let r = HTTPHeaders.valueRange(in: p, of: needle) else { return nil }
            let v = UnsafeBufferPointer(rebasing: p[r])
            for k in known where k.utf8.count == v.count {
                let same = k.utf8.withContiguousStorageIfAvailable { v.isEmpty || memcmp($0.baseAddress!, v.baseAddress!, v.count) == 0 }
                if same ?? k.utf8.elementsEqual(v) { return k }
            }
            return String(decoding: v, as: UTF8.self)
        }
    }

    /// The first value of `name`, a name the Engine spells itself (no String made for the needle,
    /// as `subscript` makes one's UTF-8 contiguous per lookup).
    public func value(_ name: StaticString) -> String? {
        block.withUnsafeBufferPointer { p -> String? in
            let needle = UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount)
            guard let r = HTTPHeaders.valueRange(in: p, of: needle) else { return nil }
            return String(decoding: UnsafeBufferPointer(rebasing: p[r]), as: UTF8.self)
        }
    }

    /// The value ranges (in `block`) of the first lines named `a` and `b`, found in one pass (a
    /// request on the cache-hit path asks for two; each lookup walked every line).
    public func valueRanges(_ a: StaticString, _ b: StaticString) -> (Range<Int>?, Range<Int>?) {
        block.withUnsafeBufferPointer { p -> (Range<Int>?, Range<Int>?) in
            guard let base = p.baseAddress else { return (nil, nil) }
            let na = UnsafeBufferPointer(start: a.utf8Start, count: a.utf8CodeUnitCount)
            let nb = UnsafeBufferPointer(start: b.utf8Start, count: b.utf8CodeUnitCount)
            var ra: Range<Int>?
            var rb: Range<Int>?
            let n = p.count
            /// The value of the line [i, end) when it is named `needle`.
            func match(_ needle: UnsafeBufferPointer<UInt8>, _ i: Int, _ end: Int) -> Range<Int>? {
                let k = needle.count
                guard i + k < end && base[i + k] == UInt8(ascii: ":")
                        && asciiCaseEqual(UnsafeBufferPointer(start: base + i, count: k), needle) else { return nil }
                var v = i + k + 1
                while v < end && (base[v] == 32 || base[v] == 9) { v += 1 }
                return v..<end
            }
            var i = 0
            while i < n && (ra == nil || rb == nil) {
                let end = memchr(base + i, 13, n - i).map { UnsafeRawPointer($0) - UnsafeRawPointer(base) } ?? n
                if ra == nil { ra = match(na, i, end) }
                if rb == nil { rb = match(nb, i, end) }
                i = end + 2
            }
            return (ra, rb)
        }
    }

    /// The value at `r` (from `valueRanges`).
    public func value(at r: Range<Int>) -> String {
        block.withUnsafeBufferPointer { String(decoding: UnsafeBufferPointer(rebasing: $0[r]), as: UTF8.self) }
    }

    /// Whether a line named `name` is present (no String made for its value).
    public func contains(_ name: StaticString) -> Bool {
        block.withUnsafeBufferPointer { p in
            HTTPHeaders.valueRange(in: p, of: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount)) != nil
        }
    }

    /// Whether the first value of `name` is exactly `value` (bytes compared, no String made).
    public func hasValue(_ name: StaticString, _ value: StaticString) -> Bool {
        block.withUnsafeBufferPointer { p in
            let needle = UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount)
            guard let r = HTTPHeaders.valueRange(in: p, of: needle), r.count == value.utf8CodeUnitCount else { return false }
            return r.isEmpty || memcmp(p.baseAddress! + r.lowerBound, value.utf8Start, r.count) == 0
        }
    }

    /// The first value of `name` read as `Int(String)` reads a decimal integer (an optional sign,
    /// then digits only; nil when it is not one or overflows), without making the String.
    public func integer(_ name: StaticString) -> Int? {
        block.withUnsafeBufferPointer { p -> Int? in
            let needle = UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount)
            guard let r = HTTPHeaders.valueRange(in: p, of: needle) else { return nil }
            return HTTPHeaders.decimal(UnsafeBufferPointer(rebasing: p[r]))
        }
    }

    static func decimal(_ d: UnsafeBufferPointer<UInt8>) -> Int? {
        var i = 0
        var negative = false
        if let first = d.first, first == UInt8(ascii: "+") || first == UInt8(ascii: "-") {
            negative = first == UInt8(ascii: "-")
            i = 1
        }
        guard i < d.count else { return nil }
        var v = 0
        while i < d.count {
            let c = d[i]
            guard c >= 48 && c <= 57 else { return nil }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = negative ? m.subtractingReportingOverflow(Int(c - 48)) : m.addingReportingOverflow(Int(c - 48))
            guard !o1 && !o2 else { return nil }
            v = a
            i += 1
        }
        return v
    }

    /// Calls `body(name, value)` per line until it returns false.
    private func forEachLine(_ body: (UnsafeBufferPointer<UInt8>, UnsafeBufferPointer<UInt8>) -> Bool) {
        block.withUnsafeBufferPointer { p in
            let n = p.count
            var i = 0
            while i < n {
                var colon = i
                while colon < n && p[colon] != UInt8(ascii: ":") { colon += 1 }
                var end = colon
                while end < n && p[end] != 13 { end += 1 }
                var v = min(colon + 1, end)
                while v < end && (p[v] == 32 || p[v] == 9) { v += 1 }
                let name = UnsafeBufferPointer(rebasing: p[i..<colon])
                let value = UnsafeBufferPointer(rebasing: p[v..<end])
                if !body(name, value) { return }
                i = end + 2
            }
        }
    }
}

@inline(__always)
func asciiCaseEqual(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> Bool {
    guard a.count == b.count else { return false }
    for i in 0..<a.count {
        var x = a[i], y = b[i]
        if x >= 65 && x <= 90 { x += 32 }
        if y >= 65 && y <= 90 { y += 32 }
        if x != y { return false }
    }
    return true
}

/// True when `p` holds a CR or LF (memchr: the common case, none, costs two vector scans).
@inline(__always)
func hasLineBreak(_ p: UnsafeBufferPointer<UInt8>) -> Bool {
    guard let b = p.baseAddress, p.count > 0 else { return false }
    return memchr(b, 13, p.count) != nil || memchr(b, 10, p.count) != nil
}

/// Turns CR and LF from `start` on into spaces, so a value cannot end its header line early.
func replaceLineBreaks(_ a: inout [UInt8], from start: Int) {
    for i in start..<a.count where a[i] == 13 || a[i] == 10 { a[i] = UInt8(ascii: " ") }
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
    public var path: Substring { Self.path(of: target) }

    /// `target`'s path: the part before the query string.
    public static func path(of target: String) -> Substring {
        // Byte search over the UTF-8 buffer (the UTF8View's own firstIndex costs ~30 instructions
        // a byte; Character-based search more).
        var t = target
        guard let q = t.withUTF8({ $0.firstIndex(of: UInt8(ascii: "?")) }) else { return target[...] }
        return target[..<target.utf8.index(target.utf8.startIndex, offsetBy: q)]
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
public func evbufferAppend(_ buf: OpaquePointer, _ bytes: UnsafeRawBufferPointer) {
    _ = evbuffer_add(buf, bytes.baseAddress, bytes.count)
}

/// Method name for http_parser's numeric method.
func httpMethodName(_ m: UInt32) -> String {
    switch http_method(rawValue: m) {
    case HTTP_GET: return "GET"
    case HTTP_POST: return "POST"
    default: return String(cString: http_method_str(http_method(rawValue: m)))
    }
}

/// Byte-array forms of the writers above, for heads composed before one writev.
@inline(__always)
func appendASCII(_ out: inout [UInt8], _ s: StaticString) {
    out.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
}

@inline(__always)
func appendString(_ out: inout [UInt8], _ s: String) {
    var s = s
    s.withUTF8 { out.append(contentsOf: $0) }
}

func appendDecimal(_ out: inout [UInt8], _ value: Int) {
    var v = UInt(max(0, value))
    // The digits from the last, on the stack, then one typed copy (a slice of raw bytes went
    // through the generic sequence copy).
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { p in
        var i = p.count
        repeat {
            i -= 1
            p[i] = UInt8(truncatingIfNeeded: 48 &+ v % 10)
            v /= 10
        } while v > 0
        out.append(contentsOf: UnsafeBufferPointer(rebasing: p[i...]))
    }
}

/// A non-negative integer's decimal digits at `p` (room for 20); returns how many.
func writeDecimal(_ value: Int, to p: UnsafeMutableRawPointer) -> Int {
    var v = UInt(max(0, value))
    var count = 1
    var t = v
    while t >= 10 {
        t /= 10
        count += 1
    }
    var i = count
    repeat {
        i -= 1
        p.storeBytes(of: UInt8(truncatingIfNeeded: 48 + v % 10), toByteOffset: i, as: UInt8.self)
        v /= 10
    } while v > 0
    return count
}

/// "HTTP/1.1 <status> <reason>\r\n".
func appendStatusLine(_ out: inout [UInt8], _ status: Int) {
    // Nearly every response: one copy of a literal, no digits or reason looked up.
    if status == 200 { return appendASCII(&out, "HTTP/1.1 200 OK\r\n") }
    appendASCII(&out, "HTTP/1.1 ")
    appendDecimal(&out, status)
    out.append(UInt8(ascii: " "))
    appendString(&out, reasonPhrase(status))
    appendASCII(&out, "\r\n")
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

/// Collects header fields from http-parser's on_header_field / on_header_value callbacks (either
/// may arrive in pieces) straight into wire-form lines. Shared by the server and client connections.
///
/// Runs (`collectsRuns`, what both connections use; without it each piece is copied, the
/// reference the tests compare with): the parser reports pieces of its input, and a request's
/// header section usually lies there in exactly the form the block takes (`name: value` lines
/// ending in CRLF). Pieces separated in the input by exactly what the block would put between
/// them (`: ` after a name, CRLF after a value) are kept as one pointer range and copied in one
/// append when something else comes, at `finish()`, or at `endOfInput()` — which the owner must
/// call after each parser call, before the input goes away. The block is byte for byte what
/// copying each piece gives (~300 instructions less a header line).
struct HeaderAccumulator {
    private var block: [UInt8] = []
    private var inValue = false
    private var lineOpen = false
    var collectsRuns = false

    init(collectsRuns: Bool = false) { self.collectsRuns = collectsRuns }
    /// The run not yet copied: parser input, valid until the parser call returns.
    private var runStart: UnsafePointer<UInt8>?
    private var runEnd: UnsafePointer<UInt8>?

    mutating func reset() {
        block.removeAll(keepingCapacity: true)
        inValue = false
        lineOpen = false
        runStart = nil
        runEnd = nil
    }

    /// `reset()`, taking over the storage of `last` (the headers this accumulator finished
    /// before): when the message they belonged to is gone, the next one is collected into the
    /// same buffer instead of a new allocation per message. Still held elsewhere, they keep it
    /// (emptying a shared array gives this one fresh storage).
    mutating func reset(reusing last: inout HTTPHeaders) {
        if block.capacity == 0 { block = last.takeBlock() }
        reset()
    }

    /// Copies the run into the block: the parser's input it points into is about to go.
    mutating func endOfInput() {
        guard let s = runStart, let e = runEnd else { return }
        if block.isEmpty { block.reserveCapacity(512) }
        block.append(contentsOf: UnsafeBufferPointer(start: s, count: e - s))
        runStart = nil
        runEnd = nil
    }

    /// Whether the run ends two bytes before `p`, and those two bytes are `a`, `b`.
    private func runEnds(before p: UnsafePointer<UInt8>, with a: UInt8, _ b: UInt8) -> Bool {
        guard let e = runEnd else { return false }
        return p == e + 2 && e[0] == a && e[1] == b
    }

    mutating func field(_ at: UnsafePointer<CChar>, _ len: Int) {
        let p = UnsafeRawPointer(at).assumingMemoryBound(to: UInt8.self)
        if inValue {
            inValue = false
            lineOpen = true
            if runEnds(before: p, with: 13, 10) {
                runEnd = p + len
                return
            }
            endOfInput()
            block.append(13)
            block.append(10)
        }
        lineOpen = true
        if collectsRuns {
            endOfInput()
            runStart = p
            runEnd = p + len
            return
        }
        if block.isEmpty { block.reserveCapacity(512) }
        block.append(contentsOf: UnsafeBufferPointer(start: p, count: len))
    }

    mutating func value(_ at: UnsafePointer<CChar>, _ len: Int) {
        let p = UnsafeRawPointer(at).assumingMemoryBound(to: UInt8.self)
        let piece = UnsafeBufferPointer(start: p, count: len)
        // A folded (obs-fold) value must not break the line structure: such a piece is copied
        // and cleaned, never part of a run.
        let breaks = hasLineBreak(piece)
        if !inValue {
            if !lineOpen { return }  // a value without a name: http-parser never does this
            inValue = true
            if !breaks && runEnds(before: p, with: UInt8(ascii: ":"), UInt8(ascii: " ")) {
                runEnd = p + len
                return
            }
            endOfInput()
            block.append(UInt8(ascii: ":"))
            block.append(UInt8(ascii: " "))
        }
        if collectsRuns && !breaks {
            endOfInput()
            runStart = p
            runEnd = p + len
            return
        }
        endOfInput()
        let start = block.count
        block.append(contentsOf: piece)
        if breaks { replaceLineBreaks(&block, from: start) }
    }

    /// The headers so far; the accumulator is empty afterwards.
    mutating func finish() -> HTTPHeaders {
        endOfInput()
        if lineOpen {
            if !inValue { block.append(contentsOf: [UInt8(ascii: ":"), UInt8(ascii: " ")]) }
            block.append(13)
            block.append(10)
        }
        inValue = false
        lineOpen = false
        let h = HTTPHeaders(block: block)
        block = []
        return h
    }
}

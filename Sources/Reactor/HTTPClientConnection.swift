// HTTPClientConnection: one nonblocking upstream connection (StreamSocket + http-parser in
// response mode), one exchange at a time, kept alive for reuse by HTTPClientPool. The upstream is
// untrusted: responses are framed strictly (ResponseFramingCheck), interim 1xx are skipped, and a
// connection that has seen a byte it cannot place is closed, never reused.
// Owns: the StreamSocket (and fd), freed in close(); parks in loop.bury afterwards, with the socket
// (style E.3). An open connection keeps itself alive (`selfRef`, as HTTPServerConnection does), so
// it and its socket are never freed inside one of their callbacks, whoever lets go of them there:
// the socket's events borrow the socket, and the parser's callbacks borrow the connection.
// The delegate is the request driver during an exchange and the pool while idle.
import CEventShim

#if canImport(Glibc)
import Glibc
#endif

public protocol HTTPClientConnectionDelegate: AnyObject {
    func upstream(_ c: HTTPClientConnection, didReceiveHead status: Int, headers: HTTPHeaders)
    /// De-chunked body bytes, valid only during the call.
    func upstream(_ c: HTTPClientConnection, didReceiveBody bytes: UnsafeRawBufferPointer)
    func upstreamDidFinish(_ c: HTTPClientConnection)
    func upstream(_ c: HTTPClientConnection, didFail failure: HTTPClientFailure)
}

/// A resolved upstream address.
public struct Endpoint: Sendable, Equatable, Hashable {
    public let host: String
    public let port: Int
    /// Path prefix from the instance URL ("" or "/something"), no trailing slash.
    public let basePath: String
    fileprivate let addr: [UInt8]

    /// Resolves once (blocking getaddrinfo): call at start-up, never on the data path.
    public init?(host: String, port: Int, basePath: String = "") {
        self.host = host
        self.port = port
        self.basePath = basePath
        self.hostHeader = port == 80 ? host : (host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)")
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &res) == 0, let r = res else { return nil }
        defer { freeaddrinfo(res) }
        // Prefer IPv4 for localhost-style names (vLLM binds 0.0.0.0 by default).
        var pick = r
        var cur: UnsafeMutablePointer<addrinfo>? = r
        while let c = cur {
            if c.pointee.ai_family == AF_INET { pick = c; break }
            cur = c.pointee.ai_next
        }
        addr = Array(UnsafeRawBufferPointer(start: pick.pointee.ai_addr, count: Int(pick.pointee.ai_addrlen)))
    }

    /// The Host header value, built once.
    public let hostHeader: String
}

// STYLE-EXCEPTION: a process-wide constant pointer; written once here, read-only afterwards.
nonisolated(unsafe) private let clientSettings: UnsafeMutablePointer<http_parser_settings> = {
    let s = UnsafeMutablePointer<http_parser_settings>.allocate(capacity: 1)
    s.initialize(to: http_parser_settings())
    s.pointee.on_header_field = { p, at, len in HTTPClientConnection.with(p) { $0.onHeaderField(at!, len) } }
    s.pointee.on_header_value = { p, at, len in HTTPClientConnection.with(p) { $0.onHeaderValue(at!, len) } }
    s.pointee.on_headers_complete = { p in HTTPClientConnection.with(p) { $0.onHeadersComplete() } }
    s.pointee.on_body = { p, at, len in HTTPClientConnection.with(p) { $0.onBody(at!, len) } }
    s.pointee.on_chunk_header = { p in HTTPClientConnection.with(p) { $0.onChunkHeader() } }
    s.pointee.on_message_complete = { p in HTTPClientConnection.with(p) { $0.onMessageComplete() } }
    return s
}()

public final class HTTPClientConnection: StreamSocketDelegate {
    public let loop: Loop
    public let endpoint: Endpoint
    /// Strong: the driver of the current exchange (or the pool while idle). The driver lets go
    /// when its exchange ends (the pool takes over, or it clears this and closes), and a closed
    /// connection is freed after the loop pass (graveyard), which breaks any cycle with a driver
    /// that holds it. No weak reference: those cost a side table and slower reference counting.
    public var delegate: HTTPClientConnectionDelegate?
    /// Read by the lifetime tests (their socket must outlive its callback).
    private(set) var sock: StreamSocket?
    // Heap-allocated: callbacks read it while http_parser_execute holds it (no inout access).
    private let parser = UnsafeMutablePointer<http_parser>.allocate(capacity: 1)

    public private(set) var isConnected = false
    public private(set) var isClosed = false
    /// Exchanges completed on this connection (a reused connection may have been closed by the peer).
    public private(set) var exchangesCompleted = 0
    public private(set) var inExchange = false
    /// The final (non-1xx) head has been handed to the delegate.
    private var gotHead = false
    /// A head's lines, collected as runs of the parser's input (HeaderAccumulator, as the server's):
    /// copied at the end of each parser call (`parse`), before that input is drained.
    private var headerFields = HeaderAccumulator(collectsRuns: true)
    /// The last head's headers, whose buffer the next response reuses once the delegate let go.
    private var lastHeaders = HTTPHeaders()
    /// The final head's Content-Length as http-parser read it (nil: none, or a chunked body),
    /// set before the delegate hears of the head: a driver that wants only the length reads it
    /// here instead of looking the header up in the head's lines again.
    public private(set) var declaredContentLength: Int?
    private var messageDone = false
    private var reusable = false
    /// The response broke the framing: the exchange fails with `.malformed`.
    private var isMalformed = false

    // Per response (an interim 1xx and the final answer are separate responses).
    private var framing = ResponseFramingCheck()
    /// Start of the bytes `framing` has not seen yet, in the buffer http_parser_execute runs over.
    private var scanFrom: UnsafeRawPointer?
    private var headStatus = 0
    private var isChunked = false
    private var interimResponses = 0
    /// Go's net/http gives up after 5 interim responses too: an endless stream of 1xx would
    /// otherwise hold the exchange open without ever sending a byte the driver sees.
    private static let maxInterimResponses = 5
    /// Why the parser paused (it pauses at every head and at the end of every response, so the
    /// checks run between responses and the head reaches the delegate outside a parser callback).
    private enum Pause { case head, interimEnd, end }
    private var pausedAt = Pause.end

    public init(loop: Loop, endpoint: Endpoint) {
        self.loop = loop
        self.endpoint = endpoint
        http_parser_init(parser, HTTP_RESPONSE)
        sock = StreamSocket.connecting(loop: loop, addr: endpoint.addr, delegate: self)
        if sock == nil { pendingConnectFailure = true }
        selfRef = self
    }

    /// An open connection keeps itself alive; close() drops this (after parking in the graveyard).
    /// Every user closes its connection (the pool, an exchange's driver, a fetch): one let go of
    /// without close() is kept, as its delegate (strong) would keep it anyway.
    private var selfRef: HTTPClientConnection?

    /// A connection over a socket that is connected already (the fuzz target's socketpair,
    /// Sources/fuzz-engine): no connect step, and `endpoint` only names the Host header.
    public init(loop: Loop, endpoint: Endpoint, connectedSocket fd: Int32) {
        self.loop = loop
        self.endpoint = endpoint
        http_parser_init(parser, HTTP_RESPONSE)
        let so = StreamSocket(loop: loop, fd: fd, delegate: self)
        sock = so
        isConnected = true
        so.enableRead()
        selfRef = self
    }

    /// A connect that failed synchronously is reported when the request is sent, through a
    /// zero-delay timer, so the delegate never hears of it inside its own call to send().
    private var pendingConnectFailure = false
    private var failTimer: Timer?

    deinit {
        sock?.close()
        parser.deallocate()
    }

    /// Calls `body` with the connection behind a parser, without a retain/release pair per
    /// callback: the connection outlives every http_parser_execute it runs (it holds the parser).
    @inline(__always)
    fileprivate static func with(_ p: UnsafeMutablePointer<http_parser>?, _ body: (HTTPClientConnection) -> Int32) -> Int32 {
        Unmanaged<HTTPClientConnection>.fromOpaque(p!.pointee.data)._withUnsafeGuaranteedRef(body)
    }

    /// Sends one request whose fixed header lines come prebuilt (`headerBlock`: "name: value\r\n"…)
    /// plus one per-request header. Nothing is allocated for the head.
    /// The head up to the per-request header's value is the same for every request of one kind a
    /// connection sends (method, target, host, the backend's fixed lines, the name): kept from the
    /// last one when it matches, so a request appends only its value and length (each append cost
    /// ~70 instructions, a head took a dozen).
    public func send(method: StaticString, path: String, headerBlock: [UInt8], name: StaticString, value: String,
                     body: UnsafeRawBufferPointer) {
        guard beginExchange(), let sock else { return }
        if let p = headPrefix, p.method == method.utf8Start, p.name == name.utf8Start, p.path == path,
           p.headerBlock == headerBlock {
            headBuffer.removeLast(headBuffer.count - p.count)
        } else {
            headBuffer.removeAll(keepingCapacity: true)
            appendASCII(&headBuffer, method)
            appendTargetAndHost(path)
            headBuffer.append(contentsOf: headerBlock)
            appendASCII(&headBuffer, name)
            appendASCII(&headBuffer, ": ")
            headPrefix = HeadPrefix(method: method.utf8Start, name: name.utf8Start, path: path, headerBlock: headerBlock,
                                    count: headBuffer.count)
        }
        appendString(&headBuffer, value)
        // The value's line end and the length's line in one literal (each append costs ~40).
        appendASCII(&headBuffer, "\r\ncontent-length: ")
        endHeadAndWrite(sock, body: body, lengthNamed: true)
    }

    /// What the start of `headBuffer` holds (nil: not a prefix `send(method:path:headerBlock:…)`
    /// can reuse). The method and name are literals: their addresses name them.
    private struct HeadPrefix {
        let method: UnsafePointer<UInt8>
        let name: UnsafePointer<UInt8>
        let path: String
        let headerBlock: [UInt8]
        let count: Int
    }
    private var headPrefix: HeadPrefix?

    /// Sends one request (health checks, metrics polls, /tokenize).
    public func send(method: String, path: String, headers: HTTPHeaders, body: UnsafeRawBufferPointer?) {
        guard beginExchange(), let sock else { return }
        headPrefix = nil
        headBuffer.removeAll(keepingCapacity: true)
        appendString(&headBuffer, method)
        appendTargetAndHost(path)
        headBuffer.append(contentsOf: headers.block)
        endHeadAndWrite(sock, body: body)
    }

    /// Reused for every request head on this connection.
    private var headBuffer: [UInt8] = []

    /// Resets the response parser for a new exchange; false when closed (a connection that is
    /// still connecting queues the request until it is up).
    private func beginExchange() -> Bool {
        guard !isClosed else { return false }
        precondition(!inExchange, "one exchange at a time")
        inExchange = true
        gotHead = false
        messageDone = false
        isMalformed = false
        interimResponses = 0
        startMessage()
        http_parser_init(parser, HTTP_RESPONSE)
        parser.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        if sock == nil { scheduleConnectFailureIfNeeded() }
        return sock != nil
    }

    /// " <base path><path> HTTP/1.1\r\nhost: <host>\r\n" after the method.
    private func appendTargetAndHost(_ path: String) {
        headBuffer.append(UInt8(ascii: " "))
        if !endpoint.basePath.isEmpty { appendString(&headBuffer, endpoint.basePath) }
        appendString(&headBuffer, path)
        appendASCII(&headBuffer, " HTTP/1.1\r\nhost: ")
        appendString(&headBuffer, endpoint.hostHeader)
        appendASCII(&headBuffer, "\r\n")
    }

    /// content-length (when there is a body; `lengthNamed`: its name is written already) and the
    /// blank line, then one writev of head and body with no copy of the body (queued instead while
    /// connecting).
    private func endHeadAndWrite(_ sock: StreamSocket, body: UnsafeRawBufferPointer?, lengthNamed: Bool = false) {
        if let body {
            if !lengthNamed { appendASCII(&headBuffer, "content-length: ") }
            appendDecimal(&headBuffer, body.count)
            appendASCII(&headBuffer, "\r\n\r\n")
        } else {
            appendASCII(&headBuffer, "\r\n")
        }
        headBuffer.withUnsafeBytes { sock.write($0, body ?? UnsafeRawBufferPointer(start: nil, count: 0)) }
        scheduleConnectFailureIfNeeded()
    }

    private func scheduleConnectFailureIfNeeded() {
        if pendingConnectFailure {
            pendingConnectFailure = false
            let t = Timer(loop: loop)
            t.onFire = { [unowned self] in self.failTimer?.close(); self.fail(.connectFailed) }
            t.schedule(after: .zero)
            failTimer = t
        }
    }

    /// Stops reading from the upstream (client backpressure).
    public func pauseReading() { sock?.disableRead() }
    public func resumeReading() { if inExchange { sock?.enableRead() } }

    func socketConnected(error: Int32) {
        if error != 0 { fail(.connectFailed); return }
        isConnected = true
        sock?.enableRead()
    }

    func socketReadable(eof: Bool) {
        if eof { onEOF(); return }
        onReadable()
    }

    func socketReceived(_ bytes: UnsafeRawBufferPointer) {
        guard sock != nil else { return }
        if !inExchange { strayBytes(); return }
        // Parsed in place (body bytes reach the delegate straight from the read buffer). Bytes
        // left over are never kept: the exchange is over or broken, and the connection closes.
        let n = parse(bytes)
        endOfParse(bytesLeft: n < bytes.count)
    }

    func socketDrained() {}
    func socketFailed(error: Int32) { fail(isConnected || exchangesCompleted > 0 ? .closed(receivedHead: gotHead) : .connectFailed) }

    private func onReadable() {
        guard let sock else { return }
        let input = sock.input
        if !inExchange { strayBytes(); return }
        while evbuffer_get_length(input) > 0 {
            var iov = iovec()
            guard evbuffer_peek(input, -1, nil, &iov, 1) > 0 else { break }
            let n = parse(UnsafeRawBufferPointer(start: iov.iov_base, count: iov.iov_len))
            if isClosed { return }  // the delegate closed us; `input` is gone
            evbuffer_drain(input, n)
            if messageDone || isMalformed { break }
        }
        endOfParse(bytesLeft: evbuffer_get_length(input) > 0)
    }

    /// Runs http-parser over `bytes` until they are used up, the final response ends
    /// (`messageDone`), or the response is malformed (`isMalformed`); returns the bytes consumed.
    /// The delegate may close the connection meanwhile (`isClosed`).
    private func parse(_ bytes: UnsafeRawBufferPointer) -> Int {
        var used = 0
        while used < bytes.count {
            let start = bytes.baseAddress! + used
            scanFrom = UnsafeRawPointer(start)
            let n = http_parser_execute(parser, clientSettings, start.assumingMemoryBound(to: CChar.self), bytes.count - used)
            headerFields.endOfInput()  // the runs point into `bytes`, which the caller may drain
            if isClosed { return used + n }
            let err = ces_http_errno(parser)
            let rest = UnsafeRawBufferPointer(start: scanFrom, count: scanFrom!.distance(to: start + n))
            guard err == HPE_OK.rawValue || err == HPE_PAUSED.rawValue, !isMalformed, framing.accept(rest) else {
                isMalformed = true
                return used + n
            }
            used += n
            // Not paused, the parser took everything (it stops short only for an upgrade, refused at the head).
            guard err == HPE_PAUSED.rawValue else {
                if used < bytes.count { isMalformed = true }
                return used
            }
            http_parser_pause(parser, 0)
            switch pausedAt {
            case .head:
                // The parser stopped on the head's last byte (the blank line's LF) and takes it
                // on resume: check it now, so a head the framing refuses never goes out. (A head
                // whose read ends just before it is checked with the next read, after delivery.)
                if used < bytes.count && !framing.accept(UnsafeRawBufferPointer(start: start + n, count: 1)) {
                    isMalformed = true
                    return used
                }
                deliverHead()
                if isClosed { return used }
            case .interimEnd:
                startMessage()
            case .end:
                return used
            }
        }
        return used
    }

    /// After a parse: fail a malformed exchange, or finish a complete one.
    private func endOfParse(bytesLeft: Bool) {
        if isClosed { return }
        if isMalformed { fail(.malformed); return }
        guard messageDone else { return }
        // Bytes after the end of the response (a second response, junk): this exchange has its
        // answer, but the connection is out of step and must never carry another request.
        if bytesLeft { reusable = false }
        finishExchange()
    }

    /// Bytes on an idle connection: the peer is out of step (a late second response, junk), so
    /// the connection goes; the pool (the delegate while idle) forgets it.
    private func strayBytes() {
        close()
        delegate?.upstream(self, didFail: .malformed)
    }

    private func startMessage() {
        framing.startMessage()
        headStatus = 0
        isChunked = false
        headerFields.reset(reusing: &lastHeaders)
    }

    /// A final head goes to the delegate; an interim one (100, 102, 103) is dropped (RFC 9110
    /// §15.2: a client must be able to parse one or more unexpected 1xx before the final answer).
    private func deliverHead() {
        if headStatus < 200 { headerFields.reset(); return }
        gotHead = true
        // http-parser's count before any body byte: ULLONG_MAX without a Content-Length (it
        // refuses a malformed or conflicting one, and one beside chunked encoding).
        let n = parser.pointee.content_length
        declaredContentLength = n == UInt64.max ? nil : Int(clamping: n)
        lastHeaders = headerFields.finish()
        delegate?.upstream(self, didReceiveHead: headStatus, headers: lastHeaders)
    }

    private func finishExchange() {
        inExchange = false
        exchangesCompleted += 1
        // An idle connection keeps reading even if the driver paused it, so stray bytes and EOF
        // are seen while it waits in the pool rather than parsed as the next exchange's answer.
        if !reusable { close() } else { sock?.enableRead() }
        delegate?.upstreamDidFinish(self)
    }

    private func onEOF() {
        if inExchange && gotHead {
            // Body delimited by close: tell the parser.
            _ = http_parser_execute(parser, clientSettings, nil, 0)
            if messageDone && !isMalformed { reusable = false; finishExchange(); return }
        }
        fail(isConnected || exchangesCompleted > 0 ? .closed(receivedHead: gotHead) : .connectFailed)
    }

    /// Closes and tells the delegate (during an exchange the driver; while idle the pool).
    private func fail(_ f: HTTPClientFailure) {
        inExchange = false
        close()
        delegate?.upstream(self, didFail: f)
    }

    fileprivate func onHeaderField(_ at: UnsafePointer<CChar>, _ len: Int) -> Int32 {
        // Non-strict http-parser takes SP inside a field name ("Content-Length : 5" would name a
        // header "Content-Length " and frame the body by close instead).
        if memchr(at, 0x20, len) != nil { isMalformed = true; return -1 }
        headerFields.field(at, len)
        return 0
    }

    fileprivate func onHeaderValue(_ at: UnsafePointer<CChar>, _ len: Int) -> Int32 {
        headerFields.value(at, len)
        return 0
    }

    /// Pauses the parser so the head's bytes are checked before the delegate sees it.
    fileprivate func onHeadersComplete() -> Int32 {
        let status = Int(ces_http_status(parser))
        // http-parser takes any one-digit major version and any status up to 999. 101 would
        // switch protocols on a connection we pool: never a valid answer to our requests.
        guard parser.pointee.http_major == 1, (100...599).contains(status), status != 101 else {
            isMalformed = true
            return -1
        }
        if status < 200 {
            interimResponses += 1
            if interimResponses > Self.maxInterimResponses { isMalformed = true; return -1 }
        }
        headStatus = status
        pausedAt = .head
        http_parser_pause(parser, 1)
        // 1 = no body: 1xx, 204 and 304 end at the blank line whatever their headers say
        // (RFC 9112 §6.3); bytes after it belong to the next response.
        return status < 200 || status == 204 || status == 304 ? 1 : 0
    }

    fileprivate func onChunkHeader() -> Int32 {
        isChunked = true
        return 0
    }

    fileprivate func onBody(_ at: UnsafePointer<CChar>, _ len: Int) -> Int32 {
        // The framing before these bytes (a chunk-size line) is checked before they go out.
        let p = UnsafeRawPointer(at)
        guard framing.accept(UnsafeRawBufferPointer(start: scanFrom, count: scanFrom!.distance(to: p))) else {
            isMalformed = true
            return -1
        }
        scanFrom = p + len
        if isChunked && parser.pointee.content_length == 0 { framing.chunkEnded() }
        delegate?.upstream(self, didReceiveBody: UnsafeRawBufferPointer(start: at, count: len))
        return isClosed ? -1 : 0
    }

    fileprivate func onMessageComplete() -> Int32 {
        if headStatus < 200 {
            pausedAt = .interimEnd
        } else {
            reusable = http_should_keep_alive(parser) != 0
            messageDone = true
            pausedAt = .end
        }
        http_parser_pause(parser, 1)
        return 0
    }

    public func close() {
        guard !isClosed else { return }
        isClosed = true
        inExchange = false
        // The socket may be in its own callback (its events borrow it): parked too.
        if let s = sock {
            s.close()
            loop.bury(s)
        }
        sock = nil
        loop.bury(self)
        selfRef = nil
    }
}

/// Idle keep-alive connections to one endpoint. Not a pipeline stage: pure plumbing.
public final class HTTPClientPool: HTTPClientConnectionDelegate {
    public let loop: Loop
    public let endpoint: Endpoint
    public var maxIdle: Int
    private var idle: [HTTPClientConnection] = []
    public private(set) var opened = 0

    public init(loop: Loop, endpoint: Endpoint, maxIdle: Int = 256) {
        self.loop = loop
        self.endpoint = endpoint
        self.maxIdle = maxIdle
    }

    public var idleCount: Int { idle.count }

    /// An idle connection if any, else a new one (connecting).
    public func acquire() -> HTTPClientConnection {
        while let c = idle.popLast() {
            if !c.isClosed { c.delegate = nil; return c }
        }
        opened += 1
        return HTTPClientConnection(loop: loop, endpoint: endpoint)
    }

    /// Returns a connection whose exchange finished cleanly.
    public func release(_ c: HTTPClientConnection) {
        guard !c.isClosed, !c.inExchange, idle.count < maxIdle else { c.delegate = nil; c.close(); return }
        c.delegate = self
        idle.append(c)
    }

    public func closeAll() {
        for c in idle { c.close() }
        idle.removeAll()
    }

    public func upstream(_ c: HTTPClientConnection, didReceiveHead status: Int, headers: HTTPHeaders) {}
    public func upstream(_ c: HTTPClientConnection, didReceiveBody bytes: UnsafeRawBufferPointer) {}
    public func upstreamDidFinish(_ c: HTTPClientConnection) {}
    public func upstream(_ c: HTTPClientConnection, didFail failure: HTTPClientFailure) {
        idle.removeAll { $0 === c }
    }
}

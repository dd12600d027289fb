// HTTPClientConnection: one nonblocking upstream connection (StreamSocket + http-parser in
// response mode), one exchange at a time, kept alive for reuse by HTTPClientPool.
// Owns: the StreamSocket (and fd), freed in close(); parks in loop.bury afterwards (style E.3).
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
    private var sock: StreamSocket?
    // Heap-allocated: callbacks read it while http_parser_execute holds it (no inout access).
    private let parser = UnsafeMutablePointer<http_parser>.allocate(capacity: 1)

    public private(set) var isConnected = false
    public private(set) var isClosed = false
    /// Exchanges completed on this connection (a reused connection may have been closed by the peer).
    public private(set) var exchangesCompleted = 0
    public private(set) var inExchange = false
    private var gotHead = false
    private var headerFields = HeaderAccumulator()
    private var messageDone = false
    private var reusable = false

    public init(loop: Loop, endpoint: Endpoint) {
        self.loop = loop
        self.endpoint = endpoint
        http_parser_init(parser, HTTP_RESPONSE)
        sock = StreamSocket.connecting(loop: loop, addr: endpoint.addr, delegate: self)
        if sock == nil { pendingConnectFailure = true }
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
    public func send(method: StaticString, path: String, headerBlock: [UInt8], name: StaticString, value: String,
                     body: UnsafeRawBufferPointer) {
        guard beginExchange(), let sock else { return }
        headBuffer.removeAll(keepingCapacity: true)
        appendASCII(&headBuffer, method)
        appendTargetAndHost(path)
        headBuffer.append(contentsOf: headerBlock)
        appendASCII(&headBuffer, name)
        appendASCII(&headBuffer, ": ")
        appendString(&headBuffer, value)
        appendASCII(&headBuffer, "\r\n")
        endHeadAndWrite(sock, body: body)
    }

    /// Sends one request (health checks, metrics polls, /tokenize).
    public func send(method: String, path: String, headers: HTTPHeaders, body: UnsafeRawBufferPointer?) {
        guard beginExchange(), let sock else { return }
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
        headerFields.reset()
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

    /// content-length (when there is a body) and the blank line, then one writev of head and body
    /// with no copy of the body (queued instead while connecting).
    private func endHeadAndWrite(_ sock: StreamSocket, body: UnsafeRawBufferPointer?) {
        if let body {
            appendASCII(&headBuffer, "content-length: ")
            appendDecimal(&headBuffer, body.count)
            appendASCII(&headBuffer, "\r\n")
        }
        appendASCII(&headBuffer, "\r\n")
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
        guard let sock else { return }
        if !inExchange || isClosed {
            evbufferAppend(sock.input, bytes)
            onReadable()
            return
        }
        // Parsed in place (body bytes reach the delegate straight from the read buffer).
        let n = http_parser_execute(parser, clientSettings, bytes.baseAddress!.assumingMemoryBound(to: CChar.self), bytes.count)
        if isClosed { return }
        if n < bytes.count { evbufferAppend(sock.input, UnsafeRawBufferPointer(rebasing: bytes[n...])) }
        if messageDone { finishExchange(); return }
        if ces_http_errno(parser) != HPE_OK.rawValue || n < bytes.count { fail(.malformed) }
    }

    func socketDrained() {}
    func socketFailed(error: Int32) { fail(isConnected || exchangesCompleted > 0 ? .closed(receivedHead: gotHead) : .connectFailed) }

    private func onReadable() {
        guard let sock else { return }
        let input = sock.input
        if !inExchange {
            // Bytes on an idle connection: the peer misbehaves; drop the connection.
            close()
            delegate?.upstream(self, didFail: .malformed)
            return
        }
        while !isClosed && inExchange && evbuffer_get_length(input) > 0 {
            var iov = iovec()
            guard evbuffer_peek(input, -1, nil, &iov, 1) > 0 else { break }
            let n = http_parser_execute(parser, clientSettings, iov.iov_base.assumingMemoryBound(to: CChar.self), iov.iov_len)
            if isClosed { return }
            evbuffer_drain(input, n)
            if messageDone { finishExchange(); return }
            let err = ces_http_errno(parser)
            if err != HPE_OK.rawValue || n < iov.iov_len {
                fail(.malformed)
                return
            }
        }
    }

    private func finishExchange() {
        inExchange = false
        exchangesCompleted += 1
        if !reusable { close() }
        delegate?.upstreamDidFinish(self)
    }

    private func onEOF() {
        if inExchange && gotHead {
            // Body delimited by close: tell the parser.
            _ = http_parser_execute(parser, clientSettings, nil, 0)
            if messageDone { reusable = false; finishExchange(); return }
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
        headerFields.field(at, len)
        return 0
    }

    fileprivate func onHeaderValue(_ at: UnsafePointer<CChar>, _ len: Int) -> Int32 {
        headerFields.value(at, len)
        return 0
    }

    fileprivate func onHeadersComplete() -> Int32 {
        gotHead = true
        let status = Int(ces_http_status(parser))
        let h = headerFields.finish()
        delegate?.upstream(self, didReceiveHead: status, headers: h)
        return isClosed ? -1 : 0
    }

    fileprivate func onBody(_ at: UnsafePointer<CChar>, _ len: Int) -> Int32 {
        delegate?.upstream(self, didReceiveBody: UnsafeRawBufferPointer(start: at, count: len))
        return isClosed ? -1 : 0
    }

    fileprivate func onMessageComplete() -> Int32 {
        reusable = http_should_keep_alive(parser) != 0
        messageDone = true
        http_parser_pause(parser, 1)
        return 0
    }

    public func close() {
        guard !isClosed else { return }
        isClosed = true
        inExchange = false
        sock?.close()
        sock = nil
        loop.bury(self)
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

// HTTPServerConnection: one accepted client socket, HTTP/1.1 parsed by Debian's http-parser over
// a StreamSocket. Keep-alive, chunked request bodies and pipelining (one request at a time: the
// parser pauses after each message until its response is complete).
// Owns: the StreamSocket (and so the fd) and one Timer; both freed in close(), after which the
// object parks in loop.bury (style E.3). The timer serves one deadline (read or idle), kept lazily
// (see `deadline`). The delegate is the request driver; it is told about complete requests,
// failures, drained output and the peer's close.
// A response to HEAD is written as its head alone (RFC 9110 §9.3.2: the headers GET would get,
// Content-Length included, and no body), whatever the driver hands over.
import CEventShim

#if canImport(Glibc)
import Glibc
#endif

public protocol HTTPServerConnectionDelegate: AnyObject {
    /// A complete request (head and whole body). The delegate must answer it, in order.
    func connection(_ c: HTTPServerConnection, didReceive head: HTTPRequestHead, body: [UInt8])
    /// The same with the body as the connection holds it, valid only during the call (what the
    /// connection calls; by default it hands a copy to the method above). A delegate that often
    /// needs the bytes only briefly (the Frontend's cache hit: a hash and a length) takes them
    /// here and copies them only to keep them.
    func connection(_ c: HTTPServerConnection, didReceive head: HTTPRequestHead, bodyBytes: UnsafeRawBufferPointer)
    /// The connection could not produce a request; the delegate writes an error response
    /// (the connection closes after it is flushed).
    func connection(_ c: HTTPServerConnection, didFail failure: HTTPServerFailure)
    /// Output fell to the low-water mark after being above it.
    func connectionDidDrain(_ c: HTTPServerConnection)
    /// The peer went away (or the connection was closed); no more calls follow.
    func connectionDidClose(_ c: HTTPServerConnection)
}

extension HTTPServerConnectionDelegate {
    public func connection(_ c: HTTPServerConnection, didReceive head: HTTPRequestHead, bodyBytes: UnsafeRawBufferPointer) {
        connection(c, didReceive: head, body: Array(bodyBytes))
    }
}

// http_parser wants one settings struct with C function pointers; it is immutable after setup.
// STYLE-EXCEPTION: a process-wide constant pointer; written once here, read-only afterwards.
nonisolated(unsafe) private let serverSettings: UnsafeMutablePointer<http_parser_settings> = {
    let s = UnsafeMutablePointer<http_parser_settings>.allocate(capacity: 1)
    s.initialize(to: http_parser_settings())
    s.pointee.on_message_begin = { p in HTTPServerConnection.with(p) { $0.onMessageBegin() } }
    s.pointee.on_url = { p, at, len in HTTPServerConnection.with(p) { $0.onURL(at!, len) } }
    s.pointee.on_header_field = { p, at, len in HTTPServerConnection.with(p) { $0.onHeaderField(at!, len) } }
    s.pointee.on_header_value = { p, at, len in HTTPServerConnection.with(p) { $0.onHeaderValue(at!, len) } }
    s.pointee.on_headers_complete = { p in HTTPServerConnection.with(p) { $0.onHeadersComplete() } }
    s.pointee.on_body = { p, at, len in HTTPServerConnection.with(p) { $0.onBody(at!, len) } }
    s.pointee.on_message_complete = { p in HTTPServerConnection.with(p) { $0.onMessageComplete() } }
    return s
}()

public final class HTTPServerConnection: StreamSocketDelegate, LoopDeferred {
    public let loop: Loop
    /// Strong (no weak side table on the data path); dropped in close().
    public var delegate: HTTPServerConnectionDelegate?
    /// The request driver attached to this connection (kept alive by the connection).
    public var context: AnyObject?
    public let id: UInt64
    public let limits: HTTPServerLimits

    private var sock: StreamSocket?
    /// The same socket unretained, and its input buffer, for the per-request paths (reading a
    /// class reference out of `sock` retained and released it each time, ~40 instructions a use,
    /// five uses a request). Set and cleared with `sock`, so valid exactly while it is: a socket
    /// closed meanwhile is parked in the graveyard until the pass ends (see close()).
    private var sockRef: Unmanaged<StreamSocket>?
    private var input: OpaquePointer?
    // Heap-allocated: callbacks read it while http_parser_execute holds it (no inout access).
    private let parser = UnsafeMutablePointer<http_parser>.allocate(capacity: 1)
    private let timer: Timer
    /// When the read or idle timeout runs out (Loop.coarseNanos; 0: none, a response is awaited).
    /// Kept lazily: a keep-alive request moves it twice (the read timeout at its first byte, the
    /// idle timeout after its response) and clears it once, and moving the libevent timer each
    /// time (a heap removal and insertion) cost ~800 instructions a request. The timer is armed
    /// for at most `armNanos`, the shorter timeout, so it fires at or before any deadline set
    /// while it runs (both are at least that far ahead); firing before the deadline it re-arms
    /// for what is left, after a cleared one it stays off.
    private var deadline: UInt64 = 0
    private let readTimeoutNanos: UInt64
    private let idleTimeoutNanos: UInt64
    private let armNanos: UInt64

    // Request under construction.
    private var url: [UInt8] = []
    /// The target so far is exactly `lastTarget` (its one piece compared where the parser read
    /// it, not collected into `url`): a keep-alive client repeats its target.
    private var urlIsLastTarget = false
    private var headerFields = HeaderAccumulator(collectsRuns: true)
    private var pendingHeaders = HTTPHeaders()
    private var headerBytes = 0
    /// The request body is lent to the delegate where it lies (an array per request cost an
    /// allocation, its appends and its release on every hit). A body that the parser hands over
    /// in one piece, in the same input as the request's end (the usual case), stays in that
    /// input: `bodyPiece`, never copied. Only a body that spans inputs (or that `onReadable`
    /// drains before dispatching) is copied into `body`, allocated for that request and freed
    /// after it: an idle keep-alive connection holds no body memory.
    private var bodyPiece = UnsafeRawBufferPointer(start: nil, count: 0)
    private var body = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    /// The body's bytes so far, in `bodyPiece` or in `body`.
    private var bodyCount = 0
    /// The Content-Length, to size `body` once when a body must be copied.
    private var declaredBodyBytes = 0
    private var parseFailure: HTTPServerFailure?
    private var completed: HTTPRequestHead?
    private var messageInProgress = false
    private var lastTarget = ""

    /// A request was handed to the delegate and its response is not complete yet.
    public private(set) var isAwaitingResponse = false
    private var responseIsChunked = false
    /// The request being answered is a HEAD: bodies and chunks are not written.
    private var responseHasNoBody = false
    private var keepAliveAfterResponse = true
    private var closeWhenFlushed = false
    private var wantsDrainNotice = false
    public private(set) var isClosed = false
    /// Output above this asks the driver to pause its producer (see `isWriteBlocked`).
    public var writeHighWater = 256 * 1024
    private let writeLowWater = 64 * 1024

    public init(loop: Loop, fd: Int32, id: UInt64, limits: HTTPServerLimits) {
        self.loop = loop
        self.id = id
        self.limits = limits
        self.timer = Timer(loop: loop)
        readTimeoutNanos = limits.readTimeout.nanoseconds
        idleTimeoutNanos = limits.idleTimeout.nanoseconds
        armNanos = min(readTimeoutNanos, idleTimeoutNanos)
        http_parser_init(parser, HTTP_REQUEST)
        parser.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        let so = StreamSocket(loop: loop, fd: fd, delegate: self)
        so.lowWater = writeLowWater
        sock = so
        sockRef = Unmanaged.passUnretained(so)
        input = so.input
        so.enableRead()
        timer.onFire = { [unowned self] in self.onTimer() }
        setDeadline(after: idleTimeoutNanos)
        selfRef = self
    }
    /// An open connection keeps itself alive; close() drops this (after parking in the graveyard).
    private var selfRef: HTTPServerConnection?

    deinit {
        sock?.close()
        parser.deallocate()
        headBuffer.deallocate()
        body.deallocate()
    }

    /// Calls `body` with the connection behind a parser, without a retain/release pair per
    /// callback: the connection outlives every http_parser_execute it runs (it holds the parser).
    @inline(__always)
    fileprivate static func with(_ p: UnsafeMutablePointer<http_parser>?, _ body: (HTTPServerConnection) -> Int32) -> Int32 {
        Unmanaged<HTTPServerConnection>.fromOpaque(p!.pointee.data)._withUnsafeGuaranteedRef(body)
    }

    // MARK: reading

    /// Past this much unparsed input (a pipelining flood) reading pauses until the response is out.
    private var maxBufferedInput: Int { max(limits.maxBodyBytes + limits.maxHeaderBytes, 64 * 1024) }

    func socketReadable(eof: Bool) {
        if eof {
            // The peer is gone (a half-closed client is treated as gone, so its upstream request
            // is aborted). Bytes it sent before closing are not served.
            close()
            return
        }
        guard let sock else { return }
        if isAwaitingResponse {
            if evbuffer_get_length(sock.input) > maxBufferedInput { sock.disableRead() }
            return
        }
        onReadable()
    }

    func socketReceived(_ bytes: UnsafeRawBufferPointer) {
        guard let input else { return }  // closed
        if isAwaitingResponse || closeWhenFlushed {
            evbufferAppend(input, bytes)
            socketReadable(eof: false)
            return
        }
        // Parsed in place; what the parser leaves (a pipelined request after a complete one)
        // goes to `input` before the request is dispatched.
        let n = http_parser_execute(parser, serverSettings, bytes.baseAddress!.assumingMemoryBound(to: CChar.self), bytes.count)
        // The header lines collected as runs of `bytes` are copied before `bytes` go, and so is
        // a body piece unless its request is dispatched below, while `bytes` are still lent.
        headerFields.endOfInput()
        if completed == nil { keepBodyPiece() }
        if isClosed { return }
        if n < bytes.count { evbufferAppend(input, UnsafeRawBufferPointer(rebasing: bytes[n...])) }
        guard afterExecute(consumed: n, offered: bytes.count) else { return }
        onReadable()
    }

    func socketDrained() { onWritable() }
    func socketConnected(error: Int32) {}
    func socketFailed(error: Int32) { close() }

    private func onReadable() {
        guard !isClosed, let input else { return }
        inOnReadable = true
        defer { inOnReadable = false }
        while !isClosed && !isAwaitingResponse && !closeWhenFlushed && evbuffer_get_length(input) > 0 {
            var iov = iovec()
            guard evbuffer_peek(input, -1, nil, &iov, 1) > 0 else { break }
            let n = http_parser_execute(parser, serverSettings, iov.iov_base.assumingMemoryBound(to: CChar.self), iov.iov_len)
            headerFields.endOfInput()  // before the drain frees what its runs point into
            keepBodyPiece()  // the same: the request is dispatched after the drain
            if isClosed { return }
            evbuffer_drain(input, n)
            guard afterExecute(consumed: n, offered: iov.iov_len) else { return }
        }
    }

    /// After http_parser_execute took `n` of `len` bytes (the rest is in `input` already):
    /// dispatches a completed request, or fails the connection; false when parsing must stop.
    private func afterExecute(consumed n: Int, offered len: Int) -> Bool {
        if let head = completed {
            completed = nil
            http_parser_pause(parser, 0)
            dispatch(head)
            return true
        }
        let err = ces_http_errno(parser)
        if err != HPE_OK.rawValue || parseFailure != nil {
            let failure = parseFailure ?? (err == HPE_HEADER_OVERFLOW.rawValue
                ? .headersTooLarge : .malformed(String(cString: http_errno_description(http_errno(rawValue: err)))))
            fail(failure)
            return false
        }
        if n < len { fail(.malformed("parser stopped")); return false }
        return true
    }

    private func dispatch(_ head: HTTPRequestHead) {
        isAwaitingResponse = true
        keepAliveAfterResponse = head.keepAlive
        responseHasNoBody = head.method == "HEAD"
        deadline = 0
        let lent = bodyPiece.baseAddress != nil ? bodyPiece : UnsafeRawBufferPointer(start: body.baseAddress, count: bodyCount)
        delegate?.connection(self, didReceive: head, bodyBytes: lent)
        releaseBody()
    }

    private func fail(_ failure: HTTPServerFailure) {
        // Whatever the delegate answers is the last response on this connection.
        isAwaitingResponse = true
        keepAliveAfterResponse = false
        responseHasNoBody = false
        deadline = 0
        sock?.disableRead()
        delegate?.connection(self, didFail: failure)
        if !isClosed && isAwaitingResponse {
            // The delegate did not answer: close.
            close()
        }
    }

    fileprivate func onMessageBegin() -> Int32 {
        messageInProgress = true
        if !url.isEmpty { url.removeAll(keepingCapacity: true) }
        urlIsLastTarget = false
        headerFields.reset(reusing: &pendingHeaders)
        headerBytes = 0
        releaseBody()
        declaredBodyBytes = 0
        setDeadline(after: readTimeoutNanos)
        return 0
    }

    private func countHeader(_ len: Int) -> Bool {
        headerBytes += len
        if headerBytes > limits.maxHeaderBytes { parseFailure = .headersTooLarge; return false }
        return true
    }

    fileprivate func onURL(_ at: UnsafePointer<CChar>, _ len: Int) -> Int32 {
        guard countHeader(len) else { return 1 }
        let piece = UnsafeRawBufferPointer(start: at, count: len)
        if url.isEmpty && !urlIsLastTarget {
            // Borrowed in place (a `var` copy to call withUTF8 retained and released the String).
            let same = lastTarget.utf8.withContiguousStorageIfAvailable { $0.count == len && (len == 0 || memcmp($0.baseAddress!, at, len) == 0) }
            if same ?? lastTarget.utf8.elementsEqual(UnsafeRawBufferPointer(piece)) {
                urlIsLastTarget = true
                return 0
            }
        } else if urlIsLastTarget {
            // More of the target in a later read: what matched so far, then this.
            url.append(contentsOf: lastTarget.utf8)
            urlIsLastTarget = false
        }
        url.append(contentsOf: piece)
        return 0
    }

    fileprivate func onHeaderField(_ at: UnsafePointer<CChar>, _ len: Int) -> Int32 {
        guard countHeader(len) else { return 1 }
        headerFields.field(at, len)
        return 0
    }

    fileprivate func onHeaderValue(_ at: UnsafePointer<CChar>, _ len: Int) -> Int32 {
        guard countHeader(len) else { return 1 }
        headerFields.value(at, len)
        return 0
    }

    fileprivate func onHeadersComplete() -> Int32 {
        pendingHeaders = headerFields.finish()
        let cl = parser.pointee.content_length
        if cl != UInt64.max && cl > UInt64(limits.maxBodyBytes) {
            parseFailure = .bodyTooLarge
            return -1
        }
        if cl != UInt64.max && cl > 0 { declaredBodyBytes = Int(cl) }
        return 0
    }

    fileprivate func onBody(_ at: UnsafePointer<CChar>, _ len: Int) -> Int32 {
        if bodyCount + len > limits.maxBodyBytes { parseFailure = .bodyTooLarge; return 1 }
        if bodyCount == 0 {
            bodyPiece = UnsafeRawBufferPointer(start: at, count: len)
            bodyCount = len
            return 0
        }
        keepBodyPiece()
        if bodyCount + len > body.count { reserveBody(max(bodyCount + len, 2 * body.count)) }
        (body.baseAddress! + bodyCount).copyMemory(from: at, byteCount: len)
        bodyCount += len
        return 0
    }

    /// Copies a lent body piece into `body`, before the input it lies in goes.
    private func keepBodyPiece() {
        guard let p = bodyPiece.baseAddress else { return }
        bodyPiece = UnsafeRawBufferPointer(start: nil, count: 0)
        reserveBody(max(bodyCount, declaredBodyBytes))
        body.baseAddress!.copyMemory(from: p, byteCount: bodyCount)
    }

    /// Room for `n` body bytes, keeping the copied ones (`bodyCount`, none while `bodyPiece` is lent).
    private func reserveBody(_ n: Int) {
        guard n > body.count else { return }
        let grown = UnsafeMutableRawBufferPointer.allocate(byteCount: max(n, 1024), alignment: 16)
        if bodyCount > 0 && body.baseAddress != nil { grown.baseAddress!.copyMemory(from: body.baseAddress!, byteCount: bodyCount) }
        body.deallocate()
        body = grown
    }

    /// Forgets the body (a dispatched request's, or an unfinished one's) and frees its copy.
    private func releaseBody() {
        bodyPiece = UnsafeRawBufferPointer(start: nil, count: 0)
        bodyCount = 0
        if body.baseAddress != nil {
            body.deallocate()
            body = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        }
    }

    fileprivate func onMessageComplete() -> Int32 {
        messageInProgress = false
        // A keep-alive client usually asks for the same path again: reuse that String.
        if urlIsLastTarget {
            urlIsLastTarget = false
        } else {
            setLastTarget()
        }
        let head = HTTPRequestHead(
            method: httpMethodName(ces_http_method(parser)),
            target: self.lastTarget,
            headers: pendingHeaders,
            keepAlive: http_should_keep_alive(parser) != 0)
        completed = head
        http_parser_pause(parser, 1)
        return 0
    }

    /// `lastTarget` := the collected `url` (the same String kept when they are equal).
    private func setLastTarget() {
        var lastTarget = self.lastTarget
        // Compared with memcmp (a generic elementsEqual steps through both a byte at a time).
        let sameTarget = lastTarget.withUTF8 { t in
            t.count == url.count && (t.isEmpty || url.withUnsafeBufferPointer { memcmp(t.baseAddress!, $0.baseAddress!, t.count) == 0 })
        }
        if !sameTarget { self.lastTarget = String(decoding: url, as: UTF8.self) }
    }

    /// The client's address (`ip:port`, `[ip]:port`), read once per connection with getpeername;
    /// "-" when it cannot be read (the socket is already closed).
    public var peerAddress: String {
        if let a = cachedPeerAddress { return a }
        let a = sock.flatMap { SocketAddress.peer(of: $0.fd) } ?? "-"
        cachedPeerAddress = a
        return a
    }
    private var cachedPeerAddress: String?

    // MARK: writing

    public var pendingOutputBytes: Int { sock?.pendingOutput ?? 0 }

    /// True when the driver should stop producing until `connectionDidDrain`.
    public var isWriteBlocked: Bool {
        let blocked = pendingOutputBytes >= writeHighWater
        if blocked { wantsDrainNotice = true }
        return blocked
    }

    /// Status line and headers into `headBuffer`; `contentLength` nil = chunked.
    private func composeHead(status: Int, headers: HTTPHeaders, contentLength: Int?) {
        headers.block.withUnsafeBytes { composeHead(status: status, lines: $0, contentLength: contentLength) }
    }

    /// The same with the header lines (`name: value\r\n` each) as bytes. Copied piece by piece
    /// into raw memory: an Array append per piece (a uniqueness and capacity check each, and the
    /// length's digits) cost ~850 instructions a head.
    private func composeHead(status: Int, lines: UnsafeRawBufferPointer, contentLength: Int?) {
        // The status line is at most 9 + 20 + 1 + the longest reason (31) + 2 bytes; the rest
        // at most content-length (16 + 20 + 2), connection (19) and the blank line.
        let need = lines.count + 160
        if headBuffer.count < need {
            headBuffer.deallocate()
            headBuffer = .allocate(byteCount: max(need, 2 * headBuffer.count), alignment: 8)
        }
        let p = headBuffer.baseAddress!
        var n = 0
        func put(_ s: StaticString) {
            (p + n).copyMemory(from: s.utf8Start, byteCount: s.utf8CodeUnitCount)
            n += s.utf8CodeUnitCount
        }
        func put(_ b: UnsafeRawBufferPointer) {
            if let base = b.baseAddress, b.count > 0 { (p + n).copyMemory(from: base, byteCount: b.count) }
            n += b.count
        }
        if status == 200 {
            put("HTTP/1.1 200 OK\r\n")
        } else {
            put("HTTP/1.1 ")
            n += writeDecimal(status, to: p + n)
            put(" ")
            var reason = reasonPhrase(status)
            reason.withUTF8 { put(UnsafeRawBufferPointer($0)) }
            put("\r\n")
        }
        put(lines)
        if let length = contentLength {
            put("content-length: ")
            n += writeDecimal(length, to: p + n)
            put("\r\n")
        } else {
            put("transfer-encoding: chunked\r\n")
        }
        if !keepAliveAfterResponse { put("connection: close\r\n") }
        put("\r\n")
        headCount = n
    }
    /// Reused for every response head on this connection (allocated by the first, grown to the
    /// largest: a connection that never answers holds none); freed in deinit.
    private var headBuffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    /// The composed head's length in `headBuffer`.
    private var headCount = 0
    private var head: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: headBuffer.baseAddress, count: headCount) }

    /// A whole response with a Content-Length body: head and body leave in one writev, without
    /// copying the body.
    public func writeResponse(status: Int, headers: HTTPHeaders, body: UnsafeRawBufferPointer) {
        headers.block.withUnsafeBytes { writeResponse(status: status, headerLines: $0, body: body) }
    }

    /// The same with the header lines as bytes, `name: value\r\n` each, composed by the caller
    /// (who keeps CR and LF out of names and values, as HTTPHeaders does): a cache hit writes its
    /// few lines straight into a buffer it reuses, not into a new HTTPHeaders.
    public func writeResponse(status: Int, headerLines: UnsafeRawBufferPointer, body: UnsafeRawBufferPointer) {
        guard !isClosed, let sockRef else { return }
        composeHead(status: status, lines: headerLines, contentLength: body.count)
        let out = responseHasNoBody ? UnsafeRawBufferPointer(start: nil, count: 0) : body
        sockRef._withUnsafeGuaranteedRef { $0.write(head, out) }
        responseComplete()
    }

    public func writeResponse(status: Int, headers: HTTPHeaders, body: [UInt8]) {
        body.withUnsafeBytes { writeResponse(status: status, headers: headers, body: $0) }
    }

    /// Kernel send buffer for chunked (streamed) responses: with `writeHighWater` this bounds what
    /// a client that stops reading makes the Engine hold (docs/operations.md, "Slow clients").
    public static let streamKernelSendBuffer = 64 * 1024

    /// Starts a chunked response (SSE). The head and the end leave at the end of the current
    /// callback (StreamSocket.flushSoon), or with the next chunk, which is written at once: a stream
    /// whose head and events arrive in one upstream read costs two writevs, not three. (Deferring
    /// the chunks too made a reader with a 16 KiB receive window crawl at ~100-160 KB/s, with the
    /// kernel refusing writes between retransmission-paced progress — test_slow_reader_backpressure;
    /// why exactly is open, so chunks keep the immediate write.)
    public func writeChunkedHead(status: Int, headers: HTTPHeaders) {
        guard !isClosed else { return }
        responseIsChunked = true
        guard let sock else { return }
        sock.limitKernelSendBuffer(Self.streamKernelSendBuffer)
        composeHead(status: status, headers: headers, contentLength: nil)
        _ = evbuffer_add(sock.output, headBuffer.baseAddress, headCount)
        sock.flushSoon()
    }

    /// One chunk of a chunked response, written at once (with a head still queued) straight from
    /// `bytes`: copied only when the kernel does not take it whole.
    public func writeChunk(_ bytes: UnsafeRawBufferPointer) {
        withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: 1) { one in
            one.initializeElement(at: 0, to: bytes)
            writeChunk(parts: UnsafeBufferPointer(one))
        }
    }

    /// One chunk made of `parts` (in order), as `writeChunk`; nothing when they are empty.
    /// `last`: the response's last chunk, which ends it (`endChunked`) in the same write.
    public func writeChunk(parts: UnsafeBufferPointer<UnsafeRawBufferPointer>, last: Bool = false, close: Bool = false) {
        // Borrowed (a retain and a release per chunk otherwise): a socket closed meanwhile, by a
        // failed write, is parked in the graveyard until the pass ends (see close()).
        guard !isClosed, let sockRef = sock.map(Unmanaged.passUnretained) else { return }
        var total = 0
        for p in parts { total += p.count }
        if total > 0 && !responseHasNoBody {
            // "<size in hex>\r\n", the parts, "\r\n" (and "0\r\n\r\n" when last).
            var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
            withUnsafeMutableBytes(of: &digits) { d in
                var i = d.count - 2
                d[i] = 0x0D
                d[i + 1] = 0x0A
                var v = total
                repeat {
                    i -= 1
                    let x = v & 15
                    d[i] = UInt8(x < 10 ? 48 + x : 87 + x)
                    v >>= 4
                } while v > 0
                let size = UnsafeRawBufferPointer(rebasing: d[i...])
                let end = UnsafeRawBufferPointer(start: last ? chunkEnd : crlf, count: last ? 7 : 2)
                if parts.count == 1 {
                    // A read's events as one piece (the usual case): the three-piece write.
                    sockRef._withUnsafeGuaranteedRef { $0.write(size, parts[0], end) }
                    return
                }
                withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: parts.count + 2) { all in
                    all.initializeElement(at: 0, to: size)
                    for k in parts.indices { all.initializeElement(at: k + 1, to: parts[k]) }
                    all.initializeElement(at: parts.count + 1, to: end)
                    sockRef._withUnsafeGuaranteedRef { $0.write(parts: UnsafeBufferPointer(all)) }
                }
            }
            if last { finishChunked(close: close) }
        } else if last {
            endChunked(close: close)
        }
    }

    /// Ends a chunked response. `close` forces the connection closed after the flush.
    public func endChunked(close: Bool = false) {
        guard !isClosed, let sock else { return }
        if !responseHasNoBody { _ = evbuffer_add(sock.output, lastChunk, 5) }
        sock.flushSoon()
        finishChunked(close: close)
    }

    private func finishChunked(close: Bool) {
        guard !isClosed else { return }
        responseIsChunked = false
        if close { keepAliveAfterResponse = false }
        responseComplete()
    }

    private func responseComplete() {
        guard !isClosed else { return }
        isAwaitingResponse = false
        if !keepAliveAfterResponse {
            closeWhenFlushed = true
            if let sock {
                sock.disableRead()
                sock.lowWater = 0
            }
            if pendingOutputBytes == 0 { close() }
            return
        }
        pendingAtLastIdleCheck = 0
        setDeadline(after: idleTimeoutNanos)
        sockRef?._withUnsafeGuaranteedRef { $0.enableRead() }
        // Pipelined bytes already buffered: the next request starts after this pass, not inside
        // the stack of the driver that just completed this response (the loop in onReadable
        // continues by itself if we are inside it).
        if let input, evbuffer_get_length(input) > 0, !inOnReadable, !pipelineScheduled {
            pipelineScheduled = true
            loop.runSoon(self)
        }
    }
    private var pipelineScheduled = false
    private var inOnReadable = false

    public func runDeferred() {
        pipelineScheduled = false
        onReadable()
    }

    private func onWritable() {
        if closeWhenFlushed {
            if pendingOutputBytes == 0 { close() }
            return
        }
        if wantsDrainNotice {
            wantsDrainNotice = false
            delegate?.connectionDidDrain(self)
        }
    }

    /// The deadline `ns` from now; the timer is armed only when it is not running (see `deadline`).
    private func setDeadline(after ns: UInt64) {
        let now = Loop.coarseNanos()
        deadline = now.addingReportingOverflow(ns).overflow ? .max : now + ns
        if !timer.isArmed { armTimer(for: ns) }
    }

    private func armTimer(for ns: UInt64) {
        timer.schedule(after: .nanoseconds(Int64(clamping: min(ns, armNanos))))
    }

    private func onTimer() {
        guard deadline != 0 else { return }  // cleared since it was armed: stays off
        let now = Loop.coarseNanos()
        if now < deadline {
            // Armed before the deadline moved on (or the coarse clock lags the timer's): the
            // rest, at least a millisecond so that a lagging clock cannot make it spin.
            armTimer(for: max(deadline - now, 1_000_000))
            return
        }
        deadline = 0
        if messageInProgress && !isAwaitingResponse {
            fail(.readTimeout)
        } else if !isAwaitingResponse {
            // Not idle while the last response is still leaving: a slow reader keeps the
            // connection as long as it makes progress within each idle period.
            let pending = sock?.unsentBytes ?? 0
            if pending > 0 && pending != pendingAtLastIdleCheck {
                pendingAtLastIdleCheck = pending
                setDeadline(after: idleTimeoutNanos)
                return
            }
            close()
        }
    }
    private var pendingAtLastIdleCheck = 0

    /// Graceful drain: an idle connection closes now; a busy one closes after its current
    /// response (which then says `connection: close` if its head is not out yet).
    public func closeWhenIdle() {
        guard !isClosed else { return }
        keepAliveAfterResponse = false
        if !isAwaitingResponse && !messageInProgress { close() }
    }

    /// Closes now; the delegate hears `connectionDidClose` once.
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        timer.close()
        // The socket may be in its own callback (its events borrow it): parked too.
        if let s = sock {
            s.close()
            loop.bury(s)
        }
        sock = nil
        sockRef = nil
        input = nil
        let d = delegate
        delegate = nil
        loop.bury(self)
        selfRef = nil
        d?.connectionDidClose(self)
        context = nil
    }
}

// STYLE-EXCEPTION: immutable byte constants shared by every connection.
nonisolated(unsafe) private let crlf: UnsafeRawPointer = UnsafeRawPointer(("\r\n" as StaticString).utf8Start)
nonisolated(unsafe) private let lastChunk: UnsafeRawPointer = UnsafeRawPointer(("0\r\n\r\n" as StaticString).utf8Start)
/// A chunk's CRLF and the last chunk after it.
nonisolated(unsafe) private let chunkEnd: UnsafeRawPointer = UnsafeRawPointer(("\r\n0\r\n\r\n" as StaticString).utf8Start)

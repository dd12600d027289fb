// StreamSocket: a nonblocking TCP socket on the loop with an input and an output evbuffer.
// Why not bufferevent: it re-registers EV_WRITE with epoll around every write and asks FIONREAD
// before every read — four extra syscalls per proxied request. Here writes go out at once
// (`flush`, or `write` straight from the caller's memory) and EV_WRITE is armed only while bytes
// remain (Redis `beforesleep`, nginx); a read lands in the loop's scratch buffer and is parsed in
// place when nothing older is buffered.
// Owns: the fd, both events and both evbuffers, freed in close(). The delegate is unowned: the
// connection that owns this socket outlives it and calls close() first (style E.2).
// Lifetime under a callback: the read and write events borrow the socket (no retain per read).
// That is safe because a socket's owner (HTTPServerConnection, HTTPClientConnection) keeps itself
// alive until its close() (`selfRef`), and close() parks the socket in the loop's graveyard with
// itself (style E.3): a socket is never freed inside a callback of the pass that closed it.
import CEventShim

#if canImport(Glibc)
import Glibc
#endif

protocol StreamSocketDelegate: AnyObject {
    /// New bytes are in `input` (or the peer closed: `eof`, with the bytes read before it).
    func socketReadable(eof: Bool)
    /// Bytes just read while `input` was empty, in the loop's scratch buffer (valid only during
    /// the call): the delegate parses what it can in place and appends the rest to `input`.
    /// Saves an evbuffer chain and a copy per read in the common one-read-per-message case.
    func socketReceived(_ bytes: UnsafeRawBufferPointer)
    /// Output fell to or below the low-water mark after a write wait.
    func socketDrained()
    /// A nonblocking connect finished: errno 0 on success.
    func socketConnected(error: Int32)
    /// A read or write failed (reset, broken pipe).
    func socketFailed(error: Int32)
}

final class StreamSocket {
    let fd: Int32
    let input: OpaquePointer
    let output: OpaquePointer
    unowned(unsafe) var delegate: StreamSocketDelegate
    private var readEvent: OpaquePointer?
    private var writeEvent: OpaquePointer?
    private(set) var isReading = false
    private var isWriteArmed = false
    private var isConnecting = false
    private var pendingConnectError: Int32 = 0
    private(set) var isClosed = false
    var lowWater = 0
    static let readSize = Loop.readScratchSize
    /// The loop's scratch buffer (one per loop, so per thread): a read's bytes are copied into
    /// `input` before anything else can run on this loop.
    private let readScratch: UnsafeMutableRawPointer

    init(loop: Loop, fd: Int32, delegate: StreamSocketDelegate) {
        self.fd = fd
        self.delegate = delegate
        self.readScratch = loop.readScratch
        input = evbuffer_new()
        output = evbuffer_new()
        _ = evutil_make_socket_nonblocking(fd)
        _ = ces_set_nodelay(fd)
        let arg = Unmanaged.passUnretained(self).toOpaque()
        // Borrowed, not retained (see the header): a retain and a release per read otherwise.
        readEvent = event_new(loop.base, fd, Int16(EV_READ | EV_PERSIST), { _, _, arg in
            Unmanaged<StreamSocket>.fromOpaque(arg!)._withUnsafeGuaranteedRef { $0.onRead() }
        }, arg)
        writeEvent = event_new(loop.base, fd, Int16(EV_WRITE), { _, _, arg in
            Unmanaged<StreamSocket>.fromOpaque(arg!)._withUnsafeGuaranteedRef { $0.onWrite() }
        }, arg)
    }

    /// A new socket connecting to `addr` (sockaddr bytes); the delegate hears socketConnected.
    static func connecting(loop: Loop, addr: [UInt8], delegate: StreamSocketDelegate) -> StreamSocket? {
        let family = addr.withUnsafeBytes { $0.load(as: sa_family_t.self) }
        let fd = socket(Int32(family), Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        let s = StreamSocket(loop: loop, fd: fd, delegate: delegate)
        s.isConnecting = true
        let rc = addr.withUnsafeBytes { p in
            Glibc.connect(fd, p.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(p.count))
        }
        if rc != 0 && errno != EINPROGRESS { s.pendingConnectError = errno }
        if let w = s.writeEvent {
            if s.pendingConnectError != 0 {
                event_active(w, EV_WRITE, 0) // report on the next pass, never inside the caller
            } else {
                event_add(w, nil)
            }
            s.isWriteArmed = true
        }
        return s
    }

    func enableRead() {
        guard !isClosed, !isReading, let r = readEvent else { return }
        event_add(r, nil)
        isReading = true
    }

    func disableRead() {
        guard isReading, let r = readEvent else { return }
        event_del(r)
        isReading = false
    }

    var pendingOutput: Int { evbuffer_get_length(output) }

    /// Caps the kernel's send buffer (SO_SNDBUF; Linux doubles it), so a peer that stops reading
    /// fills our evbuffer — and trips the driver's backpressure — after this much, instead of the
    /// several MiB autotuning would let the kernel absorb while the upstream keeps flowing.
    func limitKernelSendBuffer(_ bytes: Int) {
        guard kernelSendBufferLimit != bytes else { return }
        kernelSendBufferLimit = bytes
        var v = Int32(clamping: bytes)
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, socklen_t(MemoryLayout<Int32>.size))
    }

    private var kernelSendBufferLimit = 0

    /// Output not yet taken by the peer: our buffer plus the kernel's send queue.
    var unsentBytes: Int { isClosed ? 0 : evbuffer_get_length(output) + max(0, Int(ces_unsent_bytes(fd))) }

    /// Writes what it can now; arms EV_WRITE only if bytes remain.
    func flush() {
        guard !isClosed, !isConnecting else { return }
        if evbuffer_get_length(output) > 0 {
            let n = evbuffer_write(output, fd)
            if n < 0 {
                let e = errno
                if e != EAGAIN && e != EWOULDBLOCK && e != EINTR { delegate.socketFailed(error: e); return }
            }
        }
        if evbuffer_get_length(output) > 0 {
            armWrite()
        }
    }

    /// Writes `head` then `body`: straight from the caller's memory with one writev when nothing
    /// is queued (no copy into `output`); what the kernel did not take, or everything when bytes
    /// are already queued or the connect is in progress, goes to `output`.
    func write(_ head: UnsafeRawBufferPointer, _ body: UnsafeRawBufferPointer) {
        let total = head.count + body.count
        guard !isClosed, total > 0 else { return }
        var sent = 0
        if !isConnecting && evbuffer_get_length(output) == 0 {
            var iov = (iovec(iov_base: UnsafeMutableRawPointer(mutating: head.baseAddress), iov_len: head.count),
                       iovec(iov_base: UnsafeMutableRawPointer(mutating: body.baseAddress), iov_len: body.count))
            let n = withUnsafeMutableBytes(of: &iov) { p in
                Glibc.writev(fd, p.baseAddress!.assumingMemoryBound(to: iovec.self), body.count > 0 ? 2 : 1)
            }
            guard let w = written(n) else { return }
            sent = w
            if sent == total { return }
        }
        if sent < head.count, let h = head.baseAddress {
            _ = evbuffer_add(output, h + sent, head.count - sent)
            if body.count > 0 { _ = evbuffer_add(output, body.baseAddress, body.count) }
        } else if let b = body.baseAddress {
            let off = sent - head.count
            _ = evbuffer_add(output, b + off, body.count - off)
        }
        if !isConnecting { armWrite() }
    }

    /// Writes what `output` holds (a response head queued by the caller), then `parts`, with one
    /// writev straight from memory: `parts` are copied into `output` only when the kernel does not
    /// take them whole (then EV_WRITE is armed), or while connecting.
    func write(parts: UnsafeBufferPointer<UnsafeRawBufferPointer>) {
        guard !isClosed else { return }
        var total = 0
        for p in parts { total += p.count }
        guard total > 0 else { return }
        let queued = evbuffer_get_length(output)
        // Up to `maxQueued` chains of `output` go in the same writev; more (a slow client's backlog)
        // and the parts are queued behind them, as any write then would be. So are more parts
        // than one writev should take (IOV_MAX is 1024; a read's events are a few pieces).
        let maxQueued = 4
        guard parts.count <= 64 else {
            queue(parts, from: 0)
            if !isConnecting { flush() }
            return
        }
        withUnsafeTemporaryAllocation(of: iovec.self, capacity: maxQueued + 1 + parts.count) { iov in
            var k = 0
            if queued > 0 {
                // Room for one chain more than taken: asked for the whole buffer, evbuffer_peek
                // stops at the room given and returns that count, not the chains there are.
                let chains = Int(evbuffer_peek(output, -1, nil, iov.baseAddress, Int32(maxQueued + 1)))
                var peeked = 0
                for c in 0..<Swift.min(Swift.max(chains, 0), maxQueued + 1) { peeked += iov[c].iov_len }
                guard !isConnecting, chains > 0, chains <= maxQueued, peeked == queued else {
                    queue(parts, from: 0)
                    if !isConnecting { flush() }
                    return
                }
                k = chains
            } else if isConnecting {
                queue(parts, from: 0)
                return
            }
            for p in parts where p.count > 0 {
                iov[k] = iovec(iov_base: UnsafeMutableRawPointer(mutating: p.baseAddress), iov_len: p.count)
                k += 1
            }
            guard var sent = written(Glibc.writev(fd, iov.baseAddress, Int32(k))) else { return }
            if queued > 0 {
                let drained = min(sent, queued)
                evbuffer_drain(output, drained)
                sent -= drained
            }
            if sent == total { return }
            queue(parts, from: sent)
            armWrite()
        }
    }

    /// `write(parts: [a, b, c])`, for a stream's chunk (its size line, its one piece of events, its
    /// CRLF): when nothing is queued, one writev of the three from the stack, without the general
    /// path's loops and peeks; otherwise (a head or a backlog queued, a connect in progress)
    /// through `write(parts:)`.
    func write(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, _ c: UnsafeRawBufferPointer) {
        withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: 3) { p in
            p.initializeElement(at: 0, to: a)
            p.initializeElement(at: 1, to: b)
            p.initializeElement(at: 2, to: c)
            let parts = UnsafeBufferPointer(p)
            guard !isClosed, !isConnecting, evbuffer_get_length(output) == 0 else { return write(parts: parts) }
            let total = a.count + b.count + c.count
            guard total > 0 else { return }
            var iov = (iovec(iov_base: UnsafeMutableRawPointer(mutating: a.baseAddress), iov_len: a.count),
                       iovec(iov_base: UnsafeMutableRawPointer(mutating: b.baseAddress), iov_len: b.count),
                       iovec(iov_base: UnsafeMutableRawPointer(mutating: c.baseAddress), iov_len: c.count))
            let n = withUnsafeMutableBytes(of: &iov) { Glibc.writev(fd, $0.baseAddress!.assumingMemoryBound(to: iovec.self), 3) }
            guard let sent = written(n), sent < total else { return }
            queue(parts, from: sent)
            armWrite()
        }
    }

    /// What a writev's result says was written: nil after a failure (reported to the delegate),
    /// 0 when the kernel took nothing for now.
    private func written(_ n: Int) -> Int? {
        guard n < 0 else { return n }
        let e = errno
        if e != EAGAIN && e != EWOULDBLOCK && e != EINTR {
            delegate.socketFailed(error: e)
            return nil
        }
        return 0
    }

    /// Copies `parts` into `output`, but their first `skip` bytes.
    private func queue(_ parts: UnsafeBufferPointer<UnsafeRawBufferPointer>, from skip: Int) {
        var skip = skip
        for p in parts {
            if skip >= p.count {
                skip -= p.count
                continue
            }
            _ = evbuffer_add(output, p.baseAddress! + skip, p.count - skip)
            skip = 0
        }
    }

    /// Writes `output` later in this loop pass: the write event is made active (no syscall), so
    /// what else the current callback writes (the rest of one upstream read: a stream's head, its
    /// events, its end) leaves with it in one writev.
    func flushSoon() {
        guard !isClosed, !isConnecting, !isWriteArmed, !isFlushPending, let w = writeEvent else { return }
        isFlushPending = true
        event_active(w, EV_WRITE, 0)
    }
    private var isFlushPending = false

    private func armWrite() {
        guard !isWriteArmed, let w = writeEvent else { return }
        event_add(w, nil)
        isWriteArmed = true
    }

    private func onRead() {
        // Read into the process's scratch buffer and append only what arrived: reserving 16 KiB
        // in the evbuffer per read made malloc hand out and coalesce a large block per request.
        let n = Glibc.read(fd, readScratch, StreamSocket.readSize)
        if n > 0 {
            if evbuffer_get_length(input) == 0 {
                delegate.socketReceived(UnsafeRawBufferPointer(start: readScratch, count: n))
            } else {
                _ = evbuffer_add(input, readScratch, n)
                delegate.socketReadable(eof: false)
            }
        } else if n == 0 {
            disableRead()
            delegate.socketReadable(eof: true)
        } else {
            let e = errno
            if e == EAGAIN || e == EWOULDBLOCK || e == EINTR { return }
            delegate.socketFailed(error: e)
        }
    }

    private func onWrite() {
        isWriteArmed = false
        isFlushPending = false
        if isConnecting {
            isConnecting = false
            var err = pendingConnectError
            if err == 0 {
                var len = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
            }
            delegate.socketConnected(error: err)
            if !isClosed && err == 0 { flush() }
            return
        }
        flush()
        if !isClosed && evbuffer_get_length(output) <= lowWater { delegate.socketDrained() }
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        if let r = readEvent { event_free(r) }
        if let w = writeEvent { event_free(w) }
        readEvent = nil
        writeEvent = nil
        Glibc.close(fd)
        evbuffer_free(input)
        evbuffer_free(output)
    }

    deinit { close() }
}

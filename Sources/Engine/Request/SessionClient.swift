// SessionClient: a RequestSession's side of its client connection, held inline (like SessionTimer
// and UpstreamAttempt): the connection it answers on until the reply, the bytes it wrote, and the
// writes themselves (the SSE head, a comment, a read's events, the reply). The session decides
// what to write and when; this knows how, and keeps the unretained mirror that the per-read
// calls use in step with the connection.
import Reactor

struct SessionClient {
    /// Set from the session's start until its reply, or until the client goes away.
    private(set) var connection: HTTPServerConnection?
    /// `connection`, unretained, for the per-read calls: loaded from `connection` each call took a
    /// retain and a release. Safe while `connection` is set: an open HTTPServerConnection keeps
    /// itself alive, and a closed one is parked in the loop's graveyard until the pass ends.
    private var ref: Unmanaged<HTTPServerConnection>?
    private(set) var bytesOut = 0

    init(_ c: HTTPServerConnection) {
        connection = c
        ref = Unmanaged.passUnretained(c)
    }

    /// Whether the client's output is backed up (the relay holds the upstream then).
    var isWriteBlocked: Bool { ref?._withUnsafeGuaranteedRef { $0.isWriteBlocked } ?? false }

    /// The client closed: nothing more is written to it.
    mutating func lost() {
        connection = nil
        ref = nil
    }

    mutating func writeSSEHead(_ headers: HTTPHeaders) {
        connection?.writeChunkedHead(status: 200, headers: ResponseWriter.sseHeaders(headers))
    }

    mutating func writeChunk(_ bytes: [UInt8]) { bytesOut += ResponseWriter.chunk(bytes, to: connection) }

    /// The machine's last read, written where its relay holds it. Lent in place (inout): read
    /// through the session's property for a call that takes a closure, the relay was copied first
    /// (a retain and a release of each of its ~10 buffers, per read). The connection goes in as
    /// Unmanaged (see `ref`): captured as an optional reference it took two more retains and
    /// releases a read.
    mutating func writeEvents(of m: inout RequestMachine) {
        guard let c = ref else { return }
        bytesOut += m.withClientEvents { parts in
            c._withUnsafeGuaranteedRef { $0.writeChunk(parts: parts) }
            return parts.reduce(0) { $0 + $1.count }
        }
    }

    /// A follower cannot pause the leader's stream: one whose client falls more than `limit`
    /// bytes behind is closed (style C's hard limit), so its output cannot grow without bound.
    func closeIfBehind(by limit: Int) -> Bool {
        guard let c = connection, c.pendingOutputBytes > limit else { return false }
        c.close()
        return true
    }

    /// Writes the final response. Detaches first: completing the response may start the next
    /// pipelined request on the same connection, which must not find this session as its context.
    mutating func reply(_ r: RequestMachine.Reply, of session: AnyObject, stream: Bool, headSent: Bool,
                        headers: consuming HTTPHeaders) {
        guard let c = detach(from: session) else { return }
        bytesOut += ResponseWriter.reply(r, to: c, stream: stream, headers: headers, headSent: headSent)
    }

    /// Ends a stream whose head and events went out already (no headers to build).
    mutating func endStream(of session: AnyObject) { detach(from: session)?.endChunked() }

    private mutating func detach(from session: AnyObject) -> HTTPServerConnection? {
        guard let c = connection else { return nil }
        lost()
        if c.context === session { c.context = nil }
        return c
    }
}

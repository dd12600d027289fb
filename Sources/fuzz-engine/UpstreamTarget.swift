// UpstreamTarget (FUZZ_TARGET=upstream): the upstream response framing. An HTTPClientConnection
// over a socketpair sends a request (a POST with a body, or with bit 4 a GET); the payload
// (FuzzInput: the first byte steers) comes back as the "server's" response, cut into pieces
// (bits 0-2), with the upstream's EOF after it (bit 3) or a reset (bit 6), and the driver pausing
// reads after each body piece (bit 5). A probe delegate checks the order of the calls (one head, body only after
// it, then one finish or failure) and that a finished response's body has its Content-Length.
// The pure ResponseFramingCheck also runs over the payload, whole and in the same pieces.
import Engine
import Reactor

enum UpstreamTarget {
    /// Names the Host header only (the socket is connected already); numeric, so no DNS.
    static let endpoint = Endpoint(host: "127.0.0.1", port: 8000)!
    static let headerBlock = Array("content-type: application/json\r\naccept: text/event-stream\r\n".utf8)
    static let requestBody = Array(#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#.utf8)

    static func run(_ bytes: UnsafeRawBufferPointer) {
        let input = FuzzInput(bytes)
        checkFraming(input)
        exchange(input)
    }

    /// ResponseFramingCheck gives the same verdict whatever the cuts, and accepts nothing that
    /// does not start with "HTTP/".
    static func checkFraming(_ input: FuzzInput) {
        var whole = ResponseFramingCheck()
        let wholeOK = whole.accept(input.payload)
        var cut = ResponseFramingCheck()
        var cutOK = true
        for r in input.pieces() where cutOK {
            cutOK = cut.accept(UnsafeRawBufferPointer(rebasing: input.payload[r]))
        }
        precondition(wholeOK == cutOK, "ResponseFramingCheck depends on where its input is cut")
        if wholeOK && input.payload.count >= 5 {
            precondition(input.payload.starts(with: "HTTP/".utf8), "ResponseFramingCheck accepted a non-HTTP start")
        }
    }

    static func exchange(_ input: FuzzInput) {
        var h = SocketHarness()
        let probe = UpstreamProbe(pauses: input.flag(5))
        weak var weakConnection: HTTPClientConnection?
        do {
            let c = HTTPClientConnection(loop: fuzzLoop, endpoint: endpoint, connectedSocket: h.engineSide)
            c.delegate = probe
            weakConnection = c
            let method: String
            if input.flag(4) {
                method = "GET"
                c.send(method: "GET", path: "/metrics", headers: HTTPHeaders(), body: nil)
            } else {
                method = "POST"
                requestBody.withUnsafeBytes {
                    c.send(method: "POST", path: "/v1/chat/completions", headerBlock: headerBlock,
                           name: "x-request-id", value: "fuzz", body: $0)
                }
            }
            // A reset (bit 6) needs the request unread in our end.
            h.drains = !input.flag(6)
            h.settle(maxPasses: 2)
            precondition(!h.drains || h.received.starts(with: (method + " /").utf8), "the request did not go out")
            for r in input.pieces() {
                h.send(UnsafeRawBufferPointer(rebasing: input.payload[r]))
                h.settle(maxPasses: 2)
                // The driver's client drained: reading resumes (HTTPClientConnection.resumeReading).
                if probe.paused {
                    probe.paused = false
                    c.resumeReading()
                }
            }
            if input.flag(3) || input.flag(6) {
                probe.pauses = false
                if probe.paused { c.resumeReading() }
                if input.flag(6) { h.closePeer() } else { h.shutdownWrite() }
                let ended = h.settle(maxPasses: 256) { probe.isEnded }
                precondition(ended, "the exchange did not end after the upstream's EOF or reset")
            } else {
                h.settle(maxPasses: 4)
            }
            probe.checkBodyLength()
            // The driver's part: the exchange is over or abandoned; this connection goes.
            c.close()
        }
        h.settle(maxPasses: 4) { weakConnection == nil }
        precondition(weakConnection == nil, "the closed connection was not freed")
        h.finish()
    }
}

/// The request driver's stand-in (and the pool's, once the exchange finished).
final class UpstreamProbe: HTTPClientConnectionDelegate {
    /// Pause reading after each body piece (client backpressure), until the harness resumes.
    var pauses: Bool
    var paused = false
    private var status = 0
    private var headers = HTTPHeaders()
    private var heads = 0
    private var bodyBytes = 0
    private var finished = false
    private var failure: HTTPClientFailure?
    private var idleFailures = 0

    init(pauses: Bool) { self.pauses = pauses }

    var isEnded: Bool { finished || failure != nil }

    func upstream(_ c: HTTPClientConnection, didReceiveHead status: Int, headers: HTTPHeaders) {
        precondition(heads == 0 && !isEnded, "a second head, or a head after the end")
        precondition((200...599).contains(status), "status \(status) reached the driver")
        heads = 1
        self.status = status
        self.headers = headers
    }

    func upstream(_ c: HTTPClientConnection, didReceiveBody bytes: UnsafeRawBufferPointer) {
        precondition(heads == 1 && !isEnded, "body before the head or after the end")
        precondition(bytes.count > 0, "an empty body piece")
        bodyBytes += bytes.count
        if pauses {
            paused = true
            c.pauseReading()
        }
    }

    func upstreamDidFinish(_ c: HTTPClientConnection) {
        precondition(heads == 1 && !isEnded, "finished without a head, or twice")
        finished = true
    }

    func upstream(_ c: HTTPClientConnection, didFail failure: HTTPClientFailure) {
        if finished {
            // Idle in the pool: EOF or stray bytes close it, once.
            idleFailures += 1
            precondition(idleFailures == 1, "two failures of an idle connection")
        } else {
            precondition(self.failure == nil, "two failures of one exchange")
            self.failure = failure
        }
    }

    /// A finished response framed by Content-Length delivered exactly that many body bytes.
    func checkBodyLength() {
        guard finished, status != 204, status != 304, headers["transfer-encoding"] == nil,
              let cl = headers["content-length"].flatMap({ Int($0.trimmingSpaces) }) else { return }
        precondition(bodyBytes == cl, "content-length \(cl) but \(bodyBytes) body bytes delivered")
    }
}

extension String {
    fileprivate var trimmingSpaces: Substring {
        var s = self[...]
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return s
    }
}

// RequestTarget (FUZZ_TARGET=request): the client request path. The payload (FuzzInput: the
// first byte steers) is
//   1. validated as a body of both endpoints, as the Frontend does: OpenAIRequest.parse with the
//      canonical form, then on success the cache key and the rewrites before forwarding (model,
//      stream_options.include_usage), which must leave a body that still validates, as the same
//      request, and the same cache key (the key ignores exactly those fields);
//   2. sent as raw client bytes to an HTTPServerConnection over a socketpair, cut into pieces
//      (control bits 0-2), with small limits (bit 3), chunked answers (bit 4), a tenant in the
//      cache key (bit 5), a draining server (bit 6) and a client that resets instead of closing
//      (bit 7); every complete request is answered with a fixed response, and a body sent to a
//      generation path goes through (1). After the client's EOF or reset the connection must
//      close, free itself and its fd.
import CEventShim
import Engine
import Reactor

enum RequestTarget {
    static func run(_ bytes: UnsafeRawBufferPointer) {
        let input = FuzzInput(bytes)
        let body = Array(input.payload)
        let tenant = input.flag(5) ? "tenant" : nil
        validate(kind: .chat, body: body, tenant: tenant)
        validate(kind: .completion, body: body, tenant: tenant)
        serve(input, tenant: tenant)
    }

    /// The Frontend's handling of a generation body (Frontend.startGeneration, routeAndStart,
    /// cachePlan), minus the I/O.
    static func validate(kind: EndpointKind, body: [UInt8], tenant: String?) {
        guard case .success(let req) = OpenAIRequest.parse(kind: kind, body: body, canonical: true) else { return }
        precondition(req.kind == kind)
        guard let digest = req.canonicalDigest else { preconditionFailure("no canonical form for an accepted body") }
        let key = CacheKey.make(kind: kind, servedModel: "served", canonicalDigest: digest, tenant: tenant)
        _ = CacheKey.isCacheable(req, deterministicOnly: true)
        // The rewrites routeAndStart applies before forwarding.
        guard let forward = OpenAIRequest.rewrite(body, model: "routed", includeUsage: req.stream && !req.includeUsage) else {
            preconditionFailure("an accepted body could not be rewritten")
        }
        guard case .success(let again) = OpenAIRequest.parse(kind: kind, body: forward, canonical: true) else {
            preconditionFailure("the rewritten body no longer validates: \(String(decoding: forward, as: UTF8.self))")
        }
        precondition(CacheKey.make(kind: kind, servedModel: "served", canonicalDigest: again.canonicalDigest ?? [], tenant: tenant) == key,
                     "the cache key depends on a field it should ignore (model, stream_options), or the rewrite changed a value")
        precondition(again.stream == req.stream && again.model == "routed", "the rewrite changed the request")
        precondition(!req.stream || again.includeUsage, "include_usage was not set on a stream")
        precondition(again.promptSize == req.promptSize, "the forwarded prompt measures differently")
        precondition(again.isDeterministic == req.isDeterministic, "the rewrite changed temperature or seed")
    }

    /// Small limits, so that the too-large paths are reached by short inputs.
    static let smallLimits = HTTPServerLimits(maxHeaderBytes: 200, maxBodyBytes: 300)

    static func serve(_ input: FuzzInput, tenant: String?) {
        var h = SocketHarness()
        let probe = ServerProbe(chunked: input.flag(4), tenant: tenant)
        weak var weakConnection: HTTPServerConnection?
        do {
            let c = HTTPServerConnection(loop: fuzzLoop, fd: h.engineSide, id: 1,
                                         limits: input.flag(3) ? smallLimits : HTTPServerLimits())
            c.delegate = probe
            weakConnection = c
            // A reset (bit 7) needs the answers unread in our end.
            h.drains = !input.flag(7)
            for r in input.pieces() {
                h.send(UnsafeRawBufferPointer(rebasing: input.payload[r]))
                h.settle(maxPasses: 2)
            }
            // A draining server (bit 6): idle connections close now, busy ones after their answer.
            if input.flag(6) { c.closeWhenIdle() }
            if input.flag(7) { h.closePeer() } else { h.shutdownWrite() }
            let closed = h.settle(maxPasses: 256) { probe.closes > 0 }
            precondition(closed && c.isClosed, "the connection did not close after the client's EOF or reset")
        }
        h.settle(maxPasses: 4) { weakConnection == nil }
        precondition(weakConnection == nil, "the closed connection was not freed")
        if !h.received.isEmpty {
            precondition(h.received.starts(with: "HTTP/1.1 ".utf8), "the connection wrote something other than a response")
        }
        h.finish()
    }
}

/// The request driver's stand-in: answers each request at once with a fixed response and checks
/// the order of the connection's calls.
final class ServerProbe: HTTPServerConnectionDelegate {
    let chunked: Bool
    let tenant: String?
    var requests = 0
    var failures = 0
    var closes = 0
    private static let answer = Array(#"{"ok":true}"#.utf8)

    init(chunked: Bool, tenant: String?) {
        self.chunked = chunked
        self.tenant = tenant
    }

    func connection(_ c: HTTPServerConnection, didReceive head: HTTPRequestHead, body: [UInt8]) {
        precondition(failures == 0 && closes == 0, "a request after the connection failed or closed")
        requests += 1
        // What the Frontend reads from a head.
        _ = head.headers.items
        _ = head.headers["authorization"]
        _ = CachePolicy.from(cacheControl: head.headers["cache-control"])
        switch head.path {
        case "/v1/chat/completions": RequestTarget.validate(kind: .chat, body: body, tenant: tenant)
        case "/v1/completions": RequestTarget.validate(kind: .completion, body: body, tenant: tenant)
        default: break
        }
        var h = HTTPHeaders()
        h.add("content-type", "application/json")
        if chunked {
            c.writeChunkedHead(status: 200, headers: h)
            Self.answer.withUnsafeBytes { c.writeChunk($0) }
            c.endChunked()
        } else {
            c.writeResponse(status: 200, headers: h, body: Self.answer)
        }
    }

    func connection(_ c: HTTPServerConnection, didFail failure: HTTPServerFailure) {
        precondition(failures == 0 && closes == 0, "a second failure, or one after the close")
        failures += 1
        c.writeResponse(status: 400, headers: HTTPHeaders(), body: Self.answer)
    }

    func connectionDidDrain(_ c: HTTPServerConnection) {}

    func connectionDidClose(_ c: HTTPServerConnection) {
        closes += 1
        precondition(closes == 1, "connectionDidClose more than once")
    }
}

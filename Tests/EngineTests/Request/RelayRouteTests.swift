// Issue 12 item 1 as values: the relayed routes' table, the multipart form reader that routes an
// audio request, the cache key of a relayed route, and what the machine does with a relayed
// route's answers (any valid body relayed; a stream passed through unread and complete at its end).
import Testing
@testable import Engine

@Suite struct RelayRouteTableTests {
    @Test func vllmsRoutesAreRelayedWithTheirMethods() {
        let cases: [(Substring, String, String)] = [
            ("/v1/responses", "responses", "POST"), ("/v1/embeddings", "embeddings", "POST"), ("/tokenize", "tokenize", "POST"),
            ("/detokenize", "detokenize", "POST"), ("/v1/audio/transcriptions", "audio", "POST"), ("/version", "version", "GET"),
            ("/v1/responses/resp_1", "responses", "GET"), ("/v1/responses/resp_1/cancel", "responses", "POST"),
            ("/v2/rerank", "rerank", "POST"), ("/pooling", "pooling", "POST"), ("/v2/embed", "embed", "POST"),
            ("/v1/chat/completions/batch", "batch", "POST"), ("/generative_scoring", "score", "POST"),
            ("/v1/completions/derender", "render", "POST"), ("/v1/messages/render", "render", "POST"),
        ]
        for (path, name, method) in cases {
            guard let (route, m) = Frontend.route(for: path), case .relay(let spec) = route else {
                Issue.record("\(path) is not relayed"); continue
            }
            #expect(spec.name == name && m == method, "\(path)")
        }
        #expect(Frontend.route(for: "/v1/embeddings").map { $0.0 } == .relay(.init(name: "embeddings", body: .json, cacheable: true)))
        for path: Substring in ["/v1/responses/", "/v1/responses/a/b", "/scale_elastic_ep", "/docs", "/v1/nope"] {
            #expect(Frontend.route(for: path) == nil, "\(path)")
        }
        #expect(Frontend.route(for: "/v1/chat/completions")?.0 == .generate(.chat))
    }

    @Test func aRelayedRouteHasItsOwnCacheKeyAndOnlyEmbeddingsAreCacheable() {
        let digest = [UInt8](repeating: 7, count: 32)
        let emb = EndpointKind.relay(RelayRoute(name: "embeddings", method: "POST", target: "/v1/embeddings", body: .json, cacheable: true))
        let other = EndpointKind.relay(RelayRoute(name: "embeddings", method: "POST", target: "/v1/embeddings?x=1", body: .json, cacheable: true))
        let keys = [EndpointKind.chat, .completion, emb, other].map { CacheKey.make(kind: $0, servedModel: "m", canonicalDigest: digest, tenant: nil) }
        #expect(Set(keys).count == 4)
        let body = Array(#"{"model":"m","input":"x","temperature":1}"#.utf8)
        guard case .success(let e) = OpenAIRequest.parse(kind: emb, body: body, canonical: true) else { Issue.record("parse"); return }
        #expect(CacheKey.isCacheable(e, deterministicOnly: true)) // embeddings are deterministic
        let tok = EndpointKind.relay(RelayRoute(name: "tokenize", method: "POST", target: "/tokenize", body: .json))
        guard case .success(let t) = OpenAIRequest.parse(kind: tok, body: Array(#"{"prompt":"x","temperature":0}"#.utf8)) else { Issue.record("parse"); return }
        #expect(!CacheKey.isCacheable(t, deterministicOnly: false))
    }

    @Test func aRelayedJSONBodyIsCheckedOnlyForWhatRoutingReads() {
        let kind = EndpointKind.relay(RelayRoute(name: "responses", method: "POST", target: "/v1/responses", body: .json))
        guard case .success(let r) = OpenAIRequest.parse(kind: kind, body: Array(#"{"input":"hello","stream":true}"#.utf8)) else {
            Issue.record("a body without messages or prompt is fine for a relayed route"); return
        }
        #expect(r.stream && r.model == nil && r.promptSize.textBytes == 5)
        if case .success = OpenAIRequest.parse(kind: kind, body: Array(#"{"stream":"yes"}"#.utf8)) { Issue.record("stream must be a bool") }
        if case .success = OpenAIRequest.parse(kind: kind, body: Array(#"{"model":"a","model":"b"}"#.utf8)) { Issue.record("duplicate keys") }
        if case .success = OpenAIRequest.parse(kind: kind, body: Array("[1]".utf8)) { Issue.record("not an object") }
    }
}

@Suite struct MultipartFormTests {
    private let boundary = Array("XyZ123".utf8)

    private func form(_ parts: [(String, String, String?)]) -> [UInt8] {
        var s = "preamble\r\n"
        for (name, value, file) in parts {
            s += "--XyZ123\r\nContent-Disposition: form-data; name=\"\(name)\""
            if let file { s += "; filename=\"\(file)\"\r\nContent-Type: audio/wav" }
            s += "\r\n\r\n\(value)\r\n"
        }
        return Array((s + "--XyZ123--\r\n").utf8)
    }

    @Test func readsTheBoundary() {
        #expect(MultipartForm.boundary(contentType: "multipart/form-data; boundary=XyZ123") == boundary)
        #expect(MultipartForm.boundary(contentType: "Multipart/Form-Data;charset=utf-8; Boundary=\"a b\"") == Array("a b".utf8))
        #expect(MultipartForm.boundary(contentType: "application/json") == nil)
        #expect(MultipartForm.boundary(contentType: "multipart/form-data") == nil)
    }

    @Test func readsPlainFieldsAndSkipsFiles() {
        let body = form([("file", "model\r\n--XyZ12 not the end", "a.wav"), ("model", "whisper-1", nil), ("stream", "true", nil)])
        #expect(MultipartForm.field("model", in: body, boundary: boundary) == "whisper-1")
        #expect(MultipartForm.field("stream", in: body, boundary: boundary) == "true")
        #expect(MultipartForm.field("file", in: body, boundary: boundary) == nil) // a file, not a field
        #expect(MultipartForm.field("language", in: body, boundary: boundary) == nil)
    }

    @Test func malformedFormsReadAsNoField() {
        #expect(MultipartForm.field("model", in: Array("no boundary here".utf8), boundary: boundary) == nil)
        #expect(MultipartForm.field("model", in: Array("--XyZ123\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm".utf8),
                                    boundary: boundary) == nil) // never closed
        let long = form([("model", String(repeating: "m", count: 300), nil)])
        #expect(MultipartForm.field("model", in: long, boundary: boundary) == nil)
    }
}

@Suite struct RequestMachineRelayTests {
    private func machine(_ name: String, stream: Bool = false, cacheable: Bool = false) -> RequestMachine {
        var p = RequestMachine.Policy(maxAttempts: 2, backoff: .milliseconds(10), upstreamTimeout: .seconds(5), isStream: stream)
        p.kind = .relay(RelayRoute(name: name, method: "POST", target: "/x", body: .json, cacheable: cacheable))
        p.storesAnswer = cacheable
        var m = RequestMachine(policy: p)
        _ = m.start()
        _ = m.backendChosen(BackendID(0))
        return m
    }

    @Test func anyValidBodyIsRelayed() {
        for (ct, body, st) in [("application/json", #"{"count":2,"tokens":[1,2]}"#, 200), ("text/plain", "hello", 200),
                               ("application/json", "", 204), ("application/json", "[1,2]", 200)] {
            var m = machine("tokenize")
            _ = m.upstreamHead(status: st, contentType: ct)
            _ = Array(body.utf8).withUnsafeBytes { m.upstreamBody($0, clientBlocked: false) }
            let f = RequestMachine.finish(m.upstreamEnd())
            #expect(f?.reply == .json(status: st, body: Array(body.utf8), contentType: ct, retryAfter: nil), "\(ct) \(body)")
        }
        var bad = machine("tokenize")
        _ = bad.upstreamHead(status: 200, contentType: "application/json")
        _ = Array("{oops".utf8).withUnsafeBytes { bad.upstreamBody($0, clientBlocked: false) }
        #expect(bad.upstreamEnd() == .retry(after: .milliseconds(10)))
    }

    @Test func aCacheableRouteStoresOnlyAnObjectWithoutError() {
        var m = machine("embeddings", cacheable: true)
        let ok = Array(#"{"object":"list","data":[]}"#.utf8)
        _ = m.upstreamHead(status: 200, contentType: "application/json")
        _ = ok.withUnsafeBytes { m.upstreamBody($0, clientBlocked: false) }
        #expect(RequestMachine.finish(m.upstreamEnd())?.store == .json(ok))
        var e = machine("embeddings", cacheable: true)
        _ = e.upstreamHead(status: 200, contentType: "application/json")
        _ = Array(#"{"error":{"message":"x"}}"#.utf8).withUnsafeBytes { e.upstreamBody($0, clientBlocked: false) }
        #expect(e.upstreamEnd() == .retry(after: .milliseconds(10)))
    }

    @Test func aRelayedStreamPassesThroughAndIsCompleteAtItsEnd() {
        var m = machine("responses", stream: true)
        #expect(m.upstreamHead(status: 200, contentType: "text/event-stream") == .startStream(timeout: .seconds(5), writeHead: true))
        let part = Array("event: response.created\ndata: {\"type\":\"resp".utf8)
        #expect(part.withUnsafeBytes { m.upstreamBody($0, clientBlocked: false) } == .forward(.init(rearm: true)))
        #expect(m.relay.clientEvents == part) // as it came, half an event included
        let f = RequestMachine.finish(m.upstreamEnd())
        #expect(f == .init(reuseUpstream: true, verdict: .success, reply: .endStream))
        var cut = machine("responses", stream: true)
        _ = cut.upstreamHead(status: 200, contentType: "text/event-stream")
        guard case .lastEvents? = RequestMachine.finish(cut.upstreamFailed(.closed(reused: false)))?.reply else {
            Issue.record("a cut relayed stream ends with an error event"); return
        }
    }
}

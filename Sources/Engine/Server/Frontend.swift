// Frontend: the delegate of every client connection. Routes each complete request: generation
// routes start a RequestSession (stored in the connection's `context`); /health, /livez, /readyz,
// /v1/models and /metrics are answered here (GET and HEAD). Every error leaves as OpenAI-style JSON.
import CEventShim
import Reactor

#if canImport(Glibc)
import Glibc
#endif

final class Frontend: HTTPServerConnectionDelegate {
    // STYLE-EXCEPTION: unowned(unsafe), not unowned: the runtime owns its Frontend (and outlives
    // it), and every request reads it a dozen times; checked `unowned` paid a retain and a
    // release for each read.
    unowned(unsafe) let runtime: EngineRuntime
    private var nextId: UInt64 = 0
    private var rng = FastRandom()

    /// The runtime's router (a value from the immutable config), kept here: read through the
    /// unowned(unsafe) reference, each request's route copied the struct (its Strings retained)
    /// and destroyed it after the call.
    private let router: ModelRouter

    init(runtime: EngineRuntime) {
        self.runtime = runtime
        self.router = runtime.router
    }

    /// Open client connections by id (for graceful drain).
    private(set) var connections: [UInt64: HTTPServerConnection] = [:]
    private var isDraining = false

    func accept(_ fd: Int32) {
        nextId += 1
        let c = HTTPServerConnection(loop: runtime.loop, fd: fd, id: nextId, limits: runtime.serverLimits)
        c.delegate = self
        connections[c.id] = c
        if isDraining { c.closeWhenIdle() }
        runtime.metrics.openConnections += 1
        runtime.metrics.connectionsTotal += 1
    }

    /// A relayed route of vLLM's surface: its name, body form, and whether its answers may be
    /// cached (RelayRoute is this plus the request's own target and content type).
    struct RelaySpec: Equatable {
        let name: String
        let body: RelayRoute.Body
        var cacheable = false
    }

    enum Route: Equatable {
        case generate(EndpointKind)
        case relay(RelaySpec)
        /// /health and /readyz: 200 while a backend is up and the process is not draining.
        case models, health, readyz, livez, metrics, metricsPrometheus

        var name: String {
            switch self {
            case .generate(let k): return k.name
            case .relay(let r): return r.name
            case .models: return "models"
            case .health: return "health"
            case .readyz: return "readyz"
            case .livez: return "livez"
            case .metrics: return "metrics"
            case .metricsPrometheus: return "metrics_prometheus"
            }
        }

        /// Probes stay open; metrics only when auth.protect_metrics.
        func needsAuth(protectMetrics: Bool) -> Bool {
            switch self {
            case .generate, .relay, .models: return true
            case .health, .readyz, .livez: return false
            case .metrics, .metricsPrometheus: return protectMetrics
            }
        }
    }

    /// Path → (route, allowed method; GET allows HEAD too). Also accepts the paths without `/v1`.
    static func route(for path: Substring) -> (Route, String)? {
        switch path {
        case "/v1/chat/completions", "/chat/completions": return (.generate(.chat), "POST")
        case "/v1/completions", "/completions": return (.generate(.completion), "POST")
        case "/v1/models", "/models": return (.models, "GET")
        case "/health": return (.health, "GET")
        case "/readyz": return (.readyz, "GET")
        case "/livez": return (.livez, "GET")
        case "/metrics": return (.metrics, "GET")
        case "/metrics/prometheus": return (.metricsPrometheus, "GET")
        default: return relayRoute(for: path)
        }
    }

    /// vLLM's other routes (0.32, docs/api.md "Relayed routes"): relayed to a backend as they are.
    /// Not relayed: vLLM's own admin and documentation routes (/scale_elastic_ep,
    /// /is_scaling_elastic_ep, /inference/v1/abort_requests, /kv_event_sources, /openapi.json,
    /// /docs, /redoc), which concern one server, not the fleet.
    static let relayRoutes: [Substring: (RelaySpec, String)] = [
        "/v1/responses": (RelaySpec(name: "responses", body: .json), "POST"),
        "/v1/embeddings": (RelaySpec(name: "embeddings", body: .json, cacheable: true), "POST"),
        "/v1/rerank": (RelaySpec(name: "rerank", body: .json), "POST"),
        "/rerank": (RelaySpec(name: "rerank", body: .json), "POST"),
        "/v2/rerank": (RelaySpec(name: "rerank", body: .json), "POST"),
        "/v1/score": (RelaySpec(name: "score", body: .json), "POST"),
        "/score": (RelaySpec(name: "score", body: .json), "POST"),
        "/pooling": (RelaySpec(name: "pooling", body: .json), "POST"),
        "/classify": (RelaySpec(name: "classify", body: .json), "POST"),
        "/tokenize": (RelaySpec(name: "tokenize", body: .json), "POST"),
        "/detokenize": (RelaySpec(name: "detokenize", body: .json), "POST"),
        "/v1/messages": (RelaySpec(name: "messages", body: .json), "POST"),
        "/v1/messages/count_tokens": (RelaySpec(name: "messages", body: .json), "POST"),
        "/v1/chat/completions/render": (RelaySpec(name: "render", body: .json), "POST"),
        "/v1/completions/render": (RelaySpec(name: "render", body: .json), "POST"),
        "/v1/responses/render": (RelaySpec(name: "render", body: .json), "POST"),
        "/v1/messages/render": (RelaySpec(name: "render", body: .json), "POST"),
        "/v1/chat/completions/derender": (RelaySpec(name: "render", body: .json), "POST"),
        "/v1/completions/derender": (RelaySpec(name: "render", body: .json), "POST"),
        "/v1/chat/completions/batch": (RelaySpec(name: "batch", body: .json), "POST"),
        "/generative_scoring": (RelaySpec(name: "score", body: .json), "POST"),
        "/v2/embed": (RelaySpec(name: "embed", body: .json), "POST"),
        "/inference/v1/generate": (RelaySpec(name: "generate", body: .json), "POST"),
        "/invocations": (RelaySpec(name: "invocations", body: .json), "POST"),
        "/v1/audio/transcriptions": (RelaySpec(name: "audio", body: .multipart), "POST"),
        "/v1/audio/translations": (RelaySpec(name: "audio", body: .multipart), "POST"),
        "/version": (RelaySpec(name: "version", body: .none), "GET"),
        "/load": (RelaySpec(name: "load", body: .none), "GET"),
        "/ping": (RelaySpec(name: "ping", body: .none), "GET"),
    ]

    /// The last target routed, and its route and method (nil: none yet, or no route). Apart,
    /// not as an optional tuple, which the runtime copied generically.
    private var lastTarget = ""
    private var lastRoute: Route?
    private var lastMethod = ""

    /// `route(for:)` of the target's path, the last one's again when the target is the same (its
    /// bytes compared): a keep-alive client repeats its target, where splitting off the path and
    /// matching it against the routes went through the generic string comparison (~550
    /// instructions a request).
    private func route(target: String) -> (Route, String)? {
        var t = target
        var last = lastTarget
        let same = t.withUTF8 { a in
            last.withUTF8 { b in a.count == b.count && (a.isEmpty || memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0) }
        }
        if same, let r = lastRoute { return (r, lastMethod) }
        let r = Frontend.route(for: HTTPRequestHead.path(of: target))
        lastTarget = target
        lastRoute = r?.0
        lastMethod = r?.1 ?? ""
        return r
    }

    static func relayRoute(for path: Substring) -> (Route, String)? {
        if let (spec, method) = relayRoutes[path] { return (.relay(spec), method) }
        // GET /v1/responses/{id}, POST /v1/responses/{id}/cancel (a stored response lives on the
        // backend that made it: see docs/api.md).
        let prefix = "/v1/responses/"
        guard path.hasPrefix(prefix), path.count > prefix.count else { return nil }
        let rest = path.dropFirst(prefix.count)
        if rest.hasSuffix("/cancel") { return (.relay(RelaySpec(name: "responses", body: .none)), "POST") }
        return rest.contains("/") ? nil : (.relay(RelaySpec(name: "responses", body: .none)), "GET")
    }

    /// The client's X-Request-Id when it sent a usable one (its value at `range` of the head's
    /// headers), else a new id.
    func makeRequestId(_ head: HTTPRequestHead, _ range: Range<Int>?) -> RequestID {
        if let range {
            let r = head.headers.value(at: range)
            if !r.isEmpty, r.utf8.count <= 128 { return RequestID(client: r, generated: 0) }
        }
        return RequestID(client: nil, generated: rng.next())
    }

    /// 16 hex digits from the loop's generator (its bytes most significant first).
    func newRequestId() -> String { RequestID(client: nil, generated: rng.next()).string }

    func connection(_ c: HTTPServerConnection, didReceive head: HTTPRequestHead, body: [UInt8]) {
        body.withUnsafeBytes { connection(c, didReceive: head, bodyBytes: $0) }
    }

    /// The body as the connection lends it: a cache hit reads it in place (its hash, its
    /// length); every other path copies it first.
    func connection(_ c: HTTPServerConnection, didReceive head: HTTPRequestHead, bodyBytes b: UnsafeRawBufferPointer) {
        runtime.metrics.requestsTotal += 1
        // Both headers the hit path reads, in one pass over the block.
        let (ridRange, cacheControl) = head.headers.valueRanges("x-request-id", "cache-control")
        let id = makeRequestId(head, ridRange)
        let t0 = Loop.nowNanos()
        // Every error the Frontend answers itself gets an access line too.
        func reject(_ err: EngineError, route: String) {
            let rid = id.string
            let n = runtime.writeError(err, to: c, requestId: rid)
            runtime.frontendAnswered(route: route, status: err.status, requestId: rid, request: runtime.accessInfo(head, c),
                                     bytesIn: b.count, bytesOut: n, startNanos: t0)
        }
        guard let (route, method) = route(target: head.target) else {
            reject(EngineError(.routeNotFound, "Unknown path \(head.path)."), route: "-")
            return
        }
        guard head.method == method || (method == "GET" && head.method == "HEAD") else {
            let rid = id.string
            let allowed = method == "GET" ? "GET, HEAD" : method
            var h = HTTPHeaders()
            h.add("x-request-id", rid)
            h.add("allow", allowed)
            let n = runtime.writeError(EngineError(.methodNotAllowed, "Method \(head.method) is not allowed on \(head.path); use \(allowed)."),
                                       to: c, requestId: rid, extra: h)
            runtime.frontendAnswered(route: route.name, status: 405, requestId: rid, request: runtime.accessInfo(head, c),
                                     bytesIn: b.count, bytesOut: n, startNanos: t0)
            return
        }
        var identity: String?
        if let auth = runtime.auth, route.needsAuth(protectMetrics: runtime.config.auth.isMetricsProtected) {
            switch auth.authenticate(authorizationHeader: head.headers["authorization"]) {
            case .ok(let id): identity = id
            case .missing:
                reject(EngineError(.unauthorized, "Missing API key: send Authorization: Bearer <key>."), route: route.name)
                return
            case .invalid:
                reject(EngineError(.unauthorized, "Incorrect API key provided."), route: route.name)
                return
            }
        }
        // The id's text and the body's copy are made only where a route keeps them (a generation
        // makes them itself, except on a hit).
        switch route {
        case .generate(let kind):
            startGeneration(c, kind: kind, head: head, bodyBytes: b, id: id, identity: identity, hasCacheControl: cacheControl != nil,
                            startNanos: t0)
        case .relay(let spec):
            startRelay(c, spec, method: method, head: head, body: Array(b), rid: id.string, identity: identity)
        case .models:
            writeJSON(c, 200, modelsBody(), id.string)
        case .health, .readyz:
            let up = runtime.backends.healthyCount
            let total = runtime.backends.all.count
            let ready = up > 0 && !isDraining
            let status = isDraining ? "draining" : up > 0 ? "ok" : "unavailable"
            let s = "{\"status\":\"\(status)\",\"version\":\"\(engineVersion)\",\"backends\":{\"up\":\(up),\"total\":\(total)}}"
            writeJSON(c, ready ? 200 : 503, Array(s.utf8), id.string)
        case .livez:
            writeJSON(c, 200, Array("{\"status\":\"ok\",\"version\":\"\(engineVersion)\"}".utf8), id.string)
        case .metrics:
            // Prometheus text unless the client prefers JSON; caches must key on Accept.
            var h = HTTPHeaders()
            h.add("vary", "accept")
            if AcceptHeader.prefersJSONToPrometheusText(head.headers["accept"]) {
                writeJSON(c, 200, Array(metricsJSON().utf8), id.string, headers: h)
            } else {
                writePrometheus(c, headers: h)
            }
        case .metricsPrometheus:
            writePrometheus(c, headers: HTTPHeaders())
        }
    }

    /// parse → route → session (cache, coalescer, admission and pool run inside the session).
    /// `t0`: when the request arrived (one clock read serves the memo lookup and a parse error's
    /// access line).
    /// `b`: the body as the connection lends it (copied for anything but a hit).
    private func startGeneration(_ c: HTTPServerConnection, kind: EndpointKind, head: HTTPRequestHead, bodyBytes b: UnsafeRawBufferPointer,
                                 id: RequestID, identity: String?, hasCacheControl: Bool, startNanos t0: UInt64) {
        // Fast path: a byte-identical repeat of a request seen before (the memo maps its bytes to
        // its cache key, a pure function of them), answered from a fresh entry without parsing.
        guard let memo = runtime.hitMemo, let cache = runtime.cache, !hasCacheControl else {
            parseAndStart(c, kind: kind, head: head, body: Array(b), rid: id.string, identity: identity, memoKey: nil, startNanos: t0)
            return
        }
        let rk = HitMemo.rawKey(kind: kind, identity: identity, body: b)
        guard let e = memo.get(rk) else {
            parseAndStart(c, kind: kind, head: head, body: Array(b), rid: id.string, identity: identity, memoKey: rk, startNanos: t0)
            return
        }
        // A fresh entry in this client's form, or nil (then the whole pipeline decides).
        func reply(_ stored: UnsafeRawBufferPointer, _ rid: String) -> [UInt8]? {
            StoredAnswer.reply(encoded: stored, stream: e.stream, includeUsage: e.includeUsage,
                               stamp: ReplyStamp(kind: kind, requestId: rid, created: Int(Loop.wallSeconds())))
        }
        if let mem = runtime.syncCache {
            // The entry's bytes as the store lends them (no copy of its own for the splice to read).
            switch mem.withFresh(e.cacheKey, now: t0, { stored -> HitReply? in
                // A plain answer stored plain: spliced straight into the hit buffer.
                if !e.stream, let r = composePlainHit(stored, kind: kind, entry: e, id: id) { return r }
                let rid = id.string
                return reply(stored, rid).map { .built($0, rid: rid) }
            }) ?? nil {
            case .composed(let lines, let end)?:
                let b = UnsafeRawBufferPointer(hitBuffer)
                c.writeResponse(status: 200, headerLines: UnsafeRawBufferPointer(rebasing: b[lines]),
                                body: UnsafeRawBufferPointer(rebasing: b[lines.upperBound..<end]))
                runtime.memoHitAnswered(kind: kind, servedModel: e.servedModel, requestedModel: e.requestedModel, requestId: id,
                                        request: runtime.accessInfo(head, c), bytesIn: b.count, bytesOut: end - lines.upperBound,
                                        startNanos: t0)
            case .built(let r, let rid)?:
                answerFromMemo(c, kind: kind, entry: e, reply: r, rid: rid, request: runtime.accessInfo(head, c),
                               bytesIn: b.count, startNanos: t0)
            case nil:
                parseAndStart(c, kind: kind, head: head, body: Array(b), rid: id.string, identity: identity, memoKey: rk, startNanos: t0)
            }
            return
        }
        // The shared store answers later on the loop (never inside this call): a fresh entry is
        // answered here, anything else takes the whole pipeline (which looks it up again).
        let rid = id.string
        let body = Array(b)  // kept by the closure: the connection's bytes are lent only for this call
        cache.get(key: e.cacheKey, now: t0, wallMillis: Loop.wallMillis()) { [weak self] lookup in
            guard let self, !c.isClosed else { return }
            if case .fresh(let stored) = lookup, let r = stored.withUnsafeBytes({ reply($0, rid) }) {
                self.answerFromMemo(c, kind: kind, entry: e, reply: r, rid: rid, request: self.runtime.accessInfo(head, c),
                                    bytesIn: body.count, startNanos: t0)
            } else {
                self.parseAndStart(c, kind: kind, head: head, body: body, rid: rid, identity: identity, memoKey: rk, startNanos: t0)
            }
        }
    }

    /// A hit's reply: composed in `hitBuffer` (header lines, then the body from the end of
    /// `lines` to `end`), or built as an array (a form that takes more than a splice).
    private enum HitReply {
        case composed(lines: Range<Int>, end: Int)
        case built([UInt8], rid: String)
    }

    /// Where a plain hit's reply is composed and written from (the id's JSON text, the header
    /// lines, the body): one buffer for every hit, grown to the largest, instead of a header
    /// block and a body array per hit. Loop-confined; nothing runs between composing a reply
    /// and writing it.
    private var hitBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 << 10, alignment: 16)

    deinit { hitBuffer.deallocate() }

    /// The `created` a hit writes, and its digits: written once a second, not once a hit.
    private var createdSecond = Int.min
    private var createdText = ReplyStamp.CreatedText(0)

    /// A plain (non-streamed) hit on an entry stored as a JSON body with its id and created
    /// positions: the header lines the memo path sends (x-routed-model when routed, x-request-id,
    /// x-cache, content-type, in that order) and the body spliced with this request's id and
    /// created, composed in `hitBuffer`. nil for any other entry (the caller builds the reply),
    /// or a damaged one (then `.built` is tried, which finds it damaged too).
    private func composePlainHit(_ stored: UnsafeRawBufferPointer, kind: EndpointKind, entry e: HitMemo.Entry, id: RequestID) -> HitReply? {
        guard let (payload, spans) = StoredAnswer.stampedJSON(encoded: stored) else { return nil }
        return id.withBytes { rid -> HitReply? in
            let idMax = ReplyStamp.maxIDTextCount(rid.count)
            // The served model's bytes only when routed (borrowed in place: a `var` copy to call
            // withUTF8 retained and released it).
            let noModel = UnsafeRawBufferPointer(start: nil, count: 0)
            func compose(_ routed: UnsafeRawBufferPointer) -> HitReply? {
                let linesMax = 20 + routed.count + 16 + rid.count + HeaderLines.hitTail.utf8CodeUnitCount
                let bodyMax = ReplyStamp.spliceCapacity(payload: payload.count, spans: spans, idCount: idMax)
                let need = idMax + linesMax + bodyMax
                if hitBuffer.count < need {
                    hitBuffer.deallocate()
                    hitBuffer = .allocate(byteCount: max(need, 2 * hitBuffer.count), alignment: 16)
                }
                let base = hitBuffer.baseAddress!
                let idCount = ReplyStamp.writeIDText(kind: kind, requestId: rid, plain: id.client == nil, to: base)
                var lines = HeaderLines(at: base + idMax)
                if e.routed { lines.add("x-routed-model: ", routed) }
                lines.add("x-request-id: ", rid)
                lines.put(HeaderLines.hitTail)
                let bodyStart = idMax + lines.count
                let created = Int(Loop.wallSeconds())
                if created != createdSecond {
                    createdSecond = created
                    createdText = ReplyStamp.CreatedText(created)
                }
                guard let n = createdText.withBytes({ createdBytes in
                    ReplyStamp.splice(entry: payload, spans: spans, cuts: UnsafeRawBufferPointer(start: nil, count: 0),
                                      skipping: false, idText: UnsafeRawBufferPointer(start: base, count: idCount),
                                      created: createdBytes, into: base + bodyStart, capacity: hitBuffer.count - bodyStart)
                }) else { return nil }
                return .composed(lines: idMax..<bodyStart, end: bodyStart + n)
            }
            guard e.routed else { return compose(noModel) }
            if let r = e.servedModel.utf8.withContiguousStorageIfAvailable({ compose(UnsafeRawBufferPointer($0)) }) { return r }
            var served = e.servedModel
            return served.withUTF8 { compose(UnsafeRawBufferPointer($0)) }
        }
    }

    private func parseAndStart(_ c: HTTPServerConnection, kind: EndpointKind, head: HTTPRequestHead, body: [UInt8], rid: String,
                               identity: String?, memoKey: HitMemo.Key?, startNanos parseStart: UInt64) {
        var req: OpenAIRequest
        func reject(_ err: EngineError) {
            let n = runtime.writeError(err, to: c, requestId: rid)
            runtime.frontendAnswered(route: kind.name, status: err.status, requestId: rid,
                                     request: runtime.accessInfo(head, c), bytesIn: body.count, bytesOut: n, startNanos: parseStart)
        }
        switch OpenAIRequest.parse(kind: kind, body: body, canonical: runtime.cache != nil, chunking: runtime.promptChunking) {
        case .failure(let err): reject(err); return
        case .success(let r): req = r
        }
        stampTenant(&req, head: head, identity: identity)
        let estimate = runtime.estimator.estimate(req.promptSize)
        let needsRouting = req.model == nil || req.model == "auto" || req.model == ""
        if needsRouting && runtime.config.modelRegistry.isExactTokenCount {
            let req = req
            exactTokenCount(req, body: body) { [weak self, weak c] exact in
                guard let self, let c, !c.isClosed else { return }
                self.routeAndStart(c, kind: kind, head: head, req: req, body: body, rid: rid, identity: identity,
                                   tokens: exact ?? estimate, memoKey: memoKey)
            }
            return
        }
        routeAndStart(c, kind: kind, head: head, req: req, body: body, rid: rid, identity: identity, tokens: estimate,
                      memoKey: memoKey)
    }

    /// A relayed route: what routing needs (model, stream) read from its JSON or form body,
    /// then the same path as a generation (route, admission, pool, breakers, retries).
    private func startRelay(_ c: HTTPServerConnection, _ spec: RelaySpec, method: String, head: HTTPRequestHead,
                            body: [UInt8], rid: String, identity: String?) {
        let route = RelayRoute(name: spec.name, method: method, target: head.target, body: spec.body,
                               cacheable: spec.cacheable, contentType: head.headers["content-type"])
        let kind = EndpointKind.relay(route)
        var req: OpenAIRequest
        switch spec.body {
        case .json:
            switch OpenAIRequest.parse(kind: kind, body: body, canonical: runtime.cache != nil && spec.cacheable) {
            case .failure(let err):
                let n = runtime.writeError(err, to: c, requestId: rid)
                runtime.frontendAnswered(route: spec.name, status: err.status, requestId: rid, request: runtime.accessInfo(head, c),
                                         bytesIn: body.count, bytesOut: n, startNanos: Loop.nowNanos())
                return
            case .success(let r): req = r
            }
        case .multipart:
            let b = head.headers["content-type"].flatMap { MultipartForm.boundary(contentType: $0) }
            let model = b.flatMap { MultipartForm.field("model", in: body, boundary: $0) }
            let stream = b.flatMap { MultipartForm.field("stream", in: body, boundary: $0) }?.lowercased() == "true"
            req = .relay(kind, model: model, stream: stream)
        case .none:
            req = .relay(kind, model: nil, stream: false)
        }
        stampTenant(&req, head: head, identity: identity)
        routeAndStart(c, kind: kind, head: head, req: req, body: body, rid: rid, identity: identity,
                      tokens: runtime.estimator.estimate(req.promptSize), memoKey: nil)
    }

    private func answerFromMemo(_ c: HTTPServerConnection, kind: EndpointKind, entry e: HitMemo.Entry, reply: [UInt8],
                                rid: String, request: AccessRequestInfo?, bytesIn: Int, startNanos: UInt64) {
        var h = HTTPHeaders()
        if e.routed { h.add("x-routed-model", e.servedModel) }
        h.add("x-request-id", rid)
        h.add("x-cache", "HIT")
        let sent = ResponseWriter.answer(c, reply, stream: e.stream, headers: h)
        runtime.memoHitAnswered(kind: kind, servedModel: e.servedModel, requestedModel: e.requestedModel,
                                requestId: RequestID(client: rid, generated: 0),
                                request: request, bytesIn: bytesIn, bytesOut: sent, startNanos: startNanos)
    }

    /// model_registry.exact_token_count: ask a healthy backend's POST /tokenize (the chat template
    /// applied for chat), with a 100 ms deadline; nil (use the estimate) on any failure.
    private func exactTokenCount(_ req: OpenAIRequest, body: [UInt8], done: @escaping (Int?) -> Void) {
        // A backend of the fast model's pool: its tokenizer decides the threshold comparison.
        let fast = runtime.config.modelRegistry.fastModel
        guard let b = runtime.backends.all.first(where: { $0.isHealthy && $0.serves(fast) })
                ?? runtime.backends.all.first(where: { $0.isHealthy }) ?? runtime.backends.all.first else { done(nil); return }
        guard let q = OpenAIRequest.extract(body, key: req.kind == .chat ? "messages" : "prompt") else { done(nil); return }
        var h = HTTPHeaders()
        h.add("content-type", "application/json")
        if let k = b.apiKey { h.add("authorization", "Bearer " + k) }
        UpstreamFetch(loop: runtime.loop, pool: b.pool, path: "/tokenize", headers: h, timeout: .milliseconds(100),
                      method: "POST", body: q) { status, body in
            guard status == 200, case .success(let doc) = body.withUnsafeBytes({ JSONDocument.parse($0) }),
                  let n = JSONValue.number(json_object_get(doc.root, "count")) else { done(nil); return }
            done(Int(n))
        }
    }

    private func routeAndStart(_ c: HTTPServerConnection, kind: EndpointKind, head: HTTPRequestHead, req: OpenAIRequest,
                               body: [UInt8], rid: String, identity: String?, tokens: Int, memoKey: HitMemo.Key?) {
        var forward = body
        var extra = HTTPHeaders()
        let served: String
        switch router.route(requested: req.model, promptTokens: tokens, isKnown: { self.runtime.backends.isKnown($0) },
                                    servedModels: { self.runtime.backends.servedModels() }) {
        case .unservedDefault(let m, let served):
            // The client named no model; the registry's choice is the operator's: say which one is
            // missing and what can be asked for (a 404 like vLLM's unknown model, not a 503 that
            // invites retries: nothing changes until the config or the backends do).
            let list = served.isEmpty ? "none" : served.joined(separator: ", ")
            let err = EngineError(.modelNotFound, "No model was given, and the default model `\(m)` (model_registry) is not served by any backend. Served models: \(list). Name one in `model`.", param: "model")
            let n = runtime.writeError(err, to: c, requestId: rid)
            runtime.frontendAnswered(route: kind.name, status: 404, requestId: rid, request: runtime.accessInfo(head, c),
                                     bytesIn: body.count, bytesOut: n, startNanos: Loop.nowNanos())
            return
        case .unknownModel(let m):
            let known = Set(runtime.backends.all.flatMap { $0.models }).sorted().joined(separator: ", ")
            let n = runtime.writeError(EngineError(.modelNotFound, "The model `\(m)` does not exist. Valid models: \(known).", param: "model"), to: c, requestId: rid)
            runtime.frontendAnswered(route: kind.name, status: 404, requestId: rid,
                                     request: runtime.accessInfo(head, c), bytesIn: body.count, bytesOut: n, startNanos: Loop.nowNanos())
            return
        case .model(let m, let routed):
            served = m
            if routed { extra.add("x-routed-model", m) }
            // Always ask vLLM for a generation's usage chunk (token metrics, complete cache
            // entries); the session strips it for this client, who did not ask for it.
            var addUsage = req.stream && !req.includeUsage
            var rewritesModel = routed
            if case .relay(let r) = kind {
                addUsage = false
                rewritesModel = routed && r.body == .json // a form or no body is relayed as it came
            }
            if addUsage && !rewritesModel && !req.hasStreamOptions, let added = OpenAIRequest.addingIncludeUsage(to: body) {
                // A stream's usage is asked for without a second parse and rewrite of the body.
                forward = added
            } else if rewritesModel || addUsage {
                guard let rewritten = OpenAIRequest.rewrite(body, model: rewritesModel ? m : nil, includeUsage: addUsage) else {
                    let n = runtime.writeError(EngineError(.internalError, "The request could not be forwarded."), to: c, requestId: rid)
                    runtime.frontendAnswered(route: kind.name, status: 500, requestId: rid,
                                             request: runtime.accessInfo(head, c), bytesIn: body.count, bytesOut: n,
                                             startNanos: Loop.nowNanos())
                    return
                }
                forward = rewritten
            }
        }
        // Exact-mode routing needs the prompt's KV block hashes. The block map knows those of
        // prefixes seen before (no round trip); a prompt whose prefix is new is tokenized by a
        // backend's /tokenize before the session starts, and the answer teaches the map for the
        // requests after it. Without an answer in time, the estimated index decides.
        if let tok = runtime.promptTokenizer, kind == .chat || kind == .completion, let chunks = req.promptChunks,
           let r = runtime.backends.routing, r.shouldLearn(chunks, model: served) {
            guard let b = tokenizingBackend(served) else {
                r.learned(chunks, model: served, tokenIDs: nil)
                return startSession(c, kind: kind, head: head, req: req, forward: forward, rid: rid, identity: identity,
                                    served: served, extra: extra, memoKey: memoKey)
            }
            tok.tokenIDs(body: forward, backend: b) { [weak self, weak c, weak r] ids in
                r?.learned(chunks, model: served, tokenIDs: ids)
                guard let self, let c, !c.isClosed else { return }
                var req = req
                req.promptTokenIDs = ids
                self.startSession(c, kind: kind, head: head, req: req, forward: forward, rid: rid, identity: identity,
                                  served: served, extra: extra, memoKey: memoKey)
            }
            return
        }
        startSession(c, kind: kind, head: head, req: req, forward: forward, rid: rid, identity: identity, served: served,
                     extra: extra, memoKey: memoKey)
    }

    /// Which backend's /tokenize speaks for `model`'s tokenizer: a healthy one serving it whose
    /// breaker lets traffic through, the one with the fewest requests of ours in flight.
    private func tokenizingBackend(_ model: String) -> Backend? {
        let now = Loop.nowNanos()
        var best: Backend?
        for b in runtime.backends.all where b.isHealthy && runtime.backends.isEligible(b, model: model, now: now) {
            if best == nil || b.inFlight < best!.inFlight { best = b }
        }
        return best
    }

    private func startSession(_ c: HTTPServerConnection, kind: EndpointKind, head: HTTPRequestHead, req: OpenAIRequest,
                              forward: [UInt8], rid: String, identity: String?, served: String, extra: HTTPHeaders,
                              memoKey: HitMemo.Key?) {
        runtime.metrics.requestsInFlight += 1
        if req.stream { runtime.metrics.streamsStarted += 1 }
        let plan = cachePlan(kind: kind, head: head, req: req, served: served, identity: identity)
        if let mk = memoKey, let key = plan.key, let memo = runtime.hitMemo {
            memo.put(mk, HitMemo.Entry(cacheKey: key, servedModel: served, requestedModel: req.model, routed: extra["x-routed-model"] != nil,
                                       stream: req.stream, includeUsage: req.includeUsage))
        }
        let s = RequestSession(runtime: runtime, client: c, request: req, body: forward, requestId: rid,
                               requestedModel: req.model, servedModel: served, extraHeaders: extra, cachePlan: plan)
        c.context = s
        runtime.sessionStarted(s, request: runtime.accessInfo(head, c))
        s.start()
    }

    /// Cache and coalescing policy: what is cacheable (all complete answers, or only deterministic
    /// ones), Cache-Control (no-cache: skip the lookup, still store, never follow a flight but may
    /// lead one; no-store: none of these), and the key (endpoint, served model, canonical body,
    /// tenant unless shared_across_keys).
    private func cachePlan(kind: EndpointKind, head: HTTPRequestHead, req: OpenAIRequest, served: String, identity: String?) -> CachePlan {
        let cfg = runtime.config.cache
        // Usage in every chunk is a stream no other request asked for: not stored, not shared.
        guard runtime.cache != nil, let digest = req.canonicalHash, !req.continuousUsage,
              CacheKey.isCacheable(req, deterministicOnly: cfg.isDeterministicOnly) else {
            runtime.metrics.cacheBypasses += 1
            return .bypass
        }
        let cc = CachePolicy.from(cacheControl: head.headers["cache-control"])
        if !cc.lookup { runtime.metrics.cacheBypasses += 1 }
        let tenant = cfg.isSharedAcrossKeys ? nil : identity
        let key = CacheKey.make(kind: kind, servedModel: served, canonicalDigest: digest, tenant: tenant)
        return CachePlan(key: key, lookup: cc.lookup, store: cc.store, follow: cc.lookup && cc.store, lead: cc.store)
    }

    private func writeJSON(_ c: HTTPServerConnection, _ status: Int, _ body: [UInt8], _ rid: String,
                           headers: HTTPHeaders = HTTPHeaders()) {
        var h = headers
        h.add("content-type", "application/json")
        h.add("x-request-id", rid)
        runtime.metrics.recordStatus(status)
        c.writeResponse(status: status, headers: h, body: body)
    }

    private func writePrometheus(_ c: HTTPServerConnection, headers: HTTPHeaders) {
        var h = headers
        h.add("content-type", "text/plain; version=0.0.4; charset=utf-8")
        runtime.metrics.recordStatus(200)
        c.writeResponse(status: 200, headers: h, body: Array(runtime.prometheusText().utf8))
    }

    func connection(_ c: HTTPServerConnection, didFail failure: HTTPServerFailure) {
        let err: EngineError
        switch failure {
        case .malformed(let why): err = EngineError(.invalidRequest, "Malformed HTTP request: \(why).")
        case .headersTooLarge: err = EngineError(.headersTooLarge, "Request headers exceed \(runtime.config.server.maxHeaderBytes) bytes.")
        case .bodyTooLarge: err = EngineError(.bodyTooLarge, "Request body exceeds \(runtime.config.server.maxBodyBytes) bytes.")
        case .readTimeout: err = EngineError(.requestTimeout, "The request was not received in time.")
        }
        let rid = newRequestId()
        let n = runtime.writeError(err, to: c, requestId: rid)
        runtime.frontendAnswered(route: "-", status: err.status, requestId: rid, request: nil, bytesIn: 0, bytesOut: n,
                                 startNanos: Loop.nowNanos(),
                                 termination: failure == .readTimeout ? Termination(.clientTimeout, .request) : nil)
    }

    func connectionDidDrain(_ c: HTTPServerConnection) {
        (c.context as? RequestSession)?.clientDrained()
    }

    /// Stops keep-alive everywhere: idle connections close now, busy ones after their response.
    func drain() {
        isDraining = true
        for c in Array(connections.values) { c.closeWhenIdle() }
    }

    func connectionDidClose(_ c: HTTPServerConnection) {
        connections[c.id] = nil
        runtime.metrics.openConnections -= 1
        (c.context as? RequestSession)?.clientClosed()
    }

    /// Header lines written at a pointer the caller made room at: `name: value\r\n`, with CR and
    /// LF in a value turned into spaces (as HTTPHeaders.add does).
    struct HeaderLines {
        /// The lines after a hit's x-request-id.
        static let hitTail: StaticString = "x-cache: HIT\r\ncontent-type: application/json\r\n"

        let base: UnsafeMutableRawPointer
        private(set) var count = 0

        init(at base: UnsafeMutableRawPointer) { self.base = base }

        mutating func put(_ s: StaticString) {
            (base + count).copyMemory(from: s.utf8Start, byteCount: s.utf8CodeUnitCount)
            count += s.utf8CodeUnitCount
        }

        /// `name` (with its `: `), `value`, CRLF.
        mutating func add(_ name: StaticString, _ value: UnsafeRawBufferPointer) {
            put(name)
            if let v = value.baseAddress, value.count > 0 {
                let at = base + count
                at.copyMemory(from: v, byteCount: value.count)
                // Two memchr when there is none (the usual case), as HTTPHeaders.
                if memchr(v, 13, value.count) != nil || memchr(v, 10, value.count) != nil {
                    for i in 0..<value.count where value[i] == 13 || value[i] == 10 { at.storeBytes(of: 0x20, toByteOffset: i, as: UInt8.self) }
                }
                count += value.count
            }
            put("\r\n")
        }
    }

    // MARK: bodies

    func modelsBody() -> [UInt8] {
        var seen: Set<String> = []
        var out = Array("{\"object\":\"list\",\"data\":[".utf8)
        var first = true
        for b in runtime.backends.all {
            if let fixed = b.configuredModels {
                for m in fixed where seen.insert(m).inserted {
                    if !first { out.append(UInt8(ascii: ",")) }
                    first = false
                    out += Array("{\"id\":\(JSONText.quoted(m)),\"object\":\"model\",\"created\":\(Int(Loop.wallSeconds())),\"owned_by\":\"vllm\"}".utf8)
                }
            } else {
                for (i, m) in b.discoveredModels.enumerated() where seen.insert(m).inserted {
                    if !first { out.append(UInt8(ascii: ",")) }
                    first = false
                    out += b.modelObjects[i]
                }
            }
        }
        out += Array("]}".utf8)
        return out
    }

    func metricsJSON() -> String {
        let m = runtime.metrics
        let uptime = Double(Loop.nowNanos() - m.startedNanos) / 1e9
        var s = "{\"version\":\"\(engineVersion)\",\"uptime_seconds\":\(uptime),\"pid\":\(getpid()),"
        s += "\"requests_total\":\(m.requestsTotal),\"requests_in_flight\":\(m.requestsInFlight),"
        s += "\"streams_started\":\(m.streamsStarted),\"open_connections\":\(m.openConnections),\"connections_total\":\(m.connectionsTotal),"
        s += "\"responses\":{\"2xx\":\(m.responsesByClass[2]),\"4xx\":\(m.responsesByClass[4]),\"5xx\":\(m.responsesByClass[5])},"
        s += "\"rss_bytes\":\(ces_rss_bytes()),"
        if let p = ProcessStats.readSelf() {
            s += "\"process\":{\"cpu_seconds\":\(p.cpuSeconds),\"resident_memory_bytes\":\(p.residentMemoryBytes),"
            s += "\"open_fds\":\(p.openFDs.map { String($0) } ?? "null"),\"start_time_seconds\":\(p.startTimeSeconds)},"
        }
        let looked = m.cacheHits + m.cacheMisses
        s += "\"cache\":{\"enabled\":\(runtime.cache != nil),\"backend\":\"\(runtime.cache == nil ? "none" : runtime.cache is SharedMemoryCacheStore ? "shared_memory" : runtime.redis != nil ? "redis" : "memory")\",\"hits\":\(m.cacheHits),\"misses\":\(m.cacheMisses),"
        s += "\"hit_ratio\":\(looked > 0 ? Double(m.cacheHits) / Double(looked) : 0),\"stale_served\":\(m.cacheStaleServed),\"bypasses\":\(m.cacheBypasses),"
        s += "\"stores\":\(m.cacheStores),\"coalesced_followers\":\(m.coalescedFollowers)"
        if let mem = runtime.cache as? SynchronousCacheStore { s += ",\"entries\":\(mem.entryCount)" }
        if let r = runtime.redis { s += ",\"redis_up\":\(r.isConnected)" }
        s += "},"
        s += "\"backends\":["
        for (i, b) in runtime.backends.all.enumerated() {
            if i > 0 { s += "," }
            s += "{\"url\":\(JSONText.quoted(b.url)),\"healthy\":\(b.isHealthy),\"models\":["
            s += b.models.map { JSONText.quoted($0) }.joined(separator: ",")
            s += "],\"idle_connections\":\(b.pool.idleCount),\"upstream_connections_opened\":\(b.pool.opened)"
            s += ",\"breaker\":\"\(["closed", "open", "half-open"][b.breaker.gauge])\",\"requests_sent\":\(b.requestsSent)"
            if let l = b.load {
                s += ",\"kv_cache_usage\":\(l.kvUsage.map { "\($0)" } ?? "null"),\"num_requests_running\":\(l.running.map { "\($0)" } ?? "null"),\"num_requests_waiting\":\(l.waiting.map { "\($0)" } ?? "null")"
            } else {
                s += ",\"kv_cache_usage\":null"
            }
            s += "}"
        }
        s += "],\"healthy_backends\":\(runtime.backends.healthyCount)"
        if let a = runtime.admission {
            s += ",\"admission\":{\"queued\":\(a.queuedTotal),\"admitted\":\(a.admittedCount),\"enqueued\":\(a.enqueuedCount),\"rejected\":\(a.rejectedCount)}"
        }
        s += ",\"tenants\":\(runtime.tenantMetrics.json())"
        s += "}"
        return s
    }
}

public let engineVersion = "0.1.0"

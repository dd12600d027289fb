// SimServer: the simulator's driver. Accepts sockets, routes requests, answers the small
// endpoints, and drives every Generation through the KVScheduler (SimServer+Generation.swift).
// Owns: every HTTPServerConnection until it reports its close (the connection owns its
// Generation through `context`), the scheduler, counters, metrics and the live knobs. It is the
// delegate of all connections. Loop-confined and non-Sendable, like all drivers.
// STYLE-EXCEPTION: test tooling, so the per-request lifecycle lives in this driver instead of a
// pure machine; the one piece with real logic, the scheduler, is a pure machine (KVScheduler).

#if canImport(Glibc)
import Glibc
#endif
import CEventShim
import Reactor

struct SimStats {
    var requestsTotal = 0
    var chatRequests = 0
    var completionRequests = 0
    var responsesRequests = 0
    var embeddingRequests = 0
    /// /pooling, /classify, /score and /rerank (all their paths).
    var poolingRequests = 0
    var streamRequests = 0
    var aborted = 0
    var maxRunningSeen = 0
    var errorsInjected = 0
    var refusedConnections = 0
    var lastRequestHeaders = HTTPHeaders()
    var lastRequestBody: [UInt8] = []
}

final class SimServer: HTTPServerConnectionDelegate {
    let loop: Loop
    let settings: SimSettings
    let catalog: ModelCatalog
    var knobs: SimKnobs
    var scheduler: KVScheduler
    /// Automatic prefix caching (nil when --no-enable-prefix-caching) and the serial prefill line.
    var prefixCache: PrefixCache?
    var prefill: PrefillLine
    var stats = SimStats()
    var metrics: EngineMetrics
    var headers = ResponseHeaders()
    var rng: SplitMix64
    var active: [GenerationID: Generation] = [:]
    var nextGenerationID: UInt64 = 0
    /// Set while admitWaiting() runs, so completions inside it do not recurse into it.
    var isAdmitting = false
    /// Reused for every body and SSE event.
    var scratch = ByteWriter(capacity: 8192)
    /// Lifts `knobs.refuse` when a /sim/config asked for refuse_ms.
    var refuseTimer: Timer?
    /// --kv-events-config: publishes what `prefixCache` stores and evicts (nil when off).
    var kvEvents: KVEventPublisher?
    private var connections: [UInt64: HTTPServerConnection] = [:]
    private var nextConnectionID: UInt64 = 0
    private let limits: HTTPServerLimits

    init(loop: Loop, settings: SimSettings, knobs: SimKnobs) {
        self.loop = loop
        self.settings = settings
        self.knobs = knobs
        catalog = ModelCatalog(settings.models)
        scheduler = KVScheduler(totalBlocks: settings.kvBlocks, maxRunning: settings.maxNumSeqs)
        metrics = EngineMetrics(createdAt: Loop.wallSeconds(), maxModelLen: settings.maxModelLen)
        prefixCache = settings.prefixCaching ? PrefixCache(capacity: settings.kvBlocks) : nil
        prefill = PrefillLine(nanosPerToken: UInt64(settings.prefillMicrosPerToken * 1000))
        rng = SplitMix64(seed: settings.seed)
        limits = HTTPServerLimits(maxBodyBytes: 32 * 1024 * 1024, idleTimeout: settings.keepAliveTimeout)
    }

    /// POST /reset_prefix_cache: every cached block is gone (AllBlocksCleared).
    func resetPrefixCache() {
        prefixCache?.clear()
        kvEvents?.cleared()
    }

    func accept(_ fd: Int32) {
        if knobs.refuse {
            stats.refusedConnections += 1
            _ = Glibc.close(fd)
            return
        }
        nextConnectionID += 1
        let c = HTTPServerConnection(loop: loop, fd: fd, id: nextConnectionID, limits: limits)
        c.delegate = self
        connections[c.id] = c
    }

    // MARK: HTTPServerConnectionDelegate

    func connection(_ c: HTTPServerConnection, didReceive head: HTTPRequestHead, body: [UInt8]) {
        headers.refresh()
        if knobs.refuse && !head.path.hasPrefix("/sim/") {
            // A refusing upstream, seen from a kept-alive connection: EOF instead of an answer.
            c.close()
            return
        }
        let isGet = head.method == "GET"
        let isPost = head.method == "POST"
        switch head.path {
        case "/v1/completions":
            if isPost { generate(c, head, body, kind: .completion) } else { methodNotAllowed(c, head, "POST") }
        case "/v1/chat/completions":
            if isPost { generate(c, head, body, kind: .chat) } else { methodNotAllowed(c, head, "POST") }
        case "/v1/responses":
            if isPost { generate(c, head, body, kind: .responses) } else { methodNotAllowed(c, head, "POST") }
        case "/v1/embeddings":
            if isPost { pool(c, head, body, endpoint: .embeddings) } else { methodNotAllowed(c, head, "POST") }
        case "/pooling":
            if isPost { pool(c, head, body, endpoint: .pooling) } else { methodNotAllowed(c, head, "POST") }
        case "/classify":
            if isPost { pool(c, head, body, endpoint: .classify) } else { methodNotAllowed(c, head, "POST") }
        case "/score", "/v1/score":
            if isPost { score(c, head, body, isRerank: false) } else { methodNotAllowed(c, head, "POST") }
        case "/rerank", "/v1/rerank", "/v2/rerank":
            if isPost { score(c, head, body, isRerank: true) } else { methodNotAllowed(c, head, "POST") }
        case "/health":
            if isGet { c.writeResponse(status: 200, headers: headers.empty, body: []) } else { methodNotAllowed(c, head, "GET") }
        case "/ping":
            if isGet || isPost { c.writeResponse(status: 200, headers: headers.empty, body: []) } else { methodNotAllowed(c, head, "GET, POST") }
        case "/version":
            if isGet { respondJSON(c, Array(#"{"version":"0.32.0"}"#.utf8)) } else { methodNotAllowed(c, head, "GET") }
        case "/load":
            // vLLM answers 0 unless started with --enable-server-load-tracking.
            if isGet { respondJSON(c, Array(#"{"server_load":0}"#.utf8)) } else { methodNotAllowed(c, head, "GET") }
        case "/v1/models":
            if isGet { respondJSON(c, modelsBody()) } else { methodNotAllowed(c, head, "GET") }
        case "/metrics":
            if isGet { c.writeResponse(status: 200, headers: headers.metrics, body: metricsBody()) } else { methodNotAllowed(c, head, "GET") }
        case "/tokenize":
            if isPost { respond(c, tokenize(head, body)) } else { methodNotAllowed(c, head, "POST") }
        case "/detokenize":
            if isPost { respond(c, detokenize(head, body)) } else { methodNotAllowed(c, head, "POST") }
        case "/reset_prefix_cache" where kvEvents != nil:
            // vLLM serves it only with VLLM_SERVER_DEV_MODE=1; here only with KV events on (it
            // publishes AllBlocksCleared).
            if isPost { resetPrefixCache(); c.writeResponse(status: 200, headers: headers.empty, body: []) } else { methodNotAllowed(c, head, "POST") }
        case "/sim/config":
            if isPost { respond(c, configure(body)) } else if isGet { respondJSON(c, knobs.json()) } else { methodNotAllowed(c, head, "GET, POST") }
        case "/sim/stats":
            if isGet { respondJSON(c, statsBody()) } else { methodNotAllowed(c, head, "GET") }
        case "/sim/reset":
            if isPost { resetStats(); respondJSON(c, statsBody()) } else { methodNotAllowed(c, head, "POST") }
        default:
            if let id = storedResponseID(head.path) {
                // GET /v1/responses/{id}, POST /v1/responses/{id}/cancel: nothing is stored.
                let allowed = id.isCancel ? isPost : isGet
                if allowed { respond(c, .responseNotFound(id.id)) } else { methodNotAllowed(c, head, id.isCancel ? "POST" : "GET") }
                return
            }
            respond(c, .notFound, omitBody: head.method == "HEAD")
        }
    }

    /// `/v1/responses/{id}` or `/v1/responses/{id}/cancel` (one non-empty path segment for id).
    private func storedResponseID(_ path: Substring) -> (id: String, isCancel: Bool)? {
        let prefix = "/v1/responses/"
        guard path.hasPrefix(prefix) else { return nil }
        var rest = path.dropFirst(prefix.count)
        let isCancel = rest.hasSuffix("/cancel")
        if isCancel { rest = rest.dropLast("/cancel".count) }
        guard !rest.isEmpty, !rest.contains("/") else { return nil }
        return (String(rest), isCancel)
    }

    func connection(_ c: HTTPServerConnection, didFail failure: HTTPServerFailure) {
        headers.refresh()
        var h = headers.empty
        h.add("content-type", "text/plain; charset=utf-8")
        switch failure {
        case .readTimeout:
            c.close()
        case .bodyTooLarge:
            c.writeResponse(status: 413, headers: h, body: Array("Request body too large.".utf8))
        case .headersTooLarge:
            c.writeResponse(status: 431, headers: h, body: Array("Request headers too large.".utf8))
        case .malformed:
            c.writeResponse(status: 400, headers: h, body: Array("Invalid HTTP request received.".utf8))
        }
    }

    func connectionDidDrain(_ c: HTTPServerConnection) {
        guard let g = c.context as? Generation, g.phase == .blockedOnWrite else { return }
        g.phase = .running
        produce(g)
    }

    func connectionDidClose(_ c: HTTPServerConnection) {
        connections.removeValue(forKey: c.id)
        if let g = c.context as? Generation { abort(g) }
    }

    // MARK: answers

    func respond(_ c: HTTPServerConnection, _ result: Result<[UInt8], APIError>) {
        switch result {
        case .success(let body): respondJSON(c, body)
        case .failure(let e): respond(c, e)
        }
    }

    func respond(_ c: HTTPServerConnection, _ e: APIError, omitBody: Bool = false) {
        headers.refresh()
        c.writeResponse(status: e.status, headers: headers.json, body: omitBody ? [] : e.body)
    }

    func respondJSON(_ c: HTTPServerConnection, _ body: [UInt8]) {
        c.writeResponse(status: 200, headers: headers.json, body: body)
    }

    /// Starlette's 405 carries `allow`. A HEAD request gets no body (HTTPServerConnection frames
    /// by the body given, so the content-length is 0 rather than Starlette's 31).
    private func methodNotAllowed(_ c: HTTPServerConnection, _ head: HTTPRequestHead, _ allow: String) {
        let body = head.method == "HEAD" ? [] : APIError.methodNotAllowed.body
        c.writeResponse(status: 405, headers: headers.jsonAllowing(allow), body: body)
    }

    private func modelsBody() -> [UInt8] {
        let created = Int(Loop.wallSeconds())
        var w = ByteWriter(capacity: 512)
        w.write("{\"object\":\"list\",\"data\":[")
        for (i, name) in catalog.escapedNames.enumerated() {
            if i > 0 { w.write(byte: UInt8(ascii: ",")) }
            w.write("{\"id\":\"")
            w.write(name)
            w.write("\",\"object\":\"model\",\"created\":")
            w.write(int: created)
            w.write(",\"owned_by\":\"vllm\",\"root\":\"")
            w.write(name)
            w.write("\",\"parent\":null,\"max_model_len\":")
            w.write(int: settings.maxModelLen)
            w.write(",\"permission\":[{\"id\":\"modelperm-")
            w.write(rng.hex16())
            w.write("\",\"object\":\"model_permission\",\"created\":")
            w.write(int: created)
            w.write(",\"allow_create_engine\":false,\"allow_sampling\":true,\"allow_logprobs\":true,\"allow_search_indices\":false,\"allow_view\":true,\"allow_fine_tuning\":false,\"organization\":\"*\",\"group\":null,\"is_blocking\":false}]}")
        }
        w.write("]}")
        return w.bytes
    }

    private func metricsBody() -> [UInt8] {
        let gauges = EngineMetrics.Gauges(running: scheduler.runningCount, waiting: scheduler.waitingCount,
                                          kvUsage: kvUsage(now: Loop.nowNanos()))
        return metrics.render(model: settings.models[0], gauges: gauges, settings: settings)
    }

    /// Blocks held now by running requests over the cache size, unless overridden; while a
    /// request waits for KV room, the blocks reserved (KVScheduler's header says why).
    func kvUsage(now: UInt64) -> Double {
        if knobs.kvUsageOverride >= 0 { return knobs.kvUsageOverride }
        var used = 0
        for g in active.values where g.phase != .waiting && g.phase != .finished {
            used += g.heldBlocks(now: now, blockSize: settings.blockSize)
        }
        if scheduler.isBlockedOnKV { used = max(used, scheduler.reservedBlocks) }
        return Double(min(used, settings.kvBlocks)) / Double(settings.kvBlocks)
    }
}

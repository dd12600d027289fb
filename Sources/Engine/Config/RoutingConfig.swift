// RoutingConfig: `routing.*`, how a request's backend is chosen among those serving its model
// (issue 13). round_robin is the weighted round-robin of earlier releases; prefix_aware scores
// each candidate by the prompt prefix it probably caches (estimated mode: what this process sent
// it recently), its queue and its KV headroom (RoutingScorer), with two guards against piling a
// hot prefix onto one replica (in-flight spread, and the recent share: `share_ratio`). Exact mode
// (`kv_events: true`) takes the prefix term from vLLM's KV-cache events instead: each instance
// with a `kv_events_url` is subscribed to (KVEventsDriver), and a prompt's KV block hashes come
// from ChunkBlockMap (a prefix seen before) or the backend's /tokenize (PromptTokenizer,
// `tokenize_timeout_ms`). Rules: kv_events needs policy prefix_aware and at least one instance
// with a kv_events_url (instances without one are routed by load alone); a kv_events_url while
// kv_events is false is accepted and unused (one switch turns it on).

extension EngineConfig {
    public enum RoutingPolicy: String, Sendable, Equatable {
        case roundRobin = "round_robin"
        case prefixAware = "prefix_aware"
    }

    public struct RoutingConfig: Sendable, Equatable {
        public var policy: RoutingPolicy
        public var prefixWeight: Double
        public var queueWeight: Double
        public var kvWeight: Double
        /// Prompt bytes per chunk of the estimated index (GIE's block size, in characters).
        public var chunkChars: Int
        /// Leading chunks looked at per request (bounds the hashing work: chunk_chars × this bytes).
        public var maxPrefixChunks: Int
        /// Chunks remembered per backend; 0 derives it from the backend's KV cache size
        /// (kv_cache_size_tokens × chars_per_token ÷ chunk_chars), 16384 while that is unknown.
        public var indexChunksPerBackend: Int
        /// Characters per token for that derivation.
        public var charsPerToken: Double
        /// Imbalance guard: in-flight spread (max − min) above this…
        public var imbalanceAbsolute: Int
        /// …and max above this × min: ignore prefix, least loaded first.
        public var imbalanceRatio: Double
        /// Share guard: a backend whose recent share of this process's assignments (÷ its weight)
        /// is above this × the mean loses its prefix term (0 turns the guard off)…
        public var shareRatio: Double
        /// …over about this many recent assignments (a count decayed by 1 − 1/window each).
        public var shareWindow: Int
        /// Exact mode (vLLM KV-cache events over ZMQ); each instance's kv_events_url.
        public var kvEvents: Bool
        /// Exact mode: how long a request whose prompt prefix is new waits for its token ids from
        /// /tokenize before it is routed with the estimated index instead.
        public var tokenizeTimeoutMillis: Int

        public init(
            policy: RoutingPolicy = .roundRobin,
            prefixWeight: Double = 3,
            queueWeight: Double = 2,
            kvWeight: Double = 2,
            chunkChars: Int = 256,
            maxPrefixChunks: Int = 128,
            indexChunksPerBackend: Int = 0,
            charsPerToken: Double = 4,
            imbalanceAbsolute: Int = 8,
            imbalanceRatio: Double = 1.5,
            shareRatio: Double = 1.25,
            shareWindow: Int = 256,
            kvEvents: Bool = false,
            tokenizeTimeoutMillis: Int = 50
        ) {
            self.policy = policy
            self.prefixWeight = prefixWeight
            self.queueWeight = queueWeight
            self.kvWeight = kvWeight
            self.chunkChars = chunkChars
            self.maxPrefixChunks = maxPrefixChunks
            self.indexChunksPerBackend = indexChunksPerBackend
            self.charsPerToken = charsPerToken
            self.imbalanceAbsolute = imbalanceAbsolute
            self.imbalanceRatio = imbalanceRatio
            self.shareRatio = shareRatio
            self.shareWindow = shareWindow
            self.kvEvents = kvEvents
            self.tokenizeTimeoutMillis = tokenizeTimeoutMillis
        }
    }
}

extension ConfigLoader {
    static func decodeRouting(_ section: Field, into c: inout EngineConfig.RoutingConfig) throws(ConfigError) {
        for f in try section.entries() {
            switch f.name {
            case "policy":
                let text = try f.string()
                guard let p = EngineConfig.RoutingPolicy(rawValue: text) else {
                    throw .invalid(key: f.key, message: "must be round_robin or prefix_aware, got \(quotedForMessage(text))")
                }
                c.policy = p
            case "weights":
                for w in try f.entries() {
                    switch w.name {
                    case "prefix": c.prefixWeight = try w.double()
                    case "queue": c.queueWeight = try w.double()
                    case "kv": c.kvWeight = try w.double()
                    default: throw w.unknownKey()
                    }
                }
            case "chunk_chars": c.chunkChars = try f.int()
            case "max_prefix_chunks": c.maxPrefixChunks = try f.int()
            case "index_chunks_per_backend": c.indexChunksPerBackend = try f.int()
            case "chars_per_token": c.charsPerToken = try f.double()
            case "imbalance_threshold": c.imbalanceAbsolute = try f.int()
            case "imbalance_ratio": c.imbalanceRatio = try f.double()
            case "share_ratio": c.shareRatio = try f.double()
            case "share_window": c.shareWindow = try f.int()
            case "kv_events": c.kvEvents = try f.bool()
            case "tokenize_timeout_ms": c.tokenizeTimeoutMillis = try f.int()
            default: throw f.unknownKey()
            }
        }
    }

    static func validateRouting(_ config: EngineConfig) throws(ConfigError) {
        let r = config.routing
        func need(_ ok: Bool, _ key: String, _ message: @autoclosure () -> String) throws(ConfigError) {
            if !ok { throw .invalid(key: key, message: message()) }
        }
        for (key, w) in [("routing.weights.prefix", r.prefixWeight), ("routing.weights.queue", r.queueWeight),
                         ("routing.weights.kv", r.kvWeight)] {
            try need(w.isFinite && w >= 0 && w <= 1000, key, "must be in 0...1000, got \(w)")
        }
        try need(r.prefixWeight + r.queueWeight + r.kvWeight > 0, "routing.weights", "must not all be 0")
        try need((16...65536).contains(r.chunkChars), "routing.chunk_chars", "must be 16-65536, got \(r.chunkChars)")
        try need((1...4096).contains(r.maxPrefixChunks), "routing.max_prefix_chunks", "must be 1-4096, got \(r.maxPrefixChunks)")
        try need((0...4_000_000).contains(r.indexChunksPerBackend), "routing.index_chunks_per_backend",
                 "must be 0-4000000 (0 = from the backend's KV size), got \(r.indexChunksPerBackend)")
        try need(r.charsPerToken.isFinite && r.charsPerToken >= 0.5 && r.charsPerToken <= 64, "routing.chars_per_token",
                 "must be in 0.5...64, got \(r.charsPerToken)")
        try need((0...1_000_000).contains(r.imbalanceAbsolute), "routing.imbalance_threshold",
                 "must be 0-1000000, got \(r.imbalanceAbsolute)")
        try need(r.imbalanceRatio.isFinite && r.imbalanceRatio >= 1 && r.imbalanceRatio <= 1000, "routing.imbalance_ratio",
                 "must be in 1...1000, got \(r.imbalanceRatio)")
        try need(r.shareRatio == 0 || (r.shareRatio.isFinite && r.shareRatio >= 1 && r.shareRatio <= 1000), "routing.share_ratio",
                 "must be 0 (off) or in 1...1000, got \(r.shareRatio)")
        try need((1...1_000_000).contains(r.shareWindow), "routing.share_window", "must be 1-1000000, got \(r.shareWindow)")
        try need((1...10_000).contains(r.tokenizeTimeoutMillis), "routing.tokenize_timeout_ms",
                 "must be 1-10000, got \(r.tokenizeTimeoutMillis)")
        for (i, instance) in config.vllm.instances.enumerated() {
            guard let url = instance.kvEventsUrl else { continue }
            if let problem = kvEventsURLProblem(url) {
                throw .invalid(key: "vllm.instances[\(i)].kv_events_url", message: problem)
            }
        }
        if r.kvEvents {
            try need(r.policy == .prefixAware, "routing.kv_events",
                     "needs routing.policy prefix_aware (round_robin does not look at prefixes)")
            try need(config.vllm.instances.contains { $0.kvEventsUrl != nil }, "routing.kv_events",
                     "is true but no vllm.instances[] entry has a kv_events_url (vLLM's --kv-events-config endpoint, tcp://host:5557)")
        }
    }

    /// nil when `url` is tcp://host:port (host a name, IPv4, or a bracketed IPv6; port 1-65535).
    static func kvEventsURLProblem(_ url: String) -> String? {
        let shape = "must look like tcp://host:port, got \(quotedForMessage(url))"
        guard url.lowercased().hasPrefix("tcp://") else { return shape }
        let rest = url.dropFirst(6)
        guard let colon = rest.lastIndex(of: ":") else { return shape }
        var host = rest[..<colon]
        let port = rest[rest.index(after: colon)...]
        if host.hasPrefix("[") && host.hasSuffix("]") {
            host = host.dropFirst().dropLast()
            guard !host.isEmpty, host.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return shape }
        } else {
            guard !host.isEmpty,
                host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_" || $0 == "*") })
            else { return shape }
        }
        guard port.count <= 5, port.allSatisfy({ $0.isASCII && $0.isNumber }), let p = Int(port), (1...65535).contains(p) else {
            return "has an invalid port (1-65535), got \(quotedForMessage(url))"
        }
        return nil
    }
}

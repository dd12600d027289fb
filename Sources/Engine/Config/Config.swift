// Config.swift: the typed configuration snapshot the Engine starts with (plain values, Sendable).
// ConfigLoader builds it from YAML plus environment overrides and validates it; each process keeps
// its own immutable copy. Defaults follow the original engine's section 3 and configs/default.yaml,
// except redis.url, which defaults to empty (the in-process cache) instead of a local Redis.
// STYLE-EXCEPTION: times are `...Seconds: Double`, not `Duration`, so each field mirrors its YAML
// key one to one; stages convert with `.seconds(validated: x)` (Duration+ConfigSeconds.swift).
// ConfigLoader.validate bounds every number (ConfigLimits.swift).

public struct EngineConfig: Sendable, Equatable {
    public var server: ServerConfig
    public var vllm: VLLMConfig
    public var redis: RedisConfig
    public var cache: CacheConfig
    public var admissionControl: AdmissionConfig
    public var circuitBreaker: BreakerConfig
    public var modelRegistry: ModelRegistryConfig
    public var auth: AuthConfig
    public var routing: RoutingConfig = RoutingConfig()

    public init(
        server: ServerConfig = ServerConfig(),
        vllm: VLLMConfig = VLLMConfig(),
        redis: RedisConfig = RedisConfig(),
        cache: CacheConfig = CacheConfig(),
        admissionControl: AdmissionConfig = AdmissionConfig(),
        circuitBreaker: BreakerConfig = BreakerConfig(),
        modelRegistry: ModelRegistryConfig = ModelRegistryConfig(),
        auth: AuthConfig = AuthConfig()
    ) {
        self.server = server
        self.vllm = vllm
        self.redis = redis
        self.cache = cache
        self.admissionControl = admissionControl
        self.circuitBreaker = circuitBreaker
        self.modelRegistry = modelRegistry
        self.auth = auth
    }

    /// `server.*`: the listening side.
    public struct ServerConfig: Sendable, Equatable {
        public var host: String
        /// 0 asks the kernel for an ephemeral port (tests).
        public var port: Int
        public var maxBodyBytes: Int
        public var maxHeaderBytes: Int
        public var readTimeoutSeconds: Double
        public var idleTimeoutSeconds: Double
        public var drainTimeoutSeconds: Double
        /// Processes to run, one loop each; 0 means one per core.
        public var workers: Int
        /// A separate port for /metrics; nil serves metrics on `port`.
        public var metricsPort: Int?
        /// Lowercase swift-log level name: trace, debug, info, notice, warning, error, critical.
        public var logLevel: String
        /// Where the access log (one JSON line per finished request) goes.
        public var accessLog: AccessLogDestination
        /// Let another process (another engine-server, or any program) listen on the same port
        /// through SO_REUSEPORT. Off: start-up refuses a port someone already listens on
        /// (PortGuard); the Engine's own workers share the port whatever this says.
        public var sharePort: Bool

        public init(
            host: String = "0.0.0.0",
            port: Int = 8000,
            maxBodyBytes: Int = 4_194_304,
            maxHeaderBytes: Int = 32_768,
            readTimeoutSeconds: Double = 30,
            idleTimeoutSeconds: Double = 75,
            drainTimeoutSeconds: Double = 30,
            workers: Int = 0,
            metricsPort: Int? = nil,
            logLevel: String = "info",
            accessLog: AccessLogDestination = .stdout,
            sharePort: Bool = false
        ) {
            self.host = host
            self.port = port
            self.maxBodyBytes = maxBodyBytes
            self.maxHeaderBytes = maxHeaderBytes
            self.readTimeoutSeconds = readTimeoutSeconds
            self.idleTimeoutSeconds = idleTimeoutSeconds
            self.drainTimeoutSeconds = drainTimeoutSeconds
            self.workers = workers
            self.metricsPort = metricsPort
            self.logLevel = logLevel
            self.accessLog = accessLog
            self.sharePort = sharePort
        }
    }

    /// `server.access_log`: `stdout` (default), `stderr`, `off`, or a file path (appended to;
    /// each worker opens it with O_APPEND, so whole batches of lines never interleave).
    public enum AccessLogDestination: Sendable, Equatable {
        case off
        case stdout
        case stderr
        case file(String)
    }

    /// `vllm.*`: the upstream servers and how we talk to them.
    public struct VLLMConfig: Sendable, Equatable {
        public var instances: [Instance]
        public var timeoutSeconds: Double
        public var retryCount: Int
        public var retryBackoffSeconds: Double
        public var healthCheckIntervalSeconds: Double
        /// Longest SSE event (its lines together) relayed from a backend; a longer one ends the
        /// client's stream with an error event.
        public var maxEventBytes: Int

        public init(
            instances: [Instance] = [Instance(url: "http://localhost:8080")],
            timeoutSeconds: Double = 120,
            retryCount: Int = 2,
            retryBackoffSeconds: Double = 0.5,
            healthCheckIntervalSeconds: Double = 15,
            maxEventBytes: Int = 1 << 20
        ) {
            self.instances = instances
            self.timeoutSeconds = timeoutSeconds
            self.retryCount = retryCount
            self.retryBackoffSeconds = retryBackoffSeconds
            self.healthCheckIntervalSeconds = healthCheckIntervalSeconds
            self.maxEventBytes = maxEventBytes
        }

        /// One vLLM server. The URL is parsed once, when set; `scheme`, `host`, `port` and
        /// `basePath` read the parsed parts. For a URL that does not parse they are empty/0, and
        /// `urlProblem` says why (ConfigLoader refuses such a config).
        public struct Instance: Sendable, Equatable {
            public var url: String {
                didSet { parsed = HTTPURLParts.parse(url) }
            }
            /// Models this instance serves; nil means any.
            public var models: [String]?
            /// Sent upstream as `Authorization: Bearer <apiKey>`.
            public var apiKey: String?
            /// Relative share of traffic, at least 1.
            public var weight: Int
            /// Exact mode: this instance's KV-cache event publisher, tcp://host:port (RoutingConfig).
            public var kvEventsUrl: String?
            private var parsed: Result<HTTPURLParts, HTTPURLParts.Problem>

            public init(url: String, models: [String]? = nil, apiKey: String? = nil, weight: Int = 1) {
                self.url = url
                self.models = models
                self.apiKey = apiKey
                self.weight = weight
                self.parsed = HTTPURLParts.parse(url)
            }

            /// "http" or "https" (lowercased).
            public var scheme: String { (try? parsed.get())?.scheme ?? "" }
            /// Host name or address; an IPv6 literal comes without its brackets.
            public var host: String { (try? parsed.get())?.host ?? "" }
            /// The explicit port, else 80 for http and 443 for https.
            public var port: Int { (try? parsed.get())?.port ?? 0 }
            /// The URL path without trailing "/" and without a trailing "/v1": "" or "/prefix".
            /// Requests go to `basePath + "/v1/..."`.
            public var basePath: String { (try? parsed.get())?.basePath ?? "" }

            /// Why this instance's URL cannot be used, or nil if it can.
            public var urlProblem: String? {
                switch parsed {
                case .failure(let problem):
                    return problem.message
                case .success(let parts) where parts.scheme == "https":
                    // Parsed fully so that adding TLS only has to drop this check.
                    return "https is not supported yet"
                case .success:
                    return nil
                }
            }
        }
    }

    /// `redis.*`: the shared cache and coalescing backend.
    public struct RedisConfig: Sendable, Equatable {
        /// Empty means no Redis: use the in-process cache (each process has its own).
        public var url: String
        public var socketTimeoutSeconds: Double

        public init(url: String = "", socketTimeoutSeconds: Double = 0.25) {
            self.url = url
            self.socketTimeoutSeconds = socketTimeoutSeconds
        }
    }

    /// `cache.*`: the response cache.
    public struct CacheConfig: Sendable, Equatable {
        public var isEnabled: Bool
        public var maxSize: Int
        /// Bytes of keys and stored answers the in-process and shared-memory stores keep (a Redis
        /// store is bounded by `max_size` and Redis's own memory policy).
        public var maxBytes: Int
        public var ttlSeconds: Double
        /// How long an expired entry may still be served when every backend is down.
        public var staleTtlSeconds: Double
        /// Cache (and coalesce) only requests that are deterministic (temperature 0 or a fixed
        /// seed). On by default: a sampled answer handed to every identical request is not what
        /// vLLM would do; caching them is a choice the operator makes.
        public var isDeterministicOnly: Bool
        /// Share entries between API keys (otherwise the key is part of the cache key).
        public var isSharedAcrossKeys: Bool

        public init(
            isEnabled: Bool = true,
            maxSize: Int = 256,
            maxBytes: Int = 128 << 20,
            ttlSeconds: Double = 300,
            staleTtlSeconds: Double = 3600,
            isDeterministicOnly: Bool = true,
            isSharedAcrossKeys: Bool = false
        ) {
            self.isEnabled = isEnabled
            self.maxSize = maxSize
            self.maxBytes = maxBytes
            self.ttlSeconds = ttlSeconds
            self.staleTtlSeconds = staleTtlSeconds
            self.isDeterministicOnly = isDeterministicOnly
            self.isSharedAcrossKeys = isSharedAcrossKeys
        }
    }

    /// `admission_control.*`: load shedding driven by upstream KV-cache usage (fractions 0...1).
    public struct AdmissionConfig: Sendable, Equatable {
        public var isEnabled: Bool
        public var softLimit: Double
        public var hardLimit: Double
        public var pollIntervalSeconds: Double
        public var maxQueue: Int
        public var maxWaitSeconds: Double
        /// Issue 14: fair queueing across tenants (default) or one FIFO.
        public var fairness: FairnessPolicy = .fair
        /// Without auth, the request header that names the tenant (nil: every request is one tenant).
        public var tenantHeader: String?
        /// Settings of header-named tenants (each needs `name`).
        public var tenants: [TenantConfig] = []
        /// A request's expected completion tokens when it gives no max_tokens (its queue cost and
        /// its reservation against tokens_per_minute).
        public var expectedOutputTokens: Int = 256
        /// Requests one backend runs at once through this Engine (all workers together; each
        /// worker holds its share, ⌊n / workers⌋ and at least 1). At the cap a backend reads QUEUE,
        /// so the queue's order, not the backend's FIFO, decides who runs next. 0 = no cap.
        public var maxInflightPerBackend: Int = 0

        public init(
            isEnabled: Bool = true,
            softLimit: Double = 0.70,
            hardLimit: Double = 0.90,
            pollIntervalSeconds: Double = 1.0,
            maxQueue: Int = 256,
            maxWaitSeconds: Double = 30
        ) {
            self.isEnabled = isEnabled
            self.softLimit = softLimit
            self.hardLimit = hardLimit
            self.pollIntervalSeconds = pollIntervalSeconds
            self.maxQueue = maxQueue
            self.maxWaitSeconds = maxWaitSeconds
        }
    }

    /// `circuit_breaker.*`: per-instance breaker.
    public struct BreakerConfig: Sendable, Equatable {
        public var failureThreshold: Int
        public var cooldownSeconds: Double

        public init(failureThreshold: Int = 5, cooldownSeconds: Double = 30) {
            self.failureThreshold = failureThreshold
            self.cooldownSeconds = cooldownSeconds
        }
    }

    /// `model_registry.*`: which model a request is routed to.
    public struct ModelRegistryConfig: Sendable, Equatable {
        public var fastModel: String
        public var largeModel: String
        public var fastModelTokenThreshold: Int
        /// nil disables the fallback.
        public var fallbackModel: String?
        /// Count tokens exactly instead of estimating from the text length.
        public var isExactTokenCount: Bool
        /// Accepted for compatibility with the original's config files; not used.
        public var fallbackCacheSimilarityThreshold: Double?

        public init(
            fastModel: String = "mistralai/Mistral-7B-Instruct-v0.2",
            largeModel: String = "meta-llama/Meta-Llama-3-70B-Instruct",
            fastModelTokenThreshold: Int = 512,
            fallbackModel: String? = "mistralai/Mistral-7B-Instruct-v0.2",
            isExactTokenCount: Bool = false,
            fallbackCacheSimilarityThreshold: Double? = nil
        ) {
            self.fastModel = fastModel
            self.largeModel = largeModel
            self.fastModelTokenThreshold = fastModelTokenThreshold
            self.fallbackModel = fallbackModel
            self.isExactTokenCount = isExactTokenCount
            self.fallbackCacheSimilarityThreshold = fallbackCacheSimilarityThreshold
        }
    }

    /// `auth.*`: client API keys.
    public struct AuthConfig: Sendable, Equatable {
        public var isEnabled: Bool
        public var apiKeys: [String]
        /// The `auth.api_keys` entries written as mappings (their keys are in `apiKeys` too).
        public var keyTenants: [TenantConfig] = []
        /// A file with one key per line, read by the auth stage at start-up.
        public var apiKeysFile: String?
        /// Require a key for /metrics too.
        public var isMetricsProtected: Bool

        public init(
            isEnabled: Bool = false,
            apiKeys: [String] = [],
            apiKeysFile: String? = nil,
            isMetricsProtected: Bool = false
        ) {
            self.isEnabled = isEnabled
            self.apiKeys = apiKeys
            self.apiKeysFile = apiKeysFile
            self.isMetricsProtected = isMetricsProtected
        }
    }
}

/// The parts of an `http://host[:port][/path]` URL. Hand-written rather than Foundation's URL:
/// we want exactly this shape and a precise reason when a URL does not have it.
struct HTTPURLParts: Sendable, Equatable {
    struct Problem: Error, Sendable, Equatable {
        var message: String
    }

    var scheme: String
    var host: String
    var port: Int
    var basePath: String

    static func parse(_ url: String) -> Result<HTTPURLParts, Problem> {
        let shape = "must look like http://host[:port][/path]"
        if url.isEmpty { return .failure(Problem(message: "must not be empty")) }
        let scalars = Array(url.unicodeScalars)
        if scalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7F }) {
            return .failure(Problem(message: "must not contain spaces or control characters"))
        }

        let lowered = url.lowercased()
        let scheme: String
        let defaultPort: Int
        if lowered.hasPrefix("http://") {
            (scheme, defaultPort) = ("http", 80)
        } else if lowered.hasPrefix("https://") {
            (scheme, defaultPort) = ("https", 443)
        } else {
            return .failure(Problem(message: "\(shape), got \(quotedForMessage(url))"))
        }
        let rest = Substring(url.dropFirst(scheme.count + 3))
        if rest.contains("?") || rest.contains("#") {
            return .failure(Problem(message: "must not have a query or fragment, got \(quotedForMessage(url))"))
        }
        let authority = rest.prefix { $0 != "/" }
        let path = rest.dropFirst(authority.count)
        // Deliberately not echoing the URL: user info usually means a password.
        if authority.contains("@") { return .failure(Problem(message: "must not contain user info")) }

        var host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            // IPv6 literal, e.g. http://[::1]:8080
            guard let close = authority.firstIndex(of: "]") else {
                return .failure(Problem(message: "\(shape), got \(quotedForMessage(url))"))
            }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else {
                    return .failure(Problem(message: "\(shape), got \(quotedForMessage(url))"))
                }
                portText = after.dropFirst()
            }
            if host.isEmpty || !host.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) {
                return .failure(Problem(message: "has an invalid IPv6 host, got \(quotedForMessage(url))"))
            }
        } else {
            if let colon = authority.firstIndex(of: ":") {
                host = authority[..<colon]
                portText = authority[authority.index(after: colon)...]
            } else {
                host = authority
            }
            let isHostCharacter: (Character) -> Bool = {
                $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_")
            }
            if host.isEmpty { return .failure(Problem(message: "has no host, got \(quotedForMessage(url))")) }
            if !host.allSatisfy(isHostCharacter) {
                return .failure(Problem(message: "has an invalid host, got \(quotedForMessage(url))"))
            }
        }

        var port = defaultPort
        if let portText {
            guard portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
                let value = Int(portText), (1...65535).contains(value)
            else {
                return .failure(Problem(message: "has an invalid port (1-65535), got \(quotedForMessage(url))"))
            }
            port = value
        }

        var basePath = path
        while basePath.hasSuffix("/") { basePath = basePath.dropLast() }
        if basePath.hasSuffix("/v1") { basePath = basePath.dropLast(3) }
        while basePath.hasSuffix("/") { basePath = basePath.dropLast() }

        return .success(HTTPURLParts(scheme: scheme, host: String(host), port: port, basePath: String(basePath)))
    }
}

/// A value quoted for a one-line error message: escaped and cut to a readable length.
func quotedForMessage(_ value: String) -> String {
    var out = "\""
    var count = 0
    for scalar in value.unicodeScalars {
        if count == 80 {
            out += "..."
            break
        }
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 || scalar.value == 0x7F {
                out += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        count += 1
    }
    return out + "\""
}

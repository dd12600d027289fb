// ConfigLoader.swift: reads a YAML config file into an EngineConfig, applies environment overrides
// (VLLM_URL, REDIS_URL) and validates the result. Start-up only, so it uses typed throws
// (`throws(ConfigError)`) and plain loops; every error is one line naming the dotted key.
// Order: file → YAMLNode tree → typed decode (unknown keys, types) → environment → validate (ranges).

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Why the configuration could not be loaded. `description` is one line for the operator.
public enum ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    case fileNotFound(String)
    case fileUnreadable(path: String, reason: String)
    case invalidYAML(String)
    /// `key` is the dotted path (`vllm.instances[1].url`), or an environment variable name, or
    /// empty for the document itself.
    case invalid(key: String, message: String)

    public var description: String {
        switch self {
        case .fileNotFound(let path):
            return "config error: file not found: \(path)"
        case .fileUnreadable(let path, let reason):
            return "config error: cannot read \(path): \(reason)"
        case .invalidYAML(let message):
            return "config error: invalid YAML: \(message)"
        case .invalid(let key, let message) where key.isEmpty:
            return "config error: \(message)"
        case .invalid(let key, let message):
            return "config error: \(key): \(message)"
        }
    }
}

public enum ConfigLoader {
    public static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    /// Loads `path`, then applies `environment` overrides and validates.
    public static func load(path: String, environment: [String: String]) throws(ConfigError) -> EngineConfig {
        let bytes = try readFile(path)
        return try parse(bytes: bytes, environment: environment)
    }

    /// Parses YAML text (an empty text gives the defaults), then applies `environment` overrides
    /// and validates.
    public static func parse(yaml: String, environment: [String: String]) throws(ConfigError) -> EngineConfig {
        try parse(bytes: Array(yaml.utf8), environment: environment)
    }

    /// Parses YAML bytes like `parse(yaml:environment:)`. Public for the fuzz target
    /// (Sources/fuzz-engine): no input may crash or hang it, only throw.
    public static func parse(bytes: [UInt8], environment: [String: String]) throws(ConfigError) -> EngineConfig {
        var config = EngineConfig()
        if let root = try YAMLNode.parse(bytes) {
            try decode(root, into: &config)
        }
        try applyEnvironment(environment, to: &config)
        try validate(config)
        return config
    }

    // MARK: - Environment

    static func applyEnvironment(_ environment: [String: String], to config: inout EngineConfig) throws(ConfigError) {
        // As in the original: set-but-empty counts as unset.
        if let url = environment["VLLM_URL"], !url.isEmpty {
            let instance = EngineConfig.VLLMConfig.Instance(url: url)
            if let problem = instance.urlProblem {
                throw .invalid(key: "VLLM_URL", message: problem)
            }
            config.vllm.instances = [instance]
        }
        if let url = environment["REDIS_URL"], !url.isEmpty {
            config.redis.url = url
        }
    }

    // MARK: - Validation

    /// Checks ranges and cross-field rules. `load` and `parse` call it; call it yourself for a
    /// config built in code. Every number has an upper bound too (ConfigLimits), so that nothing
    /// downstream can overflow: a validated time converts to a Duration without trapping.
    public static func validate(_ config: EngineConfig) throws(ConfigError) {
        let server = config.server
        try check((0...65535).contains(server.port), "server.port", "must be 0-65535, got \(server.port)")
        if let port = server.metricsPort {
            try check((0...65535).contains(port), "server.metrics_port", "must be 0-65535, got \(port)")
        }
        try count(server.maxBodyBytes, "server.max_body_bytes", atMost: ConfigLimits.maxBytes)
        try count(server.maxHeaderBytes, "server.max_header_bytes", atMost: ConfigLimits.maxBytes)
        try seconds(server.readTimeoutSeconds, "server.read_timeout_seconds")
        try seconds(server.idleTimeoutSeconds, "server.idle_timeout_seconds")
        try seconds(server.drainTimeoutSeconds, "server.drain_timeout_seconds")
        try check(server.workers >= 0, "server.workers", "must be >= 0 (0 = one per core), got \(server.workers)")
        try atMost(server.workers, ConfigLimits.maxWorkers, "server.workers")
        if case .file(let path) = server.accessLog {
            try check(
                path.contains("/"), "server.access_log",
                "must be stdout, stderr, off, or a file path containing '/' (./access.log), got \(quotedForMessage(path))")
            try check(
                path.utf8.count <= ConfigLimits.maxPathBytes, "server.access_log",
                "a path must be at most \(ConfigLimits.maxPathBytes) bytes, got \(path.utf8.count)")
            try check(!path.utf8.contains(0), "server.access_log", "a path must not contain NUL")
        }
        try check(
            logLevels.contains(server.logLevel), "server.log_level",
            "must be one of \(logLevels.joined(separator: ", ")), got \(quotedForMessage(server.logLevel))")

        let vllm = config.vllm
        try check(!vllm.instances.isEmpty, "vllm.instances", "must not be empty")
        for (index, instance) in vllm.instances.enumerated() {
            let key = "vllm.instances[\(index)]"
            if let problem = instance.urlProblem {
                throw .invalid(key: "\(key).url", message: problem)
            }
            try check(instance.weight >= 1, "\(key).weight", "must be >= 1, got \(instance.weight)")
            try atMost(instance.weight, ConfigLimits.maxWeight, "\(key).weight")
            if let models = instance.models {
                // An empty list would make the instance unreachable; omitting the key means "any".
                try check(!models.isEmpty, "\(key).models", "must not be empty (omit it to accept any model)")
                for (m, model) in models.enumerated() {
                    try check(!model.isEmpty, "\(key).models[\(m)]", "must not be empty")
                }
            }
        }
        try seconds(vllm.timeoutSeconds, "vllm.timeout_seconds")
        try check(vllm.retryCount >= 0, "vllm.retry_count", "must be >= 0, got \(vllm.retryCount)")
        try atMost(vllm.retryCount, ConfigLimits.maxRetryCount, "vllm.retry_count")
        try seconds(vllm.retryBackoffSeconds, "vllm.retry_backoff_seconds", allowsZero: true)
        try seconds(vllm.healthCheckIntervalSeconds, "vllm.health_check_interval_seconds")
        try check(vllm.maxEventBytes >= 1024, "vllm.max_event_bytes", "must be >= 1024, got \(vllm.maxEventBytes)")
        try atMost(vllm.maxEventBytes, ConfigLimits.maxBytes, "vllm.max_event_bytes")

        try seconds(config.redis.socketTimeoutSeconds, "redis.socket_timeout_seconds")

        let cache = config.cache
        try count(cache.maxSize, "cache.max_size", atMost: ConfigLimits.maxCacheEntries)
        try check(cache.maxBytes >= 1024, "cache.max_bytes", "must be >= 1024, got \(cache.maxBytes)")
        try atMost(cache.maxBytes, ConfigLimits.maxCacheBytes, "cache.max_bytes")
        try seconds(cache.ttlSeconds, "cache.ttl_seconds", atMost: ConfigLimits.maxCacheTTLSeconds)
        try seconds(
            cache.staleTtlSeconds, "cache.stale_ttl_seconds", allowsZero: true, zeroMeans: "never serve stale",
            atMost: ConfigLimits.maxCacheTTLSeconds)

        let admission = config.admissionControl
        // NaN fails every comparison, so these refuse it too; +inf fails `<= 1` and `< hardLimit`.
        try check(
            admission.hardLimit > 0 && admission.hardLimit <= 1, "admission_control.hard_limit",
            "must be in (0, 1], got \(admission.hardLimit)")
        try check(
            admission.softLimit > 0, "admission_control.soft_limit", "must be > 0, got \(admission.softLimit)")
        try check(
            admission.softLimit < admission.hardLimit, "admission_control.soft_limit",
            "must be less than admission_control.hard_limit (\(admission.hardLimit)), got \(admission.softLimit)")
        try seconds(admission.pollIntervalSeconds, "admission_control.poll_interval_seconds")
        try check(admission.maxQueue >= 0, "admission_control.max_queue", "must be >= 0, got \(admission.maxQueue)")
        try atMost(admission.maxQueue, ConfigLimits.maxQueue, "admission_control.max_queue")
        try seconds(admission.maxWaitSeconds, "admission_control.max_wait_seconds", allowsZero: true)
        if let h = admission.tenantHeader {
            try check(!h.isEmpty && !h.contains(where: { $0 == " " || $0 == ":" }), "admission_control.tenant_header",
                      "must be a header name")
        }
        try check(admission.maxInflightPerBackend >= 0, "admission_control.max_inflight_per_backend",
                  "must be >= 0, got \(admission.maxInflightPerBackend)")
        try atMost(admission.maxInflightPerBackend, 1 << 20, "admission_control.max_inflight_per_backend")
        try check(admission.expectedOutputTokens >= 0 && admission.expectedOutputTokens <= 1 << 24,
                  "admission_control.expected_output_tokens", "must be 0...16777216, got \(admission.expectedOutputTokens)")
        try atMost(admission.tenants.count + config.auth.keyTenants.count, ConfigLimits.maxTenants, "admission_control.tenants")
        var names: Set<String> = []
        for (list, prefix) in [(admission.tenants, "admission_control.tenants"), (config.auth.keyTenants, "auth.api_keys")] {
            for (i, t) in list.enumerated() {
                let k = "\(prefix)[\(i)]"
                try check(t.weight > 0 && t.weight <= 1_000_000, "\(k).weight", "must be in (0, 1000000], got \(t.weight)")
                try check(abs(t.priority) <= 1_000_000, "\(k).priority", "must be -1000000...1000000, got \(t.priority)")
                if let n = t.tokensPerMinute {
                    try check(n >= 1 && n <= 1 << 40, "\(k).tokens_per_minute", "must be >= 1, got \(n)")
                }
                if let n = t.requestsPerMinute {
                    try check(n >= 1 && n <= 1 << 40, "\(k).requests_per_minute", "must be >= 1, got \(n)")
                }
                if let n = t.name {
                    try check(!n.isEmpty && n != "other", "\(k).name", "must be non-empty and not 'other'")
                    try check(names.insert(n).inserted, "\(k).name", "duplicate tenant name '\(n)'")
                }
            }
        }

        try count(
            config.circuitBreaker.failureThreshold, "circuit_breaker.failure_threshold",
            atMost: ConfigLimits.maxFailureThreshold)
        try seconds(config.circuitBreaker.cooldownSeconds, "circuit_breaker.cooldown_seconds", allowsZero: true)

        let models = config.modelRegistry
        try check(!models.fastModel.isEmpty, "model_registry.fast_model", "must not be empty")
        try check(!models.largeModel.isEmpty, "model_registry.large_model", "must not be empty")
        try count(
            models.fastModelTokenThreshold, "model_registry.fast_model_token_threshold",
            atMost: ConfigLimits.maxTokenThreshold)
        if let fallback = models.fallbackModel {
            try check(!fallback.isEmpty, "model_registry.fallback_model", "must not be empty (use null to disable)")
        }
        if let similarity = models.fallbackCacheSimilarityThreshold {
            // Ignored, and accepted only for the original's files, so any finite number will do.
            try check(
                similarity.isFinite, "model_registry.fallback_cache_similarity_threshold",
                "must be a finite number, got \(similarity)")
        }

        let auth = config.auth
        for (index, key) in auth.apiKeys.enumerated() {
            // An empty key would let an empty bearer token in.
            try check(!key.isEmpty, "auth.api_keys[\(index)]", "must not be empty")
        }
        if let file = auth.apiKeysFile {
            try check(!file.isEmpty, "auth.api_keys_file", "must not be empty (use null for none)")
        }
        if auth.isEnabled {
            try check(
                !auth.apiKeys.isEmpty || auth.apiKeysFile != nil, "auth.enabled",
                "requires auth.api_keys or auth.api_keys_file")
        }
        try validateRouting(config)
    }

    private static func check(_ condition: Bool, _ key: String, _ message: @autoclosure () -> String)
        throws(ConfigError)
    {
        if !condition { throw .invalid(key: key, message: message()) }
    }

    private static func atMost(_ value: Int, _ limit: Int, _ key: String) throws(ConfigError) {
        try check(value <= limit, key, "must be at most \(limit), got \(value)")
    }

    /// A positive count or size with an upper bound.
    private static func count(_ value: Int, _ key: String, atMost limit: Int) throws(ConfigError) {
        try check(value > 0, key, "must be > 0, got \(value)")
        try atMost(value, limit, key)
    }

    /// A time in seconds: finite, > 0 (>= 0 if `allowsZero`), and at most `limit`, a day unless
    /// said otherwise. The bound is what lets the stages convert it with `.seconds(validated:)`.
    private static func seconds(
        _ value: Double, _ key: String, allowsZero: Bool = false, zeroMeans: String? = nil,
        atMost limit: Double = ConfigLimits.maxDurationSeconds
    ) throws(ConfigError) {
        try check(value.isFinite, key, "must be a finite number of seconds, got \(value)")
        if allowsZero {
            let note = zeroMeans.map { " (0 = \($0))" } ?? ""
            try check(value >= 0, key, "must be >= 0\(note), got \(value)")
        } else {
            try check(value > 0, key, "must be > 0, got \(value)")
        }
        try check(value <= limit, key, "must be at most \(Int(limit)), got \(value)")
    }

    // MARK: - Decoding

    static func decode(_ root: YAMLNode, into config: inout EngineConfig) throws(ConfigError) {
        switch root {
        case .null:
            return  // a document holding only `~` or `---`: defaults
        case .mapping:
            break
        default:
            throw .invalid(key: "", message: "the top level must be a mapping, got \(Field.kind(of: root))")
        }
        for section in try Field(key: "", name: "", node: root).entries() {
            switch section.name {
            case "server": try decodeServer(section, into: &config.server)
            case "vllm": try decodeVLLM(section, into: &config.vllm)
            case "redis": try decodeRedis(section, into: &config.redis)
            case "cache": try decodeCache(section, into: &config.cache)
            case "admission_control": try decodeAdmission(section, into: &config.admissionControl)
            case "circuit_breaker": try decodeBreaker(section, into: &config.circuitBreaker)
            case "model_registry": try decodeModelRegistry(section, into: &config.modelRegistry)
            case "auth": try decodeAuth(section, into: &config.auth)
            case "routing": try decodeRouting(section, into: &config.routing)
            default: throw section.unknownKey()
            }
        }
    }

    private static func decodeServer(_ section: Field, into c: inout EngineConfig.ServerConfig) throws(ConfigError) {
        for f in try section.entries() {
            switch f.name {
            case "host": c.host = try f.string()
            case "port": c.port = try f.int()
            case "max_body_bytes": c.maxBodyBytes = try f.int()
            case "max_header_bytes": c.maxHeaderBytes = try f.int()
            case "read_timeout_seconds": c.readTimeoutSeconds = try f.double()
            case "idle_timeout_seconds": c.idleTimeoutSeconds = try f.double()
            case "drain_timeout_seconds": c.drainTimeoutSeconds = try f.double()
            case "workers": c.workers = try f.int()
            case "metrics_port": c.metricsPort = try f.isNull ? nil : f.int()
            // Lowercased so that the original's `INFO` still works.
            case "log_level": c.logLevel = try f.string().lowercased()
            case "access_log": c.accessLog = try accessLogDestination(f)
            case "share_port": c.sharePort = try f.bool()
            default: throw f.unknownKey()
            }
        }
    }

    /// `stdout`, `stderr`, `off`, or a path; the booleans of earlier configs still work (true is
    /// stdout, false is off). A path must contain a `/` (`./access.log`), so that a misspelt
    /// keyword is an error rather than a file of that name.
    private static func accessLogDestination(_ f: Field) throws(ConfigError) -> EngineConfig.AccessLogDestination {
        if f.isNull { return .off }
        let text = try f.string()
        switch text.lowercased() {
        case "stdout": return .stdout
        case "stderr": return .stderr
        case "off", "none": return .off
        default: break
        }
        if case .scalar(_, false, _) = f.node {
            switch text.lowercased() {
            case "true", "yes", "on": return .stdout
            case "false", "no": return .off
            default: break
            }
        }
        return .file(text)
    }

    private static func decodeVLLM(_ section: Field, into c: inout EngineConfig.VLLMConfig) throws(ConfigError) {
        for f in try section.entries() {
            switch f.name {
            case "instances":
                var instances: [EngineConfig.VLLMConfig.Instance] = []
                for item in try f.items() {
                    instances.append(try decodeInstance(item))
                }
                c.instances = instances
            case "timeout_seconds": c.timeoutSeconds = try f.double()
            case "retry_count": c.retryCount = try f.int()
            case "retry_backoff_seconds": c.retryBackoffSeconds = try f.double()
            case "health_check_interval_seconds": c.healthCheckIntervalSeconds = try f.double()
            case "max_event_bytes": c.maxEventBytes = try f.int()
            default: throw f.unknownKey()
            }
        }
    }

    /// An instance is either a bare URL string or a mapping with at least `url`.
    private static func decodeInstance(_ item: Field) throws(ConfigError) -> EngineConfig.VLLMConfig.Instance {
        if case .scalar = item.node {
            return EngineConfig.VLLMConfig.Instance(url: try item.string())
        }
        guard case .mapping = item.node else {
            throw item.wrongType(expected: "a URL string or a mapping with url")
        }
        var url: String?
        var instance = EngineConfig.VLLMConfig.Instance(url: "")
        for f in try item.entries() {
            switch f.name {
            case "url": url = try f.string()
            case "models": instance.models = try f.isNull ? nil : f.stringList()
            case "api_key": instance.apiKey = try f.isNull ? nil : f.string()
            case "weight": instance.weight = try f.int()
            case "kv_events_url": instance.kvEventsUrl = try f.isNull ? nil : f.string()
            default: throw f.unknownKey()
            }
        }
        guard let url else {
            throw .invalid(key: "\(item.key).url", message: "is required (line \(item.node.line))")
        }
        instance.url = url
        return instance
    }

    private static func decodeRedis(_ section: Field, into c: inout EngineConfig.RedisConfig) throws(ConfigError) {
        for f in try section.entries() {
            switch f.name {
            // null is accepted as "no Redis", like the empty string.
            case "url": c.url = try f.isNull ? "" : f.string()
            case "socket_timeout_seconds": c.socketTimeoutSeconds = try f.double()
            default: throw f.unknownKey()
            }
        }
    }

    private static func decodeCache(_ section: Field, into c: inout EngineConfig.CacheConfig) throws(ConfigError) {
        for f in try section.entries() {
            switch f.name {
            case "enabled": c.isEnabled = try f.bool()
            case "max_size": c.maxSize = try f.int()
            case "max_bytes": c.maxBytes = try f.int()
            case "ttl_seconds": c.ttlSeconds = try f.double()
            case "stale_ttl_seconds": c.staleTtlSeconds = try f.double()
            case "deterministic_only": c.isDeterministicOnly = try f.bool()
            case "shared_across_keys": c.isSharedAcrossKeys = try f.bool()
            default: throw f.unknownKey()
            }
        }
    }

    private static func decodeAdmission(_ section: Field, into c: inout EngineConfig.AdmissionConfig)
        throws(ConfigError)
    {
        for f in try section.entries() {
            switch f.name {
            case "enabled": c.isEnabled = try f.bool()
            case "soft_limit": c.softLimit = try f.double()
            case "hard_limit": c.hardLimit = try f.double()
            case "poll_interval_seconds": c.pollIntervalSeconds = try f.double()
            case "max_queue": c.maxQueue = try f.int()
            case "max_wait_seconds": c.maxWaitSeconds = try f.double()
            case "fairness":
                guard let p = FairnessPolicy(rawValue: try f.string()) else { throw f.wrongType(expected: "fifo or fair") }
                c.fairness = p
            case "tenant_header": c.tenantHeader = try f.isNull ? nil : f.string().lowercased()
            case "tenants": c.tenants = try f.isNull ? [] : f.items().map { (i) throws(ConfigError) in try decodeTenant(i, keyed: false) }
            case "expected_output_tokens": c.expectedOutputTokens = try f.int()
            case "max_inflight_per_backend": c.maxInflightPerBackend = try f.int()
            default: throw f.unknownKey()
            }
        }
    }

    /// An `auth.api_keys` mapping (`keyed`: `key` required) or an `admission_control.tenants` entry
    /// (`name` required).
    private static func decodeTenant(_ item: Field, keyed: Bool) throws(ConfigError) -> TenantConfig {
        guard case .mapping = item.node else { throw item.wrongType(expected: "a mapping") }
        var t = TenantConfig()
        for f in try item.entries() {
            switch f.name {
            case "key" where keyed: t.key = try f.string()
            case "name": t.name = try f.string()
            case "weight": t.weight = try f.double()
            case "priority": t.priority = try f.int()
            case "tokens_per_minute": t.tokensPerMinute = try f.isNull ? nil : f.int()
            case "requests_per_minute": t.requestsPerMinute = try f.isNull ? nil : f.int()
            default: throw f.unknownKey()
            }
        }
        if keyed && t.key == nil { throw .invalid(key: "\(item.key).key", message: "is required (line \(item.node.line))") }
        if !keyed && t.name == nil { throw .invalid(key: "\(item.key).name", message: "is required (line \(item.node.line))") }
        return t
    }

    private static func decodeBreaker(_ section: Field, into c: inout EngineConfig.BreakerConfig) throws(ConfigError) {
        for f in try section.entries() {
            switch f.name {
            case "failure_threshold": c.failureThreshold = try f.int()
            case "cooldown_seconds": c.cooldownSeconds = try f.double()
            default: throw f.unknownKey()
            }
        }
    }

    private static func decodeModelRegistry(_ section: Field, into c: inout EngineConfig.ModelRegistryConfig)
        throws(ConfigError)
    {
        for f in try section.entries() {
            switch f.name {
            case "fast_model": c.fastModel = try f.string()
            case "large_model": c.largeModel = try f.string()
            case "fast_model_token_threshold": c.fastModelTokenThreshold = try f.int()
            case "fallback_model": c.fallbackModel = try f.isNull ? nil : f.string()
            case "exact_token_count": c.isExactTokenCount = try f.bool()
            case "fallback_cache_similarity_threshold":
                c.fallbackCacheSimilarityThreshold = try f.isNull ? nil : f.double()
            default: throw f.unknownKey()
            }
        }
    }

    private static func decodeAuth(_ section: Field, into c: inout EngineConfig.AuthConfig) throws(ConfigError) {
        for f in try section.entries() {
            switch f.name {
            case "enabled": c.isEnabled = try f.bool()
            case "api_keys":
                // Plain strings, or mappings {key, name, weight, priority, tokens_per_minute, requests_per_minute}.
                c.apiKeys = []
                c.keyTenants = []
                if !f.isNull, case .sequence = f.node {} else if !f.isNull {
                    throw f.wrongType(expected: "a list of strings")
                }
                for item in try f.isNull ? [] : f.items() {
                    if case .mapping = item.node {
                        let t = try decodeTenant(item, keyed: true)
                        c.apiKeys.append(t.key!)
                        c.keyTenants.append(t)
                    } else {
                        c.apiKeys.append(try item.string())
                    }
                }
            case "api_keys_file": c.apiKeysFile = try f.isNull ? nil : f.string()
            case "protect_metrics": c.isMetricsProtected = try f.bool()
            default: throw f.unknownKey()
            }
        }
    }

    // MARK: - File

    private static func readFile(_ path: String) throws(ConfigError) -> [UInt8] {
        guard let file = fopen(path, "rb") else {
            let code = errno
            if code == ENOENT || code == ENOTDIR { throw .fileNotFound(path) }
            throw .fileUnreadable(path: path, reason: String(cString: strerror(code)))
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16_384)
        // One byte past the limit is enough for `parse` to refuse the file, and stops the read
        // there: `--config /dev/zero` must fail, not fill memory.
        while bytes.count <= ConfigLimits.maxDocumentBytes {
            let count = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            bytes.append(contentsOf: chunk[0..<count])
            if count < chunk.count { break }
        }
        if ferror(file) != 0 {
            // fopen succeeds on a directory; the read fails with EISDIR.
            throw .fileUnreadable(path: path, reason: String(cString: strerror(errno)))
        }
        return bytes
    }
}

/// A YAML value together with the dotted key that leads to it, with typed accessors whose errors
/// name that key, the expected type, what was found and the line.
struct Field {
    /// The dotted path, for messages: `vllm.instances[1].url`.
    let key: String
    /// The mapping key this value was found under (the last component of `key`).
    let name: String
    let node: YAMLNode

    var isNull: Bool {
        if case .null = node { return true }
        return false
    }

    func unknownKey() -> ConfigError {
        .invalid(key: key, message: "unknown key (line \(node.line))")
    }

    func wrongType(expected: String) -> ConfigError {
        .invalid(key: key, message: "expected \(expected), got \(Self.kind(of: node)) (line \(node.line))")
    }

    /// Describes a node for a type error. Plain scalars are echoed (they were meant to be
    /// numbers or booleans); collections only by kind, so a list of secrets is not printed.
    static func kind(of node: YAMLNode) -> String {
        switch node {
        case .scalar(let text, let isQuoted, _):
            return isQuoted ? "the quoted string \(quotedForMessage(text))" : quotedForMessage(text)
        case .null: return "null"
        case .sequence: return "a list"
        case .mapping: return "a mapping"
        }
    }

    /// Children of a mapping; null (a section with every key commented out) counts as empty.
    func entries() throws(ConfigError) -> [Field] {
        switch node {
        case .null:
            return []
        case .mapping(let pairs, _):
            var seen: Set<String> = []
            var fields: [Field] = []
            for (name, value) in pairs {
                let child = Field(key: key.isEmpty ? name : "\(key).\(name)", name: name, node: value)
                if !seen.insert(name).inserted {
                    throw .invalid(key: child.key, message: "duplicate key (line \(value.line))")
                }
                fields.append(child)
            }
            return fields
        default:
            throw wrongType(expected: "a mapping")
        }
    }

    func items() throws(ConfigError) -> [Field] {
        guard case .sequence(let nodes, _) = node else { throw wrongType(expected: "a list") }
        var fields: [Field] = []
        for (index, value) in nodes.enumerated() {
            fields.append(Field(key: "\(key)[\(index)]", name: "\(name)[\(index)]", node: value))
        }
        return fields
    }

    /// Any non-null scalar: a plain `8000` or `true` is the string "8000" or "true" here.
    func string() throws(ConfigError) -> String {
        guard case .scalar(let text, _, _) = node else { throw wrongType(expected: "a string") }
        return text
    }

    func stringList() throws(ConfigError) -> [String] {
        guard case .sequence = node else { throw wrongType(expected: "a list of strings") }
        var strings: [String] = []
        for item in try items() {
            strings.append(try item.string())
        }
        return strings
    }

    /// A plain decimal integer; YAML 1.1 digit separators (`4_194_304`) are allowed.
    func int() throws(ConfigError) -> Int {
        guard case .scalar(let text, false, _) = node, let digits = Self.numeral(text, allowing: "+-"),
            let value = Int(digits)
        else { throw wrongType(expected: "an integer") }
        return value
    }

    /// A plain decimal number (integers accepted). `.inf`, `.nan` and hex are refused.
    func double() throws(ConfigError) -> Double {
        guard case .scalar(let text, false, _) = node, let digits = Self.numeral(text, allowing: "+-.eE"),
            let value = Double(digits), value.isFinite
        else { throw wrongType(expected: "a number") }
        return value
    }

    /// true/false, also yes/no and on/off (YAML 1.1), any case; never quoted.
    func bool() throws(ConfigError) -> Bool {
        guard case .scalar(let text, false, _) = node else { throw wrongType(expected: "a boolean (true/false)") }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw wrongType(expected: "a boolean (true/false)")
        }
    }

    /// `text` without underscores if it holds only ASCII digits, underscores and `extra`, with at
    /// least one digit; nil otherwise. Keeps Swift's parsers from accepting "inf", "nan" or "0x1p3".
    private static func numeral(_ text: String, allowing extra: String) -> String? {
        var out = ""
        var hasDigit = false
        for c in text.unicodeScalars {
            if c >= "0" && c <= "9" {
                hasDigit = true
                out.unicodeScalars.append(c)
            } else if extra.unicodeScalars.contains(c) {
                out.unicodeScalars.append(c)
            } else if c != "_" {
                return nil
            }
        }
        return hasDigit ? out : nil
    }
}

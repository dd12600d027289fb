// ConfigTests.swift: unit tests for EngineConfig, ConfigLoader and the libyaml-backed YAMLNode.
// No I/O except reading the shipped configs/default.yaml (found from #filePath), a missing path,
// /dev/zero and one temporary file (the size limits). Error tests check that the message names
// the right dotted key, since that is what an operator sees.

import Testing

@testable import Engine
import Reactor

#if canImport(Glibc)
import Glibc
#endif

private typealias Instance = EngineConfig.VLLMConfig.Instance

/// Parses with no environment and returns the error, or nil if parsing succeeded.
private func parseError(_ yaml: String, environment: [String: String] = [:]) -> ConfigError? {
    do {
        _ = try ConfigLoader.parse(yaml: yaml, environment: environment)
        return nil
    } catch {
        return error
    }
}

private func parse(_ yaml: String, environment: [String: String] = [:]) throws -> EngineConfig {
    try ConfigLoader.parse(yaml: yaml, environment: environment)
}

/// The repository root, from this file's path: <root>/Tests/EngineTests/ConfigTests.swift.
private func repositoryRoot(_ file: String = #filePath) -> String {
    var parts = file.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)
    return parts.joined(separator: "/")
}

@Suite struct ConfigDefaultsTests {
    @Test func emptyTextGivesTheDefaults() throws {
        let config = try parse("")
        #expect(config == EngineConfig())
        #expect(config.server.host == "0.0.0.0")
        #expect(config.server.port == 8000)
        #expect(config.server.maxBodyBytes == 4_194_304)
        #expect(config.server.maxHeaderBytes == 32_768)
        #expect(config.server.workers == 0)
        #expect(config.server.metricsPort == nil)
        #expect(config.server.logLevel == "info")
        #expect(config.vllm.instances.map(\.url) == ["http://localhost:8080"])
        #expect(config.vllm.timeoutSeconds == 120)
        #expect(config.vllm.retryCount == 2)
        #expect(config.vllm.retryBackoffSeconds == 0.5)
        #expect(config.redis.url == "")
        #expect(config.redis.socketTimeoutSeconds == 0.25)
        #expect(config.cache.isEnabled)
        #expect(config.cache.maxSize == 256)
        #expect(config.cache.maxBytes == 128 << 20)
        #expect(config.cache.ttlSeconds == 300)
        #expect(config.cache.staleTtlSeconds == 3600)
        #expect(config.admissionControl.softLimit == 0.70)
        #expect(config.admissionControl.hardLimit == 0.90)
        #expect(config.admissionControl.maxQueue == 256)
        #expect(config.circuitBreaker.failureThreshold == 5)
        #expect(config.circuitBreaker.cooldownSeconds == 30)
        #expect(config.modelRegistry.fastModel == "mistralai/Mistral-7B-Instruct-v0.2")
        #expect(config.modelRegistry.largeModel == "meta-llama/Meta-Llama-3-70B-Instruct")
        #expect(config.modelRegistry.fallbackModel == "mistralai/Mistral-7B-Instruct-v0.2")
        #expect(config.modelRegistry.fastModelTokenThreshold == 512)
        #expect(!config.auth.isEnabled)
        #expect(config.auth.apiKeys.isEmpty)
    }

    @Test(arguments: ["# only a comment\n", "---\n", "~\n", "\n\n"])
    func documentsWithoutContentGiveTheDefaults(yaml: String) throws {
        #expect(try parse(yaml) == EngineConfig())
    }

    @Test func defaultsPassValidation() throws {
        try ConfigLoader.validate(EngineConfig())
    }

    @Test func sampledAnswersAreNotCachedByDefault() throws {
        #expect(EngineConfig().cache.isDeterministicOnly)
        #expect(try parse("cache: {enabled: true}\n").cache.isDeterministicOnly)
        #expect(try !parse("cache: {deterministic_only: false}\n").cache.isDeterministicOnly)
    }

    @Test func nullSectionMeansDefaults() throws {
        #expect(try parse("cache:\nserver: ~\n") == EngineConfig())
    }

    @Test func shippedDefaultYAMLLoads() throws {
        let config = try ConfigLoader.load(path: repositoryRoot() + "/configs/default.yaml", environment: [:])
        // Every key in the file is the default, except the simulator's URL and model names.
        var expected = EngineConfig()
        expected.vllm.instances = [Instance(url: "http://127.0.0.1:8080")]
        expected.modelRegistry.fastModel = "sim-model"
        expected.modelRegistry.largeModel = "sim-model"
        expected.modelRegistry.fallbackModel = "sim-model"
        #expect(config == expected)
        #expect(config.vllm.instances[0].host == "127.0.0.1")
        #expect(config.vllm.instances[0].port == 8080)
    }

    @Test func missingFileIsFileNotFound() {
        #expect(throws: ConfigError.fileNotFound("/nonexistent/engine.yaml")) {
            try ConfigLoader.load(path: "/nonexistent/engine.yaml", environment: [:])
        }
    }

    @Test func directoryIsUnreadable() {
        let error = #expect(throws: ConfigError.self) {
            try ConfigLoader.load(path: repositoryRoot() + "/configs", environment: [:])
        }
        guard case .fileUnreadable(let path, let reason)? = error else {
            Issue.record("expected .fileUnreadable, got \(String(describing: error))")
            return
        }
        #expect(path.hasSuffix("/configs"))
        #expect(reason == "Is a directory")
    }
}

@Suite struct ConfigParsingTests {
    @Test func everySectionParses() throws {
        let yaml = """
            server:
              host: 127.0.0.1
              port: 0
              max_body_bytes: 1_048_576
              max_header_bytes: 8192
              read_timeout_seconds: 2.5
              idle_timeout_seconds: 10
              drain_timeout_seconds: 5
              workers: 3
              metrics_port: 9100
              log_level: DEBUG
            vllm:
              instances:
                - url: http://a.internal:8001/v1/
                  models: [m1, m2]
                  api_key: secret
                  weight: 3
                - http://b.internal
              timeout_seconds: 60
              retry_count: 0
              retry_backoff_seconds: 0
              health_check_interval_seconds: 5
            redis:
              url: redis://r:6379/1
              socket_timeout_seconds: 1
            cache:
              enabled: no
              max_size: 10
              ttl_seconds: 0.5
              stale_ttl_seconds: 0
              deterministic_only: no
              shared_across_keys: on
            admission_control:
              enabled: false
              soft_limit: 0.5
              hard_limit: 1
              poll_interval_seconds: 0.25
              max_queue: 0
              max_wait_seconds: 2
            circuit_breaker:
              failure_threshold: 2
              cooldown_seconds: 0
            model_registry:
              fast_model: small
              large_model: big
              fast_model_token_threshold: 100
              fallback_model: null
              exact_token_count: true
              fallback_cache_similarity_threshold: 0.8
            auth:
              enabled: true
              api_keys: ["k1", 'k2']
              api_keys_file: /etc/engine/keys
              protect_metrics: true
            """
        let c = try parse(yaml)
        #expect(
            c.server
                == .init(
                    host: "127.0.0.1", port: 0, maxBodyBytes: 1_048_576, maxHeaderBytes: 8192,
                    readTimeoutSeconds: 2.5, idleTimeoutSeconds: 10, drainTimeoutSeconds: 5, workers: 3,
                    metricsPort: 9100, logLevel: "debug"))
        #expect(
            c.vllm.instances == [
                Instance(url: "http://a.internal:8001/v1/", models: ["m1", "m2"], apiKey: "secret", weight: 3),
                Instance(url: "http://b.internal"),
            ])
        #expect(c.vllm.timeoutSeconds == 60)
        #expect(c.vllm.retryCount == 0)
        #expect(c.vllm.retryBackoffSeconds == 0)
        #expect(c.vllm.healthCheckIntervalSeconds == 5)
        #expect(c.redis == .init(url: "redis://r:6379/1", socketTimeoutSeconds: 1))
        #expect(
            c.cache
                == .init(
                    isEnabled: false, maxSize: 10, ttlSeconds: 0.5, staleTtlSeconds: 0,
                    isDeterministicOnly: false, isSharedAcrossKeys: true))
        #expect(
            c.admissionControl
                == .init(
                    isEnabled: false, softLimit: 0.5, hardLimit: 1, pollIntervalSeconds: 0.25, maxQueue: 0,
                    maxWaitSeconds: 2))
        #expect(c.circuitBreaker == .init(failureThreshold: 2, cooldownSeconds: 0))
        #expect(
            c.modelRegistry
                == .init(
                    fastModel: "small", largeModel: "big", fastModelTokenThreshold: 100, fallbackModel: nil,
                    isExactTokenCount: true, fallbackCacheSimilarityThreshold: 0.8))
        #expect(
            c.auth
                == .init(isEnabled: true, apiKeys: ["k1", "k2"], apiKeysFile: "/etc/engine/keys", isMetricsProtected: true))
    }

    @Test func bareStringInstances() throws {
        let c = try parse("vllm:\n  instances: [\"http://h1:9000\", http://h2/prefix]\n")
        #expect(c.vllm.instances.map(\.url) == ["http://h1:9000", "http://h2/prefix"])
        #expect(c.vllm.instances.map(\.host) == ["h1", "h2"])
        #expect(c.vllm.instances.map(\.port) == [9000, 80])
        #expect(c.vllm.instances.map(\.basePath) == ["", "/prefix"])
        #expect(c.vllm.instances.map(\.weight) == [1, 1])
        #expect(c.vllm.instances[0].models == nil)
    }

    @Test func fractionalTTL() throws {
        let c = try parse("cache:\n  ttl_seconds: 0.25\n  stale_ttl_seconds: 1.5e1\n")
        #expect(c.cache.ttlSeconds == 0.25)
        #expect(c.cache.staleTtlSeconds == 15)
    }

    @Test func integersAreAcceptedForDoubleFields() throws {
        let c = try parse("vllm:\n  timeout_seconds: 7\n")
        #expect(c.vllm.timeoutSeconds == 7.0)
    }

    @Test func quotedEmptyStringIsNotNull() throws {
        // `url:` alone is null (also accepted, meaning the same), `""` is the empty string.
        #expect(try parse("redis:\n  url: \"\"\n").redis.url == "")
        #expect(try parse("redis:\n  url:\n").redis.url == "")
        #expect(try parse("model_registry:\n  fallback_model: \"null\"\n").modelRegistry.fallbackModel == "null")
        #expect(try parse("model_registry:\n  fallback_model: ~\n").modelRegistry.fallbackModel == nil)
    }

    @Test func commentsAndFlowStyle() throws {
        let c = try parse("{server: {port: 9000}, cache: {max_size: 3}}  # all on one line\n")
        #expect(c.server.port == 9000)
        #expect(c.cache.maxSize == 3)
    }
}

@Suite struct ConfigErrorTests {
    @Test func unknownKeyIsNamed() {
        let error = parseError("vllm:\n  timeout_secs: 10\n")
        #expect(error == .invalid(key: "vllm.timeout_secs", message: "unknown key (line 2)"))
        #expect(error?.description == "config error: vllm.timeout_secs: unknown key (line 2)")
    }

    @Test func unknownSectionIsNamed() {
        #expect(parseError("vllmm:\n  timeout_seconds: 10\n") == .invalid(key: "vllmm", message: "unknown key (line 2)"))
    }

    @Test func unknownKeyInsideAnInstanceIsNamed() {
        let error = parseError("vllm:\n  instances:\n    - url: http://a\n    - url: http://b\n      wieght: 2\n")
        #expect(error == .invalid(key: "vllm.instances[1].wieght", message: "unknown key (line 5)"))
    }

    @Test func duplicateKeyIsRejected() {
        let error = parseError("server:\n  port: 1\n  port: 2\n")
        #expect(error == .invalid(key: "server.port", message: "duplicate key (line 3)"))
    }

    @Test func stringWhereNumberExpected() {
        let error = parseError("server:\n  port: eighty\n")
        #expect(error == .invalid(key: "server.port", message: "expected an integer, got \"eighty\" (line 2)"))
    }

    @Test(arguments: [
        ("server:\n  port: 80.5\n", "server.port", "expected an integer"),
        ("server:\n  port: \"8000\"\n", "server.port", "expected an integer"),
        ("vllm:\n  timeout_seconds: fast\n", "vllm.timeout_seconds", "expected a number"),
        ("vllm:\n  timeout_seconds: .inf\n", "vllm.timeout_seconds", "expected a number"),
        ("vllm:\n  timeout_seconds: nan\n", "vllm.timeout_seconds", "expected a number"),
        ("vllm:\n  timeout_seconds:\n", "vllm.timeout_seconds", "expected a number, got null"),
        ("cache:\n  enabled: maybe\n", "cache.enabled", "expected a boolean"),
        ("cache:\n  enabled: \"true\"\n", "cache.enabled", "expected a boolean"),
        ("cache:\n  enabled: 1\n", "cache.enabled", "expected a boolean"),
        ("cache: 5\n", "cache", "expected a mapping, got \"5\""),
        ("auth:\n  api_keys: sk-secret\n", "auth.api_keys", "expected a list of strings"),
        ("auth:\n  api_keys: [a, [b]]\n", "auth.api_keys[1]", "expected a string, got a list"),
        ("vllm:\n  instances: http://a\n", "vllm.instances", "expected a list"),
        ("vllm:\n  instances: [[http://a]]\n", "vllm.instances[0]", "expected a URL string or a mapping"),
        ("server:\n  host: [a]\n", "server.host", "expected a string, got a list"),
    ])
    func wrongTypeNamesKeyAndExpectedType(yaml: String, key: String, expected: String) {
        guard case .invalid(let gotKey, let message) = parseError(yaml) else {
            Issue.record("expected .invalid for \(yaml)")
            return
        }
        #expect(gotKey == key)
        #expect(message.hasPrefix(expected), "\(message)")
    }

    @Test func typeErrorDoesNotEchoAListOfSecrets() {
        let error = parseError("auth:\n  api_keys: {k: sk-secret}\n")
        #expect(error == .invalid(key: "auth.api_keys", message: "expected a list of strings, got a mapping (line 2)"))
    }

    @Test func badURLNamesTheInstance() {
        let error = parseError("vllm:\n  instances:\n    - http://good:1\n    - url: \"not a url\"\n")
        guard case .invalid(let key, let message) = error else {
            Issue.record("expected .invalid, got \(String(describing: error))")
            return
        }
        #expect(key == "vllm.instances[1].url")
        #expect(message.contains("spaces"))
        #expect(error?.description.hasPrefix("config error: vllm.instances[1].url: ") == true)
    }

    @Test(arguments: [
        ("ftp://h", "must look like http://host[:port][/path]"),
        ("localhost:8080", "must look like http://host[:port][/path]"),
        ("http://", "has no host"),
        ("http://:80", "has no host"),
        ("http://h:0", "has an invalid port"),
        ("http://h:65536", "has an invalid port"),
        ("http://h:8o", "has an invalid port"),
        ("http://h:", "has an invalid port"),
        ("http://h/x?y=1", "must not have a query or fragment"),
        ("http://user:pw@h", "must not contain user info"),
        ("http://h$t", "has an invalid host"),
        ("http://[zz]:80", "has an invalid IPv6 host"),
        ("", "must not be empty"),
    ])
    func badURLsAreRejectedWithAReason(url: String, reason: String) {
        let instance = Instance(url: url)
        #expect(instance.urlProblem?.hasPrefix(reason) == true, "\(url): \(String(describing: instance.urlProblem))")
        let error = parseError("vllm:\n  instances:\n    - url: \"\(url)\"\n")
        #expect(error == .invalid(key: "vllm.instances[0].url", message: instance.urlProblem ?? "?"))
    }

    @Test func credentialsAreNotEchoed() {
        let error = parseError("vllm:\n  instances: [\"http://user:hunter2@h\"]\n")
        #expect(error?.description.contains("hunter2") == false)
        #expect(error == .invalid(key: "vllm.instances[0].url", message: "must not contain user info"))
    }

    @Test func httpsIsNotSupportedYet() {
        let error = parseError("vllm:\n  instances: [\"https://secure.example\"]\n")
        #expect(error == .invalid(key: "vllm.instances[0].url", message: "https is not supported yet"))
        // The parts are still parsed, so adding TLS only has to drop the check.
        let instance = Instance(url: "https://secure.example/v1")
        #expect(instance.scheme == "https")
        #expect(instance.port == 443)
        #expect(instance.basePath == "")
    }

    @Test func softLimitNotBelowHardLimit() {
        let error = parseError("admission_control:\n  soft_limit: 0.95\n")
        #expect(
            error
                == .invalid(
                    key: "admission_control.soft_limit",
                    message: "must be less than admission_control.hard_limit (0.9), got 0.95"))
        #expect(
            error?.description
                == "config error: admission_control.soft_limit: must be less than admission_control.hard_limit (0.9), got 0.95"
        )
        // Equal is also refused.
        #expect(
            parseError("admission_control:\n  soft_limit: 0.5\n  hard_limit: 0.5\n")
                == .invalid(
                    key: "admission_control.soft_limit",
                    message: "must be less than admission_control.hard_limit (0.5), got 0.5"))
    }

    @Test(arguments: [
        ("server:\n  port: 65536\n", "server.port"),
        ("server:\n  port: -1\n", "server.port"),
        ("server:\n  metrics_port: 70000\n", "server.metrics_port"),
        ("server:\n  max_body_bytes: 0\n", "server.max_body_bytes"),
        ("server:\n  max_header_bytes: 0\n", "server.max_header_bytes"),
        ("server:\n  read_timeout_seconds: 0\n", "server.read_timeout_seconds"),
        ("server:\n  idle_timeout_seconds: -1\n", "server.idle_timeout_seconds"),
        ("server:\n  drain_timeout_seconds: 0\n", "server.drain_timeout_seconds"),
        ("server:\n  workers: -2\n", "server.workers"),
        ("server:\n  log_level: verbose\n", "server.log_level"),
        ("vllm:\n  instances: []\n", "vllm.instances"),
        ("vllm:\n  instances: [{url: \"http://a\", weight: 0}]\n", "vllm.instances[0].weight"),
        ("vllm:\n  instances: [{url: \"http://a\", models: []}]\n", "vllm.instances[0].models"),
        ("vllm:\n  instances: [{weight: 2}]\n", "vllm.instances[0].url"),
        ("vllm:\n  timeout_seconds: 0\n", "vllm.timeout_seconds"),
        ("vllm:\n  retry_count: -1\n", "vllm.retry_count"),
        ("vllm:\n  retry_backoff_seconds: -0.1\n", "vllm.retry_backoff_seconds"),
        ("vllm:\n  health_check_interval_seconds: 0\n", "vllm.health_check_interval_seconds"),
        ("redis:\n  socket_timeout_seconds: 0\n", "redis.socket_timeout_seconds"),
        ("cache:\n  max_size: 0\n", "cache.max_size"),
        ("cache:\n  max_bytes: 1023\n", "cache.max_bytes"),
        ("cache:\n  ttl_seconds: 0\n", "cache.ttl_seconds"),
        ("cache:\n  stale_ttl_seconds: -1\n", "cache.stale_ttl_seconds"),
        ("admission_control:\n  soft_limit: 0\n", "admission_control.soft_limit"),
        ("admission_control:\n  hard_limit: 1.5\n", "admission_control.hard_limit"),
        ("admission_control:\n  poll_interval_seconds: 0\n", "admission_control.poll_interval_seconds"),
        ("admission_control:\n  max_queue: -1\n", "admission_control.max_queue"),
        ("admission_control:\n  max_wait_seconds: -1\n", "admission_control.max_wait_seconds"),
        ("admission_control:\n  max_inflight_per_backend: -1\n", "admission_control.max_inflight_per_backend"),
        ("circuit_breaker:\n  failure_threshold: 0\n", "circuit_breaker.failure_threshold"),
        ("circuit_breaker:\n  cooldown_seconds: -1\n", "circuit_breaker.cooldown_seconds"),
        ("model_registry:\n  fast_model_token_threshold: 0\n", "model_registry.fast_model_token_threshold"),
        ("model_registry:\n  fast_model: \"\"\n", "model_registry.fast_model"),
        ("auth:\n  enabled: true\n", "auth.enabled"),
        ("auth:\n  api_keys: [\"\"]\n", "auth.api_keys[0]"),
    ])
    func outOfRangeValueNamesItsKey(yaml: String, key: String) {
        guard case .invalid(let gotKey, let message) = parseError(yaml) else {
            Issue.record("expected .invalid for \(yaml)")
            return
        }
        #expect(gotKey == key, "\(message)")
    }

    @Test func portZeroIsAllowed() throws {
        #expect(try parse("server:\n  port: 0\n").server.port == 0)
    }

    @Test func authEnabledWithOnlyAKeysFileIsAccepted() throws {
        let c = try parse("auth:\n  enabled: true\n  api_keys_file: /run/keys\n")
        #expect(c.auth.isEnabled)
        #expect(c.auth.apiKeysFile == "/run/keys")
    }

    @Test func topLevelMustBeAMapping() {
        #expect(parseError("- a\n- b\n") == .invalid(key: "", message: "the top level must be a mapping, got a list"))
        #expect(parseError("- a\n")?.description == "config error: the top level must be a mapping, got a list")
        #expect(parseError("hello\n") == .invalid(key: "", message: "the top level must be a mapping, got \"hello\""))
    }

    @Test func errorDescriptionsAreOneLine() {
        let error = parseError("server:\n  log_level: \"a\\nb\"\n")
        #expect(error?.description.contains("\n") == false)
        #expect(error?.description == "config error: server.log_level: must be one of trace, debug, info, notice, warning, error, critical, got \"a\\nb\"")
    }
}

@Suite struct ConfigYAMLTests {
    @Test func garbageIsInvalidYAML() {
        guard case .invalidYAML(let message) = parseError("server: [unclosed\n  port: : :\n") else {
            Issue.record("expected .invalidYAML")
            return
        }
        #expect(message.contains("line"))
    }

    @Test(arguments: ["a: b: c\n", "\t- tab indent\n", "key: \"unterminated\n", "[1, 2\n", "\u{0}\n"])
    func malformedInputsAreInvalidYAML(yaml: String) {
        guard case .invalidYAML = parseError(yaml) else {
            Issue.record("expected .invalidYAML for \(yaml.debugDescription), got \(String(describing: parseError(yaml)))")
            return
        }
    }

    @Test func invalidUTF8IsInvalidYAML() {
        let error = #expect(throws: ConfigError.self) {
            try ConfigLoader.parse(bytes: [0x61, 0x3A, 0x20, 0xFF, 0xFE, 0x0A], environment: [:])
        }
        guard case .invalidYAML(let message)? = error else {
            Issue.record("expected .invalidYAML, got \(String(describing: error))")
            return
        }
        #expect(message.contains("UTF-8"))
    }

    @Test func aliasesAreRejected() {
        let yaml = """
            vllm:
              timeout_seconds: &t 30
              retry_backoff_seconds: *t
            """
        guard case .invalidYAML(let message) = parseError(yaml) else {
            Issue.record("expected .invalidYAML")
            return
        }
        #expect(message.contains("anchors"))
        #expect(message.contains("line 2"))
    }

    @Test func aliasWithoutAnchorIsRejected() {
        // libyaml reports the undefined alias itself; either way it must not load.
        guard case .invalidYAML = parseError("server:\n  host: *nowhere\n") else {
            Issue.record("expected .invalidYAML")
            return
        }
    }

    @Test func tagsAndMultipleDocumentsAreRejected() {
        #expect(parseError("server:\n  port: !!int 80\n") == .invalidYAML("YAML tags are not supported (line 2)"))
        #expect(
            parseError("server: {}\n---\nserver: {}\n")
                == .invalidYAML("multiple YAML documents are not supported (line 2)"))
    }

    @Test func treeKeepsStructureLinesAndQuoting() throws {
        let root = try YAMLNode.parse(Array("a:\n  - 'x'\n  - y\n  -\nb: ~\n".utf8))
        guard case .mapping(let entries, line: let line)? = root else {
            Issue.record("expected a mapping, got \(String(describing: root))")
            return
        }
        #expect(line == 1)
        #expect(entries.map(\.0) == ["a", "b"])
        guard case .sequence(let items, line: 2) = entries[0].1 else {
            Issue.record("expected a sequence on line 2")
            return
        }
        #expect(items.count == 3)
        if case .scalar("x", isQuoted: true, line: 2) = items[0] {} else { Issue.record("items[0] = \(items[0])") }
        if case .scalar("y", isQuoted: false, line: 3) = items[1] {} else { Issue.record("items[1] = \(items[1])") }
        if case .null = items[2] {} else { Issue.record("items[2] = \(items[2])") }
        if case .null(line: 5) = entries[1].1 {} else { Issue.record("b = \(entries[1].1)") }
    }

    @Test func complexKeysAreRejected() {
        #expect(parseError("? [a, b]\n: c\n") == .invalidYAML("mapping keys must be strings, got a list or mapping (line 1)"))
    }
}

@Suite struct ConfigEnvironmentTests {
    private let twoInstances = "vllm:\n  instances: [\"http://a:1\", \"http://b:2\"]\nredis:\n  url: redis://file:6379/0\n"

    @Test func vllmURLReplacesTheInstanceList() throws {
        let c = try parse(twoInstances, environment: ["VLLM_URL": "http://env-host:9000/v1"])
        #expect(c.vllm.instances == [Instance(url: "http://env-host:9000/v1")])
        #expect(c.vllm.instances[0].host == "env-host")
        #expect(c.vllm.instances[0].port == 9000)
        #expect(c.vllm.instances[0].basePath == "")
    }

    @Test func redisURLReplacesTheFileValue() throws {
        let c = try parse(twoInstances, environment: ["REDIS_URL": "redis://env:6380/2"])
        #expect(c.redis.url == "redis://env:6380/2")
        #expect(c.vllm.instances.count == 2)
    }

    @Test func emptyVariablesAreIgnored() throws {
        let c = try parse(twoInstances, environment: ["VLLM_URL": "", "REDIS_URL": ""])
        #expect(c.vllm.instances.map(\.url) == ["http://a:1", "http://b:2"])
        #expect(c.redis.url == "redis://file:6379/0")
    }

    @Test func overridesApplyToDefaultsToo() throws {
        let c = try parse("", environment: ["VLLM_URL": "http://x:5", "REDIS_URL": "redis://y"])
        #expect(c.vllm.instances.map(\.url) == ["http://x:5"])
        #expect(c.redis.url == "redis://y")
    }

    @Test func badVLLMURLNamesTheVariable() {
        #expect(
            parseError("", environment: ["VLLM_URL": "https://x"])
                == .invalid(key: "VLLM_URL", message: "https is not supported yet"))
        #expect(
            parseError("", environment: ["VLLM_URL": "x:80"])?.description
                == "config error: VLLM_URL: must look like http://host[:port][/path], got \"x:80\"")
    }

    @Test func environmentOverrideRescuesABadFileURL() throws {
        // The file's list is replaced before validation, as in the original.
        let c = try parse("vllm:\n  instances: [\"https://x\"]\n", environment: ["VLLM_URL": "http://ok"])
        #expect(c.vllm.instances.map(\.url) == ["http://ok"])
    }
}

@Suite struct InstanceURLTests {
    @Test(arguments: [
        ("http://localhost:8080", "localhost", 8080, ""),
        ("HTTP://Host.Example", "Host.Example", 80, ""),
        ("http://h/", "h", 80, ""),
        ("http://h/v1", "h", 80, ""),
        ("http://h/v1/", "h", 80, ""),
        ("http://h:81/api/v1", "h", 81, "/api"),
        ("http://h/api/v1x", "h", 80, "/api/v1x"),
        ("http://h/a/b//", "h", 80, "/a/b"),
        ("http://[::1]:8000/v1", "::1", 8000, ""),
        ("http://10.0.0.7", "10.0.0.7", 80, ""),
    ])
    func partsAreParsed(url: String, host: String, port: Int, basePath: String) {
        let instance = Instance(url: url)
        #expect(instance.urlProblem == nil)
        #expect(instance.scheme == "http")
        #expect(instance.host == host)
        #expect(instance.port == port)
        #expect(instance.basePath == basePath)
    }

    @Test func settingTheURLReparses() {
        var instance = Instance(url: "http://a:1")
        instance.url = "http://b:2/p"
        #expect(instance.host == "b")
        #expect(instance.port == 2)
        #expect(instance.basePath == "/p")
        instance.url = "nope"
        #expect(instance.urlProblem != nil)
        #expect(instance.host == "")
    }
}

/// Issue 10: no config input may crash or hang the loader, or make a stage trap later.
@Suite struct ConfigLimitTests {
    /// Every time key: (section, name, its maximum). `ConfigLimits` holds the maxima.
    static let durationKeys: [(section: String, name: String, max: Double)] = [
        ("server", "read_timeout_seconds", 86_400),
        ("server", "idle_timeout_seconds", 86_400),
        ("server", "drain_timeout_seconds", 86_400),
        ("vllm", "timeout_seconds", 86_400),
        ("vllm", "retry_backoff_seconds", 86_400),
        ("vllm", "health_check_interval_seconds", 86_400),
        ("redis", "socket_timeout_seconds", 86_400),
        ("admission_control", "poll_interval_seconds", 86_400),
        ("admission_control", "max_wait_seconds", 86_400),
        ("circuit_breaker", "cooldown_seconds", 86_400),
        ("cache", "ttl_seconds", 31_536_000),
        ("cache", "stale_ttl_seconds", 31_536_000),
    ]

    /// Every bounded integer key: (YAML with `N` for the value, dotted key, its maximum).
    static let integerKeys: [(yaml: String, key: String, max: Int)] = [
        ("server:\n  max_body_bytes: N\n", "server.max_body_bytes", 1 << 30),
        ("server:\n  max_header_bytes: N\n", "server.max_header_bytes", 1 << 30),
        ("server:\n  workers: N\n", "server.workers", 1024),
        ("vllm:\n  retry_count: N\n", "vllm.retry_count", 100),
        ("vllm:\n  instances: [{url: \"http://a\", weight: N}]\n", "vllm.instances[0].weight", 1_000_000),
        ("cache:\n  max_size: N\n", "cache.max_size", 10_000_000),
        ("cache:\n  max_bytes: N\n", "cache.max_bytes", 64 << 30),
        ("admission_control:\n  max_queue: N\n", "admission_control.max_queue", 1_000_000),
        ("admission_control:\n  max_inflight_per_backend: N\n", "admission_control.max_inflight_per_backend", 1 << 20),
        ("circuit_breaker:\n  failure_threshold: N\n", "circuit_breaker.failure_threshold", 1_000_000),
        ("model_registry:\n  fast_model_token_threshold: N\n", "model_registry.fast_model_token_threshold", 10_000_000),
    ]

    private static func yaml(_ section: String, _ name: String, _ value: String) -> String {
        "\(section):\n  \(name): \(value)\n"
    }

    private static func key(_ section: String, _ name: String) -> String { "\(section).\(name)" }

    @Test(arguments: durationKeys)
    func hugeDurationNamesItsKey(section: String, name: String, max: Double) {
        // 1e300 used to pass validation and trap in `.milliseconds(Int64(x * 1000))` (SIGILL).
        for value in ["1e300", "1e16", "\(Int(max) + 1)"] {
            let error = parseError(Self.yaml(section, name, value))
            guard case .invalid(let key, let message) = error else {
                Issue.record("\(name): \(value): expected .invalid, got \(String(describing: error))")
                continue
            }
            #expect(key == Self.key(section, name))
            #expect(message.hasPrefix("must be at most \(Int(max)), got "), "\(message)")
        }
    }

    @Test(arguments: durationKeys)
    func nonFiniteDurationNamesItsKey(section: String, name: String, max: Double) {
        // The decoder refuses these spellings (and 1e400, which Double reads as +inf) as "not a number".
        for value in [".inf", "-.inf", ".nan", "inf", "nan", "1e400", "-1e400"] {
            let error = parseError(Self.yaml(section, name, value))
            guard case .invalid(let key, _) = error else {
                Issue.record("\(name): \(value): expected .invalid, got \(String(describing: error))")
                continue
            }
            #expect(key == Self.key(section, name))
        }
        // A config built in code skips the decoder; validate refuses it there.
        for value in [Double.infinity, -.infinity, .nan, 1e300] {
            var config = EngineConfig()
            Self.set(section, name, value, in: &config)
            let error = #expect(throws: ConfigError.self) { try ConfigLoader.validate(config) }
            guard case .invalid(let key, _)? = error else {
                Issue.record("\(name): \(value): expected .invalid, got \(String(describing: error))")
                continue
            }
            #expect(key == Self.key(section, name))
        }
    }

    @Test(arguments: durationKeys)
    func durationAtOrJustUnderTheMaximumIsAccepted(section: String, name: String, max: Double) throws {
        for value in [max, max - 0.001] {
            let config = try parse(Self.yaml(section, name, "\(value)"))
            #expect(Self.get(section, name, in: config) == value)
            // And converts without trapping, to what it says.
            #expect(Duration.seconds(validated: value) == .milliseconds(Int64(value * 1000)))
        }
    }

    @Test(arguments: integerKeys)
    func integerLimits(yaml: String, key: String, max: Int) throws {
        _ = try parse(yaml.replacing("N", with: "\(max)"))
        _ = try parse(yaml.replacing("N", with: "\(max - 1)"))
        #expect(
            parseError(yaml.replacing("N", with: "\(max + 1)"))
                == .invalid(key: key, message: "must be at most \(max), got \(max + 1)"))
        // Past Int64: a type error, still naming the key.
        guard case .invalid(let got, _) = parseError(yaml.replacing("N", with: "99999999999999999999"))
        else {
            Issue.record("\(key): expected .invalid for 99999999999999999999")
            return
        }
        #expect(got == key)
    }

    @Test func conversionIsUnchangedForNormalValuesAndSaturatesOtherwise() {
        for seconds in [0.25, 0.5, 0.57, 1, 15, 30, 120, 3600] {
            #expect(Duration.seconds(validated: seconds) == .milliseconds(Int64(seconds * 1000)))
        }
        #expect(Duration.seconds(validated: 1e300) == .seconds(1_000_000_000))
        #expect(Duration.seconds(validated: .infinity) == .seconds(1_000_000_000))
        #expect(Duration.seconds(validated: .nan) == .zero)
        #expect(Duration.seconds(validated: -5) == .zero)
        #expect(Duration.seconds(validated: 1e300).nanoseconds == 1_000_000_000_000_000_000)
        #expect(Duration.seconds(validated: -.infinity).nanoseconds == 0)
    }

    /// `depth` nested collections of one kind around a scalar, on one line.
    private static func nested(_ depth: Int, open: String, close: String) -> String {
        String(repeating: open, count: depth) + "1" + String(repeating: close, count: depth)
    }

    @Test(arguments: [("{a: ", "}"), ("[", "]")])
    func deepFlowNestingIsRefusedQuickly(open: String, close: String) {
        // 50,000 levels overflowed the stack releasing the tree (SIGSEGV after ~23 s).
        let text = Self.nested(50_000, open: open, close: close)
        let clock = ContinuousClock()
        var error: ConfigError?
        let elapsed = clock.measure { error = parseError(text) }
        #expect(error == .invalidYAML("nesting deeper than 64 levels (line 1)"))
        #expect(elapsed < .seconds(1), "took \(elapsed)")
    }

    @Test func deepBlockNestingIsRefusedNamingTheLine() {
        var text = ""
        for level in 0..<100 {
            text += String(repeating: " ", count: level) + "a:\n"
        }
        #expect(parseError(text) == .invalidYAML("nesting deeper than 64 levels (line 65)"))
    }

    @Test func sixtyFourLevelsParse() throws {
        #expect(try YAMLNode.parse(Array(Self.nested(64, open: "[", close: "]").utf8)) != nil)
        #expect(throws: ConfigError.invalidYAML("nesting deeper than 64 levels (line 1)")) {
            try YAMLNode.parse(Array(Self.nested(65, open: "[", close: "]").utf8))
        }
    }

    @Test func documentOverOneMiBIsRefused() throws {
        let line = Array("# padding padding padding padding padding padding padding padding\n".utf8)
        var bytes: [UInt8] = []
        while bytes.count < 2 << 20 { bytes += line }
        #expect(throws: ConfigError.invalidYAML("the document is larger than 1048576 bytes (1 MiB)")) {
            try ConfigLoader.parse(bytes: bytes, environment: [:])
        }
        // Exactly 1 MiB is still read (here: only comments, so the defaults).
        let limit = Array(bytes.prefix(1 << 20))
        #expect(try ConfigLoader.parse(bytes: limit, environment: [:]) == EngineConfig())
    }

    @Test func twoMiBFileIsRefused() throws {
        var template = Array("/tmp/engine-config-test-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        try #require(fd >= 0)
        let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        defer { unlink(path) }
        let line = Array("server: {}\n# xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n".utf8)
        var bytes: [UInt8] = []
        while bytes.count < 2 << 20 { bytes += line }
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        try #require(written == bytes.count)
        #expect(throws: ConfigError.invalidYAML("the document is larger than 1048576 bytes (1 MiB)")) {
            try ConfigLoader.load(path: path, environment: [:])
        }
    }

    @Test func endlessFileIsRefusedNotReadForever() {
        // The loader stops reading one chunk past the limit.
        #expect(throws: ConfigError.invalidYAML("the document is larger than 1048576 bytes (1 MiB)")) {
            try ConfigLoader.load(path: "/dev/zero", environment: [:])
        }
    }

    @Test func largestFlatDocumentParsesQuickly() {
        // About 500,000 nodes in 1 MiB: the other way to make the parser work hard.
        var text = "x: ["
        while text.utf8.count < (1 << 20) - 4 { text += "1," }
        text += "1]\n"
        let clock = ContinuousClock()
        var error: ConfigError?
        let elapsed = clock.measure { error = parseError(text) }
        #expect(error == .invalid(key: "x", message: "unknown key (line 1)"))
        #expect(elapsed < .seconds(5), "took \(elapsed)")
    }

    private static func set(_ section: String, _ name: String, _ value: Double, in c: inout EngineConfig) {
        switch (section, name) {
        case ("server", "read_timeout_seconds"): c.server.readTimeoutSeconds = value
        case ("server", "idle_timeout_seconds"): c.server.idleTimeoutSeconds = value
        case ("server", "drain_timeout_seconds"): c.server.drainTimeoutSeconds = value
        case ("vllm", "timeout_seconds"): c.vllm.timeoutSeconds = value
        case ("vllm", "retry_backoff_seconds"): c.vllm.retryBackoffSeconds = value
        case ("vllm", "health_check_interval_seconds"): c.vllm.healthCheckIntervalSeconds = value
        case ("redis", "socket_timeout_seconds"): c.redis.socketTimeoutSeconds = value
        case ("admission_control", "poll_interval_seconds"): c.admissionControl.pollIntervalSeconds = value
        case ("admission_control", "max_wait_seconds"): c.admissionControl.maxWaitSeconds = value
        case ("circuit_breaker", "cooldown_seconds"): c.circuitBreaker.cooldownSeconds = value
        case ("cache", "ttl_seconds"): c.cache.ttlSeconds = value
        case ("cache", "stale_ttl_seconds"): c.cache.staleTtlSeconds = value
        default: Issue.record("no setter for \(section).\(name)")
        }
    }

    private static func get(_ section: String, _ name: String, in c: EngineConfig) -> Double? {
        switch (section, name) {
        case ("server", "read_timeout_seconds"): c.server.readTimeoutSeconds
        case ("server", "idle_timeout_seconds"): c.server.idleTimeoutSeconds
        case ("server", "drain_timeout_seconds"): c.server.drainTimeoutSeconds
        case ("vllm", "timeout_seconds"): c.vllm.timeoutSeconds
        case ("vllm", "retry_backoff_seconds"): c.vllm.retryBackoffSeconds
        case ("vllm", "health_check_interval_seconds"): c.vllm.healthCheckIntervalSeconds
        case ("redis", "socket_timeout_seconds"): c.redis.socketTimeoutSeconds
        case ("admission_control", "poll_interval_seconds"): c.admissionControl.pollIntervalSeconds
        case ("admission_control", "max_wait_seconds"): c.admissionControl.maxWaitSeconds
        case ("circuit_breaker", "cooldown_seconds"): c.circuitBreaker.cooldownSeconds
        case ("cache", "ttl_seconds"): c.cache.ttlSeconds
        case ("cache", "stale_ttl_seconds"): c.cache.staleTtlSeconds
        default: nil
        }
    }
}

@Suite struct ConfigAccessLogTests {
    @Test func defaults() throws {
        let server = try parse("").server
        #expect(server.accessLog == .stdout)
    }

    @Test(arguments: [
        ("stdout", EngineConfig.AccessLogDestination.stdout), ("STDERR", .stderr), ("off", .off), ("none", .off),
        ("\"stdout\"", .stdout), ("\"off\"", .off), ("true", .stdout), ("yes", .stdout), ("false", .off), ("no", .off),
        ("null", .off), ("/var/log/engine/access.log", .file("/var/log/engine/access.log")),
        ("./access.log", .file("./access.log")), ("\"logs/a b.log\"", .file("logs/a b.log")),
    ])
    func accessLogDestinations(yaml: String, expected: EngineConfig.AccessLogDestination) throws {
        #expect(try parse("server:\n  access_log: \(yaml)\n").server.accessLog == expected)
    }

    /// A bare word that is no keyword is a typo, not a file in the working directory; quoted
    /// booleans are strings, so they are refused the same way.
    @Test(arguments: ["stdoutt", "\"true\"", "\"\"", "access.log"])
    func accessLogTyposAreRefused(yaml: String) {
        let error = parseError("server:\n  access_log: \(yaml)\n")
        guard case .invalid(let key, let message) = error else {
            Issue.record("expected an error, got \(String(describing: error))")
            return
        }
        #expect(key == "server.access_log")
        #expect(message.contains("must be stdout, stderr, off, or a file path"))
    }

    @Test func accessLogPathLengthIsBounded() {
        let long = "/" + String(repeating: "a", count: ConfigLimits.maxPathBytes)
        #expect(parseError("server:\n  access_log: \(long)\n")?.description.contains("at most 4096 bytes") == true)
    }

    @Test func accessLogListIsATypeError() {
        #expect(parseError("server:\n  access_log: [a]\n") == .invalid(key: "server.access_log", message: "expected a string, got a list (line 2)"))
    }
}

@Suite struct ConfigSharePortTests {
    @Test func offByDefault() throws {
        #expect(try !parse("").server.sharePort)
    }

    @Test func sharePortIsABoolean() throws {
        #expect(try parse("server:\n  share_port: true\n").server.sharePort)
        #expect(parseError("server:\n  share_port: 1\n") == .invalid(key: "server.share_port", message: "expected a boolean (true/false), got \"1\" (line 2)"))
    }
}

// ConfigLimits.swift: the upper bounds ConfigLoader enforces on every number in a config file, and
// the size and nesting limits of the YAML document itself. They exist so that no config input can
// crash the Engine (a huge timeout used to trap in its Duration conversion) or stall the loader;
// each is far above any sensible setting. docs/configuration.md lists them; keep the two in step.

public enum ConfigLimits {
    /// Timeouts, intervals, cooldowns, backoffs and the drain timeout: at most a day.
    public static let maxDurationSeconds: Double = 86_400
    /// cache.ttl_seconds and cache.stale_ttl_seconds: at most a (365-day) year.
    public static let maxCacheTTLSeconds: Double = 31_536_000
    /// server.max_body_bytes and server.max_header_bytes: at most 1 GiB.
    public static let maxBytes = 1 << 30
    /// server.workers: processes per host.
    public static let maxWorkers = 1024
    /// vllm.retry_count.
    public static let maxRetryCount = 100
    /// vllm.instances[].weight. The smooth weighted round-robin sums weights, so they must stay small.
    public static let maxWeight = 1_000_000
    /// cache.max_size (entries; the hit memo holds up to 4× as many keys).
    public static let maxCacheEntries = 10_000_000
    /// cache.max_bytes: 64 GiB (the shared-memory segment is sized from it; untouched pages cost
    /// nothing, but the number must stay far from overflow).
    public static let maxCacheBytes = 64 << 30
    /// admission_control.max_queue.
    public static let maxQueue = 1_000_000
    /// Configured tenants (admission_control.tenants plus auth.api_keys mappings): each is a
    /// metrics label, so this bounds the label cardinality.
    public static let maxTenants = 1000
    /// circuit_breaker.failure_threshold.
    public static let maxFailureThreshold = 1_000_000
    /// model_registry.fast_model_token_threshold.
    public static let maxTokenThreshold = 10_000_000

    /// server.access_log as a file path: PATH_MAX on Linux.
    public static let maxPathBytes = 4096

    /// The config document: at most 1 MiB. A real config is a few KiB; the bound keeps parse time
    /// and memory small whatever the file holds (and stops `--config /dev/zero` from reading forever).
    public static let maxDocumentBytes = 1 << 20
    /// Nesting depth of lists and mappings. The deepest real config is 4 (vllm.instances[].models);
    /// libyaml and the tree are fine far deeper, but the tree's release is recursive, and an
    /// unbounded depth overflowed the stack (50,000 levels) after quadratic parse time.
    public static let maxYAMLDepth = 64
}

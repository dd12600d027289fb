// EngineMetrics: the vLLM Prometheus series the simulator keeps, and their text rendering in
// prometheus_client's exact format (HELP/TYPE lines, labels sorted alphabetically, every series
// labelled engine="0",model_name=<first served name>, counters as X_total plus an X_created gauge,
// floats as prometheus_client prints them). A subset of vLLM's ~70 families: the ones routers and
// dashboards read. Plain values, owned by SimServer.

struct Histogram {
    let bounds: [Double]
    /// Per-bucket counts (not cumulative); the last slot is +Inf.
    private(set) var counts: [Int]
    private(set) var sum = 0.0
    private(set) var count = 0

    init(_ bounds: [Double]) {
        self.bounds = bounds
        counts = Array(repeating: 0, count: bounds.count + 1)
    }

    mutating func observe(_ v: Double, times: Int = 1) {
        guard times > 0 else { return }
        var i = 0
        while i < bounds.count && v > bounds[i] { i += 1 }
        counts[i] += times
        sum += v * Double(times)
        count += times
    }
}

enum FinishedReason: Int, CaseIterable {
    case stop, length, abort, error, repetition

    var label: StaticString {
        switch self {
        case .stop: return "stop"
        case .length: return "length"
        case .abort: return "abort"
        case .error: return "error"
        case .repetition: return "repetition"
        }
    }
}

struct EngineMetrics {
    /// Wall-clock start, printed in every `_created` series.
    let createdAt: Double
    var promptTokens = 0
    /// Prefix cache lookups and hits, in tokens (vLLM counts queried and cached prompt tokens).
    var prefixQueries = 0
    var prefixHits = 0
    var generationTokens = 0
    var finished = Array(repeating: 0, count: FinishedReason.allCases.count)
    var timeToFirstToken = Histogram([0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                                      2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0])
    var interTokenLatency = Histogram([0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
                                       2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0])
    var e2eLatency = Histogram(latencyBuckets)
    var queueTime = Histogram(latencyBuckets)
    var requestPromptTokens: Histogram
    var requestGenerationTokens: Histogram
    var requestParamsMaxTokens: Histogram

    private static let latencyBuckets: [Double] = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
                                                   30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
                                                   1920.0, 7680.0]

    init(createdAt: Double, maxModelLen: Int) {
        self.createdAt = createdAt
        let tokens = oneTwoFiveBuckets(upTo: maxModelLen)
        requestPromptTokens = Histogram(tokens)
        requestGenerationTokens = Histogram(tokens)
        requestParamsMaxTokens = Histogram(tokens)
    }

    struct Gauges {
        var running: Int
        var waiting: Int
        var kvUsage: Double
    }

    func render(model: String, gauges: Gauges, settings: SimSettings) -> [UInt8] {
        var r = Renderer(model: model, created: createdAt)
        r.gauge("num_requests_running", "Number of requests in model execution batches.", Double(gauges.running))
        r.gauge("num_requests_waiting", "Number of requests waiting to be processed.", Double(gauges.waiting))
        r.help("num_requests_waiting_by_reason", "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting.", type: "gauge")
        r.sample("num_requests_waiting_by_reason", extra: "reason=\"capacity\"", after: true, Double(gauges.waiting))
        r.sample("num_requests_waiting_by_reason", extra: "reason=\"deferred\"", after: true, 0)
        r.help("engine_sleep_state", "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.", type: "gauge")
        r.sample("engine_sleep_state", extra: "sleep_state=\"awake\"", after: true, 1)
        r.sample("engine_sleep_state", extra: "sleep_state=\"weights_offloaded\"", after: true, 0)
        r.sample("engine_sleep_state", extra: "sleep_state=\"discard_all\"", after: true, 0)
        r.gauge("kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", gauges.kvUsage)
        r.counter("prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.", Double(prefixQueries))
        r.counter("prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", Double(prefixHits))
        r.counter("num_preemptions", "Cumulative number of preemption from the engine.", 0)
        r.counter("prompt_tokens", "Number of prefill tokens processed.", Double(promptTokens))
        r.counter("generation_tokens", "Number of generation tokens processed.", Double(generationTokens))

        let successHelp = "Count of successfully processed requests."
        r.help("request_success_total", successHelp, type: "counter")
        for reason in FinishedReason.allCases {
            r.sample("request_success_total", extra: "finished_reason=\"\(reason.label)\"", after: false,
                     Double(finished[reason.rawValue]))
        }
        r.help("request_success_created", successHelp, type: "gauge")
        for reason in FinishedReason.allCases {
            r.sample("request_success_created", extra: "finished_reason=\"\(reason.label)\"", after: false, createdAt)
        }

        r.histogram("request_prompt_tokens", "Number of prefill tokens processed.", requestPromptTokens)
        r.histogram("request_generation_tokens", "Number of generation tokens processed.", requestGenerationTokens)
        r.histogram("request_params_max_tokens", "Histogram of the max_tokens request parameter.", requestParamsMaxTokens)
        r.histogram("time_to_first_token_seconds", "Histogram of time to first token in seconds.", timeToFirstToken)
        r.histogram("inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", interTokenLatency)
        r.histogram("e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", e2eLatency)
        r.histogram("request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", queueTime)

        // vLLM labels this one with engine only (no model_name), config in the other labels.
        let tokens = settings.kvBlocks * settings.blockSize
        let concurrency = Double(tokens) / Double(max(1, settings.maxModelLen))
        r.help("cache_config_info", "Information of the LLMEngine CacheConfig", type: "gauge")
        r.w.write("vllm:cache_config_info{block_size=\"")
        r.w.write(int: settings.blockSize)
        r.w.write("\",cache_dtype=\"auto\",enable_prefix_caching=\"")
        r.w.write(settings.prefixCaching ? "True" : "False")
        r.w.write("\",engine=\"0\",gpu_memory_utilization=\"0.92\",kv_cache_max_concurrency=\"")
        r.w.write(pythonFloat: concurrency)
        r.w.write("\",kv_cache_memory_bytes=\"")
        r.w.write(int: tokens * 2048)
        r.w.write("\",kv_cache_size_tokens=\"")
        r.w.write(int: tokens)
        r.w.write("\",num_cpu_blocks=\"None\",num_gpu_blocks=\"")
        r.w.write(int: settings.kvBlocks)
        r.w.write("\",num_gpu_blocks_override=\"None\",sliding_window=\"None\"} 1.0\n")
        return r.w.bytes
    }

    private struct Renderer {
        var w = ByteWriter(capacity: 16 * 1024)
        let model: [UInt8]
        let created: Double

        init(model: String, created: Double) {
            self.model = Array(model.utf8)
            self.created = created
        }

        mutating func help(_ name: String, _ help: String, type: StaticString) {
            w.write("# HELP vllm:")
            w.write(string: name)
            w.write(byte: 32)
            w.write(string: help)
            w.write("\n# TYPE vllm:")
            w.write(string: name)
            w.write(byte: 32)
            w.write(type)
            w.write(byte: 10)
        }

        /// One sample; `extra` is a label that sorts before model_name (`after: false`, e.g.
        /// finished_reason, le) or after it (`after: true`, e.g. reason, sleep_state).
        mutating func sample(_ name: String, extra: String? = nil, after: Bool = false, _ value: Double) {
            w.write("vllm:")
            w.write(string: name)
            w.write("{engine=\"0\",")
            if let extra, !after { w.write(string: extra); w.write(byte: UInt8(ascii: ",")) }
            w.write("model_name=\"")
            w.write(model)
            w.write(byte: UInt8(ascii: "\""))
            if let extra, after { w.write(byte: UInt8(ascii: ",")); w.write(string: extra) }
            w.write("} ")
            w.write(goFloat: value)
            w.write(byte: 10)
        }

        mutating func gauge(_ name: String, _ helpText: String, _ value: Double) {
            help(name, helpText, type: "gauge")
            sample(name, value)
        }

        mutating func counter(_ name: String, _ helpText: String, _ value: Double) {
            help(name + "_total", helpText, type: "counter")
            sample(name + "_total", value)
            help(name + "_created", helpText, type: "gauge")
            sample(name + "_created", created)
        }

        mutating func histogram(_ name: String, _ helpText: String, _ h: Histogram) {
            help(name, helpText, type: "histogram")
            var cumulative = 0
            for (i, bound) in h.bounds.enumerated() {
                cumulative += h.counts[i]
                sample(name + "_bucket", extra: "le=\"" + goFloatString(bound) + "\"", Double(cumulative))
            }
            cumulative += h.counts[h.bounds.count]
            sample(name + "_bucket", extra: "le=\"+Inf\"", Double(cumulative))
            sample(name + "_count", Double(h.count))
            sample(name + "_sum", h.sum)
            help(name + "_created", helpText, type: "gauge")
            sample(name + "_created", created)
        }
    }
}

/// vLLM's build_1_2_5_buckets: 1, 2, 5, 10, 20, 50, ... up to `max`.
func oneTwoFiveBuckets(upTo max: Int) -> [Double] {
    var out: [Double] = []
    var exponent = 1
    while true {
        for m in [1, 2, 5] {
            let v = m * exponent
            if v > max { return out }
            out.append(Double(v))
        }
        exponent *= 10
    }
}

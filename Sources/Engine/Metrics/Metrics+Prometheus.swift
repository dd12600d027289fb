// Metrics rendered as Prometheus text exposition 0.0.4 (PrometheusWriter): one prefix `engine_`,
// units in names, labels of bounded cardinality (route, model from the known set and at most
// Metrics.maxModelLabels of them, status class, cache outcome, backend URL from the config,
// termination code from a fixed alphabet), then the standard `process_*` series of this process.
import Reactor

extension EngineRuntime {
    func prometheusText() -> String {
        let m = metrics
        var w = PrometheusWriter()
        w.counter("engine_requests_total", help: "Finished generation requests by route, served model, status class and cache outcome.",
                  samples: m.requestsByKey.entries.sorted { ($0.key.route, $0.key.model, $0.key.statusClass, $0.key.cache) < ($1.key.route, $1.key.model, $1.key.statusClass, $1.key.cache) }
                    .map { (labels: [("route", $0.key.route), ("model", $0.key.model), ("status", $0.key.statusClass), ("cache", $0.key.cache)], value: Double($0.value)) })
        w.counter("engine_http_requests_total", help: "HTTP requests received on any route.", value: Double(m.requestsTotal))
        w.counter("engine_responses_total", help: "Responses by status class.",
                  samples: (1...5).map { (labels: [("status", "\($0)xx")], value: Double(m.responsesByClass[$0])) })
        w.histogram("engine_request_duration_seconds", help: "End-to-end duration of generation requests, by served model and backend.",
                    series: latencySeries(m.e2eSeconds))
        w.histogram("engine_time_to_first_byte_seconds", help: "Time to the first response byte (the SSE head for streams), by served model and backend.",
                    series: latencySeries(m.ttftSeconds))
        if !m.firstTokenSeconds.isEmpty {
            w.histogram("engine_time_to_first_token_seconds", help: "Time to the first content event a client received, by served model and backend.",
                        series: latencySeries(m.firstTokenSeconds))
        }
        w.histogram("engine_overhead_seconds", help: "Time the Engine itself added: duration minus the upstream exchange, by served model and backend.",
                    series: latencySeries(m.overheadSeconds))
        w.histogram("engine_stream_chunk_gap_seconds", help: "Gap between consecutive SSE chunks relayed to clients.",
                    series: [(labels: [], histogram: m.interChunkSeconds)])
        w.counter("engine_prompt_tokens_total", help: "Prompt tokens reported by vLLM usage, by served model.",
                  samples: m.promptTokens.entries.sorted { $0.key < $1.key }.map { (labels: [("model", $0.key)], value: Double($0.value)) })
        w.counter("engine_completion_tokens_total", help: "Completion tokens reported by vLLM usage, by served model.",
                  samples: m.completionTokens.entries.sorted { $0.key < $1.key }.map { (labels: [("model", $0.key)], value: Double($0.value)) })
        w.counter("engine_cache_hits_total", help: "Fresh cache hits.", value: Double(m.cacheHits))
        w.counter("engine_cache_misses_total", help: "Cache lookups that found nothing fresh.", value: Double(m.cacheMisses))
        w.counter("engine_cache_stale_served_total", help: "Stale entries served by the fallback chain.", value: Double(m.cacheStaleServed))
        w.counter("engine_cache_bypasses_total", help: "Requests that skipped the cache (policy or Cache-Control).", value: Double(m.cacheBypasses))
        w.counter("engine_cache_stores_total", help: "Complete answers stored.", value: Double(m.cacheStores))
        w.counter("engine_cache_errors_total", help: "Cache lookups that failed (Redis unavailable).", value: Double(m.cacheErrors))
        if let mem = cache as? SynchronousCacheStore {
            w.gauge("engine_cache_entries", help: "Entries in the in-process or shared-memory cache.", value: Double(mem.entryCount))
        }
        if let shm = cache as? SharedMemoryCacheStore {
            let st = shm.stats
            w.gauge("engine_cache_bytes", help: "Bytes of keys and answers in the shared-memory cache.", value: Double(st.bytes))
            w.counter("engine_cache_evictions_total", help: "Shared-memory cache entries removed to make room (all workers).", value: Double(st.evictions))
            w.counter("engine_cache_resets_total", help: "Times the shared-memory cache was emptied after a worker died holding its lock.", value: Double(st.resets))
        }
        w.counter("engine_coalesced_followers_total", help: "Requests answered by an identical request's upstream call.", value: Double(m.coalescedFollowers))
        w.counter("engine_client_slow_closed_total", help: "Live followers closed because their client fell more than 1 MiB behind the shared stream.", value: Double(m.clientSlowClosed))
        w.counter("engine_upstream_retries_total", help: "Upstream attempts retried before the first byte.", value: Double(m.upstreamRetries))
        if let a = admission {
            w.counter("engine_admission_decisions_total", help: "Admission control decisions.",
                      samples: [(labels: [("decision", "admit")], value: Double(a.admittedCount)),
                                (labels: [("decision", "queue")], value: Double(a.enqueuedCount)),
                                (labels: [("decision", "reject")], value: Double(a.rejectedCount))])
            w.gauge("engine_admission_queue_depth", help: "Requests waiting in admission queues.", value: Double(a.queuedTotal))
            w.gauge("engine_admission_inflight", help: "Requests admission released to each backend that have not ended (this process).",
                    samples: backends.all.map { (labels: [("backend", $0.url)], value: Double(a.machine.inflight(on: $0.id))) })
            w.histogram("engine_admission_wait_seconds", help: "Time requests waited in the admission queue.",
                        series: [(labels: [], histogram: m.queueWaitSeconds)])
        }
        tenantMetrics.write(to: &w)
        let bl: (Backend) -> [(String, String)] = { [("backend", $0.url)] }
        if let kv = kvEvents {
            w.gauge("engine_kv_index_blocks", help: "KV-cache blocks the exact-mode index holds per backend (from its KV events).",
                    samples: backends.all.map { (labels: bl($0), value: Double(kv.index.blockCount($0.id))) })
            w.counter("engine_kv_events_batches_total", help: "KV-event batches applied to the index.", value: Double(kv.batchesApplied))
            w.counter("engine_kv_events_total", help: "KV events (stored, removed, cleared) applied to the index.", value: Double(kv.eventsApplied))
            w.counter("engine_kv_events_dropped_total", help: "KV-event messages dropped as malformed, by reason.",
                      samples: KVDecodeError.allCases.map { (labels: [("reason", $0.rawValue)], value: Double(kv.dropped[$0] ?? 0)) })
            w.counter("engine_kv_index_purges_total", help: "Backends' index entries purged after a sequence gap or publisher restart.",
                      samples: backends.all.map { (labels: bl($0), value: Double(kv.gapPurges[$0.id] ?? 0)) })
        }
        w.gauge("engine_backend_kv_cache_usage", help: "Last polled vllm:kv_cache_usage_perc (0..1); absent when unknown.",
                samples: backends.all.compactMap { b in b.load?.kvUsage.map { (labels: bl(b), value: $0) } })
        w.gauge("engine_backend_requests_running", help: "Last polled vllm:num_requests_running.",
                samples: backends.all.compactMap { b in b.load?.running.map { (labels: bl(b), value: $0) } })
        w.gauge("engine_backend_requests_waiting", help: "Last polled vllm:num_requests_waiting.",
                samples: backends.all.compactMap { b in b.load?.waiting.map { (labels: bl(b), value: $0) } })
        w.gauge("engine_backend_breaker_state", help: "Circuit breaker: 0 closed, 1 open, 2 half-open.",
                samples: backends.all.map { (labels: bl($0), value: Double($0.breaker.gauge)) })
        w.gauge("engine_backend_healthy", help: "1 when the backend's last health check answered.",
                samples: backends.all.map { (labels: bl($0), value: $0.isHealthy ? 1 : 0) })
        writeRoutingMetrics(&w)
        w.gauge("engine_healthy_backends", help: "Backends whose last health check answered.", value: Double(backends.healthyCount))
        if let r = redis {
            w.gauge("engine_redis_up", help: "1 when the Redis connection is up.", value: r.isConnected ? 1 : 0)
        }
        w.gauge("engine_open_connections", help: "Open client connections.", value: Double(m.openConnections))
        w.gauge("engine_requests_in_flight", help: "Generation requests in progress.", value: Double(m.requestsInFlight))
        w.counter("engine_terminations_total", help: "How requests ended (HAProxy-style cause and phase; -- is normal).",
                  samples: m.terminationCounts.entries.sorted { $0.key.description < $1.key.description }
                    .map { (labels: [("code", $0.key.description)], value: Double($0.value)) })
        w.gauge("engine_uptime_seconds", help: "Seconds since this process started.", value: Double(Loop.nowNanos() - m.startedNanos) / 1e9)
        if let p = ProcessStats.readSelf() { w.process(p) }
        return w.text
    }

    /// A latency table's series labelled `model` and `backend`, in a stable order.
    private func latencySeries(_ t: HistogramTable<LatencyLabels>) -> [(labels: [(String, String)], histogram: Histogram)] {
        t.series.sorted { ($0.key.model, $0.key.backend) < ($1.key.model, $1.key.backend) }
            .map { (labels: [("model", $0.key.model), ("backend", $0.key.backend)], histogram: $0.histogram) }
    }
}

extension PrometheusWriter {
    /// The standard process collector's series, under the names client_golang and
    /// prometheus_client use (no `engine_` prefix, so dashboards built for them work).
    mutating func process(_ p: ProcessStats) {
        counter("process_cpu_seconds_total", help: "Total user and system CPU time spent in seconds.", value: p.cpuSeconds)
        gauge("process_resident_memory_bytes", help: "Resident memory size in bytes.", value: Double(p.residentMemoryBytes))
        gauge("process_virtual_memory_bytes", help: "Virtual memory size in bytes.", value: Double(p.virtualMemoryBytes))
        gauge("process_start_time_seconds", help: "Start time of the process since unix epoch in seconds.", value: p.startTimeSeconds)
        if let n = p.openFDs { gauge("process_open_fds", help: "Number of open file descriptors.", value: Double(n)) }
        if let n = p.maxFDs { gauge("process_max_fds", help: "Maximum number of open file descriptors.", value: Double(n)) }
    }
}

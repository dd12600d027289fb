// EngineRuntime+Routing: what the Frontend asks of prefix-aware routing (how to chunk a prompt)
// and its series on /metrics. Labels: `reason` from RoutingScorer.Reason (a closed set) and
// `backend` from the configured instance URLs: bounded cardinality.

extension EngineRuntime {
    /// Chunking for OpenAIRequest.parse: nil under round_robin (no prompt is rendered or hashed).
    var promptChunking: (chunkBytes: Int, maxChunks: Int)? {
        guard let r = backends.routing else { return nil }
        return (r.config.chunkChars, r.config.maxPrefixChunks)
    }

    func writeRoutingMetrics(_ w: inout PrometheusWriter) {
        guard let r = backends.routing else {
            w.counter("engine_routing_decisions_total", help: "Backend choices by reason (this process).",
                      samples: [(labels: [("reason", RoutingScorer.Reason.roundRobin.rawValue)],
                                 value: Double(backends.all.reduce(0) { $0 + $1.requestsSent }))])
            return
        }
        w.counter("engine_routing_decisions_total", help: "Backend choices by reason (this process).",
                  samples: RoutingScorer.Reason.allCases.map { (labels: [("reason", $0.rawValue)], value: Double(r.decisions[$0] ?? 0)) })
        let bl: (Backend) -> [(String, String)] = { [("backend", $0.url)] }
        w.counter("engine_routing_prefix_chunks_queried_total", help: "Prompt chunks of requests sent to each backend (estimated index).",
                  samples: backends.all.map { (labels: bl($0), value: Double(r.queriedChunks[$0.id.index])) })
        w.counter("engine_routing_prefix_chunks_matched_total", help: "Of those, leading chunks the estimated index held for that backend.",
                  samples: backends.all.map { (labels: bl($0), value: Double(r.matchedChunks[$0.id.index])) })
        w.gauge("engine_routing_prefix_hit_ratio", help: "Estimated prefix hit ratio per backend: matched ÷ queried chunks.",
                samples: backends.all.map { b in
                    let q = r.queriedChunks[b.id.index]
                    return (labels: bl(b), value: q > 0 ? Double(r.matchedChunks[b.id.index]) / Double(q) : 0)
                })
        w.gauge("engine_routing_index_chunks", help: "Chunks the estimated prefix index holds per backend.",
                samples: backends.all.map { (labels: bl($0), value: Double(r.index.sizes[$0.id.index])) })
        w.gauge("engine_routing_index_capacity_chunks", help: "Per-backend bound of the estimated prefix index.",
                samples: backends.all.map { (labels: bl($0), value: Double(r.index.capacities[$0.id.index])) })
        if promptTokenizer != nil {
            w.counter("engine_routing_exact_prefix_tokens_queried_total",
                      help: "Exact mode: prompt tokens of requests sent to each backend with their token ids.",
                      samples: backends.all.map { (labels: bl($0), value: Double(r.exactQueriedTokens[$0.id.index])) })
            w.counter("engine_routing_exact_prefix_tokens_matched_total",
                      help: "Of those, tokens in leading KV blocks the backend's KV events said it held.",
                      samples: backends.all.map { (labels: bl($0), value: Double(r.exactMatchedTokens[$0.id.index])) })
            w.gauge("engine_routing_exact_prefix_hit_ratio", help: "Exact prefix hit ratio per backend: matched ÷ queried tokens.",
                    samples: backends.all.map { b in
                        let q = r.exactQueriedTokens[b.id.index]
                        return (labels: bl(b), value: q > 0 ? Double(r.exactMatchedTokens[b.id.index]) / Double(q) : 0)
                    })
        }
        if let t = promptTokenizer {
            w.counter("engine_routing_tokenize_total",
                      help: "Exact mode: /tokenize fetches that teach the block map a new prompt prefix, by result.",
                      samples: [(labels: [("result", "fetched")], value: Double(t.fetches - t.failures)),
                                (labels: [("result", "failed")], value: Double(t.failures))])
            w.counter("engine_routing_block_map_total",
                      help: "Exact mode: decisions whose prefix came from the block map (mapped), prompts sent to learn it (learn), new prompts not sent because a fetch was pending (busy).",
                      samples: [(labels: [("result", "mapped")], value: Double(r.mappedDecisions)),
                                (labels: [("result", "learn")], value: Double(r.learnsAsked)),
                                (labels: [("result", "busy")], value: Double(r.learnsBusy))])
            w.gauge("engine_routing_block_map_keys", help: "Exact mode: chunk prefixes the block map knows.",
                    value: Double(r.blockMap.count))
            w.gauge("engine_routing_block_map_chains", help: "Exact mode: KV block hashes the block map stores.",
                    value: Double(r.blockMap.storedChains))
        }
        w.gauge("engine_backend_in_flight", help: "Requests this process has in flight to each backend.",
                samples: backends.all.map { (labels: bl($0), value: Double($0.inFlight)) })
    }
}

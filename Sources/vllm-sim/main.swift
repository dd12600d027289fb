// vllm-sim: a stand-in for vLLM 0.32.0's OpenAI server (shared/ref/vllm-api.md is its spec), the
// upstream for the Engine's tests and benchmarks. One process, one libevent Loop, no threads, no
// Foundation. This file only reads the command line, binds, prints the port and runs the loop;
// SimServer does the rest.
//
// vLLM endpoints: GET /health /ping /version /load /v1/models /metrics, POST /ping /tokenize
// /detokenize /v1/completions /v1/chat/completions /v1/responses (plain and "stream": true;
// GET /v1/responses/{id} and its cancel answer 404, nothing is stored). As an embedding model too
// (a real vLLM is one or the other): POST /v1/embeddings /pooling /classify /score /v1/score
// /rerank /v1/rerank /v2/rerank. Shapes: docs/vllm-surface.md.
//
// Simulator-only extras (not in vLLM; JSON in and out, errors as {"error": "..."} with 400):
//   POST /sim/config   Any subset of {"error_rate": 0..1, "kv_usage_override": x (negative = off),
//                      "ttft_ms": ms, "itl_ms": ms, "disconnect_after_tokens": n,
//                      "stall_after_tokens": n, "refuse": bool}; changes them live (a running
//                      request keeps the pacing it started with). Unknown keys are rejected.
//                      Answers the knobs now in force (GET /sim/config returns them too).
//                      "refuse": true makes the listener accept new connections and close them at
//                      once, and closes kept-alive connections at their next non-/sim request
//                      without an answer; {"refuse_ms": n} refuses for n ms and then lifts itself
//                      (handy because a refusing simulator cannot be reached on a new connection;
//                      otherwise send {"refuse": false} over a connection opened before).
//   GET  /sim/stats    {"requests_total", "chat_requests", "completion_requests",
//                      "responses_requests", "embedding_requests", "pooling_requests" (every POST
//                      to those routes, valid or not; pooling = /pooling, /classify, /score and
//                      /rerank), "stream_requests" (valid streams),
//                      "aborted" (clients gone before the end, including disconnect_after_tokens),
//                      "running", "waiting", "max_running_seen", "errors_injected",
//                      "refused_connections", "kv_cache_usage_perc", "last_request_headers" (of the
//                      latest generation or pooling request, names lower-cased), "last_request_body" (string),
//                      "config" (the knobs)}.
//   POST /sim/reset    Zeroes the /sim/stats counters (max_running_seen restarts at the current
//                      running count); the Prometheus counters are never reset, as in vLLM.

#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Reactor

struct VLLMSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vllm-sim",
        abstract: "A vLLM 0.32.0 OpenAI-compatible server simulator on one libevent loop.")

    @Option(help: "Address to bind.")
    var host = "127.0.0.1"

    @Option(help: "Port to bind; 0 picks a free one (the startup line prints it).")
    var port = 8080

    @Option(name: .customLong("model"), help: "Served model name (repeatable); the first answers requests without `model`.")
    var models: [String] = []

    @Option(help: "Context length: prompt + generated tokens.")
    var maxModelLen = 2048

    @Option(help: "Time to first token, in milliseconds.")
    var ttftMs = 0.0

    @Option(help: "Inter-token latency, in milliseconds.")
    var itlMs = 0.0

    @Option(help: "Tokens generated when a request has no max_tokens (vLLM: max_model_len - prompt).")
    var defaultMaxTokens = 16

    @Option(help: "KV cache size in blocks.")
    var kvBlocks = 256

    @Option(help: "Tokens per KV block: the KV accounting, the prefix cache's blocks and the KV events' block_size (vLLM on CPU uses 128).")
    var blockSize = 16

    @Option(help: "Most requests running at once; the rest wait.")
    var maxNumSeqs = 128

    @Option(help: "Fraction of valid generation and pooling requests answered 500.")
    var errorRate = 0.0

    @Option(help: "Close the socket after this many streamed tokens (0 = off).")
    var disconnectAfterTokens = 0

    @Option(help: "Stop sending after this many streamed tokens, keeping the socket open (0 = off).")
    var stallAfterTokens = 0

    @Option(help: "Close idle keep-alive connections after this many seconds (uvicorn's default, as vLLM runs it).")
    var timeoutKeepAlive = 5.0

    @Option(parsing: .unconditional, help: "Report this fixed vllm:kv_cache_usage_perc (negative = off).")
    var kvUsageOverride = -1.0

    @Option(help: "Values per embedding vector (/v1/embeddings, /pooling).")
    var embeddingSize = 128

    @Flag(help: "Accept `dimensions` on /v1/embeddings (a Matryoshka model); otherwise refuse it, as most models do.")
    var matryoshka = false

    @Option(help: "Seed for ids, error injection and sampled text (default: from the clock).")
    var seed: UInt64?

    @Flag(inversion: .prefixedNo, help: "Cache prompt KV blocks across requests (vLLM's automatic prefix caching), in an LRU as large as the KV cache.")
    var enablePrefixCaching = true

    @Option(help: "Prefill cost per uncached prompt token, in microseconds, added to the time to first token; one instance prefills one prompt at a time (0 = free).")
    var prefillUsPerToken = 0.0

    @Flag(help: "Start the generated text with the prompt's text (live: /sim/config {\"echo\": true}).")
    var echo = false

    @Option(help: "As vLLM's: JSON {\"enable_kv_cache_events\": true, \"publisher\": \"zmq\", \"endpoint\": \"tcp://*:5557\"} publishes KV-cache events (replay_endpoint is accepted, not served). The startup line then names the bound endpoint.")
    var kvEventsConfig: String?

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0...65535") }
        guard maxModelLen >= 2 else { throw ValidationError("--max-model-len must be ≥ 2") }
        guard defaultMaxTokens >= 1 else { throw ValidationError("--default-max-tokens must be ≥ 1") }
        guard kvBlocks >= 1, blockSize >= 1, maxNumSeqs >= 1 else {
            throw ValidationError("--kv-blocks, --block-size and --max-num-seqs must be ≥ 1")
        }
        guard ttftMs >= 0, itlMs >= 0, ttftMs <= 1e9, itlMs <= 1e9 else {
            throw ValidationError("--ttft-ms and --itl-ms must be in 0...1e9")
        }
        guard (0...1).contains(errorRate) else { throw ValidationError("--error-rate must be in 0...1") }
        guard disconnectAfterTokens >= 0, stallAfterTokens >= 0 else {
            throw ValidationError("--disconnect-after-tokens and --stall-after-tokens must be ≥ 0")
        }
        guard timeoutKeepAlive > 0 && timeoutKeepAlive <= 86400 else {
            throw ValidationError("--timeout-keep-alive must be in (0, 86400]")
        }
        guard kvUsageOverride <= 1 else { throw ValidationError("--kv-usage-override must be ≤ 1") }
        guard prefillUsPerToken >= 0 && prefillUsPerToken <= 1e6 else { throw ValidationError("--prefill-us-per-token must be in 0...1e6") }
        guard (1...65536).contains(embeddingSize) else { throw ValidationError("--embedding-size must be 1...65536") }
        if let j = kvEventsConfig, case .failure(let e) = SimKVEventsConfig.parse(j) { throw ValidationError(e.message) }
    }

    func run() throws {
        let settings = SimSettings(
            host: host, port: port, models: models.isEmpty ? ["sim-model"] : models,
            maxModelLen: maxModelLen, defaultMaxTokens: defaultMaxTokens, kvBlocks: kvBlocks,
            blockSize: blockSize, maxNumSeqs: maxNumSeqs, seed: seed ?? Loop.nowNanos(),
            embeddingSize: embeddingSize, isMatryoshka: matryoshka,
            keepAliveTimeout: .milliseconds(Int64(timeoutKeepAlive * 1000)),
            prefixCaching: enablePrefixCaching, prefillMicrosPerToken: prefillUsPerToken)
        let knobs = SimKnobs(
            errorRate: errorRate, kvUsageOverride: kvUsageOverride < 0 ? -1 : kvUsageOverride,
            ttftMs: ttftMs, itlMs: itlMs, disconnectAfterTokens: disconnectAfterTokens,
            stallAfterTokens: stallAfterTokens, refuse: false, echo: echo)

        let loop = Loop()
        let server = SimServer(loop: loop, settings: settings, knobs: knobs)
        if let j = kvEventsConfig, case .success(let kc) = SimKVEventsConfig.parse(j), kc.isEnabled, kc.publisher == "zmq" {
            guard let p = KVEventPublisher(loop: loop, config: kc) else {
                writeLine(2, "vllm-sim: cannot open the KV-event publisher on \(kc.endpoint)")
                throw ExitCode(1)
            }
            server.kvEvents = p
            writeLine(1, "vllm-sim kv events on port \(p.port)")
        }
        let listener: Listener
        do {
            listener = try Listener(loop: loop, host: host, port: port, reusePort: false) { [unowned server] fd in
                server.accept(fd)
            }
        } catch {
            writeLine(2, "vllm-sim: cannot listen on \(host):\(port): \(error)")
            throw ExitCode(1)
        }
        // libevent's handler makes a write to a closed socket an EPIPE instead of a fatal SIGPIPE.
        let pipe = SignalWatcher(loop: loop, signal: SIGPIPE) {}
        let term = SignalWatcher(loop: loop, signal: SIGTERM) { loop.stop() }
        let interrupt = SignalWatcher(loop: loop, signal: SIGINT) { loop.stop() }

        writeLine(1, "vllm-sim listening on \(host):\(listener.port)")
        loop.run()

        listener.close()
        server.kvEvents?.close()
        pipe.close()
        term.close()
        interrupt.close()
    }
}

/// Unbuffered, so a harness reading our stdout sees the line at once.
private func writeLine(_ fd: Int32, _ s: String) {
    var line = s + "\n"
    line.withUTF8 { p in _ = write(fd, p.baseAddress, p.count) }
}

VLLMSim.main()

// Prefix-aware routing's pure parts: prompt chunk hashing, the estimated PrefixIndex (per-backend
// LRU), RoutingScorer (weights, ties, imbalance guard, as properties over random inputs), the
// prompt rendering the scan feeds them, the routing config, and a micro-benchmark of the whole
// per-request routing work (printed; bounded loosely so a slow shared machine does not fail it).
import Testing
@testable import Engine
import Reactor
#if canImport(Glibc)
import Glibc
#endif

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

private extension TestRNG {
    mutating func int(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}


@Suite struct PromptChunksTests {
    @Test func fullChunksOnlyChainedAndBounded() {
        let text = bytes(String(repeating: "abcdefgh", count: 100))  // 800 bytes
        let c = PromptChunks(text, chunkBytes: 256, maxChunks: 128)
        #expect(c.count == 3)
        #expect(Set(c.hashes).count == 3)  // equal chunk text, different positions
        #expect(PromptChunks(text, chunkBytes: 256, maxChunks: 2).hashes == Array(c.hashes.prefix(2)))
        #expect(PromptChunks(Array(text.prefix(255)), chunkBytes: 256, maxChunks: 8).isEmpty)
        // A change in chunk 0 changes every hash; a change in chunk 2 only the last.
        var a = text
        a[3] = 0
        let ca = PromptChunks(a, chunkBytes: 256, maxChunks: 8)
        #expect(zip(ca.hashes, c.hashes).allSatisfy { $0 != $1 })
        var b = text
        b[600] = 0
        let cb = PromptChunks(b, chunkBytes: 256, maxChunks: 8)
        #expect(Array(cb.hashes.prefix(2)) == Array(c.hashes.prefix(2)) && cb.hashes[2] != c.hashes[2])
        // Odd chunk sizes read their tail bytes too.
        var d = text
        d[99] = 0
        #expect(PromptChunks(d, chunkBytes: 100, maxChunks: 8).hashes[0] != PromptChunks(text, chunkBytes: 100, maxChunks: 8).hashes[0])
        #expect(PromptChunks.salt(model: "a") != PromptChunks.salt(model: "b"))
        #expect(c.key(0, salt: PromptChunks.salt(model: "a")) != c.key(0, salt: PromptChunks.salt(model: "b")))
    }

    @Test func scanRendersChatRolesContentPartsAndPrompts() {
        let chat = bytes(#"{"model":"m","messages":[{"role":"system","content":"S\u0041"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"text":"b"}]},{"role":"assistant","content":null}]}"#)
        #expect(OpenAIRequest.routingPrompt(kind: .chat, body: chat) == bytes("system\nSA\nuser\nab\nassistant\n\n"))
        #expect(OpenAIRequest.routingPrompt(kind: .chat, body: chat, limit: 9) == bytes("system\nSA"))
        #expect(OpenAIRequest.routingPrompt(kind: .completion, body: bytes(#"{"prompt":"hello"}"#)) == bytes("hello"))
        #expect(OpenAIRequest.routingPrompt(kind: .completion, body: bytes(#"{"prompt":["x","y"]}"#)) == bytes("x"))
        #expect(OpenAIRequest.routingPrompt(kind: .completion, body: bytes(#"{"prompt":[1,258]}"#)) == [1, 0, 0, 0, 2, 1, 0, 0])
        #expect(OpenAIRequest.routingPrompt(kind: .completion, body: bytes(#"{"prompt":[[7]]}"#)) == [7, 0, 0, 0])
        // A rejected body renders nothing.
        #expect(OpenAIRequest.routingPrompt(kind: .chat, body: bytes(#"{"messages":[]}"#)).isEmpty)
    }

    @Test func parseHashesThePromptOnlyWhenAsked() throws {
        let system = String(repeating: "You are a careful assistant. ", count: 40)
        func body(_ q: String) -> [UInt8] {
            bytes(#"{"model":"m","messages":[{"role":"system","content":"\#(system)"},{"role":"user","content":"\#(q)"}]}"#)
        }
        let plain = try OpenAIRequest.parse(kind: .chat, body: body("hi")).get()
        #expect(plain.promptChunks == nil)
        let a = try OpenAIRequest.parse(kind: .chat, body: body("first question"), chunking: (256, 128)).get()
        let b = try OpenAIRequest.parse(kind: .chat, body: body("another one entirely"), chunking: (256, 128)).get()
        let ca = try #require(a.promptChunks), cb = try #require(b.promptChunks)
        #expect(ca.count == (7 + system.utf8.count + 2) / 256)
        #expect(ca.count >= 4)
        // The shared system prompt gives the same leading chunks.
        #expect(ca.hashes.prefix(3) == cb.hashes.prefix(3))
    }
}

@Suite struct PrefixIndexTests {
    func chunks(_ hs: [UInt64]) -> PromptChunks { PromptChunks(hashes: hs) }

    @Test func matchesLeadingChunksPerBackend() {
        var ix = PrefixIndex(backendCount: 3, capacity: 100)
        var out: [Int] = []
        ix.matchedChunks(chunks([1, 2, 3]), salt: 0, backends: [0, 1, 2], into: &out)
        #expect(out == [0, 0, 0])
        #expect(ix.record(chunks([1, 2, 3]), salt: 0, backend: 0) == 0)
        #expect(ix.record(chunks([1, 2]), salt: 0, backend: 1) == 0)
        ix.matchedChunks(chunks([1, 2, 3, 4]), salt: 0, backends: [0, 1, 2], into: &out)
        #expect(out == [3, 2, 0])
        ix.matchedChunks(chunks([1, 9, 3]), salt: 0, backends: [2, 0], into: &out)
        #expect(out == [0, 1])
        // Another model (salt) shares nothing.
        ix.matchedChunks(chunks([1, 2, 3]), salt: 77, backends: [0, 1], into: &out)
        #expect(out == [0, 0])
        #expect(ix.record(chunks([1, 2, 3, 4]), salt: 0, backend: 0) == 3)
        #expect(ix.distinctChunks == 4)
    }

    @Test func eachBackendIsAnLRUBoundedByItsCapacity() {
        var ix = PrefixIndex(backendCount: 2, capacity: 4)
        ix.record(chunks([1, 2]), salt: 0, backend: 0)
        ix.record(chunks([3, 4]), salt: 0, backend: 0)
        ix.record(chunks([1]), salt: 0, backend: 0)  // 2 is now the least recent
        ix.record(chunks([5]), salt: 0, backend: 0)
        #expect(ix.sizes[0] == 4)
        var out: [Int] = []
        ix.matchedChunks(chunks([1, 2]), salt: 0, backends: [0], into: &out)
        #expect(out == [1])
        ix.matchedChunks(chunks([3]), salt: 0, backends: [0], into: &out)
        #expect(out == [1])
        ix.setCapacity(0, 2)
        #expect(ix.sizes[0] == 2)
        ix.clear(0)
        #expect(ix.sizes[0] == 0 && ix.distinctChunks == 0)
    }

    @Test func randomTrafficKeepsEveryBoundAndAgreesWithAModel() {
        var rng = TestRNG(seed: 42)
        var ix = PrefixIndex(backendCount: 3, capacity: 8)
        // Model: per backend, keys ordered by recency (exact LRU).
        var model: [[UInt64]] = [[], [], []]
        for _ in 0..<3000 {
            let b = rng.int(3)
            let n = 1 + rng.int(4)
            let hs = (0..<n).map { _ in UInt64(rng.int(30)) }
            if Set(hs).count != hs.count { continue }
            ix.record(chunks(hs), salt: 0, backend: b)
            for h in hs.reversed() {
                model[b].removeAll { $0 == h }
                model[b].append(h)
            }
            if model[b].count > 8 { model[b].removeFirst(model[b].count - 8) }
            for k in 0..<3 { #expect(ix.sizes[k] <= 8) }
            var out: [Int] = []
            let probe = UInt64(rng.int(30))
            ix.matchedChunks(chunks([probe]), salt: 0, backends: [0, 1, 2], into: &out)
            #expect(out == (0..<3).map { model[$0].contains(probe) ? 1 : 0 })
        }
    }

    /// The open-addressing table under its worst case (every key in one home bucket: one long
    /// probe run, backward-shift deletions inside it) and `record` reusing matchedChunks' slots.
    @Test func collidingKeysAndReusedLookupsAgreeWithAModel() {
        var rng = TestRNG(seed: 7)
        var ix = PrefixIndex(backendCount: 2, capacity: 6)
        var model: [[UInt64]] = [[], []]
        var out: [Int] = []
        for step in 0..<4000 {
            let b = rng.int(2)
            let hs = Array(Set((0..<(1 + rng.int(4))).map { _ in UInt64(rng.int(24)) << 20 }))
            // Usually the router's sequence (match, then record the same prompt); sometimes a
            // record whose hints are stale or belong to another prompt.
            if step % 5 != 0 { ix.matchedChunks(chunks(hs), salt: 0, backends: [0, 1], into: &out) }
            ix.record(chunks(hs), salt: 0, backend: b)
            for h in hs.reversed() {
                model[b].removeAll { $0 == h }
                model[b].append(h)
            }
            if model[b].count > 6 { model[b].removeFirst(model[b].count - 6) }
            #expect(ix.distinctChunks == Set(model[0] + model[1]).count)
            let probe = UInt64(rng.int(24)) << 20
            ix.matchedChunks(chunks([probe]), salt: 0, backends: [0, 1], into: &out)
            #expect(out == (0..<2).map { model[$0].contains(probe) ? 1 : 0 })
        }
    }

    @Test func capacityFollowsGIEsFormula() {
        // Llama-3-8B on an H100: ~500k KV tokens × 4 chars ÷ 64-char chunks ≈ 31,250 (GIE's figure).
        #expect(PrefixIndex.capacity(kvTokens: 500_000, charsPerToken: 4, chunkChars: 64) == 31_250)
        #expect(PrefixIndex.capacity(kvTokens: 4096, charsPerToken: 4, chunkChars: 256) == 64)
        #expect(PrefixIndex.capacity(kvTokens: nil, charsPerToken: 4, chunkChars: 256) == PrefixIndex.defaultCapacity)
        #expect(PrefixIndex.capacity(kvTokens: 1, charsPerToken: 4, chunkChars: 256) == 16)
    }
}

@Suite struct RoutingScorerTests {
    typealias C = RoutingScorer.Candidate

    func cand(_ i: Int, prefix: Double = 0, queue: Double? = 0, inFlight: Int = 0, kv: Double? = 0.1) -> C {
        C(backend: BackendID(i), prefixOverlap: prefix, polledQueue: queue, inFlight: inFlight, kvUsage: kv)
    }

    @Test func prefixWinsWhenLoadIsEven() {
        let s = RoutingScorer()
        let r = s.order([cand(0), cand(1, prefix: 0.8), cand(2)], random: 1)
        #expect(r.order.first == BackendID(1) && r.reason == .prefix)
        #expect(r.order.count == 3 && Set(r.order) == [BackendID(0), BackendID(1), BackendID(2)])
    }

    @Test func loadAndKVOutweighASmallPrefix() {
        let s = RoutingScorer()
        // 3 × 0.1 prefix < 2 × queue term (1 vs 0).
        let r = s.order([cand(0, prefix: 0.1, queue: 6, inFlight: 6), cand(1, queue: 0)], random: 0)
        #expect(r.order.first == BackendID(1) && r.reason == .load)
        let k = s.order([cand(0, kv: 0.9), cand(1, kv: 0.2)], random: 0)
        #expect(k.order.first == BackendID(1))
    }

    @Test func ownInFlightCountsWhenThePollIsStale() {
        let s = RoutingScorer()
        let r = s.order([cand(0, queue: 0, inFlight: 5), cand(1, queue: 0, inFlight: 0)], random: 3)
        #expect(r.order.first == BackendID(1))
    }

    @Test func tiesAreBrokenByTheRandomValue() {
        let s = RoutingScorer()
        var firsts: [BackendID: Int] = [:]
        for r in UInt64(0)..<400 {
            firsts[s.order([cand(0), cand(1), cand(2), cand(3)], random: r).order[0], default: 0] += 1
        }
        #expect(firsts.count == 4)
        #expect(firsts.values.allSatisfy { $0 > 50 })
        // Same inputs, same random → same order (a pure function).
        #expect(s.order([cand(0), cand(1)], random: 9).order == s.order([cand(0), cand(1)], random: 9).order)
    }

    @Test func imbalanceGuardPicksTheLeastLoadedIgnoringPrefix() {
        let s = RoutingScorer(imbalanceAbsolute: 8, imbalanceRatio: 1.5)
        let hot = [cand(0, prefix: 1, queue: 20, inFlight: 20), cand(1, queue: 3, inFlight: 3), cand(2, queue: 9, inFlight: 9)]
        #expect(s.isImbalanced(hot))
        let r = s.order(hot, random: 0)
        #expect(r.order == [BackendID(1), BackendID(2), BackendID(0)] && r.reason == .imbalance)
        // Spread within the threshold: prefix still decides.
        let near = [cand(0, prefix: 1, queue: 8, inFlight: 8), cand(1, queue: 1, inFlight: 1)]
        #expect(!s.isImbalanced(near))
        #expect(s.order(near, random: 0).order.first == BackendID(0))
        // A large spread but within the ratio does not fire either.
        #expect(!s.isImbalanced([cand(0, inFlight: 100), cand(1, inFlight: 80)]))
    }

    @Test func propertiesOverRandomCandidates() {
        var rng = TestRNG(seed: 7)
        let s = RoutingScorer()
        for _ in 0..<2000 {
            let n = 1 + rng.int(6)
            let cs = (0..<n).map { i in
                cand(i, prefix: rng.int(3) == 0 ? 0 : rng.unit(), queue: rng.int(4) == 0 ? nil : Double(rng.int(40)),
                     inFlight: rng.int(20), kv: rng.int(5) == 0 ? nil : rng.unit())
            }
            let r = s.order(cs, random: rng.next())
            // A permutation of the candidates.
            #expect(r.order.count == n && Set(r.order).count == n)
            if n == 1 { #expect(r.reason == .single); continue }
            let scores = s.scores(cs)
            #expect(scores.allSatisfy { $0 >= 0 && $0 <= 7 + 1e-9 })
            let first = cs.first { $0.backend == r.order[0] }!
            if s.isImbalanced(cs) {
                #expect(r.reason == .imbalance)
                // Nobody is strictly less loaded than the winner.
                #expect(cs.allSatisfy { $0.queue >= first.queue })
            } else {
                // The winner has the best score, and the order is by score.
                let sOf = { (b: BackendID) in scores[cs.firstIndex { $0.backend == b }!] }
                #expect(scores.allSatisfy { $0 <= sOf(r.order[0]) + 1e-9 })
                for k in 1..<n { #expect(sOf(r.order[k - 1]) + 1e-9 >= sOf(r.order[k])) }
                #expect(r.reason == (first.prefixOverlap > 0 ? .prefix : .load))
            }
            // More prefix never lowers a candidate's score (monotone), other things equal.
            var up = cs
            up[0].prefixOverlap = min(1, up[0].prefixOverlap + 0.3)
            #expect(s.scores(up)[0] >= scores[0] - 1e-9)
        }
    }
}

@Suite struct RoutingConfigTests {
    @Test func defaultsAndAFullSection() throws {
        let d = try ConfigLoader.parse(yaml: "", environment: [:])
        #expect(d.routing == EngineConfig.RoutingConfig())
        #expect(d.routing.policy == .roundRobin)
        let c = try ConfigLoader.parse(yaml: """
            vllm:
              instances:
                - url: http://a:8000
                  kv_events_url: tcp://a:5557
                - http://b:8000
            routing:
              policy: prefix_aware
              weights: {prefix: 5, queue: 1, kv: 0}
              chunk_chars: 128
              max_prefix_chunks: 64
              index_chunks_per_backend: 1000
              chars_per_token: 3.5
              imbalance_threshold: 16
              imbalance_ratio: 2
              share_ratio: 1.4
              share_window: 64
              kv_events: true
              tokenize_timeout_ms: 80
            """, environment: [:])
        #expect(c.routing.tokenizeTimeoutMillis == 80 && d.routing.tokenizeTimeoutMillis == 50)
        #expect(c.routing.policy == .prefixAware)
        #expect(c.routing.prefixWeight == 5 && c.routing.queueWeight == 1 && c.routing.kvWeight == 0)
        #expect(c.routing.chunkChars == 128 && c.routing.maxPrefixChunks == 64 && c.routing.indexChunksPerBackend == 1000)
        #expect(c.routing.charsPerToken == 3.5 && c.routing.imbalanceAbsolute == 16 && c.routing.imbalanceRatio == 2)
        #expect(c.routing.kvEvents)
        #expect(c.routing.shareRatio == 1.4 && c.routing.shareWindow == 64 && d.routing.shareRatio == 1.25 && d.routing.shareWindow == 256)
        #expect(c.vllm.instances[0].kvEventsUrl == "tcp://a:5557" && c.vllm.instances[1].kvEventsUrl == nil)
    }

    @Test func badValuesAreConfigErrors() {
        func error(_ yaml: String) -> String? {
            do {
                _ = try ConfigLoader.parse(yaml: yaml, environment: [:])
                return nil
            } catch {
                return error.description
            }
        }
        #expect(error("routing: {policy: random}")?.contains("routing.policy") == true)
        #expect(error("routing: {policy: 3}")?.contains("routing.policy") == true)
        #expect(error("routing: {weights: {prefix: -1}}")?.contains("routing.weights.prefix") == true)
        #expect(error("routing: {weights: {prefix: 0, queue: 0, kv: 0}}")?.contains("routing.weights") == true)
        #expect(error("routing: {weights: {cache: 1}}")?.contains("routing.weights.cache: unknown key") == true)
        #expect(error("routing: {chunk_chars: 0}")?.contains("routing.chunk_chars") == true)
        #expect(error("routing: {chunk_chars: abc}")?.contains("routing.chunk_chars") == true)
        #expect(error("routing: {max_prefix_chunks: 100000}")?.contains("routing.max_prefix_chunks") == true)
        #expect(error("routing: {imbalance_ratio: 0.5}")?.contains("routing.imbalance_ratio") == true)
        #expect(error("routing: {share_ratio: 0.9}")?.contains("routing.share_ratio") == true)
        #expect(error("routing: {share_ratio: 0}") == nil)  // off
        #expect(error("routing: {share_window: 0}")?.contains("routing.share_window") == true)
        #expect(error("routing: {kv_events: maybe}")?.contains("routing.kv_events") == true)
        // Exact mode needs a publisher to listen to, and the policy that looks at prefixes.
        let noURL = error("vllm: {instances: [http://a:1]}\nrouting: {policy: prefix_aware, kv_events: true}")
        #expect(noURL?.contains("routing.kv_events") == true && noURL?.contains("kv_events_url") == true, "\(noURL ?? "")")
        let rr = error("vllm: {instances: [{url: 'http://a:1', kv_events_url: 'tcp://a:5557'}]}\nrouting: {kv_events: true}")
        #expect(rr?.contains("prefix_aware") == true, "\(rr ?? "")")
        #expect(error("vllm: {instances: [{url: 'http://a:1', kv_events_url: 'tcp://a:5557'}]}\nrouting: {policy: prefix_aware, kv_events: true}") == nil)
        // A URL without the switch is accepted (unused).
        #expect(error("vllm: {instances: [{url: 'http://a:1', kv_events_url: 'tcp://a:5557'}]}") == nil)
        #expect(error("routing: {tokenize_timeout_ms: 0}")?.contains("routing.tokenize_timeout_ms") == true)
        #expect(error("routing: {colour: blue}")?.contains("routing.colour: unknown key") == true)
        for bad in ["http://a:1", "tcp://a", "tcp://:5557", "tcp://a:0", "tcp://a:99999", "tcp://a b:1", "tcp://[zz]:1"] {
            #expect(error("vllm: {instances: [{url: 'http://a:1', kv_events_url: '\(bad)'}]}")?
                .contains("vllm.instances[0].kv_events_url") == true, "\(bad)")
        }
        for good in ["tcp://a:5557", "tcp://10.0.0.1:1", "tcp://[::1]:5557", "TCP://host-1.example:65535"] {
            #expect(error("vllm: {instances: [{url: 'http://a:1', kv_events_url: '\(good)'}]}") == nil, "\(good)")
        }
    }

    @Test func metricsParserReadsTheKVSize() {
        let page = bytes("""
            # HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
            vllm:cache_config_info{block_size="16",engine="0",kv_cache_size_tokens="4096",num_gpu_blocks="256"} 1.0
            """)
        #expect(VLLMMetricsParser.kvCacheSizeTokens(page) == 4096)
        #expect(VLLMMetricsParser.kvCacheSizeTokens(bytes(#"vllm:cache_config_info{block_size="128",num_gpu_blocks="10"} 1.0"#)) == 1280)
        #expect(VLLMMetricsParser.kvCacheSizeTokens(bytes("vllm:num_requests_running 1")) == nil)
    }
}

@Suite struct RoutingBenchmark {
    /// CPU per request of prefix-aware routing's own work: hashing the rendered prompt, scoring 4
    /// backends against the index, recording the chunks. Printed for docs/performance.md.
    @Test func routingCostPerRequest() {
        let tenants = 50
        let systems = (0..<tenants).map { t in bytes(String(repeating: "Tenant \(t) instructions: be precise and brief. ", count: 120)) }
        let config = EngineConfig.RoutingConfig(policy: .prefixAware)
        var index = PrefixIndex(backendCount: 4, capacity: 4096)
        let scorer = RoutingScorer()
        var rng = TestRNG(seed: 1)
        var out: [Int] = []
        var cands: [RoutingScorer.Candidate] = []
        let n = 20_000
        var sink = 0
        let prompts = (0..<256).map { i in systems[i % tenants] + bytes("user question number \(i) about something") }
        let salt = PromptChunks.salt(model: "m")
        let start = cpuNanos()
        for i in 0..<n {
            let p = prompts[i & 255]
            let chunks = PromptChunks(p, chunkBytes: config.chunkChars, maxChunks: config.maxPrefixChunks)
            index.matchedChunks(chunks, salt: salt, backends: [0, 1, 2, 3], into: &out)
            cands.removeAll(keepingCapacity: true)
            for b in 0..<4 {
                cands.append(.init(backend: BackendID(b), prefixOverlap: Double(out[b]) / Double(max(1, chunks.count)),
                                   polledQueue: Double(rng.int(8)), inFlight: rng.int(8), kvUsage: 0.3))
            }
            let r = scorer.order(cands, random: rng.next())
            sink &+= index.record(chunks, salt: salt, backend: r.order[0].index)
        }
        let perRequest = Double(cpuNanos() - start) / Double(n) / 1000
        let chunkCount = PromptChunks(prompts[0], chunkBytes: 256, maxChunks: 128).count
        print("routing-bench: \((perRequest * 100).rounded() / 100) µs CPU per request (prompt \(prompts[0].count) B, \(chunkCount) chunks, 4 backends, debug=\(isDebug))")
        #expect(sink > 0)
        // Loose bound (debug builds, a shared machine); the release figure is in docs/performance.md.
        #expect(perRequest < (isDebug ? 500 : 50))
    }

    /// Exact mode's decision when the block map knows the prompt's prefix: hash the chunks, take
    /// the prefix's blocks from the map, count each backend's held leading blocks, score (share
    /// guard on), count the assignment, record the chunks in the estimated index (the fallback).
    /// 40 tenants' ~6 KB prompts (the bench's shape, the sim's 4-bytes-a-token tokenizer), 4
    /// backends each holding a quarter of the tenants' blocks. Printed for docs/performance.md.
    @Test func exactRoutingCostPerRequest() {
        func tokens(_ b: [UInt8]) -> [UInt32] {
            var out: [UInt32] = [4, 206]
            var i = 0
            while i < b.count {
                var h: UInt32 = 2_166_136_261
                for x in b[i..<min(i + 4, b.count)] { h = (h ^ UInt32(x)) &* 16_777_619 }
                out.append(1000 + h % 31_000)
                i += 4
            }
            return out + [2, 206, 6, 206]
        }
        let tenants = 40
        let systems = (0..<tenants).map { t in
            Array(bytes("system\nYou are the assistant of tenant \(t). " + (0..<800).map { "rule\(t)_\($0)" }.joined(separator: " ")).prefix(6008))
        }
        let salt = PromptChunks.salt(model: "m")
        var map = ChunkBlockMap(chunkBytes: 256)
        var kv = KVBlockIndex<Int>()
        for t in 0..<tenants {
            let p = systems[t] + bytes("\nuser\nquestion 0 of tenant \(t)?\n")
            let ids = tokens(p)
            map.learned(PromptChunks(p, chunkBytes: 256, maxChunks: 128), salt: salt, promptBytes: p.count, tokenIDs: ids, blockSize: 16)
            let n = ids.count / 16
            _ = kv.batchReceived(KVEventBatch(sequence: UInt64(t / 4), events: [
                .stored(blockHashes: (0..<n).map { UInt64(t * 1000 + $0 + 1) }, parent: nil, tokenIDs: Array(ids.prefix(n * 16)),
                        blockSize: 16, isKeyed: false)]), from: t % 4)
        }
        let prompts = (0..<256).map { i in systems[i % tenants] + bytes("\nuser\nquestion \(i) of tenant \(i % tenants)?\n") }
        let scorer = RoutingScorer(shareRatio: 1.25)
        var index = PrefixIndex(backendCount: 4, capacity: 4096)
        var recent = RecentAssignments(backendCount: 4, window: 256)
        var cands: [RoutingScorer.Candidate] = []
        var rng = TestRNG(seed: 3)
        var mapped = 0
        var sink = 0
        let n = 20_000
        let start = cpuNanos()
        for i in 0..<n {
            let c = PromptChunks(prompts[i & 255], chunkBytes: 256, maxChunks: 128)
            var o: [Int: Double] = [:]
            if let pre = map.prefix(c, salt: salt, promptBytes: c.promptBytes) {
                mapped += 1
                o = kv.overlap(chains: pre.chains, blockSize: pre.blockSize, promptTokens: pre.promptTokens)
            }
            cands.removeAll(keepingCapacity: true)
            for b in 0..<4 {
                cands.append(.init(backend: BackendID(b), prefixOverlap: o[b] ?? 0, polledQueue: Double(rng.int(4)),
                                   inFlight: rng.int(4), kvUsage: 0.3, recent: recent.counts[b]))
            }
            let w = scorer.order(cands, random: rng.next()).order[0].index
            recent.assigned(w)
            sink &+= index.record(c, salt: salt, backend: w)
        }
        let perRequest = Double(cpuNanos() - start) / Double(n) / 1000
        print("exact-routing-bench: \((perRequest * 100).rounded() / 100) µs CPU per request (block map, 4 backends, debug=\(isDebug))")
        #expect(mapped == n && sink > 0)
        #expect(perRequest < (isDebug ? 1000 : 50))
    }

    var isDebug: Bool {
        #if DEBUG
        return true
        #else
        return false
        #endif
    }

    func cpuNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

/// Exact mode inside BackendRouting: the prefix term from the KV-event index when the request
/// carries token ids, the estimated index otherwise; reasons and the exact hit counters.
@Suite struct ExactRoutingTests {
    func setUp(_ n: Int) -> (Loop, [Backend], BackendRouting, KVEventsDriver) {
        let loop = Loop()
        let backends = (0..<n).map { i in
            Backend(id: BackendID(i), url: "http://b\(i):8000", endpoint: Endpoint(host: "127.0.0.1", port: 8000 + i)!, loop: loop,
                    apiKey: nil, weight: 1, models: ["m"], breaker: CircuitBreaker(threshold: 5, cooldown: .seconds(1)))
        }
        let r = BackendRouting(config: .init(policy: .prefixAware, kvEvents: true), backendCount: n)
        let kv = KVEventsDriver(loop: loop, publishers: [])
        r.exact = kv
        return (loop, backends, r, kv)
    }

    /// `backend` stored the leading `blocks` blocks (16 ids each) of `ids`.
    func store(_ kv: KVEventsDriver, _ ids: [UInt32], blocks: Int, on backend: Int, sequence: UInt64 = 0) {
        kv.batchReceived(KVEventBatch(sequence: sequence, events: [
            .stored(blockHashes: (0..<blocks).map { UInt64(backend * 1000 + $0 + 1) }, parent: nil,
                    tokenIDs: Array(ids.prefix(blocks * 16)), blockSize: 16, isKeyed: false)]), from: BackendID(backend))
    }

    @Test func theBackendHoldingTheBlocksWinsWithReasonExactPrefix() {
        let (loop, backends, r, kv) = setUp(3)
        defer { kv.stop(); for b in backends { b.pool.closeAll() }; loop.close() }
        let ids = (0..<80).map { UInt32(5000 + $0) }
        store(kv, ids, blocks: 4, on: 1)
        store(kv, ids, blocks: 1, on: 2)
        let d = r.order(backends, chunks: nil, tokenIDs: ids, model: "m")
        #expect(d.order.first == BackendID(1))
        #expect(d.reason == .exactPrefix)
        #expect(d.exact?[BackendID(1)] == 64.0 / 80 && d.exact?[BackendID(2)] == 16.0 / 80 && d.exact?[BackendID(0)] == nil)
        r.sent(nil, model: "m", tokenCount: ids.count, exact: d.exact, to: backends[1], reason: d.reason)
        #expect(r.exactQueriedTokens == [0, 80, 0] && r.exactMatchedTokens == [0, 64, 0])
        #expect(r.decisions[.exactPrefix] == 1)
        // Another prompt that shares nothing: load decides (all equal here), not prefix.
        let other = (0..<80).map { UInt32(9000 + $0) }
        let o = r.order(backends, chunks: nil, tokenIDs: other, model: "m")
        #expect(o.reason == .load && o.exact?.isEmpty == true)
    }

    @Test func withoutTokenIDsTheEstimatedIndexDecides() {
        let (loop, backends, r, kv) = setUp(2)
        defer { kv.stop(); for b in backends { b.pool.closeAll() }; loop.close() }
        let ids = (0..<64).map { UInt32(7000 + $0) }
        store(kv, ids, blocks: 4, on: 0)
        let chunks = PromptChunks(bytes(String(repeating: "tenant seven's long system prompt ", count: 40)), chunkBytes: 256, maxChunks: 128)
        // The estimated index saw this prompt go to backend 1.
        r.sent(chunks, model: "m", to: backends[1], reason: .load)
        let d = r.order(backends, chunks: chunks, tokenIDs: nil, model: "m")
        #expect(d.order.first == BackendID(1) && d.reason == .prefix && d.exact == nil)
        // With the ids, the KV index wins over the estimate.
        let e = r.order(backends, chunks: chunks, tokenIDs: ids, model: "m")
        #expect(e.order.first == BackendID(0) && e.reason == .exactPrefix)
    }

    @Test func aLearnedPrefixRoutesExactlyWithoutTokenIDs() {
        let (loop, backends, r, kv) = setUp(2)
        defer { kv.stop(); for b in backends { b.pool.closeAll() }; loop.close() }
        // The prompt: 2,000 rendered bytes, one token per 4 bytes plus two of generation prompt.
        let text = bytes(String(repeating: "abcd", count: 500))
        let ids = (0..<500).map { UInt32(3000 + $0) } + [6, 206]
        let chunks = PromptChunks(text, chunkBytes: 256, maxChunks: 128)
        // No block size known yet (no KV event): nothing to learn with.
        #expect(!r.shouldLearn(chunks, model: "m"))
        store(kv, ids, blocks: 20, on: 1)
        #expect(r.shouldLearn(chunks, model: "m"))
        #expect(!r.shouldLearn(chunks, model: "m"))  // pending
        // Before the answer: the estimated index decides (nothing there: load).
        #expect(r.order(backends, chunks: chunks, model: "m").reason == .load)
        r.learned(chunks, model: "m", tokenIDs: ids)
        #expect(!r.shouldLearn(chunks, model: "m") && r.learnsAsked == 1 && r.learnsBusy == 1)
        // A later request with the same prefix (another question after it) needs no ids.
        let later = PromptChunks(text + bytes("and a question"), chunkBytes: 256, maxChunks: 128)
        let d = r.order(backends, chunks: later, tokenIDs: nil, model: "m")
        #expect(d.order.first == BackendID(1) && d.reason == .exactPrefix && r.mappedDecisions == 1)
        // 7 chunks = 1,792 bytes ≈ 450 tokens, less 10 % and 8 → 24 blocks claimed; backend 1
        // holds 20 of them: 320 of ~505 estimated tokens.
        let o = d.exact?[BackendID(1)] ?? 0
        #expect(o > 0.6 && o < 0.66 && d.exact?[BackendID(0)] == nil, "\(o)")
        r.sent(later, model: "m", exact: d.exact, to: backends[1], reason: d.reason)
        #expect(r.exactQueriedTokens[1] > 490 && r.exactMatchedTokens[1] == 320)
        // Another model's prompt with the same text is not mapped.
        #expect(r.order(backends, chunks: later, model: "other").exact == nil)
    }

    @Test func aBackendWithoutEventsStillWinsOnLoad() {
        let (loop, backends, r, kv) = setUp(2)
        defer { kv.stop(); for b in backends { b.pool.closeAll() }; loop.close() }
        let ids = (0..<64).map { UInt32(7000 + $0) }
        store(kv, ids, blocks: 1, on: 0)  // a quarter of the prompt
        backends[0].inFlight = 6  // busy holder; backend 1 publishes nothing and is idle
        let d = r.order(backends, chunks: nil, tokenIDs: ids, model: "m")
        #expect(d.order.first == BackendID(1) && d.reason == .load)
    }
}

// The simulator's prefix cache (block LRU bounded by the KV capacity), its block hashing, the
// cached-token arithmetic, and the serial prefill line that makes TTFT grow with uncached tokens.
import Testing
@testable import vllm_sim

@Suite struct PrefixCacheTests {
    func ids(_ n: Int, _ fill: UInt32 = 1000) -> [UInt32] { Array(repeating: fill, count: n) }

    @Test func onlyFullBlocksAreHashedAndTheChainCarriesThePrefix() {
        #expect(PrefixCache.blockHashes(ids(15), blockSize: 16, seed: 0).isEmpty)
        let a = PrefixCache.blockHashes(ids(50), blockSize: 16, seed: 0)
        #expect(a.count == 3)
        // Same block ids at different positions hash differently (the parent is mixed in).
        #expect(Set(a).count == 3)
        // A different first block changes every later hash.
        var t = ids(50)
        t[0] = 1001
        let b = PrefixCache.blockHashes(t, blockSize: 16, seed: 0)
        #expect(zip(a, b).allSatisfy { $0 != $1 })
        // A different tail leaves the shared leading blocks alone.
        var u = ids(50)
        u[40] = 1001
        let c = PrefixCache.blockHashes(u, blockSize: 16, seed: 0)
        #expect(Array(c.prefix(2)) == Array(a.prefix(2)) && c[2] != a[2])
        // Another model never shares blocks.
        #expect(PrefixCache.blockHashes(ids(50), blockSize: 16, seed: 1)[0] != a[0])
    }

    @Test func matchesLeadingBlocksAndStopsAtFirstMiss() {
        var cache = PrefixCache(capacity: 100)
        #expect(cache.lookupAndInsert([1, 2, 3]).matched == 0)
        #expect(cache.lookupAndInsert([1, 2, 3, 4]).matched == 3)
        #expect(cache.lookupAndInsert([1, 9, 3, 4]).matched == 1)
        #expect(cache.lookupAndInsert([7, 1, 2]).matched == 0)
        #expect(cache.count == 6)
    }

    @Test func staysWithinCapacityEvictingLeastRecentlyUsed() {
        var cache = PrefixCache(capacity: 4)
        _ = cache.lookupAndInsert([1, 2])
        _ = cache.lookupAndInsert([3, 4])
        _ = cache.lookupAndInsert([1])  // 1 is now the most recent; 2 the oldest
        _ = cache.lookupAndInsert([5])
        #expect(cache.count == 4)
        #expect(!cache.contains(2))
        #expect(cache.contains(1) && cache.contains(3) && cache.contains(4) && cache.contains(5))
        // Random traffic never exceeds the bound.
        var rng = SplitMix64(seed: 7)
        for _ in 0..<2000 {
            let n = Int(rng.next() % 6)
            _ = cache.lookupAndInsert((0..<n).map { _ in rng.next() % 20 })
            #expect(cache.count <= 4)
        }
    }

    @Test func aSharedPrefixOutlivesItsTails() {
        var cache = PrefixCache(capacity: 6)
        // Prefix [1, 2] with ever-new tails: the prefix must stay cached.
        for t in UInt64(100)..<UInt64(120) {
            _ = cache.lookupAndInsert([1, 2, t, t + 1000])
        }
        #expect(cache.lookupAndInsert([1, 2, 999]).matched == 2)
    }

    @Test func cachedTokensLeaveTheLastTokenToCompute() {
        #expect(PrefixCache.cachedTokens(matchedBlocks: 0, blockSize: 16, promptTokens: 100) == 0)
        #expect(PrefixCache.cachedTokens(matchedBlocks: 3, blockSize: 16, promptTokens: 100) == 48)
        #expect(PrefixCache.cachedTokens(matchedBlocks: 4, blockSize: 16, promptTokens: 64) == 63)
        #expect(PrefixCache.cachedTokens(matchedBlocks: 1, blockSize: 16, promptTokens: 0) == 0)
    }

    @Test func prefillsQueueOneAfterAnother() {
        var line = PrefillLine(nanosPerToken: 1000)
        #expect(line.scheduled(now: 0, uncachedTokens: 100) == 100_000)
        // Arrives while the first is still prefilling: waits for it.
        #expect(line.scheduled(now: 50_000, uncachedTokens: 10) == 60_000)
        // Arrives after the line is idle: only its own work.
        #expect(line.scheduled(now: 1_000_000, uncachedTokens: 1) == 1000)
        #expect(line.scheduled(now: 2_000_000, uncachedTokens: 0) == 0)
        var free = PrefillLine(nanosPerToken: 0)
        #expect(free.scheduled(now: 0, uncachedTokens: 1000) == 0)
    }

    @Test func chatPromptIdsCoverRolesAndTextParts() throws {
        let body = #"{"messages":[{"role":"system","content":"S"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#
        let r = try GenerationRequest.parse(kind: .chat, body: Array(body.utf8), contentType: "application/json",
                                            catalog: ModelCatalog(["tiny"]), maxModelLen: 2048).get()
        // system, \n, "S", </s>, \n, user, \n, "ab" (one chunk of two parts), </s>, \n, assistant, \n
        #expect(r.promptIDs.count == r.promptTokens[0])
        #expect(Array(r.promptIDs.prefix(2)) == [UInt32(SimTokenizer.systemRole), UInt32(SimTokenizer.newline)])
        #expect(Array(r.promptIDs.suffix(2)) == [UInt32(SimTokenizer.assistantRole), UInt32(SimTokenizer.newline)])
    }
}

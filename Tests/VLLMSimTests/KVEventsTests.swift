// The simulator's KV-event side without sockets: what the prefix cache's insertions report for
// the publisher (new blocks in runs with parent links, the ids they cover, evictions), and
// --kv-events-config parsing.
import Testing
@testable import vllm_sim

@Suite struct PrefixCacheEventsTests {
    /// The prompt's hashes, and the (hashes, parent, ids) each stored run would publish.
    func runs(_ ins: PrefixCache.Insertion, _ hashes: [UInt64], _ ids: [UInt32], _ bs: Int) -> [([UInt64], UInt64?, [UInt32])] {
        ins.stored.map { r in
            (Array(hashes[r]), r.lowerBound == 0 ? nil : hashes[r.lowerBound - 1], Array(ids[(r.lowerBound * bs)..<(r.upperBound * bs)]))
        }
    }

    @Test func storesOnlyFullNewBlocksWithParentLinks() {
        var c = PrefixCache(capacity: 100)
        let ids10 = (0..<10).map(UInt32.init)
        let h10 = PrefixCache.blockHashes(ids10, blockSize: 4, seed: 0)
        #expect(h10.count == 2)  // 2 full blocks, 2 ids left over
        let a = c.lookupAndInsert(h10)
        #expect(a.matched == 0 && a.removed == [])
        let ra = runs(a, h10, ids10, 4)
        #expect(ra.count == 1)
        #expect(ra[0].0 == h10 && ra[0].1 == nil && ra[0].2 == Array(0..<8))
        // Same prefix, one more block: only the new one, its parent the last cached block.
        let ids12 = (0..<12).map(UInt32.init)
        let h12 = PrefixCache.blockHashes(ids12, blockSize: 4, seed: 0)
        #expect(Array(h12.prefix(2)) == h10)
        let b = c.lookupAndInsert(h12)
        #expect(b.matched == 2)
        let rb = runs(b, h12, ids12, 4)
        #expect(rb.count == 1)
        #expect(rb[0].0 == [h12[2]] && rb[0].1 == h10[1] && rb[0].2 == Array(8..<12))
        // A repeat is a cache hit: nothing new.
        let again = c.lookupAndInsert(h12)
        #expect(again.matched == 3 && again.stored == [] && again.removed == [])
        #expect(c.count == 3)
    }

    @Test func evictionsAreReported() {
        var c = PrefixCache(capacity: 2)
        _ = c.lookupAndInsert([1])
        _ = c.lookupAndInsert([3])
        _ = c.lookupAndInsert([1])  // touch 1: 3 is the oldest
        let d = c.lookupAndInsert([5])
        #expect(d.removed == [3])
        #expect(d.stored == [0..<1])
        #expect(c.count == 2)
        #expect(c.lookupAndInsert([1]).stored == [])
        // A prompt longer than the cache keeps its first `capacity` blocks, none evicted by itself.
        let long = c.lookupAndInsert([7, 8, 9])
        #expect(Set(long.removed) == [1, 5])
        #expect(long.stored == [0..<2])
        #expect(c.contains(7) && c.contains(8) && !c.contains(9))
    }

    @Test func aGapInTheCachedBlocksMakesTwoRuns() {
        var c = PrefixCache(capacity: 10)
        _ = c.lookupAndInsert([20])
        // Block 1 of this prompt is cached (as if shared), blocks 0 and 2-3 are not.
        let ins = c.lookupAndInsert([10, 20, 30, 40])
        #expect(ins.matched == 0)
        #expect(ins.stored == [0..<1, 2..<4])
    }

    @Test func clearForgetsEverything() {
        var c = PrefixCache(capacity: 8)
        _ = c.lookupAndInsert([1, 2])
        c.clear()
        #expect(c.count == 0)
        #expect(c.lookupAndInsert([1, 2]).stored == [0..<2])
    }

    @Test func theCacheSeesTheIdsTokenizeAnswers() throws {
        // One body through the generation parser and through /tokenize's function: same ids,
        // so the blocks the sim publishes are the blocks a router computes from /tokenize.
        for (kind, body) in [(GenerationKind.chat, #"{"model":"tiny","messages":[{"role":"system","content":"You are a helpful assistant of tenant 7."},{"role":"user","content":"hello there"}],"max_tokens":3}"#),
                             (.completion, #"{"model":"tiny","prompt":"Once upon a time there was a block","max_tokens":3}"#)] {
            let r = try GenerationRequest.parse(kind: kind, body: Array(body.utf8), contentType: "application/json",
                                                catalog: ModelCatalog(["tiny"]), maxModelLen: 2048).get()
            let tokenized = try withJSONDocument(Array(body.utf8)) { root in
                SimTokenizer.promptIDs(root, isChat: kind == .chat, addSpecial: kind != .chat, addGenerationPrompt: true)
            }.get()
            #expect(r.promptIDs.map(Int.init) == tokenized)
            #expect(r.promptIDs.count == r.promptTokens[0])  // and usage counts the same tokens
        }
    }
}

@Suite struct SimKVEventsConfigTests {
    @Test func readsVLLMsKeys() throws {
        let c = try SimKVEventsConfig.parse(#"{"enable_kv_cache_events":true,"publisher":"zmq","endpoint":"tcp://*:5557","replay_endpoint":"tcp://*:5558","buffer_steps":10}"#).get()
        #expect(c == SimKVEventsConfig(isEnabled: true, publisher: "zmq", endpoint: "tcp://*:5557", replayEndpoint: "tcp://*:5558", topic: ""))
    }

    @Test func refusesWhatIsNotAnObjectOrAnUnknownPublisher() {
        #expect((try? SimKVEventsConfig.parse("[]").get()) == nil)
        #expect((try? SimKVEventsConfig.parse("{").get()) == nil)
        #expect((try? SimKVEventsConfig.parse(#"{"enable_kv_cache_events":true,"publisher":"kafka"}"#).get()) == nil)
        #expect((try? SimKVEventsConfig.parse(#"{"publisher":"zmq"}"#).get())?.isEnabled == false)
    }
}

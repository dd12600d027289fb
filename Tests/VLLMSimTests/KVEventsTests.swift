// The simulator's KV-event side without sockets: SimBlockLedger (what a prefill stores and
// evicts, with parent links) and --kv-events-config parsing.
import Testing
@testable import vllm_sim

@Suite struct SimBlockLedgerTests {
    @Test func storesOnlyFullNewBlocksWithParentLinks() {
        var l = SimBlockLedger(capacity: 100, blockSize: 4)
        let a = l.prefilled(Array(0..<10))  // 2 full blocks, 2 ids left over
        #expect(a.removed == [])
        #expect(a.stored.count == 1)
        #expect(a.stored[0].hashes.count == 2 && a.stored[0].parent == nil)
        #expect(a.stored[0].tokenIDs == Array(0..<8))
        // Same prefix, one more block: only the new one, its parent the last cached block.
        let b = l.prefilled(Array(0..<12))
        #expect(b.stored.count == 1)
        #expect(b.stored[0].hashes.count == 1 && b.stored[0].parent == a.stored[0].hashes[1])
        #expect(b.stored[0].tokenIDs == Array(8..<12))
        // A repeat is a cache hit: nothing.
        #expect(l.prefilled(Array(0..<12)).stored == [])
        #expect(l.count == 3)
    }

    @Test func evictsTheLeastRecentlyUsed() {
        var l = SimBlockLedger(capacity: 2, blockSize: 2)
        let a = l.prefilled([1, 2])
        let b = l.prefilled([3, 4])
        _ = l.prefilled([1, 2])  // touch a
        let c = l.prefilled([5, 6])
        #expect(c.removed == b.stored[0].hashes)
        #expect(l.count == 2)
        #expect(l.prefilled([1, 2]).stored == [])
        _ = a
    }

    @Test func clearForgetsEverything() {
        var l = SimBlockLedger(capacity: 8, blockSize: 2)
        _ = l.prefilled([1, 2, 3, 4])
        l.clear()
        #expect(l.count == 0)
        #expect(l.prefilled([1, 2]).stored.count == 1)
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

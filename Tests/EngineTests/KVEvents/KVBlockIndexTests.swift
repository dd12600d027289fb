// KVBlockIndex as a value: stores with parent links, removals, clears, sequence gaps and
// restarts, the size bound, keyed blocks, and overlap answers per backend. No I/O.
import Testing

@testable import Engine

private typealias Index = KVBlockIndex<String>

/// A prompt of `blocks` blocks of `size` ids, distinct per `salt`.
private func prompt(_ salt: UInt32, blocks: Int, size: Int = 4) -> [UInt32] {
    (0..<(blocks * size)).map { salt &* 1000 &+ UInt32($0) }
}

/// The BlockStored vLLM would send for blocks `range` of `tokens`; vLLM hashes are `base + i`.
private func stored(_ tokens: [UInt32], _ range: Range<Int>, size: Int = 4, base: UInt64) -> KVEvent {
    .stored(blockHashes: range.map { base + UInt64($0) }, parent: range.lowerBound == 0 ? nil : base + UInt64(range.lowerBound - 1),
            tokenIDs: Array(tokens[(range.lowerBound * size)..<(range.upperBound * size)]), blockSize: size, isKeyed: false)
}

@Suite struct KVBlockIndexTests {
    @Test func learnsLeadingBlocksAcrossEventsViaParentLinks() {
        var idx = Index()
        let p = prompt(1, blocks: 5)
        #expect(idx.batchReceived(KVEventBatch(sequence: 0, events: [stored(p, 0..<2, base: 100)]), from: "a") == .applied)
        #expect(idx.batchReceived(KVEventBatch(sequence: 1, events: [stored(p, 2..<4, base: 100)]), from: "a") == .applied)
        #expect(idx.blockCount("a") == 4)
        #expect(idx.matchedBlocks(tokenIDs: p) == ["a": 4])
        // 4 of 5 blocks (plus 2 trailing ids that never form a block): 16 of 22 tokens.
        #expect(idx.overlap(tokenIDs: p + [7, 7]) == ["a": 16.0 / 22.0])
        // Only the prefix counts: a prompt that diverges in block 1 matches 1 block.
        var q = p
        q[5] = 999_999
        #expect(idx.matchedBlocks(tokenIDs: q) == ["a": 1])
        // Shorter than one block: nothing.
        #expect(idx.overlap(tokenIDs: [1, 2]) == [:])
        #expect(idx.overlap(tokenIDs: []) == [:])
    }

    @Test func backendsAreSeparate() {
        var idx = Index()
        let p = prompt(2, blocks: 3)
        _ = idx.batchReceived(KVEventBatch(sequence: 0, events: [stored(p, 0..<3, base: 1)]), from: "a")
        _ = idx.batchReceived(KVEventBatch(sequence: 5, events: [stored(p, 0..<1, base: 1)]), from: "b")
        #expect(idx.matchedBlocks(tokenIDs: p) == ["a": 3, "b": 1])
        #expect(idx.overlap(tokenIDs: p) == ["a": 1.0, "b": 4.0 / 12.0])
    }

    @Test func removalBreaksThePrefixAtTheRemovedBlock() {
        var idx = Index()
        let p = prompt(3, blocks: 4)
        _ = idx.batchReceived(KVEventBatch(sequence: 0, events: [stored(p, 0..<4, base: 10)]), from: "a")
        _ = idx.batchReceived(KVEventBatch(sequence: 1, events: [.removed(blockHashes: [12])]), from: "a")
        #expect(idx.blockCount("a") == 3)
        #expect(idx.matchedBlocks(tokenIDs: p) == ["a": 2])
        // Removing an unknown hash is harmless.
        _ = idx.batchReceived(KVEventBatch(sequence: 2, events: [.removed(blockHashes: [777])]), from: "a")
        #expect(idx.blockCount("a") == 3)
    }

    @Test func clearEmptiesOnlyThatBackend() {
        var idx = Index()
        let p = prompt(4, blocks: 2)
        _ = idx.batchReceived(KVEventBatch(sequence: 0, events: [stored(p, 0..<2, base: 1)]), from: "a")
        _ = idx.batchReceived(KVEventBatch(sequence: 0, events: [stored(p, 0..<2, base: 1)]), from: "b")
        #expect(idx.batchReceived(KVEventBatch(sequence: 1, events: [.cleared]), from: "a") == .applied)
        #expect(idx.blockCount("a") == 0)
        #expect(idx.matchedBlocks(tokenIDs: p) == ["b": 2])
        // Sequence tracking survives the clear: the next batch in order is not a gap.
        #expect(idx.batchReceived(KVEventBatch(sequence: 2, events: []), from: "a") == .applied)
    }

    @Test func aGapPurgesThenAppliesTheBatch() {
        var idx = Index()
        let p = prompt(5, blocks: 3)
        let q = prompt(6, blocks: 1)
        _ = idx.batchReceived(KVEventBatch(sequence: 0, events: [stored(p, 0..<3, base: 1)]), from: "a")
        _ = idx.batchReceived(KVEventBatch(sequence: 0, events: [stored(p, 0..<3, base: 1)]), from: "b")
        let o = idx.batchReceived(KVEventBatch(sequence: 2, events: [stored(q, 0..<1, base: 50)]), from: "a")
        #expect(o == .purgedAfterGap(expected: 1, got: 2))
        #expect(idx.blockCount("a") == 1)
        #expect(idx.matchedBlocks(tokenIDs: p) == ["b": 3])
        #expect(idx.matchedBlocks(tokenIDs: q) == ["a": 1])
        #expect(idx.batchReceived(KVEventBatch(sequence: 3, events: []), from: "a") == .applied)
    }

    @Test func aRestartedPublisherCountsFromZeroAndPurges() {
        var idx = Index()
        let p = prompt(7, blocks: 2)
        _ = idx.batchReceived(KVEventBatch(sequence: 0, events: [stored(p, 0..<2, base: 1)]), from: "a")
        _ = idx.batchReceived(KVEventBatch(sequence: 1, events: []), from: "a")
        #expect(idx.batchReceived(KVEventBatch(sequence: 0, events: []), from: "a") == .purgedAfterGap(expected: 2, got: 0))
        #expect(idx.blockCount("a") == 0)
    }

    @Test func theFirstBatchSeenIsNeverAGap() {
        var idx = Index()
        #expect(idx.batchReceived(KVEventBatch(sequence: 41, events: []), from: "a") == .applied)
    }

    @Test func explicitPurgeForgetsTheSequenceToo() {
        var idx = Index()
        let p = prompt(8, blocks: 1)
        _ = idx.batchReceived(KVEventBatch(sequence: 9, events: [stored(p, 0..<1, base: 1)]), from: "a")
        idx.purge("a")
        #expect(idx.blockCount("a") == 0)
        #expect(idx.batchReceived(KVEventBatch(sequence: 0, events: []), from: "a") == .applied)
    }

    @Test func orphansAndKeyedBlocksAreNotIndexed() {
        var idx = Index()
        let p = prompt(9, blocks: 3)
        // Parent 101 never seen (we joined late): blocks 1-2 cannot be chained.
        _ = idx.batchReceived(KVEventBatch(sequence: 0, events: [stored(p, 1..<3, base: 100)]), from: "a")
        #expect(idx.blockCount("a") == 0)
        #expect(idx.orphanBlocks == 2)
        _ = idx.batchReceived(KVEventBatch(sequence: 1, events: [
            .stored(blockHashes: [5], parent: nil, tokenIDs: Array(p.prefix(4)), blockSize: 4, isKeyed: true),
        ]), from: "a")
        #expect(idx.blockCount("a") == 0)
        #expect(idx.keyedBlocks == 1)
        #expect(idx.matchedBlocks(tokenIDs: p) == [:])
    }

    @Test func sizeBoundForgetsTheOldestStored() {
        var idx = Index(maxBlocksPerBackend: 4)
        let p = prompt(10, blocks: 3)
        let q = prompt(11, blocks: 3)
        _ = idx.batchReceived(KVEventBatch(sequence: 0, events: [stored(p, 0..<3, base: 1)]), from: "a")
        _ = idx.batchReceived(KVEventBatch(sequence: 1, events: [stored(q, 0..<3, base: 20)]), from: "a")
        #expect(idx.blockCount("a") == 4)
        #expect(idx.boundEvictions == 2)
        #expect(idx.matchedBlocks(tokenIDs: q) == ["a": 3])
        #expect(idx.matchedBlocks(tokenIDs: p) == [:])  // block 0 went first
    }

    @Test func churnKeepsTheIndexBoundedAndConsistent() {
        var idx = Index(maxBlocksPerBackend: 64)
        var rng = TestRNG(seed: 42)
        var live: [UInt64: [UInt32]] = [:]  // vLLM hash → its prompt's first block (model)
        var seq: UInt64 = 0
        for round in 0..<5000 {
            let h = UInt64.random(in: 0..<200, using: &rng)
            if Bool.random(using: &rng) {
                let p = prompt(UInt32(h), blocks: 1)
                _ = idx.batchReceived(KVEventBatch(sequence: seq, events: [stored(p, 0..<1, base: h)]), from: "a")
                live[h] = p
            } else {
                _ = idx.batchReceived(KVEventBatch(sequence: seq, events: [.removed(blockHashes: [h])]), from: "a")
                live[h] = nil
            }
            seq += 1
            #expect(idx.blockCount("a") <= 64, "round \(round)")
        }
        // Whatever is indexed is live in the model (never a removed block).
        for h in 0..<200 {
            let p = prompt(UInt32(h), blocks: 1)
            if idx.matchedBlocks(tokenIDs: p)["a"] != nil { #expect(live[UInt64(h)] != nil) }
        }
    }

    @Test func aDifferentBlockSizeStartsOver() {
        var idx = Index()
        let p = prompt(12, blocks: 2, size: 4)
        _ = idx.batchReceived(KVEventBatch(sequence: 0, events: [stored(p, 0..<2, base: 1)]), from: "a")
        let q = prompt(13, blocks: 1, size: 8)
        _ = idx.batchReceived(KVEventBatch(sequence: 1, events: [stored(q, 0..<1, size: 8, base: 9)]), from: "a")
        #expect(idx.blockSize("a") == 8)
        #expect(idx.blockCount("a") == 1)
        #expect(idx.matchedBlocks(tokenIDs: q) == ["a": 1])
    }

    @Test func chainedHashesDependOnTheWholePrefix() {
        let a = KVBlockHash.chains([1, 2, 3, 4, 5, 6, 7, 8], blockSize: 4)
        let b = KVBlockHash.chains([9, 2, 3, 4, 5, 6, 7, 8], blockSize: 4)
        #expect(a.count == 2 && b.count == 2)
        #expect(a[0] != b[0] && a[1] != b[1])  // same second block, different parent
        #expect(KVBlockHash.chains([1, 2, 3], blockSize: 4) == [])
    }
}

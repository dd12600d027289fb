// ChunkBlockMap: exact mode's chunk-prefix → KV-block map, as a value. A toy BPE-like tokenizer
// (a word with its leading space is one token, long words split in 6-byte pieces, a template
// token first and two for the generation prompt last) stands in for vLLM's /tokenize: the map
// must never claim a block the new prompt's own tokenization does not have.
import Testing

@testable import Engine

/// Token ids of `text` as the toy tokenizer cuts it: a token's bytes depend on what follows it
/// (a word ends at the next space), as BPE's do across a chunk boundary.
private func toyTokens(_ text: [UInt8]) -> [UInt32] {
    var out: [UInt32] = [7]  // template: begin of message
    var i = 0
    while i < text.count {
        var j = i + 1
        while j < text.count && text[j] != 0x20 && j - i < 6 { j += 1 }
        var h: UInt32 = 2_166_136_261
        for b in text[i..<j] { h = (h ^ UInt32(b)) &* 16_777_619 }
        out.append(1000 + h % 30_000)
        i = j
    }
    out += [8, 9]  // template: generation prompt
    return out
}

private extension TestRNG {
    mutating func int(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

private func words(_ rng: inout TestRNG, bytes: Int) -> [UInt8] {
    var out: [UInt8] = []
    while out.count < bytes {
        out.append(0x20)
        for _ in 0..<(1 + rng.int(9)) { out.append(UInt8(0x61 + rng.int(26))) }
    }
    return Array(out.prefix(bytes))
}

@Suite struct ChunkBlockMapTests {
    let chunkBytes = 64
    let salt = PromptChunks.salt(model: "m")

    func chunks(_ text: [UInt8]) -> PromptChunks { PromptChunks(text, chunkBytes: chunkBytes, maxChunks: 128) }

    @Test func aLearnedPrefixMapsALaterPromptWithoutClaimingPastItsOwnTokens() {
        var rng = TestRNG(seed: 13)
        var claimedSome = 0
        for trial in 0..<300 {
            var map = ChunkBlockMap(chunkBytes: chunkBytes)
            let shared = words(&rng, bytes: 100 + rng.int(1500))
            let a = shared + words(&rng, bytes: 1 + rng.int(600))
            let b = shared + words(&rng, bytes: 1 + rng.int(600))
            map.learned(chunks(a), salt: salt, promptBytes: a.count, tokenIDs: toyTokens(a), blockSize: 4)
            guard let p = map.prefix(chunks(b), salt: salt, promptBytes: b.count) else { continue }
            let truth = KVBlockHash.chains(toyTokens(b), blockSize: 4)
            #expect(p.chains.count <= truth.count && Array(p.chains) == Array(truth.prefix(p.chains.count)),
                    "trial \(trial): claimed \(p.chains.count) blocks")
            #expect(p.blockSize == 4 && p.chunks >= 1 && p.promptTokens >= p.chains.count * 4)
            if !p.chains.isEmpty { claimedSome += 1 }
        }
        // Not vacuous: most trials share several chunks and get blocks for them.
        #expect(claimedSome > 200)
    }

    @Test func theClaimStopsShortOfTheChunkBoundaryByTheMargin() {
        // 1 token per 4 bytes: 10 chunks of 64 bytes are 160 tokens; 10 % slack and 8 tokens of
        // margin leave 136, i.e. 34 blocks of 4.
        #expect(ChunkBlockMap.safeBlocks(depth: 10, chunkBytes: 64, tokensPerByte: 0.25, blockSize: 4, tokens: 1000) == 34)
        #expect(ChunkBlockMap.safeBlocks(depth: 10, chunkBytes: 64, tokensPerByte: 0.25, blockSize: 4, tokens: 20) == 5)
        #expect(ChunkBlockMap.safeBlocks(depth: 1, chunkBytes: 16, tokensPerByte: 0.25, blockSize: 4, tokens: 1000) == 0)
        #expect(ChunkBlockMap.safeBlocks(depth: 10, chunkBytes: 64, tokensPerByte: 0.25, blockSize: 0, tokens: 1000) == 0)
    }

    @Test func aSecondAnswerCapsAnOverreachingEstimate() {
        // A's shared part is sparse (long words) and its tail dense: its density overstates the
        // shared part's, so A alone would claim past where B diverges. B's answer caps the entry
        // at what both agree on, and a third prompt with the same chunks gets no more than that.
        let sparse = Array(String(repeating: " abcdef", count: 40).utf8)  // 280 bytes, 1 token / 7 bytes
        let denseA = Array(String(repeating: " a", count: 300).utf8)
        let denseB = Array(String(repeating: " b", count: 300).utf8)
        var map = ChunkBlockMap(chunkBytes: chunkBytes)
        let a = sparse + denseA, b = sparse + denseB, c = sparse + Array(String(repeating: " c", count: 300).utf8)
        map.learned(chunks(a), salt: salt, promptBytes: a.count, tokenIDs: toyTokens(a), blockSize: 4)
        map.learned(chunks(b), salt: salt, promptBytes: b.count, tokenIDs: toyTokens(b), blockSize: 4)
        let p = map.prefix(chunks(c), salt: salt, promptBytes: c.count)
        let truth = KVBlockHash.chains(toyTokens(c), blockSize: 4)
        #expect(p != nil)
        if let p {
            #expect(Array(p.chains) == Array(truth.prefix(p.chains.count)))
            #expect(p.chunks == 4)  // 280 shared bytes: 4 whole chunks of 64
        }
    }

    @Test func planAsksOncePerNewPrefixAndNotForKnownOnes() {
        var rng = TestRNG(seed: 5)
        var map = ChunkBlockMap(chunkBytes: chunkBytes, maxPending: 2)
        let system = words(&rng, bytes: 1200)  // 18 chunks
        let a = system + words(&rng, bytes: 50)
        #expect(map.plan(chunks([]), salt: salt) == .known)  // no full chunk: nothing to map
        #expect(map.plan(chunks(a), salt: salt) == .learn)
        #expect(map.plan(chunks(a), salt: salt) == .busy)  // pending
        map.learned(chunks(a), salt: salt, promptBytes: a.count, tokenIDs: toyTokens(a), blockSize: 4)
        // Same system prompt, another short question: its chunks are known.
        let b = system + words(&rng, bytes: 60)
        #expect(map.plan(chunks(b), salt: salt) == .known)
        // A conversation grown by a small turn: the new tail is under a quarter.
        let turn = a + words(&rng, bytes: 200)
        #expect(map.plan(chunks(turn), salt: salt) == .known)
        // Grown by a long document: worth learning.
        let doc = a + words(&rng, bytes: 2000)
        #expect(map.plan(chunks(doc), salt: salt) == .learn)
        // Another model's salt keeps its own entries.
        #expect(map.plan(chunks(b), salt: PromptChunks.salt(model: "other")) == .learn)
        // Two pending at most.
        let other = words(&rng, bytes: 900)
        #expect(map.plan(chunks(other), salt: salt) == .busy)
        map.failed(chunks(doc), salt: salt)
        #expect(map.pendingCount == 1)
        #expect(map.plan(chunks(other), salt: salt) == .learn)
    }

    @Test func memoryStaysWithinItsBoundsAndABlockSizeChangeStartsAfresh() {
        var rng = TestRNG(seed: 9)
        var map = ChunkBlockMap(chunkBytes: chunkBytes, maxEntries: 200, maxChains: 3000)
        for _ in 0..<300 {
            let p = words(&rng, bytes: 200 + rng.int(2000))
            map.learned(chunks(p), salt: salt, promptBytes: p.count, tokenIDs: toyTokens(p), blockSize: 4)
            #expect(map.count <= 200 && map.storedChains <= 3000)
        }
        #expect(map.count > 50)  // it keeps the recent ones
        let last = words(&rng, bytes: 1500)
        map.learned(chunks(last), salt: salt, promptBytes: last.count, tokenIDs: toyTokens(last), blockSize: 4)
        #expect(map.prefix(chunks(last), salt: salt, promptBytes: last.count) != nil)
        map.learned(chunks(last), salt: salt, promptBytes: last.count, tokenIDs: toyTokens(last), blockSize: 16)
        #expect(map.blockSize == 16 && map.bufferCount == 1)
        #expect(map.prefix(chunks(last), salt: salt, promptBytes: last.count)?.blockSize == 16)
    }
}

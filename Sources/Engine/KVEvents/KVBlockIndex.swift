// KVBlockIndex: which prompt-prefix blocks each backend's vLLM holds in its KV cache, learned from
// its KV events (exact mode of issue 13). Pure value: batches in, answers out; the driver
// (KVEventsDriver) feeds it, the router's scorer asks `overlap(tokenIDs:)`.
//
// Blocks are keyed by vLLM's opaque block hash (only ever compared), and each carries our own
// chained hash of its token ids (Dynamo's approach): hash(parent's chained hash, this block's
// ids). A request's prompt is cut into full blocks and chained the same way, so "backend holds
// the first k blocks" is k successive set lookups. vLLM's own hash is not reproduced.
// Pure: no imports, no I/O.

public struct KVBlockIndex<Backend: Hashable> {
    /// Blocks kept per backend; past it the oldest stored are forgotten (a vLLM cache that large
    /// is not expected: 64 GiB of KV for an 8B model is ~500k tokens = ~31k blocks of 16).
    public let maxBlocksPerBackend: Int

    /// What applying a batch did (the driver counts these).
    public enum Outcome: Equatable, Sendable {
        /// Applied in order.
        case applied
        /// The sequence did not follow the last one (lost batches, or a restarted publisher whose
        /// numbering began again): that backend's entries were purged, then the batch applied.
        case purgedAfterGap(expected: UInt64, got: UInt64)
    }

    private struct Entry {
        var chained: UInt64
        var generation: UInt64
    }

    private struct PerBackend {
        var lastSequence: UInt64?
        /// vLLM hash → our chained hash.
        var blocks: [UInt64: Entry] = [:]
        /// Our chained hash → how many vLLM blocks carry it (two vLLM hashes can share content
        /// when extra keys differ; keyed blocks are never stored, but stay safe).
        var chainedCount = ChainCounts()
        /// Insertion order for the size bound: (vLLM hash, generation); stale pairs are skipped.
        var order: [(UInt64, UInt64)] = []
        var orderHead = 0
        var blockSize = 0
        var nextGeneration: UInt64 = 0

        init(lastSequence: UInt64? = nil, blockSize: Int = 0) {
            self.lastSequence = lastSequence
            self.blockSize = blockSize
        }
    }

    private var backends: [Backend: PerBackend] = [:]
    /// Stored blocks dropped because their parent was unknown (joined late, or parent evicted).
    public private(set) var orphanBlocks = 0
    /// Stored blocks ignored because they are keyed (LoRA, multimodal, cache_salt).
    public private(set) var keyedBlocks = 0
    /// Blocks forgotten because a backend hit maxBlocksPerBackend.
    public private(set) var boundEvictions = 0

    public init(maxBlocksPerBackend: Int = 1 << 17) {
        self.maxBlocksPerBackend = max(1, maxBlocksPerBackend)
    }

    /// Blocks currently indexed for `backend`.
    public func blockCount(_ backend: Backend) -> Int { backends[backend]?.blocks.count ?? 0 }

    /// The block size `backend` last reported (0 until its first BlockStored).
    public func blockSize(_ backend: Backend) -> Int { backends[backend]?.blockSize ?? 0 }

    /// Backends with any state (for metrics).
    public var knownBackends: [Backend] { Array(backends.keys) }

    // MARK: - Events in

    /// One batch from `backend`'s publisher, in arrival order.
    public mutating func batchReceived(_ batch: KVEventBatch, from backend: Backend) -> Outcome {
        var b = backends.removeValue(forKey: backend) ?? PerBackend()
        var outcome = Outcome.applied
        if let last = b.lastSequence, batch.sequence != last &+ 1 {
            outcome = .purgedAfterGap(expected: last &+ 1, got: batch.sequence)
            b = PerBackend()
        }
        b.lastSequence = batch.sequence
        for e in batch.events { apply(e, to: &b) }
        backends[backend] = b
        return outcome
    }

    /// Forgets everything about `backend` (its publisher is gone, or it was removed), including
    /// its sequence: the next batch starts afresh.
    public mutating func purge(_ backend: Backend) {
        backends[backend] = nil
    }

    private mutating func apply(_ e: KVEvent, to b: inout PerBackend) {
        switch e {
        case .stored(let hashes, let parent, let tokens, let blockSize, let isKeyed):
            guard !isKeyed else {
                keyedBlocks += hashes.count
                return
            }
            guard blockSize > 0, tokens.count == hashes.count * blockSize else { return }
            if b.blockSize != blockSize {
                // A different block size makes every chained hash incomparable: start over.
                if b.blockSize != 0 { b = PerBackend(lastSequence: b.lastSequence) }
                b.blockSize = blockSize
            }
            var chain: UInt64
            if let p = parent {
                guard let pe = b.blocks[p] else {
                    orphanBlocks += hashes.count
                    return
                }
                chain = pe.chained
            } else {
                chain = KVBlockHash.root
            }
            tokens.withUnsafeBufferPointer { t in
                for (i, h) in hashes.enumerated() {
                    chain = KVBlockHash.chain(chain, UnsafeBufferPointer(rebasing: t[(i * blockSize)..<((i + 1) * blockSize)]))
                    insert(h, chained: chain, into: &b)
                }
            }
        case .removed(let hashes):
            for h in hashes { remove(h, from: &b) }
        case .cleared:
            b = PerBackend(lastSequence: b.lastSequence, blockSize: b.blockSize)
        }
    }

    private mutating func insert(_ h: UInt64, chained: UInt64, into b: inout PerBackend) {
        if b.blocks[h] != nil { remove(h, from: &b) }
        b.nextGeneration += 1
        b.blocks[h] = Entry(chained: chained, generation: b.nextGeneration)
        b.chainedCount.add(chained)
        b.order.append((h, b.nextGeneration))
        while b.blocks.count > maxBlocksPerBackend, b.orderHead < b.order.count {
            let (oh, og) = b.order[b.orderHead]
            b.orderHead += 1
            if let e = b.blocks[oh], e.generation == og {
                remove(oh, from: &b)
                boundEvictions += 1
            }
        }
        // Keep the order log from growing without bound under remove/store churn.
        if b.orderHead > 1024 && b.orderHead * 2 > b.order.count {
            b.order.removeFirst(b.orderHead)
            b.orderHead = 0
        }
        if b.order.count > 4 * max(64, b.blocks.count) { compactOrder(&b) }
    }

    private func compactOrder(_ b: inout PerBackend) {
        var kept: [(UInt64, UInt64)] = []
        kept.reserveCapacity(b.blocks.count)
        for i in b.orderHead..<b.order.count {
            let (h, g) = b.order[i]
            if b.blocks[h]?.generation == g { kept.append((h, g)) }
        }
        b.order = kept
        b.orderHead = 0
    }

    private func remove(_ h: UInt64, from b: inout PerBackend) {
        guard let e = b.blocks.removeValue(forKey: h) else { return }
        b.chainedCount.remove(e.chained)
    }

    // MARK: - Questions

    /// For each backend with indexed blocks: how many of the prompt's leading full blocks it
    /// holds (a backend holding none is absent from the answer).
    public func matchedBlocks(tokenIDs: [UInt32]) -> [Backend: Int] {
        var out: [Backend: Int] = [:]
        var chainsBySize: [Int: [UInt64]] = [:]
        for (key, b) in backends where b.blockSize > 0 && !b.chainedCount.isEmpty {
            let chains: [UInt64]
            if let c = chainsBySize[b.blockSize] {
                chains = c
            } else {
                chains = KVBlockHash.chains(tokenIDs, blockSize: b.blockSize)
                chainsBySize[b.blockSize] = chains
            }
            var n = 0
            while n < chains.count, b.chainedCount.contains(chains[n]) { n += 1 }
            if n > 0 { out[key] = n }
        }
        return out
    }

    /// For each backend with indexed blocks of `blockSize`: how many of `chains` (a prompt's
    /// leading block hashes, as KVBlockHash.chains makes them: ChunkBlockMap) it holds in a row
    /// from the first (a backend holding none is absent).
    public func matchedBlocks(chains: ArraySlice<UInt64>, blockSize: Int) -> [Backend: Int] {
        var out: [Backend: Int] = [:]
        for (key, b) in backends where b.blockSize == blockSize && !b.chainedCount.isEmpty {
            var n = 0
            var i = chains.startIndex
            while i < chains.endIndex, b.chainedCount.contains(chains[i]) {
                n += 1
                i += 1
            }
            if n > 0 { out[key] = n }
        }
        return out
    }

    /// `overlap(tokenIDs:)` for a prompt known only by its leading block hashes (ChunkBlockMap)
    /// and its estimated length: held blocks × block size ÷ `promptTokens`, in [0, 1].
    public func overlap(chains: ArraySlice<UInt64>, blockSize: Int, promptTokens: Int) -> [Backend: Double] {
        guard blockSize > 0, promptTokens > 0, !chains.isEmpty else { return [:] }
        var out: [Backend: Double] = [:]
        for (key, n) in matchedBlocks(chains: chains, blockSize: blockSize) {
            out[key] = min(1, Double(n * blockSize) / Double(promptTokens))
        }
        return out
    }

    /// The block size of the first backend that reported one (0: none yet): what ChunkBlockMap
    /// cuts learned prompts with (every vLLM of one model uses the same).
    public var anyBlockSize: Int {
        for b in backends.values where b.blockSize > 0 { return b.blockSize }
        return 0
    }

    /// The scorer's prefix term: for each backend, the fraction of the prompt's tokens that sit
    /// in leading full blocks it already holds (matched blocks x its block size / prompt length),
    /// in [0, 1]. Backends with no match are absent (read as 0). The ids must be the prompt as
    /// vLLM tokenizes it, chat template applied (PromptTokenizer).
    public func overlap(tokenIDs: [UInt32]) -> [Backend: Double] {
        guard !tokenIDs.isEmpty else { return [:] }
        var out: [Backend: Double] = [:]
        for (key, n) in matchedBlocks(tokenIDs: tokenIDs) {
            let size = backends[key]?.blockSize ?? 0
            out[key] = min(1, Double(n * size) / Double(tokenIDs.count))
        }
        return out
    }
}

/// Our block hash: FNV-1a over the parent's hash and the block's token ids (little-endian
/// bytes), then SplitMix64's finalizer so nearby inputs spread over all 64 bits.
public enum KVBlockHash {
    public static let root: UInt64 = 0x6b76_2d72_6f6f_7431  // "kv-root1"

    @inline(__always)
    public static func chain(_ parent: UInt64, _ tokens: UnsafeBufferPointer<UInt32>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        let prime: UInt64 = 0x0000_0100_0000_01b3
        var p = parent
        for _ in 0..<8 {
            h = (h ^ (p & 0xff)) &* prime
            p >>= 8
        }
        for t in tokens {
            var v = t
            for _ in 0..<4 {
                h = (h ^ UInt64(v & 0xff)) &* prime
                v >>= 8
            }
        }
        var z = h &+ 0x9e37_79b9_7f4a_7c15
        z = (z ^ (z &>> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z &>> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z &>> 31)
    }

    /// The chained hashes of `tokenIDs`' full blocks, in order.
    public static func chains(_ tokenIDs: [UInt32], blockSize: Int) -> [UInt64] {
        guard blockSize > 0 else { return [] }
        let n = tokenIDs.count / blockSize
        var out: [UInt64] = []
        out.reserveCapacity(n)
        var c = root
        tokenIDs.withUnsafeBufferPointer { t in
            for i in 0..<n {
                c = chain(c, UnsafeBufferPointer(rebasing: t[(i * blockSize)..<((i + 1) * blockSize)]))
                out.append(c)
            }
        }
        return out
    }
}

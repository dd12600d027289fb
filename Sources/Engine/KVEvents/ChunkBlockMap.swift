// ChunkBlockMap: exact mode's shortcut from a prompt's chunk hashes (PromptChunks, estimated
// mode's chained hashes of the rendered prompt's bytes) to its KV block hashes (KVBlockHash
// chains over the token ids vLLM's /tokenize gives), learned from /tokenize answers. A later
// prompt whose leading chunks match a learned one gets the block hashes of that prefix without a
// /tokenize call; only a prompt whose prefix is new is worth one (`plan`: that request waits for
// it, the ones after it do not). Pure value, bounded memory; the driver (Frontend +
// PromptTokenizer) does the fetches. Owns its entries and the chain buffers they point into.
// Pure: no imports, no I/O.
//
// Which blocks a chunk prefix may claim. The first j chunks are the rendered prompt's first
// j × chunkBytes bytes; the answer does not say which token ends where, so the boundary's token
// position is estimated from the prompt's own density (tokens ÷ rendered bytes), shrunk by
// `slack` (10 %: the density of a long shared prefix differs little from the whole prompt's, and
// template tokens after the boundary — the generation prompt, later messages' wrappers — inflate
// the average by a few tokens), minus `marginTokens` (8: a BPE merge or a pre-tokenizer
// look-ahead changes at most the one or two tokens before a byte where two texts diverge; 8 is
// that with room), and only blocks that end at or before it count. A later answer for the same
// chunk prefix caps it further at the two answers' common leading blocks, so an estimate that
// reached past a real divergence is corrected by the next prompt that shows it. Claiming too few
// blocks only lowers every backend's prefix term alike (they are compared on the same blocks);
// claiming too many would credit blocks this prompt does not have, hence the conservative side.
//
// Memory: at most `maxEntries` chunk keys and `maxChains` stored block hashes (8 bytes each),
// counted per buffer (one per learned answer, shared by the keys it taught); when either is
// exceeded the least recently used half of the keys goes, and buffers no key uses are freed.

public struct ChunkBlockMap {
    /// What a prompt's known prefix maps to.
    public struct Prefix: Equatable {
        /// Chained KV block hashes (KVBlockHash) of the prompt's leading full blocks.
        public var chains: ArraySlice<UInt64>
        public var blockSize: Int
        /// Leading chunks of the prompt the map knew.
        public var chunks: Int
        /// The prompt's estimated token count (its rendered bytes × the learned density), never
        /// below the blocks' tokens: the prefix term's denominator.
        public var promptTokens: Int
    }

    /// Whether a prompt should be sent to /tokenize to teach the map.
    public enum Plan: Equatable {
        /// Ask /tokenize for this prompt (it is now pending; report `learned` or `failed`).
        case learn
        /// Nothing to learn: no full chunk, the prefix is known, or the new tail is small.
        case known
        /// New, but a fetch for the same chunks is pending or too many are.
        case busy
    }

    public let chunkBytes: Int
    public let maxEntries: Int
    public let maxChains: Int
    public let maxPending: Int
    public static let slack = 0.10
    public static let marginTokens = 8

    /// The block size the stored chains were cut with (0: nothing learned yet).
    public private(set) var blockSize = 0
    private struct Entry {
        var buffer: Int
        var count: Int
        var tokensPerByte: Double
        var tick: UInt64
    }
    private var entries: [UInt64: Entry] = [:]
    private var buffers: [Int: (chains: [UInt64], refs: Int)] = [:]
    private var nextBuffer = 0
    private var tick: UInt64 = 0
    private var pending: Set<UInt64> = []
    /// Block hashes held in all buffers.
    public private(set) var storedChains = 0
    public var count: Int { entries.count }
    public var bufferCount: Int { buffers.count }
    public var pendingCount: Int { pending.count }

    public init(chunkBytes: Int, maxEntries: Int = 65_536, maxChains: Int = 1 << 20, maxPending: Int = 8) {
        self.chunkBytes = max(1, chunkBytes)
        self.maxEntries = max(1, maxEntries)
        self.maxChains = max(1, maxChains)
        self.maxPending = max(1, maxPending)
    }

    /// How many leading chunks of `chunks` the map knows (0: none), and the entry's key.
    private func deepest(_ chunks: PromptChunks, salt: UInt64) -> (depth: Int, key: UInt64)? {
        var i = chunks.count
        while i > 0 {
            let k = chunks.key(i - 1, salt: salt)
            if entries[k] != nil { return (i, k) }
            i -= 1
        }
        return nil
    }

    /// The known prefix of a prompt whose rendered form is `promptBytes` long (nil: none known).
    /// Marks it recently used.
    public mutating func prefix(_ chunks: PromptChunks, salt: UInt64, promptBytes: Int) -> Prefix? {
        guard blockSize > 0, let (depth, key) = deepest(chunks, salt: salt), var e = entries[key],
              let buf = buffers[e.buffer] else { return nil }
        tick += 1
        e.tick = tick
        entries[key] = e
        let chains = buf.chains[0..<e.count]
        let estimated = Int((Double(max(promptBytes, depth * chunkBytes)) * e.tokensPerByte).rounded())
        return Prefix(chains: chains, blockSize: blockSize, chunks: depth, promptTokens: max(estimated, e.count * blockSize))
    }

    /// The learned tokens per rendered byte for this prompt's known prefix (0: none known).
    public func tokensPerByte(_ chunks: PromptChunks, salt: UInt64) -> Double {
        guard let (_, key) = deepest(chunks, salt: salt) else { return 0 }
        return entries[key]?.tokensPerByte ?? 0
    }

    /// Whether to tokenize this prompt: when it has full chunks and the map knows none of them,
    /// or its unknown tail is at least a quarter of its chunks (a conversation turn that adds a
    /// little to a long known prefix moves the prefix term by less than that). At most
    /// `maxPending` fetches at once, one per distinct prompt prefix.
    public mutating func plan(_ chunks: PromptChunks, salt: UInt64) -> Plan {
        let n = chunks.count
        guard n > 0 else { return .known }
        let known = deepest(chunks, salt: salt)?.depth ?? 0
        if known == n || (known > 0 && (n - known) * 4 < n) { return .known }
        let k = chunks.key(n - 1, salt: salt)
        guard !pending.contains(k), pending.count < maxPending else { return .busy }
        pending.insert(k)
        return .learn
    }

    /// The fetch `plan` asked for failed (or was not made).
    public mutating func failed(_ chunks: PromptChunks, salt: UInt64) {
        guard chunks.count > 0 else { return }
        pending.remove(chunks.key(chunks.count - 1, salt: salt))
    }

    /// The blocks of a /tokenize answer that the first `depth` chunks may claim (see the header).
    public static func safeBlocks(depth: Int, chunkBytes: Int, tokensPerByte: Double, blockSize: Int, tokens: Int) -> Int {
        guard blockSize > 0 else { return 0 }
        let boundary = Double(depth * chunkBytes) * tokensPerByte * (1 - slack)
        let safe = min(Int(boundary.rounded(.down)) - marginTokens, tokens)
        return safe > 0 ? safe / blockSize : 0
    }

    /// /tokenize answered `tokenIDs` for this prompt (rendered `promptBytes` long); `blockSize`
    /// is the backends' KV block size (a different one from before starts the map afresh).
    public mutating func learned(_ chunks: PromptChunks, salt: UInt64, promptBytes: Int, tokenIDs: [UInt32], blockSize: Int) {
        failed(chunks, salt: salt)
        let n = chunks.count
        guard n > 0, blockSize > 0, promptBytes > 0, !tokenIDs.isEmpty else { return }
        if blockSize != self.blockSize {
            entries = [:]
            buffers = [:]
            storedChains = 0
            self.blockSize = blockSize
        }
        let density = Double(tokenIDs.count) / Double(max(promptBytes, n * chunkBytes))
        let most = Self.safeBlocks(depth: n, chunkBytes: chunkBytes, tokensPerByte: density, blockSize: blockSize,
                                   tokens: tokenIDs.count)
        guard most > 0 else { return }
        let chains = KVBlockHash.chains(Array(tokenIDs.prefix(most * blockSize)), blockSize: blockSize)
        let id = nextBuffer
        nextBuffer += 1
        var refs = 0
        for depth in 1...n {
            var k = Self.safeBlocks(depth: depth, chunkBytes: chunkBytes, tokensPerByte: density, blockSize: blockSize,
                                    tokens: tokenIDs.count)
            guard k > 0 else { continue }
            let key = chunks.key(depth - 1, salt: salt)
            var d = density
            if let old = entries[key] {
                // Same chunk prefix seen before: keep only what both answers agree on.
                if let ob = buffers[old.buffer] {
                    var common = 0
                    let limit = min(k, old.count)
                    while common < limit && ob.chains[common] == chains[common] { common += 1 }
                    k = common
                    d = min(d, old.tokensPerByte)
                }
                release(old.buffer)
                entries[key] = nil
                guard k > 0 else { continue }
            }
            tick += 1
            entries[key] = Entry(buffer: id, count: k, tokensPerByte: d, tick: tick)
            refs += 1
        }
        guard refs > 0 else { return }
        buffers[id] = (chains, refs)
        storedChains += chains.count
        if entries.count > maxEntries || storedChains > maxChains { evictOlderHalf() }
    }

    private mutating func release(_ buffer: Int) {
        guard var b = buffers[buffer] else { return }
        b.refs -= 1
        if b.refs == 0 {
            storedChains -= b.chains.count
            buffers[buffer] = nil
        } else {
            buffers[buffer] = b
        }
    }

    /// Drops the least recently used half of the keys (at least one), then keeps dropping the
    /// oldest while the chain bound is still exceeded: O(n log n) once per maxEntries/2 learns.
    private mutating func evictOlderHalf() {
        let byAge = entries.sorted { $0.value.tick < $1.value.tick }
        var i = 0
        let half = max(1, entries.count / 2)
        while i < byAge.count && (i < half || storedChains > maxChains || entries.count > maxEntries) {
            let (key, e) = byAge[i]
            entries[key] = nil
            release(e.buffer)
            i += 1
        }
    }
}

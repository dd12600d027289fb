// PrefixCache and PrefillLine: the simulator's model of vLLM's automatic prefix caching and of
// prefill as the compute-bound part of a step, as pure values (stdlib only), owned by SimServer.
// A prompt's rendered text is cut into blocks of `blockSize` tokens (the tokenizer's ~4 bytes a
// token, so 4 × blockSize bytes), each block hashed with its parent's hash, as vLLM chains block
// hashes; only full blocks are cached. The cache is an LRU of block hashes bounded by the KV
// capacity (--kv-blocks): vLLM keeps freed blocks cached until it needs them for new work.
// PrefillLine serializes prefill work: one instance computes one prompt's uncached tokens at a
// time, so TTFT grows with the uncached tokens ahead in line (the load that saturates a replica).
// Pure: no imports, no I/O.

struct PrefixCache {
    let capacity: Int
    /// hash → node index; nodes form a doubly linked list, most recent at `head`.
    private var index: [UInt64: Int32] = [:]
    private var keys: [UInt64] = []
    private var prev: [Int32] = []
    private var next: [Int32] = []
    private var head: Int32 = -1
    private var tail: Int32 = -1
    private var free: [Int32] = []

    init(capacity: Int) { self.capacity = max(1, capacity) }

    var count: Int { index.count }

    func contains(_ h: UInt64) -> Bool { index[h] != nil }

    /// The leading blocks of `hashes` already cached (vLLM stops at the first miss); then every
    /// block of the prompt is cached (touched, or inserted, evicting the least recently used).
    mutating func lookupAndInsert(_ hashes: [UInt64]) -> Int {
        var matched = 0
        while matched < hashes.count, index[hashes[matched]] != nil { matched += 1 }
        // Insert in reverse so that the prompt's first block ends up most recent: a shared prefix
        // outlives the tails that hang off it (vLLM frees a request's blocks tail first).
        for h in hashes.reversed() { touch(h) }
        return matched
    }

    private mutating func touch(_ h: UInt64) {
        if let n = index[h] {
            unlink(n)
            pushFront(n)
            return
        }
        if index.count >= capacity, tail >= 0 {
            let victim = tail
            unlink(victim)
            index[keys[Int(victim)]] = nil
            free.append(victim)
        }
        let n: Int32
        if let f = free.popLast() {
            n = f
            keys[Int(n)] = h
        } else {
            n = Int32(keys.count)
            keys.append(h)
            prev.append(-1)
            next.append(-1)
        }
        index[h] = n
        pushFront(n)
    }

    private mutating func unlink(_ n: Int32) {
        let p = prev[Int(n)], x = next[Int(n)]
        if p >= 0 { next[Int(p)] = x } else { head = x }
        if x >= 0 { prev[Int(x)] = p } else { tail = p }
        prev[Int(n)] = -1
        next[Int(n)] = -1
    }

    private mutating func pushFront(_ n: Int32) {
        prev[Int(n)] = -1
        next[Int(n)] = head
        if head >= 0 { prev[Int(head)] = n }
        head = n
        if tail < 0 { tail = n }
    }

    /// Chained hashes of the full blocks of `text` (`blockBytes` each), seeded with the model's
    /// index (as vLLM's extra keys keep models apart). FNV-1a over each block, mixed with the parent.
    static func blockHashes(_ text: [UInt8], blockBytes: Int, seed: UInt64) -> [UInt64] {
        let size = max(1, blockBytes)
        let full = text.count / size
        guard full > 0 else { return [] }
        var out: [UInt64] = []
        out.reserveCapacity(full)
        var parent = seed &* 0x9E37_79B9_7F4A_7C15 ^ 0xCBF2_9CE4_8422_2325
        text.withUnsafeBytes { p in
            for b in 0..<full {
                var h = parent ^ 0xCBF2_9CE4_8422_2325
                for i in (b * size)..<((b + 1) * size) { h = (h ^ UInt64(p[i])) &* 0x100_0000_01B3 }
                parent = h
                out.append(h)
            }
        }
        return out
    }

    /// Tokens a request with `promptTokens` finds cached after `matchedBlocks` block hits: vLLM
    /// always computes at least the prompt's last token.
    static func cachedTokens(matchedBlocks: Int, blockSize: Int, promptTokens: Int) -> Int {
        max(0, min(matchedBlocks * blockSize, promptTokens - 1))
    }
}

/// Prefill as one serial line per instance: a prompt's uncached tokens cost `nanosPerToken` each,
/// computed after the prefills already in line.
struct PrefillLine {
    var nanosPerToken: UInt64
    /// When the prefills scheduled so far are done (monotonic nanoseconds).
    private(set) var busyUntil: UInt64 = 0

    init(nanosPerToken: UInt64) { self.nanosPerToken = nanosPerToken }

    /// A request starts at `now` with `uncachedTokens` to compute: the nanoseconds until its
    /// prefill is done (its wait in line plus its own work). 0 when prefill is free.
    mutating func scheduled(now: UInt64, uncachedTokens: Int) -> UInt64 {
        guard nanosPerToken > 0, uncachedTokens > 0 else { return 0 }
        let start = max(now, busyUntil)
        busyUntil = start + UInt64(uncachedTokens) * nanosPerToken
        return busyUntil - now
    }
}

// PrefixCache and PrefillLine: the simulator's model of vLLM's automatic prefix caching and of
// prefill as the compute-bound part of a step, as pure values (stdlib only), owned by SimServer.
// A prompt's token ids (the ones /tokenize answers, SimTokenizer.promptIDs) are cut into blocks of
// --block-size ids, each block hashed with its parent's hash, as vLLM chains block hashes; only
// full blocks are cached. The cache is an LRU of block hashes bounded by the KV capacity
// (--kv-blocks): vLLM keeps freed blocks cached until it needs them for new work. Each insertion
// reports what it stored and evicted, which --kv-events-config publishes (KVEventPublisher) as
// vLLM's BlockStored / BlockRemoved: the ids, the block size and the hashes are the same ones.
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

    /// What one prompt's insertion did: its leading blocks that were cached already (vLLM stops at
    /// the first miss), the runs of blocks newly stored (block index ranges of the prompt; the
    /// parent of run r is the block before r.lowerBound), and the hashes evicted to make room.
    struct Insertion: Equatable {
        var matched: Int
        var stored: [Range<Int>]
        var removed: [UInt64]
    }

    /// The leading blocks of `hashes` already cached (vLLM stops at the first miss); then every
    /// block of the prompt is cached (touched, or inserted, evicting the least recently used).
    /// Only the first `capacity` blocks of a longer prompt are kept (so none of its own blocks is
    /// evicted by the rest of it).
    mutating func lookupAndInsert(_ hashes: [UInt64]) -> Insertion {
        let n = min(hashes.count, capacity)
        var matched = 0
        while matched < n, index[hashes[matched]] != nil { matched += 1 }
        var out = Insertion(matched: matched, stored: [], removed: [])
        // Insert in reverse so that the prompt's first block ends up most recent: a shared prefix
        // outlives the tails that hang off it (vLLM frees a request's blocks tail first).
        var isNew = [Bool](repeating: false, count: n)
        var i = n - 1
        while i >= 0 {
            isNew[i] = touch(hashes[i], evicted: &out.removed)
            i -= 1
        }
        var runStart = -1
        for k in 0...n {
            let new = k < n && isNew[k]
            if new && runStart < 0 { runStart = k }
            if !new && runStart >= 0 {
                out.stored.append(runStart..<k)
                runStart = -1
            }
        }
        return out
    }

    /// Forgets every block (POST /reset_prefix_cache).
    mutating func clear() {
        self = PrefixCache(capacity: capacity)
    }

    /// Makes `h` the most recent block; returns whether it is new (evictions go to `evicted`).
    private mutating func touch(_ h: UInt64, evicted: inout [UInt64]) -> Bool {
        if let n = index[h] {
            unlink(n)
            pushFront(n)
            return false
        }
        if index.count >= capacity, tail >= 0 {
            let victim = tail
            unlink(victim)
            index[keys[Int(victim)]] = nil
            evicted.append(keys[Int(victim)])
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
        return true
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

    /// Chained hashes of the full blocks of `ids` (`blockSize` ids each), seeded with the model's
    /// index (as vLLM's extra keys keep models apart). FNV-1a over each block's ids, mixed with
    /// the parent. Opaque to subscribers, like vLLM's own.
    static func blockHashes(_ ids: [UInt32], blockSize: Int, seed: UInt64) -> [UInt64] {
        let size = max(1, blockSize)
        let full = ids.count / size
        guard full > 0 else { return [] }
        var out: [UInt64] = []
        out.reserveCapacity(full)
        var parent = seed &* 0x9E37_79B9_7F4A_7C15 ^ 0xCBF2_9CE4_8422_2325
        ids.withUnsafeBufferPointer { p in
            for b in 0..<full {
                var h = parent ^ 0xCBF2_9CE4_8422_2325
                for i in (b * size)..<((b + 1) * size) {
                    var v = p[i]
                    for _ in 0..<4 {
                        h = (h ^ UInt64(v & 0xFF)) &* 0x100_0000_01B3
                        v >>= 8
                    }
                }
                parent = mix64(h)
                out.append(parent)
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

// SimBlockLedger: which prompt blocks the simulated vLLM holds in its prefix cache, LRU, so that
// KVEventPublisher has BlockStored / BlockRemoved to send. A stand-in, kept small on purpose: when
// the simulator gets its own prefix-cache model, that cache calls the publisher instead and this
// file goes. Block hashes are the simulator's own (chained over token ids), opaque to subscribers
// like vLLM's. Pure: no imports, no I/O.

struct SimBlockLedger {
    let capacity: Int
    let blockSize: Int
    /// Block hash → last use (a tick); the LRU order is `byTick`.
    private var lastUse: [UInt64: UInt64] = [:]
    private var byTick: [UInt64: UInt64] = [:]
    private var oldestTick: UInt64 = 1
    private var tick: UInt64 = 0

    /// A run of consecutive newly cached blocks: hashes, the parent's hash (nil at the prompt's
    /// start) and the ids they cover.
    struct Stored: Equatable {
        var hashes: [UInt64]
        var parent: UInt64?
        var tokenIDs: [UInt32]
    }

    init(capacity: Int, blockSize: Int) {
        self.capacity = max(1, capacity)
        self.blockSize = max(1, blockSize)
    }

    var count: Int { lastUse.count }

    /// A prompt's prefill finished: its full blocks are cached (new ones stored, cached ones
    /// touched) and the least recently used blocks beyond the capacity evicted (returned first,
    /// as vLLM frees before it stores).
    mutating func prefilled(_ ids: [UInt32]) -> (removed: [UInt64], stored: [Stored]) {
        let n = min(ids.count / blockSize, capacity)
        var stored: [Stored] = []
        var run: Stored?
        var chain: UInt64 = 0x5349_4d2d_6b76_3031  // "SIM-kv01"
        var hashes: [UInt64] = []
        for i in 0..<n {
            let parent = i == 0 ? nil : Optional(chain)
            chain = Self.hash(chain, ids[(i * blockSize)..<((i + 1) * blockSize)])
            hashes.append(chain)
            if lastUse[chain] == nil {
                if run == nil { run = Stored(hashes: [], parent: parent, tokenIDs: []) }
                run!.hashes.append(chain)
                run!.tokenIDs += ids[(i * blockSize)..<((i + 1) * blockSize)]
            } else if let r = run {
                stored.append(r)
                run = nil
            }
        }
        if let r = run { stored.append(r) }
        for h in hashes { touch(h) }
        var removed: [UInt64] = []
        while lastUse.count > capacity {
            while byTick[oldestTick] == nil { oldestTick += 1 }
            let h = byTick.removeValue(forKey: oldestTick)!
            lastUse[h] = nil
            removed.append(h)
        }
        return (removed, stored)
    }

    /// Everything is forgotten (POST /reset_prefix_cache).
    mutating func clear() {
        lastUse = [:]
        byTick = [:]
        oldestTick = tick + 1
    }

    private mutating func touch(_ h: UInt64) {
        tick += 1
        if let t = lastUse[h] { byTick[t] = nil }
        lastUse[h] = tick
        byTick[tick] = h
    }

    private static func hash(_ parent: UInt64, _ ids: ArraySlice<UInt32>) -> UInt64 {
        var h = parent
        for id in ids { h = mix64(h ^ UInt64(id)) }
        return h
    }
}

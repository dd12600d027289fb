// PrefixIndex: estimated mode's memory of which prompt chunks were recently sent to which backend
// (GIE's estimated prefix index), a pure value (standard library only), one per process.
// One table maps a chunk key (PromptChunks.key) to a slot — open addressing with linear probing,
// indexed by the key's low bits (the key is already a well-mixed hash: no hashing of our own,
// unlike Dictionary's SipHash), at most half full, deletion by backward shift; a slot holds, per backend, the stamp of
// its last use there (0 = not held). Each backend's entries form an LRU bounded by its capacity:
// every use appends (slot, stamp) to the backend's queue; eviction pops the queue front and evicts
// the entry only when the popped stamp is still the entry's newest (older records are stale and
// skipped). So one lookup per chunk serves every backend, and a use costs O(1) amortized.
// The queue is bounded too (2 × capacity + 64 records): popping a live record early evicts what
// is the backend's least recently used entry anyway.
// Capacity per backend (chunks): routing.index_chunks_per_backend if set, else
// KV tokens × chars per token ÷ chunk chars (GIE's formula), else `defaultCapacity`.
// Pure: no imports, no I/O.

public struct PrefixIndex: Sendable {
    public static let defaultCapacity = 16_384

    public let backendCount: Int
    /// The open-addressing table: bucket → key and slot (-1: empty). Power-of-two size.
    private var tableKeys: [UInt64] = Array(repeating: 0, count: 256)
    private var tableSlots: [Int32] = Array(repeating: -1, count: 256)
    private var tableCount = 0
    /// The slots the last matchedChunks found, by chunk position: `record` of the same prompt
    /// (the usual next call) reuses them after checking each still holds that key.
    private var hints: [Int32] = []
    private var keys: [UInt64] = []
    /// slot * backendCount + backend → stamp of the last use (0: not held).
    private var stamps: [UInt32] = []
    /// Backends holding each slot (a slot with none is freed).
    private var holders: [UInt16] = []
    private var freeSlots: [Int32] = []
    private var queues: [UseQueue]
    private var clocks: [UInt32]
    public private(set) var sizes: [Int]
    public private(set) var capacities: [Int]

    struct UseQueue: Sendable {
        var slots: [Int32] = []
        var stamps: [UInt32] = []
        var head = 0
        var live: Int { slots.count - head }
    }

    public init(backendCount: Int, capacity: Int = PrefixIndex.defaultCapacity) {
        self.backendCount = max(1, backendCount)
        queues = Array(repeating: UseQueue(), count: self.backendCount)
        clocks = Array(repeating: 0, count: self.backendCount)
        sizes = Array(repeating: 0, count: self.backendCount)
        capacities = Array(repeating: max(1, capacity), count: self.backendCount)
    }

    /// Distinct chunk keys held by any backend.
    public var distinctChunks: Int { tableCount }

    /// GIE's sizing: how many chunks of `chunkChars` the backend's KV cache holds.
    public static func capacity(kvTokens: Int?, charsPerToken: Double, chunkChars: Int) -> Int {
        guard let t = kvTokens, t > 0, chunkChars > 0, charsPerToken > 0 else { return defaultCapacity }
        let c = Double(t) * charsPerToken / Double(chunkChars)
        return Int(min(max(c.rounded(.up), 16), 4_000_000))
    }

    /// Sets a backend's capacity, evicting down to it at once.
    public mutating func setCapacity(_ backend: Int, _ capacity: Int) {
        capacities[backend] = max(1, capacity)
        evict(backend)
    }

    /// How many leading chunks of `chunks` each of `backends` holds (GIE: matched leading chunks;
    /// the walk stops at the first chunk no remaining backend holds). `out[i]` is for `backends[i]`.
    public mutating func matchedChunks(_ chunks: PromptChunks, salt: UInt64, backends: [Int], into out: inout [Int]) {
        out.removeAll(keepingCapacity: true)
        out.append(contentsOf: repeatElement(0, count: backends.count))
        hints.removeAll(keepingCapacity: true)
        guard !chunks.isEmpty, tableCount > 0 else { return }
        var alive = backends.count
        for i in 0..<chunks.count {
            guard let slot = find(chunks.key(i, salt: salt)) else { return }
            hints.append(slot)
            let row = Int(slot) * backendCount
            for (k, b) in backends.enumerated() where out[k] == i {
                if stamps[row + b] != 0 { out[k] = i + 1 } else { alive -= 1 }
            }
            if alive == 0 { return }
        }
    }

    /// `chunks` were sent to `backend`: each becomes its most recent entry, the first chunk last
    /// (so a prefix shared by many prompts outlives their tails, as in vLLM's own cache).
    /// Returns how many leading chunks the backend held before (the estimated hit).
    @discardableResult
    public mutating func record(_ chunks: PromptChunks, salt: UInt64, backend: Int) -> Int {
        guard !chunks.isEmpty else { return 0 }
        var firstMiss = chunks.count
        var i = chunks.count - 1
        while i >= 0 {
            let key = chunks.key(i, salt: salt)
            var known: Int32 = -1
            if i < hints.count {
                // Still that key's slot? (A freed slot keeps its old key but has no holders.)
                let h = hints[i]
                if keys[Int(h)] == key && holders[Int(h)] > 0 { known = h }
            }
            if !use(key, backend, known: known) { firstMiss = i }
            i -= 1
        }
        hints.removeAll(keepingCapacity: true)
        evict(backend)
        return firstMiss
    }

    /// Forgets everything `backend` held (exact mode's gap rule would call this; also tests).
    public mutating func clear(_ backend: Int) {
        let saved = capacities[backend]
        capacities[backend] = 0
        evict(backend)
        capacities[backend] = saved
    }

    /// Returns whether `b` held the key before.
    /// `known`: the key's slot when the caller knows it (else -1).
    private mutating func use(_ key: UInt64, _ b: Int, known: Int32) -> Bool {
        let slot: Int32
        if known >= 0 {
            slot = known
        } else if let s = find(key) {
            slot = s
        } else if let f = freeSlots.popLast() {
            slot = f
            keys[Int(f)] = key
            insertKey(key, f)
        } else {
            slot = Int32(keys.count)
            keys.append(key)
            holders.append(0)
            stamps.append(contentsOf: repeatElement(0, count: backendCount))
            insertKey(key, slot)
        }
        clocks[b] &+= 1
        if clocks[b] == 0 { clocks[b] = 1 }  // 0 means "not held"; after 2^32 uses order blurs once
        let at = Int(slot) * backendCount + b
        let held = stamps[at] != 0
        if !held {
            sizes[b] += 1
            holders[Int(slot)] += 1
        }
        stamps[at] = clocks[b]
        queues[b].slots.append(slot)
        queues[b].stamps.append(clocks[b])
        return held
    }

    private mutating func evict(_ b: Int) {
        let maxRecords = 2 * capacities[b] + 64
        while sizes[b] > capacities[b] || queues[b].live > maxRecords {
            guard queues[b].head < queues[b].slots.count else { break }
            let slot = queues[b].slots[queues[b].head]
            let stamp = queues[b].stamps[queues[b].head]
            queues[b].head += 1
            let at = Int(slot) * backendCount + b
            guard stamps[at] == stamp else { continue }  // stale: used again since
            stamps[at] = 0
            sizes[b] -= 1
            holders[Int(slot)] -= 1
            if holders[Int(slot)] == 0 {
                removeKey(keys[Int(slot)])
                freeSlots.append(slot)
            }
        }
        let q = queues[b]
        if q.head > 1024 && q.head * 2 > q.slots.count {
            queues[b].slots.removeFirst(q.head)
            queues[b].stamps.removeFirst(q.head)
            queues[b].head = 0
        } else if q.head == q.slots.count && q.head > 0 {
            queues[b].slots.removeAll(keepingCapacity: true)
            queues[b].stamps.removeAll(keepingCapacity: true)
            queues[b].head = 0
        }
    }

    // MARK: - The open-addressing table

    @inline(__always) private func find(_ key: UInt64) -> Int32? {
        let mask = tableKeys.count - 1
        var i = Int(truncatingIfNeeded: key) & mask
        while true {
            let s = tableSlots[i]
            if s < 0 { return nil }
            if tableKeys[i] == key { return s }
            i = (i + 1) & mask
        }
    }

    /// `key` is not in the table.
    private mutating func insertKey(_ key: UInt64, _ slot: Int32) {
        if (tableCount + 1) * 2 > tableKeys.count { grow() }
        let mask = tableKeys.count - 1
        var i = Int(truncatingIfNeeded: key) & mask
        while tableSlots[i] >= 0 { i = (i + 1) & mask }
        tableKeys[i] = key
        tableSlots[i] = slot
        tableCount += 1
    }

    /// `key` is in the table. Backward-shift deletion: later entries of the probe run move up
    /// into the hole when their home bucket allows it, so lookups never need tombstones.
    private mutating func removeKey(_ key: UInt64) {
        let mask = tableKeys.count - 1
        var hole = Int(truncatingIfNeeded: key) & mask
        while tableKeys[hole] != key || tableSlots[hole] < 0 { hole = (hole + 1) & mask }
        var j = hole
        while true {
            j = (j + 1) & mask
            if tableSlots[j] < 0 { break }
            let home = Int(truncatingIfNeeded: tableKeys[j]) & mask
            if !OpenAddressing.staysInPlace(home: home, hole: hole, at: j) {
                tableKeys[hole] = tableKeys[j]
                tableSlots[hole] = tableSlots[j]
                hole = j
            }
        }
        tableSlots[hole] = -1
        tableCount -= 1
    }

    private mutating func grow() {
        let oldKeys = tableKeys, oldSlots = tableSlots
        tableKeys = Array(repeating: 0, count: oldKeys.count * 2)
        tableSlots = Array(repeating: -1, count: oldKeys.count * 2)
        tableCount = 0
        for i in 0..<oldKeys.count where oldSlots[i] >= 0 { insertKey(oldKeys[i], oldSlots[i]) }
    }
}

// PrefixIndex: estimated mode's memory of which prompt chunks were recently sent to which backend
// (GIE's estimated prefix index), a pure value (standard library only), one per process.
// One table maps a chunk key (PromptChunks.key) to a slot; a slot holds, per backend, the stamp of
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
    private var slotOf: [UInt64: Int32] = [:]
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
    public var distinctChunks: Int { slotOf.count }

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
    public func matchedChunks(_ chunks: PromptChunks, salt: UInt64, backends: [Int], into out: inout [Int]) {
        out.removeAll(keepingCapacity: true)
        out.append(contentsOf: repeatElement(0, count: backends.count))
        guard !chunks.isEmpty, !slotOf.isEmpty else { return }
        var alive = backends.count
        for i in 0..<chunks.count {
            guard let slot = slotOf[chunks.key(i, salt: salt)] else { return }
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
            if !use(chunks.key(i, salt: salt), backend) { firstMiss = i }
            i -= 1
        }
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
    private mutating func use(_ key: UInt64, _ b: Int) -> Bool {
        let slot: Int32
        if let s = slotOf[key] {
            slot = s
        } else if let f = freeSlots.popLast() {
            slot = f
            keys[Int(f)] = key
            slotOf[key] = f
        } else {
            slot = Int32(keys.count)
            keys.append(key)
            holders.append(0)
            stamps.append(contentsOf: repeatElement(0, count: backendCount))
            slotOf[key] = slot
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
                slotOf[keys[Int(slot)]] = nil
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
}

// MemoryCacheStore: the embedded default CacheStore, one per process (loop-confined, not Sendable).
// Owns: its entries in a slot array threaded by an intrusive doubly linked list (most recent at
// head) plus a key → slot dictionary, so get/put/evict are O(1). Completions run synchronously.
// Expiry uses the monotonic `now` passed in: fresh until T, stale until T + staleTTL, then gone.
// Bounded by maxEntries and maxBytes (sum of body sizes); the least recently used go first.
import Reactor

public final class MemoryCacheStore: SynchronousCacheStore {
    private struct Slot {
        var key: String
        var value: [UInt8]
        var freshUntil: UInt64
        var staleUntil: UInt64
        var prev: Int
        var next: Int
    }

    public let maxEntries: Int
    public let maxBytes: Int
    private var slots: [Slot] = []
    private var free: [Int] = []
    private var index: [String: Int] = [:]
    private var head = -1  // most recently used
    private var tail = -1  // least recently used
    public private(set) var totalBytes = 0
    /// Entries removed to make room (not counting expiry).
    public private(set) var evictions = 0

    public init(maxEntries: Int, maxBytes: Int = .max) {
        self.maxEntries = max(0, maxEntries)
        self.maxBytes = max(0, maxBytes)
    }

    public var entryCount: Int { index.count }

    /// Keys from most to least recently used (tests, debugging).
    public var keysByRecency: [String] {
        var out: [String] = []
        var i = head
        while i >= 0 {
            out.append(slots[i].key)
            i = slots[i].next
        }
        return out
    }

    public func lookup(_ key: String, now: UInt64, touch: Bool) -> CacheLookup {
        guard let i = index[key] else { return .miss }
        let s = slots[i]
        if now >= s.staleUntil {
            remove(i)
            return .miss
        }
        if touch { moveToFront(i) }
        return now < s.freshUntil ? .fresh(s.value) : .stale(s.value)
    }

    @discardableResult
    public func store(_ key: String, _ value: [UInt8], ttl: Duration, staleTTL: Duration, now: UInt64) -> Bool {
        let ttlN = ttl.nanoseconds
        guard ttlN > 0, maxEntries > 0, value.count <= maxBytes else {
            if let i = index[key] { remove(i) }  // never leave an older body behind a refused update
            return false
        }
        let fresh = now.addingReportingOverflow(ttlN).overflow ? UInt64.max : now + ttlN
        let staleN = staleTTL.nanoseconds
        let stale = fresh.addingReportingOverflow(staleN).overflow ? UInt64.max : fresh + staleN
        if let i = index[key] {
            totalBytes += value.count - slots[i].value.count
            slots[i].value = value
            slots[i].freshUntil = fresh
            slots[i].staleUntil = stale
            moveToFront(i)
        } else {
            let slot = Slot(key: key, value: value, freshUntil: fresh, staleUntil: stale, prev: -1, next: -1)
            let i: Int
            if let f = free.popLast() {
                slots[f] = slot
                i = f
            } else {
                slots.append(slot)
                i = slots.count - 1
            }
            index[key] = i
            totalBytes += value.count
            linkFront(i)
        }
        // The new entry is at the head and fits on its own, so the loop never evicts it.
        while index.count > maxEntries || totalBytes > maxBytes, tail >= 0 {
            evictions += 1
            remove(tail)
        }
        return index[key] != nil
    }

    public func removeAll() {
        slots.removeAll()
        free.removeAll()
        index.removeAll()
        head = -1
        tail = -1
        totalBytes = 0
    }

    // MARK: - Intrusive list

    private func unlink(_ i: Int) {
        let p = slots[i].prev, n = slots[i].next
        if p >= 0 { slots[p].next = n } else { head = n }
        if n >= 0 { slots[n].prev = p } else { tail = p }
        slots[i].prev = -1
        slots[i].next = -1
    }

    private func linkFront(_ i: Int) {
        slots[i].prev = -1
        slots[i].next = head
        if head >= 0 { slots[head].prev = i }
        head = i
        if tail < 0 { tail = i }
    }

    private func moveToFront(_ i: Int) {
        guard head != i else { return }
        unlink(i)
        linkFront(i)
    }

    private func remove(_ i: Int) {
        unlink(i)
        index.removeValue(forKey: slots[i].key)
        totalBytes -= slots[i].value.count
        slots[i].value = []
        slots[i].key = ""
        free.append(i)
    }
}

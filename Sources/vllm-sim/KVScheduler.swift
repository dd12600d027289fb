// KVScheduler: the simulator's model of vLLM's scheduler, as a pure machine (stdlib only).
// A request is admitted when a running slot (max_num_seqs) is free and the KV blocks it will hold
// at its longest (prompt + all its tokens) fit; otherwise it waits in a FIFO, and admission stops
// at the first waiter that does not fit, like vLLM's. Reserving the final footprint up front keeps
// the model free of preemption and deadlock; the *reported* usage (SimServer) counts only the
// blocks a request holds so far, so it still grows token by token as in vLLM — except while a
// request waits for KV room (`isBlockedOnKV`): then it reports the reserved blocks, since vLLM only
// leaves a request waiting for KV when its allocated blocks fill the cache (usage ≈ 1.0, see
// ref/vllm-api.md), and a gauge reading half empty while the backend queues would mislead
// admission in front of it.
// Pure: no imports, no I/O.

struct GenerationID: Hashable, Sendable {
    let raw: UInt64
}

struct KVScheduler {
    let totalBlocks: Int
    let maxRunning: Int
    private(set) var reservedBlocks = 0
    private var running: [GenerationID: Int] = [:]
    /// FIFO of waiters; entries no longer in `waiting` (abandoned) are skipped lazily.
    private var queue: [GenerationID] = []
    private var queueHead = 0
    private var waiting: [GenerationID: Int] = [:]

    init(totalBlocks: Int, maxRunning: Int) {
        self.totalBlocks = max(1, totalBlocks)
        self.maxRunning = max(1, maxRunning)
    }

    var runningCount: Int { running.count }
    var waitingCount: Int { waiting.count }
    /// Requests wait although a running slot is free: the KV reservation is what holds them.
    var isBlockedOnKV: Bool { !waiting.isEmpty && running.count < maxRunning }

    enum Admission: Equatable {
        /// Running now: start generating.
        case started
        /// Behind others or out of room: wait for `nextAdmission()` to name it.
        case queued
    }

    /// A request arrives needing `blocks` KV blocks at most (clamped to the cache size, so an
    /// oversized request still runs, alone).
    mutating func submitted(_ id: GenerationID, blocks: Int) -> Admission {
        let b = min(max(1, blocks), totalBlocks)
        if waiting.isEmpty && fits(b) {
            running[id] = b
            reservedBlocks += b
            return .started
        }
        queue.append(id)
        waiting[id] = b
        return .queued
    }

    /// A running request finished or was aborted: its blocks and slot are free.
    mutating func finished(_ id: GenerationID) {
        guard let b = running.removeValue(forKey: id) else {
            preconditionFailure("finished(\(id)) but it is not running")
        }
        reservedBlocks -= b
    }

    /// A waiting request went away before it ran.
    mutating func abandoned(_ id: GenerationID) {
        waiting.removeValue(forKey: id)
        if waiting.isEmpty {
            queue.removeAll(keepingCapacity: true)
            queueHead = 0
        }
    }

    /// The head of the FIFO, now running, if it fits; nil when nothing can start.
    mutating func nextAdmission() -> GenerationID? {
        while queueHead < queue.count {
            let id = queue[queueHead]
            guard let b = waiting[id] else {
                queueHead += 1
                continue
            }
            guard fits(b) else { return nil }
            queueHead += 1
            waiting.removeValue(forKey: id)
            running[id] = b
            reservedBlocks += b
            compact()
            return id
        }
        compact()
        return nil
    }

    private func fits(_ blocks: Int) -> Bool {
        running.count < maxRunning && reservedBlocks + blocks <= totalBlocks
    }

    private mutating func compact() {
        if queueHead == queue.count {
            queue.removeAll(keepingCapacity: true)
            queueHead = 0
        } else if queueHead > 1024 && queueHead * 2 > queue.count {
            queue.removeFirst(queueHead)
            queueHead = 0
        }
    }
}

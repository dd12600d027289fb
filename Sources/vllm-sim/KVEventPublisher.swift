// KVEventPublisher: the simulator's side of vLLM's KV-cache events, in vLLM 0.32's wire format
// (docs/vllm-kv-events.md): a ZeroMQ PUB socket sending [topic, seq (8 bytes BE, from 0),
// msgpack [ts, [event...], 0]]. Events given during one loop pass go out as one batch after it,
// as vLLM sends one batch per engine step. The prefix cache (PrefixCache) says what to publish.
// Owns: the ZeroMQ context and socket and the encode buffer (freed in close()). Loop-confined.
// No replay socket: --kv-events-config's replay_endpoint is accepted and not served (a gap makes
// subscribers purge, which is what the Engine does anyway).
import CKVEvents
import Reactor

/// --kv-events-config, as vLLM's KVEventsConfig reads it.
struct SimKVEventsConfig: Equatable {
    var isEnabled = false
    var publisher = "null"
    var endpoint = "tcp://*:5557"
    var replayEndpoint: String?
    var topic = ""

    struct Invalid: Error, Equatable { let message: String }

    /// Parses the flag's JSON. Unknown keys are ignored (vLLM's has more: buffer_steps, hwm, ...).
    static func parse(_ json: String) -> Result<SimKVEventsConfig, Invalid> {
        var c = SimKVEventsConfig()
        let r = withJSONDocument(Array(json.utf8)) { root -> Bool in
            guard root.kind == .object else { return false }
            c.isEnabled = root["enable_kv_cache_events"].isTrue
            if let p = root["publisher"].string { c.publisher = p }
            if let e = root["endpoint"].string { c.endpoint = e }
            c.replayEndpoint = root["replay_endpoint"].string
            if let t = root["topic"].string { c.topic = t }
            return true
        }
        switch r {
        case .success(true): break
        default: return .failure(Invalid(message: "--kv-events-config must be a JSON object"))
        }
        if c.isEnabled && c.publisher != "zmq" && c.publisher != "null" {
            return .failure(Invalid(message: "--kv-events-config: publisher must be \"zmq\" or \"null\""))
        }
        return .success(c)
    }
}

final class KVEventPublisher: LoopDeferred {
    private let loop: Loop
    private var context: UnsafeMutableRawPointer?
    private var socket: UnsafeMutableRawPointer?
    private let buffer: UnsafeMutablePointer<ckv_buffer>
    private let topic: [UInt8]
    private var events: [ckv_event] = []
    private var hashes: [UInt64] = []
    private var tokens: [UInt32] = []
    private var isFlushScheduled = false
    private(set) var nextSequence: UInt64 = 0
    private(set) var batchesSent = 0
    private(set) var sendFailures = 0
    /// The bound TCP port (for tcp://*:0).
    let port: Int

    init?(loop: Loop, config: SimKVEventsConfig) {
        guard let ctx = ckv_context_new() else { return nil }
        guard let s = ckv_pub_open(ctx, config.endpoint), let b = ckv_buffer_new() else {
            ckv_context_free(ctx)
            return nil
        }
        self.loop = loop
        context = ctx
        socket = s
        buffer = b
        topic = Array(config.topic.utf8)
        port = Int(ckv_socket_bound_port(s))
    }

    deinit { assert(socket == nil, "KVEventPublisher dropped without close()") }

    func stored(hashes h: [UInt64], parent: UInt64?, tokenIDs t: [UInt32], blockSize: Int) {
        var e = ckv_event()
        e.kind = CKV_BLOCK_STORED
        e.hash_offset = UInt32(hashes.count)
        e.hash_count = UInt32(h.count)
        e.token_offset = UInt32(tokens.count)
        e.token_count = UInt32(t.count)
        e.block_size = UInt32(blockSize)
        e.has_parent = parent == nil ? 0 : 1
        e.parent = parent ?? 0
        hashes += h
        tokens += t
        add(e)
    }

    /// vLLM 0.32 sends one BlockRemoved per block; so do we.
    func removed(hashes h: [UInt64]) {
        for x in h {
            var e = ckv_event()
            e.kind = CKV_BLOCK_REMOVED
            e.hash_offset = UInt32(hashes.count)
            e.hash_count = 1
            hashes.append(x)
            add(e)
        }
    }

    func cleared() {
        var e = ckv_event()
        e.kind = CKV_ALL_BLOCKS_CLEARED
        add(e)
    }

    private func add(_ e: ckv_event) {
        events.append(e)
        if !isFlushScheduled {
            isFlushScheduled = true
            loop.runSoon(self)
        }
    }

    func runDeferred() {
        isFlushScheduled = false
        flush()
    }

    /// Sends what was added since the last batch.
    func flush() {
        guard let s = socket, !events.isEmpty else { return }
        defer {
            events.removeAll(keepingCapacity: true)
            hashes.removeAll(keepingCapacity: true)
            tokens.removeAll(keepingCapacity: true)
        }
        guard ckv_encode_batch(buffer, Loop.wallSeconds(), events, UInt32(events.count), hashes, tokens, 0) == CKV_OK else {
            sendFailures += 1
            return
        }
        // Like vLLM, the number is spent even when the send fails (a subscriber sees a gap).
        let seq = nextSequence
        nextSequence += 1
        if ckv_send_batch(s, topic, topic.count, seq, buffer.pointee.data, buffer.pointee.length) == 0 {
            batchesSent += 1
        } else {
            sendFailures += 1
        }
    }

    func close() {
        guard socket != nil else { return }
        flush()
        ckv_socket_close(socket)
        socket = nil
        if let c = context { ckv_context_free(c) }
        context = nil
        ckv_buffer_free(buffer)
    }
}

extension KVEventPublisher {
    /// What one prefill did to the prefix cache, as vLLM reports it: evictions first (vLLM frees
    /// before it allocates), then each run of newly stored blocks with its parent's hash and the
    /// ids it covers. `hashes` and `ids` are the prompt's (PrefixCache.blockHashes over `ids`).
    func publish(_ ins: PrefixCache.Insertion, hashes: [UInt64], ids: [UInt32], blockSize: Int) {
        if !ins.removed.isEmpty { removed(hashes: ins.removed) }
        for r in ins.stored {
            stored(hashes: Array(hashes[r]), parent: r.lowerBound == 0 ? nil : hashes[r.lowerBound - 1],
                   tokenIDs: Array(ids[(r.lowerBound * blockSize)..<(r.upperBound * blockSize)]), blockSize: blockSize)
        }
    }
}

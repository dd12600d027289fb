// KVEvent and KVEventBatch: one decoded vLLM KV-cache event batch as plain values (what
// KVEventDecoder produces from the wire and KVBlockIndex consumes). Format: docs/vllm-kv-events.md.
// Pure: no imports, no I/O.

/// One event of a batch.
public enum KVEvent: Equatable, Sendable {
    /// Consecutive full blocks were computed and cached. Block i holds
    /// `tokenIDs[i*blockSize ..< (i+1)*blockSize]`; `parent` is vLLM's hash of the block before
    /// the first one (nil at the start of a prompt). `isKeyed`: the blocks' identity depends on
    /// more than token ids (LoRA, multimodal inputs, cache_salt), so a plain prompt never matches.
    case stored(blockHashes: [UInt64], parent: UInt64?, tokenIDs: [UInt32], blockSize: Int, isKeyed: Bool)
    /// Blocks were evicted.
    case removed(blockHashes: [UInt64])
    /// The whole prefix cache was reset.
    case cleared
}

/// One published batch: its sequence number (frame 1) and its events in order.
public struct KVEventBatch: Equatable, Sendable {
    public var sequence: UInt64
    public var events: [KVEvent]

    public init(sequence: UInt64, events: [KVEvent]) {
        self.sequence = sequence
        self.events = events
    }
}

/// Why a received message was dropped (each has a counter).
public enum KVDecodeError: String, Error, Equatable, Sendable, CaseIterable {
    /// Not 3 frames, or the sequence frame is not 8 bytes.
    case framing
    /// The payload is not one complete msgpack value.
    case msgpack
    /// Not `[ts, [event...], rank?]`.
    case shape
    /// An event lacks a required field or has one of the wrong type.
    case event
    /// token_ids is not block_hashes x block_size ids of 32 bits.
    case tokens
    /// Out of memory while decoding.
    case memory
}

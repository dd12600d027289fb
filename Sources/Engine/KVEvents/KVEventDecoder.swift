// KVEventDecoder: turns one received ZeroMQ message (CKVEvents' ckv_message) or raw frames into a
// KVEventBatch, through the strict C decoder. Owns one ckv_batch (reused; freed in close()).
// Events of another medium (offloading tiers) are left out: the index tracks the device cache.
import CKVEvents

public final class KVEventDecoder {
    private var batch: UnsafeMutablePointer<ckv_batch>?

    public init() { batch = ckv_batch_new() }

    // Style E.1: the owner frees in close(); deinit frees too because a decoder is a plain value
    // holder with no callbacks that could still reference it.
    deinit { close() }

    public func close() {
        if let b = batch { ckv_batch_free(b) }
        batch = nil
    }

    /// Decodes a PUB message: [topic, sequence (8 bytes big-endian), payload].
    public func decode(frames: [[UInt8]]) -> Result<KVEventBatch, KVDecodeError> {
        guard frames.count == 3, frames[1].count == 8 else { return .failure(.framing) }
        let seq = frames[1].reduce(UInt64(0)) { ($0 << 8) | UInt64($1) }
        return frames[2].withUnsafeBufferPointer { p in decode(payload: UnsafeRawBufferPointer(p), sequence: seq) }
    }

    /// Decodes a message the subscriber just received.
    func decode(message m: UnsafePointer<ckv_message>) -> Result<KVEventBatch, KVDecodeError> {
        let msg = m.pointee
        guard msg.frame_count == 3, msg.frame_length.1 == 8, let data = msg.data else { return .failure(.framing) }
        let seqAt = data + msg.frame_offset.1
        var seq: UInt64 = 0
        for i in 0..<8 { seq = (seq << 8) | UInt64(seqAt[i]) }
        let payload = UnsafeRawBufferPointer(start: data + msg.frame_offset.2, count: msg.frame_length.2)
        return decode(payload: payload, sequence: seq)
    }

    public func decode(payload: UnsafeRawBufferPointer, sequence: UInt64) -> Result<KVEventBatch, KVDecodeError> {
        guard let b = batch else { return .failure(.memory) }
        let rc = ckv_decode_batch(payload.baseAddress?.assumingMemoryBound(to: UInt8.self), payload.count, b)
        switch rc {
        case CKV_OK: break
        case CKV_ERR_SHAPE: return .failure(.shape)
        case CKV_ERR_EVENT: return .failure(.event)
        case CKV_ERR_TOKENS: return .failure(.tokens)
        case CKV_ERR_NOMEM: return .failure(.memory)
        default: return .failure(.msgpack)
        }
        let c = b.pointee
        var events: [KVEvent] = []
        events.reserveCapacity(Int(c.event_count))
        for i in 0..<Int(c.event_count) {
            let e = c.events[i]
            if e.flags & CKV_FLAG_OTHER_MEDIUM != 0 { continue }
            // The C arrays stay nil until something is stored in them (a lone AllBlocksCleared).
            let hashes = e.hash_count == 0 ? [] : Array(UnsafeBufferPointer(start: c.hashes! + Int(e.hash_offset), count: Int(e.hash_count)))
            switch e.kind {
            case CKV_BLOCK_STORED:
                let tokens = e.token_count == 0 ? [] : Array(UnsafeBufferPointer(start: c.tokens! + Int(e.token_offset), count: Int(e.token_count)))
                events.append(.stored(blockHashes: hashes, parent: e.has_parent != 0 ? e.parent : nil, tokenIDs: tokens,
                                      blockSize: Int(e.block_size), isKeyed: e.flags & CKV_FLAG_KEYED != 0))
            case CKV_BLOCK_REMOVED:
                events.append(.removed(blockHashes: hashes))
            default:
                events.append(.cleared)
            }
        }
        return .success(KVEventBatch(sequence: sequence, events: events))
    }
}

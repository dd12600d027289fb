// KVEventDecoder over the strict C decoder: the multipart messages captured from the real vLLM
// 0.32.0 (Tests/fixtures/kv-events), round trips through the simulator's encoder, and garbage
// (truncations, bit flips, random bytes, wrong shapes) that must be refused, never crash.
import CKVEvents
import Testing

#if canImport(Glibc)
import Glibc
#endif

@testable import Engine

/// The frames of a fixture file: u32 BE frame count, then u32 BE length + bytes per frame.
func kvFixtureFrames(_ name: String, file: String = #filePath) -> [[UInt8]] {
    var parts = file.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)
    let path = parts.joined(separator: "/") + "/fixtures/kv-events/" + name
    guard let f = fopen(path, "rb") else { Issue.record("cannot open \(path)"); return [] }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        bytes += buf[0..<n]
    }
    func u32(_ at: Int) -> Int { bytes[at..<at + 4].reduce(0) { ($0 << 8) | Int($1) } }
    var frames: [[UInt8]] = []
    var o = 4
    for _ in 0..<u32(0) {
        let l = u32(o)
        frames.append(Array(bytes[(o + 4)..<(o + 4 + l)]))
        o += 4 + l
    }
    return frames
}

@Suite struct KVEventDecoderFixtureTests {
    let decoder = KVEventDecoder()

    @Test func completionBatchFromVLLM() throws {
        let b = try decoder.decode(frames: kvFixtureFrames("vllm032-seq0-completion-8-blocks.bin")).get()
        #expect(b.sequence == 0)
        #expect(b.events.count == 1)
        guard case .stored(let hashes, let parent, let tokens, let bs, let keyed) = b.events[0] else {
            Issue.record("not stored: \(b.events[0])")
            return
        }
        #expect(hashes.count == 8)
        #expect(hashes[0] == 6_711_354_591_601_026_278)
        #expect(hashes[7] == 114_973_025_110_538_855)
        #expect(parent == nil)
        #expect(bs == 128)
        #expect(tokens.count == 1024)
        #expect(Array(tokens.prefix(8)) == [1, 1223, 23, 530, 87, 1730, 387, 592])
        #expect(!keyed)
    }

    @Test func chatBatchStartsWithTheTemplateTokens() throws {
        let b = try decoder.decode(frames: kvFixtureFrames("vllm032-seq1-chat-8-blocks.bin")).get()
        #expect(b.sequence == 1)
        guard case .stored(_, _, let tokens, _, _) = b.events[0] else { Issue.record("not stored"); return }
        #expect(Array(tokens.prefix(3)) == [5, 206, 1223])
    }

    @Test func removalsThenStore() throws {
        let b = try decoder.decode(frames: kvFixtureFrames("vllm032-seq22-9-removed-13-stored.bin")).get()
        #expect(b.sequence == 22)
        #expect(b.events.count == 10)
        for e in b.events.prefix(9) {
            guard case .removed(let h) = e else { Issue.record("not removed: \(e)"); return }
            #expect(h.count == 1)
        }
        guard case .stored(let h, _, let t, _, _) = b.events[9] else { Issue.record("not stored"); return }
        #expect(h.count == 13 && t.count == 13 * 128)
    }

    @Test func storedWithParent() throws {
        let b = try decoder.decode(frames: kvFixtureFrames("vllm032-seq27-removed-stored-with-parent.bin")).get()
        #expect(b.sequence == 27)
        guard case .stored(let h, let parent, _, _, _) = b.events[1] else { Issue.record("not stored"); return }
        #expect(parent == 2_130_608_027_375_796_618)
        #expect(h == [16_616_825_567_223_358_626])
    }

    @Test func replayAnswerIsThePubMessageBehindADelimiter() throws {
        let f = kvFixtureFrames("vllm032-replay-seq27.bin")
        #expect(f.count == 4 && f[0].isEmpty)
        let b = try decoder.decode(frames: Array(f.dropFirst())).get()
        #expect(b.sequence == 27)
        let end = kvFixtureFrames("vllm032-replay-end.bin")
        #expect(end.count == 4 && end[2] == [UInt8](repeating: 0xff, count: 8) && end[3].isEmpty)
        #expect(decoder.decode(frames: Array(end.dropFirst())) == .failure(.msgpack))
    }

    @Test func allBlocksCleared() throws {
        let b = try decoder.decode(frames: kvFixtureFrames("vllm032-msgspec-all-cleared.bin")).get()
        #expect(b == KVEventBatch(sequence: 40, events: [.cleared]))
    }

    @Test func bytesHashesBecomeTheirLow64Bits() throws {
        let b = try decoder.decode(frames: kvFixtureFrames("vllm032-msgspec-bytes-hashes.bin")).get()
        // bytes(range(32)): the last 8 bytes are 24...31.
        let low: UInt64 = 0x1819_1a1b_1c1d_1e1f
        let low2: UInt64 = 0x3839_3a3b_3c3d_3e3f
        #expect(b.events == [
            .stored(blockHashes: [low, low2], parent: nil, tokenIDs: Array(1...8), blockSize: 4, isKeyed: false),
            .removed(blockHashes: [low2]),
        ])
    }

    @Test func wrongFraming() {
        let f = kvFixtureFrames("vllm032-seq27-removed-stored-with-parent.bin")
        #expect(decoder.decode(frames: Array(f.prefix(2))) == .failure(.framing))
        #expect(decoder.decode(frames: [f[0], [0, 1, 2], f[2]]) == .failure(.framing))
        #expect(decoder.decode(frames: f + [[]]) == .failure(.framing))
    }
}

/// Encodes with the simulator's C encoder (ckv_encode_batch).
func kvEncode(_ events: [KVEvent], ts: Double = 1.5, rank: Int64 = 0) -> [UInt8] {
    var cev: [ckv_event] = []
    var hashes: [UInt64] = []
    var tokens: [UInt32] = []
    for e in events {
        var c = ckv_event()
        switch e {
        case .stored(let h, let p, let t, let bs, _):
            c.kind = CKV_BLOCK_STORED
            c.hash_offset = UInt32(hashes.count)
            c.hash_count = UInt32(h.count)
            c.token_offset = UInt32(tokens.count)
            c.token_count = UInt32(t.count)
            c.block_size = UInt32(bs)
            c.has_parent = p == nil ? 0 : 1
            c.parent = p ?? 0
            hashes += h
            tokens += t
        case .removed(let h):
            c.kind = CKV_BLOCK_REMOVED
            c.hash_offset = UInt32(hashes.count)
            c.hash_count = UInt32(h.count)
            hashes += h
        case .cleared:
            c.kind = CKV_ALL_BLOCKS_CLEARED
        }
        cev.append(c)
    }
    let buf = ckv_buffer_new()!
    defer { ckv_buffer_free(buf) }
    let rc = ckv_encode_batch(buf, ts, cev, UInt32(cev.count), hashes, tokens, rank)
    precondition(rc == CKV_OK)
    return Array(UnsafeBufferPointer(start: buf.pointee.data, count: buf.pointee.length))
}

@Suite struct KVEventDecoderGarbageTests {
    let decoder = KVEventDecoder()

    func decode(_ payload: [UInt8]) -> Result<KVEventBatch, KVDecodeError> {
        payload.withUnsafeBytes { decoder.decode(payload: $0, sequence: 7) }
    }

    @Test func roundTripThroughTheSimulatorsEncoder() throws {
        let events: [KVEvent] = [
            .removed(blockHashes: [UInt64.max, 3]),
            .stored(blockHashes: [10, 11], parent: 9, tokenIDs: Array(100..<108), blockSize: 4, isKeyed: false),
            .stored(blockHashes: [12], parent: nil, tokenIDs: [UInt32.max, 0], blockSize: 2, isKeyed: false),
            .cleared,
        ]
        #expect(try decode(kvEncode(events)).get() == KVEventBatch(sequence: 7, events: events))
    }

    @Test func theEncoderWritesWhatVLLMWrites() {
        // Same event as the captured seq-27 store, re-encoded: byte-identical payload except ts.
        let f = kvFixtureFrames("vllm032-seq27-removed-stored-with-parent.bin")
        guard case .success(let b) = decoder.decode(frames: f) else { Issue.record("fixture"); return }
        let mine = kvEncode(b.events, ts: 1_795_820_352.47034)
        #expect(mine == f[2])
    }

    @Test func everyTruncationIsRefused() {
        for name in ["vllm032-seq27-removed-stored-with-parent.bin", "vllm032-seq0-completion-8-blocks.bin"] {
            let p = kvFixtureFrames(name)[2]
            for n in 0..<p.count {
                if case .success = decode(Array(p.prefix(n))) { Issue.record("\(name) truncated to \(n) decoded") }
            }
            #expect(decode(p + [0xc0]) == .failure(.msgpack))  // trailing bytes
        }
    }

    @Test func bitFlipsNeverCrash() {
        let p = kvFixtureFrames("vllm032-seq27-removed-stored-with-parent.bin")[2]
        var rng = TestRNG(seed: 13)
        var refused = 0
        for _ in 0..<3000 {
            var q = p
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                q[Int.random(in: 0..<q.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
            }
            if case .failure = decode(q) { refused += 1 }
        }
        #expect(refused > 0)
    }

    @Test func randomBytesAndHugeHeadersAreRefused() {
        var rng = TestRNG(seed: 7)
        for _ in 0..<3000 {
            let n = Int.random(in: 0..<64, using: &rng)
            let q = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = decode(q)
        }
        // array32 / map32 / bin32 headers claiming ~4 billion entries with nothing behind them.
        #expect(decode([0xdd, 0xff, 0xff, 0xff, 0xff]) == .failure(.msgpack))
        #expect(decode([0x92, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0xdd, 0x7f, 0xff, 0xff, 0xff]) == .failure(.msgpack))
        #expect(decode([0xc6, 0xff, 0xff, 0xff, 0xff, 1]) == .failure(.msgpack))
        // 40 nested arrays: deeper than msgpack-c's stack.
        #expect(decode([UInt8](repeating: 0x91, count: 40) + [0xc0]) == .failure(.msgpack))
    }

    @Test func wrongShapesAreRefused() throws {
        #expect(decode([0xc0]) == .failure(.shape))                       // nil
        #expect(decode([0x91, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0]) == .failure(.shape))  // [ts]
        #expect(decode([0x92, 0xa1, 0x78, 0x90]) == .failure(.shape))     // ["x", []]
        #expect(decode([0x92, 0x01, 0x91, 0x01]) == .failure(.event))      // [1, [1]]
        #expect(decode([0x92, 0x01, 0x91, 0x80]) == .failure(.event))      // [1, [{}]]
        // {"type": "BlockRemoved"} without block_hashes
        #expect(decode([0x92, 0x01, 0x91, 0x81, 0xa4] + Array("type".utf8) + [0xac] + Array("BlockRemoved".utf8))
                == .failure(.event))
        // An unknown event type is skipped, not fatal (a newer vLLM may add kinds).
        #expect(try decode([0x92, 0x01, 0x91, 0x81, 0xa4] + Array("type".utf8) + [0xa3] + Array("New".utf8)).get().events == [])
    }

    @Test func tokenCountMustMatchTheBlocks() {
        var p = kvEncode([.stored(blockHashes: [1, 2], parent: nil, tokenIDs: [1, 2, 3, 4], blockSize: 2, isKeyed: false)])
        // block_size 2 → 3 (fixint 0x02 → 0x03 after the "block_size" key).
        let key = Array("block_size".utf8)
        let at = (0..<(p.count - key.count)).first { Array(p[$0..<$0 + key.count]) == key }! + key.count
        #expect(p[at] == 0x02)
        p[at] = 0x03
        #expect(decode(p) == .failure(.tokens))
    }
}

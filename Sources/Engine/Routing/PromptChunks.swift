// PromptChunks: the prompt cut into fixed-size chunks of bytes, each hashed with its parent
// (chained, as vLLM chains KV block hashes and GIE's estimated prefix scorer chains its chunks),
// so chunk i's hash stands for the whole prefix up to and including it. Only full chunks count
// (GIE, and vLLM caches only full blocks). The model is not hashed in here (it is decided after
// the parse): `key(i, salt:)` mixes a per-model salt into each hash at lookup time, which keeps
// models apart in the index (a collision needs h ^ h' == s ^ s', chance 2^-64).
// The hash reads 8 bytes a step on four independent lanes (each multiply chain's latency bounds
// its lane): ~0.15 ns a byte here (release), so an 8 KB prompt costs ~1.2 µs. Not cryptographic: a collision only
// misroutes one request.
// Pure: no imports, no I/O.

public struct PromptChunks: Equatable, Sendable {
    /// Chained hash of each full chunk, in prompt order.
    public let hashes: [UInt64]
    /// The rendered prompt's length in bytes (or, when the render was cut at the routing limit,
    /// the caller's estimate of the whole): exact mode's ChunkBlockMap turns it into tokens.
    public let promptBytes: Int

    public init(hashes: [UInt64], promptBytes: Int = 0) {
        self.hashes = hashes
        self.promptBytes = promptBytes
    }

    public var count: Int { hashes.count }
    public var isEmpty: Bool { hashes.isEmpty }

    /// Hashes the full `chunkBytes`-sized chunks of `text`, at most `maxChunks` of them.
    /// `promptBytes`: the whole prompt's length when `text` is only its beginning.
    public init(_ text: UnsafeRawBufferPointer, chunkBytes: Int, maxChunks: Int, promptBytes: Int? = nil) {
        let size = max(8, chunkBytes)
        let n = min(text.count / size, max(0, maxChunks))
        self.promptBytes = max(text.count, promptBytes ?? 0)
        guard n > 0, let base = text.baseAddress else {
            hashes = []
            return
        }
        var out: [UInt64] = []
        out.reserveCapacity(n)
        var parent: UInt64 = 0x243F_6A88_85A3_08D3
        for c in 0..<n {
            let start = base + c * size
            var a = parent ^ 0x9E37_79B9_7F4A_7C15
            var b = parent &+ 0xC2B2_AE3D_27D4_EB4F
            var c = parent ^ 0x1656_67B1_9E37_79F9
            var d = parent &+ 0x27D4_EB2F_1656_67C5
            var i = 0
            while i + 32 <= size {
                a = Self.step(a, start.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                b = Self.step(b, start.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self))
                c = Self.step(c, start.loadUnaligned(fromByteOffset: i + 16, as: UInt64.self))
                d = Self.step(d, start.loadUnaligned(fromByteOffset: i + 24, as: UInt64.self))
                i += 32
            }
            while i + 8 <= size {
                a = Self.step(a, start.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                i += 8
            }
            while i < size {
                b = Self.step(b, UInt64(start.load(fromByteOffset: i, as: UInt8.self)))
                i += 1
            }
            parent = Self.finish(a ^ (b &* 0x9FB2_1C65_1E98_DF25) ^ (c &* 0xD6E8_FEB8_6659_FD93) ^ (d &* 0xFF51_AFD7_ED55_8CCD)
                                 ^ UInt64(size))
            out.append(parent)
        }
        hashes = out
    }

    public init(_ text: [UInt8], chunkBytes: Int, maxChunks: Int) {
        self = text.withUnsafeBytes { PromptChunks($0, chunkBytes: chunkBytes, maxChunks: maxChunks) }
    }

    /// The index key of chunk `i` for the model whose salt is `salt`.
    @inline(__always) public func key(_ i: Int, salt: UInt64) -> UInt64 { hashes[i] ^ salt }

    /// A model name's salt (FNV-1a, finished): computed per request, names are short.
    public static func salt(model: String?) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in (model ?? "").utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        return finish(h)
    }

    @inline(__always) static func step(_ h: UInt64, _ w: UInt64) -> UInt64 {
        let x = (h ^ w) &* 0xFF51_AFD7_ED55_8CCD
        return x ^ (x >> 32)
    }

    /// murmur3's 64-bit finalizer.
    @inline(__always) static func finish(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 33)) &* 0xFF51_AFD7_ED55_8CCD
        z = (z ^ (z >> 33)) &* 0xC4CE_B9FE_1A85_EC53
        return z ^ (z >> 33)
    }
}

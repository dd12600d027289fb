// SimSettings (fixed at startup), SimKnobs (changed live by POST /sim/config) and ModelCatalog
// (the served model names). Plain Sendable values; the server holds the only copies.

struct SimSettings: Sendable {
    var host: String
    var port: Int
    var models: [String]
    var maxModelLen: Int
    /// Used when a request has no max_tokens. Real vLLM uses max_model_len - prompt tokens instead,
    /// which with a random-weight model means long answers; a small default keeps benchmarks short.
    var defaultMaxTokens: Int
    var kvBlocks: Int
    var blockSize: Int
    var maxNumSeqs: Int
    var seed: UInt64
    /// Values per embedding (the real tiny model's hidden size is 128).
    var embeddingSize: Int = 128
    /// Whether /v1/embeddings accepts `dimensions` (a Matryoshka model) or refuses it, as the
    /// captured tiny model does.
    var isMatryoshka = false
    /// uvicorn closes idle keep-alive connections after 5 s; pools in front of vLLM meet that.
    var keepAliveTimeout: Duration
    /// vLLM's --enable-prefix-caching (on by default in vLLM 0.32): a block LRU as large as the KV cache.
    var prefixCaching = true
    /// Prefill cost of each uncached prompt token, in microseconds, added to the time to first
    /// token; prefills of one instance run one after another (PrefillLine). 0 = free.
    var prefillMicrosPerToken: Double = 0
}

/// Behaviour a test can change while the simulator runs.
struct SimKnobs: Sendable, Equatable {
    /// Fraction of valid generation and pooling requests answered 500 instead.
    var errorRate: Double
    /// Reported vllm:kv_cache_usage_perc when ≥ 0 (does not affect admission).
    var kvUsageOverride: Double
    var ttftMs: Double
    var itlMs: Double
    /// Close the socket after this many streamed tokens (0 = off).
    var disconnectAfterTokens: Int
    /// Stop sending after this many streamed tokens, keeping the socket open (0 = off).
    var stallAfterTokens: Int
    /// Accept new connections and close them at once; close kept-alive ones at their next
    /// non-/sim request without answering.
    var refuse: Bool
    /// With `refuse`: lift it after this many milliseconds (0 = until a /sim/config clears it,
    /// which then has to come over a connection opened before).
    var refuseMs: Double = 0
    /// The generated text starts with the prompt's text (the last message's for chat), cut into
    /// tokens of about 4 bytes, then goes on with the usual words: tests can put any character
    /// (a U+0000, an emoji) into an answer. Token counts do not change.
    var echo = false

    func json() -> [UInt8] {
        var w = ByteWriter(capacity: 256)
        w.write("{\"error_rate\":")
        w.write(pythonFloat: errorRate)
        w.write(",\"kv_usage_override\":")
        w.write(pythonFloat: kvUsageOverride)
        w.write(",\"ttft_ms\":")
        w.write(pythonFloat: ttftMs)
        w.write(",\"itl_ms\":")
        w.write(pythonFloat: itlMs)
        w.write(",\"disconnect_after_tokens\":")
        w.write(int: disconnectAfterTokens)
        w.write(",\"stall_after_tokens\":")
        w.write(int: stallAfterTokens)
        w.write(",\"refuse\":")
        w.write(refuse ? "true" : "false")
        w.write(",\"refuse_ms\":")
        w.write(pythonFloat: refuseMs)
        w.write(",\"echo\":")
        w.write(echo ? "true" : "false")
        w.write("}")
        return w.bytes
    }

    /// Applies the keys of a /sim/config object; all or nothing.
    mutating func apply(_ obj: JSONNode) -> APIError? {
        var next = self
        let keys = obj.keys
        for key in keys {
            let v = obj[key]
            let isNumber = v.kind == .integer || v.kind == .real
            let number = v.kind == .integer ? Double(v.integer) : v.real
            if isNumber && !(number.isFinite && number <= 1e9) { return .simControl("\(key) is out of range") }
            switch key {
            case "error_rate", "kv_usage_override", "ttft_ms", "itl_ms", "refuse_ms":
                guard isNumber else { return .simControl("\(key) must be a number") }
                switch key {
                case "error_rate":
                    guard number >= 0 && number <= 1 else { return .simControl("error_rate must be in 0...1") }
                    next.errorRate = number
                case "kv_usage_override":
                    guard number <= 1 else { return .simControl("kv_usage_override must be ≤ 1 (negative = off)") }
                    next.kvUsageOverride = number < 0 ? -1 : number
                case "ttft_ms":
                    guard number >= 0 else { return .simControl("ttft_ms must be ≥ 0") }
                    next.ttftMs = number
                case "refuse_ms":
                    guard number >= 0 else { return .simControl("refuse_ms must be ≥ 0") }
                    next.refuseMs = number
                default:
                    guard number >= 0 else { return .simControl("itl_ms must be ≥ 0") }
                    next.itlMs = number
                }
            case "disconnect_after_tokens", "stall_after_tokens":
                guard v.kind == .integer, v.integer >= 0 else { return .simControl("\(key) must be an integer ≥ 0") }
                if key == "disconnect_after_tokens" {
                    next.disconnectAfterTokens = Int(v.integer)
                } else {
                    next.stallAfterTokens = Int(v.integer)
                }
            case "refuse":
                guard v.kind == .bool else { return .simControl("refuse must be a boolean") }
                next.refuse = v.isTrue
            case "echo":
                guard v.kind == .bool else { return .simControl("echo must be a boolean") }
                next.echo = v.isTrue
            default:
                return .simControl("unknown key \(key)")
            }
        }
        // {"refuse_ms": n} alone means "refuse for n ms".
        if keys.contains("refuse_ms") && !keys.contains("refuse") { next.refuse = next.refuseMs > 0 }
        if !next.refuse { next.refuseMs = 0 }
        self = next
        return nil
    }
}

/// The names requests may use in `model`; the first answers requests that name none.
struct ModelCatalog: Sendable {
    let names: [String]
    /// JSON-escaped, ready to copy into bodies.
    let escapedNames: [[UInt8]]
    /// "a, b" for the unknown-model message.
    let aliases: String

    init(_ names: [String]) {
        self.names = names
        escapedNames = names.map(jsonEscapedBytes)
        aliases = names.joined(separator: ", ")
    }

    func index(of name: UnsafeRawBufferPointer) -> Int? {
        for (i, n) in names.enumerated() {
            var n = n
            let equal = n.withUTF8 { $0.count == name.count && memcmpEqual(UnsafeRawBufferPointer($0), name) }
            if equal { return i }
        }
        return nil
    }
}

@inline(__always)
func memcmpEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    guard a.count == b.count else { return false }
    for i in 0..<a.count where a[i] != b[i] { return false }
    return true
}

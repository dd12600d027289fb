// SimTokenizer and SimText: the simulator's deterministic stand-ins for a tokenizer and a model.
// A token is ~4 bytes of UTF-8 (cut on character boundaries), a completion prompt gets a BOS, and
// a chat message costs 4 template tokens plus its content (plus 2 for the generation prompt), so
// /tokenize, usage and the KV model all agree. Generated text is words from a fixed list picked by
// a hash of (seed, choice, step): the same seed gives the same text. Pure functions, stdlib only.
// Pure: no imports, no I/O.

enum SimTokenizer {
    static let bos = 1
    static let eos = 2
    static let systemRole = 4
    static let userRole = 5
    static let assistantRole = 6
    static let otherRole = 7
    static let newline = 206
    /// Ids of text chunks are hashed into [firstTextID, vocabSize).
    static let firstTextID = 1000
    static let vocabSize = 32000
    static let templateTokensPerMessage = 4
    static let generationPromptTokens = 2

    /// Number of tokens in `p`, folding its bytes into `hash` (FNV-1a) on the way.
    @inline(__always)
    static func scan(_ p: UnsafeRawBufferPointer, hash: inout UInt64) -> Int {
        let n = p.count
        guard n > 0 else { return 0 }
        var h = hash
        var count = 1
        var start = 0
        h = (h ^ UInt64(p[0])) &* fnvPrime
        var i = 1
        while i < n {
            let b = p[i]
            h = (h ^ UInt64(b)) &* fnvPrime
            if i - start >= 4 && (b & 0xC0) != 0x80 {
                count += 1
                start = i
            }
            i += 1
        }
        hash = h
        return count
    }

    static func count(_ p: UnsafeRawBufferPointer) -> Int {
        var h = fnvOffset
        return scan(p, hash: &h)
    }

    /// Calls `body` with each token's bytes, cut exactly as `scan` counts them.
    static func forEachChunk(_ p: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) {
        let n = p.count
        guard n > 0 else { return }
        var start = 0
        var i = 1
        while i < n {
            if i - start >= 4 && (p[i] & 0xC0) != 0x80 {
                body(UnsafeRawBufferPointer(rebasing: p[start..<i]))
                start = i
            }
            i += 1
        }
        body(UnsafeRawBufferPointer(rebasing: p[start..<n]))
    }

    static func chunkID(_ chunk: UnsafeRawBufferPointer) -> Int {
        var h = fnvOffset
        for b in chunk { h = (h ^ UInt64(b)) &* fnvPrime }
        return firstTextID + Int(h % UInt64(vocabSize - firstTextID))
    }

    static func roleID(_ role: String) -> Int {
        switch role {
        case "system", "developer": return systemRole
        case "user": return userRole
        case "assistant": return assistantRole
        default: return otherRole
        }
    }

    /// Detokenization: special tokens by name, text ids as a vocabulary word, unknown ids as "".
    static func text(of id: Int) -> String {
        switch id {
        case bos: return "<s>"
        case eos: return "</s>"
        case systemRole: return "<|system|>"
        case userRole: return "<|user|>"
        case assistantRole: return "<|assistant|>"
        case otherRole: return "<|tool|>"
        case newline: return "\n"
        case firstTextID..<vocabSize:
            return String(decoding: SimText.words[(id - firstTextID) % SimText.words.count], as: UTF8.self)
        default: return ""
        }
    }
}

let fnvOffset: UInt64 = 0xcbf2_9ce4_8422_2325
let fnvPrime: UInt64 = 0x0000_0100_0000_01b3

enum SimText {
    /// ASCII only and nothing JSON must escape, so words are copied into bodies as they are.
    static let words: [[UInt8]] = [
        " the", " of", " and", " to", " in", " a", " is", " that", " for", " it", " with", " as",
        " was", " on", " be", " at", " by", " this", " from", " or", " an", " which", " are",
        " model", " token", " stream", " cache", " request", " server", " value", " system",
        " data", " time", " first", " engine", " block", " queue", " latency", " batch", " prompt",
        "ing", "ed", "s", "er", "ly", ",", ".", " we", " can", " will", " each", " more", " one",
        " two", " new", " when", " where", " there", " not", " all", " some", " then", " run",
        " load",
    ].map { Array($0.utf8) }

    @inline(__always)
    static func word(seed: UInt64, choice: Int, step: Int) -> [UInt8] {
        let x = mix64(seed ^ (UInt64(truncatingIfNeeded: choice) &<< 40) ^ UInt64(truncatingIfNeeded: step))
        return words[Int(x % UInt64(words.count))]
    }
}

/// SplitMix64's finalizer: a good 64-bit mix for hashing small integers.
@inline(__always)
func mix64(_ v: UInt64) -> UInt64 {
    var z = v &+ 0x9e37_79b9_7f4a_7c15
    z = (z ^ (z &>> 30)) &* 0xbf58_476d_1ce4_e5b9
    z = (z ^ (z &>> 27)) &* 0x94d0_49bb_1331_11eb
    return z ^ (z &>> 31)
}

/// The simulator's only randomness source (ids, error injection, non-greedy text); seeded by --seed.
struct SplitMix64 {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z &>> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z &>> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z &>> 31)
    }

    /// Uniform in [0, 1).
    mutating func nextUnit() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }

    /// 16 lowercase hex digits, like vLLM's random request ids.
    mutating func hex16() -> [UInt8] {
        var v = next()
        var out = [UInt8](repeating: 0, count: 16)
        for i in stride(from: 15, through: 0, by: -1) {
            out[i] = hexDigit(UInt8(v & 0xF))
            v >>= 4
        }
        return out
    }
}

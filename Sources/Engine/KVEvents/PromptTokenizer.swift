// PromptTokenizer: a request's prompt as vLLM tokenizes it (chat template applied), for
// KVBlockIndex.overlap. Measured (docs/vllm-kv-events.md): the Engine cannot reproduce vLLM's
// tokenizer and template in-process, so it asks the backend's own POST /tokenize, sending the
// client's body as it is (vLLM ignores the generation fields and honours `messages`, `tools`,
// `add_generation_prompt`, `prompt`), and keeps the answers in a small LRU keyed by the body's
// hash, so repeats (retries, identical prompts, each worker's first sight) cost nothing.
// Owns: the cache; borrows the backend's pool for each fetch (UpstreamFetch). Loop-confined.
import Reactor

final class PromptTokenizer {
    private let loop: Loop
    private let timeout: Duration
    private var cache: TokenIDsCache
    private(set) var fetches = 0
    private(set) var cacheHits = 0
    private(set) var failures = 0

    /// `timeout`: how long a routing decision may wait for the ids before going on without
    /// the prefix term.
    init(loop: Loop, capacity: Int = 4096, timeout: Duration = .milliseconds(50)) {
        self.loop = loop
        self.timeout = timeout
        self.cache = TokenIDsCache(capacity: capacity)
    }

    /// Calls `done` with the prompt's token ids (nil when the backend cannot say in time), at
    /// once on a cache hit, else after `backend`'s /tokenize answers.
    func tokenIDs(body: [UInt8], backend: Backend, done: @escaping ([UInt32]?) -> Void) {
        let key = TokenIDsCache.key(body)
        if let ids = cache.lookup(key) {
            cacheHits += 1
            done(ids)
            return
        }
        fetches += 1
        var h = HTTPHeaders()
        h.add("content-type", "application/json")
        if let k = backend.apiKey { h.add("authorization", "Bearer " + k) }
        UpstreamFetch(loop: loop, pool: backend.pool, path: "/tokenize", headers: h, timeout: timeout,
                      maxBytes: 8 << 20, method: "POST", body: body) { [weak self] status, reply in
            guard let self else { return }
            guard status == 200, let ids = TokenIDsCache.parseTokens(reply) else {
                self.failures += 1
                done(nil)
                return
            }
            self.cache.insert(key, ids)
            done(ids)
        }
    }
}

/// The LRU of /tokenize answers and the answer's parser. Pure: no imports, no I/O.
struct TokenIDsCache {
    let capacity: Int
    private var entries: [UInt64: (ids: [UInt32], tick: UInt64)] = [:]
    private var tick: UInt64 = 0

    init(capacity: Int) { self.capacity = max(1, capacity) }

    var count: Int { entries.count }

    /// FNV-1a over the body, finalized (a 64-bit key: a collision would only misplace one
    /// request's prefix score, never its answer).
    static func key(_ body: [UInt8]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in body { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        return h ^ (h >> 29)
    }

    mutating func lookup(_ key: UInt64) -> [UInt32]? {
        guard let e = entries[key] else { return nil }
        tick += 1
        entries[key] = (e.ids, tick)
        return e.ids
    }

    mutating func insert(_ key: UInt64, _ ids: [UInt32]) {
        tick += 1
        entries[key] = (ids, tick)
        if entries.count > capacity {
            // Evict the older half in one sweep: O(n) once per capacity/2 inserts.
            let cut = entries.values.map(\.tick).sorted()[entries.count / 2]
            entries = entries.filter { $0.value.tick >= cut }
        }
    }

    /// The `tokens` array of a /tokenize answer (`{"count":N,"max_model_len":M,"tokens":[...],
    /// "token_strs":null}`); nil when it is not there or holds anything but 32-bit unsigned ints.
    static func parseTokens(_ body: [UInt8]) -> [UInt32]? {
        let key = Array("\"tokens\"".utf8)
        guard body.count >= key.count else { return nil }
        var i = 0
        var found = -1
        while i + key.count <= body.count {
            if body[i] == key[0] && Array(body[i..<(i + key.count)]) == key {
                found = i + key.count
                break
            }
            i += 1
        }
        guard found >= 0 else { return nil }
        i = found
        func skipSpace() { while i < body.count, body[i] == 0x20 || body[i] == 0x0a || body[i] == 0x0d || body[i] == 0x09 { i += 1 } }
        skipSpace()
        guard i < body.count, body[i] == UInt8(ascii: ":") else { return nil }
        i += 1
        skipSpace()
        guard i < body.count, body[i] == UInt8(ascii: "[") else { return nil }
        i += 1
        var out: [UInt32] = []
        skipSpace()
        if i < body.count, body[i] == UInt8(ascii: "]") { return out }
        while i < body.count {
            skipSpace()
            var v: UInt64 = 0
            var digits = 0
            while i < body.count, body[i] >= 0x30, body[i] <= 0x39 {
                v = v * 10 + UInt64(body[i] - 0x30)
                digits += 1
                guard v <= UInt64(UInt32.max), digits <= 10 else { return nil }
                i += 1
            }
            guard digits > 0 else { return nil }
            out.append(UInt32(v))
            skipSpace()
            guard i < body.count else { return nil }
            if body[i] == UInt8(ascii: "]") { return out }
            guard body[i] == UInt8(ascii: ",") else { return nil }
            i += 1
        }
        return nil
    }
}

// PromptTokenizer: a request's prompt as vLLM tokenizes it (chat template applied), for exact
// mode's ChunkBlockMap. Measured (docs/vllm-kv-events.md): the Engine cannot reproduce vLLM's
// tokenizer and template in-process, so it asks the backend's own POST /tokenize, sending the
// client's body as it is (vLLM ignores the generation fields and honours `messages`, `tools`,
// `add_generation_prompt`, `prompt`). Only prompts whose prefix the map does not know are sent
// (BackendRouting.shouldLearn); the map keeps what later requests need from the answer (the
// prefix's block hashes), so no cache of whole answers is kept here.
// Borrows the backend's pool for each fetch (UpstreamFetch). Loop-confined.
import Reactor

final class PromptTokenizer {
    private let loop: Loop
    private let timeout: Duration
    private(set) var fetches = 0
    private(set) var failures = 0

    /// `timeout`: how long a routing decision may wait for the ids before going on without
    /// the prefix term.
    init(loop: Loop, timeout: Duration = .milliseconds(50)) {
        self.loop = loop
        self.timeout = timeout
    }

    /// Calls `done` with the prompt's token ids (nil when the backend cannot say in time) after
    /// `backend`'s /tokenize answers.
    func tokenIDs(body: [UInt8], backend: Backend, done: @escaping ([UInt32]?) -> Void) {
        fetches += 1
        var h = HTTPHeaders()
        h.add("content-type", "application/json")
        if let k = backend.apiKey { h.add("authorization", "Bearer " + k) }
        UpstreamFetch(loop: loop, pool: backend.pool, path: "/tokenize", headers: h, timeout: timeout,
                      maxBytes: 8 << 20, method: "POST", body: body) { [weak self] status, reply in
            guard let self else { return }
            guard status == 200, let ids = TokenizeAnswer.parseTokens(reply) else {
                self.failures += 1
                done(nil)
                return
            }
            done(ids)
        }
    }
}

/// The /tokenize answer's parser. Pure: no imports, no I/O.
enum TokenizeAnswer {
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

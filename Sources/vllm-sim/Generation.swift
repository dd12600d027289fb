// Generation: one admitted /v1/completions, /v1/chat/completions or /v1/responses request while
// it waits, runs and answers. Loop-confined, non-Sendable. Owns its pacing Timer (closed in `finish`); holds its
// connection strongly until it finishes (the connection holds it back through `context`, and
// `finish` breaks that cycle). SimServer drives it: queueing, timers, aborts; this file holds the
// per-request arithmetic, Generation+Render.swift and Generation+Responses.swift its bytes.

import Reactor

/// Pacing snapshot taken when the request starts running (later /sim/config changes do not
/// affect a running request).
struct Pacing {
    var ttftNanos: UInt64
    var itlNanos: UInt64
    var disconnectAfter: Int
    var stallAfter: Int

    init(_ k: SimKnobs) {
        ttftNanos = nanos(milliseconds: k.ttftMs)
        itlNanos = nanos(milliseconds: k.itlMs)
        disconnectAfter = k.disconnectAfterTokens
        stallAfter = k.stallAfterTokens
    }

    var isInstant: Bool { ttftNanos == 0 && itlNanos == 0 }
}

final class Generation {
    enum Phase: Equatable {
        /// In the scheduler's FIFO. Next: .running, .finished (client left)
        case waiting
        /// Admitted; a timer or the current call produces its tokens. Next: .stalled,
        /// .blockedOnWrite, .closing, .finished
        case running
        /// --stall-after-tokens reached: holds its slot and blocks, sends nothing more.
        /// Next: .finished (client left)
        case stalled
        /// The client's output buffer is above the high-water mark. Next: .running (drained), .finished
        case blockedOnWrite
        /// --disconnect-after-tokens reached: closing once the output is flushed. Next: .finished
        case closing
        /// Answered or aborted; no more events.
        case finished
    }

    let id: GenerationID
    let kind: GenerationKind
    let isStream: Bool
    let includeUsage: Bool
    let continuousUsage: Bool
    let textSeed: UInt64
    /// Per choice (prompt-major, n choices per prompt).
    let promptPerChoice: [Int]
    let tokensPerChoice: [Int]
    let stopsPerChoice: [Bool]
    /// Steps until the longest choice is done; one token per choice per step.
    let steps: Int
    let usagePromptTokens: Int
    let completionTokens: Int
    let maxTokensParam: Int
    /// KV blocks at the longest, reserved at admission.
    let reservedBlocks: Int
    /// "chatcmpl-…" / "cmpl-…" / "resp_…", JSON-escaped.
    let responseID: [UInt8]
    /// /v1/responses only: the request fields its answer repeats, and its message's "msg_…" id.
    let responsesEcho: ResponsesEcho?
    let itemID: [UInt8]
    let created: Int
    /// JSON-escaped model name.
    let model: [UInt8]
    /// The echo knob's first tokens (JSON-escaped pieces of the prompt's text); empty when off.
    let echoTokens: [[UInt8]]
    let arrivedNanos: UInt64

    /// Chained hashes of the prompt's full KV blocks (PrefixCache), set by SimServer.
    var promptBlocks: [UInt64] = []
    /// The prompt's token ids the blocks cover (published with BlockStored).
    var promptIDs: [UInt32] = []
    var connection: HTTPServerConnection?
    var phase: Phase = .waiting
    var pacing: Pacing
    var startedNanos: UInt64 = 0
    var firstTokenNanos: UInt64 = 0
    var lastTokenNanos: UInt64 = 0
    var emittedSteps = 0
    var timer: Timer?
    /// `data: {"id":…,"choices":[` for streams, built on first use.
    private var prefixCache: [UInt8]?

    init(id: GenerationID, request r: GenerationRequest, textSeed: UInt64, settings: SimSettings,
         responseID: [UInt8], model: [UInt8], created: Int, now: UInt64, pacing: Pacing,
         responsesEcho: ResponsesEcho? = nil, itemID: [UInt8] = []) {
        self.id = id
        kind = r.kind
        isStream = r.isStream
        includeUsage = r.includeUsage
        continuousUsage = r.continuousUsage
        self.textSeed = textSeed
        var prompts: [Int] = []
        var tokens: [Int] = []
        var stops: [Bool] = []
        let choices = r.promptTokens.count * r.n
        prompts.reserveCapacity(choices)
        tokens.reserveCapacity(choices)
        stops.reserveCapacity(choices)
        var blocks = 0
        for p in r.promptTokens {
            let room = settings.maxModelLen - p
            // Without max_tokens the simulated model "emits EOS" after --default-max-tokens: a
            // "stop"; a limit (the request's or the context's) that cuts it is a "length".
            let wanted = r.maxTokens ?? settings.defaultMaxTokens
            let t = max(1, min(wanted, room))
            let stop = r.maxTokens == nil && settings.defaultMaxTokens <= room
            for _ in 0..<r.n {
                prompts.append(p)
                tokens.append(t)
                stops.append(stop)
                blocks += ceilDiv(p + t, settings.blockSize)
            }
        }
        promptPerChoice = prompts
        tokensPerChoice = tokens
        stopsPerChoice = stops
        steps = tokens.max() ?? 1
        usagePromptTokens = r.promptTokens.reduce(0, +)
        completionTokens = tokens.reduce(0, +)
        maxTokensParam = r.maxTokens ?? min(settings.defaultMaxTokens, settings.maxModelLen)
        reservedBlocks = blocks
        self.responseID = responseID
        self.responsesEcho = responsesEcho
        self.itemID = itemID
        self.created = created
        self.model = model
        echoTokens = r.echoText.map(Generation.echoPieces) ?? []
        arrivedNanos = now
        self.pacing = pacing
    }

    /// Tokens per choice produced by `now`: counted for streams, derived from the clock for
    /// plain answers (which produce nothing visible until the end).
    func producedSteps(now: UInt64) -> Int {
        switch phase {
        case .waiting: return 0
        case .finished: return steps
        case .running, .stalled, .blockedOnWrite, .closing:
            if isStream { return emittedSteps }
            let elapsed = now &- startedNanos
            if elapsed < pacing.ttftNanos { return 0 }
            if pacing.itlNanos == 0 { return steps }
            return min(steps, 1 + Int((elapsed - pacing.ttftNanos) / pacing.itlNanos))
        }
    }

    func completionTokens(afterSteps s: Int) -> Int {
        if tokensPerChoice.count == 1 { return min(s, tokensPerChoice[0]) }
        var total = 0
        for t in tokensPerChoice { total += min(s, t) }
        return total
    }

    /// KV blocks held now: prompt plus tokens so far, per sequence.
    func heldBlocks(now: UInt64, blockSize: Int) -> Int {
        let s = producedSteps(now: now)
        var total = 0
        for i in 0..<promptPerChoice.count {
            total += ceilDiv(promptPerChoice[i] + min(s, tokensPerChoice[i]), blockSize)
        }
        return total
    }

    /// The text of token `step` (1-based) of `choice`, JSON-escaped: the echoed prompt first, then words.
    @inline(__always)
    func tokenText(choice: Int, step: Int) -> [UInt8] {
        step <= echoTokens.count ? echoTokens[step - 1] : SimText.word(seed: textSeed, choice: choice, step: step)
    }

    /// `text` cut into tokens of 4 bytes, never inside a UTF-8 sequence, each JSON-escaped.
    static func echoPieces(_ text: [UInt8]) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var at = 0
        while at < text.count {
            var end = min(at + 4, text.count)
            while end < text.count && text[end] & 0xC0 == 0x80 { end += 1 }
            var w = ByteWriter(capacity: 2 * (end - at) + 8)
            text[at..<end].withUnsafeBytes { w.write(jsonEscaped: $0) }
            out.append(w.bytes)
            at = end
        }
        return out
    }

    var finishedReason: FinishedReason { stopsPerChoice.allSatisfy { $0 } ? .stop : .length }

    var streamPrefix: [UInt8] {
        if let p = prefixCache { return p }
        var w = ByteWriter(capacity: 160)
        w.write("data: {\"id\":\"")
        w.write(responseID)
        w.write(kind == .chat ? "\",\"object\":\"chat.completion.chunk\",\"created\":" : "\",\"object\":\"text_completion\",\"created\":")
        w.write(int: created)
        w.write(",\"model\":\"")
        w.write(model)
        w.write("\",\"choices\":[")
        prefixCache = w.bytes
        return w.bytes
    }
}

/// Milliseconds from the command line or /sim/config, clamped to 0...10⁹ ms (11 days) so the
/// arithmetic on them cannot overflow.
func nanos(milliseconds ms: Double) -> UInt64 {
    guard ms.isFinite, ms > 0 else { return 0 }
    return UInt64(min(ms, 1e9) * 1e6)
}

@inline(__always)
func ceilDiv(_ a: Int, _ b: Int) -> Int { (a + b - 1) / b }

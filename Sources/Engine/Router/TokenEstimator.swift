// TokenEstimator: a cheap prompt-size guess from UTF-8 byte counts, for model routing (issue 4).
// Pure value, standard library only; the request scanner (CRequestScan) measures a body into a
// PromptSize. Nothing here tokenizes: ~4 bytes per token is right for English BPE vocabularies and
// errs high for CJK (3 bytes per character), which is the safe side for "route long prompts to
// the large model". Token-id prompts are counted exactly.
// Pure: no imports, no I/O.

/// What was measured in a request body: text bytes, message count, and token ids given verbatim.
public struct PromptSize: Equatable, Sendable {
    /// UTF-8 bytes of prompt text (completion `prompt` strings, chat `content` text parts).
    public var textBytes: Int
    /// Chat messages (0 for a completion).
    public var messages: Int
    /// Token ids given as integers (`prompt: [1, 2, 3]` or `[[1, 2], [3]]`); nil when there were none.
    public var tokenIDs: Int?

    public init(textBytes: Int, messages: Int, tokenIDs: Int? = nil) {
        self.textBytes = textBytes
        self.messages = messages
        self.tokenIDs = tokenIDs
    }
}

public struct TokenEstimator: Equatable, Sendable {
    /// Average UTF-8 bytes per token; values ≤ 0 fall back to 4.
    public var bytesPerToken: Double = 4.0
    /// Tokens a chat template adds per message (role markers, separators).
    public var perMessageOverhead: Int = 4

    public init(bytesPerToken: Double = 4.0, perMessageOverhead: Int = 4) {
        self.bytesPerToken = bytesPerToken
        self.perMessageOverhead = perMessageOverhead
    }

    /// `max(1, ⌊textBytes / bytesPerToken⌋)` for non-empty text (0 for none, as the original's
    /// `len // 4`), plus `perMessageOverhead` per message.
    public func estimate(textBytes: Int, messages: Int) -> Int {
        let per = bytesPerToken > 0 && bytesPerToken.isFinite ? bytesPerToken : 4.0
        var text = 0
        if textBytes > 0 {
            let q = (Double(textBytes) / per).rounded(.down)
            // Int(q) traps above Int.max; a body that large never gets here, but stay total.
            text = q >= Double(Int.max / 2) ? Int.max / 2 : max(1, Int(q))
        }
        return text + max(0, messages) * max(0, perMessageOverhead)
    }

    /// Token ids count exactly; text adds its estimate; messages add their overhead.
    public func estimate(_ size: PromptSize) -> Int {
        (size.tokenIDs ?? 0) + estimate(textBytes: size.textBytes, messages: size.messages)
    }
}

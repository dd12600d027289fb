// UpstreamJSON: what the Engine reads from one upstream JSON document (a response body or one
// SSE event's data), parsed by simdjson through CRequestScan: any valid spacing and escapes work,
// invalid JSON and invalid UTF-8 are told apart from objects. No byte-pattern matching of JSON.
import CRequestScan

public struct UpstreamJSON: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        case object
        /// SSE's `[DONE]` marker.
        case done
        case invalid
        case notObject
    }

    public var kind: Kind
    /// The object has an `error` key.
    public var hasError = false
    /// `choices` is an array (and whether it is empty: a usage-only chunk).
    public var hasChoices = false
    public var choicesEmpty = false
    /// Token counts from `usage`, when it is an object with both integers.
    public var usage: Usage?
    /// The `object` field, when it names one of vLLM's answer shapes.
    public var object: ObjectKind = .other
    /// Choices present and finished (finish_reason not null), as bit sets of their index (0-63);
    /// `choicesBeyond`: some index outside 0-63 (or not an integer).
    public var choicesSeen: UInt64 = 0
    public var choicesFinished: UInt64 = 0
    public var choicesBeyond = false
    /// The top-level `system_fingerprint`'s JSON text (nil when absent or null).
    public var fingerprint: [UInt8]?
    /// Top-level `id` (string) and `created` (number) members: as many as ReplyStamp.spans(ofJSON:)
    /// finds in these bytes.
    public var identityMembers = 0

    public enum ObjectKind: Equatable, Sendable {
        case chatCompletion, textCompletion, chatCompletionChunk, other
    }

    /// A whole non-streamed answer of this endpoint: an object of the right `object` kind with a
    /// `choices` array (vLLM's shape for /v1/chat/completions and /v1/completions).
    public func isAnswer(for kind: EndpointKind) -> Bool {
        guard self.kind == .object, hasChoices, !hasError else { return false }
        return object == (kind == .chat ? .chatCompletion : .textCompletion)
    }

    public struct Usage: Equatable, Sendable {
        public var prompt: Int
        public var completion: Int
        public init(prompt: Int, completion: Int) {
            self.prompt = prompt
            self.completion = completion
        }
    }

    public init(kind: Kind) { self.kind = kind }

    /// A usage-only stream chunk (`"choices": []` with usage): stripped for clients that did not ask.
    public var isUsageOnly: Bool { kind == .object && hasChoices && choicesEmpty && usage != nil }

    public static func inspect(_ bytes: UnsafeRawBufferPointer) -> UpstreamJSON {
        var r = rs_upstream_json()
        rs_inspect_upstream(bytes.baseAddress, bytes.count, &r)
        var out: UpstreamJSON
        switch r.kind {
        case Int32(RS_J_OBJECT): out = UpstreamJSON(kind: .object)
        case Int32(RS_J_DONE): return UpstreamJSON(kind: .done)
        case Int32(RS_J_NOT_OBJECT): return UpstreamJSON(kind: .notObject)
        default: return UpstreamJSON(kind: .invalid)
        }
        out.hasError = r.has_error != 0
        out.hasChoices = r.has_choices != 0
        out.choicesEmpty = r.choices_empty != 0
        switch r.object_kind {
        case 1: out.object = .chatCompletion
        case 2: out.object = .textCompletion
        case 3: out.object = .chatCompletionChunk
        default: out.object = .other
        }
        out.choicesSeen = UInt64(r.choices_seen)
        out.choicesFinished = UInt64(r.choices_finished)
        out.choicesBeyond = r.choices_beyond != 0
        out.identityMembers = Int(r.identity_members)
        if r.has_fingerprint != 0 {
            out.fingerprint = Array(UnsafeRawBufferPointer(start: r.fingerprint, count: r.fingerprint_len))
        }
        if r.has_usage != 0 {
            out.usage = Usage(prompt: Int(clamping: r.prompt_tokens), completion: Int(clamping: r.completion_tokens))
        }
        return out
    }

    public static func inspect(_ bytes: [UInt8]) -> UpstreamJSON { bytes.withUnsafeBytes { inspect($0) } }
}

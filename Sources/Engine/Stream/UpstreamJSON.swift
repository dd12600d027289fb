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
        return UpstreamJSON(Reading(r))
    }

    /// `inspect`, and for an object also where its top-level identity values are: what
    /// `ReplyStamp.spans(ofJSON:)` finds in the same bytes, read from this parse
    /// (rs_inspect_upstream_identity), so an answer that is stored is parsed once; nil for
    /// anything but an object.
    public static func inspect(_ bytes: [UInt8], identitySpans: inout [Range<Int>]?) -> UpstreamJSON {
        var r = rs_upstream_json()
        let spans = bytes.withUnsafeBytes { b in
            ReplyStamp.spans { buf, n in rs_inspect_upstream_identity(b.baseAddress, b.count, &r, buf, ReplyStamp.maxSpans, &n) }
        }
        let j = UpstreamJSON(Reading(r))
        identitySpans = j.kind == .object ? spans : nil
        return j
    }

    init(_ r: Reading) {
        self.init(kind: r.kind)
        guard kind == .object else { return }
        hasError = r.hasError
        hasChoices = r.hasChoices
        choicesEmpty = r.choicesEmpty
        object = r.object
        choicesSeen = r.choicesSeen
        choicesFinished = r.choicesFinished
        choicesBeyond = r.choicesBeyond
        identityMembers = r.identityMembers
        fingerprint = r.fingerprint.map { Array($0) }
        usage = r.usage
    }

    /// What the reader (rs_inspect_upstream) wrote about one document, read field by field where
    /// it lies: a plain value, no allocation (the relay's per-event path). `fingerprint` points
    /// into the reader's per-thread buffer: use it before the next read of the same kind.
    struct Reading {
        private let r: rs_upstream_json

        init(_ r: rs_upstream_json) { self.r = r }

        var kind: Kind {
            switch r.kind {
            case Int32(RS_J_OBJECT): return .object
            case Int32(RS_J_DONE): return .done
            case Int32(RS_J_NOT_OBJECT): return .notObject
            default: return .invalid
            }
        }
        var hasError: Bool { r.has_error != 0 }
        var hasChoices: Bool { r.has_choices != 0 }
        var choicesEmpty: Bool { r.choices_empty != 0 }
        var object: ObjectKind {
            switch r.object_kind {
            case 1: return .chatCompletion
            case 2: return .textCompletion
            case 3: return .chatCompletionChunk
            default: return .other
            }
        }
        var choicesSeen: UInt64 { UInt64(r.choices_seen) }
        var choicesFinished: UInt64 { UInt64(r.choices_finished) }
        var choicesBeyond: Bool { r.choices_beyond != 0 }
        var identityMembers: Int { Int(r.identity_members) }
        var usage: Usage? {
            r.has_usage != 0 ? Usage(prompt: Int(clamping: r.prompt_tokens), completion: Int(clamping: r.completion_tokens)) : nil
        }
        var fingerprint: UnsafeRawBufferPointer? {
            r.has_fingerprint != 0 ? UnsafeRawBufferPointer(start: r.fingerprint, count: r.fingerprint_len) : nil
        }
        /// UpstreamJSON.isUsageOnly.
        var isUsageOnly: Bool { kind == .object && hasChoices && choicesEmpty && r.has_usage != 0 }
        /// A stream chunk of vLLM's (chat.completion.chunk or text_completion) with no error, no
        /// usage, no finished choice and every choice index in 0-63 (a fingerprint is read only
        /// where a choice finishes or usage comes): one token's chunk, which only adds choices.
        var isPlainChunk: Bool {
            r.kind == Int32(RS_J_OBJECT) && (r.has_error | r.has_usage | r.choices_beyond) == 0 && r.choices_finished == 0
                && (r.object_kind == 3 || r.object_kind == 2)
        }
    }

    /// One document, as `Reading` (its fingerprint valid until the next `read`).
    static func read(_ bytes: UnsafeRawBufferPointer) -> Reading {
        var r = rs_upstream_json()
        rs_inspect_upstream(bytes.baseAddress, bytes.count, &r)
        return Reading(r)
    }

    /// The documents at `spans` of `bytes` (in order, not overlapping), read in one call
    /// (rs_inspect_upstream_many: one copy of `bytes`, one parse of the batch's structure when
    /// there are several, each document still fully validated): `body` gets what `read` would give
    /// for each, valid inside `body` only, and whether they were read as one document stream.
    static func withReadings<R>(of spans: [Range<Int>], in bytes: UnsafeRawBufferPointer,
                                _ body: (UnsafeBufferPointer<Reading>, _ streamed: Bool) -> R) -> R {
        spans.withUnsafeBufferPointer { withReadings(of: $0, in: bytes, body) }
    }

    static func withReadings<R>(of spans: UnsafeBufferPointer<Range<Int>>, in bytes: UnsafeRawBufferPointer,
                                _ body: (UnsafeBufferPointer<Reading>, _ streamed: Bool) -> R) -> R {
        let n = spans.count
        return withScratch(of: rs_span.self, n) { cs in
            for (i, r) in spans.enumerated() { cs.initializeElement(at: i, to: rs_span(start: r.lowerBound, len: r.count)) }
            return withScratch(of: rs_upstream_json.self, n) { raw in
                let streamed = rs_inspect_upstream_many(bytes.baseAddress, bytes.count, cs.baseAddress, n, raw.baseAddress)
                // Reading is a wrapper of one rs_upstream_json: the same layout.
                return raw.withMemoryRebound(to: Reading.self) { body(UnsafeBufferPointer($0), streamed != 0) }
            }
        }
    }

    /// Room for `n` values of a plain C type: on the stack up to 1 KiB, else from malloc.
    /// (withUnsafeTemporaryAllocation past 1 KiB asks the runtime whether the stack has room and
    /// then takes aligned memory from the heap: that pair cost more than malloc and free.)
    private static func withScratch<T, R>(of: T.Type, _ n: Int, _ body: (UnsafeMutableBufferPointer<T>) -> R) -> R {
        if n * MemoryLayout<T>.stride <= 1024 {
            return withUnsafeTemporaryAllocation(of: T.self, capacity: n, body)
        }
        let heap = UnsafeMutableBufferPointer<T>.allocate(capacity: n)
        defer { heap.deallocate() }
        return body(heap)
    }

    public static func inspect(_ bytes: [UInt8]) -> UpstreamJSON { bytes.withUnsafeBytes { inspect($0) } }

    /// False when `bytes` (JSON, or SSE events) certainly hold no `system_fingerprint` key at any
    /// depth: not the key quoted, and no `\u` escape that could spell it (rs_may_hold_key). Then
    /// `inspect` would report no fingerprint, and a caller that only wants that can skip the parse.
    static func mayHoldFingerprint(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let key: StaticString = "system_fingerprint"
        return rs_may_hold_key(bytes.baseAddress, bytes.count, UnsafeRawPointer(key.utf8Start), key.utf8CodeUnitCount) != 0
    }
}

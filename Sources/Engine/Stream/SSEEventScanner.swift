// SSEEventScanner: splits a relayed SSE byte stream into whole events, whatever the read
// boundaries, and reads each event's `data` with the JSON parser (UpstreamJSON): usage, error
// events, [DONE], invalid payloads. It hands back whole events only (a partial event is held
// until it completes), twice when asked: every event, and every event but the usage-only chunk
// (the Engine always asks vLLM for usage; clients that did not ask do not get that chunk).
// Events after [DONE] are dropped. Pure value: no I/O. Lines end in LF or CRLF; an empty line
// ends an event.
// Pure: no imports, no I/O.

public struct SSEEventScanner: Sendable {
    /// Bytes of the event whose end has not arrived yet.
    private var partial: [UInt8] = []
    /// Token counts from the last event that carried usage.
    public private(set) var usage: UpstreamJSON.Usage?
    /// An event carried an `error` object (vLLM's mid-stream error).
    public private(set) var sawError = false
    public private(set) var sawDone = false
    /// Events whose data was neither [DONE] nor a JSON object, or longer than the limit.
    public private(set) var invalidEvents = 0
    /// Events after [DONE] (dropped: nothing legitimate follows it), and every byte dropped
    /// after it (whole events and any unfinished tail).
    public private(set) var eventsAfterDone = 0
    public private(set) var bytesDroppedAfterDone = 0
    public private(set) var usageEventsDropped = 0
    /// Stream chunks' choices seen and finished (bit sets by index), events that are objects but
    /// not a stream chunk of vLLM's (chat.completion.chunk or text_completion), and choice indexes
    /// out of range: what decides whether the stream is a whole answer worth keeping.
    public private(set) var choicesSeen: UInt64 = 0
    public private(set) var choicesFinished: UInt64 = 0
    public private(set) var foreignEvents = 0
    /// [DONE], no error event, nothing invalid or foreign, and every choice that appeared finished.
    public var isWholeAnswer: Bool {
        sawDone && !sawError && invalidEvents == 0 && foreignEvents == 0 && choicesSeen != 0 && choicesSeen == choicesFinished
    }
    /// Where the last `feed` put usage-only chunks in its `all` (byte ranges of that array).
    public private(set) var usageRangesInAll: [Range<Int>] = []
    /// Whether to find each event's id and created values (for a stream that is recorded).
    private let findsIdentity: Bool
    /// Where the last `feed` put them in its `all`, in order (when `findsIdentity`): what
    /// ReplyStamp.spans(ofEvents:) finds there, without a second parse of every event.
    public private(set) var identitySpansInAll: [Range<Int>] = []
    /// False once an event's data spanned several lines (its values are found when replayed).
    public private(set) var identityKnown = true
    private var template: ReplyStamp.IdentityTemplate?
    /// Longest event accepted; a longer one counts as invalid (and is not held further).
    public let maxEventBytes: Int
    /// When filtering usage: the last chunk that finished a choice, held back from `withoutUsage`
    /// until the next event. vLLM moves `system_fingerprint` from that chunk to the usage chunk
    /// when usage is asked for (and the Engine always asks); a client that did not ask gets it
    /// back in that chunk, where vLLM would have sent it (issue 12 item 8).
    private var heldFinal: [UInt8]?
    private var heldHasFingerprint = false

    public init(maxEventBytes: Int = 1 << 20, findsIdentity: Bool = false) {
        self.maxEventBytes = maxEventBytes
        self.findsIdentity = findsIdentity
    }

    /// Bytes held back because their event is not complete.
    public var pendingBytes: Int { partial.count }
    /// Bytes of a whole final chunk held back from `withoutUsage` (see `heldFinal`).
    public var heldFinalBytes: Int { heldFinal?.count ?? 0 }

    /// Appends the whole events completed by `bytes` to `all`, and (when `filterUsage`) the same
    /// minus usage-only chunks to `withoutUsage`.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer, all: inout [UInt8], withoutUsage: inout [UInt8],
                              filterUsage: Bool) {
        usageRangesInAll.removeAll(keepingCapacity: true)
        identitySpansInAll.removeAll(keepingCapacity: true)
        var start = 0
        let n = bytes.count
        var i = 0
        while let lf = ByteSearch.index(of: 0x0A, in: bytes, from: i) {
            // An event ends at an empty line. A blank line with no event in progress (one more
            // after an event's end) is a separator of its own, passed on at once, wherever the
            // reads were cut.
            if isStrayBlankLine(bytes, from: start, to: lf) || endsEvent(bytes, at: lf) {
                let piece = UnsafeRawBufferPointer(rebasing: bytes[start...lf])
                if partial.isEmpty {
                    emit(piece, all: &all, withoutUsage: &withoutUsage, filterUsage: filterUsage)
                } else {
                    partial.append(contentsOf: piece)
                    let ev = partial
                    partial.removeAll(keepingCapacity: true)
                    ev.withUnsafeBytes { emit($0, all: &all, withoutUsage: &withoutUsage, filterUsage: filterUsage) }
                }
                start = lf + 1
            }
            i = lf + 1
        }
        if start < n && sawDone {
            bytesDroppedAfterDone += n - start
        } else if start < n {
            partial.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start..<n]))
            if partial.count > maxEventBytes {
                // Too long to be a real event: drop what we hold and count it as invalid.
                invalidEvents += 1
                partial = []
            }
        }
    }

    /// True when the LF at `i` ends an empty line and nothing of an event came before it: the
    /// event so far (held bytes, then `b[start..<i]`) is empty or a lone CR.
    private func isStrayBlankLine(_ b: UnsafeRawBufferPointer, from start: Int, to i: Int) -> Bool {
        let count = partial.count + (i - start)
        if count == 0 { return true }
        guard count == 1 else { return false }
        return (partial.first ?? b[start]) == 0x0D
    }

    /// True when the LF at `i` closes an empty line (the previous line break is LF or CRLF).
    private func endsEvent(_ b: UnsafeRawBufferPointer, at i: Int) -> Bool {
        var j = i - 1
        if byte(b, j) == 0x0D { j -= 1 }
        return byte(b, j) == 0x0A
    }

    /// Byte `k` of `b`, or (k < 0) of the held partial counted back from its end.
    private func byte(_ b: UnsafeRawBufferPointer, _ k: Int) -> UInt8? {
        if k >= 0 { return b[k] }
        let p = partial.count + k
        return p >= 0 ? partial[p] : nil
    }

    private mutating func emit(_ ev: UnsafeRawBufferPointer, all: inout [UInt8], withoutUsage: inout [UInt8],
                               filterUsage: Bool) {
        if sawDone {
            eventsAfterDone += 1
            bytesDroppedAfterDone += ev.count
            return
        }
        var usageOnly = false
        var final = false
        var fingerprint: [UInt8]?
        if let d = Self.inspectData(ev) {
            let info = d.json, dataLine = d.line
            let singleLine = dataLine != nil
            fingerprint = info.fingerprint
            if findsIdentity, info.kind == .object {
                // (An object event is always appended to `all`, just below.)
                if let dataLine {
                    noteIdentity(UnsafeRawBufferPointer(rebasing: ev[dataLine]), info, at: all.count + dataLine.lowerBound)
                } else {
                    identityKnown = false
                }
            }
            final = singleLine && info.kind == .object && !info.hasError && info.choicesFinished != 0 && !info.isUsageOnly
            switch info.kind {
            case .done: sawDone = true
            case .object:
                if info.hasError { sawError = true }
                if let u = info.usage { usage = u }
                usageOnly = info.isUsageOnly
                choicesSeen |= info.choicesSeen
                choicesFinished |= info.choicesFinished
                if info.choicesBeyond || !(info.object == .chatCompletionChunk || info.object == .textCompletion) {
                    foreignEvents += 1
                }
            case .invalid, .notObject:
                // Not relayable: counted (the driver ends the stream with an error) and dropped.
                invalidEvents += 1
                return
            }
        }
        all.append(contentsOf: ev)
        if usageOnly { usageRangesInAll.append((all.count - ev.count)..<all.count) }
        guard filterUsage else { return }
        if var held = heldFinal {
            heldFinal = nil
            if usageOnly, !heldHasFingerprint, let fp = fingerprint { held = Self.adding(fingerprint: fp, to: held) }
            withoutUsage.append(contentsOf: held)
        }
        if usageOnly {
            usageEventsDropped += 1
        } else if final {
            heldFinal = Array(ev)
            heldHasFingerprint = fingerprint != nil
        } else {
            withoutUsage.append(contentsOf: ev)
        }
    }

    /// Notes the top-level id and created values of one event's data (which goes at `offset` in
    /// `all`), as ReplyStamp.spans(ofJSON:) finds them: reused from the last parsed event when this
    /// one starts with the same bytes through the byte after its last value and the parser counted
    /// as many identity members in it (so none comes later); otherwise found by parsing.
    private mutating func noteIdentity(_ data: UnsafeRawBufferPointer, _ info: UpstreamJSON, at offset: Int) {
        let found: [Range<Int>]
        if let t = template, let reused = t.spans(in: data, members: info.identityMembers) {
            found = reused
        } else {
            found = ReplyStamp.spans(ofJSON: data) ?? []
            template = ReplyStamp.IdentityTemplate(data, found)
        }
        for r in found { identitySpansInAll.append((r.lowerBound + offset)..<(r.upperBound + offset)) }
    }

    /// `ev` (one `data:` line holding a JSON object, then its blank line) with
    /// `,"system_fingerprint":<fp>` before the object's closing brace, where vLLM writes it.
    static func adding(fingerprint fp: [UInt8], to ev: [UInt8]) -> [UInt8] {
        var close = ev.count - 1
        while close >= 0 && ev[close] != 0x7D { close -= 1 }  // "}": the last byte of the data line's object
        guard close > 0 else { return ev }
        var out: [UInt8] = []
        out.reserveCapacity(ev.count + fp.count + 24)
        out += ev[..<close]
        out += #","system_fingerprint":"#.utf8
        out += fp
        out += ev[close...]
        return out
    }

    /// An event's data as the parser read it, and where it is when it was one `data:` line (nil
    /// when several were joined). A struct, not a tuple: the optional tuple was copied through
    /// the runtime's generic witnesses on every event.
    struct EventData {
        let json: UpstreamJSON
        let line: Range<Int>?
    }

    /// The event's data (its `data:` lines joined by LF) inspected, and where it is when it was one
    /// line (nil when several were joined); nil for an event with no data (a comment, a keepalive).
    /// One data line (vLLM's case) is read in place, without a copy.
    static func inspectData(_ ev: UnsafeRawBufferPointer) -> EventData? {
        var single: Range<Int>?
        var joined: [UInt8]?
        var lineStart = 0
        while let i = ByteSearch.index(of: 0x0A, in: ev, from: lineStart) {
            var end = i
            if end > lineStart && ev[end - 1] == 0x0D { end -= 1 }
            if end - lineStart >= 5, ev[lineStart] == 0x64, ev[lineStart + 1] == 0x61, ev[lineStart + 2] == 0x74,
               ev[lineStart + 3] == 0x61, ev[lineStart + 4] == 0x3A {  // "data:"
                var v = lineStart + 5
                if v < end && ev[v] == 0x20 { v += 1 }
                if let s = single {
                    var j = joined ?? Array(UnsafeRawBufferPointer(rebasing: ev[s]))
                    j.append(0x0A)
                    j.append(contentsOf: UnsafeRawBufferPointer(rebasing: ev[v..<end]))
                    joined = j
                    single = 0..<0
                } else {
                    single = v..<end
                }
            }
            lineStart = i + 1
        }
        if let j = joined { return EventData(json: UpstreamJSON.inspect(j), line: nil) }
        guard let s = single else { return nil }
        return EventData(json: UpstreamJSON.inspect(UnsafeRawBufferPointer(rebasing: ev[s])), line: s)
    }
}

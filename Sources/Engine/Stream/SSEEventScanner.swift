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
    ///
    /// In three passes over the read: its events are found (line ends with memchr, each `data:`
    /// line noted on the way); the data of every event with one data line (vLLM's case) is read by
    /// the parser in one call for the whole read (UpstreamJSON.withReadings); then each event is
    /// applied in order (`apply`), and the events kept go to `all` and `withoutUsage` a
    /// contiguous run at a time. An event completed from held bytes, and one whose data spans
    /// several lines, are read on their own; the outcome is the same as reading every event on
    /// its own (`readsEachEvent`, which the tests compare with).
    public mutating func feed(_ bytes: UnsafeRawBufferPointer, all: inout [UInt8], withoutUsage: inout [UInt8],
                              filterUsage: Bool) {
        usageRangesInAll.removeAll(keepingCapacity: true)
        identitySpansInAll.removeAll(keepingCapacity: true)
        // The read's first event is kept aside: a read of one event (vLLM sends one per token)
        // is read on its own, without the lists or the batch call.
        var first: Found?
        var found: [Found] = []
        var dataSpans: [Range<Int>] = []
        var sink = Sink(filterUsage: filterUsage)
        var start = 0
        let n = bytes.count
        var i = 0
        var event = Found(start: 0)
        while true {
            // An event's blank line right after its data line (vLLM's `\n\n`) is found without a
            // search: a memchr call per line cost more than the byte it reads.
            let lf: Int
            if i < n && bytes[i] == 0x0A {
                lf = i
            } else if let next = ByteSearch.index(of: 0x0A, in: bytes, from: i) {
                lf = next
            } else {
                break
            }
            if partial.isEmpty { event.noteLine(bytes, i..<lf) }
            // An event ends at an empty line. A blank line with no event in progress (one more
            // after an event's end) is a separator of its own, passed on at once, wherever the
            // reads were cut.
            if isStrayBlankLine(bytes, from: start, to: lf) || endsEvent(bytes, at: lf) {
                if !partial.isEmpty {
                    // The event held from earlier reads (always the read's first): on its own.
                    partial.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start...lf]))
                    let ev = partial
                    partial.removeAll(keepingCapacity: true)
                    ev.withUnsafeBytes { applyAlone($0, sink: &sink, all: &all, withoutUsage: &withoutUsage) }
                } else if let f = first {
                    if found.isEmpty {
                        // A second event: the lists (reused from read to read) take both.
                        swap(&found, &self.found)
                        swap(&dataSpans, &self.dataSpans)
                        found.removeAll(keepingCapacity: true)
                        dataSpans.removeAll(keepingCapacity: true)
                        // Room for the read's events at once (vLLM's are ~200 bytes).
                        found.reserveCapacity(bytes.count >> 7 + 2)
                        dataSpans.reserveCapacity(bytes.count >> 7 + 2)
                        found.append(f)
                        if f.dataLines == 1 { dataSpans.append(f.data) }
                    }
                    event.end = lf + 1
                    if event.dataLines == 1 { dataSpans.append(event.data) }
                    found.append(event)
                } else {
                    event.end = lf + 1
                    first = event
                }
                start = lf + 1
                event = Found(start: start)
            }
            i = lf + 1
        }
        if found.isEmpty, let f = first {
            let ev = UnsafeRawBufferPointer(rebasing: bytes[f.start..<f.end])
            if f.dataLines == 1 && !sawDone {
                let data = UnsafeRawBufferPointer(rebasing: bytes[f.data])
                apply(ev, at: f.start, UpstreamJSON.read(data), dataLine: (f.data.lowerBound - f.start)..<(f.data.upperBound - f.start),
                      sink: &sink, src: bytes, all: &all, withoutUsage: &withoutUsage)
            } else {
                applyAlone(ev, at: f.start, sink: &sink, src: bytes, all: &all, withoutUsage: &withoutUsage)
            }
        }
        if !found.isEmpty {
            if readsEachEvent || sawDone {
                // (After [DONE] every event is dropped unread.)
                for f in found {
                    let ev = UnsafeRawBufferPointer(rebasing: bytes[f.start..<f.end])
                    applyAlone(ev, at: f.start, sink: &sink, src: bytes, all: &all, withoutUsage: &withoutUsage)
                }
            } else {
                UpstreamJSON.withReadings(of: dataSpans, in: bytes) { readings, _ in
                    var k = 0
                    for f in found {
                        let ev = UnsafeRawBufferPointer(rebasing: bytes[f.start..<f.end])
                        if f.dataLines == 1 {
                            apply(ev, at: f.start, readings[k], dataLine: (f.data.lowerBound - f.start)..<(f.data.upperBound - f.start),
                                  sink: &sink, src: bytes, all: &all, withoutUsage: &withoutUsage)
                            k += 1
                        } else if f.dataLines == 0 {
                            apply(ev, at: f.start, nil, dataLine: nil, sink: &sink, src: bytes, all: &all, withoutUsage: &withoutUsage)
                        } else {
                            applyAlone(ev, at: f.start, sink: &sink, src: bytes, all: &all, withoutUsage: &withoutUsage)
                        }
                    }
                }
            }
        }
        sink.flush(bytes, all: &all, withoutUsage: &withoutUsage)
        if !found.isEmpty {
            swap(&found, &self.found)
            swap(&dataSpans, &self.dataSpans)
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

    /// Read every event on its own (one parser call each), as before batches: for tests that
    /// compare the two.
    var readsEachEvent = false

    /// This read's events found in `bytes` (reused from read to read), and the data of those with
    /// one data line, which are read in one batch.
    private var found: [Found] = []
    private var dataSpans: [Range<Int>] = []

    /// One whole event in the read: its bytes, and its `data:` lines (the value of the only one).
    private struct Found {
        let start: Int
        var end = 0
        var dataLines = 0
        var data = 0..<0

        init(start: Int) { self.start = start }

        /// Notes the line `b[line]` (its LF excluded) when it is a `data:` line: the value after
        /// `data:` and one optional space, before a CR that ends the line.
        mutating func noteLine(_ b: UnsafeRawBufferPointer, _ line: Range<Int>) {
            var end = line.upperBound
            if end > line.lowerBound && b[end - 1] == 0x0D { end -= 1 }
            let ls = line.lowerBound
            guard end - ls >= 5, b[ls] == 0x64, b[ls + 1] == 0x61, b[ls + 2] == 0x74, b[ls + 3] == 0x61,
                  b[ls + 4] == 0x3A else { return }  // "data:"
            var v = ls + 5
            if v < end && b[v] == 0x20 { v += 1 }
            dataLines += 1
            data = v..<end
        }
    }

    /// Where the events kept go: `all` and `withoutUsage`, each a pending run of the read's bytes
    /// appended at once when it stops being contiguous (or at the end of the read).
    private struct Sink {
        let filterUsage: Bool
        var allRun = 0..<0
        var withoutRun = 0..<0

        init(filterUsage: Bool) { self.filterUsage = filterUsage }

        /// Where the next event kept lands in `all`.
        func allCount(_ all: [UInt8]) -> Int { all.count + allRun.count }

        static func add(_ r: Range<Int>, to run: inout Range<Int>, _ src: UnsafeRawBufferPointer, _ out: inout [UInt8]) {
            if !run.isEmpty && run.upperBound == r.lowerBound {
                run = run.lowerBound..<r.upperBound
            } else {
                flush(&run, src, &out)
                run = r
            }
        }

        static func flush(_ run: inout Range<Int>, _ src: UnsafeRawBufferPointer, _ out: inout [UInt8]) {
            guard !run.isEmpty else { return }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: src[run]))
            run = 0..<0
        }

        mutating func flush(_ src: UnsafeRawBufferPointer, all: inout [UInt8], withoutUsage: inout [UInt8]) {
            Self.flush(&allRun, src, &all)
            Self.flush(&withoutRun, src, &withoutUsage)
        }
    }

    /// An event read on its own: `ev` is the bytes at `at` in `src` (the read), or held bytes
    /// (`at` nil: nothing of the read is pending in `sink` then, it is the read's first event).
    private mutating func applyAlone(_ ev: UnsafeRawBufferPointer, at: Int? = nil, sink: inout Sink,
                                     src: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
                                     all: inout [UInt8], withoutUsage: inout [UInt8]) {
        if sawDone {
            apply(ev, at: at, nil, dataLine: nil, sink: &sink, src: src, all: &all, withoutUsage: &withoutUsage)
            return
        }
        switch Self.data(of: ev) {
        case .line(let s):
            let reading = UpstreamJSON.read(UnsafeRawBufferPointer(rebasing: ev[s]))
            apply(ev, at: at, reading, dataLine: s, sink: &sink, src: src, all: &all, withoutUsage: &withoutUsage)
        case .joined(let j):
            let reading = j.withUnsafeBytes { UpstreamJSON.read($0) }
            apply(ev, at: at, reading, dataLine: nil, sink: &sink, src: src, all: &all, withoutUsage: &withoutUsage)
        case nil:
            apply(ev, at: at, nil, dataLine: nil, sink: &sink, src: src, all: &all, withoutUsage: &withoutUsage)
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

    /// One whole event, with what the parser read of its data (nil: no data, a comment or a
    /// keepalive; `dataLine`: where the data is in `ev` when it was one line). `at`: where `ev`
    /// is in `src` (then it goes out with the read's run), nil for held bytes.
    private mutating func apply(_ ev: UnsafeRawBufferPointer, at: Int?, _ reading: UpstreamJSON.Reading?,
                                dataLine: Range<Int>?, sink: inout Sink, src: UnsafeRawBufferPointer,
                                all: inout [UInt8], withoutUsage: inout [UInt8]) {
        if sawDone {
            eventsAfterDone += 1
            bytesDroppedAfterDone += ev.count
            return
        }
        var usageOnly = false
        var final = false
        var fingerprint: UnsafeRawBufferPointer?
        if let info = reading {
            fingerprint = info.fingerprint
            if findsIdentity, info.kind == .object {
                // (An object event is always appended to `all`, just below.)
                if let dataLine {
                    noteIdentity(UnsafeRawBufferPointer(rebasing: ev[dataLine]), members: info.identityMembers,
                                 at: sink.allCount(all) + dataLine.lowerBound)
                } else {
                    identityKnown = false
                }
            }
            final = dataLine != nil && info.kind == .object && !info.hasError && info.choicesFinished != 0 && !info.isUsageOnly
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
        let range = at.map { $0..<($0 + ev.count) }
        if usageOnly { usageRangesInAll.append(sink.allCount(all)..<(sink.allCount(all) + ev.count)) }
        if let range {
            Sink.add(range, to: &sink.allRun, src, &all)
        } else {
            sink.flush(src, all: &all, withoutUsage: &withoutUsage)
            all.append(contentsOf: ev)
        }
        guard sink.filterUsage else { return }
        if var held = heldFinal {
            heldFinal = nil
            if usageOnly, !heldHasFingerprint, let fp = fingerprint { held = Self.adding(fingerprint: Array(fp), to: held) }
            Sink.flush(&sink.withoutRun, src, &withoutUsage)
            withoutUsage.append(contentsOf: held)
        }
        if usageOnly {
            usageEventsDropped += 1
        } else if final {
            heldFinal = Array(ev)
            heldHasFingerprint = fingerprint != nil
        } else if let range {
            Sink.add(range, to: &sink.withoutRun, src, &withoutUsage)
        } else {
            withoutUsage.append(contentsOf: ev)
        }
    }

    /// Notes the top-level id and created values of one event's data (which goes at `offset` in
    /// `all`), as ReplyStamp.spans(ofJSON:) finds them: reused from the last parsed event when this
    /// one starts with the same bytes through the byte after its last value and the parser counted
    /// as many identity members in it (so none comes later); otherwise found by parsing.
    private mutating func noteIdentity(_ data: UnsafeRawBufferPointer, members: Int, at offset: Int) {
        let found: [Range<Int>]
        if let t = template, let reused = t.spans(in: data, members: members) {
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
        switch data(of: ev) {
        case .line(let s): return EventData(json: UpstreamJSON.inspect(UnsafeRawBufferPointer(rebasing: ev[s])), line: s)
        case .joined(let j): return EventData(json: UpstreamJSON.inspect(j), line: nil)
        case nil: return nil
        }
    }

    /// An event's data: where its one `data:` line's value is, or several joined by LF (copied).
    enum Data {
        case line(Range<Int>)
        case joined([UInt8])
    }

    /// The data of the whole event `ev` (nil when it has no `data:` line: a comment, a keepalive).
    static func data(of ev: UnsafeRawBufferPointer) -> Data? {
        var single: Range<Int>?
        var joined: [UInt8]?
        var lineStart = 0
        while let i = ByteSearch.index(of: 0x0A, in: ev, from: lineStart) {
            var one = Found(start: 0)
            one.noteLine(ev, lineStart..<i)
            if one.dataLines == 1 {
                if let s = single {
                    var j = joined ?? Array(UnsafeRawBufferPointer(rebasing: ev[s]))
                    j.append(0x0A)
                    j.append(contentsOf: UnsafeRawBufferPointer(rebasing: ev[one.data]))
                    joined = j
                } else {
                    single = one.data
                }
            }
            lineStart = i + 1
        }
        if let j = joined { return .joined(j) }
        return single.map { .line($0) }
    }
}

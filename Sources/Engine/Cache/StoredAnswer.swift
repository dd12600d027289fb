// StoredAnswer: a complete answer as the cache keeps it and a flight hands it on — the plain JSON
// body, or a stream's SSE events exactly as they were relayed (usage chunk included, its place
// noted), so storing a stream costs no parse and replaying it to a stream client is a copy. The
// other form is built only when a client asks for it: SSE from JSON (ReplayWriter) or JSON from
// SSE (StreamAssembler). Every reply carries its own id and created (ReplyStamp); a cache entry
// notes where the stored ones are, found by the parser once (a plain body's by the parse that
// checked it, a stream's by the relay), so a hit in the stored form is a splice: no parse, one copy.
//
// Cache value format (one byte of tag, then):
//   "j" m:u32 (start:u32 end:u32)×m body            a complete JSON answer; the m ranges (of the
//                                                    body) are its top-level id and created values
//   "s" n:u32 (start end)×n m:u32 (start end)×m events
//                                                    SSE events; the n ranges are usage-only chunks,
//                                                    the m ranges every event's id and created values
//   "J" body, "S" n:u32 (start end)×n events         the same without the m ranges (the previous
//                                                    format, and a stream whose data spans several
//                                                    lines): found by parsing when replayed
// Integers are big-endian. Anything else (garbage) decodes to nil: a miss.
// Pure: no imports, no I/O.

/// A stream's events as relayed, and where its usage-only chunks are (clients that did not ask
/// for usage get the events without them).
struct StreamedAnswer: Equatable {
    var events: [UInt8]
    var usageRanges: [Range<Int>]
    /// Every event's id and created values, when the relay found them as it read the events
    /// (StreamRelay); nil: found by parsing when stored.
    var identitySpans: [Range<Int>]? = nil

    /// The same answer: the same events and usage chunks (the spans are derived from them).
    static func == (a: StreamedAnswer, b: StreamedAnswer) -> Bool { a.events == b.events && a.usageRanges == b.usageRanges }

    /// The events, without the usage-only chunks unless `includeUsage`. Without them, the chunk
    /// before each takes back the `system_fingerprint` vLLM moved to the usage chunk (as the live
    /// relay does, SSEEventScanner.heldFinal): the stream vLLM sends a client that did not ask.
    func events(includeUsage: Bool) -> [UInt8] {
        guard !includeUsage, !usageRanges.isEmpty else { return events }
        var out: [UInt8] = []
        out.reserveCapacity(events.count + 64)
        var at = 0
        for r in usageRanges {
            let before = Self.eventStart(in: events, before: r.lowerBound, notBefore: at)
            out += events[at..<before]
            let final = Array(events[before..<r.lowerBound])
            out += Self.withFingerprint(of: events[r], addedTo: final)
            at = r.upperBound
        }
        out += events[at...]
        return out
    }

    /// Where the event that ends at `end` starts (after the blank line before it, or `floor`).
    static func eventStart(in events: [UInt8], before end: Int, notBefore floor: Int) -> Int {
        var i = end - 2 // the event's own closing blank line
        while i > floor {
            if events[i - 1] == 0x0A && (events[i] == 0x0A || (events[i] == 0x0D && i + 1 < end && events[i + 1] == 0x0A)) {
                return events[i] == 0x0A ? i + 1 : i + 2
            }
            i -= 1
        }
        return floor
    }

    /// In a spliced reply `out` whose last usage chunk (`lastUsage` in `payload`) was cut out: the
    /// chunk before it takes the usage chunk's fingerprint. What follows the usage chunk in the
    /// payload (`data: [DONE]`) carries no stamp, so it ends `out` as it is and locates the chunk.
    /// False when the reply does not line up that way (then the caller takes the long way).
    static func movingFingerprint(into out: inout [UInt8], payload: UnsafeRawBufferPointer, lastUsage r: Range<Int>) -> Bool {
        let tail = payload.count - r.upperBound
        guard r.upperBound <= payload.count, out.count >= tail,
              out.withUnsafeBytes({ UnsafeRawBufferPointer(rebasing: $0[($0.count - tail)...]) })
                .elementsEqual(UnsafeRawBufferPointer(rebasing: payload[r.upperBound...])) else { return false }
        // Most usage chunks have no fingerprint, and their bytes say so without a parse.
        let usage = UnsafeRawBufferPointer(rebasing: payload[r])
        guard UpstreamJSON.mayHoldFingerprint(usage), let fp = SSEEventScanner.inspectData(usage)?.json.fingerprint else {
            return true // nothing to move
        }
        let end = out.count - tail
        let start = eventStart(in: out, before: end, notBefore: 0)
        let final = Array(out[start..<end])
        let moved = withFingerprint(fp, addedTo: final)
        if moved.count != final.count { out.replaceSubrange(start..<end, with: moved) }
        return true
    }

    /// `final` with the usage chunk's fingerprint, when `final` finished a choice and has none.
    private static func withFingerprint(of usage: ArraySlice<UInt8>, addedTo final: [UInt8]) -> [UInt8] {
        guard let fp = Array(usage).withUnsafeBytes({ SSEEventScanner.inspectData($0) })?.json.fingerprint else { return final }
        return withFingerprint(fp, addedTo: final)
    }

    private static func withFingerprint(_ fp: [UInt8], addedTo final: [UInt8]) -> [UInt8] {
        guard !final.isEmpty, let d = final.withUnsafeBytes({ SSEEventScanner.inspectData($0) }), d.line != nil,
              case let f = d.json, f.kind == .object, f.choicesFinished != 0, f.fingerprint == nil else { return final }
        return SSEEventScanner.adding(fingerprint: fp, to: final)
    }

    /// The equivalent non-streaming body; nil when it cannot be rebuilt faithfully.
    func completeBody(stamp: ReplyStamp? = nil) -> [UInt8]? {
        var a = StreamAssembler()
        a.feed(events)
        return a.completeBody(stamp: stamp)
    }
}

enum StoredAnswer: Equatable {
    /// A JSON body, and its top-level id and created values when the parse that checked it found
    /// them (UpstreamJSON.inspect(_:identitySpans:)); nil: found by parsing when stored.
    case json([UInt8], identitySpans: [Range<Int>]? = nil)
    case stream(StreamedAnswer)

    /// The same answer: the same bytes (the spans are derived from them).
    static func == (a: StoredAnswer, b: StoredAnswer) -> Bool {
        switch (a, b) {
        case (.json(let x, _), .json(let y, _)): return x == y
        case (.stream(let x), .stream(let y)): return x == y
        default: return false
        }
    }

    private static let jsonTag = UInt8(ascii: "J")
    private static let streamTag = UInt8(ascii: "S")
    private static let stampedJSONTag = UInt8(ascii: "j")
    private static let stampedStreamTag = UInt8(ascii: "s")

    /// The bytes a client gets in the form it asked for: SSE events (stream) or a JSON body; nil
    /// when this answer cannot be given in that form (then it is a miss for this client). A reply
    /// is a response of its own: it carries the `stamp`'s id and created (in the body, or in every
    /// chunk), not the stored ones.
    func reply(stream: Bool, includeUsage: Bool, stamp: ReplyStamp) -> [UInt8]? {
        switch self {
        case .json(let body, _):
            return stream ? ReplayWriter.sse(fromCompleteBody: body, includeUsage: includeUsage, stamp: stamp)
                : stamp.stamped(json: body)
        case .stream(let s):
            return stream ? stamp.stamped(events: s.events(includeUsage: includeUsage)) : s.completeBody(stamp: stamp)
        }
    }

    /// `reply(stream:includeUsage:stamp:)` of the cache entry `encoded`, straight from its bytes:
    /// in the stored form, a splice at the positions the entry notes (no parse, no intermediate
    /// copy); nil for an entry that does not decode or cannot be given in that form.
    static func reply(encoded: [UInt8], stream: Bool, includeUsage: Bool, stamp: ReplyStamp) -> [UInt8]? {
        encoded.withUnsafeBytes { reply(encoded: $0, stream: stream, includeUsage: includeUsage, stamp: stamp) }
    }

    /// The same over an entry's bytes lent by the store (SynchronousCacheStore.withFresh).
    static func reply(encoded b: UnsafeRawBufferPointer, stream: Bool, includeUsage: Bool, stamp: ReplyStamp) -> [UInt8]? {
        // The spans are checked by the splice as it writes (rs_splice), not twice.
        guard let e = Layout.read(b, checkingSpans: false) else { return nil }
        guard let spans = e.spans else {
            return decode(Array(b))?.reply(stream: stream, includeUsage: includeUsage, stamp: stamp)
        }
        let payload = UnsafeRawBufferPointer(rebasing: b[e.payload])
        switch (e.isStream, stream) {
        case (false, false), (true, true):
            let skipping = !includeUsage && stream && e.usage.count > 0
            guard var out = stamp.splice(entry: payload, spans: spans.table, cuts: e.usage.table, skipping: skipping) else {
                return nil
            }
            if skipping {
                // The usage chunk cut out: the final chunk takes back its system_fingerprint
                // (StreamedAnswer.events); where that cannot be done in place, the long way.
                guard StreamedAnswer.movingFingerprint(into: &out, payload: payload, lastUsage: e.usage.range(e.usage.count - 1)) else {
                    return decode(Array(b))?.reply(stream: stream, includeUsage: includeUsage, stamp: stamp)
                }
            }
            return out
        case (false, true):
            guard ReplyStamp.entryTablesFit(payload, spans: spans.table, cuts: e.usage.table) else { return nil }
            return ReplayWriter.sse(fromCompleteBody: Array(payload), includeUsage: includeUsage, stamp: stamp)
        case (true, false):
            guard ReplyStamp.entryTablesFit(payload, spans: spans.table, cuts: e.usage.table) else { return nil }
            return StreamedAnswer(events: Array(payload), usageRanges: e.usage.array).completeBody(stamp: stamp)
        }
    }

    /// A cache entry holding a JSON body with its id and created positions noted ("j"): the body
    /// and its span table, read in place (the tables are not checked here: the splice checks
    /// them as it writes). nil for any other entry (`reply(encoded:…)` decides those). A plain
    /// hit splices these straight into the buffer it writes from.
    static func stampedJSON(encoded b: UnsafeRawBufferPointer) -> (payload: UnsafeRawBufferPointer, spans: UnsafeRawBufferPointer)? {
        guard let e = Layout.read(b, checkingSpans: false), !e.isStream, let spans = e.spans else { return nil }
        return (UnsafeRawBufferPointer(rebasing: b[e.payload]), spans.table)
    }

    /// The cache entry, with the positions of the stored id and created values (found here, once):
    /// `encodedHead()` then the payload, joined.
    func encoded() -> [UInt8] {
        let head = encodedHead()
        let body = payload
        var out: [UInt8] = []
        out.reserveCapacity(head.count + body.count)
        out += head
        out += body
        return out
    }

    /// The stored bytes after the entry's head: the JSON body or the events, as they are (the same
    /// array: no copy).
    var payload: [UInt8] {
        switch self {
        case .json(let body, _): return body
        case .stream(let s): return s.events
        }
    }

    /// The cache entry's first part: the tag and the range tables. A store that can take a value
    /// in two parts (SharedMemoryCacheStore) copies it and the payload straight into the entry, so
    /// a stored stream is not first joined into one more array of its size.
    func encodedHead() -> [UInt8] {
        switch self {
        case .json(let body, let known):
            let spans = known ?? body.withUnsafeBytes { ReplyStamp.spans(ofJSON: $0) } ?? []
            return Self.head(Self.stampedJSONTag, spans, nil)
        case .stream(let s):
            let spans = s.identitySpans ?? s.events.withUnsafeBytes { ReplyStamp.spans(ofEvents: $0) }
            return Self.head(spans == nil ? Self.streamTag : Self.stampedStreamTag, s.usageRanges, spans)
        }
    }

    /// `tag`, then each table as n:u32 and its n (start:u32, end:u32) pairs, big-endian, written in
    /// place into one array of its exact size (a 4-byte append per value went through the generic
    /// append(contentsOf:): ~100 of them for a stream's identity spans).
    private static func head(_ tag: UInt8, _ first: [Range<Int>], _ second: [Range<Int>]?) -> [UInt8] {
        let size = 1 + 4 + 8 * first.count + (second.map { 4 + 8 * $0.count } ?? 0)
        return [UInt8](smallCapacity: size) { buf, n in
            let p = UnsafeMutableRawPointer(buf.baseAddress!)
            p.storeBytes(of: tag, as: UInt8.self)
            var at = 1
            func put(_ v: Int) {
                p.storeBytes(of: UInt32(truncatingIfNeeded: v).bigEndian, toByteOffset: at, as: UInt32.self)
                at += 4
            }
            func table(_ ranges: [Range<Int>]) {
                put(ranges.count)
                for r in ranges {
                    put(r.lowerBound)
                    put(r.upperBound)
                }
            }
            table(first)
            if let second { table(second) }
            n = at
        }
    }

    static func decode(_ bytes: [UInt8]) -> StoredAnswer? {
        bytes.withUnsafeBytes { b in
            guard let e = Layout.read(b) else { return nil }
            let payload = Array(bytes[e.payload])
            return e.isStream ? .stream(StreamedAnswer(events: payload, usageRanges: e.usage.array)) : .json(payload)
        }
    }

    /// n (start:u32, end:u32) pairs read in place from a cache entry (valid while its bytes are).
    struct EntryRanges: RangeList {
        let table: UnsafeRawBufferPointer

        static var none: EntryRanges { EntryRanges(table: UnsafeRawBufferPointer(start: nil, count: 0)) }

        var count: Int { table.count / 8 }

        func range(_ i: Int) -> Range<Int> {
            let lo = u32(8 * i)
            return lo..<max(lo, u32(8 * i + 4))
        }

        var array: [Range<Int>] { (0..<count).map(range) }

        private func u32(_ o: Int) -> Int {
            Int(table[o]) << 24 | Int(table[o + 1]) << 16 | Int(table[o + 2]) << 8 | Int(table[o + 3])
        }

        /// In order, not overlapping, inside `limit` bytes.
        func isOrdered(within limit: Int) -> Bool {
            var last = 0
            for i in 0..<count {
                let r = range(i)
                guard r.lowerBound >= last, r.upperBound <= limit else { return false }
                last = r.upperBound
            }
            return true
        }
    }

    /// Where the parts of a cache entry are, checked: every range inside the payload, in order,
    /// not overlapping; each value range starts like a JSON string or number and lies inside one
    /// event (not across a usage chunk's edge).
    private struct Layout {
        var isStream: Bool
        var payload: Range<Int>
        var usage = EntryRanges.none
        /// nil: not noted (the previous format): find them by parsing.
        var spans: EntryRanges?

        /// With `checkingSpans` false the span table is only read (a caller that splices checks it
        /// in the splice's first pass).
        static func read(_ b: UnsafeRawBufferPointer, checkingSpans: Bool = true) -> Layout? {
            guard let tag = b.first else { return nil }
            var at = 1
            let isStream: Bool
            var usage = EntryRanges.none
            var spans: EntryRanges?
            switch tag {
            case StoredAnswer.jsonTag:
                isStream = false
            case StoredAnswer.stampedJSONTag:
                isStream = false
                guard let s = table(b, &at) else { return nil }
                spans = s
            case StoredAnswer.streamTag, StoredAnswer.stampedStreamTag:
                isStream = true
                guard let u = table(b, &at) else { return nil }
                usage = u
                if tag == StoredAnswer.stampedStreamTag {
                    guard let s = table(b, &at) else { return nil }
                    spans = s
                }
            default:
                return nil
            }
            let payload = at..<b.count
            guard !payload.isEmpty, usage.isOrdered(within: payload.count) else { return nil }
            if checkingSpans, let spans {
                // In order, inside the payload, each starting like a JSON string or number and
                // inside one usage chunk or apart from all (rs_splice's checks).
                guard ReplyStamp.entryTablesFit(UnsafeRawBufferPointer(rebasing: b[payload]), spans: spans.table, cuts: usage.table) else {
                    return nil
                }
            }
            return Layout(isStream: isStream, payload: payload, usage: usage, spans: spans)
        }

        /// n:u32 then the n pairs; nil when they do not fit in the bytes.
        private static func table(_ b: UnsafeRawBufferPointer, _ at: inout Int) -> EntryRanges? {
            guard b.count - at >= 4 else { return nil }
            let n = Int(b[at]) << 24 | Int(b[at + 1]) << 16 | Int(b[at + 2]) << 8 | Int(b[at + 3])
            at += 4
            guard n <= (b.count - at) / 8 else { return nil }
            let t = EntryRanges(table: UnsafeRawBufferPointer(rebasing: b[at..<(at + 8 * n)]))
            at += 8 * n
            return t
        }
    }
}

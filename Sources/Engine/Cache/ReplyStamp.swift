// ReplyStamp: the identity a replayed answer gets — a cache hit, a stale entry, a coalesced
// follower's copy is a response of its own, so it carries its own `id` (vLLM's form for this
// request: `chatcmpl-<X-Request-Id>`, `cmpl-<X-Request-Id>`) and its own `created` (now, read by
// the caller). Put into stored bytes by a splice at the positions the parser found
// (rs_identity_spans: simdjson's top-level `id` and `created` values; every other byte is
// copied): in a JSON body, or in each event of an SSE stream. A cache entry keeps those positions
// (StoredAnswer's format), so a hit splices without parsing (in C, straight from the entry's
// tables: `splice(entry:…)`); other replays find them first.
// ReplayWriter and StreamAssembler, which build their output, write the values directly.
// Pure over C (CRequestScan), no I/O.
import CRequestScan

#if canImport(Glibc)
import Glibc
#endif

public struct ReplyStamp: Equatable, Sendable {
    // The id is `prefix` + `suffix` (vLLM's prefix and the request id), kept apart so that making
    // a stamp, once per cache hit, allocates nothing; both are written straight into the reply.
    private let prefix: String
    private let suffix: String
    /// The id has a character that JSON escapes (rare: request ids are usually plain).
    private let needsEscaping: Bool
    /// Unix seconds.
    public let created: Int

    public init(id: String, created: Int) {
        self.init(prefix: "", suffix: id, created: created)
    }

    /// vLLM's id for a request carrying `X-Request-Id: <requestId>` (the Engine forwards its
    /// request id upstream, so a relayed answer has the same form).
    public init(kind: EndpointKind, requestId: String, created: Int) {
        let prefix: String
        switch kind {
        case .chat: prefix = "chatcmpl-"
        case .completion: prefix = "cmpl-"
        case .relay(let r): prefix = r.name == "embeddings" ? "embd-" : ""
        }
        self.init(prefix: prefix, suffix: requestId, created: created)
    }

    /// vLLM's prefix of `kind`'s response ids, as `init(kind:requestId:created:)` spells it (a
    /// literal here: the cache hit writes it from its bytes).
    static func idPrefix(_ kind: EndpointKind) -> StaticString {
        switch kind {
        case .chat: return "chatcmpl-"
        case .completion: return "cmpl-"
        case .relay(let r): return r.name == "embeddings" ? "embd-" : ""
        }
    }

    private init(prefix: String, suffix: String, created: Int) {
        self.prefix = prefix
        var suffix = suffix
        needsEscaping = suffix.withUTF8 { u in u.contains { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C } }
        self.suffix = suffix
        self.created = created
    }

    /// The response id, unescaped.
    public var id: String { prefix + suffix }

    public static func == (a: ReplyStamp, b: ReplyStamp) -> Bool { a.id == b.id && a.created == b.created }

    // MARK: finding the values

    /// Where the top-level `id` (a string) and `created` (a number) values of the JSON object in
    /// `json` are, in order: [] when it has neither, nil when it is not a JSON object.
    public static func spans(ofJSON json: UnsafeRawBufferPointer) -> [Range<Int>]? {
        spans { buf, n in rs_identity_spans(json.baseAddress, json.count, buf, maxSpans, &n) }
    }

    /// At most this many values are looked for (an answer has two; an object with more gives nil).
    static let maxSpans = 8

    /// `spans(ofJSON:)` as `find` reports it, the way rs_identity_spans does: it writes up to
    /// `maxSpans` (start, end) pairs at the pointer, their count, and returns the status.
    static func spans(_ find: (UnsafeMutablePointer<Int>, inout Int) -> Int32) -> [Range<Int>]? {
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 2 * maxSpans) { buf -> [Range<Int>]? in
            var n = 0
            let status = find(buf.baseAddress!, &n)
            switch status {
            case Int32(RS_IDENTITY_FOUND): return (0..<n).map { buf[2 * $0]..<buf[2 * $0 + 1] }
            case Int32(RS_IDENTITY_NONE): return []
            default: return nil
            }
        }
    }

    /// The values of every event's data in SSE `events`, as ranges of `events`, in order; nil when
    /// some event's data spans several `data:` lines (`stamped(events:)` handles those).
    public static func spans(ofEvents b: UnsafeRawBufferPointer) -> [Range<Int>]? {
        var out: [Range<Int>] = []
        var template: IdentityTemplate?
        var at = 0
        while at < b.count {
            let (end, dataLines) = event(in: b, from: at)
            if dataLines > 1 { return nil }
            if dataLines == 1, let (v, valueEnd) = dataLine(in: b, from: at, to: end) {
                let value = UnsafeRawBufferPointer(rebasing: b[v..<valueEnd])
                if let found = template?.spans(in: value) {
                    for r in found { out.append((v + r.lowerBound)..<(v + r.upperBound)) }
                } else if let found = spans(ofJSON: value) {
                    for r in found { out.append((v + r.lowerBound)..<(v + r.upperBound)) }
                    template = IdentityTemplate(value, found)
                }
            }
            at = end
        }
        return out
    }

    /// One parsed event's spans, reused for a later event that provably has the same ones, without
    /// parsing it again (a stream's chunks share their head: `{"id":…,"object":…,"created":…,`).
    /// Provably: the later event starts with the same bytes up to and including the one after the
    /// last span — so a parser reads the same tokens there, the same top-level members, and the
    /// number before that byte ends where it did — and its remaining bytes cannot hold another
    /// `id` or `created` key at any depth: no `"id"`, no `"created"`, and no `\u` escape that could
    /// spell one. Anything else is parsed.
    struct IdentityTemplate {
        let head: [UInt8]
        let spans: [Range<Int>]

        init?(_ value: UnsafeRawBufferPointer, _ spans: [Range<Int>]) {
            guard let last = spans.last, last.upperBound < value.count else { return nil }
            head = Array(value[0...last.upperBound])
            self.spans = spans
        }

        func spans(in value: UnsafeRawBufferPointer) -> [Range<Int>]? {
            guard startsWithHead(value) else { return nil }
            let rest = UnsafeRawBufferPointer(rebasing: value[head.count...])
            return rs_may_hold_identity(rest.baseAddress, rest.count) == 0 ? spans : nil
        }

        /// The same for an event the parser has read, which found `members` identity members in
        /// it (UpstreamJSON.identityMembers): as many as the head holds means none in the rest.
        func spans(in value: UnsafeRawBufferPointer, members: Int) -> [Range<Int>]? {
            members == spans.count && startsWithHead(value) ? spans : nil
        }

        /// `spans(in:members:)` appended to `out`, each moved by `offset`; false (nothing
        /// appended) when they do not fit. No copy of the template (the relay's per-event path).
        func appendSpans(in value: UnsafeRawBufferPointer, members: Int, offset: Int, to out: inout [Range<Int>]) -> Bool {
            guard members == spans.count && startsWithHead(value) else { return false }
            for r in spans { out.append((r.lowerBound + offset)..<(r.upperBound + offset)) }
            return true
        }

        private func startsWithHead(_ value: UnsafeRawBufferPointer) -> Bool {
            value.count > head.count && head.withUnsafeBytes({ memcmp($0.baseAddress!, value.baseAddress!, head.count) }) == 0
        }
    }

    // MARK: writing them

    /// Appends `src` to `out` with each span (sorted, not overlapping) replaced by this stamp's
    /// value — a span that starts with `"` holds the id, any other the created — and the `skip`
    /// ranges (sorted; whole SSE events, e.g. a usage chunk) left out with the spans inside them.
    /// The cache-hit path: one pass to size the result, one to fill it (a memcpy per piece).
    func splice<S: RangeList, K: RangeList>(_ src: UnsafeRawBufferPointer, spans: S, skipping skip: K,
                                             into out: inout [UInt8]) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: room for Int.min
        withUnsafeMutableBytes(of: &digits) { d in
            let createdText = UnsafeRawBufferPointer(rebasing: d[Self.decimal(created, into: d)...])
            var prefix = self.prefix
            var suffix = self.suffix
            prefix.withUTF8 { p in
                suffix.withUTF8 { s in
                    let id = IdText(prefix: UnsafeRawBufferPointer(p), suffix: UnsafeRawBufferPointer(s), escapes: needsEscaping)
                    let size = Self.emit(src, spans, skip, id, createdText, into: nil)
                    let piece = [UInt8](smallCapacity: size) { buf, n in
                        n = Self.emit(src, spans, skip, id, createdText, into: UnsafeMutableRawPointer(buf.baseAddress))
                    }
                    if out.isEmpty { out = piece } else { out += piece }
                }
            }
        }
    }

    /// The same splice over a cache entry: `src` its payload, `spans` and `cuts` its tables as the
    /// entry holds them (big-endian u32 pairs: StoredAnswer's format), the cuts (usage chunks)
    /// left out when `skipping`. One pass in C (rs_splice) checks the tables (what StoredAnswer's
    /// Layout.read checks) as it writes: nil when they do not fit the payload (a damaged entry).
    func splice(entry src: UnsafeRawBufferPointer, spans: UnsafeRawBufferPointer, cuts: UnsafeRawBufferPointer,
                skipping: Bool) -> [UInt8]? {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: room for Int.min
        return withUnsafeMutableBytes(of: &digits) { d -> [UInt8]? in
            let created = UnsafeRawBufferPointer(rebasing: d[Self.decimal(self.created, into: d)...])
            var prefix = self.prefix
            var suffix = self.suffix
            return prefix.withUTF8 { p in
                suffix.withUTF8 { s in
                    let idText = IdText(prefix: UnsafeRawBufferPointer(p), suffix: UnsafeRawBufferPointer(s), escapes: needsEscaping)
                    let idCount = idText.write(nil)
                    return withUnsafeTemporaryAllocation(byteCount: idCount, alignment: 1) { id -> [UInt8]? in
                        _ = idText.write(id.baseAddress)
                        // Room for every value at its longest; the result is usually a little shorter.
                        let cap = src.count + spans.count / 8 * max(idCount, created.count)
                        var fits = true
                        let out = [UInt8](smallCapacity: cap) { buf, n in
                            let size = rs_splice(src.baseAddress, src.count, cuts.baseAddress, cuts.count / 8, spans.baseAddress,
                                                 spans.count / 8, skipping ? 1 : 0, id.baseAddress, idCount, created.baseAddress,
                                                 created.count, buf.baseAddress, cap)
                            fits = size >= 0
                            n = max(0, size)
                        }
                        return fits ? out : nil
                    }
                }
            }
        }
    }

    /// The id's JSON text for `kind`'s answer to `requestId` (`"`, vLLM's prefix, the request id
    /// escaped where JSON needs it, `"`), written at `dst` when given; returns its length (at
    /// most `maxIDTextCount(requestId.count)`). The cache hit's form of the id a stamp writes,
    /// from the request id's bytes (no String, no stamp).
    /// `plain`: the caller knows the id holds nothing JSON escapes (one the Engine made).
    static func writeIDText(kind: EndpointKind, requestId: UnsafeRawBufferPointer, plain: Bool = false,
                            to dst: UnsafeMutableRawPointer?) -> Int {
        let prefix = idPrefix(kind)
        // A plain loop: `contains(where:)` called its closure per byte.
        var escapes = false
        if !plain {
            for b in requestId where b < 0x20 || b == 0x22 || b == 0x5C {
                escapes = true
                break
            }
        }
        return IdText(prefix: UnsafeRawBufferPointer(start: prefix.utf8Start, count: prefix.utf8CodeUnitCount),
                      suffix: requestId, escapes: escapes).write(dst)
    }

    /// Room for `writeIDText` of a request id of `count` bytes (`\u00XX` is the longest escape).
    static func maxIDTextCount(_ count: Int) -> Int { 2 + 9 + 6 * count }

    /// Room for `splice(entry:…into:)` of a `payload`-byte entry with `spans`, the id text
    /// `idCount` bytes long: every value at its longest (the created value at most 20 digits).
    static func spliceCapacity(payload: Int, spans: UnsafeRawBufferPointer, idCount: Int) -> Int {
        payload + spans.count / 8 * max(idCount, 20)
    }

    /// `splice(entry:…)` of a cache entry straight into `dst` (room for `capacity` bytes, at least
    /// `spliceCapacity`), with the id given as its JSON text (`writeIDText`) and the `created`
    /// seconds: the reply's length, or nil when the tables do not fit the payload (a damaged
    /// entry). A cache hit writes its reply into a buffer it reuses, not a new array.
    static func splice(entry src: UnsafeRawBufferPointer, spans: UnsafeRawBufferPointer, cuts: UnsafeRawBufferPointer,
                       skipping: Bool, idText: UnsafeRawBufferPointer, created: Int,
                       into dst: UnsafeMutableRawPointer, capacity: Int) -> Int? {
        CreatedText(created).withBytes {
            splice(entry: src, spans: spans, cuts: cuts, skipping: skipping, idText: idText, created: $0, into: dst, capacity: capacity)
        }
    }

    /// The same with `created` as its digits (CreatedText): a caller answering many hits a
    /// second writes them once a second.
    static func splice(entry src: UnsafeRawBufferPointer, spans: UnsafeRawBufferPointer, cuts: UnsafeRawBufferPointer,
                       skipping: Bool, idText: UnsafeRawBufferPointer, created: UnsafeRawBufferPointer,
                       into dst: UnsafeMutableRawPointer, capacity: Int) -> Int? {
        let size = rs_splice(src.baseAddress, src.count, cuts.baseAddress, cuts.count / 8, spans.baseAddress, spans.count / 8,
                             skipping ? 1 : 0, idText.baseAddress, idText.count, created.baseAddress, created.count, dst, capacity)
        return size >= 0 ? size : nil
    }

    /// A `created` value's decimal digits, held by value (24 bytes: room for Int.min).
    struct CreatedText {
        private var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        private var start = 0

        init(_ v: Int) {
            start = withUnsafeMutableBytes(of: &digits) { ReplyStamp.decimal(v, into: $0) }
        }

        func withBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
            withUnsafeBytes(of: digits) { body(UnsafeRawBufferPointer(rebasing: $0[start...])) }
        }
    }

    /// Whether a cache entry's tables fit its payload the way `splice(entry:...)` needs (StoredAnswer's
    /// Layout.read, for entries decoded rather than spliced).
    static func entryTablesFit(_ src: UnsafeRawBufferPointer, spans: UnsafeRawBufferPointer, cuts: UnsafeRawBufferPointer) -> Bool {
        rs_splice(src.baseAddress, src.count, cuts.baseAddress, cuts.count / 8, spans.baseAddress, spans.count / 8, 0,
                  nil, 0, nil, 0, nil, 0) >= 0
    }

    func splice(_ src: UnsafeRawBufferPointer, spans: [Range<Int>], into out: inout [UInt8]) {
        splice(src, spans: spans, skipping: [Range<Int>](), into: &out)
    }

    /// The id's bytes: `"`, prefix, suffix (JSON-escaped when `escapes`), `"`.
    private struct IdText {
        let prefix: UnsafeRawBufferPointer
        let suffix: UnsafeRawBufferPointer
        let escapes: Bool

        /// Writes the id at `dst` (when given); returns its length.
        func write(_ dst: UnsafeMutableRawPointer?) -> Int {
            var n = 0
            func put(_ b: UInt8) {
                dst?.storeBytes(of: b, toByteOffset: n, as: UInt8.self)
                n += 1
            }
            func put(_ p: UnsafeRawBufferPointer) {
                if let dst, let base = p.baseAddress, p.count > 0 { (dst + n).copyMemory(from: base, byteCount: p.count) }
                n += p.count
            }
            put(0x22)
            put(prefix)
            if escapes {
                let hex: StaticString = "0123456789abcdef"
                for c in suffix {
                    switch c {
                    case 0x22, 0x5C: put(0x5C); put(c)
                    case 0x0A: put(0x5C); put(0x6E)
                    case 0x0D: put(0x5C); put(0x72)
                    case 0x09: put(0x5C); put(0x74)
                    case ..<0x20:
                        for b: UInt8 in [0x5C, 0x75, 0x30, 0x30] { put(b) }
                        put(hex.utf8Start[Int(c >> 4)])
                        put(hex.utf8Start[Int(c & 0xF)])
                    default: put(c)
                    }
                }
            } else {
                put(suffix)
            }
            put(0x22)
            return n
        }
    }

    /// One pass of `splice`: writes the result at `dst` when given; returns its length.
    private static func emit<S: RangeList, K: RangeList>(_ src: UnsafeRawBufferPointer, _ spans: S, _ skip: K, _ id: IdText,
                                                          _ created: UnsafeRawBufferPointer,
                                                          into dst: UnsafeMutableRawPointer?) -> Int {
        var n = 0
        func copy(_ r: Range<Int>) {
            if let dst, !r.isEmpty { (dst + n).copyMemory(from: src.baseAddress! + r.lowerBound, byteCount: r.count) }
            n += r.count
        }
        var at = 0
        var si = 0
        var ki = 0
        while true {
            let span = si < spans.count ? spans.range(si) : nil
            let cut = ki < skip.count ? skip.range(ki) : nil
            if let cut, span.map({ cut.lowerBound <= $0.lowerBound }) ?? true {
                copy(at..<cut.lowerBound)
                at = cut.upperBound
                ki += 1
                while si < spans.count && spans.range(si).lowerBound < at { si += 1 }
            } else if let span {
                copy(at..<span.lowerBound)
                if src[span.lowerBound] == 0x22 {
                    n += id.write(dst.map { $0 + n })
                } else {
                    if let dst, let base = created.baseAddress { (dst + n).copyMemory(from: base, byteCount: created.count) }
                    n += created.count
                }
                at = span.upperBound
                si += 1
            } else {
                copy(at..<src.count)
                return n
            }
        }
    }

    /// Writes `v` in decimal at the end of `buf`; returns where it starts.
    private static func decimal(_ v: Int, into buf: UnsafeMutableRawBufferPointer) -> Int {
        var n = v.magnitude
        var at = buf.count
        repeat {
            at -= 1
            buf[at] = 0x30 + UInt8(n % 10)
            n /= 10
        } while n > 0
        if v < 0 {
            at -= 1
            buf[at] = 0x2D
        }
        return at
    }

    /// A JSON object with its top-level `id` and `created` replaced; anything else unchanged.
    public func stamped(json: [UInt8]) -> [UInt8] {
        json.withUnsafeBytes { b in
            guard let spans = ReplyStamp.spans(ofJSON: b), !spans.isEmpty else { return json }
            var out: [UInt8] = []
            out.reserveCapacity(b.count + 64)
            splice(b, spans: spans, into: &out)
            return out
        }
    }

    /// SSE events with every event's data stamped (`[DONE]`, comments and error events, which have
    /// no `id`, stay as they are). Events are split at blank lines, LF or CRLF; an event's data is
    /// its `data:` lines joined by LF, as SSE defines it.
    public func stamped(events: [UInt8]) -> [UInt8] {
        events.withUnsafeBytes { stamped(events: $0) }
    }

    public func stamped(events b: UnsafeRawBufferPointer) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(b.count + b.count / 8)
        if let spans = ReplyStamp.spans(ofEvents: b) {
            splice(b, spans: spans, into: &out)
            return out
        }
        var at = 0
        while at < b.count {
            let (end, dataLines) = Self.event(in: b, from: at)
            let e = UnsafeRawBufferPointer(rebasing: b[at..<end])
            if dataLines > 1 {
                appendJoined(event: e, to: &out)
            } else {
                let spans = ReplyStamp.spans(ofEvents: e) ?? []
                splice(e, spans: spans, into: &out)
            }
            at = end
        }
        return out
    }

    // MARK: SSE framing

    /// The end of the event starting at `from` (after its blank line, or the end of the bytes) and
    /// how many `data:` lines it has.
    static func event(in b: UnsafeRawBufferPointer, from: Int) -> (end: Int, dataLines: Int) {
        var lineStart = from
        var dataLines = 0
        while let lf = ByteSearch.index(of: 0x0A, in: b, from: lineStart) {
            let contentEnd = lf > lineStart && b[lf - 1] == 0x0D ? lf - 1 : lf
            if contentEnd == lineStart { return (lf + 1, dataLines) }
            if dataValue(b, lineStart, contentEnd) != nil { dataLines += 1 }
            lineStart = lf + 1
        }
        return (b.count, dataLines)
    }

    /// The value of the first `data:` line in `b[from..<to]`: where it starts and ends.
    private static func dataLine(in b: UnsafeRawBufferPointer, from: Int, to: Int) -> (Int, Int)? {
        var lineStart = from
        while lineStart < to {
            let lf = ByteSearch.index(of: 0x0A, in: b, from: lineStart).map { min($0, to) } ?? to
            let contentEnd = lf > lineStart && lf < b.count && b[lf - 1] == 0x0D ? lf - 1 : lf
            if let v = dataValue(b, lineStart, contentEnd) { return (v, contentEnd) }
            lineStart = lf + 1
        }
        return nil
    }

    /// Where a `data:` line's value starts (after the one optional space), or nil for other lines.
    private static func dataValue(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Int? {
        guard end - start >= 5, b[start] == 0x64, b[start + 1] == 0x61, b[start + 2] == 0x74, b[start + 3] == 0x61,
              b[start + 4] == 0x3A else { return nil }  // "data:"
        return start + 5 < end && b[start + 5] == 0x20 ? start + 6 : start + 5
    }

    /// An event whose data spans several lines: the data joined, stamped, and written back where
    /// the first data line was, one `data:` line per line of the result (LF inside JSON is only
    /// ever whitespace, so the lines join back to the same document). Other lines stay in place.
    private func appendJoined(event e: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        var joined: [UInt8] = []
        var isFirst = true
        var lineStart = 0
        while lineStart < e.count {
            let lf = ByteSearch.index(of: 0x0A, in: e, from: lineStart) ?? e.count
            let contentEnd = lf > lineStart && lf < e.count && e[lf - 1] == 0x0D ? lf - 1 : lf
            if let v = Self.dataValue(e, lineStart, contentEnd) {
                if !isFirst { joined.append(0x0A) }
                isFirst = false
                joined.append(contentsOf: UnsafeRawBufferPointer(rebasing: e[v..<contentEnd]))
            }
            lineStart = lf + 1
        }
        let stamped = stamped(json: joined)
        var wroteData = false
        lineStart = 0
        while lineStart < e.count {
            let lf = ByteSearch.index(of: 0x0A, in: e, from: lineStart) ?? e.count
            let contentEnd = lf > lineStart && lf < e.count && e[lf - 1] == 0x0D ? lf - 1 : lf
            let end = UnsafeRawBufferPointer(rebasing: e[contentEnd..<min(lf + 1, e.count)])
            let terminator = end.isEmpty ? [0x0A] : Array(end)
            if Self.dataValue(e, lineStart, contentEnd) != nil {
                if !wroteData {
                    wroteData = true
                    for (k, line) in stamped.split(separator: 0x0A, omittingEmptySubsequences: false).enumerated() {
                        if k > 0 { out.append(contentsOf: terminator) }
                        out.append(contentsOf: "data: ".utf8)
                        out.append(contentsOf: line)
                    }
                    out.append(contentsOf: terminator)
                }
            } else {
                out.append(contentsOf: UnsafeRawBufferPointer(rebasing: e[lineStart..<min(lf + 1, e.count)]))
            }
            lineStart = lf + 1
        }
    }
}

/// Byte ranges, from an array or read in place from a cache entry's table.
protocol RangeList {
    var count: Int { get }
    func range(_ i: Int) -> Range<Int>
}

extension Array: RangeList where Element == Range<Int> {
    func range(_ i: Int) -> Range<Int> { self[i] }
}

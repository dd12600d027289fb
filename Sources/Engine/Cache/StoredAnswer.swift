// StoredAnswer: a complete answer as the cache keeps it and a flight hands it on — the plain JSON
// body, or a stream's SSE events exactly as they were relayed (usage chunk included, its place
// noted), so storing a stream costs no parse and replaying it to a stream client is a copy. The
// other form is built only when a client asks for it: SSE from JSON (ReplayWriter) or JSON from
// SSE (StreamAssembler). Pure: no I/O.
//
// Cache value format (one byte of tag, then):
//   "J" body                                   a complete JSON answer
//   "S" n:u32 (start:u32 end:u32)×n events     SSE events; the n ranges are usage-only chunks
// Integers are big-endian. Anything else (an older format, garbage) decodes to nil: a miss.
// Pure: no imports, no I/O.

/// A stream's events as relayed, and where its usage-only chunks are (clients that did not ask
/// for usage get the events without them).
struct StreamedAnswer: Equatable {
    var events: [UInt8]
    var usageRanges: [Range<Int>]

    /// The events, without the usage-only chunks unless `includeUsage`. Without them, the chunk
    /// before each takes back the `system_fingerprint` vLLM moved to the usage chunk (as the live
    /// relay does, SSEEventScanner.heldFinal): the stream vLLM sends a client that did not ask.
    func events(includeUsage: Bool) -> [UInt8] {
        guard !includeUsage, !usageRanges.isEmpty else { return events }
        var out: [UInt8] = []
        out.reserveCapacity(events.count + 64)
        var at = 0
        for r in usageRanges {
            let before = previousEventStart(before: r.lowerBound, notBefore: at)
            out += events[at..<before]
            let final = Array(events[before..<r.lowerBound])
            out += Self.withFingerprint(of: events[r], addedTo: final)
            at = r.upperBound
        }
        out += events[at...]
        return out
    }

    /// Where the event that ends at `end` starts (after the blank line before it, or `floor`).
    private func previousEventStart(before end: Int, notBefore floor: Int) -> Int {
        var i = end - 2 // the event's own closing blank line
        while i > floor {
            if events[i - 1] == 0x0A && (events[i] == 0x0A || (events[i] == 0x0D && i + 1 < end && events[i + 1] == 0x0A)) {
                return events[i] == 0x0A ? i + 1 : i + 2
            }
            i -= 1
        }
        return floor
    }

    /// `final` with the usage chunk's fingerprint, when `final` finished a choice and has none.
    private static func withFingerprint(of usage: ArraySlice<UInt8>, addedTo final: [UInt8]) -> [UInt8] {
        guard !final.isEmpty,
              let (u, _) = Array(usage).withUnsafeBytes({ SSEEventScanner.inspectData($0) }), let fp = u.fingerprint,
              let (f, single) = final.withUnsafeBytes({ SSEEventScanner.inspectData($0) }),
              single, f.kind == .object, f.choicesFinished != 0, f.fingerprint == nil else { return final }
        return SSEEventScanner.adding(fingerprint: fp, to: final)
    }

    /// The equivalent non-streaming body; nil when it cannot be rebuilt faithfully.
    func completeBody() -> [UInt8]? {
        var a = StreamAssembler()
        a.feed(events)
        return a.completeBody()
    }
}

enum StoredAnswer: Equatable {
    case json([UInt8])
    case stream(StreamedAnswer)

    private static let jsonTag = UInt8(ascii: "J")
    private static let streamTag = UInt8(ascii: "S")

    /// The bytes a client gets in the form it asked for: SSE events (stream) or a JSON body; nil
    /// when this answer cannot be given in that form (then it is a miss for this client).
    func reply(stream: Bool, includeUsage: Bool) -> [UInt8]? {
        switch self {
        case .json(let body):
            return stream ? ReplayWriter.sse(fromCompleteBody: body, includeUsage: includeUsage) : body
        case .stream(let s):
            return stream ? s.events(includeUsage: includeUsage) : s.completeBody()
        }
    }

    func encoded() -> [UInt8] {
        switch self {
        case .json(let body):
            var out: [UInt8] = [Self.jsonTag]
            out.reserveCapacity(1 + body.count)
            out += body
            return out
        case .stream(let s):
            var out: [UInt8] = [Self.streamTag]
            out.reserveCapacity(5 + 8 * s.usageRanges.count + s.events.count)
            Self.append(&out, s.usageRanges.count)
            for r in s.usageRanges {
                Self.append(&out, r.lowerBound)
                Self.append(&out, r.upperBound)
            }
            out += s.events
            return out
        }
    }

    static func decode(_ bytes: [UInt8]) -> StoredAnswer? {
        guard let tag = bytes.first else { return nil }
        switch tag {
        case jsonTag:
            guard bytes.count > 1 else { return nil }
            return .json(Array(bytes[1...]))
        case streamTag:
            var at = 1
            guard let n = read(bytes, &at), n <= (bytes.count - at) / 8 else { return nil }
            var ranges: [Range<Int>] = []
            ranges.reserveCapacity(n)
            for _ in 0..<n {
                guard let lo = read(bytes, &at), let hi = read(bytes, &at) else { return nil }
                ranges.append(lo..<max(lo, hi))
            }
            let events = Array(bytes[at...])
            // Ranges in order, inside the events, not overlapping.
            var last = 0
            for r in ranges {
                guard r.lowerBound >= last, r.upperBound <= events.count else { return nil }
                last = r.upperBound
            }
            guard !events.isEmpty else { return nil }
            return .stream(StreamedAnswer(events: events, usageRanges: ranges))
        default:
            return nil
        }
    }

    private static func append(_ out: inout [UInt8], _ v: Int) {
        let u = UInt32(truncatingIfNeeded: v)
        out += [UInt8(u >> 24), UInt8(truncatingIfNeeded: u >> 16), UInt8(truncatingIfNeeded: u >> 8), UInt8(truncatingIfNeeded: u)]
    }

    private static func read(_ b: [UInt8], _ at: inout Int) -> Int? {
        guard b.count - at >= 4 else { return nil }
        let v = Int(b[at]) << 24 | Int(b[at + 1]) << 16 | Int(b[at + 2]) << 8 | Int(b[at + 3])
        at += 4
        return v
    }
}

// StreamRelay: what the Engine does with each upstream read of an SSE answer (style A, a pure
// value; the session performs its output). Per read: the whole events it completes (a partial event
// waits for its end), for the flight (every event) and, as pieces of the same bytes, for this client
// (minus the usage-only chunk unless the client asked for usage), which go out in one write; the recording
// for the cache and plain followers (events as relayed, usage chunks noted, bounded); the usage
// counts; and whether the stream broke (an event that is not SSE JSON, or too long).
// Backpressure (pause the upstream while the client is slow) is RequestMachine's decision.
// Pure: no imports, no I/O.

struct StreamRelay {
    /// Past this the stream is still relayed, but not recorded: not cached, not shared as whole.
    static let maxRecordedBytes = 8 << 20
    /// The recording's first room once it needs its own buffer (see `read`).
    static let recordingFloorBytes = 16 << 10

    /// Capacity for `needed` elements that leaves room ahead: twice as many, at least `floor`.
    static func roomAhead(for needed: Int, floor: Int) -> Int { Swift.max(floor, 2 * needed) }

    let includeUsage: Bool
    let records: Bool
    /// Bytes relayed as they come, unread (a relayed route's stream, e.g. the Responses API's
    /// `event:` framing): nothing recorded, no events checked; complete when the upstream ends.
    let passthrough: Bool
    private(set) var scanner: SSEEventScanner
    /// Every whole event of the last read (usage chunks included): what followers relay.
    private(set) var events: [UInt8] = []
    private(set) var recording: [UInt8] = []
    private(set) var usageRanges: [Range<Int>] = []
    /// The recording's id and created values (SSEEventScanner.identitySpansInAll), nil when the
    /// scanner could not tell them.
    private var identitySpans: [Range<Int>] = []
    private(set) var recordingOverflowed = false
    /// `events` is the recording's buffer too (the first read's events become the recording).
    private var eventsShared = false

    enum Read: Equatable {
        /// Relay `clientEvents` (possibly empty: the read completed no event).
        case relay
        /// An event that cannot be relayed: the stream is broken (nothing of it is whole).
        case broken
    }

    init(includeUsage: Bool, records: Bool, maxEventBytes: Int, passthrough: Bool = false) {
        self.includeUsage = includeUsage
        self.records = records && !passthrough
        self.passthrough = passthrough
        self.scanner = SSEEventScanner(maxEventBytes: maxEventBytes, findsIdentity: records && !passthrough)
    }

    /// The last read's events in this client's form, copied (`withClientEvents` lends them).
    var clientEvents: [UInt8] {
        guard !(includeUsage || passthrough) else { return events }
        var out: [UInt8] = []
        scanner.appendClientEvents(of: events, to: &out)
        return out
    }

    /// Whether the last read has anything for this client.
    var hasClientEvents: Bool { includeUsage || passthrough ? !events.isEmpty : !scanner.clientPieces.isEmpty }

    /// Calls `body` with the last read's events in this client's form, as pieces to write in
    /// order: `events` itself, or (the client did not ask for usage) the scanner's pieces of it
    /// and of the chunks it released. No copy. (Mutating only to be lent in place: called
    /// non-mutating through the session's machine, the relay's ~230 bytes were copied per read.)
    mutating func withClientEvents<R>(_ body: (UnsafeBufferPointer<UnsafeRawBufferPointer>) -> R) -> R {
        // One buffer: all of `events`, or its one piece (a read of token chunks, the usual case),
        // lent without the pieces' table or the released bytes (a retain and release each).
        var whole: Range<Int>?
        if includeUsage || passthrough {
            whole = 0..<events.count
        } else if scanner.clientPieces.count == 1, case .all(let r) = scanner.clientPieces[0] {
            whole = r
        }
        if let r = whole {
            // Lent mutably (nothing is written): lent read-only from inout storage, the buffer
            // was retained and released around the call. Not when the recording shares it (the
            // first read's events): a mutable loan would copy it.
            if eventsShared { return events.withUnsafeBytes { Self.lend(UnsafeRawBufferPointer(rebasing: $0[r]), body) } }
            return events.withUnsafeMutableBytes { Self.lend(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer($0)[r]), body) }
        }
        let pieces = scanner.clientPieces
        return events.withUnsafeBytes { e in
            scanner.released.withUnsafeBytes { x in
                withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: pieces.count) { out in
                    for (i, p) in pieces.enumerated() {
                        switch p {
                        case .all(let r): out.initializeElement(at: i, to: UnsafeRawBufferPointer(rebasing: e[r]))
                        case .released(let r): out.initializeElement(at: i, to: UnsafeRawBufferPointer(rebasing: x[r]))
                        }
                    }
                    return body(UnsafeBufferPointer(out))
                }
            }
        }
    }

    /// `body` with `bytes` as the one piece.
    private static func lend<R>(_ bytes: UnsafeRawBufferPointer, _ body: (UnsafeBufferPointer<UnsafeRawBufferPointer>) -> R) -> R {
        withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: 1) { one in
            one.initializeElement(at: 0, to: bytes)
            return body(UnsafeBufferPointer(one))
        }
    }

    var sawDone: Bool { scanner.sawDone }
    var sawError: Bool { scanner.sawError }
    var usage: UpstreamJSON.Usage? { scanner.usage }

    mutating func read(_ bytes: UnsafeRawBufferPointer) -> Read {
        events.removeAll(keepingCapacity: true)
        eventsShared = false
        if passthrough {
            events.append(contentsOf: bytes)
            return .relay
        }
        let invalidBefore = scanner.invalidEvents
        // Room for everything this read can complete (the held partial event and the read), so
        // `events` is allocated once: the scanner appends in runs (up to a final or usage chunk,
        // then the rest), and the second run grew the buffer and copied the first (a whole
        // stream's ~11 KB per one-read stream).
        events.reserveCapacity(scanner.pendingBytes + bytes.count)
        scanner.feed(bytes, all: &events, filterUsage: !includeUsage)
        if records && !recordingOverflowed && !events.isEmpty {
            if recording.count + events.count > Self.maxRecordedBytes {
                recordingOverflowed = true
                recording = []
                usageRanges = []
                identitySpans = []
            } else if recording.isEmpty {
                // The first read's events become the recording as they are (a value: no copy; the
                // next read's `events` starts a buffer of its own), and so do their ranges. A
                // stream that comes whole in one read, the common case, is never copied to be
                // recorded.
                recording = events
                eventsShared = true
                usageRanges = scanner.usageRangesInAll
                identitySpans = scanner.identitySpansInAll
            } else {
                let base = recording.count
                // Room ahead of need, from 16 KiB (a typical answer whole): vLLM sends an event
                // a read, and growing from the first read's size reallocated and copied the
                // recording ~5 times a stream (its spans ~3 times more).
                if recording.capacity < base + events.count {
                    recording.reserveCapacity(Self.roomAhead(for: base + events.count, floor: Self.recordingFloorBytes))
                }
                let spans = identitySpans.count + scanner.identitySpansInAll.count
                if identitySpans.capacity < spans { identitySpans.reserveCapacity(Self.roomAhead(for: spans, floor: 128)) }
                for r in scanner.usageRangesInAll { usageRanges.append((base + r.lowerBound)..<(base + r.upperBound)) }
                for r in scanner.identitySpansInAll { identitySpans.append((base + r.lowerBound)..<(base + r.upperBound)) }
                recording += events
            }
        }
        return scanner.invalidEvents > invalidBefore ? .broken : .relay
    }

    /// The whole stream as recorded, when it is a complete answer (SSEEventScanner.isWholeAnswer:
    /// [DONE], every choice finished, no error, nothing invalid) not too long to keep.
    var answer: StreamedAnswer? {
        guard records, scanner.isWholeAnswer, !recordingOverflowed, !recording.isEmpty else { return nil }
        return StreamedAnswer(events: recording, usageRanges: usageRanges,
                              identitySpans: scanner.identityKnown ? identitySpans : nil)
    }
}

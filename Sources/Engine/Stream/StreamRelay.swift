// StreamRelay: what the Engine does with each upstream read of an SSE answer (style A, a pure
// value; the session performs its output). Per read: the whole events it completes (a partial event
// waits for its end), once for the flight (every event) and once for this client (minus the
// usage-only chunk unless the client asked for usage), which go out in one write; the recording
// for the cache and plain followers (events as relayed, usage chunks noted, bounded); the usage
// counts; and whether the stream broke (an event that is not SSE JSON, or too long).
// Backpressure (pause the upstream while the client is slow) is RequestMachine's decision.
// Pure: no imports, no I/O.

struct StreamRelay {
    /// Past this the stream is still relayed, but not recorded: not cached, not shared as whole.
    static let maxRecordedBytes = 8 << 20

    let includeUsage: Bool
    let records: Bool
    /// Bytes relayed as they come, unread (a relayed route's stream, e.g. the Responses API's
    /// `event:` framing): nothing recorded, no events checked; complete when the upstream ends.
    let passthrough: Bool
    private(set) var scanner: SSEEventScanner
    /// Every whole event of the last read (usage chunks included): what followers relay.
    private(set) var events: [UInt8] = []
    /// The last read's events without usage-only chunks (only filled when the client did not ask).
    private var eventsWithoutUsage: [UInt8] = []
    private(set) var recording: [UInt8] = []
    private(set) var usageRanges: [Range<Int>] = []
    /// The recording's id and created values (SSEEventScanner.identitySpansInAll), nil when the
    /// scanner could not tell them.
    private var identitySpans: [Range<Int>] = []
    private(set) var recordingOverflowed = false

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

    /// The last read's events in this client's form.
    var clientEvents: [UInt8] { includeUsage || passthrough ? events : eventsWithoutUsage }

    var sawDone: Bool { scanner.sawDone }
    var sawError: Bool { scanner.sawError }
    var usage: UpstreamJSON.Usage? { scanner.usage }

    mutating func read(_ bytes: UnsafeRawBufferPointer) -> Read {
        events.removeAll(keepingCapacity: true)
        eventsWithoutUsage.removeAll(keepingCapacity: true)
        if passthrough {
            events.append(contentsOf: bytes)
            return .relay
        }
        let invalidBefore = scanner.invalidEvents
        scanner.feed(bytes, all: &events, withoutUsage: &eventsWithoutUsage, filterUsage: !includeUsage)
        if records && !recordingOverflowed && !events.isEmpty {
            if recording.count + events.count > Self.maxRecordedBytes {
                recordingOverflowed = true
                recording = []
                usageRanges = []
                identitySpans = []
            } else {
                let base = recording.count
                for r in scanner.usageRangesInAll { usageRanges.append((base + r.lowerBound)..<(base + r.upperBound)) }
                for r in scanner.identitySpansInAll { identitySpans.append((base + r.lowerBound)..<(base + r.upperBound)) }
                // The first read's events become the recording as they are (a value: no copy; the
                // next read's `events` starts a buffer of its own). A stream that comes whole in
                // one read, the common case, is never copied to be recorded.
                if recording.isEmpty { recording = events } else { recording += events }
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

// Flight: what the CoalescerDriver keeps for one running flight beside the machine's table — the
// SSE events relayed so far (to replay to a late live joiner), the live followers to fan out to,
// the Redis publisher (this process leads) or reader (another process leads) and, for a remote
// source, what has been read of its answer. Owned by CoalescerDriver.flights from the flight's
// first action to its ending; nothing outlives the ending (the outcome goes to each follower as
// a value). CachePlan is the Frontend's per-request cache decision.

final class Flight {
    let id: CoalescerMachine.FlightID
    let key: String
    /// Every whole SSE event so far, usage chunk included (bounded: past the cap, late joiners wait).
    private(set) var recorded: [UInt8] = []
    private(set) var recordingOverflowed = false
    /// Past this, late joiners wait for the ending (converted) instead of going live: a flight
    /// keeps at most this much of its stream (it is memory a stalled client also pins).
    static let maxRecordedBytes = 256 << 10
    /// The session of this process that calls upstream for the flight (nil: another process does).
    var leader: CoalescerMachine.RequestID?
    /// Followers relaying the stream as it comes, each with the id and created its copy carries.
    var live: [LiveFollower] = []

    struct LiveFollower {
        let session: RequestSession
        let stamp: ReplyStamp
    }
    /// This process leads across processes: the answer goes to Redis too.
    var publisher: RemoteFlightPublisher?
    /// Another process leads: its answer is read from Redis.
    var reader: RemoteFlightReader?
    /// A remote source's answer as read so far.
    var remote = RemoteAnswer()

    struct RemoteAnswer {
        var contentType = "application/json"
        /// The remote stream re-checked and recorded (for plain and late followers); nil until
        /// the head says the answer is a stream (most flights never have a remote source).
        var relay: StreamRelay?
        var isStream: Bool { relay != nil }
    }

    init(id: CoalescerMachine.FlightID, key: String) {
        self.id = id
        self.key = key
    }

    /// True when recording `count` more bytes would overflow the recording now.
    func wouldOverflow(_ count: Int) -> Bool { !recordingOverflowed && recorded.count + count > Flight.maxRecordedBytes }

    /// Records whole events; false the first time the recording overflows. The first read's
    /// events are kept as the array they came in (a value: no copy; a stream that comes in one
    /// read is never copied for the flight).
    func record(_ events: [UInt8]) -> Bool {
        guard !recordingOverflowed else { return true }
        if recorded.count + events.count > Flight.maxRecordedBytes {
            recordingOverflowed = true
            recorded = []
            return false
        }
        if recorded.isEmpty {
            recorded = events
        } else {
            // Room ahead from 16 KiB, as StreamRelay's recording: growing from the first read's
            // size reallocated and copied the recording ~5 times for a stream of an event a read.
            if recorded.capacity < recorded.count + events.count {
                recorded.reserveCapacity(Swift.min(Flight.maxRecordedBytes,
                                                   StreamRelay.roomAhead(for: recorded.count + events.count, floor: StreamRelay.recordingFloorBytes)))
            }
            recorded += events
        }
        return true
    }

    /// The answer a flight ended with, as handed to each follower.
    enum Outcome: Equatable {
        /// A whole non-SSE answer (status, content type, body).
        case buffered(status: Int, contentType: String, body: [UInt8])
        /// The stream ended with [DONE]; its events when they are a whole answer (nil: followers
        /// that did not relay it live call upstream themselves).
        case streamed(StreamedAnswer?)
        /// The leader failed: its status and OpenAI error body (and Retry-After when it had one).
        case failed(status: Int, body: [UInt8], retryAfterSeconds: Int?)
        /// The leader gave up without an answer (its client left while nobody followed): the
        /// followers that arrived meanwhile look again.
        case abandoned

        static func failed(_ e: EngineError) -> Outcome {
            .failed(status: e.status, body: e.jsonBody, retryAfterSeconds: e.retryAfterSeconds)
        }

        var ending: CoalescerMachine.Ending {
            switch self {
            case .failed: return .failed
            case .abandoned: return .lost
            case .buffered, .streamed: return .answered
            }
        }
    }
}

/// What the cache and the coalescer may do for one request (decided by the Frontend).
struct CachePlan {
    /// The canonical key; nil when the request is not cacheable (then nothing below applies).
    var key: String?
    /// Look the cache up (false with Cache-Control: no-cache or no-store).
    var lookup: Bool
    /// Store a complete answer (false with Cache-Control: no-store).
    var store: Bool
    /// Follow an identical request in flight (false with no-cache or no-store: such a request
    /// wants an answer made for it).
    var follow: Bool
    /// Lead a flight others may follow (false with no-store).
    var lead: Bool

    var coalesces: Bool { key != nil && (follow || lead) }

    static let bypass = CachePlan(key: nil, lookup: false, store: false, follow: false, lead: false)
}

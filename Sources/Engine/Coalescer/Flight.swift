// Flight: one upstream call shared by identical requests inside this process (single-flight).
// The leader's session relays upstream bytes and records them here; followers either follow the
// stream live (same `stream` and usage options, so the bytes fit them exactly) or receive the
// outcome when the leader ends, converted to their form (JSON <-> SSE replay).
// Owns: the leader session (strongly, so a leader whose client left keeps generating while
// followers remain) and the followers. EngineRuntime.flights owns the flight until the leader ends.

final class Flight {
    let key: String
    let leader: RequestSession
    private(set) var followers: [RequestSession] = []
    /// The leader's upstream answered with an SSE 200 (followers that fit may go live).
    private(set) var isStreaming = false
    /// Every SSE byte relayed so far, for late live joiners (bounded: past the cap, new followers
    /// wait for the outcome instead).
    private(set) var streamed: [UInt8] = []
    private(set) var streamedOverflow = false
    static let maxRecordedBytes = 8 << 20
    private(set) var outcome: Outcome?

    enum Outcome {
        /// A whole non-SSE answer (status, content type, body), as relayed to the leader.
        case buffered(status: Int, contentType: String, body: [UInt8])
        /// The stream ended with [DONE]; the equivalent JSON body when it could be rebuilt.
        case streamed(completeBody: [UInt8]?)
        /// The leader failed (before or during the stream).
        case failed(EngineError)
    }

    init(key: String, leader: RequestSession) {
        self.key = key
        self.leader = leader
    }

    func add(_ follower: RequestSession) {
        followers.append(follower)
        if isStreaming { follower.flightStreamStarted(self) }
    }

    func remove(_ follower: RequestSession) { followers.removeAll { $0 === follower } }

    // MARK: fed by the leader

    func streamStarted() {
        isStreaming = true
        for f in followers { f.flightStreamStarted(self) }
    }

    func chunk(_ bytes: UnsafeRawBufferPointer) {
        if !streamedOverflow {
            if streamed.count + bytes.count > Flight.maxRecordedBytes {
                streamedOverflow = true
                streamed = []
            } else {
                streamed.append(contentsOf: bytes)
            }
        }
        for f in followers { f.flightChunk(bytes) }
    }

    func finish(_ o: Outcome) {
        outcome = o
        let fs = followers
        followers = []
        for f in fs { f.flightFinished(self) }
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
    /// Share identical in-flight requests.
    var coalesce: Bool

    static let bypass = CachePlan(key: nil, lookup: false, store: false, coalesce: false)
}

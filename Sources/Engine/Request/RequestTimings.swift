// RequestTimings: when things happened to one request, for its metrics and access line — start,
// first byte to the client, time spent with the upstream and in admission queues, the gap between
// relayed chunks. The driver passes the clock in; this only keeps the sums.
// Pure: no imports, no I/O.

struct RequestTimings {
    let start: UInt64
    /// When the client got its first byte (0: not yet).
    private(set) var firstByte: UInt64 = 0
    /// Upstream exchanges, summed (a retried request has several).
    private(set) var upstream: UInt64 = 0
    /// Admission queue waits, summed.
    private(set) var queued: UInt64 = 0
    private var upstreamStart: UInt64 = 0
    private var queuedAt: UInt64 = 0
    private var lastChunk: UInt64 = 0

    init(start: UInt64) { self.start = start }

    mutating func firstByte(at now: UInt64) {
        if firstByte == 0 { firstByte = now }
    }

    mutating func upstreamStarted(at now: UInt64) { upstreamStart = now }

    /// Closes the current upstream exchange (if one is open).
    mutating func upstreamEnded(at now: UInt64) {
        guard upstreamStart > 0 else { return }
        upstream += now &- upstreamStart
        upstreamStart = 0
    }

    mutating func enqueued(at now: UInt64) { queuedAt = now }

    /// In the admission queue now (`dequeued` will report a wait).
    var isQueued: Bool { queuedAt > 0 }

    /// Leaves the admission queue; the wait, if the request was queued.
    mutating func dequeued(at now: UInt64) -> UInt64? {
        guard queuedAt > 0 else { return nil }
        let waited = now &- queuedAt
        queued += waited
        queuedAt = 0
        return waited
    }

    /// A chunk was relayed; the gap since the previous one, if any.
    mutating func chunk(at now: UInt64) -> UInt64? {
        defer { lastChunk = now }
        return lastChunk > 0 ? now &- lastChunk : nil
    }
}

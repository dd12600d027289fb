// SSEEventScanner: splits a relayed SSE byte stream into whole events, whatever the read
// boundaries, and reads each event's `data` with the JSON parser (UpstreamJSON): usage, error
// events, [DONE], invalid payloads. It hands back whole events only (a partial event is held
// until it completes): every event, and when asked where the events for a client that did not ask
// for usage lie (every event but the usage-only chunk, as pieces of the first output: the Engine
// always asks vLLM for usage). Events after [DONE] are dropped. Pure value: no I/O. Lines end in
// LF or CRLF; an empty line ends an event.
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
    /// When filtering usage: the last chunk that finished a choice, held back from the client's
    /// events until the next event. vLLM moves `system_fingerprint` from that chunk to the usage
    /// chunk when usage is asked for (and the Engine always asks); a client that did not ask gets
    /// it back in that chunk, where vLLM would have sent it (issue 12 item 8).
    private var heldFinal: Held?
    private var heldHasFingerprint = false

    /// Where a held final chunk is: in this feed's `all` (no copy while the feed lasts), or
    /// copied, from an earlier feed.
    private enum Held {
        case inAll(Range<Int>)
        case bytes([UInt8])
    }

    /// When filtering usage: the last feed's events in the client's form, in order, as pieces of
    /// that feed's `all` (indexes of the whole array) and of `released` (a final chunk held over
    /// from an earlier feed, or given the usage chunk's fingerprint). Every event but the
    /// usage-only chunks, without a copy of the rest.
    public private(set) var clientPieces: [ClientPiece] = []
    public private(set) var released: [UInt8] = []

    public enum ClientPiece: Equatable, Sendable {
        case all(Range<Int>)
        case released(Range<Int>)
    }

    public init(maxEventBytes: Int = 1 << 20, findsIdentity: Bool = false) {
        self.maxEventBytes = maxEventBytes
        self.findsIdentity = findsIdentity
    }

    /// Bytes held back because their event is not complete.
    public var pendingBytes: Int { partial.count }
    /// Bytes of a whole final chunk held back from the client's events (see `heldFinal`).
    public var heldFinalBytes: Int {
        switch heldFinal {
        case .inAll(let r)?: return r.count
        case .bytes(let b)?: return b.count
        case nil: return 0
        }
    }

    /// Appends the whole events completed by `bytes` to `all`, and (when `filterUsage`) the same
    /// minus usage-only chunks to `withoutUsage`.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer, all: inout [UInt8], withoutUsage: inout [UInt8],
                              filterUsage: Bool) {
        feed(bytes, all: &all, filterUsage: filterUsage)
        if filterUsage { appendClientEvents(of: all, to: &withoutUsage) }
    }

    /// The last feed's events in the client's form (`clientPieces`), appended to `out`; `all` is
    /// what that feed appended to.
    public func appendClientEvents(of all: [UInt8], to out: inout [UInt8]) {
        for p in clientPieces {
            switch p {
            case .all(let r): out.append(contentsOf: all[r])
            case .released(let r): out.append(contentsOf: released[r])
            }
        }
    }

    /// Appends the whole events completed by `bytes` to `all`, and (when `filterUsage`) notes in
    /// `clientPieces` where the same minus usage-only chunks lie.
    ///
    /// An event held from earlier reads is completed first and read on its own. Then, in three
    /// passes over the rest of the read: its events are found (line ends with memchr, each
    /// `data:` line noted on the way); the data of every event with one data line (vLLM's case)
    /// is read by the parser in one call for the whole read (UpstreamJSON.withReadings); then
    /// each event is applied in order (`apply`), and the events kept go to `all` a contiguous run
    /// at a time. An event whose data spans several lines is read on its own; the outcome is the
    /// same as reading every event on its own (`readsEachEvent`, which the tests compare with).
    public mutating func feed(_ bytes: UnsafeRawBufferPointer, all: inout [UInt8], filterUsage: Bool) {
        usageRangesInAll.removeAllKeepingCapacity()
        identitySpansInAll.removeAllKeepingCapacity()
        if filterUsage {
            // A read of token chunks leaves one piece: removeLast drops it in place, where
            // removeAll(keepingCapacity:) went through the generic replaceSubrange.
            if clientPieces.count == 1 {
                clientPieces.removeLast()
            } else {
                clientPieces.removeAllKeepingCapacity()
            }
            released.removeAllKeepingCapacity()
        }
        var sink = Sink(filterUsage: filterUsage)
        let n = bytes.count
        var start = 0
        if !partial.isEmpty {
            // The event held from earlier reads (never after [DONE]: its tail would have been dropped).
            guard let end = endOfHeldEvent(bytes) else {
                hold(bytes, from: 0)
                return
            }
            partial.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[..<end]))
            let ev = partial
            partial.removeAll(keepingCapacity: true)
            ev.withUnsafeBytes { applyAlone($0, sink: &sink, all: &all) }
            start = end
        }
        // The read's events, on the stack while they fit (a read of one event, vLLM's way of
        // sending a token, allocates nothing), then in memory grown by hand.
        withUnsafeTemporaryAllocation(of: Found.self, capacity: 16) { stack in
            var found = ScratchList(stack: stack, thenRoomFor: n >> 7 + 2)  // vLLM's events are ~200 bytes
            defer { found.free() }
            start = Self.findEvents(bytes, from: start, into: &found)
            if found.count == 1 {
                // One event is read on its own, without the batch call.
                let f = found.buffer[0]
                let ev = UnsafeRawBufferPointer(rebasing: bytes[f.start..<f.end])
                if f.dataLines == 1 && !sawDone && !readsEachEvent {
                    let data = UnsafeRawBufferPointer(rebasing: bytes[f.data])
                    let r = UpstreamJSON.read(data)
                    if r.isPlainChunk && heldFinal == nil {
                        // A token's chunk (a real stream's reads are one each): what the batch's
                        // short path does for it, where `apply` cost several times as much.
                        let at = sink.allCount(all)
                        if findsIdentity { noteIdentity(data, members: r.identityMembers, at: at &+ f.data.lowerBound &- f.start) }
                        choicesSeen |= r.choicesSeen
                        var runStart = f.start
                        addRun(&runStart, f.end, at, bytes, sink: &sink, all: &all)
                    } else {
                        apply(ev, at: f.start, r, dataLine: (f.data.lowerBound - f.start)..<(f.data.upperBound - f.start),
                              sink: &sink, src: bytes, all: &all)
                    }
                } else {
                    applyAlone(ev, at: f.start, sink: &sink, src: bytes, all: &all)
                }
            } else if found.count > 1 {
                applyBatch(found.buffer, bytes, sink: &sink, all: &all)
            }
        }
        sink.flush(bytes, all: &all)
        if filterUsage { flushClientRun(&sink) }
        // A final chunk still held when the read ends is copied: `all` is the caller's.
        if case .inAll(let r)? = heldFinal { heldFinal = .bytes(Array(all[r])) }
        if start < n && sawDone {
            bytesDroppedAfterDone += n - start
        } else if start < n {
            hold(bytes, from: start)
        }
    }

    /// The read's events (several), their data read in one batch, applied in order.
    private mutating func applyBatch(_ found: UnsafeBufferPointer<Found>, _ bytes: UnsafeRawBufferPointer,
                                     sink: inout Sink, all: inout [UInt8]) {
        if findsIdentity { identitySpansInAll.reserveCapacity(2 * found.count) }
        if readsEachEvent || sawDone {
            // (After [DONE] every event is dropped unread.)
            for f in found {
                let ev = UnsafeRawBufferPointer(rebasing: bytes[f.start..<f.end])
                applyAlone(ev, at: f.start, sink: &sink, src: bytes, all: &all)
            }
            return
        }
        withUnsafeTemporaryAllocation(of: Range<Int>.self, capacity: 32) { stack in
            var dataSpans = ScratchList(stack: stack, thenRoomFor: found.count)
            defer { dataSpans.free() }
            for f in found where f.dataLines == 1 { dataSpans.append(f.data) }
            UpstreamJSON.withReadings(of: dataSpans.buffer, in: bytes) { readings, _ in
                var k = 0
                // Token chunks in a row (a read's events lie end to end): their bytes from
                // `runStart` to `runEnd`, kept as one piece, landing at `runAt` in `all`.
                var runStart = -1
                var runEnd = 0
                var runAt = 0
                for f in found {
                    if f.dataLines == 1 {
                        // Read where it lies: the fast path reads a few fields of it, where a
                        // copy of the whole reading (~110 bytes) cost more than those reads.
                        let r = readings.baseAddress.unsafelyUnwrapped + k
                        k &+= 1
                        // A token's chunk (nearly every event), before [DONE] and with no final
                        // chunk held: only its choices count, and it goes out as it came. The
                        // rest of `apply` would decide the same, at several times the cost.
                        if r.pointee.isPlainChunk && !sawDone && heldFinal == nil {
                            if runStart < 0 || runEnd != f.start {
                                addRun(&runStart, runEnd, runAt, bytes, sink: &sink, all: &all)
                                runStart = f.start
                                runAt = sink.allCount(all)
                            }
                            if findsIdentity {
                                noteIdentity(UnsafeRawBufferPointer(rebasing: bytes[f.data]), members: r.pointee.identityMembers,
                                             at: runAt &+ f.data.lowerBound &- runStart)
                            }
                            choicesSeen |= r.pointee.choicesSeen
                            runEnd = f.end
                            continue
                        }
                        addRun(&runStart, runEnd, runAt, bytes, sink: &sink, all: &all)
                        let ev = UnsafeRawBufferPointer(rebasing: bytes[f.start..<f.end])
                        apply(ev, at: f.start, r.pointee, dataLine: (f.data.lowerBound - f.start)..<(f.data.upperBound - f.start),
                              sink: &sink, src: bytes, all: &all)
                        continue
                    }
                    addRun(&runStart, runEnd, runAt, bytes, sink: &sink, all: &all)
                    let ev = UnsafeRawBufferPointer(rebasing: bytes[f.start..<f.end])
                    if f.dataLines == 0 {
                        apply(ev, at: f.start, nil, dataLine: nil, sink: &sink, src: bytes, all: &all)
                    } else {
                        applyAlone(ev, at: f.start, sink: &sink, src: bytes, all: &all)
                    }
                }
                addRun(&runStart, runEnd, runAt, bytes, sink: &sink, all: &all)
            }
        }
    }

    /// Token chunks in a row (`bytes[start..<end]`, landing at `at` in `all`) go out as each
    /// would: to `all`, and to the client; then no run is open (`start` -1).
    private mutating func addRun(_ start: inout Int, _ end: Int, _ at: Int, _ bytes: UnsafeRawBufferPointer,
                                 sink: inout Sink, all: inout [UInt8]) {
        guard start >= 0 else { return }
        sink.add(start..<end, bytes, &all)
        if sink.filterUsage { addClient(at..<(at + end - start), &sink) }
        start = -1
    }

    /// Appends the whole events of `b[from...]` to `found` (no event is held from earlier reads);
    /// returns where the last one ends. Lines end in LF; an empty line (LF or CR LF) ends an event,
    /// and one with no event in progress (one more after an event's end) is an event of its own.
    private static func findEvents(_ b: UnsafeRawBufferPointer, from: Int, into found: inout ScratchList<Found>) -> Int {
        let n = b.count
        var i = from
        var start = from
        var dataLines = 0
        var data = 0..<0
        while i < n {
            // An event's blank line right after its data line (vLLM's `\n\n`) is found without a
            // search: a memchr call per line cost more than the byte it reads.
            let lf: Int
            if b[i] == 0x0A {
                lf = i
            } else if let next = ByteSearch.index(of: 0x0A, in: b, from: i) {
                lf = next
            } else {
                break
            }
            let length = lf &- i
            if length == 0 || (length == 1 && b[i] == 0x0D) {
                found.append(Found(start: start, end: lf &+ 1, dataLines: dataLines, data: data))
                start = lf &+ 1
                dataLines = 0
                data = 0..<0
            } else if let v = Found.dataValue(b, i..<lf) {
                dataLines = dataLines &+ 1
                data = v
            }
            i = lf &+ 1
        }
        return start
    }

    /// Holds `bytes[from...]`, the start of an event whose end has not arrived.
    private mutating func hold(_ bytes: UnsafeRawBufferPointer, from: Int) {
        partial.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[from...]))
        if partial.count > maxEventBytes {
            // Too long to be a real event: drop what we hold and count it as invalid.
            invalidEvents += 1
            partial = []
        }
    }

    /// Where the held event ends in `bytes` (after the LF of its empty line), or nil.
    private func endOfHeldEvent(_ bytes: UnsafeRawBufferPointer) -> Int? {
        var i = 0
        while let lf = ByteSearch.index(of: 0x0A, in: bytes, from: i) {
            if isStrayBlankLine(bytes, from: 0, to: lf) || endsEvent(bytes, at: lf) { return lf + 1 }
            i = lf + 1
        }
        return nil
    }

    /// Read every event on its own (one parser call each) through `apply`, as before batches and
    /// without the token chunk's short path: for tests that compare the two.
    var readsEachEvent = false

    /// A list of plain values for the length of one feed: first in the caller's stack space, then
    /// in memory grown by hand. An append is a store, without an array's uniqueness check and
    /// bookkeeping (two of them per event cost more than finding the event). The owner calls
    /// `free`. Only for trivial values (Ints and ranges of them; Range is not marked
    /// BitwiseCopyable): nothing is deinitialized.
    private struct ScratchList<Element> {
        private var base: UnsafeMutablePointer<Element>
        private(set) var count = 0
        private var capacity: Int
        private var onHeap = false
        /// Room taken when the stack space is full.
        private let hint: Int

        init(stack: UnsafeMutableBufferPointer<Element>, thenRoomFor hint: Int) {
            base = stack.baseAddress!
            capacity = stack.count
            self.hint = hint
        }

        var buffer: UnsafeBufferPointer<Element> { UnsafeBufferPointer(start: base, count: count) }

        @inline(__always)
        mutating func append(_ x: Element) {
            if count == capacity { grow() }
            (base + count).initialize(to: x)
            count &+= 1
        }

        private mutating func grow() {
            let room = Swift.max(2 * capacity, hint)
            let b = UnsafeMutablePointer<Element>.allocate(capacity: room)
            b.initialize(from: base, count: count)
            if onHeap { base.deallocate() }
            base = b
            capacity = room
            onHeap = true
        }

        func free() { if onHeap { base.deallocate() } }
    }

    /// One whole event in the read: its bytes, and its `data:` lines (the value of the only one).
    private struct Found {
        let start: Int
        var end = 0
        var dataLines = 0
        var data = 0..<0

        init(start: Int) { self.start = start }

        init(start: Int, end: Int, dataLines: Int, data: Range<Int>) {
            self.start = start
            self.end = end
            self.dataLines = dataLines
            self.data = data
        }

        /// Notes the line `b[line]` (its LF excluded) when it is a `data:` line.
        mutating func noteLine(_ b: UnsafeRawBufferPointer, _ line: Range<Int>) {
            guard let v = Self.dataValue(b, line) else { return }
            dataLines += 1
            data = v
        }

        /// The value of `b[line]` (its LF excluded) when it is a `data:` line: after `data:` and
        /// one optional space, before a CR that ends the line.
        @inline(__always)
        static func dataValue(_ b: UnsafeRawBufferPointer, _ line: Range<Int>) -> Range<Int>? {
            var end = line.upperBound
            let ls = line.lowerBound
            guard end &- ls >= 5, b[ls] == 0x64, b[ls &+ 1] == 0x61, b[ls &+ 2] == 0x74, b[ls &+ 3] == 0x61,
                  b[ls &+ 4] == 0x3A else { return nil }  // "data:"
            if b[end &- 1] == 0x0D { end = end &- 1 }
            var v = ls &+ 5
            if v < end && b[v] == 0x20 { v = v &+ 1 }
            return Range(uncheckedBounds: (v, end))
        }
    }

    /// Where the events kept go: `all`, a pending run of the read's bytes appended at once when it
    /// stops being contiguous (or at the end of the read); and the client's run of `all`, noted
    /// as one piece when it stops being contiguous.
    private struct Sink {
        let filterUsage: Bool
        var allRun = 0..<0
        var clientRun = 0..<0

        init(filterUsage: Bool) { self.filterUsage = filterUsage }

        /// Where the next event kept lands in `all`.
        func allCount(_ all: [UInt8]) -> Int { all.count + allRun.count }

        mutating func add(_ r: Range<Int>, _ src: UnsafeRawBufferPointer, _ all: inout [UInt8]) {
            if !allRun.isEmpty && allRun.upperBound == r.lowerBound {
                allRun = allRun.lowerBound..<r.upperBound
            } else {
                flush(src, all: &all)
                allRun = r
            }
        }

        mutating func flush(_ src: UnsafeRawBufferPointer, all: inout [UInt8]) {
            guard !allRun.isEmpty else { return }
            all.append(contentsOf: UnsafeRawBufferPointer(rebasing: src[allRun]))
            allRun = 0..<0
        }
    }

    /// An event read on its own: `ev` is the bytes at `at` in `src` (the read), or held bytes
    /// (`at` nil: nothing of the read is pending in `sink` then, it is the read's first event).
    private mutating func applyAlone(_ ev: UnsafeRawBufferPointer, at: Int? = nil, sink: inout Sink,
                                     src: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
                                     all: inout [UInt8]) {
        if sawDone {
            apply(ev, at: at, nil, dataLine: nil, sink: &sink, src: src, all: &all)
            return
        }
        switch Self.data(of: ev) {
        case .line(let s):
            let reading = UpstreamJSON.read(UnsafeRawBufferPointer(rebasing: ev[s]))
            apply(ev, at: at, reading, dataLine: s, sink: &sink, src: src, all: &all)
        case .joined(let j):
            let reading = j.withUnsafeBytes { UpstreamJSON.read($0) }
            apply(ev, at: at, reading, dataLine: nil, sink: &sink, src: src, all: &all)
        case nil:
            apply(ev, at: at, nil, dataLine: nil, sink: &sink, src: src, all: &all)
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
                                all: inout [UInt8]) {
        if sawDone {
            eventsAfterDone += 1
            bytesDroppedAfterDone += ev.count
            return
        }
        var usageOnly = false
        var final = false
        var fingerprint: UnsafeRawBufferPointer?
        if let info = reading {
            switch info.kind {
            case .done:
                sawDone = true
            case .object:
                fingerprint = info.fingerprint
                if findsIdentity {
                    // (An object event is always appended to `all`, just below.)
                    if let dataLine {
                        noteIdentity(UnsafeRawBufferPointer(rebasing: ev[dataLine]), members: info.identityMembers,
                                     at: sink.allCount(all) + dataLine.lowerBound)
                    } else {
                        identityKnown = false
                    }
                }
                let hasError = info.hasError
                if hasError { sawError = true }
                if let u = info.usage { usage = u }
                usageOnly = info.isUsageOnly
                let finished = info.choicesFinished
                final = dataLine != nil && !hasError && finished != 0 && !usageOnly
                choicesSeen |= info.choicesSeen
                choicesFinished |= finished
                if info.choicesBeyond || !(info.object == .chatCompletionChunk || info.object == .textCompletion) {
                    foreignEvents += 1
                }
            case .invalid, .notObject:
                // Not relayable: counted (the driver ends the stream with an error) and dropped.
                invalidEvents += 1
                return
            }
        }
        let here = sink.allCount(all)..<(sink.allCount(all) + ev.count)
        if usageOnly { usageRangesInAll.append(here) }
        if let at {
            sink.add(at..<(at + ev.count), src, &all)
        } else {
            sink.flush(src, all: &all)
            all.append(contentsOf: ev)
        }
        guard sink.filterUsage else { return }
        if let held = heldFinal {
            heldFinal = nil
            if usageOnly, !heldHasFingerprint, let fp = fingerprint {
                // The held chunk's bytes may still be pending in the run.
                sink.flush(src, all: &all)
                // Written into `released` where it goes: copying the chunk and the fingerprint
                // out first, then building the result, took three arrays per stream.
                switch held {
                case .inAll(let r):
                    all.withUnsafeBytes { releaseAdding(fingerprint: fp, to: UnsafeRawBufferPointer(rebasing: $0[r]), &sink) }
                case .bytes(let b):
                    b.withUnsafeBytes { releaseAdding(fingerprint: fp, to: $0, &sink) }
                }
            } else {
                switch held {
                case .inAll(let r): addClient(r, &sink)
                case .bytes(let b): release(b, &sink)
                }
            }
        }
        if usageOnly {
            usageEventsDropped += 1
        } else if final {
            heldFinal = .inAll(here)
            heldHasFingerprint = fingerprint != nil
        } else {
            addClient(here, &sink)
        }
    }

    /// The client gets `all[r]` next (one piece with the run before when they touch).
    @inline(__always)
    private mutating func addClient(_ r: Range<Int>, _ sink: inout Sink) {
        if sink.clientRun.upperBound == r.lowerBound && !sink.clientRun.isEmpty {
            sink.clientRun = sink.clientRun.lowerBound..<r.upperBound
        } else {
            flushClientRun(&sink)
            sink.clientRun = r
        }
    }

    private mutating func flushClientRun(_ sink: inout Sink) {
        guard !sink.clientRun.isEmpty else { return }
        clientPieces.append(.all(sink.clientRun))
        sink.clientRun = 0..<0
    }

    /// The client gets `bytes` next (a held final chunk released).
    private mutating func release(_ bytes: [UInt8], _ sink: inout Sink) {
        flushClientRun(&sink)
        let s = released.count
        released += bytes
        clientPieces.append(.released(s..<released.count))
    }

    /// The client gets `ev` with `fp` added (`adding(fingerprint:to:)`), written in `released`.
    private mutating func releaseAdding(fingerprint fp: UnsafeRawBufferPointer, to ev: UnsafeRawBufferPointer,
                                        _ sink: inout Sink) {
        flushClientRun(&sink)
        let s = released.count
        Self.append(ev, adding: fp, to: &released)
        clientPieces.append(.released(s..<released.count))
    }

    /// Notes the top-level id and created values of one event's data (which goes at `offset` in
    /// `all`), as ReplyStamp.spans(ofJSON:) finds them: reused from the last parsed event when this
    /// one starts with the same bytes through the byte after its last value and the parser counted
    /// as many identity members in it (so none comes later); otherwise found by parsing.
    private mutating func noteIdentity(_ data: UnsafeRawBufferPointer, members: Int, at offset: Int) {
        if template?.appendSpans(in: data, members: members, offset: offset, to: &identitySpansInAll) == true { return }
        let found = ReplyStamp.spans(ofJSON: data) ?? []
        template = ReplyStamp.IdentityTemplate(data, found)
        for r in found { identitySpansInAll.append((r.lowerBound + offset)..<(r.upperBound + offset)) }
    }

    /// `ev` (one `data:` line holding a JSON object, then its blank line) with
    /// `,"system_fingerprint":<fp>` before the object's closing brace, where vLLM writes it.
    static func adding(fingerprint fp: [UInt8], to ev: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        fp.withUnsafeBytes { f in ev.withUnsafeBytes { append($0, adding: f, to: &out) } }
        return out
    }

    /// Appends `adding(fingerprint: fp, to: ev)` to `out`.
    static func append(_ ev: UnsafeRawBufferPointer, adding fp: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        var close = ev.count - 1
        while close >= 0 && ev[close] != 0x7D { close -= 1 }  // "}": the last byte of the data line's object
        guard close > 0 else {
            out.append(contentsOf: ev)
            return
        }
        out.reserveCapacity(out.count + ev.count + fp.count + 24)
        out.append(contentsOf: UnsafeRawBufferPointer(rebasing: ev[..<close]))
        out.append(contentsOf: #","system_fingerprint":"#.utf8)
        out.append(contentsOf: fp)
        out.append(contentsOf: UnsafeRawBufferPointer(rebasing: ev[close...]))
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

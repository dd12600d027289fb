// SSETarget (FUZZ_TARGET=sse): the SSE relay's parsing. The payload (FuzzInput: the first byte
// steers) is a stream of upstream body bytes, fed to SSEEventScanner whole and in pieces (bits
// 0-2), with a small event limit in a third run, and checked:
//   - each feed's output ends at an event's end (a blank line), and withoutUsage is that output
//     minus whole usage-only events;
//   - with no invalid event, the output plus the held bytes is the input, byte for byte;
//   - where the input is cut does not change what is relayed, held, counted or read (usage,
//     [DONE], errors);
// then fed (as the session does: the scanner's output) to StreamAssembler, whose complete body
// must not depend on the cuts, must replay (ReplayWriter) as a stream our own scanner relays
// whole, and (replayed with usage) must assemble back into itself. ReplayWriter also runs on the
// payload itself, as a stored complete body. The relayed events, stamped with a replay's own id
// and created (ReplyStamp), must relay the same and stamp idempotently.
import Engine

enum SSETarget {
    static func run(_ bytes: UnsafeRawBufferPointer) {
        let input = FuzzInput(bytes)
        let p = input.payload
        var whole = ScanRun(maxEventBytes: SSEEventScanner().maxEventBytes)
        whole.feed(p)
        var cut = ScanRun(maxEventBytes: SSEEventScanner().maxEventBytes)
        for r in input.pieces() { cut.feed(UnsafeRawBufferPointer(rebasing: p[r])) }
        whole.checkConservation(p)
        cut.checkConservation(p)
        compare(whole, cut)
        checkStamp(whole)
        // Events longer than the limit are dropped and counted (the per-feed checks still hold).
        var small = ScanRun(maxEventBytes: 16 + Int(input.control >> 3))
        for r in input.pieces() { small.feed(UnsafeRawBufferPointer(rebasing: p[r])) }

        let body = whole.assembler.completeBody()
        precondition(body == cut.assembler.completeBody(), "the assembled body depends on the cuts")
        precondition(whole.assembler.gaveUp == cut.assembler.gaveUp, "the assembler gave up depending on the cuts")
        if let body {
            for includeUsage in [false, true] {
                guard let sse = ReplayWriter.sse(fromCompleteBody: body, includeUsage: includeUsage) else {
                    preconditionFailure("an assembled body cannot be replayed: \(String(decoding: body, as: UTF8.self))")
                }
                checkReplay(sse)
                // One cache entry serves both shapes: the replayed stream (with its usage chunk)
                // assembles back into the same body.
                guard includeUsage else { continue }
                var again = StreamAssembler()
                again.feed(sse)
                precondition(again.completeBody() == body,
                              "replay then assembly changes the body: \(String(decoding: body, as: UTF8.self))")
            }
        }
        if let sse = ReplayWriter.sse(fromCompleteBody: Array(p), includeUsage: input.flag(3)) {
            checkReplay(sse)
        }
    }

    /// A replay's own identity (ReplyStamp) changes only top-level id and created values: the
    /// stamped events relay as the originals did (nothing invalid, the same [DONE], errors and
    /// usage), and stamping them again changes nothing.
    static func checkStamp(_ run: ScanRun) {
        let stamp = ReplyStamp(kind: .chat, requestId: "f\"z\\\u{1}é", created: 1_800_000_000)
        let once = stamp.stamped(events: run.all)
        precondition(stamp.stamped(events: once) == once, "stamping twice differs from stamping once")
        var again = ScanRun(maxEventBytes: Int.max / 4)
        once.withUnsafeBytes { again.feed($0) }
        precondition(again.scanner.invalidEvents == 0 && again.scanner.pendingBytes == 0,
                     "stamped events are not relayable: \(String(decoding: once, as: UTF8.self))")
        compareReadings(run, again)
    }

    /// A replayed stream is what vLLM would send: the relay passes every event and sees [DONE].
    static func checkReplay(_ sse: [UInt8]) {
        var run = ScanRun(maxEventBytes: SSEEventScanner().maxEventBytes)
        sse.withUnsafeBytes { run.feed($0) }
        precondition(run.scanner.invalidEvents == 0 && run.scanner.sawDone && run.scanner.pendingBytes == 0,
                     "a replayed stream is not relayable: \(String(decoding: sse, as: UTF8.self))")
    }

    /// Whole and cut runs read the same: [DONE], errors, usage, usage chunks.
    static func compareReadings(_ a: ScanRun, _ b: ScanRun) {
        let x = a.scanner, y = b.scanner
        precondition(x.sawDone == y.sawDone && x.sawError == y.sawError && x.usage == y.usage,
                     "what the scanner reads depends on the cuts")
        precondition(x.usageEventsDropped == y.usageEventsDropped, "usage events dropped depend on the cuts")
    }

    /// Whole and cut runs read and relay the same thing.
    static func compare(_ a: ScanRun, _ b: ScanRun) {
        compareReadings(a, b)
        let x = a.scanner, y = b.scanner
        precondition(x.invalidEvents == y.invalidEvents && x.pendingBytes == y.pendingBytes
                     && x.bytesDroppedAfterDone == y.bytesDroppedAfterDone,
                     "invalid or held bytes depend on the cuts")
        precondition(a.all == b.all && a.withoutUsage == b.withoutUsage, "the relayed bytes depend on the cuts")
    }
}

/// One scanner fed piece by piece as RequestSession.handleBody does (fresh output arrays per
/// feed), its outputs concatenated, and an assembler fed each feed's output.
struct ScanRun {
    var scanner: SSEEventScanner
    var assembler = StreamAssembler()
    var all: [UInt8] = []
    var withoutUsage: [UInt8] = []

    init(maxEventBytes: Int) { scanner = SSEEventScanner(maxEventBytes: maxEventBytes) }

    mutating func feed(_ bytes: UnsafeRawBufferPointer) {
        var newAll: [UInt8] = []
        var newWithout: [UInt8] = []
        scanner.feed(bytes, all: &newAll, withoutUsage: &newWithout, filterUsage: true)
        precondition(Self.endsAtEventEnd(newAll) && Self.endsAtEventEnd(newWithout), "output ends inside an event")
        if !newAll.isEmpty { assembler.feed(newAll) }
        all += newAll
        withoutUsage += newWithout
        if scanner.invalidEvents == 0 {
            Self.checkFiltered(all, withoutUsage, dropped: scanner.usageEventsDropped, held: scanner.heldFinalBytes > 0)
        }
    }

    /// With no invalid event, nothing is lost or added: output + held bytes + bytes dropped after
    /// [DONE] = input.
    func checkConservation(_ input: UnsafeRawBufferPointer) {
        guard scanner.invalidEvents == 0 else { return }
        precondition(all.count + scanner.pendingBytes + scanner.bytesDroppedAfterDone == input.count && input.starts(with: all),
                     "the scanner's output is not the input's events")
    }

    /// Empty, or ends in an empty line (LF, or CR LF, after an LF or at the start).
    static func endsAtEventEnd(_ b: [UInt8]) -> Bool {
        let n = b.count
        guard n > 0 else { return true }
        guard b[n - 1] == 0x0A else { return false }
        var j = n - 2
        if j >= 0 && b[j] == 0x0D { j -= 1 }
        return j < 0 || b[j] == 0x0A
    }

    /// `without` is `all` minus `dropped` whole events (and, `held`, minus its last event, which
    /// waits for the next); an event may come with `,"system_fingerprint":…` added before its
    /// last `}` (moved from the usage chunk after it). Events are cut as the scanner cuts them:
    /// at an LF that ends an empty line, looking back within the buffer (a stray blank line at
    /// its start is an event by itself).
    static func checkFiltered(_ all: [UInt8], _ without: [UInt8], dropped: Int, held: Bool) {
        let added = Array(#","system_fingerprint":"#.utf8)
        var at = 0
        var skipped = 0
        var start = 0
        for i in all.indices where all[i] == 0x0A {
            var j = i - 1
            if j >= 0 && all[j] == 0x0D { j -= 1 }
            // An empty line at the very start is a blank line of its own (one more after an
            // event that ended in an earlier read): the scanner passes it on by itself.
            guard j < 0 || all[j] == 0x0A else { continue }
            let event = Array(all[start...i])
            if without.count - at >= event.count && without[at..<(at + event.count)].elementsEqual(event) {
                at += event.count
            } else if let close = event.lastIndex(of: 0x7D), without[at...].starts(with: event[..<close] + added),
                      let end = spliceEnd(without, from: at + close + added.count, tail: event[close...]) {
                at = end
            } else {
                skipped += 1
            }
            start = i + 1
        }
        precondition(start == all.count, "output ends inside an event")
        precondition(at == without.count && skipped == dropped + (held ? 1 : 0),
                     "withoutUsage is not the output minus \(dropped) whole event(s)")
    }

    /// Where a spliced event ends in `b`: the first place after `from` where `tail` (the original
    /// event from its last `}`) follows.
    private static func spliceEnd(_ b: [UInt8], from: Int, tail: ArraySlice<UInt8>) -> Int? {
        var k = from
        while k + tail.count <= b.count {
            if b[k..<(k + tail.count)].elementsEqual(tail) { return k + tail.count }
            k += 1
        }
        return nil
    }
}

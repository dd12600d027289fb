// Flight's recording for late joiners: every event in order, the first read's array kept as it is
// (a value: later reads and later changes to the caller's array cannot reach it), and dropped whole
// past its cap.
import Testing
@testable import Engine

@Suite struct FlightRecordingTests {
    @Test func recordsEveryReadInOrderAsValues() {
        let fl = Flight(id: CoalescerMachine.FlightID(1), key: "k")
        var read = Array("data: 1\n\n".utf8)
        #expect(fl.record(read))
        read.removeAll(keepingCapacity: true)  // the relay reuses its array for the next read
        read += Array("data: 2\n\n".utf8)
        #expect(fl.record(read))
        #expect(fl.recorded == Array("data: 1\n\ndata: 2\n\n".utf8))
        #expect(fl.record([]))
        #expect(fl.recorded == Array("data: 1\n\ndata: 2\n\n".utf8))
    }

    /// vLLM sends an event a read: from the second read on the recording has room ahead (16 KiB
    /// at least, never past the cap), so a typical stream's recording stays in one buffer.
    @Test func theRecordingHasRoomAheadWhenEventsComeOneARead() {
        let fl = Flight(id: CoalescerMachine.FlightID(1), key: "k")
        var expected: [UInt8] = []
        var watch = RecordingBufferWatch()
        for k in 0..<40 {
            let ev = Array("data: {\"k\":\(k)}\n\n".utf8)
            #expect(fl.record(ev))
            expected += ev
            #expect(fl.recorded == expected)
            watch.saw(fl.recorded, afterRead: k)
        }
        #expect(watch.roomAheadEveryTime)
        #expect(watch.stayedInOneBuffer, "one buffer from the second read on")
        #expect(StreamRelay.roomAhead(for: 100, floor: 16) == 200 && StreamRelay.roomAhead(for: 5, floor: 16) == 16)
    }

    @Test func overflowDropsTheRecordingOnce() {
        let fl = Flight(id: CoalescerMachine.FlightID(1), key: "k")
        #expect(fl.record([UInt8](repeating: 0x61, count: Flight.maxRecordedBytes - 1)))
        #expect(!fl.wouldOverflow(1))
        #expect(fl.wouldOverflow(2))
        #expect(!fl.record([0x61, 0x61]))
        #expect(fl.recorded.isEmpty)
        #expect(fl.record([0x61]), "after the overflow nothing more is recorded, and it is not reported again")
        #expect(fl.recorded.isEmpty)
    }
}

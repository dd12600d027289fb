// RequestTimings as a value: sums of upstream and queue time, first byte kept once, chunk gaps.
import Testing
@testable import Engine

@Suite struct RequestTimingsTests {
    @Test func sumsUpstreamExchangesAndQueueWaits() {
        var t = RequestTimings(start: 100)
        t.upstreamEnded(at: 150) // nothing open: no effect
        t.upstreamStarted(at: 200)
        t.upstreamEnded(at: 260)
        t.upstreamEnded(at: 300) // closed already
        t.upstreamStarted(at: 400)
        t.upstreamEnded(at: 410)
        #expect(t.upstream == 70)
        #expect(t.dequeued(at: 500) == nil) // never queued
        #expect(!t.isQueued)
        t.enqueued(at: 500)
        #expect(t.isQueued) // the session reads the clock for dequeued only then
        #expect(t.dequeued(at: 530) == 30)
        #expect(!t.isQueued)
        #expect(t.dequeued(at: 600) == nil)
        #expect(t.queued == 30)
    }

    @Test func firstByteIsKeptOnceAndChunkGapsStartAtTheSecond() {
        var t = RequestTimings(start: 1)
        t.firstByte(at: 10)
        t.firstByte(at: 20)
        #expect(t.firstByte == 10)
        #expect(t.chunk(at: 30) == nil)
        #expect(t.chunk(at: 45) == 15)
        #expect(t.chunk(at: 46) == 1)
    }
}

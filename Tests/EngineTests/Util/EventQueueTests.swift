// EventQueue: an event raised while another is handled waits for it (no re-entry), order kept.
import Testing
@testable import Engine

@Suite struct EventQueueTests {
    /// A driver whose handler raises more events, as a callback completing at once would.
    final class Driver {
        var queue = EventQueue<Int>()
        var log: [String] = []
        var depth = 0
        func post(_ e: Int) {
            guard queue.append(e) else { log.append("queued \(e)"); return }
            while let e = queue.next() { handle(e) }
        }
        func handle(_ e: Int) {
            depth += 1
            defer { depth -= 1 }
            log.append("begin \(e) depth \(depth)")
            if e < 3 { post(e + 1) }  // completes "at once"
            log.append("end \(e)")
        }
    }

    @Test func eventsRaisedWhileHandlingWaitTheirTurn() {
        let d = Driver()
        d.post(1)
        #expect(d.log == ["begin 1 depth 1", "queued 2", "end 1", "begin 2 depth 1", "queued 3", "end 2", "begin 3 depth 1", "end 3"])
        #expect(!d.queue.isDraining)
        d.log = []
        d.post(3)
        #expect(d.log == ["begin 3 depth 1", "end 3"])
    }

    @Test func enterHandlesInPlaceUnlessDraining() {
        var q = EventQueue<Int>()
        let first = q.enter(), second = q.enter(), appendedWhileDraining = q.append(7)
        #expect(first && !second && !appendedWhileDraining)
        let a = q.next(), b = q.next(), again = q.enter()
        #expect(a == 7 && b == nil && again)
    }

    /// Random appends and takes against a plain FIFO: the same events in the same order, and the
    /// queue idle exactly when the FIFO ran dry (the single-event slot and the array together).
    @Test func randomAppendsAndTakesKeepFIFOOrder() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            var q = EventQueue<Int>()
            var model: [Int] = []
            var draining = false
            var next = 0
            for _ in 0..<40 {
                if Bool.random(using: &rng) || model.isEmpty && !draining {
                    let mustDrain = q.append(next)
                    #expect(mustDrain == !draining)
                    draining = true
                    model.append(next)
                    next += 1
                } else if draining {
                    let e = q.next()
                    #expect(e == model.first)
                    if model.isEmpty { draining = false } else { model.removeFirst() }
                    #expect(q.isDraining == draining)
                }
            }
        }
    }
}

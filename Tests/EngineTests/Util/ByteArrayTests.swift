// [UInt8](smallCapacity:initializingWith:): the bytes written and their count, on the stack path
// (up to 1 KiB) and past it.
import Testing
@testable import Engine

@Suite struct ByteArrayTests {
    @Test(arguments: [0, 1, 17, 1023, 1024, 1025, 70_000])
    func theArrayHoldsWhatWasWritten(capacity: Int) {
        for written in Set([0, capacity / 2, capacity]) {
            let a = [UInt8](smallCapacity: capacity) { buf, n in
                for i in 0..<written { buf[i] = UInt8(truncatingIfNeeded: i &* 31) }
                n = written
            }
            #expect(a == (0..<written).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        }
    }
}

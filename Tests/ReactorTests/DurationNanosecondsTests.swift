// Duration.nanoseconds: truncation below a nanosecond, zero for negatives, saturation above
// UInt64.max ns, and the exact boundary.
import Testing
@testable import Reactor

@Suite struct DurationNanosecondsTests {
    @Test func wholeNanosecondsAreExact() {
        #expect(Duration.zero.nanoseconds == 0)
        #expect(Duration.nanoseconds(1).nanoseconds == 1)
        #expect(Duration.milliseconds(1500).nanoseconds == 1_500_000_000)
        #expect(Duration.seconds(86_400).nanoseconds == 86_400_000_000_000)
        #expect(Duration.nanoseconds(UInt64.max).nanoseconds == .max)
        #expect(Duration.nanoseconds(UInt64.max - 1).nanoseconds == UInt64.max - 1)
    }

    @Test func subNanosecondPartsAreTruncated() {
        #expect(Duration(secondsComponent: 0, attosecondsComponent: 999_999_999).nanoseconds == 0)
        #expect(Duration(secondsComponent: 2, attosecondsComponent: 1_999_999_999).nanoseconds == 2_000_000_001)
    }

    @Test func negativesGiveZero() {
        #expect(Duration.nanoseconds(-1).nanoseconds == 0)
        #expect(Duration.milliseconds(-1500).nanoseconds == 0)
        #expect(Duration(secondsComponent: 0, attosecondsComponent: -1).nanoseconds == 0)
        #expect(Duration.seconds(Int64.min).nanoseconds == 0)
    }

    @Test func longerThanUInt64NanosecondsSaturates() {
        #expect((Duration.nanoseconds(UInt64.max) + .nanoseconds(1)).nanoseconds == .max)
        #expect(Duration.seconds(18_446_744_074).nanoseconds == .max)
        #expect(Duration.seconds(Int64.max).nanoseconds == .max)
    }
}

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

    /// The same as the seconds-and-attoseconds reading it replaced, over random durations of
    /// every size and sign.
    @Test func agreesWithTheComponents() {
        func reference(_ d: Duration) -> UInt64 {
            let (seconds, attoseconds) = d.components
            guard seconds > 0 || (seconds == 0 && attoseconds > 0) else { return 0 }
            let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
            let (sum, carry) = whole.addingReportingOverflow(UInt64(attoseconds / 1_000_000_000))
            return overflow || carry ? .max : sum
        }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let seconds = Int64.random(in: Int64.min...Int64.max, using: &rng) >> Int.random(in: 0...63, using: &rng)
            let atto = Int64.random(in: -999_999_999_999_999_999...999_999_999_999_999_999, using: &rng)
            let d = Duration(secondsComponent: seconds, attosecondsComponent: atto)
            #expect(d.nanoseconds == reference(d), "\(d)")
        }
    }

    /// A timer's timeval: whole microseconds, 0 for negatives, as the seconds-and-attoseconds
    /// reading it replaced gave.
    @Test func timevalAgreesWithTheComponents() {
        var rng = SystemRandomNumberGenerator()
        for i in 0..<20_000 {
            let seconds = i == 0 ? Int64.max : Int64.random(in: Int64.min...Int64.max, using: &rng) >> Int.random(in: 0...63, using: &rng)
            let d = Duration(secondsComponent: seconds,
                             attosecondsComponent: Int64.random(in: -999_999_999_999_999_999...999_999_999_999_999_999, using: &rng))
            let (s, atto) = d.components
            let tv = makeTimeval(d)
            #expect(tv.tv_sec == Int(max(0, s)) && tv.tv_usec == Int(max(0, atto / 1_000_000_000_000)), "\(d)")
        }
    }

    @Test func longerThanUInt64NanosecondsSaturates() {
        #expect((Duration.nanoseconds(UInt64.max) + .nanoseconds(1)).nanoseconds == .max)
        #expect(Duration.seconds(18_446_744_074).nanoseconds == .max)
        #expect(Duration.seconds(Int64.max).nanoseconds == .max)
    }
}

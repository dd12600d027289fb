// Duration+Nanoseconds: the one conversion from a `Duration` to whole nanoseconds, for deadlines
// and ages on `Loop.nowNanos()`. Users: RedisConnection here; the Engine's cache stores and drain
// deadline (through `import Reactor`). The pure machines of the Engine import nothing, so they do
// not convert: they compare an age as a `Duration` (`.nanoseconds(age) >= cooldown`), exact for
// the whole-nanosecond durations we use.
// Pure: no imports, no I/O.

extension Duration {
    /// Whole nanoseconds, truncated toward zero; saturating, never trapping: 0 for a negative
    /// duration, `UInt64.max` for one longer than `UInt64.max` ns (about 584 years).
    public var nanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        // Both components carry the duration's sign, so this is "positive".
        guard seconds > 0 || (seconds == 0 && attoseconds > 0) else { return 0 }
        let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        let (sum, carry) = whole.addingReportingOverflow(UInt64(attoseconds / 1_000_000_000))
        return overflow || carry ? .max : sum
    }
}

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
        // One division of the 128-bit attosecond count (`components` splits it into seconds and
        // attoseconds in software first: ~300 instructions, several times per request).
        let a = attoseconds
        guard a > 0 else { return 0 }
        let ns = UInt128(a) / 1_000_000_000
        return ns > UInt128(UInt64.max) ? .max : UInt64(ns)
    }
}

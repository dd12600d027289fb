// Duration+ConfigSeconds.swift: the one conversion from a config's `...Seconds: Double` to a
// `Duration` (for a nanosecond count, take that Duration's `.nanoseconds`, from Reactor).
// ConfigLoader.validate bounds every such value, so for a validated config this is an exact copy
// of the old `.milliseconds(Int64(s * 1000))`; for anything else (a config built in code and never
// validated) it saturates instead of trapping: NaN and negatives give zero, huge values and +inf
// give `maxConfigSeconds`.

extension Duration {
    /// The longest duration the conversion returns: 10⁹ s (about 31 years), far above any
    /// validated value and far below where milliseconds or nanoseconds overflow 64 bits.
    public static let maxConfigSeconds: Double = 1e9

    /// `seconds` as whole milliseconds, truncated (as the stages always converted them).
    public static func seconds(validated seconds: Double) -> Duration {
        .milliseconds(Int64(clampedConfigSeconds(seconds) * 1000))
    }

    private static func clampedConfigSeconds(_ seconds: Double) -> Double {
        // `!(x > 0)` also catches NaN.
        if !(seconds > 0) { return 0 }
        return min(seconds, maxConfigSeconds)
    }
}

// ISO8601Time: a wall-clock time (seconds since the Unix epoch) as RFC 3339 / ISO 8601 UTC with
// milliseconds, `2026-05-01T12:34:56.789Z`, for the access log. Calendar arithmetic from Howard
// Hinnant's `civil_from_days` (proleptic Gregorian), so no gmtime_r call and no locale or TZ.
// Pure: no imports, no I/O.

enum ISO8601Time {
    static func format(epochSeconds: Double) -> String {
        // Milliseconds, floored, so a time never prints later than it was.
        let ms = epochSeconds.isFinite ? Int64((epochSeconds * 1000).rounded(.down)) : 0
        var days = ms / 86_400_000
        var msOfDay = ms % 86_400_000
        if msOfDay < 0 {
            msOfDay += 86_400_000
            days -= 1
        }
        let (y, m, d) = civil(fromDays: days)
        let secOfDay = msOfDay / 1000
        var out = ""
        out.reserveCapacity(24)
        appendPadded(&out, y, 4)
        out += "-"
        appendPadded(&out, m, 2)
        out += "-"
        appendPadded(&out, d, 2)
        out += "T"
        appendPadded(&out, secOfDay / 3600, 2)
        out += ":"
        appendPadded(&out, secOfDay / 60 % 60, 2)
        out += ":"
        appendPadded(&out, secOfDay % 60, 2)
        out += "."
        appendPadded(&out, msOfDay % 1000, 3)
        out += "Z"
        return out
    }

    /// (year, month 1…12, day 1…31) of the day `z` days after 1970-01-01.
    static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097                                          // [0, 146096]
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365     // [0, 399]
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)                    // [0, 365]
        let mp = (5 * doy + 2) / 153                                         // [0, 11]
        let d = doy - (153 * mp + 2) / 5 + 1                                 // [1, 31]
        let m = mp < 10 ? mp + 3 : mp - 9                                    // [1, 12]
        return (yoe + era * 400 + (m <= 2 ? 1 : 0), m, d)
    }

    private static func appendPadded(_ out: inout String, _ v: Int64, _ width: Int) {
        let s = String(v)
        if s.count < width { out += String(repeating: "0", count: width - s.count) }
        out += s
    }
}

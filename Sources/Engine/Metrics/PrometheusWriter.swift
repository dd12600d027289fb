// PrometheusWriter: renders one scrape in the text exposition format 0.0.4 (standard library only).
// The caller owns the values (Metrics, backends, admission) and adds one family per call, in the
// order it wants them shown; the writer owns only the text it builds. Used by /metrics/prometheus.
// Why not swift-prometheus 2.x: its registry assumes many threads (atomics per counter, a lock per
// histogram observe and per registry access), while each Engine process has one loop and renders the
// scrape on it; plain values plus this writer keep locks off the data path (style F), add no packages.
// Pure: no imports, no I/O.

public struct PrometheusWriter: Sendable {
    /// The exposition so far: complete families, each `# HELP`, `# TYPE`, then its samples.
    public private(set) var text = ""
    /// Every sample name already used (a histogram reserves `_bucket`, `_sum`, `_count` too), so a
    /// family is never emitted twice and never collides with another family's series.
    private var usedNames: Set<String> = []

    public init() {}

    /// A counter family. `name` must end in `_total` (promtool rejects counters without it).
    public mutating func counter(_ name: String, help: String, samples: [(labels: [(String, String)], value: Double)]) {
        precondition(name.hasSuffix("_total"), "counter \(name) must end in _total")
        beginFamily(name, help: help, type: "counter", sampleNames: [name])
        for s in samples { appendSample(name, labels: renderLabels(s.labels, of: name), value: s.value) }
    }

    /// A counter family with one unlabelled sample.
    public mutating func counter(_ name: String, help: String, value: Double) {
        counter(name, help: help, samples: [(labels: [], value: value)])
    }

    /// A gauge family.
    public mutating func gauge(_ name: String, help: String, samples: [(labels: [(String, String)], value: Double)]) {
        beginFamily(name, help: help, type: "gauge", sampleNames: [name])
        for s in samples { appendSample(name, labels: renderLabels(s.labels, of: name), value: s.value) }
    }

    /// A gauge family with one unlabelled sample.
    public mutating func gauge(_ name: String, help: String, value: Double) {
        gauge(name, help: help, samples: [(labels: [], value: value)])
    }

    /// A histogram family: per series, one cumulative `_bucket` line per bound plus `+Inf`, then
    /// `_sum` and `_count`. `le` goes after the series' own labels, as client_golang writes it.
    public mutating func histogram(_ name: String, help: String, series: [(labels: [(String, String)], histogram: Histogram)]) {
        let bucket = name + "_bucket", sumName = name + "_sum", countName = name + "_count"
        beginFamily(name, help: help, type: "histogram", sampleNames: [name, bucket, sumName, countName])
        for s in series {
            precondition(!s.labels.contains { $0.0 == "le" }, "histogram \(name) may not carry its own le label")
            let h = s.histogram
            let labels = renderLabels(s.labels, of: name)  // `k="v",k2="v2"` or empty, once per series
            let bucketPrefix = labels.isEmpty ? "{le=\"" : "{" + labels + ",le=\""
            for (i, c) in h.cumulativeCounts().enumerated() {
                let le = i < h.upperBounds.count ? PrometheusWriter.format(h.upperBounds[i]) : "+Inf"
                text += bucket
                text += bucketPrefix
                text += le
                text += "\"} "
                text += String(c)
                text += "\n"
            }
            appendSample(sumName, labels: labels, value: h.sum)
            appendSample(countName, labels: labels, rendered: String(h.count))
        }
    }

    // MARK: - Lines

    private mutating func beginFamily(_ name: String, help: String, type: String, sampleNames: [String]) {
        precondition(PrometheusWriter.isValidMetricName(name), "invalid metric name \(name)")
        precondition(!help.isEmpty, "metric \(name) needs help text (promtool rejects it without)")
        for n in sampleNames {
            precondition(usedNames.insert(n).inserted, "metric name \(n) emitted twice")
        }
        text += "# HELP \(name) "
        PrometheusWriter.appendEscaped(help, into: &text, quote: false)
        text += "\n# TYPE \(name) \(type)\n"
    }

    /// Validates and renders a label set without braces: `route="chat",status="2xx"`.
    private func renderLabels(_ labels: [(String, String)], of name: String) -> String {
        var out = ""
        for (i, (k, v)) in labels.enumerated() {
            precondition(PrometheusWriter.isValidLabelName(k), "invalid label name \(k) on \(name)")
            precondition(!labels[..<i].contains { $0.0 == k }, "label \(k) repeated on \(name)")
            if i > 0 { out += "," }
            out += k
            out += "=\""
            PrometheusWriter.appendEscaped(v, into: &out, quote: true)
            out += "\""
        }
        return out
    }

    private mutating func appendSample(_ name: String, labels: String, value: Double) {
        appendSample(name, labels: labels, rendered: PrometheusWriter.formatSample(value))
    }

    private mutating func appendSample(_ name: String, labels: String, rendered value: String) {
        text += name
        if !labels.isEmpty {
            text += "{"
            text += labels
            text += "}"
        }
        text += " "
        text += value
        text += "\n"
    }

    // MARK: - Validation and escaping

    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`
    static func isValidMetricName(_ s: String) -> Bool {
        isName(s, allowColon: true)
    }

    /// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__` (reserved for Prometheus itself).
    static func isValidLabelName(_ s: String) -> Bool {
        isName(s, allowColon: false) && !s.hasPrefix("__")
    }

    private static func isName(_ s: String, allowColon: Bool) -> Bool {
        var first = true
        for b in s.utf8 {
            let letter = (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || b == 0x5F || (allowColon && b == 0x3A)
            let digit = b >= 0x30 && b <= 0x39
            if !(letter || (!first && digit)) { return false }
            first = false
        }
        return !first
    }

    /// HELP text escapes backslash and newline; label values also escape the double quote.
    static func appendEscaped(_ s: String, into out: inout String, quote: Bool) {
        for ch in s.unicodeScalars {
            switch ch {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\"" where quote: out += "\\\""
            default: out.unicodeScalars.append(ch)
            }
        }
    }

    // MARK: - Numbers

    /// A sample value: integers exactly representable (|v| < 2^53) print as integers, without `.0`;
    /// anything else as `format` does.
    static func formatSample(_ v: Double) -> String {
        if v.isFinite && v == v.rounded(.towardZero) && Swift.abs(v) < 9_007_199_254_740_992 {
            return String(Int64(v))
        }
        return format(v)
    }

    /// Go's `strconv.FormatFloat(v, 'g', -1, 64)` with Prometheus's spellings of NaN and infinities:
    /// what client_golang and prometheus_client (Python) write for `le`. Matching it matters: `le`
    /// is part of the series identity, so `0.005` and `5e-3` would be different series.
    /// Shortest round-trip digits come from Swift's `description` (the same digits Go's shortest
    /// formatting picks); only the layout is redone: exponent form when the decimal exponent is < -4
    /// or >= 6, with a sign and at least two exponent digits (`5e-05`, `1e+06`), plain otherwise.
    static func format(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v == .infinity { return "+Inf" }
        if v == -.infinity { return "-Inf" }
        if v == 0 { return v.sign == .minus ? "-0" : "0" }
        let (negative, digits, pointPosition) = decimalDigits(v)
        var out = negative ? "-" : ""
        let exp = pointPosition - 1
        if exp < -4 || exp >= 6 {
            out.unicodeScalars.append(digits[0])
            if digits.count > 1 {
                out += "."
                out.unicodeScalars.append(contentsOf: digits[1...])
            }
            out += exp < 0 ? "e-" : "e+"
            let e = Swift.abs(exp)
            if e < 10 { out += "0" }
            out += String(e)
        } else if pointPosition <= 0 {
            out += "0."
            out += String(repeating: "0", count: -pointPosition)
            out.unicodeScalars.append(contentsOf: digits)
        } else if pointPosition >= digits.count {
            out.unicodeScalars.append(contentsOf: digits)
            out += String(repeating: "0", count: pointPosition - digits.count)
        } else {
            out.unicodeScalars.append(contentsOf: digits[..<pointPosition])
            out += "."
            out.unicodeScalars.append(contentsOf: digits[pointPosition...])
        }
        return out
    }

    /// Splits a finite non-zero value's shortest representation into its significant digits (no
    /// leading or trailing zeros) and the position of the decimal point relative to the first digit:
    /// 0.005 → ("5", -2), 120 → ("12", 3), 1.5e-7 → ("15", -6).
    private static func decimalDigits(_ v: Double) -> (negative: Bool, digits: [Unicode.Scalar], pointPosition: Int) {
        var mantissa = Substring(Swift.abs(v).description)
        var exponent = 0
        if let e = mantissa.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exponent = Int(mantissa[mantissa.index(after: e)...])!  // "e-05", "e+16": Int accepts the sign
            mantissa = mantissa[..<e]
        }
        var digits: [Unicode.Scalar] = []
        var point = -1
        for ch in mantissa.unicodeScalars {
            if ch == "." { point = digits.count } else { digits.append(ch) }
        }
        if point < 0 { point = digits.count }
        point += exponent
        while digits.first == "0" {
            digits.removeFirst()
            point -= 1
        }
        while digits.last == "0" { digits.removeLast() }
        return (v < 0, digits, point)
    }
}

// AcceptHeader: how much a request's `Accept` header wants a media type (RFC 9110 §12.5.1), for
// the one endpoint that offers two forms: /metrics (Prometheus text by default, JSON on request).
// A value type over the header text; the Frontend asks, nothing is stored.
// Pure: no imports, no I/O.

enum AcceptHeader {
    /// The quality (0…1) `accept` gives `mediaType` (lowercase `type/subtype`): the `q` of the
    /// most specific range that matches it (`type/subtype` over `type/*` over `*/*`; the highest
    /// when one type is listed twice), 0 when none does. No header, or an empty one, accepts
    /// everything (1). Media-type parameters other than `q` are ignored; an unreadable `q`
    /// counts as 1, as most servers read it.
    static func quality(of mediaType: String, in accept: String?) -> Double {
        guard let accept, accept.contains(where: { $0 != " " && $0 != "\t" }) else { return 1 }
        let slash = mediaType.firstIndex(of: "/") ?? mediaType.endIndex
        let type = mediaType[..<slash]
        var best: (specificity: Int, q: Double) = (-1, 0)
        for element in accept.split(separator: ",") {
            let parts = element.split(separator: ";", omittingEmptySubsequences: false)
            guard let first = parts.first else { continue }
            let range = trimmed(first).lowercased()
            let specificity: Int
            if range == mediaType {
                specificity = 2
            } else if range.hasSuffix("/*") && range.dropLast(2) == type {
                specificity = 1
            } else if range == "*/*" {
                specificity = 0
            } else {
                continue
            }
            var q = 1.0
            for p in parts.dropFirst() {
                let kv = trimmed(p)
                guard kv.count > 2, kv.lowercased().hasPrefix("q=") else { continue }
                if let v = Double(kv.dropFirst(2)), v >= 0, v <= 1 { q = v }
            }
            if specificity > best.specificity || (specificity == best.specificity && q > best.q) {
                best = (specificity, q)
            }
        }
        return best.specificity < 0 ? 0 : best.q
    }

    /// True when `accept` prefers `application/json` to every form of Prometheus text
    /// (`text/plain`, `application/openmetrics-text`): strictly higher quality, so `*/*`, no
    /// header, or a tie gives the text that scrapers expect.
    static func prefersJSONToPrometheusText(_ accept: String?) -> Bool {
        let json = quality(of: "application/json", in: accept)
        let text = max(quality(of: "text/plain", in: accept), quality(of: "application/openmetrics-text", in: accept))
        return json > 0 && json > text
    }

    private static func trimmed(_ s: Substring) -> Substring {
        var s = s
        while let c = s.first, c == " " || c == "\t" { s.removeFirst() }
        while let c = s.last, c == " " || c == "\t" { s.removeLast() }
        return s
    }
}

// AcceptHeader: which form /metrics serves for a given Accept header.
import Testing

@testable import Engine

@Suite struct AcceptHeaderTests {
    @Test(arguments: [
        // What scrapers and tools send: text.
        (nil, false), ("", false), ("*/*", false),
        ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", false),
        ("text/plain;version=0.0.4;q=1,*/*;q=0.1", false),
        ("application/json, text/plain, */*", false),          // a tie keeps the default
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", false),
        ("application/json;q=0", false),
        ("text/*, application/json;q=0.5", false),
        // Asking for JSON: JSON.
        ("application/json", true), ("Application/JSON", true), (" application/json ; charset=utf-8", true),
        ("application/json, */*;q=0.1", true),
        ("application/*", false),                              // matches OpenMetrics as much as JSON
        ("text/plain;q=0.5, application/json", true), ("application/json, text/plain;q=0.9", true),
        ("application/json;q=0.8, text/plain;q=0.3, */*;q=0.1", true),
        ("application/json;q=bogus, text/plain;q=0.5", true),
    ] as [(String?, Bool)])
    func metricsForm(accept: String?, json: Bool) {
        #expect(AcceptHeader.prefersJSONToPrometheusText(accept) == json)
    }

    @Test func theMostSpecificRangeDecides() {
        #expect(AcceptHeader.quality(of: "application/json", in: "application/*;q=0.2, application/json;q=0.7, */*") == 0.7)
        #expect(AcceptHeader.quality(of: "application/json", in: "application/*;q=0.2, */*") == 0.2)
        #expect(AcceptHeader.quality(of: "application/json", in: "text/plain") == 0)
        #expect(AcceptHeader.quality(of: "text/plain", in: nil) == 1)
        #expect(AcceptHeader.quality(of: "text/plain", in: "text/plain;q=2") == 1)  // out of range: ignored
    }
}

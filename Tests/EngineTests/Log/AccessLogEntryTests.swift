// AccessLogEntry and ISO8601Time: the access line's exact text.
import Testing

@testable import Engine

@Suite struct ISO8601TimeTests {
    @Test(arguments: [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1_795_623_388.7679849, "2026-11-25T16:16:28.767Z"),
        (951_782_400.0, "2000-02-29T00:00:00.000Z"),         // leap day of a century leap year
        (4_107_542_399.999, "2100-02-28T23:59:59.999Z"),      // 2100 is not a leap year
        (4_107_542_400.0, "2100-03-01T00:00:00.000Z"),
        (1_704_067_199.9996, "2023-12-31T23:59:59.999Z"),     // floored, never rounded up a day
        (-1.0, "1969-12-31T23:59:59.000Z"),
        (253_402_300_799.0, "9999-12-31T23:59:59.000Z"),
    ])
    func formats(seconds: Double, text: String) {
        #expect(ISO8601Time.format(epochSeconds: seconds) == text)
    }

    /// Every day of 1970-2400 round-trips through the civil calendar without gaps or repeats.
    @Test func civilDaysAreConsecutive() {
        var last = ISO8601Time.civil(fromDays: -1)
        #expect(last == (1969, 12, 31))
        for day: Int64 in 0..<157_000 {
            let (y, m, d) = ISO8601Time.civil(fromDays: day)
            if d == 1 {
                #expect((m == 1 && y == last.0 + 1 && last.1 == 12) || (m == last.1 + 1 && y == last.0))
            } else {
                #expect(y == last.0 && m == last.1 && d == last.2 + 1)
            }
            last = (y, m, d)
        }
    }
}

@Suite struct AccessLogEntryTests {
    static func entry() -> AccessLogEntry {
        AccessLogEntry(
            requestId: "r\"1", request: AccessRequestInfo(method: "POST", path: "/v1/chat/completions", client: "10.0.0.7:51000",
                                                          userAgent: "openai-python/3.57"),
            route: "chat", modelAsked: nil, modelServed: "llm", backend: "http://b:8000", upstreamStatus: 200, status: 200,
            cache: "MISS", coalesced: false, bytesIn: 74, bytesOut: 688, ttfbSeconds: 0.000623, durationSeconds: 0.000811,
            termination: .normal)
    }

    @Test func exactLine() {
        #expect(Self.entry().jsonLine(wallSeconds: 1_795_623_388.7679849) == """
            {"time":"2026-11-25T16:16:28.767Z","request_id":"r\\"1","method":"POST","path":"/v1/chat/completions","route":"chat",\
            "client":"10.0.0.7:51000","user_agent":"openai-python/3.57","model":null,"served_model":"llm","backend":"http://b:8000",\
            "upstream_status":200,"status":200,"cache":"MISS","coalesced":false,"bytes_in":74,"bytes_out":688,"ttfb_ms":0.623,\
            "duration_ms":0.811,"termination":"--"}

            """)
    }

    @Test func withoutARequestHeadEveryRequestFieldIsNull() {
        var e = Self.entry()
        e.request = nil
        e.upstreamStatus = nil
        e.ttfbSeconds = nil
        let line = e.jsonLine(wallSeconds: 0)
        #expect(line.contains(#""method":null,"path":null,"route":"chat","client":null,"user_agent":null,"#))
        #expect(line.contains(#""upstream_status":null,"#))
        #expect(line.contains(#""ttfb_ms":null,"#))
    }

    @Test func pathAndUserAgentAreClippedAndEscaped() {
        let info = AccessRequestInfo(method: "GET", path: "/x" + String(repeating: "é", count: 300), client: "c",
                                     userAgent: "bad\u{1}\"agent\n" + String(repeating: "u", count: 400))
        #expect(info.path.utf8.count <= AccessRequestInfo.maxPathBytes)
        #expect(info.path.hasPrefix("/xéé") && info.path.hasSuffix("é..."))
        #expect(info.userAgent?.utf8.count == AccessRequestInfo.maxUserAgentBytes)
        var e = Self.entry()
        e.request = info
        let line = e.jsonLine(wallSeconds: 0)
        #expect(line.contains(#""user_agent":"bad\u0001\"agent\nuuu"#))
        #expect(line.filter { $0 == "\n" }.count == 1 && line.hasSuffix("}\n"))
        #expect(AccessRequestInfo.clipped("short", 10) == "short")
        #expect(AccessRequestInfo.clipped("abcdefghijk", 10) == "abcdefg...")
    }
}

// PrometheusWriter: exact text for a small registry, escaping, number spellings (Go's `%g` for `le`),
// a parse-back of every line, the preconditions, and `promtool check metrics` when it is installed.
import Glibc
import Testing
@testable import Engine

@Suite struct PrometheusWriterTests {
    @Test func exactExpositionForASmallRegistry() {
        var w = PrometheusWriter()
        w.counter("engine_requests_total", help: "Requests by route and status class.", samples: [
            (labels: [("route", "chat"), ("status", "2xx")], value: 3),
            (labels: [("route", "completion"), ("status", "5xx")], value: 1),
        ])
        w.gauge("engine_open_connections", help: "Open client connections.", value: 2)
        var h = Histogram(buckets: [0.005, 0.25, 1])
        for v in [0.25, 0.5, 2] { h.observe(v) }
        w.histogram("engine_request_duration_seconds", help: "End-to-end latency.", series: [
            (labels: [("route", "chat")], histogram: h)
        ])
        w.histogram("engine_queue_wait_seconds", help: "Time queued.", series: [(labels: [], histogram: h)])
        #expect(w.text == """
            # HELP engine_requests_total Requests by route and status class.
            # TYPE engine_requests_total counter
            engine_requests_total{route="chat",status="2xx"} 3
            engine_requests_total{route="completion",status="5xx"} 1
            # HELP engine_open_connections Open client connections.
            # TYPE engine_open_connections gauge
            engine_open_connections 2
            # HELP engine_request_duration_seconds End-to-end latency.
            # TYPE engine_request_duration_seconds histogram
            engine_request_duration_seconds_bucket{route="chat",le="0.005"} 0
            engine_request_duration_seconds_bucket{route="chat",le="0.25"} 1
            engine_request_duration_seconds_bucket{route="chat",le="1"} 2
            engine_request_duration_seconds_bucket{route="chat",le="+Inf"} 3
            engine_request_duration_seconds_sum{route="chat"} 2.75
            engine_request_duration_seconds_count{route="chat"} 3
            # HELP engine_queue_wait_seconds Time queued.
            # TYPE engine_queue_wait_seconds histogram
            engine_queue_wait_seconds_bucket{le="0.005"} 0
            engine_queue_wait_seconds_bucket{le="0.25"} 1
            engine_queue_wait_seconds_bucket{le="1"} 2
            engine_queue_wait_seconds_bucket{le="+Inf"} 3
            engine_queue_wait_seconds_sum 2.75
            engine_queue_wait_seconds_count 3

            """)
    }

    @Test func emptyWriterAndFamiliesWithoutSamples() {
        #expect(PrometheusWriter().text == "")
        var w = PrometheusWriter()
        w.gauge("engine_backend_kv_cache_usage_ratio", help: "KV usage.", samples: [])
        w.histogram("engine_ttft_seconds", help: "TTFT.", series: [])
        #expect(w.text == """
            # HELP engine_backend_kv_cache_usage_ratio KV usage.
            # TYPE engine_backend_kv_cache_usage_ratio gauge
            # HELP engine_ttft_seconds TTFT.
            # TYPE engine_ttft_seconds histogram

            """)
    }

    @Test func labelValuesAndHelpAreEscaped() {
        var w = PrometheusWriter()
        w.gauge("engine_info", help: #"Build "info" with a \ and"# + "\nsecond line.", samples: [
            (labels: [("model", #"a"b\c"# + "\nd"), ("unicode", "modèle/ü")], value: 1)
        ])
        #expect(w.text == #"""
            # HELP engine_info Build "info" with a \\ and\nsecond line.
            # TYPE engine_info gauge
            engine_info{model="a\"b\\c\nd",unicode="modèle/ü"} 1

            """#)
    }

    @Test func specialAndFractionalSampleValues() {
        var w = PrometheusWriter()
        w.gauge("g", help: "h", samples: [
            (labels: [("v", "nan")], value: .nan),
            (labels: [("v", "inf")], value: .infinity),
            (labels: [("v", "-inf")], value: -.infinity),
            (labels: [("v", "frac")], value: 0.0039215686274509665),
            (labels: [("v", "neg")], value: -2),
            (labels: [("v", "big")], value: 1_234_567),
        ])
        let lines = w.text.split(separator: "\n").dropFirst(2).map(String.init)
        #expect(lines == [
            #"g{v="nan"} NaN"#, #"g{v="inf"} +Inf"#, #"g{v="-inf"} -Inf"#,
            #"g{v="frac"} 0.0039215686274509665"#, #"g{v="neg"} -2"#, #"g{v="big"} 1234567"#,
        ])
    }

    /// Expected strings are what Go's `strconv.FormatFloat(v, 'g', -1, 64)` prints (client_golang's `le`).
    @Test(arguments: [
        (0.005, "0.005"), (0.00005, "5e-05"), (0.0001, "0.0001"), (0.00025, "0.00025"), (0.0005, "0.0005"),
        (0.1, "0.1"), (0.75, "0.75"), (1.0, "1"), (2.5, "2.5"), (7.5, "7.5"), (10.0, "10"), (120.0, "120"),
        (2560.0, "2560"), (123_456.0, "123456"), (999_999.0, "999999"), (1e6, "1e+06"), (1_234_567.0, "1.234567e+06"),
        (1.5e-7, "1.5e-07"), (1e21, "1e+21"), (1e100, "1e+100"), (-0.001, "-0.001"), (0.0, "0"), (-0.0, "-0"),
        (1.7976931348623157e308, "1.7976931348623157e+308"), (Double.leastNonzeroMagnitude, "5e-324"), (1.0 / 3.0, "0.3333333333333333"),
        (Double.nan, "NaN"), (Double.infinity, "+Inf"), (-Double.infinity, "-Inf"),
    ])
    func leFormatMatchesGo(value: Double, expected: String) {
        #expect(PrometheusWriter.format(value) == expected)
    }

    @Test(arguments: [
        (3.0, "3"), (-2.0, "-2"), (0.0, "0"), (1e6, "1000000"), (9_007_199_254_740_991.0, "9007199254740991"),
        (9_007_199_254_740_992.0, "9.007199254740992e+15"), (3.5, "3.5"), (0.1, "0.1"), (Double.nan, "NaN"),
    ])
    func sampleValuesPrintIntegersPlainly(value: Double, expected: String) {
        #expect(PrometheusWriter.formatSample(value) == expected)
    }

    @Test(arguments: [
        ("engine_requests_total", true), ("vllm:num_requests_running", true), ("_x", true), (":x", true),
        ("a1", true), ("", false), ("1a", false), ("a-b", false), ("a b", false), ("é", false), ("a.b", false),
    ])
    func metricNameValidation(name: String, isValid: Bool) {
        #expect(PrometheusWriter.isValidMetricName(name) == isValid)
    }

    @Test(arguments: [
        ("route", true), ("_x", true), ("le", true), ("a:b", false), ("__name__", false), ("1a", false), ("", false),
    ])
    func labelNameValidation(name: String, isValid: Bool) {
        #expect(PrometheusWriter.isValidLabelName(name) == isValid)
    }

    @Test func everyLineParsesBack() throws {
        let text = sampleRegistry().text
        let parsed = try #require(ExpositionParser.parse(text), "unparseable:\n\(text)")
        #expect(parsed.families.map(\.name) == [
            "engine_requests_total", "engine_open_connections", "engine_backend_healthy", "engine_request_duration_seconds",
            "engine_ttft_seconds", "engine_info",
        ])
        #expect(parsed.families.map(\.type) == ["counter", "gauge", "gauge", "histogram", "histogram", "gauge"])
        #expect(parsed.samples.count == text.split(separator: "\n").filter { !$0.hasPrefix("#") }.count)
        let chat = parsed.samples.filter { $0.name == "engine_requests_total" && $0.labels["route"] == "chat" }
        #expect(chat.map(\.value) == [41])
        let info = try #require(parsed.samples.first { $0.name == "engine_info" })
        #expect(info.labels["version"] == "1.0 \"beta\"\n\\x")
        // Histogram invariants, per series: buckets cumulative, +Inf last and equal to _count.
        for family in ["engine_request_duration_seconds", "engine_ttft_seconds"] {
            let buckets = parsed.samples.filter { $0.name == family + "_bucket" }
            var bySeries: [[String: String]: [(le: String, value: Double)]] = [:]
            for b in buckets {
                var key = b.labels
                let le = key.removeValue(forKey: "le")!
                bySeries[key, default: []].append((le, b.value))
            }
            #expect(!bySeries.isEmpty)
            for (key, series) in bySeries {
                #expect(series.last?.le == "+Inf")
                #expect(zip(series, series.dropFirst()).allSatisfy { $0.value <= $1.value })
                #expect(zip(series.dropLast(), series.dropFirst().dropLast()).allSatisfy { Double($0.le)! < Double($1.le)! })
                let count = parsed.samples.first { $0.name == family + "_count" && $0.labels == key }
                #expect(count?.value == series.last?.value)
                #expect(parsed.samples.contains { $0.name == family + "_sum" && $0.labels == key })
            }
        }
    }

    @Test(.enabled(if: promtoolPath != nil, "promtool not on PATH (Debian package prometheus)"))
    func promtoolAcceptsTheExposition() throws {
        let result = try #require(runPromtool(on: sampleRegistry().text))
        #expect(result.status == 0, "promtool check metrics said:\n\(result.output)")
        #expect(result.output.isEmpty, "\(result.output)")
    }

    /// Guards the promtool test itself: a counter without `_total` or HELP must be rejected.
    @Test(.enabled(if: promtoolPath != nil, "promtool not on PATH (Debian package prometheus)"))
    func promtoolRejectsALintProblem() throws {
        let result = try #require(runPromtool(on: "# TYPE requests counter\nrequests 1\n"))
        #expect(result.status != 0)
        #expect(result.output.contains("_total"), "\(result.output)")
    }

    @Test func misuseIsOurBug() async {
        await #expect(processExitsWith: .failure) {
            var w = PrometheusWriter()
            w.gauge("engine-open", help: "h", value: 1)
        }
        await #expect(processExitsWith: .failure) {
            var w = PrometheusWriter()
            w.counter("engine_requests", help: "h", value: 1)
        }
        await #expect(processExitsWith: .failure) {
            var w = PrometheusWriter()
            w.gauge("engine_up", help: "h", value: 1)
            w.gauge("engine_up", help: "h", value: 1)
        }
        await #expect(processExitsWith: .failure) {
            var w = PrometheusWriter()
            w.histogram("engine_latency_seconds", help: "h", series: [])
            w.counter("engine_latency_seconds_count", help: "h", value: 1)
        }
        await #expect(processExitsWith: .failure) {
            var w = PrometheusWriter()
            w.gauge("engine_up", help: "h", samples: [(labels: [("bad-label", "x")], value: 1)])
        }
        await #expect(processExitsWith: .failure) {
            var w = PrometheusWriter()
            w.gauge("engine_up", help: "h", samples: [(labels: [("a", "x"), ("a", "y")], value: 1)])
        }
        await #expect(processExitsWith: .failure) {
            var w = PrometheusWriter()
            w.histogram("engine_latency_seconds", help: "h", series: [(labels: [("le", "1")], histogram: Histogram(buckets: [1]))])
        }
        await #expect(processExitsWith: .failure) {
            var w = PrometheusWriter()
            w.gauge("engine_up", help: "", value: 1)
        }
    }
}

// MARK: - Fixtures

/// A registry shaped like the Engine's: labelled counters, gauges, two histogram families with
/// several series, the standard bucket sets, and awkward label values.
private func sampleRegistry() -> PrometheusWriter {
    var w = PrometheusWriter()
    w.counter("engine_requests_total", help: "Requests by route, model, status class and cache outcome.", samples: [
        (labels: [("route", "chat"), ("model", "tiny"), ("status", "2xx"), ("cache", "hit")], value: 41),
        (labels: [("route", "completion"), ("model", "tiny"), ("status", "5xx"), ("cache", "miss")], value: 2),
    ])
    w.gauge("engine_open_connections", help: "Open client connections.", value: 7)
    w.gauge("engine_backend_healthy", help: "1 if the backend's last health check answered.", samples: [
        (labels: [("backend", "http://10.0.0.1:8000")], value: 1),
        (labels: [("backend", "http://10.0.0.2:8000")], value: 0),
    ])
    var fast = Histogram(buckets: Histogram.latencySeconds)
    var slow = Histogram(buckets: Histogram.latencySeconds)
    for i in 0..<200 { fast.observe(Double(i) * 0.0007) }
    for v in [0.3, 4.2, 61, 500] { slow.observe(v) }
    w.histogram("engine_request_duration_seconds", help: "End-to-end latency.", series: [
        (labels: [("route", "chat")], histogram: fast),
        (labels: [("route", "completion")], histogram: slow),
    ])
    var ttft = Histogram(buckets: Histogram.ttftSeconds)
    ttft.observe(0.042)
    w.histogram("engine_ttft_seconds", help: "Time to first token.", series: [(labels: [], histogram: ttft)])
    w.gauge("engine_info", help: "Build information; always 1.", samples: [
        (labels: [("version", "1.0 \"beta\"\n\\x")], value: 1)
    ])
    return w
}

// MARK: - A tiny exposition parser

/// Accepts exactly the subset of format 0.0.4 the writer produces: `# HELP name text`,
/// `# TYPE name type` (each once, HELP first, before the family's samples), and sample lines
/// `name{label="value",...} value` whose name belongs to the current family. Returns nil on any
/// deviation, so the test fails on a malformed line instead of skipping it.
private enum ExpositionParser {
    struct Family { var name: String, type: String }
    struct Sample { var name: String, labels: [String: String], value: Double }

    static func parse(_ text: String) -> (families: [Family], samples: [Sample])? {
        guard text.isEmpty || text.hasSuffix("\n") else { return nil }
        var families: [Family] = []
        var samples: [Sample] = []
        var pendingHelp: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
            if line.hasPrefix("# HELP ") {
                let rest = line.dropFirst("# HELP ".count)
                guard pendingHelp == nil, let sp = rest.firstIndex(of: " ") else { return nil }
                let name = String(rest[..<sp])
                guard isMetricName(name), !families.contains(where: { $0.name == name }) else { return nil }
                pendingHelp = name
            } else if line.hasPrefix("# TYPE ") {
                let parts = line.dropFirst("# TYPE ".count).split(separator: " ")
                guard parts.count == 2, pendingHelp == String(parts[0]),
                    ["counter", "gauge", "histogram"].contains(parts[1])
                else { return nil }
                families.append(Family(name: String(parts[0]), type: String(parts[1])))
                pendingHelp = nil
            } else {
                guard pendingHelp == nil, let family = families.last, let s = sample(line) else { return nil }
                let suffixes = family.type == "histogram" ? ["_bucket", "_sum", "_count"] : [""]
                guard suffixes.contains(where: { family.name + $0 == s.name }) else { return nil }
                guard (s.name == family.name + "_bucket") == (s.labels["le"] != nil) else { return nil }
                samples.append(s)
            }
        }
        return pendingHelp == nil ? (families, samples) : nil
    }

    private static func sample(_ line: Substring) -> Sample? {
        var i = line.startIndex
        while i < line.endIndex, line[i] != "{", line[i] != " " { i = line.index(after: i) }
        let name = String(line[..<i])
        guard isMetricName(name), i < line.endIndex else { return nil }
        var labels: [String: String] = [:]
        if line[i] == "{" {
            i = line.index(after: i)
            while true {
                guard i < line.endIndex else { return nil }
                if line[i] == "}" {
                    i = line.index(after: i)
                    break
                }
                if !labels.isEmpty {
                    guard line[i] == "," else { return nil }
                    i = line.index(after: i)
                }
                guard let eq = line[i...].firstIndex(of: "=") else { return nil }
                let key = String(line[i..<eq])
                guard isLabelName(key), labels[key] == nil else { return nil }
                i = line.index(after: eq)
                guard i < line.endIndex, line[i] == "\"" else { return nil }
                i = line.index(after: i)
                var value = ""
                while true {
                    guard i < line.endIndex else { return nil }
                    let c = line[i]
                    i = line.index(after: i)
                    if c == "\"" { break }
                    if c == "\\" {
                        guard i < line.endIndex else { return nil }
                        switch line[i] {
                        case "\\": value.append("\\")
                        case "\"": value.append("\"")
                        case "n": value.append("\n")
                        default: return nil
                        }
                        i = line.index(after: i)
                    } else {
                        value.append(c)
                    }
                }
                labels[key] = value
            }
        }
        guard i < line.endIndex, line[i] == " " else { return nil }
        let raw = line[line.index(after: i)...]
        let value: Double
        switch raw {
        case "NaN": value = .nan
        case "+Inf": value = .infinity
        case "-Inf": value = -.infinity
        default:
            guard let v = Double(raw), !raw.contains(" ") else { return nil }
            value = v
        }
        return Sample(name: name, labels: labels, value: value)
    }

    private static func isMetricName(_ s: String) -> Bool {
        s.wholeMatch(of: /[a-zA-Z_:][a-zA-Z0-9_:]*/) != nil
    }

    private static func isLabelName(_ s: String) -> Bool {
        s.wholeMatch(of: /[a-zA-Z_][a-zA-Z0-9_]*/) != nil
    }
}

// MARK: - promtool

private let promtoolPath: String? = {
    let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
    return path.split(separator: ":").map { "\($0)/promtool" }.first { access($0, X_OK) == 0 }
}()

/// Runs `promtool check metrics < file` and returns its exit status and combined output.
private func runPromtool(on exposition: String) -> (status: Int32, output: String)? {
    guard let bin = promtoolPath else { return nil }
    let dir = "/tmp/engine-promtool-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    guard mkdir(dir, 0o700) == 0 else { return nil }
    let input = dir + "/metrics.txt", output = dir + "/out.txt"
    defer {
        unlink(input)
        unlink(output)
        rmdir(dir)
    }
    guard let f = fopen(input, "w") else { return nil }
    fputs(exposition, f)
    fclose(f)

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, input, O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    let argv: [String] = [bin, "check", "metrics"]
    var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) }
    cargs.append(nil)
    defer { for p in cargs { free(p) } }
    var pid: pid_t = 0
    guard posix_spawn(&pid, bin, &actions, nil, &cargs, environ) == 0 else { return nil }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let exitStatus = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)

    var text = ""
    if let o = fopen(output, "r") {
        var buf = [CChar](repeating: 0, count: 4096)
        while fgets(&buf, Int32(buf.count), o) != nil {
            text += String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        fclose(o)
    }
    return (exitStatus, text)
}

// VLLMMetricsParser: reads the load gauges the admission stage needs out of vLLM's Prometheus text
// (`GET /metrics`, ~55 KB, ~370 sample lines). Pure function over borrowed bytes, standard library
// only, one pass: each line is matched by its first bytes and skipped unless it is one of the four
// gauges below. Fixes original bug 14: labels optional and in any order, the older metric name
// accepted, several models kept apart, and a missing or unreadable gauge stays nil (never 0).
// Pure: no imports, no I/O.

/// Load of one served model on one backend, as last read from its `/metrics`.
public struct BackendLoad: Equatable, Sendable {
    /// KV-cache usage as a fraction 0...1 (`vllm:kv_cache_usage_perc`, or the older
    /// `vllm:gpu_cache_usage_perc`); nil when neither was readable.
    public var kvUsage: Double?
    /// Requests in the running batch (`vllm:num_requests_running`); nil when absent.
    public var running: Double?
    /// Requests waiting inside vLLM, preempted ones included (`vllm:num_requests_waiting`).
    public var waiting: Double?

    public init(kvUsage: Double? = nil, running: Double? = nil, waiting: Double? = nil) {
        self.kvUsage = kvUsage
        self.running = running
        self.waiting = waiting
    }
}

public enum VLLMMetricsParser {
    /// Loads keyed by the `model_name` label ("" for samples without one). A model appears only if
    /// at least one of its gauges was read. Several samples for one model (data-parallel engines,
    /// `engine="0"`, `engine="1"`) merge: KV usage takes the maximum (the fullest engine is the one
    /// that will preempt), running and waiting add up. The current name beats the older one when a
    /// page has both. Values must be finite and ≥ 0 (`NaN`, `±Inf`, negatives are unreadable → nil).
    public static func parse(_ text: UnsafeRawBufferPointer) -> [String: BackendLoad] {
        var acc: [String: Accumulator] = [:]
        let end = text.count
        var lineStart = 0
        while lineStart < end {
            var lineEnd = lineStart
            while lineEnd < end && text[lineEnd] != newline { lineEnd += 1 }
            if let s = sample(text, from: lineStart, to: lineEnd) {
                acc[s.model, default: Accumulator()].add(s.metric, s.value)
            }
            lineStart = lineEnd + 1
        }
        var out: [String: BackendLoad] = [:]
        out.reserveCapacity(acc.count)
        for (model, a) in acc {
            out[model] = BackendLoad(kvUsage: a.kv ?? a.gpu, running: a.running, waiting: a.waiting)
        }
        return out
    }

    public static func parse(_ text: [UInt8]) -> [String: BackendLoad] {
        text.withUnsafeBytes { parse($0) }
    }

    /// The KV cache size in tokens from `vllm:cache_config_info`'s labels (value 1, the geometry in
    /// labels): `kv_cache_size_tokens`, else `num_gpu_blocks` × `block_size`; nil when absent.
    /// Prefix-aware routing sizes its per-backend index from it.
    public static func kvCacheSizeTokens(_ text: [UInt8]) -> Int? {
        let name = Array("vllm:cache_config_info{".utf8)
        return text.withUnsafeBytes { p -> Int? in
            var i = 0
            let n = p.count
            while i < n {
                var e = i
                while e < n && p[e] != newline { e += 1 }
                if matches(p, at: i, end: e, name) {
                    let line = Array(UnsafeRawBufferPointer(rebasing: p[i..<e]))
                    if let t = labelInt(line, "kv_cache_size_tokens") { return t }
                    if let b = labelInt(line, "num_gpu_blocks"), let s = labelInt(line, "block_size") { return b * s }
                    return nil
                }
                i = e + 1
            }
            return nil
        }
    }

    /// The integer value of `name="123"` in a label block (a name preceded by '{' or ',').
    private static func labelInt(_ line: [UInt8], _ name: String) -> Int? {
        let key = Array((name + "=\"").utf8)
        var i = 0
        while i + key.count < line.count {
            if (line[i] == UInt8(ascii: "{") || line[i] == UInt8(ascii: ",")) && Array(line[(i + 1)..<min(line.count, i + 1 + key.count)]) == key {
                var j = i + 1 + key.count
                var v = 0
                var digits = 0
                while j < line.count, line[j] >= 0x30, line[j] <= 0x39, digits < 12 {
                    v = v * 10 + Int(line[j] - 0x30)
                    j += 1
                    digits += 1
                }
                return digits > 0 && j < line.count && line[j] == UInt8(ascii: "\"") ? v : nil
            }
            i += 1
        }
        return nil
    }

    // MARK: - Internals

    enum Metric: Sendable { case kvUsage, gpuUsage, running, waiting }

    private struct Accumulator {
        var kv: Double?
        var gpu: Double?
        var running: Double?
        var waiting: Double?

        mutating func add(_ m: Metric, _ v: Double) {
            switch m {
            case .kvUsage: kv = max(kv ?? v, v)
            case .gpuUsage: gpu = max(gpu ?? v, v)
            case .running: running = (running ?? 0) + v
            case .waiting: waiting = (waiting ?? 0) + v
            }
        }
    }

    private struct Sample {
        var metric: Metric
        var model: String
        var value: Double
    }

    private static let newline = UInt8(ascii: "\n")
    private static let prefix = Array("vllm:".utf8)
    /// Name suffixes after "vllm:". `num_requests_waiting_by_reason` is told apart from
    /// `num_requests_waiting` by the byte after the name ('{' or blank only).
    private static let names: [([UInt8], Metric)] = [
        (Array("kv_cache_usage_perc".utf8), .kvUsage),
        (Array("num_requests_running".utf8), .running),
        (Array("num_requests_waiting".utf8), .waiting),
        (Array("gpu_cache_usage_perc".utf8), .gpuUsage),
    ]

    @inline(__always) private static func isBlank(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }

    @inline(__always) private static func matches(_ p: UnsafeRawBufferPointer, at i: Int, end: Int, _ word: [UInt8]) -> Bool {
        guard end - i >= word.count else { return false }
        for k in 0..<word.count where p[i + k] != word[k] { return false }
        return true
    }

    /// One sample line `name[{labels}] value [timestamp]`, or nil for anything else.
    private static func sample(_ p: UnsafeRawBufferPointer, from start: Int, to lineEnd: Int) -> Sample? {
        var end = lineEnd
        if end > start && p[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        var i = start
        while i < end && isBlank(p[i]) { i += 1 }
        // Cheap reject first: comments, other families.
        guard i < end, p[i] == UInt8(ascii: "v"), matches(p, at: i, end: end, prefix) else { return nil }
        i += prefix.count
        var metric: Metric?
        for (word, m) in names where matches(p, at: i, end: end, word) {
            let after = i + word.count
            guard after < end, p[after] == UInt8(ascii: "{") || isBlank(p[after]) else { continue }
            metric = m
            i = after
            break
        }
        guard let metric else { return nil }

        var model = ""
        if p[i] == UInt8(ascii: "{") {
            guard let m = labels(p, at: &i, end: end) else { return nil }
            model = m
        }
        // Name (or label block) and value are separated by blanks.
        guard i < end, isBlank(p[i]) else { return nil }
        while i < end && isBlank(p[i]) { i += 1 }
        let valueStart = i
        while i < end && !isBlank(p[i]) { i += 1 }
        guard let value = number(p, valueStart, i) else { return nil }
        // Optional integer timestamp; anything else makes the line garbage.
        while i < end && isBlank(p[i]) { i += 1 }
        if i < end && p[i] == UInt8(ascii: "-") { i += 1 }
        while i < end && p[i] >= UInt8(ascii: "0") && p[i] <= UInt8(ascii: "9") { i += 1 }
        while i < end && isBlank(p[i]) { i += 1 }
        guard i == end else { return nil }
        return Sample(metric: metric, model: model, value: value)
    }

    /// Parses `{a="x",model_name="m",…}` starting at '{'; returns the `model_name` value ("" if
    /// absent) and leaves `i` after '}', or nil when the block is malformed.
    private static func labels(_ p: UnsafeRawBufferPointer, at i: inout Int, end: Int) -> String? {
        let modelName = Array("model_name".utf8)
        var model = ""
        i += 1  // '{'
        while true {
            while i < end && isBlank(p[i]) { i += 1 }
            guard i < end else { return nil }
            if p[i] == UInt8(ascii: "}") { i += 1; return model }
            let nameStart = i
            while i < end, isLabelNameByte(p[i]) { i += 1 }
            guard i > nameStart else { return nil }
            let isModel = i - nameStart == modelName.count && matches(p, at: nameStart, end: i, modelName)
            while i < end && isBlank(p[i]) { i += 1 }
            guard i < end, p[i] == UInt8(ascii: "=") else { return nil }
            i += 1
            while i < end && isBlank(p[i]) { i += 1 }
            guard i < end, p[i] == UInt8(ascii: "\"") else { return nil }
            i += 1
            var value: [UInt8] = []
            var closed = false
            while i < end {
                let b = p[i]
                if b == UInt8(ascii: "\"") { closed = true; i += 1; break }
                if b == UInt8(ascii: "\\") && i + 1 < end {
                    // Prometheus escapes: \\ \" \n. Anything else is kept as written.
                    let e = p[i + 1]
                    if isModel {
                        switch e {
                        case UInt8(ascii: "n"): value.append(0x0A)
                        case UInt8(ascii: "\\"), UInt8(ascii: "\""): value.append(e)
                        default: value.append(b); value.append(e)
                        }
                    }
                    i += 2
                    continue
                }
                if isModel { value.append(b) }
                i += 1
            }
            guard closed else { return nil }
            if isModel { model = String(decoding: value, as: UTF8.self) }
            while i < end && isBlank(p[i]) { i += 1 }
            guard i < end else { return nil }
            if p[i] == UInt8(ascii: ",") { i += 1; continue }  // a trailing comma is legal
            guard p[i] == UInt8(ascii: "}") else { return nil }
            i += 1
            return model
        }
    }

    @inline(__always) private static func isLabelNameByte(_ b: UInt8) -> Bool {
        (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
            || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9")) || b == UInt8(ascii: "_")
    }

    /// Decimal or scientific notation via the standard library's correctly rounded parser; only
    /// finite values ≥ 0 count. Tokens are short, and only the few matched lines get here.
    private static func number(_ p: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Double? {
        guard end > start, end - start <= 64 else { return nil }
        for k in start..<end {
            switch p[k] {
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E"),
                 UInt8(ascii: "+"), UInt8(ascii: "-"):
                continue
            default:
                return nil  // NaN, Inf, hex floats, junk
            }
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: p[start..<end]), as: UTF8.self)
        guard let v = Double(text), v.isFinite, v >= 0 else { return nil }
        return v
    }
}

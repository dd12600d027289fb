// ByteWriter: an append-only [UInt8] for building JSON, SSE events and Prometheus text on the
// request path without Foundation and with few intermediate Strings.
// Owns: its byte array, which callers take (`bytes`) or reuse (`reset()` keeps the capacity).
// Also the two number spellings vLLM's bodies use: Python's float repr and prometheus_client's
// Go-style floats.

struct ByteWriter {
    var bytes: [UInt8]

    init(capacity: Int = 512) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    mutating func reset() { bytes.removeAll(keepingCapacity: true) }

    @inline(__always)
    mutating func write(_ s: StaticString) {
        s.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    @inline(__always)
    mutating func write(_ b: [UInt8]) { bytes.append(contentsOf: b) }

    @inline(__always)
    mutating func write(byte: UInt8) { bytes.append(byte) }

    mutating func write(string s: String) {
        var s = s
        s.withUTF8 { bytes.append(contentsOf: $0) }
    }

    mutating func write(int v: Int) {
        if v < 0 {
            bytes.append(UInt8(ascii: "-"))
            write(uint: UInt(v.magnitude))
        } else {
            write(uint: UInt(v))
        }
    }

    mutating func write(uint v: UInt) {
        if v < 10 {
            bytes.append(48 + UInt8(v))
            return
        }
        var digits = 1
        var n = v
        while n >= 10 { n /= 10; digits += 1 }
        let start = bytes.count
        bytes.append(contentsOf: repeatElement(48, count: digits))
        n = v
        var i = start + digits - 1
        while true {
            bytes[i] = 48 + UInt8(n % 10)
            n /= 10
            if n == 0 { break }
            i -= 1
        }
    }

    /// `"..."` with JSON escaping.
    mutating func write(jsonString s: String) {
        bytes.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { write(jsonEscaped: UnsafeRawBufferPointer($0)) }
        bytes.append(UInt8(ascii: "\""))
    }

    /// The escaped body of a JSON string (no quotes). Input must be UTF-8; bytes ≥ 0x80 pass through.
    mutating func write(jsonEscaped p: UnsafeRawBufferPointer) {
        var runStart = 0
        var i = 0
        let n = p.count
        while i < n {
            let b = p[i]
            if b >= 0x20 && b != 0x22 && b != 0x5C {
                i += 1
                continue
            }
            if i > runStart { bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: p[runStart..<i])) }
            switch b {
            case 0x22: write("\\\"")
            case 0x5C: write("\\\\")
            case 0x0A: write("\\n")
            case 0x0D: write("\\r")
            case 0x09: write("\\t")
            case 0x08: write("\\b")
            case 0x0C: write("\\f")
            default:
                write("\\u00")
                bytes.append(hexDigit(b >> 4))
                bytes.append(hexDigit(b & 0xF))
            }
            i += 1
            runStart = i
        }
        if n > runStart { bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: p[runStart..<n])) }
    }

    /// Python's `repr(float)`, which is what vLLM's JSON and pydantic messages print.
    mutating func write(pythonFloat d: Double) { write(string: pythonFloatRepr(d)) }

    /// prometheus_client's `floatToGoString`.
    mutating func write(goFloat d: Double) { write(string: goFloatString(d)) }
}

@inline(__always)
func hexDigit(_ v: UInt8) -> UInt8 { v < 10 ? 48 + v : 87 + v }

/// JSON-escaped bytes of `s`, without quotes (precomputed once for model names and ids).
func jsonEscapedBytes(_ s: String) -> [UInt8] {
    var w = ByteWriter(capacity: s.utf8.count + 8)
    var s = s
    s.withUTF8 { w.write(jsonEscaped: UnsafeRawBufferPointer($0)) }
    return w.bytes
}

/// Python's float repr: Swift's shortest round-trip digits already agree with it except that
/// Swift drops the ".0" for exponent forms and spells infinities differently.
func pythonFloatRepr(_ d: Double) -> String {
    if d.isNaN { return "nan" }
    if d.isInfinite { return d < 0 ? "-inf" : "inf" }
    return d.description
}

/// prometheus_client: `s = repr(d)`; if `d > 0` and there are more than 6 digits before the dot,
/// rewrite as a Go-style exponent (`1.7956197946304622e+09`).
func goFloatString(_ d: Double) -> String {
    if d.isInfinite { return d > 0 ? "+Inf" : "-Inf" }
    if d.isNaN { return "NaN" }
    let s = pythonFloatRepr(d)
    let u = Array(s.utf8)
    guard d > 0, let dot = u.firstIndex(of: UInt8(ascii: ".")), dot > 6 else { return s }
    var mantissa: [UInt8] = [u[0], UInt8(ascii: ".")]
    mantissa.append(contentsOf: u[1..<dot])
    mantissa.append(contentsOf: u[(dot + 1)...])
    while let last = mantissa.last, last == UInt8(ascii: "0") || last == UInt8(ascii: ".") {
        mantissa.removeLast()
    }
    return String(decoding: mantissa, as: UTF8.self) + "e+0" + String(dot - 1)
}

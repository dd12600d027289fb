// UsageScanner: pulls `prompt_tokens` and `completion_tokens` out of the `"usage":{...}` object
// of a vLLM response body or usage chunk without parsing the whole JSON (token metrics on the
// hot path). Pure (memmem through the C shim for the search); nil when there is no usage
// object with both numbers.
import CEventShim

public enum UsageScanner {
    public static func scan(_ bytes: UnsafeRawBufferPointer) -> (prompt: Int, completion: Int)? {
        guard let u = find(bytes, "\"usage\":{", from: 0) else { return nil }
        // The usage object is small and flat; look a bounded distance past its start.
        let end = min(bytes.count, u + 512)
        guard let p = number(after: "\"prompt_tokens\":", in: bytes, from: u, to: end),
              let c = number(after: "\"completion_tokens\":", in: bytes, from: u, to: end) else { return nil }
        return (p, c)
    }

    private static func number(after key: StaticString, in b: UnsafeRawBufferPointer, from: Int, to: Int) -> Int? {
        guard var i = find(b, key, from: from), i < to else { return nil }
        while i < to && b[i] == 0x20 { i += 1 }
        var v = 0
        var digits = 0
        while i < to, b[i] >= 0x30, b[i] <= 0x39, digits < 12 {
            v = v * 10 + Int(b[i] - 0x30)
            digits += 1
            i += 1
        }
        return digits > 0 ? v : nil
    }

    /// Index just past the first occurrence of `needle` at or after `from`.
    private static func find(_ b: UnsafeRawBufferPointer, _ needle: StaticString, from: Int) -> Int? {
        guard let base = b.baseAddress, from < b.count else { return nil }
        let r = ces_find_end(base + from, b.count - from, needle.utf8Start, needle.utf8CodeUnitCount)
        return r < 0 ? nil : from + r
    }
}

// KnownFindings: invariants the fuzz targets check that the Engine is known to break, with the
// minimized input of each in fuzz/findings/. Until the Engine is fixed, the targets skip those
// checks for inputs of the known shape only (so the smoke in the test suite stays green and
// fuzzing goes on finding other things); FUZZ_STRICT=1 checks them anyway, to replay a finding
// (`FUZZ_STRICT=1 .build/debug/fuzz-engine fuzz/findings/<file>`) or to confirm a fix. Remove an
// entry with its fix.
import CEventShim

#if canImport(Glibc)
import Glibc
#endif

enum KnownFindings {
    /// FUZZ_STRICT is set: no known finding is excused.
    static let isStrict = getenv("FUZZ_STRICT") != nil

    /// fuzz/findings/request-duplicate-keys: a body with a duplicate key. The validator
    /// (simdjson, CRequestScan) reads the first occurrence, jansson (the tree the Frontend
    /// rewrites and forwards) and vLLM (Python's json) the last, so the Engine validates and
    /// measures a different value than the backend receives.
    static func excusesDuplicateKeys(_ body: [UInt8]) -> Bool {
        guard !isStrict, !body.isEmpty else { return false }
        var err = json_error_t()
        let strict = body.withUnsafeBytes {
            json_loadb($0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count, Int(JSON_REJECT_DUPLICATES), &err)
        }
        if let strict {
            json_decref(strict)
            return false
        }
        return withUnsafeBytes(of: &err.text) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            .hasPrefix("duplicate object key")
    }

    /// fuzz/findings/sse-blank-line-after-done: an empty line right after the empty line that
    /// ends an event (LF [CR] LF [CR] LF). SSEEventScanner, looking back across the end of the
    /// previous event, makes it an event of its own when both are in one read, but holds it as
    /// the start of the next event when it comes in a later read: the relayed bytes, the held
    /// bytes and the invalid-event count depend on the read boundaries. After `data: [DONE]`
    /// the stream then fails either way (an invalid event after [DONE], or a partial event).
    static func excusesBlankLineRun(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard !isStrict else { return false }
        var i = 0
        let n = bytes.count
        while i < n {
            if bytes[i] == 0x0A {
                var j = i + 1
                if j < n && bytes[j] == 0x0D { j += 1 }
                if j < n && bytes[j] == 0x0A {
                    var k = j + 1
                    if k < n && bytes[k] == 0x0D { k += 1 }
                    if k < n && bytes[k] == 0x0A { return true }
                }
            }
            i += 1
        }
        return false
    }
}

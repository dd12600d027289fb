// UsageTarget (FUZZ_TARGET=usage): UpstreamJSON.inspect, the simdjson reader (CRequestScan's
// rs_inspect_upstream) of an upstream JSON body or SSE event: kind, error, choices and usage.
// The whole input is the document. Checks: the fields are consistent with the kind, and the
// answer does not depend on the bytes after the input in memory (simdjson reads ahead; the
// reader must pad a copy, not the caller's buffer).
import Engine

enum UsageTarget {
    static func run(_ bytes: UnsafeRawBufferPointer) {
        let j = UpstreamJSON.inspect(bytes)
        precondition((j.kind == .done) == bytes.elementsEqual("[DONE]".utf8), "[DONE] misread")
        if j.kind != .object {
            precondition(!j.hasError && !j.hasChoices && j.usage == nil, "fields read from a non-object")
        }
        precondition(j.hasChoices || !j.choicesEmpty, "empty choices without choices")
        precondition(!j.isUsageOnly || j.usage != nil, "a usage-only chunk without usage")
        _ = j.isAnswer(for: .chat)
        _ = j.isAnswer(for: .completion)
        // The same bytes followed by other bytes (a closing brace, quote, digits, NUL).
        var padded = Array(bytes)
        padded.append(contentsOf: Array(#"}"0]1 "#.utf8) + [0])
        let k = padded.withUnsafeBytes { UpstreamJSON.inspect(UnsafeRawBufferPointer(rebasing: $0[0..<bytes.count])) }
        precondition(k == j, "the reading depends on bytes after the document")
    }
}

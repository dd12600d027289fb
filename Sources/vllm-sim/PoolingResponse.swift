// PoolingResponse: the exact bytes of vLLM 0.32.0's pooling answers (captured, docs/vllm-surface.md
// §3 and §4): /v1/embeddings, /pooling, /classify, /score and /rerank bodies, vectors as JSON
// floats (float32 values printed as Python prints them), base64 or raw bytes, and the `metadata`
// header of `encoding_format: "bytes"`. Writes into a caller's ByteWriter; no I/O.
// Pure: no imports, no I/O.

enum PoolingResponse {
    /// /v1/embeddings (`embd-…`, items `"object":"embedding","embedding":…`) and /pooling
    /// (`pooling-…`, items `"object":"pooling","data":…`).
    static func writeVectors(_ endpoint: PoolingEndpoint, id: [UInt8], created: Int, model: [UInt8],
                             vectors: [[Float]], encoding: VectorEncoding, promptTokens: Int,
                             into w: inout ByteWriter) {
        let isEmbeddings = endpoint == .embeddings
        writeListHead(id: id, created: created, model: model, into: &w)
        for (i, v) in vectors.enumerated() {
            if i > 0 { w.write(byte: UInt8(ascii: ",")) }
            w.write("{\"index\":")
            w.write(int: i)
            w.write(isEmbeddings ? ",\"object\":\"embedding\",\"embedding\":" : ",\"object\":\"pooling\",\"data\":")
            if encoding.format == .base64 {
                w.write(byte: UInt8(ascii: "\""))
                writeBase64(rawBytes([v], encoding), into: &w)
                w.write(byte: UInt8(ascii: "\""))
            } else {
                writeFloats(v, into: &w)
            }
            w.write(byte: UInt8(ascii: "}"))
        }
        writeListUsage(promptTokens: promptTokens, into: &w)
    }

    /// /classify: a label and the class probabilities per input.
    static func writeClassification(id: [UInt8], created: Int, model: [UInt8], probabilities: [[Float]],
                                    promptTokens: Int, into w: inout ByteWriter) {
        writeListHead(id: id, created: created, model: model, into: &w)
        for (i, p) in probabilities.enumerated() {
            if i > 0 { w.write(byte: UInt8(ascii: ",")) }
            w.write("{\"index\":")
            w.write(int: i)
            w.write(",\"label\":\"LABEL_")
            w.write(int: p.indices.max { p[$0] < p[$1] } ?? 0)
            w.write("\",\"probs\":")
            writeFloats(p, into: &w)
            w.write(",\"num_classes\":")
            w.write(int: p.count)
            w.write(byte: UInt8(ascii: "}"))
        }
        writeListUsage(promptTokens: promptTokens, into: &w)
    }

    /// /score and /v1/score: one score per pair, in pair order.
    static func writeScores(id: [UInt8], created: Int, model: [UInt8], scores: [Float], promptTokens: Int,
                            into w: inout ByteWriter) {
        writeListHead(id: id, created: created, model: model, into: &w)
        for (i, s) in scores.enumerated() {
            if i > 0 { w.write(byte: UInt8(ascii: ",")) }
            w.write("{\"index\":")
            w.write(int: i)
            w.write(",\"object\":\"score\",\"score\":")
            w.write(pythonFloat: Double(s))
            w.write(byte: UInt8(ascii: "}"))
        }
        writeListUsage(promptTokens: promptTokens, into: &w)
    }

    /// /rerank, /v1/rerank, /v2/rerank: no object or created; results by descending score,
    /// cut to `topN` (0 = all); each echoes its document's text.
    static func writeRerank(id: [UInt8], model: [UInt8], scores: [Float], documents: [[UInt8]], topN: Int,
                            promptTokens: Int, into w: inout ByteWriter) {
        w.write("{\"id\":\"")
        w.write(id)
        w.write("\",\"model\":\"")
        w.write(model)
        w.write("\",\"usage\":{\"prompt_tokens\":")
        w.write(int: promptTokens)
        w.write(",\"total_tokens\":")
        w.write(int: promptTokens)
        w.write("},\"results\":[")
        // Stable: equal scores keep document order.
        var order = Array(scores.indices)
        order.sort { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
        if topN > 0 && topN < order.count { order.removeLast(order.count - topN) }
        for (k, i) in order.enumerated() {
            if k > 0 { w.write(byte: UInt8(ascii: ",")) }
            w.write("{\"index\":")
            w.write(int: i)
            w.write(",\"document\":{\"text\":\"")
            w.write(documents[i])
            w.write("\",\"multi_modal\":null},\"relevance_score\":")
            w.write(pythonFloat: Double(scores[i]))
            w.write(byte: UInt8(ascii: "}"))
        }
        w.write("]}")
    }

    /// The vectors one after the other in the requested dtype and byte order (the body of a
    /// `bytes` / `bytes_only` answer, and what base64 encodes).
    static func rawBytes(_ vectors: [[Float]], _ e: VectorEncoding) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(vectors.reduce(0) { $0 + $1.count } * e.bytesPerValue)
        for v in vectors {
            for x in v {
                switch e.dtype {
                case .float32: append(UInt64(x.bitPattern), bytes: 4, bigEndian: e.isBigEndian, to: &out)
                case .float16: append(UInt64(Float16(x).bitPattern), bytes: 2, bigEndian: e.isBigEndian, to: &out)
                case .bfloat16: append(UInt64(bfloat16Bits(x)), bytes: 2, bigEndian: e.isBigEndian, to: &out)
                }
            }
        }
        return out
    }

    /// The `metadata` header of an `encoding_format: "bytes"` answer: Python's json.dumps with
    /// its default separators (", " and ": "), as captured.
    static func bytesMetadata(id: [UInt8], created: Int, model: [UInt8], count: Int, dimensions: Int,
                              encoding e: VectorEncoding, promptTokens: Int) -> String {
        var w = ByteWriter(capacity: 160 + 120 * count)
        w.write("{\"id\": \"")
        w.write(id)
        w.write("\", \"created\": ")
        w.write(int: created)
        w.write(", \"model\": \"")
        w.write(model)
        w.write("\", \"data\": [")
        let size = dimensions * e.bytesPerValue
        for i in 0..<count {
            if i > 0 { w.write(", ") }
            w.write("{\"index\": ")
            w.write(int: i)
            w.write(", \"embed_dtype\": \"")
            w.write(string: e.dtype.rawValue)
            w.write("\", \"endianness\": \"")
            w.write(string: e.endianness)
            w.write("\", \"start\": ")
            w.write(int: i * size)
            w.write(", \"end\": ")
            w.write(int: (i + 1) * size)
            w.write(", \"shape\": [")
            w.write(int: dimensions)
            w.write("]}")
        }
        w.write("], \"usage\": {\"prompt_tokens\": ")
        w.write(int: promptTokens)
        w.write(", \"total_tokens\": ")
        w.write(int: promptTokens)
        w.write("}}")
        return String(decoding: w.bytes, as: UTF8.self)
    }

    static func writeBase64(_ bytes: [UInt8], into w: inout ByteWriter) {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var i = 0
        while i + 3 <= bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            for shift in [18, 12, 6, 0] { w.write(byte: alphabet[Int((n >> UInt32(shift)) & 63)]) }
            i += 3
        }
        let rest = bytes.count - i
        if rest > 0 {
            let n = UInt32(bytes[i]) << 16 | (rest == 2 ? UInt32(bytes[i + 1]) << 8 : 0)
            w.write(byte: alphabet[Int((n >> 18) & 63)])
            w.write(byte: alphabet[Int((n >> 12) & 63)])
            w.write(byte: rest == 2 ? alphabet[Int((n >> 6) & 63)] : UInt8(ascii: "="))
            w.write(byte: UInt8(ascii: "="))
        }
    }

    /// torch's float32 → bfloat16: round to nearest even on the upper 16 bits; NaN stays NaN.
    static func bfloat16Bits(_ x: Float) -> UInt16 {
        if x.isNaN { return 0x7FC0 }
        let bits = x.bitPattern
        let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: rounded >> 16)
    }

    private static func append(_ v: UInt64, bytes n: Int, bigEndian: Bool, to out: inout [UInt8]) {
        for k in 0..<n {
            let shift = bigEndian ? (n - 1 - k) * 8 : k * 8
            out.append(UInt8(truncatingIfNeeded: v >> UInt64(shift)))
        }
    }

    /// numpy's float32 → Python float → repr: the shortest repr of the float32's exact value as a
    /// double (0.004758622497320175), not of the float32 (0.0047586225).
    private static func writeFloats(_ v: [Float], into w: inout ByteWriter) {
        w.write(byte: UInt8(ascii: "["))
        for (i, x) in v.enumerated() {
            if i > 0 { w.write(byte: UInt8(ascii: ",")) }
            w.write(pythonFloat: Double(x))
        }
        w.write(byte: UInt8(ascii: "]"))
    }

    private static func writeListHead(id: [UInt8], created: Int, model: [UInt8], into w: inout ByteWriter) {
        w.write("{\"id\":\"")
        w.write(id)
        w.write("\",\"object\":\"list\",\"created\":")
        w.write(int: created)
        w.write(",\"model\":\"")
        w.write(model)
        w.write("\",\"data\":[")
    }

    private static func writeListUsage(promptTokens: Int, into w: inout ByteWriter) {
        w.write("],\"usage\":{\"prompt_tokens\":")
        w.write(int: promptTokens)
        w.write(",\"total_tokens\":")
        w.write(int: promptTokens)
        w.write(",\"completion_tokens\":0,\"prompt_tokens_details\":null,\"completion_tokens_details\":null}}")
    }
}

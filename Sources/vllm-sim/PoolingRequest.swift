// PoolingRequest: a POST /v1/embeddings, /pooling or /classify body, as vLLM 0.32.0 accepts it
// with a pooling model (docs/vllm-surface.md §3), reduced to the prompts as the simulator's token
// ids plus the output encoding. Also the simulator's embedding model: SimEmbedding gives every
// token sequence a fixed unit vector (same input → same vector; a string and its token ids agree,
// as in vLLM).
//
// vLLM's order, as captured or read from its source: pydantic field errors → unknown model →
// empty input list → `dimensions` → prompt too long.
// Pure: no imports, no I/O.

enum PoolingEndpoint: Sendable {
    case embeddings, pooling, classify
}

/// How vectors are written: JSON floats, base64 of the raw values, or raw bytes (`bytes` with a
/// `metadata` header describing each vector, `bytes_only` without).
struct VectorEncoding: Sendable, Equatable {
    enum Format: Sendable, Equatable { case float, base64, bytes, bytesOnly }
    enum DType: String, Sendable, Equatable { case float32, float16, bfloat16 }

    var format: Format = .float
    var dtype: DType = .float32
    /// "native" (little on the machines the simulator runs on), "little" or "big".
    var endianness = "native"

    var bytesPerValue: Int { dtype == .float32 ? 4 : 2 }
    var isBigEndian: Bool { endianness == "big" }
}

struct PoolingRequest: Sendable {
    var modelIndex: Int
    /// One token-id sequence per input, in order.
    var prompts: [[Int]]
    var encoding: VectorEncoding
    /// Matryoshka truncation (embeddings only), already checked against the model.
    var dimensions: Int?

    var promptTokens: Int { prompts.reduce(0) { $0 + $1.count } }

    /// The model the simulator pretends to run: its vector size and whether it is a Matryoshka
    /// model (one that accepts `dimensions`).
    struct ModelShape: Sendable {
        var embeddingSize: Int
        var isMatryoshka: Bool
        var maxModelLen: Int
    }

    static func parse(_ endpoint: PoolingEndpoint, body: [UInt8], contentType: String?, catalog: ModelCatalog,
                      shape: ModelShape) -> Result<PoolingRequest, APIError> {
        readJSONObject(body, contentType: contentType) { root in
            parseObject(endpoint, root: root, catalog: catalog, shape: shape)
        }
    }

    private static func parseObject(_ endpoint: PoolingEndpoint, root: JSONNode, catalog: ModelCatalog,
                                    shape: ModelShape) -> Result<PoolingRequest, APIError> {
        var f = FieldReader()
        var prompts: [[Int]] = []
        var isEmptyList = false
        let input = root["input"]
        let messages = root["messages"]
        if input.kind == .missing && messages.kind == .missing {
            return .failure(missingInput(endpoint, root: root))
        }
        // `input` wins when both are there (vLLM tries the completion form first).
        let source = input.kind != .missing ? input : messages
        let loc = input.kind != .missing ? "body.input" : "body.messages"
        switch source.kind {
        case .string where input.kind != .missing:
            prompts = [SimPrompt.textIDs(source.stringBytes!, addBOS: true)]
        case .array:
            isEmptyList = source.count == 0
            if !isEmptyList, let p = arrayPrompts(source, loc: loc, reader: &f) { prompts = p }
        default:
            f.fail(.validation("list_type", loc: loc, msg: "Input should be a valid list", input: source.pydanticInput))
        }

        let model = root["model"]
        if !model.isAbsent && model.kind != .string {
            f.fail(.validation("string_type", loc: "body.model", msg: "Input should be a valid string",
                               input: model.pydanticInput))
        }
        var encoding = VectorEncoding()
        let format = root["encoding_format"]
        switch format.string {
        case nil where format.isAbsent: break
        case "float": encoding.format = .float
        case "base64": encoding.format = .base64
        case "bytes": encoding.format = .bytes
        case "bytes_only": encoding.format = .bytesOnly
        default:
            // vLLM lists this once per alternative of its request union (11 errors); one here.
            f.fail(.validation([literalError("body.encoding_format", format, "'float', 'base64', 'bytes' or 'bytes_only'")]))
        }
        let dtype = root["embed_dtype"]
        if !dtype.isAbsent {
            if let s = dtype.string, let d = VectorEncoding.DType(rawValue: s) {
                encoding.dtype = d
            } else if dtype.string != "fp8_e4m3" && dtype.string != "fp8_e5m2" {
                f.fail(.validation([literalError("body.embed_dtype", dtype,
                                                 "'float32', 'float16', 'bfloat16', 'fp8_e4m3' or 'fp8_e5m2'")]))
            }
        }
        let endianness = root["endianness"]
        if !endianness.isAbsent {
            if let s = endianness.string, s == "native" || s == "big" || s == "little" {
                encoding.endianness = s
            } else {
                f.fail(.validation([literalError("body.endianness", endianness, "'native', 'big' or 'little'")]))
            }
        }
        let dimensions = endpoint == .embeddings ? f.int(root["dimensions"], "body.dimensions") : nil
        if let failure = f.failure { return .failure(failure) }

        var modelIndex = 0
        if let name = model.stringBytes {
            guard let i = catalog.index(of: name) else { return .failure(.unknownPoolingModel(model.string ?? "")) }
            modelIndex = i
        }
        if isEmptyList { return .failure(.emptyPromptList) }
        if let s = dtype.string, s.hasPrefix("fp8") {
            // Accepted by vLLM; not worth an fp8 encoder here. Said plainly rather than faked.
            return .failure(.vllm(400, message: "vllm-sim does not simulate embed_dtype=\(s); use float32, float16 or bfloat16.",
                                  type: "BadRequestError", param: "embed_dtype"))
        }
        if let d = dimensions {
            let name = catalog.names[modelIndex]
            if !shape.isMatryoshka { return .failure(.matryoshkaUnsupported(model: name, dimensions: d)) }
            if d < 1 || d > shape.embeddingSize {
                return .failure(.dimensionsOutOfRange(model: name, dimensions: d, size: shape.embeddingSize))
            }
        }
        for p in prompts where p.count > shape.maxModelLen { return .failure(.promptTooLong(maxModelLen: shape.maxModelLen)) }
        return .success(PoolingRequest(modelIndex: modelIndex, prompts: prompts, encoding: encoding, dimensions: dimensions))
    }

    /// A list input: token ids (one prompt), strings, token-id lists, one chat conversation (a
    /// list of messages) or several (a list of lists of messages).
    private static func arrayPrompts(_ list: JSONNode, loc: String, reader f: inout FieldReader) -> [[Int]]? {
        let first = list[0]
        switch first.kind {
        case .integer:
            guard let ids = SimPrompt.tokenIDs(list, loc: loc, reader: &f) else { return nil }
            return [ids]
        case .object:
            guard let ids = SimPrompt.chatIDs(list, loc: loc, addGenerationPrompt: false, reader: &f) else { return nil }
            return [ids]
        default:
            var out: [[Int]] = []
            for i in 0..<list.count {
                let item = list[i]
                if let b = item.stringBytes {
                    out.append(SimPrompt.textIDs(b, addBOS: true))
                } else if item.kind == .array && item[0].kind == .object {
                    guard let ids = SimPrompt.chatIDs(item, loc: "\(loc).\(i)", addGenerationPrompt: false, reader: &f)
                    else { return nil }
                    out.append(ids)
                } else if item.kind == .array {
                    guard let ids = SimPrompt.tokenIDs(item, loc: "\(loc).\(i)", reader: &f) else { return nil }
                    out.append(ids)
                } else {
                    f.fail(.validation("string_type", loc: "\(loc).\(i)", msg: "Input should be a valid string",
                                       input: item.pydanticInput))
                    return nil
                }
            }
            return out
        }
    }

    /// Neither `input` nor `messages`: pydantic reports every alternative of the request union.
    /// Embeddings' union has five members (as captured); pooling's and classify's two.
    private static func missingInput(_ endpoint: PoolingEndpoint, root: JSONNode) -> APIError {
        let input = root.pydanticInput
        let noInput = APIError.FieldError(type: "missing", loc: "body.input", msg: "Field required", input: input)
        let noMessages = APIError.FieldError(type: "missing", loc: "body.messages", msg: "Field required", input: input)
        if endpoint == .embeddings {
            return .validation([noInput, noMessages, noMessages, noMessages, noInput, noMessages, noInput])
        }
        return .validation([noInput, noMessages])
    }

    private static func literalError(_ loc: String, _ v: JSONNode, _ expected: String) -> APIError.FieldError {
        .init(type: "literal_error", loc: loc, msg: "Input should be \(expected)", input: v.pydanticInput,
              ctx: "'expected': \(pythonRepr(expected))")
    }
}

/// Prompts as the simulator's token ids, cut exactly as SimTokenizer counts them (so usage,
/// /tokenize and the embeddings agree).
enum SimPrompt {
    static func textIDs(_ b: UnsafeRawBufferPointer, addBOS: Bool) -> [Int] {
        var ids: [Int] = addBOS ? [SimTokenizer.bos] : []
        SimTokenizer.forEachChunk(b) { ids.append(SimTokenizer.chunkID($0)) }
        return ids
    }

    static func tokenIDs(_ list: JSONNode, loc: String, reader f: inout FieldReader) -> [Int]? {
        var ids: [Int] = []
        ids.reserveCapacity(list.count)
        for i in 0..<list.count {
            guard let id = f.int(list[i], "\(loc).\(i)") else {
                if f.failure == nil {
                    f.fail(.validation("int_type", loc: "\(loc).\(i)", msg: "Input should be a valid integer",
                                       input: list[i].pydanticInput))
                }
                return nil
            }
            ids.append(id)
        }
        return ids
    }

    /// The chat template as /tokenize renders it: per message role, newline, content, EOS,
    /// newline; then, if asked, the assistant role and a newline.
    static func chatIDs(_ messages: JSONNode, loc: String, addGenerationPrompt: Bool,
                        reader f: inout FieldReader) -> [Int]? {
        var ids: [Int] = []
        for i in 0..<messages.count {
            let m = messages[i]
            guard m.kind == .object, let role = m["role"].string else {
                f.fail(.validation("missing", loc: "\(loc).\(i).role", msg: "Field required", input: m.pydanticInput))
                return nil
            }
            ids.append(SimTokenizer.roleID(role))
            ids.append(SimTokenizer.newline)
            let content = m["content"]
            if let b = content.stringBytes {
                ids += textIDs(b, addBOS: false)
            } else if content.kind == .array {
                for j in 0..<content.count {
                    if let b = content[j]["text"].stringBytes { ids += textIDs(b, addBOS: false) }
                }
            }
            ids.append(SimTokenizer.eos)
            ids.append(SimTokenizer.newline)
        }
        if addGenerationPrompt {
            ids.append(SimTokenizer.assistantRole)
            ids.append(SimTokenizer.newline)
        }
        return ids
    }
}

/// The simulated embedding model: a token sequence seeds a generator of `size` uniform values,
/// normalized to unit length (vLLM's default embedding activation). `dimensions` keeps the first
/// values and normalizes again, which is what Matryoshka truncation does.
enum SimEmbedding {
    static func vector(of ids: [Int], size: Int, dimensions: Int? = nil) -> [Float] {
        var h = fnvOffset
        for id in ids { h = (h ^ UInt64(truncatingIfNeeded: id)) &* fnvPrime }
        var rng = SplitMix64(seed: h)
        let n = min(dimensions ?? size, size)
        var raw = [Double](repeating: 0, count: n)
        for i in 0..<n { raw[i] = rng.nextUnit() * 2 - 1 }
        var norm = 0.0
        for x in raw { norm += x * x }
        norm = norm.squareRoot()
        if norm == 0 { norm = 1 }
        return raw.map { Float($0 / norm) }
    }

    /// Cosine similarity of two unit vectors, as a float32 (vLLM's embedding-model scoring).
    static func cosine(_ a: [Float], _ b: [Float]) -> Float {
        var dot = 0.0
        for i in 0..<min(a.count, b.count) { dot += Double(a[i]) * Double(b[i]) }
        return Float(dot)
    }

    /// Two class probabilities (softmax of two logits drawn from the sequence's hash).
    static func classProbabilities(of ids: [Int]) -> [Float] {
        let v = vector(of: ids, size: 2)
        let e0 = exp2(Double(v[0]) * 4), e1 = exp2(Double(v[1]) * 4)
        return [Float(e0 / (e0 + e1)), Float(e1 / (e0 + e1))]
    }

    /// 2^x for |x| ≤ 4 by repeated squaring of a Taylor series (no Foundation here).
    private static func exp2(_ x: Double) -> Double {
        let y = x * 0.6931471805599453 / 16
        var term = 1.0, sum = 1.0
        for k in 1...12 {
            term *= y / Double(k)
            sum += term
        }
        for _ in 0..<4 { sum *= sum }
        return sum
    }
}

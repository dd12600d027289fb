// ScoreRequest: a POST /score, /v1/score, /rerank, /v1/rerank or /v2/rerank body, as vLLM 0.32.0
// serves them with an embedding model (docs/vllm-surface.md §4): texts on each side, paired 1:N
// or N:N, each scored by the cosine of the two SimEmbedding vectors. Reads a jansson document,
// returns a value or an APIError; never throws.
// Pure: no imports, no I/O.
//
// Order: pydantic field errors → unknown model → the pairing checks → prompt too long.

struct ScoreRequest: Sendable {
    var modelIndex: Int
    /// The query side (text_1 / queries / data_1 / query) and the document side, as token ids.
    var first: [[Int]]
    var second: [[Int]]
    /// Rerank only: the documents' JSON-escaped text, echoed in the results.
    var documents: [[UInt8]]
    /// Rerank only: how many results to keep (0 = all).
    var topN: Int

    /// Each text is embedded once: the query side once even when it is paired with every document.
    var promptTokens: Int { (first + second).reduce(0) { $0 + $1.count } }

    /// (first index, second index) of each scored pair, in answer order.
    var pairs: [(Int, Int)] {
        first.count == 1 ? second.indices.map { (0, $0) } : first.indices.map { ($0, $0) }
    }

    /// Field names of the score request union, in the order pydantic tries them.
    private static let scoreFieldPairs = [("queries", "documents"), ("queries", "items"), ("data_1", "data_2"),
                                          ("text_1", "text_2")]

    static func parse(isRerank: Bool, body: [UInt8], contentType: String?, catalog: ModelCatalog,
                      maxModelLen: Int) -> Result<ScoreRequest, APIError> {
        readJSONObject(body, contentType: contentType) { root in
            parseObject(isRerank: isRerank, root: root, catalog: catalog, maxModelLen: maxModelLen)
        }
    }

    private static func parseObject(isRerank: Bool, root: JSONNode, catalog: ModelCatalog,
                                    maxModelLen: Int) -> Result<ScoreRequest, APIError> {
        var f = FieldReader()
        let input = root.pydanticInput
        let firstNode: JSONNode
        let secondNode: JSONNode
        var firstLoc = "body.query"
        var secondLoc = "body.documents"
        if isRerank {
            firstNode = root["query"]
            secondNode = root["documents"]
            var missing: [APIError.FieldError] = []
            if firstNode.kind == .missing { missing.append(.init(type: "missing", loc: firstLoc, msg: "Field required", input: input)) }
            if secondNode.kind == .missing { missing.append(.init(type: "missing", loc: secondLoc, msg: "Field required", input: input)) }
            if !missing.isEmpty { return .failure(.validation(missing)) }
        } else {
            guard let (a, b) = scoreFieldPairs.first(where: { root[$0.0].kind != .missing && root[$0.1].kind != .missing }) else {
                // Every alternative of the union reports its missing fields.
                var missing: [APIError.FieldError] = []
                for (a, b) in scoreFieldPairs {
                    for name in [a, b] where root[name].kind == .missing {
                        missing.append(.init(type: "missing", loc: "body.\(name)", msg: "Field required", input: input))
                    }
                }
                return .failure(.validation(missing))
            }
            firstNode = root[a]
            secondNode = root[b]
            firstLoc = "body.\(a)"
            secondLoc = "body.\(b)"
        }
        let first = texts(firstNode, loc: firstLoc, allowList: !isRerank, reader: &f)
        let second = texts(secondNode, loc: secondLoc, allowList: true, reader: &f)
        let model = root["model"]
        if !model.isAbsent && model.kind != .string {
            f.fail(.validation("string_type", loc: "body.model", msg: "Input should be a valid string",
                               input: model.pydanticInput))
        }
        var topN = 0
        if isRerank, let n = f.int(root["top_n"], "body.top_n") {
            if n < 0 {
                f.fail(.validation([.init(type: "greater_than_equal", loc: "body.top_n",
                                          msg: "Input should be greater than or equal to 0",
                                          input: root["top_n"].pydanticInput, ctx: "'ge': 0")]))
            }
            topN = n
        }
        if let failure = f.failure { return .failure(failure) }

        var modelIndex = 0
        if let name = model.stringBytes {
            guard let i = catalog.index(of: name) else { return .failure(.unknownPoolingModel(model.string ?? "")) }
            modelIndex = i
        }
        if first.ids.count > 1 && first.ids.count != second.ids.count { return .failure(.scoreLengths) }
        if first.ids.isEmpty { return .failure(.scoreNoText) }
        if second.ids.isEmpty { return .failure(.scoreNoTextPair) }
        for p in first.ids + second.ids where p.count > maxModelLen {
            return .failure(.promptTooLong(maxModelLen: maxModelLen))
        }
        return .success(ScoreRequest(modelIndex: modelIndex, first: first.ids, second: second.ids,
                                     documents: second.escaped, topN: topN))
    }

    /// A string or a list of strings (vLLM also takes multimodal content parts; the simulator
    /// has no images and reports those as not a string).
    private static func texts(_ node: JSONNode, loc: String, allowList: Bool,
                              reader f: inout FieldReader) -> (ids: [[Int]], escaped: [[UInt8]]) {
        var ids: [[Int]] = []
        var escaped: [[UInt8]] = []
        func add(_ b: UnsafeRawBufferPointer) {
            ids.append(SimPrompt.textIDs(b, addBOS: true))
            var w = ByteWriter(capacity: b.count + 8)
            w.write(jsonEscaped: b)
            escaped.append(w.bytes)
        }
        if let b = node.stringBytes {
            add(b)
        } else if allowList && node.kind == .array {
            for i in 0..<node.count {
                guard let b = node[i].stringBytes else {
                    f.fail(.validation("string_type", loc: "\(loc).\(i)", msg: "Input should be a valid string",
                                       input: node[i].pydanticInput))
                    return ([], [])
                }
                add(b)
            }
        } else {
            f.fail(.validation("string_type", loc: loc, msg: "Input should be a valid string", input: node.pydanticInput))
        }
        return (ids, escaped)
    }
}

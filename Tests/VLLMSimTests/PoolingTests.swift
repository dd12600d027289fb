// The simulator's pooling side: PoolingRequest and ScoreRequest validation, the SimEmbedding model
// (deterministic unit vectors, Matryoshka prefixes) and PoolingResponse's bytes (base64, dtypes,
// byte order, the `metadata` header), against what vLLM 0.32.0 answered.
import Testing
@testable import vllm_sim

let shape = PoolingRequest.ModelShape(embeddingSize: 128, isMatryoshka: false, maxModelLen: 2048)

func parsePooling(_ json: String, _ endpoint: PoolingEndpoint = .embeddings,
                  shape s: PoolingRequest.ModelShape = shape) -> Result<PoolingRequest, APIError> {
    PoolingRequest.parse(endpoint, body: bytes(json), contentType: "application/json", catalog: tiny, shape: s)
}

func failure<T>(_ r: Result<T, APIError>) -> String? {
    if case .failure(let e) = r { return text(e.body) }
    return nil
}

@Suite struct PoolingRequestTests {
    @Test func everyInputFormBecomesTokenIDs() throws {
        let one = try parsePooling(#"{"input":"hello world"}"#).get()
        #expect(one.prompts.count == 1 && one.prompts[0].first == SimTokenizer.bos && one.prompts[0].count == 4)
        let strings = try parsePooling(#"{"input":["hello","world"]}"#).get()
        #expect(strings.prompts.count == 2 && strings.promptTokens == 3 + 3)
        let ids = try parsePooling(#"{"input":[1,287,83]}"#).get()
        #expect(ids.prompts == [[1, 287, 83]])
        let lists = try parsePooling(#"{"input":[[1,287,83],[338]]}"#).get()
        #expect(lists.prompts == [[1, 287, 83], [338]])
        // A conversation: the chat template without the generation prompt (6 tokens for "hi").
        let chat = try parsePooling(#"{"messages":[{"role":"user","content":"hi"}]}"#).get()
        let hi = bytes("hi").withUnsafeBytes { SimPrompt.textIDs($0, addBOS: false) }
        #expect(chat.prompts == [[SimTokenizer.userRole, SimTokenizer.newline] + hi + [SimTokenizer.eos, SimTokenizer.newline]])
        let batch = try parsePooling(#"{"input":[[{"role":"user","content":"a"}],[{"role":"user","content":"b"}]]}"#).get()
        #expect(batch.prompts.count == 2)
        // The same text as a string and as its ids: the same prompt.
        #expect(try parsePooling(#"{"input":\#(one.prompts[0])}"#).get().prompts == one.prompts)
    }

    @Test func encodings() throws {
        #expect(try parsePooling(#"{"input":"x"}"#).get().encoding == VectorEncoding())
        let e = try parsePooling(#"{"input":"x","encoding_format":"base64","embed_dtype":"bfloat16","endianness":"big"}"#).get()
        #expect(e.encoding == VectorEncoding(format: .base64, dtype: .bfloat16, endianness: "big"))
        #expect(try parsePooling(#"{"input":"x","encoding_format":"bytes_only"}"#).get().encoding.format == .bytesOnly)
        #expect(failure(parsePooling(#"{"input":"x","encoding_format":"hex"}"#))
                == #"{"error":{"message":"1 validation error:\n  {'type': 'literal_error', 'loc': 'body.encoding_format', 'msg': \"Input should be 'float', 'base64', 'bytes' or 'bytes_only'\", 'input': 'hex', 'ctx': {'expected': \"'float', 'base64', 'bytes' or 'bytes_only'\"}}","type":"Bad Request","param":"body.encoding_format","code":400}}"#)
    }

    @Test func errorsAsCaptured() {
        #expect(failure(parsePooling(#"{"model":"nope","input":"hi"}"#))
                == #"{"error":{"message":"The model `nope` does not exist.","type":"NotFoundError","param":null,"code":404}}"#)
        #expect(failure(parsePooling(#"{"model":"tiny","input":[]}"#))
                == #"{"error":{"message":"You must pass at least one prompt","type":"BadRequestError","param":null,"code":400}}"#)
        #expect(failure(parsePooling(#"{"model":"tiny","input":"hello world","dimensions":8}"#))
                == #"{"error":{"message":"Model 'tiny' does not support Matryoshka embeddings; dimensions must be unset (received dimensions=8).","type":"BadRequestError","param":null,"code":400}}"#)
        let missing = failure(parsePooling(#"{"model":"tiny"}"#))
        #expect(missing?.hasPrefix(#"{"error":{"message":"7 validation errors:\n  {'type': 'missing', 'loc': 'body.input', 'msg': 'Field required', 'input': '<dict of 1 items>'}\n  {'type': 'missing', 'loc': 'body.messages'"#) == true)
        #expect(failure(parsePooling(#"{"model":"tiny"}"#, .classify))
                == #"{"error":{"message":"2 validation errors:\n  {'type': 'missing', 'loc': 'body.input', 'msg': 'Field required', 'input': '<dict of 1 items>'}\n  {'type': 'missing', 'loc': 'body.messages', 'msg': 'Field required', 'input': '<dict of 1 items>'}","type":"Bad Request","param":"body.input","code":400}}"#)
        let long = String(repeating: "hi ", count: 3000)
        #expect(failure(parsePooling(#"{"input":"\#(long)"}"#))?.contains("(parameter=input_tokens, value=2049)") == true)
    }

    @Test func dimensionsOnAMatryoshkaModel() throws {
        let m = PoolingRequest.ModelShape(embeddingSize: 64, isMatryoshka: true, maxModelLen: 2048)
        #expect(try parsePooling(#"{"input":"x","dimensions":8}"#, shape: m).get().dimensions == 8)
        #expect(failure(parsePooling(#"{"input":"x","dimensions":65}"#, shape: m))?
                    .contains("Model 'tiny' only supports dimensions in range [1, 64], got 65.") == true)
        // /pooling has no dimensions field: ignored as an unknown field.
        #expect(try parsePooling(#"{"input":"x","dimensions":8}"#, .pooling).get().dimensions == nil)
    }
}

@Suite struct SimEmbeddingTests {
    @Test func sameInputSameUnitVector() {
        let a = SimEmbedding.vector(of: [1, 2, 3], size: 128)
        let b = SimEmbedding.vector(of: [1, 2, 3], size: 128)
        let c = SimEmbedding.vector(of: [1, 2, 4], size: 128)
        #expect(a == b && a != c && a.count == 128)
        let norm = a.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        #expect(abs(norm - 1) < 1e-6)
        #expect(abs(SimEmbedding.cosine(a, b) - 1) < 1e-6 && abs(SimEmbedding.cosine(a, c)) < 0.5)
    }

    @Test func matryoshkaIsANormalizedPrefix() {
        let full = SimEmbedding.vector(of: [5, 6], size: 64)
        let cut = SimEmbedding.vector(of: [5, 6], size: 64, dimensions: 8)
        let head = full[0..<8]
        let norm = head.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        for i in 0..<8 { #expect(abs(Double(cut[i]) - Double(head[i]) / norm) < 1e-6) }
    }

    @Test func classProbabilitiesSumToOne() {
        let p = SimEmbedding.classProbabilities(of: [1, 2])
        #expect(p.count == 2 && abs(Double(p[0] + p[1]) - 1) < 1e-6 && p.allSatisfy { $0 > 0 && $0 < 1 })
    }
}

@Suite struct PoolingResponseTests {
    func b64(_ s: String) -> String {
        var w = ByteWriter()
        PoolingResponse.writeBase64(bytes(s), into: &w)
        return text(w.bytes)
    }

    @Test func base64IsRFC4648() {
        #expect(["", "f", "fo", "foo", "foob", "fooba", "foobar"].map(b64)
                == ["", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"])
    }

    @Test func dtypesAndByteOrder() {
        let v: [[Float]] = [[1.0, -2.5]]
        #expect(PoolingResponse.rawBytes(v, VectorEncoding()) == [0, 0, 0x80, 0x3F, 0, 0, 0x20, 0xC0])
        #expect(PoolingResponse.rawBytes(v, VectorEncoding(dtype: .float32, endianness: "big")) == [0x3F, 0x80, 0, 0, 0xC0, 0x20, 0, 0])
        #expect(PoolingResponse.rawBytes(v, VectorEncoding(dtype: .float16)) == [0x00, 0x3C, 0x00, 0xC1])
        #expect(PoolingResponse.rawBytes(v, VectorEncoding(dtype: .bfloat16)) == [0x80, 0x3F, 0x20, 0xC0])
        // bfloat16 rounds to nearest even, like torch.
        #expect(PoolingResponse.bfloat16Bits(Float(bitPattern: 0x3F80_8000)) == 0x3F80)
        #expect(PoolingResponse.bfloat16Bits(Float(bitPattern: 0x3F81_8000)) == 0x3F82)
        #expect(PoolingResponse.bfloat16Bits(Float(bitPattern: 0x3F80_8001)) == 0x3F81)
    }

    @Test func embeddingsBodyAndMetadataAsCaptured() {
        var w = ByteWriter()
        PoolingResponse.writeVectors(.embeddings, id: bytes("embd-1"), created: 5, model: bytes("tiny"),
                                     vectors: [[Float(0.004758622497320175), -0.5]], encoding: VectorEncoding(),
                                     promptTokens: 6, into: &w)
        #expect(text(w.bytes) == #"{"id":"embd-1","object":"list","created":5,"model":"tiny","data":[{"index":0,"object":"embedding","embedding":[0.004758622497320175,-0.5]}],"usage":{"prompt_tokens":6,"total_tokens":6,"completion_tokens":0,"prompt_tokens_details":null,"completion_tokens_details":null}}"#)
        w.reset()
        PoolingResponse.writeVectors(.pooling, id: bytes("pooling-1"), created: 5, model: bytes("tiny"), vectors: [[1]],
                                     encoding: VectorEncoding(format: .base64), promptTokens: 1, into: &w)
        #expect(text(w.bytes).contains(#""data":[{"index":0,"object":"pooling","data":"AACAPw=="}]"#))
        #expect(PoolingResponse.bytesMetadata(id: bytes("embd-95209e4593b9dbde"), created: 1795812738, model: bytes("tiny"),
                                              count: 1, dimensions: 128, encoding: VectorEncoding(format: .bytes), promptTokens: 6)
                == #"{"id": "embd-95209e4593b9dbde", "created": 1795812738, "model": "tiny", "data": [{"index": 0, "embed_dtype": "float32", "endianness": "native", "start": 0, "end": 512, "shape": [128]}], "usage": {"prompt_tokens": 6, "total_tokens": 6}}"#)
    }

    @Test func rerankSortsAndCuts() {
        var w = ByteWriter()
        PoolingResponse.writeRerank(id: bytes("score-1"), model: bytes("tiny"), scores: [0.25, 0.5, 0.25],
                                    documents: [bytes("a"), bytes("b"), bytes("c")], topN: 2, promptTokens: 9, into: &w)
        #expect(text(w.bytes) == #"{"id":"score-1","model":"tiny","usage":{"prompt_tokens":9,"total_tokens":9},"results":[{"index":1,"document":{"text":"b","multi_modal":null},"relevance_score":0.5},{"index":0,"document":{"text":"a","multi_modal":null},"relevance_score":0.25}]}"#)
    }
}

@Suite struct ScoreRequestTests {
    func parse(_ json: String, rerank: Bool = false) -> Result<ScoreRequest, APIError> {
        ScoreRequest.parse(isRerank: rerank, body: bytes(json), contentType: nil, catalog: tiny, maxModelLen: 2048)
    }

    @Test func pairing() throws {
        let oneToN = try parse(#"{"text_1":"q","text_2":["a","b"]}"#).get()
        #expect(oneToN.pairs.map { [$0.0, $0.1] } == [[0, 0], [0, 1]] && oneToN.promptTokens == 2 + 2 + 2)
        let nToN = try parse(#"{"queries":["q","r"],"documents":["a","b"]}"#).get()
        #expect(nToN.pairs.map { [$0.0, $0.1] } == [[0, 0], [1, 1]])
        #expect(try parse(#"{"data_1":"q","data_2":"a"}"#).get().pairs.count == 1)
        let rerank = try parse(#"{"query":"q","documents":["a\"b","c"],"top_n":1}"#, rerank: true).get()
        #expect(rerank.documents.map(text) == [#"a\"b"#, "c"] && rerank.topN == 1)
    }

    @Test func errors() {
        #expect(failure(parse(#"{"text_1":["a","b"],"text_2":["c","d","e"]}"#))
                == #"{"error":{"message":"Input lengths must be either 1:1, 1:N or N:N","type":"BadRequestError","param":null,"code":400}}"#)
        #expect(failure(parse(#"{"text_1":[],"text_2":["c"]}"#))?.contains("At least one text element must be given") == true)
        #expect(failure(parse(#"{"text_1":"a","text_2":[]}"#))?.contains("At least one text_pair element must be given") == true)
        #expect(failure(parse(#"{"model":"nope","query":"q","documents":["x"]}"#, rerank: true))
                == #"{"error":{"message":"The model `nope` does not exist.","type":"NotFoundError","param":null,"code":404}}"#)
        #expect(failure(parse(#"{"query":"q"}"#, rerank: true))?.contains("'loc': 'body.documents', 'msg': 'Field required'") == true)
        #expect(failure(parse(#"{"query":"q","documents":["x"],"top_n":-1}"#, rerank: true))?.contains("greater_than_equal") == true)
    }
}

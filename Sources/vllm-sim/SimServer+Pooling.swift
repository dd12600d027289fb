// SimServer+Pooling: the pooling endpoints of vLLM 0.32.0 (/v1/embeddings, /pooling, /classify,
// /score, /v1/score, /rerank, /v1/rerank, /v2/rerank). A real vLLM serves these only with a
// pooling model (--runner pooling) and then serves no generation; the simulator serves both at
// once, as an embedding model of --embedding-size values. Answers are immediate (no scheduler,
// no pacing): the cost of a pooling request is its prefill, which the simulator does not model.
// --error-rate applies to them as to generations.

import Reactor

extension SimServer {
    func pool(_ c: HTTPServerConnection, _ head: HTTPRequestHead, _ body: [UInt8], endpoint: PoolingEndpoint) {
        recordPoolingRequest(head, body, isEmbeddings: endpoint == .embeddings)
        let shape = PoolingRequest.ModelShape(embeddingSize: settings.embeddingSize, isMatryoshka: settings.isMatryoshka,
                                              maxModelLen: settings.maxModelLen)
        let r: PoolingRequest
        switch PoolingRequest.parse(endpoint, body: body, contentType: head.headers["content-type"], catalog: catalog,
                                    shape: shape) {
        case .failure(let e):
            respond(c, e)
            return
        case .success(let parsed):
            r = parsed
        }
        if injectsFailure(c) { return }
        metrics.promptTokens += r.promptTokens
        let prefix: StaticString = endpoint == .embeddings ? "embd-" : endpoint == .pooling ? "pooling-" : "classify-"
        let id = poolingID(prefix, head)
        let model = catalog.escapedNames[r.modelIndex]
        let created = Int(Loop.wallSeconds())
        scratch.reset()
        if endpoint == .classify {
            PoolingResponse.writeClassification(id: id, created: created, model: model,
                                                probabilities: r.prompts.map(SimEmbedding.classProbabilities),
                                                promptTokens: r.promptTokens, into: &scratch)
            respondJSON(c, scratch.bytes)
            return
        }
        let vectors = r.prompts.map { SimEmbedding.vector(of: $0, size: settings.embeddingSize, dimensions: r.dimensions) }
        switch r.encoding.format {
        case .bytes, .bytesOnly:
            // A StreamingResponse in vLLM: chunked, application/octet-stream, the layout in a
            // `metadata` header unless bytes_only.
            var metadata: String?
            if r.encoding.format == .bytes {
                metadata = PoolingResponse.bytesMetadata(id: id, created: created, model: model, count: vectors.count,
                                                         dimensions: vectors.first?.count ?? 0, encoding: r.encoding,
                                                         promptTokens: r.promptTokens)
            }
            headers.refresh()
            c.writeChunkedHead(status: 200, headers: headers.octetStream(metadata: metadata))
            let raw = PoolingResponse.rawBytes(vectors, r.encoding)
            if !raw.isEmpty { raw.withUnsafeBytes { c.writeChunk($0) } }
            c.endChunked()
        case .float, .base64:
            PoolingResponse.writeVectors(endpoint, id: id, created: created, model: model, vectors: vectors,
                                         encoding: r.encoding, promptTokens: r.promptTokens, into: &scratch)
            respondJSON(c, scratch.bytes)
        }
    }

    func score(_ c: HTTPServerConnection, _ head: HTTPRequestHead, _ body: [UInt8], isRerank: Bool) {
        recordPoolingRequest(head, body, isEmbeddings: false)
        let r: ScoreRequest
        switch ScoreRequest.parse(isRerank: isRerank, body: body, contentType: head.headers["content-type"],
                                  catalog: catalog, maxModelLen: settings.maxModelLen) {
        case .failure(let e):
            respond(c, e)
            return
        case .success(let parsed):
            r = parsed
        }
        if injectsFailure(c) { return }
        metrics.promptTokens += r.promptTokens
        let size = settings.embeddingSize
        let firsts = r.first.map { SimEmbedding.vector(of: $0, size: size) }
        let seconds = r.second.map { SimEmbedding.vector(of: $0, size: size) }
        let scores = r.pairs.map { SimEmbedding.cosine(firsts[$0.0], seconds[$0.1]) }
        let id = poolingID("score-", head)
        let model = catalog.escapedNames[r.modelIndex]
        scratch.reset()
        if isRerank {
            PoolingResponse.writeRerank(id: id, model: model, scores: scores, documents: r.documents, topN: r.topN,
                                        promptTokens: r.promptTokens, into: &scratch)
        } else {
            PoolingResponse.writeScores(id: id, created: Int(Loop.wallSeconds()), model: model, scores: scores,
                                        promptTokens: r.promptTokens, into: &scratch)
        }
        respondJSON(c, scratch.bytes)
    }

    /// `X-Request-Id: abc` → "embd-abc" (captured); otherwise 16 random hex digits.
    private func poolingID(_ prefix: StaticString, _ head: HTTPRequestHead) -> [UInt8] { requestID(prefix, head) }

    private func recordPoolingRequest(_ head: HTTPRequestHead, _ body: [UInt8], isEmbeddings: Bool) {
        stats.requestsTotal += 1
        if isEmbeddings { stats.embeddingRequests += 1 } else { stats.poolingRequests += 1 }
        stats.lastRequestHeaders = head.headers
        stats.lastRequestBody = body
    }
}

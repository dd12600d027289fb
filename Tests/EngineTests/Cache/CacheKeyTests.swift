// CacheKey canonicalization, cacheability and Cache-Control policy: pure, no I/O.
import Testing
@testable import Engine

private func key(_ s: String, kind: EndpointKind = .chat, model: String = "tiny", tenant: String? = nil) -> String {
    // Parsed by the chat rules; `kind` is the endpoint the key is made for.
    guard case .success(let r) = OpenAIRequest.parse(kind: .chat, body: Array(s.utf8), canonical: true),
          let digest = r.canonicalDigest else { fatalError("bad test request: \(s)") }
    return CacheKey.make(kind: kind, servedModel: model, canonicalDigest: digest, tenant: tenant)
}

private func canonical(_ s: String, kind: EndpointKind = .chat) -> String {
    String(decoding: OpenAIRequest.canonicalForm(kind: kind, body: Array(s.utf8)) ?? [], as: UTF8.self)
}

private func cacheable(_ fields: String, deterministicOnly: Bool = true) -> Bool {
    let body = #"{"prompt":"p""# + (fields.isEmpty ? "" : "," + fields) + "}"
    guard case .success(let r) = OpenAIRequest.parse(kind: .completion, body: Array(body.utf8)) else { fatalError(body) }
    return CacheKey.isCacheable(r, deterministicOnly: deterministicOnly)
}

private let base = #"{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"temperature":0}"#

/// The key's layout written out byte by byte (keys outlive a process in Redis: it must not drift).
private func layoutKey(kindByte: UInt8, target: String?, model: String, tenant: String?, digest: [UInt8]) -> String {
    func field(_ s: String) -> [UInt8] {
        var n = UInt64(s.utf8.count).bigEndian
        return withUnsafeBytes(of: &n) { Array($0) } + Array(s.utf8)
    }
    var b = Array("engine-cache-v2".utf8) + [kindByte]
    if let target { b += field(target) }
    b += field(model)
    b += tenant.map { [1] + field($0) } ?? [0]
    b += digest
    return Digest.hex(Digest.sha256(b))
}

@Suite struct CacheKeyTests {
    @Test func theLayoutIsTheDocumentedOne() {
        let d = (0..<32).map { UInt8($0 * 7 % 256) }
        #expect(CacheKey.make(kind: .chat, servedModel: "tiny", canonicalDigest: d, tenant: nil)
                == layoutKey(kindByte: 1, target: nil, model: "tiny", tenant: nil, digest: d))
        #expect(CacheKey.make(kind: .completion, servedModel: "m", canonicalDigest: d, tenant: "t")
                == layoutKey(kindByte: 2, target: nil, model: "m", tenant: "t", digest: d))
        let emb = EndpointKind.relay(RelayRoute(name: "embeddings", method: "POST", target: "/v1/embeddings", body: .json, cacheable: true))
        let long = String(repeating: "m", count: 3000)  // past any stack buffer
        #expect(CacheKey.make(kind: emb, servedModel: long, canonicalDigest: d, tenant: "tenant")
                == layoutKey(kindByte: 3, target: "/v1/embeddings", model: long, tenant: "tenant", digest: d))
    }

    /// The request path's key (from the parse's digest value) is the documented one too.
    @Test func theParsedDigestValueGivesTheSameKey() throws {
        let body = Array(#"{"model":"m","messages":[{"role":"user","content":"hi é"}],"temperature":0}"#.utf8)
        guard case .success(let r) = OpenAIRequest.parse(kind: .chat, body: body, canonical: true) else { Issue.record("the body was rejected"); return }
        let value = try #require(r.canonicalHash)
        let bytes = try #require(r.canonicalDigest)
        #expect(bytes == Digest.sha256(try #require(OpenAIRequest.canonicalForm(kind: .chat, body: body))))
        for tenant in [nil, "t"] as [String?] {
            #expect(CacheKey.make(kind: .chat, servedModel: "m", canonicalDigest: value, tenant: tenant)
                    == layoutKey(kindByte: 1, target: nil, model: "m", tenant: tenant, digest: bytes))
        }
    }

    @Test func isLowercaseHexSHA256() {
        let k = key(base)
        #expect(k.count == 64)
        #expect(k.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) })
        #expect(k == key(base), "stable")
    }

    @Test func keyOrderAndWhitespaceDoNotMatter() {
        let shuffled = """
            {  "temperature" : 0,
               "max_tokens":8 ,
               "messages" : [ { "content" : "hi", "role" : "user" } ],
               "model":"tiny" }
            """
        #expect(key(shuffled) == key(base))
    }

    @Test func canonicalFormIsSortedAndCompactWithoutFramingFields() {
        #expect(canonical(base) == #"{"max_tokens":8,"messages":[{"content":"hi","role":"user"}],"temperature":0}"#)
        #expect(canonical(#"{"b":{"z":1,"a":[{"y":2,"x":1}]},"a":"\u0041\u0000","stream":true,"user":"u","messages":[{"role":"user"}]}"#)
                == #"{"a":"A\u0000","b":{"a":[{"x":1,"y":2}],"z":1},"messages":[{"role":"user"}]}"#)
    }

    @Test func anEscapeAndItsCharacterAreTheSameKey() {
        #expect(key(#"{"messages":[{"role":"user","content":"\u00e9\/"}],"temperature":0}"#)
                == key(#"{"messages":[{"role":"user","content":"é/"}],"temperature":0}"#))
    }

    @Test func aDoubleIsNotTheIntegerOfTheSameValue() {
        #expect(canonical(#"{"messages":[{"role":"user"}],"temperature":0.0,"n":1}"#) == #"{"messages":[{"role":"user"}],"n":1,"temperature":0.0}"#)
        #expect(key(#"{"messages":[{"role":"user"}],"temperature":0.0}"#) != key(#"{"messages":[{"role":"user"}],"temperature":0}"#))
    }

    @Test func framingAndBookkeepingFieldsDoNotChangeTheKey() {
        let k = key(base)
        for extra in [#""stream":true"#, #""stream":false"#, #""stream_options":{"include_usage":true}"#,
                      #""user":"alice""#, #""stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true}"#] {
            #expect(key(String(base.dropLast()) + "," + extra + "}") == k, "\(extra)")
        }
        // The request's model is replaced by the served model: aliases share entries.
        #expect(key(base.replacingModel("alias")) == k)
        #expect(key(#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":8,"temperature":0}"#) == k)
    }

    @Test(arguments: [
        #""max_tokens":9"#, #""max_tokens":8"#, #""max_completion_tokens":8"#, #""temperature":0.5"#, #""top_p":0.9"#, #""top_k":5"#,
        #""n":2"#, #""stop":["\n"]"#, #""stop":"x""#, #""seed":1"#, #""presence_penalty":0.1"#,
        #""frequency_penalty":0.1"#, #""logprobs":true"#, #""top_logprobs":2"#,
        #""response_format":{"type":"json_object"}"#,
        #""tools":[{"type":"function","function":{"name":"f","parameters":{}}}]"#, #""tool_choice":"none""#,
        #""logit_bias":{"50256":-100}"#, #""unknown_field":1"#, #""min_tokens":2"#, #""echo":true"#,
    ])
    func everyOutputAffectingFieldChangesTheKey(_ field: String) {
        // Added to a request without it (a duplicate key is refused with 400), the key changes.
        let bare = #"{"model":"tiny","messages":[{"role":"user","content":"hi"}]}"#
        #expect(key(String(bare.dropLast()) + "," + field + "}") != key(bare), "\(field)")
    }

    @Test func valuesInsideMessagesMatter() {
        let k = key(base)
        #expect(key(base.replacingOccurrences("\"role\":\"user\"", "\"role\":\"system\"")) != k)
        #expect(key(base.replacingOccurrences("\"hi\"", "\"hi \"")) != k)
        let two = #"{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}],"temperature":0}"#
        let swapped = #"{"messages":[{"role":"assistant","content":"b"},{"role":"user","content":"a"}],"temperature":0}"#
        #expect(key(two) != key(swapped), "message order is content")
    }

    @Test func tenantKindAndServedModelChangeTheKey() {
        let k = key(base)
        #expect(key(base, tenant: "a") != k)
        #expect(key(base, tenant: "a") != key(base, tenant: "b"))
        #expect(key(base, tenant: "a") == key(base, tenant: "a"))
        #expect(key(base, tenant: "") != k, "empty tenant is not no tenant")
        #expect(key(base, kind: .completion) != k)
        #expect(key(base, model: "other") != k)
    }

    @Test func deterministicRequestsAreCacheable() {
        #expect(cacheable(#""temperature":0"#))
        #expect(cacheable(#""temperature":0.0"#))
        #expect(cacheable(#""temperature":-0.0"#))
        #expect(cacheable(#""temperature":0.7,"seed":42"#))
        #expect(cacheable(#""seed":0"#))
        #expect(!cacheable(#""temperature":0.7"#))
        #expect(!cacheable(""), "vLLM's default is 1.0")
        #expect(!cacheable(#""seed":null"#))
        #expect(!cacheable(#""temperature":"0""#))
        #expect(!cacheable(#""temperature":null"#))
        #expect(cacheable(#""temperature":0.7"#, deterministicOnly: false))
    }

    @Test func cacheControlPolicy() {
        #expect(CachePolicy.from(cacheControl: nil) == (true, true))
        #expect(CachePolicy.from(cacheControl: "") == (true, true))
        #expect(CachePolicy.from(cacheControl: "max-age=60") == (true, true))
        #expect(CachePolicy.from(cacheControl: "no-cache") == (false, true))
        #expect(CachePolicy.from(cacheControl: "No-Cache") == (false, true))
        #expect(CachePolicy.from(cacheControl: "max-age=0, no-cache") == (false, true))
        #expect(CachePolicy.from(cacheControl: "no-store") == (false, false))
        #expect(CachePolicy.from(cacheControl: " no-cache , NO-STORE ") == (false, false))
        #expect(CachePolicy.from(cacheControl: "no-storex") == (true, true))
    }
}

extension String {
    fileprivate func replacingModel(_ m: String) -> String { replacingOccurrences("\"model\":\"tiny\"", "\"model\":\"\(m)\"") }

    fileprivate func replacingOccurrences(_ a: String, _ b: String) -> String {
        var out = ""
        var rest = Substring(self)
        while let r = rest.firstRange(of: a) {
            out += rest[..<r.lowerBound] + b
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}

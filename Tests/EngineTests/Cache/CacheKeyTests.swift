// CacheKey canonicalization, cacheability and Cache-Control policy: pure, no I/O.
import Testing
@testable import Engine

private func doc(_ s: String) -> JSONDocument {
    let r = Array(s.utf8).withUnsafeBytes { JSONDocument.parse($0) }
    guard case .success(let d) = r else { fatalError("bad test JSON: \(s)") }
    return d
}

private func key(_ s: String, kind: EndpointKind = .chat, model: String = "tiny", tenant: String? = nil) -> String {
    CacheKey.make(kind: kind, servedModel: model, document: doc(s), tenant: tenant)
}

private let base = #"{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"temperature":0}"#

@Suite struct CacheKeyTests {
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

    @Test func canonicalFormIsSortedCompactAndTagged() {
        let bytes = CacheKey.canonicalBytes(kind: .chat, servedModel: "served", document: doc(base), tenant: "t1")
        #expect(String(decoding: bytes, as: UTF8.self)
            == #"{"__kind":"chat","__model":"served","__tenant":"t1","max_tokens":8,"messages":[{"content":"hi","role":"user"}],"temperature":0}"#)
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
        #""max_tokens":9"#, #""max_completion_tokens":8"#, #""temperature":0.5"#, #""top_p":0.9"#, #""top_k":5"#,
        #""n":2"#, #""stop":["\n"]"#, #""stop":"x""#, #""seed":1"#, #""presence_penalty":0.1"#,
        #""frequency_penalty":0.1"#, #""logprobs":true"#, #""top_logprobs":2"#,
        #""response_format":{"type":"json_object"}"#,
        #""tools":[{"type":"function","function":{"name":"f","parameters":{}}}]"#, #""tool_choice":"none""#,
        #""logit_bias":{"50256":-100}"#, #""unknown_field":1"#, #""min_tokens":2"#, #""echo":true"#,
    ])
    func everyOutputAffectingFieldChangesTheKey(_ field: String) {
        // Added or overriding (jansson keeps the last duplicate), the key must differ from base.
        #expect(key(String(base.dropLast()) + "," + field + "}") != key(base), "\(field)")
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

    @Test func callerDocumentIsNotModified() {
        let d = doc(#"{"model":"m","stream":true,"user":"u","messages":[]}"#)
        _ = CacheKey.make(kind: .chat, servedModel: "x", document: d, tenant: nil)
        #expect(String(decoding: d.serialized(), as: UTF8.self) == #"{"model":"m","stream":true,"user":"u","messages":[]}"#)
    }

    @Test func deterministicRequestsAreCacheable() {
        #expect(CacheKey.isCacheable(document: doc(#"{"temperature":0}"#), deterministicOnly: true))
        #expect(CacheKey.isCacheable(document: doc(#"{"temperature":0.0}"#), deterministicOnly: true))
        #expect(CacheKey.isCacheable(document: doc(#"{"temperature":0.7,"seed":42}"#), deterministicOnly: true))
        #expect(CacheKey.isCacheable(document: doc(#"{"seed":0}"#), deterministicOnly: true))
        #expect(!CacheKey.isCacheable(document: doc(#"{"temperature":0.7}"#), deterministicOnly: true))
        #expect(!CacheKey.isCacheable(document: doc(#"{}"#), deterministicOnly: true), "vLLM's default is 1.0")
        #expect(!CacheKey.isCacheable(document: doc(#"{"seed":null}"#), deterministicOnly: true))
        #expect(!CacheKey.isCacheable(document: doc(#"{"temperature":"0"}"#), deterministicOnly: true))
        #expect(CacheKey.isCacheable(document: doc(#"{"temperature":0.7}"#), deterministicOnly: false))
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

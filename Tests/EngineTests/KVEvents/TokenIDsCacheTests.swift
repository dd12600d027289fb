// TokenIDsCache: the /tokenize answer parser (vLLM's shape, and what it must refuse) and the LRU.
import Testing

@testable import Engine

@Suite struct TokenIDsCacheTests {
    @Test func parsesVLLMsAnswer() {
        let body = Array(#"{"count":5,"max_model_len":2048,"tokens":[5,206,1223,23,4294967295],"token_strs":null}"#.utf8)
        #expect(TokenIDsCache.parseTokens(body) == [5, 206, 1223, 23, 4_294_967_295])
        #expect(TokenIDsCache.parseTokens(Array(#"{"tokens" : [ 1 , 2 ] }"#.utf8)) == [1, 2])
        #expect(TokenIDsCache.parseTokens(Array(#"{"tokens":[]}"#.utf8)) == [])
    }

    @Test func refusesAnythingElse() {
        for s in [#"{"count":1}"#, #"{"tokens":[1,2"#, #"{"tokens":[1,-2]}"#, #"{"tokens":[4294967296]}"#,
                  #"{"tokens":[1.5]}"#, #"{"tokens":["a"]}"#, #"{"tokens":null}"#, "", #"{"tokens":[1,]}"#] {
            #expect(TokenIDsCache.parseTokens(Array(s.utf8)) == nil, "\(s)")
        }
    }

    @Test func lruKeepsTheRecentHalf() {
        var c = TokenIDsCache(capacity: 4)
        for k in UInt64(0)..<4 { c.insert(k, [UInt32(k)]) }
        #expect(c.lookup(0) == [0])  // 0 is now the most recent
        c.insert(4, [4])             // over capacity: the older half goes
        #expect(c.count <= 4)
        #expect(c.lookup(0) == [0] && c.lookup(4) == [4])
        #expect(c.lookup(1) == nil)
    }

    @Test func keysDifferForDifferentBodies() {
        #expect(TokenIDsCache.key(Array("{\"a\":1}".utf8)) != TokenIDsCache.key(Array("{\"a\":2}".utf8)))
    }
}

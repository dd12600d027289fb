// TokenizeAnswer: the /tokenize answer parser (vLLM's shape, and what it must refuse).
import Testing

@testable import Engine

@Suite struct TokenizeAnswerTests {
    @Test func parsesVLLMsAnswer() {
        let body = Array(#"{"count":5,"max_model_len":2048,"tokens":[5,206,1223,23,4294967295],"token_strs":null}"#.utf8)
        #expect(TokenizeAnswer.parseTokens(body) == [5, 206, 1223, 23, 4_294_967_295])
        #expect(TokenizeAnswer.parseTokens(Array(#"{"tokens" : [ 1 , 2 ] }"#.utf8)) == [1, 2])
        #expect(TokenizeAnswer.parseTokens(Array(#"{"tokens":[]}"#.utf8)) == [])
    }

    @Test func refusesAnythingElse() {
        for s in [#"{"count":1}"#, #"{"tokens":[1,2"#, #"{"tokens":[1,-2]}"#, #"{"tokens":[4294967296]}"#,
                  #"{"tokens":[1.5]}"#, #"{"tokens":["a"]}"#, #"{"tokens":null}"#, "", #"{"tokens":[1,]}"#] {
            #expect(TokenizeAnswer.parseTokens(Array(s.utf8)) == nil, "\(s)")
        }
    }
}

// TokenEstimator and the request scanner's measurement (CRequestScan): known inputs, known counts.
import Testing
@testable import Engine

private func measure(_ json: String) -> PromptSize {
    OpenAIRequest.measure(kind: .chat, body: Array(json.utf8))
}

@Suite struct TokenEstimatorTests {
    @Test func byteEstimateMatchesTheOriginalRule() {
        let e = TokenEstimator()
        #expect(e.estimate(textBytes: 0, messages: 0) == 0)
        #expect(e.estimate(textBytes: 1, messages: 0) == 1)  // max(1, 1 // 4)
        #expect(e.estimate(textBytes: 7, messages: 0) == 1)
        #expect(e.estimate(textBytes: 8, messages: 0) == 2)
        #expect(e.estimate(textBytes: 2048, messages: 0) == 512)
        #expect(e.estimate(textBytes: 40, messages: 3) == 10 + 12)
        #expect(e.estimate(textBytes: 0, messages: 2) == 8)
    }

    @Test func tunableRatioAndOverhead() {
        let e = TokenEstimator(bytesPerToken: 3.0, perMessageOverhead: 0)
        #expect(e.estimate(textBytes: 10, messages: 5) == 3)
        let broken = TokenEstimator(bytesPerToken: 0, perMessageOverhead: 1)
        #expect(broken.estimate(textBytes: 10, messages: 1) == 2 + 1)  // falls back to 4
    }

    @Test func tokenIDsCountExactly() {
        let e = TokenEstimator()
        #expect(e.estimate(PromptSize(textBytes: 0, messages: 0, tokenIDs: 7)) == 7)
        #expect(e.estimate(PromptSize(textBytes: 16, messages: 0, tokenIDs: nil)) == 4)
    }

    @Test func chatStringContent() {
        let s = measure(#"{"model":"m","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"héllo"}]}"#)
        #expect(s == PromptSize(textBytes: 14 + 6, messages: 2, tokenIDs: nil))  // é is 2 bytes
        #expect(TokenEstimator().estimate(s) == 5 + 8)
    }

    @Test func chatContentParts() {
        let s = measure(#"""
        {"messages":[{"role":"user","content":[{"type":"text","text":"abcd"},
          {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAAAAAAAAAA"}},
          {"type":"text","text":"efgh"}]},
          {"role":"assistant","content":null,"tool_calls":[]},
          {"role":"user"}]}
        """#)
        #expect(s == PromptSize(textBytes: 8, messages: 3, tokenIDs: nil))
    }

    @Test func completionPromptShapes() {
        #expect(measure(#"{"prompt":"0123456789"}"#) == PromptSize(textBytes: 10, messages: 0))
        #expect(measure(#"{"prompt":["ab","cde",""]}"#) == PromptSize(textBytes: 5, messages: 0))
        #expect(measure(#"{"prompt":[1,2,3,4]}"#) == PromptSize(textBytes: 0, messages: 0, tokenIDs: 4))
        #expect(measure(#"{"prompt":[[1,2],[3],[]]}"#) == PromptSize(textBytes: 0, messages: 0, tokenIDs: 3))
        #expect(measure(#"{"prompt":null}"#) == PromptSize(textBytes: 0, messages: 0))
        #expect(measure(#"{"prompt":[[[1,2]]]}"#) == PromptSize(textBytes: 0, messages: 0))  // too deep: ignored
    }
}

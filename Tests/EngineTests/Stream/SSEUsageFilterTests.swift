// SSEUsageFilter: the usage chunk is removed whatever the chunk boundaries; nothing else changes.
import Testing
@testable import Engine

private let stream = """
data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}

data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"length"}]}

data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":8,"total_tokens":9,"completion_tokens":1}}

data: [DONE]


"""

private let expected = """
data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}

data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"length"}]}

data: [DONE]


"""

@Suite struct SSEUsageFilterTests {
    @Test(arguments: [1, 2, 3, 7, 50, 10_000])
    func removesUsageChunkAtAnySplit(step: Int) {
        var f = SSEUsageFilter()
        var out: [UInt8] = []
        let bytes = Array(stream.utf8)
        var i = 0
        while i < bytes.count {
            let j = min(bytes.count, i + step)
            bytes[i..<j].withUnsafeBytes { f.filter($0, into: &out) }
            i = j
        }
        #expect(String(decoding: out, as: UTF8.self) == expected)
        #expect(f.droppedEvents == 1)
    }

    @Test func contentMentioningUsageIsKept() {
        var f = SSEUsageFilter()
        var out: [UInt8] = []
        let ev = Array("data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":{\"}}]}\n\n".utf8)
        ev.withUnsafeBytes { f.filter($0, into: &out) }
        #expect(out == ev)
    }
}

import Testing
@testable import Engine

@Suite struct UsageScannerTests {
    @Test func readsUsageFromABodyAndAChunk() {
        let body = #"{"id":"x","choices":[{"text":"\"usage\" in text"}],"usage":{"prompt_tokens":8,"total_tokens":16,"completion_tokens":8,"prompt_tokens_details":null}}"#
        let r = Array(body.utf8).withUnsafeBytes { UsageScanner.scan($0) }
        #expect(r?.prompt == 8 && r?.completion == 8)
        let chunk = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":123,\"total_tokens\":126,\"completion_tokens\":3}}\n\n"
        let c = Array(chunk.utf8).withUnsafeBytes { UsageScanner.scan($0) }
        #expect(c?.prompt == 123 && c?.completion == 3)
    }

    @Test func noUsageIsNil() {
        #expect(Array(#"{"usage":null}"#.utf8).withUnsafeBytes { UsageScanner.scan($0) } == nil)
        #expect(Array("garbage".utf8).withUnsafeBytes { UsageScanner.scan($0) } == nil)
    }
}

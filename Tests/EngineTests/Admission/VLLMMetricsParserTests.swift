// VLLMMetricsParser: both metric names, labels or none, several models, garbage, a real excerpt.
import Testing
@testable import Engine

private func parse(_ s: String) -> [String: BackendLoad] { VLLMMetricsParser.parse(Array(s.utf8)) }

/// vllm-api.md §6, vLLM 0.32.0, plus neighbouring families that must not be mistaken for ours.
private let realExcerpt = """
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 12345.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny"} 1.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.0039215686274509665
vllm:num_requests_waiting_by_reason{engine="0",model_name="tiny",reason="capacity"} 7.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="tiny",reason="deferred"} 9.0
vllm:cache_config_info{block_size="128",engine="0",kv_cache_size_tokens="32768",model_name="tiny",num_gpu_blocks="256"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="tiny"} 4.0
http_requests_total{handler="/v1/completions",method="POST",status="2xx"} 12.0

"""

@Suite struct VLLMMetricsParserTests {
    @Test func realSampleExcerpt() {
        let r = parse(realExcerpt)
        #expect(r == ["tiny": BackendLoad(kvUsage: 0.0039215686274509665, running: 3, waiting: 1)])
    }

    @Test func olderNameAndNoLabels() {
        let r = parse("vllm:gpu_cache_usage_perc 0.42\nvllm:num_requests_running 2\n")
        #expect(r == ["": BackendLoad(kvUsage: 0.42, running: 2, waiting: nil)])
    }

    @Test func currentNameBeatsOlderOneInAnyOrder() {
        let r = parse("vllm:kv_cache_usage_perc 0.5\nvllm:gpu_cache_usage_perc 0.9\n")
        #expect(r[""]?.kvUsage == 0.5)
        let r2 = parse("vllm:gpu_cache_usage_perc 0.9\nvllm:kv_cache_usage_perc 0.5\n")
        #expect(r2[""]?.kvUsage == 0.5)
    }

    @Test func labelsInAnyOrderWithBlanksEscapesAndTrailingComma() {
        let text = """
        vllm:kv_cache_usage_perc{model_name="a",engine="0"} 0.25
        vllm:kv_cache_usage_perc{ engine = "0" , model_name = "b\\"q\\\\" , } 0.75
        vllm:num_requests_waiting{x="}{,=",model_name="a"} 4
        """
        let r = parse(text)
        #expect(r["a"] == BackendLoad(kvUsage: 0.25, running: nil, waiting: 4))
        #expect(r["b\"q\\"] == BackendLoad(kvUsage: 0.75))
        #expect(r.count == 2)
    }

    @Test func severalModelsStayApart() {
        let text = """
        vllm:kv_cache_usage_perc{engine="0",model_name="fast"} 0.1
        vllm:kv_cache_usage_perc{engine="0",model_name="large"} 0.8
        vllm:num_requests_running{engine="0",model_name="large"} 6
        """
        let r = parse(text)
        #expect(r["fast"] == BackendLoad(kvUsage: 0.1))
        #expect(r["large"] == BackendLoad(kvUsage: 0.8, running: 6))
    }

    @Test func dataParallelEnginesMerge() {
        let text = """
        vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2
        vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.6
        vllm:num_requests_running{engine="0",model_name="m"} 2
        vllm:num_requests_running{engine="1",model_name="m"} 5
        """
        #expect(parse(text)["m"] == BackendLoad(kvUsage: 0.6, running: 7))
    }

    @Test func scientificNotationTimestampsAndCRLF() {
        let r = parse("vllm:kv_cache_usage_perc{model_name=\"m\"} 3.9e-3 1712345678000\r\nvllm:num_requests_waiting{model_name=\"m\"} 1E+1\r\n")
        #expect(r["m"] == BackendLoad(kvUsage: 0.0039, waiting: 10))
    }

    @Test func unreadableValuesStayNil() {
        let r = parse("""
        vllm:kv_cache_usage_perc{model_name="m"} NaN
        vllm:num_requests_running{model_name="m"} +Inf
        vllm:num_requests_waiting{model_name="m"} -1
        vllm:num_requests_waiting{model_name="n"} 2
        """)
        #expect(r["m"] == nil)  // nothing readable: the model does not appear, no fabricated 0
        #expect(r["n"] == BackendLoad(waiting: 2))
    }

    @Test func garbageIsSkippedNeverFabricated() {
        let text = """
        vllm:kv_cache_usage_perc
        vllm:kv_cache_usage_perc{model_name="m" 0.5
        vllm:kv_cache_usage_perc{model_name="m} 0.5
        vllm:kv_cache_usage_perc{model_name="m"}0.5
        vllm:kv_cache_usage_perc{model_name="m"} 0.5 trailing junk
        vllm:kv_cache_usage_perc{model_name="m"} 0x1p-1
        vllm:kv_cache_usage_perc{model_name="m"} 1..2
        vllm:kv_cache_usage_percent{model_name="m"} 0.5
        vllm:kv_cache_usage_perc_total 0.5
        # vllm:kv_cache_usage_perc{model_name="m"} 0.5
        \u{0}\u{1}{}}}{{ "
        vllm:num_requests_running{model_name="m"} 1
        """
        #expect(parse(text) == ["m": BackendLoad(running: 1)])
    }

    @Test func missingMetricsAreNilAndEmptyInputIsEmpty() {
        #expect(parse("") == [:])
        #expect(parse("# only comments\n\n\n") == [:])
        #expect(parse("vllm:num_requests_running 0.0\n") == ["": BackendLoad(kvUsage: nil, running: 0, waiting: nil)])
        #expect(parse(realExcerpt)["tiny"]?.kvUsage != 0)
    }

    @Test func truncatedBufferDoesNotCrash() {
        let bytes = Array(realExcerpt.utf8)
        for cut in stride(from: 0, through: bytes.count, by: 7) {
            _ = VLLMMetricsParser.parse(Array(bytes[..<cut]))
        }
        // A cut mid-value still parses what is there: the caller sees whatever the page said.
        let cut = parse("vllm:kv_cache_usage_perc{model_name=\"m\"} 0.4")
        #expect(cut["m"]?.kvUsage == 0.4)
    }
}

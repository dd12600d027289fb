// Generation+Render: the exact bytes vLLM 0.32.0 answers with (vllm-api.md sections 4 and 5):
// the plain completion / chat completion objects with all their null fields, and the SSE events
// (chat role event, one event per token, the finish event, the include_usage event, [DONE]).
// Writes into a caller's ByteWriter; no I/O.
// Pure: no imports, no I/O.

/// vLLM prints `vllm-<version>-<hash>`; the simulator's "hash" says what it is.
let systemFingerprint: StaticString = "vllm-0.32.0-sim"

extension Generation {
    /// The whole non-streaming answer.
    func renderResponse(into w: inout ByteWriter) {
        w.write("{\"id\":\"")
        w.write(responseID)
        w.write(kind == .chat ? "\",\"object\":\"chat.completion\",\"created\":" : "\",\"object\":\"text_completion\",\"created\":")
        w.write(int: created)
        w.write(",\"model\":\"")
        w.write(model)
        w.write("\",\"choices\":[")
        for i in 0..<tokensPerChoice.count {
            if i > 0 { w.write(byte: UInt8(ascii: ",")) }
            w.write("{\"index\":")
            w.write(int: i)
            w.write(kind == .chat ? ",\"message\":{\"role\":\"assistant\",\"content\":\"" : ",\"text\":\"")
            for step in 1...tokensPerChoice[i] {
                w.write(tokenText(choice: i, step: step))
            }
            if kind == .chat {
                w.write("\",\"refusal\":null,\"annotations\":null,\"audio\":null,\"function_call\":null,\"reasoning\":null},\"logprobs\":null,\"finish_reason\":")
                writeFinishReason(choice: i, into: &w)
                w.write(",\"stop_reason\":null,\"token_ids\":null,\"routed_experts\":null}")
            } else {
                w.write("\",\"logprobs\":null,\"finish_reason\":")
                writeFinishReason(choice: i, into: &w)
                w.write(",\"stop_reason\":null,\"token_ids\":null,\"prompt_logprobs\":null,\"prompt_token_ids\":null,\"routed_experts\":null}")
            }
        }
        w.write("],\"service_tier\":null,\"system_fingerprint\":\"")
        w.write(systemFingerprint)
        w.write("\",\"usage\":{\"prompt_tokens\":")
        w.write(int: usagePromptTokens)
        w.write(",\"total_tokens\":")
        w.write(int: usagePromptTokens + completionTokens)
        w.write(",\"completion_tokens\":")
        w.write(int: completionTokens)
        w.write(",\"prompt_tokens_details\":null,\"completion_tokens_details\":null}")
        if kind == .chat { w.write(",\"prompt_logprobs\":null,\"prompt_token_ids\":null,\"prompt_text\":null") }
        w.write(",\"kv_transfer_params\":null,\"ec_transfer_params\":null,\"metrics\":null}")
    }

    /// Chat only: the first event of each choice, carrying the role and empty content.
    func renderRoleEvent(choice: Int, into w: inout ByteWriter) {
        w.write(streamPrefix)
        w.write("{\"index\":")
        w.write(int: choice)
        w.write(",\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]")
        if continuousUsage { writeRunningUsage(afterSteps: 0, into: &w) }
        w.write(",\"prompt_token_ids\":null,\"prompt_text\":null}\n\n")
    }

    /// The event for token `step` (1-based) of `choice`; the choice's last one carries finish_reason.
    func renderTokenEvent(choice: Int, step: Int, into w: inout ByteWriter) {
        let isLast = step == tokensPerChoice[choice]
        w.write(streamPrefix)
        w.write("{\"index\":")
        w.write(int: choice)
        w.write(kind == .chat ? ",\"delta\":{\"content\":\"" : ",\"text\":\"")
        w.write(tokenText(choice: choice, step: step))
        w.write(kind == .chat ? "\"},\"logprobs\":null,\"finish_reason\":" : "\",\"logprobs\":null,\"finish_reason\":")
        if isLast {
            writeFinishReason(choice: choice, into: &w)
            w.write(",\"stop_reason\":null")
        } else {
            w.write("null")
            if kind == .completion { w.write(",\"stop_reason\":null") }
        }
        w.write(kind == .chat ? ",\"token_ids\":null}]" : ",\"prompt_token_ids\":null,\"token_ids\":null}]")
        if continuousUsage { writeRunningUsage(afterSteps: step, into: &w) }
        if isLast && !includeUsage {
            w.write(",\"system_fingerprint\":\"")
            w.write(systemFingerprint)
            w.write("\"")
        }
        w.write("}\n\n")
    }

    /// The `choices: []` event that include_usage adds after the last token.
    func renderUsageEvent(into w: inout ByteWriter) {
        w.write(streamPrefix)
        w.write("],\"usage\":{\"prompt_tokens\":")
        w.write(int: usagePromptTokens)
        w.write(",\"total_tokens\":")
        w.write(int: usagePromptTokens + completionTokens)
        w.write(",\"completion_tokens\":")
        w.write(int: completionTokens)
        w.write("},\"system_fingerprint\":\"")
        w.write(systemFingerprint)
        w.write("\"}\n\n")
    }

    private func writeFinishReason(choice: Int, into w: inout ByteWriter) {
        w.write(stopsPerChoice[choice] ? "\"stop\"" : "\"length\"")
    }

    /// continuous_usage_stats: chat adds completion_tokens_details, completions do not.
    private func writeRunningUsage(afterSteps s: Int, into w: inout ByteWriter) {
        let c = completionTokens(afterSteps: s)
        w.write(",\"usage\":{\"prompt_tokens\":")
        w.write(int: usagePromptTokens)
        w.write(",\"total_tokens\":")
        w.write(int: usagePromptTokens + c)
        w.write(",\"completion_tokens\":")
        w.write(int: c)
        w.write(kind == .chat ? ",\"completion_tokens_details\":null}" : "}")
    }
}

let doneEvent: StaticString = "data: [DONE]\n\n"

// Generation+Responses: the exact bytes vLLM 0.32.0 answers /v1/responses with (captured, see
// docs/vllm-surface.md §2): the response object (plain answer, and inside the created,
// in_progress and completed events) and the SSE events of a stream, each framed
// `event: <type>\ndata: <json>\n\n`, numbered by sequence_number, with no `[DONE]`.
// Writes into a caller's ByteWriter; no I/O.
// Pure: no imports, no I/O.

/// One event of a /v1/responses stream, in the order vLLM sends them.
enum ResponsesStreamEvent: Equatable {
    /// Sent as soon as the stream starts (before the first token).
    case created, inProgress
    /// Sent with the first token.
    case itemAdded, partAdded
    /// One per token (vLLM's detokenizer sometimes merges two; the simulator does not).
    case delta(step: Int)
    /// Sent after the last token.
    case textDone, partDone, itemDone, completed
}

extension Generation {
    /// The whole non-streaming answer.
    func renderResponsesAnswer(into w: inout ByteWriter) {
        writeResponseObject(isFinal: true, into: &w)
    }

    func renderResponsesEvent(_ e: ResponsesStreamEvent, into w: inout ByteWriter) {
        let tokens = tokensPerChoice[0]
        switch e {
        case .created, .inProgress, .completed:
            let type: StaticString = e == .created ? "response.created" : e == .inProgress ? "response.in_progress" : "response.completed"
            writeEventHead(type, into: &w)
            w.write("{\"response\":")
            writeResponseObject(isFinal: e == .completed, into: &w)
            w.write(",\"sequence_number\":")
            w.write(int: e == .created ? 0 : e == .inProgress ? 1 : 7 + tokens)
            w.write(",\"type\":\"")
            w.write(type)
            w.write("\"}\n\n")
        case .itemAdded, .itemDone:
            let type: StaticString = e == .itemAdded ? "response.output_item.added" : "response.output_item.done"
            writeEventHead(type, into: &w)
            w.write("{\"item\":")
            writeMessageItem(isDone: e == .itemDone, into: &w)
            w.write(",\"output_index\":0,\"sequence_number\":")
            w.write(int: e == .itemAdded ? 2 : 6 + tokens)
            w.write(",\"type\":\"")
            w.write(type)
            w.write("\"}\n\n")
        case .partAdded, .partDone:
            let type: StaticString = e == .partAdded ? "response.content_part.added" : "response.content_part.done"
            writeEventHead(type, into: &w)
            w.write("{\"content_index\":0,\"item_id\":\"")
            w.write(itemID)
            w.write("\",\"output_index\":0,\"part\":")
            if e == .partAdded {
                // The opening part carries an empty text and `logprobs: []`; the closing one null.
                w.write("{\"annotations\":[],\"text\":\"\",\"type\":\"output_text\",\"logprobs\":[]}")
            } else {
                writeOutputText(into: &w)
            }
            w.write(",\"sequence_number\":")
            w.write(int: e == .partAdded ? 3 : 5 + tokens)
            w.write(",\"type\":\"")
            w.write(type)
            w.write("\"}\n\n")
        case .delta(let step):
            writeEventHead("response.output_text.delta", into: &w)
            w.write("{\"content_index\":0,\"delta\":\"")
            w.write(SimText.word(seed: textSeed, choice: 0, step: step))
            w.write("\",\"item_id\":\"")
            w.write(itemID)
            w.write("\",\"logprobs\":[],\"output_index\":0,\"sequence_number\":")
            w.write(int: 3 + step)
            w.write(",\"type\":\"response.output_text.delta\"}\n\n")
        case .textDone:
            writeEventHead("response.output_text.done", into: &w)
            w.write("{\"content_index\":0,\"item_id\":\"")
            w.write(itemID)
            w.write("\",\"logprobs\":[],\"output_index\":0,\"sequence_number\":")
            w.write(int: 4 + tokens)
            w.write(",\"text\":\"")
            writeText(into: &w)
            w.write("\",\"type\":\"response.output_text.done\"}\n\n")
        }
    }

    /// "completed" when the simulated model stopped by itself, "incomplete" when a limit cut it.
    var responsesStatus: StaticString { stopsPerChoice[0] ? "completed" : "incomplete" }

    private func writeEventHead(_ type: StaticString, into w: inout ByteWriter) {
        w.write("event: ")
        w.write(type)
        w.write("\ndata: ")
    }

    /// vLLM's ResponsesResponse, field for field. Before the end (created, in_progress) it has no
    /// output and no usage and says "in_progress".
    private func writeResponseObject(isFinal: Bool, into w: inout ByteWriter) {
        guard let echo = responsesEcho else { preconditionFailure("a responses render on a \(kind) generation") }
        let isCut = isFinal && !stopsPerChoice[0]
        w.write("{\"id\":\"")
        w.write(responseID)
        w.write("\",\"created_at\":")
        w.write(int: created)
        w.write(isCut ? ",\"incomplete_details\":{\"reason\":\"max_output_tokens\"}" : ",\"incomplete_details\":null")
        w.write(",\"instructions\":")
        writeOptionalString(echo.instructions, into: &w)
        w.write(",\"metadata\":")
        if let m = echo.metadata {
            w.write(byte: UInt8(ascii: "{"))
            for (i, entry) in m.enumerated() {
                if i > 0 { w.write(byte: UInt8(ascii: ",")) }
                w.write(byte: UInt8(ascii: "\""))
                w.write(entry.key)
                w.write("\":\"")
                w.write(entry.value)
                w.write(byte: UInt8(ascii: "\""))
            }
            w.write(byte: UInt8(ascii: "}"))
        } else {
            w.write("null")
        }
        w.write(",\"model\":\"")
        w.write(model)
        w.write("\",\"object\":\"response\",\"output\":[")
        if isFinal { writeMessageItem(isDone: true, into: &w) }
        w.write("],\"parallel_tool_calls\":true,\"temperature\":")
        w.write(pythonFloat: echo.temperature)
        w.write(",\"tool_choice\":\"none\",\"tools\":[],\"top_p\":")
        w.write(pythonFloat: echo.topP)
        w.write(",\"background\":false,\"max_output_tokens\":")
        w.write(int: echo.maxOutputTokens)
        w.write(",\"max_tool_calls\":null,\"previous_response_id\":null,\"prompt\":null,\"reasoning\":null,\"service_tier\":\"auto\",\"status\":\"")
        if isFinal { w.write(responsesStatus) } else { w.write("in_progress") }
        w.write("\",\"text\":null,\"top_logprobs\":null,\"truncation\":\"disabled\",\"usage\":")
        if isFinal {
            w.write("{\"input_tokens\":")
            w.write(int: usagePromptTokens)
            w.write(",\"input_tokens_details\":{\"cached_tokens\":0,\"cache_write_tokens\":0,\"input_tokens_per_turn\":[],\"cached_tokens_per_turn\":[]},\"output_tokens\":")
            w.write(int: completionTokens)
            w.write(",\"output_tokens_details\":{\"reasoning_tokens\":0,\"tool_output_tokens\":0,\"output_tokens_per_turn\":[],\"tool_output_tokens_per_turn\":[]},\"total_tokens\":")
            w.write(int: usagePromptTokens + completionTokens)
            w.write("}")
        } else {
            w.write("null")
        }
        w.write(",\"user\":")
        writeOptionalString(echo.user, into: &w)
        w.write(",\"presence_penalty\":")
        w.write(pythonFloat: echo.presencePenalty)
        w.write(",\"frequency_penalty\":")
        w.write(pythonFloat: echo.frequencyPenalty)
        w.write(",\"kv_transfer_params\":null,\"ec_transfer_params\":null,\"input_messages\":null,\"output_messages\":null}")
    }

    /// The assistant message: empty and "in_progress" when added, whole and "completed" when done.
    private func writeMessageItem(isDone: Bool, into w: inout ByteWriter) {
        w.write("{\"id\":\"")
        w.write(itemID)
        w.write("\",\"content\":[")
        if isDone { writeOutputText(into: &w) }
        w.write(isDone ? "],\"role\":\"assistant\",\"status\":\"completed\"" : "],\"role\":\"assistant\",\"status\":\"in_progress\"")
        w.write(",\"type\":\"message\",\"phase\":null}")
    }

    private func writeOutputText(into w: inout ByteWriter) {
        w.write("{\"annotations\":[],\"text\":\"")
        writeText(into: &w)
        w.write("\",\"type\":\"output_text\",\"logprobs\":null}")
    }

    /// The generated words (ASCII that needs no escaping, see SimText).
    private func writeText(into w: inout ByteWriter) {
        for step in 1...tokensPerChoice[0] {
            w.write(SimText.word(seed: textSeed, choice: 0, step: step))
        }
    }

    private func writeOptionalString(_ escaped: [UInt8]?, into w: inout ByteWriter) {
        guard let escaped else { w.write("null"); return }
        w.write(byte: UInt8(ascii: "\""))
        w.write(escaped)
        w.write(byte: UInt8(ascii: "\""))
    }
}

// TokenEstimator+JSON: measures a parsed request body (jansson tree owned by JSONDocument) into a
// PromptSize for TokenEstimator. Reads only; never retains or frees a json_t. Chat: every
// `messages[].content` (string, or parts `{"type":"text","text":…}`; image/audio parts count 0).
// Completion: `prompt` as a string, strings, token ids, or arrays of token ids. Shapes the request
// validator rejects are measured as far as they make sense, never trapped on.
import CEventShim

extension TokenEstimator {
    /// Measures `root`: a chat request when it has a `messages` array, else a completion's `prompt`.
    public static func measure(_ root: UnsafeMutablePointer<json_t>?) -> PromptSize {
        var size = PromptSize(textBytes: 0, messages: 0)
        let messages = json_object_get(root, "messages")
        if JSONValue.type(messages) == JSONValue.array {
            let n = json_array_size(messages)
            size.messages = n
            for i in 0..<n {
                let content = json_object_get(json_array_get(messages, i), "content")
                switch JSONValue.type(content) {
                case JSONValue.string:
                    size.textBytes += json_string_length(content)
                case JSONValue.array:
                    for k in 0..<json_array_size(content) {
                        let part = json_array_get(content, k)
                        let type = json_object_get(part, "type")
                        // A part without "type" but with "text" is accepted leniently.
                        guard JSONValue.type(type) == -1 || JSONValue.string(type) == "text" else { continue }
                        let text = json_object_get(part, "text")
                        if JSONValue.type(text) == JSONValue.string { size.textBytes += json_string_length(text) }
                    }
                default:
                    break  // null or absent (assistant tool calls): the overhead covers it.
                }
            }
            return size
        }
        measurePrompt(json_object_get(root, "prompt"), depth: 0, into: &size)
        return size
    }

    public static func measure(_ doc: JSONDocument) -> PromptSize { measure(doc.root) }

    /// Strings add bytes, integers add token ids, arrays recurse one level (`[[1, 2], [3]]`).
    private static func measurePrompt(_ j: UnsafeMutablePointer<json_t>?, depth: Int, into size: inout PromptSize) {
        switch JSONValue.type(j) {
        case JSONValue.string:
            size.textBytes += json_string_length(j)
        case JSONValue.integer:
            size.tokenIDs = (size.tokenIDs ?? 0) + 1
        case JSONValue.array where depth < 2:
            for i in 0..<json_array_size(j) { measurePrompt(json_array_get(j, i), depth: depth + 1, into: &size) }
        default:
            break
        }
    }
}

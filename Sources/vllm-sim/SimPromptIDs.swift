// simPromptIDs: the token ids of a request's prompt, as the simulator's /tokenize answers them
// and as its KV events publish them (one function, so the two cannot drift): an optional BOS, then
// for chat each message as role, newline, content chunks, EOS, newline, and the generation prompt
// (assistant, newline); for a completion the prompt's chunks. SimTokenizer cuts the chunks.

extension SimTokenizer {
    /// `onToken`: called with each id and its text (for return_token_strs); nil to skip.
    static func promptIDs(_ root: JSONNode, isChat: Bool, addSpecial: Bool, addGenerationPrompt: Bool,
                          onToken: ((Int, String) -> Void)? = nil) -> [Int] {
        var ids: [Int] = []
        func special(_ id: Int) {
            ids.append(id)
            onToken?(id, SimTokenizer.text(of: id))
        }
        func text(_ bytes: UnsafeRawBufferPointer) {
            SimTokenizer.forEachChunk(bytes) { chunk in
                let id = SimTokenizer.chunkID(chunk)
                ids.append(id)
                onToken?(id, String(decoding: chunk, as: UTF8.self))
            }
        }
        if addSpecial { special(SimTokenizer.bos) }
        if isChat {
            let messages = root["messages"]
            for i in 0..<messages.count {
                let m = messages[i]
                special(SimTokenizer.roleID(m["role"].string ?? "user"))
                special(SimTokenizer.newline)
                let content = m["content"]
                if let b = content.stringBytes {
                    text(b)
                } else if content.kind == .array {
                    for j in 0..<content.count {
                        if let b = content[j]["text"].stringBytes { text(b) }
                    }
                }
                special(SimTokenizer.eos)
                special(SimTokenizer.newline)
            }
            if addGenerationPrompt {
                special(SimTokenizer.assistantRole)
                special(SimTokenizer.newline)
            }
        } else if let b = root["prompt"].stringBytes ?? root["prompt"][0].stringBytes {
            // A list of prompts (completions; /tokenize accepts only a string): the first one's.
            text(b)
        }
        return ids
    }
}

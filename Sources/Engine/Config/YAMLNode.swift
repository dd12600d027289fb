// YAMLNode.swift: a tiny YAML document tree for the config loader, built from libyaml's event API.
// `YAMLNode.parse(_:)` owns the yaml_parser_t and each yaml_event_t it receives and frees them on
// every path (success, parse error, rejected feature). The tree holds only Swift values. Anchors,
// aliases, tags and multiple documents are rejected: a config file has no use for them, and
// rejecting is simpler than resolving (and rules out alias bombs). Nesting deeper than
// ConfigLimits.maxYAMLDepth is refused as soon as its start event arrives, so nothing that
// recurses over the tree (its release, for one) ever sees a deep one.

import CEventShim

/// One node of a parsed YAML document. Lines are 1-based, for error messages.
enum YAMLNode: Sendable {
    /// A scalar that is not null. `isQuoted` is true for single/double-quoted and block scalars,
    /// which are always strings; only plain scalars may be read as numbers or booleans.
    case scalar(String, isQuoted: Bool, line: Int)
    /// A plain `null`, `Null`, `NULL`, `~`, or an empty value.
    case null(line: Int)
    case sequence([YAMLNode], line: Int)
    /// Entries in document order; duplicate keys are kept here and rejected by the loader.
    case mapping([(String, YAMLNode)], line: Int)

    var line: Int {
        switch self {
        case .scalar(_, _, let line), .null(let line), .sequence(_, let line), .mapping(_, let line):
            return line
        }
    }

    /// Parses one YAML document. Returns nil for an empty stream (no document, or only comments).
    /// Failures are `ConfigError.invalidYAML` with a one-line message that includes the position.
    static func parse(_ bytes: [UInt8]) throws(ConfigError) -> YAMLNode? {
        // libyaml asserts on a NULL input pointer, which an empty array may give us.
        if bytes.isEmpty { return nil }
        // With the depth limit below, this bounds both the parse time and the tree's size.
        if bytes.count > ConfigLimits.maxDocumentBytes {
            throw .invalidYAML("the document is larger than \(ConfigLimits.maxDocumentBytes) bytes (1 MiB)")
        }

        // Heap-allocated on purpose: yaml_parser_set_input_string stores a pointer to the parser
        // inside the parser, so it must not move, and neither may the input bytes.
        let parser = UnsafeMutablePointer<yaml_parser_t>.allocate(capacity: 1)
        defer { parser.deallocate() }
        guard yaml_parser_initialize(parser) != 0 else {
            throw .invalidYAML("could not initialise the YAML parser (out of memory)")
        }
        defer { yaml_parser_delete(parser) }

        let input = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: bytes.count)
        defer { input.deallocate() }
        _ = input.initialize(from: bytes)
        yaml_parser_set_input_string(parser, input.baseAddress, input.count)

        let event = UnsafeMutablePointer<yaml_event_t>.allocate(capacity: 1)
        defer { event.deallocate() }

        var builder = TreeBuilder()
        while true {
            // On failure libyaml leaves nothing in `event` to free.
            guard yaml_parser_parse(parser, event) != 0 else {
                throw .invalidYAML(problem(of: parser.pointee))
            }
            defer { yaml_event_delete(event) }
            if try builder.consume(event.pointee) { break }
        }
        return builder.root
    }

    private static func problem(of parser: yaml_parser_t) -> String {
        let what = parser.problem.map { String(cString: $0) } ?? "unknown error"
        if parser.error == YAML_READER_ERROR {
            return "\(what) at byte \(parser.problem_offset)"
        }
        var text = "\(what) at line \(parser.problem_mark.line + 1), column \(parser.problem_mark.column + 1)"
        if let context = parser.context {
            text += " (\(String(cString: context)) at line \(parser.context_mark.line + 1))"
        }
        return text
    }
}

/// Turns the event stream into a tree with an explicit stack, so nesting depth costs heap, not stack.
private struct TreeBuilder {
    private enum Frame {
        case sequence([YAMLNode], line: Int)
        /// `pendingKey` is the key whose value comes next; nil when the next node is a key.
        case mapping([(String, YAMLNode)], pendingKey: String?, line: Int)
    }

    private(set) var root: YAMLNode?
    private var stack: [Frame] = []
    private var documentCount = 0

    /// Returns true at the end of the stream.
    mutating func consume(_ event: yaml_event_t) throws(ConfigError) -> Bool {
        let line = event.start_mark.line + 1
        switch event.type {
        case YAML_STREAM_END_EVENT:
            return true
        case YAML_DOCUMENT_START_EVENT:
            documentCount += 1
            if documentCount > 1 {
                throw .invalidYAML("multiple YAML documents are not supported (line \(line))")
            }
        case YAML_ALIAS_EVENT:
            throw .invalidYAML("YAML aliases are not supported (line \(line))")
        case YAML_SCALAR_EVENT:
            let scalar = event.data.scalar
            try Self.rejectAnchorAndTag(scalar.anchor, scalar.tag, line: line)
            let text = String(
                decoding: UnsafeBufferPointer(start: scalar.value, count: scalar.length), as: UTF8.self)
            if scalar.style == YAML_PLAIN_SCALAR_STYLE {
                let isNull = text.isEmpty || text == "~" || text == "null" || text == "Null" || text == "NULL"
                try attach(isNull ? .null(line: line) : .scalar(text, isQuoted: false, line: line))
            } else {
                try attach(.scalar(text, isQuoted: true, line: line))
            }
        case YAML_SEQUENCE_START_EVENT:
            let start = event.data.sequence_start
            try Self.rejectAnchorAndTag(start.anchor, start.tag, line: line)
            try checkDepth(line: line)
            stack.append(.sequence([], line: line))
        case YAML_MAPPING_START_EVENT:
            let start = event.data.mapping_start
            try Self.rejectAnchorAndTag(start.anchor, start.tag, line: line)
            try checkDepth(line: line)
            stack.append(.mapping([], pendingKey: nil, line: line))
        case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
            switch stack.popLast() {
            case .sequence(let items, let start):
                try attach(.sequence(items, line: start))
            case .mapping(let entries, _, let start):
                try attach(.mapping(entries, line: start))
            case nil:
                preconditionFailure("libyaml ended a collection that was never started")
            }
        default:
            // STREAM_START, DOCUMENT_END, NO_EVENT: nothing to build.
            break
        }
        return false
    }

    /// Called before a collection is opened: `stack.count` collections are open already.
    private func checkDepth(line: Int) throws(ConfigError) {
        if stack.count >= ConfigLimits.maxYAMLDepth {
            throw .invalidYAML("nesting deeper than \(ConfigLimits.maxYAMLDepth) levels (line \(line))")
        }
    }

    private static func rejectAnchorAndTag(
        _ anchor: UnsafeMutablePointer<yaml_char_t>?, _ tag: UnsafeMutablePointer<yaml_char_t>?, line: Int
    ) throws(ConfigError) {
        if anchor != nil { throw .invalidYAML("YAML anchors are not supported (line \(line))") }
        if tag != nil { throw .invalidYAML("YAML tags are not supported (line \(line))") }
    }

    private mutating func attach(_ node: YAMLNode) throws(ConfigError) {
        // Popping before mutating keeps the arrays uniquely referenced (no copy per element).
        switch stack.popLast() {
        case nil:
            root = node
        case .sequence(var items, let line):
            items.append(node)
            stack.append(.sequence(items, line: line))
        case .mapping(var entries, let pendingKey?, let line):
            entries.append((pendingKey, node))
            stack.append(.mapping(entries, pendingKey: nil, line: line))
        case .mapping(let entries, nil, let line):
            guard case .scalar(let key, _, _) = node else {
                let what = if case .null = node { "null" } else { "a list or mapping" }
                throw .invalidYAML("mapping keys must be strings, got \(what) (line \(node.line))")
            }
            stack.append(.mapping(entries, pendingKey: key, line: line))
        }
    }
}

// JSONNode: a borrowed view of one jansson value, for reading request bodies without Foundation.
// Owns nothing: the root json_t belongs to `withJSONDocument`, which decrefs it when the reader
// returns, so no node (or pointer into one) may escape the reader closure. Readers copy what they
// keep into Swift values.
import CEventShim

struct JSONNode {
    let raw: UnsafeMutablePointer<json_t>?

    enum Kind: Equatable { case missing, object, array, string, integer, real, bool, null }

    // jansson's json_typeof is a macro; ces_json_type returns its value (-1 for NULL).
    private static let typeObject = Int32(JSON_OBJECT.rawValue)
    private static let typeArray = Int32(JSON_ARRAY.rawValue)
    private static let typeString = Int32(JSON_STRING.rawValue)
    private static let typeInteger = Int32(JSON_INTEGER.rawValue)
    private static let typeReal = Int32(JSON_REAL.rawValue)
    private static let typeTrue = Int32(JSON_TRUE.rawValue)
    private static let typeFalse = Int32(JSON_FALSE.rawValue)

    var kind: Kind {
        guard let raw else { return .missing }
        switch ces_json_type(raw) {
        case Self.typeObject: return .object
        case Self.typeArray: return .array
        case Self.typeString: return .string
        case Self.typeInteger: return .integer
        case Self.typeReal: return .real
        case Self.typeTrue, Self.typeFalse: return .bool
        default: return .null
        }
    }

    /// Missing or JSON null: pydantic treats both as "not given" for optional fields.
    var isAbsent: Bool { let k = kind; return k == .missing || k == .null }

    subscript(key: String) -> JSONNode {
        guard let raw, kind == .object else { return JSONNode(raw: nil) }
        return JSONNode(raw: json_object_get(raw, key))
    }

    var count: Int {
        switch kind {
        case .array: return json_array_size(raw)
        case .object: return json_object_size(raw)
        default: return 0
        }
    }

    subscript(index: Int) -> JSONNode {
        guard let raw, kind == .array else { return JSONNode(raw: nil) }
        return JSONNode(raw: json_array_get(raw, index))
    }

    /// The string's UTF-8 bytes (valid only inside the document's reader).
    var stringBytes: UnsafeRawBufferPointer? {
        guard let raw, kind == .string, let p = json_string_value(raw) else { return nil }
        return UnsafeRawBufferPointer(start: p, count: json_string_length(raw))
    }

    var string: String? {
        guard let b = stringBytes else { return nil }
        return String(decoding: b, as: UTF8.self)
    }

    var integer: Int64 { json_integer_value(raw) }
    var real: Double { json_real_value(raw) }
    var isTrue: Bool { ces_json_type(raw) == Self.typeTrue }

    /// Keys of an object, in jansson's order.
    var keys: [String] {
        guard let raw, kind == .object else { return [] }
        var out: [String] = []
        var it = json_object_iter(raw)
        while let i = it {
            if let k = json_object_iter_key(i) { out.append(String(cString: k)) }
            it = json_object_iter_next(raw, i)
        }
        return out
    }

    /// How pydantic prints an offending input inside vLLM's validation messages.
    var pydanticInput: String {
        switch kind {
        case .string: return string ?? ""
        case .integer: return String(integer)
        case .real: return pythonFloatRepr(real)
        case .bool: return isTrue ? "True" : "False"
        case .null, .missing: return "None"
        case .object: return "<dict of \(count) items>"
        case .array: return "<list of \(count) items>"
        }
    }
}

/// Why a body could not be loaded as a JSON value, in Python's json-module terms.
struct JSONLoadFailure: Error {
    /// Byte offset of the offending token (Python's `pos`).
    var position: Int
    /// Python's message, e.g. "Expecting value".
    var reason: String
}

/// Parses `body` with jansson, hands the root to `read`, then frees the document.
func withJSONDocument<T>(_ body: [UInt8], _ read: (JSONNode) -> T) -> Result<T, JSONLoadFailure> {
    var err = json_error_t()
    let root: UnsafeMutablePointer<json_t>? = body.withUnsafeBytes { p in
        guard let base = p.baseAddress else { return nil }
        // \u0000 inside strings is valid JSON and Python's json module (vLLM's) accepts it.
        return json_loadb(base.assumingMemoryBound(to: CChar.self), p.count, Int(JSON_DECODE_ANY) | Int(JSON_ALLOW_NUL), &err)
    }
    guard let root else { return .failure(pythonStyleFailure(err, bodyIsEmpty: body.isEmpty)) }
    defer { json_decref(root) }
    return .success(read(JSONNode(raw: root)))
}

/// Maps jansson's error to what Python's json module would have said: jansson reports the offset
/// after the offending token and its own wording; Python reports the token's start.
private func pythonStyleFailure(_ e: json_error_t, bodyIsEmpty: Bool) -> JSONLoadFailure {
    if bodyIsEmpty { return JSONLoadFailure(position: 0, reason: "Expecting value") }
    let text: String = withUnsafeBytes(of: e.text) { raw in
        let bytes = raw.bindMemory(to: UInt8.self)
        let len = bytes.firstIndex(of: 0) ?? bytes.count
        return String(decoding: UnsafeBufferPointer(rebasing: bytes[0..<len]), as: UTF8.self)
    }
    var position = Int(e.position)
    // "... near 'tok'": step back over the token.
    if let open = text.firstRange(of: "near '"), text.hasSuffix("'") {
        let token = text[open.upperBound...].dropLast()
        position = max(0, position - token.utf8.count)
    }
    let reason: String
    if text.hasPrefix("string or '}' expected") {
        reason = "Expecting property name enclosed in double quotes"
    } else if text.hasPrefix("':' expected") {
        reason = "Expecting ':' delimiter"
    } else if text.hasPrefix("'}' expected") || text.hasPrefix("']' expected") || text.hasPrefix("',' or") {
        reason = "Expecting ',' delimiter"
    } else if text.hasPrefix("end of file expected") {
        reason = "Extra data"
    } else {
        reason = "Expecting value"
    }
    return JSONLoadFailure(position: position, reason: reason)
}

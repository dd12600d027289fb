// JSONDocument: a parsed JSON document (a backend's /v1/models or /tokenize answer), owned jansson
// tree (Debian's libjansson); \u0000 inside strings is accepted (JSON_ALLOW_NUL), as vLLM's
// Python json module accepts it.
// Owns: one json_t reference, released in deinit (a value-like wrapper; nothing else holds it).
import CEventShim

public final class JSONDocument {
    public let root: UnsafeMutablePointer<json_t>

    init(root: UnsafeMutablePointer<json_t>) { self.root = root }

    deinit { json_decref(root) }

    /// Parses bytes; on failure returns the error text and byte position.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> Result<JSONDocument, JSONParseFailure> {
        var err = json_error_t()
        guard let base = bytes.baseAddress, bytes.count > 0 else {
            return .failure(JSONParseFailure(message: "empty body", position: 0))
        }
        guard let r = json_loadb(base.assumingMemoryBound(to: CChar.self), bytes.count,
                                 Int(JSON_ALLOW_NUL), &err) else {
            let text = withUnsafeBytes(of: &err.text) { p in
                String(decoding: p.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            return .failure(JSONParseFailure(message: text, position: Int(err.position)))
        }
        return .success(JSONDocument(root: r))
    }

    /// Serialises compactly (used only when a stage rewrites the body).
    public func serialized() -> [UInt8] { JSONDocument.serialize(root) }

    /// Compact serialisation of any jansson value (jansson keeps object insertion order).
    public static func serialize(_ j: UnsafeMutablePointer<json_t>?) -> [UInt8] {
        let flags = Int(JSON_COMPACT) | Int(JSON_ENCODE_ANY)
        let n = json_dumpb(j, nil, 0, flags)
        guard n > 0 else { return [] }
        var out = [UInt8](repeating: 0, count: n)
        out.withUnsafeMutableBytes { p in
            _ = json_dumpb(j, p.baseAddress!.assumingMemoryBound(to: CChar.self), n, flags)
        }
        return out
    }
}

public struct JSONParseFailure: Error, Equatable, Sendable {
    public var message: String
    public var position: Int
}

/// Typed views of jansson values (nil when the value has another type).
enum JSONValue {
    static let object = Int32(JSON_OBJECT.rawValue)
    static let array = Int32(JSON_ARRAY.rawValue)
    static let string = Int32(JSON_STRING.rawValue)
    static let integer = Int32(JSON_INTEGER.rawValue)
    static let real = Int32(JSON_REAL.rawValue)
    static let jtrue = Int32(JSON_TRUE.rawValue)
    static let jfalse = Int32(JSON_FALSE.rawValue)
    static let null = Int32(JSON_NULL.rawValue)

    @inline(__always) static func type(_ j: UnsafeMutablePointer<json_t>?) -> Int32 { ces_json_type(j) }

    /// The whole string, by its length (a U+0000 inside does not cut it short).
    static func string(_ j: UnsafeMutablePointer<json_t>?) -> String? {
        guard type(j) == string, let c = json_string_value(j) else { return nil }
        return String(decoding: UnsafeRawBufferPointer(start: c, count: json_string_length(j)), as: UTF8.self)
    }

    static func bool(_ j: UnsafeMutablePointer<json_t>?) -> Bool? {
        switch type(j) {
        case jtrue: return true
        case jfalse: return false
        default: return nil
        }
    }

    static func number(_ j: UnsafeMutablePointer<json_t>?) -> Double? {
        switch type(j) {
        case integer, real: return json_number_value(j)
        default: return nil
        }
    }
}

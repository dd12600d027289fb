// JanssonRecordHelpers: the small jansson helpers StreamAssembler and ReplayWriter share
// (module-internal; every value handed to `set` is stolen by its parent).
import CEventShim

typealias JSONRef = UnsafeMutablePointer<json_t>


func isType(_ j: JSONRef?, _ t: Int32) -> Bool { j != nil && ces_json_type(j) == t }

func isNull(_ j: JSONRef?) -> Bool { j == nil || ces_json_type(j) == JSONValue.null }

func stringBytes(_ j: JSONRef?) -> [UInt8]? {
    guard isType(j, JSONValue.string), let p = json_string_value(j) else { return nil }
    return Array(UnsafeRawBufferPointer(start: p, count: json_string_length(j)))
}

/// A jansson string from UTF-8 bytes (json_null if they are not valid UTF-8).
func jsonString(_ b: [UInt8]) -> JSONRef {
    let j = (b + [0]).withUnsafeBufferPointer { p in
        p.withMemoryRebound(to: CChar.self) { c in json_stringn(c.baseAddress, b.count) }
    }
    return j ?? json_null()
}

func parse(_ b: [UInt8]) -> JSONRef? {
    b.withUnsafeBufferPointer { p in
        p.withMemoryRebound(to: CChar.self) { c in json_loadb(c.baseAddress, c.count, Int(JSON_DECODE_ANY) | Int(JSON_ALLOW_NUL), nil) }
    }
}

func copyOrNull(_ j: JSONRef?) -> JSONRef { j.flatMap { json_deep_copy($0) } ?? json_null() }

/// json_object_set_new: steals `v`.
func set(_ o: JSONRef, _ k: String, _ v: JSONRef?) {
    json_object_set_new(o, k, v ?? json_null())
}

// json_write.hpp: compact JSON output from simdjson's DOM, for the cache key's canonical form
// (object keys sorted, recursively) and for the body rewrites the pipeline needs (fields in
// their original order). Internal to CRequestScan.
#pragma once
#include <simdjson.h>
#include <string>
#include <string_view>

namespace rs {

/// Appends `s` as a JSON string: `"` and `\` escaped, control characters as \u00XX, every other
/// byte (valid UTF-8, simdjson checked it) as is.
void writeString(std::string &out, std::string_view s);

/// Appends `e` compactly. `sorted`: object keys in byte order at every depth (the canonical form).
/// Numbers: integers in decimal; doubles as the shortest form that reads back to the same value,
/// always with a `.` or an exponent (so 0.0 never equals the integer 0 in the canonical form).
void writeValue(std::string &out, simdjson::dom::element e, bool sorted);

} // namespace rs

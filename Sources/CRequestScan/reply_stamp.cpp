// reply_stamp.cpp: rs_identity_spans — where a JSON object's top-level `id` and `created` values
// lie, so that a replayed answer (a cache hit, a coalesced follower's copy, a stale entry) can be
// given its own identity by a byte-level splice (ReplyStamp.swift). simdjson's On-Demand parser
// walks the top-level object (keys unescaped, so `"\u0069d"` is `id`) and reports each value's
// token as a position in the input; nested objects that happen to have an `id` (tool calls) are
// not looked into. One parse, no tree.
#include "CRequestScan.h"
#include <simdjson.h>
#include <cstring>

using namespace simdjson;

namespace {

thread_local ondemand::parser tlsOnDemand;
// The input copied with SIMDJSON_PADDING readable bytes after it (On-Demand reads past the end).
thread_local std::string tlsPadded;

// After a document above this, the buffers are freed again (as rs_trim does for the scanner's).
constexpr size_t kLargeBody = 256 * 1024;

bool isSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int identitySpans(const uint8_t *bytes, size_t len, size_t *spans, size_t max, size_t *n) {
    if (tlsPadded.size() < len + SIMDJSON_PADDING) tlsPadded.resize(len + SIMDJSON_PADDING);
    std::memcpy(tlsPadded.data(), bytes, len);
    ondemand::document doc;
    if (tlsOnDemand.iterate(padded_string_view(tlsPadded.data(), len, tlsPadded.size())).get(doc)) return RS_IDENTITY_NOT_OBJECT;
    ondemand::object obj;
    if (doc.get_object().get(obj)) return RS_IDENTITY_NOT_OBJECT;
    for (auto member : obj) {
        ondemand::field f;
        if (std::move(member).get(f)) return RS_IDENTITY_NOT_OBJECT;
        std::string_view key;
        if (f.unescaped_key().get(key)) return RS_IDENTITY_NOT_OBJECT;
        bool isId = key == "id";
        if (!isId && key != "created") continue;
        ondemand::value &v = f.value();
        ondemand::json_type t;
        if (v.type().get(t)) return RS_IDENTITY_NOT_OBJECT;
        // Only the shapes vLLM sends count (a string id, a number created).
        if (isId ? t != ondemand::json_type::string : t != ondemand::json_type::number) continue;
        std::string_view raw = v.raw_json_token();  // the token and the blanks after it
        while (!raw.empty() && isSpace(raw.back())) raw.remove_suffix(1);
        if (raw.empty()) return RS_IDENTITY_NOT_OBJECT;
        if (*n == max) return RS_IDENTITY_NOT_OBJECT;  // more copies than any answer has: leave it
        size_t at = size_t(raw.data() - tlsPadded.data());
        spans[2 * *n] = at;
        spans[2 * *n + 1] = at + raw.size();
        (*n)++;
    }
    return *n > 0 ? RS_IDENTITY_FOUND : RS_IDENTITY_NONE;
}

} // namespace

extern "C" int rs_identity_spans(const void *json, size_t len, size_t *spans, size_t max, size_t *n) {
    *n = 0;
    const uint8_t *bytes = static_cast<const uint8_t *>(json);
    static const uint8_t empty = 0;
    if (bytes == nullptr) bytes = &empty;
    int status;
    try {
        status = identitySpans(bytes, len, spans, max, n);
    } catch (...) {
        status = RS_IDENTITY_NOT_OBJECT;
    }
    if (status != RS_IDENTITY_FOUND) *n = 0;
    if (len > kLargeBody) {
        // A huge answer does not pin its padded copy or the parser's buffers.
        std::string().swap(tlsPadded);
        tlsOnDemand = ondemand::parser{};
    }
    return status;
}

extern "C" int rs_may_hold_identity(const void *bytes, size_t len) {
    const unsigned char *p = static_cast<const unsigned char *>(bytes);
    if (p == nullptr) return 0;
    static const char created[] = "created\"";  // after the opening quote
    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        if (c == '\\') {
            if (i + 1 < len && p[i + 1] == 'u') return 1;
            continue;
        }
        if (c != '"') continue;
        size_t left = len - i - 1;
        if (left >= 3 && p[i + 1] == 'i' && p[i + 2] == 'd' && p[i + 3] == '"') return 1;
        if (left >= 8 && p[i + 1] == 'c' && std::memcmp(p + i + 1, created, 8) == 0) return 1;
    }
    return 0;
}


// reply_stamp.cpp: rs_identity_spans — where a JSON object's top-level `id` and `created` values
// lie, so that a replayed answer (a cache hit, a coalesced follower's copy, a stale entry) can be
// given its own identity by a byte-level splice (ReplyStamp.swift). simdjson's On-Demand parser
// walks the top-level object (keys unescaped, so `"\u0069d"` is `id`) and reports each value's
// token as a position in the input; nested objects that happen to have an `id` (tool calls) are
// not looked into. One parse, no tree. Also the cache hit's splice over an entry's stored
// positions (rs_splice: no parse, one pass that checks the tables and copies) and
// rs_may_hold_key, which tells a caller when a parse cannot find a key.
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

namespace {

struct Key {
    const char *text;
    size_t len;
};

// Whether `len` bytes might hold one of `keys` (letters, digits or `_`, which JSON can spell
// otherwise only with `\u`) as an object key at any depth: one of them quoted, or a `\u` escape.
// memchr hops (a backslash is rare; a chunk has a few dozen quotes) instead of a byte loop.
bool mayHoldKeys(const unsigned char *p, size_t len, const Key *keys, size_t nKeys) {
    if (p == nullptr || len < 2) return false;
    for (const void *b = std::memchr(p, '\\', len); b != nullptr;) {
        size_t i = static_cast<const unsigned char *>(b) - p;
        if (i + 1 < len && p[i + 1] == 'u') return true;
        b = i + 1 < len ? std::memchr(p + i + 1, '\\', len - i - 1) : nullptr;
    }
    for (const void *q = std::memchr(p, '"', len); q != nullptr;) {
        size_t i = static_cast<const unsigned char *>(q) - p;
        for (size_t k = 0; k < nKeys; k++) {
            const Key &key = keys[k];
            if (len - i - 1 > key.len && key.len > 0 && p[i + 1] == (unsigned char)key.text[0] && p[i + 1 + key.len] == '"'
                && std::memcmp(p + i + 1, key.text, key.len) == 0) return true;
        }
        q = i + 1 < len ? std::memchr(p + i + 1, '"', len - i - 1) : nullptr;
    }
    return false;
}

} // namespace

extern "C" int rs_may_hold_identity(const void *bytes, size_t len) {
    static const Key identity[] = {{"id", 2}, {"created", 7}};
    return mayHoldKeys(static_cast<const unsigned char *>(bytes), len, identity, 2) ? 1 : 0;
}

extern "C" int rs_may_hold_key(const void *bytes, size_t len, const char *key, size_t key_len) {
    const Key one{key, key_len};
    return mayHoldKeys(static_cast<const unsigned char *>(bytes), len, &one, 1) ? 1 : 0;
}

// rs_splice: the cache-hit splice (ReplyStamp.splice over a cache entry's tables) in one pass in
// C that checks the tables as it copies (or only checks them, without a destination). The tables
// are read as the entry holds them: big-endian u32 pairs, an end below its start meaning an empty
// range (StoredAnswer.EntryRanges).
namespace {

struct Table {
    const unsigned char *p;
    size_t n;

    size_t lo(size_t i) const { return be(p + 8 * i); }
    size_t hi(size_t i) const {
        size_t l = lo(i), h = be(p + 8 * i + 4);
        return h < l ? l : h;
    }
    static size_t be(const unsigned char *q) {
        uint32_t v;
        std::memcpy(&v, q, 4);
        return __builtin_bswap32(v);
    }
};

bool startsValue(unsigned char c) { return c == '"' || c == '-' || (c >= '0' && c <= '9'); }

// A copy of `n` bytes; up to 64 inline, as overlapping 8- and 16-byte moves (the pieces of a
// splice are short: an id, a created, the ~40 bytes between them; a library call each cost more
// than the copy).
inline void put(unsigned char *d, const unsigned char *s, size_t n) {
    if (n > 64) {
        std::memcpy(d, s, n);
    } else if (n >= 32) {
        std::memcpy(d, s, 16);
        std::memcpy(d + 16, s + 16, 16);
        std::memcpy(d + n - 32, s + n - 32, 16);
        std::memcpy(d + n - 16, s + n - 16, 16);
    } else if (n >= 16) {
        std::memcpy(d, s, 16);
        std::memcpy(d + n - 16, s + n - 16, 16);
    } else if (n >= 8) {
        std::memcpy(d, s, 8);
        std::memcpy(d + n - 8, s + n - 8, 8);
    } else {
        for (size_t i = 0; i < n; i++) d[i] = s[i];
    }
}

} // namespace

extern "C" ptrdiff_t rs_splice(const void *src, size_t len, const void *skip, size_t n_skip, const void *spans, size_t n_spans,
                               int skipping, const void *id, size_t id_len, const void *created, size_t created_len,
                               void *dst, size_t cap) {
    const unsigned char *s = static_cast<const unsigned char *>(src);
    unsigned char *d = static_cast<unsigned char *>(dst);
    const bool writes = d != nullptr;
    Table cut{static_cast<const unsigned char *>(skip), n_skip};
    Table val{static_cast<const unsigned char *>(spans), n_spans};
    if (writes && cap < len + n_spans * (id_len > created_len ? id_len : created_len)) return -1;
    size_t last = 0;
    for (size_t k = 0; k < cut.n; k++) {
        size_t lo = cut.lo(k), hi = cut.hi(k);
        if (lo < last || hi > len) return -1;
        last = hi;
    }
    size_t out = 0;   // bytes of output so far
    size_t at = 0;    // the next byte of `src` to copy
    size_t k = 0;     // the first cut that does not end before the current value
    size_t next = 0;  // the first cut not yet left out (when skipping)
    last = 0;
    auto copyTo = [&](size_t to) {
        if (writes) put(d + out, s + at, to - at);
        out += to - at;
    };
    for (size_t i = 0; i < val.n; i++) {
        size_t lo = val.lo(i), hi = val.hi(i);
        if (lo < last || hi > len || lo == hi || !startsValue(s[lo])) return -1;
        last = hi;
        // Each value lies inside one cut or apart from all of them (the cuts are sorted and do
        // not overlap, so only the first that does not end before the value can touch it).
        while (k < cut.n && cut.hi(k) <= lo) k++;
        bool inside = false;
        if (k < cut.n && cut.lo(k) < hi) {
            if (cut.lo(k) > lo || hi > cut.hi(k)) return -1;
            inside = true;
        }
        if (skipping) {
            // The cuts that start at or before this value are left out first (with the values
            // inside them: this one, when it is inside).
            while (next < cut.n && cut.lo(next) <= lo) {
                copyTo(cut.lo(next));
                at = cut.hi(next);
                next++;
            }
            if (inside) continue;
        }
        copyTo(lo);
        size_t n = s[lo] == '"' ? id_len : created_len;
        if (writes) put(d + out, static_cast<const unsigned char *>(s[lo] == '"' ? id : created), n);
        out += n;
        at = hi;
    }
    if (skipping) {
        for (; next < cut.n; next++) {
            copyTo(cut.lo(next));
            at = cut.hi(next);
        }
    }
    copyTo(len);
    return ptrdiff_t(out);
}

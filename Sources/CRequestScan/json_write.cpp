// json_write.cpp: see json_write.hpp.
#include "json_write.hpp"
#include <algorithm>
#include <charconv>
#include <cstring>
#include <vector>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

using namespace simdjson;

namespace rs {

namespace {

// Whether byte `c` must be escaped in a JSON string: `"`, `\`, a control character.
inline bool needsEscape(unsigned char c) { return c < 0x20 || c == '"' || c == '\\'; }

// The index of the first byte of `p[0..<n]` that must be escaped, or `n`. Sixteen bytes a step
// (SSE2, every x86_64 has it): a prompt is hundreds of bytes with nothing to escape, and the
// byte-at-a-time loop cost ~13 instructions a byte, the largest part of the cache key's canonical
// form. The last step overlaps the one before instead of a byte-at-a-time tail.
inline size_t plainRun(const unsigned char *p, size_t n) {
#if defined(__SSE2__)
    if (n >= 16) {
        const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), control = _mm_set1_epi8(0x1f);
        auto escapes = [&](size_t at) {
            __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p + at));
            // An unsigned byte is at most 0x1f exactly when min(byte, 0x1f) is the byte.
            __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                     _mm_cmpeq_epi8(_mm_min_epu8(v, control), v));
            return unsigned(_mm_movemask_epi8(m));
        };
        size_t i = 0;
        for (; i + 16 <= n; i += 16) {
            if (unsigned m = escapes(i)) return i + size_t(__builtin_ctz(m));
        }
        if (i < n) {
            // The last n - i bytes are the top of the 16 at n - 16 (the rest were clean already).
            if (unsigned m = escapes(n - 16) >> (16 - (n - i))) return i + size_t(__builtin_ctz(m));
        }
        return n;
    }
#endif
    for (size_t i = 0; i < n; i++) {
        if (needsEscape(p[i])) return i;
    }
    return n;
}

} // namespace

void writeString(Out &out, std::string_view s) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = reinterpret_cast<const unsigned char *>(s.data());
    const size_t n = s.size();
    out.push_back('"');
    size_t run = 0;  // start of the bytes not yet copied
    while (true) {
        size_t i = run + plainRun(p + run, n - run);
        out.append(s.data() + run, i - run);
        if (i == n) break;
        unsigned char c = p[i];
        run = i + 1;
        switch (c) {
        case '"': out.append("\\\""); break;
        case '\\': out.append("\\\\"); break;
        case '\n': out.append("\\n"); break;
        case '\r': out.append("\\r"); break;
        case '\t': out.append("\\t"); break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
            out.append(u, 6);
        }
        }
    }
    out.push_back('"');
}

namespace {

template <typename T> void writeNumber(Out &out, T v) {
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof(buf), v);
    out.append(buf, size_t(r.ptr - buf));
}

void writeDouble(Out &out, double d) {
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof(buf), d);  // shortest round-trip form
    std::string_view s(buf, size_t(r.ptr - buf));
    out.append(s);
    if (s.find_first_of(".e") == std::string_view::npos) out.append(".0");
}

} // namespace

void writeValue(Out &out, dom::element e, bool sorted) {
    switch (e.type()) {
    case dom::element_type::OBJECT: {
        dom::object o = e.get_object().value_unsafe();
        out.push_back('{');
        if (sorted) {
            SortedMembers members;
            for (auto field : o) members.add(field.key, field.value);
            members.sort();
            bool first = true;
            for (auto &m : members) {
                if (!first) out.push_back(',');
                first = false;
                writeString(out, m.key);
                out.push_back(':');
                writeValue(out, m.value, true);
            }
        } else {
            bool first = true;
            for (auto field : o) {
                if (!first) out.push_back(',');
                first = false;
                writeString(out, field.key);
                out.push_back(':');
                writeValue(out, field.value, false);
            }
        }
        out.push_back('}');
        return;
    }
    case dom::element_type::ARRAY: {
        out.push_back('[');
        bool first = true;
        dom::array a = e.get_array().value_unsafe();  // a copy: value_unsafe() refers into a temporary
        for (dom::element x : a) {
            if (!first) out.push_back(',');
            first = false;
            writeValue(out, x, sorted);
        }
        out.push_back(']');
        return;
    }
    case dom::element_type::STRING: writeString(out, e.get_string().value_unsafe()); return;
    case dom::element_type::INT64: writeNumber(out, e.get_int64().value_unsafe()); return;
    case dom::element_type::UINT64: writeNumber(out, e.get_uint64().value_unsafe()); return;
    case dom::element_type::DOUBLE: writeDouble(out, e.get_double().value_unsafe()); return;
    case dom::element_type::BOOL:
        if (e.get_bool().value_unsafe()) out.append("true"); else out.append("false");
        return;
    case dom::element_type::NULL_VALUE: out.append("null"); return;
    default: out.append("null"); return;  // not reached: the DOM has no other types
    }
}

} // namespace rs

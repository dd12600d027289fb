// json_write.cpp: see json_write.hpp.
#include "json_write.hpp"
#include <algorithm>
#include <charconv>
#include <cstring>
#include <vector>

using namespace simdjson;

namespace rs {

void writeString(std::string &out, std::string_view s) {
    static const char hex[] = "0123456789abcdef";
    out.push_back('"');
    size_t run = 0;  // start of the bytes not yet copied
    for (size_t i = 0; i < s.size(); i++) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        out.append(s.data() + run, i - run);
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
    out.append(s.data() + run, s.size() - run);
    out.push_back('"');
}

namespace {

template <typename T> void writeNumber(std::string &out, T v) {
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof(buf), v);
    out.append(buf, r.ptr);
}

void writeDouble(std::string &out, double d) {
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof(buf), d);  // shortest round-trip form
    std::string_view s(buf, size_t(r.ptr - buf));
    out.append(s);
    if (s.find_first_of(".e") == std::string_view::npos) out.append(".0");
}

} // namespace

void writeValue(std::string &out, dom::element e, bool sorted) {
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
    case dom::element_type::BOOL: out.append(e.get_bool().value_unsafe() ? "true" : "false"); return;
    case dom::element_type::NULL_VALUE: out.append("null"); return;
    default: out.append("null"); return;  // not reached: the DOM has no other types
    }
}

} // namespace rs

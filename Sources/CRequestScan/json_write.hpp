// json_write.hpp: compact JSON output from simdjson's DOM, for the cache key's canonical form
// (object keys sorted, recursively) and for the body rewrites the pipeline needs (fields in
// their original order). Internal to CRequestScan.
#pragma once
#include <simdjson.h>
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

namespace rs {

/// Appends `s` as a JSON string: `"` and `\` escaped, control characters as \u00XX, every other
/// byte (valid UTF-8, simdjson checked it) as is.
void writeString(std::string &out, std::string_view s);

/// Appends `e` compactly. `sorted`: object keys in byte order at every depth (the canonical form).
/// Numbers: integers in decimal; doubles as the shortest form that reads back to the same value,
/// always with a `.` or an exponent (so 0.0 never equals the integer 0 in the canonical form).
void writeValue(std::string &out, simdjson::dom::element e, bool sorted);

/// An object's members (those `add` is given) sorted by key in byte order, for the canonical
/// form: up to 8 held on the stack, more in one vector (a vector per object was two heap
/// allocations per request). Not copyable: it points into itself.
class SortedMembers {
public:
    struct Member {
        std::string_view key;
        simdjson::dom::element value;
    };
    SortedMembers() = default;
    SortedMembers(const SortedMembers &) = delete;
    SortedMembers &operator=(const SortedMembers &) = delete;

    void add(std::string_view key, simdjson::dom::element value) {
        if (!spilled_ && n_ < kInline) {
            inline_[n_++] = {key, value};
            return;
        }
        if (!spilled_) {
            heap_.reserve(2 * kInline);
            heap_.assign(inline_, inline_ + n_);
            spilled_ = true;
        }
        heap_.push_back({key, value});
        n_ = heap_.size();
    }
    /// Sorts what was added (std::sort over the same sequence as before: the same order).
    void sort() { std::sort(data(), data() + n_, [](const Member &a, const Member &b) { return a.key < b.key; }); }
    const Member *begin() const { return spilled_ ? heap_.data() : inline_; }
    const Member *end() const { return begin() + n_; }

private:
    Member *data() { return spilled_ ? heap_.data() : inline_; }
    static constexpr size_t kInline = 8;
    Member inline_[kInline];
    std::vector<Member> heap_;
    size_t n_ = 0;
    bool spilled_ = false;
};

} // namespace rs

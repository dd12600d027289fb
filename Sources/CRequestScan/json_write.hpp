// json_write.hpp: compact JSON output from simdjson's DOM, for the cache key's canonical form
// (object keys sorted, recursively) and for the body rewrites the pipeline needs (fields in
// their original order). Internal to CRequestScan.
#pragma once
#include <simdjson.h>
#include <algorithm>
#include <string>
#include <string_view>
#include <new>
#include <type_traits>
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
    static_assert(std::is_trivially_copyable_v<Member> && std::is_trivially_destructible_v<Member>);
    SortedMembers() = default;
    SortedMembers(const SortedMembers &) = delete;
    SortedMembers &operator=(const SortedMembers &) = delete;

    void add(std::string_view key, simdjson::dom::element value) {
        if (!spilled_ && n_ < kInline) {
            new (inlineMembers() + n_++) Member{key, value};
            return;
        }
        if (!spilled_) {
            heap_.reserve(2 * kInline);
            heap_.assign(inlineMembers(), inlineMembers() + n_);
            spilled_ = true;
        }
        heap_.push_back({key, value});
        n_ = heap_.size();
    }
    /// Sorts what was added (std::sort over the same sequence as before: the same order).
    void sort() { std::sort(data(), data() + n_, [](const Member &a, const Member &b) { return a.key < b.key; }); }
    const Member *begin() const { return spilled_ ? heap_.data() : inlineMembers(); }
    const Member *end() const { return begin() + n_; }

private:
    Member *data() { return spilled_ ? heap_.data() : inlineMembers(); }
    Member *inlineMembers() { return reinterpret_cast<Member *>(inline_); }
    const Member *inlineMembers() const { return reinterpret_cast<const Member *>(inline_); }
    static constexpr size_t kInline = 8;
    // Raw storage, constructed member by member in `add` (Member is trivially copyable and
    // destructible): an array of Members was zeroed, a memset per object written.
    alignas(Member) unsigned char inline_[kInline * sizeof(Member)];
    std::vector<Member> heap_;
    size_t n_ = 0;
    bool spilled_ = false;
};

} // namespace rs

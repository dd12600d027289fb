// json_write.hpp: compact JSON output from simdjson's DOM, for the cache key's canonical form
// (object keys sorted, recursively) and for the body rewrites the pipeline needs (fields in
// their original order). Internal to CRequestScan.
#pragma once
#include <simdjson.h>
#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>
#include <new>
#include <type_traits>
#include <vector>

namespace rs {

/// Append-only output over a std::string used as storage: the string is kept at least as long
/// as what is written (its bytes past `size()` are room), so an append is an inline capacity
/// check and a store or memcpy, where std::string's append was a library call per piece (a
/// canonical form is ~50 pieces). `fromStart`: writes from the start and leaves the string long
/// (the thread's reused buffers: `data()` and `size()` say what was written). `afterContents`:
/// writes after the string's bytes, and `commit()` leaves the string exactly those bytes and
/// what was written.
class Out {
public:
    enum Mode { fromStart, afterContents };
    Out(std::string &s, Mode m) : s_(s), n_(m == afterContents ? s.size() : 0) {
        if (s_.size() < n_ + kRoom) s_.resize(n_ + kRoom);
        p_ = &s_[0];
        cap_ = s_.size();
    }
    Out(const Out &) = delete;
    Out &operator=(const Out &) = delete;

    const char *data() const { return p_; }
    size_t size() const { return n_; }
    void commit() { s_.resize(n_); }

    void push_back(char c) {
        if (n_ == cap_) grow(1);
        p_[n_++] = c;
    }
    void append(const char *s, size_t k) {
        if (k > cap_ - n_) grow(k);
        std::memcpy(p_ + n_, s, k);
        n_ += k;
    }
    void append(std::string_view v) { append(v.data(), v.size()); }
    /// A literal (its length is known where it is written).
    template <size_t N> void append(const char (&lit)[N]) { append(lit, N - 1); }

private:
    static constexpr size_t kRoom = 256;
    void grow(size_t k) {
        s_.resize(std::max(2 * cap_, n_ + k));
        p_ = &s_[0];
        cap_ = s_.size();
    }
    std::string &s_;
    char *p_;
    size_t n_;
    size_t cap_;
};

/// Appends `s` as a JSON string: `"` and `\` escaped, control characters as \u00XX, every other
/// byte (valid UTF-8, simdjson checked it) as is.
void writeString(Out &out, std::string_view s);

/// Appends `e` compactly. `sorted`: object keys in byte order at every depth (the canonical form).
/// Numbers: integers in decimal; doubles as the shortest form that reads back to the same value,
/// always with a `.` or an exponent (so 0.0 never equals the integer 0 in the canonical form).
void writeValue(Out &out, simdjson::dom::element e, bool sorted);

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

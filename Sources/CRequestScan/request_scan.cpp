// request_scan.cpp: rs_scan over simdjson's DOM parser (one reusable parser per thread, so a
// steady stream of requests allocates nothing). The rules mirror OpenAIRequest's documentation:
// a JSON object; `model` string or null; `stream` boolean or null; `stream_options` object or
// null; chat `messages` a non-empty array of objects with a string `role` and a string, array or
// null `content`; completion `prompt` a string, or a non-empty array of strings, of integers, or
// of integer arrays. Prompt size: every chat `content` string and text part, or the prompt's
// strings and token ids (TokenEstimator's rules).
#include "CRequestScan.h"
#include "json_write.hpp"
#include <simdjson.h>
#include <cstring>
#include <algorithm>
#include <vector>

using namespace simdjson;

namespace {

// After a body above this, rs_trim frees the parser's buffers, so one huge request does not pin them.
constexpr size_t kLargeBody = 256 * 1024;

thread_local dom::parser tlsParser;
// Output of rs_scan's canonical form and rs_rewrite (reused: no allocation per request).
thread_local std::string tlsOut;
// rs_inspect_upstream's system_fingerprint text (valid until the next inspect on this thread).
thread_local std::string tlsFingerprint;
// rs_scan_prompt's rendered prompt (reused).
thread_local std::string tlsPrompt;
// rs_inspect_upstream_many's copy of the batch, with SIMDJSON_PADDING spare bytes, and the
// fingerprints of its events (both reused: a steady stream allocates nothing).
thread_local std::vector<uint8_t> tlsBatch;
thread_local std::string tlsBatchFingerprints;

// Typed reads after a type check (error-code API: no exception can reach the C caller).
std::string_view str(dom::element e) { std::string_view s; if (e.get_string().get(s)) return {}; return s; }
dom::array arr(dom::element e) { dom::array a; (void)e.get_array().get(a); return a; }
dom::object obj(dom::element e) { dom::object o; (void)e.get_object().get(o); return o; }
bool boolean(dom::element e) { bool b = false; (void)e.get_bool().get(b); return b; }

// A key compared with a literal: length first, then a fixed-size compare the compiler inlines
// (string_view's == calls memcmp with a run-time length: a library call per member).
template <size_t N> inline bool keyIs(std::string_view k, const char (&lit)[N]) {
    return k.size() == N - 1 && std::memcmp(k.data(), lit, N - 1) == 0;
}

bool isInteger(dom::element e) {
    auto t = e.type();
    return t == dom::element_type::INT64 || t == dom::element_type::UINT64;
}

void measureMessages(dom::array messages, rs_result *out) {
    out->messages = messages.size();
    for (dom::element m : messages) {
        if (!m.is_object()) continue;
        dom::element content;
        if (m.get_object().at_key("content").get(content)) continue;
        if (content.is_string()) {
            out->text_bytes += str(content).size();
        } else if (content.is_array()) {
            for (dom::element part : arr(content)) {
                if (!part.is_object()) continue;
                dom::object po = obj(part);
                dom::element type;
                bool hasType = !po.at_key("type").get(type);
                // A part without "type" but with "text" is accepted leniently.
                if (hasType && !(type.is_string() && str(type) == "text")) continue;
                dom::element text;
                if (!po.at_key("text").get(text) && text.is_string()) out->text_bytes += str(text).size();
            }
        }
    }
}

void measurePrompt(dom::element j, int depth, rs_result *out) {
    if (j.is_string()) {
        out->text_bytes += str(j).size();
    } else if (isInteger(j)) {
        out->token_ids = (out->token_ids < 0 ? 0 : out->token_ids) + 1;
    } else if (j.is_array() && depth < 2) {
        for (dom::element e : arr(j)) measurePrompt(e, depth + 1, out);
    }
}

void invalid(rs_result *out, int field, long index = -1) {
    out->status = RS_INVALID;
    out->field = field;
    out->index = index;
}

// A key twice in one object: simdjson reads the first copy, vLLM (Python's json) the last, so the
// Engine would validate and measure one value while the backend gets another (and the rewrites, which
// write every member, would send both). Objects whose fields the scan reads are checked; they are small.
bool duplicateKey(dom::object o, rs_result *out, long index) {
    // Plain pointer and length pairs, left uninitialized: an array of string_view was zeroed
    // (1 KiB, a memset per object checked, three per chat request).
    struct Key { const char *data; size_t size; };
    Key seen[64];
    size_t n = 0;
    for (auto field : o) {
        for (size_t i = 0; i < n; i++) {
            if (std::string_view(seen[i].data, seen[i].size) == field.key) {
                out->status = RS_INVALID;
                out->field = RS_F_DUPLICATE_KEY;
                out->index = index;
                size_t k = field.key.size() < sizeof(out->error) - 1 ? field.key.size() : sizeof(out->error) - 1;
                std::memcpy(out->error, field.key.data(), k);
                out->error[k] = 0;
                return true;
            }
        }
        if (n < 64) seen[n++] = {field.key.data(), field.key.size()};
    }
    return false;
}

// The top-level members the scan reads, found in one pass over the object, where each at_key
// walked its members again (nine walks a chat request). The first of a repeated key, as at_key
// gives it (the scan refuses repeated keys at the top level before reading any).
enum RootKey { kModel, kStream, kStreamOptions, kMessages, kPrompt, kInput, kTemperature, kSeed, kMaxCompletionTokens,
               kMaxTokens, kRootKeys };

struct RootMembers {
    dom::element value[kRootKeys];
    unsigned present = 0;

    explicit RootMembers(dom::object o) {
        for (auto field : o) {
            std::string_view k = field.key;
            int i = -1;
            switch (k.size()) {
            case 4: if (keyIs(k, "seed")) i = kSeed; break;
            case 5: if (keyIs(k, "model")) i = kModel; else if (keyIs(k, "input")) i = kInput; break;
            case 6: if (keyIs(k, "stream")) i = kStream; else if (keyIs(k, "prompt")) i = kPrompt; break;
            case 8: if (keyIs(k, "messages")) i = kMessages; break;
            case 10: if (keyIs(k, "max_tokens")) i = kMaxTokens; break;
            case 11: if (keyIs(k, "temperature")) i = kTemperature; break;
            case 14: if (keyIs(k, "stream_options")) i = kStreamOptions; break;
            case 21: if (keyIs(k, "max_completion_tokens")) i = kMaxCompletionTokens; break;
            default: break;
            }
            if (i >= 0 && !(present >> i & 1)) {
                value[i] = field.value;
                present |= 1u << i;
            }
        }
    }
    /// at_key's answer: false when absent, else the member's value in `v`.
    bool get(RootKey k, dom::element &v) const {
        if (!(present >> k & 1)) return false;
        v = value[k];
        return true;
    }
};

void validateMessages(const RootMembers &root, rs_result *out) {
    dom::element j;
    if (!root.get(kMessages, j)) return invalid(out, RS_F_MESSAGES_MISSING);
    if (!j.is_array()) return invalid(out, RS_F_MESSAGES_TYPE);
    dom::array a = arr(j);
    if (a.size() == 0) return invalid(out, RS_F_MESSAGES_EMPTY);
    long i = 0;
    for (dom::element m : a) {
        if (!m.is_object()) return invalid(out, RS_F_MESSAGE_NOT_OBJECT, i);
        dom::object mo = obj(m);
        if (duplicateKey(mo, out, i)) return;
        dom::element role;
        if (mo.at_key("role").get(role) || !role.is_string()) return invalid(out, RS_F_MESSAGE_ROLE, i);
        dom::element content;
        if (!mo.at_key("content").get(content)) {
            if (!(content.is_null() || content.is_string() || content.is_array())) return invalid(out, RS_F_MESSAGE_CONTENT, i);
        }
        i++;
    }
}

void validatePrompt(const RootMembers &root, rs_result *out) {
    dom::element j;
    if (!root.get(kPrompt, j) || j.is_null()) return invalid(out, RS_F_PROMPT_MISSING);
    if (j.is_string()) return;
    if (!j.is_array()) return invalid(out, RS_F_PROMPT_TYPE);
    dom::array a = arr(j);
    if (a.size() == 0) return invalid(out, RS_F_PROMPT_TYPE);
    // Array of strings, of integers, or of integer arrays: every element of the first's kind.
    int first = -1;
    for (dom::element e : a) {
        int kind = e.is_string() ? 0 : isInteger(e) ? 1 : e.is_array() ? 2 : 3;
        if (first < 0) first = kind;
        if (kind == 3 || kind != first) return invalid(out, RS_F_PROMPT_TYPE);
        if (kind == 2) {
            for (dom::element t : arr(e)) {
                if (!isInteger(t)) return invalid(out, RS_F_PROMPT_TOKENS);
            }
        }
    }
}

// The cache key's canonical form of the top-level object (see CRequestScan.h).
void canonical(dom::object o, rs::Out &out) {
    rs::SortedMembers members;
    for (auto field : o) {
        auto k = field.key;
        if (k == "stream" || k == "stream_options" || k == "user" || k == "model") continue;
        members.add(k, field.value);
    }
    members.sort();
    out.push_back('{');
    bool first = true;
    for (auto &m : members) {
        if (!first) out.push_back(',');
        first = false;
        rs::writeString(out, m.key);
        out.push_back(':');
        rs::writeValue(out, m.value, true);
    }
    out.push_back('}');
}

bool isDeterministic(const RootMembers &o) {
    dom::element v;
    if (o.get(kTemperature, v)) {
        double d;
        if (v.is_number() && !v.get_double().get(d) && d == 0) return true;
    }
    return o.get(kSeed, v) && !v.is_null();
}

long long maxOutputTokens(const RootMembers &o) {
    for (RootKey key : {kMaxCompletionTokens, kMaxTokens}) {
        dom::element v;
        if (!o.get(key, v)) continue;
        int64_t i;
        if (!v.get_int64().get(i) && i >= 0) return i;
        uint64_t u;
        if (!v.get_uint64().get(u)) return INT64_MAX;
    }
    return -1;
}

// The routing view of the prompt (see CRequestScan.h), cut at `limit` bytes.
void renderPrompt(dom::object o, size_t limit, std::string &out) {
    out.clear();
    auto put = [&](std::string_view s) {
        if (out.size() >= limit) return;
        out.append(s.data(), std::min(s.size(), limit - out.size()));
    };
    dom::element v;
    if (!o.at_key("messages").get(v) && v.is_array()) {
        for (dom::element m : arr(v)) {
            if (out.size() >= limit) break;
            dom::object mo;
            if (m.get_object().get(mo)) continue;
            dom::element role, content;
            if (!mo.at_key("role").get(role) && role.is_string()) put(str(role));
            put("\n");
            if (!mo.at_key("content").get(content)) {
                if (content.is_string()) {
                    put(str(content));
                } else if (content.is_array()) {
                    for (dom::element part : arr(content)) {
                        dom::object po;
                        if (part.get_object().get(po)) continue;
                        dom::element type, text;
                        bool hasType = !po.at_key("type").get(type);
                        if (hasType && !(type.is_string() && str(type) == "text")) continue;
                        if (!po.at_key("text").get(text) && text.is_string()) put(str(text));
                    }
                }
            }
            put("\n");
        }
        return;
    }
    if (o.at_key("prompt").get(v)) return;
    if (v.is_array()) {
        dom::array a = arr(v);
        if (a.size() == 0) return;
        dom::element first;
        if (a.at(0).get(first)) return;
        if (first.is_string()) { put(str(first)); return; }
        dom::array ids = first.is_array() ? arr(first) : a;
        for (dom::element t : ids) {
            if (out.size() + 4 > limit) break;
            int64_t id = 0;
            if (t.get_int64().get(id)) continue;
            uint32_t u = (uint32_t)id;
            char b[4] = {(char)(u & 0xff), (char)((u >> 8) & 0xff), (char)((u >> 16) & 0xff), (char)(u >> 24)};
            out.append(b, 4);
        }
        return;
    }
    if (v.is_string()) put(str(v));
}

void scan(dom::parser &parser, const uint8_t *body, size_t len, int kind, int flags, size_t promptLimit, rs_result *out) {
    dom::element root;
    auto err = parser.parse(body, len).get(root);
    if (err) {
        out->status = RS_BAD_JSON;
        std::strncpy(out->error, error_message(err), sizeof(out->error) - 1);
        out->error[sizeof(out->error) - 1] = 0;
        return;
    }
    if (!root.is_object()) { out->status = RS_NOT_OBJECT; return; }
    dom::object o = obj(root);
    if (duplicateKey(o, out, -1)) return;
    const RootMembers members(o);

    dom::element v;
    if (members.get(kModel, v) && !v.is_null()) {
        if (!v.is_string()) return invalid(out, RS_F_MODEL_TYPE);
        std::string_view s = str(v);
        out->has_model = 1;
        out->model = s.data();
        out->model_len = s.size();
    }
    if (members.get(kStream, v) && !v.is_null()) {
        if (!v.is_bool()) return invalid(out, RS_F_STREAM_TYPE);
        out->stream = boolean(v) ? 1 : 0;
    }
    if (members.get(kStreamOptions, v)) out->has_stream_options = 1;
    if (out->has_stream_options && !v.is_null()) {
        if (!v.is_object()) return invalid(out, RS_F_STREAM_OPTIONS_TYPE);
        if (duplicateKey(obj(v), out, -1)) return;
        dom::element iu;
        if (!obj(v).at_key("include_usage").get(iu) && iu.is_bool()) out->include_usage = boolean(iu) ? 1 : 0;
        dom::element cu;
        if (!obj(v).at_key("continuous_usage_stats").get(cu) && cu.is_bool()) out->continuous_usage = boolean(cu) ? 1 : 0;
    }
    if (kind == RS_KIND_CHAT) validateMessages(members, out);
    else if (kind == RS_KIND_COMPLETION) validatePrompt(members, out);
    // RS_KIND_OTHER: vLLM judges the rest of the body.

    // The estimate (also for shapes the validation rejected, as far as they make sense): chat when there is a messages array, else the completion's prompt.
    if (members.get(kMessages, v) && v.is_array()) {
        measureMessages(arr(v), out);
    } else if (members.get(kPrompt, v)) {
        measurePrompt(v, 0, out);
    } else if (kind == RS_KIND_OTHER && members.get(kInput, v)) {
        measurePrompt(v, 0, out);  // embeddings' and responses' `input`
    }
    if (out->status != RS_OK) return;
    out->deterministic = isDeterministic(members) ? 1 : 0;
    out->max_output_tokens = maxOutputTokens(members);
    if (flags & RS_WANT_CANONICAL) {
        rs::Out w(tlsOut, rs::Out::fromStart);
        canonical(o, w);
        out->canonical = w.data();
        out->canonical_len = w.size();
    }
    if (promptLimit > 0 && kind != RS_KIND_OTHER) {
        renderPrompt(o, promptLimit, tlsPrompt);
        out->prompt = tlsPrompt.data();
        out->prompt_len = tlsPrompt.size();
    }
}

const char *rewrite(const uint8_t *body, size_t len, const char *model, size_t modelLen, bool includeUsage,
                    const char *onlyKey, size_t *outLen) {
    dom::element root;
    if (tlsParser.parse(body, len).get(root)) return nullptr;
    dom::object o;
    if (root.get_object().get(o)) return nullptr;
    rs::Out out(tlsOut, rs::Out::fromStart);
    out.push_back('{');
    if (onlyKey) {
        dom::element v;
        if (!o.at_key(onlyKey).get(v)) {
            rs::writeString(out, onlyKey);
            out.push_back(':');
            rs::writeValue(out, v, false);
        }
        out.push_back('}');
        *outLen = out.size();
        return out.data();
    }
    bool first = true;
    auto sep = [&] { if (!first) out.push_back(','); first = false; };
    bool wroteModel = false, wroteOptions = false;
    static const char usageTrue[] = "\"include_usage\":true";
    for (auto field : o) {
        sep();
        rs::writeString(out, field.key);
        out.push_back(':');
        if (model && field.key == "model") {
            rs::writeString(out, std::string_view(model, modelLen));
            wroteModel = true;
        } else if (includeUsage && field.key == "stream_options" && field.value.is_object()) {
            out.push_back('{');
            dom::object options = field.value.get_object().value_unsafe();  // a copy (see json_write.cpp)
            for (auto opt : options) {
                // vLLM reads continuous_usage_stats only with include_usage: the client, who did
                // not ask for usage, would get it in every chunk if the flag went along.
                if (opt.key == "include_usage" || opt.key == "continuous_usage_stats") continue;
                rs::writeString(out, opt.key);
                out.push_back(':');
                rs::writeValue(out, opt.value, false);
                out.push_back(',');
            }
            out.append(usageTrue);
            out.push_back('}');
            wroteOptions = true;
        } else if (includeUsage && field.key == "stream_options") {  // null (rs_scan rejects other types)
            out.push_back('{');
            out.append(usageTrue);
            out.push_back('}');
            wroteOptions = true;
        } else {
            rs::writeValue(out, field.value, false);
        }
    }
    if (model && !wroteModel) {
        sep();
        out.append("\"model\":");
        rs::writeString(out, std::string_view(model, modelLen));
    }
    if (includeUsage && !wroteOptions) {
        sep();
        out.append("\"stream_options\":{");
        out.append(usageTrue);
        out.push_back('}');
    }
    out.push_back('}');
    *outLen = out.size();
    return out.data();
}

} // namespace

extern "C" void rs_scan(const void *body, size_t len, int kind, int flags, rs_result *out) {
    rs_scan_prompt(body, len, kind, flags, 0, out);
}

extern "C" void rs_scan_prompt(const void *body, size_t len, int kind, int flags, size_t prompt_limit, rs_result *out) {
    std::memset(out, 0, sizeof(*out));
    out->index = -1;
    out->token_ids = -1;
    const uint8_t *bytes = static_cast<const uint8_t *>(body);
    static const uint8_t empty = 0;
    if (bytes == nullptr) bytes = &empty;
    try {
        scan(tlsParser, bytes, len, kind, flags, prompt_limit, out);
    } catch (...) {
        // Not expected (only the error-code API is used); never let an exception reach Swift.
        std::memset(out, 0, sizeof(*out));
        out->status = RS_BAD_JSON;
        std::strncpy(out->error, "the body could not be read", sizeof(out->error) - 1);
    }
}

extern "C" void rs_trim(void) {
    if (tlsParser.capacity() > kLargeBody) tlsParser = dom::parser{};
    if (tlsOut.capacity() > kLargeBody) std::string().swap(tlsOut);
    if (tlsPrompt.capacity() > kLargeBody) std::string().swap(tlsPrompt);
    if (tlsBatch.capacity() > kLargeBody) std::vector<uint8_t>().swap(tlsBatch);
}

extern "C" const char *rs_rewrite(const void *body, size_t len, const char *model, size_t model_len, int include_usage,
                                  const char *only_key, size_t *out_len) {
    *out_len = 0;
    const uint8_t *bytes = static_cast<const uint8_t *>(body);
    static const uint8_t empty = 0;
    if (bytes == nullptr) bytes = &empty;
    try {
        return rewrite(bytes, len, model, model_len, include_usage != 0, only_key, out_len);
    } catch (...) {
        return nullptr;
    }
}

namespace {

bool readCount(dom::object o, const char *key, long long *out) {
    dom::element v;
    if (o.at_key(key).get(v)) return false;
    int64_t i;
    if (!v.get_int64().get(i)) { *out = i; return true; }
    uint64_t u;
    if (!v.get_uint64().get(u)) { *out = (long long)(u > (uint64_t)INT64_MAX ? INT64_MAX : u); return true; }
    return false;
}

bool isDone(const uint8_t *bytes, size_t len) { return len == 6 && std::memcmp(bytes, "[DONE]", 6) == 0; }

// What rs_inspect_upstream reports of a parsed document; the fingerprint's text goes to `fp`
// (appended; `out->fingerprint` is set by the caller, once `fp` no longer moves).
void describe(dom::element root, rs_upstream_json *out, std::string &fp);

// `root` gets the parsed document (left as it is when there is none).
void inspect(const uint8_t *bytes, size_t len, rs_upstream_json *out, dom::element &root) {
    // `[DONE]` (SSE's end marker) is not JSON; compare it before parsing.
    if (isDone(bytes, len)) { out->kind = RS_J_DONE; return; }
    if (tlsParser.parse(bytes, len).get(root)) { out->kind = RS_J_BAD_JSON; return; }
    tlsFingerprint.clear();
    describe(root, out, tlsFingerprint);
    if (out->has_fingerprint) out->fingerprint = tlsFingerprint.data() + out->fingerprint_at;
}

void describe(dom::element root, rs_upstream_json *out, std::string &fp) {
    dom::object o;
    if (root.get_object().get(o)) { out->kind = RS_J_NOT_OBJECT; return; }
    out->kind = RS_J_OBJECT;
    // One pass over the members (an answer's chunk has ~7); the first of a repeated key counts,
    // as at_key would give it, except for the identity members, which count every time.
    dom::element object, choices, usage, fingerprint;
    bool hasObject = false, hasChoices = false, hasUsage = false, hasFingerprint = false;
    for (dom::key_value_pair m : o) {
        std::string_view k = m.key;
        if (keyIs(k, "id")) { if (m.value.is_string()) out->identity_members++; }
        else if (keyIs(k, "created")) { if (m.value.is_number()) out->identity_members++; }
        else if (keyIs(k, "choices")) { if (!hasChoices) { choices = m.value; hasChoices = true; } }
        else if (keyIs(k, "object")) { if (!hasObject) { object = m.value; hasObject = true; } }
        else if (keyIs(k, "usage")) { if (!hasUsage) { usage = m.value; hasUsage = true; } }
        else if (keyIs(k, "error")) { out->has_error = 1; }
        else if (keyIs(k, "system_fingerprint")) { if (!hasFingerprint) { fingerprint = m.value; hasFingerprint = true; } }
    }
    if (hasObject && object.is_string()) {
        std::string_view k = str(object);
        out->object_kind = keyIs(k, "chat.completion") ? 1 : keyIs(k, "text_completion") ? 2 : keyIs(k, "chat.completion.chunk") ? 3 : 0;
    }
    if (hasChoices && choices.is_array()) {
        out->has_choices = 1;
        out->choices_empty = arr(choices).size() == 0;
        long long position = 0;
        for (dom::element c : arr(choices)) {
            long long index = position++;
            dom::object co;
            if (c.get_object().get(co)) continue;
            dom::element ix, fr;
            bool hasIndex = false, hasFinish = false;
            for (dom::key_value_pair m : co) {
                if (!hasIndex && keyIs(m.key, "index")) { ix = m.value; hasIndex = true; }
                else if (!hasFinish && keyIs(m.key, "finish_reason")) { fr = m.value; hasFinish = true; }
                if (hasIndex && hasFinish) break;  // the first of each counts: the rest cannot change them
            }
            if (hasIndex) {
                int64_t i;
                if (ix.get_int64().get(i)) { out->choices_beyond = 1; continue; }
                index = i;
            }
            if (index < 0 || index > 63) { out->choices_beyond = 1; continue; }
            out->choices_seen |= 1ULL << index;
            if (hasFinish && !fr.is_null()) out->choices_finished |= 1ULL << index;
        }
    }
    if (hasUsage && usage.is_object()) {
        dom::object u = obj(usage);
        out->has_usage = readCount(u, "prompt_tokens", &out->prompt_tokens)
            && readCount(u, "completion_tokens", &out->completion_tokens);
    }
    // system_fingerprint is only looked for where vLLM puts it: a chunk that finishes a choice,
    // the usage chunk, a whole answer (not on every token's chunk of a stream).
    if ((out->choices_finished != 0 || out->has_usage) && hasFingerprint && !fingerprint.is_null()) {
        out->has_fingerprint = 1;
        // Its JSON text (a string re-escaped minimally, anything else as written compactly).
        out->fingerprint_at = fp.size();
        rs::Out w(fp, rs::Out::afterContents);
        rs::writeValue(w, fingerprint, false);
        w.commit();
        out->fingerprint_len = fp.size() - out->fingerprint_at;
    }
}

bool isSpace(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool allSpace(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) if (!isSpace(p[i])) return false;
    return true;
}

// Several events' JSON in one document_stream: stage 1 (structure, UTF-8) runs once over the
// batch instead of once per event. The copy's bytes outside the spans are blanked to spaces, so
// the stream holds the spans' documents and nothing else. Each document must be an object that
// lies inside its own span with only whitespace around it, one per span, in order: then it is
// exactly the document that parsing the span alone gives (a valid JSON text ends where its last
// value closes, and whitespace around it is insignificant). Anything else — an invalid or
// non-object span, two documents in one span, a document across spans — returns false, and the
// caller parses every span on its own (what decides the outcome of such a batch). `[DONE]` spans
// (already marked in `out`) are blanked too.
// Spaces over `n` bytes at `p`. The gaps between a read's events are a few bytes (`\n\ndata: `):
// two overlapping stores each, where a call to memset cost more than the stores.
inline void blank(uint8_t *p, size_t n) {
    static const uint8_t spaces[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
    if (n > 16) {
        std::memset(p, ' ', n);
    } else if (n >= 8) {
        std::memcpy(p, spaces, 8);
        std::memcpy(p + n - 8, spaces, 8);
    } else if (n >= 4) {
        std::memcpy(p, spaces, 4);
        std::memcpy(p + n - 4, spaces, 4);
    } else if (n >= 2) {
        std::memcpy(p, spaces, 2);
        std::memcpy(p + n - 2, spaces, 2);
    } else if (n == 1) {
        *p = ' ';
    }
}

bool inspectStream(uint8_t *buf, size_t len, const rs_span *spans, size_t n, rs_upstream_json *out) {
    auto done = [&](size_t i) { return out[i].kind == RS_J_DONE; };
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (done(i)) continue;
        blank(buf + at, spans[i].start - at);
        at = spans[i].start + spans[i].len;
    }
    blank(buf + at, len - at);
    dom::document_stream docs;
    if (tlsParser.parse_many(buf, len, len).get(docs)) return false;
    size_t next = 0;
    for (auto it = docs.begin(); it != docs.end(); ++it) {
        dom::element root;
        if ((*it).get(root) || !root.is_object()) return false;
        while (next < n && done(next)) next++;
        if (next == n) return false;
        const rs_span &s = spans[next];
        size_t start = it.current_index();
        size_t end = start + it.source().size();  // the object's closing brace, plus one
        if (start < s.start || end > s.start + s.len) return false;
        if (!allSpace(buf + s.start, start - s.start) || !allSpace(buf + end, s.start + s.len - end)) return false;
        describe(root, &out[next], tlsBatchFingerprints);
        next++;
    }
    while (next < n && done(next)) next++;
    return next == n;
}

// Returns whether the documents were read as one stream.
bool inspectMany(const uint8_t *bytes, size_t len, const rs_span *spans, size_t n, rs_upstream_json *out) {
    tlsBatchFingerprints.clear();
    size_t json = 0;
    for (size_t i = 0; i < n; i++) {
        if (isDone(bytes + spans[i].start, spans[i].len)) out[i].kind = RS_J_DONE;
        else json++;
    }
    if (json == 0) return false;
    // One copy of the batch with padding: simdjson then reads each span in place.
    if (tlsBatch.size() < len + SIMDJSON_PADDING) tlsBatch.resize(len + SIMDJSON_PADDING);
    uint8_t *buf = tlsBatch.data();
    std::memcpy(buf, bytes, len);
    if (json > 1) {
        if (inspectStream(buf, len, spans, n, out)) return true;
        // The stream did not line up with the spans: each span on its own decides, from a fresh copy.
        for (size_t i = 0; i < n; i++) {
            int kind = out[i].kind;
            std::memset(&out[i], 0, sizeof(out[i]));
            out[i].kind = kind == RS_J_DONE ? RS_J_DONE : RS_J_OBJECT;
        }
        tlsBatchFingerprints.clear();
        std::memcpy(buf, bytes, len);
    }
    // One document (an event beside `[DONE]`), or a batch that did not line up: one parse a span.
    for (size_t i = 0; i < n; i++) {
        if (out[i].kind == RS_J_DONE) continue;
        dom::element root;
        if (tlsParser.parse(buf + spans[i].start, spans[i].len, false).get(root)) { out[i].kind = RS_J_BAD_JSON; continue; }
        describe(root, &out[i], tlsBatchFingerprints);
    }
    return false;
}

} // namespace

extern "C" int rs_inspect_upstream_many(const void *bytes, size_t len, const rs_span *spans, size_t n, rs_upstream_json *out) {
    if (n == 0) return 0;
    std::memset(out, 0, n * sizeof(*out));
    static const uint8_t empty = 0;
    const uint8_t *b = bytes ? static_cast<const uint8_t *>(bytes) : &empty;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        // Spans in order, inside the batch, not overlapping (the caller's contract: refuse the rest).
        if (spans[i].start < at || spans[i].len > len || spans[i].start > len - spans[i].len) {
            for (size_t k = 0; k < n; k++) out[k].kind = RS_J_BAD_JSON;
            return 0;
        }
        at = spans[i].start + spans[i].len;
    }
    try {
        bool streamed = inspectMany(b, len, spans, n, out);
        for (size_t i = 0; i < n; i++) {
            if (out[i].has_fingerprint) out[i].fingerprint = tlsBatchFingerprints.data() + out[i].fingerprint_at;
        }
        return streamed ? 1 : 0;
    } catch (...) {
        std::memset(out, 0, n * sizeof(*out));
        for (size_t i = 0; i < n; i++) out[i].kind = RS_J_BAD_JSON;
        return 0;
    }
}

namespace {

// The top-level `id` (string) and `created` (number) values of the object `o` that tlsParser has
// just parsed from `bytes`, by rs_identity_spans's rules, without parsing again: the DOM says
// which members they are (keys unescaped, every copy of a repeated key), stage 1's structural
// index where their values lie. The index holds the position of every bracket, colon and comma
// and of each scalar's first byte, so the top-level object reads `{` key `:` value (`,` key `:`
// value)* `}`, a nested value spans its brackets, and a value's token runs to the next
// structural: the token On-Demand's raw_json_token gives rs_identity_spans, blanks after it
// trimmed the same way. (`implementation` is a public member that simdjson marks private, the
// one way its DOM tells where a value was; this saves the answer's second parse when it is
// stored.) Returns -1 when the index does not read that way (not expected of a parsed object).
int parsedIdentitySpans(dom::object o, int members, const uint8_t *bytes, size_t *spans, size_t max, size_t *n) {
    if (members == 0) return RS_IDENTITY_NONE;
    if (size_t(members) > max) return RS_IDENTITY_NOT_OBJECT;  // rs_identity_spans's limit
    const uint32_t *s = tlsParser.implementation->structural_indexes.get();
    const uint32_t count = tlsParser.implementation->n_structural_indexes;
    uint32_t i = 1;  // the first key (s[0] is the object's `{`)
    for (dom::key_value_pair m : o) {
        uint32_t v = i + 2;  // after the key and its colon
        if (v + 1 >= count || bytes[s[i]] != '"' || bytes[s[i + 1]] != ':') return -1;
        if (keyIs(m.key, "id") ? m.value.is_string() : keyIs(m.key, "created") && m.value.is_number()) {
            size_t at = s[v], end = s[v + 1];
            while (end > at && isSpace(bytes[end - 1])) end--;
            if (end == at) return -1;
            spans[2 * *n] = at;
            spans[2 * *n + 1] = end;
            if (++*n == size_t(members)) return RS_IDENTITY_FOUND;  // the rest holds none
        }
        // Past the value: a nested one to its closing bracket (a string is one structural, so
        // brackets inside strings never count).
        uint32_t j = v;
        for (int depth = 0;; ) {
            if (j >= count) return -1;
            uint8_t c = bytes[s[j++]];
            if (c == '{' || c == '[') depth++;
            else if (c == '}' || c == ']') depth--;
            if (depth == 0) break;
        }
        i = j + 1;  // after the comma (or the object's `}`: then the loop ends)
    }
    return -1;  // fewer than the DOM counted
}

} // namespace

extern "C" int rs_inspect_upstream_identity(const void *json, size_t len, rs_upstream_json *out, size_t *spans, size_t max,
                                            size_t *n) {
    *n = 0;
    std::memset(out, 0, sizeof(*out));
    const uint8_t *bytes = static_cast<const uint8_t *>(json);
    static const uint8_t empty = 0;
    if (bytes == nullptr) bytes = &empty;
    int status = -1;
    try {
        dom::element root;
        inspect(bytes, len, out, root);
        if (out->kind != RS_J_OBJECT) return RS_IDENTITY_NOT_OBJECT;
        status = parsedIdentitySpans(obj(root), out->identity_members, bytes, spans, max, n);
    } catch (...) {
        std::memset(out, 0, sizeof(*out));
        out->kind = RS_J_BAD_JSON;
        *n = 0;
        return RS_IDENTITY_NOT_OBJECT;
    }
    if (status == RS_IDENTITY_FOUND) return status;
    *n = 0;
    return status == -1 ? rs_identity_spans(bytes, len, spans, max, n) : status;
}

extern "C" void rs_inspect_upstream(const void *json, size_t len, rs_upstream_json *out) {
    std::memset(out, 0, sizeof(*out));
    const uint8_t *bytes = static_cast<const uint8_t *>(json);
    static const uint8_t empty = 0;
    if (bytes == nullptr) bytes = &empty;
    try {
        dom::element root;
        inspect(bytes, len, out, root);
    } catch (...) {
        std::memset(out, 0, sizeof(*out));
        out->kind = RS_J_BAD_JSON;
    }
}

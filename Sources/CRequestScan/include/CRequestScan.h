// CRequestScan: validates an OpenAI request body with Debian's simdjson (DOM API: the whole
// document is validated, UTF-8 included) and extracts what the pipeline needs before any tree is
// built: model, stream, stream_options.include_usage, the shape of messages/prompt, and the prompt
// size for the token estimate. Plain C interface; the implementation is C++ (request_scan.cpp).
#ifndef CREQUESTSCAN_H
#define CREQUESTSCAN_H
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    RS_OK = 0,
    RS_BAD_JSON = 1,     // not JSON at all: `error` holds simdjson's message
    RS_NOT_OBJECT = 2,   // valid JSON, but not an object
    RS_INVALID = 3,      // an object with a field of the wrong shape: see `field`, `index`
};

enum {
    RS_F_NONE = 0,
    RS_F_MODEL_TYPE,
    RS_F_STREAM_TYPE,
    RS_F_STREAM_OPTIONS_TYPE,
    RS_F_MESSAGES_MISSING,
    RS_F_MESSAGES_TYPE,
    RS_F_MESSAGES_EMPTY,
    RS_F_MESSAGE_NOT_OBJECT,     // index = message
    RS_F_MESSAGE_ROLE,           // index = message
    RS_F_MESSAGE_CONTENT,        // index = message
    RS_F_PROMPT_MISSING,
    RS_F_PROMPT_TYPE,
    RS_F_PROMPT_TOKENS,
    RS_F_DUPLICATE_KEY,          // `error` holds the key; index = message, or -1 (top level)
};

typedef struct rs_result {
    int status;
    int field;
    long index;
    char error[128];
    /// 1 when `model` is a string; `model` points into the scanner's buffer (copy it at once;
    /// valid until the next scan on this thread).
    int has_model;
    const char *model;
    size_t model_len;
    int stream;
    int include_usage;
    /// The body has a top-level `stream_options` member (null or an object).
    int has_stream_options;
    /// stream_options.continuous_usage_stats is true (usage in every chunk, with include_usage).
    int continuous_usage;
    /// Prompt size: text bytes, chat messages, token ids given verbatim (-1 when none).
    size_t text_bytes;
    size_t messages;
    long token_ids;
    /// 1 when the output is reproducible: `temperature` is a number equal to 0, or `seed` is
    /// present and not null (what cache.deterministic_only admits).
    int deterministic;
    /// The output the request allows: `max_completion_tokens`, else `max_tokens`, when it is a
    /// non-negative integer; -1 when neither is (admission's cost estimate).
    long long max_output_tokens;
    /// With RS_WANT_CANONICAL and status RS_OK: the body's canonical form for the cache key (the
    /// top-level fields stream, stream_options, user and model left out; object keys sorted at
    /// every depth; compact; see json_write.hpp). Points into a per-thread buffer: valid until the
    /// next call of any rs_ function on this thread.
    const char *canonical;
    size_t canonical_len;
    /// With rs_scan_prompt's `prompt_limit` > 0 and status RS_OK: the prompt as prefix-aware
    /// routing reads it, at most `prompt_limit` bytes: chat, each message's role, "\n", its string
    /// content or text parts, "\n", in order; completions, the prompt string (the first of a list),
    /// or its token ids as 4 little-endian bytes each. Per-thread buffer, valid like `canonical`.
    const char *prompt;
    size_t prompt_len;
} rs_result;

enum { RS_WANT_CANONICAL = 1 };

/// What the body is for: chat (messages checked), completion (prompt checked), or any other
/// JSON route of vLLM's (only model, stream and stream_options checked; the size measured from
/// messages, prompt or input).
enum { RS_KIND_COMPLETION = 0, RS_KIND_CHAT = 1, RS_KIND_OTHER = 2 };

/// Scans `len` bytes by the rules of `kind` (RS_KIND_*); `flags` is 0 or RS_WANT_CANONICAL.
void rs_scan(const void *body, size_t len, int kind, int flags, rs_result *out);

/// rs_scan, and with `prompt_limit` > 0 also the rendered prompt (`prompt`, `prompt_len`).
void rs_scan_prompt(const void *body, size_t len, int kind, int flags, size_t prompt_limit, rs_result *out);

/// Rewrites a body rs_scan accepted: the same top-level fields in the same order, values written
/// compactly, except: with `model` non-NULL, `model` becomes that string (added when absent);
/// with `include_usage`, `stream_options.include_usage` becomes true (stream_options added when
/// absent or null) and `continuous_usage_stats` is dropped (vLLM ignores it without
/// include_usage, so the client's answer stays the one it asked for). With `only_key` non-NULL, the output is instead `{"<only_key>": <its value>}`
/// (or `{}` when absent), the other arguments ignored. Returns the output (per-thread buffer,
/// valid until the next rs_ call on this thread) and its length in `out_len`; NULL when the body
/// is not a JSON object.
const char *rs_rewrite(const void *body, size_t len, const char *model, size_t model_len, int include_usage,
                       const char *only_key, size_t *out_len);

/// Call after the result's strings were copied: frees the scanner's buffers if a large body grew them.
void rs_trim(void);

/// What the Engine reads from one upstream JSON document (a response body, or the `data` of one
/// SSE event), with the same parser: valid JSON of any spacing and escapes, UTF-8 checked.
enum {
    RS_J_OBJECT = 0,     // a JSON object (the flags below apply)
    RS_J_DONE = 1,       // exactly `[DONE]` (SSE end marker)
    RS_J_BAD_JSON = 2,   // not valid JSON (or invalid UTF-8)
    RS_J_NOT_OBJECT = 3, // valid JSON, not an object
};

typedef struct rs_upstream_json {
    int kind;
    /// The object has an `error` key (vLLM reports some failures inside a 200 stream).
    int has_error;
    /// `choices` is an array; `choices_empty` when it has no element (a usage-only chunk).
    int has_choices;
    int choices_empty;
    /// `object` names a chat.completion (1), text_completion (2), chat.completion.chunk (3), other/none (0).
    int object_kind;
    /// `usage` is an object with integer prompt_tokens and completion_tokens.
    int has_usage;
    long long prompt_tokens;
    long long completion_tokens;
    /// Choices by their `index` (0-63; a choice without an integer index counts by position):
    /// bit i of `choices_seen` when choice i is present, of `choices_finished` when its
    /// finish_reason is not null. `choices_beyond` when an index is outside 0-63.
    unsigned long long choices_seen;
    unsigned long long choices_finished;
    int choices_beyond;
    /// A top-level `system_fingerprint` that is not null, and its JSON text (per-thread buffer,
    /// valid until the next rs_inspect_upstream on this thread); read only from an object that
    /// finishes a choice or carries usage (where vLLM puts it).
    int has_fingerprint;
    const char *fingerprint;
    size_t fingerprint_len;
    /// (Internal: where the fingerprint's text starts in its per-thread buffer.)
    size_t fingerprint_at;
    /// Top-level members that rs_identity_spans reports: `id` with a string value, `created`
    /// with a number (keys unescaped; a key that appears twice counts twice).
    int identity_members;
} rs_upstream_json;

/// Inspects `len` bytes of upstream JSON (or `[DONE]`).
void rs_inspect_upstream(const void *json, size_t len, rs_upstream_json *out);

/// One document inside a batch: `len` bytes from byte `start`.
typedef struct rs_span {
    size_t start;
    size_t len;
} rs_span;

/// rs_inspect_upstream of each of `n` spans of `bytes` (`len` bytes, e.g. a read's whole SSE
/// events; the spans their data, in order, not overlapping): `out[i]` is exactly what
/// rs_inspect_upstream(bytes + spans[i].start, spans[i].len) reports, every document fully
/// validated. One call and one copy of the batch (padded for simdjson) instead of one per span;
/// several documents are parsed as one document stream. Fingerprints point into a per-thread
/// buffer valid until the next rs_inspect_upstream_many on this thread (rs_inspect_upstream
/// has its own). Returns 1 when the documents were read as one document stream, 0 when each
/// was parsed on its own (one document, or a batch that did not read as one: an invalid one).
int rs_inspect_upstream_many(const void *bytes, size_t len, const rs_span *spans, size_t n, rs_upstream_json *out);

/// rs_identity_spans's outcome.
enum {
    RS_IDENTITY_FOUND = 0,      // `spans` holds at least one value
    RS_IDENTITY_NONE = 1,       // an object without a string `id` or a numeric `created` at the top
    RS_IDENTITY_NOT_OBJECT = 2, // not a JSON object (or not JSON, or stranger than any answer)
};

/// Where the top-level string `id` and numeric `created` values of the JSON object in `len`
/// bytes lie (a response body, or the `data` of one SSE event), so that a replay can be given its
/// own identity by replacing exactly those bytes. The keys are read by the parser (escapes
/// unescaped), never matched as text; nested members are not looked into. Writes `*n` pairs
/// (start, end) of byte offsets, in document order, into `spans` (room for `max` pairs; a key
/// that appears twice gives two pairs); `*n` is 0 unless RS_IDENTITY_FOUND.
int rs_identity_spans(const void *json, size_t len, size_t *spans, size_t max, size_t *n);

/// rs_inspect_upstream, and for an object (`out->kind` RS_J_OBJECT) also what rs_identity_spans
/// reports for the same bytes (its status, `spans`, `*n`), read from this parse instead of a
/// second one (a stored answer's identity values). For anything else it returns
/// RS_IDENTITY_NOT_OBJECT with `*n` 0 (rs_identity_spans, which does not validate what it skips,
/// may find values in some invalid JSON).
int rs_inspect_upstream_identity(const void *json, size_t len, rs_upstream_json *out, size_t *spans, size_t max, size_t *n);

/// Whether `len` bytes might hold a key `id` or `created` at any depth: they contain `"id"`,
/// `"created"` or a `\u` escape (which could spell one). 0 means they certainly do not. One pass;
/// ReplyStamp's template uses it on the part of an event after the identity values.
int rs_may_hold_identity(const void *bytes, size_t len);

/// Whether `len` bytes might hold the object key `key` (`key_len` bytes of letters, digits or
/// `_`, which JSON can spell otherwise only with `\u`) at any depth: they contain it quoted, or a
/// `\u` escape. 0 means they certainly do not (so a parse would not find it).
int rs_may_hold_key(const void *bytes, size_t len, const char *key, size_t key_len);

/// The cache-hit splice: `src` (`len` bytes, a cache entry's payload) with each value of `spans`
/// replaced, written at `dst` (room for `cap` bytes, at least `len` + `n_spans` times the longer
/// of `id_len` and `created_len`); returns the output's length, or -1 when the tables do not fit
/// `src` (then `dst` holds nothing of use). With `dst` NULL it only checks them (and returns
/// the length). Tables are n (start:u32, end:u32) big-endian pairs, as the entry holds them (an
/// end below its start reads as an empty range): `skip` the usage chunks (sorted, not
/// overlapping, inside the payload), `spans` the id and created values (sorted, not overlapping,
/// not empty, inside the payload, each starting like a JSON string or number, each inside one
/// skip range or apart from all). An id value (one starting with `"`) becomes the `id_len` bytes
/// at `id`, a created value the `created_len` bytes at `created`; `skipping`: the skip ranges are
/// left out, with the values inside them.
ptrdiff_t rs_splice(const void *src, size_t len, const void *skip, size_t n_skip, const void *spans, size_t n_spans,
                    int skipping, const void *id, size_t id_len, const void *created, size_t created_len,
                    void *dst, size_t cap);

#ifdef __cplusplus
}
#endif
#endif

/*
 * CKVEvents: vLLM's KV-cache events (ZeroMQ + msgpack) for the Engine and the simulator.
 * ckv_* only. Why C: libzmq's multipart receive is a loop over zmq_msg_t lifetimes and option
 * reads through void pointers, and msgpack-c's objects are tagged unions and its packer is
 * static-inline macros; here each becomes one call with plain out-parameters. Decoding is strict:
 * anything that is not a well-formed vLLM batch returns a negative ckv_error and nothing else.
 * Wire format: docs/vllm-kv-events.md. Memory: every object here is created and freed by one
 * Swift owner (ckv_*_new / ckv_*_free); decoded arrays live in the ckv_batch until the next
 * decode into it or its free.
 */
#ifndef CKVEVENTS_H
#define CKVEVENTS_H

#include <stddef.h>
#include <stdint.h>

/* ---- ZeroMQ ---------------------------------------------------------------------------- */

/* 1 when libzmq.so.5 (Debian's libzmq5) is loaded: the first call loads it with dlopen (it is
 * not linked, so a process that never uses KV events does not map it and its dependencies). */
int ckv_zmq_available(void);

/* A context (libzmq runs one I/O thread per context; nothing of ours runs on it). NULL with
 * errno ELIBACC when libzmq cannot be loaded. */
void *ckv_context_new(void);
void ckv_context_free(void *ctx);

/* A SUB socket connected to `endpoint`, subscribed to every topic, linger 0, messages over
 * `max_message_bytes` refused by libzmq. NULL on error (errno set). Reconnects are libzmq's. */
void *ckv_sub_open(void *ctx, const char *endpoint, int64_t max_message_bytes);
/* A PUB socket bound to (or, without a '*', connected to) `endpoint`. NULL on error. */
void *ckv_pub_open(void *ctx, const char *endpoint);
void ckv_socket_close(void *sock);

/* The socket's ZMQ_FD (edge-triggered: it only says "look at ZMQ_EVENTS"); -1 on error. */
int ckv_socket_fd(void *sock);
/* ZMQ_EVENTS has POLLIN: a whole message can be received now. Also processes pending commands,
 * which is why the driver must call it after every wakeup and every send/recv. */
int ckv_socket_readable(void *sock);

/* The TCP port a bound socket got (after "tcp://host:0"), or -1. */
int ckv_socket_bound_port(void *sock);

/* One received multipart message: up to CKV_MAX_FRAMES frames, copied into `data`. */
#define CKV_MAX_FRAMES 4
typedef struct {
    int frame_count;             /* frames in the message (may exceed CKV_MAX_FRAMES: then malformed) */
    size_t frame_offset[CKV_MAX_FRAMES];
    size_t frame_length[CKV_MAX_FRAMES];
    uint8_t *data;               /* owned; grows as needed */
    size_t capacity;
} ckv_message;

ckv_message *ckv_message_new(void);
void ckv_message_free(ckv_message *m);

/* Receives one whole message without blocking: 1 = got one (check frame_count), 0 = nothing
 * ready (EAGAIN), -1 = error (errno). A message with too many frames is drained entirely. */
int ckv_recv(void *sock, ckv_message *m);

/* Sends [topic, seq (8 bytes big-endian), payload] without blocking; 0 or -1 (errno: EAGAIN at
 * the high-water mark, when PUB drops anyway). */
int ckv_send_batch(void *sock, const uint8_t *topic, size_t topic_len, uint64_t seq,
                   const uint8_t *payload, size_t payload_len);

/* ---- Decoding --------------------------------------------------------------------------- */

/* ckv_event.kind (plain defines: Swift imports them as Int32 constants). */
#define CKV_BLOCK_STORED 1
#define CKV_BLOCK_REMOVED 2
#define CKV_ALL_BLOCKS_CLEARED 3

/* ckv_event.flags. KEYED: lora_name/lora_id set, or an extra_keys entry (multimodal, cache_salt,
 * embeddings) is not nil, so the block's identity depends on more than its token ids.
 * OTHER_MEDIUM: medium is present and not "GPU" (an offloading tier). */
#define CKV_FLAG_KEYED 1
#define CKV_FLAG_OTHER_MEDIUM 2

typedef struct {
    int kind;                /* CKV_BLOCK_STORED, ... */
    int flags;
    uint32_t hash_offset;    /* into ckv_batch.hashes */
    uint32_t hash_count;
    uint32_t token_offset;   /* into ckv_batch.tokens (BlockStored) */
    uint32_t token_count;    /* == hash_count * block_size (checked) */
    uint32_t block_size;
    int has_parent;
    uint64_t parent;
} ckv_event;

typedef struct {
    double ts;
    int64_t dp_rank;         /* -1 when absent or nil */
    uint32_t event_count;
    uint32_t skipped_events; /* events of a type this decoder does not know (tolerated) */
    uint32_t hash_count;
    uint32_t token_count;
    ckv_event *events;
    uint64_t *hashes;
    uint32_t *tokens;
    uint32_t event_capacity, hash_capacity, token_capacity;
} ckv_batch;

ckv_batch *ckv_batch_new(void);
void ckv_batch_free(ckv_batch *b);

/* Why a message was dropped (return values of ckv_decode_batch / ckv_encode_batch). */
#define CKV_OK 0
#define CKV_ERR_MSGPACK (-1)   /* not one complete msgpack value, or bytes after it */
#define CKV_ERR_SHAPE (-2)     /* not [ts, [event...], rank?] */
#define CKV_ERR_EVENT (-3)     /* an event map misses a required field or has a wrong type */
#define CKV_ERR_TOKENS (-4)    /* token_ids count is not hashes x block_size, or an id > 2^32-1 */
#define CKV_ERR_NOMEM (-5)

/* Decodes a batch payload (frame 2) into `out`. CKV_OK or a CKV_ERR_*; `out` is then empty. */
int ckv_decode_batch(const uint8_t *payload, size_t len, ckv_batch *out);

/* Block hashes as 64-bit keys: ints as they are, `bin` hashes as their low 64 bits (big-endian
 * tail), which is what vLLM itself publishes with VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1. */
uint64_t ckv_hash_from_bytes(const uint8_t *p, size_t n);

/* ---- Encoding (the simulator) ------------------------------------------------------------- */

/* A growable output buffer for ckv_encode_*. */
typedef struct {
    uint8_t *data;
    size_t length;
    size_t capacity;
} ckv_buffer;

ckv_buffer *ckv_buffer_new(void);
void ckv_buffer_free(ckv_buffer *b);

/* Encodes [ts, [events...], dp_rank] as vLLM 0.32 does (maps tagged by "type", int hashes, the
 * same keys in the same order), replacing the buffer's content. Events read hashes and tokens
 * from the given arrays through their offsets. 0, or CKV_ERR_NOMEM / CKV_ERR_EVENT. */
int ckv_encode_batch(ckv_buffer *out, double ts, const ckv_event *events, uint32_t event_count,
                     const uint64_t *hashes, const uint32_t *tokens, int64_t dp_rank);

#endif

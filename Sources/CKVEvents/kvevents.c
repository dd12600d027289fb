/*
 * ckv_*: ZeroMQ sockets and msgpack decoding/encoding of vLLM's KV-event batches.
 * Header CKVEvents.h says why each exists. Never aborts on input: every malformed byte string
 * is a negative return. Twemproxy C style.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>
#include <msgpack.h>
#include "CKVEvents.h"

/* ---- ZeroMQ ---------------------------------------------------------------------------- */

/*
 * libzmq is loaded with dlopen by the first ckv_context_new, not linked: it pulls in libsodium,
 * libpgm, libnorm and Kerberos (~1.5 MB resident per process), and only a config with
 * routing.kv_events (or the simulator's --kv-events-config) uses it. zmq.h gives the types and
 * constants; every call below goes through this table, and every one of them needs a context or
 * a socket, which only exist once the table is filled.
 */
static struct {
    void *(*ctx_new)(void);
    int (*ctx_set)(void *, int, int);
    int (*ctx_term)(void *);
    void *(*socket)(void *, int);
    int (*close)(void *);
    int (*setsockopt)(void *, int, const void *, size_t);
    int (*getsockopt)(void *, int, void *, size_t *);
    int (*bind)(void *, const char *);
    int (*connect)(void *, const char *);
    int (*send)(void *, const void *, size_t, int);
    int (*msg_init)(zmq_msg_t *);
    int (*msg_recv)(zmq_msg_t *, void *, int);
    int (*msg_close)(zmq_msg_t *);
    void *(*msg_data)(zmq_msg_t *);
    size_t (*msg_size)(const zmq_msg_t *);
    int (*msg_more)(const zmq_msg_t *);
} zmq;

static int zmq_loaded; /* 1 loaded, -1 failed (errno ELIBACC), 0 not tried */

static void
load_zmq(void)
{
    void *lib = dlopen("libzmq.so.5", RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        zmq_loaded = -1;
        return;
    }
#define CKV_SYM(field, name) \
    if ((*(void **)&zmq.field = dlsym(lib, name)) == NULL) { zmq_loaded = -1; return; }
    CKV_SYM(ctx_new, "zmq_ctx_new")
    CKV_SYM(ctx_set, "zmq_ctx_set")
    CKV_SYM(ctx_term, "zmq_ctx_term")
    CKV_SYM(socket, "zmq_socket")
    CKV_SYM(close, "zmq_close")
    CKV_SYM(setsockopt, "zmq_setsockopt")
    CKV_SYM(getsockopt, "zmq_getsockopt")
    CKV_SYM(bind, "zmq_bind")
    CKV_SYM(connect, "zmq_connect")
    CKV_SYM(send, "zmq_send")
    CKV_SYM(msg_init, "zmq_msg_init")
    CKV_SYM(msg_recv, "zmq_msg_recv")
    CKV_SYM(msg_close, "zmq_msg_close")
    CKV_SYM(msg_data, "zmq_msg_data")
    CKV_SYM(msg_size, "zmq_msg_size")
    CKV_SYM(msg_more, "zmq_msg_more")
#undef CKV_SYM
    zmq_loaded = 1;
}

int
ckv_zmq_available(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, load_zmq);
    return zmq_loaded == 1;
}

void *
ckv_context_new(void)
{
    if (!ckv_zmq_available()) {
        errno = ELIBACC;
        return NULL;
    }
    void *ctx = zmq.ctx_new();
    if (ctx != NULL) {
        zmq.ctx_set(ctx, ZMQ_IO_THREADS, 1);
    }
    return ctx;
}

void
ckv_context_free(void *ctx)
{
    if (ctx != NULL) {
        zmq.ctx_term(ctx);
    }
}

static void *
socket_new(void *ctx, int type)
{
    void *s = zmq.socket(ctx, type);
    if (s == NULL) {
        return NULL;
    }
    int linger = 0;
    zmq.setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
    return s;
}

void *
ckv_sub_open(void *ctx, const char *endpoint, int64_t max_message_bytes)
{
    void *s = socket_new(ctx, ZMQ_SUB);
    if (s == NULL) {
        return NULL;
    }
    int hwm = 100000;
    zmq.setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof(hwm));
    if (max_message_bytes > 0) {
        zmq.setsockopt(s, ZMQ_MAXMSGSIZE, &max_message_bytes, sizeof(max_message_bytes));
    }
    /* Reconnect quickly after a publisher restart (libzmq default 100 ms, backoff to 5 s). */
    int ivl_max = 2000;
    zmq.setsockopt(s, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof(ivl_max));
    if (zmq.setsockopt(s, ZMQ_SUBSCRIBE, "", 0) != 0 || zmq.connect(s, endpoint) != 0) {
        int e = errno;
        zmq.close(s);
        errno = e;
        return NULL;
    }
    return s;
}

void *
ckv_pub_open(void *ctx, const char *endpoint)
{
    void *s = socket_new(ctx, ZMQ_PUB);
    if (s == NULL) {
        return NULL;
    }
    int hwm = 100000;
    zmq.setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    /* As vLLM: an endpoint with a wildcard binds, any other connects. */
    int bind = strchr(endpoint, '*') != NULL || strstr(endpoint, "::") != NULL
               || strncmp(endpoint, "ipc://", 6) == 0 || strncmp(endpoint, "inproc://", 9) == 0;
    int rc = bind ? zmq.bind(s, endpoint) : zmq.connect(s, endpoint);
    if (rc != 0) {
        int e = errno;
        zmq.close(s);
        errno = e;
        return NULL;
    }
    return s;
}

void
ckv_socket_close(void *sock)
{
    if (sock != NULL) {
        zmq.close(sock);
    }
}

int
ckv_socket_fd(void *sock)
{
    int fd = -1;
    size_t len = sizeof(fd);
    if (zmq.getsockopt(sock, ZMQ_FD, &fd, &len) != 0) {
        return -1;
    }
    return fd;
}

int
ckv_socket_readable(void *sock)
{
    int ev = 0;
    size_t len = sizeof(ev);
    if (zmq.getsockopt(sock, ZMQ_EVENTS, &ev, &len) != 0) {
        return 0;
    }
    return (ev & ZMQ_POLLIN) != 0;
}

int
ckv_socket_bound_port(void *sock)
{
    char buf[256];
    size_t len = sizeof(buf);
    if (zmq.getsockopt(sock, ZMQ_LAST_ENDPOINT, buf, &len) != 0) {
        return -1;
    }
    char *colon = strrchr(buf, ':');
    return colon == NULL ? -1 : atoi(colon + 1);
}

ckv_message *
ckv_message_new(void)
{
    return calloc(1, sizeof(ckv_message));
}

void
ckv_message_free(ckv_message *m)
{
    if (m != NULL) {
        free(m->data);
        free(m);
    }
}

int
ckv_recv(void *sock, ckv_message *m)
{
    size_t used = 0;
    int more = 1;

    m->frame_count = 0;
    while (more) {
        zmq_msg_t part;
        zmq.msg_init(&part);
        /* Frames of one message arrive together: only the first can be EAGAIN. */
        if (zmq.msg_recv(&part, sock, ZMQ_DONTWAIT) < 0) {
            int e = errno;
            zmq.msg_close(&part);
            if (e == EAGAIN && m->frame_count == 0) {
                return 0;
            }
            errno = e;
            return -1;
        }
        size_t n = zmq.msg_size(&part);
        if (m->frame_count < CKV_MAX_FRAMES) {
            if (used + n > m->capacity) {
                size_t cap = m->capacity == 0 ? 4096 : m->capacity;
                while (cap < used + n) {
                    cap *= 2;
                }
                uint8_t *d = realloc(m->data, cap);
                if (d == NULL) {
                    zmq.msg_close(&part);
                    errno = ENOMEM;
                    return -1;
                }
                m->data = d;
                m->capacity = cap;
            }
            if (n > 0) {
                memcpy(m->data + used, zmq.msg_data(&part), n);
            }
            m->frame_offset[m->frame_count] = used;
            m->frame_length[m->frame_count] = n;
            used += n;
        }
        m->frame_count++;
        more = zmq.msg_more(&part);
        zmq.msg_close(&part);
    }
    return 1;
}

int
ckv_send_batch(void *sock, const uint8_t *topic, size_t topic_len, uint64_t seq,
               const uint8_t *payload, size_t payload_len)
{
    uint8_t s[8];
    for (int i = 0; i < 8; i++) {
        s[i] = (uint8_t)(seq >> (56 - 8 * i));
    }
    /* A PUB socket queues whole messages atomically: once the first frame is accepted the
     * rest are too (same pipe, same HWM check), so a partial message cannot be left behind. */
    if (zmq.send(sock, topic, topic_len, ZMQ_DONTWAIT | ZMQ_SNDMORE) < 0) {
        return -1;
    }
    if (zmq.send(sock, s, 8, ZMQ_DONTWAIT | ZMQ_SNDMORE) < 0) {
        return -1;
    }
    if (zmq.send(sock, payload, payload_len, ZMQ_DONTWAIT) < 0) {
        return -1;
    }
    return 0;
}

/* ---- Decoding --------------------------------------------------------------------------- */

ckv_batch *
ckv_batch_new(void)
{
    return calloc(1, sizeof(ckv_batch));
}

void
ckv_batch_free(ckv_batch *b)
{
    if (b != NULL) {
        free(b->events);
        free(b->hashes);
        free(b->tokens);
        free(b);
    }
}

uint64_t
ckv_hash_from_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0;
    size_t start = n > 8 ? n - 8 : 0;
    for (size_t i = start; i < n; i++) {
        h = (h << 8) | p[i];
    }
    return h;
}

static int
grow(void **p, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap) {
        return 0;
    }
    uint32_t c = *cap == 0 ? 64 : *cap;
    while (c < need) {
        if (c > UINT32_MAX / 2) {
            return -1;
        }
        c *= 2;
    }
    void *q = realloc(*p, (size_t)c * elem);
    if (q == NULL) {
        return -1;
    }
    *p = q;
    *cap = c;
    return 0;
}

static int
key_is(const msgpack_object *k, const char *name)
{
    size_t n = strlen(name);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && memcmp(k->via.str.ptr, name, n) == 0;
}

static const msgpack_object *
map_get(const msgpack_object_map *m, const char *name)
{
    for (uint32_t i = 0; i < m->size; i++) {
        if (key_is(&m->ptr[i].key, name)) {
            return &m->ptr[i].val;
        }
    }
    return NULL;
}

static int
is_nil(const msgpack_object *o)
{
    return o == NULL || o->type == MSGPACK_OBJECT_NIL;
}

/* An ExternalBlockHash: a non-negative int below 2^64 or a bin string. */
static int
read_hash(const msgpack_object *o, uint64_t *out)
{
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *out = o->via.u64;
        return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        /* Python ints are signed; vLLM masks to 64 bits, but accept a negative as its bits. */
        *out = (uint64_t)o->via.i64;
        return 0;
    case MSGPACK_OBJECT_BIN:
        if (o->via.bin.size == 0) {
            return -1;
        }
        *out = ckv_hash_from_bytes((const uint8_t *)o->via.bin.ptr, o->via.bin.size);
        return 0;
    default:
        return -1;
    }
}

static int
read_hashes(const msgpack_object *o, ckv_batch *b, ckv_event *ev)
{
    if (o == NULL || o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size == 0) {
        return CKV_ERR_EVENT;
    }
    uint32_t n = o->via.array.size;
    if (grow((void **)&b->hashes, &b->hash_capacity, b->hash_count + n, sizeof(uint64_t)) != 0) {
        return CKV_ERR_NOMEM;
    }
    ev->hash_offset = b->hash_count;
    ev->hash_count = n;
    for (uint32_t i = 0; i < n; i++) {
        if (read_hash(&o->via.array.ptr[i], &b->hashes[b->hash_count + i]) != 0) {
            return CKV_ERR_EVENT;
        }
    }
    b->hash_count += n;
    return CKV_OK;
}

/* medium: nil/absent or "GPU" is the device cache; anything else is flagged. */
static int
read_medium(const msgpack_object_map *m, ckv_event *ev)
{
    const msgpack_object *md = map_get(m, "medium");
    if (is_nil(md)) {
        return CKV_OK;
    }
    if (md->type != MSGPACK_OBJECT_STR) {
        return CKV_ERR_EVENT;
    }
    if (!(md->via.str.size == 3 && memcmp(md->via.str.ptr, "GPU", 3) == 0)) {
        ev->flags |= CKV_FLAG_OTHER_MEDIUM;
    }
    return CKV_OK;
}

static int
decode_stored(const msgpack_object_map *m, ckv_batch *b, ckv_event *ev)
{
    int rc = read_hashes(map_get(m, "block_hashes"), b, ev);
    if (rc != CKV_OK) {
        return rc;
    }
    const msgpack_object *parent = map_get(m, "parent_block_hash");
    if (!is_nil(parent)) {
        if (read_hash(parent, &ev->parent) != 0) {
            return CKV_ERR_EVENT;
        }
        ev->has_parent = 1;
    }
    const msgpack_object *bs = map_get(m, "block_size");
    if (bs == NULL || bs->type != MSGPACK_OBJECT_POSITIVE_INTEGER || bs->via.u64 == 0
        || bs->via.u64 > 1u << 20) {
        return CKV_ERR_EVENT;
    }
    ev->block_size = (uint32_t)bs->via.u64;
    const msgpack_object *t = map_get(m, "token_ids");
    if (t == NULL || t->type != MSGPACK_OBJECT_ARRAY) {
        return CKV_ERR_EVENT;
    }
    uint32_t n = t->via.array.size;
    if ((uint64_t)n != (uint64_t)ev->hash_count * ev->block_size) {
        return CKV_ERR_TOKENS;
    }
    if (grow((void **)&b->tokens, &b->token_capacity, b->token_count + n, sizeof(uint32_t)) != 0) {
        return CKV_ERR_NOMEM;
    }
    ev->token_offset = b->token_count;
    ev->token_count = n;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *x = &t->via.array.ptr[i];
        if (x->type != MSGPACK_OBJECT_POSITIVE_INTEGER || x->via.u64 > UINT32_MAX) {
            return CKV_ERR_TOKENS;
        }
        b->tokens[b->token_count + i] = (uint32_t)x->via.u64;
    }
    b->token_count += n;
    if (!is_nil(map_get(m, "lora_id")) || !is_nil(map_get(m, "lora_name"))) {
        ev->flags |= CKV_FLAG_KEYED;
    }
    const msgpack_object *ek = map_get(m, "extra_keys");
    if (!is_nil(ek)) {
        if (ek->type != MSGPACK_OBJECT_ARRAY) {
            return CKV_ERR_EVENT;
        }
        for (uint32_t i = 0; i < ek->via.array.size; i++) {
            if (!is_nil(&ek->via.array.ptr[i])) {
                ev->flags |= CKV_FLAG_KEYED;
            }
        }
    }
    return read_medium(m, ev);
}

static int
decode_event(const msgpack_object *o, ckv_batch *b)
{
    if (o->type != MSGPACK_OBJECT_MAP) {
        return CKV_ERR_EVENT;
    }
    const msgpack_object_map *m = &o->via.map;
    const msgpack_object *type = map_get(m, "type");
    if (type == NULL || type->type != MSGPACK_OBJECT_STR) {
        return CKV_ERR_EVENT;
    }
    ckv_event ev;
    memset(&ev, 0, sizeof(ev));
    int rc;
    if (key_is(type, "BlockStored")) {
        ev.kind = CKV_BLOCK_STORED;
        rc = decode_stored(m, b, &ev);
    } else if (key_is(type, "BlockRemoved")) {
        ev.kind = CKV_BLOCK_REMOVED;
        rc = read_hashes(map_get(m, "block_hashes"), b, &ev);
        if (rc == CKV_OK) {
            rc = read_medium(m, &ev);
        }
    } else if (key_is(type, "AllBlocksCleared")) {
        ev.kind = CKV_ALL_BLOCKS_CLEARED;
        rc = CKV_OK;
    } else {
        b->skipped_events++;
        return CKV_OK;
    }
    if (rc != CKV_OK) {
        return rc;
    }
    if (grow((void **)&b->events, &b->event_capacity, b->event_count + 1, sizeof(ckv_event)) != 0) {
        return CKV_ERR_NOMEM;
    }
    b->events[b->event_count++] = ev;
    return CKV_OK;
}

static int
decode_root(const msgpack_object *root, ckv_batch *b)
{
    if (root->type != MSGPACK_OBJECT_ARRAY || root->via.array.size < 2 || root->via.array.size > 3) {
        return CKV_ERR_SHAPE;
    }
    const msgpack_object *ts = &root->via.array.ptr[0];
    switch (ts->type) {
    case MSGPACK_OBJECT_FLOAT64:
    case MSGPACK_OBJECT_FLOAT32:
        b->ts = ts->via.f64;
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        b->ts = (double)ts->via.u64;
        break;
    default:
        return CKV_ERR_SHAPE;
    }
    const msgpack_object *events = &root->via.array.ptr[1];
    if (events->type != MSGPACK_OBJECT_ARRAY) {
        return CKV_ERR_SHAPE;
    }
    if (root->via.array.size == 3) {
        const msgpack_object *r = &root->via.array.ptr[2];
        if (r->type == MSGPACK_OBJECT_POSITIVE_INTEGER && r->via.u64 < INT64_MAX) {
            b->dp_rank = (int64_t)r->via.u64;
        } else if (r->type != MSGPACK_OBJECT_NIL) {
            return CKV_ERR_SHAPE;
        }
    }
    for (uint32_t i = 0; i < events->via.array.size; i++) {
        int rc = decode_event(&events->via.array.ptr[i], b);
        if (rc != CKV_OK) {
            return rc;
        }
    }
    return CKV_OK;
}

static void
batch_reset(ckv_batch *b)
{
    b->ts = 0;
    b->dp_rank = -1;
    b->event_count = 0;
    b->skipped_events = 0;
    b->hash_count = 0;
    b->token_count = 0;
}

/*
 * msgpack-c builds the whole object tree in a zone first. A header claiming a huge array makes
 * it reserve (not touch) that much before the truncation is noticed; the subscriber caps
 * messages with ZMQ_MAXMSGSIZE, and a failed reservation is an error here, not a crash.
 */
int
ckv_decode_batch(const uint8_t *payload, size_t len, ckv_batch *out)
{
    batch_reset(out);
    if (payload == NULL || len == 0) {
        return CKV_ERR_MSGPACK;
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc;
    msgpack_unpack_return r = msgpack_unpack_next(&u, (const char *)payload, len, &off);
    /* MSGPACK_UNPACK_NOMEM_ERROR is what msgpack-c also answers for nesting deeper than its
     * stack and for headers claiming more than can be reserved: a malformed message, not memory. */
    if (r != MSGPACK_UNPACK_SUCCESS || off != len) {
        rc = CKV_ERR_MSGPACK;
    } else {
        rc = decode_root(&u.data, out);
    }
    msgpack_unpacked_destroy(&u);
    if (rc != CKV_OK) {
        batch_reset(out);
    }
    return rc;
}

/* ---- Encoding --------------------------------------------------------------------------- */

ckv_buffer *
ckv_buffer_new(void)
{
    return calloc(1, sizeof(ckv_buffer));
}

void
ckv_buffer_free(ckv_buffer *b)
{
    if (b != NULL) {
        free(b->data);
        free(b);
    }
}

static int
buffer_write(void *data, const char *buf, size_t len)
{
    ckv_buffer *b = data;
    if (b->length + len > b->capacity) {
        size_t cap = b->capacity == 0 ? 1024 : b->capacity;
        while (cap < b->length + len) {
            cap *= 2;
        }
        uint8_t *d = realloc(b->data, cap);
        if (d == NULL) {
            return -1;
        }
        b->data = d;
        b->capacity = cap;
    }
    memcpy(b->data + b->length, buf, len);
    b->length += len;
    return 0;
}

static int
pack_key(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

static int
pack_stored(msgpack_packer *pk, const ckv_event *e, const uint64_t *hashes, const uint32_t *tokens)
{
    int rc = 0;
    /* vLLM 0.32's keys, in its order (lora_id, lora_name and extra_keys as it sends them). */
    rc |= msgpack_pack_map(pk, 11);
    rc |= pack_key(pk, "type") || pack_key(pk, "BlockStored");
    rc |= pack_key(pk, "block_hashes") || msgpack_pack_array(pk, e->hash_count);
    for (uint32_t i = 0; i < e->hash_count; i++) {
        rc |= msgpack_pack_uint64(pk, hashes[e->hash_offset + i]);
    }
    rc |= pack_key(pk, "parent_block_hash");
    rc |= e->has_parent ? msgpack_pack_uint64(pk, e->parent) : msgpack_pack_nil(pk);
    rc |= pack_key(pk, "token_ids") || msgpack_pack_array(pk, e->token_count);
    for (uint32_t i = 0; i < e->token_count; i++) {
        rc |= msgpack_pack_uint32(pk, tokens[e->token_offset + i]);
    }
    rc |= pack_key(pk, "block_size") || msgpack_pack_uint32(pk, e->block_size);
    rc |= pack_key(pk, "lora_id") || msgpack_pack_nil(pk);
    rc |= pack_key(pk, "medium") || pack_key(pk, "GPU");
    rc |= pack_key(pk, "lora_name") || msgpack_pack_nil(pk);
    rc |= pack_key(pk, "extra_keys") || msgpack_pack_array(pk, e->hash_count);
    for (uint32_t i = 0; i < e->hash_count; i++) {
        rc |= msgpack_pack_nil(pk);
    }
    rc |= pack_key(pk, "group_idx") || msgpack_pack_uint32(pk, 0);
    rc |= pack_key(pk, "kv_cache_spec_kind") || pack_key(pk, "full_attention");
    return rc;
}

int
ckv_encode_batch(ckv_buffer *out, double ts, const ckv_event *events, uint32_t event_count,
                 const uint64_t *hashes, const uint32_t *tokens, int64_t dp_rank)
{
    msgpack_packer pk;
    int rc = 0;

    out->length = 0;
    msgpack_packer_init(&pk, out, buffer_write);
    rc |= msgpack_pack_array(&pk, dp_rank >= 0 ? 3 : 2);
    rc |= msgpack_pack_double(&pk, ts);
    rc |= msgpack_pack_array(&pk, event_count);
    for (uint32_t i = 0; i < event_count; i++) {
        const ckv_event *e = &events[i];
        switch (e->kind) {
        case CKV_BLOCK_STORED:
            if (e->token_count != e->hash_count * e->block_size) {
                return CKV_ERR_EVENT;
            }
            rc |= pack_stored(&pk, e, hashes, tokens);
            break;
        case CKV_BLOCK_REMOVED:
            rc |= msgpack_pack_map(&pk, 4);
            rc |= pack_key(&pk, "type") || pack_key(&pk, "BlockRemoved");
            rc |= pack_key(&pk, "block_hashes") || msgpack_pack_array(&pk, e->hash_count);
            for (uint32_t j = 0; j < e->hash_count; j++) {
                rc |= msgpack_pack_uint64(&pk, hashes[e->hash_offset + j]);
            }
            rc |= pack_key(&pk, "medium") || pack_key(&pk, "GPU");
            rc |= pack_key(&pk, "group_idx") || msgpack_pack_uint32(&pk, 0);
            break;
        case CKV_ALL_BLOCKS_CLEARED:
            rc |= msgpack_pack_map(&pk, 1);
            rc |= pack_key(&pk, "type") || pack_key(&pk, "AllBlocksCleared");
            break;
        default:
            return CKV_ERR_EVENT;
        }
    }
    if (dp_rank >= 0) {
        rc |= msgpack_pack_int64(&pk, dp_rank);
    }
    return rc != 0 ? CKV_ERR_NOMEM : CKV_OK;
}

/*
 * CSharedCache: see include/CSharedCache.h for what it is and the layout. Style: twemproxy's C
 * style guide (sc_ prefix, early returns, every loop over segment data bounded).
 */
#define _GNU_SOURCE
#include "CSharedCache.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SC_MAGIC    0x31454843414853ULL   /* "SHACHE1" */
#define SC_VERSION  3u
#define SC_BLOCK    1024u                 /* bytes per block, its 4-byte link included */
#define SC_PAYLOAD  (SC_BLOCK - 4u)
#define SC_ALIGN(n) (((n) + 63u) & ~(uint64_t)63u)

struct sc_header {
    uint64_t magic;
    uint32_t version;
    uint32_t nbuckets;      /* a power of two */
    uint32_t nrecords;      /* record 0 is the null record */
    uint32_t nblocks;       /* blocks are numbered 1..nblocks */
    uint64_t size;
    uint64_t off_buckets;
    uint64_t off_records;
    uint64_t off_blocks;
    uint64_t off_claims;
    uint32_t nclaims;       /* a power of two */
    uint32_t pad;
    uint64_t max_bytes;
    uint64_t seed;          /* sc_hash's key: drawn at creation, never leaves the segment */
    pthread_mutex_t lock;
    /* Everything below changes only under the lock. */
    uint32_t rec_high;      /* records [1, rec_high) have been handed out at least once */
    uint32_t rec_free;      /* free records, chained through bucket_next */
    uint32_t blk_high;      /* likewise for blocks */
    uint32_t blk_free;
    uint32_t blk_free_count;
    uint32_t lru_head;      /* most recently used */
    uint32_t lru_tail;
    uint32_t count;
    uint64_t bytes;
    uint64_t evictions;
    uint64_t resets;
};

struct sc_record {
    uint64_t hash;
    uint64_t fresh_until;
    uint64_t stale_until;
    uint64_t vlen;
    uint32_t klen;
    uint32_t bucket_next;
    uint32_t lru_prev;
    uint32_t lru_next;
    uint32_t first_block;
    uint32_t nblocks;
};

/* A flight's claim: which process leads the request for a key (see sc_claim in the header). */
struct sc_claim {
    uint64_t hash;
    uint64_t lease_until;
    uint32_t readers;
    uint8_t state;
    uint8_t klen;
    uint8_t olen;
    uint8_t pad;
    uint8_t key[SC_CLAIM_KEY_MAX];
    uint8_t owner[SC_CLAIM_OWNER_MAX];
};

enum { SC_C_EMPTY = 0, SC_C_OPEN = 1, SC_C_CLOSED = 2, SC_C_ENDING = 3 };

#define SC_NCLAIMS      4096u   /* flights running at once on the host, far above any real count */
#define SC_CLAIM_PROBES 16u

struct sc_segment {
    struct sc_header *h;
    uint8_t *base;
    size_t size;
};

/* Set when a walk meets an index out of range or a chain longer than the segment allows. */
#define SC_CORRUPT (-1)

/* Eight bytes a step (a key is 64 hex digits: a byte at a time cost ~4 instructions a byte, four
 * times per miss), then murmur3's finalizer, so every input bit reaches the low bits the tables
 * index by. Each step is a bijection of h for a given word, so keys of one length that differ in
 * one word always differ. Keyed by the segment's random seed: a key digests what a client sent,
 * and with a hash anyone can compute, a client could grind prompts whose keys share one bucket
 * chain or one claim neighbourhood (every lookup in it walks them all; claims say unavailable).
 * The seed is drawn per segment and stays inside it, so nobody outside knows where a key lands. */
static uint64_t
sc_hash(const sc_segment *s, const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL ^ s->h->seed ^ ((uint64_t)n * 0x9E3779B97F4A7C15ULL);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
        h ^= h >> 32;
    }
    for (; i < n; i++) {
        h = (h ^ p[i]) * 1099511628211ULL;
    }
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ULL;
    h ^= h >> 33;
    return h;
}

static uint32_t *
sc_buckets(sc_segment *s)
{
    return (uint32_t *)(s->base + s->h->off_buckets);
}

static struct sc_record *
sc_rec(sc_segment *s, uint32_t i)
{
    return (struct sc_record *)(s->base + s->h->off_records) + i;
}

static uint8_t *
sc_blk(sc_segment *s, uint32_t i)
{
    return s->base + s->h->off_blocks + (uint64_t)(i - 1) * SC_BLOCK;
}

static uint32_t
sc_blk_next(sc_segment *s, uint32_t i)
{
    uint32_t n;
    memcpy(&n, sc_blk(s, i), 4);
    return n;
}

static void
sc_blk_set_next(sc_segment *s, uint32_t i, uint32_t n)
{
    memcpy(sc_blk(s, i), &n, 4);
}

static int
sc_rec_ok(sc_segment *s, uint32_t i)
{
    return i >= 1 && i < s->h->rec_high && i < s->h->nrecords;
}

static int
sc_blk_ok(sc_segment *s, uint32_t i)
{
    return i >= 1 && i < s->h->blk_high && i <= s->h->nblocks;
}

static struct sc_claim *
sc_claims(sc_segment *s)
{
    return (struct sc_claim *)(s->base + s->h->off_claims);
}

static void
sc_reset(sc_segment *s)
{
    struct sc_header *h = s->h;
    memset(sc_buckets(s), 0, (size_t)h->nbuckets * 4u);
    memset(sc_claims(s), 0, (size_t)h->nclaims * sizeof(struct sc_claim));
    h->rec_high = 1;
    h->rec_free = 0;
    h->blk_high = 1;
    h->blk_free = 0;
    h->blk_free_count = 0;
    h->lru_head = 0;
    h->lru_tail = 0;
    h->count = 0;
    h->bytes = 0;
}

/* 0 when locked; -1 when the mutex is unusable (the caller then acts as if the cache were off). */
static int
sc_lock(sc_segment *s)
{
    int rc = pthread_mutex_lock(&s->h->lock);
    if (rc == 0) {
        return 0;
    }
    if (rc == EOWNERDEAD) {
        /* Its holder died mid-change: start empty rather than trust what it left. */
        sc_reset(s);
        s->h->resets++;
        pthread_mutex_consistent(&s->h->lock);
        return 0;
    }
    return -1;
}

static void
sc_unlock(sc_segment *s)
{
    pthread_mutex_unlock(&s->h->lock);
}

static void
sc_corrupt(sc_segment *s)
{
    sc_reset(s);
    s->h->resets++;
}

int
sc_create(uint32_t max_entries, uint64_t max_bytes)
{
    if (max_entries == 0 || max_entries > (1u << 30) || max_bytes == 0) {
        errno = EINVAL;
        return -1;
    }
    uint64_t nbuckets = 16;
    while (nbuckets < 2ull * max_entries) {
        nbuckets <<= 1;
    }
    uint64_t nblocks = (max_bytes + SC_PAYLOAD - 1) / SC_PAYLOAD;
    if (nblocks >= UINT32_MAX) {
        errno = EINVAL;
        return -1;
    }
    uint64_t nrecords = (uint64_t)max_entries + 1;
    uint64_t off_buckets = SC_ALIGN(sizeof(struct sc_header));
    uint64_t off_records = SC_ALIGN(off_buckets + nbuckets * 4u);
    uint64_t off_blocks = SC_ALIGN(off_records + nrecords * sizeof(struct sc_record));
    uint64_t off_claims = SC_ALIGN(off_blocks + nblocks * SC_BLOCK);
    uint64_t size = off_claims + (uint64_t)SC_NCLAIMS * sizeof(struct sc_claim);

    int fd = memfd_create("engine-shared-cache", 0);   /* no CLOEXEC: workers inherit it */
    if (fd < 0) {
        return -1;
    }
    if (ftruncate(fd, (off_t)size) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    void *p = mmap(NULL, sizeof(struct sc_header), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    struct sc_header *h = p;
    memset(h, 0, sizeof(*h));
    h->version = SC_VERSION;
    h->nbuckets = (uint32_t)nbuckets;
    h->nrecords = (uint32_t)nrecords;
    h->nblocks = (uint32_t)nblocks;
    h->size = size;
    h->off_buckets = off_buckets;
    h->off_records = off_records;
    h->off_blocks = off_blocks;
    h->off_claims = off_claims;
    h->nclaims = SC_NCLAIMS;
    h->max_bytes = max_bytes;
    if (getentropy(&h->seed, sizeof(h->seed)) != 0) {
        int e = errno;
        munmap(p, sizeof(struct sc_header));
        close(fd);
        errno = e;
        return -1;
    }
    h->rec_high = 1;
    h->blk_high = 1;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    int rc = pthread_mutex_init(&h->lock, &a);
    pthread_mutexattr_destroy(&a);
    if (rc != 0) {
        munmap(p, sizeof(struct sc_header));
        close(fd);
        errno = rc;
        return -1;
    }
    __atomic_store_n(&h->magic, SC_MAGIC, __ATOMIC_RELEASE);   /* last: a complete header */
    munmap(p, sizeof(struct sc_header));
    return fd;
}

sc_segment *
sc_attach(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < sizeof(struct sc_header)) {
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        return NULL;
    }
    struct sc_header *h = p;
    uint64_t records_end = h->off_records + (uint64_t)h->nrecords * sizeof(struct sc_record);
    uint64_t blocks_end = h->off_blocks + (uint64_t)h->nblocks * SC_BLOCK;
    uint64_t claims_end = h->off_claims + (uint64_t)h->nclaims * sizeof(struct sc_claim);
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != SC_MAGIC || h->version != SC_VERSION || h->size != size
        || h->nbuckets == 0 || (h->nbuckets & (h->nbuckets - 1)) != 0 || h->nrecords < 2 || h->nblocks == 0
        || h->off_buckets + (uint64_t)h->nbuckets * 4u > h->off_records || records_end > h->off_blocks
        || blocks_end > h->off_claims || h->nclaims == 0 || (h->nclaims & (h->nclaims - 1)) != 0
        || claims_end > size) {
        munmap(p, size);
        return NULL;
    }
    sc_segment *s = malloc(sizeof(*s));
    if (s == NULL) {
        munmap(p, size);
        return NULL;
    }
    s->h = h;
    s->base = p;
    s->size = size;
    return s;
}

void
sc_detach(sc_segment *s)
{
    if (s == NULL) {
        return;
    }
    munmap(s->base, s->size);
    free(s);
}

/* --- LRU list and bucket chains (under the lock) --------------------------------------------- */

static int
sc_lru_unlink(sc_segment *s, uint32_t i)
{
    struct sc_header *h = s->h;
    struct sc_record *r = sc_rec(s, i);
    uint32_t p = r->lru_prev, n = r->lru_next;
    if ((p != 0 && !sc_rec_ok(s, p)) || (n != 0 && !sc_rec_ok(s, n))) {
        return SC_CORRUPT;
    }
    if (p != 0) {
        sc_rec(s, p)->lru_next = n;
    } else {
        h->lru_head = n;
    }
    if (n != 0) {
        sc_rec(s, n)->lru_prev = p;
    } else {
        h->lru_tail = p;
    }
    r->lru_prev = 0;
    r->lru_next = 0;
    return 0;
}

static int
sc_lru_push_front(sc_segment *s, uint32_t i)
{
    struct sc_header *h = s->h;
    struct sc_record *r = sc_rec(s, i);
    if (h->lru_head != 0 && !sc_rec_ok(s, h->lru_head)) {
        return SC_CORRUPT;
    }
    r->lru_prev = 0;
    r->lru_next = h->lru_head;
    if (h->lru_head != 0) {
        sc_rec(s, h->lru_head)->lru_prev = i;
    }
    h->lru_head = i;
    if (h->lru_tail == 0) {
        h->lru_tail = i;
    }
    return 0;
}

/* Frees the entry's blocks and record and unlinks it everywhere. */
static int
sc_remove(sc_segment *s, uint32_t i)
{
    struct sc_header *h = s->h;
    struct sc_record *r = sc_rec(s, i);
    uint32_t *bucket = &sc_buckets(s)[r->hash & (h->nbuckets - 1)];
    uint32_t guard = h->nrecords;
    while (*bucket != i) {
        if (*bucket == 0 || !sc_rec_ok(s, *bucket) || guard-- == 0) {
            return SC_CORRUPT;
        }
        bucket = &sc_rec(s, *bucket)->bucket_next;
    }
    *bucket = r->bucket_next;
    if (sc_lru_unlink(s, i) != 0) {
        return SC_CORRUPT;
    }
    uint32_t b = r->first_block;
    for (uint32_t k = 0; k < r->nblocks; k++) {
        if (!sc_blk_ok(s, b)) {
            return SC_CORRUPT;
        }
        uint32_t next = sc_blk_next(s, b);
        sc_blk_set_next(s, b, h->blk_free);
        h->blk_free = b;
        h->blk_free_count++;
        b = next;
    }
    h->count--;
    h->bytes -= r->klen + r->vlen;
    memset(r, 0, sizeof(*r));
    r->bucket_next = h->rec_free;
    h->rec_free = i;
    return 0;
}

/* Compares the entry's stored key with `key`: 1 equal, 0 not, SC_CORRUPT. */
static int
sc_key_equal(sc_segment *s, struct sc_record *r, const uint8_t *key, size_t klen)
{
    if (r->klen != klen) {
        return 0;
    }
    uint32_t b = r->first_block;
    size_t done = 0;
    for (uint32_t k = 0; done < klen; k++) {
        if (k >= r->nblocks || !sc_blk_ok(s, b)) {
            return SC_CORRUPT;
        }
        size_t n = klen - done < SC_PAYLOAD ? klen - done : SC_PAYLOAD;
        if (memcmp(sc_blk(s, b) + 4, key + done, n) != 0) {
            return 0;
        }
        done += n;
        b = sc_blk_next(s, b);
    }
    return 1;
}

/* The record index for `key`, 0 when absent, SC_CORRUPT. */
static int64_t
sc_find(sc_segment *s, uint64_t hash, const uint8_t *key, size_t klen)
{
    uint32_t i = sc_buckets(s)[hash & (s->h->nbuckets - 1)];
    uint32_t guard = s->h->nrecords;
    while (i != 0) {
        if (!sc_rec_ok(s, i) || guard-- == 0) {
            return SC_CORRUPT;
        }
        struct sc_record *r = sc_rec(s, i);
        if (r->hash == hash) {
            int eq = sc_key_equal(s, r, key, klen);
            if (eq == SC_CORRUPT) {
                return SC_CORRUPT;
            }
            if (eq) {
                return i;
            }
        }
        i = r->bucket_next;
    }
    return 0;
}

/* Copies `n` bytes starting at byte `from` of the entry's key+value run. */
static int
sc_copy_out(sc_segment *s, struct sc_record *r, uint64_t from, uint8_t *out, uint64_t n)
{
    uint32_t b = r->first_block;
    uint32_t k = 0;
    while (from >= SC_PAYLOAD) {
        if (k >= r->nblocks || !sc_blk_ok(s, b)) {
            return SC_CORRUPT;
        }
        b = sc_blk_next(s, b);
        from -= SC_PAYLOAD;
        k++;
    }
    while (n > 0) {
        if (k >= r->nblocks || !sc_blk_ok(s, b)) {
            return SC_CORRUPT;
        }
        uint64_t take = SC_PAYLOAD - from < n ? SC_PAYLOAD - from : n;
        memcpy(out, sc_blk(s, b) + 4 + from, take);
        out += take;
        n -= take;
        from = 0;
        b = sc_blk_next(s, b);
        k++;
    }
    return 0;
}

int
sc_get(sc_segment *s, const void *key, size_t klen, uint64_t now, int touch, void *out, size_t cap, size_t *len)
{
    *len = 0;
    uint64_t hash = sc_hash(s, key, klen);
    if (sc_lock(s) != 0) {
        return SC_MISS;
    }
    int status = SC_MISS;
    int64_t i = sc_find(s, hash, key, klen);
    if (i == SC_CORRUPT) {
        sc_corrupt(s);
        goto done;
    }
    if (i == 0) {
        goto done;
    }
    struct sc_record *r = sc_rec(s, (uint32_t)i);
    if (now >= r->stale_until) {
        if (sc_remove(s, (uint32_t)i) != 0) {
            sc_corrupt(s);
        }
        goto done;
    }
    *len = (size_t)r->vlen;
    if (r->vlen > cap) {
        status = SC_TOO_SMALL;
        goto done;
    }
    if (sc_copy_out(s, r, r->klen, out, r->vlen) != 0) {
        sc_corrupt(s);
        *len = 0;
        goto done;
    }
    /* Already the most recent: nothing to move (a hot key's hits write no list links). */
    if (touch && s->h->lru_head != (uint32_t)i &&
        (sc_lru_unlink(s, (uint32_t)i) != 0 || sc_lru_push_front(s, (uint32_t)i) != 0)) {
        sc_corrupt(s);
        goto done;   /* the copy is still this key's value: answer it */
    }
    status = now < r->fresh_until ? SC_FRESH : SC_STALE;
done:
    sc_unlock(s);
    return status;
}

static uint32_t
sc_free_blocks(sc_segment *s)
{
    return (s->h->nblocks - (s->h->blk_high - 1)) + s->h->blk_free_count;
}

static uint32_t
sc_alloc_block(sc_segment *s)
{
    struct sc_header *h = s->h;
    if (h->blk_free != 0) {
        uint32_t b = h->blk_free;
        if (!sc_blk_ok(s, b)) {
            return 0;
        }
        h->blk_free = sc_blk_next(s, b);
        h->blk_free_count--;
        return b;
    }
    if (h->blk_high > h->nblocks) {
        return 0;
    }
    return h->blk_high++;
}

static uint32_t
sc_alloc_record(sc_segment *s)
{
    struct sc_header *h = s->h;
    if (h->rec_free != 0) {
        uint32_t i = h->rec_free;
        if (!sc_rec_ok(s, i)) {
            return 0;
        }
        h->rec_free = sc_rec(s, i)->bucket_next;
        return i;
    }
    if (h->rec_high >= h->nrecords) {
        return 0;
    }
    return h->rec_high++;
}

int
sc_put(sc_segment *s, const void *key, size_t klen, const void *value, size_t vlen,
       uint64_t fresh_until, uint64_t stale_until)
{
    return sc_put2(s, key, klen, value, vlen, NULL, 0, fresh_until, stale_until);
}

int
sc_put2(sc_segment *s, const void *key, size_t klen, const void *head, size_t hlen,
        const void *tail, size_t tlen, uint64_t fresh_until, uint64_t stale_until)
{
    uint64_t hash = sc_hash(s, key, klen);
    uint64_t vlen = (uint64_t)hlen + tlen;
    uint64_t total = (uint64_t)klen + vlen;
    uint64_t need = total == 0 ? 1 : (total + SC_PAYLOAD - 1) / SC_PAYLOAD;
    if (sc_lock(s) != 0) {
        return 0;
    }
    struct sc_header *h = s->h;
    int stored = 0;
    int64_t old = sc_find(s, hash, key, klen);
    if (old == SC_CORRUPT || (old > 0 && sc_remove(s, (uint32_t)old) != 0)) {
        sc_corrupt(s);
    }
    if (fresh_until == 0 || total > h->max_bytes || need > h->nblocks || klen > UINT32_MAX) {
        goto done;
    }
    /* The least recently used go until the entry fits (records first free, then blocks). */
    while (h->count + 1 >= h->nrecords || sc_free_blocks(s) < need) {
        uint32_t victim = h->lru_tail;
        if (!sc_rec_ok(s, victim) || sc_remove(s, victim) != 0) {
            sc_corrupt(s);
            break;
        }
        h->evictions++;
    }
    uint32_t i = sc_alloc_record(s);
    if (i == 0) {
        sc_corrupt(s);
        goto done;
    }
    struct sc_record *r = sc_rec(s, i);
    memset(r, 0, sizeof(*r));
    /* Chain the blocks and copy the key then the value's two parts into them. */
    const uint8_t *src[3] = {key, head, tail};
    uint64_t srclen[3] = {klen, hlen, tlen};
    uint32_t first = 0, prev = 0;
    uint64_t room = 0;
    uint8_t *dst = NULL;
    for (int part = 0; part < 3; part++) {
        const uint8_t *p = src[part];
        uint64_t left = srclen[part];
        while (left > 0 || (first == 0 && part == 2)) {
            if (room == 0) {
                uint32_t b = sc_alloc_block(s);
                if (b == 0) {
                    /* Cannot happen after the eviction loop; undo by emptying. */
                    sc_corrupt(s);
                    goto done;
                }
                sc_blk_set_next(s, b, 0);
                if (prev != 0) {
                    sc_blk_set_next(s, prev, b);
                } else {
                    first = b;
                }
                prev = b;
                dst = sc_blk(s, b) + 4;
                room = SC_PAYLOAD;
            }
            uint64_t n = left < room ? left : room;
            if (n > 0) {
                memcpy(dst, p, n);
            }
            dst += n;
            p += n;
            room -= n;
            left -= n;
            if (left == 0) {
                break;
            }
        }
    }
    r->hash = hash;
    r->fresh_until = fresh_until;
    r->stale_until = stale_until;
    r->klen = (uint32_t)klen;
    r->vlen = vlen;
    r->first_block = first;
    r->nblocks = (uint32_t)need;
    uint32_t *bucket = &sc_buckets(s)[hash & (h->nbuckets - 1)];
    r->bucket_next = *bucket;
    *bucket = i;
    if (sc_lru_push_front(s, i) != 0) {
        sc_corrupt(s);
        goto done;
    }
    h->count++;
    h->bytes += total;
    stored = 1;
done:
    sc_unlock(s);
    return stored;
}

void
sc_clear(sc_segment *s)
{
    if (sc_lock(s) != 0) {
        return;
    }
    sc_reset(s);
    sc_unlock(s);
}

void
sc_get_stats(sc_segment *s, sc_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (sc_lock(s) != 0) {
        return;
    }
    out->entries = s->h->count;
    out->bytes = s->h->bytes;
    out->evictions = s->h->evictions;
    out->resets = s->h->resets;
    out->max_entries = s->h->nrecords - 1;
    out->max_bytes = s->h->max_bytes;
    sc_unlock(s);
}

/* --- Flight claims ---------------------------------------------------------------------------- */

/* A claim slot is live while its lease runs; an expired one counts as empty. Lookups scan the
 * whole probe window (no early stop), so emptying a slot never hides another. */
static int
sc_claim_live(const struct sc_claim *c, uint64_t now)
{
    return c->state != SC_C_EMPTY && now < c->lease_until;
}

static struct sc_claim *
sc_claim_find(sc_segment *s, uint64_t hash, const void *key, size_t klen, uint64_t now)
{
    struct sc_claim *t = sc_claims(s);
    uint32_t mask = s->h->nclaims - 1;
    for (uint32_t p = 0; p < SC_CLAIM_PROBES; p++) {
        struct sc_claim *c = &t[(hash + p) & mask];
        if (sc_claim_live(c, now) && c->hash == hash && c->klen == klen && memcmp(c->key, key, klen) == 0) {
            return c;
        }
    }
    return NULL;
}

static int
sc_claim_owned(const struct sc_claim *c, const void *owner, size_t olen)
{
    return c != NULL && c->olen == olen && memcmp(c->owner, owner, olen) == 0;
}

int
sc_claim(sc_segment *s, const void *key, size_t klen, const void *owner, size_t olen, uint64_t now,
         uint64_t lease_ns, void *out_owner, size_t cap, size_t *out_len)
{
    *out_len = 0;
    if (klen == 0 || klen > SC_CLAIM_KEY_MAX || olen == 0 || olen > SC_CLAIM_OWNER_MAX) {
        return SC_CLAIM_UNAVAILABLE;
    }
    uint64_t hash = sc_hash(s, key, klen);
    if (sc_lock(s) != 0) {
        return SC_CLAIM_UNAVAILABLE;
    }
    int rc = SC_CLAIM_UNAVAILABLE;
    struct sc_claim *c = sc_claim_find(s, hash, key, klen, now);
    if (c != NULL) {
        if (c->state == SC_C_CLOSED || c->olen > cap) {
            goto done;   /* it takes no more readers: the caller goes alone */
        }
        memcpy(out_owner, c->owner, c->olen);
        *out_len = c->olen;
        rc = SC_CLAIM_LOST;
        goto done;
    }
    struct sc_claim *t = sc_claims(s);
    uint32_t mask = s->h->nclaims - 1;
    for (uint32_t p = 0; p < SC_CLAIM_PROBES; p++) {
        c = &t[(hash + p) & mask];
        if (!sc_claim_live(c, now)) {
            memset(c, 0, sizeof(*c));
            c->hash = hash;
            c->lease_until = now + lease_ns;
            c->state = SC_C_OPEN;
            c->klen = (uint8_t)klen;
            c->olen = (uint8_t)olen;
            memcpy(c->key, key, klen);
            memcpy(c->owner, owner, olen);
            rc = SC_CLAIM_WON;
            goto done;
        }
    }
done:
    sc_unlock(s);
    return rc;
}

/* Runs `op` on the claim `owner` holds for `key`; -1 when it holds none (ended, expired, taken). */
enum { SC_OP_REFRESH, SC_OP_READERS, SC_OP_READERS_OR_CLOSE, SC_OP_JOIN, SC_OP_HELD, SC_OP_END,
       SC_OP_END_KEEP, SC_OP_RELEASE };

static int
sc_claim_op(sc_segment *s, const void *key, size_t klen, const void *owner, size_t olen, uint64_t now,
            uint64_t lease_ns, int op)
{
    if (klen == 0 || klen > SC_CLAIM_KEY_MAX || olen > SC_CLAIM_OWNER_MAX) {
        return -1;
    }
    uint64_t hash = sc_hash(s, key, klen);
    if (sc_lock(s) != 0) {
        return -1;
    }
    int rc = -1;
    struct sc_claim *c = sc_claim_find(s, hash, key, klen, now);
    if (!sc_claim_owned(c, owner, olen)) {
        goto done;
    }
    rc = (int)c->readers;
    switch (op) {
    case SC_OP_REFRESH:
        c->lease_until = now + lease_ns;
        break;
    case SC_OP_READERS:
    case SC_OP_HELD:
        break;
    case SC_OP_READERS_OR_CLOSE:
        if (c->readers == 0) {
            c->state = SC_C_CLOSED;
        }
        break;
    case SC_OP_JOIN:
        if (c->state == SC_C_CLOSED) {
            rc = -1;
        } else {
            c->readers++;
        }
        break;
    case SC_OP_END:
        /* Readers, or the stream already published: keep it (ENDING) until the end is written. */
        if (c->readers > 0) {
            c->state = SC_C_ENDING;
        } else {
            memset(c, 0, sizeof(*c));
        }
        break;
    case SC_OP_END_KEEP:
        c->state = SC_C_ENDING;
        break;
    case SC_OP_RELEASE:
        memset(c, 0, sizeof(*c));
        break;
    }
done:
    sc_unlock(s);
    return rc;
}

int
sc_claim_refresh(sc_segment *s, const void *key, size_t klen, const void *owner, size_t olen, uint64_t now,
                 uint64_t lease_ns)
{
    return sc_claim_op(s, key, klen, owner, olen, now, lease_ns, SC_OP_REFRESH) >= 0;
}

int
sc_claim_readers(sc_segment *s, const void *key, size_t klen, const void *owner, size_t olen, uint64_t now,
                 int close_if_none)
{
    return sc_claim_op(s, key, klen, owner, olen, now, 0, close_if_none ? SC_OP_READERS_OR_CLOSE : SC_OP_READERS);
}

int
sc_claim_may_have_readers(sc_segment *s, const void *key, size_t klen, uint64_t now)
{
    if (klen == 0 || klen > SC_CLAIM_KEY_MAX) {
        return 0;
    }
    uint64_t hash = sc_hash(s, key, klen);
    struct sc_claim *t = sc_claims(s);
    uint32_t mask = s->h->nclaims - 1;
    /* Words only, each read atomically (another process may be writing the slot): no key bytes
     * compared. A torn or stale view errs either way, and both ways are safe (see the header). */
    for (uint32_t p = 0; p < SC_CLAIM_PROBES; p++) {
        struct sc_claim *c = &t[(hash + p) & mask];
        if (__atomic_load_n(&c->hash, __ATOMIC_RELAXED) == hash && __atomic_load_n(&c->lease_until, __ATOMIC_RELAXED) > now
            && __atomic_load_n(&c->readers, __ATOMIC_ACQUIRE) > 0) {
            return 1;
        }
    }
    return 0;
}

int
sc_claim_join(sc_segment *s, const void *key, size_t klen, const void *owner, size_t olen, uint64_t now)
{
    return sc_claim_op(s, key, klen, owner, olen, now, 0, SC_OP_JOIN) >= 0;
}

int
sc_claim_held(sc_segment *s, const void *key, size_t klen, const void *owner, size_t olen, uint64_t now)
{
    return sc_claim_op(s, key, klen, owner, olen, now, 0, SC_OP_HELD) >= 0;
}

int
sc_claim_end(sc_segment *s, const void *key, size_t klen, const void *owner, size_t olen, uint64_t now,
             int keep)
{
    return sc_claim_op(s, key, klen, owner, olen, now, 0, keep ? SC_OP_END_KEEP : SC_OP_END);
}

void
sc_claim_release(sc_segment *s, const void *key, size_t klen, const void *owner, size_t olen, uint64_t now)
{
    (void)sc_claim_op(s, key, klen, owner, olen, now, 0, SC_OP_RELEASE);
}

int
sc_test_die_holding_lock(sc_segment *s)
{
    pid_t pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        pthread_mutex_lock(&s->h->lock);
        s->h->count = 12345;   /* a half-written change the next locker must not trust */
        _exit(0);
    }
    int status = 0;
    return waitpid(pid, &status, 0) == pid ? 0 : -1;
}

uint64_t
sc_test_bucket_of(sc_segment *s, const void *key, size_t klen)
{
    return sc_hash(s, key, klen) & (s->h->nbuckets - 1);
}

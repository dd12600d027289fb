/*
 * CSharedCache: the response cache the worker processes of one host share, in one shared memory
 * segment (memfd) the supervisor creates and every worker maps: nginx's keys_zone idea. It holds
 * what MemoryCacheStore holds (key -> body, fresh until T, stale until T + staleTTL, LRU order,
 * bounded by entries and bytes) so that a lookup or a store costs a lock and a copy instead of a
 * Redis round trip. C rather than Swift because it is a layout of structs in memory that several
 * processes read and write.
 *
 * Layout (offsets from the segment's start, all fixed at creation):
 *   header    magic, geometry, the process-shared robust mutex, list heads, counters
 *   buckets   uint32 record index per hash bucket (0 = empty), chained through the records
 *   records   one per entry: hash, key and value lengths, times, LRU links, first block
 *   blocks    fixed-size blocks; an entry's key then value run through a chain of them
 * Records and blocks are handed out from a high-water mark before any free list, so pages of an
 * unused segment are never touched (a large cache costs memory only as it fills).
 *
 * Faults: a process that dies holding the lock leaves the mutex "owner died"; the next locker
 * empties the whole cache (it cannot know what was half-written) and carries on. Every index read
 * from the segment is bounds-checked; one out of range also empties the cache. Nothing here can
 * make a lookup return another key's value: the key's bytes are compared in full.
 *
 * Times are CLOCK_MONOTONIC nanoseconds, the same in every process of the host.
 */
#ifndef CSHAREDCACHE_H
#define CSHAREDCACHE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sc_segment sc_segment;

enum {
    SC_MISS = 0,
    SC_FRESH = 1,
    SC_STALE = 2,
    SC_TOO_SMALL = 3,  /* found, but `cap` < the value's length: `*len` says how much to give */
};

/* Creates a segment (memfd, inherited across exec) for `max_entries` entries and `max_bytes` of
 * keys and values; returns its fd, or -1 with errno set. */
int sc_create(uint32_t max_entries, uint64_t max_bytes);

/* Maps a segment created by sc_create (in this or a parent process); NULL when the fd is not one
 * (wrong size or magic). The fd may be closed afterwards. */
sc_segment *sc_attach(int fd);
void sc_detach(sc_segment *s);

/* Looks `key` up at time `now`. Fresh or stale: copies the value into `out` when it fits (`*len`
 * set either way) and, when `touch`, makes it the most recently used. Past its stale time: removed,
 * SC_MISS. */
int sc_get(sc_segment *s, const void *key, size_t klen, uint64_t now, int touch,
           void *out, size_t cap, size_t *len);

/* Stores `key` -> `value`, replacing any entry for the key, evicting the least recently used
 * entries until it fits. Returns 1, or 0 when refused (larger than the whole segment, or a zero
 * fresh time); a refused update still removes the older entry. */
int sc_put(sc_segment *s, const void *key, size_t klen, const void *value, size_t vlen,
           uint64_t fresh_until, uint64_t stale_until);

/* sc_put of the value `head` then `tail` (either may be empty), copied straight into the entry's
 * blocks: a caller whose value is a small header before a large body need not join them first. */
int sc_put2(sc_segment *s, const void *key, size_t klen, const void *head, size_t hlen,
            const void *tail, size_t tlen, uint64_t fresh_until, uint64_t stale_until);

/* Removes every entry. */
void sc_clear(sc_segment *s);

typedef struct sc_stats {
    uint64_t entries;
    uint64_t bytes;        /* keys and values stored */
    uint64_t evictions;    /* entries removed to make room */
    uint64_t resets;       /* times the cache was emptied after a fault */
    uint64_t max_entries;
    uint64_t max_bytes;
} sc_stats;

void sc_get_stats(sc_segment *s, sc_stats *out);

/* --- Flight claims: single-flight across the workers ---------------------------------------------
 * One claim per key names the process that leads the upstream request for it (`owner`, at most
 * SC_CLAIM_OWNER_MAX bytes) for a lease the leader refreshes; other processes join it as readers
 * and read the leader's answer from the private Redis, which the leader writes only once it has
 * readers. A claim is OPEN (takes readers), CLOSED (its stream outgrew what the leader can replay
 * before anyone joined: later arrivals go alone) or ENDING (the leader is writing its end for its
 * readers; still takes readers, who will find everything). An expired lease counts as no claim.
 * Up to SC_CLAIM_PROBES slots per key of a fixed table: a full neighbourhood is "unavailable". */
#define SC_CLAIM_KEY_MAX   96
#define SC_CLAIM_OWNER_MAX 64

enum {
    SC_CLAIM_WON = 0,
    SC_CLAIM_LOST = 1,          /* `out_owner` names the leader */
    SC_CLAIM_UNAVAILABLE = 2,   /* no coordination: a CLOSED claim, a full table, a key too long */
};

int sc_claim(sc_segment *s, const void *key, size_t klen, const void *owner, size_t olen, uint64_t now,
             uint64_t lease_ns, void *out_owner, size_t cap, size_t *out_len);
/* The operations below act only on a claim `owner` still holds (live lease), else answer -1/0. */
/* Extends the lease; 1 when held. */
int sc_claim_refresh(sc_segment *s, const void *key, size_t klen, const void *owner, size_t olen, uint64_t now,
                     uint64_t lease_ns);
/* Readers joined so far (-1: not held). With `close_if_none`, a claim with none becomes CLOSED. */
int sc_claim_readers(sc_segment *s, const void *key, size_t klen, const void *owner, size_t olen, uint64_t now,
                     int close_if_none);
/* Whether a live claim on `key` may have readers, read without the lock (a leader asks on every
 * upstream read): 0 means none had joined when it looked (one joining meanwhile is seen at the
 * next look, or by the locked call at the end); 1 means a claim slot for this key's hash counts
 * readers, which the caller confirms with sc_claim_readers (the slot may be another owner's). */
int sc_claim_may_have_readers(sc_segment *s, const void *key, size_t klen, uint64_t now);
/* A reader joins `owner`'s claim: 1 joined, 0 not (gone, expired, CLOSED). */
int sc_claim_join(sc_segment *s, const void *key, size_t klen, const void *owner, size_t olen, uint64_t now);
/* 1 while `owner` holds the claim (OPEN, CLOSED or ENDING, lease running). */
int sc_claim_held(sc_segment *s, const void *key, size_t klen, const void *owner, size_t olen, uint64_t now);
/* The leader ends: returns its readers (-1: not held). With readers, or `keep` (it published
 * already), the claim turns ENDING and stays until sc_claim_release; else it is removed now. */
int sc_claim_end(sc_segment *s, const void *key, size_t klen, const void *owner, size_t olen, uint64_t now,
                 int keep);
/* Removes the claim if `owner` holds it. */
void sc_claim_release(sc_segment *s, const void *key, size_t klen, const void *owner, size_t olen, uint64_t now);

/* Tests only: forks a child that takes the lock and exits holding it (a worker killed mid-store);
 * returns once the child is gone, 0 on success. */
int sc_test_die_holding_lock(sc_segment *s);

/* Tests only: the bucket `key` hashes to (the hash is keyed by the segment's own random seed). */
uint64_t sc_test_bucket_of(sc_segment *s, const void *key, size_t klen);

#ifdef __cplusplus
}
#endif

#endif

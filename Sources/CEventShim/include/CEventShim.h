/*
 * CEventShim: the one C module the Swift targets import.
 * It re-exports Debian's libevent (event_core), hiredis, libyaml, http-parser and jansson,
 * and declares ces_* wrappers only for what Swift cannot call directly: function-like
 * macros, bitfields, and the hiredis libevent adapter (a static function in a header).
 */
#ifndef CEVENTSHIM_H
#define CEVENTSHIM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <yaml.h>
#include <http_parser.h>
#include <jansson.h>

/* SHA-256 of `len` bytes into `out` (CES_SHA256_BYTES bytes), with Debian's nettle (its x86-64
   assembly; about 300 KB resident where OpenSSL 3's libcrypto with its default provider loaded
   is 3.4 MB per process). Returns 1. */
#define CES_SHA256_BYTES 32
int ces_sha256(const void *data, size_t len, unsigned char *out);
/* SHA-1 (nettle) into `out` (CES_SHA1_BYTES bytes): only for Redis script ids (EVALSHA). Returns 1. */
#define CES_SHA1_BYTES 20
int ces_sha1(const void *data, size_t len, unsigned char *out);

/* http_parser keeps these in bitfields / behind a macro. */
unsigned int ces_http_status(const http_parser *p);
unsigned int ces_http_method(const http_parser *p);
unsigned int ces_http_errno(const http_parser *p);
int ces_http_is_paused(const http_parser *p);

/* jansson's type tests are macros. */
int ces_json_type(const json_t *j);

/* hiredis' libevent adapter is a static function in adapters/libevent.h. */
int ces_redis_attach(redisAsyncContext *ac, struct event_base *base);

/* Sets TCP_NODELAY and returns 0 on success. */
int ces_set_nodelay(evutil_socket_t fd);

/* Bytes still in the kernel send queue of a socket (ioctl TIOCOUTQ is variadic); -1 on error. */
int ces_unsent_bytes(evutil_socket_t fd);

/* Starts `path` with `argv` in a child that gets `sig` when this process dies (fork, prctl
 * PR_SET_PDEATHSIG, execv: posix_spawn cannot ask for it). Returns the pid, or -1. */
pid_t ces_spawn_dying_with_parent(const char *path, char *const argv[], int sig);

/* Current RSS in bytes from /proc/self/statm (0 when unknown). */
size_t ces_rss_bytes(void);

/// Keeps glibc malloc from returning heap to the kernel after every burst (trim threshold
/// 64 MiB) and from serving mid-size blocks (up to 4 MiB) with fresh mmaps: without it a
/// steady request load paid ~2 page faults per request as the heap top grew and shrank.
void ces_tune_malloc(void);

#endif

/*
 * ces_* wrappers: each exists because Swift cannot reach the API directly.
 * This is the only file that includes hiredis/adapters/libevent.h.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <string.h>
#include "CEventShim.h"
#include <hiredis/adapters/libevent.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <signal.h>

/* Bitfields: Swift's importer does not expose them reliably. */
unsigned int ces_http_status(const http_parser *p) { return p->status_code; }
unsigned int ces_http_method(const http_parser *p) { return p->method; }
unsigned int ces_http_errno(const http_parser *p) { return p->http_errno; }
int ces_http_is_paused(const http_parser *p) { return p->http_errno == HPE_PAUSED; }

/* Macro: json_typeof. */
int ces_json_type(const json_t *j) { return j == NULL ? -1 : (int)json_typeof(j); }

/*
 * hiredis on the loop. hiredis's own libevent adapter (redisLibeventAttach, unused) re-adds a
 * one-shot read event after every reply: an epoll_ctl DEL and ADD per round trip. This adapter
 * keeps one persistent read event. Writes still wait for the socket to be writable (EV_WRITE, as
 * hiredis's adapter does), so the commands of one loop pass leave in one write: writing them at
 * once instead (the write event made active within the pass) was measured and cost more under
 * load (one write per command) than it saved at one request at a time. hiredis may free the
 * context (and call cleanup) inside a handler: `e` is then freed when the handler returns.
 */
typedef struct ces_redis_events {
    redisAsyncContext *ctx;
    struct event *rev, *wev;
    int reading, depth, dead;
} ces_redis_events;

static void ces_redis_release(ces_redis_events *e)
{
    event_free(e->rev);
    event_free(e->wev);
    free(e);
}

static void ces_redis_on_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    ces_redis_events *e = arg;
    e->depth++;
    if (what & EV_READ) redisAsyncHandleRead(e->ctx);
    else redisAsyncHandleWrite(e->ctx);
    e->depth--;
    if (e->dead && e->depth == 0) ces_redis_release(e);
}

static void ces_redis_add_read(void *p)
{
    ces_redis_events *e = p;
    if (e->dead || e->reading) return;
    e->reading = 1;
    event_add(e->rev, NULL);
}

static void ces_redis_del_read(void *p)
{
    ces_redis_events *e = p;
    if (!e->reading) return;
    e->reading = 0;
    event_del(e->rev);
}

static void ces_redis_add_write(void *p)
{
    ces_redis_events *e = p;
    if (!e->dead) event_add(e->wev, NULL);
}

static void ces_redis_del_write(void *p)
{
    ces_redis_events *e = p;
    event_del(e->wev);
}

static void ces_redis_cleanup(void *p)
{
    ces_redis_events *e = p;
    e->dead = 1;
    event_del(e->rev);
    event_del(e->wev);
    if (e->depth == 0) ces_redis_release(e);
}

int ces_redis_attach(redisAsyncContext *ac, struct event_base *base)
{
    if (ac->ev.data != NULL) return REDIS_ERR;
    ces_redis_events *e = calloc(1, sizeof(*e));
    if (e == NULL) return REDIS_ERR;
    e->ctx = ac;
    e->rev = event_new(base, ac->c.fd, EV_READ | EV_PERSIST, ces_redis_on_event, e);
    e->wev = event_new(base, ac->c.fd, EV_WRITE, ces_redis_on_event, e);
    if (e->rev == NULL || e->wev == NULL) {
        if (e->rev) event_free(e->rev);
        if (e->wev) event_free(e->wev);
        free(e);
        return REDIS_ERR;
    }
    ac->ev.addRead = ces_redis_add_read;
    ac->ev.delRead = ces_redis_del_read;
    ac->ev.addWrite = ces_redis_add_write;
    ac->ev.delWrite = ces_redis_del_write;
    ac->ev.cleanup = ces_redis_cleanup;
    ac->ev.data = e;
    /* As hiredis's adapter: read, and wait for the connect to complete (writable). */
    e->reading = 1;
    event_add(e->rev, NULL);
    event_add(e->wev, NULL);
    return REDIS_OK;
}

/* setsockopt takes a void pointer to an int; kept here to avoid pointer dances. */
int ces_set_nodelay(evutil_socket_t fd)
{
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int ces_unsent_bytes(evutil_socket_t fd)
{
    int n = 0;
    if (ioctl(fd, TIOCOUTQ, &n) != 0) {
        return -1;
    }
    return n;
}

void ces_tune_malloc(void)
{
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
}

size_t ces_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, rss = 0;
    if (f == NULL) {
        return 0;
    }
    if (fscanf(f, "%lu %lu", &size, &rss) != 2) {
        rss = 0;
    }
    fclose(f);
    return (size_t)rss * (size_t)sysconf(_SC_PAGESIZE);
}


/* fork + prctl(PR_SET_PDEATHSIG) + execv: posix_spawn cannot ask for the parent-death signal, and
 * Swift cannot call fork safely. For a helper the supervisor owns (its private redis-server),
 * which must not outlive a supervisor killed without warning. Returns the pid, or -1. */
pid_t ces_spawn_dying_with_parent(const char *path, char *const argv[], int sig)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    if (prctl(PR_SET_PDEATHSIG, sig) != 0 || getppid() != parent)
        _exit(127);
    execv(path, argv);
    _exit(127);
}

/* Private structures of the HTTP client engine (net layer), shared by engine.c (the
 * thread-safe API), engine_loop.c (everything that runs on the loop thread),
 * engine_timer.c (the loop's timer heap), engine_xfer.c (libcurl), engine_h1.c (the own
 * HTTP/1.1 client) and engine_resolve.c (its host name lookups). */
#ifndef DSPY_NET_ENGINE_INT_H
#define DSPY_NET_ENGINE_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include <sys/socket.h>

#include <curl/curl.h>

#include "base/buf.h"
#include "base/heap.h"
#include "net/engine.h"
#include "net/http1.h"

#define DSPY__CONTAINER_OF(ptr, type, member) \
    ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

struct dspy__engine_timer;
typedef void (*dspy__engine_timer_fn)(struct dspy__engine *e, struct dspy__engine_timer *t);

/* A one-shot timer on the loop thread; embedded in its owner. */
struct dspy__engine_timer {
    uint64_t due_ns;
    size_t idx; /* position in the heap; SIZE_MAX when not armed */
    dspy__engine_timer_fn fire;
};

/* Armed timers: the base heap of timer pointers, earliest first, each timer keeping its
 * index (idx). Loop thread only. */
struct dspy__engine_timers {
    struct dspy__heap heap;
};

void dspy__engine_timer_init(struct dspy__engine_timer *t, dspy__engine_timer_fn fire);
void dspy__engine_timers_init(struct dspy__engine_timers *h);
void dspy__engine_timers_release(struct dspy__engine_timers *h);
/* Make room for `n` armed timers, so that arming never fails afterwards. */
dspy_status dspy__engine_timers_reserve(struct dspy__engine_timers *h, size_t n);
/* Arm `t` for `due_ns`, or move it there if armed. Capacity must have been reserved. */
void dspy__engine_timer_arm(struct dspy__engine_timers *h, struct dspy__engine_timer *t,
                            uint64_t due_ns);
void dspy__engine_timer_disarm(struct dspy__engine_timers *h, struct dspy__engine_timer *t);
/* Earliest due time, UINT64_MAX when none is armed. */
uint64_t dspy__engine_timers_next(const struct dspy__engine_timers *h);
/* Disarm and return one timer due at `now_ns`, or NULL. */
struct dspy__engine_timer *dspy__engine_timers_pop_due(struct dspy__engine_timers *h,
                                                       uint64_t now_ns);

/* A message to the loop thread, embedded in its owner; pushed onto the engine's inbox, a
 * lock-free multi-producer stack that the loop takes whole with one exchange (so no ABA). */
enum dspy__engine_msg_kind {
    DSPY__MSG_SUBMIT,
    DSPY__MSG_CANCEL,
    DSPY__MSG_GROUP_CANCEL,
    DSPY__MSG_RESOLVED /* a host name lookup ended (engine_resolve.c) */
};
struct dspy__engine_msg {
    struct dspy__engine_msg *next;
    enum dspy__engine_msg_kind kind;
};

/* One libcurl multi handle and its connection pool. libcurl 7.x looks for a reusable
 * connection by walking every connection to the host (ConnectionExists), so one multi
 * with C connections costs O(C) per request; the engine spreads transfers over shards of
 * at most `transfers_per_multi` each. Loop thread only. */
struct dspy__engine_shard {
    struct dspy__engine *e;
    CURLM *multi;
    uint32_t index;
    uint32_t active;                 /* transfers in this multi */
    struct dspy__engine_timer timer; /* libcurl's timeout for this multi */
};

/* The engine's own HTTP/1.1 transport (engine_h1.c) for http:// URLs: kept-alive
 * connections per host:port on the loop's epoll set. Loop thread only. */
#define DSPY__H1_KEY (1ull << 63) /* epoll key bit; the rest is a struct dspy__h1_conn * */
#define DSPY__H1_MAX_ADDRS 4

struct dspy__h1_pool;
struct dspy__engine_slot;

/* A host name lookup, made on a resolver thread and handed back to the loop through the
 * inbox. Owned by whoever holds it: the loop until queued, the resolver until posted. */
struct dspy__engine_lookup {
    struct dspy__engine_msg msg;      /* DSPY__MSG_RESOLVED */
    struct dspy__engine_lookup *next; /* the resolver's queue */
    struct dspy__h1_pool *pool;       /* whose addresses these are (loop thread) */
    int rc;                           /* getaddrinfo's result */
    uint32_t naddr;
    struct sockaddr_storage addr[DSPY__H1_MAX_ADDRS];
    socklen_t addrlen[DSPY__H1_MAX_ADDRS];
    char port[8];
    char host[]; /* brackets stripped */
};

/* Resolver threads (engine_resolve.c), shared by the engine and the threads it started,
 * freed by the last of them: freeing the engine never waits for a slow lookup. */
struct dspy__engine_resolver;
/* NULL when out of memory. */
struct dspy__engine_resolver *dspy__engine_resolver_new(struct dspy__engine *e,
                                                        dspy__engine_getaddrinfo_fn fn);
/* Queue a lookup (loop thread); its result comes back as a DSPY__MSG_RESOLVED message.
 * A name whose lookup failed less than 5 s ago fails again at once, without a lookup.
 * Without a thread to run it (none could be started), it is run here, blocking. */
void dspy__engine_resolver_submit(struct dspy__engine_resolver *r, struct dspy__engine_lookup *l);
/* The engine is going away: no more messages; threads end after their current lookup.
 * The engine's reference stays until _release, so the loop may still submit (in vain). */
void dspy__engine_resolver_detach(struct dspy__engine_resolver *r);
void dspy__engine_resolver_release(struct dspy__engine_resolver *r);
/* Up to DSPY__H1_MAX_ADDRS stream addresses of host:port with `fn` (getaddrinfo when NULL)
 * and ai_flags `flags`: getaddrinfo's result, EAI_NONAME when none fits. */
int dspy__engine_getaddrs(dspy__engine_getaddrinfo_fn fn, const char *host, const char *port,
                          int flags, struct sockaddr_storage *addr, socklen_t *addrlen,
                          uint32_t *naddr);

struct dspy__h1_conn {
    int fd; /* -1 once closed; freed after the event batch that may still name it */
    struct dspy__h1_pool *pool;
    struct dspy__h1_conn *prev, *next; /* the pool's idle list, or the engine's dead list */
    struct dspy__engine_slot *slot;    /* the attempt it carries; NULL when idle */
    uint32_t served;                   /* responses read on it */
    uint32_t addr_idx;                 /* which of the pool's addresses */
    bool connecting;
};

struct dspy__h1_pool {
    struct dspy__h1_pool *next;
    struct sockaddr_storage addr[DSPY__H1_MAX_ADDRS];
    socklen_t addrlen[DSPY__H1_MAX_ADDRS];
    uint32_t naddr, good; /* resolved addresses; the one that connected last */
    uint64_t resolved_ns;
    bool resolving;             /* a lookup is out on a resolver thread */
    bool literal;               /* the host is an address: never looked up */
    struct dspy__h1_conn *idle; /* most recently used first */
    uint32_t nidle;
    uint32_t nconn; /* open: connecting, busy and idle */
    /* Attempts waiting for a connection (for the lookup, or under a connection limit),
     * first come first served. */
    struct dspy__engine_slot *whead, *wtail;
    char port[8];
    char key[]; /* host (brackets stripped), NUL, then "host:port" as in the URL */
};

/* A reusable transfer: a curl easy handle (created on first libcurl use) or the own
 * transport's parser, with the buffers of one attempt. Loop thread only; kept on a free
 * list between attempts. */
struct dspy__engine_slot {
    CURL *easy;
    struct dspy__engine_shard *shard; /* where the running attempt is */
    struct dspy__engine_slot *next_free;
    struct dspy__engine_call *call; /* the call whose attempt runs here */
    struct dspy_buf body;           /* response body (non-streaming, or non-2xx) */
    struct dspy__sse sse;           /* scanner for a 2xx streaming answer */
    size_t received;                /* body bytes of this attempt */
    size_t max_bytes;
    long http_status; /* final status of this attempt, once headers ended */
    uint64_t first_byte_ns;
    dspy_status write_rc; /* why the write callback stopped the transfer */
    int socket_errno;     /* errno of this attempt's failed socket(), 0 = none */
    bool streaming;       /* this attempt's body goes to the SSE scanner */
    uint8_t retry_after_len;
    uint8_t retry_after_ms_len;
    char retry_after[48];    /* raw Retry-After value of this attempt */
    char retry_after_ms[24]; /* raw retry-after-ms value */
    /* The own transport's attempt. */
    bool own;                   /* this attempt runs on engine_h1.c, not libcurl */
    bool resent;                /* sent again after a kept-alive connection died unanswered */
    uint32_t addr_tries;        /* addresses tried for this attempt's connection */
    struct dspy__h1_conn *conn; /* the connection carrying it, NULL when none */
    struct dspy__h1 h1;         /* response parser */
    struct dspy_buf req;        /* request head */
    size_t req_off;             /* bytes of head + body sent */
    uint64_t deadline_ns;       /* this attempt's timeout, absolute; 0 = none */
    uint64_t connect_by;        /* lookup and connect must end by then; 0 = not connecting */
    struct dspy__engine_slot *wprev, *wnext; /* its pool's wait list */
    uint64_t wait_seq;                       /* order of arrival there */
    bool waiting;                            /* on its pool's wait list */
    const char *why; /* a more precise failure text than libcurl's, or NULL */
};

enum dspy__engine_call_state {
    DSPY__CALL_QUEUED,     /* in the inbox */
    DSPY__CALL_WAIT_LIMIT, /* in its limiter's FIFO */
    DSPY__CALL_WAIT_RETRY, /* timer armed for the next attempt */
    DSPY__CALL_ACTIVE,     /* transfer in the multi handle */
    DSPY__CALL_DONE
};

struct dspy__engine_call {
    struct dspy__engine_msg submit_msg;
    struct dspy__engine_msg cancel_msg;
    _Atomic unsigned refs; /* the engine's until finished, the handle's, a queued cancel */
    atomic_bool cancel_asked;
    atomic_bool reconciled;
    atomic_bool finished;
    struct dspy__engine *e;
    /* The request, fixed at submit. */
    const char *url;    /* points into storage */
    const char *method; /* points into storage */
    bool is_post, is_head, https;
    bool own;                    /* on the own HTTP/1.1 transport (see engine_h1.c) */
    uint32_t user_len;           /* userinfo before '@' at url + 7, 0 if none */
    uint32_t host_off, host_len; /* the host, brackets stripped */
    uint32_t auth_off, auth_len; /* "host[:port]", the Host header */
    uint32_t path_off;           /* path and query; the end of the URL when empty */
    uint32_t path_len;
    uint16_t port;
    struct dspy__h1_pool *pool; /* loop thread: found on the first attempt */
    const struct dspy__engine_headers *headers;
    const char *body;
    size_t body_len;
    bool owns_body;
    uint64_t timeout_ns;
    uint64_t deadline_abs_ns; /* 0 = none */
    size_t max_response_bytes;
    size_t max_event_bytes;
    struct dspy__retry_policy retry;
    struct dspy__engine_limiter *limiter;
    uint64_t est_tokens;
    struct dspy__engine_group *group;
    dspy__engine_event_fn on_event;
    dspy__engine_done_fn on_done;
    void *userdata;
    /* Loop thread state. */
    enum dspy__engine_call_state state;
    struct dspy__engine_call *prev, *next;   /* the engine's live calls */
    struct dspy__engine_call *gprev, *gnext; /* the group's members */
    struct dspy__engine_timer timer;         /* retry wait, or deadline while queued */
    struct dspy__ratelimit_waiter waiter;
    bool admitted;     /* counted in the limiter's wait budget */
    bool holds_permit; /* a limiter permit for the running attempt */
    struct dspy__engine_slot *slot;
    struct dspy__engine_result res;
    /* The handle side: set up only when the caller took a handle. */
    bool has_handle;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done_seen;  /* guarded by mu */
    char *kept_body; /* body moved out of the slot for the handle */
    char error[192];
    char storage[]; /* url, NUL, method, NUL */
};

struct dspy__engine_group {
    struct dspy__engine_msg cancel_msg;
    struct dspy__engine *e;
    _Atomic unsigned refs; /* the caller's, one per member, a queued cancel */
    atomic_bool cancel_asked;
    atomic_bool cancelled;
    struct dspy__engine_call *members; /* loop thread */
};

struct dspy__engine_limiter {
    struct dspy__engine_limiter *next; /* guarded by engine limiters_lock */
    struct dspy__ratelimit *rl;
    struct dspy__engine_timer timer; /* loop thread: next grant */
    char key[];
};

struct dspy__engine_headers {
    struct curl_slist *list;
    char *wire; /* the same lines as sent on the own transport: "Name: value\r\n"... */
    size_t wire_len;
    bool has_host, has_accept, has_ctype, has_auth, has_clen; /* set (or removed) by a line */
};

struct dspy__engine {
    struct dspy__engine_options opts; /* opts.ca_file points to ca_file */
    char *ca_file;
    CURLSH *share; /* DNS and TLS sessions, shared by all shards */
    int epfd;
    int evfd; /* eventfd: wakes the loop for the inbox */
    pthread_t thread;
    _Atomic(struct dspy__engine_msg *) inbox;
    atomic_bool stopping;
    /* Loop thread only. */
    struct dspy__engine_timers timers;
    struct dspy__engine_shard **shards;
    uint32_t nshards;
    uint32_t per_shard; /* transfers per multi handle */
    uint32_t *room;     /* a stack of shard indexes, one entry per
                                              * free transfer place, last freed on top */
    size_t nroom, caproom;
    struct dspy__engine_call *live; /* calls taken from the inbox, not finished */
    size_t nlive;
    struct dspy__engine_slot *free_slots;
    uint32_t nfree_slots;
    uint64_t rng;
    bool own_h1;                            /* http:// URLs on the own transport */
    struct dspy__h1_pool *pools;            /* one per host:port, kept until the engine is freed */
    struct dspy__h1_conn *dead;             /* closed connections, freed between event batches */
    char *rbuf;                             /* receive buffer of the own transport */
    uint32_t h1_nconn;                      /* open connections, all pools */
    uint32_t h1_nwaiting;                   /* attempts on a pool's wait list, all pools */
    uint64_t h1_seq;                        /* arrival order on the wait lists */
    struct dspy__engine_timer h1_timer;     /* hand freed connections to waiters, unnested */
    struct dspy__engine_resolver *resolver; /* started on the first host name lookup */
    /* Limiters, created from any thread. */
    pthread_mutex_t limiters_lock;
    struct dspy__engine_limiter *limiters; /* guarded by limiters_lock */
    atomic_size_t nlimiters;
    /* Counters (struct dspy__engine_stats). */
    _Atomic uint64_t n_submitted, n_rejected, n_finished, n_failed, n_attempts, n_retries,
        n_rl_waits, n_in_flight, n_pending;
};

/* engine_loop.c: the loop thread and the call state machine */
void *dspy__engine_loop_main(void *arg);
bool dspy__engine_on_loop(const struct dspy__engine *e);
void dspy__engine_limiter_fire(struct dspy__engine *e, struct dspy__engine_timer *t);
/* Finish the attempts whose transfers ended in this shard. */
void dspy__engine_check_done(struct dspy__engine_shard *sh);
/* The running attempt of `c` ended with `cc` (a libcurl code; the own transport speaks
 * the same ones): retry it or finish the call. */
void dspy__engine_attempt_done(struct dspy__engine *e, struct dspy__engine_call *c, CURLcode cc);

/* engine_h1.c: the own HTTP/1.1 transport, loop thread only */
/* Whether the engine uses it for http:// URLs: the option, else DSPYC_HTTP, and never
 * through a proxy (libcurl reads http_proxy / all_proxy). */
bool dspy__engine_h1_wanted(const struct dspy__engine_options *o);
/* Split the URL of `c` for the own transport; false when it must go to libcurl. */
bool dspy__engine_h1_parse_url(struct dspy__engine_call *c);
/* Start the attempt of `c` (its slot set, state ACTIVE); failures end it through
 * dspy__engine_attempt_done, possibly before this returns. */
void dspy__engine_h1_start(struct dspy__engine *e, struct dspy__engine_call *c, uint64_t now);
void dspy__engine_h1_event(struct dspy__engine *e, struct dspy__h1_conn *k, uint32_t events);
/* A lookup came back from the resolver: take its addresses, start or fail its waiters. */
void dspy__engine_h1_resolved(struct dspy__engine *e, struct dspy__engine_lookup *l);
/* e->h1_timer: give connections freed (closed, or idle again) to waiting attempts. */
void dspy__engine_h1_dispatch(struct dspy__engine *e, struct dspy__engine_timer *t);
/* The attempt in `s` is being stopped (cancel, deadline): drop its connection. */
void dspy__engine_h1_stop(struct dspy__engine *e, struct dspy__engine_slot *s);
/* The attempt timer of `c` fired. */
void dspy__engine_h1_timeout(struct dspy__engine *e, struct dspy__engine_call *c);
/* Free connections closed since the last call; never while an event batch is in hand. */
void dspy__engine_h1_reap(struct dspy__engine *e);
void dspy__engine_h1_free(struct dspy__engine *e);

/* engine_xfer.c: the libcurl side, loop thread only */
/* Room in the timer heap for every timer that may be armed at once (one per live call,
 * limiter and shard) plus `extra`. */
dspy_status dspy__engine_reserve_timers(struct dspy__engine *e, size_t extra);
/* A multi handle with room for one more transfer (counted in), NULL when out of memory. */
struct dspy__engine_shard *dspy__engine_shard_get(struct dspy__engine *e);
void dspy__engine_shard_put(struct dspy__engine *e, struct dspy__engine_shard *sh);
void dspy__engine_shards_free(struct dspy__engine *e);
struct dspy__engine_slot *dspy__engine_slot_get(struct dspy__engine *e);
void dspy__engine_slot_put(struct dspy__engine *e, struct dspy__engine_slot *s);
void dspy__engine_slot_free(struct dspy__engine_slot *s);
/* Give `s` its curl easy handle if it has none yet. */
dspy_status dspy__engine_slot_easy(struct dspy__engine *e, struct dspy__engine_slot *s);
/* The own transport parsed the head of the attempt in `s`: take its status and headers. */
void dspy__engine_h1_head(struct dspy__engine_slot *s);
/* Set the per-attempt options of `c` on easy handle `h`. */
void dspy__engine_setup_easy(struct dspy__engine_call *c, CURL *h, uint64_t now);
/* The status of an attempt that ended with `cc`; sets c->error on failure. */
dspy_status dspy__engine_classify(struct dspy__engine_call *c, CURLcode cc);
/* Retry-After of the attempt in `s`, from retry-after-ms or Retry-After: ns or -1. */
int64_t dspy__engine_retry_after(const struct dspy__engine_slot *s);
/* "METHOD host: what" into c->error: names the host, never the path or headers. */
void dspy__engine_set_error(struct dspy__engine_call *c, const char *what);
long dspy__engine_ms_ceil(uint64_t ns);

/* engine.c */
void dspy__engine_push(struct dspy__engine *e, struct dspy__engine_msg *m);
void dspy__engine_call_unref(struct dspy__engine_call *c);
void dspy__engine_group_unref(struct dspy__engine_group *g);

/* Bump a counter; relaxed, since counters order nothing. */
#define DSPY__STAT_ADD(e, field, v) \
    atomic_fetch_add_explicit(&(e)->field, (v), memory_order_relaxed)
#define DSPY__STAT_SUB(e, field, v) \
    atomic_fetch_sub_explicit(&(e)->field, (v), memory_order_relaxed)

#endif

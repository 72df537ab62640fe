/* HTTP client engine (net layer): one event-loop thread over epoll carries thousands of
 * requests from one process without a thread each, on two transports: the engine's own
 * HTTP/1.1 keep-alive client for plain http:// (engine_h1.c, its host name lookups on
 * resolver threads, engine_resolve.c; DSPYC_HTTP=curl turns it off), and libcurl's multi
 * interface for https://, HTTP/2 (streams multiplexed where a TLS server offers them) and
 * proxies. Retries (net/retry.h), per-key rate limits (net/ratelimit.h) and SSE streaming
 * (net/sse.h) are applied on the loop thread with timers, never by sleeping.
 *
 * Threading: dspy__engine_new/_free from one thread, never concurrently with other calls
 * on the same engine. Everything else (submit, cancel, wait, release, groups, limiters,
 * stats) is safe from any thread, including from inside the engine's callbacks. Callbacks
 * (on_done, on_event) run on the loop thread, one at a time, and must not block (nor wait
 * on a call, nor free the engine): a slow callback delays every transfer. */
#ifndef DSPY_NET_ENGINE_H
#define DSPY_NET_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dspyc/common.h>

#include "net/ratelimit.h"
#include "net/retry.h"
#include "net/sse.h"

struct dspy__engine;
struct dspy__engine_call;    /* one submitted request, with its retries */
struct dspy__engine_group;   /* a batch of calls that can be cancelled together */
struct dspy__engine_limiter; /* a rate limiter, one per key (endpoint+model) */
struct dspy__engine_headers; /* an immutable list of request header lines */

/* Which client speaks http:// URLs (https://, HTTP/2 and proxies always go to libcurl). */
enum dspy__engine_http1 {
    DSPY__HTTP1_DEFAULT = 0, /* DSPYC_HTTP=curl|own in the environment, else the own client */
    DSPY__HTTP1_CURL,        /* libcurl */
    DSPY__HTTP1_OWN          /* the engine's own HTTP/1.1 keep-alive client (engine_h1.c) */
};

/* getaddrinfo's signature: how the own client looks up host names, on a resolver thread.
 * Tests put a slow or scripted lookup here; NULL = getaddrinfo. */
struct addrinfo;
typedef int (*dspy__engine_getaddrinfo_fn)(const char *host, const char *port,
                                           const struct addrinfo *hints, struct addrinfo **res);

struct dspy__engine_options {
    uint32_t max_host_connections;      /* per host:port; more requests wait for one, first come
                                     * first served (own client; libcurl:
                                     * CURLMOPT_MAX_HOST_CONNECTIONS); 0 = no limit */
    uint32_t max_total_connections;     /* all hosts; an idle connection to another host is
                                     * closed to make room; 0 = no limit */
    uint32_t max_idle_connections;      /* kept-alive connections per multi handle, or per
                                     * host:port on the own client; 0 = libcurl's default
                                     * (4 x its transfers), no limit on the own client */
    uint32_t max_streams;               /* HTTP/2 streams per connection; 0 = 100 */
    size_t max_pending;                 /* calls submitted and not finished; a submit beyond it
                                     * fails with DSPY_EBUSY; 0 = no limit */
    uint32_t keep_idle_handles;         /* idle curl handles (~6 KiB each, with a body buffer of
                                     * up to 16 KiB) kept for reuse; 0 = 4,096. Raise it to
                                     * the usual concurrency to avoid re-creating handles */
    uint64_t connect_timeout_ns;        /* looking up the host name and connecting; 0 = 10 s */
    uint32_t recv_buffer_bytes;         /* libcurl receive buffer per transfer; 0 = 16 KiB
                                     * (lower it to save memory with many streams) */
    uint32_t transfers_per_multi;       /* transfers per libcurl multi handle before another
                                     * is opened (libcurl 7.x scans all of a host's
                                     * connections on every request); 0 = 64. Each handle
                                     * keeps its own connections, so C HTTP/2 streams use
                                     * about C / this many connections. With a connection
                                     * limit set, one handle holds all, to keep it exact */
    const char *ca_file;                /* PEM bundle of trusted CAs (private CA of a
                                     * self-hosted endpoint); copied; NULL = system's */
    bool http2_prior_knowledge;         /* HTTP/2 without upgrade on http:// URLs (h2c). Needs
                                     * libcurl >= 8.0: older ones break reused h2c
                                     * connections (curl issue 10634); DSPY_EUNSUPPORTED */
    enum dspy__engine_http1 http1;      /* the own client serves http:// unless a proxy is set
                                    * in the environment or h2c is asked for */
    dspy__engine_getaddrinfo_fn lookup; /* the own client's host name lookups; NULL =
                                         * getaddrinfo */
};

#define DSPY__ENGINE_OPTIONS_INIT \
    {                             \
        .max_host_connections = 0 \
    }

/* How a call ended. Borrowed: inside on_done until it returns; from
 * dspy__engine_call_wait() until dspy__engine_call_release(). */
struct dspy__engine_result {
    dspy_status status; /* DSPY_OK: an HTTP response arrived, whatever its status
                              * (see http_status; the caller classes it). Otherwise
                              * DSPY_ELM_NETWORK (resolve, connect, send, receive failed,
                              * connection dropped), DSPY_ELM_TIMEOUT (attempt timeout or
                              * call deadline), DSPY_ETOOBIG (body over the limit),
                              * DSPY_ECANCELED, DSPY_EINVAL (bad URL or method),
                              * DSPY_ENOMEM. With retries, the last attempt's outcome. */
    long http_status;   /* 0 when no response arrived */
    const char *body;   /* NUL-terminated, never NULL. In streaming mode: empty for a
                              * 2xx answer (its events went to on_event), else the body */
    size_t body_len;
    int64_t retry_after_ns; /* Retry-After (or retry-after-ms) of the last response, -1 */
    uint32_t attempts;      /* attempts made, the first included */
    uint64_t submit_ns;     /* monotonic times (dspy_clock_ns) */
    uint64_t start_ns;      /* the last attempt started */
    uint64_t first_byte_ns; /* first body byte of the last attempt, 0 if none */
    uint64_t done_ns;
    uint64_t ratelimit_wait_ns; /* time spent waiting for the rate limiter, all attempts */
    const char *error;          /* one line on failure (names the host, never header values);
                              * "" on success */
};

/* Runs once per call, on the loop thread, after the last attempt; never when submit failed. */
typedef void (*dspy__engine_done_fn)(struct dspy__engine_call *call,
                                     const struct dspy__engine_result *res, void *userdata);
/* Runs per SSE event of a 2xx streaming answer, on the loop thread. `ev`'s views are
 * borrowed until it returns. Return non-zero to cancel the call (DSPY_ECANCELED). Events
 * of an attempt that fails are not taken back: a caller that streams to a user should not
 * also ask for retries. */
typedef int (*dspy__engine_event_fn)(struct dspy__engine_call *call,
                                     const struct dspy__sse_event *ev, void *userdata);

struct dspy__engine_request {
    const char *method; /* NULL: "POST" when body is set, else "GET". Copied */
    const char *url;    /* absolute http(s) URL. Copied */
    const struct dspy__engine_headers *headers; /* borrowed until the call ends; may be NULL */
    const char *body; /* borrowed until the call ends, or see take_body; NULL = none */
    size_t body_len;
    bool take_body;            /* the engine takes ownership of body (dspy_free) if submit
                            * succeeds; on failure the caller keeps it */
    uint64_t timeout_ns;       /* per attempt, connecting included; 0 = none */
    uint64_t deadline_ns;      /* whole call (waits, retries) from submit; 0 = none */
    size_t max_response_bytes; /* 0 = 16 MiB */
    const struct dspy__retry_policy *retry; /* copied; NULL = a single attempt */
    struct dspy__engine_limiter *limiter;   /* NULL = none */
    uint64_t est_tokens;                    /* expected tokens, charged to the limiter */
    struct dspy__engine_group *group;       /* NULL = none */
    dspy__engine_event_fn on_event;         /* non-NULL: SSE streaming mode */
    size_t max_event_bytes;                 /* longest SSE line/event; 0 = 1 MiB */
    dspy__engine_done_fn on_done;           /* may be NULL for a caller that waits */
    void *userdata;
};

#define DSPY__ENGINE_REQUEST_INIT \
    {                             \
        .method = NULL            \
    }

/* Start the loop thread. NULL on failure (details in err). */
struct dspy__engine *dspy__engine_new(const struct dspy__engine_options *opts,
                                      struct dspy_error *err);
/* Cancel every call not yet finished (their on_done runs with DSPY_ECANCELED), stop the
 * loop and free the engine and its limiters. Handles the caller still holds stay valid
 * until released. NULL is a no-op. */
void dspy__engine_free(struct dspy__engine *e);

/* Submit a request. On success the call belongs to the engine until it finishes, and
 * `*handle` (when handle is not NULL) is a reference the caller must release with
 * dspy__engine_call_release(); with a handle, the result stays readable after on_done.
 * Errors (no callback runs, nothing is taken): DSPY_EBUSY (max_pending reached, or the
 * limiter's wait queue is full: back off), DSPY_EINVAL, DSPY_ENOMEM. */
dspy_status dspy__engine_submit(struct dspy__engine *e, const struct dspy__engine_request *req,
                                struct dspy__engine_call **handle, struct dspy_error *err);

/* Ask for the call to end with DSPY_ECANCELED, wherever it is (queued, waiting for the
 * limiter or a retry, transferring). A call already finished is left as it is. */
void dspy__engine_call_cancel(struct dspy__engine_call *call);

/* Wait until the call has finished or until `deadline_ns` (absolute, dspy_clock_ns; 0 =
 * no limit). DSPY_OK with *res set, or DSPY_ELM_TIMEOUT when the deadline came first (the
 * call goes on; cancel it if the answer is no longer wanted). DSPY_EINVAL from the loop
 * thread (a callback), where waiting would deadlock. Only with a handle from submit. */
dspy_status dspy__engine_call_wait(struct dspy__engine_call *call, uint64_t deadline_ns,
                                   const struct dspy__engine_result **res);
bool dspy__engine_call_done(struct dspy__engine_call *call);
/* Drop the caller's reference (a handle from submit, never the pointer a callback gets).
 * NULL is a no-op. */
void dspy__engine_call_release(struct dspy__engine_call *call);

/* A response header of the last attempt, by case-insensitive name: a view borrowed until
 * on_done returns. Only from inside on_done; false when absent. */
bool dspy__engine_call_header(struct dspy__engine_call *call, const char *name, const char **value,
                              size_t *len);

/* Report the tokens the call really used (from `usage`), so its limiter refunds or
 * charges the difference to the estimate. Once per call; any thread, handle or on_done. */
void dspy__engine_call_reconcile(struct dspy__engine_call *call, uint64_t actual_tokens);

/* Groups. A call joins a group at submit. Cancelling a group cancels its calls not yet
 * finished and every call submitted to it afterwards. _free drops the caller's reference;
 * calls still running keep the group alive. Any thread. */
struct dspy__engine_group *dspy__engine_group_new(struct dspy__engine *e);
void dspy__engine_group_cancel(struct dspy__engine_group *g);
void dspy__engine_group_free(struct dspy__engine_group *g);

/* The limiter for `key`, created with `opts` on first use (later opts are ignored). Valid
 * until the engine is freed. NULL on failure. Any thread. */
struct dspy__engine_limiter *dspy__engine_limiter_get(struct dspy__engine *e, const char *key,
                                                      const struct dspy__ratelimit_options *opts);

/* Header list, built once and shared read-only by any number of calls. Lines are
 * "Name: value"; copied. NULL on failure, and when a line holds a control character (CR
 * or LF would make it two headers). */
struct dspy__engine_headers *dspy__engine_headers_new(const char *const *lines, size_t n);
void dspy__engine_headers_free(struct dspy__engine_headers *h);

/* Counters since the engine started; read with relaxed atomics, so a snapshot may be a few
 * events behind. Any thread. */
struct dspy__engine_stats {
    uint64_t submitted;       /* accepted by submit */
    uint64_t rejected_busy;   /* submits refused with DSPY_EBUSY */
    uint64_t finished;        /* on_done delivered (all outcomes) */
    uint64_t failed;          /* finished with a status other than DSPY_OK */
    uint64_t attempts;        /* transfers started */
    uint64_t retries;         /* attempts after the first */
    uint64_t ratelimit_waits; /* times a call queued for its limiter */
    uint64_t in_flight;       /* transfers in progress now */
    uint64_t pending;         /* calls submitted and not finished now */
};
void dspy__engine_get_stats(struct dspy__engine *e, struct dspy__engine_stats *st);

#endif

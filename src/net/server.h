/* HTTP server wrapper over libmicrohttpd (net layer): routing by method and path, bounded
 * request bodies, and answers given now, at a due time, from another thread, as a paced
 * stream of chunks, or not at all (a dropped connection). Delays never hold a thread: a
 * waiting connection is suspended and one timer thread with a min-heap resumes it. */
#ifndef DSPY_NET_SERVER_H
#define DSPY_NET_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dspyc/common.h>

#include "base/heap.h"

/* ---- Timer heap: a min-heap of (due, fn, arg), FIFO among equal due times. ---- */

typedef void (*dspy__timer_fn)(void *arg);

struct dspy__timer_entry {
    uint64_t due_ns; /* CLOCK_MONOTONIC nanoseconds (dspy__now_ns) */
    uint64_t seq;    /* insertion order, breaks ties */
    dspy__timer_fn fn;
    void *arg;
};

/* Entries by (due time, insertion order), on the base heap. */
struct dspy__timerheap {
    struct dspy__heap heap;
    uint64_t next_seq;
};

void dspy__timerheap_init(struct dspy__timerheap *h);
void dspy__timerheap_release(struct dspy__timerheap *h);
dspy_status dspy__timerheap_push(struct dspy__timerheap *h, uint64_t due_ns, dspy__timer_fn fn,
                                 void *arg);
/* Copy the earliest entry into *out; false when empty. */
bool dspy__timerheap_peek(const struct dspy__timerheap *h, struct dspy__timer_entry *out);
/* Remove the earliest entry into *out (may be NULL); false when empty. */
bool dspy__timerheap_pop(struct dspy__timerheap *h, struct dspy__timer_entry *out);

/* ---- Server ---- */

struct dspy__srv;     /* opaque; one per listening socket */
struct dspy__srv_req; /* one request; owned by the server, reference counted */

/* Runs on a server thread once the request (headers and body) is fully received. It must,
 * now or later from any thread, end the request with exactly one of dspy__srv_send(),
 * dspy__srv_send_truncated(), dspy__srv_drop() or dspy__srv_stream_start(); until then the
 * connection waits suspended (no thread held). A handler that answers later from another
 * thread takes a reference first (dspy__srv_req_ref). */
typedef void (*dspy__srv_handler)(struct dspy__srv_req *req, void *ud);

/* Abuse limits: connections that send their request slowly or not at all, and bodies that
 * arrive slowly, must not keep the server from answering new clients, nor hold unbounded
 * memory. A connection is in one of three phases: waiting for a whole request head (from
 * connecting, or from the end of its previous answer: a keep-alive connection waits here),
 * receiving the body, or being answered (no deadline: the handler decides). */
struct dspy__srv_options {
    const char *bind; /* address to listen on; NULL = "127.0.0.1" */
    int port;         /* 0 = an ephemeral port (see dspy__srv_port) */
    unsigned threads; /* polling threads; 0 = one per CPU */
    /* Open connections at most; 0 = as many as RLIMIT_NOFILE allows (raised to its hard
     * max). A connection beyond it closes the oldest one that is not being answered (one
     * waiting for its head first, then one sending its body), or is itself closed. */
    unsigned max_connections;
    unsigned max_connections_per_ip; /* further connections from one address closed; 0 = no cap */
    size_t max_body;                 /* larger request bodies get 413; 0 = 4 MiB */
    /* Bytes of request bodies being received, all connections together, counted by their
     * Content-Length when announced: a body that would pass it gets 503 with Retry-After
     * (a chunked one is cut off); 0 = 64 x max_body. */
    uint64_t max_body_bytes_total;
    unsigned header_timeout_ms; /* a whole request head within this, or closed; 0 = 10 s */
    unsigned body_timeout_ms;   /* the whole body within this of its head, or closed; 0 = 30 s */
    unsigned idle_timeout_s;    /* close connections silent this long; 0 = 120 s */
    size_t conn_memory;         /* per-connection buffer for headers and reads; 0 = 16 KiB */
    /* Called for every fully received request before routing, 413s included (body empty
     * then): for logs and recordings. Runs on a server thread, concurrently. */
    void (*on_request)(struct dspy__srv_req *req, void *ud);
    void *on_request_ud;
    /* Called for every answer as it is handed to the connection (status), the server's own
     * 404/405/413/503 included; dropped connections have none. Server threads,
     * concurrently. NULL = none. */
    void (*on_status)(int status, void *ud);
    void *on_status_ud;
};
#define DSPY__SRV_OPTIONS_INIT \
    {                          \
        .bind = NULL           \
    }

/* Route flags. */
#define DSPY__SRV_NO_PAUSE 1u /* answers ignore dspy__srv_pause (admin endpoints) */

/* An answer. Headers are name, value pairs ending with NULL. The body is copied unless
 * body_free is set, in which case the server takes ownership and frees it with body_free. */
struct dspy__srv_reply {
    int status;
    const char *content_type; /* NULL = no Content-Type */
    const char *const *headers;
    const void *body;
    size_t len;
    void (*body_free)(void *);
};

/* Create a server (not yet listening). NULL with err filled on failure. */
struct dspy__srv *dspy__srv_new(const struct dspy__srv_options *opts, struct dspy_error *err);
/* Route `method` `path` to fn. A path ending in '*' matches by prefix. Call before start.
 * A path that matches with another method gets 405; no match gets 404. */
dspy_status dspy__srv_route(struct dspy__srv *srv, const char *method, const char *path,
                            unsigned flags, dspy__srv_handler fn, void *ud);
/* Raise RLIMIT_NOFILE, start the timer and polling threads and listen. */
dspy_status dspy__srv_start(struct dspy__srv *srv, struct dspy_error *err);
/* The bound port (useful with port 0); -1 before start. */
int dspy__srv_port(const struct dspy__srv *srv);
/* Stop listening, end every waiting request (their connections close), join threads and
 * free. Deferred producers still holding references see DSPY_ECANCELED. NULL is a no-op. */
void dspy__srv_free(struct dspy__srv *srv);
/* Hold back every answer and stream chunk (except NO_PAUSE routes) until now + ms. */
void dspy__srv_pause(struct dspy__srv *srv, uint64_t ms);

struct dspy__srv_stats {
    uint64_t requests;       /* fully received requests */
    uint64_t in_flight;      /* received and not yet finished (answered, dropped or closed) */
    uint64_t in_flight_peak; /* the most in flight at once since the start */
    uint64_t waiting;        /* of those, connections suspended right now */
    uint64_t too_big;        /* 413s for oversized bodies */
    uint64_t connections;    /* open right now */
    uint64_t body_bytes;     /* of request bodies being received, as counted for the cap */
    uint64_t evicted;        /* closed to make room under max_connections */
    uint64_t header_timeouts, body_timeouts; /* closed for a late head or body */
    uint64_t bodies_refused;                 /* 503s (or cut-offs) for max_body_bytes_total */
};
void dspy__srv_stats(struct dspy__srv *srv, struct dspy__srv_stats *out);
/* Pass a timer to the server's timer thread: fn(arg) runs there at due_ns. Keep fn short. */
dspy_status dspy__srv_timer_add(struct dspy__srv *srv, uint64_t due_ns, dspy__timer_fn fn,
                                void *arg);

/* ---- Request accessors: valid on any thread while a reference is held. ---- */

const char *dspy__srv_req_method(const struct dspy__srv_req *req);
const char *dspy__srv_req_path(const struct dspy__srv_req *req); /* without the query */
/* The body (NUL-terminated, borrowed until the request ends); *len its size. Empty for a
 * request whose body was over the limit (then dspy__srv_req_body_size says how big). */
const char *dspy__srv_req_body(const struct dspy__srv_req *req, size_t *len);
uint64_t dspy__srv_req_body_size(const struct dspy__srv_req *req);
/* Header or query value (first match, case-insensitive names for headers); NULL if none.
 * Only on the handler's thread, before the handler returns. */
const char *dspy__srv_req_header(struct dspy__srv_req *req, const char *name);
const char *dspy__srv_req_query(struct dspy__srv_req *req, const char *name);
/* CLOCK_MONOTONIC time the request was fully received. */
uint64_t dspy__srv_req_received_ns(const struct dspy__srv_req *req);
/* Per-request user data, freed with free_fn (may be NULL) when the request ends. */
void dspy__srv_req_set_data(struct dspy__srv_req *req, void *data, void (*free_fn)(void *));
void *dspy__srv_req_data(const struct dspy__srv_req *req);
void dspy__srv_req_ref(struct dspy__srv_req *req);
void dspy__srv_req_unref(struct dspy__srv_req *req);

/* ---- Answers: any thread. due_ns 0 = now. Each returns DSPY_EINVAL if the request was
 * already answered and DSPY_ECANCELED if its connection is gone. ---- */

dspy_status dspy__srv_send(struct dspy__srv_req *req, const struct dspy__srv_reply *r,
                           uint64_t due_ns);
/* Announce the whole body (Content-Length) but send only its first `keep` bytes, then
 * close: a body cut short. */
dspy_status dspy__srv_send_truncated(struct dspy__srv_req *req, const struct dspy__srv_reply *r,
                                     uint64_t due_ns, size_t keep);
/* Close the connection without an answer at due_ns (a drop, or a hold then a drop). */
dspy_status dspy__srv_drop(struct dspy__srv_req *req, uint64_t due_ns);
/* Send status and headers (r->body ignored) at due_ns, then a chunked body from
 * dspy__srv_stream_push() until dspy__srv_stream_end(). */
dspy_status dspy__srv_stream_start(struct dspy__srv_req *req, const struct dspy__srv_reply *r,
                                   uint64_t due_ns);
/* Queue a chunk (copied) to go out no earlier than due_ns; chunks keep their order. */
dspy_status dspy__srv_stream_push(struct dspy__srv_req *req, const void *data, size_t len,
                                  uint64_t due_ns);
/* End the stream once queued chunks are out and due_ns has passed: cleanly, or with
 * `abort` by closing the connection without the terminating chunk. */
dspy_status dspy__srv_stream_end(struct dspy__srv_req *req, uint64_t due_ns, bool abort);

/* An OpenAI-style JSON error {"error": {"message", "type", "param", "code"}}, now.
 * param and code may be NULL (JSON null). Extra headers as in struct dspy__srv_reply. */
dspy_status dspy__srv_send_error(struct dspy__srv_req *req, int status, const char *type,
                                 const char *param, const char *code, const char *const *headers,
                                 const char *fmt, ...) __attribute__((format(printf, 7, 8)));

#endif

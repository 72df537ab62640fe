/* Private parts of the HTTP server module (net layer) shared by server.c (requests, MHD
 * callbacks, lifecycle), server_answer.c (answers and streams) and server_timer.c (the
 * timer thread that wakes suspended connections at their due time). */
#ifndef DSPY_NET_SERVER_INT_H
#define DSPY_NET_SERVER_INT_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "base/buf.h"

#include "net/server.h"

/* One thread sleeping until the earliest entry of a min-heap is due. */
struct dspy__timer {
    pthread_mutex_t lock; /* guards heap and stop */
    pthread_cond_t cond;  /* signalled when the earliest entry changes or on stop */
    struct dspy__timerheap heap;
    pthread_t thread;
    bool running;
    bool stop;
};

dspy_status dspy__timer_init(struct dspy__timer *t);
dspy_status dspy__timer_start(struct dspy__timer *t);
dspy_status dspy__timer_add(struct dspy__timer *t, uint64_t due_ns, dspy__timer_fn fn, void *arg);
/* Join the thread. Entries not yet run stay in the heap for the caller to drain. */
void dspy__timer_stop(struct dspy__timer *t);
void dspy__timer_release(struct dspy__timer *t);

enum dspy__srv_action { DSPY__ACT_NONE, DSPY__ACT_SEND, DSPY__ACT_DROP, DSPY__ACT_STREAM };

struct dspy__srv_mark {
    size_t end;   /* stream bytes up to here ... */
    uint64_t due; /* ... may go out from this time */
};

enum dspy__srv_phase { DSPY__CONN_HEAD, DSPY__CONN_BODY, DSPY__CONN_BUSY };

/* One open connection, for the abuse limits (server.c). Created and freed by MHD's
 * connection notifications; only MHD callbacks of this connection touch it. */
struct dspy__srv_conn {
    int fd;
    atomic_int phase;                   /* enum dspy__srv_phase */
    atomic_uint_fast64_t since;         /* when the phase began (dspy__now_ns) */
    bool shut;                          /* shut down by the server; guarded by srv->lock */
    struct dspy__srv_conn *prev, *next; /* srv->conns, newest first; guarded by srv->lock */
};

struct dspy__srv_req {
    struct dspy__srv *srv;
    struct MHD_Connection *conn;
    struct dspy__srv_conn *track; /* NULL if untracked; only in MHD callbacks */
    uint64_t reserved;            /* bytes counted in srv->body_bytes for this body */
    atomic_int refs;
    atomic_bool closed; /* MHD finished the request; answers are refused */
    char *method;
    char *path;
    struct dspy_buf body;
    uint64_t body_size; /* bytes announced or received, kept or not */
    uint64_t received_ns;
    bool too_big;
    bool busy; /* refused for max_body_bytes_total */
    bool dispatched;
    unsigned route_flags;
    void *data;
    void (*data_free)(void *);

    pthread_mutex_t lock; /* guards the fields below */
    enum dspy__srv_action action;
    int status;
    uint64_t due;
    struct MHD_Response *resp; /* until queued */
    bool suspended;
    uint64_t park_due;    /* timer set while suspended, 0 = none */
    struct dspy_buf sbuf; /* stream bytes not yet sent start at soff */
    size_t soff, sready;  /* sent up to soff; due up to sready */
    struct dspy__srv_mark *marks;
    size_t nmarks, mhead, mcap;
    bool s_ended, s_abort;
    uint64_t s_end_due;

    struct dspy__srv_req *prev, *next; /* srv->waiting, guarded by srv->lock */
};

struct dspy__srv {
    struct dspy__srv_options opts;
    char *bind;
    struct dspy__route *routes; /* server.c */
    size_t nroutes;
    struct MHD_Daemon *daemon;
    int port;
    struct dspy__timer timer;
    pthread_mutex_t lock; /* guards waiting, stopping, conns and n_conns */
    struct dspy__srv_req *waiting;
    struct dspy__srv_conn *conns, *conns_tail; /* newest first */
    size_t n_conns;
    unsigned conn_cap; /* max_connections as resolved at start */
    uint64_t sweep_ns; /* period of the deadline sweep */
    atomic_bool stopping;
    atomic_uint_fast64_t pause_until;
    atomic_uint_fast64_t requests, in_flight, in_flight_peak, n_waiting, too_big;
    atomic_uint_fast64_t body_bytes, evicted, header_timeouts, body_timeouts, bodies_refused;
};

/* Suspend req's connection until due_ns (0: until dspy__srv_wake); req->lock held. False
 * when the server is stopping or out of memory: the caller closes the connection. */
bool dspy__srv_park(struct dspy__srv_req *req, uint64_t due_ns);
/* Resume req's connection if suspended; req->lock held; any thread. */
void dspy__srv_wake(struct dspy__srv_req *req);
/* When something due at due_ns may really go out, after any pause. */
uint64_t dspy__srv_gate(const struct dspy__srv_req *req, uint64_t due_ns);

#endif

/* HTTP server over libmicrohttpd (net layer): epoll polling threads, bounded bodies,
 * routing, and answers that wait without holding a thread. A request that is not ready to
 * answer is suspended in MHD and parked on the server's waiting list; the timer thread (or
 * whoever supplies the answer) resumes it, and MHD calls back to send what is due. */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/status.h"
#include "net/server_int.h"

#define DEFAULT_MAX_BODY ((size_t)4 << 20)
/* An oversized body up to this size is read and thrown away so that the 413 goes out on a
 * connection that stays usable (and the client is not cut off mid-upload); a larger one
 * gets its 413 at once and the connection is closed after it. */
#define DISCARD_MAX ((uint64_t)256 << 20)
#define STREAM_MAX ((size_t)256 << 20) /* stream bytes queued but not yet sent */
#define DEFAULT_HEADER_TIMEOUT_MS 10000
#define DEFAULT_BODY_TIMEOUT_MS 30000
#define SMALL_BODY ((uint64_t)64 << 10) /* bodies this small are not counted in the budget */
#define CONN_HEADROOM 32 /* connections MHD may hold beyond the cap while one is evicted */

struct dspy__route {
    char *method;
    char *path;
    size_t path_len;
    bool prefix;
    unsigned flags;
    dspy__srv_handler fn;
    void *ud;
};

/* ---- Requests ---- */

static void req_free(struct dspy__srv_req *req)
{
    if (req->data_free)
        req->data_free(req->data);
    if (req->resp)
        MHD_destroy_response(req->resp);
    dspy__buf_release(&req->body);
    dspy__buf_release(&req->sbuf);
    dspy_free(req->marks);
    dspy_free(req->method);
    dspy_free(req->path);
    pthread_mutex_destroy(&req->lock);
    dspy_free(req);
}

void dspy__srv_req_ref(struct dspy__srv_req *req)
{
    atomic_fetch_add(&req->refs, 1);
}

void dspy__srv_req_unref(struct dspy__srv_req *req)
{
    if (req && atomic_fetch_sub(&req->refs, 1) == 1)
        req_free(req);
}

static struct dspy__srv_req *req_new(struct dspy__srv *srv, struct MHD_Connection *conn,
                                     const char *method, const char *url)
{
    struct dspy__srv_req *req = dspy_calloc(1, sizeof(*req));
    if (!req)
        return NULL;
    if (pthread_mutex_init(&req->lock, NULL)) {
        dspy_free(req);
        return NULL;
    }
    req->srv = srv;
    req->conn = conn;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    req->track = ci ? ci->socket_context : NULL;
    atomic_init(&req->refs, 1);
    atomic_init(&req->closed, false);
    dspy__buf_init(&req->body, srv->opts.max_body);
    dspy__buf_init(&req->sbuf, STREAM_MAX);
    req->method = dspy_strdup(method);
    req->path = dspy_strdup(url);
    if (!req->method || !req->path) {
        req_free(req);
        return NULL;
    }
    return req;
}

/* ---- Parking: suspend a connection until a due time or until an answer arrives. ---- */

static void on_timer(void *arg);

/* req->lock held. False when the server is stopping (or out of memory): close instead. */
bool dspy__srv_park(struct dspy__srv_req *req, uint64_t due)
{
    struct dspy__srv *srv = req->srv;
    bool ok = false;

    pthread_mutex_lock(&srv->lock);
    if (atomic_load(&srv->stopping))
        goto out;
    if (due) {
        dspy__srv_req_ref(req);
        if (dspy__timer_add(&srv->timer, due, on_timer, req)) {
            atomic_fetch_sub(&req->refs, 1); /* MHD still holds one */
            goto out;
        }
    }
    req->prev = NULL;
    req->next = srv->waiting;
    if (srv->waiting)
        srv->waiting->prev = req;
    srv->waiting = req;
    atomic_fetch_add(&srv->n_waiting, 1);
    req->suspended = true;
    req->park_due = due;
    MHD_suspend_connection(req->conn);
    ok = true;
out:
    pthread_mutex_unlock(&srv->lock);
    return ok;
}

/* req->lock held; any thread. */
void dspy__srv_wake(struct dspy__srv_req *req)
{
    struct dspy__srv *srv = req->srv;
    if (!req->suspended)
        return;
    pthread_mutex_lock(&srv->lock);
    if (req->prev)
        req->prev->next = req->next;
    else
        srv->waiting = req->next;
    if (req->next)
        req->next->prev = req->prev;
    req->prev = req->next = NULL;
    atomic_fetch_sub(&srv->n_waiting, 1);
    req->suspended = false;
    req->park_due = 0;
    MHD_resume_connection(req->conn);
    pthread_mutex_unlock(&srv->lock);
}

static void on_timer(void *arg)
{
    struct dspy__srv_req *req = arg;
    pthread_mutex_lock(&req->lock);
    dspy__srv_wake(req);
    pthread_mutex_unlock(&req->lock);
    dspy__srv_req_unref(req);
}

/* The time something due at `due` may really go out, after any pause. */
uint64_t dspy__srv_gate(const struct dspy__srv_req *req, uint64_t due)
{
    if (req->route_flags & DSPY__SRV_NO_PAUSE)
        return due;
    uint64_t p = atomic_load(&req->srv->pause_until);
    return p > due ? p : due;
}

/* ---- Abuse limits: phases and deadlines, the connection cap, the body-bytes budget ---- */

static void set_phase(struct dspy__srv_conn *c, enum dspy__srv_phase phase)
{
    if (!c)
        return;
    atomic_store(&c->since, dspy__now_ns());
    atomic_store(&c->phase, (int)phase);
}

/* Close a connection from outside its MHD thread: shutdown() makes MHD read end-of-file
 * and close it the usual way (requests ended, callbacks run). srv->lock held, which keeps
 * the socket open: MHD's close notification (on_connection) takes that lock before MHD
 * closes the socket. */
static void shut(struct dspy__srv_conn *c)
{
    if (c->shut || c->fd < 0)
        return;
    c->shut = true;
    shutdown(c->fd, SHUT_RDWR);
}

/* Make room for `newest` under the cap: the oldest connection waiting for its head, else
 * the oldest receiving a body, else newest itself. srv->lock held. */
static void evict_one(struct dspy__srv *srv, struct dspy__srv_conn *newest)
{
    struct dspy__srv_conn *pick = NULL;
    for (int want = DSPY__CONN_HEAD; want <= DSPY__CONN_BODY && !pick; want++)
        for (struct dspy__srv_conn *c = srv->conns_tail; c && !pick; c = c->prev)
            if (c != newest && !c->shut && atomic_load(&c->phase) == want)
                pick = c;
    shut(pick ? pick : newest);
    atomic_fetch_add(&srv->evicted, 1);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct dspy__srv *srv = cls;
    struct dspy__srv_conn *c = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!(c = dspy_calloc(1, sizeof(*c))))
            return; /* untracked: served, but never timed out or evicted */
        c->fd = ci ? ci->connect_fd : -1;
        atomic_init(&c->phase, DSPY__CONN_HEAD);
        atomic_init(&c->since, dspy__now_ns());
        pthread_mutex_lock(&srv->lock);
        c->next = srv->conns;
        if (srv->conns)
            srv->conns->prev = c;
        else
            srv->conns_tail = c;
        srv->conns = c;
        if (++srv->n_conns > srv->conn_cap)
            evict_one(srv, c);
        pthread_mutex_unlock(&srv->lock);
        *socket_context = c;
        return;
    }
    if (!c)
        return;
    pthread_mutex_lock(&srv->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        srv->conns_tail = c->prev;
    srv->n_conns--;
    pthread_mutex_unlock(&srv->lock);
    dspy_free(c);
    *socket_context = NULL;
}

/* Timer thread, every sweep_ns: close connections past their head or body deadline. */
static void sweep(void *arg)
{
    struct dspy__srv *srv = arg;
    uint64_t now = dspy__now_ns();
    uint64_t head_ns = (uint64_t)srv->opts.header_timeout_ms * 1000000u;
    uint64_t body_ns = (uint64_t)srv->opts.body_timeout_ms * 1000000u;
    pthread_mutex_lock(&srv->lock);
    for (struct dspy__srv_conn *c = srv->conns; c; c = c->next) {
        int phase = atomic_load(&c->phase);
        uint64_t since = atomic_load(&c->since);
        if (c->shut || phase == DSPY__CONN_BUSY || now < since)
            continue;
        if (phase == DSPY__CONN_HEAD && now - since > head_ns) {
            shut(c);
            atomic_fetch_add(&srv->header_timeouts, 1);
        } else if (phase == DSPY__CONN_BODY && now - since > body_ns) {
            shut(c);
            atomic_fetch_add(&srv->body_timeouts, 1);
        }
    }
    bool stopping = atomic_load(&srv->stopping);
    pthread_mutex_unlock(&srv->lock);
    if (!stopping)
        dspy__timer_add(&srv->timer, now + srv->sweep_ns, sweep, srv);
}

/* Have `need` bytes of req's body counted against max_body_bytes_total (its announced
 * length, or what a chunked one holds so far); false, counting nothing more, when they do
 * not fit. Bodies up to SMALL_BODY are not counted: the connection cap bounds them, and
 * ordinary requests keep being served while large bodies fill the budget. */
static bool reserve(struct dspy__srv_req *req, uint64_t need)
{
    struct dspy__srv *srv = req->srv;
    if (need <= SMALL_BODY || need <= req->reserved)
        return true;
    uint64_t more = need - req->reserved;
    uint64_t before = atomic_fetch_add(&srv->body_bytes, more);
    if (before + more > srv->opts.max_body_bytes_total) {
        atomic_fetch_sub(&srv->body_bytes, more);
        return false;
    }
    req->reserved = need;
    return true;
}

/* ---- MHD callbacks ---- */

static const struct dspy__route *find_route(struct dspy__srv *srv, const char *method,
                                            const char *path, char *allow, size_t allow_len)
{
    allow[0] = '\0';
    for (size_t i = 0; i < srv->nroutes; i++) {
        const struct dspy__route *r = &srv->routes[i];
        bool match = r->prefix ? !strncmp(path, r->path, r->path_len) : !strcmp(path, r->path);
        if (!match)
            continue;
        if (!strcmp(method, r->method))
            return r;
        size_t used = strlen(allow);
        snprintf(allow + used, allow_len - used, "%s%s", used ? ", " : "", r->method);
    }
    return NULL;
}

static void dispatch(struct dspy__srv_req *req)
{
    struct dspy__srv *srv = req->srv;
    char allow[128];

    req->dispatched = true;
    req->received_ns = dspy__now_ns();
    set_phase(req->track, DSPY__CONN_BUSY);
    atomic_fetch_add(&srv->requests, 1);
    uint_fast64_t now = atomic_fetch_add(&srv->in_flight, 1) + 1;
    uint_fast64_t peak = atomic_load(&srv->in_flight_peak);
    while (now > peak && !atomic_compare_exchange_weak(&srv->in_flight_peak, &peak, now))
        ;
    if (srv->opts.on_request)
        srv->opts.on_request(req, srv->opts.on_request_ud);
    if (req->too_big) {
        atomic_fetch_add(&srv->too_big, 1);
        dspy__srv_send_error(req, 413, "invalid_request_error", NULL, "request_too_large", NULL,
                             "Request body of %llu bytes is over the limit of %zu bytes.",
                             (unsigned long long)req->body_size, srv->opts.max_body);
        return;
    }
    if (req->busy) {
        static const char *const hdr[] = { "Retry-After", "1", NULL };
        atomic_fetch_add(&srv->bodies_refused, 1);
        dspy__srv_send_error(req, 503, "server_error", NULL, "server_busy", hdr,
                             "The server is receiving %llu bytes of request bodies, its limit; "
                             "retry shortly.",
                             (unsigned long long)srv->opts.max_body_bytes_total);
        return;
    }
    const struct dspy__route *r = find_route(srv, req->method, req->path, allow, sizeof(allow));
    if (r) {
        req->route_flags = r->flags;
        r->fn(req, r->ud);
    } else if (allow[0]) {
        const char *hdr[] = { "Allow", allow, NULL };
        dspy__srv_send_error(req, 405, "invalid_request_error", NULL, "method_not_allowed", hdr,
                             "Method %s is not allowed for %s; use %s.", req->method, req->path,
                             allow);
    } else {
        dspy__srv_send_error(req, 404, "invalid_request_error", NULL, "unknown_url", NULL,
                             "Unknown request URL: %s %s.", req->method, req->path);
    }
}

/* After the handler and after every resume: send, drop or wait, as due. MHD thread. The
 * response is queued outside req->lock: MHD takes the response's own lock, and calls the
 * stream reader (which takes req->lock) with it held. */
static enum MHD_Result advance(struct dspy__srv_req *req)
{
    enum MHD_Result r = MHD_NO;
    struct MHD_Response *resp = NULL;
    unsigned status = 0;
    pthread_mutex_lock(&req->lock);
    if (atomic_load(&req->srv->stopping))
        goto out;
    uint64_t due = dspy__srv_gate(req, req->due);
    bool later = due > dspy__now_ns();
    switch (req->action) {
    case DSPY__ACT_NONE: r = dspy__srv_park(req, 0) ? MHD_YES : MHD_NO; break;
    case DSPY__ACT_DROP: r = later && dspy__srv_park(req, due) ? MHD_YES : MHD_NO; break;
    case DSPY__ACT_SEND:
    case DSPY__ACT_STREAM:
        if (later) {
            r = dspy__srv_park(req, due) ? MHD_YES : MHD_NO;
            break;
        }
        resp = req->resp;
        status = (unsigned)req->status;
        req->resp = NULL;
        break;
    }
out:
    pthread_mutex_unlock(&req->lock);
    if (resp) {
        /* Counted before it can reach the client, so a client that reads the counters
         * after its answer sees it. */
        if (req->srv->opts.on_status)
            req->srv->opts.on_status((int)status, req->srv->opts.on_status_ud);
        r = MHD_queue_response(req->conn, status, resp);
        MHD_destroy_response(resp);
    }
    return r;
}

static enum MHD_Result on_headers(struct dspy__srv_req *req)
{
    struct dspy__srv *srv = req->srv;
    const char *cl = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    set_phase(req->track, DSPY__CONN_BODY);
    if (!cl)
        return MHD_YES; /* no length announced (chunked): counted as it arrives */
    unsigned long long n = strtoull(cl, NULL, 10);
    if (n <= srv->opts.max_body) {
        if (reserve(req, n))
            return MHD_YES;
        req->busy = true; /* answered at once, without reading the body */
        dispatch(req);
        return advance(req);
    }
    req->too_big = true;
    req->body_size = n;
    const char *expect = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_EXPECT);
    /* A client waiting for "100 Continue" has sent nothing yet: answer without reading. */
    if (n > DISCARD_MAX || (expect && !strcasecmp(expect, "100-continue"))) {
        dispatch(req);
        return advance(req);
    }
    req->body_size = 0;
    return MHD_YES;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_size, void **con_cls)
{
    struct dspy__srv *srv = cls;
    struct dspy__srv_req *req = *con_cls;
    (void)version;

    if (!req) {
        if (!(req = req_new(srv, conn, method, url)))
            return MHD_NO;
        *con_cls = req;
        return on_headers(req);
    }
    if (*upload_size) {
        struct dspy__srv_conn *c = req->track;
        if (c && dspy__now_ns() - atomic_load(&c->since) >
                     (uint64_t)srv->opts.body_timeout_ms * 1000000u) {
            atomic_fetch_add(&srv->body_timeouts, 1);
            return MHD_NO; /* too slow: close */
        }
        if (!req->too_big && !reserve(req, req->body.len + *upload_size)) {
            atomic_fetch_add(&srv->bodies_refused, 1);
            return MHD_NO; /* a chunked body over the budget: cut off */
        }
        if (!req->too_big && dspy__buf_add(&req->body, upload_data, *upload_size)) {
            req->too_big = true;
            dspy__buf_release(&req->body);
        }
        req->body_size += *upload_size;
        *upload_size = 0;
        return req->too_big && req->body_size > DISCARD_MAX ? MHD_NO : MHD_YES;
    }
    if (!req->dispatched)
        dispatch(req);
    return advance(req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct dspy__srv *srv = cls;
    struct dspy__srv_req *req = *con_cls;
    (void)conn;
    (void)toe;
    if (!req)
        return;
    *con_cls = NULL;
    atomic_store(&req->closed, true);
    if (req->dispatched)
        atomic_fetch_sub(&srv->in_flight, 1);
    if (req->reserved)
        atomic_fetch_sub(&srv->body_bytes, req->reserved);
    req->reserved = 0;
    set_phase(req->track, DSPY__CONN_HEAD); /* a kept-alive connection waits for a head */
    req->track = NULL;
    dspy__srv_req_unref(req);
}

/* ---- Server lifecycle ---- */

struct dspy__srv *dspy__srv_new(const struct dspy__srv_options *opts, struct dspy_error *err)
{
    struct dspy__srv *srv = dspy_calloc(1, sizeof(*srv));
    if (!srv)
        goto nomem;
    srv->opts = *opts;
    if (!srv->opts.max_body)
        srv->opts.max_body = DEFAULT_MAX_BODY;
    if (!srv->opts.idle_timeout_s)
        srv->opts.idle_timeout_s = 120;
    if (!srv->opts.header_timeout_ms)
        srv->opts.header_timeout_ms = DEFAULT_HEADER_TIMEOUT_MS;
    if (!srv->opts.body_timeout_ms)
        srv->opts.body_timeout_ms = DEFAULT_BODY_TIMEOUT_MS;
    if (!srv->opts.max_body_bytes_total)
        srv->opts.max_body_bytes_total = 64 * (uint64_t)srv->opts.max_body;
    /* The sweep runs often enough to close a connection within a quarter of its deadline. */
    unsigned shortest = srv->opts.header_timeout_ms < srv->opts.body_timeout_ms
                            ? srv->opts.header_timeout_ms
                            : srv->opts.body_timeout_ms;
    srv->sweep_ns = (uint64_t)shortest * 250000u;
    if (srv->sweep_ns < 5000000u)
        srv->sweep_ns = 5000000u;
    if (srv->sweep_ns > 250000000u)
        srv->sweep_ns = 250000000u;
    /* MHD's default is 32 KiB, zeroed per request: at 10,000 connections the smaller pool
     * halves the memory and the memset, and still holds any sane request head. */
    if (!srv->opts.conn_memory)
        srv->opts.conn_memory = 16 * 1024;
    srv->bind = dspy_strdup(opts->bind ? opts->bind : "127.0.0.1");
    srv->opts.bind = srv->bind;
    srv->port = -1;
    if (!srv->bind)
        goto free_srv;
    if (dspy__timer_init(&srv->timer))
        goto free_bind;
    if (pthread_mutex_init(&srv->lock, NULL))
        goto free_timer;
    atomic_init(&srv->stopping, false);
    atomic_init(&srv->pause_until, 0);
    atomic_init(&srv->requests, 0);
    atomic_init(&srv->in_flight, 0);
    atomic_init(&srv->in_flight_peak, 0);
    atomic_init(&srv->n_waiting, 0);
    atomic_init(&srv->too_big, 0);
    atomic_init(&srv->body_bytes, 0);
    atomic_init(&srv->evicted, 0);
    atomic_init(&srv->header_timeouts, 0);
    atomic_init(&srv->body_timeouts, 0);
    atomic_init(&srv->bodies_refused, 0);
    return srv;
free_timer:
    dspy__timer_release(&srv->timer);
free_bind:
    dspy_free(srv->bind);
free_srv:
    dspy_free(srv);
nomem:
    dspy__err(err, DSPY_ENOMEM, "out of memory creating the HTTP server");
    return NULL;
}

dspy_status dspy__srv_route(struct dspy__srv *srv, const char *method, const char *path,
                            unsigned flags, dspy__srv_handler fn, void *ud)
{
    struct dspy__route *v = dspy_realloc(srv->routes, (srv->nroutes + 1) * sizeof(*v));
    if (!v)
        return DSPY_ENOMEM;
    srv->routes = v;
    struct dspy__route *r = &v[srv->nroutes];
    size_t len = strlen(path);
    r->prefix = len && path[len - 1] == '*';
    r->path_len = r->prefix ? len - 1 : len;
    r->method = dspy_strdup(method);
    r->path = dspy_strndup(path, r->path_len);
    r->flags = flags;
    r->fn = fn;
    r->ud = ud;
    if (!r->method || !r->path) {
        dspy_free(r->method);
        dspy_free(r->path);
        return DSPY_ENOMEM;
    }
    srv->nroutes++;
    return DSPY_OK;
}

/* Lift the soft open-files limit to the hard one; returns the limit now in force. */
static rlim_t raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl))
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

dspy_status dspy__srv_start(struct dspy__srv *srv, struct dspy_error *err)
{
    struct sockaddr_in sa4;
    struct sockaddr_in6 sa6;
    struct sockaddr *sa;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;

    memset(&sa4, 0, sizeof(sa4));
    memset(&sa6, 0, sizeof(sa6));
    if (srv->opts.port < 0 || srv->opts.port > 65535)
        return dspy__err(err, DSPY_EINVAL, "port %d is out of range", srv->opts.port);
    if (inet_pton(AF_INET, srv->bind, &sa4.sin_addr) == 1) {
        sa4.sin_family = AF_INET;
        sa4.sin_port = htons((uint16_t)srv->opts.port);
        sa = (struct sockaddr *)&sa4;
    } else if (inet_pton(AF_INET6, srv->bind, &sa6.sin6_addr) == 1) {
        sa6.sin6_family = AF_INET6;
        sa6.sin6_port = htons((uint16_t)srv->opts.port);
        sa = (struct sockaddr *)&sa6;
        flags |= MHD_USE_IPv6;
    } else {
        return dspy__err(err, DSPY_EINVAL, "bind address '%s' is not an IP address", srv->bind);
    }

    rlim_t nofile = raise_nofile();
    /* MHD's own limit leaves headroom above the cap, so that a connection beyond the cap is
     * still accepted and can evict an older one instead of waiting in the backlog. */
    unsigned avail = nofile > 128 ? (unsigned)(nofile > 1000000 ? 1000000 : nofile) - 64 : 64;
    unsigned cap = srv->opts.max_connections;
    if (!cap || cap > avail - CONN_HEADROOM)
        cap = avail - CONN_HEADROOM;
    unsigned limit = cap + CONN_HEADROOM;
    srv->conn_cap = cap;
    unsigned threads = srv->opts.threads;
    if (!threads) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (unsigned)n : 1;
    }

    if (dspy__timer_start(&srv->timer))
        return dspy__err(err, DSPY_ENOMEM, "cannot start the timer thread");
    struct MHD_OptionItem ops[] = {
        { MHD_OPTION_SOCK_ADDR, 0, sa },
        { MHD_OPTION_CONNECTION_LIMIT, (intptr_t)limit, NULL },
        { MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)srv->opts.idle_timeout_s, NULL },
        { MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, srv },
        { MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, srv },
        { MHD_OPTION_PER_IP_CONNECTION_LIMIT, (intptr_t)srv->opts.max_connections_per_ip, NULL },
        { MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096, NULL },
        { MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)srv->opts.conn_memory, NULL },
        { threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, (intptr_t)threads, NULL },
        { MHD_OPTION_END, 0, NULL },
    };
    srv->daemon = MHD_start_daemon(flags, (uint16_t)srv->opts.port, NULL, NULL, on_access, srv,
                                   MHD_OPTION_ARRAY, ops, MHD_OPTION_END);
    if (!srv->daemon) {
        dspy__timer_stop(&srv->timer);
        return dspy__err(err, DSPY_EIO, "cannot listen on %s:%d (port in use?)", srv->bind,
                         srv->opts.port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? (int)info->port : srv->opts.port;
    dspy__timer_add(&srv->timer, dspy__now_ns() + srv->sweep_ns, sweep, srv);
    return DSPY_OK;
}

int dspy__srv_port(const struct dspy__srv *srv)
{
    return srv->port;
}

void dspy__srv_pause(struct dspy__srv *srv, uint64_t ms)
{
    atomic_store(&srv->pause_until, dspy__now_ns() + ms * 1000000u);
}

dspy_status dspy__srv_timer_add(struct dspy__srv *srv, uint64_t due_ns, dspy__timer_fn fn,
                                void *arg)
{
    return dspy__timer_add(&srv->timer, due_ns, fn, arg);
}

void dspy__srv_stats(struct dspy__srv *srv, struct dspy__srv_stats *out)
{
    out->requests = atomic_load(&srv->requests);
    out->in_flight = atomic_load(&srv->in_flight);
    out->in_flight_peak = atomic_load(&srv->in_flight_peak);
    out->waiting = atomic_load(&srv->n_waiting);
    out->too_big = atomic_load(&srv->too_big);
    pthread_mutex_lock(&srv->lock);
    out->connections = srv->n_conns;
    pthread_mutex_unlock(&srv->lock);
    out->body_bytes = atomic_load(&srv->body_bytes);
    out->evicted = atomic_load(&srv->evicted);
    out->header_timeouts = atomic_load(&srv->header_timeouts);
    out->body_timeouts = atomic_load(&srv->body_timeouts);
    out->bodies_refused = atomic_load(&srv->bodies_refused);
}

void dspy__srv_free(struct dspy__srv *srv)
{
    struct dspy__timer_entry e;
    if (!srv)
        return;
    if (srv->daemon) {
        pthread_mutex_lock(&srv->lock);
        atomic_store(&srv->stopping, true);
        pthread_mutex_unlock(&srv->lock);
        dspy__timer_stop(&srv->timer);
        /* MHD must not be stopped with suspended connections: resume every one; they see
         * `stopping` and close. */
        for (;;) {
            pthread_mutex_lock(&srv->lock);
            struct dspy__srv_req *req = srv->waiting;
            if (req)
                dspy__srv_req_ref(req);
            pthread_mutex_unlock(&srv->lock);
            if (!req)
                break;
            pthread_mutex_lock(&req->lock);
            dspy__srv_wake(req);
            pthread_mutex_unlock(&req->lock);
            dspy__srv_req_unref(req);
        }
        MHD_stop_daemon(srv->daemon);
    }
    while (dspy__timerheap_pop(&srv->timer.heap, &e))
        if (e.fn == on_timer)
            dspy__srv_req_unref(e.arg);
    dspy__timer_release(&srv->timer);
    for (size_t i = 0; i < srv->nroutes; i++) {
        dspy_free(srv->routes[i].method);
        dspy_free(srv->routes[i].path);
    }
    dspy_free(srv->routes);
    pthread_mutex_destroy(&srv->lock);
    dspy_free(srv->bind);
    dspy_free(srv);
}

/* ---- Accessors ---- */

const char *dspy__srv_req_method(const struct dspy__srv_req *req)
{
    return req->method;
}

const char *dspy__srv_req_path(const struct dspy__srv_req *req)
{
    return req->path;
}

const char *dspy__srv_req_body(const struct dspy__srv_req *req, size_t *len)
{
    if (len)
        *len = req->body.len;
    return req->body.ptr ? req->body.ptr : "";
}

uint64_t dspy__srv_req_body_size(const struct dspy__srv_req *req)
{
    return req->too_big ? req->body_size : req->body.len;
}

const char *dspy__srv_req_header(struct dspy__srv_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *dspy__srv_req_query(struct dspy__srv_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

uint64_t dspy__srv_req_received_ns(const struct dspy__srv_req *req)
{
    return req->received_ns;
}

void dspy__srv_req_set_data(struct dspy__srv_req *req, void *data, void (*free_fn)(void *))
{
    req->data = data;
    req->data_free = free_fn;
}

void *dspy__srv_req_data(const struct dspy__srv_req *req)
{
    return req->data;
}

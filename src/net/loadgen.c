/* The load generator's event loop (net layer): one thread per core, each with its own epoll
 * set, keep-alive connections opened on demand, requests written straight from their
 * pre-built bytes, and every request stamped with the time the schedule intended. Nothing is
 * allocated per request: connections own fixed buffers and the read buffer is per thread. */
#define _GNU_SOURCE /* epoll_pwait2 */
#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/heap.h"
#include "net/loadgen_int.h"

enum conn_state { C_CLOSED = 0, C_CONNECTING, C_WRITING, C_READING, C_IDLE };

struct conn {
    int fd;
    enum conn_state st;
    uint32_t idx, gen; /* gen tells a stale epoll event from a reopened socket */
    bool fresh;        /* opened for the request it carries */
    bool parser_ready;
    uint64_t seq, intended, sent, deadline;
    uint32_t tmpl, user;
    size_t woff;
    struct dspy__lg_parser p;
    struct conn *next; /* idle or unused stack */
};

struct user_slot {
    uint64_t ready_ns;
    uint32_t user;
};

struct worker {
    const struct dspy_loadgen_options *o;
    const struct sockaddr_storage *addr;
    socklen_t addrlen;
    unsigned idx, nthreads;
    int epfd;
    struct conn *conns;
    unsigned nconns, cap, inflight;
    struct conn *idle, *unused;
    char *rbuf;
    size_t rcap;
    bool open_loop, issuing;
    bool exhausted; /* no arrival left within the bounds */
    struct dspy_schedule sched;
    uint64_t gseq; /* next global arrival number the schedule will produce */
    bool have_next;
    uint64_t next_seq, next_ns;
    uint32_t next_user;
    struct dspy__heap heap; /* closed loop: user_slots by ready time */
    uint64_t rng[4];
    _Atomic uint64_t *closed_seq; /* closed loop: shared request numbering */
    uint64_t t0, end_ns, drain_end;
    volatile const int *stop;
    struct dspy_loadgen_stats st;
    dspy_status rc;
};

static const char *const outcome_names[DSPY_LG_NOUTCOMES] = {
    "ok", "http", "timeout", "connect", "disconnect", "truncated", "malformed",
};

const char *dspy_loadgen_outcome_name(enum dspy_loadgen_outcome o)
{
    return (unsigned)o < DSPY_LG_NOUTCOMES ? outcome_names[o] : "unknown";
}

/* ---- closed-loop users: the base heap by ready time ---- */

static bool ready_before(const void *a, const void *b)
{
    return ((const struct user_slot *)a)->ready_ns < ((const struct user_slot *)b)->ready_ns;
}

static const struct dspy__heap_type user_heap = {
    .size = sizeof(struct user_slot),
    .before = ready_before,
};

/* Room for every user was reserved at start, so this cannot fail. */
static void heap_push(struct worker *w, uint64_t ready, uint32_t user)
{
    struct user_slot u = { ready, user };
    dspy_status rc = dspy__heap_push(&w->heap, &u);
    assert(rc == DSPY_OK);
    (void)rc;
}

/* ---- the next arrival this thread owns ---- */

static void advance_open(struct worker *w)
{
    double t;
    w->have_next = false;
    while (dspy_schedule_next(&w->sched, &t)) {
        uint64_t seq = w->gseq++;
        if ((w->o->max_requests && seq >= w->o->max_requests) ||
            (w->o->duration_s > 0 && t >= w->o->duration_s))
            break;
        if (seq % w->nthreads == w->idx) {
            w->have_next = true;
            w->next_seq = seq;
            w->next_ns = w->t0 + (uint64_t)(t * 1e9);
            return;
        }
    }
    w->exhausted = true;
}

static void peek_closed(struct worker *w)
{
    const struct user_slot *top = dspy__heap_top(&w->heap);
    w->have_next = top != NULL;
    if (top) {
        w->next_ns = top->ready_ns;
        w->next_user = top->user;
    }
}

/* ---- connections ---- */

static void conn_close(struct worker *w, struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->st = C_CLOSED;
    c->gen++;
    c->next = w->unused;
    w->unused = c;
}

static void deliver(struct worker *w, struct conn *c, enum dspy_loadgen_outcome oc, uint64_t now)
{
    struct dspy__lg_parser *p = &c->p;
    struct dspy_loadgen_result r;
    memset(&r, 0, sizeof(r));
    r.seq = c->seq;
    r.template_idx = c->tmpl;
    r.user = c->user;
    r.intended_ns = c->intended;
    r.sent_ns = c->sent;
    r.first_byte_ns = p->h.first_byte_ns;
    r.done_ns = now;
    r.outcome = oc;
    r.status = p->h.status;
    r.stream = p->h.stream;
    r.new_connection = c->fresh;
    r.usage_tokens = p->usage_tokens;
    r.prompt_tokens = p->prompt_tokens;
    r.bytes = p->h.bytes;
    if (p->h.stream) {
        r.first_token_ns = p->first_token_ns;
        r.first_content_ns = p->first_content_ns;
        r.last_token_ns = p->last_token_ns;
        r.chunks = p->chunks;
        r.chunk_ns = p->chunk_ns;
        r.nchunk_ns = p->chunks < p->chunk_cap ? p->chunks : p->chunk_cap;
    }
    w->inflight--;
    w->st.completed++;
    if (w->o->on_result)
        w->o->on_result(w->o->userdata, w->idx, &r);
    if (!w->open_loop) {
        double think = w->o->think_s;
        if (think > 0 && w->o->think_exponential)
            think *= dspy__lg_exponential(w->rng);
        heap_push(w, now + (uint64_t)(think * 1e9), c->user);
    }
}

static void fail(struct worker *w, struct conn *c, enum dspy_loadgen_outcome oc, uint64_t now)
{
    deliver(w, c, oc, now);
    conn_close(w, c);
}

static void do_write(struct worker *w, struct conn *c)
{
    const struct dspy_loadgen_request *rq = &w->o->requests[c->tmpl];
    while (c->woff < rq->len) {
        ssize_t n = send(c->fd, rq->bytes + c->woff, rq->len - c->woff, MSG_NOSIGNAL);
        if (n > 0) {
            c->woff += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        fail(w, c, c->fresh ? DSPY_LG_CONNECT : DSPY_LG_DISCONNECT, dspy_clock_ns());
        return;
    }
    c->st = C_READING;
}

static void do_read(struct worker *w, struct conn *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, w->rbuf, w->rcap, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        uint64_t now = dspy_clock_ns();
        if (c->st == C_IDLE) { /* the server closed a kept-alive connection, or spoke out
                                * of turn: either way the connection is done */
            conn_close(w, c);
            return;
        }
        if (n <= 0) {
            if (n == 0 && dspy__lg_parser_eof(&c->p) == LG_DONE) {
                deliver(w, c, dspy__lg_parser_outcome(&c->p), now);
                conn_close(w, c);
            } else {
                fail(w, c, c->p.h.bytes ? DSPY_LG_TRUNCATED : DSPY_LG_DISCONNECT, now);
            }
            return;
        }
        size_t used;
        int r = dspy__lg_parser_feed(&c->p, w->rbuf, (size_t)n, now, &used);
        if (r == LG_ERROR) {
            fail(w, c, DSPY_LG_MALFORMED, now);
            return;
        }
        if (r == LG_DONE) {
            bool keep = c->p.h.keepalive && used == (size_t)n;
            deliver(w, c, dspy__lg_parser_outcome(&c->p), now);
            if (!keep) {
                conn_close(w, c);
            } else {
                c->st = C_IDLE;
                c->next = w->idle;
                w->idle = c;
            }
            return;
        }
    }
}

static int open_socket(struct worker *w, struct conn *c)
{
    int fd = socket(w->addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->fd = fd;
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                              .data.u64 = ((uint64_t)c->gen << 32) | c->idx };
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return -1;
    w->st.connections_opened++;
    if (connect(fd, (const struct sockaddr *)w->addr, w->addrlen) == 0)
        return 1;
    return errno == EINPROGRESS ? 0 : -1;
}

static void start(struct worker *w, struct conn *c, uint64_t seq, uint64_t intended, uint32_t user,
                  uint64_t now)
{
    if (!c->parser_ready) {
        if (dspy__lg_parser_init(&c->p, w->o->parse, w->o->max_body, w->o->chunk_cap)) {
            w->rc = DSPY_ENOMEM;
            return;
        }
        c->parser_ready = true;
    }
    dspy__lg_parser_reset(&c->p);
    c->seq = seq;
    c->intended = intended;
    c->user = user;
    c->tmpl = (uint32_t)(seq % w->o->nrequests);
    if (w->o->random_requests) {
        uint64_t x = w->o->seed ^ (seq * 0x9e3779b97f4a7c15ull);
        c->tmpl = (uint32_t)(dspy__lg_splitmix(&x) % w->o->nrequests);
    }
    c->sent = now;
    c->deadline = now + (uint64_t)(w->o->timeout_s * 1e9);
    c->woff = 0;
    w->inflight++;
    w->st.sent++;
    if (c->st == C_IDLE) {
        c->fresh = false;
        c->st = C_WRITING;
        do_write(w, c);
        return;
    }
    c->fresh = true;
    int r = open_socket(w, c);
    if (r < 0) {
        fail(w, c, DSPY_LG_CONNECT, dspy_clock_ns());
        return;
    }
    c->st = r ? C_WRITING : C_CONNECTING;
    if (r)
        do_write(w, c);
}

static struct conn *take_conn(struct worker *w)
{
    struct conn *c = w->idle ? w->idle : w->unused;
    if (!c)
        return NULL;
    if (c == w->idle)
        w->idle = c->next;
    else
        w->unused = c->next;
    return c;
}

static bool can_dispatch(const struct worker *w)
{
    return w->have_next && w->inflight < w->cap && (w->idle || w->unused);
}

static void dispatch(struct worker *w, uint64_t now)
{
    while (w->issuing && can_dispatch(w) && w->next_ns <= now && !w->rc) {
        uint64_t seq = w->next_seq, intended = w->next_ns;
        uint32_t user = 0;
        if (w->open_loop) {
            advance_open(w);
        } else {
            user = w->next_user;
            seq = atomic_fetch_add(w->closed_seq, 1);
            if (w->o->max_requests && seq >= w->o->max_requests) {
                w->have_next = false;
                w->exhausted = true;
                dspy__heap_clear(&w->heap);
                return;
            }
            dspy__heap_pop(&w->heap, NULL);
        }
        start(w, take_conn(w), seq, intended, user, now);
        if (!w->open_loop)
            peek_closed(w);
        now = dspy_clock_ns();
    }
}

/* Issuing ends: count what the schedule wanted before now but never got out. */
static void end_issuing(struct worker *w, uint64_t now)
{
    w->issuing = false;
    w->st.issue_end_ns = now;
    w->drain_end = now + (uint64_t)(w->o->drain_s * 1e9);
    if (w->open_loop)
        while (w->have_next && w->next_ns <= now) {
            w->st.scheduled++;
            advance_open(w);
        }
    w->st.scheduled += w->st.sent;
}

static void sweep(struct worker *w, uint64_t now, bool all)
{
    for (unsigned i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        if ((c->st == C_CONNECTING || c->st == C_WRITING || c->st == C_READING) &&
            (all || c->deadline <= now)) {
            if (all)
                w->st.abandoned++;
            fail(w, c, DSPY_LG_TIMEOUT, now);
        }
    }
}

static void handle(struct worker *w, struct conn *c, uint32_t events)
{
    if (c->st == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if ((events & (EPOLLERR | EPOLLHUP)) ||
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
            fail(w, c, DSPY_LG_CONNECT, dspy_clock_ns());
            return;
        }
        if (!(events & EPOLLOUT))
            return;
        c->st = C_WRITING;
    }
    if (c->st == C_WRITING && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
        do_write(w, c);
    if ((c->st == C_READING || c->st == C_IDLE || c->st == C_WRITING) &&
        (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        do_read(w, c);
}

static void loop(struct worker *w)
{
    struct epoll_event evs[256];
    uint64_t next_sweep = 0;
    while (!w->rc) {
        uint64_t now = dspy_clock_ns();
        if (!w->open_loop)
            peek_closed(w);
        if (w->issuing && ((w->stop && *w->stop) || now >= w->end_ns || w->exhausted))
            end_issuing(w, now);
        if (w->issuing)
            dispatch(w, now);
        if (!w->open_loop)
            peek_closed(w);
        if (!w->issuing && !w->inflight)
            break;
        if (!w->issuing && now >= w->drain_end) {
            sweep(w, now, true);
            break;
        }
        if (now >= next_sweep) {
            sweep(w, now, false);
            next_sweep = now + 5000000;
        }
        uint64_t wake = next_sweep;
        if (w->issuing && can_dispatch(w) && w->next_ns < wake)
            wake = w->next_ns;
        if (w->issuing && w->end_ns < wake)
            wake = w->end_ns;
        now = dspy_clock_ns();
        uint64_t d = wake > now ? wake - now : 0;
        struct timespec ts = { (time_t)(d / 1000000000u), (long)(d % 1000000000u) };
        int n = epoll_pwait2(w->epfd, evs, 256, &ts, NULL);
        w->st.loop_iterations++;
        for (int i = 0; i < n; i++) {
            uint32_t idx = (uint32_t)evs[i].data.u64, gen = (uint32_t)(evs[i].data.u64 >> 32);
            struct conn *c = &w->conns[idx];
            if (c->gen == gen && c->st != C_CLOSED)
                handle(w, c, evs[i].events);
        }
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    while (dspy_clock_ns() < w->t0) {
        uint64_t d = w->t0 - dspy_clock_ns();
        struct timespec ts = { 0, (long)(d > 999999999 ? 999999999 : d) };
        nanosleep(&ts, NULL);
    }
    w->st.started_ns = w->t0;
    loop(w);
    w->st.ended_ns = dspy_clock_ns();
    struct timespec cpu;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu) == 0)
        w->st.cpu_ns = (uint64_t)cpu.tv_sec * 1000000000u + (uint64_t)cpu.tv_nsec;
    return NULL;
}

static unsigned share(unsigned total, unsigned n, unsigned i)
{
    return total / n + (i < total % n ? 1 : 0);
}

static dspy_status worker_init(struct worker *w, const struct dspy_loadgen_options *o, unsigned idx,
                               unsigned n)
{
    w->o = o;
    w->idx = idx;
    w->nthreads = n;
    w->open_loop = o->schedule_stages != NULL;
    unsigned conns = o->connections ? o->connections : (w->open_loop ? 1024 : o->users);
    if (o->max_in_flight && o->max_in_flight < conns)
        conns = o->max_in_flight;
    w->nconns = share(conns, n, idx);
    w->cap = o->max_in_flight ? share(o->max_in_flight, n, idx) : w->nconns;
    w->rcap = o->read_buffer ? o->read_buffer : DSPY_LOADGEN_DEFAULT_READ_BUFFER;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->conns = dspy_calloc(w->nconns ? w->nconns : 1, sizeof(*w->conns));
    w->rbuf = dspy_malloc(w->rcap);
    unsigned users = w->open_loop ? 0 : share(o->users, n, idx);
    dspy__heap_init(&w->heap, &user_heap);
    if (w->epfd < 0 || !w->conns || !w->rbuf || dspy__heap_reserve(&w->heap, users ? users : 1))
        return DSPY_ENOMEM;
    for (unsigned i = w->nconns; i > 0; i--) {
        struct conn *c = &w->conns[i - 1];
        c->fd = -1;
        c->idx = i - 1;
        c->next = w->unused;
        w->unused = c;
    }
    dspy__lg_rng_seed(w->rng, o->seed * 1315423911u + idx + 1);
    w->issuing = true;
    if (w->open_loop)
        return dspy_schedule_init(&w->sched, o->schedule_stages, o->nstages, o->arrival,
                                  o->burstiness, o->seed);
    return DSPY_OK;
}

static void worker_release(struct worker *w)
{
    for (unsigned i = 0; w->conns && i < w->nconns; i++) {
        if (w->conns[i].fd >= 0)
            close(w->conns[i].fd);
        if (w->conns[i].parser_ready)
            dspy__lg_parser_release(&w->conns[i].p);
    }
    if (w->epfd >= 0)
        close(w->epfd);
    dspy_free(w->conns);
    dspy_free(w->rbuf);
    dspy__heap_release(&w->heap);
}

static dspy_status resolve(const char *host, int port, struct sockaddr_storage *addr,
                           socklen_t *len, struct dspy_error *err)
{
    struct addrinfo hints = { 0 }, *res = NULL;
    char svc[16];
    hints.ai_socktype = SOCK_STREAM;
    snprintf(svc, sizeof(svc), "%d", port);
    int e = getaddrinfo(host, svc, &hints, &res);
    if (e || !res) {
        if (err) {
            err->code = DSPY_ELM_NETWORK;
            snprintf(err->message, sizeof(err->message), "cannot resolve host '%s': %s", host,
                     gai_strerror(e));
        }
        return DSPY_ELM_NETWORK;
    }
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return DSPY_OK;
}

static void merge_stats(struct dspy_loadgen_stats *dst, const struct dspy_loadgen_stats *s)
{
    dst->started_ns = s->started_ns;
    if (s->issue_end_ns > dst->issue_end_ns)
        dst->issue_end_ns = s->issue_end_ns;
    if (s->ended_ns > dst->ended_ns)
        dst->ended_ns = s->ended_ns;
    dst->scheduled += s->scheduled;
    dst->sent += s->sent;
    dst->completed += s->completed;
    dst->abandoned += s->abandoned;
    dst->connections_opened += s->connections_opened;
    dst->cpu_ns += s->cpu_ns;
    dst->loop_iterations += s->loop_iterations;
}

static dspy_status check_options(const struct dspy_loadgen_options *o, struct dspy_error *err)
{
    const char *why = NULL;
    if (!o->host)
        why = "no host";
    else if (!o->requests || !o->nrequests)
        why = "no request template";
    else if (!o->schedule_stages && !o->users)
        why = "neither an arrival schedule nor closed-loop users";
    else if (!o->schedule_stages && !(o->duration_s > 0) && !o->max_requests)
        why = "a closed loop needs a duration or a request count";
    else if (!(o->timeout_s > 0))
        why = "the request timeout must be positive";
    if (!why)
        return DSPY_OK;
    if (err) {
        err->code = DSPY_EINVAL;
        snprintf(err->message, sizeof(err->message), "load generator: %s", why);
    }
    return DSPY_EINVAL;
}

dspy_status dspy_loadgen_run(const struct dspy_loadgen_options *o, volatile const int *stop,
                             struct dspy_loadgen_stats *stats, struct dspy_error *err)
{
    struct sockaddr_storage addr;
    socklen_t addrlen = 0;
    struct worker *ws = NULL;
    pthread_t *tids = NULL;
    _Atomic uint64_t closed_seq = 0;
    unsigned n = o->threads ? o->threads : 1, started = 0;
    dspy_status rc = check_options(o, err);
    if (rc)
        goto out;
    unsigned conns = o->connections ? o->connections : (o->schedule_stages ? 1024 : o->users);
    if (o->max_in_flight && o->max_in_flight < conns)
        conns = o->max_in_flight;
    if (n > conns)
        n = conns ? conns : 1;
    rc = resolve(o->host, o->port, &addr, &addrlen, err);
    if (rc)
        goto out;
    ws = dspy_calloc(n, sizeof(*ws));
    tids = dspy_calloc(n, sizeof(*tids));
    rc = (ws && tids) ? DSPY_OK : DSPY_ENOMEM;
    if (rc)
        goto out;
    uint64_t t0 = o->start_ns ? o->start_ns : dspy_clock_ns() + 2000000; /* threads up */
    for (unsigned i = 0; i < n; i++) {
        ws[i].epfd = -1;
        rc = worker_init(&ws[i], o, i, n);
        if (rc)
            goto out_workers;
        ws[i].addr = &addr;
        ws[i].addrlen = addrlen;
        ws[i].stop = stop;
        ws[i].closed_seq = &closed_seq;
        ws[i].t0 = t0;
        ws[i].end_ns = o->duration_s > 0 ? t0 + (uint64_t)(o->duration_s * 1e9) : UINT64_MAX;
        if (ws[i].open_loop) {
            advance_open(&ws[i]);
        } else {
            for (unsigned u = i; u < o->users; u += n)
                heap_push(&ws[i], t0, u);
            peek_closed(&ws[i]);
        }
    }
    for (; started < n; started++)
        if (pthread_create(&tids[started], NULL, worker_main, &ws[started])) {
            rc = DSPY_ENOMEM;
            break;
        }
    for (unsigned i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    if (stats) {
        memset(stats, 0, sizeof(*stats));
        for (unsigned i = 0; i < started; i++)
            merge_stats(stats, &ws[i].st);
    }
    for (unsigned i = 0; i < started && !rc; i++)
        rc = ws[i].rc;
out_workers:
    for (unsigned i = 0; i < n; i++)
        worker_release(&ws[i]);
out:
    dspy_free(ws);
    dspy_free(tids);
    return rc;
}

char *dspy_loadgen_build_request(const char *method, const char *host, int port, const char *path,
                                 const char *const *headers, size_t nheaders, const char *body,
                                 size_t body_len, size_t *out_len)
{
    size_t cap = strlen(method) + strlen(host) + strlen(path) + body_len + 128;
    for (size_t i = 0; i < nheaders; i++)
        cap += strlen(headers[i]) + 2;
    char *b = dspy_malloc(cap);
    if (!b)
        return NULL;
    int n = snprintf(b, cap, "%s %s HTTP/1.1\r\nHost: %s:%d\r\n", method, path, host, port);
    size_t len = (size_t)n;
    for (size_t i = 0; i < nheaders; i++)
        len += (size_t)snprintf(b + len, cap - len, "%s\r\n", headers[i]);
    if (body)
        len += (size_t)snprintf(b + len, cap - len, "Content-Length: %zu\r\n", body_len);
    len += (size_t)snprintf(b + len, cap - len, "\r\n");
    if (body) {
        memcpy(b + len, body, body_len);
        len += body_len;
    }
    b[len] = '\0';
    if (out_len)
        *out_len = len;
    return b;
}

/* HTTP client engine, own HTTP/1.1 transport (net layer): http:// requests written and
 * read by the engine itself on the loop's epoll set, without libcurl. A pool per host:port
 * keeps connections alive (most recently used first); connecting is non-blocking; the
 * attempt and connect timeouts are the call's timer; the answer is read by the shared
 * framing parser (net/http1.c) into the same body buffer or SSE scanner libcurl feeds, and
 * failures are reported as the libcurl codes the other path gives, so both are classed
 * and retried alike. Connection limits (per host:port and in all) are kept here: an attempt
 * that finds none free waits on its pool's list, first come first served. What it does not
 * do goes to libcurl: https://, HTTP/2 and proxies.
 *
 * A request on a kept-alive connection that the server closed before sending one byte of
 * the answer (it timed the connection out as the request left) is sent once more on a
 * fresh connection, as libcurl does. That resends a POST: safe here, since the server
 * answered nothing and an LM completion changes nothing on the server that the client
 * relies on. Once a byte of the answer has arrived, nothing is resent.
 *
 * Host names are looked up on resolver threads (engine_resolve.c), once per pool and again
 * in the background when a connection is opened more than 60 s later (the addresses in hand
 * serve meanwhile); the connect timeout covers the lookup. An address literal is never
 * looked up. Everything here runs on the loop thread. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "base/ascii.h"
#include "base/clock.h"
#include "net/engine_int.h"

#define RBUF_BYTES (64u << 10)
#define RESOLVE_TTL_NS 60000000000ull

/* ---- choosing the transport ---- */

static bool env_set(const char *name)
{
    const char *v = getenv(name);
    return v && *v;
}

bool dspy__engine_h1_wanted(const struct dspy__engine_options *o)
{
    if (o->http2_prior_knowledge)
        return false;
    if (env_set("http_proxy") || env_set("all_proxy") || env_set("ALL_PROXY"))
        return false;
    if (o->http1 != DSPY__HTTP1_DEFAULT)
        return o->http1 == DSPY__HTTP1_OWN;
    const char *v = getenv("DSPYC_HTTP");
    return !(v && strcmp(v, "curl") == 0);
}

bool dspy__engine_h1_parse_url(struct dspy__engine_call *c)
{
    const char *u = c->url, *a = u + 7; /* after "http://" */
    size_t alen = strcspn(a, "/?#");
    const char *at = NULL;
    for (const char *p = a; p < a + alen; p++)
        if (*p == '@')
            at = p;
    const char *hp = at ? at + 1 : a, *end = a + alen;
    const char *host = hp, *hend;
    if (*hp == '[') {
        host = hp + 1;
        hend = memchr(host, ']', (size_t)(end - host));
        if (!hend)
            return false;
    } else {
        hend = memchr(hp, ':', (size_t)(end - hp));
        if (!hend)
            hend = end;
    }
    const char *pp = hend < end && *hend == ']' ? hend + 1 : hend;
    unsigned long port = 80;
    if (pp < end) {
        if (*pp != ':' || pp + 1 == end || end - pp > 6)
            return false;
        port = 0;
        for (const char *d = pp + 1; d < end; d++) {
            if (*d < '0' || *d > '9')
                return false;
            port = port * 10 + (unsigned long)(*d - '0');
        }
    }
    if (hend == host || port == 0 || port > 65535 || strlen(u) > UINT32_MAX / 2)
        return false;
    const char *path = end, *pend = path + strcspn(path, "#");
    c->user_len = at ? (uint32_t)(at - a) : 0;
    c->host_off = (uint32_t)(host - u);
    c->host_len = (uint32_t)(hend - host);
    c->auth_off = (uint32_t)(hp - u);
    c->auth_len = (uint32_t)(end - hp);
    c->path_off = (uint32_t)(path - u);
    c->path_len = (uint32_t)(pend - path);
    c->port = (uint16_t)port;
    return true;
}

/* ---- pools ---- */

static struct dspy__h1_pool *pool_get(struct dspy__engine *e, struct dspy__engine_call *c)
{
    const char *host = c->url + c->host_off, *auth = c->url + c->auth_off;
    struct dspy__h1_pool *pl;
    for (pl = e->pools; pl; pl = pl->next) {
        const char *k = pl->key + strlen(pl->key) + 1;
        if (strlen(k) == c->auth_len && strncasecmp(k, auth, c->auth_len) == 0)
            return pl;
    }
    pl = dspy_calloc(1, sizeof(*pl) + c->host_len + c->auth_len + 2);
    if (!pl)
        return NULL;
    memcpy(pl->key, host, c->host_len);
    memcpy(pl->key + c->host_len + 1, auth, c->auth_len);
    snprintf(pl->port, sizeof(pl->port), "%u", (unsigned)c->port);
    /* A literal needs no lookup: getaddrinfo only parses it (no DNS), so here is fine. */
    pl->literal = !dspy__engine_getaddrs(NULL, pl->key, pl->port, AI_NUMERICHOST | AI_NUMERICSERV,
                                         pl->addr, pl->addrlen, &pl->naddr);
    pl->next = e->pools;
    e->pools = pl;
    return pl;
}

/* Send the host name of `pl` to a resolver thread; false when out of memory. */
static bool lookup_start(struct dspy__engine *e, struct dspy__h1_pool *pl)
{
    if (pl->resolving || pl->literal)
        return true;
    if (!e->resolver && !(e->resolver = dspy__engine_resolver_new(e, e->opts.lookup)))
        return false;
    size_t n = strlen(pl->key);
    struct dspy__engine_lookup *l = dspy_calloc(1, sizeof(*l) + n + 1);
    if (!l)
        return false;
    l->pool = pl;
    memcpy(l->host, pl->key, n + 1);
    memcpy(l->port, pl->port, sizeof(l->port));
    pl->resolving = true;
    dspy__engine_resolver_submit(e->resolver, l);
    return true;
}

static void wait_push(struct dspy__engine *e, struct dspy__h1_pool *pl, struct dspy__engine_slot *s)
{
    s->waiting = true;
    s->wait_seq = e->h1_seq++;
    s->wnext = NULL;
    s->wprev = pl->wtail;
    if (pl->wtail)
        pl->wtail->wnext = s;
    else
        pl->whead = s;
    pl->wtail = s;
    e->h1_nwaiting++;
}

static void wait_unlink(struct dspy__engine *e, struct dspy__engine_slot *s)
{
    struct dspy__h1_pool *pl = s->call->pool;
    if (!s->waiting)
        return;
    if (s->wprev)
        s->wprev->wnext = s->wnext;
    else
        pl->whead = s->wnext;
    if (s->wnext)
        s->wnext->wprev = s->wprev;
    else
        pl->wtail = s->wprev;
    s->wprev = s->wnext = NULL;
    s->waiting = false;
    e->h1_nwaiting--;
}

static void idle_unlink(struct dspy__h1_conn *k)
{
    struct dspy__h1_pool *pl = k->pool;
    if (k->prev)
        k->prev->next = k->next;
    else
        pl->idle = k->next;
    if (k->next)
        k->next->prev = k->prev;
    k->prev = k->next = NULL;
    pl->nidle--;
}

/* Close now; free after the current event batch, which may still hold its events. */
static void conn_close(struct dspy__engine *e, struct dspy__h1_conn *k)
{
    if (k->slot) {
        k->slot->conn = NULL;
        k->slot = NULL;
    } else {
        idle_unlink(k);
    }
    close(k->fd);
    k->fd = -1;
    k->next = e->dead;
    e->dead = k;
    k->pool->nconn--;
    e->h1_nconn--;
    if (e->h1_nwaiting) /* room for a waiter: given from the timer pass, not from here */
        dspy__engine_timer_arm(&e->timers, &e->h1_timer, 0);
}

/* Under the connection limits, a new connection for `pl` may be opened now: maybe after
 * closing another host's least recently used idle connection. */
static bool room_for(struct dspy__engine *e, struct dspy__h1_pool *pl)
{
    uint32_t host = e->opts.max_host_connections, total = e->opts.max_total_connections;
    if (host && pl->nconn >= host)
        return false;
    if (!total || e->h1_nconn < total)
        return true;
    for (struct dspy__h1_pool *o = e->pools; o; o = o->next) {
        if (o == pl || !o->idle)
            continue;
        struct dspy__h1_conn *k = o->idle;
        while (k->next)
            k = k->next;
        conn_close(e, k);
        return true;
    }
    return false;
}

void dspy__engine_h1_reap(struct dspy__engine *e)
{
    while (e->dead) {
        struct dspy__h1_conn *k = e->dead;
        e->dead = k->next;
        dspy_free(k);
    }
}

void dspy__engine_h1_free(struct dspy__engine *e)
{
    while (e->pools) {
        struct dspy__h1_pool *pl = e->pools;
        e->pools = pl->next;
        while (pl->idle)
            conn_close(e, pl->idle);
        dspy_free(pl);
    }
    dspy__engine_h1_reap(e);
    dspy_free(e->rbuf);
    e->rbuf = NULL;
}

/* ---- the request ---- */

static int unhex(const char *s)
{
    int a = dspy__hexval(s[0]), b = a < 0 ? -1 : dspy__hexval(s[1]);
    return b < 0 ? -1 : a * 16 + b;
}

/* "Authorization: Basic ..." from the URL's user:password, percent-decoded as libcurl does. */
static dspy_status add_basic_auth(struct dspy_buf *b, const char *ui, size_t n)
{
    char plain[512];
    size_t o = 0;
    for (size_t i = 0; i < n && o < sizeof(plain); i++) {
        int v = ui[i] == '%' && i + 2 < n ? unhex(ui + i + 1) : -1;
        if (v >= 0) {
            plain[o++] = (char)v;
            i += 2;
        } else {
            plain[o++] = ui[i];
        }
    }
    dspy_status rc = dspy__buf_adds(b, "Authorization: Basic ");
    if (!rc)
        rc = dspy__buf_add_base64(b, plain, o);
    if (!rc)
        rc = dspy__buf_add(b, "\r\n", 2);
    memset(plain, 0, sizeof(plain));
    return rc;
}

static dspy_status build_request(const struct dspy__engine_call *c, struct dspy_buf *b)
{
    const struct dspy__engine_headers *h = c->headers;
    const char *path = c->url + c->path_off;
    dspy__buf_reset(b);
    dspy_status rc = dspy__buf_addf(b, "%s %s%.*s HTTP/1.1\r\n", c->method,
                                    c->path_len && *path == '/' ? "" : "/", (int)c->path_len, path);
    if (!rc && !(h && h->has_host))
        rc = dspy__buf_addf(b, "Host: %.*s\r\n", (int)c->auth_len, c->url + c->auth_off);
    if (!rc && c->user_len && !(h && h->has_auth))
        rc = add_basic_auth(b, c->url + 7, c->user_len);
    if (!rc && !(h && h->has_accept))
        rc = dspy__buf_adds(b, "Accept: */*\r\n");
    if (!rc && h && h->wire_len)
        rc = dspy__buf_add(b, h->wire, h->wire_len);
    if (!rc && c->is_post && !(h && h->has_ctype))
        rc = dspy__buf_adds(b, "Content-Type: application/x-www-form-urlencoded\r\n");
    if (!rc && c->is_post && !(h && h->has_clen))
        rc = dspy__buf_addf(b, "Content-Length: %zu\r\n", c->body_len);
    if (!rc)
        rc = dspy__buf_add(b, "\r\n", 2);
    return rc;
}

/* ---- attempts ---- */

static void fail(struct dspy__engine *e, struct dspy__engine_slot *s, CURLcode cc)
{
    dspy__engine_h1_head(s); /* a status and Retry-After that did arrive count */
    if (s->conn)
        conn_close(e, s->conn);
    dspy__engine_attempt_done(e, s->call, cc);
}

static void arm_timer(struct dspy__engine *e, struct dspy__engine_slot *s, uint64_t connect_by)
{
    struct dspy__engine_call *c = s->call;
    uint64_t due = s->deadline_ns;
    if (connect_by && (!due || connect_by < due))
        due = connect_by;
    if (due)
        dspy__engine_timer_arm(&e->timers, &c->timer, due);
    else
        dspy__engine_timer_disarm(&e->timers, &c->timer);
}

static void write_request(struct dspy__engine *e, struct dspy__h1_conn *k);
static void read_response(struct dspy__engine *e, struct dspy__h1_conn *k, bool hup);
static void conn_open(struct dspy__engine *e, struct dspy__engine_slot *s);

static void connected(struct dspy__engine *e, struct dspy__h1_conn *k)
{
    k->connecting = false;
    k->pool->good = k->addr_idx;
    k->slot->connect_by = 0;
    arm_timer(e, k->slot, 0);
    write_request(e, k);
}

static void use_idle(struct dspy__engine *e, struct dspy__engine_slot *s, struct dspy__h1_conn *k)
{
    idle_unlink(k);
    k->slot = s;
    s->conn = k;
    s->connect_by = 0;
    arm_timer(e, s, 0);
    write_request(e, k);
}

/* Connecting failed with `err`: the next address of the host, or the end of the attempt. */
static void connect_failed(struct dspy__engine *e, struct dspy__h1_conn *k, int err)
{
    struct dspy__engine_slot *s = k->slot;
    struct dspy__h1_pool *pl = k->pool;
    conn_close(e, k);
    if (err != EMFILE && err != ENFILE && ++s->addr_tries < pl->naddr) {
        pl->good = (k->addr_idx + 1) % pl->naddr;
        conn_open(e, s);
        return;
    }
    s->socket_errno = err;
    fail(e, s, CURLE_COULDNT_CONNECT);
}

/* Open a connection for the attempt in `s`; its pool has addresses and room for one. */
static void conn_open(struct dspy__engine *e, struct dspy__engine_slot *s)
{
    struct dspy__h1_pool *pl = s->call->pool;
    uint64_t now = dspy__now_ns();
    if (!pl->literal && now - pl->resolved_ns > RESOLVE_TTL_NS)
        lookup_start(e, pl); /* in the background: the addresses in hand serve meanwhile */
    if (!s->connect_by)
        s->connect_by = now + e->opts.connect_timeout_ns;
    struct dspy__h1_conn *k = dspy_calloc(1, sizeof(*k));
    if (!k) {
        fail(e, s, CURLE_OUT_OF_MEMORY);
        return;
    }
    uint32_t idx = pl->good % pl->naddr;
    const struct sockaddr *sa = (const struct sockaddr *)&pl->addr[idx];
    k->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (k->fd < 0) {
        s->socket_errno = errno;
        dspy_free(k);
        fail(e, s, CURLE_COULDNT_CONNECT);
        return;
    }
    k->pool = pl;
    k->addr_idx = idx;
    k->slot = s;
    s->conn = k;
    pl->nconn++;
    e->h1_nconn++;
    int one = 1;
    setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                              .data.u64 = DSPY__H1_KEY | (uint64_t)(uintptr_t)k };
    if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, k->fd, &ev)) {
        s->socket_errno = errno == ENOSPC ? ENFILE : errno;
        fail(e, s, CURLE_COULDNT_CONNECT);
        return;
    }
    if (connect(k->fd, sa, pl->addrlen[idx]) == 0) {
        connected(e, k);
        return;
    }
    if (errno != EINPROGRESS) {
        connect_failed(e, k, errno);
        return;
    }
    k->connecting = true;
    arm_timer(e, s, s->connect_by);
}

/* The attempt in `s` needs a connection: an idle one, a new one, or a place on its pool's
 * wait list (for the lookup, or under a connection limit) behind those already there. */
static void need_conn(struct dspy__engine *e, struct dspy__engine_slot *s)
{
    struct dspy__h1_pool *pl = s->call->pool;
    if (!pl->whead) {
        if (pl->idle) {
            use_idle(e, s, pl->idle);
            return;
        }
        if (pl->naddr && room_for(e, pl)) {
            conn_open(e, s);
            return;
        }
    }
    if (!pl->naddr && !lookup_start(e, pl)) {
        fail(e, s, CURLE_OUT_OF_MEMORY);
        return;
    }
    /* The connect timeout covers the lookup; a wait under a limit only the attempt's. */
    s->connect_by = pl->naddr ? 0 : dspy__now_ns() + e->opts.connect_timeout_ns;
    wait_push(e, pl, s);
    arm_timer(e, s, s->connect_by);
}

void dspy__engine_h1_dispatch(struct dspy__engine *e, struct dspy__engine_timer *t)
{
    (void)t;
    uint32_t host = e->opts.max_host_connections;
    for (;;) {
        struct dspy__h1_pool *best = NULL; /* the pool whose first waiter came first */
        for (struct dspy__h1_pool *pl = e->pools; pl; pl = pl->next)
            if (pl->whead && (pl->idle || (pl->naddr && (!host || pl->nconn < host))) &&
                (!best || pl->whead->wait_seq < best->whead->wait_seq))
                best = pl;
        if (!best)
            return;
        struct dspy__engine_slot *s = best->whead;
        if (best->idle) {
            wait_unlink(e, s);
            use_idle(e, s, best->idle);
        } else if (room_for(e, best)) {
            wait_unlink(e, s);
            conn_open(e, s);
        } else {
            return; /* at the total limit, nothing idle to close */
        }
    }
}

void dspy__engine_h1_resolved(struct dspy__engine *e, struct dspy__engine_lookup *l)
{
    struct dspy__h1_pool *pl = l->pool;
    pl->resolving = false;
    if (!l->rc) {
        memcpy(pl->addr, l->addr, sizeof(pl->addr));
        memcpy(pl->addrlen, l->addrlen, sizeof(pl->addrlen));
        pl->naddr = l->naddr;
        pl->good = 0;
        pl->resolved_ns = dspy__now_ns();
    }
    dspy_free(l);
    /* A failed lookup with no older addresses to go on fails every attempt waiting. */
    while (!pl->naddr && pl->whead) {
        struct dspy__engine_slot *s = pl->whead;
        wait_unlink(e, s);
        s->why = "Couldn't resolve host name";
        fail(e, s, CURLE_COULDNT_RESOLVE_HOST);
    }
    dspy__engine_h1_dispatch(e, NULL);
    /* Those still waiting wait for a connection now, no longer for the lookup. */
    for (struct dspy__engine_slot *s = pl->whead; s; s = s->wnext) {
        if (s->connect_by) {
            s->connect_by = 0;
            arm_timer(e, s, 0);
        }
    }
}

/* Send the request again on a fresh connection, once: the kept-alive one it went out on
 * was closed by the server before a byte of the answer came back. */
static bool resend(struct dspy__engine *e, struct dspy__engine_slot *s)
{
    struct dspy__h1_conn *k = s->conn;
    if (s->resent || !k || !k->served || s->h1.bytes)
        return false;
    conn_close(e, k);
    s->resent = true;
    s->req_off = 0;
    s->addr_tries = 0;
    conn_open(e, s);
    return true;
}

static void write_request(struct dspy__engine *e, struct dspy__h1_conn *k)
{
    struct dspy__engine_slot *s = k->slot;
    const struct dspy__engine_call *c = s->call;
    size_t head = s->req.len, total = head + (c->is_post ? c->body_len : 0);
    while (s->req_off < total) {
        struct iovec iov[2];
        struct msghdr m;
        memset(&m, 0, sizeof(m));
        m.msg_iov = iov;
        if (s->req_off < head) {
            iov[0].iov_base = s->req.ptr + s->req_off;
            iov[0].iov_len = head - s->req_off;
            iov[1].iov_base = (void *)c->body;
            iov[1].iov_len = total - head;
            m.msg_iovlen = total > head ? 2 : 1;
        } else {
            iov[0].iov_base = (char *)c->body + (s->req_off - head);
            iov[0].iov_len = total - s->req_off;
            m.msg_iovlen = 1;
        }
        ssize_t n = sendmsg(k->fd, &m, MSG_NOSIGNAL);
        if (n > 0) {
            s->req_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return; /* the EPOLLOUT edge brings us back */
        /* The server stopped reading: it may have answered already (a 413 for a large
         * body, say), so read before anything else; that ends in the answer, a resend or
         * the failure. */
        read_response(e, k, true);
        return;
    }
}

/* The answer is complete: keep the connection for the next request or close it. */
static void complete(struct dspy__engine *e, struct dspy__h1_conn *k, bool keep)
{
    struct dspy__engine_slot *s = k->slot;
    dspy__engine_h1_head(s);
    uint32_t max_idle = e->opts.max_idle_connections;
    if (keep && s->req_off == s->req.len + (s->call->is_post ? s->call->body_len : 0) &&
        (!max_idle || k->pool->nidle < max_idle)) {
        struct dspy__h1_pool *pl = k->pool;
        k->slot = NULL;
        s->conn = NULL;
        k->served++;
        k->prev = NULL;
        k->next = pl->idle;
        if (pl->idle)
            pl->idle->prev = k;
        pl->idle = k;
        pl->nidle++;
        if (e->h1_nwaiting)
            dspy__engine_timer_arm(&e->timers, &e->h1_timer, 0);
    } else {
        conn_close(e, k);
    }
    dspy__engine_attempt_done(e, s->call, CURLE_OK);
}

/* The connection ended (EOF, reset) with the answer incomplete. */
static void conn_died(struct dspy__engine *e, struct dspy__engine_slot *s, int err)
{
    if (resend(e, s))
        return;
    CURLcode cc = err ? CURLE_RECV_ERROR : s->h1.bytes ? CURLE_PARTIAL_FILE : CURLE_GOT_NOTHING;
    if (cc == CURLE_PARTIAL_FILE)
        s->why = dspy__h1_head_done(&s->h1) ? "connection closed before the response ended"
                                            : "connection closed inside the response head";
    fail(e, s, cc);
}

/* `hup`: the peer's FIN was already seen with this event, so no later edge will come for
 * it: read on to the end instead of stopping at a short read. */
static void read_response(struct dspy__engine *e, struct dspy__h1_conn *k, bool hup)
{
    struct dspy__engine_slot *s = k->slot;
    for (;;) {
        ssize_t n = recv(k->fd, e->rbuf, RBUF_BYTES, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            if (n == 0 && dspy__h1_eof(&s->h1) == DSPY__H1_DONE)
                complete(e, k, false);
            else
                conn_died(e, s, n < 0 ? errno : 0);
            return;
        }
        size_t used;
        int r = dspy__h1_feed(&s->h1, e->rbuf, (size_t)n, dspy__now_ns(), &used);
        if (r == DSPY__H1_DONE) {
            complete(e, k, s->h1.keepalive && used == (size_t)n);
            return;
        }
        if (r == DSPY__H1_ERROR) {
            s->why = s->h1.error;
            if (s->h1.oversize) {
                s->write_rc = DSPY_ETOOBIG;
                fail(e, s, CURLE_WRITE_ERROR);
            } else {
                fail(e, s, CURLE_WEIRD_SERVER_REPLY);
            }
            return;
        }
        if (r == DSPY__H1_STOPPED) {
            fail(e, s, CURLE_WRITE_ERROR);
            return;
        }
        if ((size_t)n < RBUF_BYTES && !hup) /* drained: edge-triggered, new bytes wake us */
            return;
    }
}

void dspy__engine_h1_event(struct dspy__engine *e, struct dspy__h1_conn *k, uint32_t events)
{
    if (k->fd < 0)
        return;
    struct dspy__engine_slot *s = k->slot;
    if (!s) { /* idle: the server closed it, or spoke out of turn; either way it is done */
        conn_close(e, k);
        return;
    }
    if (k->connecting) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &len) || err) {
            connect_failed(e, k, err ? err : errno);
            return;
        }
        connected(e, k);
    } else if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
        write_request(e, k);
    }
    /* Writing may have ended the attempt (and recycled its slot): go on only while this
     * connection still carries it. A closed or idle connection has no slot. */
    if (k->slot == s && k->fd >= 0 && !k->connecting &&
        (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        read_response(e, k, (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0);
}

void dspy__engine_h1_start(struct dspy__engine *e, struct dspy__engine_call *c, uint64_t now)
{
    struct dspy__engine_slot *s = c->slot;
    s->own = true;
    s->resent = false;
    s->addr_tries = 0;
    s->req_off = 0;
    s->connect_by = 0;
    s->waiting = false;
    s->why = NULL;
    dspy__h1_reset(&s->h1);
    s->h1.no_body = c->is_head;
    uint64_t limit = c->timeout_ns;
    if (c->deadline_abs_ns) {
        uint64_t left = c->deadline_abs_ns > now ? c->deadline_abs_ns - now : 1;
        if (!limit || left < limit)
            limit = left;
    }
    s->deadline_ns = limit ? now + limit : 0;
    if (!e->rbuf && !(e->rbuf = dspy_malloc(RBUF_BYTES))) {
        fail(e, s, CURLE_OUT_OF_MEMORY);
        return;
    }
    if (!c->pool && !(c->pool = pool_get(e, c))) {
        fail(e, s, CURLE_OUT_OF_MEMORY);
        return;
    }
    if (build_request(c, &s->req)) {
        fail(e, s, CURLE_OUT_OF_MEMORY);
        return;
    }
    need_conn(e, s);
}

void dspy__engine_h1_stop(struct dspy__engine *e, struct dspy__engine_slot *s)
{
    wait_unlink(e, s);
    if (s->conn)
        conn_close(e, s->conn);
    dspy__engine_timer_disarm(&e->timers, &s->call->timer);
}

void dspy__engine_h1_timeout(struct dspy__engine *e, struct dspy__engine_call *c)
{
    struct dspy__engine_slot *s = c->slot;
    bool connect_phase = s->connect_by && dspy__now_ns() >= s->connect_by;
    if (s->waiting && connect_phase)
        s->why = "timed out looking up the host name";
    else if (s->conn && s->conn->connecting)
        s->why = "connection timed out";
    wait_unlink(e, s);
    fail(e, s, CURLE_OPERATION_TIMEDOUT);
}

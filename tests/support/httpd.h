/* A tiny HTTP/1.1 loopback server for the net tests and the engine benchmark (test
 * support, not library code): epoll threads on 127.0.0.1:0 with keep-alive, each request's
 * behaviour chosen by its query string:
 *   d=MS      answer after MS milliseconds (default: the server's delay)
 *   s=CODE    status (default 200); ra=V adds "Retry-After: V", ram=MS "retry-after-ms: MS"
 *   f=1       apply s/ra/ram/drop only while the server's failure budget lasts, else 200
 *   close=1   close the connection after answering; drop=1 close it without answering
 *   sse=N     stream N events then "data: [DONE]", chunked, g=MS apart (default 5);
 *             split=1 writes each event in two pieces, the second g/2 ms later
 *   n=BYTES   body of about BYTES bytes
 * Header-only so that tests and benchmarks can share it without a library of their own. */
#ifndef DSPY_TESTS_SUPPORT_HTTPD_H
#define DSPY_TESTS_SUPPORT_HTTPD_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define TS_FN static __attribute__((unused))
#define TS_MAX_THREADS 16
#define TS_INBUF 8192

struct ts_options {
    int threads;       /* epoll threads (SO_REUSEPORT listeners); 0 = 1 */
    uint64_t delay_ns; /* delay of a request without d= */
};

struct ts_conn {
    int fd;
    uint32_t gen;
    char in[TS_INBUF];
    size_t inlen;
    size_t discard; /* request body bytes still to skip */
    char *out;
    size_t outlen, outcap;
    int phase; /* TS_READ, TS_WAIT (delay before answering), TS_STREAM */
    int close_after;
    int sse_events;    /* events to stream; -1 = not a stream */
    int sse_next_half; /* split mode: the second half of the event is due */
    int sse_gap_ms, sse_split, sse_index;
    long status;
    char ra[32], ram[32];
    size_t body_bytes;
    int drop;
};

enum { TS_READ, TS_WAIT, TS_STREAM };

struct ts_timer {
    uint64_t due;
    int fd;
    uint32_t gen;
};

struct ts_worker {
    struct ts_server *srv;
    pthread_t thread;
    int lfd, epfd, wakefd;
    int tfd;        /* timerfd armed at the earliest due answer: ns-exact delays */
    uint64_t armed; /* due time tfd is armed for, 0 = none */
    struct ts_timer *heap;
    size_t nheap, capheap;
};

struct ts_server {
    int port;
    int nworkers;
    uint64_t delay_ns;
    struct ts_worker w[TS_MAX_THREADS];
    struct ts_conn **conns; /* by fd; each fd belongs to one worker */
    size_t nconns;
    atomic_bool stop;
    atomic_uint_fast64_t accepted, requests;
    atomic_int failures; /* budget for f=1 requests */
};

TS_FN uint64_t ts_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Raise the soft descriptor limit to the hard one; returns the new soft limit. */
TS_FN long ts_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        return -1;
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}

/* `needle` in the `n` bytes at `hay` (memmem without _GNU_SOURCE), or NULL. */
TS_FN char *ts_find(char *hay, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, k) == 0)
            return hay + i;
    return NULL;
}

TS_FN void ts_heap_push(struct ts_worker *w, struct ts_timer t)
{
    if (w->nheap == w->capheap) {
        w->capheap = w->capheap ? w->capheap * 2 : 256;
        w->heap = realloc(w->heap, w->capheap * sizeof(*w->heap));
        if (!w->heap)
            abort();
    }
    size_t i = w->nheap++;
    while (i > 0 && w->heap[(i - 1) / 2].due > t.due) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = t;
}

TS_FN struct ts_timer ts_heap_pop(struct ts_worker *w)
{
    struct ts_timer top = w->heap[0], last = w->heap[--w->nheap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= w->nheap)
            break;
        if (c + 1 < w->nheap && w->heap[c + 1].due < w->heap[c].due)
            c++;
        if (w->heap[c].due >= last.due)
            break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (w->nheap)
        w->heap[i] = last;
    return top;
}

/* Wake connection `c` in `ns` nanoseconds. */
TS_FN void ts_after(struct ts_worker *w, struct ts_conn *c, uint64_t ns)
{
    ts_heap_push(w, (struct ts_timer){ ts_now() + ns, c->fd, c->gen });
}

TS_FN void ts_out(struct ts_conn *c, const char *p, size_t n)
{
    if (c->outlen + n > c->outcap) {
        c->outcap = (c->outlen + n) * 2;
        c->out = realloc(c->out, c->outcap);
        if (!c->out)
            abort();
    }
    memcpy(c->out + c->outlen, p, n);
    c->outlen += n;
}

TS_FN void ts_close(struct ts_worker *w, struct ts_conn *c)
{
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    w->srv->conns[c->fd] = NULL;
    close(c->fd);
    free(c->out);
    free(c);
}

/* Write what is buffered; 0 on success (done or waiting for EPOLLOUT), -1 when closed. */
TS_FN int ts_flush(struct ts_worker *w, struct ts_conn *c)
{
    size_t off = 0;
    while (off < c->outlen) {
        ssize_t k = send(c->fd, c->out + off, c->outlen - off, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno == EAGAIN)
            break;
        if (k <= 0) {
            ts_close(w, c);
            return -1;
        }
        off += (size_t)k;
    }
    memmove(c->out, c->out + off, c->outlen - off);
    c->outlen -= off;
    struct epoll_event ev = { .events = EPOLLIN | (c->outlen ? EPOLLOUT : 0u), .data.fd = c->fd };
    epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    if (!c->outlen && c->close_after && c->phase == TS_READ) {
        ts_close(w, c);
        return -1;
    }
    return 0;
}

TS_FN const char *ts_param(const char *q, const char *name, char *val, size_t cap)
{
    size_t n = strlen(name);
    const char *p = q;
    while (p && *p) {
        if (strncmp(p, name, n) == 0 && p[n] == '=') {
            size_t k = strcspn(p + n + 1, "& ");
            if (k >= cap)
                k = cap - 1;
            memcpy(val, p + n + 1, k);
            val[k] = '\0';
            return val;
        }
        p = strchr(p, '&');
        if (p)
            p++;
    }
    return NULL;
}

TS_FN void ts_chunk(struct ts_conn *c, const char *p, size_t n)
{
    char hdr[32];
    int h = snprintf(hdr, sizeof(hdr), "%zx\r\n", n);
    ts_out(c, hdr, (size_t)h);
    ts_out(c, p, n);
    ts_out(c, "\r\n", 2);
}

TS_FN int ts_parse(struct ts_worker *w, struct ts_conn *c);

TS_FN void ts_respond(struct ts_worker *w, struct ts_conn *c)
{
    char head[512];
    const char *reason = c->status == 200 ? "OK" : "Status";
    int n = snprintf(head, sizeof(head), "HTTP/1.1 %ld %s\r\n", c->status, reason);
    if (c->ra[0])
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Retry-After: %s\r\n", c->ra);
    if (c->ram[0])
        n += snprintf(head + n, sizeof(head) - (size_t)n, "retry-after-ms: %s\r\n", c->ram);
    if (c->close_after)
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Connection: close\r\n");
    if (c->sse_events >= 0 && c->status == 200) {
        n += snprintf(head + n, sizeof(head) - (size_t)n,
                      "Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
        ts_out(c, head, (size_t)n);
        c->phase = TS_STREAM;
        ts_after(w, c, 0);
        ts_flush(w, c);
        return;
    }
    static const char small[] = "{\"id\":\"x\",\"ok\":true}";
    size_t blen = c->body_bytes ? c->body_bytes : sizeof(small) - 1;
    n += snprintf(head + n, sizeof(head) - (size_t)n,
                  "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n", blen);
    ts_out(c, head, (size_t)n);
    if (c->body_bytes) {
        char fill[4096];
        memset(fill, 'x', sizeof(fill));
        for (size_t left = blen; left;) {
            size_t k = left < sizeof(fill) ? left : sizeof(fill);
            ts_out(c, fill, k);
            left -= k;
        }
    } else {
        ts_out(c, small, blen);
    }
    c->phase = TS_READ;
    if (ts_flush(w, c) == 0)
        ts_parse(w, c);
}

/* The next piece of a stream: an event, half of one, or the end. */
TS_FN void ts_stream_step(struct ts_worker *w, struct ts_conn *c)
{
    char ev[128];
    int n;
    if (c->sse_index < c->sse_events)
        n = snprintf(ev, sizeof(ev), "data: {\"choices\":[{\"delta\":{\"content\":\"t%d\"}}]}\n\n",
                     c->sse_index);
    else
        n = snprintf(ev, sizeof(ev), "data: [DONE]\n\n");
    size_t half = (size_t)n / 2;
    if (c->sse_split && !c->sse_next_half) {
        ts_chunk(c, ev, half);
        c->sse_next_half = 1;
        ts_after(w, c, (uint64_t)c->sse_gap_ms * 500000u);
        ts_flush(w, c);
        return;
    }
    if (c->sse_next_half)
        ts_chunk(c, ev + half, (size_t)n - half);
    else
        ts_chunk(c, ev, (size_t)n);
    c->sse_next_half = 0;
    if (c->sse_index == c->sse_events) {
        ts_out(c, "0\r\n\r\n", 5);
        c->phase = TS_READ;
        if (ts_flush(w, c) == 0)
            ts_parse(w, c);
        return;
    }
    c->sse_index++;
    ts_after(w, c, (uint64_t)c->sse_gap_ms * 1000000u);
    ts_flush(w, c);
}

TS_FN void ts_fire(struct ts_worker *w, struct ts_timer t)
{
    struct ts_conn *c = (size_t)t.fd < w->srv->nconns ? w->srv->conns[t.fd] : NULL;
    if (!c || c->gen != t.gen)
        return;
    if (c->phase == TS_STREAM) {
        ts_stream_step(w, c);
    } else if (c->phase == TS_WAIT) {
        if (c->drop)
            ts_close(w, c);
        else
            ts_respond(w, c);
    }
}

TS_FN void ts_request(struct ts_worker *w, struct ts_conn *c, const char *line)
{
    struct ts_server *s = w->srv;
    atomic_fetch_add(&s->requests, 1);
    const char *q = strchr(line, '?');
    const char *end = strstr(line, " HTTP/");
    char query[512] = "", v[64];
    if (q && end && end > q) {
        size_t k = (size_t)(end - q - 1);
        if (k > sizeof(query) - 1)
            k = sizeof(query) - 1;
        memcpy(query, q + 1, k);
        query[k] = '\0';
    }
    int fail = 1;
    if (ts_param(query, "f", v, sizeof(v)) && atoi(v) == 1)
        fail = atomic_fetch_sub(&s->failures, 1) > 0;
    c->status = 200;
    c->ra[0] = c->ram[0] = '\0';
    c->drop = 0;
    if (fail) {
        if (ts_param(query, "s", v, sizeof(v)))
            c->status = atol(v);
        ts_param(query, "ra", c->ra, sizeof(c->ra));
        ts_param(query, "ram", c->ram, sizeof(c->ram));
        c->drop = ts_param(query, "drop", v, sizeof(v)) ? 1 : 0;
    }
    c->close_after = ts_param(query, "close", v, sizeof(v)) != NULL;
    c->sse_events = ts_param(query, "sse", v, sizeof(v)) ? atoi(v) : -1;
    c->sse_gap_ms = ts_param(query, "g", v, sizeof(v)) ? atoi(v) : 5;
    c->sse_split = ts_param(query, "split", v, sizeof(v)) != NULL;
    c->sse_index = 0;
    c->sse_next_half = 0;
    c->body_bytes = ts_param(query, "n", v, sizeof(v)) ? (size_t)atol(v) : 0;
    uint64_t delay = s->delay_ns;
    if (ts_param(query, "d", v, sizeof(v)))
        delay = (uint64_t)atol(v) * 1000000u;
    c->phase = TS_WAIT;
    ts_after(w, c, delay);
}

/* Parse complete requests out of c->in; -1 when the connection was closed. */
TS_FN int ts_parse(struct ts_worker *w, struct ts_conn *c)
{
    while (c->inlen) {
        if (c->discard) { /* the request body: never looked at */
            size_t k = c->discard < c->inlen ? c->discard : c->inlen;
            memmove(c->in, c->in + k, c->inlen - k);
            c->inlen -= k;
            c->discard -= k;
            continue;
        }
        if (c->phase != TS_READ)
            return 0;
        char *hend = ts_find(c->in, c->inlen, "\r\n\r\n");
        if (!hend) {
            if (c->inlen == TS_INBUF) {
                ts_close(w, c);
                return -1;
            }
            return 0;
        }
        *hend = '\0';
        size_t clen = 0;
        for (char *h = strstr(c->in, "\r\n"); h; h = strstr(h + 2, "\r\n"))
            if (strncasecmp(h + 2, "content-length:", 15) == 0)
                clen = (size_t)atol(h + 17);
        size_t hlen = (size_t)(hend - c->in) + 4;
        char line[600];
        size_t l = strcspn(c->in, "\r\n");
        if (l >= sizeof(line))
            l = sizeof(line) - 1;
        memcpy(line, c->in, l);
        line[l] = '\0';
        memmove(c->in, c->in + hlen, c->inlen - hlen);
        c->inlen -= hlen;
        c->discard = clen;
        ts_request(w, c, line);
    }
    return 0;
}

TS_FN void ts_accept(struct ts_worker *w)
{
    for (;;) {
        int fd = accept(w->lfd, NULL, NULL);
        if (fd < 0)
            return;
        fcntl(fd, F_SETFL, O_NONBLOCK);
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        if ((size_t)fd >= w->srv->nconns) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct ts_conn *c = calloc(1, sizeof(*c));
        if (!c)
            abort();
        static _Atomic uint32_t gens;
        c->fd = fd;
        c->gen = atomic_fetch_add(&gens, 1) + 1;
        c->sse_events = -1;
        w->srv->conns[fd] = c;
        atomic_fetch_add(&w->srv->accepted, 1);
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev);
    }
}

TS_FN void ts_readable(struct ts_worker *w, struct ts_conn *c)
{
    for (;;) {
        if (c->inlen == TS_INBUF) {
            ts_close(w, c);
            return;
        }
        ssize_t k = recv(c->fd, c->in + c->inlen, TS_INBUF - c->inlen, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno == EAGAIN)
            break;
        if (k <= 0) {
            ts_close(w, c);
            return;
        }
        c->inlen += (size_t)k;
        if (ts_parse(w, c) < 0)
            return;
    }
}

TS_FN void *ts_worker_main(void *arg)
{
    struct ts_worker *w = arg;
    struct epoll_event evs[256];
    while (!atomic_load(&w->srv->stop)) {
        uint64_t due = w->nheap ? w->heap[0].due : 0;
        if (due != w->armed) { /* epoll_wait's ms timeout would add up to 1 ms per answer */
            struct itimerspec its = { { 0, 0 }, { 0, 0 } }; /* due 0: disarm */
            its.it_value.tv_sec = (time_t)(due / 1000000000u);
            its.it_value.tv_nsec = (long)(due % 1000000000u);
            timerfd_settime(w->tfd, TFD_TIMER_ABSTIME, &its, NULL);
            w->armed = due;
        }
        int n = epoll_wait(w->epfd, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == w->lfd) {
                ts_accept(w);
                continue;
            }
            if (fd == w->tfd) {
                uint64_t expirations;
                if (read(w->tfd, &expirations, sizeof(expirations)) < 0) {
                    /* EAGAIN: nothing to consume */
                }
                w->armed = 0;
                continue;
            }
            if (fd == w->wakefd)
                continue;
            struct ts_conn *c = w->srv->conns[fd];
            if (!c)
                continue;
            if ((evs[i].events & EPOLLOUT) && ts_flush(w, c) < 0)
                continue;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                ts_readable(w, c);
        }
        uint64_t now = ts_now();
        while (w->nheap && w->heap[0].due <= now)
            ts_fire(w, ts_heap_pop(w));
    }
    return NULL;
}

TS_FN int ts_listen(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 65535)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Start the server; NULL on failure. */
TS_FN struct ts_server *ts_start(const struct ts_options *o)
{
    struct ts_server *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->nworkers = o && o->threads > 0 ? o->threads : 1;
    if (s->nworkers > TS_MAX_THREADS)
        s->nworkers = TS_MAX_THREADS;
    s->delay_ns = o ? o->delay_ns : 0;
    long nofile = ts_raise_nofile();
    s->nconns = nofile > 0 ? (size_t)nofile + 16 : 65536;
    s->conns = calloc(s->nconns, sizeof(*s->conns));
    for (int i = 0; i < s->nworkers; i++) {
        struct ts_worker *w = &s->w[i];
        w->srv = s;
        w->lfd = ts_listen(s->port);
        if (w->lfd < 0)
            abort();
        if (i == 0) {
            struct sockaddr_in a;
            socklen_t len = sizeof(a);
            getsockname(w->lfd, (struct sockaddr *)&a, &len);
            s->port = ntohs(a.sin_port);
        }
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = w->lfd };
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->lfd, &ev);
        ev.data.fd = w->wakefd;
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wakefd, &ev);
        w->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        ev.data.fd = w->tfd;
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->tfd, &ev);
    }
    for (int i = 0; i < s->nworkers; i++)
        pthread_create(&s->w[i].thread, NULL, ts_worker_main, &s->w[i]);
    return s;
}

TS_FN void ts_stop(struct ts_server *s)
{
    atomic_store(&s->stop, true);
    for (int i = 0; i < s->nworkers; i++) {
        uint64_t one = 1;
        if (write(s->w[i].wakefd, &one, sizeof(one)) < 0)
            perror("ts_stop");
        pthread_join(s->w[i].thread, NULL);
    }
    for (size_t fd = 0; fd < s->nconns; fd++) {
        if (s->conns[fd]) {
            close(s->conns[fd]->fd);
            free(s->conns[fd]->out);
            free(s->conns[fd]);
        }
    }
    for (int i = 0; i < s->nworkers; i++) {
        close(s->w[i].lfd);
        close(s->w[i].epfd);
        close(s->w[i].wakefd);
        close(s->w[i].tfd);
        free(s->w[i].heap);
    }
    free(s->conns);
    free(s);
}

TS_FN int ts_port(const struct ts_server *s)
{
    return s->port;
}

TS_FN uint64_t ts_accepted(struct ts_server *s)
{
    return atomic_load(&s->accepted);
}

TS_FN uint64_t ts_requests(struct ts_server *s)
{
    return atomic_load(&s->requests);
}

/* The next `n` requests carrying f=1 get their failure (s, ra, ram, drop). */
TS_FN void ts_set_failures(struct ts_server *s, int n)
{
    atomic_store(&s->failures, n);
}

#endif

/* HTTP client engine, transfers (net layer): libcurl multi handles sharded so that no
 * connection pool grows past `transfers_per_multi`, their socket and timer callbacks on
 * the loop's epoll set and timer heap, reusable easy handles with their buffers, and the
 * header/body callbacks that feed the bounded body buffer or the SSE scanner. Everything
 * here runs on the loop thread. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include "base/clock.h"
#include "net/engine_int.h"

/* ---- libcurl callbacks ---- */

/* epoll data: the shard's index + 1 in the high half, the fd in the low; 0 is the eventfd. */
static uint64_t ev_key(const struct dspy__engine_shard *sh, curl_socket_t s)
{
    return ((uint64_t)(sh->index + 1) << 32) | (uint32_t)s;
}

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct dspy__engine_shard *sh = userp;
    int epfd = sh->e->epfd;
    (void)easy;
    struct epoll_event ev = { 0 };
    ev.data.u64 = ev_key(sh, s);
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, s, &ev);
        return 0;
    }
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
    int op = socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(epfd, op, s, &ev) != 0) {
        /* A recycled fd number can make curl's memory and the kernel's disagree. */
        op = errno == EEXIST ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        epoll_ctl(epfd, op, s, &ev);
    }
    if (!socketp)
        curl_multi_assign(sh->multi, s, sh);
    return 0;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct dspy__engine_shard *sh = userp;
    (void)multi;
    if (timeout_ms < 0)
        dspy__engine_timer_disarm(&sh->e->timers, &sh->timer);
    else
        dspy__engine_timer_arm(&sh->e->timers, &sh->timer,
                               dspy__now_ns() + (uint64_t)timeout_ms * 1000000u);
    return 0;
}

static bool header_is(const char *line, size_t n, const char *name, size_t nlen)
{
    return n > nlen && line[nlen] == ':' && strncasecmp(line, name, nlen) == 0;
}

/* Copy a header's value, trimmed, into a fixed field: no allocation per header. */
static uint8_t keep_value(const char *line, size_t n, size_t skip, char *dst, size_t cap)
{
    const char *v = line + skip, *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t len = (size_t)(end - v);
    if (len >= cap)
        return 0;
    memcpy(dst, v, len);
    return (uint8_t)len;
}

static size_t on_header(char *line, size_t size, size_t nitems, void *userdata)
{
    struct dspy__engine_slot *s = userdata;
    size_t n = size * nitems;
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        s->retry_after_len = s->retry_after_ms_len = 0;
        s->http_status = 0;
    } else if (n <= 2 && (line[0] == '\r' || line[0] == '\n')) {
        long code = 0;
        curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code >= 200) {
            s->http_status = code;
            s->streaming = s->call->on_event && code < 300;
        }
    } else if (header_is(line, n, "retry-after", 11)) {
        s->retry_after_len = keep_value(line, n, 12, s->retry_after, sizeof(s->retry_after));
    } else if (header_is(line, n, "retry-after-ms", 14)) {
        s->retry_after_ms_len = keep_value(line, n, 15, s->retry_after_ms,
                                           sizeof(s->retry_after_ms));
    }
    return n;
}

static int on_sse_event(void *userdata, const struct dspy__sse_event *ev)
{
    struct dspy__engine_slot *s = userdata;
    struct dspy__engine_call *c = s->call;
    return c->on_event(c, ev, c->userdata);
}

/* Body bytes of the attempt in `s`, from either transport: into the bounded body buffer,
 * or the SSE scanner for a 2xx streaming answer. false (with write_rc set) stops it. */
static bool take_body(struct dspy__engine_slot *s, const char *data, size_t n)
{
    uint64_t now = dspy__now_ns();
    if (!s->first_byte_ns)
        s->first_byte_ns = now;
    s->received += n;
    if (s->received > s->max_bytes) {
        s->write_rc = DSPY_ETOOBIG;
        return false;
    }
    dspy_status rc = s->streaming ? dspy__sse_feed(&s->sse, data, n, now)
                                  : dspy__buf_add(&s->body, data, n);
    if (rc) {
        s->write_rc = rc;
        return false;
    }
    return true;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *userdata)
{
    size_t n = size * nmemb;
    return take_body(userdata, data, n) ? n : 0;
}

void dspy__engine_h1_head(struct dspy__engine_slot *s)
{
    const struct dspy__h1 *p = &s->h1;
    const char *v;
    size_t n;
    if (s->http_status || !dspy__h1_head_done(p))
        return;
    s->http_status = p->status;
    s->streaming = s->call->on_event && p->status >= 200 && p->status < 300;
    if (dspy__h1_header(p, "retry-after", &v, &n))
        s->retry_after_len = keep_value(v, n, 0, s->retry_after, sizeof(s->retry_after));
    if (dspy__h1_header(p, "retry-after-ms", &v, &n))
        s->retry_after_ms_len = keep_value(v, n, 0, s->retry_after_ms, sizeof(s->retry_after_ms));
}

static int on_h1_body(void *userdata, const char *data, size_t len, uint64_t now)
{
    struct dspy__engine_slot *s = userdata;
    (void)now;
    dspy__engine_h1_head(s);
    return take_body(s, data, len) ? 0 : 1;
}

/* ---- shards: multi handles ---- */

static void shard_timer_fire(struct dspy__engine *e, struct dspy__engine_timer *t)
{
    struct dspy__engine_shard *sh = DSPY__CONTAINER_OF(t, struct dspy__engine_shard, timer);
    int running;
    (void)e;
    curl_multi_socket_action(sh->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    dspy__engine_check_done(sh);
}

/* Timers that may be armed at once: one per live call, limiter and shard, and the own
 * client's hand-over timer. */
dspy_status dspy__engine_reserve_timers(struct dspy__engine *e, size_t extra)
{
    return dspy__engine_timers_reserve(&e->timers, e->nlive + atomic_load(&e->nlimiters) +
                                                       e->nshards + 1 + extra);
}

static dspy_status setup_multi(struct dspy__engine *e, struct dspy__engine_shard *sh)
{
    const struct dspy__engine_options *o = &e->opts;
    CURLM *m = sh->multi;
    CURLMcode rc = CURLM_OK;
    rc |= curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, on_socket);
    rc |= curl_multi_setopt(m, CURLMOPT_SOCKETDATA, sh);
    rc |= curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    rc |= curl_multi_setopt(m, CURLMOPT_TIMERDATA, sh);
    rc |= curl_multi_setopt(m, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    rc |= curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)o->max_host_connections);
    rc |= curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)o->max_total_connections);
    if (o->max_idle_connections)
        rc |= curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)o->max_idle_connections);
    rc |= curl_multi_setopt(m, CURLMOPT_MAX_CONCURRENT_STREAMS,
                            (long)(o->max_streams ? o->max_streams : 100));
    return rc == CURLM_OK ? DSPY_OK : DSPY_EINVAL;
}

static struct dspy__engine_shard *shard_new(struct dspy__engine *e)
{
    bool bounded = e->per_shard != UINT32_MAX;
    struct dspy__engine_shard **v = dspy_realloc(e->shards, (e->nshards + 1) * sizeof(*v));
    if (!v)
        return NULL;
    e->shards = v;
    size_t places = ((size_t)e->nshards + 1) * e->per_shard; /* every place may be free */
    if (bounded && places > e->caproom) {
        size_t cap = e->caproom ? e->caproom * 2 : 1024;
        if (cap < places)
            cap = places;
        uint32_t *room = dspy_realloc(e->room, cap * sizeof(*room));
        if (!room)
            return NULL;
        e->room = room;
        e->caproom = cap;
    }
    if (dspy__engine_reserve_timers(e, 2))
        return NULL;
    struct dspy__engine_shard *sh = dspy_calloc(1, sizeof(*sh));
    if (!sh)
        return NULL;
    sh->e = e;
    sh->index = e->nshards;
    dspy__engine_timer_init(&sh->timer, shard_timer_fire);
    sh->multi = curl_multi_init();
    if (!sh->multi || setup_multi(e, sh)) {
        if (sh->multi)
            curl_multi_cleanup(sh->multi);
        dspy_free(sh);
        return NULL;
    }
    e->shards[e->nshards++] = sh;
    for (uint32_t i = 0; bounded && i < e->per_shard; i++)
        e->room[e->nroom++] = sh->index;
    return sh;
}

/* The shard for a new attempt: the one where a transfer ended last, whose kept-alive
 * connection is then the one reused. */
struct dspy__engine_shard *dspy__engine_shard_get(struct dspy__engine *e)
{
    struct dspy__engine_shard *sh;
    if (e->per_shard == UINT32_MAX)
        sh = e->nshards ? e->shards[0] : shard_new(e);
    else if (e->nroom || shard_new(e))
        sh = e->shards[e->room[--e->nroom]];
    else
        sh = NULL;
    if (sh)
        sh->active++;
    return sh;
}

void dspy__engine_shard_put(struct dspy__engine *e, struct dspy__engine_shard *sh)
{
    sh->active--;
    if (e->per_shard != UINT32_MAX)
        e->room[e->nroom++] = sh->index;
}

void dspy__engine_shards_free(struct dspy__engine *e)
{
    for (uint32_t i = 0; i < e->nshards; i++) {
        curl_multi_cleanup(e->shards[i]->multi);
        dspy_free(e->shards[i]);
    }
    dspy_free(e->shards);
    dspy_free(e->room);
    e->shards = NULL;
    e->room = NULL;
    e->nshards = 0;
}

/* ---- slots: easy handles and buffers, reused ---- */

void dspy__engine_slot_free(struct dspy__engine_slot *s)
{
    if (!s)
        return;
    if (s->easy)
        curl_easy_cleanup(s->easy);
    dspy__h1_release(&s->h1);
    dspy__buf_release(&s->req);
    dspy__buf_release(&s->body);
    dspy__sse_release(&s->sse);
    dspy_free(s);
}

/* curl's own socket() with its errno kept: curl reports a socket that could not be
 * created as CURLE_COULDNT_CONNECT, and an EMFILE must never read as a connection refused. */
static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
    struct dspy__engine_slot *s = clientp;
    (void)purpose;
    curl_socket_t fd = socket(addr->family, addr->socktype, addr->protocol);
    if (fd == CURL_SOCKET_BAD)
        s->socket_errno = errno;
    return fd;
}

static struct dspy__engine_slot *slot_new(void)
{
    struct dspy__engine_slot *s = dspy_calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    dspy__buf_init(&s->body, 0);
    dspy__buf_init(&s->req, 0);
    dspy__sse_init(&s->sse, 0, on_sse_event, s);
    dspy__h1_init(&s->h1, 0, on_h1_body, s);
    return s;
}

dspy_status dspy__engine_slot_easy(struct dspy__engine *e, struct dspy__engine_slot *s)
{
    if (s->easy)
        return DSPY_OK;
    CURL *h = s->easy = curl_easy_init();
    if (!h)
        return DSPY_ENOMEM;
    const struct dspy__engine_options *o = &e->opts;
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_SHARE, e->share);
    curl_easy_setopt(h, CURLOPT_PRIVATE, s);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, s);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, s);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(o->connect_timeout_ns / 1000000u));
    if (o->recv_buffer_bytes)
        curl_easy_setopt(h, CURLOPT_BUFFERSIZE, (long)o->recv_buffer_bytes);
    if (o->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, o->ca_file);
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION,
                     o->http2_prior_knowledge ? (long)CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
                                              : (long)CURL_HTTP_VERSION_2TLS);
    return DSPY_OK;
}

struct dspy__engine_slot *dspy__engine_slot_get(struct dspy__engine *e)
{
    struct dspy__engine_slot *s = e->free_slots;
    if (!s)
        return slot_new();
    e->free_slots = s->next_free;
    e->nfree_slots--;
    return s;
}

/* A body buffer grown past this is not kept on the free list: a few large answers must
 * not pin memory in every idle handle. Most chat completions fit. */
#define KEEP_BUF_BYTES (16u << 10)

void dspy__engine_slot_put(struct dspy__engine *e, struct dspy__engine_slot *s)
{
    s->call = NULL;
    if (e->nfree_slots >= e->opts.keep_idle_handles) {
        dspy__engine_slot_free(s);
        return;
    }
    if (s->body.cap > KEEP_BUF_BYTES)
        dspy__buf_release(&s->body);
    if (s->h1.head.cap > KEEP_BUF_BYTES)
        dspy__buf_release(&s->h1.head);
    if (s->req.cap > KEEP_BUF_BYTES)
        dspy__buf_release(&s->req);
    dspy__buf_reset(&s->body);
    s->next_free = e->free_slots;
    e->free_slots = s;
    e->nfree_slots++;
}

long dspy__engine_ms_ceil(uint64_t ns)
{
    uint64_t ms = (ns + 999999u) / 1000000u;
    return ms > (uint64_t)0x7fffffff ? 0x7fffffffL : (long)(ms ? ms : 1);
}

void dspy__engine_setup_easy(struct dspy__engine_call *c, CURL *h, uint64_t now)
{
    curl_easy_setopt(h, CURLOPT_URL, c->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers ? c->headers->list : NULL);
    curl_easy_setopt(h, CURLOPT_NOBODY, c->is_head ? 1L : 0L);
    if (c->is_post) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body ? c->body : "");
    } else if (!c->is_head) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    }
    bool standard = strcmp(c->method, "GET") == 0 || strcmp(c->method, "POST") == 0 || c->is_head;
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, standard ? NULL : c->method);
    uint64_t limit = c->timeout_ns;
    if (c->deadline_abs_ns) {
        uint64_t left = c->deadline_abs_ns > now ? c->deadline_abs_ns - now : 1;
        if (!limit || left < limit)
            limit = left;
    }
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, limit ? dspy__engine_ms_ceil(limit) : 0L);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->max_response_bytes);
    /* Waiting for a connection that may turn out to multiplex only pays off where HTTP/2
     * can be negotiated; on cleartext HTTP/1.1 it would hold back a whole burst. */
    curl_easy_setopt(h, CURLOPT_PIPEWAIT, (c->https || c->e->opts.http2_prior_knowledge) ? 1L : 0L);
}

void dspy__engine_set_error(struct dspy__engine_call *c, const char *what)
{
    char url[1024];
    dspy_url_redact(c->url, url, sizeof(url)); /* never a password in a message */
    const char *host = strstr(url, "://");
    host = host ? host + 3 : url;
    size_t hlen = strcspn(host, "/?#");
    snprintf(c->error, sizeof(c->error), "%s %.*s: %s", c->method, (int)hlen, host, what);
}

static dspy_status classify(struct dspy__engine_call *c, CURLcode cc);

dspy_status dspy__engine_classify(struct dspy__engine_call *c, CURLcode cc)
{
    dspy_status st = classify(c, cc);
    if (st && c->slot->why && st != DSPY_ECANCELED)
        dspy__engine_set_error(c, c->slot->why);
    return st;
}

static dspy_status classify(struct dspy__engine_call *c, CURLcode cc)
{
    struct dspy__engine_slot *s = c->slot;
    switch (cc) {
    case CURLE_OK:
        if (s->streaming && !dspy__sse_finish(&s->sse)) {
            dspy__engine_set_error(c, "event stream ended inside an event");
            return DSPY_ELM_BAD_RESPONSE;
        }
        return DSPY_OK;
    case CURLE_WRITE_ERROR:
        if (s->write_rc == DSPY_ETOOBIG)
            dspy__engine_set_error(c, "response larger than the limit");
        else if (s->write_rc == DSPY_ECANCELED)
            dspy__engine_set_error(c, "cancelled by the event callback");
        else
            dspy__engine_set_error(c, "out of memory for the response");
        return s->write_rc ? s->write_rc : DSPY_ELM_NETWORK;
    case CURLE_FILESIZE_EXCEEDED:
        dspy__engine_set_error(c, "response larger than the limit");
        return DSPY_ETOOBIG;
    case CURLE_OPERATION_TIMEDOUT: dspy__engine_set_error(c, "timed out"); return DSPY_ELM_TIMEOUT;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_BAD_FUNCTION_ARGUMENT:
        dspy__engine_set_error(c, curl_easy_strerror(cc));
        return DSPY_EINVAL;
    case CURLE_OUT_OF_MEMORY: dspy__engine_set_error(c, "out of memory"); return DSPY_ENOMEM;
    case CURLE_COULDNT_CONNECT: {
        long os_errno = 0;
        if (!s->own)
            curl_easy_getinfo(s->easy, CURLINFO_OS_ERRNO, &os_errno);
        int why = s->socket_errno ? s->socket_errno : (int)os_errno;
        if (why == EMFILE || why == ENFILE) {
            dspy__engine_set_error(c, why == EMFILE
                                          ? "cannot open a socket: too many open files "
                                            "(EMFILE): the process's open-files limit is "
                                            "reached; raise it (ulimit -n) or lower the "
                                            "concurrency"
                                          : "cannot open a socket: the system's file table is "
                                            "full (ENFILE)");
            return DSPY_ERESOURCE;
        }
        dspy__engine_set_error(c, curl_easy_strerror(cc));
        return DSPY_ELM_NETWORK;
    }
    default: dspy__engine_set_error(c, curl_easy_strerror(cc)); return DSPY_ELM_NETWORK;
    }
}

int64_t dspy__engine_retry_after(const struct dspy__engine_slot *s)
{
    int64_t ra = -1;
    if (s->retry_after_ms_len)
        ra = dspy__retry_parse_after_ms(s->retry_after_ms, s->retry_after_ms_len);
    if (ra < 0 && s->retry_after_len)
        ra = dspy__retry_parse_after(s->retry_after, s->retry_after_len, time(NULL));
    return ra;
}

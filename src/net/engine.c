/* HTTP client engine, thread-safe side (net layer): creating and freeing the engine,
 * submitting calls from any thread through a lock-free inbox, handles with wait/cancel,
 * groups, the limiter registry and header lists. What runs on the loop thread is in
 * engine_loop.c. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "base/ascii.h"
#include "base/clock.h"
#include "base/status.h"
#include "net/engine_int.h"

#define DEFAULT_MAX_RESPONSE ((size_t)16 << 20)
#define DEFAULT_KEEP_HANDLES 4096u
#define DEFAULT_CONNECT_TIMEOUT_NS 10000000000ull

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;

static void global_init_once(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- inbox ---- */

void dspy__engine_push(struct dspy__engine *e, struct dspy__engine_msg *m)
{
    struct dspy__engine_msg *old = atomic_load_explicit(&e->inbox, memory_order_relaxed);
    do {
        m->next = old;
    } while (!atomic_compare_exchange_weak_explicit(&e->inbox, &old, m, memory_order_release,
                                                    memory_order_relaxed));
    /* Only the push that makes the inbox non-empty wakes the loop; the loop itself checks
     * the inbox before it sleeps. */
    if (!old && !dspy__engine_on_loop(e)) {
        uint64_t one = 1;
        ssize_t w;
        do {
            w = write(e->evfd, &one, sizeof(one));
        } while (w < 0 && errno == EINTR);
    }
}

/* ---- engine ---- */

static void close_fds(struct dspy__engine *e)
{
    if (e->evfd >= 0)
        close(e->evfd);
    if (e->epfd >= 0)
        close(e->epfd);
}

/* The loop thread blocks every signal: they belong to the application's threads. */
static int start_thread(struct dspy__engine *e)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&e->thread, NULL, dspy__engine_loop_main, e);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

struct dspy__engine *dspy__engine_new(const struct dspy__engine_options *opts,
                                      struct dspy_error *err)
{
    pthread_once(&global_once, global_init_once);
    if (global_rc != CURLE_OK) {
        dspy__err(err, DSPY_ENOMEM, "libcurl global init failed: %s",
                  curl_easy_strerror(global_rc));
        return NULL;
    }
    struct dspy__engine *e = dspy_calloc(1, sizeof(*e));
    if (!e) {
        dspy__err(err, DSPY_ENOMEM, "out of memory creating the HTTP engine");
        return NULL;
    }
    struct dspy__engine_options defaults = DSPY__ENGINE_OPTIONS_INIT;
    e->opts = opts ? *opts : defaults;
    if (!e->opts.keep_idle_handles)
        e->opts.keep_idle_handles = DEFAULT_KEEP_HANDLES;
    if (!e->opts.connect_timeout_ns)
        e->opts.connect_timeout_ns = DEFAULT_CONNECT_TIMEOUT_NS;
    const curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);
    if (e->opts.http2_prior_knowledge && cv->version_num < 0x080000) {
        dspy__err(err, DSPY_EUNSUPPORTED,
                  "HTTP/2 prior knowledge needs libcurl 8.0 or later (this is %s, whose reused "
                  "h2c connections fail: curl issue 10634)",
                  cv->version);
        goto free_engine;
    }
    if (e->opts.ca_file) {
        e->ca_file = dspy_strdup(e->opts.ca_file);
        e->opts.ca_file = e->ca_file;
        if (!e->ca_file) {
            dspy__err(err, DSPY_ENOMEM, "out of memory creating the HTTP engine");
            goto free_engine;
        }
    }
    e->epfd = e->evfd = -1;
    e->own_h1 = dspy__engine_h1_wanted(&e->opts);
    e->rng = dspy__now_ns() ^ (uint64_t)(uintptr_t)e;
    atomic_init(&e->inbox, NULL);
    atomic_init(&e->stopping, false);
    dspy__engine_timers_init(&e->timers);
    dspy__engine_timer_init(&e->h1_timer, dspy__engine_h1_dispatch);
    if (pthread_mutex_init(&e->limiters_lock, NULL)) {
        dspy__err(err, DSPY_ENOMEM, "cannot create a mutex for the HTTP engine");
        goto free_engine;
    }
    /* libcurl's connection limits hold per multi handle: exact only with one of them. */
    if (e->opts.max_host_connections || e->opts.max_total_connections)
        e->per_shard = UINT32_MAX;
    else
        e->per_shard = e->opts.transfers_per_multi ? e->opts.transfers_per_multi : 64;
    /* Shards share DNS answers and TLS sessions, so spreading transfers over them costs no
     * extra lookups or full handshakes. No lock callbacks: only the loop thread uses it. */
    e->share = curl_share_init();
    if (!e->share || curl_share_setopt(e->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) ||
        curl_share_setopt(e->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION)) {
        dspy__err(err, DSPY_ENOMEM, "cannot create a libcurl share handle");
        goto free_share;
    }
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
    e->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0 }; /* key 0: the eventfd */
    if (e->epfd < 0 || e->evfd < 0 || epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->evfd, &ev)) {
        dspy__err(err, DSPY_EIO, "cannot create the engine's epoll set: %s", strerror(errno));
        goto close_fds;
    }
    if (start_thread(e)) {
        dspy__err(err, DSPY_ENOMEM, "cannot start the HTTP engine's loop thread");
        goto close_fds;
    }
    return e;

close_fds:
    close_fds(e);
free_share:
    if (e->share)
        curl_share_cleanup(e->share);
    pthread_mutex_destroy(&e->limiters_lock);
free_engine:
    dspy_free(e->ca_file);
    dspy_free(e);
    return NULL;
}

void dspy__engine_free(struct dspy__engine *e)
{
    if (!e)
        return;
    atomic_store(&e->stopping, true);
    uint64_t one = 1;
    if (write(e->evfd, &one, sizeof(one)) < 0) {
        /* The counter cannot overflow in practice; the loop also polls `stopping`. */
    }
    pthread_join(e->thread, NULL);
    /* No lookup is handed back from here on (one under way ends on its own, later); those
     * that came in after the loop's last look at the inbox are dropped. */
    dspy__engine_resolver_detach(e->resolver);
    struct dspy__engine_msg *m = atomic_exchange(&e->inbox, NULL);
    while (m) {
        struct dspy__engine_msg *next = m->next;
        if (m->kind == DSPY__MSG_RESOLVED)
            dspy_free(DSPY__CONTAINER_OF(m, struct dspy__engine_lookup, msg));
        m = next;
    }
    dspy__engine_resolver_release(e->resolver);
    dspy__engine_h1_free(e);
    while (e->free_slots) {
        struct dspy__engine_slot *s = e->free_slots;
        e->free_slots = s->next_free;
        dspy__engine_slot_free(s);
    }
    dspy__engine_timers_release(&e->timers); /* before the owners of the timers it holds */
    dspy__engine_shards_free(e);
    curl_share_cleanup(e->share);
    struct dspy__engine_limiter *l = e->limiters;
    while (l) {
        struct dspy__engine_limiter *next = l->next;
        dspy__ratelimit_free(l->rl);
        dspy_free(l);
        l = next;
    }
    close_fds(e);
    pthread_mutex_destroy(&e->limiters_lock);
    dspy_free(e->ca_file);
    dspy_free(e);
}

void dspy__engine_get_stats(struct dspy__engine *e, struct dspy__engine_stats *st)
{
    st->submitted = atomic_load_explicit(&e->n_submitted, memory_order_relaxed);
    st->rejected_busy = atomic_load_explicit(&e->n_rejected, memory_order_relaxed);
    st->finished = atomic_load_explicit(&e->n_finished, memory_order_relaxed);
    st->failed = atomic_load_explicit(&e->n_failed, memory_order_relaxed);
    st->attempts = atomic_load_explicit(&e->n_attempts, memory_order_relaxed);
    st->retries = atomic_load_explicit(&e->n_retries, memory_order_relaxed);
    st->ratelimit_waits = atomic_load_explicit(&e->n_rl_waits, memory_order_relaxed);
    st->in_flight = atomic_load_explicit(&e->n_in_flight, memory_order_relaxed);
    st->pending = atomic_load_explicit(&e->n_pending, memory_order_relaxed);
}

/* ---- submit ---- */

static bool valid_method(const char *m)
{
    size_t n = strlen(m);
    if (n == 0 || n > 16)
        return false;
    for (size_t i = 0; i < n; i++)
        if (m[i] < 'A' || m[i] > 'Z')
            return false;
    return true;
}

static dspy_status check_request(const struct dspy__engine_request *req, struct dspy_error *err)
{
    bool http = req->url &&
                (strncmp(req->url, "http://", 7) == 0 || strncmp(req->url, "https://", 8) == 0);
    if (!http)
        return dspy__err(err, DSPY_EINVAL, "request URL must be absolute http:// or https://");
    if (req->method && !valid_method(req->method))
        return dspy__err(err, DSPY_EINVAL, "bad HTTP method (want an upper-case token)");
    if (req->body_len && !req->body)
        return dspy__err(err, DSPY_EINVAL, "request body_len set without a body");
    if (req->retry && req->retry->max_attempts == 0)
        return dspy__err(err, DSPY_EINVAL, "retry policy with max_attempts 0");
    return DSPY_OK;
}

static dspy_status count_pending(struct dspy__engine *e)
{
    size_t max = e->opts.max_pending;
    uint64_t cur = atomic_load_explicit(&e->n_pending, memory_order_relaxed);
    do {
        if (max && cur >= max)
            return DSPY_EBUSY;
    } while (!atomic_compare_exchange_weak_explicit(&e->n_pending, &cur, cur + 1,
                                                    memory_order_relaxed, memory_order_relaxed));
    return DSPY_OK;
}

static struct dspy__engine_call *call_new(struct dspy__engine *e,
                                          const struct dspy__engine_request *req, bool handle)
{
    const char *method = req->method ? req->method : (req->body ? "POST" : "GET");
    size_t ulen = strlen(req->url), mlen = strlen(method);
    struct dspy__engine_call *c = dspy_calloc(1, sizeof(*c) + ulen + mlen + 2);
    if (!c)
        return NULL;
    if (handle) {
        if (pthread_mutex_init(&c->mu, NULL))
            goto free_call;
        pthread_condattr_t attr;
        if (pthread_condattr_init(&attr))
            goto destroy_mutex;
        /* Waits take monotonic deadlines, like every other time in the engine. */
        int rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        if (!rc)
            rc = pthread_cond_init(&c->cv, &attr);
        pthread_condattr_destroy(&attr);
        if (rc)
            goto destroy_mutex;
        c->has_handle = true;
    }
    memcpy(c->storage, req->url, ulen + 1);
    memcpy(c->storage + ulen + 1, method, mlen + 1);
    c->url = c->storage;
    c->method = c->storage + ulen + 1;
    c->is_post = req->body || strcmp(method, "POST") == 0;
    c->is_head = strcmp(method, "HEAD") == 0;
    c->https = strncmp(req->url, "https://", 8) == 0;
    c->own = e->own_h1 && !c->https && dspy__engine_h1_parse_url(c);
    atomic_init(&c->refs, handle ? 2u : 1u);
    atomic_init(&c->cancel_asked, false);
    atomic_init(&c->reconciled, false);
    atomic_init(&c->finished, false);
    c->e = e;
    c->submit_msg.kind = DSPY__MSG_SUBMIT;
    c->cancel_msg.kind = DSPY__MSG_CANCEL;
    c->headers = req->headers;
    c->body = req->body;
    c->body_len = req->body_len;
    c->timeout_ns = req->timeout_ns;
    c->max_response_bytes = req->max_response_bytes ? req->max_response_bytes
                                                    : DEFAULT_MAX_RESPONSE;
    c->max_event_bytes = req->max_event_bytes;
    if (req->retry) {
        c->retry = *req->retry;
    } else {
        struct dspy__retry_policy once = DSPY__RETRY_POLICY_INIT;
        once.max_attempts = 1;
        c->retry = once;
    }
    c->limiter = req->limiter;
    c->est_tokens = req->est_tokens;
    c->waiter.tokens = req->est_tokens;
    c->group = req->group;
    c->on_event = req->on_event;
    c->on_done = req->on_done;
    c->userdata = req->userdata;
    c->state = DSPY__CALL_QUEUED;
    dspy__engine_timer_init(&c->timer, NULL);
    c->res.body = "";
    c->res.retry_after_ns = -1;
    c->res.error = c->error;
    return c;

destroy_mutex:
    pthread_mutex_destroy(&c->mu);
free_call:
    dspy_free(c);
    return NULL;
}

dspy_status dspy__engine_submit(struct dspy__engine *e, const struct dspy__engine_request *req,
                                struct dspy__engine_call **handle, struct dspy_error *err)
{
    if (handle)
        *handle = NULL;
    dspy_status rc = check_request(req, err);
    if (rc)
        return rc;
    if (count_pending(e)) {
        DSPY__STAT_ADD(e, n_rejected, 1);
        return dspy__err(err, DSPY_EBUSY, "HTTP engine: %zu calls pending, the limit",
                         e->opts.max_pending);
    }
    if (req->limiter && dspy__ratelimit_admit(req->limiter->rl, false)) {
        rc = dspy__err(err, DSPY_EBUSY, "rate limiter '%s': wait queue full", req->limiter->key);
        DSPY__STAT_ADD(e, n_rejected, 1);
        goto uncount;
    }
    struct dspy__engine_call *c = call_new(e, req, handle != NULL);
    if (!c) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory submitting an HTTP request");
        goto leave_limiter;
    }
    c->owns_body = req->take_body;
    c->admitted = req->limiter != NULL;
    if (c->group)
        atomic_fetch_add_explicit(&c->group->refs, 1, memory_order_relaxed);
    c->res.submit_ns = dspy__now_ns();
    if (c->retry.deadline_ns && (!req->deadline_ns || c->retry.deadline_ns < req->deadline_ns))
        c->deadline_abs_ns = c->res.submit_ns + c->retry.deadline_ns;
    else if (req->deadline_ns)
        c->deadline_abs_ns = c->res.submit_ns + req->deadline_ns;
    DSPY__STAT_ADD(e, n_submitted, 1);
    if (handle)
        *handle = c;
    dspy__engine_push(e, &c->submit_msg);
    return DSPY_OK;

leave_limiter:
    if (req->limiter)
        dspy__ratelimit_leave(req->limiter->rl);
uncount:
    DSPY__STAT_SUB(e, n_pending, 1);
    return rc;
}

/* ---- handles ---- */

void dspy__engine_call_unref(struct dspy__engine_call *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (c->has_handle) {
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
    }
    dspy_free(c->kept_body);
    dspy_free(c);
}

void dspy__engine_call_release(struct dspy__engine_call *call)
{
    if (call)
        dspy__engine_call_unref(call);
}

void dspy__engine_call_cancel(struct dspy__engine_call *call)
{
    if (atomic_load_explicit(&call->finished, memory_order_acquire))
        return;
    if (atomic_exchange_explicit(&call->cancel_asked, true, memory_order_acq_rel))
        return;
    atomic_fetch_add_explicit(&call->refs, 1, memory_order_relaxed);
    dspy__engine_push(call->e, &call->cancel_msg);
}

bool dspy__engine_call_done(struct dspy__engine_call *call)
{
    return atomic_load_explicit(&call->finished, memory_order_acquire);
}

dspy_status dspy__engine_call_wait(struct dspy__engine_call *call, uint64_t deadline_ns,
                                   const struct dspy__engine_result **res)
{
    dspy_status rc = DSPY_OK;
    if (dspy__engine_on_loop(call->e)) /* the loop would wait for itself */
        return DSPY_EINVAL;
    pthread_mutex_lock(&call->mu);
    struct timespec ts = { (time_t)(deadline_ns / 1000000000u), (long)(deadline_ns % 1000000000u) };
    while (!call->done_seen) {
        if (!deadline_ns) {
            pthread_cond_wait(&call->cv, &call->mu);
        } else if (pthread_cond_timedwait(&call->cv, &call->mu, &ts) == ETIMEDOUT &&
                   !call->done_seen) {
            rc = DSPY_ELM_TIMEOUT;
            break;
        }
    }
    pthread_mutex_unlock(&call->mu);
    if (!rc && res)
        *res = &call->res;
    return rc;
}

bool dspy__engine_call_header(struct dspy__engine_call *call, const char *name, const char **value,
                              size_t *len)
{
    struct curl_header *h = NULL;
    if (dspy__engine_on_loop(call->e) && call->slot && call->slot->own)
        return dspy__h1_header(&call->slot->h1, name, value, len);
    if (!dspy__engine_on_loop(call->e) || !call->slot || !call->slot->easy ||
        curl_easy_header(call->slot->easy, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
        return false;
    *value = h->value;
    *len = strlen(h->value);
    return true;
}

void dspy__engine_call_reconcile(struct dspy__engine_call *call, uint64_t actual_tokens)
{
    if (!call->limiter || atomic_exchange(&call->reconciled, true))
        return;
    dspy__ratelimit_reconcile(call->limiter->rl, call->est_tokens, actual_tokens);
}

/* ---- groups ---- */

struct dspy__engine_group *dspy__engine_group_new(struct dspy__engine *e)
{
    struct dspy__engine_group *g = dspy_calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->e = e;
    g->cancel_msg.kind = DSPY__MSG_GROUP_CANCEL;
    atomic_init(&g->refs, 1u);
    atomic_init(&g->cancel_asked, false);
    atomic_init(&g->cancelled, false);
    return g;
}

void dspy__engine_group_unref(struct dspy__engine_group *g)
{
    if (atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1)
        dspy_free(g);
}

void dspy__engine_group_cancel(struct dspy__engine_group *g)
{
    /* Set first: a call the loop takes from the inbox after this sees it. */
    atomic_store_explicit(&g->cancelled, true, memory_order_release);
    if (atomic_exchange_explicit(&g->cancel_asked, true, memory_order_acq_rel))
        return;
    atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    dspy__engine_push(g->e, &g->cancel_msg);
}

void dspy__engine_group_free(struct dspy__engine_group *g)
{
    if (g)
        dspy__engine_group_unref(g);
}

/* ---- limiters ---- */

struct dspy__engine_limiter *dspy__engine_limiter_get(struct dspy__engine *e, const char *key,
                                                      const struct dspy__ratelimit_options *opts)
{
    pthread_mutex_lock(&e->limiters_lock);
    struct dspy__engine_limiter *l = e->limiters;
    while (l && strcmp(l->key, key) != 0)
        l = l->next;
    if (l)
        goto unlock;
    size_t klen = strlen(key);
    l = dspy_calloc(1, sizeof(*l) + klen + 1);
    if (!l)
        goto unlock;
    l->rl = dspy__ratelimit_new(opts, dspy__now_ns());
    if (!l->rl) {
        dspy_free(l);
        l = NULL;
        goto unlock;
    }
    memcpy(l->key, key, klen + 1);
    dspy__engine_timer_init(&l->timer, dspy__engine_limiter_fire);
    l->next = e->limiters;
    e->limiters = l;
    atomic_fetch_add(&e->nlimiters, 1);
unlock:
    pthread_mutex_unlock(&e->limiters_lock);
    return l;
}

/* ---- header lists ---- */

/* Add `line` to the own transport's wire form, as libcurl would send it: "Name:" with no
 * value removes a header the client would add, "Name;" sends it empty. */
static dspy_status add_wire(struct dspy__engine_headers *h, struct dspy_buf *w, const char *line)
{
    size_t n = strcspn(line, ":;");
    const char *v = line + n;
    if (!*v)
        return DSPY_OK; /* not a header line: libcurl would not send it either */
    struct {
        const char *name;
        bool *flag;
    } known[] = { { "Host", &h->has_host },
                  { "Accept", &h->has_accept },
                  { "Content-Type", &h->has_ctype },
                  { "Authorization", &h->has_auth },
                  { "Content-Length", &h->has_clen } };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strlen(known[i].name) == n && strncasecmp(line, known[i].name, n) == 0)
            *known[i].flag = true;
    const char *val = v + 1;
    while (*val == ' ' || *val == '\t')
        val++;
    dspy_status rc = DSPY_OK;
    if (*v == ';') {
        if (!*val)
            rc = dspy__buf_addf(w, "%.*s:\r\n", (int)n, line);
    } else if (*val) {
        rc = dspy__buf_addf(w, "%s\r\n", line);
    }
    return rc;
}

struct dspy__engine_headers *dspy__engine_headers_new(const char *const *lines, size_t n)
{
    struct dspy__engine_headers *h = dspy_calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    struct dspy_buf w;
    dspy__buf_init(&w, 0);
    for (size_t i = 0; i < n; i++) {
        /* A control character (CR, LF above all) would split the line into two headers. */
        struct curl_slist *next = dspy__find_ctl(lines[i]) < 0
                                      ? curl_slist_append(h->list, lines[i])
                                      : NULL;
        if (!next || add_wire(h, &w, lines[i])) {
            if (next)
                h->list = next;
            curl_slist_free_all(h->list);
            dspy__buf_release(&w);
            dspy_free(h);
            return NULL;
        }
        h->list = next;
    }
    h->wire = w.len ? dspy__buf_detach(&w, &h->wire_len) : NULL;
    return h;
}

void dspy__engine_headers_free(struct dspy__engine_headers *h)
{
    if (!h)
        return;
    curl_slist_free_all(h->list);
    dspy_free(h->wire);
    dspy_free(h);
}

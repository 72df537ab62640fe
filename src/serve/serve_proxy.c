/* The OpenAI-compatible caching proxy (serve layer): POST /v1/chat/completions (plain and
 * streamed), POST /v1/embeddings and GET /v1/models in front of the configured upstreams.
 * A request is keyed as the lm layer keys the same request, looked up in the cache, joined
 * to an identical request already on its way upstream (single-flight), or sent upstream
 * through that upstream's engine without holding a thread; retryable failures fall back to
 * the next upstream. Answers are stored only when whole; streams are teed to the client as
 * they come and assembled into the plain body the cache keeps, and hits replay as streams. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/status.h"
#include "base/jsonw.h"
#include "lm/lm_int.h"
#include "net/retry.h"
#include "serve/serve_int.h"

#define FLIGHT_BUCKETS 1024
#define NS_MAX (2 * DSPY_CACHE_NS_MAX + 2)

enum endpoint { EP_CHAT, EP_EMBED, EP_MODELS };

/* ---- single-flight across clients --------------------------------------------------------- */

struct waiter {
    struct dspy__serve_ctx *ctx; /* holds a request reference */
    bool stream, include_usage;
    struct waiter *next;
};

struct flight {
    struct dspy_cache_key key;
    struct waiter *waiters;
    struct flight *next;
};

struct dspy__serve_flights {
    pthread_mutex_t lock; /* guards the buckets and every flight's waiters */
    struct flight *b[FLIGHT_BUCKETS];
};

static struct flight **flight_slot(struct dspy__serve_flights *f, const struct dspy_cache_key *k)
{
    unsigned h = ((unsigned)k->bytes[14] << 8 | k->bytes[15]) % FLIGHT_BUCKETS;
    struct flight **p = &f->b[h];
    while (*p && memcmp((*p)->key.bytes, k->bytes, sizeof(k->bytes)))
        p = &(*p)->next;
    return p;
}

/* Join the flight for `key` as a waiter (true: someone else is fetching it), or start one
 * as its leader (false). Out of memory: false and no flight (the caller goes alone). */
static bool flight_join(dspy_server *s, const struct dspy_cache_key *key,
                        struct dspy__serve_ctx *ctx, bool stream, bool include_usage, bool *leader)
{
    struct dspy__serve_flights *f = s->flights;
    bool joined = false;
    *leader = false;
    pthread_mutex_lock(&f->lock);
    struct flight **p = flight_slot(f, key);
    if (*p) {
        struct waiter *w = dspy_malloc(sizeof(*w));
        if (w) {
            dspy__srv_req_ref(ctx->req);
            *w = (struct waiter){ ctx, stream, include_usage, (*p)->waiters };
            (*p)->waiters = w;
            joined = true;
        }
    } else {
        struct flight *fl = dspy_malloc(sizeof(*fl));
        if (fl) {
            *fl = (struct flight){ *key, NULL, NULL };
            *p = fl;
            *leader = true;
        }
    }
    pthread_mutex_unlock(&f->lock);
    return joined;
}

static struct waiter *flight_end(dspy_server *s, const struct dspy_cache_key *key)
{
    struct dspy__serve_flights *f = s->flights;
    struct waiter *w = NULL;
    pthread_mutex_lock(&f->lock);
    struct flight **p = flight_slot(f, key);
    if (*p) {
        struct flight *fl = *p;
        *p = fl->next;
        w = fl->waiters;
        dspy_free(fl);
    }
    pthread_mutex_unlock(&f->lock);
    return w;
}

void dspy__serve_proxy_release(dspy_server *s)
{
    if (!s->flights)
        return;
    for (size_t i = 0; i < FLIGHT_BUCKETS; i++)
        while (s->flights->b[i]) {
            struct flight *fl = s->flights->b[i];
            s->flights->b[i] = fl->next;
            while (fl->waiters) {
                struct waiter *w = fl->waiters;
                fl->waiters = w->next;
                dspy__srv_req_unref(w->ctx->req);
                dspy_free(w);
            }
            dspy_free(fl);
        }
    pthread_mutex_destroy(&s->flights->lock);
    dspy_free(s->flights);
    s->flights = NULL;
}

/* ---- answers from a stored body ------------------------------------------------------------ */

static const char *const hit_headers[] = { "x-dspyc-cache", "hit", NULL };
static const char *const miss_headers[] = { "x-dspyc-cache", "miss", NULL };

static dspy_status add_chunk(struct dspy_buf *b, json_t *chunk)
{
    dspy_status rc = dspy__buf_adds(b, "data: ");
    if (!rc)
        rc = dspy__json_write(b, chunk, DSPY__JSON_COMPACT, 0);
    if (!rc)
        rc = dspy__buf_adds(b, "\n\n");
    json_decref(chunk);
    return rc;
}

static json_t *chunk_head(const json_t *root)
{
    json_t *c = json_object();
    json_t *id = json_object_get(root, "id"), *created = json_object_get(root, "created");
    json_object_set_new(c, "id", id ? json_incref(id) : json_string("chatcmpl-dspyc"));
    json_object_set_new(c, "object", json_string("chat.completion.chunk"));
    json_object_set_new(c, "created",
                        created ? json_copy(created) : json_integer((json_int_t)time(NULL)));
    json_object_set(c, "model", json_object_get(root, "model"));
    return c;
}

/* A plain chat completion replayed as the SSE stream the upstream would have sent: one
 * delta per choice with its whole text (and tool calls), one finish chunk per choice, the
 * usage chunk when the client asked for it, [DONE]. */
dspy_status dspy__serve_replay_sse(const char *body, size_t len, bool include_usage,
                                   struct dspy_buf *out)
{
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *choices = json_object_get(root, "choices");
    dspy_status rc = DSPY_OK;
    if (!json_is_array(choices)) {
        json_decref(root);
        return DSPY_EPARSE;
    }
    for (size_t i = 0; i < json_array_size(choices) && !rc; i++) {
        json_t *ch = json_array_get(choices, i), *msg = json_object_get(ch, "message");
        json_t *c = chunk_head(root), *arr = json_array(), *d = json_object(), *o = json_object();
        json_t *content = json_object_get(msg, "content"),
               *tools = json_object_get(msg, "tool_calls");
        json_object_set_new(d, "role", json_string("assistant"));
        json_object_set(d, "content", content ? content : json_null());
        if (json_is_array(tools)) {
            json_t *tc = json_array();
            for (size_t j = 0; j < json_array_size(tools); j++) {
                json_t *t = json_copy(json_array_get(tools, j));
                json_object_set_new(t, "index", json_integer((json_int_t)j));
                json_array_append_new(tc, t);
            }
            json_object_set_new(d, "tool_calls", tc);
        }
        json_t *idx = json_object_get(ch, "index");
        json_object_set_new(o, "index", idx ? json_copy(idx) : json_integer((json_int_t)i));
        json_object_set_new(o, "delta", d);
        json_object_set_new(o, "finish_reason", json_null());
        json_array_append_new(arr, o);
        json_object_set_new(c, "choices", arr);
        rc = add_chunk(out, c);
    }
    for (size_t i = 0; i < json_array_size(choices) && !rc; i++) {
        json_t *ch = json_array_get(choices, i), *fr = json_object_get(ch, "finish_reason");
        json_t *c = chunk_head(root), *arr = json_array(), *o = json_object();
        json_t *idx = json_object_get(ch, "index");
        json_object_set_new(o, "index", idx ? json_copy(idx) : json_integer((json_int_t)i));
        json_object_set_new(o, "delta", json_object());
        json_object_set_new(o, "finish_reason", fr ? json_incref(fr) : json_string("stop"));
        json_array_append_new(arr, o);
        json_object_set_new(c, "choices", arr);
        rc = add_chunk(out, c);
    }
    json_t *usage = json_object_get(root, "usage");
    if (!rc && include_usage && json_is_object(usage)) {
        json_t *c = chunk_head(root);
        json_object_set_new(c, "choices", json_array());
        json_object_set(c, "usage", usage);
        rc = add_chunk(out, c);
    }
    if (!rc)
        rc = dspy__buf_adds(out, "data: [DONE]\n\n");
    json_decref(root);
    return rc;
}

static void answer_with(struct dspy__serve_ctx *ctx, const char *body, size_t len, bool stream,
                        bool include_usage, const char *const *hdr)
{
    if (!stream) {
        dspy__serve_send(ctx, 200, "application/json", hdr, body, len);
        return;
    }
    struct dspy_buf b;
    dspy__buf_init(&b, (size_t)256 << 20);
    if (dspy__serve_replay_sse(body, len, include_usage, &b))
        dspy__serve_error(ctx, 500, "server_error", "cache_entry_unreadable", NULL,
                          "The cached answer could not be replayed as a stream.");
    else
        dspy__serve_send(ctx, 200, "text/event-stream", hdr, b.ptr, b.len);
    dspy__buf_release(&b);
}

static void answer_body(struct dspy__serve_ctx *ctx, const char *body, size_t len, bool stream,
                        bool include_usage, bool hit)
{
    /* A hit spends no tokens: the counters count what upstreams were asked for. */
    answer_with(ctx, body, len, stream, include_usage, hit ? hit_headers : miss_headers);
}

/* ---- one proxied request --------------------------------------------------------------------- */

struct call {
    dspy_server *s;
    struct dspy__serve_ctx *ctx; /* holds a request reference */
    enum endpoint ep;
    json_t *body;    /* the client's body, parsed (owned) */
    json_t *sem_req; /* the request as keyed, for the semantic level (owned), or NULL */
    const char *raw; /* the client's bytes, borrowed from the request */
    size_t raw_len;
    bool rewrite; /* the body must be re-encoded (a "cache" member to drop) */
    bool stream, include_usage;
    bool keyed, leader;
    struct dspy_cache_key key;
    struct dspy_cache_ctl ctl;
    char ns[NS_MAX];
    int primary;    /* the upstream the model routes to */
    size_t attempt; /* 0 = primary, i = its fallbacks[i - 1] */
    struct dspy__lm_stream_acc *acc;
    bool started; /* stream headers sent */
    uint64_t submit_ns;
};

static void call_free(struct call *c)
{
    dspy__lm_stream_acc_free(c->acc);
    json_decref(c->body);
    json_decref(c->sem_req);
    dspy__srv_req_unref(c->ctx->req);
    dspy_free(c);
}

static int upstream_of(const struct call *c)
{
    const struct dspy__serve_upstream *u = &c->s->ups[c->primary];
    if (!c->attempt)
        return c->primary;
    return c->attempt <= u->nfallbacks ? u->fallbacks[c->attempt - 1] : -1;
}

/* Waiters of a flight that ended: the leader's body, or the leader's error. */
static void resolve_waiters(struct call *c, const char *body, size_t len, int status,
                            const char *ebody, size_t elen)
{
    if (!c->leader)
        return;
    struct waiter *w = flight_end(c->s, &c->key);
    while (w) {
        struct waiter *next = w->next;
        dspy__serve_metrics_event(c->s, DSPY__EV_COALESCED);
        dspy__serve_stage(w->ctx, DSPY__STAGE_UPSTREAM);
        w->ctx->cache_status = "hit";
        w->ctx->upstream = c->ctx->upstream;
        w->ctx->tokens_in = c->ctx->tokens_in;
        w->ctx->tokens_out = c->ctx->tokens_out;
        if (body)
            answer_body(w->ctx, body, len, w->stream, w->include_usage, true);
        else
            dspy__serve_send(w->ctx, status, "application/json", NULL, ebody, elen);
        dspy__srv_req_unref(w->ctx->req);
        dspy_free(w);
        w = next;
    }
    c->leader = false;
}

static void store(struct call *c, const char *body, size_t len)
{
    if (c->keyed && !c->ctl.no_store) {
        dspy_cache_put(c->s->cache, &c->key, body, len, &c->ctl, NULL);
        if (c->sem_req)
            dspy_cache_semantic_put(c->s->cache, c->sem_req, &c->key, &c->ctl);
    }
}

/* The client's error for an upstream failure: the upstream's own OpenAI error object with
 * its status when it sent one (API key scrubbed), else one of ours. */
static void fail(struct call *c, int up, const struct dspy__engine_result *res)
{
    struct dspy__serve_ctx *ctx = c->ctx;
    struct dspy_buf b;
    int status;
    const char *name = up >= 0 ? c->s->ups[up].name : "?";
    dspy__buf_init(&b, 1 << 20);
    if (res->status == DSPY_OK && res->http_status) {
        status = (int)res->http_status;
        json_t *root = json_loadb(res->body, res->body_len, 0, NULL);
        if (json_is_object(json_object_get(root, "error"))) {
            dspy__buf_add(&b, res->body, res->body_len);
        } else {
            char text[300];
            snprintf(text, sizeof(text), "upstream %s answered HTTP %ld: %.200s", name,
                     res->http_status, res->body_len ? res->body : "(no body)");
            dspy__buf_adds(&b, "{\"error\":{\"message\":");
            dspy__buf_add_json_str(&b, text, strlen(text));
            dspy__buf_adds(&b, ",\"type\":\"upstream_error\",\"param\":null,\"code\":null}}");
        }
        json_decref(root);
        if (status >= 200 && status < 300)
            status = 502; /* a 2xx we could not read */
    } else {
        char text[400];
        const char *code = res->status == DSPY_ELM_TIMEOUT ? "upstream_timeout"
                                                           : "upstream_unreachable";
        status = res->status == DSPY_ELM_TIMEOUT ? 504 : 502;
        snprintf(text, sizeof(text), "upstream %s: %s", name,
                 res->error && *res->error ? res->error : dspy_strerror(res->status));
        dspy__buf_adds(&b, "{\"error\":{\"message\":");
        dspy__buf_add_json_str(&b, text, strlen(text));
        dspy__buf_addf(&b, ",\"type\":\"upstream_error\",\"param\":null,\"code\":\"%s\"}}", code);
    }
    if (b.ptr && up >= 0)
        dspy__lm_scrub_key(c->s->ups[up].lm, b.ptr);
    const char *body = b.ptr ? b.ptr : "{}";
    size_t len = b.ptr ? strlen(b.ptr) : 2;
    resolve_waiters(c, NULL, 0, status, body, len);
    dspy__serve_send(ctx, status, "application/json", NULL, body, len);
    dspy__buf_release(&b);
}

/* The engine's own rule (net/retry.h): what another upstream may well answer. */
static bool retryable(const struct dspy__engine_result *res)
{
    return dspy__retry_is_retryable(res->status != DSPY_OK ? (int)res->status
                                                           : (int)res->http_status);
}

/* A 2xx body is stored only when it reads as the endpoint's answer. */
static bool readable(struct call *c, const char *body, size_t len)
{
    if (c->ep == EP_CHAT) {
        struct dspy_lm_response r;
        if (dspy__lm_parse_response(body, len, &r, NULL))
            return false;
        c->ctx->tokens_in = r.usage.prompt_tokens;
        c->ctx->tokens_out = r.usage.completion_tokens;
        dspy_lm_response_release(&r);
        return true;
    }
    if (c->ep == EP_EMBED) {
        json_t *root = json_loadb(body, len, 0, NULL);
        bool ok = json_is_array(json_object_get(root, "data"));
        c->ctx->tokens_in = (long)json_integer_value(
            json_object_get(json_object_get(root, "usage"), "prompt_tokens"));
        json_decref(root);
        return ok;
    }
    return true;
}

static dspy_status submit(struct call *c);

static void on_done(struct dspy__engine_call *ec, const struct dspy__engine_result *res, void *ud)
{
    struct call *c = ud;
    struct dspy__serve_ctx *ctx = c->ctx;
    int up = upstream_of(c);
    (void)ec;
    ctx->upstream_ns += res->done_ns - res->submit_ns;
    if (!c->started)
        dspy__serve_stage(ctx, DSPY__STAGE_UPSTREAM);
    bool ok = res->status == DSPY_OK && res->http_status >= 200 && res->http_status < 300;
    if (c->started) { /* a stream under way: its end */
        char *body = NULL;
        size_t len = 0;
        struct dspy_lm_usage usage = { 0, 0, 0 };
        dspy_status rc = dspy__lm_stream_acc_finish(c->acc, res->http_status,
                                                    res->status ? res->error : NULL, &body, &len,
                                                    &usage, NULL);
        dspy__serve_stage(ctx, DSPY__STAGE_REPLY);
        ctx->tokens_in = usage.prompt_tokens;
        ctx->tokens_out = usage.completion_tokens;
        if (!rc) {
            store(c, body, len);
            resolve_waiters(c, body, len, 0, NULL, 0);
        } else {
            static const char e[] = "{\"error\":{\"message\":\"the upstream stream this request "
                                    "waited for failed\",\"type\":\"upstream_error\",\"param\":"
                                    "null,\"code\":\"upstream_stream_failed\"}}";
            resolve_waiters(c, NULL, 0, 502, e, sizeof(e) - 1);
        }
        dspy__serve_stream_end(ctx, rc != DSPY_OK);
        dspy_free(body);
        call_free(c);
        return;
    }
    if (ok && !c->stream && readable(c, res->body, res->body_len)) {
        dspy__serve_stage(ctx, DSPY__STAGE_REPLY);
        store(c, res->body, res->body_len);
        resolve_waiters(c, res->body, res->body_len, 0, NULL, 0);
        dspy__serve_send(ctx, 200, "application/json", c->keyed ? miss_headers : NULL, res->body,
                         res->body_len);
        call_free(c);
        return;
    }
    if (!ok && retryable(res)) {
        for (;;) {
            c->attempt++;
            if (upstream_of(c) < 0)
                break;
            dspy__serve_metrics_event(c->s, DSPY__EV_FALLBACK);
            if (!submit(c))
                return;
        }
    }
    fail(c, up, res);
    call_free(c);
}

/* The usage-only final chunk: "choices" is an empty array. */
static bool is_usage_chunk(const struct dspy__sse_event *ev)
{
    static const char pat[] = "\"choices\":[]";
    const char *p = ev->data.ptr, *end = p + ev->data.len;
    size_t n = sizeof(pat) - 1;
    for (; p + n <= end; p++)
        if (*p == '"' && !memcmp(p, pat, n))
            return true;
    return false;
}

static int on_event(struct dspy__engine_call *ec, const struct dspy__sse_event *ev, void *ud)
{
    struct call *c = ud;
    struct dspy__serve_ctx *ctx = c->ctx;
    (void)ec;
    if (!c->started) {
        const char *hdr[] = { "x-dspyc-cache", "miss", "Cache-Control", "no-cache", NULL };
        ctx->ttft_ns = ev->recv_ns - c->submit_ns;
        dspy__serve_stage(ctx, DSPY__STAGE_UPSTREAM);
        if (dspy__serve_stream_start(ctx, NULL, c->keyed ? hdr : hdr + 2))
            return 1;
        c->started = true;
    }
    int stop = dspy__lm_stream_acc_event(c->acc, ev);
    if (ev->done) {
        dspy__serve_stream_push(ctx, "data: [DONE]\n\n", 14);
    } else if (ev->data.len && !c->include_usage && is_usage_chunk(ev)) {
        /* asked for by the proxy, not by the client */
    } else if (ev->data.len) {
        char head[] = "data: ";
        struct dspy_buf b;
        dspy__buf_init(&b, ev->data.len + 16);
        if (dspy__buf_add(&b, head, 6) || dspy__buf_add(&b, ev->data.ptr, ev->data.len) ||
            dspy__buf_add(&b, "\n\n", 2) || dspy__serve_stream_push(ctx, b.ptr, b.len))
            stop = 1;
        dspy__buf_release(&b);
    }
    return stop;
}

/* The body for upstream u: the client's bytes, unless a member must go or the model name
 * is an alias there. */
static dspy_status upstream_body(struct call *c, const struct dspy__serve_upstream *u, char **out,
                                 size_t *len)
{
    const char *model = json_string_value(json_object_get(c->body, "model"));
    const char *send_as = model ? dspy__serve_upstream_model(u, model) : NULL;
    *out = NULL;
    if (!c->rewrite && send_as == model)
        return DSPY_OK;
    json_t *b = json_copy(c->body);
    struct dspy_buf buf;
    if (!b)
        return DSPY_ENOMEM;
    json_object_del(b, "cache");
    if (c->stream && !c->include_usage)
        json_object_set_new(b, "stream_options", json_pack("{s:b}", "include_usage", 1));
    if (send_as)
        json_object_set_new(b, "model", json_string(send_as));
    dspy__buf_init(&buf, DSPY__LM_MAX_BODY);
    dspy_status rc = dspy__json_write(&buf, b, DSPY__JSON_COMPACT, 0);
    json_decref(b);
    if (rc) {
        dspy__buf_release(&buf);
        return rc;
    }
    *out = dspy__buf_detach(&buf, len);
    return *out ? DSPY_OK : DSPY_ENOMEM;
}

static dspy_status submit(struct call *c)
{
    int up = upstream_of(c);
    struct dspy__serve_upstream *u = &c->s->ups[up];
    struct dspy__lm_raw_request r = { 0 };
    char *owned = NULL;
    size_t olen = 0;
    dspy_status rc;
    c->ctx->upstream = up;
    if (c->ep == EP_MODELS) {
        r.url = u->models_url;
        r.method = "GET";
    } else {
        if ((rc = upstream_body(c, u, &owned, &olen)))
            return rc;
        r.url = c->ep == EP_CHAT ? u->chat_url : u->embed_url;
        r.body = owned ? owned : c->raw;
        r.len = owned ? olen : c->raw_len;
        r.take_body = owned != NULL;
    }
    r.retry = true;
    if (c->stream) {
        dspy__lm_stream_acc_free(c->acc);
        if (!(c->acc = dspy__lm_stream_acc_new(u->lm))) {
            dspy_free(owned);
            return DSPY_ENOMEM;
        }
        r.on_event = on_event;
    }
    r.on_done = on_done;
    r.userdata = c;
    dspy__serve_stage(c->ctx, DSPY__STAGE_FORMAT);
    c->submit_ns = dspy__now_ns();
    rc = dspy__lm_submit_raw(u->lm, &r, NULL);
    if (rc)
        dspy_free(owned);
    return rc;
}

/* ---- request parsing --------------------------------------------------------------------- */

static bool truthy(const json_t *v)
{
    return json_is_true(v) || (json_is_integer(v) && json_integer_value(v));
}

/* LiteLLM's per-request controls in the body's "cache" object, and the header forms:
 * Cache-Control: no-cache | no-store | s-maxage=N | max-age=N, x-dspyc-cache-ttl: N,
 * x-dspyc-cache-namespace: NS. false with *why set on a bad control. */
bool dspy__serve_body_controls(const json_t *body, struct dspy_cache_ctl *ctl, double *s_maxage,
                               const char **ns, const char **why)
{
    const json_t *cc = json_object_get(body, "cache");
    *s_maxage = 0;
    *ns = NULL;
    if (cc && !json_is_object(cc) && !json_is_null(cc)) {
        *why = "\"cache\" must be an object such as {\"no-cache\": true}";
        return false;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)(uintptr_t)cc, key, v) {
        if (!strcmp(key, "no-cache") || !strcmp(key, "no_cache")) {
            ctl->no_cache = ctl->no_cache || truthy(v);
        } else if (!strcmp(key, "no-store") || !strcmp(key, "no_store")) {
            ctl->no_store = ctl->no_store || truthy(v);
        } else if (!strcmp(key, "use-cache") || !strcmp(key, "use_cache")) {
            if (json_is_false(v))
                ctl->no_cache = ctl->no_store = true;
        } else if (!strcmp(key, "ttl") || !strcmp(key, "s-maxage") || !strcmp(key, "s_maxage")) {
            if (!json_is_number(v) || json_number_value(v) <= 0) {
                *why = "cache ttl and s-maxage must be numbers of seconds > 0";
                return false;
            }
            if (key[0] == 't')
                ctl->ttl_s = json_number_value(v);
            else
                *s_maxage = json_number_value(v);
        } else if (!strcmp(key, "namespace")) {
            if (!json_is_string(v) || json_string_length(v) > DSPY_CACHE_NS_MAX) {
                *why = "cache namespace must be a string of at most 256 bytes";
                return false;
            }
            *ns = json_string_value(v);
        } else {
            *why = "unknown member of \"cache\" (use no-cache, no-store, ttl, s-maxage, "
                   "namespace)";
            return false;
        }
    }
    return true;
}

static bool read_controls(struct dspy__serve_ctx *ctx, const json_t *body,
                          struct dspy_cache_ctl *ctl, double *s_maxage, const char **ns,
                          const char **why)
{
    if (!dspy__serve_body_controls(body, ctl, s_maxage, ns, why))
        return false;
    const char *h = dspy__srv_req_header(ctx->req, "Cache-Control");
    if (h) {
        if (strstr(h, "no-cache"))
            ctl->no_cache = true;
        if (strstr(h, "no-store"))
            ctl->no_store = true;
        if (strstr(h, "no-semantic"))
            ctl->no_semantic = true;
        const char *a = strstr(h, "s-maxage=");
        if (a)
            *s_maxage = strtod(a + 9, NULL);
        else if ((a = strstr(h, "max-age=")))
            *s_maxage = strtod(a + 8, NULL);
        if (a && *s_maxage <= 0) /* max-age=0: nothing stored is fresh enough */
            ctl->no_cache = true;
    }
    if ((h = dspy__srv_req_header(ctx->req, "x-dspyc-cache")) && strstr(h, "no-semantic"))
        ctl->no_semantic = true;
    if ((h = dspy__srv_req_header(ctx->req, "x-dspyc-cache-ttl"))) {
        char *end;
        double t = strtod(h, &end);
        if (end == h || t <= 0) {
            *why = "x-dspyc-cache-ttl must be a number of seconds > 0";
            return false;
        }
        ctl->ttl_s = t;
    }
    if ((h = dspy__srv_req_header(ctx->req, "x-dspyc-cache-namespace"))) {
        if (strlen(h) > DSPY_CACHE_NS_MAX) {
            *why = "x-dspyc-cache-namespace is longer than 256 bytes";
            return false;
        }
        *ns = h;
    }
    return true;
}

/* The namespace a request's entries live in: the token's own when it is bound to one (a
 * request may only narrow it: "tenant/ns"), else the request's, else the server's. */
static void effective_ns(struct call *c, const char *asked)
{
    const char *tenant = c->ctx->tenant;
    if (tenant && asked)
        snprintf(c->ns, sizeof(c->ns), "%s/%s", tenant, asked);
    else if (tenant || asked)
        snprintf(c->ns, sizeof(c->ns), "%s", tenant ? tenant : asked);
    else if (c->s->default_ns)
        snprintf(c->ns, sizeof(c->ns), "%s", c->s->default_ns);
    else
        c->ns[0] = '\0';
    c->ctl.ns = c->ns[0] ? c->ns : NULL;
}

/* The key the lm layer would compute for the same request: the body as sent (its
 * stream, cache and transport members ignored) plus "_endpoint"; sampling numbers as reals,
 * as the lm layer writes them. */
static dspy_status make_key(struct call *c)
{
    json_t *k = json_copy(c->body);
    static const char *const reals[] = { "temperature", "top_p", "presence_penalty",
                                         "frequency_penalty", NULL };
    if (!k)
        return DSPY_ENOMEM;
    for (size_t i = 0; reals[i]; i++) {
        json_t *v = json_object_get(k, reals[i]);
        if (json_is_integer(v))
            json_object_set_new(k, reals[i], json_real((double)json_integer_value(v)));
    }
    json_object_set_new(k, "_endpoint", json_string(c->ep == EP_CHAT ? "chat" : "embeddings"));
    dspy_status rc = dspy_cache_key(c->s->cache, k, &c->ctl, &c->key, NULL);
    if (!rc && c->ep == EP_CHAT && (dspy_cache_levels(c->s->cache) & DSPY_CACHE_SEMANTIC))
        c->sem_req = json_incref(k); /* chat, streamed or not ("stream" is not keyed) */
    json_decref(k);
    return rc;
}

/* An entry older than s-maxage (by the answer's "created" time) does not count as a hit. */
static bool fresh_enough(const struct dspy_cache_value *v, double s_maxage)
{
    if (s_maxage <= 0)
        return true;
    json_t *root = json_loadb(v->data, v->len, 0, NULL);
    json_t *created = json_object_get(root, "created");
    bool fresh = !json_is_integer(created) ||
                 (double)time(NULL) - (double)json_integer_value(created) <= s_maxage;
    json_decref(root);
    return fresh;
}

static void bad_request(struct dspy__serve_ctx *ctx, const char *param, const char *what)
{
    dspy__serve_error(ctx, 400, "invalid_request_error", param ? param : "invalid_request", NULL,
                      "%s", what);
}

static void proxy(struct dspy__serve_ctx *ctx, enum endpoint ep)
{
    dspy_server *s = ctx->s;
    size_t raw_len;
    const char *raw = dspy__srv_req_body(ctx->req, &raw_len);
    json_error_t je;
    const char *why = NULL, *asked_ns = NULL, *send_as = NULL;
    double s_maxage = 0;

    json_t *body = json_loadb(raw, raw_len, 0, &je);
    if (!body) {
        dspy__serve_error(ctx, 400, "invalid_request_error", "invalid_json", NULL,
                          "Request body is not valid JSON: %s (line %d, column %d, byte %d).",
                          je.text, je.line, je.column, je.position);
        return;
    }
    const char *model = json_string_value(json_object_get(body, "model"));
    if (!json_is_object(body) || !model || !*model) {
        bad_request(ctx, "model", "The body must be a JSON object with a \"model\" string.");
        goto free_body;
    }
    snprintf(ctx->model, sizeof(ctx->model), "%s", model);
    if (ep == EP_CHAT && !json_is_array(json_object_get(body, "messages"))) {
        bad_request(ctx, "messages", "\"messages\" must be an array of messages.");
        goto free_body;
    }
    if (ep == EP_EMBED && !json_object_get(body, "input")) {
        bad_request(ctx, "input", "\"input\" is required.");
        goto free_body;
    }
    struct call *c = dspy_calloc(1, sizeof(*c));
    if (!c) {
        dspy__serve_error(ctx, 500, "server_error", NULL, NULL, "Out of memory.");
        goto free_body;
    }
    c->s = s;
    c->ctx = ctx;
    c->ep = ep;
    c->body = body;
    c->raw = raw;
    c->raw_len = raw_len;
    c->stream = ep == EP_CHAT && json_is_true(json_object_get(body, "stream"));
    c->include_usage = json_is_true(
        json_object_get(json_object_get(body, "stream_options"), "include_usage"));
    /* A stream always asks for usage, so the stored answer has it; the usage chunk goes to
     * the client only when it asked. */
    c->rewrite = json_object_get(body, "cache") != NULL || (c->stream && !c->include_usage);
    c->ctl = s->cache_ctl;
    dspy__srv_req_ref(ctx->req);
    if (!read_controls(ctx, body, &c->ctl, &s_maxage, &asked_ns, &why)) {
        bad_request(ctx, "cache", why);
        call_free(c);
        return;
    }
    effective_ns(c, asked_ns);
    if ((c->primary = dspy__serve_route_model(s, model, &send_as)) < 0) {
        dspy__serve_error(ctx, 404, "invalid_request_error", "model_not_found", NULL,
                          "The model '%.200s' is not served here (see GET /v1/models).", model);
        call_free(c);
        return;
    }
    dspy__serve_stage(ctx, DSPY__STAGE_PARSE);

    if (s->cache && !make_key(c)) {
        c->keyed = true;
        if (!c->ctl.no_cache) {
            struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
            if (!dspy_cache_get(s->cache, &c->key, &c->ctl, &v) && fresh_enough(&v, s_maxage)) {
                dspy__serve_metrics_cache(s, v.source);
                dspy__serve_stage(ctx, DSPY__STAGE_CACHE);
                ctx->cache_status = "hit";
                readable(c, v.data, v.len); /* its usage, for what the hit saved */
                answer_body(ctx, v.data, v.len, c->stream, c->include_usage, true);
                dspy_cache_value_release(&v);
                call_free(c);
                return;
            }
            dspy_cache_value_release(&v);
            struct dspy_cache_semantic_hit sh;
            if (c->sem_req && !dspy_cache_semantic_get(s->cache, c->sem_req, &c->ctl, &v, &sh)) {
                char sim[32];
                snprintf(sim, sizeof(sim), "%.4f", (double)sh.similarity);
                const char *hdr[] = { "x-dspyc-cache", "semantic", "x-dspyc-cache-similarity", sim,
                                      NULL };
                dspy__serve_metrics_cache(s, v.source);
                dspy__serve_stage(ctx, DSPY__STAGE_CACHE);
                ctx->cache_status = "semantic";
                readable(c, v.data, v.len); /* its usage, for what the hit saved */
                answer_with(ctx, v.data, v.len, c->stream, c->include_usage, hdr);
                dspy_cache_value_release(&v);
                call_free(c);
                return;
            }
            dspy__serve_metrics_cache(s, DSPY_CACHE_MISS);
            ctx->cache_status = "miss";
            dspy__serve_stage(ctx, DSPY__STAGE_CACHE);
            /* Once joined, the leader's thread may answer this request at any moment: ctx
             * is not touched here after that. */
            if (flight_join(s, &c->key, ctx, c->stream, c->include_usage, &c->leader)) {
                call_free(c); /* the waiter holds its own reference */
                return;
            }
        }
        ctx->cache_status = "miss";
    }
    dspy__serve_stage(ctx, DSPY__STAGE_CACHE);
    dspy_status rc;
    while ((rc = submit(c)) && rc != DSPY_ENOMEM) {
        c->attempt++; /* refused at once (its rate limiter is full): try the next */
        if (upstream_of(c) < 0)
            break;
    }
    if (rc) {
        static const char *const hdr[] = { "Retry-After", "1", NULL };
        static const char e[] = "{\"error\":{\"message\":\"Upstream busy: too many requests "
                                "wait for its rate limit; retry after 1 s.\",\"type\":"
                                "\"rate_limit_error\",\"param\":null,\"code\":\"upstream_busy\"}}";
        resolve_waiters(c, NULL, 0, 429, e, sizeof(e) - 1);
        dspy__serve_send(ctx, 429, "application/json", hdr, e, sizeof(e) - 1);
        call_free(c);
    }
    return;
free_body:
    json_decref(body);
}

static void chat(struct dspy__serve_ctx *ctx, void *ud)
{
    (void)ud;
    proxy(ctx, EP_CHAT);
}

static void embeddings(struct dspy__serve_ctx *ctx, void *ud)
{
    (void)ud;
    proxy(ctx, EP_EMBED);
}

static void add_model(json_t *data, const char *id, const char *owner)
{
    for (size_t i = 0; i < json_array_size(data); i++)
        if (!strcmp(json_string_value(json_object_get(json_array_get(data, i), "id")), id))
            return;
    json_array_append_new(data, json_pack("{s:s,s:s,s:i,s:s}", "id", id, "object", "model",
                                          "created", 0, "owned_by", owner));
}

static void models(struct dspy__serve_ctx *ctx, void *ud)
{
    dspy_server *s = ctx->s;
    (void)ud;
    if (!s->list_models) { /* the one upstream knows its models */
        struct call *c = dspy_calloc(1, sizeof(*c));
        if (!c) {
            dspy__serve_error(ctx, 500, "server_error", NULL, NULL, "Out of memory.");
            return;
        }
        c->s = s;
        c->ctx = ctx;
        c->ep = EP_MODELS;
        dspy__srv_req_ref(ctx->req);
        if (submit(c)) {
            dspy__serve_error(ctx, 429, "rate_limit_error", "upstream_busy", NULL,
                              "Upstream busy; retry later.");
            call_free(c);
        }
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; i < s->nups; i++) {
        for (size_t m = 0; m < s->ups[i].nmodels; m++)
            add_model(data, s->ups[i].models[m], s->ups[i].name);
        for (size_t a = 0; a < s->ups[i].naliases; a++)
            add_model(data, s->ups[i].aliases[a].name, s->ups[i].name);
    }
    json_t *root = json_pack("{s:s,s:o}", "object", "list", "data", data);
    char *text = json_dumps(root, JSON_COMPACT);
    if (text)
        dspy__serve_send(ctx, 200, "application/json", NULL, text, strlen(text));
    else
        dspy__serve_error(ctx, 500, "server_error", NULL, NULL, "Out of memory.");
    dspy_free(text);
    json_decref(root);
}

dspy_status dspy__serve_proxy_routes(dspy_server *s)
{
    if (!(s->flights = dspy_calloc(1, sizeof(*s->flights))))
        return DSPY_ENOMEM;
    pthread_mutex_init(&s->flights->lock, NULL);
    dspy_status rc = dspy__serve_route(s, "POST", "/v1/chat/completions", "chat", DSPY__SERVE_USER,
                                       chat, NULL);
    if (!rc)
        rc = dspy__serve_route(s, "POST", "/chat/completions", "chat", DSPY__SERVE_USER, chat,
                               NULL);
    if (!rc)
        rc = dspy__serve_route(s, "POST", "/v1/embeddings", "embeddings", DSPY__SERVE_USER,
                               embeddings, NULL);
    if (!rc)
        rc = dspy__serve_route(s, "GET", "/v1/models", "models", DSPY__SERVE_USER, models, NULL);
    return rc;
}

/* Streamed chat completions (lm layer): dspy_lm_stream() asks for an SSE answer, hands each
 * content delta of choice 0 to the caller as it arrives, and assembles the whole answer into
 * an ordinary chat completion body. That body is what the cache stores, under the plain
 * request's key, so streamed and plain calls share entries; a hit is replayed in pieces. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include <dspyc/lm.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/status.h"
#include "lm/lm_handle.h"
#include "net/sse.h"

#define STREAM_MAX_CHOICES 128
#define STREAM_FINISH_MAX 32 /* "stop", "length", "tool_calls", "content_filter" */
#define REPLAY_PIECE 4       /* bytes per replayed delta, extended to a UTF-8 boundary */

static const char stream_tail[] = ",\"stream\":true,\"stream_options\":{\"include_usage\":true}}";

struct choice_acc {
    struct dspy_buf text;
    char finish[STREAM_FINISH_MAX]; /* "" = none seen */
};

/* One stream's state. Written by the event callback (the loop thread over HTTP), read by
 * the caller once the call has ended: the engine's wait orders the two. */
struct stream {
    dspy_lm *lm;
    dspy_lm_delta_fn on_delta;
    void *userdata;
    struct choice_acc *choices; /* by index, grown as indexes appear */
    size_t nchoices;
    struct dspy_buf model; /* first "model" named by a chunk */
    struct dspy_buf id;
    struct dspy_lm_usage usage;
    bool has_usage;
    bool saw_done;
    bool cancelled; /* on_delta asked to stop */
    uint64_t events;
    dspy_status failed; /* an event stopped the stream; details in `err` */
    struct dspy_error err;
};

static void stream_init(struct stream *st, dspy_lm *lm, dspy_lm_delta_fn on_delta, void *ud)
{
    memset(st, 0, sizeof(*st));
    st->lm = lm;
    st->on_delta = on_delta;
    st->userdata = ud;
    dspy__buf_init(&st->model, 256);
    dspy__buf_init(&st->id, 256);
    dspy_error_clear(&st->err);
}

static void stream_release(struct stream *st)
{
    for (size_t i = 0; i < st->nchoices; i++)
        dspy__buf_release(&st->choices[i].text);
    dspy_free(st->choices);
    dspy__buf_release(&st->model);
    dspy__buf_release(&st->id);
}

/* ---- events ------------------------------------------------------------------------ */

#define STOP(st, code, ...) (stop_with((st), (code), __VA_ARGS__), 1)

static void stop_with(struct stream *st, dspy_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void stop_with(struct stream *st, dspy_status code, const char *fmt, ...)
{
    char text[sizeof(st->err.message)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    st->failed = dspy__err(&st->err, code, "%s", text);
}

static struct choice_acc *choice_at(struct stream *st, size_t index)
{
    if (index < st->nchoices)
        return &st->choices[index];
    struct choice_acc *c = dspy_realloc(st->choices, (index + 1) * sizeof(*c));
    if (!c)
        return NULL;
    for (size_t i = st->nchoices; i <= index; i++) {
        dspy__buf_init(&c[i].text, st->lm->max_response_bytes);
        c[i].finish[0] = '\0';
    }
    st->choices = c;
    st->nchoices = index + 1;
    return &c[index];
}

static bool read_usage(const json_t *u, struct dspy_lm_usage *usage)
{
    static const char *const names[3] = { "prompt_tokens", "completion_tokens", "total_tokens" };
    long *slots[3] = { &usage->prompt_tokens, &usage->completion_tokens, &usage->total_tokens };
    for (int i = 0; i < 3; i++) {
        json_t *v = json_object_get(u, names[i]);
        if (v && !json_is_null(v) && (!json_is_integer(v) || json_integer_value(v) < 0))
            return false;
        *slots[i] = json_is_integer(v) ? (long)json_integer_value(v) : 0;
    }
    return true;
}

static void copy_string_once(struct dspy_buf *b, const json_t *v)
{
    if (!b->len && json_is_string(v) && json_string_length(v) < b->max)
        dspy__buf_add(b, json_string_value(v), json_string_length(v));
}

static int read_choice(struct stream *st, const json_t *ch, size_t pos, uint64_t recv_ns)
{
    const json_t *jindex = json_object_get(ch, "index");
    const json_t *delta = json_object_get(ch, "delta");
    const json_t *fr = json_object_get(ch, "finish_reason");
    if (!json_is_object(ch))
        return STOP(st, DSPY_ELM_BAD_RESPONSE, "LM stream event %llu: a choice is not an object",
                    (unsigned long long)st->events);
    json_int_t index = jindex ? json_integer_value(jindex) : (json_int_t)pos;
    if ((jindex && !json_is_integer(jindex)) || index < 0 || index >= STREAM_MAX_CHOICES)
        return STOP(st, DSPY_ELM_BAD_RESPONSE, "LM stream event %llu: bad choice index",
                    (unsigned long long)st->events);
    struct choice_acc *c = choice_at(st, (size_t)index);
    if (!c)
        return STOP(st, DSPY_ENOMEM, "out of memory reading the LM stream");
    if (fr && !json_is_null(fr) && !json_is_string(fr))
        return STOP(st, DSPY_ELM_BAD_RESPONSE,
                    "LM stream event %llu: \"finish_reason\" is not a string",
                    (unsigned long long)st->events);
    if (json_is_string(fr))
        snprintf(c->finish, sizeof(c->finish), "%s", json_string_value(fr));
    if (delta && !json_is_null(delta) && !json_is_object(delta))
        return STOP(st, DSPY_ELM_BAD_RESPONSE, "LM stream event %llu: \"delta\" is not an object",
                    (unsigned long long)st->events);
    const json_t *content = json_object_get(delta, "content");
    if (!json_is_string(content) || !json_string_length(content))
        return 0;
    const char *text = json_string_value(content);
    size_t len = json_string_length(content);
    dspy_status rc = dspy__buf_add(&c->text, text, len);
    if (rc == DSPY_ETOOBIG)
        return STOP(st, rc, "LM response is larger than %zu bytes", st->lm->max_response_bytes);
    if (rc)
        return STOP(st, rc, "out of memory reading the LM stream");
    if (index == 0 && st->on_delta && st->on_delta(st->userdata, text, len, recv_ns)) {
        st->cancelled = true;
        return 1;
    }
    return 0;
}

/* An event's error object, in the endpoint's words (vLLM and OpenAI send one mid-stream). */
static int stream_error(struct stream *st, const json_t *e)
{
    const char *msg = json_string_value(e);
    if (json_is_object(e))
        msg = json_string_value(json_object_get(e, "message"));
    return STOP(st, DSPY_ELM_SERVER, "LM stream reported an error: %.200s",
                msg ? msg : "(no message)");
}

static int read_chunk(struct stream *st, const json_t *root, uint64_t recv_ns)
{
    const json_t *e = json_object_get(root, "error");
    const json_t *usage = json_object_get(root, "usage");
    const json_t *choices = json_object_get(root, "choices");
    if (!json_is_object(root))
        return STOP(st, DSPY_ELM_BAD_RESPONSE, "LM stream event %llu is not a JSON object",
                    (unsigned long long)st->events);
    if (e && !json_is_null(e))
        return stream_error(st, e);
    copy_string_once(&st->model, json_object_get(root, "model"));
    copy_string_once(&st->id, json_object_get(root, "id"));
    if (json_is_object(usage)) {
        if (!read_usage(usage, &st->usage))
            return STOP(st, DSPY_ELM_BAD_RESPONSE, "LM stream event %llu: malformed \"usage\"",
                        (unsigned long long)st->events);
        st->has_usage = true;
    } else if (usage && !json_is_null(usage)) {
        return STOP(st, DSPY_ELM_BAD_RESPONSE, "LM stream event %llu: malformed \"usage\"",
                    (unsigned long long)st->events);
    }
    if (!choices || json_is_null(choices))
        return 0; /* the usage-only final chunk */
    if (!json_is_array(choices))
        return STOP(st, DSPY_ELM_BAD_RESPONSE, "LM stream event %llu: \"choices\" is not an array",
                    (unsigned long long)st->events);
    for (size_t i = 0; i < json_array_size(choices); i++)
        if (read_choice(st, json_array_get(choices, i), i, recv_ns))
            return 1;
    return 0;
}

static int stream_event(struct stream *st, const struct dspy__sse_event *ev)
{
    json_error_t je;
    if (st->failed || st->cancelled)
        return 1;
    if (st->saw_done)
        return 0; /* nothing after [DONE] counts */
    st->events++;
    if (ev->done) {
        st->saw_done = true;
        return 0;
    }
    if (!ev->data.len)
        return 0; /* an event without data: a named keep-alive */
    json_t *root = json_loadb(ev->data.ptr, ev->data.len, 0, &je);
    if (!root)
        return STOP(st, DSPY_ELM_BAD_RESPONSE, "LM stream event %llu is not JSON: %s",
                    (unsigned long long)st->events, je.text);
    int stop = read_chunk(st, root, ev->recv_ns);
    json_decref(root);
    return stop;
}

/* ---- the assembled answer ------------------------------------------------------------ */

/* The stream as the plain response the endpoint would have sent: what the cache stores,
 * so that a plain call can hit an entry a streamed call made, and the other way round. */
static dspy_status assemble(const struct stream *st, struct dspy_buf *b)
{
    dspy_status rc = dspy__buf_adds(b, "{\"id\":");
    if (!rc)
        rc = dspy__buf_add_json_str(b, st->id.ptr ? st->id.ptr : "", st->id.len);
    if (!rc)
        rc = dspy__buf_adds(b, ",\"object\":\"chat.completion\",\"model\":");
    if (!rc)
        rc = st->model.len ? dspy__buf_add_json_str(b, st->model.ptr, st->model.len)
                           : dspy__buf_adds(b, "null");
    if (!rc)
        rc = dspy__buf_adds(b, ",\"choices\":[");
    for (size_t i = 0; i < st->nchoices && !rc; i++) {
        const struct choice_acc *c = &st->choices[i];
        rc = dspy__buf_addf(b, "%s{\"index\":%zu,\"message\":{\"role\":\"assistant\",\"content\":",
                            i ? "," : "", i);
        if (!rc)
            rc = dspy__buf_add_json_str(b, c->text.ptr ? c->text.ptr : "", c->text.len);
        if (!rc)
            rc = dspy__buf_adds(b, "},\"finish_reason\":");
        if (!rc)
            rc = c->finish[0] ? dspy__buf_add_json_str(b, c->finish, strlen(c->finish))
                              : dspy__buf_adds(b, "null");
        if (!rc)
            rc = dspy__buf_addc(b, '}');
    }
    if (!rc)
        rc = dspy__buf_addc(b, ']');
    if (!rc && st->has_usage)
        rc = dspy__buf_addf(b,
                            ",\"usage\":{\"prompt_tokens\":%ld,\"completion_tokens\":%ld,"
                            "\"total_tokens\":%ld}",
                            st->usage.prompt_tokens, st->usage.completion_tokens,
                            st->usage.total_tokens);
    return rc ? rc : dspy__buf_addc(b, '}');
}

/* The end of a stream that the transfer delivered whole: errors its events raised, else
 * the answer in `resp` and, when body_out is not NULL, its plain form (caller owns). */
static dspy_status conclude(struct stream *st, long http_status, const char *detail,
                            struct dspy_lm_response *resp, char **body_out, size_t *body_len,
                            struct dspy_error *err)
{
    struct dspy_buf b;
    dspy_status rc;
    if (st->failed) {
        if (err) {
            *err = st->err;
            err->http_status = (int)http_status;
        }
        return st->failed;
    }
    if (st->cancelled)
        return dspy__err(err, DSPY_ECANCELED, "LM stream stopped by the delta callback");
    if (!st->saw_done)
        return dspy__err(err, DSPY_ELM_BAD_RESPONSE, "LM stream ended before [DONE]%s%s",
                         detail && *detail ? ": " : "", detail ? detail : "");
    if (!st->nchoices)
        return dspy__err(err, DSPY_ELM_BAD_RESPONSE, "LM stream ended without any choice");
    dspy__buf_init(&b, DSPY__LM_MAX_BODY);
    if ((rc = assemble(st, &b))) {
        rc = dspy__err(err, rc, "cannot assemble the streamed LM response: %s", dspy_strerror(rc));
        goto release;
    }
    if ((rc = dspy__lm_parse_response(b.ptr, b.len, resp, err)))
        goto release;
    resp->http_status = http_status;
    if (body_out)
        *body_out = dspy__buf_detach(&b, body_len);
release:
    dspy__buf_release(&b);
    return rc;
}

/* ---- the exchange ---------------------------------------------------------------------- */

static int on_engine_event(struct dspy__engine_call *call, const struct dspy__sse_event *ev,
                           void *userdata)
{
    (void)call;
    return stream_event(userdata, ev);
}

static uint64_t secs_ns(double s)
{
    return s > 0 ? (uint64_t)(s * 1e9) : 0;
}

/* Errors the transfer itself decides: anything but a 2xx stream that was merely cut short
 * (dropped connection, or ended inside an event), which conclude() reports as such. */
static bool transfer_decides(const struct dspy__engine_result *res)
{
    if (res->http_status < 200 || res->http_status >= 300)
        return true;
    return res->status && res->status != DSPY_ELM_NETWORK && res->status != DSPY_ELM_BAD_RESPONSE;
}

static dspy_status stream_http(struct stream *st, const char *body, size_t len,
                               struct dspy_lm_response *resp, char **body_out, size_t *body_len,
                               struct dspy_error *err)
{
    dspy_lm *lm = st->lm;
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    struct dspy__engine_call *call = NULL;
    const struct dspy__engine_result *res;
    dspy_status rc;
    r.url = lm->url;
    r.headers = lm->headers;
    r.body = body;
    r.body_len = len;
    r.timeout_ns = secs_ns(lm->timeout_s);
    r.deadline_ns = lm->deadline_ns;
    r.max_response_bytes = lm->max_response_bytes;
    r.retry = NULL; /* a retried stream would deliver its deltas twice */
    r.limiter = lm->limiter;
    if (lm->limiter)
        r.est_tokens = dspy__ratelimit_estimate_tokens(len, lm->max_tokens > 0
                                                                ? (uint64_t)lm->max_tokens
                                                                : 0);
    r.on_event = on_engine_event;
    r.userdata = st;
    if ((rc = dspy__engine_submit(lm->engine, &r, &call, err)))
        return rc == DSPY_EBUSY ? dspy__err(err, rc,
                                            "LM request refused: too many requests "
                                            "already wait for the rate limit (back "
                                            "off and retry)")
                                : rc;
    if ((rc = dspy__engine_call_wait(call, 0, &res))) {
        rc = dspy__err(err, rc, "cannot wait for an LM call on the event loop's own thread");
        goto release_call;
    }
    if (!st->failed && !st->cancelled && transfer_decides(res)) {
        rc = dspy__lm_read_result(lm, call, res, resp, NULL, NULL, err);
        goto release_call;
    }
    rc = conclude(st, res->http_status, res->status ? res->error : NULL, resp, body_out, body_len,
                  err);
    if (!rc && lm->limiter && resp->usage.total_tokens > 0)
        dspy__engine_call_reconcile(call, (uint64_t)resp->usage.total_tokens);

release_call:
    dspy__engine_call_release(call);
    return rc;
}

static int on_scanned_event(void *userdata, const struct dspy__sse_event *ev)
{
    return stream_event(userdata, ev);
}

/* A transport hook answers with the whole body: read it as the event stream it holds. */
static dspy_status stream_transport(struct stream *st, const char *body, size_t len,
                                    struct dspy_lm_response *resp, char **body_out,
                                    size_t *body_len, struct dspy_error *err)
{
    dspy_lm *lm = st->lm;
    struct dspy__sse sse;
    char *rbody = NULL;
    size_t rlen = 0;
    long status = 0;
    dspy_error_clear(err);
    dspy_status rc = lm->transport(lm->transport_userdata, lm->url, body, len, &status, &rbody,
                                   &rlen, err);
    if (rc) {
        if (err && !err->code)
            dspy__err(err, rc, "LM transport failed: %s", dspy_strerror(rc));
        goto free_body;
    }
    if (!rbody) {
        rc = dspy__err(err, DSPY_ELM_BAD_RESPONSE, "LM transport returned no body");
        goto free_body;
    }
    if (status < 200 || status >= 300) {
        rc = dspy__err(err, dspy_lm_classify_http(status, rbody, rlen),
                       "LM endpoint answered HTTP %ld", status);
        if (err)
            err->http_status = (int)status;
        goto free_body;
    }
    if (rlen > lm->max_response_bytes) {
        rc = dspy__err(err, DSPY_ETOOBIG, "LM response is larger than %zu bytes",
                       lm->max_response_bytes);
        goto free_body;
    }
    dspy__sse_init(&sse, 0, on_scanned_event, st);
    rc = dspy__sse_feed(&sse, rbody, rlen, dspy__now_ns());
    bool whole = dspy__sse_finish(&sse);
    dspy__sse_release(&sse);
    if (rc && rc != DSPY_ECANCELED)
        rc = dspy__err(err, rc, "cannot read the LM event stream: %s", dspy_strerror(rc));
    else
        rc = conclude(st, status, whole ? NULL : "it ended inside an event", resp, body_out,
                      body_len, err);

free_body:
    dspy_free(rbody);
    return rc;
}

static dspy_status stream_upstream(struct stream *st, const char *body, size_t len,
                                   struct dspy_lm_response *resp, char **body_out, size_t *body_len,
                                   struct dspy_error *err)
{
    memset(resp, 0, sizeof(*resp));
    if (st->lm->transport)
        return stream_transport(st, body, len, resp, body_out, body_len, err);
    return stream_http(st, body, len, resp, body_out, body_len, err);
}

/* ---- through the cache ----------------------------------------------------------------- */

struct stream_fill {
    struct stream *st;
    const char *body;
    size_t len;
    struct dspy_lm_response *resp;
    bool sent; /* this caller streamed: resp holds its answer, the deltas went out live */
    /* the semantic level (when open): the request as keyed, and what it found */
    const json_t *sreq;
    const struct dspy_cache_ctl *ctl;
    bool sem_hit;
    float similarity;
};

/* The fill of an exact miss: a semantic hit (replayed like an exact one), else the live
 * stream. Its assembled body is handed to the cache only when the stream finished cleanly;
 * any error leaves the cache untouched. */
static dspy_status fill_by_streaming(void *ud, struct dspy_cache_fill *fill, struct dspy_error *err)
{
    struct stream_fill *x = ud;
    char *raw = NULL;
    size_t rlen = 0;
    if (dspy__lm_fill_from_semantic(x->st->lm, x->sreq, x->ctl, fill, &x->similarity)) {
        x->sem_hit = true;
        return DSPY_OK;
    }
    dspy_status rc = stream_upstream(x->st, x->body, x->len, x->resp, &raw, &rlen, err);
    if (rc)
        return rc;
    x->sent = true;
    fill->value = raw;
    fill->len = rlen;
    return DSPY_OK;
}

static dspy_status fetch(struct stream_fill *x, const struct dspy_cache_key *key,
                         const struct dspy_cache_ctl *ctl, struct dspy_cache_value *v,
                         struct dspy_error *err)
{
    x->sent = false;
    x->sem_hit = false;
    dspy_status rc = dspy_cache_fetch(x->st->lm->cache, key, ctl, fill_by_streaming, x, v, err);
    if (rc && x->sent) /* answered, but could not be handed over (out of memory) */
        dspy_lm_response_release(x->resp);
    return rc;
}

static bool read_hit(const struct stream_fill *x, const struct dspy_cache_value *v)
{
    if (v->source == DSPY_CACHE_FILLED && x->sent)
        return true;
    if (dspy__lm_parse_response(v->data, v->len, x->resp, NULL))
        return false;
    x->resp->http_status = 200;
    x->resp->cache_hit = true;
    return true;
}

/* A hit, to on_delta as the stream would have come: pieces of REPLAY_PIECE bytes, each
 * extended to the end of the UTF-8 sequence it cuts. */
static dspy_status replay(const struct stream *st, const struct dspy_lm_response *resp,
                          struct dspy_error *err)
{
    const char *text = resp->n ? resp->texts[0] : "";
    size_t len = strlen(text), off = 0;
    while (st->on_delta && off < len) {
        size_t n = len - off < REPLAY_PIECE ? len - off : REPLAY_PIECE;
        while (off + n < len && ((unsigned char)text[off + n] & 0xC0) == 0x80)
            n++;
        if (st->on_delta(st->userdata, text + off, n, dspy__now_ns()))
            return dspy__err(err, DSPY_ECANCELED, "LM stream stopped by the delta callback");
        off += n;
    }
    return DSPY_OK;
}

static dspy_status stream_cached(struct stream *st, const struct dspy_cache_key *key,
                                 const struct dspy_cache_ctl *ctl, const json_t *sreq,
                                 const char *body, size_t len, struct dspy_lm_response *resp,
                                 struct dspy_error *err)
{
    dspy_lm *lm = st->lm;
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    struct stream_fill x = { st, body, len, resp, false, sreq, ctl, false, 0 };
    dspy_status rc;
    if ((rc = fetch(&x, key, ctl, &v, err)))
        return rc;
    /* a streamed miss's answer, stored on a clean finish, gets its semantic record too */
    if (x.sent && sreq && v.source == DSPY_CACHE_FILLED)
        dspy_cache_semantic_put(lm->cache, sreq, key, ctl);
    if (!read_hit(&x, &v)) { /* an entry that does not read as a response: replace it */
        struct dspy_cache_ctl fresh = *ctl;
        dspy_cache_value_release(&v);
        dspy_cache_delete(lm->cache, key, ctl);
        fresh.no_cache = true;
        if ((rc = fetch(&x, key, &fresh, &v, err)))
            return rc;
        if (!read_hit(&x, &v)) { /* cannot happen: a fresh fill parsed */
            dspy_cache_value_release(&v);
            return dspy__err(err, DSPY_ELM_BAD_RESPONSE, "cached LM response does not parse");
        }
    }
    dspy_cache_value_release(&v);
    resp->cache_semantic = x.sem_hit;
    resp->cache_similarity = x.sem_hit ? x.similarity : 0.0f;
    if (resp->cache_hit && (rc = replay(st, resp, err)))
        dspy_lm_response_release(resp);
    return rc;
}

/* ---- assembly for the proxy (lm_int.h) ------------------------------------------------- */

struct dspy__lm_stream_acc {
    struct stream st;
};

struct dspy__lm_stream_acc *dspy__lm_stream_acc_new(dspy_lm *lm)
{
    struct dspy__lm_stream_acc *a = dspy_malloc(sizeof(*a));
    if (a)
        stream_init(&a->st, lm, NULL, NULL);
    return a;
}

int dspy__lm_stream_acc_event(struct dspy__lm_stream_acc *a, const struct dspy__sse_event *ev)
{
    return stream_event(&a->st, ev);
}

dspy_status dspy__lm_stream_acc_finish(struct dspy__lm_stream_acc *a, long http_status,
                                       const char *detail, char **body, size_t *len,
                                       struct dspy_lm_usage *usage, struct dspy_error *err)
{
    struct dspy_lm_response resp;
    memset(&resp, 0, sizeof(resp));
    dspy_status rc = conclude(&a->st, http_status, detail, &resp, body, len, err);
    if (!rc) {
        if (usage)
            *usage = resp.usage;
        dspy_lm_response_release(&resp);
    }
    return rc;
}

void dspy__lm_stream_acc_free(struct dspy__lm_stream_acc *a)
{
    if (!a)
        return;
    stream_release(&a->st);
    dspy_free(a);
}

/* ---- the call ---------------------------------------------------------------------------- */

/* `extra` without the keys streaming sets itself (NULL when none is left to send). */
static dspy_status extra_for_stream(const json_t *extra, json_t **out)
{
    *out = NULL;
    if (!extra || (!json_object_get(extra, "stream") && !json_object_get(extra, "stream_options")))
        return DSPY_OK;
    if (!(*out = json_copy((json_t *)(uintptr_t)extra)))
        return DSPY_ENOMEM;
    json_object_del(*out, "stream");
    json_object_del(*out, "stream_options");
    return DSPY_OK;
}

dspy_status dspy_lm_stream(dspy_lm *lm, const struct dspy_lm_request *req,
                           dspy_lm_delta_fn on_delta, void *userdata, struct dspy_lm_response *resp,
                           struct dspy_error *err)
{
    struct dspy_lm_request r;
    struct dspy_buf msgs, rf, body;
    struct dspy__lm_call call;
    struct dspy__lm_body_marks marks;
    struct dspy_cache_ctl ctl = lm ? lm->cache_ctl : (struct dspy_cache_ctl)DSPY_CACHE_CTL_INIT;
    struct dspy_cache_key key;
    struct stream st;
    json_t *extra = NULL, *sreq = NULL;
    dspy_status rc;
    if (resp)
        memset(resp, 0, sizeof(*resp));
    if (!lm || !req || !resp || !json_is_array(req->messages))
        return dspy__err(err, DSPY_EINVAL,
                         "dspy_lm_stream: lm, a messages array and resp are required");
    if (req->extra && !json_is_object(req->extra))
        return dspy__err(err, DSPY_EINVAL, "LM request \"extra\" must be a JSON object");
    if (extra_for_stream(req->extra, &extra))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    r = *req;
    if (extra)
        r.extra = extra;
    dspy__buf_init(&msgs, DSPY__LM_MAX_BODY);
    dspy__buf_init(&rf, DSPY__LM_MAX_BODY);
    dspy__buf_init(&body, DSPY__LM_MAX_BODY);
    stream_init(&st, lm, on_delta, userdata);
    if ((rc = dspy__lm_call_from_request(&r, &msgs, &rf, &call, err)))
        goto release;
    if ((rc = dspy__lm_encode_body(lm, &call, &body, &marks))) {
        rc = dspy__err(err, rc, "cannot encode the LM request: %s", dspy_strerror(rc));
        goto release;
    }
    /* Keyed as the plain request; a request that cannot be keyed (it cannot: the body is
     * our own JSON) is still sent. */
    dspy__lm_cache_ctl_merge(&ctl, call.ctl);
    bool keyed = lm->cache &&
                 !dspy__lm_cache_key(lm, &call, body.ptr, body.len, &marks, &ctl, true, &key, NULL);
    if (keyed)
        sreq = dspy__lm_semantic_request(lm, &call, body.ptr, body.len, &ctl);
    /* Then the plain body becomes the streaming one: its closing brace gives way to the
     * stream options. */
    body.len--;
    if ((rc = dspy__buf_add(&body, stream_tail, sizeof(stream_tail) - 1))) {
        rc = dspy__err(err, rc, "LM request body is larger than %zu bytes", DSPY__LM_MAX_BODY);
        goto release;
    }
    if (keyed)
        rc = stream_cached(&st, &key, &ctl, sreq, body.ptr, body.len, resp, err);
    else
        rc = stream_upstream(&st, body.ptr, body.len, resp, NULL, NULL, err);

release:
    stream_release(&st);
    dspy__buf_release(&body);
    dspy__buf_release(&rf);
    dspy__buf_release(&msgs);
    json_decref(sreq);
    json_decref(extra);
    return rc;
}

/* Response scan of the load generator (net layer): the shared HTTP/1.1 framing parser
 * (net/http1.c) and, for OpenAI targets, a shallow scan of JSON bodies and SSE events
 * (choices, delta.content, usage, [DONE]) that times each token-bearing event without
 * building a DOM or allocating per event. */
#define _GNU_SOURCE /* memmem */
#include <string.h>
#include <strings.h>

#include "net/loadgen_int.h"

static int on_event(void *userdata, const struct dspy__sse_event *ev);
static int body_bytes(void *userdata, const char *data, size_t len, uint64_t now);

dspy_status dspy__lg_parser_init(struct dspy__lg_parser *p, enum dspy_loadgen_parse mode,
                                 size_t body_cap, uint32_t chunk_cap)
{
    memset(p, 0, sizeof(*p));
    p->mode = mode;
    p->body_cap = mode == DSPY_LOADGEN_OPENAI ? body_cap : 0;
    p->chunk_cap = mode == DSPY_LOADGEN_OPENAI ? chunk_cap : 0;
    dspy__h1_init(&p->h, 0, body_bytes, p);
    if (p->body_cap)
        p->body = dspy_malloc(p->body_cap);
    if (p->chunk_cap)
        p->chunk_ns = dspy_malloc(p->chunk_cap * sizeof(uint64_t));
    if ((p->body_cap && !p->body) || (p->chunk_cap && !p->chunk_ns)) {
        dspy__lg_parser_release(p);
        return DSPY_ENOMEM;
    }
    dspy__sse_init(&p->sse, 0, on_event, p);
    dspy__lg_parser_reset(p);
    return DSPY_OK;
}

void dspy__lg_parser_release(struct dspy__lg_parser *p)
{
    dspy__h1_release(&p->h);
    dspy_free(p->body);
    dspy_free(p->chunk_ns);
    dspy__sse_release(&p->sse);
    p->body = NULL;
    p->chunk_ns = NULL;
}

void dspy__lg_parser_reset(struct dspy__lg_parser *p)
{
    dspy__h1_reset(&p->h);
    p->malformed = p->saw_done = p->error_event = false;
    p->body_len = 0;
    p->first_ch = p->last_ch = 0;
    p->seen_first = false;
    p->first_token_ns = p->first_content_ns = p->last_token_ns = 0;
    p->chunks = 0;
    p->usage_tokens = p->prompt_tokens = -1;
    if (p->sse.events || p->sse.in_event || p->sse.failed || p->sse.line.len)
        dspy__sse_reset(&p->sse);
}

const char *dspy__lg_json_key(const char *s, size_t len, const char *key, size_t keylen)
{
    const char *end = s + len, *q = s;
    while (q < end) {
        const char *hit = memmem(q, (size_t)(end - q), key, keylen);
        if (!hit)
            return NULL;
        const char *r = hit + keylen;
        while (r < end && (*r == ' ' || *r == '\t' || *r == '\n' || *r == '\r'))
            r++;
        if (r < end && *r == ':') {
            r++;
            while (r < end && (*r == ' ' || *r == '\t' || *r == '\n' || *r == '\r'))
                r++;
            return r;
        }
        q = hit + 1;
    }
    return NULL;
}

long dspy__lg_json_long(const char *p, const char *end)
{
    while (p < end && *p == ' ')
        p++;
    if (p >= end || *p < '0' || *p > '9')
        return -1;
    long v = 0;
    while (p < end && *p >= '0' && *p <= '9' && v < 1000000000L)
        v = v * 10 + (*p++ - '0');
    return v;
}

#define KEY(s) s, sizeof(s) - 1

static void scan_usage(struct dspy__lg_parser *p, const char *s, size_t len)
{
    const char *end = s + len, *u = dspy__lg_json_key(s, len, KEY("\"usage\""));
    if (!u || u >= end || *u != '{')
        return;
    const char *c = dspy__lg_json_key(u, (size_t)(end - u), KEY("\"completion_tokens\""));
    if (c)
        p->usage_tokens = dspy__lg_json_long(c, end);
    c = dspy__lg_json_key(u, (size_t)(end - u), KEY("\"prompt_tokens\""));
    if (c)
        p->prompt_tokens = dspy__lg_json_long(c, end);
}

static bool json_shaped(const char *s, size_t len)
{
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\n' || s[len - 1] == '\r'))
        len--;
    while (len && (*s == ' ' || *s == '\n' || *s == '\r')) {
        s++;
        len--;
    }
    return len >= 2 && s[0] == '{' && s[len - 1] == '}';
}

/* One SSE event of an OpenAI stream. vLLM's rule: an event whose "choices" is non-empty
 * carries tokens (even with empty content); a usage-only chunk does not. */
static int on_event(void *userdata, const struct dspy__sse_event *ev)
{
    struct dspy__lg_parser *p = userdata;
    const char *d = ev->data.ptr, *end = d + ev->data.len;
    if (ev->done) {
        p->saw_done = true;
        return 0;
    }
    if (!ev->data.len)
        return 0;
    if (!json_shaped(d, ev->data.len)) {
        p->malformed = true;
        return 0;
    }
    const char *c = dspy__lg_json_key(d, ev->data.len, KEY("\"choices\""));
    if (c && c < end && *c == '[') {
        c++;
        while (c < end && (*c == ' ' || *c == '\n'))
            c++;
        if (c < end && *c != ']') {
            if (!p->first_token_ns)
                p->first_token_ns = ev->recv_ns;
            p->last_token_ns = ev->recv_ns;
            if (p->chunks < p->chunk_cap)
                p->chunk_ns[p->chunks] = ev->recv_ns;
            p->chunks++;
            if (!p->first_content_ns) {
                const char *t = dspy__lg_json_key(c, (size_t)(end - c), KEY("\"content\""));
                if (t && t + 1 < end && *t == '"' && t[1] != '"')
                    p->first_content_ns = ev->recv_ns;
            }
        }
    } else if (!c && dspy__lg_json_key(d, ev->data.len, KEY("\"error\""))) {
        p->error_event = true;
    }
    if (memmem(d, ev->data.len, "\"usage\":{", 9) || memmem(d, ev->data.len, "\"usage\": {", 10))
        scan_usage(p, d, ev->data.len);
    return 0;
}

static void keep_body(struct dspy__lg_parser *p, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (data[i] != ' ' && data[i] != '\n' && data[i] != '\r' && data[i] != '\t') {
            if (!p->seen_first) { /* a NUL counts too: a body may not start with one */
                p->first_ch = data[i];
                p->seen_first = true;
            }
            break;
        }
    for (size_t i = len; i > 0; i--)
        if (data[i - 1] != ' ' && data[i - 1] != '\n' && data[i - 1] != '\r' &&
            data[i - 1] != '\t') {
            p->last_ch = data[i - 1];
            break;
        }
    if (!p->body_cap)
        return;
    if (len >= p->body_cap) { /* keep the tail: usage comes last */
        memcpy(p->body, data + len - p->body_cap, p->body_cap);
        p->body_len = p->body_cap;
        return;
    }
    if (p->body_len + len > p->body_cap) {
        size_t drop = p->body_len + len - p->body_cap;
        memmove(p->body, p->body + drop, p->body_len - drop);
        p->body_len -= drop;
    }
    memcpy(p->body + p->body_len, data, len);
    p->body_len += len;
}

static int body_bytes(void *userdata, const char *data, size_t len, uint64_t now)
{
    struct dspy__lg_parser *p = userdata;
    if (p->mode != DSPY_LOADGEN_OPENAI || !len)
        return 0;
    if (p->h.stream) {
        if (dspy__sse_feed(&p->sse, data, len, now) != DSPY_OK)
            p->malformed = true;
    } else {
        keep_body(p, data, len);
    }
    return 0;
}

/* A JSON body is complete: read its usage (from the kept tail). */
static void finish(struct dspy__lg_parser *p)
{
    if (p->mode == DSPY_LOADGEN_OPENAI && !p->h.stream && p->body_len)
        scan_usage(p, p->body, p->body_len);
}

int dspy__lg_parser_feed(struct dspy__lg_parser *p, const char *data, size_t len, uint64_t now,
                         size_t *used)
{
    int r = dspy__h1_feed(&p->h, data, len, now, used);
    if (r == DSPY__H1_ERROR)
        p->malformed = true;
    else if (r == DSPY__H1_DONE)
        finish(p);
    return r;
}

int dspy__lg_parser_eof(struct dspy__lg_parser *p)
{
    if (p->h.phase == DSPY__H1_COMPLETE || dspy__h1_eof(&p->h) != DSPY__H1_DONE)
        return LG_ERROR;
    finish(p);
    return LG_DONE;
}

enum dspy_loadgen_outcome dspy__lg_parser_outcome(const struct dspy__lg_parser *p)
{
    if (p->h.status < 200 || p->h.status > 299)
        return DSPY_LG_HTTP;
    if (p->mode != DSPY_LOADGEN_OPENAI)
        return p->malformed ? DSPY_LG_MALFORMED : DSPY_LG_OK;
    if (p->h.stream) {
        if (p->malformed || p->error_event)
            return DSPY_LG_MALFORMED;
        if (dspy__sse_finish(&p->sse) == false || !p->saw_done)
            return DSPY_LG_TRUNCATED;
        return DSPY_LG_OK;
    }
    if (p->first_ch != '{' || p->last_ch != '}')
        return DSPY_LG_MALFORMED;
    return DSPY_LG_OK;
}

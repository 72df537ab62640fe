/* Incremental HTTP/1.1 response parser of the load generator (net layer): status and
 * headers, Content-Length, chunked and read-to-close bodies, and for OpenAI targets a shallow
 * scan of JSON bodies and SSE events (choices, delta.content, usage, [DONE]) that times each
 * token-bearing event without building a DOM or allocating per event. */
#define _GNU_SOURCE /* memmem */
#include <string.h>
#include <strings.h>

#include "base/ascii.h"
#include "net/loadgen_int.h"

static int on_event(void *userdata, const struct dspy__sse_event *ev);

dspy_status dspy__lg_parser_init(struct dspy__lg_parser *p, enum dspy_loadgen_parse mode,
                                 size_t body_cap, uint32_t chunk_cap)
{
    memset(p, 0, sizeof(*p));
    p->mode = mode;
    p->head_cap = 8192;
    p->body_cap = mode == DSPY_LOADGEN_OPENAI ? body_cap : 0;
    p->chunk_cap = mode == DSPY_LOADGEN_OPENAI ? chunk_cap : 0;
    p->head = dspy_malloc(p->head_cap);
    if (p->body_cap)
        p->body = dspy_malloc(p->body_cap);
    if (p->chunk_cap)
        p->chunk_ns = dspy_malloc(p->chunk_cap * sizeof(uint64_t));
    if (!p->head || (p->body_cap && !p->body) || (p->chunk_cap && !p->chunk_ns)) {
        dspy__lg_parser_release(p);
        return DSPY_ENOMEM;
    }
    dspy__sse_init(&p->sse, 0, on_event, p);
    dspy__lg_parser_reset(p);
    return DSPY_OK;
}

void dspy__lg_parser_release(struct dspy__lg_parser *p)
{
    dspy_free(p->head);
    dspy_free(p->body);
    dspy_free(p->chunk_ns);
    dspy__sse_release(&p->sse);
    p->head = p->body = NULL;
    p->chunk_ns = NULL;
}

void dspy__lg_parser_reset(struct dspy__lg_parser *p)
{
    p->phase = LG_HEAD;
    p->status = 0;
    p->keepalive = true;
    p->chunked = p->stream = p->malformed = p->saw_done = p->error_event = false;
    p->left = p->chunk_size = 0;
    p->line_len = 0;
    p->size_digits = 0;
    p->head_len = p->body_len = 0;
    p->first_ch = p->last_ch = 0;
    p->seen_first = false;
    p->bytes = 0;
    p->first_byte_ns = p->first_token_ns = p->first_content_ns = p->last_token_ns = 0;
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

static void body_bytes(struct dspy__lg_parser *p, const char *data, size_t len, uint64_t now)
{
    if (p->mode != DSPY_LOADGEN_OPENAI || !len)
        return;
    if (p->stream) {
        if (dspy__sse_feed(&p->sse, data, len, now) != DSPY_OK)
            p->malformed = true;
    } else {
        keep_body(p, data, len);
    }
}

static bool header_is(const char *line, size_t len, const char *name, const char **val,
                      size_t *vlen)
{
    size_t n = strlen(name);
    if (len <= n || strncasecmp(line, name, n) || line[n] != ':')
        return false;
    const char *v = line + n + 1, *e = line + len;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
        e--;
    *val = v;
    *vlen = (size_t)(e - v);
    return true;
}

static bool has_token(const char *v, size_t len, const char *tok)
{
    size_t n = strlen(tok);
    for (size_t i = 0; i + n <= len; i++)
        if (!strncasecmp(v + i, tok, n))
            return true;
    return false;
}

/* Parse the gathered head; sets the body phase. false when it is not HTTP. */
static bool parse_head(struct dspy__lg_parser *p)
{
    const char *s = p->head, *end = p->head + p->head_len;
    if (p->head_len < 12 || strncmp(s, "HTTP/1.", 7) || s[8] != ' ')
        return false;
    int st = 0;
    for (int i = 9; i < 12; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        st = st * 10 + (s[i] - '0');
    }
    p->status = st;
    p->keepalive = s[7] == '1';
    bool have_len = false;
    uint64_t clen = 0;
    const char *line = memchr(s, '\n', (size_t)(end - s));
    while (line && ++line < end) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t len = (size_t)((nl ? nl : end) - line);
        const char *v;
        size_t vl;
        if (header_is(line, len, "content-length", &v, &vl)) {
            have_len = true;
            clen = 0;
            for (size_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return false;
                clen = clen * 10 + (uint64_t)(v[i] - '0');
            }
        } else if (header_is(line, len, "transfer-encoding", &v, &vl)) {
            p->chunked = has_token(v, vl, "chunked");
        } else if (header_is(line, len, "connection", &v, &vl)) {
            if (has_token(v, vl, "close"))
                p->keepalive = false;
            else if (has_token(v, vl, "keep-alive"))
                p->keepalive = true;
        } else if (header_is(line, len, "content-type", &v, &vl)) {
            p->stream = has_token(v, vl, "text/event-stream");
        }
        line = nl;
    }
    if (st == 204 || st == 304 || (st >= 100 && st < 200)) {
        p->phase = LG_COMPLETE;
    } else if (p->chunked) {
        p->phase = LG_CHUNK_SIZE;
        p->chunk_size = 0;
        p->size_digits = 0;
    } else if (have_len) {
        p->left = clen;
        p->phase = clen ? LG_BODY_LEN : LG_COMPLETE;
    } else {
        p->phase = LG_BODY_EOF;
        p->keepalive = false;
    }
    return true;
}

/* A JSON body is complete: read its usage (from the kept tail). */
static void finish(struct dspy__lg_parser *p)
{
    if (p->mode == DSPY_LOADGEN_OPENAI && !p->stream && p->body_len)
        scan_usage(p, p->body, p->body_len);
}

/* Gather head bytes; returns bytes used, or -1 on an oversized or broken head. */
static long feed_head(struct dspy__lg_parser *p, const char *data, size_t len)
{
    size_t from = p->head_len > 3 ? p->head_len - 3 : 0;
    size_t take = len;
    if (p->head_len + take > p->head_cap)
        take = p->head_cap - p->head_len;
    memcpy(p->head + p->head_len, data, take);
    p->head_len += take;
    const char *e = memmem(p->head + from, p->head_len - from, "\r\n\r\n", 4);
    if (!e)
        return p->head_len == p->head_cap ? -1 : (long)take;
    size_t head_end = (size_t)(e - p->head) + 4;
    size_t used = take - (p->head_len - head_end);
    p->head_len = head_end;
    if (!parse_head(p))
        return -1;
    return (long)used;
}

int dspy__lg_parser_feed(struct dspy__lg_parser *p, const char *data, size_t len, uint64_t now,
                         size_t *used)
{
    size_t i = 0;
    if (!p->first_byte_ns && len)
        p->first_byte_ns = now;
    while (i < len && p->phase != LG_COMPLETE) {
        const char *d = data + i;
        size_t n = len - i;
        switch (p->phase) {
        case LG_HEAD: {
            long u = feed_head(p, d, n);
            if (u < 0) {
                p->malformed = true;
                *used = len;
                p->bytes += len;
                return LG_ERROR;
            }
            i += (size_t)u;
            break;
        }
        case LG_BODY_LEN:
        case LG_CHUNK_DATA: {
            size_t k = n < p->left ? n : (size_t)p->left;
            body_bytes(p, d, k, now);
            p->left -= k;
            i += k;
            if (!p->left)
                p->phase = p->phase == LG_BODY_LEN ? LG_COMPLETE : LG_CHUNK_END;
            break;
        }
        case LG_BODY_EOF:
            body_bytes(p, d, n, now);
            i += n;
            break;
        case LG_CHUNK_SIZE: {
            char c = *d;
            i++;
            int h = dspy__hexval(c);
            if (h >= 0 && p->size_digits < 15) {
                p->chunk_size = p->chunk_size * 16 + (uint64_t)h;
                p->size_digits++;
            } else if ((c == ';' || c == ' ' || c == '\t') && p->size_digits) {
                p->phase = LG_CHUNK_EXT;
            } else if (c == '\r' && p->size_digits) {
                p->phase = LG_CHUNK_EXT;
            } else if (c == '\n' && p->size_digits) {
                goto size_done;
            } else {
                p->malformed = true;
                *used = len;
                return LG_ERROR;
            }
            break;
        }
        case LG_CHUNK_EXT: {
            const char *nl = memchr(d, '\n', n);
            if (!nl) {
                i = len;
                break;
            }
            i += (size_t)(nl - d) + 1;
        size_done:
            if (p->chunk_size) {
                p->left = p->chunk_size;
                p->phase = LG_CHUNK_DATA;
            } else {
                p->phase = LG_TRAILER;
                p->line_len = 0;
            }
            p->chunk_size = 0;
            p->size_digits = 0;
            break;
        }
        case LG_CHUNK_END:
            if (*d == '\n')
                p->phase = LG_CHUNK_SIZE;
            else if (*d != '\r') {
                p->malformed = true;
                *used = len;
                return LG_ERROR;
            }
            i++;
            break;
        case LG_TRAILER:
            if (*d == '\n') {
                if (!p->line_len)
                    p->phase = LG_COMPLETE;
                p->line_len = 0;
            } else if (*d != '\r') {
                p->line_len++;
            }
            i++;
            break;
        case LG_COMPLETE: break;
        }
    }
    *used = i;
    p->bytes += i;
    if (p->phase != LG_COMPLETE)
        return LG_MORE;
    finish(p);
    return LG_DONE;
}

int dspy__lg_parser_eof(struct dspy__lg_parser *p)
{
    if (p->phase == LG_BODY_EOF) {
        p->phase = LG_COMPLETE;
        finish(p);
        return LG_DONE;
    }
    return LG_ERROR;
}

enum dspy_loadgen_outcome dspy__lg_parser_outcome(const struct dspy__lg_parser *p)
{
    if (p->status < 200 || p->status > 299)
        return DSPY_LG_HTTP;
    if (p->mode != DSPY_LOADGEN_OPENAI)
        return p->malformed ? DSPY_LG_MALFORMED : DSPY_LG_OK;
    if (p->stream) {
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

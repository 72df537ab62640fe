/* HTTP/1.1 response framing parser (net layer): status line, headers, Content-Length,
 * chunked and read-to-close bodies, keep-alive. See http1.h. */
#include <string.h>
#include <strings.h>

#include "base/ascii.h"
#include "net/http1.h"

void dspy__h1_init(struct dspy__h1 *p, size_t max_head, dspy__h1_body_fn on_body, void *userdata)
{
    memset(p, 0, sizeof(*p));
    dspy__buf_init(&p->head, max_head ? max_head : DSPY__H1_MAX_HEAD_DEFAULT);
    p->on_body = on_body;
    p->userdata = userdata;
    dspy__h1_reset(p);
}

void dspy__h1_release(struct dspy__h1 *p)
{
    dspy__buf_release(&p->head);
}

static void reset_head(struct dspy__h1 *p)
{
    p->phase = DSPY__H1_HEAD;
    p->status = 0;
    p->keepalive = true;
    p->chunked = p->stream = false;
    p->left = p->chunk_size = 0;
    p->line_len = 0;
    p->size_digits = 0;
    p->line_start = 0;
    dspy__buf_reset(&p->head);
}

void dspy__h1_reset(struct dspy__h1 *p)
{
    reset_head(p);
    p->no_body = false;
    p->bytes = 0;
    p->first_byte_ns = 0;
    p->error = NULL;
    p->oversize = false;
}

bool dspy__h1_head_done(const struct dspy__h1 *p)
{
    return p->phase != DSPY__H1_HEAD;
}

/* `line` of `len` bytes is "name: value": the trimmed value. */
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

bool dspy__h1_header(const struct dspy__h1 *p, const char *name, const char **value, size_t *len)
{
    if (p->phase == DSPY__H1_HEAD || !p->head.ptr)
        return false;
    const char *s = p->head.ptr, *end = s + p->head.len;
    const char *line = memchr(s, '\n', (size_t)(end - s));
    while (line && ++line < end) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        if (header_is(line, (size_t)((nl ? nl : end) - line), name, value, len))
            return true;
        line = nl;
    }
    return false;
}

/* Parse the gathered head; sets the body phase. NULL, or why it is not an HTTP/1 answer. */
static const char *parse_head(struct dspy__h1 *p)
{
    const char *s = p->head.ptr, *end = s + p->head.len;
    if (p->head.len < 12 || strncmp(s, "HTTP/1.", 7) || s[8] != ' ' ||
        (s[12] != ' ' && s[12] != '\r' && s[12] != '\n'))
        return "malformed HTTP status line";
    int st = 0;
    for (int i = 9; i < 12; i++) {
        if (s[i] < '0' || s[i] > '9')
            return "malformed HTTP status line";
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
            uint64_t n = 0;
            if (!vl || vl > 18)
                return "bad Content-Length in the response";
            for (size_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return "bad Content-Length in the response";
                n = n * 10 + (uint64_t)(v[i] - '0');
            }
            if (have_len && n != clen)
                return "two different Content-Length values in the response";
            have_len = true;
            clen = n;
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
    if (p->no_body || st == 204 || st == 304 || (st >= 100 && st < 200)) {
        p->phase = DSPY__H1_COMPLETE;
    } else if (p->chunked) {
        p->phase = DSPY__H1_CHUNK_SIZE;
        p->chunk_size = 0;
        p->size_digits = 0;
    } else if (have_len) {
        p->left = clen;
        p->phase = clen ? DSPY__H1_BODY_LEN : DSPY__H1_COMPLETE;
    } else {
        p->phase = DSPY__H1_BODY_EOF;
        p->keepalive = false;
    }
    return NULL;
}

/* Gather head bytes up to the empty line that ends the head (CRLF or a bare LF); only head
 * bytes are copied. Returns bytes used, or -1 with p->error set. */
static long feed_head(struct dspy__h1 *p, const char *d, size_t n)
{
    size_t off = 0;
    for (;;) {
        const char *nl = memchr(d + off, '\n', n - off);
        size_t upto = nl ? (size_t)(nl - d) + 1 : n;
        if (p->head.len + (upto - off) > p->head.max) {
            p->error = "response head larger than the limit";
            p->oversize = true;
            return -1;
        }
        if (dspy__buf_add(&p->head, d + off, upto - off)) {
            p->error = "out of memory for the response head";
            return -1;
        }
        off = upto;
        if (!nl)
            return (long)n;
        size_t ll = p->head.len - 1 - p->line_start;
        bool empty = ll == 0 || (ll == 1 && p->head.ptr[p->line_start] == '\r');
        p->line_start = p->head.len;
        if (!empty)
            continue;
        if ((p->error = parse_head(p)))
            return -1;
        return (long)off;
    }
}

static int feed_chunk_size(struct dspy__h1 *p, char c)
{
    int h = dspy__hexval(c);
    if (h >= 0 && p->size_digits < 15) {
        p->chunk_size = p->chunk_size * 16 + (uint64_t)h;
        p->size_digits++;
    } else if ((c == ';' || c == ' ' || c == '\t' || c == '\r') && p->size_digits) {
        p->phase = DSPY__H1_CHUNK_EXT;
    } else if (c == '\n' && p->size_digits) {
        return 1;
    } else {
        p->error = "bad chunk size in the response";
        return -1;
    }
    return 0;
}

static void size_done(struct dspy__h1 *p)
{
    if (p->chunk_size) {
        p->left = p->chunk_size;
        p->phase = DSPY__H1_CHUNK_DATA;
    } else {
        p->phase = DSPY__H1_TRAILER;
        p->line_len = 0;
    }
    p->chunk_size = 0;
    p->size_digits = 0;
}

static int body(struct dspy__h1 *p, const char *d, size_t k, uint64_t now)
{
    return k && p->on_body ? p->on_body(p->userdata, d, k, now) : 0;
}

int dspy__h1_feed(struct dspy__h1 *p, const char *data, size_t len, uint64_t now, size_t *used)
{
    size_t i = 0;
    int r = DSPY__H1_MORE;
    if (!p->first_byte_ns && len)
        p->first_byte_ns = now;
    while (i < len && p->phase != DSPY__H1_COMPLETE && r == DSPY__H1_MORE) {
        const char *d = data + i;
        size_t n = len - i;
        switch (p->phase) {
        case DSPY__H1_HEAD: {
            long u = feed_head(p, d, n);
            if (u < 0) {
                r = DSPY__H1_ERROR;
                i = len;
                break;
            }
            i += (size_t)u;
            if (p->phase == DSPY__H1_COMPLETE && p->status < 200) /* interim: skip it */
                reset_head(p);
            break;
        }
        case DSPY__H1_BODY_LEN:
        case DSPY__H1_CHUNK_DATA: {
            size_t k = n < p->left ? n : (size_t)p->left;
            p->left -= k;
            i += k;
            if (!p->left)
                p->phase = p->phase == DSPY__H1_BODY_LEN ? DSPY__H1_COMPLETE : DSPY__H1_CHUNK_END;
            if (body(p, d, k, now))
                r = DSPY__H1_STOPPED;
            break;
        }
        case DSPY__H1_BODY_EOF:
            i += n;
            if (body(p, d, n, now))
                r = DSPY__H1_STOPPED;
            break;
        case DSPY__H1_CHUNK_SIZE: {
            i++;
            int s = feed_chunk_size(p, *d);
            if (s < 0) {
                r = DSPY__H1_ERROR;
                i = len;
            } else if (s > 0) {
                size_done(p);
            }
            break;
        }
        case DSPY__H1_CHUNK_EXT: {
            const char *nl = memchr(d, '\n', n);
            if (!nl) {
                i = len;
                break;
            }
            i += (size_t)(nl - d) + 1;
            size_done(p);
            break;
        }
        case DSPY__H1_CHUNK_END:
            if (*d == '\n') {
                p->phase = DSPY__H1_CHUNK_SIZE;
            } else if (*d != '\r') {
                p->error = "chunk not followed by CRLF in the response";
                r = DSPY__H1_ERROR;
                i = len;
                break;
            }
            i++;
            break;
        case DSPY__H1_TRAILER:
            if (*d == '\n') {
                if (!p->line_len)
                    p->phase = DSPY__H1_COMPLETE;
                p->line_len = 0;
            } else if (*d != '\r') {
                p->line_len++;
            }
            i++;
            break;
        case DSPY__H1_COMPLETE: break;
        }
    }
    *used = i;
    p->bytes += i;
    if (r != DSPY__H1_MORE)
        return r;
    return p->phase == DSPY__H1_COMPLETE ? DSPY__H1_DONE : DSPY__H1_MORE;
}

int dspy__h1_eof(struct dspy__h1 *p)
{
    if (p->phase == DSPY__H1_BODY_EOF || p->phase == DSPY__H1_COMPLETE) {
        p->phase = DSPY__H1_COMPLETE;
        return DSPY__H1_DONE;
    }
    p->error = p->bytes ? "connection closed inside the response" : "no response";
    return DSPY__H1_ERROR;
}

/* Bounded growable byte buffer (base layer). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "base/buf.h"

void dspy__buf_init(struct dspy_buf *b, size_t max)
{
    b->ptr = NULL;
    b->len = b->cap = 0;
    b->max = max ? max : DSPY_BUF_MAX_DEFAULT;
}

void dspy__buf_release(struct dspy_buf *b)
{
    dspy_free(b->ptr);
    b->ptr = NULL;
    b->len = b->cap = 0;
}

void dspy__buf_reset(struct dspy_buf *b)
{
    b->len = 0;
    if (b->ptr)
        b->ptr[0] = '\0';
}

dspy_status dspy__buf_reserve(struct dspy_buf *b, size_t extra)
{
    if (extra > b->max || b->len > b->max - extra)
        return DSPY_ETOOBIG;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return DSPY_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    if (cap > b->max + 1)
        cap = b->max + 1;
    char *p = dspy_realloc(b->ptr, cap);
    if (!p)
        return DSPY_ENOMEM;
    b->ptr = p;
    b->cap = cap;
    return DSPY_OK;
}

dspy_status dspy__buf_add(struct dspy_buf *b, const void *data, size_t len)
{
    dspy_status rc = dspy__buf_reserve(b, len);
    if (rc)
        return rc;
    if (len)
        memcpy(b->ptr + b->len, data, len);
    b->len += len;
    b->ptr[b->len] = '\0';
    return DSPY_OK;
}

dspy_status dspy__buf_adds(struct dspy_buf *b, const char *s)
{
    return dspy__buf_add(b, s, strlen(s));
}

dspy_status dspy__buf_addc(struct dspy_buf *b, char c)
{
    return dspy__buf_add(b, &c, 1);
}

dspy_status dspy__buf_vaddf(struct dspy_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return DSPY_EINVAL;
    dspy_status rc = dspy__buf_reserve(b, (size_t)n);
    if (rc)
        return rc;
    vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return DSPY_OK;
}

dspy_status dspy__buf_addf(struct dspy_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    dspy_status rc = dspy__buf_vaddf(b, fmt, ap);
    va_end(ap);
    return rc;
}

/* Whether any of the 8 bytes in `w` needs a JSON escape: a control character (< 0x20),
 * '"' or '\\'. Bit tricks after "Bit Twiddling Hacks" (has-zero-byte, has-less-than). */
static bool word_needs_escape(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t quote = w ^ (ones * '"'), bslash = w ^ (ones * '\\');
    uint64_t zero_q = (quote - ones) & ~quote, zero_b = (bslash - ones) & ~bslash;
    uint64_t ctrl = (w - ones * 0x20) & ~w;
    return ((zero_q | zero_b | ctrl) & highs) != 0;
}

size_t dspy__json_escape_byte(unsigned char c, char out[6])
{
    static const char hex[] = "0123456789abcdef";
    if (c >= 0x20 && c != '"' && c != '\\')
        return 0;
    out[0] = '\\';
    switch (c) {
    case '"': out[1] = '"'; return 2;
    case '\\': out[1] = '\\'; return 2;
    case '\n': out[1] = 'n'; return 2;
    case '\r': out[1] = 'r'; return 2;
    case '\t': out[1] = 't'; return 2;
    case '\b': out[1] = 'b'; return 2;
    case '\f': out[1] = 'f'; return 2;
    default:
        out[1] = 'u';
        out[2] = '0';
        out[3] = '0';
        out[4] = hex[c >> 4];
        out[5] = hex[c & 15];
        return 6;
    }
}

dspy_status dspy__buf_add_json_str(struct dspy_buf *b, const char *s, size_t len)
{
    dspy_status rc = dspy__buf_reserve(b, len + 2);
    if (rc)
        return rc;
    b->ptr[b->len++] = '"';
    size_t run = 0; /* start of the pending run of bytes that need no escape */
    for (size_t i = 0; i < len; i++) {
        /* Skip 8 clean bytes at a time: prompts are long and mostly need no escape. */
        while (len - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (word_needs_escape(w))
                break;
            i += 8;
        }
        if (i >= len)
            break;
        char esc[6];
        size_t n = dspy__json_escape_byte((unsigned char)s[i], esc);
        if (!n)
            continue;
        if ((rc = dspy__buf_add(b, s + run, i - run)) || (rc = dspy__buf_add(b, esc, n)))
            return rc;
        run = i + 1;
    }
    if ((rc = dspy__buf_add(b, s + run, len - run)))
        return rc;
    return dspy__buf_addc(b, '"');
}

char *dspy__buf_detach(struct dspy_buf *b, size_t *len)
{
    if (!b->ptr) {
        if (dspy__buf_reserve(b, 0))
            return NULL;
        b->ptr[0] = '\0';
    }
    char *p = b->ptr;
    if (len)
        *len = b->len;
    b->ptr = NULL;
    b->len = b->cap = 0;
    return p;
}

dspy_status dspy__buf_add_base64(struct dspy_buf *b, const void *data, size_t len)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *u = data;
    dspy_status rc = dspy__buf_reserve(b, (len + 2) / 3 * 4);
    for (size_t i = 0; !rc && i < len; i += 3) {
        unsigned v = (unsigned)u[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)u[i + 1] << 8;
        if (i + 2 < len)
            v |= u[i + 2];
        char q[4] = { tbl[(v >> 18) & 63], tbl[(v >> 12) & 63],
                      i + 1 < len ? tbl[(v >> 6) & 63] : '=', i + 2 < len ? tbl[v & 63] : '=' };
        rc = dspy__buf_add(b, q, 4);
    }
    return rc;
}

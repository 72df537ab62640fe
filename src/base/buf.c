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

dspy_status dspy__buf_grow(struct dspy_buf *b, size_t extra)
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

dspy_status dspy__buf_add_slow(struct dspy_buf *b, const void *data, size_t len)
{
    dspy_status rc = dspy__buf_grow(b, len);
    if (rc)
        return rc;
    if (len)
        memcpy(b->ptr + b->len, data, len);
    b->len += len;
    b->ptr[b->len] = '\0';
    return DSPY_OK;
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

/* The high bit of each of the 8 bytes of `w` that needs a JSON escape (a control character,
 * '"' or '\\'), and perhaps of bytes after the first such; 0 when none does. Bit tricks
 * after "Bit Twiddling Hacks" (has-zero-byte, has-less-than): the lowest flag is exact, as
 * borrows only run towards later bytes. */
static uint64_t word_escapes(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t quote = w ^ (ones * '"'), bslash = w ^ (ones * '\\');
    uint64_t zero_q = (quote - ones) & ~quote, zero_b = (bslash - ones) & ~bslash;
    uint64_t ctrl = (w - ones * 0x20) & ~w;
    return (zero_q | zero_b | ctrl) & highs;
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
    /* Room for the text unescaped and both quotes up front; an escape asks for its extra
     * bytes as it comes, so clean text is one reserve and one copy per run. */
    dspy_status rc = dspy__buf_reserve(b, len + 2);
    if (rc)
        return rc;
    char *o = b->ptr + b->len;
    *o++ = '"';
    size_t run = 0; /* start of the pending run of bytes that need no escape */
    for (size_t i = 0; i < len; i++) {
        /* Skip 8 clean bytes at a time (prompts are long and mostly need no escape), then
         * straight to the byte that needs one. */
        uint64_t w, m = 0;
        while (len - i >= 8 && (memcpy(&w, s + i, 8), !(m = word_escapes(w))))
            i += 8;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (m)
            i += (size_t)__builtin_ctzll(m) >> 3;
#endif
        if (i >= len)
            break;
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') /* the tail, byte by byte */
            continue;
        char esc[6];
        size_t n = dspy__json_escape_byte(c, esc);
        memcpy(o, s + run, i - run);
        o += i - run;
        /* Reserved so far: the rest of the text, the closing quote and the NUL. */
        b->len = (size_t)(o - b->ptr);
        if ((rc = dspy__buf_reserve(b, n + (len - i - 1) + 1))) {
            b->ptr[b->len] = '\0';
            return rc;
        }
        o = b->ptr + b->len;
        if (n == 2) { /* the short forms, the usual ones: no call to memcpy */
            o[0] = esc[0];
            o[1] = esc[1];
        } else {
            memcpy(o, esc, 6);
        }
        o += n;
        run = i + 1;
    }
    if (len > run)
        memcpy(o, s + run, len - run);
    o += len - run;
    *o++ = '"';
    *o = '\0';
    b->len = (size_t)(o - b->ptr);
    return DSPY_OK;
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

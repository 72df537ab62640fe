/* Bounded growable byte buffer (base layer), after curl's dynbuf: every buffer has a
 * maximum size, and appends past it fail with DSPY_ETOOBIG instead of growing. The content
 * is always NUL-terminated. */
#ifndef DSPY_BASE_BUF_H
#define DSPY_BASE_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <dspyc/common.h>

struct dspy_buf {
    char *ptr; /* NULL until the first append; then NUL-terminated */
    size_t len;
    size_t cap;
    size_t max; /* most bytes the buffer may hold, not counting the NUL */
};

#define DSPY_BUF_MAX_DEFAULT ((size_t)64 << 20)

void dspy__buf_init(struct dspy_buf *b, size_t max);
void dspy__buf_release(struct dspy_buf *b);
/* Empty the buffer, keeping its memory. */
void dspy__buf_reset(struct dspy_buf *b);
/* The out-of-line halves of the appends below: growth, and the checks against `max`. */
dspy_status dspy__buf_grow(struct dspy_buf *b, size_t extra);
dspy_status dspy__buf_add_slow(struct dspy_buf *b, const void *data, size_t len);

/* Whether `extra` more bytes (and the NUL) fit without growing and within `max`. */
static inline bool dspy__buf_fits(const struct dspy_buf *b, size_t extra)
{
    /* cap is 0 or > len; max may have been lowered below len after growth. */
    return b->cap - b->len > extra && b->len <= b->max && extra <= b->max - b->len;
}

/* The appends run a few times per field on every prompt and reply: the common case, room
 * already there, stays inline. */
static inline dspy_status dspy__buf_reserve(struct dspy_buf *b, size_t extra)
{
    return dspy__buf_fits(b, extra) ? DSPY_OK : dspy__buf_grow(b, extra);
}

static inline dspy_status dspy__buf_add(struct dspy_buf *b, const void *data, size_t len)
{
    if (!dspy__buf_fits(b, len))
        return dspy__buf_add_slow(b, data, len);
    if (len)
        memcpy(b->ptr + b->len, data, len);
    b->len += len;
    b->ptr[b->len] = '\0';
    return DSPY_OK;
}

static inline dspy_status dspy__buf_adds(struct dspy_buf *b, const char *s)
{
    return dspy__buf_add(b, s, strlen(s));
}

static inline dspy_status dspy__buf_addc(struct dspy_buf *b, char c)
{
    if (!dspy__buf_fits(b, 1))
        return dspy__buf_add_slow(b, &c, 1);
    b->ptr[b->len++] = c;
    b->ptr[b->len] = '\0';
    return DSPY_OK;
}
dspy_status dspy__buf_addf(struct dspy_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
dspy_status dspy__buf_vaddf(struct dspy_buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* The JSON escape for byte `c` written to `out` (2 or 6 bytes), or 0 when `c` needs none:
 * '"', '\\' and control characters only, the short forms where JSON has them. */
size_t dspy__json_escape_byte(unsigned char c, char out[6]);
/* Append `s` as a JSON string literal with quotes. Escapes only '"', '\\' and control
 * characters (as orjson and jansson's compact mode do); bytes >= 0x80 pass through. */
dspy_status dspy__buf_add_json_str(struct dspy_buf *b, const char *s, size_t len);
/* Append `len` bytes as padded base64 (RFC 4648). */
dspy_status dspy__buf_add_base64(struct dspy_buf *b, const void *data, size_t len);
/* Hand the content to the caller (dspy_free it) and leave the buffer empty. Never NULL
 * on success: an empty buffer yields "". */
char *dspy__buf_detach(struct dspy_buf *b, size_t *len);

#endif

/* Cache entries (cache layer): the refcounted value shared between levels and callers,
 * and the framed byte form (header, optional zlib payload, XXH3-64 checksum) that L2 and
 * L3 store, so corrupt or truncated entries are detected and never returned. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
#include <zlib.h>

#include "cache/cache_int.h"

/* zlib cannot expand data by more than about 1032:1; a header claiming more is corrupt. */
#define ZLIB_MAX_RATIO 1032u

struct dspy__cache_entry *dspy__cache_entry_new(const uint8_t key[16], const void *data, size_t len,
                                                uint64_t expires_ms)
{
    struct dspy__cache_entry *e = dspy_malloc(sizeof(*e) + len);
    if (!e)
        return NULL;
    atomic_init(&e->refs, 1);
    atomic_init(&e->in_mem, false);
    memcpy(e->key, key, 16);
    e->expires_ms = expires_ms;
    e->ttl_exact = false;
    e->hnext = e->lprev = e->lnext = NULL;
    e->mem_expires_ms = 0;
    e->len = len;
    if (data && len)
        memcpy(e->data, data, len);
    return e;
}

void dspy__cache_entry_unref(struct dspy__cache_entry *e)
{
    if (e && atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1)
        dspy_free(e);
}

uint64_t dspy__cache_expiry(double ttl_s, uint64_t now_ms)
{
    if (!(ttl_s > 0))
        return 0;
    if (ttl_s > 1e12)
        ttl_s = 1e12;
    uint64_t ms = (uint64_t)(ttl_s * 1000.0);
    return now_ms + (ms ? ms : 1);
}

void dspy__cache_errlog_set(struct dspy__cache_errlog *log, const char *fmt, ...)
{
    va_list ap;
    atomic_fetch_add_explicit(&log->count, 1, memory_order_relaxed);
    /* Keep the first error of a burst rather than spinning behind another writer. */
    if (atomic_flag_test_and_set_explicit(&log->busy, memory_order_acquire))
        return;
    va_start(ap, fmt);
    vsnprintf(log->text, sizeof(log->text), fmt, ap);
    va_end(ap);
    atomic_flag_clear_explicit(&log->busy, memory_order_release);
}

void dspy__cache_errlog_get(struct dspy__cache_errlog *log, char *out, size_t cap)
{
    while (atomic_flag_test_and_set_explicit(&log->busy, memory_order_acquire))
        ;
    snprintf(out, cap, "%s", log->text);
    atomic_flag_clear_explicit(&log->busy, memory_order_release);
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t frame_sum(const uint8_t key[16], const unsigned char *hdr,
                          const unsigned char *payload, size_t len)
{
    XXH3_state_t st;
    XXH3_INITSTATE(&st);
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, key, 16);
    XXH3_64bits_update(&st, hdr, 32);
    XXH3_64bits_update(&st, payload, len);
    return XXH3_64bits_digest(&st);
}

size_t dspy__frame_bound(size_t len)
{
    size_t z = (size_t)compressBound((uLong)len);
    return DSPY__FRAME_HDR + (z > len ? z : len);
}

dspy_status dspy__frame_encode(const uint8_t key[16], const void *value, size_t len,
                               uint64_t created_ms, uint64_t expires_ms, size_t compress_min,
                               unsigned char *out, size_t *out_len)
{
    unsigned char *payload = out + DSPY__FRAME_HDR;
    size_t stored = len;
    unsigned flags = 0;
    if (len > UINT32_MAX / 2)
        return DSPY_ETOOBIG;
    if (compress_min && len >= compress_min) {
        uLongf zlen = compressBound((uLong)len);
        if (compress2(payload, &zlen, value, (uLong)len, 1) == Z_OK && zlen < len) {
            stored = zlen;
            flags |= DSPY__FRAME_ZLIB;
        }
    }
    if (!(flags & DSPY__FRAME_ZLIB) && len)
        memcpy(payload, value, len);
    memcpy(out, "DSPC", 4);
    out[4] = DSPY__FRAME_VERSION;
    out[5] = (unsigned char)flags;
    out[6] = out[7] = 0;
    put32(out + 8, (uint32_t)stored);
    put32(out + 12, (uint32_t)len);
    put64(out + 16, created_ms);
    put64(out + 24, expires_ms);
    put64(out + 32, frame_sum(key, out, payload, stored));
    *out_len = DSPY__FRAME_HDR + stored;
    return DSPY_OK;
}

dspy_status dspy__frame_check(const uint8_t key[16], const void *buf, size_t len,
                              struct dspy__frame *f)
{
    const unsigned char *p = buf;
    if (len < DSPY__FRAME_HDR || memcmp(p, "DSPC", 4) != 0)
        return DSPY_EPARSE;
    if (p[4] != DSPY__FRAME_VERSION)
        return p[4] > DSPY__FRAME_VERSION ? DSPY_EUNSUPPORTED : DSPY_EPARSE;
    f->flags = p[5];
    f->stored_len = get32(p + 8);
    f->value_len = get32(p + 12);
    f->created_ms = get64(p + 16);
    f->expires_ms = get64(p + 24);
    f->payload = p + DSPY__FRAME_HDR;
    if ((f->flags & ~DSPY__FRAME_ZLIB) || p[6] || p[7])
        return DSPY_EPARSE;
    if ((size_t)f->stored_len != len - DSPY__FRAME_HDR || f->value_len > DSPY__CACHE_VALUE_HARD_MAX)
        return DSPY_EPARSE;
    if (f->flags & DSPY__FRAME_ZLIB) {
        if ((uint64_t)f->value_len > (uint64_t)f->stored_len * ZLIB_MAX_RATIO)
            return DSPY_EPARSE;
    } else if (f->value_len != f->stored_len) {
        return DSPY_EPARSE;
    }
    if (frame_sum(key, p, f->payload, f->stored_len) != get64(p + 32))
        return DSPY_EPARSE;
    return DSPY_OK;
}

dspy_status dspy__frame_decode(const struct dspy__frame *f, void *out)
{
    if (!(f->flags & DSPY__FRAME_ZLIB)) {
        if (f->value_len)
            memcpy(out, f->payload, f->value_len);
        return DSPY_OK;
    }
    uLongf n = f->value_len;
    int zr = uncompress(out, &n, f->payload, f->stored_len);
    return zr == Z_OK && n == f->value_len ? DSPY_OK : DSPY_EPARSE;
}

/* Storage encodings and top-k selection shared by the vec layer's backends: float16 and
 * per-row int8 encoding of stored matrices, query quantization, and the per-query bounded
 * heap (the base layer's heap) that keeps the best k rows. */
#include <math.h>
#include <string.h>

#include "vec/vec_int.h"

uint16_t dspy__vec_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    uint32_t sign = (x >> 16) & 0x8000u, exp = (x >> 23) & 0xffu, man = x & 0x7fffffu;
    if (exp == 0xff)
        return (uint16_t)(sign | 0x7c00u | (man ? 0x200u | (man >> 13) : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10)
            return (uint16_t)sign;
        man |= 0x800000u;
        unsigned shift = (unsigned)(14 - e);
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1)))
        half++; /* a carry into the exponent rounds up to the next power, or to Inf */
    return (uint16_t)(sign | half);
}

float dspy__vec_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    uint32_t x;
    if (exp == 0) {
        float f = (float)man * 5.9604644775390625e-8f; /* man · 2^-24 */
        return sign ? -f : f;
    }
    if (exp == 31)
        x = sign | 0x7f800000u | (man << 13);
    else
        x = sign | ((exp + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &x, sizeof(f));
    return f;
}

size_t dspy__vec_elem_size(enum dspy_vec_storage storage)
{
    return storage == DSPY_VEC_F32 ? 4 : storage == DSPY_VEC_F16 ? 2 : 1;
}

size_t dspy__vec_pad(enum dspy_vec_storage storage, size_t d)
{
    size_t per = 64 / dspy__vec_elem_size(storage);
    return (d + per - 1) / per * per;
}

float dspy__vec_quantize(const float *q, size_t d, size_t pad, int8_t *q8, uint8_t *qu)
{
    float amax = 0;
    bool finite = true;
    for (size_t i = 0; i < d; i++) {
        if (!isfinite(q[i]))
            finite = false;
        else if (fabsf(q[i]) > amax)
            amax = fabsf(q[i]);
    }
    float scale = !finite ? NAN : amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
    for (size_t i = 0; i < pad; i++) {
        long r = (i < d && finite) ? lrintf(q[i] * inv) : 0;
        r = r > 127 ? 127 : r < -127 ? -127 : r;
        q8[i] = (int8_t)r;
        if (qu)
            qu[i] = (uint8_t)(r + 128);
    }
    return scale;
}

void dspy__vec_encoded_free(struct dspy_vec_matrix *m)
{
    dspy_free(m->rows_raw);
    dspy_free(m->meta_raw);
    m->rows_raw = m->meta_raw = NULL;
    if (!m->borrowed)
        m->rows = NULL;
    m->norms = m->scales = NULL;
    m->sums = NULL;
}

void *dspy__vec_aligned_alloc(size_t bytes, void **raw)
{
    *raw = dspy_malloc(bytes + 64);
    if (!*raw)
        return NULL;
    uintptr_t p = ((uintptr_t)*raw + 63) & ~(uintptr_t)63;
    return (void *)p;
}

static float norm_of(const float *x, size_t d)
{
    double s = 0;
    for (size_t i = 0; i < d; i++)
        s += (double)x[i] * x[i];
    return (float)sqrt(s);
}

static void encode_i8_row(struct dspy_vec_matrix *m, size_t i, const float *x)
{
    int8_t *out = (int8_t *)m->rows + i * m->ld;
    float amax = 0;
    bool finite = true;
    for (size_t t = 0; t < m->d; t++) {
        if (!isfinite(x[t]))
            finite = false;
        else if (fabsf(x[t]) > amax)
            amax = fabsf(x[t]);
    }
    float inv = amax > 0 ? 127.0f / amax : 0.0f, scale = amax / 127.0f;
    int32_t sum = 0;
    double ss = 0;
    for (size_t t = 0; t < m->ld; t++) {
        long r = (t < m->d && finite) ? lrintf(x[t] * inv) : 0;
        r = r > 127 ? 127 : r < -127 ? -127 : r;
        out[t] = (int8_t)r;
        sum += (int32_t)r;
        ss += (double)r * (double)r;
    }
    /* A row holding NaN or Inf has no scale: its scores are NaN and it is never returned. */
    m->scales[i] = finite ? scale : NAN;
    m->sums[i] = sum;
    m->norms[i] = finite ? (float)(sqrt(ss) * scale) : NAN;
}

dspy_status dspy__vec_encode(struct dspy_vec_matrix *m, const float *rows, size_t ld)
{
    size_t n = m->n, d = m->d, es = dspy__vec_elem_size(m->storage);
    size_t nmeta = m->storage == DSPY_VEC_I8 ? 3 : 1;
    float *meta = dspy__vec_aligned_alloc((n ? n : 1) * nmeta * 4, &m->meta_raw);
    if (!meta)
        return DSPY_ENOMEM;
    m->norms = meta;
    if (m->storage == DSPY_VEC_I8) {
        m->scales = meta + n;
        m->sums = (int32_t *)(meta + 2 * n);
    }
    if (m->borrowed) {
        m->rows = (void *)rows;
        m->ld = ld;
        for (size_t i = 0; i < n; i++)
            m->norms[i] = norm_of(rows + i * ld, d);
        return DSPY_OK;
    }
    m->ld = dspy__vec_pad(m->storage, d);
    m->rows = dspy__vec_aligned_alloc((n ? n : 1) * m->ld * es, &m->rows_raw);
    if (!m->rows) {
        dspy__vec_encoded_free(m);
        return DSPY_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        dspy__vec_encode_row(m, i, rows + i * ld);
    return DSPY_OK;
}

void dspy__vec_encode_row(struct dspy_vec_matrix *m, size_t i, const float *x)
{
    size_t d = m->d;
    if (m->storage == DSPY_VEC_F32) {
        float *out = (float *)m->rows + i * m->ld;
        memcpy(out, x, d * sizeof(float));
        memset(out + d, 0, (m->ld - d) * sizeof(float));
        m->norms[i] = norm_of(x, d);
    } else if (m->storage == DSPY_VEC_F16) {
        uint16_t *out = (uint16_t *)m->rows + i * m->ld;
        double ss = 0;
        for (size_t t = 0; t < m->ld; t++) {
            out[t] = t < d ? dspy__vec_f32_to_f16(x[t]) : 0;
            double v = dspy__vec_f16_to_f32(out[t]);
            ss += v * v;
        }
        m->norms[i] = (float)sqrt(ss);
    } else {
        encode_i8_row(m, i, x);
    }
}

/* ---- selection ---- */

/* The worst hit on top: lower key, or the same key and the higher id. */
static bool worse_first(const void *a, const void *b)
{
    const struct dspy__vec_hit *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key;
    return x->id > y->id;
}

static const struct dspy__heap_type HIT_HEAP = { .size = sizeof(struct dspy__vec_hit),
                                                 .before = worse_first };

void dspy__vec_sel_init(struct dspy__vec_sel *s, struct dspy__vec_hit *storage, size_t k)
{
    dspy__heap_init_over(&s->heap, &HIT_HEAP, storage, k);
    s->k = k;
    s->worst = -INFINITY;
}

void dspy__vec_sel_push_slow(struct dspy__vec_sel *s, float key, int64_t id)
{
    struct dspy__vec_hit h = { key, id };
    if (key != key || s->k == 0)
        return;
    if (dspy__heap_len(&s->heap) < s->k) {
        dspy__heap_push(&s->heap, &h); /* cannot fail: below capacity */
    } else {
        if (!worse_first(dspy__heap_top(&s->heap), &h))
            return;
        dspy__heap_replace_top(&s->heap, &h);
    }
    if (dspy__heap_len(&s->heap) == s->k)
        s->worst = ((const struct dspy__vec_hit *)dspy__heap_top(&s->heap))->key;
}

void dspy__vec_sel_finish(struct dspy__vec_sel *s, enum dspy_vec_metric metric, float *scores,
                          int64_t *ids)
{
    size_t len = dspy__heap_len(&s->heap);
    float none = metric == DSPY_VEC_L2 ? INFINITY : -INFINITY;
    for (size_t j = len; j < s->k; j++) {
        scores[j] = none;
        ids[j] = -1;
    }
    struct dspy__vec_hit h;
    for (size_t j = len; j-- > 0;) {
        dspy__heap_pop(&s->heap, &h);
        scores[j] = metric == DSPY_VEC_L2 ? -h.key : h.key;
        ids[j] = h.id;
    }
    s->worst = -INFINITY;
}

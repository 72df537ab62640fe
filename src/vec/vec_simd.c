/* SIMD kernels of the vec layer's CPU backend: dot products of rows against a few queries
 * over float32, float16 and int8 rows, in scalar C, AVX2+FMA+F16C and AVX-512 (with VNNI
 * for int8), each compiled with a function-level target and chosen at run time. */
#include <math.h>
#include <string.h>

#include <immintrin.h>

#include "vec/vec_int.h"

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))

/* Rows are scanned with a stride of a whole row, which the hardware prefetcher follows late
 * when a row spans several cache lines: ask for the row PF_ROWS ahead while this one is
 * being multiplied (in paired runs here the single-query f32 scan went from ~85 % to ~100 %
 * of a plain read of 1M x 384). Prefetches past the end are harmless. */
#define PF_ROWS 8
static inline void prefetch_row(const void *row, size_t bytes)
{
    for (size_t o = 0; o < bytes; o += 64)
        _mm_prefetch((const char *)row + o, _MM_HINT_T0);
}

/* ---- scalar ---------------------------------------------------------------------------- */

static float dot_scalar(const float *a, const float *b, size_t d)
{
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= d; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < d; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static float l2sq_scalar(const float *a, const float *b, size_t d)
{
    float s = 0;
    for (size_t i = 0; i < d; i++) {
        float t = a[i] - b[i];
        s += t * t;
    }
    return s;
}

static void dots_f32_scalar(const float *x, size_t ld, size_t nrows, size_t d,
                            const float *const *q, int nq, float *out, size_t ldo)
{
    for (size_t i = 0; i < nrows; i++)
        for (int j = 0; j < nq; j++)
            out[(size_t)j * ldo + i] = dot_scalar(x + i * ld, q[j], d);
}

static void dots_f16_scalar(const uint16_t *x, size_t ld, size_t nrows, size_t d,
                            const float *const *q, int nq, float *out, size_t ldo)
{
    for (size_t i = 0; i < nrows; i++)
        for (int j = 0; j < nq; j++) {
            float s = 0;
            for (size_t t = 0; t < d; t++)
                s += dspy__vec_f16_to_f32(x[i * ld + t]) * q[j][t];
            out[(size_t)j * ldo + i] = s;
        }
}

static void dots_i8_scalar(const int8_t *x, size_t ld, size_t nrows, size_t d,
                           const int8_t *const *q8, const uint8_t *const *qu, int nq,
                           const int32_t *sums, int32_t *out, size_t ldo)
{
    (void)qu;
    (void)sums;
    for (size_t i = 0; i < nrows; i++)
        for (int j = 0; j < nq; j++) {
            int32_t s = 0;
            for (size_t t = 0; t < d; t++)
                s += (int32_t)x[i * ld + t] * q8[j][t];
            out[(size_t)j * ldo + i] = s;
        }
}

/* ---- AVX2 ------------------------------------------------------------------------------ */

AVX2 static inline float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2 static inline int32_t hsum256i(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

AVX2 static float dot_avx2(const float *a, const float *b, size_t d)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= d; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < d; i++)
        s += a[i] * b[i];
    return s;
}

AVX2 static float l2sq_avx2(const float *a, const float *b, size_t d)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        __m256 t0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        __m256 t1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
        s0 = _mm256_fmadd_ps(t0, t0, s0);
        s1 = _mm256_fmadd_ps(t1, t1, s1);
    }
    float s = hsum256(_mm256_add_ps(s0, s1));
    for (; i < d; i++) {
        float t = a[i] - b[i];
        s += t * t;
    }
    return s;
}

AVX2 INLINE void dots_f32_avx2_n(const float *x, size_t ld, size_t nrows, size_t d,
                                 const float *const *q, const int nq, float *out, size_t ldo)
{
    for (size_t i = 0; i < nrows; i++) {
        const float *r = x + i * ld;
        prefetch_row(r + PF_ROWS * ld, d * 4);
        __m256 acc[DSPY__VEC_GROUP];
        for (int j = 0; j < nq; j++)
            acc[j] = _mm256_setzero_ps();
        size_t t = 0;
        for (; t + 8 <= d; t += 8) {
            __m256 xv = _mm256_loadu_ps(r + t);
            for (int j = 0; j < nq; j++)
                acc[j] = _mm256_fmadd_ps(xv, _mm256_loadu_ps(q[j] + t), acc[j]);
        }
        for (int j = 0; j < nq; j++) {
            float s = hsum256(acc[j]);
            for (size_t u = t; u < d; u++)
                s += r[u] * q[j][u];
            out[(size_t)j * ldo + i] = s;
        }
    }
}

AVX2 static void dots_f32_avx2(const float *x, size_t ld, size_t nrows, size_t d,
                               const float *const *q, int nq, float *out, size_t ldo)
{
    if (nq == 1) {
        for (size_t i = 0; i < nrows; i++) {
            prefetch_row(x + (i + PF_ROWS) * ld, d * 4);
            out[i] = dot_avx2(x + i * ld, q[0], d);
        }
        return;
    }
    switch (nq) {
    case 2: dots_f32_avx2_n(x, ld, nrows, d, q, 2, out, ldo); break;
    case 3: dots_f32_avx2_n(x, ld, nrows, d, q, 3, out, ldo); break;
    default: dots_f32_avx2_n(x, ld, nrows, d, q, 4, out, ldo); break;
    }
}

AVX2 INLINE void dots_f16_avx2_n(const uint16_t *x, size_t ld, size_t nrows, size_t d,
                                 const float *const *q, const int nq, float *out, size_t ldo)
{
    for (size_t i = 0; i < nrows; i++) {
        const uint16_t *r = x + i * ld;
        prefetch_row(r + PF_ROWS * ld, d * 2);
        __m256 acc[DSPY__VEC_GROUP], acc2[DSPY__VEC_GROUP];
        for (int j = 0; j < nq; j++)
            acc[j] = acc2[j] = _mm256_setzero_ps();
        for (size_t t = 0; t < d; t += 16) {
            __m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + t)));
            __m256 x1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + t + 8)));
            for (int j = 0; j < nq; j++) {
                acc[j] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(q[j] + t), acc[j]);
                acc2[j] = _mm256_fmadd_ps(x1, _mm256_loadu_ps(q[j] + t + 8), acc2[j]);
            }
        }
        for (int j = 0; j < nq; j++)
            out[(size_t)j * ldo + i] = hsum256(_mm256_add_ps(acc[j], acc2[j]));
    }
}

AVX2 static void dots_f16_avx2(const uint16_t *x, size_t ld, size_t nrows, size_t d,
                               const float *const *q, int nq, float *out, size_t ldo)
{
    switch (nq) {
    case 1: dots_f16_avx2_n(x, ld, nrows, d, q, 1, out, ldo); break;
    case 2: dots_f16_avx2_n(x, ld, nrows, d, q, 2, out, ldo); break;
    case 3: dots_f16_avx2_n(x, ld, nrows, d, q, 3, out, ldo); break;
    default: dots_f16_avx2_n(x, ld, nrows, d, q, 4, out, ldo); break;
    }
}

/* Exact: int8 values widened to int16, pairs multiplied and added into int32. */
AVX2 INLINE void dots_i8_avx2_n(const int8_t *x, size_t ld, size_t nrows, size_t d,
                                const int8_t *const *q8, const int nq, int32_t *out, size_t ldo)
{
    for (size_t i = 0; i < nrows; i++) {
        const int8_t *r = x + i * ld;
        prefetch_row(r + PF_ROWS * ld, d);
        __m256i acc[DSPY__VEC_GROUP];
        for (int j = 0; j < nq; j++)
            acc[j] = _mm256_setzero_si256();
        for (size_t t = 0; t < d; t += 16) {
            __m256i xv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(r + t)));
            for (int j = 0; j < nq; j++) {
                __m256i qv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(q8[j] + t)));
                acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(xv, qv));
            }
        }
        for (int j = 0; j < nq; j++)
            out[(size_t)j * ldo + i] = hsum256i(acc[j]);
    }
}

AVX2 static void dots_i8_avx2(const int8_t *x, size_t ld, size_t nrows, size_t d,
                              const int8_t *const *q8, const uint8_t *const *qu, int nq,
                              const int32_t *sums, int32_t *out, size_t ldo)
{
    (void)qu;
    (void)sums;
    switch (nq) {
    case 1: dots_i8_avx2_n(x, ld, nrows, d, q8, 1, out, ldo); break;
    case 2: dots_i8_avx2_n(x, ld, nrows, d, q8, 2, out, ldo); break;
    case 3: dots_i8_avx2_n(x, ld, nrows, d, q8, 3, out, ldo); break;
    default: dots_i8_avx2_n(x, ld, nrows, d, q8, 4, out, ldo); break;
    }
}

/* ---- AVX-512 --------------------------------------------------------------------------- */

AVX512 static inline __mmask16 tail_mask(size_t left)
{
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
}

AVX512 static float dot_avx512(const float *a, const float *b, size_t d)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= d; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i < d; i += 16) {
        __mmask16 m = tail_mask(d - i);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

AVX512 static float l2sq_avx512(const float *a, const float *b, size_t d)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        __m512 t0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        __m512 t1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
        s0 = _mm512_fmadd_ps(t0, t0, s0);
        s1 = _mm512_fmadd_ps(t1, t1, s1);
    }
    for (; i < d; i += 16) {
        __mmask16 m = tail_mask(d - i);
        __m512 t = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
        s0 = _mm512_fmadd_ps(t, t, s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

/* One query: two rows at a time, two accumulators each, so four FMA chains are in flight
 * while the rows stream in. */
AVX512 static void dots_f32_avx512_1(const float *x, size_t ld, size_t nrows, size_t d,
                                     const float *q, float *out)
{
    size_t i = 0;
    for (; i + 2 <= nrows; i += 2) {
        const float *r0 = x + i * ld, *r1 = r0 + ld;
        prefetch_row(r0 + PF_ROWS * ld, d * 4);
        prefetch_row(r1 + PF_ROWS * ld, d * 4);
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
        size_t t = 0;
        for (; t + 32 <= d; t += 32) {
            __m512 q0 = _mm512_loadu_ps(q + t), q1 = _mm512_loadu_ps(q + t + 16);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(r0 + t), q0, a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(r0 + t + 16), q1, a1);
            b0 = _mm512_fmadd_ps(_mm512_loadu_ps(r1 + t), q0, b0);
            b1 = _mm512_fmadd_ps(_mm512_loadu_ps(r1 + t + 16), q1, b1);
        }
        for (; t < d; t += 16) {
            __mmask16 m = tail_mask(d - t);
            __m512 qv = _mm512_maskz_loadu_ps(m, q + t);
            a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, r0 + t), qv, a0);
            b0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, r1 + t), qv, b0);
        }
        out[i] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
        out[i + 1] = _mm512_reduce_add_ps(_mm512_add_ps(b0, b1));
    }
    if (i < nrows)
        out[i] = dot_avx512(x + i * ld, q, d);
}

AVX512 INLINE void dots_f32_avx512_n(const float *x, size_t ld, size_t nrows, size_t d,
                                     const float *const *q, const int nq, float *out, size_t ldo)
{
    for (size_t i = 0; i < nrows; i++) {
        const float *r = x + i * ld;
        prefetch_row(r + PF_ROWS * ld, d * 4);
        __m512 acc[DSPY__VEC_GROUP];
        for (int j = 0; j < nq; j++)
            acc[j] = _mm512_setzero_ps();
        for (size_t t = 0; t < d; t += 16) {
            __mmask16 m = tail_mask(d - t);
            __m512 xv = _mm512_maskz_loadu_ps(m, r + t);
            for (int j = 0; j < nq; j++)
                acc[j] = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, q[j] + t), acc[j]);
        }
        for (int j = 0; j < nq; j++)
            out[(size_t)j * ldo + i] = _mm512_reduce_add_ps(acc[j]);
    }
}

AVX512 static void dots_f32_avx512(const float *x, size_t ld, size_t nrows, size_t d,
                                   const float *const *q, int nq, float *out, size_t ldo)
{
    switch (nq) {
    case 1: dots_f32_avx512_1(x, ld, nrows, d, q[0], out); break;
    case 2: dots_f32_avx512_n(x, ld, nrows, d, q, 2, out, ldo); break;
    case 3: dots_f32_avx512_n(x, ld, nrows, d, q, 3, out, ldo); break;
    default: dots_f32_avx512_n(x, ld, nrows, d, q, 4, out, ldo); break;
    }
}

AVX512 INLINE void dots_f16_avx512_n(const uint16_t *x, size_t ld, size_t nrows, size_t d,
                                     const float *const *q, const int nq, float *out, size_t ldo)
{
    for (size_t i = 0; i < nrows; i++) {
        const uint16_t *r = x + i * ld;
        prefetch_row(r + PF_ROWS * ld, d * 2);
        __m512 acc[DSPY__VEC_GROUP], acc2[DSPY__VEC_GROUP];
        for (int j = 0; j < nq; j++)
            acc[j] = acc2[j] = _mm512_setzero_ps();
        for (size_t t = 0; t < d; t += 32) {
            __m512 x0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(r + t)));
            __m512 x1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(r + t + 16)));
            for (int j = 0; j < nq; j++) {
                acc[j] = _mm512_fmadd_ps(x0, _mm512_loadu_ps(q[j] + t), acc[j]);
                acc2[j] = _mm512_fmadd_ps(x1, _mm512_loadu_ps(q[j] + t + 16), acc2[j]);
            }
        }
        for (int j = 0; j < nq; j++)
            out[(size_t)j * ldo + i] = _mm512_reduce_add_ps(_mm512_add_ps(acc[j], acc2[j]));
    }
}

AVX512 static void dots_f16_avx512(const uint16_t *x, size_t ld, size_t nrows, size_t d,
                                   const float *const *q, int nq, float *out, size_t ldo)
{
    switch (nq) {
    case 1: dots_f16_avx512_n(x, ld, nrows, d, q, 1, out, ldo); break;
    case 2: dots_f16_avx512_n(x, ld, nrows, d, q, 2, out, ldo); break;
    case 3: dots_f16_avx512_n(x, ld, nrows, d, q, 3, out, ldo); break;
    default: dots_f16_avx512_n(x, ld, nrows, d, q, 4, out, ldo); break;
    }
}

/* VNNI multiplies unsigned by signed bytes: with qu = q8 + 128,
 * Σ qu·x = Σ q8·x + 128·Σ x, so the row's sum corrects it exactly. */
AVX512VNNI INLINE void dots_i8_vnni_n(const int8_t *x, size_t ld, size_t nrows, size_t d,
                                      const uint8_t *const *qu, const int nq, const int32_t *sums,
                                      int32_t *out, size_t ldo)
{
    for (size_t i = 0; i < nrows; i++) {
        const int8_t *r = x + i * ld;
        prefetch_row(r + PF_ROWS * ld, d);
        __m512i acc[DSPY__VEC_GROUP];
        for (int j = 0; j < nq; j++)
            acc[j] = _mm512_setzero_si512();
        for (size_t t = 0; t < d; t += 64) {
            __m512i xv = _mm512_loadu_si512((const void *)(r + t));
            for (int j = 0; j < nq; j++)
                acc[j] = _mm512_dpbusd_epi32(acc[j], _mm512_loadu_si512((const void *)(qu[j] + t)),
                                             xv);
        }
        for (int j = 0; j < nq; j++)
            out[(size_t)j * ldo + i] = _mm512_reduce_add_epi32(acc[j]) - 128 * sums[i];
    }
}

AVX512VNNI static void dots_i8_vnni(const int8_t *x, size_t ld, size_t nrows, size_t d,
                                    const int8_t *const *q8, const uint8_t *const *qu, int nq,
                                    const int32_t *sums, int32_t *out, size_t ldo)
{
    (void)q8;
    switch (nq) {
    case 1: dots_i8_vnni_n(x, ld, nrows, d, qu, 1, sums, out, ldo); break;
    case 2: dots_i8_vnni_n(x, ld, nrows, d, qu, 2, sums, out, ldo); break;
    case 3: dots_i8_vnni_n(x, ld, nrows, d, qu, 3, sums, out, ldo); break;
    default: dots_i8_vnni_n(x, ld, nrows, d, qu, 4, sums, out, ldo); break;
    }
}

/* ---- plain reads (the bandwidth reference) ---- */

static uint64_t read_scalar(const void *p, size_t bytes)
{
    const char *c = p; /* rows may sit at any 4-byte offset: load through memcpy */
    uint64_t s0 = 0, s1 = 0, w0, w1;
    size_t n = bytes / 8, i = 0;
    for (; i + 2 <= n; i += 2) {
        memcpy(&w0, c + i * 8, 8);
        memcpy(&w1, c + i * 8 + 8, 8);
        s0 += w0, s1 += w1;
    }
    if (i < n) {
        memcpy(&w0, c + i * 8, 8);
        s0 += w0;
    }
    return s0 + s1;
}

AVX2 static uint64_t read_avx2(const void *p, size_t bytes)
{
    const char *c = p;
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 128 <= bytes; i += 128) {
        s0 = _mm256_add_epi64(s0, _mm256_loadu_si256((const __m256i *)(c + i)));
        s1 = _mm256_add_epi64(s1, _mm256_loadu_si256((const __m256i *)(c + i + 32)));
        s2 = _mm256_add_epi64(s2, _mm256_loadu_si256((const __m256i *)(c + i + 64)));
        s3 = _mm256_add_epi64(s3, _mm256_loadu_si256((const __m256i *)(c + i + 96)));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, s);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3] + read_scalar(c + i, bytes - i);
}

AVX512 static uint64_t read_avx512(const void *p, size_t bytes)
{
    const char *c = p;
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 256 <= bytes; i += 256) {
        s0 = _mm512_add_epi64(s0, _mm512_loadu_si512((const void *)(c + i)));
        s1 = _mm512_add_epi64(s1, _mm512_loadu_si512((const void *)(c + i + 64)));
        s2 = _mm512_add_epi64(s2, _mm512_loadu_si512((const void *)(c + i + 128)));
        s3 = _mm512_add_epi64(s3, _mm512_loadu_si512((const void *)(c + i + 192)));
    }
    __m512i s = _mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3));
    uint64_t lanes[8], sum = 0; /* unsigned: the checksum wraps, which is fine */
    _mm512_storeu_si512((void *)lanes, s);
    for (int l = 0; l < 8; l++)
        sum += lanes[l];
    return sum + read_scalar(c + i, bytes - i);
}

/* ---- selection ------------------------------------------------------------------------- */

static const struct dspy__vec_kern kern_scalar = {
    "scalar",        dot_scalar,     l2sq_scalar, dots_f32_scalar,
    dots_f16_scalar, dots_i8_scalar, read_scalar,
};
static const struct dspy__vec_kern kern_avx2 = {
    "avx2", dot_avx2, l2sq_avx2, dots_f32_avx2, dots_f16_avx2, dots_i8_avx2, read_avx2,
};
static const struct dspy__vec_kern kern_avx512 = {
    "avx512", dot_avx512, l2sq_avx512, dots_f32_avx512, dots_f16_avx512, dots_i8_avx2, read_avx512,
};
static const struct dspy__vec_kern kern_avx512_vnni = {
    "avx512", dot_avx512, l2sq_avx512, dots_f32_avx512, dots_f16_avx512, dots_i8_vnni, read_avx512,
};

static bool has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

static bool has_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && has_avx2();
}

int dspy__vec_kern_levels(const struct dspy__vec_kern **out, int max)
{
    int n = 0;
    if (has_avx512() && n < max)
        out[n++] = __builtin_cpu_supports("avx512vnni") ? &kern_avx512_vnni : &kern_avx512;
    if (has_avx2() && n < max)
        out[n++] = &kern_avx2;
    if (n < max)
        out[n++] = &kern_scalar;
    return n;
}

const struct dspy__vec_kern *dspy__vec_kern_scalar(void)
{
    return &kern_scalar;
}

const struct dspy__vec_kern *dspy__vec_kern(void)
{
    static const struct dspy__vec_kern *best;
    const struct dspy__vec_kern *k = __atomic_load_n(&best, __ATOMIC_ACQUIRE);
    if (!k) {
        const struct dspy__vec_kern *levels[3];
        dspy__vec_kern_levels(levels, 3);
        k = levels[0];
        __atomic_store_n(&best, k, __ATOMIC_RELEASE);
    }
    return k;
}

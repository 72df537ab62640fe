/* The embedder's matrix multiplies (vec layer). Everything the encoder multiplies goes
 * through this file, so moving it to another backend (the vector kernels' matmul, a bf16 or
 * GPU path) is a change here alone. Two paths:
 *  - linear layers with packed weights (CPUs with AVX-512): a 6 x 64 register-tiled kernel
 *    that streams each weight panel once per six tokens. OpenBLAS repacks the whole weight
 *    matrix on every call, which at a short sentence's 10 tokens costs more than the
 *    arithmetic (28 vs 102 GFLOP/s measured for 9 x 1152 x 384 on one core);
 *  - everything else on OpenBLAS's cblas_sgemm. */
#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "vec/embed_int.h"

void dspy__embed_matmul(size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
                        const float *b, size_t ldb, bool b_trans, float beta, float *c, size_t ldc)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, b_trans ? CblasTrans : CblasNoTrans, (int)m, (int)n,
                (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static bool have_avx512;

/* The embedder threads a batch itself; OpenBLAS's own threads would only compete with its
 * workers (and with each other on a small machine). */
static void init_once(void)
{
    openblas_set_num_threads(1);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    have_avx512 = __builtin_cpu_supports("avx512f");
#endif
}

void dspy__embed_matmul_init(void)
{
    pthread_once(&once, init_once);
}

bool dspy__embed_packs(void)
{
    dspy__embed_matmul_init();
    const char *k = getenv("DSPYC_EMBED_KERNEL"); /* "blas": OpenBLAS for everything */
    return have_avx512 && !(k && !strcmp(k, "blas"));
}

void dspy__embed_pack(float *dst, const unsigned char *src, size_t rows, size_t k)
{
    for (size_t p = 0; p < rows / DSPY__EMBED_PANEL; p++)
        for (size_t j = 0; j < DSPY__EMBED_PANEL; j++) {
            const unsigned char *row = src + (p * DSPY__EMBED_PANEL + j) * k * sizeof(float);
            float *col = dst + p * k * DSPY__EMBED_PANEL + j;
            for (size_t i = 0; i < k; i++)
                memcpy(col + i * DSPY__EMBED_PANEL, row + i * sizeof(float), sizeof(float));
        }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_PACKED_KERNEL 1
#include <immintrin.h>

/* th (<= 6) tokens x one 64-output panel, summing over all k inputs in 24 registers: per
 * input, 4 panel loads, th broadcasts, 4 * th fused multiply-adds. */
__attribute__((target("avx512f"), always_inline)) static inline void
tile(int th, const float *x, size_t ldx, const float *panel, size_t k, float *c, size_t ldc,
     bool add, const float *next)
{
    __m512 acc[6][4];
#pragma GCC unroll 6
    for (int t = 0; t < th; t++)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            acc[t][j] = add ? _mm512_loadu_ps(c + (size_t)t * ldc + 16 * j) : _mm512_setzero_ps();
    for (size_t i = 0; i < k; i++) {
        const float *w = panel + i * DSPY__EMBED_PANEL;
        __m512 w0 = _mm512_load_ps(w), w1 = _mm512_load_ps(w + 16);
        __m512 w2 = _mm512_load_ps(w + 32), w3 = _mm512_load_ps(w + 48);
        if (next) { /* the next panel's same row into L2 while this one is computed */
            const char *n = (const char *)(next + i * DSPY__EMBED_PANEL);
            _mm_prefetch(n, _MM_HINT_T1);
            _mm_prefetch(n + 64, _MM_HINT_T1);
            _mm_prefetch(n + 128, _MM_HINT_T1);
            _mm_prefetch(n + 192, _MM_HINT_T1);
        }
#pragma GCC unroll 6
        for (int t = 0; t < th; t++) {
            __m512 b = _mm512_set1_ps(x[(size_t)t * ldx + i]);
            acc[t][0] = _mm512_fmadd_ps(b, w0, acc[t][0]);
            acc[t][1] = _mm512_fmadd_ps(b, w1, acc[t][1]);
            acc[t][2] = _mm512_fmadd_ps(b, w2, acc[t][2]);
            acc[t][3] = _mm512_fmadd_ps(b, w3, acc[t][3]);
        }
    }
#pragma GCC unroll 6
    for (int t = 0; t < th; t++)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            _mm512_storeu_ps(c + (size_t)t * ldc + 16 * j, acc[t][j]);
}

__attribute__((target("avx512f"))) static void linear_packed(size_t m, const float *x, size_t ldx,
                                                             const struct dspy__embed_weight *w,
                                                             bool add, float *c, size_t ldc)
{
    size_t k = w->k, panels = w->n / DSPY__EMBED_PANEL;
    for (size_t p = 0; p < panels; p++) {
        const float *panel = w->packed + p * k * DSPY__EMBED_PANEL;
        /* The last tile of a panel prefetches the next one: with few tokens (a short query)
         * the multiply waits on memory, not arithmetic. */
        const float *next = p + 1 < panels ? panel + k * DSPY__EMBED_PANEL : NULL;
        float *cp = c + p * DSPY__EMBED_PANEL;
        size_t t = 0;
        for (; t + 6 <= m; t += 6)
            tile(6, x + t * ldx, ldx, panel, k, cp + t * ldc, ldc, add, t + 6 == m ? next : NULL);
        const float *xt = x + t * ldx;
        float *ct = cp + t * ldc;
        switch (m - t) { /* constant tile heights, so each one stays in registers */
        case 5: tile(5, xt, ldx, panel, k, ct, ldc, add, next); break;
        case 4: tile(4, xt, ldx, panel, k, ct, ldc, add, next); break;
        case 3: tile(3, xt, ldx, panel, k, ct, ldc, add, next); break;
        case 2: tile(2, xt, ldx, panel, k, ct, ldc, add, next); break;
        case 1: tile(1, xt, ldx, panel, k, ct, ldc, add, next); break;
        default: break;
        }
    }
}
#endif

void dspy__embed_linear(size_t m, const float *x, size_t ldx, const struct dspy__embed_weight *w,
                        float beta, float *c, size_t ldc)
{
#ifdef HAVE_PACKED_KERNEL
    if (w->packed) {
        linear_packed(m, x, ldx, w, beta != 0.0f, c, ldc);
        return;
    }
#endif
    dspy__embed_matmul(m, w->n, w->k, 1.0f, x, ldx, w->w, w->k, true, beta, c, ldc);
}

/* Internals of the embedder shared by its files (vec layer): the matrix multiplies every
 * layer of the encoder goes through (embed_matmul.c), so the backend behind them is chosen
 * in one place. */
#ifndef DSPY_VEC_EMBED_INT_H
#define DSPY_VEC_EMBED_INT_H

#include <stdbool.h>
#include <stddef.h>

/* Panel width of packed weights, in floats (four 16-float vectors). */
#define DSPY__EMBED_PANEL 64

/* The weight of a linear layer y = x W^T (+ bias): n outputs, k inputs. At load it is kept
 * either as rows or, where the CPU has AVX-512, packed into panels of 64 outputs:
 * packed[p][i][j] = W[p * 64 + j][i], one contiguous [k][64] block per panel, which the
 * multiply streams once per group of tokens without repacking it on every call. */
struct dspy__embed_weight {
    const float *w; /* [n][k] row-major (PyTorch's Linear layout), or NULL when packed */
    float *packed;  /* [n / 64][k][64], or NULL */
    size_t n, k;
};

/* Whether weights get packed: the CPU has AVX-512F and DSPYC_EMBED_KERNEL is not "blas"
 * (which keeps every multiply on OpenBLAS, as on other CPUs; read at each load). */
bool dspy__embed_packs(void);
/* Pack `rows` rows (a multiple of 64) of a [rows][k] matrix whose bytes start at `src` (any
 * alignment) into `dst` (64-byte aligned, rows * k floats). */
void dspy__embed_pack(float *dst, const unsigned char *src, size_t rows, size_t k);

/* C[m x n] = X[m x k] W^T + beta * C (beta 0 or 1), row-major with leading dimensions ldx
 * and ldc in floats. Thread-safe; runs on the calling thread only. */
void dspy__embed_linear(size_t m, const float *x, size_t ldx, const struct dspy__embed_weight *w,
                        float beta, float *c, size_t ldc);

/* C[m x n] = alpha * A[m x k] op(B) + beta * C, all row-major with leading dimensions lda,
 * ldb, ldc (in floats); op(B) = B^T when b_trans (B stored [n x k]), else B ([k x n]). For
 * the attention products. Thread-safe; runs on the calling thread only. */
void dspy__embed_matmul(size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
                        const float *b, size_t ldb, bool b_trans, float beta, float *c, size_t ldc);
/* Once per process before the first multiply: keeps the BLAS single-threaded per call. */
void dspy__embed_matmul_init(void);

#endif

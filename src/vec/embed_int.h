/* Internals of the embedder shared by its files (vec layer): the one matrix multiply every
 * layer of the encoder goes through, so the backend behind it is chosen in one place. */
#ifndef DSPY_VEC_EMBED_INT_H
#define DSPY_VEC_EMBED_INT_H

#include <stdbool.h>
#include <stddef.h>

/* C[m x n] = alpha * A[m x k] * op(B) + beta * C, all row-major with leading dimensions
 * lda, ldb, ldc (in floats). op(B) = B^T when b_trans (B stored [n x k], PyTorch's Linear
 * layout), else B ([k x n]). Thread-safe; runs on the calling thread only. */
void dspy__embed_matmul(size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
                        const float *b, size_t ldb, bool b_trans, float beta, float *c,
                        size_t ldc);
/* Once per process before the first multiply: keeps the backend single-threaded per call. */
void dspy__embed_matmul_init(void);

#endif

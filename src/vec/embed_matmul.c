/* The embedder's matrix multiply (vec layer) on OpenBLAS's cblas_sgemm. Everything the
 * encoder multiplies goes through dspy__embed_matmul, so moving it to another backend (the
 * vector kernels' matmul, a bf16 or GPU path) is a change to this file alone. */
#include <cblas.h>
#include <pthread.h>

#include "vec/embed_int.h"

void dspy__embed_matmul(size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
                        const float *b, size_t ldb, bool b_trans, float beta, float *c,
                        size_t ldc)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, b_trans ? CblasTrans : CblasNoTrans, (int)m, (int)n,
                (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

/* The embedder threads a batch itself; OpenBLAS's own threads would only compete with its
 * workers (and with each other on a small machine). */
static void single_thread(void)
{
    openblas_set_num_threads(1);
}

void dspy__embed_matmul_init(void)
{
    pthread_once(&once, single_thread);
}

/* Private header of the vec layer: the context and matrix structs, the backend vtable
 * (vec_cpu.c, vec_cuda.c), memory accounting, the SIMD kernel table (vec_simd.c), and the
 * top-k helpers the backends share (vec_topk.c). */
#ifndef DSPY_VEC_INT_H
#define DSPY_VEC_INT_H

#include <dspyc/vec.h>

#include "base/heap.h"

struct dspy_vec;
struct dspy_vec_matrix;

/* One backend. Every entry is synchronous (see vec.h). Arguments are checked by vec.c. */
struct dspy__vec_ops {
    const char *name; /* "cpu" or "cuda" */
    dspy_status (*open)(struct dspy_vec *v, int index, struct dspy_error *err);
    void (*close)(struct dspy_vec *v);
    void (*trim)(struct dspy_vec *v);
    dspy_status (*normalize)(struct dspy_vec *v, float *x, size_t n, size_t d, size_t ld,
                             struct dspy_error *err);
    dspy_status (*matmul)(struct dspy_vec *v, size_t m, size_t n, size_t k, const float *a,
                          size_t lda, const float *b, size_t ldb, bool trans_b, float *c,
                          size_t ldc, struct dspy_error *err);
    dspy_status (*scores)(struct dspy_vec *v, enum dspy_vec_metric metric, const float *q,
                          size_t nq, size_t ldq, const float *x, size_t n, size_t ldx, size_t d,
                          float *out, size_t ldo, struct dspy_error *err);
    /* Fill m->rows etc. from host rows that vec.c has already encoded (dspy__vec_encode). */
    dspy_status (*matrix_store)(struct dspy_vec *v, struct dspy_vec_matrix *m,
                                struct dspy_error *err);
    void (*matrix_release)(struct dspy_vec *v, struct dspy_vec_matrix *m);
    dspy_status (*matrix_read)(struct dspy_vec *v, const struct dspy_vec_matrix *m,
                               uint64_t *checksum, struct dspy_error *err);
    dspy_status (*topk)(struct dspy_vec *v, const struct dspy_vec_matrix *m,
                        enum dspy_vec_metric metric, const float *q, size_t nq, size_t ldq,
                        size_t k, float *scores, int64_t *ids, struct dspy_error *err);
};

extern const struct dspy__vec_ops dspy__vec_cpu_ops;
extern const struct dspy__vec_ops dspy__vec_cuda_ops;

struct dspy_vec {
    const struct dspy__vec_ops *ops;
    void *be;         /* the backend's state */
    char device[16];  /* "cpu", "cuda:N" */
    int slot;         /* index into mem[]: 0 = cpu, 1 + N = cuda:N */
    char reason[256]; /* why "auto" fell back to the CPU; "" when it did not */
    uint64_t budget;  /* 0 = no limit */
    int threads;      /* CPU threads for large inputs, >= 1 */
    size_t live_matrices;
    struct dspy_vec_matrix *matrices; /* list of live matrices (freed with the context) */
    struct dspy_vec_mem mem[DSPY_VEC_MAX_DEVICES];
};

/* A stored matrix. Host-side encoded copy (`host_*`) exists only while storing; the CPU
 * backend keeps it as its rows, the CUDA backend uploads it and frees it. */
struct dspy_vec_matrix {
    struct dspy_vec *v;
    struct dspy_vec_matrix *next, *prev;
    enum dspy_vec_storage storage;
    size_t n, d;
    size_t ld;                 /* elements between stored rows (padded: see dspy__vec_pad) */
    bool borrowed;             /* rows are the caller's (CPU F32 with DSPY_VEC_BORROW) */
    void *rows;                /* host: n*ld elements; 64-byte aligned unless borrowed */
    float *norms;              /* n L2 norms of the (decoded) rows */
    float *scales;             /* I8: n per-row scales */
    int32_t *sums;             /* I8: n sums of the int8 row values (the VNNI correction) */
    void *rows_raw, *meta_raw; /* allocations behind rows and norms/scales/sums */
    uint64_t bytes;            /* charged to the context's device */
    void *be;                  /* backend's per-matrix state (device pointers) */
};

/* ---- memory accounting (vec.c) ---- */
/* Charge `bytes` to the context's device; DSPY_ENOMEM (counted as a failure) past the
 * budget. */
dspy_status dspy__vec_charge(struct dspy_vec *v, uint64_t bytes);
void dspy__vec_uncharge(struct dspy_vec *v, uint64_t bytes);
/* Bytes still free under the budget (UINT64_MAX without one). */
uint64_t dspy__vec_room(const struct dspy_vec *v);
/* Host memory, charged, 64-byte aligned; free with dspy__vec_host_free(v, p, bytes). */
void *dspy__vec_host_alloc(struct dspy_vec *v, uint64_t bytes);
void dspy__vec_host_free(struct dspy_vec *v, void *p, uint64_t bytes);
/* Uncharged aligned host memory (for storage the matrix accounts for itself). */
void *dspy__vec_aligned_alloc(size_t bytes, void **raw);

/* ---- storage encoding (vec_topk.c) ---- */
/* Elements per stored row for `storage` and dimension d: a multiple of 64 bytes. */
size_t dspy__vec_pad(enum dspy_vec_storage storage, size_t d);
size_t dspy__vec_elem_size(enum dspy_vec_storage storage);
/* Encode n rows into m (allocating m->rows/norms/scales/sums on the host, uncharged). */
dspy_status dspy__vec_encode(struct dspy_vec_matrix *m, const float *rows, size_t ld);
void dspy__vec_encoded_free(struct dspy_vec_matrix *m);
/* Encode one row (d floats) into row i of m's host rows, norms and scales. */
void dspy__vec_encode_row(struct dspy_vec_matrix *m, size_t i, const float *x);
uint16_t dspy__vec_f32_to_f16(float f);
float dspy__vec_f16_to_f32(uint16_t h);
/* Quantize one query like an I8 row: q8[i] = round(q[i] / scale), padded to `pad` with 0;
 * returns the scale (0 for a zero query). qu[i] = q8[i] + 128 when qu is not NULL. */
float dspy__vec_quantize(const float *q, size_t d, size_t pad, int8_t *q8, uint8_t *qu);

/* ---- top-k selection shared by the backends (vec_topk.c) ---- */
/* An entry of a per-query heap; key is "higher is better" (L2: the negated distance). */
struct dspy__vec_hit {
    float key;
    int64_t id;
};
/* One query's bounded heap: worst on top. */
struct dspy__vec_sel {
    struct dspy__heap heap;
    size_t k;
    float worst; /* key of the top when full, else -INFINITY: a candidate must beat it */
};
void dspy__vec_sel_init(struct dspy__vec_sel *s, struct dspy__vec_hit *storage, size_t k);
/* Offer a candidate (NaN keys are dropped). */
static inline void dspy__vec_sel_offer(struct dspy__vec_sel *s, float key, int64_t id);
void dspy__vec_sel_push_slow(struct dspy__vec_sel *s, float key, int64_t id);
static inline void dspy__vec_sel_offer(struct dspy__vec_sel *s, float key, int64_t id)
{
    if (key > s->worst || (key == s->worst && dspy__heap_len(&s->heap) < s->k))
        dspy__vec_sel_push_slow(s, key, id);
}
/* Write the selection best first as scores (the metric's own values) and ids, padding
 * with id -1. Empties the heap. */
void dspy__vec_sel_finish(struct dspy__vec_sel *s, enum dspy_vec_metric metric, float *scores,
                          int64_t *ids);
/* key from the raw dot product r of a row (norm xn) and a query (norm qn). */
static inline float dspy__vec_key(enum dspy_vec_metric metric, float r, float xn, float qn)
{
    if (metric == DSPY_VEC_IP)
        return r;
    if (metric == DSPY_VEC_COSINE)
        return (xn > 0 && qn > 0) ? r / (xn * qn) : (r != r ? r : 0.0f);
    float d2 = xn * xn + qn * qn - 2.0f * r;
    return d2 > 0 ? -d2 : (d2 != d2 ? d2 : -0.0f);
}

/* ---- SIMD kernels (vec_simd.c) ---- */
#define DSPY__VEC_GROUP 4 /* queries per pass over the rows */
struct dspy__vec_kern {
    const char *simd; /* "avx512", "avx2", "scalar" */
    float (*dot)(const float *a, const float *b, size_t d);
    float (*l2sq)(const float *a, const float *b, size_t d);
    /* out[j*ldo + i] = x_i · q_j for nrows rows ld apart and nq <= GROUP queries */
    void (*dots_f32)(const float *x, size_t ld, size_t nrows, size_t d, const float *const *q,
                     int nq, float *out, size_t ldo);
    /* same over F16 rows; d is padded (a multiple of 32) and queries padded with zeros */
    void (*dots_f16)(const uint16_t *x, size_t ld, size_t nrows, size_t d, const float *const *q,
                     int nq, float *out, size_t ldo);
    /* signed int8 dot products over I8 rows; d a multiple of 64, queries padded with 0
     * (q8) and 128 (qu = q8 + 128); sums = the rows' int8 sums */
    void (*dots_i8)(const int8_t *x, size_t ld, size_t nrows, size_t d, const int8_t *const *q8,
                    const uint8_t *const *qu, int nq, const int32_t *sums, int32_t *out,
                    size_t ldo);
    /* a plain read: the sum of `bytes / 8` 64-bit words (bytes a multiple of 8) */
    uint64_t (*read)(const void *p, size_t bytes);
};
/* The best kernels this CPU runs (chosen once with __builtin_cpu_supports). */
const struct dspy__vec_kern *dspy__vec_kern(void);
/* The portable ones, for tests that compare levels. */
const struct dspy__vec_kern *dspy__vec_kern_scalar(void);
/* All levels this CPU supports, best first; returns how many (at most 3). */
int dspy__vec_kern_levels(const struct dspy__vec_kern **out, int max);

/* ---- CUDA probe (vec_cuda.c) ---- */
/* Fill info->devices[1..] and cuda_available/cuda_reason. Called once by dspy_vec_probe. */
void dspy__vec_cuda_probe(struct dspy_vec_info *info);

/* The CUDA kernels' source, compiled at run time with NVRTC (vec_cuda_kernels.c). */
extern const char dspy__vec_cuda_kernels[];

/* Load an index from `len` bytes in memory (hnsw.c); `name` goes into error messages.
 * verify_sum = false skips the checksum (the fuzz target, to reach the structural checks). */
struct dspy_vec_hnsw;
dspy_status dspy__vec_hnsw_load_mem(const void *buf, size_t len, const char *name, bool verify_sum,
                                    struct dspy_vec_hnsw **out, struct dspy_error *err);

#endif

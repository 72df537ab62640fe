/* Dense vector kernels on the CPU or a CUDA GPU: normalize, dot/cosine/L2 scores, matmul,
 * exact top-k search over a stored matrix (float32, float16 or int8 storage), with device
 * detection and per-device memory accounting under a budget. */
#ifndef DSPYC_VEC_H
#define DSPYC_VEC_H

#include <dspyc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Devices ------------------------------------------------------------------------ */

#define DSPY_VEC_MAX_DEVICES 9 /* the CPU and up to 8 CUDA devices */

/** One device as detected. */
struct dspy_vec_device_info {
    char id[16];            /* "cpu", "cuda:0", ... as accepted by the `device` option */
    char name[128];         /* CPU model or GPU name */
    uint64_t memory_bytes;  /* total memory of the device (host RAM for the CPU) */
    int cc_major, cc_minor; /* CUDA compute capability; 0 for the CPU */
    int cores;              /* CPU: online cores; GPU: multiprocessors */
    char simd[16];          /* CPU: "avx512", "avx2" or "scalar"; GPU: "" */
};

/** What this process can use. `cuda_reason` says why CUDA is not usable ("" when it is):
 * the library that could not be loaded, the failing call and its error. */
struct dspy_vec_info {
    bool cuda_available;
    char cuda_reason[256];
    char blas[64]; /* the CPU BLAS, e.g. "OpenBLAS 0.3.21 (SKYLAKEX)" */
    int ndevices;  /* entries in devices[]; devices[0] is always the CPU */
    struct dspy_vec_device_info devices[DSPY_VEC_MAX_DEVICES];
};

/** Detect devices (once per process; later calls copy the cached answer). Never fails: a
 * missing or broken CUDA driver is reported in `cuda_reason`. Thread-safe. */
DSPY_EXTERN void dspy_vec_probe(struct dspy_vec_info *out);

/* ---- Contexts ----------------------------------------------------------------------- */

struct dspy_vec_options {
    const char *device;     /* "cpu", "cuda" (= "cuda:0"), "cuda:N" or "auto" (CUDA when
                               usable, else the CPU); NULL = "auto" */
    uint64_t memory_budget; /* most bytes this context may hold on its device at once
                               (stored matrices plus scratch); 0 = no limit */
    int threads;            /* CPU threads for large inputs; 0 = online cores, 1 = none */
};
#define DSPY_VEC_OPTIONS_INIT \
    {                         \
        .device = "auto"      \
    }

/** A context: one device in use, its kernels, its memory account. Threading: one thread at
 * a time per context (and its matrices); different contexts may run at once.
 *
 * Synchronization: every call is synchronous. When it returns, its results are in the
 * caller's memory and no caller pointer is used any more, except the rows of a matrix
 * stored with DSPY_VEC_BORROW. On CUDA, each call copies its inputs to the device, runs,
 * and copies the results back before returning; dspy_vec_matrix_new() returns after the
 * upload has finished. */
typedef struct dspy_vec dspy_vec;

/** Open a context on opts->device (NULL opts = DSPY_VEC_OPTIONS_INIT). "auto" never fails
 * for want of a GPU: it falls back to the CPU and dspy_vec_fallback_reason() says why.
 * An explicit "cuda"/"cuda:N" that cannot be used fails with DSPY_EUNSUPPORTED (and the
 * reason in err); a malformed device string with DSPY_EINVAL. On error *out is NULL. */
DSPY_EXTERN dspy_status dspy_vec_new(const struct dspy_vec_options *opts, dspy_vec **out,
                                     struct dspy_error *err);
/** Release the context and everything it holds on its device. Matrices still alive are
 * freed with it (their pointers become invalid). NULL is a no-op. */
DSPY_EXTERN void dspy_vec_free(dspy_vec *v);
/** Switch the context to another device. Its stored matrices must be freed first
 * (DSPY_EBUSY otherwise). On failure the context stays on its current device. */
DSPY_EXTERN dspy_status dspy_vec_set_device(dspy_vec *v, const char *device,
                                            struct dspy_error *err);
/** The device in use, e.g. "cpu" or "cuda:0". Borrowed until the next set_device/free. */
DSPY_EXTERN const char *dspy_vec_device(const dspy_vec *v);
/** Why "auto" chose the CPU (e.g. "libcuda.so.1: cannot open shared object file"), or
 * NULL when the device in use is the one asked for. Borrowed like dspy_vec_device(). */
DSPY_EXTERN const char *dspy_vec_fallback_reason(const dspy_vec *v);

/** Memory held by a context on its device. */
struct dspy_vec_mem {
    uint64_t current_bytes;
    uint64_t peak_bytes;   /* high-water mark since the context opened or the last reset */
    uint64_t allocations;  /* allocations made so far */
    uint64_t failures;     /* allocations refused by the budget (or the device) */
    uint64_t budget_bytes; /* 0 = no limit */
};
/** Account of the device in use. */
DSPY_EXTERN void dspy_vec_memory(const dspy_vec *v, struct dspy_vec_mem *out);
/** Restart the peak at the current figure. */
DSPY_EXTERN void dspy_vec_memory_reset_peak(dspy_vec *v);
/** Release scratch buffers kept between calls (they come back on the next call). */
DSPY_EXTERN void dspy_vec_trim(dspy_vec *v);

/* ---- Kernels on caller memory (float32, row-major, `ld` = floats between rows) -------- */

/** Scores between vectors. IP is the dot product, COSINE the dot of the L2-normalized
 * vectors (0 when either is a zero vector), L2 the squared Euclidean distance. */
enum dspy_vec_metric { DSPY_VEC_IP = 0, DSPY_VEC_COSINE = 1, DSPY_VEC_L2 = 2 };

/** Single pairs, on the calling thread's CPU (no context needed). Accumulation is in float32
 * over SIMD lanes. NaN in either input gives NaN; Inf follows IEEE arithmetic. */
DSPY_EXTERN float dspy_vec_dot(const float *a, const float *b, size_t d);
DSPY_EXTERN float dspy_vec_cosine(const float *a, const float *b, size_t d);
DSPY_EXTERN float dspy_vec_l2sq(const float *a, const float *b, size_t d);
/** Maximal marginal relevance (Carbonell & Goldstein): `cand` holds n row indices of `rows`
 * (unit vectors of d floats, row i at rows + i * d) and rel[i] is row i's relevance.
 * Reorders cand so that its first k entries are, in pick order, each the candidate left
 * maximizing lambda * rel - (1 - lambda) * (max dot product with those picked); ties go to
 * the earlier candidate, and the rest keep their order. lambda 1 = plain relevance. */
DSPY_EXTERN void dspy_vec_mmr(const float *rows, size_t d, const float *rel, uint32_t *cand,
                              size_t n, size_t k, double lambda);

/** Scale each of the n rows of x (d floats, ld apart) to unit L2 norm in place: x / max(|x|,
 * 1e-12), as torch.nn.functional.normalize does; a zero row stays zero; a row holding NaN
 * becomes NaN. */
DSPY_EXTERN dspy_status dspy_vec_normalize(dspy_vec *v, float *x, size_t n, size_t d, size_t ld,
                                           struct dspy_error *err);

/** C = A·Bᵀ (trans_b, B is n×k: the layout of a PyTorch Linear weight [out, in]) or C = A·B
 * (B is k×n). A is m×k, C is m×n, all row-major with leading dimensions lda, ldb, ldc (in
 * floats, ≥ the row length). C is overwritten. On the CPU this is OpenBLAS sgemm. */
DSPY_EXTERN dspy_status dspy_vec_matmul(dspy_vec *v, size_t m, size_t n, size_t k, const float *a,
                                        size_t lda, const float *b, size_t ldb, bool trans_b,
                                        float *c, size_t ldc, struct dspy_error *err);

/** out[i*ldo + j] = metric(Q_i, X_j) for nq queries and n rows of dimension d (the batched
 * similarity; one query is a memory-bound scan, many use sgemm plus norms). Large batches
 * are split to fit the memory budget. */
DSPY_EXTERN dspy_status dspy_vec_scores(dspy_vec *v, enum dspy_vec_metric metric, const float *q,
                                        size_t nq, size_t ldq, const float *x, size_t n, size_t ldx,
                                        size_t d, float *out, size_t ldo, struct dspy_error *err);

/* ---- Stored matrices and exact top-k -------------------------------------------------- */

/** How a stored matrix keeps its rows. F16 is IEEE half (round to nearest even); I8 is
 * symmetric per-row int8: x ≈ scale_row · q, q in [-127, 127], scale_row = max|x| / 127. */
enum dspy_vec_storage { DSPY_VEC_F32 = 0, DSPY_VEC_F16 = 1, DSPY_VEC_I8 = 2 };

/** Flags of dspy_vec_matrix_new(). */
#define DSPY_VEC_BORROW \
    1u /* CPU, F32 only: search the caller's rows in place, no copy
                              (borrowed until dspy_vec_matrix_free()) */

/** n rows of dimension d stored on the context's device, searched many times. */
typedef struct dspy_vec_matrix dspy_vec_matrix;

/** Store n rows (d floats each, ld apart) as `storage` on the context's device. Row norms
 * are computed once here (for COSINE and L2). DSPY_ENOMEM when the matrix does not fit
 * the budget; DSPY_EINVAL for d = 0, ld < d, or BORROW where it does not apply. */
DSPY_EXTERN dspy_status dspy_vec_matrix_new(dspy_vec *v, const float *rows, size_t n, size_t d,
                                            size_t ld, enum dspy_vec_storage storage,
                                            unsigned flags, dspy_vec_matrix **out,
                                            struct dspy_error *err);
DSPY_EXTERN void dspy_vec_matrix_free(dspy_vec_matrix *m);
/** Replace row i (d floats, copied and encoded as the matrix's storage), so a matrix can
 * follow a set whose rows change in place. CPU matrices that hold their own rows only
 * (DSPY_EINVAL for a device matrix, borrowed rows, or i >= rows). Not while another thread
 * searches the matrix. */
DSPY_EXTERN dspy_status dspy_vec_matrix_set_row(dspy_vec_matrix *m, size_t i, const float *row,
                                                struct dspy_error *err);
DSPY_EXTERN size_t dspy_vec_matrix_rows(const dspy_vec_matrix *m);
/** Bytes the matrix holds on its device (rows, norms, scales). */
DSPY_EXTERN uint64_t dspy_vec_matrix_bytes(const dspy_vec_matrix *m);

/** Read every stored byte of the rows once, as the memory-bound kernels do, and return a
 * checksum of them (so the read cannot be skipped): timed, it gives the device's plain-read
 * bandwidth, the bound for top-k over the same matrix. */
DSPY_EXTERN dspy_status dspy_vec_matrix_read(dspy_vec *v, const dspy_vec_matrix *m,
                                             uint64_t *checksum, struct dspy_error *err);

/** Exact top-k for each of nq queries (d floats each, ldq apart): the k rows with the
 * highest IP/COSINE score or the smallest L2 distance, best first; ties go to the lower
 * row id. Writes scores[i*k + j] and ids[i*k + j]. When fewer than k rows qualify (k > n,
 * or rows whose score is NaN, which are never returned), the remaining slots get id -1
 * and score -INFINITY (IP, COSINE) or +INFINITY (L2). For I8 storage the query is
 * quantized to int8 too (per query) and the integer dot product rescaled. Queries are
 * processed in batches that fit the memory budget. */
DSPY_EXTERN dspy_status dspy_vec_topk(dspy_vec *v, const dspy_vec_matrix *m,
                                      enum dspy_vec_metric metric, const float *q, size_t nq,
                                      size_t ldq, size_t k, float *scores, int64_t *ids,
                                      struct dspy_error *err);

/* ---- HNSW approximate search (large sets that grow one vector at a time) ------------- */

/** An HNSW graph index over vectors it stores itself (float32, copied on add). Nodes are
 * numbered 0, 1, ... in order of addition and keep their number for the index's life;
 * each carries the caller's 64-bit label. Removal marks a node deleted: it is still walked
 * through but never returned. Every returned candidate's score is the exact float32 score
 * against its stored vector (so the candidates come re-ranked exactly). Threading: one
 * thread at a time per index (the caller locks); separate indexes are independent. */
typedef struct dspy_vec_hnsw dspy_vec_hnsw;

struct dspy_vec_hnsw_options {
    size_t dim;                  /* vector dimension (required, 1..65536) */
    enum dspy_vec_metric metric; /* DSPY_VEC_IP (higher is nearer; for unit vectors the
                                    cosine) or DSPY_VEC_L2 (squared distance, lower is nearer) */
    unsigned m;                  /* links per node above level 0 (2..256); 2m at level 0 */
    unsigned ef_construction;    /* beam width while adding */
    unsigned ef_search;          /* default beam width of a search (>= k is used) */
    uint64_t seed;               /* level draws; 0 = a fixed default */
};
#define DSPY_VEC_HNSW_OPTIONS_INIT                                                         \
    {                                                                                      \
        .metric = DSPY_VEC_IP, .m = 16, .ef_construction = 100, .ef_search = 64, .seed = 1 \
    }

/** New empty index. DSPY_EINVAL for options out of range (the message names which). */
DSPY_EXTERN dspy_status dspy_vec_hnsw_new(const struct dspy_vec_hnsw_options *opts,
                                          dspy_vec_hnsw **out, struct dspy_error *err);
DSPY_EXTERN void dspy_vec_hnsw_free(dspy_vec_hnsw *h);
/** Add one vector (dim floats, copied) with `label`; its node number goes to *node (may be
 * NULL). DSPY_ENOMEM leaves the index usable. */
DSPY_EXTERN dspy_status dspy_vec_hnsw_add(dspy_vec_hnsw *h, uint64_t label, const float *v,
                                          uint32_t *node, struct dspy_error *err);
/** Mark a node deleted. DSPY_EINVAL for a node that does not exist, DSPY_ENOTFOUND when it
 * was already deleted. */
DSPY_EXTERN dspy_status dspy_vec_hnsw_remove(dspy_vec_hnsw *h, uint32_t node);
/** The up-to-k nearest live nodes to q, nearest first: their exact scores (metric as in
 * the options) and node numbers; *found says how many (fewer than k only when fewer live
 * nodes were reached). ef = beam width, 0 = the index's ef_search; raised to k. */
DSPY_EXTERN dspy_status dspy_vec_hnsw_search(dspy_vec_hnsw *h, const float *q, size_t k,
                                             unsigned ef, float *scores, uint32_t *nodes,
                                             size_t *found, struct dspy_error *err);
/** Nodes ever added (deleted ones included) and live ones. */
DSPY_EXTERN size_t dspy_vec_hnsw_nodes(const dspy_vec_hnsw *h);
DSPY_EXTERN size_t dspy_vec_hnsw_live(const dspy_vec_hnsw *h);
DSPY_EXTERN size_t dspy_vec_hnsw_dim(const dspy_vec_hnsw *h);
/** A node's label, its stored vector (borrowed until the next add or free) and whether it
 * is deleted (true for a node that does not exist). */
DSPY_EXTERN uint64_t dspy_vec_hnsw_label(const dspy_vec_hnsw *h, uint32_t node);
DSPY_EXTERN const float *dspy_vec_hnsw_vector(const dspy_vec_hnsw *h, uint32_t node);
DSPY_EXTERN bool dspy_vec_hnsw_is_deleted(const dspy_vec_hnsw *h, uint32_t node);
DSPY_EXTERN void dspy_vec_hnsw_set_ef_search(dspy_vec_hnsw *h, unsigned ef);
/** Bytes held (vectors, labels, links). */
DSPY_EXTERN uint64_t dspy_vec_hnsw_bytes(const dspy_vec_hnsw *h);
/** Write the whole index to `path` (through `path`.tmp and a rename, so a crash leaves the
 * old file or the new one). DSPY_EIO naming the file. */
DSPY_EXTERN dspy_status dspy_vec_hnsw_save(const dspy_vec_hnsw *h, const char *path,
                                           struct dspy_error *err);
/** Read an index written by dspy_vec_hnsw_save(). The file is checked whole (checksum,
 * sizes, every link) before use: a damaged, cut or foreign file gives DSPY_ECORRUPT
 * naming the file and what is wrong, a missing one DSPY_ENOTFOUND; never a crash. */
DSPY_EXTERN dspy_status dspy_vec_hnsw_load(const char *path, dspy_vec_hnsw **out,
                                           struct dspy_error *err);

#ifdef __cplusplus
}
#endif
#endif

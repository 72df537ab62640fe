/* The vec layer's public face: device detection and choice, contexts, memory accounting
 * under a budget, argument checks, and dispatch to the backend in use (vec_cpu.c or
 * vec_cuda.c) through the vtable in vec_int.h. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include <dspyc/proc.h>

#include "base/status.h"
#include "vec/vec_int.h"

/* ---- detection ---- */

static struct dspy_vec_info probed;
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;

static void probe_run(void)
{
    struct dspy_machine mach;
    struct dspy_vec_device_info *cpu = &probed.devices[0];
    dspy_machine_describe(&mach);
    snprintf(cpu->id, sizeof(cpu->id), "cpu");
    snprintf(cpu->name, sizeof(cpu->name), "%s", mach.cpu_model);
    cpu->memory_bytes = mach.memory_bytes;
    cpu->cores = mach.cores;
    snprintf(cpu->simd, sizeof(cpu->simd), "%s", dspy__vec_kern()->simd);
    probed.ndevices = 1;
    const char *cfg = openblas_get_config(), *core = openblas_get_corename();
    /* The config reads "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY ..."; keep name and version. */
    char head[40] = "OpenBLAS";
    if (cfg) {
        const char *sp = strchr(cfg, ' ');
        sp = sp ? strchr(sp + 1, ' ') : NULL;
        size_t n = sp ? (size_t)(sp - cfg) : strlen(cfg);
        snprintf(head, sizeof(head), "%.*s", (int)(n < 39 ? n : 39), cfg);
    }
    snprintf(probed.blas, sizeof(probed.blas), "%s (%s)", head, core ? core : "?");
    dspy__vec_cuda_probe(&probed);
}

void dspy_vec_probe(struct dspy_vec_info *out)
{
    pthread_once(&probe_once, probe_run);
    *out = probed;
}

/* ---- memory accounting ---- */

dspy_status dspy__vec_charge(struct dspy_vec *v, uint64_t bytes)
{
    struct dspy_vec_mem *m = &v->mem[v->slot];
    if (v->budget && (bytes > v->budget || m->current_bytes > v->budget - bytes)) {
        m->failures++;
        return DSPY_ENOMEM;
    }
    m->current_bytes += bytes;
    m->allocations++;
    if (m->current_bytes > m->peak_bytes)
        m->peak_bytes = m->current_bytes;
    return DSPY_OK;
}

void dspy__vec_uncharge(struct dspy_vec *v, uint64_t bytes)
{
    struct dspy_vec_mem *m = &v->mem[v->slot];
    m->current_bytes = m->current_bytes >= bytes ? m->current_bytes - bytes : 0;
}

uint64_t dspy__vec_room(const struct dspy_vec *v)
{
    const struct dspy_vec_mem *m = &v->mem[v->slot];
    if (!v->budget)
        return UINT64_MAX;
    return m->current_bytes < v->budget ? v->budget - m->current_bytes : 0;
}

void *dspy__vec_host_alloc(struct dspy_vec *v, uint64_t bytes)
{
    if (bytes > SIZE_MAX - 128 || dspy__vec_charge(v, bytes))
        return NULL;
    char *raw = dspy_malloc((size_t)bytes + 128);
    if (!raw) {
        dspy__vec_uncharge(v, bytes);
        v->mem[v->slot].failures++;
        return NULL;
    }
    /* 64-byte aligned, with the raw pointer just before the block. */
    char *p = (char *)(((uintptr_t)raw + sizeof(void *) + 63) & ~(uintptr_t)63);
    memcpy(p - sizeof(void *), &raw, sizeof(void *));
    return p;
}

void dspy__vec_host_free(struct dspy_vec *v, void *p, uint64_t bytes)
{
    if (!p)
        return;
    void *raw;
    memcpy(&raw, (char *)p - sizeof(void *), sizeof(void *));
    dspy_free(raw);
    dspy__vec_uncharge(v, bytes);
}

void dspy_vec_memory(const dspy_vec *v, struct dspy_vec_mem *out)
{
    *out = v->mem[v->slot];
    out->budget_bytes = v->budget;
}

void dspy_vec_memory_reset_peak(dspy_vec *v)
{
    v->mem[v->slot].peak_bytes = v->mem[v->slot].current_bytes;
}

void dspy_vec_trim(dspy_vec *v)
{
    if (v->ops->trim)
        v->ops->trim(v);
}

/* ---- contexts ---- */

/* "cpu" → -1, "cuda" → 0, "cuda:N" → N, "auto" → -2; -3 when malformed. */
static int parse_device(const char *s)
{
    if (!s || !strcmp(s, "auto"))
        return -2;
    if (!strcmp(s, "cpu"))
        return -1;
    if (!strcmp(s, "cuda"))
        return 0;
    if (!strncmp(s, "cuda:", 5) && s[5] >= '0' && s[5] <= '9') {
        char *end;
        errno = 0;
        long n = strtol(s + 5, &end, 10);
        if (!*end && !errno && n >= 0 && n < DSPY_VEC_MAX_DEVICES - 1)
            return (int)n;
    }
    return -3;
}

static dspy_status open_on(dspy_vec *v, const char *device, struct dspy_error *err)
{
    int want = parse_device(device);
    if (want == -3)
        return dspy__err(err, DSPY_EINVAL, "vec: device '%s' is not one of cpu, cuda, cuda:N, auto",
                         device);
    v->reason[0] = 0;
    if (want >= 0 || want == -2) {
        int idx = want >= 0 ? want : 0;
        struct dspy_error cerr;
        dspy_error_clear(&cerr);
        v->ops = &dspy__vec_cuda_ops;
        v->slot = 1 + idx;
        snprintf(v->device, sizeof(v->device), "cuda:%d", idx);
        dspy_status rc = v->ops->open(v, idx, &cerr);
        if (!rc)
            return DSPY_OK;
        if (want >= 0) {
            v->ops = NULL;
            if (err)
                *err = cerr;
            return rc;
        }
        snprintf(v->reason, sizeof(v->reason), "%.200s", cerr.message);
    }
    v->ops = &dspy__vec_cpu_ops;
    v->slot = 0;
    snprintf(v->device, sizeof(v->device), "cpu");
    dspy_status rc = v->ops->open(v, -1, err);
    if (rc)
        v->ops = NULL;
    return rc;
}

dspy_status dspy_vec_new(const struct dspy_vec_options *opts, dspy_vec **out,
                         struct dspy_error *err)
{
    static const struct dspy_vec_options defaults = DSPY_VEC_OPTIONS_INIT;
    if (!opts)
        opts = &defaults;
    *out = NULL;
    if (opts->threads < 0)
        return dspy__err(err, DSPY_EINVAL, "vec: threads must be >= 0, not %d", opts->threads);
    dspy_vec *v = dspy_calloc(1, sizeof(*v));
    if (!v)
        return dspy__err(err, DSPY_ENOMEM, "vec: out of memory");
    v->budget = opts->memory_budget;
    v->threads = opts->threads;
    if (!v->threads) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        v->threads = n > 0 ? (int)(n > 256 ? 256 : n) : 1;
    }
    dspy_status rc = open_on(v, opts->device, err);
    if (rc) {
        dspy_free(v);
        return rc;
    }
    *out = v;
    return DSPY_OK;
}

void dspy_vec_free(dspy_vec *v)
{
    if (!v)
        return;
    while (v->matrices)
        dspy_vec_matrix_free(v->matrices);
    if (v->ops)
        v->ops->close(v);
    dspy_free(v);
}

dspy_status dspy_vec_set_device(dspy_vec *v, const char *device, struct dspy_error *err)
{
    if (v->live_matrices)
        return dspy__err(err, DSPY_EBUSY,
                         "vec: %zu stored matrices still live on %s; free them first",
                         v->live_matrices, v->device);
    if (parse_device(device) == -3)
        return dspy__err(err, DSPY_EINVAL, "vec: device '%s' is not one of cpu, cuda, cuda:N, auto",
                         device);
    /* Open the new device beside the old one, so a failure leaves the old one in use. */
    dspy_vec probe = *v;
    probe.be = NULL;
    dspy_status rc = open_on(&probe, device, err);
    if (rc)
        return rc;
    v->ops->close(v);
    if (probe.slot != v->slot)
        probe.mem[v->slot] = v->mem[v->slot];
    *v = probe;
    return DSPY_OK;
}

const char *dspy_vec_device(const dspy_vec *v)
{
    return v->device;
}

const char *dspy_vec_fallback_reason(const dspy_vec *v)
{
    return v->reason[0] ? v->reason : NULL;
}

/* ---- kernels ---- */

float dspy_vec_dot(const float *a, const float *b, size_t d)
{
    return dspy__vec_kern()->dot(a, b, d);
}

void dspy_vec_mmr(const float *rows, size_t d, const float *rel, uint32_t *cand, size_t n, size_t k,
                  double lambda)
{
    for (size_t pick = 0; pick < k && pick < n; pick++) {
        size_t best = pick;
        double best_v = 0;
        for (size_t c = pick; c < n; c++) {
            double red = 0;
            const float *vc = rows + (size_t)cand[c] * d;
            for (size_t j = 0; j < pick; j++) {
                double dot = dspy_vec_dot(vc, rows + (size_t)cand[j] * d, d);
                if (!j || dot > red)
                    red = dot;
            }
            double v = lambda * rel[cand[c]] - (1 - lambda) * red;
            if (c == pick || v > best_v) {
                best = c;
                best_v = v;
            }
        }
        uint32_t t = cand[best]; /* the rest keep their order */
        memmove(cand + pick + 1, cand + pick, (best - pick) * sizeof(*cand));
        cand[pick] = t;
    }
}

float dspy_vec_l2sq(const float *a, const float *b, size_t d)
{
    return dspy__vec_kern()->l2sq(a, b, d);
}

float dspy_vec_cosine(const float *a, const float *b, size_t d)
{
    const struct dspy__vec_kern *k = dspy__vec_kern();
    float ab = k->dot(a, b, d), aa = k->dot(a, a, d), bb = k->dot(b, b, d);
    return dspy__vec_key(DSPY_VEC_COSINE, ab, sqrtf(aa), sqrtf(bb));
}

static dspy_status check_rows(struct dspy_error *err, const char *what, const void *p, size_t n,
                              size_t d, size_t ld)
{
    if (n && !p)
        return dspy__err(err, DSPY_EINVAL, "vec: %s is NULL", what);
    if (n > 1 && ld < d)
        return dspy__err(err, DSPY_EINVAL, "vec: %s: leading dimension %zu < row length %zu", what,
                         ld, d);
    if (n && ld && n > SIZE_MAX / 8 / ld)
        return dspy__err(err, DSPY_ETOOBIG, "vec: %s: %zu rows of %zu overflow", what, n, ld);
    return DSPY_OK;
}

static dspy_status check_metric(enum dspy_vec_metric m, struct dspy_error *err)
{
    if (m != DSPY_VEC_IP && m != DSPY_VEC_COSINE && m != DSPY_VEC_L2)
        return dspy__err(err, DSPY_EINVAL, "vec: unknown metric %d", (int)m);
    return DSPY_OK;
}

dspy_status dspy_vec_normalize(dspy_vec *v, float *x, size_t n, size_t d, size_t ld,
                               struct dspy_error *err)
{
    dspy_status rc = check_rows(err, "x", x, n, d, ld);
    if (rc || !n || !d)
        return rc;
    return v->ops->normalize(v, x, n, d, ld ? ld : d, err);
}

dspy_status dspy_vec_matmul(dspy_vec *v, size_t m, size_t n, size_t k, const float *a, size_t lda,
                            const float *b, size_t ldb, bool trans_b, float *c, size_t ldc,
                            struct dspy_error *err)
{
    dspy_status rc;
    if ((rc = check_rows(err, "A", a, m, k, lda)) ||
        (rc = check_rows(err, "B", b, trans_b ? n : k, trans_b ? k : n, ldb)) ||
        (rc = check_rows(err, "C", c, m, n, ldc)))
        return rc;
    if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX || lda > INT32_MAX || ldb > INT32_MAX ||
        ldc > INT32_MAX)
        return dspy__err(err, DSPY_ETOOBIG, "vec: matmul dimensions beyond 2^31");
    if (!m || !n)
        return DSPY_OK;
    if (!k) {
        for (size_t i = 0; i < m; i++)
            memset(c + i * ldc, 0, n * sizeof(float));
        return DSPY_OK;
    }
    return v->ops->matmul(v, m, n, k, a, lda ? lda : k, b, ldb ? ldb : (trans_b ? k : n), trans_b,
                          c, ldc ? ldc : n, err);
}

dspy_status dspy_vec_scores(dspy_vec *v, enum dspy_vec_metric metric, const float *q, size_t nq,
                            size_t ldq, const float *x, size_t n, size_t ldx, size_t d, float *out,
                            size_t ldo, struct dspy_error *err)
{
    dspy_status rc;
    if ((rc = check_metric(metric, err)) || (rc = check_rows(err, "queries", q, nq, d, ldq)) ||
        (rc = check_rows(err, "rows", x, n, d, ldx)) ||
        (rc = check_rows(err, "out", out, nq, n, ldo)))
        return rc;
    if (nq > INT32_MAX || n > INT32_MAX || d > INT32_MAX || ldq > INT32_MAX || ldx > INT32_MAX ||
        ldo > INT32_MAX)
        return dspy__err(err, DSPY_ETOOBIG, "vec: scores dimensions beyond 2^31");
    if (!nq || !n)
        return DSPY_OK;
    return v->ops->scores(v, metric, q, nq, ldq ? ldq : d, x, n, ldx ? ldx : d, d, out,
                          ldo ? ldo : n, err);
}

/* ---- stored matrices ---- */

dspy_status dspy_vec_matrix_new(dspy_vec *v, const float *rows, size_t n, size_t d, size_t ld,
                                enum dspy_vec_storage storage, unsigned flags,
                                dspy_vec_matrix **out, struct dspy_error *err)
{
    dspy_status rc;
    *out = NULL;
    if (!ld)
        ld = d;
    if (!d)
        return dspy__err(err, DSPY_EINVAL, "vec: matrix rows must have d > 0");
    if (storage != DSPY_VEC_F32 && storage != DSPY_VEC_F16 && storage != DSPY_VEC_I8)
        return dspy__err(err, DSPY_EINVAL, "vec: unknown storage %d", (int)storage);
    if ((rc = check_rows(err, "rows", rows, n, d, ld)))
        return rc;
    if (n > INT64_MAX / 2 || d > INT32_MAX)
        return dspy__err(err, DSPY_ETOOBIG, "vec: matrix of %zu x %zu is too large", n, d);
    bool borrow = flags & DSPY_VEC_BORROW;
    if (borrow && (storage != DSPY_VEC_F32 || v->ops != &dspy__vec_cpu_ops))
        return dspy__err(err, DSPY_EINVAL,
                         "vec: DSPY_VEC_BORROW needs F32 storage on the CPU (device %s)",
                         v->device);
    dspy_vec_matrix *m = dspy_calloc(1, sizeof(*m));
    if (!m)
        return dspy__err(err, DSPY_ENOMEM, "vec: out of memory");
    m->v = v;
    m->storage = storage;
    m->n = n;
    m->d = d;
    m->borrowed = borrow;
    size_t pad = borrow ? 0 : dspy__vec_pad(storage, d);
    uint64_t row_bytes = (uint64_t)n * pad * dspy__vec_elem_size(storage);
    uint64_t meta_bytes = (uint64_t)n * (storage == DSPY_VEC_I8 ? 12 : 4);
    m->bytes = row_bytes + meta_bytes;
    if (dspy__vec_charge(v, m->bytes)) {
        struct dspy_vec_mem mem;
        dspy_vec_memory(v, &mem);
        rc = dspy__err(err, DSPY_ENOMEM,
                       "vec: a %zu x %zu matrix needs %llu bytes on %s; %llu of the %llu-byte "
                       "budget are in use",
                       n, d, (unsigned long long)m->bytes, v->device,
                       (unsigned long long)mem.current_bytes, (unsigned long long)v->budget);
        dspy_free(m);
        return rc;
    }
    if (dspy__vec_encode(m, rows, ld)) {
        dspy__vec_uncharge(v, m->bytes);
        dspy_free(m);
        return dspy__err(err, DSPY_ENOMEM, "vec: out of host memory encoding the matrix");
    }
    if ((rc = v->ops->matrix_store(v, m, err))) {
        dspy__vec_encoded_free(m);
        dspy__vec_uncharge(v, m->bytes);
        dspy_free(m);
        return rc;
    }
    m->next = v->matrices;
    if (v->matrices)
        v->matrices->prev = m;
    v->matrices = m;
    v->live_matrices++;
    *out = m;
    return DSPY_OK;
}

dspy_status dspy_vec_matrix_set_row(dspy_vec_matrix *m, size_t i, const float *row,
                                    struct dspy_error *err)
{
    if (!m || !row)
        return dspy__err(err, DSPY_EINVAL, "vec: set_row needs a matrix and a row");
    if (m->v->ops != &dspy__vec_cpu_ops || m->borrowed)
        return dspy__err(err, DSPY_EINVAL,
                         "vec: set_row needs a matrix the CPU stores itself (device %s%s)",
                         m->v->device, m->borrowed ? ", borrowed rows" : "");
    if (i >= m->n)
        return dspy__err(err, DSPY_EINVAL, "vec: set_row: row %zu of %zu", i, m->n);
    dspy__vec_encode_row(m, i, row);
    return DSPY_OK;
}

void dspy_vec_matrix_free(dspy_vec_matrix *m)
{
    if (!m)
        return;
    dspy_vec *v = m->v;
    v->ops->matrix_release(v, m);
    dspy__vec_encoded_free(m);
    dspy__vec_uncharge(v, m->bytes);
    if (m->prev)
        m->prev->next = m->next;
    else
        v->matrices = m->next;
    if (m->next)
        m->next->prev = m->prev;
    v->live_matrices--;
    dspy_free(m);
}

size_t dspy_vec_matrix_rows(const dspy_vec_matrix *m)
{
    return m->n;
}

uint64_t dspy_vec_matrix_bytes(const dspy_vec_matrix *m)
{
    return m->bytes;
}

dspy_status dspy_vec_matrix_read(dspy_vec *v, const dspy_vec_matrix *m, uint64_t *checksum,
                                 struct dspy_error *err)
{
    if (m->v != v)
        return dspy__err(err, DSPY_EINVAL, "vec: the matrix belongs to another context");
    *checksum = 0;
    return m->n ? v->ops->matrix_read(v, m, checksum, err) : DSPY_OK;
}

dspy_status dspy_vec_topk(dspy_vec *v, const dspy_vec_matrix *m, enum dspy_vec_metric metric,
                          const float *q, size_t nq, size_t ldq, size_t k, float *scores,
                          int64_t *ids, struct dspy_error *err)
{
    dspy_status rc;
    if (m->v != v)
        return dspy__err(err, DSPY_EINVAL, "vec: the matrix belongs to another context");
    if ((rc = check_metric(metric, err)) || (rc = check_rows(err, "queries", q, nq, m->d, ldq)))
        return rc;
    if (nq && k && (!scores || !ids))
        return dspy__err(err, DSPY_EINVAL, "vec: scores and ids are required");
    if (k && nq > SIZE_MAX / 16 / k)
        return dspy__err(err, DSPY_ETOOBIG, "vec: %zu queries x k %zu overflow", nq, k);
    if (!nq || !k)
        return DSPY_OK;
    return v->ops->topk(v, m, metric, q, nq, ldq ? ldq : m->d, k, scores, ids, err);
}

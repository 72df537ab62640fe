/* The vec layer's CPU backend: OpenBLAS sgemm for matmul and batched scores, the SIMD
 * kernels of vec_simd.c for memory-bound scans, and exact top-k that fuses the dot
 * products with a running per-query heap in one pass over the rows, split over threads
 * for large matrices and into batches that fit the memory budget. */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include <cblas.h>

#include "base/status.h"
#include "vec/vec_int.h"

#define BLOCK 256                /* rows per dot-product block in the scans */
#define BATCH_MIN 8              /* queries from which batched top-k and scores use sgemm */
#define PAR_MIN_ELEMS (1u << 20) /* elements a thread's share must reach to be worth one */

/* ---- threads ---- */

struct par_job {
    void (*fn)(void *ctx, int t, int nt);
    void *ctx;
    int t, nt;
};

static void *par_main(void *arg)
{
    struct par_job *j = arg;
    j->fn(j->ctx, j->t, j->nt);
    return NULL;
}

/* Run fn(ctx, t, nt) for t in [0, nt): nt - 1 new threads and this one. A thread that
 * cannot be created runs its share here afterwards. */
static void run_parallel(int nt, void (*fn)(void *, int, int), void *ctx)
{
    enum { MAXT = 64 };
    pthread_t tid[MAXT];
    struct par_job jobs[MAXT];
    bool started[MAXT] = { false };
    if (nt > MAXT)
        nt = MAXT;
    for (int t = 1; t < nt; t++) {
        jobs[t] = (struct par_job){ fn, ctx, t, nt };
        started[t] = pthread_create(&tid[t], NULL, par_main, &jobs[t]) == 0;
    }
    fn(ctx, 0, nt);
    for (int t = 1; t < nt; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            fn(ctx, t, nt);
    }
}

static int threads_for(const struct dspy_vec *v, size_t rows, size_t d)
{
    size_t elems = rows * (d ? d : 1), nt = elems / PAR_MIN_ELEMS;
    if (nt > (size_t)v->threads)
        nt = (size_t)v->threads;
    return nt < 1 ? 1 : (int)nt;
}

static void share(size_t n, int t, int nt, size_t *lo, size_t *hi)
{
    *lo = n * (size_t)t / (size_t)nt;
    *hi = n * (size_t)(t + 1) / (size_t)nt;
}

/* ---- lifecycle ---- */

static dspy_status cpu_open(struct dspy_vec *v, int index, struct dspy_error *err)
{
    (void)v;
    (void)index;
    (void)err;
    return DSPY_OK;
}

static void cpu_close(struct dspy_vec *v)
{
    (void)v;
}

/* ---- normalize ---- */

struct norm_job {
    float *x;
    size_t n, d, ld;
};

static void norm_rows(void *ctx, int t, int nt)
{
    struct norm_job *j = ctx;
    const struct dspy__vec_kern *k = dspy__vec_kern();
    size_t lo, hi;
    share(j->n, t, nt, &lo, &hi);
    for (size_t i = lo; i < hi; i++) {
        float *r = j->x + i * j->ld;
        float nrm = sqrtf(k->dot(r, r, j->d));
        /* Like torch's F.normalize: divide by max(norm, eps); a zero row stays zero. A
         * NaN norm makes the whole row NaN (the comparison below is false for NaN). */
        float inv = 1.0f / (nrm > 1e-12f ? nrm : (nrm == nrm ? 1e-12f : nrm));
        for (size_t u = 0; u < j->d; u++)
            r[u] *= inv;
    }
}

static dspy_status cpu_normalize(struct dspy_vec *v, float *x, size_t n, size_t d, size_t ld,
                                 struct dspy_error *err)
{
    (void)err;
    struct norm_job j = { x, n, d, ld ? ld : d };
    run_parallel(threads_for(v, n, d), norm_rows, &j);
    return DSPY_OK;
}

/* ---- matmul ---- */

static dspy_status cpu_matmul(struct dspy_vec *v, size_t m, size_t n, size_t k, const float *a,
                              size_t lda, const float *b, size_t ldb, bool trans_b, float *c,
                              size_t ldc, struct dspy_error *err)
{
    (void)v;
    (void)err;
    if (m == 1) {
        /* One row: a matrix-vector product (sgemv reads B once, sgemm would pack it). */
        if (trans_b)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, (int)k, 1.0f, b, (int)ldb, a, 1, 0.0f,
                        c, 1);
        else
            cblas_sgemv(CblasRowMajor, CblasTrans, (int)k, (int)n, 1.0f, b, (int)ldb, a, 1, 0.0f, c,
                        1);
        return DSPY_OK;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n,
                (int)k, 1.0f, a, (int)lda, b, (int)ldb, 0.0f, c, (int)ldc);
    return DSPY_OK;
}

/* ---- scores ---- */

static float norm_f(const float *x, size_t d)
{
    double s = 0;
    for (size_t i = 0; i < d; i++)
        s += (double)x[i] * x[i];
    return (float)sqrt(s);
}

struct scan_job {
    enum dspy_vec_metric metric;
    const float *q;
    size_t nq, ldq;
    const float *x;
    size_t n, ldx, d;
    float *out;
    size_t ldo;
    const float *qn; /* query norms (COSINE) */
};

static void scan_scores(void *ctx, int t, int nt)
{
    struct scan_job *j = ctx;
    const struct dspy__vec_kern *k = dspy__vec_kern();
    size_t lo, hi;
    share(j->n, t, nt, &lo, &hi);
    for (size_t q0 = 0; q0 < j->nq; q0 += DSPY__VEC_GROUP) {
        int g = (int)(j->nq - q0 < DSPY__VEC_GROUP ? j->nq - q0 : DSPY__VEC_GROUP);
        const float *qs[DSPY__VEC_GROUP];
        for (int u = 0; u < g; u++)
            qs[u] = j->q + (q0 + (size_t)u) * j->ldq;
        if (j->metric == DSPY_VEC_L2) {
            /* The direct form: no cancellation between large norms. */
            for (int u = 0; u < g; u++)
                for (size_t i = lo; i < hi; i++)
                    j->out[(q0 + (size_t)u) * j->ldo + i] = k->l2sq(qs[u], j->x + i * j->ldx, j->d);
            continue;
        }
        for (size_t i = lo; i < hi; i += BLOCK) {
            size_t nb = hi - i < BLOCK ? hi - i : BLOCK;
            k->dots_f32(j->x + i * j->ldx, j->ldx, nb, j->d, qs, g, j->out + q0 * j->ldo + i,
                        j->ldo);
            if (j->metric == DSPY_VEC_COSINE)
                for (size_t r = 0; r < nb; r++) {
                    const float *xr = j->x + (i + r) * j->ldx;
                    float xn = sqrtf(k->dot(xr, xr, j->d));
                    for (int u = 0; u < g; u++) {
                        float *o = j->out + (q0 + (size_t)u) * j->ldo + i + r;
                        *o = dspy__vec_key(DSPY_VEC_COSINE, *o, xn, j->qn[q0 + (size_t)u]);
                    }
                }
        }
    }
}

static dspy_status cpu_scores(struct dspy_vec *v, enum dspy_vec_metric metric, const float *q,
                              size_t nq, size_t ldq, const float *x, size_t n, size_t ldx, size_t d,
                              float *out, size_t ldo, struct dspy_error *err)
{
    uint64_t need = (uint64_t)nq * 4;
    float *qn = NULL, *xn = NULL;
    size_t chunk = n;
    dspy_status rc = DSPY_OK;
    if (metric != DSPY_VEC_IP) {
        /* Query norms, and for the batched form a chunk of row norms, under the budget. */
        uint64_t room = dspy__vec_room(v);
        if (nq >= BATCH_MIN) {
            if (room < need + 4)
                goto nomem;
            uint64_t fit = (room - need) / 4;
            chunk = fit < n ? (size_t)fit : n;
            need += (uint64_t)chunk * 4;
        }
        if (!(qn = dspy__vec_host_alloc(v, need)))
            goto nomem;
        xn = qn + nq;
        for (size_t i = 0; i < nq; i++)
            qn[i] = norm_f(q + i * ldq, d);
    }
    if (nq < BATCH_MIN) {
        struct scan_job j = { metric, q, nq, ldq, x, n, ldx, d, out, ldo, qn };
        run_parallel(threads_for(v, n * nq, d), scan_scores, &j);
        goto out;
    }
    for (size_t c0 = 0; c0 < n; c0 += chunk) {
        size_t cn = n - c0 < chunk ? n - c0 : chunk;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)cn, (int)d, 1.0f, q,
                    (int)ldq, x + c0 * ldx, (int)ldx, 0.0f, out + c0, (int)ldo);
        if (metric == DSPY_VEC_IP)
            continue;
        for (size_t i = 0; i < cn; i++)
            xn[i] = norm_f(x + (c0 + i) * ldx, d);
        for (size_t a = 0; a < nq; a++)
            for (size_t i = 0; i < cn; i++) {
                float *o = out + a * ldo + c0 + i;
                *o = metric == DSPY_VEC_COSINE ? dspy__vec_key(metric, *o, xn[i], qn[a])
                                               : -dspy__vec_key(metric, *o, xn[i], qn[a]);
            }
    }
    goto out;
nomem:
    rc = dspy__err(err, DSPY_ENOMEM,
                   "vec: scores of %zu queries need %llu scratch bytes on "
                   "cpu beyond the budget",
                   nq, (unsigned long long)(need + 4));
out:
    dspy__vec_host_free(v, qn, need);
    return rc;
}

/* ---- stored matrices ---- */

static dspy_status cpu_matrix_store(struct dspy_vec *v, struct dspy_vec_matrix *m,
                                    struct dspy_error *err)
{
    (void)v;
    (void)m;
    (void)err;
    return DSPY_OK; /* the host encoding is the storage */
}

static void cpu_matrix_release(struct dspy_vec *v, struct dspy_vec_matrix *m)
{
    (void)v;
    (void)m;
}

struct read_job {
    const struct dspy_vec_matrix *m;
    uint64_t sums[64];
};

static void read_rows(void *ctx, int t, int nt)
{
    struct read_job *j = ctx;
    const struct dspy_vec_matrix *m = j->m;
    const struct dspy__vec_kern *k = dspy__vec_kern();
    size_t es = dspy__vec_elem_size(m->storage), lo, hi, row = m->ld * es;
    share(m->n, t, nt, &lo, &hi);
    uint64_t s = 0;
    if (!m->borrowed || (m->ld == m->d && row % 8 == 0)) {
        /* Dense (stored rows are padded to 64 bytes): one sweep. */
        s = k->read((const char *)m->rows + lo * row, (hi - lo) * row);
    } else {
        for (size_t i = lo; i < hi; i++)
            s += k->read((const char *)m->rows + i * row, m->d * es / 8 * 8);
    }
    j->sums[t] = s;
}

static dspy_status cpu_matrix_read(struct dspy_vec *v, const struct dspy_vec_matrix *m,
                                   uint64_t *checksum, struct dspy_error *err)
{
    (void)err;
    struct read_job j = { .m = m };
    int nt = threads_for(v, m->n, m->ld);
    if (nt > 64)
        nt = 64;
    run_parallel(nt, read_rows, &j);
    for (int t = 0; t < nt; t++)
        *checksum += j.sums[t];
    return DSPY_OK;
}

/* ---- top-k ---- */

/* Prepared queries of one chunk: padded float copies (F16 and batched F32 from padded
 * storage) or int8 quantizations (I8), their norms and scales. */
struct topk_plan {
    const struct dspy_vec_matrix *m;
    enum dspy_vec_metric metric;
    size_t nq, k, pad;
    const float *qf; /* nq queries, ldqf apart */
    size_t ldqf;
    int8_t *q8;                 /* I8: nq x pad */
    uint8_t *qu;                /* I8: nq x pad, q8 + 128 */
    float *qscale;              /* I8: nq */
    float *qn;                  /* nq query norms */
    struct dspy__vec_hit *hits; /* nt x nq x k */
    struct dspy__vec_sel *sels; /* nt x nq */
    int nt;
};

static void offer_block(const struct topk_plan *p, struct dspy__vec_sel *sel, size_t row0,
                        size_t nb, const float *raw, size_t ldr, size_t qi)
{
    const struct dspy_vec_matrix *m = p->m;
    if (p->metric == DSPY_VEC_IP) {
        for (size_t r = 0; r < nb; r++)
            dspy__vec_sel_offer(sel, raw[r], (int64_t)(row0 + r));
        return;
    }
    (void)ldr;
    for (size_t r = 0; r < nb; r++)
        dspy__vec_sel_offer(sel, dspy__vec_key(p->metric, raw[r], m->norms[row0 + r], p->qn[qi]),
                            (int64_t)(row0 + r));
}

/* One thread's share of the rows, for every query of the chunk, DSPY__VEC_GROUP queries
 * per pass: each block of rows is read once per group while it is in cache. */
static void scan_topk(void *ctx, int t, int nt)
{
    const struct topk_plan *p = ctx;
    const struct dspy_vec_matrix *m = p->m;
    const struct dspy__vec_kern *k = dspy__vec_kern();
    struct dspy__vec_sel *sels = p->sels + (size_t)t * p->nq;
    float raw[DSPY__VEC_GROUP][BLOCK];
    int32_t iraw[DSPY__VEC_GROUP][BLOCK];
    size_t lo, hi;
    share(m->n, t, nt, &lo, &hi);
    for (size_t q0 = 0; q0 < p->nq; q0 += DSPY__VEC_GROUP) {
        int g = (int)(p->nq - q0 < DSPY__VEC_GROUP ? p->nq - q0 : DSPY__VEC_GROUP);
        const float *qs[DSPY__VEC_GROUP];
        const int8_t *q8s[DSPY__VEC_GROUP];
        const uint8_t *qus[DSPY__VEC_GROUP];
        for (int u = 0; u < g; u++) {
            size_t qi = q0 + (size_t)u;
            if (m->storage == DSPY_VEC_I8) {
                q8s[u] = p->q8 + qi * p->pad;
                qus[u] = p->qu + qi * p->pad;
            } else {
                qs[u] = p->qf + qi * p->ldqf;
            }
        }
        for (size_t i = lo; i < hi; i += BLOCK) {
            size_t nb = hi - i < BLOCK ? hi - i : BLOCK;
            if (m->storage == DSPY_VEC_F32) {
                k->dots_f32((const float *)m->rows + i * m->ld, m->ld, nb, m->d, qs, g, raw[0],
                            BLOCK);
            } else if (m->storage == DSPY_VEC_F16) {
                k->dots_f16((const uint16_t *)m->rows + i * m->ld, m->ld, nb, p->pad, qs, g, raw[0],
                            BLOCK);
            } else {
                k->dots_i8((const int8_t *)m->rows + i * m->ld, m->ld, nb, p->pad, q8s, qus, g,
                           m->sums + i, iraw[0], BLOCK);
                for (int u = 0; u < g; u++) {
                    float qs_ = p->qscale[q0 + (size_t)u];
                    for (size_t r = 0; r < nb; r++)
                        raw[u][r] = (float)iraw[u][r] * (m->scales[i + r] * qs_);
                }
            }
            for (int u = 0; u < g; u++)
                offer_block(p, &sels[q0 + (size_t)u], i, nb, raw[u], BLOCK, q0 + (size_t)u);
        }
    }
}

/* Batched: sgemm of the query chunk against blocks of rows (F16 decoded first), then the
 * heaps. Compute-bound, so OpenBLAS's own threads do the work. */
static void batch_topk(const struct topk_plan *p, float *block, size_t nb_max, float *decoded)
{
    const struct dspy_vec_matrix *m = p->m;
    for (size_t i = 0; i < m->n; i += nb_max) {
        size_t nb = m->n - i < nb_max ? m->n - i : nb_max;
        const float *rows = (const float *)m->rows + i * m->ld;
        size_t ldr = m->ld, dd = m->d;
        if (m->storage == DSPY_VEC_F16) {
            const uint16_t *h = (const uint16_t *)m->rows + i * m->ld;
            for (size_t e = 0; e < nb * m->ld; e++)
                decoded[e] = dspy__vec_f16_to_f32(h[e]);
            rows = decoded;
            dd = p->pad;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)p->nq, (int)nb, (int)dd, 1.0f,
                    p->qf, (int)p->ldqf, rows, (int)ldr, 0.0f, block, (int)nb);
        for (size_t a = 0; a < p->nq; a++)
            offer_block(p, &p->sels[a], i, nb, block + a * nb, nb, a);
    }
}

static dspy_status cpu_topk(struct dspy_vec *v, const struct dspy_vec_matrix *m,
                            enum dspy_vec_metric metric, const float *q, size_t nq, size_t ldq,
                            size_t k, float *scores, int64_t *ids, struct dspy_error *err)
{
    size_t pad = m->storage == DSPY_VEC_F32 ? m->d : m->ld;
    bool batched = m->storage != DSPY_VEC_I8 && nq >= BATCH_MIN;
    bool copy_q = m->storage == DSPY_VEC_F16;
    int nt = batched ? 1 : threads_for(v, m->n, m->d);
    size_t kk = k < m->n ? k : (m->n ? m->n : 1); /* heap slots needed per query */
    size_t nb = 4096, qc = nq < 256 ? nq : 256;
    if (nq < BATCH_MIN || !batched)
        qc = nq < 64 ? nq : 64;
    dspy_status rc = DSPY_OK;
    uint64_t need;
    char *scratch = NULL;
    /* Halve the query chunk, then the row block, until the scratch fits the budget. */
    for (;;) {
        need = (uint64_t)qc * 4 * 2                                       /* qn, qscale */
               + (copy_q ? (uint64_t)qc * pad * 4 : 0)                    /* padded F16 queries */
               + (m->storage == DSPY_VEC_I8 ? (uint64_t)qc * pad * 2 : 0) /* q8, qu */
               + (uint64_t)nt * qc *
                     (kk * sizeof(struct dspy__vec_hit) + sizeof(struct dspy__vec_sel)) +
               (batched ? (uint64_t)qc * nb * 4 : 0) +
               (batched && m->storage == DSPY_VEC_F16 ? (uint64_t)nb * m->ld * 4 : 0) + 256;
        if (need <= dspy__vec_room(v))
            break;
        if (qc > 1)
            qc = (qc + 1) / 2;
        else if (batched && nb > 64)
            nb /= 2;
        else if (nt > 1)
            nt = 1;
        else
            return dspy__err(err, DSPY_ENOMEM,
                             "vec: top-k needs %llu scratch bytes on cpu even for one query; "
                             "%llu are left under the budget",
                             (unsigned long long)need, (unsigned long long)dspy__vec_room(v));
    }
    if (!(scratch = dspy__vec_host_alloc(v, need)))
        return dspy__err(err, DSPY_ENOMEM, "vec: top-k: out of memory (%llu bytes)",
                         (unsigned long long)need);
    struct topk_plan p = { .m = m, .metric = metric, .k = kk, .pad = pad, .nt = nt };
    char *s = scratch;
    p.qn = (float *)s, s += qc * 4;
    p.qscale = (float *)s, s += qc * 4;
    s = (char *)(((uintptr_t)s + 63) & ~(uintptr_t)63);
    float *qcopy = NULL;
    if (copy_q)
        qcopy = (float *)s, s += qc * pad * 4;
    if (m->storage == DSPY_VEC_I8) {
        p.q8 = (int8_t *)s, s += qc * pad;
        p.qu = (uint8_t *)s, s += qc * pad;
    }
    s = (char *)(((uintptr_t)s + 15) & ~(uintptr_t)15);
    p.hits = (struct dspy__vec_hit *)s, s += (size_t)nt * qc * kk * sizeof(struct dspy__vec_hit);
    p.sels = (struct dspy__vec_sel *)s, s += (size_t)nt * qc * sizeof(struct dspy__vec_sel);
    s = (char *)(((uintptr_t)s + 63) & ~(uintptr_t)63);
    float *block = batched ? (float *)s : NULL;
    float *decoded = block ? block + qc * nb : NULL;

    for (size_t c0 = 0; c0 < nq; c0 += qc) {
        size_t cn = nq - c0 < qc ? nq - c0 : qc;
        const float *qq = q + c0 * ldq;
        p.nq = cn;
        p.qf = qq;
        p.ldqf = ldq;
        for (size_t a = 0; a < cn; a++) {
            const float *qa = qq + a * ldq;
            p.qn[a] = norm_f(qa, m->d);
            if (copy_q) {
                memcpy(qcopy + a * pad, qa, m->d * 4);
                memset(qcopy + a * pad + m->d, 0, (pad - m->d) * 4);
            }
            if (m->storage == DSPY_VEC_I8)
                p.qscale[a] = dspy__vec_quantize(qa, m->d, pad, p.q8 + a * pad, p.qu + a * pad);
        }
        if (copy_q) {
            p.qf = qcopy;
            p.ldqf = pad;
        }
        for (size_t e = 0; e < (size_t)nt * cn; e++)
            dspy__vec_sel_init(&p.sels[e], p.hits + e * kk, kk);
        if (batched)
            batch_topk(&p, block, nb, decoded);
        else
            run_parallel(nt, scan_topk, &p);
        for (size_t a = 0; a < cn; a++) {
            struct dspy__vec_sel *into = &p.sels[a];
            for (int t = 1; t < nt; t++) {
                const struct dspy__vec_sel *from = &p.sels[(size_t)t * cn + a];
                const struct dspy__vec_hit *h = (const struct dspy__vec_hit *)
                    dspy__heap_at(&from->heap, 0);
                for (size_t e = 0; e < dspy__heap_len(&from->heap); e++)
                    dspy__vec_sel_push_slow(into, h[e].key, h[e].id);
            }
            float *sc = scores + (c0 + a) * k;
            int64_t *id = ids + (c0 + a) * k;
            dspy__vec_sel_finish(into, metric, sc, id);
            float none = metric == DSPY_VEC_L2 ? INFINITY : -INFINITY;
            for (size_t e = kk; e < k; e++) {
                sc[e] = none;
                id[e] = -1;
            }
        }
    }
    dspy__vec_host_free(v, scratch, need);
    return rc;
}

const struct dspy__vec_ops dspy__vec_cpu_ops = {
    .name = "cpu",
    .open = cpu_open,
    .close = cpu_close,
    .trim = NULL,
    .normalize = cpu_normalize,
    .matmul = cpu_matmul,
    .scores = cpu_scores,
    .matrix_store = cpu_matrix_store,
    .matrix_release = cpu_matrix_release,
    .matrix_read = cpu_matrix_read,
    .topk = cpu_topk,
};

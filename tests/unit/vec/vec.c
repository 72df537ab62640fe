/* Unit tests for the vec layer on the CPU: every kernel (each SIMD level this CPU has)
 * against a float64 reference on odd sizes and unaligned pointers, zero/NaN/Inf inputs,
 * top-k over F32/F16/I8 storage with k > n, the fallback from "auto" when CUDA is absent,
 * memory budgets (DSPY_ENOMEM, batches split to fit), failing allocations, and two
 * contexts used from two threads (pthread_create) at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <cmocka.h>

#include <dspyc/vec.h>

#include "vec/vec_int.h"

static uint64_t rng = 88172645463325252ull;

static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *rand_vec(size_t n)
{
    float *x = malloc(n * sizeof(float) + 64);
    for (size_t i = 0; i < n + 16; i++)
        x[i] = frand();
    return x;
}

static double ref_dot(const float *a, const float *b, size_t d)
{
    double s = 0;
    for (size_t i = 0; i < d; i++)
        s += (double)a[i] * b[i];
    return s;
}

static double ref_norm(const float *a, size_t d)
{
    return sqrt(ref_dot(a, a, d));
}

/* |got - want| within rel of the magnitude of the terms (sum of |a_i b_i|). */
static void assert_close(double got, double want, double scale, double rel)
{
    if (!(fabs(got - want) <= rel * (scale > 1e-30 ? scale : 1e-30))) {
        print_error("got %.9g want %.9g (scale %.3g)\n", got, want, scale);
        fail();
    }
}

static dspy_vec *cpu(int threads, uint64_t budget)
{
    struct dspy_vec_options o = DSPY_VEC_OPTIONS_INIT;
    dspy_vec *v;
    o.device = "cpu";
    o.threads = threads;
    o.memory_budget = budget;
    assert_int_equal(dspy_vec_new(&o, &v, NULL), DSPY_OK);
    return v;
}

static const size_t dims[] = { 1, 2, 3, 7, 15, 16, 17, 31, 33, 63, 64, 65, 100, 383, 385 };

static void devices_and_fallback(void **state)
{
    (void)state;
    struct dspy_vec_info info;
    dspy_vec_probe(&info);
    assert_true(info.ndevices >= 1);
    assert_string_equal(info.devices[0].id, "cpu");
    assert_true(info.devices[0].cores >= 1);
    assert_true(info.devices[0].memory_bytes > 0);
    assert_true(!strcmp(info.devices[0].simd, "avx512") || !strcmp(info.devices[0].simd, "avx2") ||
                !strcmp(info.devices[0].simd, "scalar"));
    assert_non_null(strstr(info.blas, "OpenBLAS"));
    dspy_vec *v;
    struct dspy_error err;
    assert_int_equal(dspy_vec_new(NULL, &v, &err), DSPY_OK);
    if (!info.cuda_available) {
        /* No GPU here: "auto" runs on the CPU and says why, explicit CUDA fails clearly. */
        assert_true(strlen(info.cuda_reason) > 0);
        assert_int_equal(info.ndevices, 1);
        assert_string_equal(dspy_vec_device(v), "cpu");
        assert_non_null(dspy_vec_fallback_reason(v));
        assert_non_null(strstr(dspy_vec_fallback_reason(v), info.cuda_reason));
        dspy_vec *g = (dspy_vec *)1;
        struct dspy_vec_options o = DSPY_VEC_OPTIONS_INIT;
        o.device = "cuda";
        assert_int_equal(dspy_vec_new(&o, &g, &err), DSPY_EUNSUPPORTED);
        assert_null(g);
        assert_non_null(strstr(err.message, "cuda"));
        assert_non_null(strstr(err.message, info.cuda_reason));
        assert_int_equal(dspy_vec_set_device(v, "cuda:0", &err), DSPY_EUNSUPPORTED);
        assert_string_equal(dspy_vec_device(v), "cpu");
    } else {
        assert_true(info.ndevices >= 2);
        assert_string_equal(dspy_vec_device(v), "cuda:0");
        assert_null(dspy_vec_fallback_reason(v));
    }
    dspy_vec_free(v);
    const char *bad[] = { "gpu", "cuda:", "cuda:x", "cuda:99", "CPU", "" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct dspy_vec_options o = DSPY_VEC_OPTIONS_INIT;
        o.device = bad[i];
        assert_int_equal(dspy_vec_new(&o, &v, &err), DSPY_EINVAL);
        assert_non_null(strstr(err.message, "not one of"));
    }
    v = cpu(1, 0);
    assert_null(dspy_vec_fallback_reason(v));
    assert_int_equal(dspy_vec_set_device(v, "cpu", &err), DSPY_OK);
    assert_string_equal(dspy_vec_device(v), "cpu");
    dspy_vec_free(v);
}

static void pair_kernels_every_level(void **state)
{
    (void)state;
    const struct dspy__vec_kern *levels[3];
    int nl = dspy__vec_kern_levels(levels, 3);
    assert_true(nl >= 1);
    assert_string_equal(levels[nl - 1]->simd, "scalar");
    for (int l = 0; l < nl; l++)
        for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++) {
            size_t d = dims[di];
            float *a = rand_vec(d + 1), *b = rand_vec(d + 1);
            /* Off by one float: not 16- or 64-byte aligned. */
            const float *ua = a + 1, *ub = b + 1;
            double scale = 0, l2 = 0;
            for (size_t i = 0; i < d; i++) {
                scale += fabs((double)ua[i] * ub[i]);
                l2 += ((double)ua[i] - ub[i]) * ((double)ua[i] - ub[i]);
            }
            assert_close(levels[l]->dot(ua, ub, d), ref_dot(ua, ub, d), scale, 1e-5);
            assert_close(levels[l]->l2sq(ua, ub, d), l2, l2, 1e-5);
            if (l == 0) {
                assert_close(dspy_vec_dot(ua, ub, d), ref_dot(ua, ub, d), scale, 1e-5);
                assert_close(dspy_vec_l2sq(ua, ub, d), l2, l2, 1e-5);
                double c = ref_dot(ua, ub, d) / (ref_norm(ua, d) * ref_norm(ub, d));
                assert_close(dspy_vec_cosine(ua, ub, d), c, 1, 1e-5);
            }
            free(a);
            free(b);
        }
    float z[5] = { 0 }, o[5] = { 1, 2, 3, 4, 5 }, n[5] = { 1, NAN, 0, 0, 0 };
    float inf[5] = { INFINITY, 0, 0, 0, 0 };
    assert_true(dspy_vec_cosine(z, o, 5) == 0.0f);
    assert_true(isnan(dspy_vec_dot(n, o, 5)));
    assert_true(isnan(dspy_vec_cosine(n, o, 5)));
    assert_true(isinf(dspy_vec_dot(inf, o, 5)) && dspy_vec_dot(inf, o, 5) > 0);
}

static void row_kernels_every_level(void **state)
{
    (void)state;
    const struct dspy__vec_kern *levels[3];
    int nl = dspy__vec_kern_levels(levels, 3);
    size_t n = 37, d = 71, ld = 75;
    float *x = rand_vec(n * ld + 1), *q = rand_vec(4 * ld);
    const float *qs[4] = { q, q + ld, q + 2 * ld, q + 3 * ld };
    for (int l = 0; l < nl; l++)
        for (int g = 1; g <= 4; g++) {
            float out[4][40];
            levels[l]->dots_f32(x + 1, ld, n, d, qs, g, out[0], 40);
            for (int j = 0; j < g; j++)
                for (size_t i = 0; i < n; i++)
                    assert_close(out[j][i], ref_dot(x + 1 + i * ld, qs[j], d), (double)d, 1e-6);
        }
    /* F16 and I8 kernels over padded rows. */
    size_t pad16 = dspy__vec_pad(DSPY_VEC_F16, d), pad8 = dspy__vec_pad(DSPY_VEC_I8, d);
    uint16_t *h = calloc(n * pad16, 2);
    int8_t *b = calloc(n * pad8, 1), *q8 = calloc(4 * pad8, 1);
    uint8_t *qu = calloc(4 * pad8, 1);
    int32_t sums[40];
    float *qp = calloc(4 * pad16, 4);
    for (size_t i = 0; i < n; i++) {
        sums[i] = 0;
        for (size_t t = 0; t < d; t++) {
            h[i * pad16 + t] = dspy__vec_f32_to_f16(x[i * ld + t]);
            b[i * pad8 + t] = (int8_t)((int)(frand() * 127.0f));
            sums[i] += b[i * pad8 + t];
        }
    }
    for (int j = 0; j < 4; j++) {
        memcpy(qp + (size_t)j * pad16, qs[j], d * 4);
        dspy__vec_quantize(qs[j], d, pad8, q8 + (size_t)j * pad8, qu + (size_t)j * pad8);
    }
    const float *qps[4] = { qp, qp + pad16, qp + 2 * pad16, qp + 3 * pad16 };
    const int8_t *q8s[4] = { q8, q8 + pad8, q8 + 2 * pad8, q8 + 3 * pad8 };
    const uint8_t *qus[4] = { qu, qu + pad8, qu + 2 * pad8, qu + 3 * pad8 };
    for (int l = 0; l < nl; l++)
        for (int g = 1; g <= 4; g++) {
            float out[4][40];
            int32_t iout[4][40];
            levels[l]->dots_f16(h, pad16, n, pad16, qps, g, out[0], 40);
            levels[l]->dots_i8(b, pad8, n, pad8, q8s, qus, g, sums, iout[0], 40);
            for (int j = 0; j < g; j++)
                for (size_t i = 0; i < n; i++) {
                    double want = 0;
                    int32_t iwant = 0;
                    for (size_t t = 0; t < d; t++) {
                        want += (double)dspy__vec_f16_to_f32(h[i * pad16 + t]) * qs[j][t];
                        iwant += (int32_t)b[i * pad8 + t] * q8s[j][t];
                    }
                    assert_close(out[j][i], want, (double)d, 1e-6);
                    assert_int_equal(iout[j][i], iwant);
                }
        }
    free(x), free(q), free(h), free(b), free(q8), free(qu), free(qp);
}

static void f16_conversion(void **state)
{
    (void)state;
    struct {
        float f;
        uint16_t h;
    } cases[] = {
        { 0.0f, 0x0000 },           { -0.0f, 0x8000 },
        { 1.0f, 0x3c00 },           { -2.0f, 0xc000 },
        { 65504.0f, 0x7bff },       { 65520.0f, 0x7c00 }, /* rounds up to Inf */
        { 1e10f, 0x7c00 },          { INFINITY, 0x7c00 },
        { -INFINITY, 0xfc00 },      { 5.9604645e-8f, 0x0001 },  /* smallest subnormal */
        { 2.9802322e-8f, 0x0000 },                              /* half of it: ties to even (0) */
        { 1.0009766f, 0x3c01 },     { 1.00048828125f, 0x3c00 }, /* tie to even */
        { 1.00146484375f, 0x3c02 },                             /* tie, odd below: up */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(dspy__vec_f32_to_f16(cases[i].f), cases[i].h);
        if (cases[i].h != 0x7c00 || isinf(cases[i].f))
            if (cases[i].f == 0 || fabsf(cases[i].f) >= 5.9604645e-8f)
                assert_true(dspy__vec_f16_to_f32(cases[i].h) == cases[i].f ||
                            cases[i].h == 0x3c00 || cases[i].h == 0x3c02);
    }
    assert_true(isnan(dspy__vec_f16_to_f32(dspy__vec_f32_to_f16(NAN))));
    for (uint32_t h = 0; h < 0x7c00; h++) /* every finite half survives the round trip */
        assert_int_equal(dspy__vec_f32_to_f16(dspy__vec_f16_to_f32((uint16_t)h)), h);
}

static void normalize_rows(void **state)
{
    (void)state;
    dspy_vec *v = cpu(1, 0);
    size_t n = 9, d = 67, ld = 70;
    float *x = rand_vec(n * ld + 1), *u = x + 1;
    float *keep = malloc(n * ld * 4);
    memset(u + 2 * ld, 0, d * 4); /* a zero row */
    u[4 * ld + 5] = NAN;          /* a NaN row */
    u[5 * ld + 3] = 1e30f;        /* a huge one */
    for (size_t i = 0; i < n; i++)
        u[i * ld + d] = 42.0f; /* between rows: must not be touched */
    memcpy(keep, u, n * ld * 4);
    assert_int_equal(dspy_vec_normalize(v, u, n, d, ld, NULL), DSPY_OK);
    for (size_t i = 0; i < n; i++) {
        assert_true(u[i * ld + d] == 42.0f);
        if (i == 2) {
            for (size_t t = 0; t < d; t++)
                assert_true(u[i * ld + t] == 0.0f);
        } else if (i == 4) {
            for (size_t t = 0; t < d; t++)
                assert_true(isnan(u[i * ld + t]));
        } else if (i != 5) {
            double nrm = ref_norm(keep + i * ld, d);
            assert_close(ref_norm(u + i * ld, d), 1.0, 1, 1e-5);
            for (size_t t = 0; t < d; t++)
                assert_close(u[i * ld + t], keep[i * ld + t] / nrm, 1, 1e-5);
        }
    }
    /* 1e30 squared overflows float: the norm is Inf and the row becomes zeros. */
    assert_true(u[5 * ld + 3] == 0.0f);
    free(x);
    free(keep);
    dspy_vec_free(v);
}

static void matmul_vs_reference(void **state)
{
    (void)state;
    dspy_vec *v = cpu(1, 0);
    const size_t shapes[][3] = {
        { 1, 13, 33 }, { 7, 13, 33 }, { 2, 1, 5 }, { 31, 17, 385 }, { 65, 9, 3 }
    };
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
        for (int tb = 0; tb < 2; tb++) {
            size_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
            size_t lda = k + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
            float *a = rand_vec(m * lda + 1), *b = rand_vec((tb ? n : k) * ldb + 1);
            float *c = malloc((m * ldc + 1) * 4);
            for (size_t i = 0; i < m * ldc + 1; i++)
                c[i] = NAN; /* overwritten, never read */
            assert_int_equal(dspy_vec_matmul(v, m, n, k, a + 1, lda, b + 1, ldb, tb, c + 1, ldc,
                                             NULL),
                             DSPY_OK);
            for (size_t i = 0; i < m; i++)
                for (size_t j = 0; j < n; j++) {
                    double want = 0;
                    for (size_t t = 0; t < k; t++)
                        want += (double)a[1 + i * lda + t] *
                                (tb ? b[1 + j * ldb + t] : b[1 + t * ldb + j]);
                    assert_close(c[1 + i * ldc + j], want, (double)k, 1e-5);
                }
            free(a), free(b), free(c);
        }
    struct dspy_error err;
    float one = 1;
    assert_int_equal(dspy_vec_matmul(v, 2, 2, 4, &one, 1, &one, 4, true, &one, 2, &err),
                     DSPY_EINVAL);
    assert_non_null(strstr(err.message, "leading dimension"));
    dspy_vec_free(v);
}

static void scores_vs_reference(void **state)
{
    (void)state;
    const size_t nqs[] = { 1, 3, 9 };
    for (int budgeted = 0; budgeted < 2; budgeted++) {
        /* The budget forces the batched form to take the row norms in chunks. */
        dspy_vec *v = cpu(1, budgeted ? 200 : 0);
        for (size_t a = 0; a < 3; a++)
            for (int met = 0; met < 3; met++) {
                size_t nq = nqs[a], n = 45, d = 19, ldq = 21, ldx = 20, ldo = 47;
                float *q = rand_vec(nq * ldq), *x = rand_vec(n * ldx);
                float *out = calloc(nq * ldo, 4);
                memset(x + 3 * ldx, 0, d * 4); /* a zero row */
                assert_int_equal(dspy_vec_scores(v, (enum dspy_vec_metric)met, q, nq, ldq, x, n,
                                                 ldx, d, out, ldo, NULL),
                                 DSPY_OK);
                for (size_t i = 0; i < nq; i++)
                    for (size_t j = 0; j < n; j++) {
                        const float *qi = q + i * ldq, *xj = x + j * ldx;
                        double want = ref_dot(qi, xj, d), got = out[i * ldo + j];
                        if (met == DSPY_VEC_COSINE)
                            want = j == 3 ? 0 : want / (ref_norm(qi, d) * ref_norm(xj, d));
                        if (met == DSPY_VEC_L2) {
                            want = 0;
                            for (size_t t = 0; t < d; t++)
                                want += ((double)qi[t] - xj[t]) * ((double)qi[t] - xj[t]);
                        }
                        assert_close(got, want, (double)d, 1e-5);
                    }
                free(q), free(x), free(out);
            }
        struct dspy_vec_mem mem;
        dspy_vec_memory(v, &mem);
        assert_int_equal(mem.current_bytes, 0);
        if (budgeted)
            assert_true(mem.peak_bytes <= 200);
        dspy_vec_free(v);
    }
}

/* ---- top-k ---- */

struct ref_hit {
    double key;
    int64_t id;
};

static int ref_cmp(const void *a, const void *b)
{
    const struct ref_hit *x = a, *y = b;
    if (x->key != y->key)
        return x->key > y->key ? -1 : 1;
    return x->id < y->id ? -1 : 1;
}

/* The decoded value of stored element (i, t), read back from the matrix itself. */
static double stored(const struct dspy_vec_matrix *m, size_t i, size_t t)
{
    if (m->storage == DSPY_VEC_F32)
        return ((const float *)m->rows)[i * m->ld + t];
    if (m->storage == DSPY_VEC_F16)
        return dspy__vec_f16_to_f32(((const uint16_t *)m->rows)[i * m->ld + t]);
    return (double)((const int8_t *)m->rows)[i * m->ld + t] * m->scales[i];
}

/* Reference top-k in float64 over the stored values (and, for I8, the quantized query). */
static void check_topk(const struct dspy_vec_matrix *m, enum dspy_vec_metric met, const float *q,
                       size_t nq, size_t ldq, size_t k, const float *scores, const int64_t *ids)
{
    struct ref_hit *all = malloc((m->n + 1) * sizeof(*all));
    int8_t *q8 = malloc(m->ld + 64);
    for (size_t a = 0; a < nq; a++) {
        const float *qa = q + a * ldq;
        double qv[512], qn = 0;
        float qscale = 1;
        if (m->storage == DSPY_VEC_I8)
            qscale = dspy__vec_quantize(qa, m->d, dspy__vec_pad(DSPY_VEC_I8, m->d), q8, NULL);
        for (size_t t = 0; t < m->d; t++) {
            qv[t] = m->storage == DSPY_VEC_I8 ? (double)q8[t] * qscale : qa[t];
            qn += (double)qa[t] * qa[t];
        }
        qn = sqrt(qn);
        size_t valid = 0;
        for (size_t i = 0; i < m->n; i++) {
            double r = 0, xn = 0, l2 = 0;
            for (size_t t = 0; t < m->d; t++) {
                double x = stored(m, i, t);
                r += x * qv[t];
                xn += x * x;
                l2 += (x - qa[t]) * (x - qa[t]);
            }
            xn = sqrt(xn);
            double key = met == DSPY_VEC_IP       ? r
                         : met == DSPY_VEC_COSINE ? ((xn > 0 && qn > 0) ? r / (xn * qn) : 0)
                                                  : -l2;
            if (key == key)
                all[valid++] = (struct ref_hit){ key, (int64_t)i };
        }
        qsort(all, valid, sizeof(*all), ref_cmp);
        for (size_t j = 0; j < k; j++) {
            float s = scores[a * k + j];
            int64_t id = ids[a * k + j];
            if (j >= valid) {
                assert_int_equal(id, -1);
                assert_true(isinf(s) && (met == DSPY_VEC_L2 ? s > 0 : s < 0));
                continue;
            }
            double want = met == DSPY_VEC_L2 ? -all[j].key : all[j].key;
            /* Scores match the reference ranking position by position (ids may swap only
             * between near-equal scores), and each id's score is its own. */
            double tol = met == DSPY_VEC_COSINE ? 1e-5 : 1e-5 * (double)m->d;
            if (m->storage == DSPY_VEC_I8 && met == DSPY_VEC_L2)
                tol = 0.05 * (double)m->d; /* L2 uses |x|²+|q|²-2x·q with the quantized query */
            assert_close(s, want, 1, tol);
            assert_true(id >= 0 && (size_t)id < m->n);
            if (j > 0)
                assert_true(met == DSPY_VEC_L2 ? s >= scores[a * k + j - 1]
                                               : s <= scores[a * k + j - 1]);
        }
    }
    free(all);
    free(q8);
}

static void topk_storages_metrics(void **state)
{
    (void)state;
    dspy_vec *v = cpu(1, 0);
    const size_t nqs[] = { 1, 5, 9, 20 };
    const size_t ks[] = { 1, 10, 300 }; /* 300 > n */
    size_t n = 203, d = 37, ld = 41;
    float *x = rand_vec(n * ld), *q = rand_vec(20 * 39);
    for (int st = 0; st < 3; st++)
        for (int borrow = 0; borrow < (st == 0 ? 2 : 1); borrow++) {
            dspy_vec_matrix *m;
            assert_int_equal(dspy_vec_matrix_new(v, x, n, d, ld, (enum dspy_vec_storage)st,
                                                 borrow ? DSPY_VEC_BORROW : 0, &m, NULL),
                             DSPY_OK);
            assert_int_equal(dspy_vec_matrix_rows(m), n);
            uint64_t sum, want = 0;
            assert_int_equal(dspy_vec_matrix_read(v, m, &sum, NULL), DSPY_OK);
            size_t row = m->ld * dspy__vec_elem_size(m->storage);
            for (size_t i = 0; i < n; i++)
                want += dspy__vec_kern_scalar()->read((const char *)m->rows + i * row,
                                                      borrow ? d * 4 / 8 * 8 : row);
            assert_true(sum == want);
            for (size_t a = 0; a < 4; a++)
                for (size_t ki = 0; ki < 3; ki++)
                    for (int met = 0; met < 3; met++) {
                        size_t nq = nqs[a], k = ks[ki];
                        float *sc = malloc(nq * k * 4);
                        int64_t *id = malloc(nq * k * 8);
                        assert_int_equal(dspy_vec_topk(v, m, (enum dspy_vec_metric)met, q, nq, 39,
                                                       k, sc, id, NULL),
                                         DSPY_OK);
                        check_topk(m, (enum dspy_vec_metric)met, q, nq, 39, k, sc, id);
                        free(sc);
                        free(id);
                    }
            dspy_vec_matrix_free(m);
        }
    free(x);
    free(q);
    dspy_vec_free(v);
}

static void topk_nan_inf_zero(void **state)
{
    (void)state;
    dspy_vec *v = cpu(1, 0);
    size_t n = 10, d = 5;
    float x[50], q[5] = { 1, 0.5f, 0.25f, 0, 0 }, zq[5] = { 0 };
    for (size_t i = 0; i < n * d; i++)
        x[i] = (float)(i % 7) * 0.1f;
    x[2 * d + 1] = NAN;          /* row 2 is never returned */
    x[6 * d] = INFINITY;         /* row 6 scores +Inf under IP */
    memset(x + 8 * d, 0, d * 4); /* row 8 is zero */
    for (int st = 0; st < 3; st++) {
        dspy_vec_matrix *m;
        float sc[12];
        int64_t id[12];
        assert_int_equal(dspy_vec_matrix_new(v, x, n, d, d, (enum dspy_vec_storage)st, 0, &m, NULL),
                         DSPY_OK);
        assert_int_equal(dspy_vec_topk(v, m, DSPY_VEC_IP, q, 1, d, 12, sc, id, NULL), DSPY_OK);
        size_t got = 0;
        for (size_t j = 0; j < 12; j++) {
            assert_true(id[j] != 2);
            if (id[j] >= 0)
                got++;
        }
        if (st != DSPY_VEC_I8) {
            assert_int_equal(got, 9); /* all but the NaN row; then two empty slots */
            assert_int_equal(id[0], 6);
            assert_true(isinf(sc[0]));
        } else {
            assert_int_equal(got, 8); /* I8 rows with NaN or Inf have no scale: dropped */
            assert_true(id[0] != 6);
        }
        assert_int_equal(id[11], -1);
        assert_true(isinf(sc[11]) && sc[11] < 0);
        /* Cosine against the zero row is 0, and a zero query scores 0 everywhere. */
        assert_int_equal(dspy_vec_topk(v, m, DSPY_VEC_COSINE, zq, 1, d, 3, sc, id, NULL), DSPY_OK);
        for (size_t j = 0; j < 3; j++)
            assert_true(sc[j] == 0.0f && id[j] >= 0);
        assert_int_equal(id[0], 0); /* ties go to the lower id */
        assert_int_equal(id[1], 1);
        dspy_vec_matrix_free(m);
    }
    /* An empty matrix: every slot is padding. */
    dspy_vec_matrix *m;
    float sc[3 * 9];
    int64_t id[3 * 9];
    float qs[9 * 5] = { 0 };
    assert_int_equal(dspy_vec_matrix_new(v, NULL, 0, d, d, DSPY_VEC_F32, 0, &m, NULL), DSPY_OK);
    assert_int_equal(dspy_vec_topk(v, m, DSPY_VEC_L2, qs, 9, d, 3, sc, id, NULL), DSPY_OK);
    for (size_t j = 0; j < 27; j++)
        assert_true(id[j] == -1 && isinf(sc[j]) && sc[j] > 0);
    dspy_vec_matrix_free(m);
    dspy_vec_free(v);
}

static void topk_budget_and_splitting(void **state)
{
    (void)state;
    size_t n = 500, d = 24, nq = 40, k = 7;
    float *x = rand_vec(n * d), *q = rand_vec(nq * d);
    float *s0 = malloc(nq * k * 4), *s1 = malloc(nq * k * 4);
    int64_t *i0 = malloc(nq * k * 8), *i1 = malloc(nq * k * 8);
    dspy_vec *big = cpu(1, 0);
    dspy_vec_matrix *m;
    assert_int_equal(dspy_vec_matrix_new(big, x, n, d, d, DSPY_VEC_F32, 0, &m, NULL), DSPY_OK);
    uint64_t mbytes = dspy_vec_matrix_bytes(m);
    assert_true(mbytes >= n * d * 4);
    assert_int_equal(dspy_vec_topk(big, m, DSPY_VEC_IP, q, nq, d, k, s0, i0, NULL), DSPY_OK);
    struct dspy_vec_mem mem;
    dspy_vec_memory(big, &mem);
    assert_int_equal(mem.current_bytes, mbytes);
    assert_true(mem.peak_bytes > mbytes); /* scratch came and went */
    assert_true(mem.allocations >= 2);
    dspy_vec_memory_reset_peak(big);
    dspy_vec_memory(big, &mem);
    assert_int_equal(mem.peak_bytes, mbytes);
    dspy_vec_matrix_free(m);
    dspy_vec_memory(big, &mem);
    assert_int_equal(mem.current_bytes, 0);

    /* A budget below the matrix: DSPY_ENOMEM with the figures, counted as a failure. */
    struct dspy_error err;
    dspy_vec *small = cpu(1, mbytes - 1);
    assert_int_equal(dspy_vec_matrix_new(small, x, n, d, d, DSPY_VEC_F32, 0, &m, &err),
                     DSPY_ENOMEM);
    assert_null(m);
    assert_non_null(strstr(err.message, "budget"));
    dspy_vec_memory(small, &mem);
    assert_int_equal(mem.failures, 1);
    assert_int_equal(mem.current_bytes, 0);
    assert_int_equal(mem.budget_bytes, mbytes - 1);
    dspy_vec_free(small);

    /* Just above it: the queries go through in small batches, same answers, peak within. */
    uint64_t budget = mbytes + 2048;
    small = cpu(1, budget);
    assert_int_equal(dspy_vec_matrix_new(small, x, n, d, d, DSPY_VEC_F32, 0, &m, NULL), DSPY_OK);
    assert_int_equal(dspy_vec_topk(small, m, DSPY_VEC_IP, q, nq, d, k, s1, i1, NULL), DSPY_OK);
    assert_memory_equal(i0, i1, nq * k * 8);
    /* Another batch shape may take another BLAS blocking: the same scores to rounding. */
    for (size_t j = 0; j < nq * k; j++)
        assert_true(fabsf(s0[j] - s1[j]) <= 1e-6f * (1 + fabsf(s0[j])));
    dspy_vec_memory(small, &mem);
    assert_true(mem.peak_bytes <= budget);
    /* Too little left even for one query: a clean DSPY_ENOMEM. */
    dspy_vec_matrix *m2;
    assert_int_equal(dspy_vec_matrix_new(small, x, 4, d, d, DSPY_VEC_I8, 0, &m2, NULL), DSPY_OK);
    assert_int_equal(dspy_vec_topk(small, m, DSPY_VEC_IP, q, nq, d, 400, s1, i1, &err),
                     DSPY_ENOMEM);
    assert_non_null(strstr(err.message, "even for one query"));
    /* Switching devices needs the matrices gone. */
    assert_int_equal(dspy_vec_set_device(small, "cpu", &err), DSPY_EBUSY);
    dspy_vec_matrix_free(m2);
    dspy_vec_matrix_free(m);
    assert_int_equal(dspy_vec_set_device(small, "cpu", &err), DSPY_OK);
    dspy_vec_free(small);
    dspy_vec_free(big);
    free(x), free(q), free(s0), free(s1), free(i0), free(i1);
}

/* Large enough for the scan to split over threads; the answer must not change. */
static void topk_threads_agree(void **state)
{
    (void)state;
    size_t n = 70001, d = 33, nq = 3, k = 5;
    float *x = rand_vec(n * d), *q = rand_vec(nq * d);
    float s[2][15];
    int64_t id[2][15];
    for (int t = 0; t < 2; t++) {
        dspy_vec *v = cpu(t ? 4 : 1, 0);
        dspy_vec_matrix *m;
        assert_int_equal(dspy_vec_matrix_new(v, x, n, d, d, DSPY_VEC_I8, 0, &m, NULL), DSPY_OK);
        assert_int_equal(dspy_vec_topk(v, m, DSPY_VEC_COSINE, q, nq, d, k, s[t], id[t], NULL),
                         DSPY_OK);
        dspy_vec_free(v); /* frees the matrix too */
    }
    assert_memory_equal(id[0], id[1], sizeof(id[0]));
    assert_memory_equal(s[0], s[1], sizeof(s[0]));
    free(x);
    free(q);
}

struct worker {
    const float *x, *q;
    size_t n, d;
    int64_t ids[10];
    float scores[10];
};

static void *search_worker(void *arg)
{
    struct worker *w = arg;
    struct dspy_vec_options o = DSPY_VEC_OPTIONS_INIT;
    dspy_vec *v;
    dspy_vec_matrix *m;
    o.device = "cpu";
    o.threads = 2;
    if (dspy_vec_new(&o, &v, NULL))
        return NULL;
    if (!dspy_vec_matrix_new(v, w->x, w->n, w->d, w->d, DSPY_VEC_F16, 0, &m, NULL))
        dspy_vec_topk(v, m, DSPY_VEC_L2, w->q, 2, w->d, 5, w->scores, w->ids, NULL);
    dspy_vec_free(v);
    return NULL;
}

static void contexts_on_two_threads(void **state)
{
    (void)state;
    size_t n = 40000, d = 64;
    float *x = rand_vec(n * d), *q = rand_vec(2 * d);
    struct worker w[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        w[i] = (struct worker){ .x = x, .q = q, .n = n, .d = d };
        memset(w[i].ids, 0xff, sizeof(w[i].ids));
        assert_int_equal(pthread_create(&t[i], NULL, search_worker, &w[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    assert_true(w[0].ids[0] >= 0);
    assert_memory_equal(w[0].ids, w[1].ids, sizeof(w[0].ids));
    assert_memory_equal(w[0].scores, w[1].scores, sizeof(w[0].scores));
    free(x);
    free(q);
}

/* Fail the n-th allocation, for every n, through a whole session: clean errors, no leak. */
static long fail_at = -1, calls;
static void *failing_malloc(size_t n)
{
    return calls++ == fail_at ? NULL : malloc(n);
}
static void *failing_realloc(void *p, size_t n)
{
    return calls++ == fail_at ? NULL : realloc(p, n);
}

static int session(void)
{
    float x[40 * 9], q[3 * 9], s[3 * 4], all[3 * 40];
    int64_t id[3 * 4];
    for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++)
        x[i] = (float)(i % 11) - 5;
    memcpy(q, x, sizeof(q));
    dspy_vec *v;
    dspy_vec_matrix *m = NULL;
    struct dspy_vec_options o = DSPY_VEC_OPTIONS_INIT;
    o.device = "cpu";
    o.threads = 1;
    dspy_status rc = dspy_vec_new(&o, &v, NULL);
    if (rc)
        return rc;
    for (int st = 0; st < 3 && !rc; st++) {
        rc = dspy_vec_matrix_new(v, x, 40, 9, 9, (enum dspy_vec_storage)st, 0, &m, NULL);
        if (!rc)
            rc = dspy_vec_topk(v, m, DSPY_VEC_COSINE, q, 3, 9, 4, s, id, NULL);
        if (!rc)
            rc = dspy_vec_scores(v, DSPY_VEC_L2, q, 3, 9, x, 40, 9, 9, all, 40, NULL);
        dspy_vec_matrix_free(m);
        m = NULL;
    }
    dspy_vec_free(v);
    return rc;
}

static void failing_allocations(void **state)
{
    (void)state;
    struct dspy_allocator a = { failing_malloc, failing_realloc, free };
    int failed = 0;
    for (fail_at = 0; fail_at < 10000; fail_at++) {
        calls = 0;
        dspy_set_allocator(&a);
        int rc = session();
        dspy_set_allocator(NULL);
        if (!rc && calls <= fail_at)
            break;
        assert_int_equal(rc, DSPY_ENOMEM);
        failed++;
    }
    assert_true(fail_at < 10000);
    assert_true(failed >= 4);
}

/* set_row replaces one stored row in every storage: top-k then finds it where it was put,
 * with the score a fresh matrix of the same rows gives; borrowed rows and rows out of
 * range are refused. */
static void matrix_set_row(void **state)
{
    (void)state;
    dspy_vec *v = cpu(1, 0);
    size_t n = 6, d = 40;
    float x[6 * 40], y[40], q[40];
    for (size_t i = 0; i < n * d; i++)
        x[i] = (float)((i * 7) % 11) * 0.1f - 0.5f;
    for (size_t t = 0; t < d; t++)
        y[t] = q[t] = (float)(t % 5) - 2.0f;
    for (int st = 0; st < 3; st++) {
        dspy_vec_matrix *m, *fresh;
        float sc[1], fsc[1];
        int64_t id[1], fid[1];
        assert_int_equal(dspy_vec_matrix_new(v, x, n, d, d, (enum dspy_vec_storage)st, 0, &m, NULL),
                         DSPY_OK);
        assert_int_equal(dspy_vec_matrix_set_row(m, 4, y, NULL), DSPY_OK);
        assert_int_equal(dspy_vec_topk(v, m, DSPY_VEC_COSINE, q, 1, d, 1, sc, id, NULL), DSPY_OK);
        assert_int_equal(id[0], 4);
        float xs[6 * 40];
        memcpy(xs, x, sizeof(xs));
        memcpy(xs + 4 * d, y, sizeof(y));
        assert_int_equal(dspy_vec_matrix_new(v, xs, n, d, d, (enum dspy_vec_storage)st, 0, &fresh,
                                             NULL),
                         DSPY_OK);
        assert_int_equal(dspy_vec_topk(v, fresh, DSPY_VEC_COSINE, q, 1, d, 1, fsc, fid, NULL),
                         DSPY_OK);
        assert_int_equal(fid[0], 4);
        assert_true(sc[0] == fsc[0]);
        assert_int_equal(dspy_vec_matrix_set_row(m, n, y, NULL), DSPY_EINVAL);
        dspy_vec_matrix_free(fresh);
        dspy_vec_matrix_free(m);
    }
    dspy_vec_matrix *b;
    assert_int_equal(dspy_vec_matrix_new(v, x, n, d, d, DSPY_VEC_F32, DSPY_VEC_BORROW, &b, NULL),
                     DSPY_OK);
    assert_int_equal(dspy_vec_matrix_set_row(b, 0, y, NULL), DSPY_EINVAL);
    dspy_vec_matrix_free(b);
    dspy_vec_free(v);
}

int main(void)
{
    /* OpenBLAS's own thread pool synchronizes in code ThreadSanitizer cannot see (it reports
     * its workers' writes as races with ours); these tests check our threads, not its. */
    openblas_set_num_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(devices_and_fallback),    cmocka_unit_test(pair_kernels_every_level),
        cmocka_unit_test(row_kernels_every_level), cmocka_unit_test(f16_conversion),
        cmocka_unit_test(normalize_rows),          cmocka_unit_test(matmul_vs_reference),
        cmocka_unit_test(scores_vs_reference),     cmocka_unit_test(topk_storages_metrics),
        cmocka_unit_test(topk_nan_inf_zero),       cmocka_unit_test(topk_budget_and_splitting),
        cmocka_unit_test(topk_threads_agree),      cmocka_unit_test(contexts_on_two_threads),
        cmocka_unit_test(failing_allocations),     cmocka_unit_test(matrix_set_row),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

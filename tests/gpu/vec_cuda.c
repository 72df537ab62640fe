/* Tests of the vec layer's CUDA backend, run only where a GPU is present (`ctest -L gpu`):
 * every kernel on "cuda" against the CPU backend and a float64 reference, top-k over
 * F32/F16/I8 storage (k within and beyond the on-GPU selection, k > n), batches split to
 * fit a small budget, memory accounting and switching devices. Without a usable GPU it
 * fails: it is never a silent pass. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dspyc/vec.h>

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static float *rand_vec(size_t n)
{
    float *x = malloc(n * sizeof(float) + 64);
    for (size_t i = 0; i < n + 16; i++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        x[i] = (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    return x;
}

static dspy_vec *open_dev(const char *dev, uint64_t budget)
{
    struct dspy_vec_options o = DSPY_VEC_OPTIONS_INIT;
    struct dspy_error err;
    dspy_vec *v = NULL;
    o.device = dev;
    o.memory_budget = budget;
    o.threads = 1;
    if (dspy_vec_new(&o, &v, &err)) {
        print_error("cannot open %s: %s\n", dev, err.message);
        fail();
    }
    return v;
}

static void close_enough(const float *a, const float *b, size_t n, double tol)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)a[i] - b[i]) <= tol * (1.0 + fabs((double)b[i])))) {
            print_error("at %zu: %.9g vs %.9g\n", i, a[i], b[i]);
            fail();
        }
}

static void gpu_is_there(void **state)
{
    (void)state;
    struct dspy_vec_info info;
    dspy_vec_probe(&info);
    if (!info.cuda_available) {
        print_error("no usable CUDA device: %s\n", info.cuda_reason);
        fail();
    }
    assert_true(info.ndevices >= 2);
    assert_true(info.devices[1].memory_bytes > 0);
    assert_true(info.devices[1].cc_major >= 3);
    dspy_vec *v = open_dev("auto", 0);
    assert_string_equal(dspy_vec_device(v), "cuda:0");
    assert_null(dspy_vec_fallback_reason(v));
    struct dspy_error err;
    assert_int_equal(dspy_vec_set_device(v, "cpu", &err), DSPY_OK);
    assert_string_equal(dspy_vec_device(v), "cpu");
    assert_int_equal(dspy_vec_set_device(v, "cuda:0", &err), DSPY_OK);
    assert_string_equal(dspy_vec_device(v), "cuda:0");
    dspy_vec_free(v);
}

static void kernels_match_cpu(void **state)
{
    (void)state;
    dspy_vec *g = open_dev("cuda", 0), *c = open_dev("cpu", 0);
    size_t m = 37, n = 1003, k = 65, ld = 67;
    float *a = rand_vec(m * ld), *b = rand_vec(n * ld);
    float *cg = calloc(m * n, 4), *cc = calloc(m * n, 4);
    for (int tb = 1; tb >= 0; tb--) {
        size_t ldb = tb ? ld : n;
        float *bb = tb ? b : rand_vec(k * n);
        assert_int_equal(dspy_vec_matmul(g, m, n, k, a, ld, bb, ldb, tb, cg, n, NULL), DSPY_OK);
        assert_int_equal(dspy_vec_matmul(c, m, n, k, a, ld, bb, ldb, tb, cc, n, NULL), DSPY_OK);
        close_enough(cg, cc, m * n, 1e-4);
        if (!tb)
            free(bb);
    }
    for (int met = 0; met < 3; met++) {
        assert_int_equal(dspy_vec_scores(g, (enum dspy_vec_metric)met, a, m, ld, b, n, ld, k, cg, n,
                                         NULL),
                         DSPY_OK);
        assert_int_equal(dspy_vec_scores(c, (enum dspy_vec_metric)met, a, m, ld, b, n, ld, k, cc, n,
                                         NULL),
                         DSPY_OK);
        close_enough(cg, cc, m * n, met == 2 ? 1e-3 : 1e-4);
    }
    float *x1 = rand_vec(n * ld), *x2 = malloc(n * ld * 4);
    memset(x1 + 5 * ld, 0, k * 4); /* a zero row stays zero */
    memcpy(x2, x1, n * ld * 4);
    assert_int_equal(dspy_vec_normalize(g, x1, n, k, ld, NULL), DSPY_OK);
    assert_int_equal(dspy_vec_normalize(c, x2, n, k, ld, NULL), DSPY_OK);
    close_enough(x1, x2, n * ld, 1e-5);
    for (size_t t = 0; t < k; t++)
        assert_true(x1[5 * ld + t] == 0.0f);
    free(a), free(b), free(cg), free(cc), free(x1), free(x2);
    dspy_vec_free(g);
    dspy_vec_free(c);
}

static void topk_matches_cpu(void **state)
{
    (void)state;
    dspy_vec *g = open_dev("cuda", 0), *c = open_dev("cpu", 0);
    const size_t ns[] = { 50, 20011, 300000 };
    const size_t nqs[] = { 1, 9, 300 };
    const size_t ks[] = { 1, 10, 64, 100 };
    size_t d = 96;
    for (size_t ni = 0; ni < 3; ni++) {
        size_t n = ns[ni];
        float *x = rand_vec(n * d), *q = rand_vec(300 * d);
        x[7 * d + 3] = NAN; /* row 7 never comes back */
        for (int st = 0; st < 3; st++) {
            dspy_vec_matrix *mg, *mc;
            assert_int_equal(dspy_vec_matrix_new(g, x, n, d, d, (enum dspy_vec_storage)st, 0, &mg,
                                                 NULL),
                             DSPY_OK);
            assert_int_equal(dspy_vec_matrix_new(c, x, n, d, d, (enum dspy_vec_storage)st, 0, &mc,
                                                 NULL),
                             DSPY_OK);
            uint64_t sg, sc;
            assert_int_equal(dspy_vec_matrix_read(g, mg, &sg, NULL), DSPY_OK);
            assert_int_equal(dspy_vec_matrix_read(c, mc, &sc, NULL), DSPY_OK);
            assert_true(sg == sc); /* the same stored bytes on both devices */
            for (size_t qi = 0; qi < 3; qi++)
                for (size_t ki = 0; ki < 4; ki++)
                    for (int met = 0; met < 3; met++) {
                        size_t nq = nqs[qi], k = ks[ki];
                        float *s1 = malloc(nq * k * 4), *s2 = malloc(nq * k * 4);
                        int64_t *i1 = malloc(nq * k * 8), *i2 = malloc(nq * k * 8);
                        assert_int_equal(dspy_vec_topk(g, mg, (enum dspy_vec_metric)met, q, nq, d,
                                                       k, s1, i1, NULL),
                                         DSPY_OK);
                        assert_int_equal(dspy_vec_topk(c, mc, (enum dspy_vec_metric)met, q, nq, d,
                                                       k, s2, i2, NULL),
                                         DSPY_OK);
                        /* Same scores position by position; ids equal except where two
                         * scores differ by less than the rounding of either device. */
                        size_t differ = 0;
                        for (size_t e = 0; e < nq * k; e++) {
                            assert_true(i1[e] != 7);
                            if (i2[e] < 0) {
                                assert_int_equal(i1[e], -1);
                                continue;
                            }
                            assert_true(fabsf(s1[e] - s2[e]) <= 1e-3f * (1 + fabsf(s2[e])));
                            differ += i1[e] != i2[e];
                        }
                        assert_true(differ <= nq * k / 50 + 1);
                        free(s1), free(s2), free(i1), free(i2);
                    }
            dspy_vec_matrix_free(mg);
            dspy_vec_matrix_free(mc);
        }
        free(x), free(q);
    }
    dspy_vec_free(g);
    dspy_vec_free(c);
}

static void budget_splits_and_refuses(void **state)
{
    (void)state;
    size_t n = 100000, d = 128, nq = 500, k = 10;
    float *x = rand_vec(n * d), *q = rand_vec(nq * d);
    float *s1 = malloc(nq * k * 4), *s2 = malloc(nq * k * 4);
    int64_t *i1 = malloc(nq * k * 8), *i2 = malloc(nq * k * 8);
    dspy_vec *big = open_dev("cuda", 0);
    dspy_vec_matrix *m;
    assert_int_equal(dspy_vec_matrix_new(big, x, n, d, d, DSPY_VEC_F32, 0, &m, NULL), DSPY_OK);
    uint64_t mbytes = dspy_vec_matrix_bytes(m);
    assert_int_equal(dspy_vec_topk(big, m, DSPY_VEC_IP, q, nq, d, k, s1, i1, NULL), DSPY_OK);
    struct dspy_vec_mem mem;
    dspy_vec_memory(big, &mem);
    assert_true(mem.peak_bytes > mbytes);
    dspy_vec_trim(big);
    dspy_vec_memory(big, &mem);
    assert_int_equal(mem.current_bytes, mbytes);
    dspy_vec_free(big);

    /* 8 MiB beyond the matrix: queries and rows go through in pieces, same answers. */
    uint64_t budget = mbytes + (8u << 20);
    dspy_vec *small = open_dev("cuda", budget);
    assert_int_equal(dspy_vec_matrix_new(small, x, n, d, d, DSPY_VEC_F32, 0, &m, NULL), DSPY_OK);
    assert_int_equal(dspy_vec_topk(small, m, DSPY_VEC_IP, q, nq, d, k, s2, i2, NULL), DSPY_OK);
    dspy_vec_memory(small, &mem);
    assert_true(mem.peak_bytes <= budget);
    close_enough(s2, s1, nq * k, 1e-5);
    float *out = malloc((size_t)nq * 2000 * 4);
    assert_int_equal(dspy_vec_scores(small, DSPY_VEC_COSINE, q, nq, d, x, 2000, d, d, out, 2000,
                                     NULL),
                     DSPY_OK);
    dspy_vec_memory(small, &mem);
    assert_true(mem.peak_bytes <= budget);
    struct dspy_error err;
    dspy_vec_matrix *m2;
    assert_int_equal(dspy_vec_matrix_new(small, x, n, d, d, DSPY_VEC_F32, 0, &m2, &err),
                     DSPY_ENOMEM);
    assert_non_null(strstr(err.message, "budget"));
    dspy_vec_matrix_free(m);
    dspy_vec_free(small);
    free(x), free(q), free(s1), free(s2), free(i1), free(i2), free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gpu_is_there),
        cmocka_unit_test(kernels_match_cpu),
        cmocka_unit_test(topk_matches_cpu),
        cmocka_unit_test(budget_splits_and_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

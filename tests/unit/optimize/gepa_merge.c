/* Unit tests of GEPA's merge proposer (src/optimize/gepa_merge.c) on a two-predictor
 * program: two children of the seed, each with one predictor's instruction rewritten, are
 * merged into the program that has both rewrites; a chain is never merged; the merge
 * subsample takes instances where each parent wins, then ties; Pareto domination as gepa's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <dspyc/dspyc.h>

#include "optimize/gepa_int.h"

#define NV 6

static json_t *cand(const char *a, const char *b)
{
    return json_pack("{s:[s, s], s:[[], []]}", "instructions", a, b, "demos");
}

/* seed {A0, B0}; 1 = seed with the first rewritten, best on instances 0-1; 2 = seed with
 * the second rewritten, best on 2-3; all three tie on 4-5 */
static void make_pool(struct gcand *pool, double *scores, long parent_of_2)
{
    static const double s[3][NV] = { { 0, 0, 0, 0, 1, 1 },
                                     { 1, 1, 0, 0, 1, 1 },
                                     { 0, 0, 1, 1, 1, 1 } };
    memset(pool, 0, 3 * sizeof(*pool));
    pool[0].cand = cand("A0", "B0");
    pool[1].cand = cand("A1", "B0");
    pool[2].cand = parent_of_2 == 1 ? cand("A1", "B1") : cand("A0", "B1");
    for (int i = 0; i < 3; i++) {
        memcpy(scores + i * NV, s[i], sizeof(s[i]));
        pool[i].scores = scores + i * NV;
        pool[i].agg = 0;
        for (int j = 0; j < NV; j++)
            pool[i].agg += 100.0 * s[i][j] / NV;
        pool[i].parent[0] = pool[i].parent[1] = -1;
    }
    pool[1].parent[0] = 0;
    pool[2].parent[0] = parent_of_2;
}

static void release_pool(struct gcand *pool)
{
    for (int i = 0; i < 3; i++)
        json_decref(pool[i].cand);
}

static void merge_combines_both_predictors_changes(void **state)
{
    (void)state;
    struct gcand pool[3];
    double scores[3 * NV];
    bool front[3 * NV], dom[3];
    size_t tried[MAX_POOL][3], ids[3];
    struct merge m = { .on = true, .max = 5, .tried = tried };
    struct dspy__pyrandom rng;
    json_t *merged = NULL;
    make_pool(pool, scores, 0);
    dspy__gepa_dominators(pool, 3, NV, front, dom);
    assert_true(dom[0] && !dom[1] && !dom[2]); /* the seed's fronts all hold a child */
    dspy__pyrandom_seed(&rng, 0);
    assert_int_equal(dspy__gepa_attempt_merge(pool, 3, NV, 2, &m, front, &rng, &merged, ids), 1);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 2);
    assert_int_equal(ids[2], 0);
    json_t *inst = json_object_get(merged, "instructions");
    assert_string_equal(json_string_value(json_array_get(inst, 0)), "A1");
    assert_string_equal(json_string_value(json_array_get(inst, 1)), "B1");
    assert_int_equal(m.ndescs, 1);
    json_decref(merged);
    /* the subsample: 2 where the first parent wins, 2 where the second does, 1 tie */
    size_t sub[MERGE_SUBSAMPLE], wins1 = 0, wins2 = 0, ties = 0;
    assert_int_equal(dspy__gepa_merge_subsample(&pool[1], &pool[2], NV, &rng, sub), 5);
    for (int k = 0; k < 5; k++) {
        wins1 += sub[k] < 2;
        wins2 += sub[k] == 2 || sub[k] == 3;
        ties += sub[k] >= 4;
    }
    assert_true(wins1 == 2 && wins2 == 2 && ties == 1);
    /* the same merge is not proposed twice */
    tried[0][0] = 1, tried[0][1] = 2, tried[0][2] = 0;
    m.ntried = 1;
    merged = NULL;
    assert_int_equal(dspy__gepa_attempt_merge(pool, 3, NV, 2, &m, front, &rng, &merged, ids), 0);
    assert_null(merged);
    dspy_free(m.descs);
    release_pool(pool);
}

static void merge_is_seed_reproducible(void **state)
{
    (void)state;
    struct gcand pool[3];
    double scores[3 * NV];
    bool front[3 * NV];
    size_t tried[MAX_POOL][3], ids[3], sub[2][MERGE_SUBSAMPLE];
    make_pool(pool, scores, 0);
    for (int run = 0; run < 2; run++) {
        struct merge m = { .on = true, .max = 5, .tried = tried };
        struct dspy__pyrandom rng;
        json_t *merged = NULL;
        dspy__pyrandom_seed(&rng, 42);
        assert_int_equal(dspy__gepa_attempt_merge(pool, 3, NV, 2, &m, front, &rng, &merged, ids),
                         1);
        assert_int_equal(dspy__gepa_merge_subsample(&pool[1], &pool[2], NV, &rng, sub[run]), 5);
        json_decref(merged);
        dspy_free(m.descs);
    }
    assert_memory_equal(sub[0], sub[1], sizeof(sub[0]));
    release_pool(pool);
}

static void a_chain_is_not_merged(void **state)
{
    (void)state;
    struct gcand pool[3];
    double scores[3 * NV];
    bool front[3 * NV];
    size_t tried[MAX_POOL][3], ids[3];
    struct merge m = { .on = true, .max = 5, .tried = tried };
    struct dspy__pyrandom rng;
    json_t *merged = NULL;
    make_pool(pool, scores, 1); /* 2 descends from 1: one is the other's ancestor */
    dspy__pyrandom_seed(&rng, 0);
    assert_int_equal(dspy__gepa_attempt_merge(pool, 3, NV, 2, &m, front, &rng, &merged, ids), 0);
    assert_null(merged);
    /* fewer than three programs: nothing to merge */
    assert_int_equal(dspy__gepa_attempt_merge(pool, 2, NV, 2, &m, front, &rng, &merged, ids), 0);
    dspy_free(m.descs);
    release_pool(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(merge_combines_both_predictors_changes),
        cmocka_unit_test(merge_is_seed_reproducible),
        cmocka_unit_test(a_chain_is_not_merged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

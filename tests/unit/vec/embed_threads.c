/* Unit test of the embedder's threading rule: one handle used by several threads at once
 * (each call with its own scratch space, some calls fanning out to worker threads) gives
 * every caller the vectors a lone call gives. Runs under TSan with the threaded tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <dspyc/embed.h>

static const char *const texts[] = { "How do I cancel my subscription?", "Track order 48213",
                                     "東京は日本の首都です。", "" };
#define N_TEXTS 4
#define CALLERS 3

static dspy_embedder *emb;
static float want[N_TEXTS][DSPY_EMBED_DIM];

struct caller {
    float got[N_TEXTS][DSPY_EMBED_DIM];
    dspy_status rc;
};

static void *call(void *arg)
{
    struct caller *c = arg;
    c->rc = dspy_embedder_embed(emb, (const char *const *)texts, NULL, N_TEXTS, &c->got[0][0],
                                NULL);
    return NULL;
}

static void test_concurrent_callers_get_the_same_vectors(void **state)
{
    (void)state;
    struct dspy_embedder_options o = DSPY_EMBEDDER_OPTIONS_INIT;
    o.threads = 2; /* each call also runs a worker of its own */
    assert_int_equal(dspy_embedder_new(&o, &emb, NULL), DSPY_OK);
    for (int i = 0; i < N_TEXTS; i++)
        assert_int_equal(dspy_embedder_embed(emb, &texts[i], NULL, 1, want[i], NULL), DSPY_OK);
    static struct caller callers[CALLERS];
    pthread_t tids[CALLERS];
    for (int k = 0; k < CALLERS; k++)
        assert_int_equal(pthread_create(&tids[k], NULL, call, &callers[k]), 0);
    for (int k = 0; k < CALLERS; k++)
        pthread_join(tids[k], NULL);
    for (int k = 0; k < CALLERS; k++) {
        assert_int_equal(callers[k].rc, DSPY_OK);
        for (int i = 0; i < N_TEXTS; i++)
            for (int d = 0; d < DSPY_EMBED_DIM; d++)
                assert_true(fabsf(callers[k].got[i][d] - want[i][d]) < 1e-5f);
    }
    dspy_embedder_free(emb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_callers_get_the_same_vectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

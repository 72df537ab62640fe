/* The semantic level from several threads at once (run under TSan too): four threads put
 * and look up records of one partition while its HNSW index is started, built in the
 * background of the puts, searched and saved. Few distinct texts, so the level's cache of
 * recent embeddings keeps the model's work (slow under TSan) small. Needs the model files
 * (scripts/fetch-model.sh).
 * threads: four threads share one cache handle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dspyc/cache.h>

static const char *const words[] = { "France", "Kenya", "Peru",  "Japan",
                                     "Norway", "Chile", "Egypt", "Nepal" };
#define NW 8

static char dir[64];

static json_t *req(bool paraphrase, const char *w)
{
    char text[128];
    snprintf(text, sizeof(text), "What is the capital %s%s?", paraphrase ? "city of " : "of ", w);
    json_t *msgs = json_array();
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", text));
    return json_pack("{s:s,s:f,s:o}", "model", "m", "temperature", 0.0, "messages", msgs);
}

struct worker {
    dspy_cache *c;
    int id;
    int hits;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    for (int round = 0; round < 6; round++)
        for (int i = w->id; i < NW; i += 2) {
            json_t *r = req(false, words[i]);
            struct dspy_cache_key k;
            if (!dspy_cache_key(w->c, r, NULL, &k, NULL) &&
                !dspy_cache_put(w->c, &k, words[i], strlen(words[i]), NULL, NULL))
                dspy_cache_semantic_put(w->c, r, &k, NULL);
            json_decref(r);
            r = req(true, words[(i + 3) % NW]);
            struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
            if (!dspy_cache_semantic_get(w->c, r, NULL, &v, NULL)) {
                w->hits++;
                dspy_cache_value_release(&v);
            }
            json_decref(r);
        }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "test-semthr-XXXXXX");
    assert_non_null(mkdtemp(dir));
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    dspy_cache *c = NULL;
    o.levels = DSPY_CACHE_L1 | DSPY_CACHE_L3 | DSPY_CACHE_SEMANTIC;
    o.disk_path = dir;
    o.embed_model = "models/all-MiniLM-L6-v2";
    o.semantic_index_min = 4;
    assert_int_equal(dspy_cache_new(&o, &c, NULL), DSPY_OK);
    pthread_t t[4];
    struct worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){ c, i, 0 };
        assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    struct dspy_cache_stats st;
    dspy_cache_stats(c, &st);
    if (st.sem_unavailable)
        fail_msg("the model files are missing: run scripts/fetch-model.sh");
    assert_int_equal(st.sem_entries, NW);
    assert_int_equal(st.sem_index_nodes, NW);
    assert_true(st.sem_indexed_lookups > 0);
    assert_true(w[0].hits + w[1].hits + w[2].hits + w[3].hits > 0);
    dspy_cache_free(c);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* L1 alone with one entry per shard: the puts' evictions drop records from the threads
 * that evict while others look up and put (the watcher runs outside the shard locks). */
static void test_threads_with_evictions(void **state)
{
    (void)state;
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    dspy_cache *c = NULL;
    o.levels = DSPY_CACHE_L1 | DSPY_CACHE_SEMANTIC;
    o.mem_max_entries = 4; /* rounded up to one per shard */
    o.embed_model = "models/all-MiniLM-L6-v2";
    assert_int_equal(dspy_cache_new(&o, &c, NULL), DSPY_OK);
    pthread_t t[4];
    struct worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){ c, i, 0 };
        assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    struct dspy_cache_stats st;
    dspy_cache_stats(c, &st);
    assert_true(st.level[0].evictions > 0);
    assert_true(st.sem_followed > 0);
    assert_true(st.sem_followed <= st.level[0].evictions);
    assert_true(st.sem_entries <= NW);
    dspy_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_threads_with_evictions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

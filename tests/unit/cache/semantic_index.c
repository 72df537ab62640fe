/* Unit tests of the semantic level's HNSW index (a small index threshold so a few dozen
 * records make a large partition): the index is built in the background of the puts and
 * then answers lookups; it is saved on close and loaded at open without a rebuild (only
 * the records written after its save are added); a damaged index file gives a warning,
 * exact search meanwhile and a rebuild; removed and evicted records leave the index. Needs
 * the model files (scripts/fetch-model.sh). Threads: semantic_threads.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <dspyc/cache.h>

#define MODEL "models/all-MiniLM-L6-v2"
#define INDEX_MIN 40

static const char *const countries[] = {
    "France",    "Spain",     "Portugal",   "Italy",      "Germany",  "Austria",   "Poland",
    "Hungary",   "Greece",    "Turkey",     "Egypt",      "Morocco",  "Kenya",     "Nigeria",
    "Ghana",     "Brazil",    "Argentina",  "Chile",      "Peru",     "Colombia",  "Mexico",
    "Canada",    "Japan",     "China",      "India",      "Pakistan", "Thailand",  "Vietnam",
    "Indonesia", "Australia", "Norway",     "Sweden",     "Finland",  "Denmark",   "Ireland",
    "Iceland",   "Belgium",   "Holland",    "Ukraine",    "Romania",  "Bulgaria",  "Serbia",
    "Croatia",   "Slovakia",  "Czechia",    "Estonia",    "Latvia",   "Lithuania", "Cuba",
    "Jamaica",   "Iran",      "Iraq",       "Israel",     "Jordan",   "Lebanon",   "Syria",
    "Nepal",     "Mongolia",  "Kazakhstan", "Uzbekistan",
};
#define NC (sizeof(countries) / sizeof(countries[0]))

static char dir[64];

static json_t *req(const char *user)
{
    json_t *msgs = json_array();
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", user));
    return json_pack("{s:s,s:f,s:o}", "model", "m", "temperature", 0.0, "messages", msgs);
}

static dspy_cache *open_with(struct dspy_cache_options *o)
{
    dspy_cache *c = NULL;
    struct dspy_error err;
    o->levels |= DSPY_CACHE_SEMANTIC;
    o->embed_model = MODEL;
    if (dspy_cache_new(o, &c, &err))
        fail_msg("cache: %s", err.message);
    return c;
}

static dspy_cache *open_cache(size_t max_bytes)
{
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    o.levels = DSPY_CACHE_L1 | DSPY_CACHE_L3;
    o.disk_path = dir;
    o.semantic_index_min = INDEX_MIN;
    if (max_bytes)
        o.semantic_max_bytes = max_bytes;
    return open_with(&o);
}

static void put_country(dspy_cache *c, size_t i)
{
    char text[128];
    snprintf(text, sizeof(text), "What is the capital of %s?", countries[i]);
    json_t *r = req(text);
    struct dspy_cache_key k;
    assert_int_equal(dspy_cache_key(c, r, NULL, &k, NULL), DSPY_OK);
    assert_int_equal(dspy_cache_put(c, &k, countries[i], strlen(countries[i]), NULL, NULL),
                     DSPY_OK);
    dspy_cache_semantic_put(c, r, &k, NULL);
    json_decref(r);
}

/* A paraphrase of country i's question hits that country's entry. */
static void expect_hit(dspy_cache *c, size_t i)
{
    char text[128];
    snprintf(text, sizeof(text), "What is the capital city of %s?", countries[i]);
    json_t *r = req(text);
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    struct dspy_cache_semantic_hit hit;
    dspy_status rc = dspy_cache_semantic_get(c, r, NULL, &v, &hit);
    if (rc)
        fail_msg("no semantic hit for \"%s\" (%s, guard %s)", text, dspy_status_name(rc),
                 dspy_cache_semantic_guard_name(hit.guard));
    assert_int_equal(v.len, strlen(countries[i]));
    assert_memory_equal(v.data, countries[i], v.len);
    assert_true(hit.similarity >= 0.85f);
    dspy_cache_value_release(&v);
    json_decref(r);
}

static void index_path(char *out, size_t cap)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "ls %s/semantic-*.hnsw 2>/dev/null", dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    out[0] = 0;
    if (!fgets(out, (int)cap, p))
        out[0] = 0;
    pclose(p);
    out[strcspn(out, "\n")] = 0;
}

static void copy_file(const char *from, const char *to)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "test-semidx-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd);
}

static void test_index_build_save_load_tail(void **state)
{
    (void)state;
    struct dspy_cache_stats st;
    dspy_cache *c = open_cache(0);
    for (size_t i = 0; i < 50; i++)
        put_country(c, i);
    dspy_cache_stats(c, &st);
    if (st.sem_unavailable)
        fail_msg("the model files are missing: run scripts/fetch-model.sh");
    assert_int_equal(st.sem_entries, 50);
    /* 40 records started the index; each later put added 8 older ones: done */
    assert_int_equal(st.sem_index_building, 0);
    assert_int_equal(st.sem_index_nodes, 50);
    assert_int_equal(st.sem_indexed_lookups, 0);
    for (size_t i = 0; i < 50; i++)
        expect_hit(c, i);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.sem_indexed_lookups, 50);
    dspy_cache_free(c);

    /* the index was saved on close; open loads it and adds nothing */
    char path[256], old[300];
    index_path(path, sizeof(path));
    assert_true(path[0]);
    snprintf(old, sizeof(old), "%s.old", path);
    copy_file(path, old);
    c = open_cache(0);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.sem_index_loaded, 1);
    assert_int_equal(st.sem_index_tail, 0);
    assert_int_equal(st.sem_index_nodes, 50);
    expect_hit(c, 10);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.sem_indexed_lookups, 1);
    for (size_t i = 50; i < NC; i++)
        put_country(c, i);
    expect_hit(c, 55);
    dspy_cache_free(c);

    /* an older save (as after a crash): only the records written since are added */
    copy_file(old, path);
    c = open_cache(0);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.sem_index_loaded, 1);
    assert_int_equal(st.sem_index_tail, NC - 50);
    assert_int_equal(st.sem_index_nodes, NC);
    expect_hit(c, 57);
    dspy_cache_free(c);
    unlink(old);
}

static void test_damaged_index_file(void **state)
{
    (void)state;
    struct dspy_cache_stats st;
    char path[256];
    index_path(path, sizeof(path));
    assert_true(path[0]);
    /* cut in half */
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(truncate(path, sb.st_size / 2), 0);
    dspy_cache *c = open_cache(0);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.sem_index_loaded, 0);
    assert_int_equal(st.sem_index_building, 1);
    assert_int_equal(st.sem_entries, NC);
    /* answered by the exact scan meanwhile */
    expect_hit(c, 20);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.sem_indexed_lookups, 0);
    /* re-putting records steps the rebuild: 60 records, 8 per put */
    for (size_t i = 0; i < 8; i++)
        put_country(c, i);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.sem_index_building, 0);
    assert_int_equal(st.sem_index_nodes, NC);
    expect_hit(c, 20);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.sem_indexed_lookups, 1);
    dspy_cache_free(c);
    /* garbage of the right name: the same */
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("not an index", f);
    fclose(f);
    c = open_cache(0);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.sem_index_building, 1);
    expect_hit(c, 30);
    dspy_cache_free(c);
}

static void test_removed_and_evicted_leave_the_index(void **state)
{
    (void)state;
    struct dspy_cache_stats st;
    dspy_cache *c = open_cache(0);
    dspy_cache_stats(c, &st);
    /* the last test left an index being built (a build is not saved half done) */
    assert_int_equal(st.sem_index_building, 1);
    for (size_t i = 0; i < 8; i++)
        put_country(c, i);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.sem_index_building, 0);
    size_t before = st.sem_index_nodes;
    assert_true(before >= INDEX_MIN);
    /* the exact entry goes, and its record (and index node) with it, in the same step */
    char text[128];
    snprintf(text, sizeof(text), "What is the capital of %s?", countries[12]);
    json_t *r = req(text);
    struct dspy_cache_key k;
    assert_int_equal(dspy_cache_key(c, r, NULL, &k, NULL), DSPY_OK);
    assert_int_equal(dspy_cache_delete(c, &k, NULL), DSPY_OK);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.sem_followed, 1);
    assert_int_equal(st.sem_index_nodes, before - 1);
    assert_int_equal(st.sem_entries, before - 1);
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    assert_int_equal(dspy_cache_semantic_get(c, r, NULL, &v, NULL), DSPY_ENOTFOUND);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.sem_stale, 0); /* nothing left for a lookup to find stale */
    json_decref(r);
    dspy_cache_free(c);
    /* a budget of about 45 records: the oldest go, from the index too */
    c = open_cache(45 * 3400);
    dspy_cache_stats(c, &st);
    assert_true(st.sem_evictions > 0);
    assert_int_equal(st.sem_index_nodes, st.sem_entries);
    assert_true(st.sem_bytes <= 45 * 3400);
    put_country(c, 12);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.sem_index_nodes, st.sem_entries);
    expect_hit(c, 12);
    dspy_cache_free(c);
}

static dspy_cache *open_levels(unsigned levels, const char *path, size_t mem_entries, double ttl)
{
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    o.levels = levels;
    o.disk_path = path;
    o.mem_max_entries = mem_entries;
    o.mem_ttl_s = o.disk_ttl_s = ttl;
    return open_with(&o);
}

static bool has_exact(dspy_cache *c, size_t i)
{
    char text[128];
    snprintf(text, sizeof(text), "What is the capital of %s?", countries[i]);
    json_t *r = req(text);
    struct dspy_cache_key k;
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    assert_int_equal(dspy_cache_key(c, r, NULL, &k, NULL), DSPY_OK);
    bool found = dspy_cache_get(c, &k, NULL, &v) == DSPY_OK;
    dspy_cache_value_release(&v);
    json_decref(r);
    return found;
}

/* A record goes in the same step as its exact entry leaves the level that holds the
 * answers: L1's LRU when L1 is the only level; not L1's when L3 still holds the entry; an
 * expired L3 entry when found. */
static void test_records_follow_their_exact_entries(void **state)
{
    (void)state;
    struct dspy_cache_stats st;
    char sub[128];
    /* L1 alone, 16 entries (one per shard): most of 40 are evicted */
    dspy_cache *c = open_levels(DSPY_CACHE_L1, NULL, 16, 0);
    for (size_t i = 0; i < 40; i++)
        put_country(c, i);
    dspy_cache_stats(c, &st);
    assert_true(st.level[0].evictions >= 24);
    assert_int_equal(st.sem_followed, st.level[0].evictions);
    assert_int_equal(st.sem_entries, st.level[0].entries);
    assert_int_equal(st.sem_entries + st.sem_followed, 40);
    size_t kept = 0;
    for (size_t i = 0; i < 40; i++) {
        if (!has_exact(c, i))
            continue;
        expect_hit(c, i);
        kept++;
    }
    assert_int_equal(kept, st.sem_entries);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.sem_stale, 0); /* no lookup ever met a record without its entry */
    dspy_cache_free(c);
    /* L1 over L3: L1's evictions leave the records, which L3 answers */
    snprintf(sub, sizeof(sub), "%s/follow", dir);
    c = open_levels(DSPY_CACHE_L1 | DSPY_CACHE_L3, sub, 16, 0);
    for (size_t i = 0; i < 40; i++)
        put_country(c, i);
    dspy_cache_stats(c, &st);
    assert_true(st.level[0].evictions >= 24);
    assert_int_equal(st.sem_followed, 0);
    assert_int_equal(st.sem_entries, 40);
    expect_hit(c, 0);
    assert_int_equal(dspy_cache_clear(c, 0, NULL), DSPY_OK);
    dspy_cache_free(c);
    /* expired: found by the lookup's exact read, which takes the record in that step */
    c = open_levels(DSPY_CACHE_L1 | DSPY_CACHE_L3, sub, 0, 1.0);
    char text[128];
    snprintf(text, sizeof(text), "What is the capital city of %s?", countries[3]);
    json_t *r = req(text);
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    /* the model loads before the clock starts */
    assert_int_equal(dspy_cache_semantic_get(c, r, NULL, &v, NULL), DSPY_ENOTFOUND);
    put_country(c, 3);
    expect_hit(c, 3);
    usleep(1200 * 1000);
    assert_int_equal(dspy_cache_semantic_get(c, r, NULL, &v, NULL), DSPY_ENOTFOUND);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.sem_entries, 0);
    assert_int_equal(st.sem_followed, 1);
    json_decref(r);
    dspy_cache_free(c);
}

/* From semantic_scan8_min slots the exact scan reads the int8 copy and re-ranks in f32: the
 * same hits with exact similarities; the copy follows removals and the partition's growth. */
static void test_int8_scan_follows_the_records(void **state)
{
    (void)state;
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    struct dspy_cache_stats st;
    o.levels = DSPY_CACHE_L1;
    o.semantic_index_min = SIZE_MAX;
    o.semantic_scan8_min = 16;
    dspy_cache *c = open_with(&o);
    for (size_t i = 0; i < 20; i++)
        put_country(c, i);
    expect_hit(c, 7); /* the copy is made over the 32 slots allocated */
    for (size_t i = 20; i < 40; i++)
        put_country(c, i);
    expect_hit(c, 35); /* slot 35 is past the copy: a new one over 64 */
    expect_hit(c, 2);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.sem_scan8_lookups, 3);
    /* a removed record is never a candidate (its row in the copy is zero): a miss */
    char text[128];
    snprintf(text, sizeof(text), "What is the capital of %s?", countries[9]);
    json_t *r = req(text);
    struct dspy_cache_key k;
    assert_int_equal(dspy_cache_key(c, r, NULL, &k, NULL), DSPY_OK);
    assert_int_equal(dspy_cache_delete(c, &k, NULL), DSPY_OK);
    json_decref(r);
    snprintf(text, sizeof(text), "What is the capital city of %s?", countries[9]);
    r = req(text);
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    assert_int_equal(dspy_cache_semantic_get(c, r, NULL, &v, NULL), DSPY_ENOTFOUND);
    json_decref(r);
    put_country(c, 9); /* back in a free slot, and in the copy */
    expect_hit(c, 9);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.sem_scan8_lookups, 5);
    assert_int_equal(st.sem_stale, 0);
    dspy_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_index_build_save_load_tail),
        cmocka_unit_test(test_damaged_index_file),
        cmocka_unit_test(test_removed_and_evicted_leave_the_index),
        cmocka_unit_test(test_records_follow_their_exact_entries),
        cmocka_unit_test(test_int8_scan_follows_the_records),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/* Unit tests for the memory level (L1) through the public cache API: hits by reference,
 * LRU order, TTL expiry, byte and entry budgets with exact accounting, per-request flags,
 * the stream writer, export/import, and many threads at once. */
/* threads: concurrent shards are exercised from test threads. */
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <dspyc/cache.h>

#include "base/clock.h"
#include "cache/cache_int.h"

/* A key whose L1 shard is `shard` (the last byte picks it) and whose rest is `id`. */
static struct dspy_cache_key make_key(uint32_t id, uint8_t shard)
{
    struct dspy_cache_key k;
    memset(&k, 0, sizeof(k));
    for (int i = 0; i < 4; i++)
        k.bytes[i] = (uint8_t)(id >> (8 * i));
    k.bytes[7] = 0x5a;
    k.bytes[15] = shard;
    return k;
}

static dspy_cache *open_l1(size_t max_bytes, size_t max_entries, double ttl)
{
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    dspy_cache *c;
    o.levels = DSPY_CACHE_L1;
    o.mem_max_bytes = max_bytes;
    o.mem_max_entries = max_entries;
    o.mem_ttl_s = ttl;
    assert_int_equal(dspy_cache_new(&o, &c, NULL), DSPY_OK);
    return c;
}

/* The clock, stepped by the test (the base clock hook): TTLs are checked without sleeping. */
static void advance_ms(uint64_t ms)
{
    dspy__clock_advance(ms * 1000000u);
}

static void put_str(dspy_cache *c, const struct dspy_cache_key *k, const char *s,
                    const struct dspy_cache_ctl *ctl)
{
    assert_int_equal(dspy_cache_put(c, k, s, strlen(s), ctl, NULL), DSPY_OK);
}

static bool has_value(dspy_cache *c, const struct dspy_cache_key *k, const char *want)
{
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    if (dspy_cache_get(c, k, NULL, &v) != DSPY_OK)
        return false;
    bool same = v.len == strlen(want) && memcmp(v.data, want, v.len) == 0;
    assert_int_equal(v.source, DSPY_CACHE_FROM_L1);
    dspy_cache_value_release(&v);
    return same;
}

static void hit_is_a_reference_that_outlives_the_entry(void **state)
{
    (void)state;
    dspy_cache *c = open_l1(1 << 20, 0, 0);
    struct dspy_cache_key k = make_key(1, 0);
    struct dspy_cache_value a = DSPY_CACHE_VALUE_INIT, b = DSPY_CACHE_VALUE_INIT;
    struct dspy_cache_stats st;
    assert_int_equal(dspy_cache_get(c, &k, NULL, &a), DSPY_ENOTFOUND);
    put_str(c, &k, "hello", NULL);
    assert_int_equal(dspy_cache_get(c, &k, NULL, &a), DSPY_OK);
    assert_int_equal(dspy_cache_get(c, &k, NULL, &b), DSPY_OK);
    assert_ptr_equal(a.data, b.data); /* no copy */
    put_str(c, &k, "world!", NULL);   /* replaces; old bytes stay valid for holders */
    assert_int_equal(dspy_cache_delete(c, &k, NULL), DSPY_OK);
    dspy_cache_free(c);
    assert_memory_equal(a.data, "hello", 5);
    dspy_cache_value_release(&a);
    dspy_cache_value_release(&b);
    dspy_cache_value_release(&b); /* twice is harmless */

    c = open_l1(1 << 20, 0, 0);
    put_str(c, &k, "v1", NULL);
    put_str(c, &k, "v2", NULL);
    assert_true(has_value(c, &k, "v2"));
    dspy_cache_stats(c, &st);
    assert_int_equal(st.level[0].entries, 1);
    assert_int_equal(st.level[0].puts, 2);
    assert_int_equal(st.gets, 1);
    assert_int_equal(st.hits, 1);
    dspy_cache_free(c);
}

/* Budget charge of one entry with a value of `len` bytes, measured. */
static uint64_t charge_of(size_t len)
{
    dspy_cache *c = open_l1(1 << 20, 0, 0);
    struct dspy_cache_key k = make_key(1, 0);
    char buf[256];
    struct dspy_cache_stats st;
    memset(buf, 'x', sizeof(buf));
    assert_int_equal(dspy_cache_put(c, &k, buf, len, NULL, NULL), DSPY_OK);
    dspy_cache_stats(c, &st);
    dspy_cache_free(c);
    assert_true(st.level[0].bytes > len);
    return st.level[0].bytes;
}

static void least_recently_used_is_evicted_first(void **state)
{
    (void)state;
    uint64_t ch = charge_of(2);
    /* 16 shards, each with room for exactly three entries of this size */
    dspy_cache *c = open_l1((size_t)(16 * 3 * ch), 0, 0);
    struct dspy_cache_key k[5];
    struct dspy_cache_stats st;
    for (int i = 0; i < 5; i++)
        k[i] = make_key((uint32_t)i, 3);
    put_str(c, &k[0], "v0", NULL);
    put_str(c, &k[1], "v1", NULL);
    put_str(c, &k[2], "v2", NULL);
    assert_true(has_value(c, &k[0], "v0")); /* k0 is now most recent; k1 least */
    put_str(c, &k[3], "v3", NULL);
    assert_false(dspy_cache_has(c, &k[1]));
    assert_true(has_value(c, &k[2], "v2"));
    put_str(c, &k[4], "v4", NULL); /* recency was k2, k3, k0: k0 goes */
    assert_false(dspy_cache_has(c, &k[0]));
    assert_true(has_value(c, &k[2], "v2"));
    assert_true(has_value(c, &k[3], "v3"));
    assert_true(has_value(c, &k[4], "v4"));
    dspy_cache_stats(c, &st);
    assert_int_equal(st.level[0].evictions, 2);
    assert_int_equal(st.level[0].entries, 3);
    assert_int_equal(st.level[0].bytes, 3 * ch);
    /* other shards are untouched by this one's budget */
    struct dspy_cache_key other = make_key(9, 4);
    put_str(c, &other, "v9", NULL);
    assert_true(has_value(c, &k[4], "v4"));
    dspy_cache_free(c);
}

static void byte_and_entry_budgets_hold_exactly(void **state)
{
    (void)state;
    uint64_t ch = charge_of(100);
    char val[100];
    struct dspy_cache_stats st;
    memset(val, 'v', sizeof(val));
    size_t budget = (size_t)(16 * 10 * ch);
    dspy_cache *c = open_l1(budget, 0, 0);
    for (uint32_t i = 0; i < 2000; i++) {
        struct dspy_cache_key k = make_key(i, (uint8_t)(i % 16));
        assert_int_equal(dspy_cache_put(c, &k, val, sizeof(val), NULL, NULL), DSPY_OK);
    }
    dspy_cache_stats(c, &st);
    assert_int_equal(st.level[0].entries, 160);
    assert_int_equal(st.level[0].bytes, 160 * ch);
    assert_int_equal(st.level[0].evictions, 2000 - 160);
    assert_true(st.level[0].bytes <= budget);
    /* the most recent ones survive */
    struct dspy_cache_key last = make_key(1999, 1999 % 16);
    assert_true(dspy_cache_has(c, &last));
    dspy_cache_free(c);

    c = open_l1(1 << 24, 32, 0); /* 32 entries = 2 per shard */
    for (uint32_t i = 0; i < 100; i++) {
        struct dspy_cache_key k = make_key(i, (uint8_t)(i % 16));
        assert_int_equal(dspy_cache_put(c, &k, val, 10, NULL, NULL), DSPY_OK);
    }
    dspy_cache_stats(c, &st);
    assert_int_equal(st.level[0].entries, 32);
    dspy_cache_free(c);

    /* a value larger than a shard's budget is not kept, and larger than
     * max_value_bytes is refused */
    c = open_l1(16 * 64, 0, 0);
    struct dspy_cache_key k = make_key(1, 1);
    assert_int_equal(dspy_cache_put(c, &k, val, sizeof(val), NULL, NULL), DSPY_OK);
    assert_false(dspy_cache_has(c, &k));
    dspy_cache_free(c);
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    o.max_value_bytes = 10;
    assert_int_equal(dspy_cache_new(&o, &c, NULL), DSPY_OK);
    struct dspy_error err;
    assert_int_equal(dspy_cache_put(c, &k, val, 11, NULL, &err), DSPY_ETOOBIG);
    dspy_cache_free(c);
}

static void entries_expire(void **state)
{
    (void)state;
    struct dspy_cache_ctl short_ttl = DSPY_CACHE_CTL_INIT;
    struct dspy_cache_stats st;
    struct dspy_cache_key a = make_key(1, 0), b = make_key(2, 0);
    dspy__clock_freeze((uint64_t)1 << 40);
    dspy_cache *c = open_l1(1 << 20, 0, 0.15);
    struct dspy_cache_ctl long_ttl = DSPY_CACHE_CTL_INIT;
    struct dspy_cache_key l = make_key(3, 0);
    short_ttl.ttl_s = 0.03;
    long_ttl.ttl_s = 60; /* a request's TTL replaces the level's, also when longer */
    put_str(c, &a, "short", &short_ttl);
    put_str(c, &b, "level ttl", NULL);
    put_str(c, &l, "long", &long_ttl);
    advance_ms(29);
    assert_true(dspy_cache_has(c, &a)); /* 1 ms before its 30 ms TTL */
    advance_ms(31);
    assert_false(dspy_cache_has(c, &a));
    assert_true(dspy_cache_has(c, &b));
    advance_ms(89); /* 149 ms: the level's 150 ms TTL not yet reached */
    assert_true(dspy_cache_has(c, &b));
    advance_ms(2);
    assert_false(dspy_cache_has(c, &b));
    assert_true(dspy_cache_has(c, &l));
    advance_ms(59000);
    assert_true(dspy_cache_has(c, &l)); /* 59.15 s of its 60 */
    advance_ms(1000);
    assert_false(dspy_cache_has(c, &l));
    dspy_cache_stats(c, &st);
    assert_int_equal(st.level[0].expired, 3);
    assert_int_equal(st.level[0].entries, 0);
    dspy_cache_free(c);
    dspy__clock_freeze(0);
}

static void request_flags(void **state)
{
    (void)state;
    dspy_cache *c = open_l1(1 << 20, 0, 0);
    struct dspy_cache_key k = make_key(1, 0);
    struct dspy_cache_ctl no_store = DSPY_CACHE_CTL_INIT, no_cache = DSPY_CACHE_CTL_INIT;
    struct dspy_cache_ctl only_l3 = DSPY_CACHE_CTL_INIT;
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    no_store.no_store = true;
    no_cache.no_cache = true;
    only_l3.levels = DSPY_CACHE_L3; /* not open: nothing happens */
    put_str(c, &k, "x", &no_store);
    assert_false(dspy_cache_has(c, &k));
    put_str(c, &k, "x", &only_l3);
    assert_false(dspy_cache_has(c, &k));
    put_str(c, &k, "x", NULL);
    assert_int_equal(dspy_cache_get(c, &k, &no_cache, &v), DSPY_ENOTFOUND);
    assert_int_equal(dspy_cache_get(c, &k, NULL, &v), DSPY_OK);
    dspy_cache_value_release(&v);
    assert_int_equal(dspy_cache_levels(c), DSPY_CACHE_L1);
    dspy_cache_free(c);
}

static void writer_stores_only_on_commit(void **state)
{
    (void)state;
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    dspy_cache *c;
    struct dspy_cache_key a = make_key(1, 0), b = make_key(2, 0), d = make_key(3, 0);
    o.max_value_bytes = 16;
    assert_int_equal(dspy_cache_new(&o, &c, NULL), DSPY_OK);
    dspy_cache_writer *w = dspy_cache_writer_new(c, &a, NULL);
    assert_int_equal(dspy_cache_writer_append(w, "data: he", 8), DSPY_OK);
    assert_int_equal(dspy_cache_writer_append(w, "llo\n", 4), DSPY_OK);
    assert_false(dspy_cache_has(c, &a));
    assert_int_equal(dspy_cache_writer_commit(w, NULL), DSPY_OK);
    assert_true(has_value(c, &a, "data: hello\n"));
    w = dspy_cache_writer_new(c, &b, NULL);
    dspy_cache_writer_append(w, "partial", 7);
    dspy_cache_writer_abort(w);
    assert_false(dspy_cache_has(c, &b));
    w = dspy_cache_writer_new(c, &d, NULL);
    assert_int_equal(dspy_cache_writer_append(w, "0123456789", 10), DSPY_OK);
    assert_int_equal(dspy_cache_writer_append(w, "0123456789", 10), DSPY_ETOOBIG);
    assert_int_equal(dspy_cache_writer_commit(w, NULL), DSPY_ETOOBIG);
    assert_false(dspy_cache_has(c, &d));
    dspy_cache_free(c);
}

static void export_import_round_trip(void **state)
{
    (void)state;
    dspy_cache *c = open_l1(1 << 20, 0, 0);
    struct dspy_cache_key text = make_key(1, 0), bin = make_key(2, 5), ttl = make_key(3, 9);
    const unsigned char binary[] = { 0xff, 0x00, 0x01, 0xfe, 'a' };
    struct dspy_cache_ctl t = DSPY_CACHE_CTL_INIT;
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    char *buf = NULL;
    size_t len = 0, n = 0;
    t.ttl_s = 100;
    put_str(c, &text, "{\"choices\":[\"caf\xc3\xa9\\n\"]}", NULL);
    assert_int_equal(dspy_cache_put(c, &bin, binary, sizeof(binary), NULL, NULL), DSPY_OK);
    put_str(c, &ttl, "", &t);
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(dspy_cache_export(c, DSPY_CACHE_L1, f, &n, NULL), DSPY_OK);
    fclose(f);
    assert_int_equal(n, 3);
    assert_non_null(strstr(buf, "\"b64\":\"/wAB/mE=\""));
    assert_non_null(strstr(buf, "\"text\":\"\""));
    assert_int_equal(dspy_cache_export(c, DSPY_CACHE_L2, stdout, &n, NULL), DSPY_EINVAL);
    dspy_cache_free(c);

    c = open_l1(1 << 20, 0, 0);
    f = fmemopen(buf, len, "r");
    assert_int_equal(dspy_cache_import(c, f, NULL, &n, NULL), DSPY_OK);
    fclose(f);
    assert_int_equal(n, 3);
    assert_true(has_value(c, &text, "{\"choices\":[\"caf\xc3\xa9\\n\"]}"));
    assert_int_equal(dspy_cache_get(c, &bin, NULL, &v), DSPY_OK);
    assert_int_equal(v.len, sizeof(binary));
    assert_memory_equal(v.data, binary, sizeof(binary));
    dspy_cache_value_release(&v);
    assert_true(has_value(c, &ttl, ""));
    free(buf);

    const char bad[] = "{\"key\":\"00\",\"text\":\"x\"}\n";
    struct dspy_error err;
    f = fmemopen((void *)bad, sizeof(bad) - 1, "r");
    assert_int_equal(dspy_cache_import(c, f, NULL, &n, &err), DSPY_EPARSE);
    assert_int_equal(err.line, 1);
    fclose(f);
    json_t *s = dspy_cache_stats_json(c);
    assert_non_null(json_object_get(s, "l1"));
    assert_null(json_object_get(s, "l2"));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "l1"), "entries")), 3);
    json_decref(s);
    dspy_cache_free(c);
}

#define THREADS 8
#define OPS 20000
#define KEYS 512

struct worker {
    dspy_cache *c;
    unsigned seed;
    long bad;
};

/* Each value spells its key id, so a torn or mixed-up value is detected. */
static void *hammer(void *arg)
{
    struct worker *w = arg;
    char val[64];
    for (int i = 0; i < OPS; i++) {
        w->seed = w->seed * 1103515245u + 12345u;
        uint32_t id = (w->seed >> 8) % KEYS;
        struct dspy_cache_key k = make_key(id, (uint8_t)id);
        int len = snprintf(val, sizeof(val), "value-of-%u-%s", id, (id & 1) ? "odd" : "even-pad");
        switch ((w->seed >> 20) % 8) {
        case 0:
        case 1: dspy_cache_put(w->c, &k, val, (size_t)len, NULL, NULL); break;
        case 2: dspy_cache_delete(w->c, &k, NULL); break;
        default: {
            struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
            if (dspy_cache_get(w->c, &k, NULL, &v) == DSPY_OK) {
                if (v.len != (size_t)len || memcmp(v.data, val, (size_t)len) != 0)
                    w->bad++;
                dspy_cache_value_release(&v);
            }
        }
        }
    }
    return NULL;
}

static void many_threads_at_once(void **state)
{
    (void)state;
    /* small budget so evictions run concurrently with hits */
    dspy_cache *c = open_l1(16 * 2048, 0, 0);
    pthread_t t[THREADS];
    struct worker w[THREADS];
    struct dspy_cache_stats st;
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){ c, (unsigned)i * 7919u + 1, 0 };
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].bad, 0);
    }
    dspy_cache_stats(c, &st);
    assert_int_equal(st.gets, st.hits + st.misses);
    assert_int_equal(st.level[0].hits, st.hits);
    assert_true(st.level[0].evictions > 0);
    assert_true(st.level[0].bytes <= 16 * 2048);
    /* count and bytes agree with what is actually there */
    char *buf = NULL;
    size_t len = 0, n = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(dspy_cache_export(c, DSPY_CACHE_L1, f, &n, NULL), DSPY_OK);
    fclose(f);
    free(buf);
    assert_int_equal(n, st.level[0].entries);
    dspy_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hit_is_a_reference_that_outlives_the_entry),
        cmocka_unit_test(least_recently_used_is_evicted_first),
        cmocka_unit_test(byte_and_entry_budgets_hold_exactly),
        cmocka_unit_test(entries_expire),
        cmocka_unit_test(request_flags),
        cmocka_unit_test(writer_stores_only_on_commit),
        cmocka_unit_test(export_import_round_trip),
        cmocka_unit_test(many_threads_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

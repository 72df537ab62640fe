/* Unit tests for the Redis level (L2) against a real redis-server started on a loopback
 * port: hits and TTLs, promotion into L1, corrupt values, and what happens when Redis is
 * killed, hangs, or was never there (misses, never errors) and when it comes back; and a
 * hostile server's oversized reply and malformed SCAN reply refused
 * (tests/unit/net/hostile_redis.h).
 * Exits 77 (skipped) only when redis-server is not installed. */
/* threads: the Redis pool is used from several threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <dspyc/cache.h>

#include "unit/cache/redis_server.h"
#include "unit/net/hostile_redis.h"

static struct redis_server server;

static dspy_cache *open_l2(unsigned levels, const char *url)
{
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    dspy_cache *c = NULL;
    struct dspy_error err;
    o.levels = levels;
    o.redis_url = url;
    o.redis_prefix = "test:";
    o.redis_ttl_s = 60;
    o.redis_backoff_max_ms = 200;
    o.redis_compress_min = 512;
    if (dspy_cache_new(&o, &c, &err))
        print_error("open: %s\n", err.message);
    assert_non_null(c);
    return c;
}

static struct dspy_cache_key key_n(uint32_t n)
{
    struct dspy_cache_key k;
    char text[32];
    int len = snprintf(text, sizeof(text), "redis-request-%u", n);
    dspy_cache_key_from_canonical(text, (size_t)len, NULL, &k);
    return k;
}

static redisReply *admin(const char *fmt, const char *arg)
{
    redisContext *c = redis_connect_port(server.port);
    assert_non_null(c);
    redisReply *r = redisCommand(c, fmt, arg);
    redisFree(c);
    return r;
}

static void hits_ttls_and_promotion(void **state)
{
    (void)state;
    dspy_cache *c = open_l2(DSPY_CACHE_L1 | DSPY_CACHE_L2, server.url);
    struct dspy_cache_key k = key_n(1), big = key_n(2);
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    struct dspy_cache_ctl only_l2 = DSPY_CACHE_CTL_INIT, ttl = DSPY_CACHE_CTL_INIT;
    char hex[33], name[64], large[4000];
    only_l2.levels = DSPY_CACHE_L2;
    ttl.ttl_s = 5;
    assert_int_equal(dspy_cache_put(c, &k, "answer", 6, &only_l2, NULL), DSPY_OK);
    assert_int_equal(dspy_cache_get(c, &k, NULL, &v), DSPY_OK);
    assert_int_equal(v.source, DSPY_CACHE_FROM_L2);
    assert_memory_equal(v.data, "answer", 6);
    dspy_cache_value_release(&v);
    assert_int_equal(dspy_cache_get(c, &k, NULL, &v), DSPY_OK);
    assert_int_equal(v.source, DSPY_CACHE_FROM_L1);
    dspy_cache_value_release(&v);
    /* every key carries a TTL: the configured one, or the request's */
    dspy_cache_key_hex(&k, hex);
    snprintf(name, sizeof(name), "test:%s", hex);
    redisReply *r = admin("PTTL %s", name);
    assert_true(r->integer > 50000 && r->integer <= 60000);
    freeReplyObject(r);
    memset(large, 'z', sizeof(large));
    assert_int_equal(dspy_cache_put(c, &big, large, sizeof(large), &ttl, NULL), DSPY_OK);
    dspy_cache_key_hex(&big, hex);
    snprintf(name, sizeof(name), "test:%s", hex);
    r = admin("PTTL %s", name);
    assert_true(r->integer > 3000 && r->integer <= 5000);
    freeReplyObject(r);
    r = admin("STRLEN %s", name); /* compressed */
    assert_true(r->integer < 1000);
    freeReplyObject(r);
    assert_int_equal(dspy_cache_get(c, &big, &only_l2, &v), DSPY_OK);
    assert_int_equal(v.len, sizeof(large));
    assert_memory_equal(v.data, large, sizeof(large));
    dspy_cache_value_release(&v);
    dspy_cache_free(c);
}

/* Batch lookup: L1 first, then every L1 miss from Redis in one pipelined round trip. */
static void batch_lookup_in_one_round_trip(void **state)
{
    (void)state;
    enum { N = 300 };
    dspy_cache *c = open_l2(DSPY_CACHE_L1 | DSPY_CACHE_L2, server.url);
    struct dspy_cache_key keys[N];
    struct dspy_cache_value out[N];
    struct dspy_cache_ctl only_l2 = DSPY_CACHE_CTL_INIT;
    char val[32];
    only_l2.levels = DSPY_CACHE_L2;
    for (uint32_t i = 0; i < N; i++) {
        keys[i] = key_n(5000 + i);
        int len = snprintf(val, sizeof(val), "v%u", i);
        if (i % 2 == 0)
            assert_int_equal(dspy_cache_put(c, &keys[i], val, (size_t)len,
                                            i % 10 == 0 ? NULL : &only_l2, NULL),
                             DSPY_OK);
    }
    freeReplyObject(admin("CONFIG RESETSTAT%s", ""));
    assert_int_equal(dspy_cache_get_many(c, keys, N, NULL, out), N / 2);
    for (uint32_t i = 0; i < N; i++) {
        if (i % 2) {
            assert_int_equal(out[i].source, DSPY_CACHE_MISS);
            assert_null(out[i].data);
            continue;
        }
        int len = snprintf(val, sizeof(val), "v%u", i);
        assert_int_equal(out[i].len, (size_t)len);
        assert_memory_equal(out[i].data, val, (size_t)len);
        assert_int_equal(out[i].source, i % 10 == 0 ? DSPY_CACHE_FROM_L1 : DSPY_CACHE_FROM_L2);
        dspy_cache_value_release(&out[i]);
    }
    redisReply *r = admin("INFO %s", "commandstats");
    assert_non_null(strstr(r->str, "cmdstat_mget:calls=2,")); /* 270 keys: two MGETs */
    assert_null(strstr(r->str, "cmdstat_get:"));
    freeReplyObject(r);
    /* the L2 hits were promoted */
    assert_int_equal(dspy_cache_get_many(c, keys, N, NULL, out), N / 2);
    assert_int_equal(out[2].source, DSPY_CACHE_FROM_L1);
    for (uint32_t i = 0; i < N; i++)
        dspy_cache_value_release(&out[i]);
    dspy_cache_free(c);
}

/* Batch lookup over the three levels: L1, then one MGET for L1's misses, then LMDB for
 * what Redis lacks; each hit promoted into the levels above the one that held it. */
static void batch_lookup_across_three_levels(void **state)
{
    (void)state;
    enum { N = 40 };
    char dir[] = "/tmp/dspyc-get-many-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    dspy_cache *c = NULL;
    o.levels = DSPY_CACHE_L1 | DSPY_CACHE_L2 | DSPY_CACHE_L3;
    o.redis_url = server.url;
    o.redis_prefix = "three:";
    o.disk_path = dir;
    assert_int_equal(dspy_cache_new(&o, &c, NULL), DSPY_OK);
    struct dspy_cache_key keys[N];
    struct dspy_cache_value out[N];
    /* i % 4: 0 in L1 only, 1 in L2 only, 2 in L3 only, 3 nowhere */
    static const unsigned where[4] = { DSPY_CACHE_L1, DSPY_CACHE_L2, DSPY_CACHE_L3, 0 };
    static const enum dspy_cache_source from[4] = { DSPY_CACHE_FROM_L1, DSPY_CACHE_FROM_L2,
                                                    DSPY_CACHE_FROM_L3, DSPY_CACHE_MISS };
    char val[32];
    for (uint32_t i = 0; i < N; i++) {
        keys[i] = key_n(9000 + i);
        struct dspy_cache_ctl ctl = DSPY_CACHE_CTL_INIT;
        ctl.levels = where[i % 4];
        int len = snprintf(val, sizeof(val), "three-%u", i);
        if (ctl.levels)
            assert_int_equal(dspy_cache_put(c, &keys[i], val, (size_t)len, &ctl, NULL), DSPY_OK);
    }
    struct dspy_cache_stats before, after;
    dspy_cache_stats(c, &before);
    freeReplyObject(admin("CONFIG RESETSTAT%s", ""));
    assert_int_equal(dspy_cache_get_many(c, keys, N, NULL, out), 3 * N / 4);
    for (uint32_t i = 0; i < N; i++) {
        assert_int_equal(out[i].source, from[i % 4]);
        if (i % 4 == 3) {
            assert_null(out[i].data);
            continue;
        }
        int len = snprintf(val, sizeof(val), "three-%u", i);
        assert_int_equal(out[i].len, (size_t)len);
        assert_memory_equal(out[i].data, val, (size_t)len);
        dspy_cache_value_release(&out[i]);
    }
    redisReply *r = admin("INFO %s", "commandstats");
    assert_non_null(strstr(r->str, "cmdstat_mget:calls=1,")); /* L1's 30 misses at once */
    assert_null(strstr(r->str, "cmdstat_get:"));
    freeReplyObject(r);
    dspy_cache_stats(c, &after);
    assert_int_equal(after.gets - before.gets, N);
    assert_int_equal(after.hits - before.hits, 3 * N / 4);
    /* promoted: the L2 hits into L1; the L3 hits into L1 and L2 */
    struct dspy_cache_ctl l1 = DSPY_CACHE_CTL_INIT, l2 = DSPY_CACHE_CTL_INIT;
    l1.levels = DSPY_CACHE_L1;
    l2.levels = DSPY_CACHE_L2;
    for (uint32_t i = 0; i < N; i++) {
        struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
        assert_int_equal(dspy_cache_get(c, &keys[i], &l1, &v),
                         i % 4 == 3 ? DSPY_ENOTFOUND : DSPY_OK);
        dspy_cache_value_release(&v);
        bool in_l2 = i % 4 == 1 || i % 4 == 2;
        assert_int_equal(dspy_cache_get(c, &keys[i], &l2, &v), in_l2 ? DSPY_OK : DSPY_ENOTFOUND);
        dspy_cache_value_release(&v);
    }
    assert_int_equal(dspy_cache_clear(c, DSPY_CACHE_L2, NULL), DSPY_OK); /* for the tests after */
    dspy_cache_free(c);
    assert_int_equal(dspy_cache_disk_reset(dir, NULL), DSPY_OK);
    rmdir(dir);
}

static void corrupt_values_are_dropped(void **state)
{
    (void)state;
    dspy_cache *c = open_l2(DSPY_CACHE_L2, server.url);
    struct dspy_cache_key k = key_n(3);
    struct dspy_cache_stats st;
    char hex[33], name[64];
    dspy_cache_key_hex(&k, hex);
    snprintf(name, sizeof(name), "test:%s", hex);
    redisReply *r = admin("SET %s DSPC-not-a-frame", name);
    freeReplyObject(r);
    assert_false(dspy_cache_has(c, &k));
    dspy_cache_stats(c, &st);
    assert_int_equal(st.level[1].corrupt, 1);
    r = admin("EXISTS %s", name);
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    dspy_cache_free(c);
}

static void export_and_clear_touch_only_the_prefix(void **state)
{
    (void)state;
    dspy_cache *c = open_l2(DSPY_CACHE_L2, server.url);
    struct dspy_cache_stats st;
    size_t n = 0;
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(dspy_cache_clear(c, 0, NULL), DSPY_OK);
    freeReplyObject(admin("SET %s keep", "other:key"));
    for (uint32_t i = 0; i < 1200; i++) {
        struct dspy_cache_key k = key_n(100 + i);
        assert_int_equal(dspy_cache_put(c, &k, "v", 1, NULL, NULL), DSPY_OK);
    }
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(dspy_cache_export(c, DSPY_CACHE_L2, f, &n, NULL), DSPY_OK);
    fclose(f);
    free(buf);
    assert_int_equal(n, 1200);
    assert_int_equal(dspy_cache_clear(c, DSPY_CACHE_L2, NULL), DSPY_OK);
    redisReply *r = admin("DBSIZE%s", "");
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    dspy_cache_stats(c, &st);
    assert_true(st.redis_up);
    dspy_cache_free(c);
}

/* Kill Redis mid-run: gets miss fast, puts succeed, stats tell; restart: it reconnects. */
static void killed_redis_degrades_then_reconnects(void **state)
{
    (void)state;
    dspy_cache *c = open_l2(DSPY_CACHE_L1 | DSPY_CACHE_L2, server.url);
    struct dspy_cache_ctl only_l2 = DSPY_CACHE_CTL_INIT;
    struct dspy_cache_stats st;
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    only_l2.levels = DSPY_CACHE_L2;
    for (uint32_t i = 0; i < 500; i++) {
        struct dspy_cache_key k = key_n(i);
        assert_int_equal(dspy_cache_put(c, &k, "v", 1, NULL, NULL), DSPY_OK);
    }
    redis_server_kill(&server);
    for (uint32_t i = 0; i < 1000; i++) {
        struct dspy_cache_key k = key_n(i);
        assert_int_equal(dspy_cache_get(c, &k, &only_l2, &v), DSPY_ENOTFOUND);
        assert_int_equal(dspy_cache_put(c, &k, "w", 1, &only_l2, NULL), DSPY_OK);
    }
    /* What keeps a dead Redis cheap, counted instead of timed: every operation failed or
     * was skipped, and most were skipped (backing off) rather than tried against it. */
    dspy_cache_stats(c, &st);
    print_message("2000 operations with Redis dead: %llu errors, %llu skipped\n",
                  (unsigned long long)st.level[1].errors, (unsigned long long)st.level[1].skipped);
    assert_true(st.level[1].errors + st.level[1].skipped >= 2000);
    assert_true(st.level[1].errors < st.level[1].skipped);
    /* L1 still answers */
    struct dspy_cache_key k0 = key_n(0);
    assert_int_equal(dspy_cache_get(c, &k0, NULL, &v), DSPY_OK);
    assert_int_equal(v.source, DSPY_CACHE_FROM_L1);
    dspy_cache_value_release(&v);
    dspy_cache_stats(c, &st);
    assert_true(st.level[1].errors > 0);
    assert_true(st.level[1].skipped > 0);
    assert_true(st.level[1].last_error[0] != '\0');
    print_message("last error: %s (errors %llu, skipped %llu)\n", st.level[1].last_error,
                  (unsigned long long)st.level[1].errors, (unsigned long long)st.level[1].skipped);
    json_t *j = dspy_cache_stats_json(c);
    assert_true(json_is_false(json_object_get(json_object_get(j, "l2"), "up")));
    json_decref(j);

    assert_true(redis_server_start(&server)); /* same port, empty */
    struct dspy_cache_key k = key_n(7);
    bool back = false;
    for (int i = 0; i < 300 && !back; i++) {
        dspy_cache_put(c, &k, "again", 5, &only_l2, NULL);
        if (dspy_cache_get(c, &k, &only_l2, &v) == DSPY_OK) {
            back = v.len == 5 && memcmp(v.data, "again", 5) == 0;
            dspy_cache_value_release(&v);
        }
        struct timespec ts = { 0, 10 * 1000000L };
        nanosleep(&ts, NULL);
    }
    assert_true(back);
    dspy_cache_stats(c, &st);
    assert_true(st.redis_up);
    dspy_cache_free(c);
}

/* A hung Redis (stopped process: connections open, no answers) costs one timeout, then
 * calls are skipped while backing off. */
static void hung_redis_times_out(void **state)
{
    (void)state;
    dspy_cache *c = open_l2(DSPY_CACHE_L2, server.url);
    struct dspy_cache_key k = key_n(1);
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    struct dspy_cache_stats st;
    assert_int_equal(dspy_cache_put(c, &k, "x", 1, NULL, NULL), DSPY_OK);
    kill(server.pid, SIGSTOP);
    for (int i = 0; i < 100; i++)
        assert_int_equal(dspy_cache_get(c, &k, NULL, &v), DSPY_ENOTFOUND);
    kill(server.pid, SIGCONT);
    /* Counted, not timed: a timeout, then gets skipped while backing off. */
    dspy_cache_stats(c, &st);
    print_message("100 gets against a hung Redis: %llu timed out, %llu skipped\n",
                  (unsigned long long)st.level[1].errors, (unsigned long long)st.level[1].skipped);
    assert_true(st.level[1].errors >= 1);
    assert_true(st.level[1].errors + st.level[1].skipped >= 100);
    assert_true(st.level[1].errors < st.level[1].skipped);
    dspy_cache_free(c);
}

static void unreachable_at_start_is_not_an_error(void **state)
{
    (void)state;
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/2", redis_free_port());
    dspy_cache *c = open_l2(DSPY_CACHE_L2, url);
    struct dspy_cache_key k = key_n(1);
    struct dspy_cache_stats st;
    assert_int_equal(dspy_cache_put(c, &k, "x", 1, NULL, NULL), DSPY_OK);
    assert_false(dspy_cache_has(c, &k));
    dspy_cache_stats(c, &st);
    assert_false(st.redis_up);
    assert_non_null(strstr(st.level[1].last_error, "connect"));
    dspy_cache_free(c);

    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    struct dspy_error err;
    o.levels = DSPY_CACHE_L2;
    o.redis_url = "http://localhost";
    assert_int_equal(dspy_cache_new(&o, &c, &err), DSPY_EINVAL);
    o.redis_url = "redis://host:99999";
    assert_int_equal(dspy_cache_new(&o, &c, &err), DSPY_EINVAL);
    o.redis_url = NULL;
    assert_int_equal(dspy_cache_new(&o, &c, &err), DSPY_EINVAL);
}

/* A Redis answering "*857108864" (an array of 6.8 GB of pointers in hiredis) is a protocol
 * error, counted and reported, and a miss; nothing of that size is allocated. */
static void a_hostile_redis_is_refused_not_allocated(void **state)
{
    (void)state;
    static const char answer[] = "*857108864\r\n";
    struct hostile_redis h;
    assert_true(hostile_redis_start(&h, answer, sizeof(answer) - 1));
    dspy_cache *c = open_l2(DSPY_CACHE_L2, h.url);
    struct dspy_cache_key k = key_n(1);
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    struct dspy_cache_stats st;
    assert_int_equal(dspy_cache_get(c, &k, NULL, &v), DSPY_ENOTFOUND);
    dspy_cache_stats(c, &st);
    print_message("last error: %s\n", st.level[1].last_error);
    assert_int_equal(st.level[1].errors, 1);
    assert_non_null(strstr(st.level[1].last_error, "Redis reply too large: 857108864 elements"));
    dspy_cache_free(c);
    hostile_redis_stop(&h);
}

/* A SCAN reply whose key list holds an integer among the strings is refused with an error
 * naming it, by clear and by export, and nothing is unlinked on its say-so. */
static void a_hostile_scan_reply_is_refused(void **state)
{
    (void)state;
    static const char answer[] = "*2\r\n$1\r\n0\r\n*2\r\n$3\r\nabc\r\n:5\r\n";
    struct hostile_redis h;
    assert_true(hostile_redis_start(&h, answer, sizeof(answer) - 1));
    dspy_cache *c = open_l2(DSPY_CACHE_L2, h.url);
    struct dspy_error err;
    assert_int_equal(dspy_cache_clear(c, DSPY_CACHE_L2, &err), DSPY_EPARSE);
    print_message("clear: %s\n", err.message);
    assert_non_null(strstr(err.message, "SCAN reply"));
    assert_non_null(strstr(err.message, "key 1 is an integer, not a string"));
    size_t count = 0;
    FILE *out = tmpfile();
    assert_non_null(out);
    assert_int_equal(dspy_cache_export(c, DSPY_CACHE_L2, out, &count, &err), DSPY_EPARSE);
    assert_non_null(strstr(err.message, "key 1 is an integer, not a string"));
    assert_int_equal(count, 0);
    fclose(out);
    dspy_cache_free(c);
    hostile_redis_stop(&h);
}

static int start(void **state)
{
    (void)state;
    return redis_server_start(&server) ? 0 : -1;
}

static int stop(void **state)
{
    (void)state;
    redis_server_kill(&server);
    return 0;
}

int main(void)
{
    if (!redis_server_installed()) {
        printf("SKIP: redis-server is not installed\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hits_ttls_and_promotion),
        cmocka_unit_test(batch_lookup_in_one_round_trip),
        cmocka_unit_test(batch_lookup_across_three_levels),
        cmocka_unit_test(corrupt_values_are_dropped),
        cmocka_unit_test(export_and_clear_touch_only_the_prefix),
        cmocka_unit_test(hung_redis_times_out),
        cmocka_unit_test(killed_redis_degrades_then_reconnects),
        cmocka_unit_test(unreachable_at_start_is_not_an_error),
        cmocka_unit_test(a_hostile_redis_is_refused_not_allocated),
        cmocka_unit_test(a_hostile_scan_reply_is_refused),
    };
    return cmocka_run_group_tests(tests, start, stop);
}

/* Unit tests for the disk level (L3, LMDB): persistence across reopen, promotion into L1,
 * compression, the byte budget, TTL, corrupt and truncated entries (detected, dropped,
 * counted, never returned), and two processes sharing one directory. */
#include <lmdb.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <dspyc/cache.h>

#include "base/clock.h"

static char dir[64];

static int make_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/dspyc-disk-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    char path[128];
    (void)state;
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/lock.mdb", dir);
    unlink(path);
    return rmdir(dir);
}

static dspy_cache *open_disk(unsigned levels, size_t max_bytes)
{
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    dspy_cache *c = NULL;
    struct dspy_error err;
    o.levels = levels;
    o.disk_path = dir;
    if (max_bytes)
        o.disk_max_bytes = max_bytes;
    if (dspy_cache_new(&o, &c, &err) != DSPY_OK)
        print_error("open: %s\n", err.message);
    assert_non_null(c);
    return c;
}

static struct dspy_cache_key key_n(uint32_t n)
{
    struct dspy_cache_key k;
    char text[32];
    int len = snprintf(text, sizeof(text), "request-%u", n);
    dspy_cache_key_from_canonical(text, (size_t)len, NULL, &k);
    return k;
}

/* A ~2 KB value that spells n, so mixed-up entries are caught. */
static size_t value_n(uint32_t n, char *buf, size_t cap)
{
    size_t len = 0;
    while (len + 24 < cap && len < 2000)
        len += (size_t)snprintf(buf + len, cap - len, "[value %u / %zu]", n, len);
    return len;
}

static bool holds_value_n(dspy_cache *c, uint32_t n, enum dspy_cache_source want)
{
    struct dspy_cache_key k = key_n(n);
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    char buf[2100];
    size_t len = value_n(n, buf, sizeof(buf));
    if (dspy_cache_get(c, &k, NULL, &v) != DSPY_OK)
        return false;
    bool ok = v.len == len && memcmp(v.data, buf, len) == 0 && v.source == want;
    dspy_cache_value_release(&v);
    return ok;
}

static void put_n(dspy_cache *c, uint32_t n)
{
    struct dspy_cache_key k = key_n(n);
    char buf[2100];
    size_t len = value_n(n, buf, sizeof(buf));
    assert_int_equal(dspy_cache_put(c, &k, buf, len, NULL, NULL), DSPY_OK);
}

static void entries_survive_reopen_and_promote(void **state)
{
    (void)state;
    struct dspy_cache_stats st;
    dspy_cache *c = open_disk(DSPY_CACHE_L3, 0);
    for (uint32_t i = 0; i < 100; i++)
        put_n(c, i);
    dspy_cache_free(c);
    c = open_disk(DSPY_CACHE_L1 | DSPY_CACHE_L3, 0);
    for (uint32_t i = 0; i < 100; i++)
        assert_true(holds_value_n(c, i, DSPY_CACHE_FROM_L3));
    for (uint32_t i = 0; i < 100; i++)
        assert_true(holds_value_n(c, i, DSPY_CACHE_FROM_L1));
    /* batch lookup: 95..99 from L1, 100..104 missing everywhere */
    struct dspy_cache_key ks[10];
    struct dspy_cache_value vs[10];
    for (uint32_t i = 0; i < 10; i++)
        ks[i] = key_n(95 + i);
    assert_int_equal(dspy_cache_get_many(c, ks, 10, NULL, vs), 5);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(vs[i].source, i < 5 ? DSPY_CACHE_FROM_L1 : DSPY_CACHE_MISS);
        dspy_cache_value_release(&vs[i]);
    }
    dspy_cache_stats(c, &st);
    assert_int_equal(st.level[2].hits, 100);
    assert_int_equal(st.level[2].entries, 100);
    /* compressed (the values repeat a lot) but accounted by stored size */
    assert_true(st.level[2].bytes > 0 && st.level[2].bytes < 100 * 2000 / 2);
    assert_int_equal(st.level[0].entries, 100);
    assert_int_equal(dspy_cache_clear(c, DSPY_CACHE_L3, NULL), DSPY_OK);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.level[2].entries, 0);
    assert_int_equal(st.level[2].bytes, 0);
    dspy_cache_free(c);
}

static void budget_evicts_oldest(void **state)
{
    (void)state;
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    struct dspy_cache_stats st;
    dspy_cache *c;
    o.levels = DSPY_CACHE_L3;
    o.disk_path = dir;
    o.disk_max_bytes = 64 * 1024;
    o.disk_compress_min = 0; /* exact sizes */
    assert_int_equal(dspy_cache_new(&o, &c, NULL), DSPY_OK);
    for (uint32_t i = 0; i < 300; i++)
        put_n(c, i);
    dspy_cache_stats(c, &st);
    assert_true(st.level[2].bytes <= 64 * 1024);
    assert_true(st.level[2].entries >= 25 && st.level[2].entries < 40);
    assert_int_equal(st.level[2].evictions, 300 - st.level[2].entries);
    assert_true(holds_value_n(c, 299, DSPY_CACHE_FROM_L3));
    assert_false(holds_value_n(c, 0, DSPY_CACHE_FROM_L3));
    /* replacing an entry does not leak budget */
    uint64_t before = st.level[2].bytes;
    put_n(c, 299);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.level[2].bytes, before);
    dspy_cache_clear(c, 0, NULL);
    dspy_cache_free(c);
}

static void ttl_applies_on_disk(void **state)
{
    (void)state;
    struct dspy_cache_ctl t = DSPY_CACHE_CTL_INIT;
    struct dspy_cache_key k = key_n(1);
    struct dspy_cache_stats st;
    dspy_cache *c = open_disk(DSPY_CACHE_L3, 0);
    t.ttl_s = 0.03;
    dspy__clock_freeze((uint64_t)1 << 40); /* the base clock hook: stepped, not slept */
    assert_int_equal(dspy_cache_put(c, &k, "soon gone", 9, &t, NULL), DSPY_OK);
    dspy__clock_advance(29 * 1000000u);
    assert_true(dspy_cache_has(c, &k)); /* 1 ms before its TTL */
    dspy__clock_advance(2 * 1000000u);
    assert_false(dspy_cache_has(c, &k));
    dspy__clock_freeze(0);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.level[2].expired, 1);
    assert_int_equal(st.level[2].entries, 0);
    dspy_cache_free(c);
}

/* Rewrite the stored frame of `victim` behind the cache's back. mode 0: flip a payload
 * byte; 1: truncate; 2: copy another key's (valid) frame. */
static void tamper(uint32_t victim, int mode, uint32_t other)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    struct dspy_cache_key k = key_n(victim), o = key_n(other);
    MDB_val key = { 16, k.bytes }, okey = { 16, o.bytes }, v;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 4);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "entries", 0, &dbi), 0);
    assert_int_equal(mdb_get(txn, dbi, mode == 2 ? &okey : &key, &v), 0);
    unsigned char *copy = malloc(v.mv_size);
    memcpy(copy, v.mv_data, v.mv_size);
    MDB_val nv = { v.mv_size, copy };
    if (mode == 0)
        copy[v.mv_size - 3] ^= 0x40;
    if (mode == 1)
        nv.mv_size = v.mv_size / 2;
    assert_int_equal(mdb_put(txn, dbi, &key, &nv, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    free(copy);
}

static void corrupt_entries_are_dropped_not_returned(void **state)
{
    (void)state;
    struct dspy_cache_stats st;
    dspy_cache *c = open_disk(DSPY_CACHE_L3, 0);
    for (uint32_t i = 0; i < 5; i++)
        put_n(c, i);
    dspy_cache_free(c);
    tamper(1, 0, 0);
    tamper(2, 1, 0);
    tamper(3, 2, 4);
    c = open_disk(DSPY_CACHE_L3, 0);
    assert_true(holds_value_n(c, 0, DSPY_CACHE_FROM_L3));
    assert_false(holds_value_n(c, 1, DSPY_CACHE_FROM_L3));
    assert_false(holds_value_n(c, 2, DSPY_CACHE_FROM_L3));
    assert_false(holds_value_n(c, 3, DSPY_CACHE_FROM_L3));
    assert_true(holds_value_n(c, 4, DSPY_CACHE_FROM_L3));
    dspy_cache_stats(c, &st);
    assert_int_equal(st.level[2].corrupt, 3);
    assert_int_equal(st.level[2].entries, 2); /* deleted on detection */
    assert_non_null(strstr(st.level[2].last_error, "corrupt"));
    json_t *j = dspy_cache_stats_json(c);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "l3"), "corrupt")), 3);
    json_decref(j);
    /* export skips nothing valid and includes nothing corrupt */
    char *buf = NULL;
    size_t len = 0, n = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(dspy_cache_export(c, DSPY_CACHE_L3, f, &n, NULL), DSPY_OK);
    fclose(f);
    free(buf);
    assert_int_equal(n, 2);
    dspy_cache_clear(c, 0, NULL);
    dspy_cache_free(c);
}

/* Child: write its own range while reading the other's as it appears. */
static int child(uint32_t base, uint32_t other)
{
    dspy_cache *c = NULL;
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    o.levels = DSPY_CACHE_L3;
    o.disk_path = dir;
    if (dspy_cache_new(&o, &c, NULL) != DSPY_OK)
        return 2;
    int bad = 0;
    for (uint32_t i = 0; i < 400; i++) {
        struct dspy_cache_key k = key_n(base + i);
        char buf[2100];
        size_t len = value_n(base + i, buf, sizeof(buf));
        if (dspy_cache_put(c, &k, buf, len, NULL, NULL) != DSPY_OK)
            bad++;
        /* whatever of the other range is visible must be intact */
        struct dspy_cache_key ok = key_n(other + i);
        struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
        if (dspy_cache_get(c, &ok, NULL, &v) == DSPY_OK) {
            len = value_n(other + i, buf, sizeof(buf));
            if (v.len != len || memcmp(v.data, buf, len) != 0)
                bad++;
            dspy_cache_value_release(&v);
        }
    }
    struct dspy_cache_stats st;
    dspy_cache_stats(c, &st);
    dspy_cache_free(c);
    return bad || st.level[2].corrupt || st.level[2].errors ? 1 : 0;
}

static void two_processes_share_a_directory(void **state)
{
    (void)state;
    pid_t a = fork();
    if (a == 0)
        _exit(child(0, 10000));
    pid_t b = fork();
    if (b == 0)
        _exit(child(10000, 0));
    int sa, sb;
    waitpid(a, &sa, 0);
    waitpid(b, &sb, 0);
    assert_true(WIFEXITED(sa) && WEXITSTATUS(sa) == 0);
    assert_true(WIFEXITED(sb) && WEXITSTATUS(sb) == 0);
    dspy_cache *c = open_disk(DSPY_CACHE_L3, 0);
    for (uint32_t i = 0; i < 400; i++) {
        assert_true(holds_value_n(c, i, DSPY_CACHE_FROM_L3));
        assert_true(holds_value_n(c, 10000 + i, DSPY_CACHE_FROM_L3));
    }
    struct dspy_cache_stats st;
    dspy_cache_stats(c, &st);
    assert_int_equal(st.level[2].entries, 800);
    assert_int_equal(st.level[2].corrupt, 0);
    dspy_cache_clear(c, 0, NULL);
    dspy_cache_free(c);
}

static void bad_options(void **state)
{
    (void)state;
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    struct dspy_error err;
    dspy_cache *c = (dspy_cache *)1;
    o.levels = DSPY_CACHE_L3;
    assert_int_equal(dspy_cache_new(&o, &c, &err), DSPY_EINVAL);
    assert_null(c);
    o.disk_path = "/proc/no-such-place/cache";
    assert_int_equal(dspy_cache_new(&o, &c, &err), DSPY_EIO);
    assert_non_null(strstr(err.message, "/proc/no-such-place"));
}

/* A store file cut short (a full disk, a copy that stopped) is refused with DSPY_ECORRUPT
 * naming the file, before LMDB maps it (it would SIGBUS reading the missing pages); so is one
 * that is not LMDB at all; dspy_cache_disk_reset() repairs the directory. */
static void damaged_file_is_refused_then_reset(void **state)
{
    (void)state;
    char path[128], buf[2100];
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    dspy_cache *c = open_disk(DSPY_CACHE_L3, 0);
    for (uint32_t i = 0; i < 100; i++) {
        struct dspy_cache_key k = key_n(i);
        size_t len = value_n(i, buf, sizeof(buf));
        assert_int_equal(dspy_cache_put(c, &k, buf, len, NULL, NULL), DSPY_OK);
    }
    dspy_cache_free(c);
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    assert_int_equal(truncate(path, 64 << 10), 0);

    struct dspy_error err;
    o.levels = DSPY_CACHE_L1 | DSPY_CACHE_L3;
    o.disk_path = dir;
    c = NULL;
    assert_int_equal(dspy_cache_new(&o, &c, &err), DSPY_ECORRUPT);
    assert_null(c);
    assert_non_null(strstr(err.message, path));
    assert_non_null(strstr(err.message, "damaged"));
    assert_non_null(strstr(err.message, "65536"));
    assert_string_equal(err.file, path);

    /* Not an LMDB file at all. */
    FILE *f = fopen(path, "wb");
    for (int i = 0; i < 3000; i++)
        fputs("garbage ", f);
    fclose(f);
    assert_int_equal(dspy_cache_new(&o, &c, &err), DSPY_ECORRUPT);
    assert_non_null(strstr(err.message, "not an LMDB file"));

    assert_int_equal(dspy_cache_disk_reset(dir, &err), DSPY_OK);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(dspy_cache_disk_reset(dir, &err), DSPY_OK); /* nothing left: fine */
    c = open_disk(DSPY_CACHE_L3, 0);
    assert_false(holds_value_n(c, 1, DSPY_CACHE_FROM_L3));
    struct dspy_cache_key k = key_n(1);
    size_t len = value_n(1, buf, sizeof(buf));
    assert_int_equal(dspy_cache_put(c, &k, buf, len, NULL, NULL), DSPY_OK);
    assert_true(holds_value_n(c, 1, DSPY_CACHE_FROM_L3));
    dspy_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(entries_survive_reopen_and_promote, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(budget_evicts_oldest, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(ttl_applies_on_disk, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(corrupt_entries_are_dropped_not_returned, make_dir,
                                        remove_dir),
        cmocka_unit_test_setup_teardown(two_processes_share_a_directory, make_dir, remove_dir),
        cmocka_unit_test_setup_teardown(damaged_file_is_refused_then_reset, make_dir, remove_dir),
        cmocka_unit_test(bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

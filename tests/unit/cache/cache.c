/* Unit tests for the cache hierarchy: promotion L3 -> L2 -> L1, per-request flags across
 * levels, single-flight within a process (100 threads, one fill; shared errors) and
 * across processes through the Redis lease (one fill; a dead holder blocks nobody past
 * its lease). Tests that need Redis are skipped when redis-server is not installed. */
/* threads: single-flight and concurrent readers run on test threads. */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <dspyc/cache.h>

#include "unit/cache/redis_server.h"

static struct redis_server server;
static bool have_redis;
static char dir[64];

static struct dspy_cache_key key_of(const char *text)
{
    struct dspy_cache_key k;
    dspy_cache_key_from_canonical(text, strlen(text), NULL, &k);
    return k;
}

static dspy_cache *open_levels(unsigned levels, unsigned lease_ms)
{
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    dspy_cache *c = NULL;
    struct dspy_error err;
    o.levels = levels;
    o.redis_url = server.url;
    o.redis_prefix = "hier:";
    o.disk_path = dir;
    o.lease_ms = lease_ms;
    o.lease_poll_ms = 5;
    /* The default 50 ms is for production; under TSan on a busy machine a lease command can
     * take longer, and a timed-out lease means filling without one (a second fill). */
    o.redis_timeout_ms = 2000;
    if (dspy_cache_new(&o, &c, &err))
        print_error("open: %s\n", err.message);
    assert_non_null(c);
    return c;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static void promotion_through_all_levels(void **state)
{
    (void)state;
    if (!have_redis)
        skip();
    struct dspy_cache_key k = key_of("promote-me");
    struct dspy_cache_ctl only_l3 = DSPY_CACHE_CTL_INIT, only_l2 = DSPY_CACHE_CTL_INIT;
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    struct dspy_cache_stats st;
    only_l3.levels = DSPY_CACHE_L3;
    only_l2.levels = DSPY_CACHE_L2;
    dspy_cache *c = open_levels(DSPY_CACHE_ALL, 0);
    assert_int_equal(dspy_cache_clear(c, 0, NULL), DSPY_OK);
    assert_int_equal(dspy_cache_put(c, &k, "deep", 4, &only_l3, NULL), DSPY_OK);
    assert_int_equal(dspy_cache_get(c, &k, &only_l2, &v), DSPY_ENOTFOUND);
    assert_int_equal(dspy_cache_get(c, &k, NULL, &v), DSPY_OK);
    assert_int_equal(v.source, DSPY_CACHE_FROM_L3);
    dspy_cache_value_release(&v);
    assert_int_equal(dspy_cache_get(c, &k, NULL, &v), DSPY_OK);
    assert_int_equal(v.source, DSPY_CACHE_FROM_L1);
    dspy_cache_value_release(&v);
    assert_int_equal(dspy_cache_get(c, &k, &only_l2, &v), DSPY_OK); /* promoted to L2 too */
    dspy_cache_value_release(&v);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.level[2].hits, 1);
    assert_int_equal(st.level[0].hits, 1);
    assert_int_equal(st.level[1].hits, 1);
    /* delete removes it everywhere; no-cache reads nothing; no-store writes nothing */
    assert_int_equal(dspy_cache_delete(c, &k, NULL), DSPY_OK);
    assert_false(dspy_cache_has(c, &k));
    struct dspy_cache_ctl no_store = DSPY_CACHE_CTL_INIT;
    no_store.no_store = true;
    assert_int_equal(dspy_cache_put(c, &k, "x", 1, &no_store, NULL), DSPY_OK);
    assert_false(dspy_cache_has(c, &k));
    json_t *j = dspy_cache_stats_json(c);
    assert_non_null(json_object_get(j, "l1"));
    assert_non_null(json_object_get(j, "l2"));
    assert_non_null(json_object_get(j, "l3"));
    json_decref(j);
    dspy_cache_clear(c, 0, NULL);
    dspy_cache_free(c);
}

/* --- single-flight within a process ------------------------------------------------ */

#define THREADS 100

struct race {
    dspy_cache *c;
    struct dspy_cache_key key;
    pthread_barrier_t start;
    atomic_int fills;
    dspy_status fail_with; /* DSPY_OK: succeed */
    int sources[8];
    pthread_mutex_t lock;
    int mismatches;
    int errors_seen;
};

/* The fill holds until every other racer has joined its flight (the cache counts one as
 * coalesced when it joins), so all of them share this fill however the threads run; a
 * racer that never joins shows in the counts after 20 s. */
static dspy_status slow_fill(void *ud, struct dspy_cache_fill *fill, struct dspy_error *err)
{
    struct race *r = ud;
    struct dspy_cache_stats st;
    atomic_fetch_add(&r->fills, 1);
    for (int i = 0; i < 20000; i++) {
        dspy_cache_stats(r->c, &st);
        if (st.coalesced >= THREADS - 1)
            break;
        sleep_ms(1);
    }
    if (r->fail_with) {
        snprintf(err->message, sizeof(err->message), "upstream said no");
        err->code = r->fail_with;
        err->http_status = 503;
        return r->fail_with;
    }
    fill->value = dspy_strdup("{\"answer\":\"Paris\"}");
    fill->len = strlen(fill->value);
    return DSPY_OK;
}

static void *racer(void *arg)
{
    struct race *r = arg;
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    struct dspy_error err;
    pthread_barrier_wait(&r->start);
    dspy_status rc = dspy_cache_fetch(r->c, &r->key, NULL, slow_fill, r, &v, &err);
    pthread_mutex_lock(&r->lock);
    if (rc == DSPY_OK) {
        r->sources[v.source]++;
        if (v.len != 18 || memcmp(v.data, "{\"answer\":\"Paris\"}", 18) != 0)
            r->mismatches++;
    } else if (rc == r->fail_with && strcmp(err.message, "upstream said no") == 0 &&
               err.http_status == 503) {
        r->errors_seen++;
    } else {
        r->mismatches++;
    }
    pthread_mutex_unlock(&r->lock);
    dspy_cache_value_release(&v);
    return NULL;
}

static void run_race(struct race *r)
{
    pthread_t t[THREADS];
    pthread_barrier_init(&r->start, NULL, THREADS);
    pthread_mutex_init(&r->lock, NULL);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, racer, r), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&r->start);
    pthread_mutex_destroy(&r->lock);
}

static void hundred_threads_one_fill(void **state)
{
    (void)state;
    static struct race r;
    struct dspy_cache_stats st;
    memset(&r, 0, sizeof(r));
    r.c = open_levels(DSPY_CACHE_L1, 0);
    r.key = key_of("single-flight");
    run_race(&r);
    assert_int_equal(atomic_load(&r.fills), 1);
    assert_int_equal(r.mismatches, 0);
    assert_int_equal(r.sources[DSPY_CACHE_FILLED], 1);
    assert_int_equal(r.sources[DSPY_CACHE_SHARED], THREADS - 1); /* every other one waited */
    dspy_cache_stats(r.c, &st);
    assert_int_equal(st.fills, 1);
    assert_int_equal(st.coalesced, (uint64_t)r.sources[DSPY_CACHE_SHARED]);
    print_message("filled 1, shared %d, L1 hits %d\n", r.sources[DSPY_CACHE_SHARED],
                  r.sources[DSPY_CACHE_FROM_L1]);
    dspy_cache_free(r.c);
}

static void waiters_share_the_leaders_error(void **state)
{
    (void)state;
    static struct race r;
    struct dspy_cache_stats st;
    memset(&r, 0, sizeof(r));
    r.c = open_levels(DSPY_CACHE_L1, 0);
    r.key = key_of("failing");
    r.fail_with = DSPY_ELM_SERVER;
    run_race(&r);
    assert_int_equal(r.mismatches, 0);
    /* every caller got the error, the waiters the leader's: one fill */
    assert_int_equal(r.errors_seen, THREADS);
    assert_int_equal(atomic_load(&r.fills), 1);
    assert_false(dspy_cache_has(r.c, &r.key)); /* errors are never cached */
    dspy_cache_stats(r.c, &st);
    assert_int_equal(st.fill_errors, (uint64_t)atomic_load(&r.fills));
    dspy_cache_free(r.c);
}

static dspy_status counting_fill(void *ud, struct dspy_cache_fill *fill, struct dspy_error *err)
{
    int *n = ud;
    (void)err;
    (*n)++;
    fill->value = dspy_strdup("fresh");
    fill->len = 5;
    if (*n == 3)
        fill->no_store = true;
    return DSPY_OK;
}

static void fetch_flags(void **state)
{
    (void)state;
    dspy_cache *c = open_levels(DSPY_CACHE_L1, 0);
    struct dspy_cache_key k = key_of("flags");
    struct dspy_cache_ctl no_cache = DSPY_CACHE_CTL_INIT, no_store = DSPY_CACHE_CTL_INIT;
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    int n = 0;
    no_cache.no_cache = true;
    no_store.no_store = true;
    assert_int_equal(dspy_cache_fetch(c, &k, &no_store, counting_fill, &n, &v, NULL), DSPY_OK);
    assert_int_equal(v.source, DSPY_CACHE_FILLED);
    assert_memory_equal(v.data, "fresh", 5);
    dspy_cache_value_release(&v);
    assert_false(dspy_cache_has(c, &k));
    assert_int_equal(dspy_cache_fetch(c, &k, NULL, counting_fill, &n, &v, NULL), DSPY_OK);
    dspy_cache_value_release(&v);
    assert_int_equal(dspy_cache_fetch(c, &k, NULL, counting_fill, &n, &v, NULL), DSPY_OK);
    assert_int_equal(v.source, DSPY_CACHE_FROM_L1);
    dspy_cache_value_release(&v);
    assert_int_equal(n, 2);
    assert_int_equal(dspy_cache_fetch(c, &k, &no_cache, counting_fill, &n, &v, NULL), DSPY_OK);
    assert_int_equal(v.source, DSPY_CACHE_FILLED); /* fill->no_store on the 3rd */
    dspy_cache_value_release(&v);
    assert_int_equal(n, 3);
    dspy_cache_free(c);
}

/* --- single-flight across processes ------------------------------------------------- */

static char counter_path[96];

static dspy_status file_counting_fill(void *ud, struct dspy_cache_fill *fill,
                                      struct dspy_error *err)
{
    long ms = *(long *)ud;
    (void)err;
    int fd = open(counter_path, O_WRONLY | O_APPEND | O_CREAT, 0600);
    if (fd >= 0) {
        ssize_t n = write(fd, "x", 1);
        (void)n;
        close(fd);
    }
    sleep_ms(ms);
    fill->value = dspy_strdup("cross-process value");
    fill->len = strlen(fill->value);
    return DSPY_OK;
}

static long fills_recorded(void)
{
    struct stat st;
    return stat(counter_path, &st) == 0 ? (long)st.st_size : 0;
}

/* Child: wait for the go byte, fetch, report the source as exit status. */
static int fetch_in_child(int go, const char *keytext, long fill_ms)
{
    char b;
    dspy_cache *c = open_levels(DSPY_CACHE_L1 | DSPY_CACHE_L2, 5000);
    struct dspy_cache_key k = key_of(keytext);
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    if (read(go, &b, 1) != 1)
        return 100;
    dspy_status rc = dspy_cache_fetch(c, &k, NULL, file_counting_fill, &fill_ms, &v, NULL);
    int status = rc ? 101 : (int)v.source;
    if (!rc && (v.len != 19 || memcmp(v.data, "cross-process value", 19) != 0))
        status = 102;
    dspy_cache_value_release(&v);
    dspy_cache_free(c);
    return status;
}

static void two_processes_one_fill(void **state)
{
    (void)state;
    if (!have_redis)
        skip();
    int p[2];
    pid_t kids[2];
    int st[2];
    snprintf(counter_path, sizeof(counter_path), "%s/fills", dir);
    unlink(counter_path);
    assert_int_equal(pipe(p), 0);
    for (int i = 0; i < 2; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            close(p[1]);
            _exit(fetch_in_child(p[0], "cross-process", 300));
        }
    }
    close(p[0]);
    assert_int_equal(write(p[1], "gg", 2), 2);
    close(p[1]);
    for (int i = 0; i < 2; i++) {
        waitpid(kids[i], &st[i], 0);
        assert_true(WIFEXITED(st[i]));
        st[i] = WEXITSTATUS(st[i]);
    }
    print_message("sources: %s, %s\n", dspy_cache_source_name(st[0]),
                  dspy_cache_source_name(st[1]));
    assert_int_equal(fills_recorded(), 1);
    /* the other one waited on the lease (or, if it started very late, simply hit L2) */
    int other = st[0] == DSPY_CACHE_FILLED ? st[1] : st[0];
    assert_true(st[0] == DSPY_CACHE_FILLED || st[1] == DSPY_CACHE_FILLED);
    assert_true(other == DSPY_CACHE_REMOTE || other == DSPY_CACHE_FROM_L2);
    unlink(counter_path);
}

static dspy_status die_while_filling(void *ud, struct dspy_cache_fill *fill, struct dspy_error *err)
{
    int fd = *(int *)ud;
    (void)fill;
    (void)err;
    if (write(fd, "L", 1) != 1)
        _exit(3);
    _exit(0); /* holds the lease and never stores or releases it */
}

static void dead_lease_holder_blocks_nobody(void **state)
{
    (void)state;
    if (!have_redis)
        skip();
    struct dspy_cache_key k = key_of("holder-dies");
    int p[2];
    char b;
    assert_int_equal(pipe(p), 0);
    pid_t kid = fork();
    if (kid == 0) {
        dspy_cache *c = open_levels(DSPY_CACHE_L2, 400);
        struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
        dspy_cache_fetch(c, &k, NULL, die_while_filling, &p[1], &v, NULL);
        _exit(4);
    }
    assert_int_equal(read(p[0], &b, 1), 1); /* the child holds the lease now */
    waitpid(kid, NULL, 0);
    close(p[0]);
    close(p[1]);
    dspy_cache *c = open_levels(DSPY_CACHE_L2, 400);
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    struct dspy_cache_stats st;
    long fill_ms = 0;
    snprintf(counter_path, sizeof(counter_path), "%s/fills", dir);
    unlink(counter_path);
    /* No clock: that it waited is the lease_waits count, that it then filled is the source
     * and the fill count (a wait that never ended would hang the test, not pass it). */
    assert_int_equal(dspy_cache_fetch(c, &k, NULL, file_counting_fill, &fill_ms, &v, NULL),
                     DSPY_OK);
    assert_int_equal(v.source, DSPY_CACHE_FILLED);
    dspy_cache_value_release(&v);
    dspy_cache_stats(c, &st);
    assert_int_equal(st.lease_waits, 1);
    assert_int_equal(fills_recorded(), 1);
    dspy_cache_delete(c, &k, NULL);
    dspy_cache_free(c);
    unlink(counter_path);
}

static dspy_status error_fill(void *ud, struct dspy_cache_fill *fill, struct dspy_error *err)
{
    (void)ud;
    (void)fill;
    snprintf(err->message, sizeof(err->message), "the model failed");
    err->code = DSPY_ELM_SERVER;
    return DSPY_ELM_SERVER;
}

/* Whether Redis holds `name` (a key of the "hier:" prefix, kind "" or "lease:"). */
static bool redis_has(const char *kind, const struct dspy_cache_key *k)
{
    char hex[33], name[64];
    dspy_cache_key_hex(k, hex);
    snprintf(name, sizeof(name), "hier:%s%s", kind, hex);
    redisContext *rc = redis_connect_port(server.port);
    assert_non_null(rc);
    redisReply *rep = redisCommand(rc, "EXISTS %s", name);
    assert_non_null(rep);
    bool has = rep->type == REDIS_REPLY_INTEGER && rep->integer == 1;
    freeReplyObject(rep);
    redisFree(rc);
    return has;
}

static uint64_t l2_round_trips(dspy_cache *c)
{
    struct dspy_cache_stats st;
    dspy_cache_stats(c, &st);
    return st.level[1].round_trips;
}

/* A leased miss costs three round trips to Redis: the look-up, the lease (looking again),
 * then the value written and the lease released together (they were two). A fill that
 * fails still releases its lease. */
static void leased_miss_two_round_trips(void **state)
{
    (void)state;
    if (!have_redis)
        skip();
    dspy_cache *c = open_levels(DSPY_CACHE_L2, 10000);
    struct dspy_cache_key k = key_of("two-round-trips"), bad = key_of("fill-fails");
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    struct dspy_error err;
    int n = 0;
    uint64_t rt = l2_round_trips(c);
    assert_int_equal(dspy_cache_fetch(c, &k, NULL, counting_fill, &n, &v, NULL), DSPY_OK);
    assert_int_equal(v.source, DSPY_CACHE_FILLED);
    dspy_cache_value_release(&v);
    assert_int_equal(l2_round_trips(c) - rt, 3);
    assert_true(redis_has("", &k));
    assert_false(redis_has("lease:", &k));
    struct dspy_cache_stats st;
    dspy_cache_stats(c, &st);
    assert_int_equal(st.level[1].puts, 1);
    /* the value is served from Redis now: one round trip, no fill */
    rt = l2_round_trips(c);
    assert_int_equal(dspy_cache_fetch(c, &k, NULL, counting_fill, &n, &v, NULL), DSPY_OK);
    assert_int_equal(v.source, DSPY_CACHE_FROM_L2);
    assert_memory_equal(v.data, "fresh", 5);
    dspy_cache_value_release(&v);
    assert_int_equal(l2_round_trips(c) - rt, 1);
    assert_int_equal(n, 1);
    /* a failed fill: nothing stored, the lease released all the same */
    rt = l2_round_trips(c);
    assert_int_equal(dspy_cache_fetch(c, &bad, NULL, error_fill, NULL, &v, &err), DSPY_ELM_SERVER);
    assert_int_equal(l2_round_trips(c) - rt, 3);
    assert_false(redis_has("", &bad));
    assert_false(redis_has("lease:", &bad));
    dspy_cache_free(c);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/dspyc-hier-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    have_redis = redis_server_installed();
    if (!have_redis) {
        printf("SKIP: redis-server is not installed; Redis tests are skipped\n");
        snprintf(server.url, sizeof(server.url), "redis://127.0.0.1:1");
        return 0;
    }
    return redis_server_start(&server) ? 0 : -1;
}

static int teardown(void **state)
{
    char path[128];
    (void)state;
    redis_server_kill(&server);
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/lock.mdb", dir);
    unlink(path);
    rmdir(dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(promotion_through_all_levels),
        cmocka_unit_test(hundred_threads_one_fill),
        cmocka_unit_test(waiters_share_the_leaders_error),
        cmocka_unit_test(fetch_flags),
        cmocka_unit_test(leased_miss_two_round_trips),
        cmocka_unit_test(two_processes_one_fill),
        cmocka_unit_test(dead_lease_holder_blocks_nobody),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

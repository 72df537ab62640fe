/* Unit tests of the Redis Streams transport (jobs layer) against a real redis-server started
 * here: a published job is claimed and run by a worker (dspy_worker_run on a thread) and its
 * events and result come back to the server's side; a small result travels in its event; a
 * cancelled job ends cancelled; the worker's heartbeat shows its slots and memory budget;
 * purge removes result keys and acknowledged stream entries; and replies of the wrong shape
 * are refused by every reader, and a hostile server's oversized one by the connection.
 * threads: the worker's, its heartbeat, the events and publisher
 * threads. */
#include <hiredis/hiredis.h>
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
#include <unistd.h>

#include <cmocka.h>

#include <dspyc/dspyc.h>

#include "jobs/jobs_int.h"
#include "unit/cache/redis_server.h"
#include "unit/net/hostile_redis.h"

static struct redis_server srv;

struct seen {
    pthread_mutex_t lock;
    char states[64][48]; /* "ID STATE" */
    char results[8][256];
    size_t n, nres;
    unsigned published;
};

static void on_event(void *ud, const char *id, const char *state, const char *error,
                     const char *progress, const char *result)
{
    (void)error;
    (void)progress;
    struct seen *s = ud;
    pthread_mutex_lock(&s->lock);
    if (s->n < 64)
        snprintf(s->states[s->n++], sizeof(s->states[0]), "%s %s", id, state);
    if (result && s->nres < 8)
        snprintf(s->results[s->nres++], sizeof(s->results[0]), "%s", result);
    pthread_mutex_unlock(&s->lock);
}

static void on_published(void *ud, const char *id)
{
    (void)id;
    struct seen *s = ud;
    pthread_mutex_lock(&s->lock);
    s->published++;
    pthread_mutex_unlock(&s->lock);
}

static bool has(struct seen *s, const char *what)
{
    pthread_mutex_lock(&s->lock);
    bool yes = false;
    for (size_t i = 0; i < s->n && !yes; i++)
        yes = !strcmp(s->states[i], what);
    pthread_mutex_unlock(&s->lock);
    return yes;
}

static bool wait_for(struct seen *s, const char *what)
{
    for (int i = 0; i < 1500; i++) { /* 15 s: a sanitizer build on a busy machine */
        if (has(s, what))
            return true;
        usleep(10000);
    }
    return false;
}

static dspy_lm *no_lm(void *ud, const char *model)
{
    (void)ud;
    (void)model;
    return NULL;
}

struct worker {
    pthread_t th;
    struct dspy_worker_options o;
    volatile int stop;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct dspy_error err;
    dspy_error_clear(&err);
    dspy_worker_run(&w->o, &err);
    return NULL;
}

/* What a worker's LM pool reports: set by a test, read by the worker's heartbeat. */
struct lm_now {
    _Atomic uint64_t in_flight, waiting;
};

static void lm_pool_now(void *ud, struct dspy_jobq_pool *out)
{
    struct lm_now *p = ud;
    memset(out, 0, sizeof(*out));
    out->in_flight = atomic_load(&p->in_flight);
    out->waiting = atomic_load(&p->waiting);
}

static void worker_start_with(struct worker *w, uint64_t budget, struct lm_now *lm)
{
    struct dspy_worker_options o = DSPY_WORKER_OPTIONS_INIT;
    if (lm) {
        o.lm_pool = lm_pool_now;
        o.lm_userdata = lm;
    }
    o.redis_url = srv.url;
    o.concurrency = 2;
    o.name = "unit-worker";
    o.lm = no_lm;
    o.visibility_s = 2;
    o.memory_budget = budget;
    w->o = o;
    w->stop = 0;
    w->o.stop = &w->stop;
    assert_int_equal(pthread_create(&w->th, NULL, worker_main, w), 0);
}

static void worker_start(struct worker *w, uint64_t budget)
{
    worker_start_with(w, budget, NULL);
}

static void worker_stop(struct worker *w)
{
    __atomic_store_n(&w->stop, 1, __ATOMIC_RELAXED);
    pthread_join(w->th, NULL);
}

static long long redis_int(const char *fmt, const char *arg)
{
    redisContext *c = redis_connect_port(srv.port);
    assert_non_null(c);
    redisReply *r = redisCommand(c, fmt, arg);
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    redisFree(c);
    return v;
}

static int setup(void **state)
{
    (void)state;
    srv.port = 0;
    return redis_server_start(&srv) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    redis_server_kill(&srv);
    return 0;
}

static void flush(void)
{
    redisContext *c = redis_connect_port(srv.port);
    assert_non_null(c);
    freeReplyObject(redisCommand(c, "FLUSHALL"));
    redisFree(c);
}

static void open_side(struct seen *s, struct dspy__rjobs **r)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    struct dspy_error err;
    dspy_error_clear(&err);
    assert_int_equal(dspy__rjobs_open(srv.url, on_event, on_published, s, r, &err), DSPY_OK);
}

static void close_side(struct seen *s, struct dspy__rjobs *r)
{
    dspy__rjobs_close(r);
    pthread_mutex_destroy(&s->lock);
}

static void a_published_job_runs_once_and_reports_back(void **state)
{
    (void)state;
    flush();
    struct seen s;
    struct dspy__rjobs *r;
    open_side(&s, &r);
    struct worker w;
    worker_start(&w, 0);
    assert_int_equal(dspy__rjobs_publish(r, "job-u-1", 3, "{\"kind\":\"noop\"}", 0), DSPY_OK);
    assert_int_equal(dspy__rjobs_publish(r, "job-u-2", 0, "{\"kind\":\"noop\",\"fail\":\"no\"}", 0),
                     DSPY_OK);
    assert_true(wait_for(&s, "job-u-1 running"));
    assert_true(wait_for(&s, "job-u-1 succeeded"));
    assert_true(wait_for(&s, "job-u-2 failed"));
    assert_int_equal(s.published, 2);
    assert_int_equal(dspy__rjobs_unpublished(r), 0);
    /* the result once in Redis, and in its event (small), so the server got it */
    assert_int_equal(redis_int("EXISTS %s", DSPY__RJ_RESULT "job-u-1"), 1);
    assert_int_equal(redis_int("EXISTS %s", DSPY__RJ_RESULT "job-u-2"), 0);
    pthread_mutex_lock(&s.lock);
    assert_int_equal(s.nres, 1);
    pthread_mutex_unlock(&s.lock);
    /* everything acknowledged */
    redisContext *c = redis_connect_port(srv.port);
    redisReply *p = redisCommand(c, "XPENDING %s %s", DSPY__RJ_STREAM "3", DSPY__RJ_GROUP);
    assert_true(p && p->type == REDIS_REPLY_ARRAY && p->elements == 4);
    assert_int_equal(p->element[0]->integer, 0);
    freeReplyObject(p);
    redisFree(c);
    worker_stop(&w);
    close_side(&s, r);
}

static void a_cancelled_job_ends_cancelled(void **state)
{
    (void)state;
    flush();
    struct seen s;
    struct dspy__rjobs *r;
    open_side(&s, &r);
    struct worker w;
    worker_start(&w, 0);
    dspy__rjobs_publish(r, "job-c-1", 0, "{\"kind\":\"noop\",\"sleep_ms\":20000}", 0);
    assert_true(wait_for(&s, "job-c-1 running"));
    assert_int_equal(dspy__rjobs_cancel(r, "job-c-1"), DSPY_OK);
    assert_true(wait_for(&s, "job-c-1 cancelled"));
    assert_false(has(&s, "job-c-1 succeeded"));
    worker_stop(&w);
    close_side(&s, r);
}

static void the_heartbeat_shows_slots_and_memory(void **state)
{
    (void)state;
    flush();
    struct seen s;
    struct dspy__rjobs *r;
    open_side(&s, &r);
    struct worker w;
    worker_start(&w, (uint64_t)64 << 20);
    /* a job holding 40 MiB of the 64: a second one, published once the first holds its
     * share, waits for it. (Published together, either could take the memory first: each
     * slot claims one and they race for it.) */
    dspy__rjobs_publish(r, "job-m-1", 0,
                        "{\"kind\":\"noop\",\"sleep_ms\":3000,\"memory_bytes\":41943040}", 0);
    struct dspy__rj_pool_stats p = { 0 };
    for (int i = 0; i < 1500 && !(p.workers == 1 && p.mem_used == 41943040ull); i++) {
        usleep(10000);
        dspy__rjobs_pool(r, &p);
    }
    assert_int_equal(p.workers, 1);
    assert_int_equal(p.slots, 2);
    assert_int_equal(p.mem_budget, (unsigned long long)64 << 20);
    assert_int_equal(p.mem_used, 41943040ull);
    assert_int_equal(p.lm_in_flight, 0); /* a worker without an LM pool reports none */
    dspy__rjobs_publish(r, "job-m-2", 0, "{\"kind\":\"noop\",\"memory_bytes\":41943040}", 0);
    assert_true(wait_for(&s, "job-m-2 succeeded"));
    /* the second ended after the first: it waited for the memory */
    pthread_mutex_lock(&s.lock);
    size_t end1 = 99, end2 = 99;
    for (size_t i = 0; i < s.n; i++) {
        if (!strcmp(s.states[i], "job-m-1 succeeded"))
            end1 = i;
        if (!strcmp(s.states[i], "job-m-2 succeeded"))
            end2 = i;
    }
    pthread_mutex_unlock(&s.lock);
    assert_true(end1 < end2);
    worker_stop(&w);
    close_side(&s, r);
}

static void purge_removes_keys_and_acknowledged_entries(void **state)
{
    (void)state;
    flush();
    struct seen s;
    struct dspy__rjobs *r;
    open_side(&s, &r);
    struct worker w;
    worker_start(&w, 0);
    dspy__rjobs_publish(r, "job-p-1", 0, "{\"kind\":\"noop\"}", 0);
    assert_true(wait_for(&s, "job-p-1 succeeded"));
    worker_stop(&w); /* no worker: the next entry stays undelivered */
    dspy__rjobs_publish(r, "job-p-2", 0, "{\"kind\":\"noop\"}", 0);
    for (int i = 0; i < 500 && dspy__rjobs_unpublished(r); i++)
        usleep(10000);
    assert_int_equal(redis_int("XLEN %s", DSPY__RJ_STREAM "0"), 2);
    const char *ids[] = { "job-p-1" };
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long now_ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + 1000;
    assert_int_equal(dspy__rjobs_purge(r, ids, 1, now_ms), DSPY_OK);
    assert_int_equal(redis_int("EXISTS %s", DSPY__RJ_RESULT "job-p-1"), 0);
    /* the acknowledged entry went; the one no worker has seen stays */
    assert_int_equal(redis_int("XLEN %s", DSPY__RJ_STREAM "0"), 1);
    assert_int_equal(redis_int("XLEN %s", DSPY__RJ_EVENTS), 0);
    close_side(&s, r);
}

static void publishing_waits_for_redis_and_loses_nothing(void **state)
{
    (void)state;
    flush();
    struct seen s;
    struct dspy__rjobs *r;
    open_side(&s, &r);
    redis_server_kill(&srv); /* away: published jobs wait in order */
    dspy__rjobs_publish(r, "job-w-1", 0, "{\"kind\":\"noop\"}", 0);
    dspy__rjobs_publish(r, "job-w-2", 0, "{\"kind\":\"noop\"}", 0);
    /* until the publisher has tried twice and failed: nothing was dropped meanwhile */
    for (int i = 0; i < 1500 && dspy__rjobs_failed_batches(r) < 2; i++)
        usleep(10000);
    assert_true(dspy__rjobs_failed_batches(r) >= 2);
    assert_int_equal(dspy__rjobs_unpublished(r), 2);
    assert_true(redis_server_start(&srv)); /* same port */
    for (int i = 0; i < 1500 && dspy__rjobs_unpublished(r); i++)
        usleep(10000);
    assert_int_equal(dspy__rjobs_unpublished(r), 0);
    assert_int_equal(redis_int("XLEN %s", DSPY__RJ_STREAM "0"), 2);
    close_side(&s, r);
}

/* Replies of the wrong shape: each reader refuses them rather than reading past them. */
static redisReply *parse(const char *resp)
{
    redisReader *rd = redisReaderCreate();
    void *rep = NULL;
    redisReaderFeed(rd, resp, strlen(resp));
    assert_int_equal(redisReaderGetReply(rd, &rep), REDIS_OK);
    redisReaderFree(rd);
    return rep;
}

/* A worker's own LM pool travels in its heartbeat: the server's side sees its calls in
 * flight and waiting, and sees them change. */
static void the_heartbeat_carries_the_workers_lm_pool(void **state)
{
    (void)state;
    flush();
    struct seen s;
    struct dspy__rjobs *r;
    open_side(&s, &r);
    struct lm_now lm;
    atomic_init(&lm.in_flight, 3);
    atomic_init(&lm.waiting, 5);
    struct worker w;
    worker_start_with(&w, 0, &lm);
    struct dspy__rj_pool_stats p = { 0 };
    for (int i = 0; i < 1500 && !(p.workers == 1 && p.lm_in_flight == 3); i++) {
        usleep(10000);
        dspy__rjobs_pool(r, &p);
    }
    assert_int_equal(p.workers, 1);
    assert_int_equal(p.lm_in_flight, 3);
    assert_int_equal(p.lm_waiting, 5);
    atomic_store(&lm.in_flight, 0);
    atomic_store(&lm.waiting, 7);
    for (int i = 0; i < 1500 && !(p.lm_in_flight == 0 && p.lm_waiting == 7); i++) {
        usleep(10000);
        dspy__rjobs_pool(r, &p);
    }
    assert_int_equal(p.lm_in_flight, 0);
    assert_int_equal(p.lm_waiting, 7);
    worker_stop(&w);
    close_side(&s, r);
}

static void readers_refuse_replies_of_the_wrong_shape(void **state)
{
    (void)state;
    static struct dspy__rj_events ev;
    redisReply *r = parse("*1\r\n*2\r\n:5\r\n*1\r\n*2\r\n:1\r\n:2\r\n");
    assert_int_equal(dspy__rj_events_parse(r, &ev), 0);
    freeReplyObject(r);
    r = parse("*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*3\r\n$2\r\nid\r\n$1\r\nx\r\n$5\r\n"
              "state\r\n");
    assert_int_equal(dspy__rj_events_parse(r, &ev), 1);
    assert_string_equal(ev.ev[0].id, "x");
    assert_null(ev.ev[0].state); /* an odd field list: the last key has no value */
    freeReplyObject(r);
    r = parse("*3\r\n:1\r\n*-1\r\n:2\r\n");
    const char *stream, *flag;
    const redisReply *entry;
    assert_false(dspy__rj_claim(r, &stream, &entry, &flag));
    assert_null(dspy__rj_autoclaimed(r));
    assert_int_equal(dspy__rj_deliveries(r), 1);
    freeReplyObject(r);
    r = parse("*4\r\n$2\r\nw0\r\n$22\r\n9 10 99999999999999999\r\n$2\r\nw1\r\n:3\r\n");
    struct dspy__rj_pool_stats p;
    assert_true(dspy__rj_pool(r, 1000, &p));
    assert_int_equal(p.workers, 0); /* more running than slots, and no string for w1 */
    freeReplyObject(r);
    /* an older worker's five fields count without LM figures; seven add its LM pool */
    r = parse("*4\r\n$2\r\nw0\r\n$15\r\n2 1 900 0 0 4 6\r\n$2\r\nw1\r\n$13\r\n"
              "2 0 950 10 20\r\n");
    assert_true(dspy__rj_pool(r, 1000, &p));
    assert_int_equal(p.workers, 2);
    assert_int_equal(p.slots, 4);
    assert_int_equal(p.running, 1);
    assert_int_equal(p.mem_used, 10);
    assert_int_equal(p.lm_in_flight, 4);
    assert_int_equal(p.lm_waiting, 6);
    freeReplyObject(r);
}

/* A Redis answering "*857108864" (6.8 GB of element pointers in hiredis): the server's side
 * and a worker refuse it at their first command and say why; nothing that size is made. */
static void a_hostile_redis_is_refused_with_the_reason(void **state)
{
    (void)state;
    static const char answer[] = "*857108864\r\n";
    struct hostile_redis h;
    struct dspy__rjobs *r = NULL;
    struct seen s;
    struct dspy_error err;
    memset(&s, 0, sizeof(s));
    dspy_error_clear(&err);
    assert_true(hostile_redis_start(&h, answer, sizeof(answer) - 1));
    assert_int_equal(dspy__rjobs_open(h.url, on_event, on_published, &s, &r, &err), DSPY_EIO);
    assert_null(r);
    print_message("server: %s\n", err.message);
    assert_non_null(strstr(err.message, "Redis reply too large: 857108864 elements"));

    struct dspy_worker_options o = DSPY_WORKER_OPTIONS_INIT;
    o.redis_url = h.url;
    o.lm = no_lm;
    dspy_error_clear(&err);
    assert_int_equal(dspy_worker_run(&o, &err), DSPY_EIO);
    print_message("worker: %s\n", err.message);
    assert_non_null(strstr(err.message, "Redis reply too large: 857108864 elements"));
    hostile_redis_stop(&h);
}

int main(void)
{
    if (!redis_server_installed()) {
        printf("SKIP: redis-server is not installed\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_published_job_runs_once_and_reports_back),
        cmocka_unit_test(a_cancelled_job_ends_cancelled),
        cmocka_unit_test(the_heartbeat_shows_slots_and_memory),
        cmocka_unit_test(the_heartbeat_carries_the_workers_lm_pool),
        cmocka_unit_test(purge_removes_keys_and_acknowledged_entries),
        cmocka_unit_test(publishing_waits_for_redis_and_loses_nothing),
        cmocka_unit_test(readers_refuse_replies_of_the_wrong_shape),
        cmocka_unit_test(a_hostile_redis_is_refused_with_the_reason),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

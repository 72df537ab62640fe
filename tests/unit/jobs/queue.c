/* Unit tests of the job queue and its store (jobs layer) with no-op jobs: spec checks that
 * name the bad key, priority order then FIFO, backpressure at 90 %, idempotency keys,
 * cancellation, results written once, and a store that brings queued and interrupted jobs
 * back after a restart. The queue's workers are threads (pthread_create inside it). */
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
#include <sqlite3.h>

#include <dspyc/dspyc.h>

#include "jobs/jobs_int.h"

static dspy_lm *no_lm(void *ud, const char *model)
{
    (void)ud;
    (void)model;
    return NULL;
}

static dspy_jobq *make(unsigned workers, size_t max_queue, const char *db)
{
    struct dspy_jobq_options o = DSPY_JOBQ_OPTIONS_INIT;
    o.workers = workers;
    o.max_queue = max_queue;
    o.db_path = db;
    o.lm = no_lm;
    struct dspy_error err;
    dspy_jobq *q = dspy_jobq_new(&o, &err);
    assert_non_null(q);
    return q;
}

static void submit(dspy_jobq *q, const char *spec_text, char *id)
{
    json_t *spec = json_loads(spec_text, 0, NULL);
    assert_non_null(spec);
    bool existing;
    double retry;
    struct dspy_error err;
    assert_int_equal(dspy_jobq_submit(q, spec, id, &existing, &retry, &err), DSPY_OK);
    json_decref(spec);
}

static long ended(dspy_jobq *q)
{
    json_t *s = dspy_jobq_stats(q);
    json_t *e = json_object_get(s, "ended");
    long n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(e, k, v)
        n += (long)json_integer_value(v);
    json_decref(s);
    return n;
}

static void wait_ended(dspy_jobq *q, long n)
{
    while (ended(q) < n) {
        struct timespec ts = { 0, 5000000 };
        nanosleep(&ts, NULL);
    }
}

static const char *state_of(dspy_jobq *q, const char *id, char *buf)
{
    json_t *j = dspy_jobq_get(q, id);
    snprintf(buf, 32, "%s", json_string_value(json_object_get(j, "state")));
    json_decref(j);
    return buf;
}

static void specs_name_the_bad_key(void **state)
{
    (void)state;
    static const struct {
        const char *spec, *field;
    } cases[] = {
        { "[]", "" },
        { "{}", "kind" },
        { "{\"kind\": \"fit\"}", "kind" },
        { "{\"kind\": \"noop\", \"priority\": 10}", "priority" },
        { "{\"kind\": \"noop\", \"priority\": \"high\"}", "priority" },
        { "{\"kind\": \"noop\", \"signature\": \"a -> b\"}", "signature" },
        { "{\"kind\": \"eval\", \"signature\": \"a -> b\", \"metric\": \"exact_match:b\"}",
          "devset" },
        { "{\"kind\": \"eval\", \"signature\": \"a -> b\", \"metric\": \"exact_match:b\", "
          "\"devset\": [{\"a\": 1}, 3]}",
          "devset[1]" },
        { "{\"kind\": \"optimize\", \"signature\": \"a -> b\", \"metric\": \"exact_match:b\", "
          "\"trainset\": \"t.jsonl\", \"optimizer\": \"sgd\"}",
          "optimizer" },
        { "{\"kind\": \"optimize\", \"program\": \"p.json\", \"signature\": \"a -> b\"}",
          "signature" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *spec = json_loads(cases[i].spec, 0, NULL);
        struct dspy_error err;
        dspy_error_clear(&err);
        assert_int_equal(dspy_job_spec_check(spec, &err), DSPY_EINVAL);
        assert_string_equal(err.field, cases[i].field);
        json_decref(spec);
    }
    json_t *ok = json_loads("{\"kind\": \"optimize\", \"signature\": \"a -> b\", \"metric\": "
                            "\"exact_match:b\", \"trainset\": [{\"a\": 1, \"b\": 2}], "
                            "\"optimizer\": \"mipro\", \"auto\": \"light\", \"priority\": 9}",
                            0, NULL);
    assert_int_equal(dspy_job_spec_check(ok, NULL), DSPY_OK);
    json_decref(ok);
}

static void priority_then_fifo(void **state)
{
    (void)state;
    dspy_jobq *q = make(1, 100, NULL);
    char blocker[40], ids[6][40], buf[32];
    submit(q, "{\"kind\": \"noop\", \"sleep_ms\": 200}", blocker);
    while (strcmp(state_of(q, blocker, buf), "running"))
        usleep(1000);
    static const int prio[6] = { 1, 7, 1, 9, 7, 0 };
    for (int i = 0; i < 6; i++) {
        char spec[64];
        snprintf(spec, sizeof(spec), "{\"kind\": \"noop\", \"priority\": %d}", prio[i]);
        submit(q, spec, ids[i]);
    }
    json_t *s = dspy_jobq_stats(q);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "depth"), "7")), 2);
    json_decref(s);
    wait_ended(q, 7);
    /* expected: 9 (3), 7 (1), 7 (4), 1 (0), 1 (2), 0 (5) */
    static const int order[6] = { 3, 1, 4, 0, 2, 5 };
    double last = 0;
    for (int k = 0; k < 6; k++) {
        json_t *j = dspy_jobq_get(q, ids[order[k]]);
        double t = json_number_value(json_object_get(j, "started_at"));
        assert_true(t >= last);
        last = t;
        json_decref(j);
    }
    dspy_jobq_free(q);
}

static void backpressure_at_90_percent(void **state)
{
    (void)state;
    dspy_jobq *q = make(1, 10, NULL);
    char id[40], buf[32];
    submit(q, "{\"kind\": \"noop\", \"sleep_ms\": 300}", id);
    while (strcmp(state_of(q, id, buf), "running"))
        usleep(1000);
    json_t *spec = json_loads("{\"kind\": \"noop\"}", 0, NULL);
    int accepted = 0;
    for (int i = 0; i < 12; i++) {
        bool existing;
        double retry;
        struct dspy_error err;
        dspy_status rc = dspy_jobq_submit(q, spec, id, &existing, &retry, &err);
        if (!rc) {
            accepted++;
        } else {
            assert_int_equal(rc, DSPY_EBUSY);
            assert_true(retry >= 1);
            assert_non_null(strstr(err.message, "full"));
        }
    }
    json_decref(spec);
    assert_int_equal(accepted, 9);
    wait_ended(q, 10);
    json_t *s = dspy_jobq_stats(q);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "ended"), "succeeded")),
                     10);
    json_decref(s);
    dspy_jobq_free(q);
}

static void idempotency_cancel_and_results(void **state)
{
    (void)state;
    dspy_jobq *q = make(1, 100, NULL);
    char a[40], b[40], c[40], buf[32];
    bool existing;
    double retry;
    struct dspy_error err;
    submit(q, "{\"kind\": \"noop\", \"sleep_ms\": 5000}", a);
    json_t *spec = json_loads("{\"kind\": \"noop\", \"idempotency_key\": \"k\"}", 0, NULL);
    assert_int_equal(dspy_jobq_submit(q, spec, b, &existing, &retry, &err), DSPY_OK);
    assert_false(existing);
    assert_int_equal(dspy_jobq_submit(q, spec, c, &existing, &retry, &err), DSPY_OK);
    assert_true(existing);
    assert_string_equal(b, c);
    json_decref(spec);
    json_t *r = NULL;
    assert_int_equal(dspy_jobq_result(q, b, &r, &err), DSPY_EBUSY);
    assert_int_equal(dspy_jobq_cancel(q, b, &err), DSPY_OK);
    assert_string_equal(state_of(q, b, buf), "cancelled");
    assert_int_equal(dspy_jobq_cancel(q, b, &err), DSPY_EINVAL);
    assert_int_equal(dspy_jobq_result(q, b, &r, &err), DSPY_EINVAL);
    while (strcmp(state_of(q, a, buf), "running"))
        usleep(1000);
    assert_int_equal(dspy_jobq_cancel(q, a, &err), DSPY_OK);
    wait_ended(q, 2);
    assert_string_equal(state_of(q, a, buf), "cancelled");
    assert_int_equal(dspy_jobq_cancel(q, "job-none", &err), DSPY_ENOTFOUND);
    submit(q, "{\"kind\": \"noop\", \"fail\": \"bad luck\"}", c);
    wait_ended(q, 3);
    json_t *j = dspy_jobq_get(q, c);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "failed");
    assert_string_equal(json_string_value(json_object_get(j, "error")), "bad luck");
    json_decref(j);
    dspy_jobq_free(q);
}

/* Rows of `table` in the file, counted by a connection of the test's own. */
static long rows(const char *db, const char *table)
{
    sqlite3 *c = NULL;
    sqlite3_stmt *s = NULL;
    char sql[64];
    long n = -1;
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
    if (sqlite3_open_v2(db, &c, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(c, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        n = (long)sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(c);
    return n;
}

static void store_brings_jobs_back(void **state)
{
    (void)state;
    char dir[] = "/tmp/dspyc-jobs-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char db[128], ids[4][40], buf[32];
    snprintf(db, sizeof(db), "%s/jobs.sqlite", dir);
    dspy_jobq *q = make(1, 100, db);
    submit(q, "{\"kind\": \"noop\", \"sleep_ms\": 400}", ids[0]);
    while (strcmp(state_of(q, ids[0], buf), "running"))
        usleep(1000);
    for (int i = 1; i < 4; i++)
        submit(q, "{\"kind\": \"noop\"}", ids[i]);
    dspy_jobq_free(q); /* the running one stops and stays running in the store */

    q = make(1, 100, db);
    assert_string_equal(state_of(q, ids[1], buf), "queued");
    wait_ended(q, 4);
    for (int i = 0; i < 4; i++)
        assert_string_equal(state_of(q, ids[i], buf), "succeeded");
    json_t *j = dspy_jobq_get(q, ids[0]);
    assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 2);
    json_decref(j);
    json_t *r = NULL;
    assert_int_equal(dspy_jobq_result(q, ids[2], &r, NULL), DSPY_OK);
    assert_true(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
    dspy_jobq_free(q);

    /* results are written once per id: a second write keeps the first, and the count the
     * store keeps in memory follows what is committed, as count(*) sees it */
    struct dspy__store *st = NULL;
    assert_int_equal(dspy__store_open(db, &st, NULL), DSPY_OK);
    assert_int_equal(dspy__store_count_results(st), 4);
    assert_int_equal(dspy__store_result(st, ids[0], "{\"again\":true}"), DSPY_OK);
    assert_int_equal(dspy__store_result(st, "job-extra", "{}"), DSPY_OK);
    dspy__store_flush(st);
    assert_int_equal(dspy__store_count_results(st), 5);
    assert_int_equal(rows(db, "results"), 5);
    char *t = dspy__store_get_result(st, ids[0]);
    assert_string_equal(t, "{\"ok\":true}");
    dspy_free(t);
    assert_int_equal(dspy__store_delete(st, "job-extra"), DSPY_OK);
    assert_int_equal(dspy__store_delete(st, "job-none"), DSPY_OK); /* no row: no change */
    dspy__store_flush(st);
    assert_int_equal(dspy__store_count_results(st), 4);
    dspy__store_close(st);
    assert_int_equal(rows(db, "results"), 4);
    /* and after a restart the queue reports what the file holds */
    q = make(1, 100, db);
    json_t *s = dspy_jobq_stats(q);
    assert_int_equal(json_integer_value(json_object_get(s, "stored_results")), 4);
    json_decref(s);
    submit(q, "{\"kind\": \"noop\"}", ids[0]);
    wait_ended(q, 5);
    dspy_jobq_free(q); /* its result written before it closes */
    assert_int_equal(rows(db, "results"), 5);
    q = make(1, 100, db);
    s = dspy_jobq_stats(q);
    assert_int_equal(json_integer_value(json_object_get(s, "stored_results")), 5);
    json_decref(s);
    dspy_jobq_free(q);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void count_row(void *ud, const struct dspy__job_row *r)
{
    long *n = ud;
    if (r->state == DSPY_JOB_RUNNING && r->attempts == 1 && !r->published)
        (*n)++;
}

/* Writes nobody waits for are grouped; a waiter's write is on disk when its wait returns; and
 * every write queued before close is written. */
static void store_groups_writes(void **state)
{
    (void)state;
    char dir[] = "/tmp/dspyc-jobs-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char db[128], id[40];
    snprintf(db, sizeof(db), "%s/jobs.sqlite", dir);
    struct dspy__store *st = NULL;
    assert_int_equal(dspy__store_open(db, &st, NULL), DSPY_OK);
    for (int i = 0; i < 300; i++) {
        snprintf(id, sizeof(id), "job-%d", i);
        struct dspy__job_row r = {
            id, (uint64_t)i, "{\"kind\":\"noop\"}", 0, NULL, 0, NULL, 0, 1.0, 0, 0, false
        };
        assert_int_equal(dspy__store_put(st, &r, "queued", NULL), DSPY_OK);
        r.spec = NULL; /* a state change: an update */
        r.state = DSPY_JOB_RUNNING;
        r.attempts = 1;
        r.started = 2.0;
        assert_int_equal(dspy__store_put(st, &r, "running", NULL), DSPY_OK);
    }
    struct dspy__store_wait w;
    struct dspy__job_row last = { "job-last", 999, "{}", 0, NULL, 0, NULL, 0, 1.0, 0, 0, true };
    assert_int_equal(dspy__store_put(st, &last, "queued", &w), DSPY_OK);
    assert_int_equal(dspy__store_wait(st, &w), DSPY_OK);
    uint64_t commits, writes;
    dspy__store_stats(st, &commits, &writes);
    assert_int_equal(writes, 601);     /* all of them, the waiter's included, */
    assert_true(commits * 2 < writes); /* in groups (one each would be 601) */
    dspy__store_close(st);
    /* a second open reads what the first wrote */
    assert_int_equal(dspy__store_open(db, &st, NULL), DSPY_OK);
    long n = 0;
    assert_int_equal(dspy__store_load(st, count_row, &n), DSPY_OK);
    assert_int_equal(n, 300); /* every update applied after its insert */
    dspy__store_close(st);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(specs_name_the_bad_key),
        cmocka_unit_test(priority_then_fifo),
        cmocka_unit_test(backpressure_at_90_percent),
        cmocka_unit_test(idempotency_cancel_and_results),
        cmocka_unit_test(store_brings_jobs_back),
        cmocka_unit_test(store_groups_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

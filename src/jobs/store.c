/* The job store (jobs layer): SQLite in WAL mode with tables for jobs (spec, state,
 * attempts, timings), results (written once per job id) and events (every state change), so
 * a restarted server finds every job it had accepted. */
#include <pthread.h>
#include <sqlite3.h>
#include <string.h>

#include "base/status.h"
#include "jobs/jobs_int.h"

struct dspy__store {
    sqlite3 *db;
    pthread_mutex_t lock; /* one writer at a time through this connection */
    sqlite3_stmt *put, *event, *result, *get_result;
};

static const char SCHEMA[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, seq INTEGER, spec TEXT NOT NULL,"
    " priority INTEGER, idem TEXT, state INTEGER, error TEXT, attempts INTEGER,"
    " submitted REAL, started REAL, finished REAL);"
    "CREATE TABLE IF NOT EXISTS results (id TEXT PRIMARY KEY, result TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS events (job TEXT, at REAL, state INTEGER, detail TEXT);";

static dspy_status sqlerr(struct dspy_error *err, sqlite3 *db, const char *what)
{
    return dspy__err(err, DSPY_EIO, "job store: %s: %s", what, db ? sqlite3_errmsg(db) : "?");
}

dspy_status dspy__store_open(const char *path, struct dspy__store **out, struct dspy_error *err)
{
    *out = NULL;
    struct dspy__store *st = dspy_calloc(1, sizeof(*st));
    if (!st)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    pthread_mutex_init(&st->lock, NULL);
    dspy_status rc;
    if (sqlite3_open_v2(path, &st->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK) {
        rc = sqlerr(err, st->db, path);
        dspy__err_file(err, path);
        goto fail;
    }
    sqlite3_busy_timeout(st->db, 5000);
    if (sqlite3_exec(st->db, SCHEMA, NULL, NULL, NULL) != SQLITE_OK) {
        rc = sqlerr(err, st->db, path);
        dspy__err_file(err, path);
        goto fail;
    }
    if (sqlite3_prepare_v2(st->db, "INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?)", -1,
                           &st->put, NULL) ||
        sqlite3_prepare_v2(st->db, "INSERT INTO events VALUES (?,?,?,?)", -1, &st->event, NULL) ||
        sqlite3_prepare_v2(st->db, "INSERT OR IGNORE INTO results VALUES (?,?)", -1, &st->result,
                           NULL) ||
        sqlite3_prepare_v2(st->db, "SELECT result FROM results WHERE id = ?", -1, &st->get_result,
                           NULL)) {
        rc = sqlerr(err, st->db, "prepare");
        goto fail;
    }
    *out = st;
    return DSPY_OK;
fail:
    dspy__store_close(st);
    return rc;
}

void dspy__store_close(struct dspy__store *st)
{
    if (!st)
        return;
    sqlite3_finalize(st->put);
    sqlite3_finalize(st->event);
    sqlite3_finalize(st->result);
    sqlite3_finalize(st->get_result);
    sqlite3_close(st->db);
    pthread_mutex_destroy(&st->lock);
    dspy_free(st);
}

static void text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, i);
}

dspy_status dspy__store_put(struct dspy__store *st, const struct dspy__job_row *r,
                            const char *event)
{
    dspy_status rc = DSPY_OK;
    pthread_mutex_lock(&st->lock);
    sqlite3_stmt *s = st->put;
    text(s, 1, r->id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)r->seq);
    text(s, 3, r->spec);
    sqlite3_bind_int(s, 4, r->priority);
    text(s, 5, r->idem);
    sqlite3_bind_int(s, 6, r->state);
    text(s, 7, r->error);
    sqlite3_bind_int(s, 8, (int)r->attempts);
    sqlite3_bind_double(s, 9, r->submitted);
    sqlite3_bind_double(s, 10, r->started);
    sqlite3_bind_double(s, 11, r->finished);
    bool two = event != NULL;
    if (two)
        sqlite3_exec(st->db, "BEGIN", NULL, NULL, NULL);
    if (sqlite3_step(s) != SQLITE_DONE)
        rc = DSPY_EIO;
    sqlite3_reset(s);
    if (two && !rc) {
        s = st->event;
        text(s, 1, r->id);
        sqlite3_bind_double(s, 2,
                            r->finished  ? r->finished
                            : r->started ? r->started
                                         : r->submitted);
        sqlite3_bind_int(s, 3, r->state);
        text(s, 4, event);
        if (sqlite3_step(s) != SQLITE_DONE)
            rc = DSPY_EIO;
        sqlite3_reset(s);
    }
    if (two)
        sqlite3_exec(st->db, rc ? "ROLLBACK" : "COMMIT", NULL, NULL, NULL);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

dspy_status dspy__store_result(struct dspy__store *st, const char *id, const char *json)
{
    pthread_mutex_lock(&st->lock);
    text(st->result, 1, id);
    text(st->result, 2, json);
    dspy_status rc = sqlite3_step(st->result) == SQLITE_DONE ? DSPY_OK : DSPY_EIO;
    sqlite3_reset(st->result);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

char *dspy__store_get_result(struct dspy__store *st, const char *id)
{
    char *out = NULL;
    pthread_mutex_lock(&st->lock);
    text(st->get_result, 1, id);
    if (sqlite3_step(st->get_result) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(st->get_result, 0);
        if (t)
            out = dspy_strdup(t);
    }
    sqlite3_reset(st->get_result);
    pthread_mutex_unlock(&st->lock);
    return out;
}

dspy_status dspy__store_load(struct dspy__store *st,
                             void (*fn)(void *ud, const struct dspy__job_row *r), void *ud)
{
    sqlite3_stmt *s = NULL;
    pthread_mutex_lock(&st->lock);
    dspy_status rc = DSPY_OK;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT id, seq, spec, priority, idem, state, error, attempts,"
                           " submitted, started, finished FROM jobs ORDER BY seq",
                           -1, &s, NULL) != SQLITE_OK) {
        rc = DSPY_EIO;
        goto out;
    }
    int step;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        struct dspy__job_row r = {
            (const char *)sqlite3_column_text(s, 0),
            (uint64_t)sqlite3_column_int64(s, 1),
            (const char *)sqlite3_column_text(s, 2),
            sqlite3_column_int(s, 3),
            (const char *)sqlite3_column_text(s, 4),
            sqlite3_column_int(s, 5),
            (const char *)sqlite3_column_text(s, 6),
            (unsigned)sqlite3_column_int(s, 7),
            sqlite3_column_double(s, 8),
            sqlite3_column_double(s, 9),
            sqlite3_column_double(s, 10),
        };
        fn(ud, &r);
    }
    if (step != SQLITE_DONE)
        rc = DSPY_EIO;
out:
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

long dspy__store_count_results(struct dspy__store *st)
{
    sqlite3_stmt *s = NULL;
    long n = -1;
    pthread_mutex_lock(&st->lock);
    if (sqlite3_prepare_v2(st->db, "SELECT count(*) FROM results", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        n = (long)sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->lock);
    return n;
}

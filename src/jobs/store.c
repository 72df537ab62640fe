/* The job store (jobs layer): SQLite in WAL mode with tables for jobs (spec, state,
 * attempts, timings), results (written once per job id) and events (every state change), so
 * a restarted server finds every job it had accepted. Writes are queued and group-committed:
 * whatever arrived while one transaction was being written goes into the next one. */
#include <pthread.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/status.h"
#include "jobs/jobs_int.h"

enum op_kind { OP_INSERT, OP_UPDATE, OP_RESULT, OP_DELETE, OP_ORPHANS };

/* One queued write; its strings live in text[]. */
struct op {
    struct op *next;
    enum op_kind kind;
    uint64_t ticket;
    struct dspy__store_wait *waiter; /* NULL: nobody waits for this one */
    struct dspy__job_row row;
    const char *event, *result;
    char text[];
};

struct dspy__store {
    sqlite3 *db;           /* used by whoever holds `busy` */
    sqlite3 *ckpt;         /* the flusher's own connection, for WAL checkpoints */
    uint64_t ckpt_commits; /* `commits` at the last checkpoint (flusher only) */
    pthread_mutex_t lock;  /* guards everything below */
    pthread_cond_t done;   /* a transaction ended, or `busy` was released */
    pthread_cond_t work;   /* writes queued for the flusher */
    struct op *head, *tail;
    size_t queued;                   /* ops in the list */
    uint64_t next_ticket, committed; /* every op with ticket <= committed is written */
    bool busy;                       /* someone is using db (a commit or a read) */
    bool stop;
    pthread_t flusher;
    bool flusher_started;
    uint64_t commits, ops_written; /* group commit's effect, for the stats */
    uint64_t results;              /* rows in results, as committed: counted once at open,
                                    * then by each commit (no count(*), no flush to read it) */
    sqlite3_stmt *insert, *update, *event, *result, *get_result, *del_job, *del_result, *orphans,
        *begin, *commit, *rollback;
};

static const char SCHEMA[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, seq INTEGER, spec TEXT NOT NULL,"
    " priority INTEGER, idem TEXT, state INTEGER, error TEXT, attempts INTEGER,"
    " submitted REAL, started REAL, finished REAL, published INTEGER NOT NULL DEFAULT 1);"
    "CREATE TABLE IF NOT EXISTS results (id TEXT PRIMARY KEY, result TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS events (job TEXT, at REAL, state INTEGER, detail TEXT);";

static dspy_status sqlerr(struct dspy_error *err, sqlite3 *db, const char *what)
{
    return dspy__err(err, DSPY_EIO, "job store: %s: %s", what, db ? sqlite3_errmsg(db) : "?");
}

static void *flusher_main(void *arg);

dspy_status dspy__store_open(const char *path, struct dspy__store **out, struct dspy_error *err)
{
    *out = NULL;
    struct dspy__store *st = dspy_calloc(1, sizeof(*st));
    if (!st)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    pthread_mutex_init(&st->lock, NULL);
    pthread_cond_init(&st->done, NULL);
    pthread_cond_init(&st->work, NULL);
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
    /* Checkpoints move off the commit path: the flusher runs them on a connection of its
     * own (PASSIVE, so writers go on meanwhile), instead of whichever commit crosses the
     * automatic threshold paying for copying the WAL and its fsync. */
    sqlite3_wal_autocheckpoint(st->db, 0);
    if (sqlite3_open_v2(path, &st->ckpt, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, NULL) !=
        SQLITE_OK) {
        rc = sqlerr(err, st->ckpt, path);
        dspy__err_file(err, path);
        goto fail;
    }
    sqlite3_busy_timeout(st->ckpt, 5000);
    /* a store from before the `published` column: its jobs were all published */
    sqlite3_exec(st->db, "ALTER TABLE jobs ADD COLUMN published INTEGER NOT NULL DEFAULT 1", NULL,
                 NULL, NULL);
    static const struct {
        size_t at;
        const char *sql;
    } STMTS[] = {
        { offsetof(struct dspy__store, insert),
          "INSERT OR REPLACE INTO jobs (id, seq, spec, priority, idem, state, error, attempts,"
          " submitted, started, finished, published) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)" },
        { offsetof(struct dspy__store, update),
          "UPDATE jobs SET state = ?2, error = ?3, attempts = ?4, started = ?5, finished = ?6,"
          " published = ?7 WHERE id = ?1" },
        { offsetof(struct dspy__store, event), "INSERT INTO events VALUES (?,?,?,?)" },
        { offsetof(struct dspy__store, result), "INSERT OR IGNORE INTO results VALUES (?,?)" },
        { offsetof(struct dspy__store, get_result), "SELECT result FROM results WHERE id = ?" },
        { offsetof(struct dspy__store, del_job), "DELETE FROM jobs WHERE id = ?" },
        { offsetof(struct dspy__store, del_result), "DELETE FROM results WHERE id = ?" },
        { offsetof(struct dspy__store, orphans),
          "DELETE FROM events WHERE job NOT IN (SELECT id FROM jobs)" },
        { offsetof(struct dspy__store, begin), "BEGIN" },
        { offsetof(struct dspy__store, commit), "COMMIT" },
        { offsetof(struct dspy__store, rollback), "ROLLBACK" },
    };
    for (size_t i = 0; i < sizeof(STMTS) / sizeof(STMTS[0]); i++)
        if (sqlite3_prepare_v2(st->db, STMTS[i].sql, -1,
                               (sqlite3_stmt **)((char *)st + STMTS[i].at), NULL)) {
            rc = sqlerr(err, st->db, "prepare");
            goto fail;
        }
    /* the one count(*): from here on each commit keeps the number */
    sqlite3_stmt *count = NULL;
    if (sqlite3_prepare_v2(st->db, "SELECT count(*) FROM results", -1, &count, NULL) ||
        sqlite3_step(count) != SQLITE_ROW) {
        sqlite3_finalize(count);
        rc = sqlerr(err, st->db, "count results");
        goto fail;
    }
    st->results = (uint64_t)sqlite3_column_int64(count, 0);
    sqlite3_finalize(count);
    if (pthread_create(&st->flusher, NULL, flusher_main, st)) {
        rc = dspy__err(err, DSPY_ERESOURCE, "cannot start the job store's writer thread");
        goto fail;
    }
    st->flusher_started = true;
    *out = st;
    return DSPY_OK;
fail:
    dspy__store_close(st);
    return rc;
}

/* ---- writing a batch ---------------------------------------------------------------------- */

static void text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, i);
}

static bool step(sqlite3_stmt *s)
{
    bool ok = sqlite3_step(s) == SQLITE_DONE;
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return ok;
}

static bool write_event(struct dspy__store *st, const struct op *o)
{
    const struct dspy__job_row *r = &o->row;
    sqlite3_stmt *s = st->event;
    text(s, 1, r->id);
    sqlite3_bind_double(s, 2, r->finished ? r->finished : r->started ? r->started : r->submitted);
    sqlite3_bind_int(s, 3, r->state);
    text(s, 4, o->event);
    return step(s);
}

/* Write one op; *results gets the rows it added to results (negative: removed). */
static bool write_op(struct dspy__store *st, const struct op *o, int64_t *results)
{
    const struct dspy__job_row *r = &o->row;
    sqlite3_stmt *s;
    switch (o->kind) {
    case OP_INSERT:
        s = st->insert;
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
        sqlite3_bind_int(s, 12, r->published);
        return step(s) && (!o->event || write_event(st, o));
    case OP_UPDATE:
        s = st->update;
        text(s, 1, r->id);
        sqlite3_bind_int(s, 2, r->state);
        text(s, 3, r->error);
        sqlite3_bind_int(s, 4, (int)r->attempts);
        sqlite3_bind_double(s, 5, r->started);
        sqlite3_bind_double(s, 6, r->finished);
        sqlite3_bind_int(s, 7, r->published);
        return step(s) && (!o->event || write_event(st, o));
    case OP_RESULT: /* INSERT OR IGNORE: a second result for an id changes nothing */
        text(st->result, 1, r->id);
        text(st->result, 2, o->result);
        if (!step(st->result))
            return false;
        *results += sqlite3_changes(st->db);
        return true;
    case OP_DELETE:
        text(st->del_job, 1, r->id);
        text(st->del_result, 1, r->id);
        if (!step(st->del_job) || !step(st->del_result))
            return false;
        *results -= sqlite3_changes(st->db);
        return true;
    case OP_ORPHANS: return step(st->orphans);
    }
    return false;
}

/* Write the list in one transaction; *results gets the rows it added to results once they
 * are committed (a rolled back transaction adds none). */
static bool write_list(struct dspy__store *st, struct op *list, bool mark, int64_t *results)
{
    if (!step(st->begin))
        return false;
    bool ok = true;
    int64_t added = 0;
    for (struct op *o = list; o && ok; o = o->next)
        ok = write_op(st, o, &added);
    if (ok && step(st->commit)) {
        *results += added;
        return true;
    }
    step(st->rollback);
    if (mark) /* find the ops that fail on their own; the others are written one by one */
        for (struct op *o = list; o; o = o->next) {
            struct op *next = o->next;
            o->next = NULL;
            if (write_list(st, o, false, results))
                ;
            else if (o->waiter)
                o->waiter->rc = DSPY_EIO;
            else
                fprintf(stderr, "dspyc jobs: cannot write job %s to the store: %s\n", o->row.id,
                        sqlite3_errmsg(st->db));
            o->next = next;
        }
    return false;
}

/* Lock held, !busy, a list queued: write all of it in one transaction. */
static void commit_queued(struct dspy__store *st)
{
    struct op *list = st->head;
    uint64_t last = st->tail->ticket;
    st->head = st->tail = NULL;
    st->queued = 0;
    st->busy = true;
    pthread_mutex_unlock(&st->lock);
    uint64_t n = 0;
    for (struct op *o = list; o; o = o->next)
        n++;
    int64_t results = 0;
    write_list(st, list, true, &results);
    while (list) {
        struct op *next = list->next;
        dspy_free(list);
        list = next;
    }
    pthread_mutex_lock(&st->lock);
    st->busy = false;
    st->committed = last;
    st->commits++;
    st->ops_written += n;
    st->results = (uint64_t)((int64_t)st->results + results);
    pthread_cond_broadcast(&st->done);
}

/* Until every op up to `ticket` is written; the calling thread writes them itself when
 * nobody else is (the leader of a group commit). Lock held. */
static void sync_to(struct dspy__store *st, uint64_t ticket)
{
    while (st->committed < ticket) {
        if (st->busy)
            pthread_cond_wait(&st->done, &st->lock);
        else if (st->head)
            commit_queued(st);
        else
            break; /* cannot happen: an unwritten ticket is queued or being written */
    }
}

/* Writes nobody waits for are written within FLUSH_MS, in one transaction with whatever else
 * came meanwhile (or sooner, with a waiter's write or once FLUSH_OPS are queued): a crash
 * loses at most that much of the state changes, which at-least-once delivery repeats. */
#define FLUSH_MS 10
#define FLUSH_OPS 256

#define CHECKPOINT_MS 200

static struct timespec in_ms(long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Lock held: a PASSIVE checkpoint when something was committed since the last one. */
static void checkpoint(struct dspy__store *st)
{
    if (st->commits == st->ckpt_commits)
        return;
    st->ckpt_commits = st->commits;
    pthread_mutex_unlock(&st->lock);
    sqlite3_wal_checkpoint_v2(st->ckpt, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    pthread_mutex_lock(&st->lock);
}

static void *flusher_main(void *arg)
{
    struct dspy__store *st = arg;
    pthread_mutex_lock(&st->lock);
    struct timespec next_ckpt = in_ms(CHECKPOINT_MS);
    for (;;) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        if (now.tv_sec > next_ckpt.tv_sec ||
            (now.tv_sec == next_ckpt.tv_sec && now.tv_nsec >= next_ckpt.tv_nsec)) {
            checkpoint(st);
            next_ckpt = in_ms(CHECKPOINT_MS);
        }
        if (!st->head) {
            if (st->stop)
                break;
            pthread_cond_timedwait(&st->work, &st->lock, &next_ckpt);
        } else if (!st->stop && st->queued < FLUSH_OPS && !st->busy) {
            struct timespec ts = in_ms(FLUSH_MS);
            uint64_t first = st->head->ticket;
            while (!st->stop && st->queued < FLUSH_OPS && st->head && st->head->ticket == first &&
                   pthread_cond_timedwait(&st->work, &st->lock, &ts) == 0)
                ;
            if (st->head && !st->busy)
                commit_queued(st);
        } else if (st->busy) {
            pthread_cond_wait(&st->done, &st->lock);
        } else {
            commit_queued(st);
        }
    }
    pthread_mutex_unlock(&st->lock);
    return NULL;
}

static size_t slen(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

static const char *scopy(char **at, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    memcpy(*at, s, n);
    const char *out = *at;
    *at += n;
    return out;
}

static dspy_status enqueue(struct dspy__store *st, enum op_kind kind, const struct dspy__job_row *r,
                           const char *event, const char *result, struct dspy__store_wait *w)
{
    struct op *o = dspy_malloc(sizeof(*o) + slen(r->id) + slen(r->spec) + slen(r->idem) +
                               slen(r->error) + slen(event) + slen(result));
    if (!o)
        return DSPY_ENOMEM;
    char *at = o->text;
    o->next = NULL;
    o->kind = kind;
    o->waiter = w;
    o->row = *r;
    o->row.id = scopy(&at, r->id);
    o->row.spec = scopy(&at, r->spec);
    o->row.idem = scopy(&at, r->idem);
    o->row.error = scopy(&at, r->error);
    o->event = scopy(&at, event);
    o->result = scopy(&at, result);
    pthread_mutex_lock(&st->lock);
    o->ticket = ++st->next_ticket;
    if (w) {
        w->ticket = o->ticket;
        w->rc = DSPY_OK;
    }
    if (st->tail)
        st->tail->next = o;
    else
        st->head = o;
    st->tail = o;
    st->queued++;
    /* a waiter writes its own; the rest is the flusher's, woken for the first of a group
     * (it then waits FLUSH_MS for more) and when a group is full */
    if (!w && (st->queued == 1 || st->queued >= FLUSH_OPS))
        pthread_cond_signal(&st->work);
    pthread_mutex_unlock(&st->lock);
    return DSPY_OK;
}

/* ---- the interface ------------------------------------------------------------------------ */

dspy_status dspy__store_put(struct dspy__store *st, const struct dspy__job_row *r,
                            const char *event, struct dspy__store_wait *w)
{
    return enqueue(st, r->spec ? OP_INSERT : OP_UPDATE, r, event, NULL, w);
}

dspy_status dspy__store_result(struct dspy__store *st, const char *id, const char *json)
{
    struct dspy__job_row r = { .id = id };
    return enqueue(st, OP_RESULT, &r, NULL, json, NULL);
}

dspy_status dspy__store_delete(struct dspy__store *st, const char *id)
{
    struct dspy__job_row r = { .id = id };
    if (id)
        return enqueue(st, OP_DELETE, &r, NULL, NULL, NULL);
    r.id = "";
    return enqueue(st, OP_ORPHANS, &r, NULL, NULL, NULL);
}

dspy_status dspy__store_wait(struct dspy__store *st, struct dspy__store_wait *w)
{
    pthread_mutex_lock(&st->lock);
    sync_to(st, w->ticket);
    pthread_mutex_unlock(&st->lock);
    return w->rc;
}

/* Everything queued written, then the db is the caller's until release(). */
static void acquire(struct dspy__store *st)
{
    pthread_mutex_lock(&st->lock);
    sync_to(st, st->next_ticket);
    while (st->busy)
        pthread_cond_wait(&st->done, &st->lock);
    st->busy = true;
    pthread_mutex_unlock(&st->lock);
}

static void release(struct dspy__store *st)
{
    pthread_mutex_lock(&st->lock);
    st->busy = false;
    pthread_cond_broadcast(&st->done);
    pthread_mutex_unlock(&st->lock);
}

void dspy__store_flush(struct dspy__store *st)
{
    acquire(st);
    release(st);
}

void dspy__store_close(struct dspy__store *st)
{
    if (!st)
        return;
    if (st->flusher_started) {
        pthread_mutex_lock(&st->lock);
        st->stop = true;
        pthread_cond_signal(&st->work);
        pthread_mutex_unlock(&st->lock);
        pthread_join(st->flusher, NULL); /* it writes what is queued first */
    }
    sqlite3_stmt **stmts[] = { &st->insert,     &st->update,  &st->event,      &st->result,
                               &st->get_result, &st->del_job, &st->del_result, &st->orphans,
                               &st->begin,      &st->commit,  &st->rollback };
    for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++)
        sqlite3_finalize(*stmts[i]);
    sqlite3_close(st->ckpt);
    sqlite3_close(st->db); /* the last connection: it checkpoints the WAL into the file */
    pthread_cond_destroy(&st->work);
    pthread_cond_destroy(&st->done);
    pthread_mutex_destroy(&st->lock);
    dspy_free(st);
}

char *dspy__store_get_result(struct dspy__store *st, const char *id)
{
    char *out = NULL;
    acquire(st);
    text(st->get_result, 1, id);
    if (sqlite3_step(st->get_result) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(st->get_result, 0);
        if (t)
            out = dspy_strdup(t);
    }
    sqlite3_reset(st->get_result);
    release(st);
    return out;
}

dspy_status dspy__store_load(struct dspy__store *st,
                             void (*fn)(void *ud, const struct dspy__job_row *r), void *ud)
{
    sqlite3_stmt *s = NULL;
    acquire(st);
    dspy_status rc = DSPY_OK;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT id, seq, spec, priority, idem, state, error, attempts,"
                           " submitted, started, finished, published FROM jobs ORDER BY seq",
                           -1, &s, NULL) != SQLITE_OK) {
        rc = DSPY_EIO;
        goto out;
    }
    int rv;
    while ((rv = sqlite3_step(s)) == SQLITE_ROW) {
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
            sqlite3_column_int(s, 11) != 0,
        };
        fn(ud, &r);
    }
    if (rv != SQLITE_DONE)
        rc = DSPY_EIO;
out:
    sqlite3_finalize(s);
    release(st);
    return rc;
}

long dspy__store_count_results(struct dspy__store *st)
{
    pthread_mutex_lock(&st->lock);
    long n = (long)st->results;
    pthread_mutex_unlock(&st->lock);
    return n;
}

void dspy__store_stats(struct dspy__store *st, uint64_t *commits, uint64_t *writes)
{
    pthread_mutex_lock(&st->lock);
    *commits = st->commits;
    *writes = st->ops_written;
    pthread_mutex_unlock(&st->lock);
}

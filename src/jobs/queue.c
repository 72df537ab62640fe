/* The job queue (jobs layer): every accepted job in memory and in the store, a binary heap
 * of queued jobs (higher priority first, FIFO within one), backpressure at a fill mark, a
 * pool of worker threads bounded by a concurrency cap, watchers for the event feed, and in
 * Redis mode the hand-off to `dspyc worker` processes. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/clock.h"
#include "base/heap.h"
#include "base/status.h"
#include "jobs/jobs_int.h"

struct job {
    char id[40];
    uint64_t seq;
    json_t *spec;
    char *spec_text;
    char *idem;
    int priority;
    enum dspy_job_state state;
    char *error;
    unsigned attempts;
    double submitted, started, finished;
    struct dspy_job_progress progress;
    bool has_progress;
    atomic_bool cancel;
    size_t heap_at;  /* index in the heap while queued */
    json_t *result;  /* without a store (with one, read back from it) */
    bool published;  /* in its Redis stream (always true without Redis) */
    uint64_t need;   /* the memory it declares, or its estimate */
    uint64_t memory; /* what it holds of the memory budget while it runs */
};

struct watcher {
    uint64_t token;
    struct job *job;
    dspy_jobq_event_fn fn;
    void *ud;
};

#define RATE_BUCKETS 10 /* one-second buckets of finished jobs, for jobs/s */

struct dspy_jobq {
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t wake;
    struct job **jobs; /* every job, in seq order */
    size_t njobs, cap;
    json_t *by_id;          /* id -> index in jobs */
    json_t *by_key;         /* idempotency key -> id */
    struct dspy__heap heap; /* queued jobs (struct job *), highest priority first */
    size_t depth[10];
    unsigned running, max_concurrent, nworkers;
    size_t max_queue;
    double backpressure;
    unsigned max_attempts;
    uint64_t next_seq;
    atomic_bool stop; /* read without the lock by running jobs */
    pthread_t *threads;
    struct watcher *watchers;
    size_t nwatchers, watch_cap;
    uint64_t next_token;
    uint64_t counts[DSPY_JOB_NSTATES]; /* jobs that ended in each terminal state */
    uint64_t rate[RATE_BUCKETS];
    uint64_t rate_sec;
    double started_s;
    char *ckpt_root;
    struct dspy__store *store; /* NULL = memory only */
    struct dspy__rjobs *redis; /* NULL = local workers */
    dspy_job_lm_fn lm;
    void *lm_ud;
    dspy_jobq_pool_fn lm_pool;
    uint64_t mem_budget, mem_used; /* bytes; budget 0 = none */
    bool mem_blocked;              /* the next job waits for memory */
    double retention_s;            /* ended jobs older than this are removed; 0 = kept */
    uint64_t purged;               /* jobs removed so far */
    pthread_t sweeper;
    bool sweeper_started;
    pthread_cond_t sweep_wake;
};

static const char *const STATE_NAMES[DSPY_JOB_NSTATES] = { "queued", "running",   "succeeded",
                                                           "failed", "cancelled", "dead" };

const char *dspy_job_state_name(enum dspy_job_state s)
{
    return (unsigned)s < DSPY_JOB_NSTATES ? STATE_NAMES[s] : "unknown";
}

int dspy_job_state_from_name(const char *name)
{
    for (int i = 0; name && i < DSPY_JOB_NSTATES; i++)
        if (!strcmp(name, STATE_NAMES[i]))
            return i;
    return -1;
}

/* ---- the heap (the base layer's, of job pointers) --------------------------------------- */

static bool before(const struct job *a, const struct job *b)
{
    return a->priority != b->priority ? a->priority > b->priority : a->seq < b->seq;
}

static bool job_before(const void *a, const void *b)
{
    return before(*(struct job *const *)a, *(struct job *const *)b);
}

static void job_moved(void *elem, size_t idx)
{
    (*(struct job **)elem)->heap_at = idx;
}

static const struct dspy__heap_type JOB_HEAP = { .size = sizeof(struct job *),
                                                 .before = job_before,
                                                 .moved = job_moved };

static dspy_status heap_push(struct dspy_jobq *q, struct job *j)
{
    dspy_status rc = dspy__heap_push(&q->heap, &j);
    if (!rc)
        q->depth[j->priority]++;
    return rc;
}

static void heap_remove(struct dspy_jobq *q, struct job *j)
{
    q->depth[j->priority]--;
    dspy__heap_remove(&q->heap, j->heap_at, NULL);
}

/* ---- jobs and their store rows ------------------------------------------------------------ */

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void job_free(struct job *j)
{
    if (!j)
        return;
    json_decref(j->spec);
    json_decref(j->result);
    dspy_free(j->spec_text);
    dspy_free(j->idem);
    dspy_free(j->error);
    dspy_free(j);
}

/* Queue the job's row; with `w`, the caller then waits for it with dspy__store_wait. */
static void persist_waited(struct dspy_jobq *q, struct job *j, const char *event,
                           struct dspy__store_wait *w)
{
    if (!q->store)
        return;
    struct dspy__job_row r = { j->id,        j->seq,        NULL,        j->priority,
                               j->idem,      (int)j->state, j->error,    j->attempts,
                               j->submitted, j->started,    j->finished, j->published };
    if (dspy__store_put(q->store, &r, event, w)) {
        fprintf(stderr, "dspyc jobs: out of memory: job %s not written to the store\n", j->id);
        if (w)
            w->ticket = 0;
    }
}

static void persist(struct dspy_jobq *q, struct job *j, const char *event)
{
    persist_waited(q, j, event, NULL); /* written soon, in a group */
}

static json_t *progress_json(const struct job *j)
{
    const struct dspy_job_progress *p = &j->progress;
    return json_pack("{s:I, s:I, s:f, s:f, s:o, s:b, s:b, s:o, s:I}", "done", (json_int_t)p->done,
                     "planned", (json_int_t)p->planned, "fraction", p->fraction, "iterations_per_s",
                     p->iterations_per_s, "eta_s",
                     p->eta_s >= 0 ? json_real(p->eta_s) : json_null(), "warned", p->warned,
                     "exceeded", p->exceeded, "best_score",
                     isnan(p->best) ? json_null() : json_real(p->best), "lm_calls",
                     (json_int_t)p->lm_calls);
}

static json_t *time_or_null(double t)
{
    return t > 0 ? json_real(t) : json_null();
}

static json_t *job_json(const struct job *j)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:i, s:o, s:o, s:o}", "id", j->id, "state",
                          dspy_job_state_name(j->state), "kind",
                          json_string_value(json_object_get(j->spec, "kind")), "priority",
                          j->priority, "attempts", (int)j->attempts, "submitted_at",
                          time_or_null(j->submitted), "started_at", time_or_null(j->started),
                          "finished_at", time_or_null(j->finished));
    if (!o)
        return NULL;
    if (j->started > 0)
        json_object_set_new(o, "run_s",
                            json_real((j->finished > 0 ? j->finished : wall_now()) - j->started));
    if (j->started > 0)
        json_object_set_new(o, "wait_s", json_real(j->started - j->submitted));
    json_object_set_new(o, "error", j->error ? json_string(j->error) : json_null());
    json_object_set_new(o, "progress", j->has_progress ? progress_json(j) : json_null());
    json_object_set_new(o, "best_score",
                        j->has_progress && !isnan(j->progress.best) ? json_real(j->progress.best)
                                                                    : json_null());
    if (j->idem)
        json_object_set_new(o, "idempotency_key", json_string(j->idem));
    return o;
}

static struct job *find(struct dspy_jobq *q, const char *id)
{
    json_t *v = json_object_get(q->by_id, id);
    return v ? q->jobs[json_integer_value(v)] : NULL;
}

static void notify(struct dspy_jobq *q, struct job *j, const char *type)
{
    if (!q->nwatchers)
        return;
    json_t *ev = NULL;
    for (size_t i = 0; i < q->nwatchers;) {
        if (q->watchers[i].job != j) {
            i++;
            continue;
        }
        if (!ev) {
            ev = job_json(j);
            json_object_set_new(ev, "type", json_string(type));
        }
        if (!q->watchers[i].fn(q->watchers[i].ud, ev) || dspy_job_state_terminal(j->state))
            q->watchers[i] = q->watchers[--q->nwatchers];
        else
            i++;
    }
    json_decref(ev);
}

static void count_finish(struct dspy_jobq *q, enum dspy_job_state s)
{
    q->counts[s]++;
    uint64_t sec = dspy__now_ns() / 1000000000u;
    if (sec != q->rate_sec) {
        for (uint64_t t = q->rate_sec + 1; t <= sec && t <= q->rate_sec + RATE_BUCKETS; t++)
            q->rate[t % RATE_BUCKETS] = 0;
        q->rate_sec = sec;
    }
    q->rate[sec % RATE_BUCKETS]++;
}

/* Move j to a terminal state (lock held); a job already ended keeps its first end. */
static void finish(struct dspy_jobq *q, struct job *j, enum dspy_job_state s, const char *error,
                   json_t *result)
{
    if (dspy_job_state_terminal(j->state)) {
        json_decref(result);
        return;
    }
    if (j->state == DSPY_JOB_QUEUED)
        heap_remove(q, j);
    j->state = s;
    j->finished = wall_now();
    dspy_free(j->error);
    j->error = error ? dspy_strdup(error) : NULL;
    if (result) {
        if (q->store) {
            char *t = json_dumps(result, JSON_COMPACT);
            if (!t || dspy__store_result(q->store, j->id, t))
                fprintf(stderr, "dspyc jobs: cannot store the result of %s\n", j->id);
            dspy_free(t); /* jansson allocates through dspy_malloc */
            json_decref(result);
        } else {
            j->result = result;
        }
    }
    count_finish(q, s);
    persist(q, j, dspy_job_state_name(s));
    notify(q, j, "state");
}

/* ---- local workers ----------------------------------------------------------------------- */

struct run_ctx {
    struct dspy_jobq *q;
    struct job *j;
    uint64_t last_ns;
};

static void on_progress(void *ud, const struct dspy_job_progress *p)
{
    struct run_ctx *c = ud;
    pthread_mutex_lock(&c->q->lock);
    c->j->progress = *p;
    c->j->has_progress = true;
    uint64_t now = dspy__now_ns();
    if (now - c->last_ns > 50000000u) { /* at most 20 progress events a second */
        c->last_ns = now;
        notify(c->q, c->j, "progress");
    }
    pthread_mutex_unlock(&c->q->lock);
}

static bool on_cancelled(void *ud)
{
    struct run_ctx *c = ud;
    return atomic_load(&c->j->cancel) || c->q->stop;
}

static void run_one(struct dspy_jobq *q, struct job *j)
{
    char dir[4200] = "";
    if (q->ckpt_root && dspy__job_kind(j->spec) == 0) {
        snprintf(dir, sizeof(dir), "%s/%s", q->ckpt_root, j->id);
        mkdir(q->ckpt_root, 0755);
        mkdir(dir, 0755);
    }
    struct run_ctx c = { q, j, 0 };
    struct dspy_job_exec_options o = { q->lm,       q->lm_ud,     dir[0] ? dir : NULL,
                                       on_progress, on_cancelled, &c };
    struct dspy_error err;
    dspy_error_clear(&err);
    json_t *result = NULL;
    dspy_status rc = dspy_job_execute(j->spec, &o, &result, &err);
    pthread_mutex_lock(&q->lock);
    q->running--;
    q->mem_used -= j->memory;
    if (q->stop && !atomic_load(&j->cancel) && rc == DSPY_ECANCELED) {
        /* shutting down: the job stays running in the store and resumes at the next start */
        json_decref(result);
    } else if (atomic_load(&j->cancel)) {
        finish(q, j, DSPY_JOB_CANCELLED, "cancelled", NULL);
        json_decref(result);
    } else if (rc) {
        finish(q, j, DSPY_JOB_FAILED, err.message[0] ? err.message : dspy_strerror(rc), NULL);
        json_decref(result);
    } else {
        finish(q, j, DSPY_JOB_SUCCEEDED, NULL, result);
    }
    pthread_cond_broadcast(&q->wake);
    pthread_mutex_unlock(&q->lock);
}

/* The share of the budget a job takes: its need, or the whole budget for a job needing more
 * (it runs alone). */
static uint64_t share(const struct dspy_jobq *q, const struct job *j)
{
    return j->need < q->mem_budget ? j->need : q->mem_budget;
}

/* Whether the next job may start now (lock held): a free slot, and its memory share fits.
 * The next job waits for its share rather than letting smaller ones pass it, so a big job
 * is not starved by small ones. */
static bool can_start(struct dspy_jobq *q)
{
    if (!dspy__heap_len(&q->heap) || q->running >= q->max_concurrent)
        return false;
    if (!q->mem_budget)
        return true;
    const struct job *j = *(struct job *const *)dspy__heap_top(&q->heap);
    q->mem_blocked = q->mem_used + share(q, j) > q->mem_budget;
    return !q->mem_blocked;
}

static void *worker_main(void *arg)
{
    struct dspy_jobq *q = arg;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        while (!q->stop && !can_start(q))
            pthread_cond_wait(&q->wake, &q->lock);
        if (q->stop)
            break;
        struct job *j = *(struct job **)dspy__heap_top(&q->heap);
        heap_remove(q, j);
        j->memory = q->mem_budget ? share(q, j) : 0;
        q->mem_used += j->memory;
        j->state = DSPY_JOB_RUNNING;
        j->started = wall_now();
        j->attempts++;
        q->running++;
        /* The attempt is on disk before the job runs: a crash now counts it on restart. */
        struct dspy__store_wait w = { 0 };
        persist_waited(q, j, "running", &w);
        notify(q, j, "state");
        pthread_mutex_unlock(&q->lock);
        if (q->store && w.ticket)
            dspy__store_wait(q->store, &w);
        run_one(q, j);
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

/* ---- accepting jobs ----------------------------------------------------------------------- */

static dspy_status add_job(struct dspy_jobq *q, struct job *j)
{
    if (q->njobs == q->cap) {
        size_t cap = q->cap ? 2 * q->cap : 256;
        struct job **v = dspy_realloc(q->jobs, cap * sizeof(*v));
        if (!v)
            return DSPY_ENOMEM;
        q->jobs = v;
        q->cap = cap;
    }
    if (json_object_set_new(q->by_id, j->id, json_integer((json_int_t)q->njobs)))
        return DSPY_ENOMEM;
    if (j->idem && json_object_set_new(q->by_key, j->idem, json_string(j->id)))
        return DSPY_ENOMEM;
    q->jobs[q->njobs++] = j;
    if (j->seq >= q->next_seq)
        q->next_seq = j->seq + 1;
    return DSPY_OK;
}

static void make_id(struct dspy_jobq *q, char *id, uint64_t seq)
{
    /* time-ordered and unique across restarts: start time (ms) and sequence */
    snprintf(id, 40, "job-%011llx-%06llx", (unsigned long long)(q->started_s * 1000),
             (unsigned long long)seq);
}

/* A new job from a checked spec, not yet in the queue (no lock needed). */
static struct job *job_new(const json_t *spec)
{
    struct job *j = dspy_calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    const char *key = json_string_value(json_object_get(spec, "idempotency_key"));
    j->spec = json_deep_copy(spec);
    j->spec_text = j->spec ? json_dumps(spec, JSON_COMPACT) : NULL;
    const json_t *pr = json_object_get(spec, "priority");
    j->priority = pr ? (int)json_integer_value(pr) : 0;
    j->idem = key ? dspy_strdup(key) : NULL;
    j->state = DSPY_JOB_QUEUED;
    j->progress.best = NAN;
    j->need = dspy__job_memory(spec);
    atomic_init(&j->cancel, false);
    if (!j->spec || !j->spec_text || (key && !j->idem)) {
        job_free(j);
        return NULL;
    }
    return j;
}

/* Backpressure: DSPY_EBUSY with a suggested wait once the queue is past its mark. */
static dspy_status refuse_when_full(struct dspy_jobq *q, double *retry_after_s,
                                    struct dspy_error *err)
{
    size_t mark = (size_t)ceil(q->backpressure * (double)q->max_queue);
    if (dspy__heap_len(&q->heap) < mark)
        return DSPY_OK;
    /* a guess at when room frees up: the queue past the mark at the recent rate */
    uint64_t done = 0;
    for (int i = 0; i < RATE_BUCKETS; i++)
        done += q->rate[i];
    double per_s = (double)done / RATE_BUCKETS;
    *retry_after_s = per_s > 0 ? ceil((double)(dspy__heap_len(&q->heap) - mark + 1) / per_s) : 1;
    if (*retry_after_s < 1)
        *retry_after_s = 1;
    return dspy__err(err, DSPY_EBUSY,
                     "the queue is %.0f %% full (%zu queued of at most %zu; new jobs are "
                     "refused from %.0f %%)",
                     100.0 * (double)dspy__heap_len(&q->heap) / (double)q->max_queue,
                     dspy__heap_len(&q->heap), q->max_queue, 100 * q->backpressure);
}

/* Accepting a job: under the lock it gets its id and place and its store write and stream
 * write are queued (cheap: copies); the store's write is waited for after the lock is
 * released, grouped with whatever other writes came meanwhile. */
dspy_status dspy_jobq_submit(dspy_jobq *q, const json_t *spec, char *id, bool *existing,
                             double *retry_after_s, struct dspy_error *err)
{
    *existing = false;
    *retry_after_s = 0;
    dspy_status rc = dspy_job_spec_check(spec, err);
    if (rc)
        return rc;
    struct job *j = job_new(spec);
    if (!j)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    struct dspy__store_wait w = { 0, DSPY_OK };
    pthread_mutex_lock(&q->lock);
    const char *prev = j->idem ? json_string_value(json_object_get(q->by_key, j->idem)) : NULL;
    if (prev) {
        snprintf(id, 40, "%s", prev);
        *existing = true;
        goto refused;
    }
    if ((rc = refuse_when_full(q, retry_after_s, err)))
        goto refused;
    j->seq = q->next_seq++;
    make_id(q, j->id, j->seq);
    j->submitted = wall_now();
    j->published = !q->redis;
    if (add_job(q, j)) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto refused;
    }
    if (q->store) {
        struct dspy__job_row r = {
            j->id, j->seq, j->spec_text, j->priority, j->idem, 0,
            NULL,  0,      j->submitted, 0,           0,       j->published
        };
        if (dspy__store_put(q->store, &r, "queued", &w)) {
            json_object_del(q->by_id, j->id);
            if (j->idem)
                json_object_del(q->by_key, j->idem);
            q->njobs--;
            rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
            goto refused;
        }
    }
    if (heap_push(q, j)) {
        finish(q, j, DSPY_JOB_FAILED, "out of memory", NULL);
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out;
    }
    /* A stream entry may be written before the store's row: a crash in between runs a job
     * the client never got an id for; at least once, as everywhere through Redis. */
    if (q->redis && dspy__rjobs_publish(q->redis, j->id, j->priority, j->spec_text, 0)) {
        finish(q, j, DSPY_JOB_FAILED, "not queued: out of memory", NULL);
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out;
    }
    snprintf(id, 40, "%s", j->id);
    pthread_cond_signal(&q->wake);
out:;
    char jid[40];
    snprintf(jid, sizeof(jid), "%s", j->id); /* j is the queue's now */
    pthread_mutex_unlock(&q->lock);
    if (q->store && w.ticket && dspy__store_wait(q->store, &w)) {
        /* not on disk, so not accepted: it ends here, failed (a worker that took it already
         * finds it ended) */
        pthread_mutex_lock(&q->lock);
        struct job *k = find(q, jid);
        if (k)
            finish(q, k, DSPY_JOB_FAILED, "not stored: the job store cannot write", NULL);
        pthread_mutex_unlock(&q->lock);
        if (!rc)
            rc = dspy__err(err, DSPY_EIO, "the job store cannot write the job");
    }
    return rc;
refused:
    pthread_mutex_unlock(&q->lock);
    job_free(j);
    return rc;
}

json_t *dspy_jobq_get(dspy_jobq *q, const char *id)
{
    pthread_mutex_lock(&q->lock);
    struct job *j = find(q, id);
    json_t *o = j ? job_json(j) : NULL;
    pthread_mutex_unlock(&q->lock);
    return o;
}

json_t *dspy_jobq_list(dspy_jobq *q, int state, size_t limit)
{
    if (!limit)
        limit = 100;
    json_t *arr = json_array();
    pthread_mutex_lock(&q->lock);
    for (size_t i = q->njobs; i-- > 0 && json_array_size(arr) < limit;)
        if (state < 0 || (int)q->jobs[i]->state == state)
            json_array_append_new(arr, job_json(q->jobs[i]));
    pthread_mutex_unlock(&q->lock);
    return arr;
}

dspy_status dspy_jobq_cancel(dspy_jobq *q, const char *id, struct dspy_error *err)
{
    dspy_status rc = DSPY_OK;
    pthread_mutex_lock(&q->lock);
    struct job *j = find(q, id);
    if (!j) {
        rc = dspy__err(err, DSPY_ENOTFOUND, "no job %s", id);
    } else if (dspy_job_state_terminal(j->state)) {
        rc = dspy__err(err, DSPY_EINVAL, "job %s already %s", id, dspy_job_state_name(j->state));
    } else {
        atomic_store(&j->cancel, true);
        if (q->redis)
            dspy__rjobs_cancel(q->redis, j->id);
        /* a queued job ends now; a running one when its run sees the flag */
        if (q->redis && j->state == DSPY_JOB_RUNNING)
            q->running--; /* its worker's late answer is ignored */
        if (j->state == DSPY_JOB_QUEUED || q->redis)
            finish(q, j, DSPY_JOB_CANCELLED, "cancelled", NULL);
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

dspy_status dspy_jobq_result(dspy_jobq *q, const char *id, json_t **out, struct dspy_error *err)
{
    *out = NULL;
    dspy_status rc = DSPY_OK;
    pthread_mutex_lock(&q->lock);
    struct job *j = find(q, id);
    if (!j)
        rc = dspy__err(err, DSPY_ENOTFOUND, "no job %s", id);
    else if (!dspy_job_state_terminal(j->state))
        rc = dspy__err(err, DSPY_EBUSY, "job %s is %s", id, dspy_job_state_name(j->state));
    else if (j->state != DSPY_JOB_SUCCEEDED)
        rc = dspy__err(err, DSPY_EINVAL, "job %s %s%s%s", id, dspy_job_state_name(j->state),
                       j->error ? ": " : "", j->error ? j->error : "");
    else if (j->result)
        *out = json_incref(j->result);
    pthread_mutex_unlock(&q->lock);
    if (!rc && !*out && q->store) {
        char *t = dspy__store_get_result(q->store, id);
        *out = t ? json_loads(t, 0, NULL) : NULL;
        dspy_free(t);
    }
    if (!rc && !*out)
        rc = dspy__err(err, DSPY_EINVAL, "job %s has no stored result", id);
    return rc;
}

json_t *dspy_jobq_stats(dspy_jobq *q)
{
    pthread_mutex_lock(&q->lock);
    json_t *depth = json_object();
    for (int p = 9; p >= 0; p--) {
        char k[4];
        snprintf(k, sizeof(k), "%d", p);
        json_object_set_new(depth, k, json_integer((json_int_t)q->depth[p]));
    }
    count_finish(q, DSPY_JOB_QUEUED); /* rolls the buckets forward */
    q->counts[DSPY_JOB_QUEUED]--;
    q->rate[q->rate_sec % RATE_BUCKETS]--;
    uint64_t done = 0, ended = 0;
    for (int i = 0; i < RATE_BUCKETS; i++)
        done += q->rate[i];
    for (int s = DSPY_JOB_SUCCEEDED; s < DSPY_JOB_NSTATES; s++)
        ended += q->counts[s];
    json_t *o = json_pack(
        "{s:o, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:{s:I, s:I, s:I, s:I}, s:o, s:f, s:s}", "depth",
        depth, "queued", (json_int_t)dspy__heap_len(&q->heap), "max_queue",
        (json_int_t)q->max_queue, "running", (json_int_t)q->running, "workers",
        (json_int_t)q->nworkers, "max_concurrent", (json_int_t)q->max_concurrent, "utilization",
        q->nworkers ? (double)q->running / (double)q->max_concurrent : 0.0, "jobs_per_s",
        (double)done / RATE_BUCKETS, "ended", "succeeded",
        (json_int_t)q->counts[DSPY_JOB_SUCCEEDED], "failed", (json_int_t)q->counts[DSPY_JOB_FAILED],
        "cancelled", (json_int_t)q->counts[DSPY_JOB_CANCELLED], "dead",
        (json_int_t)q->counts[DSPY_JOB_DEAD], "success_rate",
        ended ? json_real((double)q->counts[DSPY_JOB_SUCCEEDED] / (double)ended) : json_null(),
        "backpressure_at", q->backpressure, "transport", q->redis ? "redis" : "local");
    if (o)
        json_object_set_new(o, "jobs", json_integer((json_int_t)q->njobs));
    if (o)
        json_object_set_new(o, "memory",
                            json_pack("{s:I, s:I, s:f, s:b}", "budget", (json_int_t)q->mem_budget,
                                      "used", (json_int_t)q->mem_used, "utilization",
                                      q->mem_budget ? (double)q->mem_used / (double)q->mem_budget
                                                    : 0.0,
                                      "next_waits",
                                      q->mem_budget && q->mem_blocked && dspy__heap_len(&q->heap)));
    if (o)
        json_object_set_new(o, "retention",
                            json_pack("{s:f, s:I}", "seconds", q->retention_s, "purged",
                                      (json_int_t)q->purged));
    if (o && q->redis) {
        struct dspy__rj_pool_stats p;
        dspy__rjobs_pool(q->redis, &p);
        json_object_set_new(
            o, "redis_workers",
            json_pack("{s:i, s:i, s:i, s:f, s:I, s:I, s:f, s:I, s:I, s:I}", "workers",
                      (int)p.workers, "slots", (int)p.slots, "running", (int)p.running,
                      "utilization", p.slots ? (double)p.running / p.slots : 0.0, "memory_budget",
                      (json_int_t)p.mem_budget, "memory_used", (json_int_t)p.mem_used,
                      "memory_utilization",
                      p.mem_budget ? (double)p.mem_used / (double)p.mem_budget : 0.0, "unpublished",
                      (json_int_t)dspy__rjobs_unpublished(q->redis), "lm_in_flight",
                      (json_int_t)p.lm_in_flight, "lm_waiting", (json_int_t)p.lm_waiting));
    }
    pthread_mutex_unlock(&q->lock);
    if (o && q->store) { /* outside the queue's lock: it writes what is queued first */
        uint64_t commits, writes;
        json_object_set_new(o, "stored_results",
                            json_integer((json_int_t)dspy__store_count_results(q->store)));
        dspy__store_stats(q->store, &commits, &writes);
        json_object_set_new(o, "store",
                            json_pack("{s:I, s:I}", "commits", (json_int_t)commits, "writes",
                                      (json_int_t)writes));
    }
    if (o && q->lm_pool) {
        struct dspy_jobq_pool p = { 0 };
        q->lm_pool(q->lm_ud, &p);
        json_object_set_new(o, "lm_pool",
                            json_pack("{s:I, s:I, s:f, s:I, s:I, s:I}", "handles",
                                      (json_int_t)p.handles, "max_handles",
                                      (json_int_t)p.max_handles, "utilization",
                                      p.max_handles ? (double)p.handles / (double)p.max_handles
                                                    : 0.0,
                                      "in_flight", (json_int_t)p.in_flight, "waiting",
                                      (json_int_t)p.waiting, "requests", (json_int_t)p.requests));
    }
    return o;
}

uint64_t dspy_jobq_watch(dspy_jobq *q, const char *id, dspy_jobq_event_fn fn, void *ud)
{
    uint64_t token = 0;
    pthread_mutex_lock(&q->lock);
    struct job *j = find(q, id);
    if (!j)
        goto out;
    if (q->nwatchers == q->watch_cap) {
        size_t cap = q->watch_cap ? 2 * q->watch_cap : 16;
        struct watcher *w = dspy_realloc(q->watchers, cap * sizeof(*w));
        if (!w)
            goto out;
        q->watchers = w;
        q->watch_cap = cap;
    }
    json_t *ev = job_json(j);
    json_object_set_new(ev, "type", json_string("state"));
    if (fn(ud, ev) && !dspy_job_state_terminal(j->state)) {
        token = ++q->next_token;
        q->watchers[q->nwatchers++] = (struct watcher){ token, j, fn, ud };
    }
    json_decref(ev);
out:
    pthread_mutex_unlock(&q->lock);
    return token;
}

void dspy_jobq_end_watches(dspy_jobq *q)
{
    pthread_mutex_lock(&q->lock);
    for (size_t i = 0; i < q->nwatchers; i++)
        q->watchers[i].fn(q->watchers[i].ud, NULL);
    q->nwatchers = 0;
    pthread_mutex_unlock(&q->lock);
}

void dspy_jobq_unwatch(dspy_jobq *q, uint64_t token)
{
    pthread_mutex_lock(&q->lock);
    for (size_t i = 0; i < q->nwatchers; i++)
        if (q->watchers[i].token == token) {
            q->watchers[i] = q->watchers[--q->nwatchers];
            break;
        }
    pthread_mutex_unlock(&q->lock);
}

/* ---- Redis events ------------------------------------------------------------------------- */

static void on_redis_event(void *ud, const char *id, const char *state, const char *error,
                           const char *progress, const char *result)
{
    struct dspy_jobq *q = ud;
    pthread_mutex_lock(&q->lock);
    struct job *j = find(q, id);
    int s = dspy_job_state_from_name(state);
    if (!j || (s < 0 && strcmp(state, "progress")) || dspy_job_state_terminal(j->state))
        goto out;
    if (s == DSPY_JOB_RUNNING) {
        if (j->state == DSPY_JOB_QUEUED) {
            heap_remove(q, j);
            j->state = DSPY_JOB_RUNNING;
            j->started = wall_now();
            q->running++;
        }
        j->attempts++;
        persist(q, j, "running");
        notify(q, j, "state");
    } else if (!strcmp(state, "progress") && progress) {
        /* progress of a running job */
        json_t *p = json_loads(progress, 0, NULL);
        if (p) {
            j->progress.done = (uint64_t)json_integer_value(json_object_get(p, "done"));
            j->progress.planned = (uint64_t)json_integer_value(json_object_get(p, "planned"));
            j->progress.fraction = json_number_value(json_object_get(p, "fraction"));
            j->progress.iterations_per_s = json_number_value(
                json_object_get(p, "iterations_per_s"));
            json_t *eta = json_object_get(p, "eta_s");
            j->progress.eta_s = json_is_number(eta) ? json_number_value(eta) : -1;
            j->progress.warned = json_is_true(json_object_get(p, "warned"));
            j->progress.exceeded = json_is_true(json_object_get(p, "exceeded"));
            json_t *b = json_object_get(p, "best_score");
            j->progress.best = json_is_number(b) ? json_number_value(b) : NAN;
            j->progress.lm_calls = (uint64_t)json_integer_value(json_object_get(p, "lm_calls"));
            j->has_progress = true;
            notify(q, j, "progress");
            json_decref(p);
        }
    } else if (dspy_job_state_terminal((enum dspy_job_state)s)) {
        if (j->state == DSPY_JOB_RUNNING)
            q->running--;
        else if (j->state == DSPY_JOB_QUEUED) {
            heap_remove(q, j);
            j->state = DSPY_JOB_RUNNING; /* finish() must not remove it twice */
        }
        json_t *r = result ? json_loads(result, 0, NULL) : NULL;
        finish(q, j, (enum dspy_job_state)s, error, r);
    }
out:
    pthread_mutex_unlock(&q->lock);
}

static void on_published(void *ud, const char *id)
{
    struct dspy_jobq *q = ud;
    pthread_mutex_lock(&q->lock);
    struct job *j = find(q, id);
    if (j && !j->published) {
        j->published = true;
        persist(q, j, NULL);
    }
    pthread_mutex_unlock(&q->lock);
}

/* ---- retention and purge ------------------------------------------------------------------ */

/* Remove the ended jobs `match` picks from memory and the store (lock held); their ids go
 * to *ids (caller frees) for Redis. */
static size_t remove_jobs(struct dspy_jobq *q, bool (*match)(const struct job *j, void *ud),
                          void *ud, char (**ids)[40])
{
    size_t n = 0, cap = 0, kept = 0;
    *ids = NULL;
    for (size_t i = 0; i < q->njobs; i++) {
        struct job *j = q->jobs[i];
        if (!dspy_job_state_terminal(j->state) || !match(j, ud)) {
            if (kept != i) {
                q->jobs[kept] = j;
                json_object_set_new(q->by_id, j->id, json_integer((json_int_t)kept));
            }
            kept++;
            continue;
        }
        if (n == cap) {
            size_t c = cap ? 2 * cap : 64;
            char(*v)[40] = dspy_realloc(*ids, c * sizeof(*v));
            if (!v) { /* keep it for the next time */
                q->jobs[kept++] = j;
                json_object_set_new(q->by_id, j->id, json_integer((json_int_t)(kept - 1)));
                continue;
            }
            *ids = v;
            cap = c;
        }
        memcpy((*ids)[n++], j->id, 40);
        json_object_del(q->by_id, j->id);
        if (j->idem) {
            const char *owner = json_string_value(json_object_get(q->by_key, j->idem));
            if (owner && !strcmp(owner, j->id))
                json_object_del(q->by_key, j->idem);
        }
        if (q->store)
            dspy__store_delete(q->store, j->id);
        job_free(j);
    }
    q->njobs = kept;
    if (n && q->store)
        dspy__store_delete(q->store, NULL); /* and their events */
    q->purged += n;
    return n;
}

struct purge_filter {
    const char *id; /* NULL = any */
    int state;      /* -1 = any ended */
    double before;  /* finished before this wall time; 0 = any */
};

static bool purge_match(const struct job *j, void *ud)
{
    const struct purge_filter *f = ud;
    return (!f->id || !strcmp(f->id, j->id)) && (f->state < 0 || (int)j->state == f->state) &&
           (f->before <= 0 || j->finished < f->before);
}

/* Removes them from Redis too, after the lock is released. */
static size_t purge(struct dspy_jobq *q, const struct purge_filter *f, double trim_before)
{
    char(*ids)[40] = NULL;
    pthread_mutex_lock(&q->lock);
    size_t n = remove_jobs(q, purge_match, (void *)f, &ids);
    pthread_mutex_unlock(&q->lock);
    if (q->redis && (n || trim_before > 0)) {
        const char **v = n ? dspy_malloc(n * sizeof(*v)) : NULL;
        for (size_t i = 0; v && i < n; i++)
            v[i] = ids[i];
        if (dspy__rjobs_purge(q->redis, v, v ? n : 0, (long long)(trim_before * 1000)))
            fprintf(stderr, "dspyc jobs: Redis could not be reached to purge %zu job(s)\n", n);
        dspy_free(v);
    }
    dspy_free(ids);
    return n;
}

dspy_status dspy_jobq_purge(dspy_jobq *q, const char *id, int state, double older_than_s,
                            size_t *purged, struct dspy_error *err)
{
    *purged = 0;
    if (state >= 0 && !dspy_job_state_terminal((enum dspy_job_state)state))
        return dspy__err(err, DSPY_EINVAL, "only ended jobs are purged, not %s ones",
                         dspy_job_state_name((enum dspy_job_state)state));
    if (id) {
        pthread_mutex_lock(&q->lock);
        struct job *j = find(q, id);
        dspy_status rc = !j ? dspy__err(err, DSPY_ENOTFOUND, "no job %s", id)
                         : !dspy_job_state_terminal(j->state)
                             ? dspy__err(err, DSPY_EINVAL, "job %s is %s: cancel it first", id,
                                         dspy_job_state_name(j->state))
                             : DSPY_OK;
        pthread_mutex_unlock(&q->lock);
        if (rc)
            return rc;
    }
    double now = wall_now();
    struct purge_filter f = { id, state, older_than_s > 0 ? now - older_than_s : 0 };
    *purged = purge(q, &f, id ? 0 : older_than_s > 0 ? now - older_than_s : now);
    return DSPY_OK;
}

/* Every retention/10 (at most a minute), the ended jobs past the retention go. */
static void *sweeper_main(void *arg)
{
    struct dspy_jobq *q = arg;
    double every = q->retention_s / 10 < 60 ? q->retention_s / 10 : 60;
    if (every < 0.05)
        every = 0.05;
    pthread_mutex_lock(&q->lock);
    while (!q->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + every;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&q->sweep_wake, &q->lock, &ts);
        if (q->stop)
            break;
        pthread_mutex_unlock(&q->lock);
        double before = wall_now() - q->retention_s;
        struct purge_filter f = { NULL, -1, before };
        purge(q, &f, before);
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static void load_row(void *ud, const struct dspy__job_row *r)
{
    struct dspy_jobq *q = ud;
    struct job *j = dspy_calloc(1, sizeof(*j));
    if (!j)
        return;
    snprintf(j->id, sizeof(j->id), "%s", r->id);
    j->seq = r->seq;
    j->spec_text = dspy_strdup(r->spec);
    j->spec = json_loads(r->spec, 0, NULL);
    j->priority = r->priority >= 0 && r->priority <= 9 ? r->priority : 0;
    j->idem = r->idem ? dspy_strdup(r->idem) : NULL;
    j->state = (enum dspy_job_state)r->state;
    j->error = r->error ? dspy_strdup(r->error) : NULL;
    j->attempts = r->attempts;
    j->submitted = r->submitted;
    j->started = r->started;
    j->finished = r->finished;
    j->published = r->published;
    j->progress.best = NAN;
    atomic_init(&j->cancel, false);
    if (j->spec)
        j->need = dspy__job_memory(j->spec);
    if (!j->spec || add_job(q, j)) {
        job_free(j);
        return;
    }
    if (dspy_job_state_terminal(j->state))
        q->counts[j->state]++;
}

/* After loading (the store's lock is free again): queued jobs wait again; running ones are
 * queued again to resume from their checkpoint, or dead once out of attempts. */
static void resume_loaded(struct dspy_jobq *q, bool redis)
{
    for (size_t i = 0; i < q->njobs; i++) {
        struct job *j = q->jobs[i];
        if (dspy_job_state_terminal(j->state))
            continue;
        bool was_running = j->state == DSPY_JOB_RUNNING;
        j->state = DSPY_JOB_QUEUED;
        if (heap_push(q, j))
            continue;
        if (redis) /* in a stream already, in a worker's pending list, or published below */
            continue;
        if (was_running && j->attempts >= q->max_attempts)
            finish(q, j, DSPY_JOB_DEAD, "interrupted on every attempt", NULL);
        else if (was_running)
            persist(q, j, "requeued");
    }
}

dspy_jobq *dspy_jobq_new(const struct dspy_jobq_options *o, struct dspy_error *err)
{
    struct dspy_jobq *q = dspy_calloc(1, sizeof(*q));
    if (!q) {
        dspy__err(err, DSPY_ENOMEM, "out of memory");
        return NULL;
    }
    dspy__heap_init(&q->heap, &JOB_HEAP);
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->wake, NULL);
    pthread_cond_init(&q->sweep_wake, NULL);
    atomic_init(&q->stop, false);
    q->by_id = json_object();
    q->by_key = json_object();
    q->nworkers = o->redis_url ? 0 : o->workers ? o->workers : 4;
    q->max_concurrent = o->max_concurrent ? o->max_concurrent : q->nworkers;
    if (q->max_concurrent > q->nworkers && q->nworkers)
        q->max_concurrent = q->nworkers;
    q->max_queue = o->max_queue ? o->max_queue : 10000;
    q->backpressure = o->backpressure > 0 && o->backpressure <= 1 ? o->backpressure : 0.9;
    q->max_attempts = o->max_attempts ? o->max_attempts : 3;
    q->lm = o->lm;
    q->lm_ud = o->lm_userdata;
    q->lm_pool = o->lm_pool;
    q->mem_budget = o->memory_budget;
    q->retention_s = o->retention_s > 0 ? o->retention_s : 0;
    q->started_s = wall_now();
    q->rate_sec = dspy__now_ns() / 1000000000u;
    if (!q->by_id || !q->by_key) {
        dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto fail;
    }
    if (o->checkpoint_root || o->db_path) {
        size_t n = strlen(o->checkpoint_root ? o->checkpoint_root : o->db_path) + 8;
        if (!(q->ckpt_root = dspy_malloc(n)))
            goto fail;
        if (o->checkpoint_root)
            snprintf(q->ckpt_root, n, "%s", o->checkpoint_root);
        else
            snprintf(q->ckpt_root, n, "%s.ckpt", o->db_path);
    }
    if (o->db_path) {
        if (dspy__store_open(o->db_path, &q->store, err))
            goto fail;
        pthread_mutex_lock(&q->lock);
        dspy_status rc = dspy__store_load(q->store, load_row, q);
        if (!rc)
            resume_loaded(q, o->redis_url != NULL);
        pthread_mutex_unlock(&q->lock);
        if (rc) {
            dspy__err(err, rc, "cannot read the job store %s", o->db_path);
            goto fail;
        }
    }
    /* after the load, so the events replayed from the stream find their jobs */
    if (o->redis_url &&
        dspy__rjobs_open(o->redis_url, on_redis_event, on_published, q, &q->redis, err))
        goto fail;
    if (q->redis) { /* what a previous run accepted but had not written to its stream */
        pthread_mutex_lock(&q->lock);
        for (size_t i = 0; i < q->njobs; i++) {
            struct job *j = q->jobs[i];
            if (j->state == DSPY_JOB_QUEUED && !j->published)
                dspy__rjobs_publish(q->redis, j->id, j->priority, j->spec_text, j->attempts);
        }
        pthread_mutex_unlock(&q->lock);
    }
    if (q->retention_s > 0) {
        if (pthread_create(&q->sweeper, NULL, sweeper_main, q)) {
            dspy__err(err, DSPY_ERESOURCE, "cannot start the retention thread");
            goto fail;
        }
        q->sweeper_started = true;
    }
    if (q->nworkers) {
        if (!q->lm) {
            dspy__err(err, DSPY_EINVAL, "the job queue needs an LM for its workers");
            goto fail;
        }
        if (!(q->threads = dspy_calloc(q->nworkers, sizeof(*q->threads))))
            goto fail;
        for (unsigned i = 0; i < q->nworkers; i++)
            if (pthread_create(&q->threads[i], NULL, worker_main, q)) {
                q->nworkers = i;
                dspy__err(err, DSPY_ERESOURCE, "cannot start worker thread %u", i);
                goto fail;
            }
    }
    return q;
fail:
    if (err && !err->code)
        dspy__err(err, DSPY_ENOMEM, "out of memory");
    dspy_jobq_free(q);
    return NULL;
}

void dspy_jobq_free(dspy_jobq *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->lock);
    q->stop = true;
    pthread_cond_broadcast(&q->wake);
    pthread_cond_broadcast(&q->sweep_wake);
    pthread_mutex_unlock(&q->lock);
    for (unsigned i = 0; q->threads && i < q->nworkers; i++)
        pthread_join(q->threads[i], NULL);
    if (q->sweeper_started)
        pthread_join(q->sweeper, NULL);
    dspy__rjobs_close(q->redis); /* no more events after this */
    dspy_jobq_end_watches(q);
    dspy__heap_release(&q->heap); /* before the jobs it points at */
    for (size_t i = 0; i < q->njobs; i++)
        job_free(q->jobs[i]);
    dspy__store_close(q->store);
    dspy_free(q->jobs);
    dspy_free(q->threads);
    dspy_free(q->watchers);
    dspy_free(q->ckpt_root);
    json_decref(q->by_id);
    json_decref(q->by_key);
    pthread_cond_destroy(&q->wake);
    pthread_cond_destroy(&q->sweep_wake);
    pthread_mutex_destroy(&q->lock);
    dspy_free(q);
}

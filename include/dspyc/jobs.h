/* The optimization service (jobs layer): job specs that mirror the `dspyc optimize`, `eval`
 * and `run` flags, a priority queue with backpressure over a pool of worker threads, an
 * SQLite store so no accepted job is lost across restarts, and a Redis Streams transport
 * through which `dspyc worker` processes on any number of machines run the jobs. */
#ifndef DSPYC_JOBS_H
#define DSPYC_JOBS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include <dspyc/common.h>
#include <dspyc/lm.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- jobs ------------------------------------------------------------------------------- */

enum dspy_job_state {
    DSPY_JOB_QUEUED,
    DSPY_JOB_RUNNING,
    DSPY_JOB_SUCCEEDED, /* the four below are terminal: every accepted job ends in one */
    DSPY_JOB_FAILED,    /* with its reason */
    DSPY_JOB_CANCELLED,
    DSPY_JOB_DEAD, /* delivered max_attempts times without an answer: the dead letters */
};
#define DSPY_JOB_NSTATES 6
/** "queued", "running", "succeeded", "failed", "cancelled", "dead". */
DSPY_EXTERN const char *dspy_job_state_name(enum dspy_job_state s);
/** The state named `name`, or -1. */
DSPY_EXTERN int dspy_job_state_from_name(const char *name);
static inline bool dspy_job_state_terminal(enum dspy_job_state s)
{
    return s >= DSPY_JOB_SUCCEEDED;
}

/** Check a job spec (docs/jobs.md): an object with `kind` (optimize, eval, run), the flag
 * names of that command as keys with `_` for `-`, datasets as arrays of objects or paths,
 * `priority` 0-9 and `idempotency_key`. DSPY_EINVAL naming the bad key in err->field and
 * the message; unknown keys are refused. */
DSPY_EXTERN dspy_status dspy_job_spec_check(const json_t *spec, struct dspy_error *err);

/** Progress of a running job, from its optimizer's cycle timer. */
struct dspy_job_progress {
    uint64_t done, planned; /* trials (optimize) or examples (eval, run) */
    double fraction;        /* done / planned in [0, 1] */
    double iterations_per_s;
    double eta_s;          /* -1 when unknown */
    bool warned, exceeded; /* the cycle timer's warning and target */
    double best;           /* best score so far (percent), NAN when none */
    uint64_t lm_calls;
};

/** The LM a job calls for `model` (NULL: the default). Borrowed: one handle per
 * endpoint+model shared by every job, so its rate limiter holds for all of them together.
 * Called from worker threads at once. NULL when it cannot be opened. */
typedef dspy_lm *(*dspy_job_lm_fn)(void *userdata, const char *model);
typedef void (*dspy_job_progress_fn)(void *userdata, const struct dspy_job_progress *p);
/** True once the job should stop (cancelled). Polled on the job's threads. */
typedef bool (*dspy_job_cancelled_fn)(void *userdata);

struct dspy_job_exec_options {
    dspy_job_lm_fn lm; /* required */
    void *lm_userdata;
    const char *checkpoint_dir;      /* optimize: resume from and save here; NULL = none */
    dspy_job_progress_fn progress;   /* may be NULL */
    dspy_job_cancelled_fn cancelled; /* may be NULL */
    void *userdata;                  /* of progress and cancelled */
};

/** Run one checked spec to its end on the calling thread (it starts its own). *result gets
 * the job's result (caller owns): optimize: {"state": the DSPy state JSON, "report"};
 * eval: {"score", "n", "errors"}; run: {"outputs": [...]}. DSPY_ECANCELED when cancelled;
 * other errors with err->message the reason. */
DSPY_EXTERN dspy_status dspy_job_execute(const json_t *spec, const struct dspy_job_exec_options *o,
                                         json_t **result, struct dspy_error *err);

/* ---- the queue -------------------------------------------------------------------------- */

/** The LM handles the jobs call through (one per endpoint+model), seen as a pool. */
struct dspy_jobq_pool {
    size_t handles, max_handles; /* open now, and at most */
    uint64_t in_flight;          /* LM calls on the wire now, over every handle */
    uint64_t waiting;            /* calls sent and not on the wire (rate limit, backoff) */
    uint64_t requests;           /* calls sent upstream so far */
};
/** Fills *out; called with the queue's lm_userdata from any thread. */
typedef void (*dspy_jobq_pool_fn)(void *userdata, struct dspy_jobq_pool *out);

/** Jobs: accepted, stored, scheduled (priority, then FIFO) and run by a pool of worker
 * threads, or handed to Redis workers. Threading: every call but new/free from any thread
 * at once (one lock). */
typedef struct dspy_jobq dspy_jobq;

struct dspy_jobq_options {
    unsigned workers;            /* worker threads in this process; 0 = 4 (with redis_url, 0 is
                              * allowed: only `dspyc worker` processes run jobs) */
    unsigned max_concurrent;     /* jobs running at once in this process; 0 = workers */
    size_t max_queue;            /* queued jobs at most; 0 = 10,000 */
    double backpressure;         /* refuse once the queue is this full; 0 = 0.9 */
    const char *db_path;         /* SQLite file (WAL); NULL = in memory only */
    const char *redis_url;       /* redis://host:port[/db]: jobs travel through Redis Streams */
    const char *checkpoint_root; /* each optimize job checkpoints in ROOT/ID; NULL = the db
                                  * path + ".ckpt", none without a db */
    unsigned max_attempts;       /* deliveries before a job is dead; 0 = 3 */
    double visibility_s;         /* Redis: idle time before a stalled job is reclaimed; 0 = 10 */
    dspy_job_lm_fn lm;           /* required when workers > 0 */
    void *lm_userdata;
    dspy_jobq_pool_fn lm_pool; /* the LM pool for the stats; NULL = not shown */
    uint64_t memory_budget;    /* bytes the running jobs may hold together (each its
                                  * `memory_bytes` or its estimate); 0 = no budget */
    double retention_s;        /* ended jobs (and their results) are removed this long
                                  * after they end; 0 = kept until purged */
};
#define DSPY_JOBQ_OPTIONS_INIT                                                                 \
    {                                                                                          \
        .workers = 4, .max_concurrent = 0, .max_queue = 0, .backpressure = 0, .db_path = NULL, \
        .redis_url = NULL, .checkpoint_root = NULL, .max_attempts = 0, .visibility_s = 0,      \
        .lm = NULL, .lm_userdata = NULL, .lm_pool = NULL, .memory_budget = 0, .retention_s = 0 \
    }

/** Open the store (re-queueing jobs a previous run left queued or running), connect to
 * Redis and start the workers. NULL with err filled on failure. */
DSPY_EXTERN dspy_jobq *dspy_jobq_new(const struct dspy_jobq_options *o, struct dspy_error *err);
/** Stop the workers (running jobs stop and stay queued in the store, to resume), close.
 * NULL is a no-op. */
DSPY_EXTERN void dspy_jobq_free(dspy_jobq *q);

/** Accept a job. `id` (at least 40 bytes) gets its id; *existing is true when the spec's
 * idempotency_key named an earlier job (whose id is returned). DSPY_EINVAL (err->field) for
 * a bad spec; DSPY_EBUSY when the queue is past its backpressure mark (*retry_after_s gets
 * a suggested wait; err says why); DSPY_EIO when the store cannot write it. */
DSPY_EXTERN dspy_status dspy_jobq_submit(dspy_jobq *q, const json_t *spec, char *id, bool *existing,
                                         double *retry_after_s, struct dspy_error *err);
/** The job as JSON (state, priority, progress, best, timings, error, attempts); caller
 * owns; NULL for an unknown id. */
DSPY_EXTERN json_t *dspy_jobq_get(dspy_jobq *q, const char *id);
/** Jobs newest first, of one state (-1 = any), at most `limit` (0 = 100). */
DSPY_EXTERN json_t *dspy_jobq_list(dspy_jobq *q, int state, size_t limit);
/** Cancel a queued or running job. DSPY_ENOTFOUND: no such job; DSPY_EINVAL: it already
 * ended (err says how). */
DSPY_EXTERN dspy_status dspy_jobq_cancel(dspy_jobq *q, const char *id, struct dspy_error *err);
/** The result of a succeeded job (caller owns). DSPY_ENOTFOUND: no such job; DSPY_EBUSY:
 * not ended yet; DSPY_EINVAL: it ended without one. */
DSPY_EXTERN dspy_status dspy_jobq_result(dspy_jobq *q, const char *id, json_t **out,
                                         struct dspy_error *err);
/** Remove ended jobs with their results and events, from memory, the store and Redis: job
 * `id` (NULL: every ended job), of `state` (-1: any ended state), that ended more than
 * `older_than_s` ago (0: any time). *purged gets how many. DSPY_ENOTFOUND: no job `id`;
 * DSPY_EINVAL: it has not ended (cancel it first), or `state` is not an ended one. An
 * idempotency key of a removed job names no job any more. */
DSPY_EXTERN dspy_status dspy_jobq_purge(dspy_jobq *q, const char *id, int state,
                                        double older_than_s, size_t *purged,
                                        struct dspy_error *err);
/** Depth per priority, running, pool size and utilization, jobs/s, success rate. */
DSPY_EXTERN json_t *dspy_jobq_stats(dspy_jobq *q);

/** Called with each event of a watched job: {"type": "state"|"progress", ...} (borrowed),
 * or NULL once when the queue is freed. Return false to stop watching; a watcher is also
 * dropped after the event of a terminal state. Runs on the thread that changed the job with
 * the queue's lock held: must not block nor call back into the queue. */
typedef bool (*dspy_jobq_event_fn)(void *userdata, const json_t *event);
/** Watch job `id`: the current state is delivered at once, then every change. Returns a
 * token for dspy_jobq_unwatch (0 for an unknown job, on allocation failure, or when the
 * first event ended the watch). */
DSPY_EXTERN uint64_t dspy_jobq_watch(dspy_jobq *q, const char *id, dspy_jobq_event_fn fn,
                                     void *userdata);
DSPY_EXTERN void dspy_jobq_unwatch(dspy_jobq *q, uint64_t token);
/** End every watch now (each fn gets NULL): before the server whose feeds they are stops
 * (dspy_jobq_free does it too). */
DSPY_EXTERN void dspy_jobq_end_watches(dspy_jobq *q);

/* ---- Redis workers ---------------------------------------------------------------------- */

struct dspy_worker_options {
    const char *redis_url;       /* required */
    unsigned concurrency;        /* jobs at once; 0 = 4 */
    const char *name;            /* consumer name; NULL = host:pid */
    unsigned max_attempts;       /* deliveries before dead; 0 = 3 */
    double visibility_s;         /* reclaim others' jobs idle this long; 0 = 10 */
    const char *checkpoint_root; /* NULL = none */
    dspy_job_lm_fn lm;           /* required */
    void *lm_userdata;
    volatile int *stop;        /* set non-zero (e.g. from a signal handler, with
                              * __atomic_store_n) to stop; read atomically */
    uint64_t memory_budget;    /* bytes its running jobs may hold together; a claimed job
                              * waits for its share; 0 = no budget */
    dspy_jobq_pool_fn lm_pool; /* its LM pool (called with lm_userdata), reported in each
                                * heartbeat: calls in flight and waiting; NULL = none */
};
#define DSPY_WORKER_OPTIONS_INIT                                                                 \
    {                                                                                            \
        .redis_url = NULL, .concurrency = 4, .name = NULL, .max_attempts = 0, .visibility_s = 0, \
        .checkpoint_root = NULL, .lm = NULL, .lm_userdata = NULL, .stop = NULL,                  \
        .memory_budget = 0, .lm_pool = NULL                                                      \
    }

/** Run jobs from the Redis streams until *stop: claim (XREADGROUP), run, write the result
 * once by job id, acknowledge; reclaim stalled jobs of dead workers (XAUTOCLAIM) and move
 * those delivered max_attempts times to the dead letters. Reconnects when Redis goes away.
 * Returns DSPY_OK once stopped, DSPY_EIO when Redis cannot be reached at the start. */
DSPY_EXTERN dspy_status dspy_worker_run(const struct dspy_worker_options *o,
                                        struct dspy_error *err);

#ifdef __cplusplus
}
#endif
#endif

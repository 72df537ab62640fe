/* Private parts of the jobs layer shared by spec.c (checks, datasets), exec.c (running a
 * job), queue.c (the queue and worker pool), store.c (SQLite) and redis.c (the Redis
 * Streams transport and its workers). */
#ifndef DSPY_JOBS_JOBS_INT_H
#define DSPY_JOBS_JOBS_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include <dspyc/jobs.h>

/* 0 optimize, 1 eval, 2 run, 3 noop; -1 unknown. */
int dspy__job_kind(const json_t *spec);
/* The examples of `field`: the inline array (a new reference) or the JSON-lines file it
 * names. NULL with err on failure (or when absent: err untouched). */
json_t *dspy__job_dataset(const json_t *spec, const char *field, struct dspy_error *err);
/* The memory a job holds while it runs: its `memory_bytes`, else an estimate from its
 * datasets (BASE + FACTOR x the bytes of their JSON, inline or on disk; a no-op: 0). */
#define DSPY__JOB_MEMORY_BASE ((uint64_t)1 << 20)
#define DSPY__JOB_MEMORY_FACTOR 8u
uint64_t dspy__job_memory(const json_t *spec);

/* ---- the SQLite store (store.c) ---- */

/* A job row as stored. Strings are owned by whoever filled the struct. */
struct dspy__job_row {
    const char *id;
    uint64_t seq;
    const char *spec; /* JSON text */
    int priority;
    const char *idem;  /* NULL = none */
    int state;         /* enum dspy_job_state */
    const char *error; /* NULL = none */
    unsigned attempts;
    double submitted, started, finished; /* wall seconds; 0 = not yet */
    bool published;                      /* in its Redis stream (or no Redis) */
};

/* A writer waiting for its write: ticket and outcome, filled by the store. */
struct dspy__store_wait {
    uint64_t ticket;
    dspy_status rc;
};

struct dspy__store;
dspy_status dspy__store_open(const char *path, struct dspy__store **out, struct dspy_error *err);
/* Writes what is queued, then closes. */
void dspy__store_close(struct dspy__store *st);
/* Queue a write of the job's row (all of it when r->spec is set, a new job; else its state,
 * error, attempts, timings and published flag) and of an event row when `event` is not
 * NULL. Writes are group-committed in order: with `w`, dspy__store_wait(w) returns once
 * this one is on disk (and says whether it could be written); without, a writer thread
 * writes it soon. Copies what it needs. DSPY_ENOMEM only. */
dspy_status dspy__store_put(struct dspy__store *st, const struct dspy__job_row *r,
                            const char *event, struct dspy__store_wait *w);
dspy_status dspy__store_wait(struct dspy__store *st, struct dspy__store_wait *w);
/* Queue the result, stored once: a second write for the same id keeps the first. */
dspy_status dspy__store_result(struct dspy__store *st, const char *id, const char *json);
/* Queue the removal of a job and its result; id NULL: of the events of removed jobs. */
dspy_status dspy__store_delete(struct dspy__store *st, const char *id);
/* Until everything queued so far is written. */
void dspy__store_flush(struct dspy__store *st);
/* The stored result text (dspy_malloc'd) or NULL (what is queued is written first, as for
 * the other reads). */
char *dspy__store_get_result(struct dspy__store *st, const char *id);
/* Every job in seq order. */
dspy_status dspy__store_load(struct dspy__store *st,
                             void (*fn)(void *ud, const struct dspy__job_row *r), void *ud);
/* Number of result rows committed (one per job however often it ran), kept in memory: no
 * query and no flush, so reading it does not slow the writes; a result still queued counts
 * once its group commit is in (the store writes within 10 ms). */
long dspy__store_count_results(struct dspy__store *st);
/* Transactions written and the writes they held (writes / commits = the group size). */
void dspy__store_stats(struct dspy__store *st, uint64_t *commits, uint64_t *writes);

/* ---- Redis keys (redis.c) ---- */

#define DSPY__RJ_STREAM "dspyc:jobs:p" /* + priority digit: one stream per priority */
#define DSPY__RJ_GROUP "dspyc-workers"
#define DSPY__RJ_EVENTS "dspyc:jobs:events"
#define DSPY__RJ_DEAD "dspyc:jobs:dead"
#define DSPY__RJ_RESULT "dspyc:jobs:result:" /* + id */
#define DSPY__RJ_CANCEL "dspyc:jobs:cancel:" /* + id */
/* hash: consumer -> "CONC RUNNING UNIX_MS MEM_USED MEM_BUDGET LM_IN_FLIGHT LM_WAITING" (the
 * last four from newer workers) */
#define DSPY__RJ_WORKERS "dspyc:jobs:workers"
/* results up to this size also travel in their "succeeded" event */
#define DSPY__RJ_INLINE_RESULT_MAX_S "1024"

/* The server's side of the transport: publish jobs, cancel them, follow the events stream. */
struct dspy__rjobs;
typedef void (*dspy__rjobs_event_fn)(void *ud, const char *id, const char *state, const char *error,
                                     const char *progress, const char *result);
/* A job is in its stream now (called on the publisher thread). */
typedef void (*dspy__rjobs_published_fn)(void *ud, const char *id);
dspy_status dspy__rjobs_open(const char *url, dspy__rjobs_event_fn fn,
                             dspy__rjobs_published_fn published, void *ud, struct dspy__rjobs **out,
                             struct dspy_error *err);
void dspy__rjobs_close(struct dspy__rjobs *r);
/* Queue the job for its stream: a publisher thread writes what is queued in order, in one
 * pipeline, and tries again while Redis is away; `published` says when it is in. Returns at
 * once (DSPY_ENOMEM only). */
dspy_status dspy__rjobs_publish(struct dspy__rjobs *r, const char *id, int priority,
                                const char *spec, unsigned attempts);
/* Jobs queued for their stream and not written yet. */
size_t dspy__rjobs_unpublished(struct dspy__rjobs *r);
/* Batches of jobs Redis did not take so far (each is tried again). */
uint64_t dspy__rjobs_failed_batches(struct dspy__rjobs *r);
dspy_status dspy__rjobs_cancel(struct dspy__rjobs *r, const char *id);
/* Remove what Redis holds of ended jobs: their result and cancel keys, and the stream
 * entries older than `before_ms` (Unix ms) that every worker has seen and acknowledged. */
dspy_status dspy__rjobs_purge(struct dspy__rjobs *r, const char *const *ids, size_t n,
                              long long before_ms);
/* The live workers (heartbeat within 15 s) added up. */
struct dspy__rj_pool_stats {
    unsigned workers, slots, running;            /* workers, their job slots, jobs running */
    unsigned long long mem_used, mem_budget;     /* bytes their jobs hold of their budgets */
    unsigned long long lm_in_flight, lm_waiting; /* their LM pools' calls: on the wire, and
                                                  * waiting (rate limit, backoff) */
};
void dspy__rjobs_pool(struct dspy__rjobs *r, struct dspy__rj_pool_stats *out);

/* ---- Redis replies (redis.c), checked before they are read ---- */

struct redisReply;
/* The string value of field `name` in a [k, v, k, v...] array, or NULL. */
const char *dspy__rj_field(const struct redisReply *kv, const char *name);
/* A stream entry [id, fields]: its id (NULL when it is not one); *fields NULL when the
 * entry was deleted. */
const char *dspy__rj_entry(const struct redisReply *e, const struct redisReply **fields);
/* Each entry of an XREAD/XREADGROUP answer [[stream, [entries]], ...], until fn returns
 * false; the number seen. */
typedef bool (*dspy__rj_entry_fn)(void *ud, const char *stream, const char *entry,
                                  const struct redisReply *fields);
size_t dspy__rj_streams(const struct redisReply *rep, dspy__rj_entry_fn fn, void *ud);
/* The worker registry (HGETALL of DSPY__RJ_WORKERS): workers seen in the last 15 s. */
bool dspy__rj_pool(const struct redisReply *rep, long long now_ms, struct dspy__rj_pool_stats *out);
/* The claiming script's answer {stream, entry, flag}. */
bool dspy__rj_claim(const struct redisReply *rep, const char **stream,
                    const struct redisReply **entry, const char **flag);
/* The first entry XAUTOCLAIM took, or NULL. */
const struct redisReply *dspy__rj_autoclaimed(const struct redisReply *rep);
/* The delivery count in an XPENDING answer for one entry; 1 when it is not one. */
long dspy__rj_deliveries(const struct redisReply *rep);

#define DSPY__RJ_EVENTS_MAX 500 /* events read at once */
struct dspy__rj_event {
    const char *entry, *id, *state, *error, *progress, *result; /* borrowed from the reply */
};
struct dspy__rj_events {
    size_t n;
    struct dspy__rj_event ev[DSPY__RJ_EVENTS_MAX];
    struct redisReply *res[DSPY__RJ_EVENTS_MAX]; /* their results, while handled */
};
/* The events of an XREAD answer on DSPY__RJ_EVENTS, as the server's events thread reads
 * them: ids longer than a job id are dropped (NULL). */
size_t dspy__rj_events_parse(const struct redisReply *rep, struct dspy__rj_events *b);

#endif

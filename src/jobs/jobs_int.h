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
};

struct dspy__store;
dspy_status dspy__store_open(const char *path, struct dspy__store **out, struct dspy_error *err);
void dspy__store_close(struct dspy__store *st);
/* Insert or replace the job's row, and append an event row when `event` is not NULL. */
dspy_status dspy__store_put(struct dspy__store *st, const struct dspy__job_row *r,
                            const char *event);
/* Store the result once: a second write for the same id keeps the first. */
dspy_status dspy__store_result(struct dspy__store *st, const char *id, const char *json);
/* The stored result text (dspy_malloc'd) or NULL. */
char *dspy__store_get_result(struct dspy__store *st, const char *id);
/* Every job in seq order. */
dspy_status dspy__store_load(struct dspy__store *st,
                             void (*fn)(void *ud, const struct dspy__job_row *r), void *ud);
/* Number of result rows (tests: one per job however often it ran). */
long dspy__store_count_results(struct dspy__store *st);

/* ---- Redis keys (redis.c) ---- */

#define DSPY__RJ_STREAM "dspyc:jobs:p" /* + priority digit: one stream per priority */
#define DSPY__RJ_GROUP "dspyc-workers"
#define DSPY__RJ_EVENTS "dspyc:jobs:events"
#define DSPY__RJ_DEAD "dspyc:jobs:dead"
#define DSPY__RJ_RESULT "dspyc:jobs:result:"  /* + id */
#define DSPY__RJ_CANCEL "dspyc:jobs:cancel:"  /* + id */
#define DSPY__RJ_WORKERS "dspyc:jobs:workers" /* hash: consumer -> "CONC RUNNING UNIX_MS" */

/* The server's side of the transport: publish jobs, cancel them, follow the events stream. */
struct dspy__rjobs;
typedef void (*dspy__rjobs_event_fn)(void *ud, const char *id, const char *state, const char *error,
                                     const char *progress, const char *result);
dspy_status dspy__rjobs_open(const char *url, dspy__rjobs_event_fn fn, void *ud,
                             struct dspy__rjobs **out, struct dspy_error *err);
void dspy__rjobs_close(struct dspy__rjobs *r);
dspy_status dspy__rjobs_publish(struct dspy__rjobs *r, const char *id, int priority,
                                const char *spec, unsigned attempts);
dspy_status dspy__rjobs_cancel(struct dspy__rjobs *r, const char *id);
/* The live workers (heartbeat within 15 s), their job slots and jobs running. */
void dspy__rjobs_pool(struct dspy__rjobs *r, unsigned *workers, unsigned *slots, unsigned *running);

#endif

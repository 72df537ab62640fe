/* Batch execution (program layer): a program over a stream of records with at most N in
 * flight, results handed to the caller in input order through a bounded reorder window,
 * DSPy's max_errors, progress, and cancellation of a whole batch (its LM calls join one
 * engine group, cancelled together). A single-call program over an LM whose calls are truly
 * asynchronous goes straight onto the LM's event loop, fed from the calling thread with no
 * thread per record (each completion starts the next record already pulled, on the loop
 * thread); other programs run on a bounded pool of worker threads. Over a cache with a
 * level below L1, the pool reads records ahead in runs, runs the local work before each
 * one's first LM call (retrieval, re-ranking, the context fit; its waiting workers help)
 * and looks all those calls up in one dspy_cache_get_many (one pipelined Redis MGET for
 * the L1 misses): the hits are answered from it and only the misses reach the LM. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <dspyc/program.h>

#include "base/status.h"
#include "lm/lm_int.h"
#include "program/module_int.h"
#include "program/program_int.h"

#define BATCH_WINDOW_PER_WORKER 4           /* records pulled and not yet delivered, per worker */
#define BATCH_SMALL_STACK ((size_t)1 << 20) /* for large pools: 4,096 x 8 MiB is too much */
#define BATCH_CANCEL_POLL_NS 20000000L      /* how often a waiting thread looks at opts->cancel */
#define BATCH_PREFETCH_MAX 512              /* records read ahead and looked up at once */

/* A record in the window, kept small (a window holds four per call in flight): the error
 * is allocated only when the record fails, and the sink gets a dspy_batch_item and a
 * dspy_batch_result made on the emitter's stack. */
struct slot {
    json_t *inputs; /* NULL: a bad input, failed with `error` */
    void *tag;
    unsigned lm; /* dspy_batch_item.lm */
    dspy_status status;
    json_t *outputs;
    struct dspy_error *error; /* the failure, NULL if none (or if it could not be kept) */
    struct dspy_call_info info;
    uint64_t latency_ns;
    bool done;                        /* the result is final; mu */
    struct batch *b;                  /* for the asynchronous path's completion */
    uint64_t start_ns;                /* the asynchronous call began */
    struct dspy__lm_prefetched pre;   /* pool path: the lookup of its first LM call */
    struct dspy__program_first first; /* pool path: its first predictor's input, prepared */
    struct dspy_cache_ctl ctl;        /* prefetch: the first LM call's control */
    bool keyed;                       /* prefetch: pre.key and ctl are known */
    uint64_t prep_ns;                 /* prefetch: time spent preparing it, in its latency */
};

struct batch {
    dspy_program *prog;
    dspy_lm *lm;
    const struct dspy_batch_options *o;
    dspy_batch_source_fn source;
    dspy_batch_sink_fn sink;
    void *ud;
    struct dspy__engine_group *group;                          /* NULL with a transport hook */
    dspy_lm *lms[DSPY_BATCH_MAX_LMS + 1];                      /* [0] = lm, then opts->lms */
    struct dspy__engine_group *groups[DSPY_BATCH_MAX_LMS + 1]; /* [0] = group: one per LM */
    struct slot *slots; /* ring: record i lives in slots[i % window] */
    size_t window;
    pthread_mutex_t src_mu; /* one reader of the source at a time; taken before mu */
    pthread_mutex_t mu;
    pthread_cond_t space;       /* a slot came free, the source ended or the batch stopped */
    size_t pulled;              /* records taken from the source; mu */
    size_t head;                /* next record to deliver; mu */
    size_t failed;              /* records completed with an error; mu */
    bool emitting;              /* a worker is delivering; mu */
    size_t in_flight;           /* asynchronous path: module calls not yet completed; mu */
    size_t next_start;          /* asynchronous path: next record to start (records from here
                               to `pulled` wait to start); mu */
    bool feeder_waits;          /* asynchronous path: the calling thread waits on space; mu */
    bool source_done;           /* mu */
    size_t workers_live;        /* pool path: workers not yet returned; mu */
    bool prefetch;              /* pool path: records are read ahead and looked up in runs */
    bool reading;               /* prefetch: a worker is reading ahead; mu */
    size_t next_run;            /* prefetch: next record to run (from here to `pulled` they
                                   are looked up and wait for a worker); mu */
    size_t prep_next, prep_end; /* prefetch: records of the run read ahead waiting to be
                                   prepared (any waiting worker helps); mu */
    size_t prep_left;           /* prefetch: records of the run not yet prepared; mu */
    bool sink_failed;           /* only the emitter touches it */
    atomic_bool stop;           /* pull no more: cancel, max_errors, source or sink error */
    dspy_status stop_rc;        /* why; mu */
    struct dspy_batch_stats st; /* record counts; only the emitter touches them */
    uint64_t start_ns;
    pthread_t caller; /* the thread that called dspy_program_batch_stream */
};

/* mu held. The first reason wins. */
static void stop_locked(struct batch *b, dspy_status why)
{
    if (atomic_load(&b->stop))
        return;
    b->stop_rc = why;
    atomic_store(&b->stop, true);
    if (why == DSPY_ECANCELED)
        for (size_t i = 0; i <= b->o->nlms; i++)
            dspy__lm_group_cancel(b->groups[i]);
    pthread_cond_broadcast(&b->space);
}

/* mu held. The caller's stop switch was thrown: cancel as the progress callback would.
 * Only the calling thread reads it: a signal handler writes it there, and a read on a
 * worker would race with that write (the caller polls it while workers run). */
static void check_cancel_locked(struct batch *b)
{
    if (b->o->cancel && pthread_equal(pthread_self(), b->caller) && *b->o->cancel)
        stop_locked(b, DSPY_ECANCELED);
}

/* mu held. Wait for `space`; with a stop switch, wake every BATCH_CANCEL_POLL_NS to look at
 * it (a signal handler cannot signal a condition variable). */
static void wait_space(struct batch *b)
{
    if (!b->o->cancel) {
        pthread_cond_wait(&b->space, &b->mu);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += BATCH_CANCEL_POLL_NS;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&b->space, &b->mu, &ts);
    check_cancel_locked(b);
}

/* The record failed with `e`: keep a copy for the sink (none when out of memory; deliver
 * then says so). */
static void keep_error(struct slot *s, const struct dspy_error *e)
{
    if (!s->error && (s->error = dspy_malloc(sizeof(*s->error))))
        *s->error = *e;
}

/* Claim the next record into its slot; false when there is none (end, stop) or, without
 * `wait`, when the window is full. */
static bool pull(struct batch *b, size_t *idx, bool wait)
{
    struct dspy_batch_item item;
    bool go;
    int got;
    pthread_mutex_lock(&b->src_mu);
    pthread_mutex_lock(&b->mu);
    check_cancel_locked(b);
    while (wait && !b->source_done && !atomic_load(&b->stop) && b->pulled - b->head >= b->window)
        wait_space(b);
    go = !b->source_done && !atomic_load(&b->stop) && b->pulled - b->head < b->window;
    pthread_mutex_unlock(&b->mu);
    if (!go) {
        pthread_mutex_unlock(&b->src_mu);
        return false;
    }
    memset(&item, 0, sizeof(item));
    dspy_error_clear(&item.error);
    got = b->source(b->ud, &item);
    pthread_mutex_lock(&b->mu);
    if (got == 1) {
        *idx = b->pulled++;
        struct slot *s = &b->slots[*idx % b->window];
        memset(s, 0, sizeof(*s));
        s->inputs = item.inputs;
        s->tag = item.tag;
        s->lm = item.lm;
        if (item.inputs && item.lm > b->o->nlms) {
            dspy__err(&item.error, DSPY_EINVAL, "record names LM %u of %zu", item.lm, b->o->nlms);
            json_decref(item.inputs);
            s->inputs = NULL;
        }
        if (!s->inputs)
            keep_error(s, &item.error);
    } else {
        b->source_done = true;
        if (got < 0)
            stop_locked(b, DSPY_EIO);
        pthread_cond_broadcast(&b->space);
    }
    pthread_mutex_unlock(&b->mu);
    pthread_mutex_unlock(&b->src_mu);
    return got == 1;
}

/* A record that is not to run (a bad input, or the batch stopped) gets its result here:
 * true when it did. */
static bool refuse_record(struct batch *b, struct slot *s)
{
    if (!s->inputs) {
        s->status = s->error && s->error->code ? s->error->code : DSPY_EINVAL;
        if (s->error)
            s->error->code = s->status;
        return true;
    }
    if (atomic_load(&b->stop)) {
        struct dspy_error e;
        s->status = dspy__err(&e, DSPY_ECANCELED, "not run: the batch was stopped");
        keep_error(s, &e);
        return true;
    }
    return false;
}

static void run_record(struct batch *b, struct slot *s)
{
    struct dspy_error e;
    if (refuse_record(b, s)) {
        dspy_cache_value_release(&s->pre.value);
        dspy__program_first_release(&s->first);
        return;
    }
    uint64_t t0 = dspy_clock_ns();
    dspy_error_clear(&e);
    s->status = dspy__program_call_in(b->prog, b->lms[s->lm], b->groups[s->lm], &s->pre, &s->first,
                                      s->inputs, b->o->cfg, &s->outputs, &s->info, &e);
    s->latency_ns = s->prep_ns + (dspy_clock_ns() - t0); /* with the work done ahead */
    dspy_cache_value_release(&s->pre.value);             /* a hit the call did not take */
    if (s->status) {
        keep_error(s, &e);
        json_decref(s->outputs);
        s->outputs = NULL;
    }
}

/* dspy_error_clear() without writing the whole message buffers. */
static void no_error(struct dspy_error *e)
{
    e->code = DSPY_OK;
    e->message[0] = e->file[0] = e->field[0] = '\0';
    e->line = e->column = e->offset = -1;
    e->http_status = 0;
}

/* Hand one record to the sink and the progress callback, then free what it held. Runs on
 * the emitter alone, without mu. */
static void deliver(struct batch *b, size_t idx, struct slot *s)
{
    struct dspy_batch_item item;
    struct dspy_batch_result res;
    struct dspy_batch_result *r = &res;
    struct dspy_batch_progress p;
    int stop = 0;
    item.inputs = s->inputs;
    item.tag = s->tag;
    item.lm = s->lm;
    no_error(&item.error);
    r->status = s->status;
    r->outputs = s->outputs;
    r->info = s->info;
    r->latency_ns = s->latency_ns;
    if (!s->status)
        no_error(&r->error);
    else if (s->error)
        r->error = *s->error;
    else
        dspy__err(&r->error, s->status, "%s (the details were lost: out of memory)",
                  dspy_strerror(s->status));
    if (!s->inputs)
        item.error = r->error;
    dspy_free(s->error);
    s->error = NULL;
    b->st.records++;
    b->st.lm_calls += (uint64_t)(r->info.lm_calls > 0 ? r->info.lm_calls : 0);
    if (!r->status)
        b->st.ok++;
    else
        b->st.failed++;
    if (r->status == DSPY_ECANCELED)
        b->st.cancelled++;
    if (!b->sink_failed && b->sink(b->ud, idx, &item, r)) {
        b->sink_failed = true;
        stop = DSPY_EIO;
    }
    if (!stop && b->o->progress) {
        p.done = b->st.records;
        p.total = b->o->total;
        p.errors = b->st.failed;
        p.elapsed_ns = dspy_clock_ns() - b->start_ns;
        if (b->o->progress(b->o->progress_userdata, &p))
            stop = DSPY_ECANCELED;
    }
    json_decref(r->outputs); /* NULL when the sink took it */
    json_decref(item.inputs);
    s->outputs = NULL;
    s->inputs = NULL;
    if (stop) {
        pthread_mutex_lock(&b->mu);
        stop_locked(b, stop);
        pthread_mutex_unlock(&b->mu);
    }
}

static void mark_done_locked(struct batch *b, struct slot *s)
{
    s->done = true;
    if (s->status) {
        b->failed++;
        if (b->o->max_errors && b->failed >= b->o->max_errors)
            stop_locked(b, DSPY_ECANCELED);
    }
}

/* mu held (dropped around each delivery). Deliver every record done from the head on. */
static void emit_locked(struct batch *b)
{
    while (b->head < b->pulled && b->slots[b->head % b->window].done) {
        size_t idx = b->head;
        pthread_mutex_unlock(&b->mu);
        deliver(b, idx, &b->slots[idx % b->window]);
        pthread_mutex_lock(&b->mu);
        b->head++;
        pthread_cond_broadcast(&b->space);
    }
}

/* Mark a record done; the first worker to find the head done delivers every record done in
 * order from there, so results leave in input order whoever finishes first. */
static void complete(struct batch *b, struct slot *s)
{
    pthread_mutex_lock(&b->mu);
    mark_done_locked(b, s);
    if (!b->emitting) {
        b->emitting = true;
        emit_locked(b);
        b->emitting = false;
    }
    pthread_mutex_unlock(&b->mu);
}

/* ---- reading ahead: one lookup for many records --------------------------------------- */

/* Prepare one record read ahead: the local work before its first LM call (retrieval,
 * re-ranking, the context fit) and that call's key. A record whose key cannot be known
 * beforehand keeps none and makes its own lookup. No lock held: the slot is being read
 * ahead, no worker runs it yet. */
static void prepare_one(struct batch *b, size_t i)
{
    struct slot *s = &b->slots[i % b->window];
    uint64_t t0 = dspy_clock_ns();
    s->keyed = s->inputs && !atomic_load(&b->stop) &&
               !dspy__program_prepare(b->prog, b->lms[s->lm], s->inputs, b->o->cfg, &s->first,
                                      &s->pre.key, &s->ctl);
    s->prep_ns = dspy_clock_ns() - t0;
}

/* mu held (dropped while preparing). Prepare records of the run left to prepare; true when
 * this thread did one. */
static bool help_prepare_locked(struct batch *b)
{
    if (b->prep_next >= b->prep_end)
        return false;
    size_t i = b->prep_next++;
    pthread_mutex_unlock(&b->mu);
    prepare_one(b, i);
    pthread_mutex_lock(&b->mu);
    if (--b->prep_left == 0)
        pthread_cond_broadcast(&b->space);
    return true;
}

/* Look up the first LM call of the prepared records [from, to) at once. No lock held: the
 * slots are the reader's until it publishes them. */
static void prefetch(struct batch *b, size_t from, size_t to)
{
    size_t n = to - from, m = 0;
    struct dspy_cache_key *keys = dspy_malloc(n * sizeof(*keys));
    struct dspy_cache_value *vals = dspy_malloc(n * sizeof(*vals));
    size_t *at = dspy_malloc(n * sizeof(*at));
    struct dspy_cache_ctl ctl = DSPY_CACHE_CTL_INIT;
    if (!keys || !vals || !at)
        goto out; /* out of memory: every record looks itself up */
    for (size_t i = from; i < to; i++) {
        struct slot *s = &b->slots[i % b->window];
        if (!s->keyed || dspy__lm_cache(b->lms[s->lm]) != dspy__lm_cache(b->lm))
            continue;
        /* One control for the run (the program and config are the batch's); a record
         * whose control differs, or that does not read the cache, looks itself up. */
        if (!m)
            ctl = s->ctl;
        if (s->ctl.no_cache || s->ctl.levels != ctl.levels || s->ctl.ns != ctl.ns)
            continue;
        keys[m] = s->pre.key;
        at[m++] = i;
    }
    unsigned lower = dspy_cache_levels(dspy__lm_cache(b->lm)) & (DSPY_CACHE_L2 | DSPY_CACHE_L3);
    if (!m || !(ctl.levels ? ctl.levels & lower : lower))
        goto out; /* only L1 to ask: the module's memo does better */
    dspy_cache_get_many(dspy__lm_cache(b->lm), keys, m, &ctl, vals);
    for (size_t j = 0; j < m; j++) {
        struct slot *s = &b->slots[at[j] % b->window];
        s->pre.value = vals[j];
        s->pre.looked_up = true;
    }
out:
    dspy_free(at);
    dspy_free(vals);
    dspy_free(keys);
}

/* The next record for a worker of a prefetching pool: one read ahead and looked up, else
 * (when no other worker is reading) read a run of records, as many as the window has room
 * for, prepare them (with the workers waiting meanwhile: the local steps before the first
 * LM call may be an embedding each), look them up, and take the first. */
static bool next_prefetched(struct batch *b, size_t *idx)
{
    pthread_mutex_lock(&b->mu);
    for (;;) {
        if (b->next_run < b->pulled && !b->reading) {
            *idx = b->next_run++;
            pthread_mutex_unlock(&b->mu);
            return true;
        }
        if (!b->reading)
            break;
        if (!help_prepare_locked(b))
            wait_space(b);
    }
    b->reading = true;
    size_t from = b->pulled, got = 0, i;
    pthread_mutex_unlock(&b->mu);
    while (got < BATCH_PREFETCH_MAX && pull(b, &i, got == 0))
        got++;
    pthread_mutex_lock(&b->mu);
    b->prep_next = from;
    b->prep_end = from + got;
    b->prep_left = got;
    pthread_cond_broadcast(&b->space);
    while (help_prepare_locked(b))
        ;
    while (b->prep_left)
        wait_space(b);
    pthread_mutex_unlock(&b->mu);
    if (got)
        prefetch(b, from, from + got);
    pthread_mutex_lock(&b->mu);
    b->reading = false;
    pthread_cond_broadcast(&b->space);
    bool any = b->next_run < b->pulled;
    if (any)
        *idx = b->next_run++;
    pthread_mutex_unlock(&b->mu);
    return any;
}

static bool next_record(struct batch *b, size_t *idx)
{
    return b->prefetch ? next_prefetched(b, idx) : pull(b, idx, true);
}

static void *worker(void *arg)
{
    struct batch *b = arg;
    size_t idx;
    while (next_record(b, &idx)) {
        struct slot *s = &b->slots[idx % b->window];
        run_record(b, s); /* the slot is this worker's until it is marked done */
        complete(b, s);
    }
    pthread_mutex_lock(&b->mu);
    b->workers_live--;
    pthread_cond_broadcast(&b->space);
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* Start the pool and wait for it; the number of workers that ran. */
static size_t run_pool(struct batch *b, size_t n)
{
    pthread_t *tids = dspy_calloc(n, sizeof(*tids));
    pthread_attr_t attr;
    size_t started = 0;
    if (!tids)
        return 0;
    pthread_attr_init(&attr);
    if (n > 64)
        pthread_attr_setstacksize(&attr, BATCH_SMALL_STACK);
    pthread_mutex_lock(&b->mu);
    b->workers_live = n; /* before any worker can leave */
    pthread_mutex_unlock(&b->mu);
    for (; started < n; started++)
        if (pthread_create(&tids[started], &attr, worker, b))
            break; /* fewer workers than asked for: still correct, only slower */
    pthread_attr_destroy(&attr);
    pthread_mutex_lock(&b->mu);
    b->workers_live -= n - started;
    /* The workers may all sit in LM calls that hang: this thread watches the stop switch
     * for them, and its cancel reaches those calls through the engine group. */
    while (b->o->cancel && b->workers_live)
        wait_space(b);
    pthread_mutex_unlock(&b->mu);
    for (size_t i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    dspy_free(tids);
    return started;
}

/* ---- straight onto the event loop ------------------------------------------------------ */

/* Whether the program is one module call and the LM's calls leave the calling thread (no
 * cache, no transport hook: dspy_lm_submit would run those in place). */
static bool runs_on_loop(const dspy_program *p, const dspy_lm *lm,
                         const struct dspy_batch_options *o)
{
    bool all = dspy__lm_calls_async(lm);
    for (size_t i = 0; all && i < o->nlms; i++)
        all = dspy__lm_calls_async(o->lms[i]);
    return p->n == 1 && !p->nsteps && !p->context_budget && !p->prompt_budget && !p->demo_select &&
           all;
}

/* mu held. Claim the next record pulled and not started, counted in flight from here
 * (start_slot undoes that for a record that does not run). */
static size_t claim_locked(struct batch *b)
{
    b->in_flight++;
    return b->next_start++;
}

static void start_slot(struct batch *b, size_t idx);

/* A record's module call ended: on the LM's loop thread, which stores the result, starts
 * the next record already pulled (on this thread: no hand-off to the feeder and back
 * between a completion and the next submission) and wakes the feeder; the source, sink
 * and progress callbacks run on the calling thread. */
static void record_done(void *userdata, dspy_status status, json_t *prediction, json_t *completions,
                        const struct dspy_call_info *info, const struct dspy_error *err)
{
    struct slot *s = userdata;
    struct batch *b = s->b;
    const char *name = b->prog->preds[0].name;
    json_decref(completions);
    s->status = status;
    s->outputs = prediction;
    s->info = *info;
    if (status) {
        struct dspy_error e = *err;
        if (name)
            dspy__err_prefix(&e, "predictor %s", name);
        keep_error(s, &e);
    }
    s->latency_ns = dspy_clock_ns() - s->start_ns;
    pthread_mutex_lock(&b->mu);
    mark_done_locked(b, s);
    b->in_flight--;
    /* A stopped batch leaves the records pulled to the feeder, which refuses them. */
    bool next = !atomic_load(&b->stop) && b->next_start < b->pulled;
    size_t idx = next ? claim_locked(b) : 0;
    if (b->feeder_waits)
        pthread_cond_signal(&b->space);
    pthread_mutex_unlock(&b->mu);
    if (next) /* the batch cannot end before that record does: b is still there */
        start_slot(b, idx);
}

/* Start the module call of a claimed record, or give it its result when it does not run
 * (refused, or the submission failed). mu not held. */
static void start_slot(struct batch *b, size_t idx)
{
    struct slot *s = &b->slots[idx % b->window];
    s->b = b;
    if (!refuse_record(b, s)) {
        const char *name = b->prog->preds[0].name;
        struct dspy_error e;
        dspy_error_clear(&e);
        s->start_ns = dspy_clock_ns();
        dspy_status rc = dspy__module_call_async_in(b->prog->preds[0].module, b->lms[s->lm],
                                                    b->groups[s->lm], s->inputs, b->o->cfg,
                                                    record_done, s, &e);
        if (!rc)
            return; /* record_done() will run, perhaps already ran */
        s->status = rc;
        if (name)
            dspy__err_prefix(&e, "predictor %s", name);
        keep_error(s, &e);
    }
    pthread_mutex_lock(&b->mu);
    b->in_flight--;
    mark_done_locked(b, s);
    if (b->feeder_waits)
        pthread_cond_signal(&b->space);
    pthread_mutex_unlock(&b->mu);
}

/* The calling thread pulls records ahead (up to n not yet started, within the window),
 * starts them while fewer than n are in flight (completions on the loop thread start
 * them too), delivers what is done in order, and sleeps only when it can do none of it. */
static void run_on_loop(struct batch *b, size_t n)
{
    pthread_mutex_lock(&b->mu);
    for (;;) {
        check_cancel_locked(b);
        emit_locked(b);
        bool stopped = atomic_load(&b->stop);
        if (b->next_start < b->pulled && (stopped || b->in_flight < n)) {
            size_t idx = claim_locked(b);
            pthread_mutex_unlock(&b->mu);
            start_slot(b, idx);
            pthread_mutex_lock(&b->mu);
            continue;
        }
        bool more = !b->source_done && !stopped;
        if (more && b->pulled - b->next_start < n && b->pulled - b->head < b->window) {
            size_t idx;
            pthread_mutex_unlock(&b->mu);
            pull(b, &idx, true);
            pthread_mutex_lock(&b->mu);
            continue;
        }
        if (!more && !b->in_flight && b->head == b->pulled && b->next_start == b->pulled)
            break;
        b->feeder_waits = true;
        wait_space(b);
        b->feeder_waits = false;
    }
    pthread_mutex_unlock(&b->mu);
}

dspy_status dspy_program_batch_stream(dspy_program *p, dspy_lm *lm,
                                      const struct dspy_batch_options *opts,
                                      dspy_batch_source_fn source, dspy_batch_sink_fn sink,
                                      void *userdata, struct dspy_batch_stats *stats,
                                      struct dspy_error *err)
{
    static const struct dspy_batch_options defaults = DSPY_BATCH_OPTIONS_INIT;
    struct dspy_lm_stats before, after;
    struct batch b;
    dspy_status rc = DSPY_OK;
    if (stats)
        memset(stats, 0, sizeof(*stats));
    if (!p || !lm || !source || !sink)
        return dspy__err(err, DSPY_EINVAL,
                         "dspy_program_batch: program, LM, source and sink "
                         "are required");
    memset(&b, 0, sizeof(b));
    b.o = opts ? opts : &defaults;
    if (b.o->nlms > DSPY_BATCH_MAX_LMS || (b.o->nlms && !b.o->lms))
        return dspy__err(err, DSPY_EINVAL, "dspy_program_batch: at most %d more LMs (%zu given)",
                         DSPY_BATCH_MAX_LMS, b.o->nlms);
    for (size_t i = 0; i < b.o->nlms; i++)
        if (!b.o->lms[i])
            return dspy__err(err, DSPY_EINVAL, "dspy_program_batch: LM %zu is NULL", i + 1);
    size_t workers = b.o->concurrency ? b.o->concurrency : 16;
    bool on_loop = runs_on_loop(p, lm, b.o);
    if (!on_loop && workers > DSPY_BATCH_MAX_WORKERS)
        workers = DSPY_BATCH_MAX_WORKERS;
    b.prog = p;
    b.lm = lm;
    b.caller = pthread_self();
    b.source = source;
    b.sink = sink;
    b.ud = userdata;
    b.window = workers * BATCH_WINDOW_PER_WORKER;
    b.prefetch = !on_loop && dspy__lm_cache(lm) != NULL && !b.o->lookup_each;
    if (!(b.slots = dspy_calloc(b.window, sizeof(*b.slots))))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    b.lms[0] = lm;
    for (size_t i = 0; i < b.o->nlms; i++)
        b.lms[i + 1] = b.o->lms[i];
    for (size_t i = 0; i <= b.o->nlms; i++)
        if (dspy__lm_group_new(b.lms[i], &b.groups[i])) {
            for (size_t k = 0; k < i; k++)
                dspy__lm_group_free(b.groups[k]);
            rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
            goto free_slots;
        }
    b.group = b.groups[0];
    pthread_mutex_init(&b.src_mu, NULL);
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.space, NULL);
    atomic_init(&b.stop, false);
    dspy_lm_get_stats(lm, &before);
    b.start_ns = dspy_clock_ns();
    if (on_loop)
        run_on_loop(&b, workers);
    else
        b.st.threads = run_pool(&b, workers);
    if (!on_loop && !b.st.threads)
        rc = dspy__err(err, DSPY_ENOMEM, "cannot start the batch's worker threads");
    else if (atomic_load(&b.stop))
        rc = b.stop_rc == DSPY_EIO
                 ? dspy__err(err, DSPY_EIO, "the batch stopped: its input or output failed")
                 : dspy__err(err, DSPY_ECANCELED,
                             "the batch was cancelled after %zu records "
                             "(%zu failed)",
                             b.st.records, b.st.failed);
    dspy_lm_get_stats(lm, &after);
    b.st.wall_ns = dspy_clock_ns() - b.start_ns;
    b.st.retries = after.retries - before.retries;
    b.st.ratelimit_waits = after.ratelimit_waits - before.ratelimit_waits;
    b.st.rejected_busy = after.rejected_busy - before.rejected_busy;
    if (stats)
        *stats = b.st;
    pthread_cond_destroy(&b.space);
    pthread_mutex_destroy(&b.mu);
    pthread_mutex_destroy(&b.src_mu);
    for (size_t i = 0; i <= b.o->nlms; i++)
        dspy__lm_group_free(b.groups[i]);
free_slots:
    for (size_t i = 0; i < b.window; i++)
        dspy_free(b.slots[i].error); /* every record was delivered: NULL */
    dspy_free(b.slots);
    return rc;
}

/* ---- over an array -------------------------------------------------------------------- */

struct array_batch {
    const json_t *inputs;
    size_t next;
    struct dspy_batch_result *results;
};

static int array_source(void *ud, struct dspy_batch_item *item)
{
    struct array_batch *a = ud;
    if (a->next >= json_array_size(a->inputs))
        return 0;
    size_t i = a->next++;
    json_t *rec = json_array_get(a->inputs, i);
    if (json_is_object(rec))
        item->inputs = json_incref(rec);
    else
        dspy__err(&item->error, DSPY_EINVAL, "record %zu is not a JSON object of input fields", i);
    return 1;
}

static int array_sink(void *ud, size_t index, struct dspy_batch_item *item,
                      struct dspy_batch_result *r)
{
    struct array_batch *a = ud;
    (void)item;
    a->results[index] = *r;
    r->outputs = NULL; /* taken */
    return 0;
}

dspy_status dspy_program_batch(dspy_program *p, dspy_lm *lm, const json_t *inputs,
                               const struct dspy_batch_options *opts,
                               struct dspy_batch_result *results, struct dspy_batch_stats *stats,
                               struct dspy_error *err)
{
    if (!json_is_array(inputs) || (json_array_size(inputs) && !results))
        return dspy__err(err, DSPY_EINVAL,
                         "dspy_program_batch: an inputs array and a results "
                         "array are required");
    size_t n = json_array_size(inputs);
    struct array_batch a = { inputs, 0, results };
    for (size_t i = 0; i < n; i++) {
        memset(&results[i], 0, sizeof(results[i]));
        results[i].status = dspy__err(&results[i].error, DSPY_ECANCELED,
                                      "not run: the batch was stopped");
    }
    struct dspy_batch_options o = opts ? *opts : (struct dspy_batch_options)DSPY_BATCH_OPTIONS_INIT;
    if (!o.total)
        o.total = n;
    return dspy_program_batch_stream(p, lm, &o, array_source, array_sink, &a, stats, err);
}

void dspy_batch_results_release(struct dspy_batch_result *results, size_t n)
{
    for (size_t i = 0; results && i < n; i++) {
        json_decref(results[i].outputs);
        memset(&results[i], 0, sizeof(results[i]));
    }
}

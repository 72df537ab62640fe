/* Evaluate (optimize layer): a program over a devset on the batch executor, each prediction
 * scored by a metric as it arrives, DSPy's percentage score, max_errors and failure_score;
 * and many candidate programs evaluated at once on threads sharing one LM. */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include <dspyc/optimize.h>

#include "base/clock.h"
#include "base/status.h"
#include "optimize/optimize_int.h"

json_t *dspy__program_trace(dspy_program *p, const json_t *inputs, const json_t *outputs)
{
    json_t *trace = json_array(), *record = json_deep_copy(inputs);
    if (!trace || !record)
        goto fail;
    for (size_t i = 0; i < dspy_program_count(p); i++) {
        const dspy_signature *sig = dspy_module_signature(dspy_program_module(p, i));
        json_t *in = json_object(), *out = json_object();
        json_t *step = json_pack("{s:s, s:o, s:o}", "predictor", dspy_program_state_name(p, i),
                                 "inputs", in, "outputs", out);
        if (!step || json_array_append_new(trace, step))
            goto fail;
        for (size_t f = 0; f < dspy_signature_nfields(sig); f++) {
            const char *name = dspy_signature_field(sig, f)->name;
            bool input = f < dspy_signature_ninputs(sig);
            json_t *v = json_object_get(input ? record : outputs, name);
            if (v)
                json_object_set(input ? in : out, name, v);
            if (!input && v)
                json_object_set(record, name, v);
        }
    }
    json_decref(record);
    return trace;
fail:
    json_decref(trace);
    json_decref(record);
    return NULL;
}

struct eval_run {
    dspy_program *p;
    const json_t *devset;
    const dspy_metric *metric;
    const struct dspy_eval_options *o;
    struct dspy_eval_result *r;
    size_t next;
    uint64_t start_ns;
    bool cancel; /* max_errors reached through a metric failure */
};

static int eval_source(void *ud, struct dspy_batch_item *item)
{
    struct eval_run *e = ud;
    if (e->next >= json_array_size(e->devset))
        return 0;
    item->tag = (void *)(uintptr_t)e->next;
    /* A copy: candidates evaluated at once share example objects, and jansson's reference
     * counts are read without atomics before they change */
    item->inputs = json_deep_copy(json_array_get(e->devset, e->next++));
    if (e->o->route && item->inputs)
        item->lm = e->o->route(e->o->route_userdata, item->inputs);
    if (!item->inputs)
        dspy__err(&item->error, DSPY_ENOMEM, "out of memory");
    return 1;
}

static int eval_sink(void *ud, size_t index, struct dspy_batch_item *item,
                     struct dspy_batch_result *res)
{
    struct eval_run *e = ud;
    struct dspy_eval_item *it = &e->r->items[index];
    const json_t *example = json_array_get(e->devset, index);
    it->lm = item->lm;
    it->info = res->info;
    it->status = res->status;
    it->score = e->o->failure_score;
    if (res->status) {
        it->error = res->error;
    } else {
        json_t *trace = e->o->with_trace ? dspy__program_trace(e->p, example, res->outputs) : NULL;
        double s = 0;
        dspy_error_clear(&it->error);
        it->status = dspy_metric_score(e->metric, example, res->outputs, trace, &s, &it->feedback,
                                       &it->error);
        json_decref(trace);
        if (!it->status) {
            it->score = isfinite(s) ? s : e->o->failure_score;
            if (e->o->keep_predictions) {
                it->prediction = res->outputs;
                res->outputs = NULL;
            }
        }
    }
    struct dspy_eval_result *r = e->r;
    r->n++;
    r->sum += it->score;
    r->lm_calls += (uint64_t)it->info.lm_calls;
    r->cache_hits += (uint64_t)it->info.cache_hits;
    r->usage.prompt_tokens += it->info.usage.prompt_tokens;
    r->usage.completion_tokens += it->info.usage.completion_tokens;
    r->usage.total_tokens += it->info.usage.total_tokens;
    if (it->status && it->status != DSPY_ECANCELED)
        r->errors++;
    if (e->o->max_errors && r->errors >= e->o->max_errors)
        e->cancel = true;
    return 0;
}

static int eval_progress(void *ud, const struct dspy_batch_progress *bp)
{
    struct eval_run *e = ud;
    if (e->o->progress) {
        struct dspy_eval_progress p = { bp->done, bp->total, e->r->errors, e->r->sum,
                                        bp->elapsed_ns };
        if (e->o->progress(e->o->progress_userdata, &p))
            return 1;
    }
    return e->cancel;
}

dspy_status dspy_evaluate(dspy_program *p, dspy_lm *lm, const json_t *devset,
                          const dspy_metric *metric, const struct dspy_eval_options *opts,
                          struct dspy_eval_result *out, struct dspy_error *err)
{
    struct dspy_eval_options defaults = DSPY_EVAL_OPTIONS_INIT;
    const struct dspy_eval_options *o = opts ? opts : &defaults;
    size_t n = json_array_size(devset);
    memset(out, 0, sizeof(*out));
    if (!json_is_array(devset))
        return dspy__err(err, DSPY_EINVAL, "the devset must be a JSON array of examples");
    for (size_t i = 0; i < n; i++)
        if (!json_is_object(json_array_get(devset, i)))
            return dspy__err(err, DSPY_EINVAL, "example %zu is not a JSON object", i + 1);
    if (n && !(out->items = dspy_calloc(n, sizeof(*out->items))))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        out->items[i].status = DSPY_ECANCELED;
        out->items[i].score = o->failure_score;
    }
    struct eval_run e = { p, devset, metric, o, out, 0, dspy__now_ns(), false };
    struct dspy_batch_options bo = DSPY_BATCH_OPTIONS_INIT;
    bo.concurrency = o->concurrency ? o->concurrency : 16;
    bo.total = n;
    bo.cfg = o->cfg;
    bo.max_errors = o->max_errors;
    bo.progress = eval_progress;
    bo.progress_userdata = &e;
    bo.lms = o->lms;
    bo.nlms = o->nlms;
    dspy_status rc = n ? dspy_program_batch_stream(p, lm, &bo, eval_source, eval_sink, &e, NULL,
                                                   err)
                       : DSPY_OK;
    /* Every example counts in the score, cancelled ones with failure_score, as DSPy
     * divides by the devset's length. */
    out->n = n;
    out->sum = 0;
    for (size_t i = 0; i < n; i++)
        out->sum += out->items[i].score;
    out->score = n ? round(10000.0 * out->sum / (double)n) / 100.0 : 0.0;
    out->wall_ns = dspy__now_ns() - e.start_ns;
    if (!rc && e.cancel)
        rc = DSPY_ECANCELED;
    if (rc == DSPY_ECANCELED)
        dspy__err(err, rc, "stopped after %zu failed examples (max_errors %zu)", out->errors,
                  o->max_errors);
    return rc;
}

void dspy_eval_result_release(struct dspy_eval_result *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++) {
        json_decref(r->items[i].prediction);
        dspy_free(r->items[i].feedback);
    }
    dspy_free(r->items);
    memset(r, 0, sizeof(*r));
}

json_t *dspy_eval_result_json(const struct dspy_eval_result *r, const dspy_program *p,
                              const json_t *devset)
{
    json_t *names = dspy_program_inputs(p), *results = json_array();
    json_t *doc = json_pack("{s:f, s:I, s:I, s:f, s:o}", "score", r->score, "n", (json_int_t)r->n,
                            "errors", (json_int_t)r->errors, "sum", r->sum, "results", results);
    if (!names || !doc)
        goto fail;
    for (size_t i = 0; i < r->n; i++) {
        const struct dspy_eval_item *it = &r->items[i];
        const json_t *ex = json_array_get(devset, i);
        json_t *inputs = json_object(), *name;
        size_t k;
        json_array_foreach(names, k, name) {
            json_t *v = json_object_get(ex, json_string_value(name));
            if (v)
                json_object_set(inputs, json_string_value(name), v);
        }
        json_t *rec = json_pack("{s:I, s:o, s:O?, s:f}", "index", (json_int_t)i, "inputs", inputs,
                                "prediction", it->prediction, "metric", it->score);
        if (!rec || json_array_append_new(results, rec))
            goto fail;
        if (it->feedback)
            json_object_set_new(rec, "feedback", json_string(it->feedback));
        if (it->status) {
            json_t *e = json_pack("{s:s, s:s}", "class", dspy_status_name(it->status), "message",
                                  it->error.message);
            if (e && it->error.field[0])
                json_object_set_new(e, "field", json_string(it->error.field));
            json_object_set_new(rec, "error", e);
        }
    }
    json_decref(names);
    return doc;
fail:
    json_decref(names);
    json_decref(doc);
    return NULL;
}

/* ---- many candidates at once ---------------------------------------------------------- */

/* A piece of one job: `count` of its examples from `from`, evaluated alone. */
struct piece {
    size_t job, from;
    json_t *devset; /* the piece's examples (borrowed from the job's) */
    struct dspy_eval_result result;
    dspy_status rc;
    struct dspy_error err;
};

struct tasks {
    void (*fn)(void *ctx, size_t i);
    void *ctx;
    size_t n, next;
    pthread_mutex_t lock;
};

static void *task_worker(void *arg)
{
    struct tasks *t = arg;
    for (;;) {
        pthread_mutex_lock(&t->lock);
        size_t i = t->next < t->n ? t->next++ : t->n;
        pthread_mutex_unlock(&t->lock);
        if (i >= t->n)
            return NULL;
        t->fn(t->ctx, i);
    }
}

void dspy__run_tasks(size_t n, unsigned threads, void (*fn)(void *ctx, size_t i), void *ctx)
{
    struct tasks t = { fn, ctx, n, 0, PTHREAD_MUTEX_INITIALIZER };
    pthread_t tids[64];
    unsigned started = 0;
    if (threads > n)
        threads = (unsigned)n;
    for (; started + 1 < threads && started < 64; started++)
        if (pthread_create(&tids[started], NULL, task_worker, &t))
            break;
    task_worker(&t); /* the calling thread works too; every task runs even if none started */
    for (unsigned i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    pthread_mutex_destroy(&t.lock);
}

struct many {
    struct dspy__eval_job *jobs;
    struct piece *pieces; /* NULL: whole jobs */
    size_t n;
    dspy_lm *lm;
    const dspy_metric *metric;
    struct dspy_eval_options o;
};

static void many_task(void *arg, size_t i)
{
    struct many *m = arg;
    struct piece *pc = m->pieces ? &m->pieces[i] : NULL;
    struct dspy__eval_job *j = &m->jobs[pc ? pc->job : i];
    struct dspy_eval_options o = m->o;
    o.cfg = j->cfg ? j->cfg : m->o.cfg;
    if (pc) {
        dspy_error_clear(&pc->err);
        pc->rc = dspy_evaluate(j->program, m->lm, pc->devset, m->metric, &o, &pc->result, &pc->err);
    } else {
        dspy_error_clear(&j->err);
        j->rc = dspy_evaluate(j->program, m->lm, j->devset, m->metric, &o, &j->result, &j->err);
    }
}

/* Split every job into pieces of `size` examples; NULL when out of memory. */
static struct piece *make_pieces(struct dspy__eval_job *jobs, size_t n, size_t size, size_t *count)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += (json_array_size(jobs[i].devset) + size - 1) / size;
    struct piece *ps = dspy_calloc(total + 1, sizeof(*ps));
    size_t k = 0;
    for (size_t i = 0; ps && i < n; i++)
        for (size_t from = 0; from < json_array_size(jobs[i].devset); from += size, k++) {
            ps[k].job = i;
            ps[k].from = from;
            ps[k].devset = json_array();
            for (size_t e = from; e < from + size && e < json_array_size(jobs[i].devset); e++)
                json_array_append(ps[k].devset, json_array_get(jobs[i].devset, e));
            if (!ps[k].devset) {
                for (size_t q = 0; q < k; q++)
                    json_decref(ps[q].devset);
                dspy_free(ps);
                return NULL;
            }
        }
    *count = k;
    return ps;
}

/* Each job's result from its pieces, as dspy_evaluate gives it over the whole devset. */
static void join_pieces(struct dspy__eval_job *jobs, size_t n, struct piece *ps, size_t np)
{
    for (size_t i = 0; i < n; i++) {
        struct dspy_eval_result *r = &jobs[i].result;
        size_t len = json_array_size(jobs[i].devset);
        memset(r, 0, sizeof(*r));
        jobs[i].rc = DSPY_OK;
        dspy_error_clear(&jobs[i].err);
        if (len && !(r->items = dspy_calloc(len, sizeof(*r->items))))
            jobs[i].rc = DSPY_ENOMEM;
        r->n = len;
    }
    for (size_t k = 0; k < np; k++) {
        struct piece *pc = &ps[k];
        struct dspy__eval_job *j = &jobs[pc->job];
        struct dspy_eval_result *r = &j->result, *pr = &pc->result;
        if (pc->rc && !j->rc) {
            j->rc = pc->rc;
            j->err = pc->err;
        }
        for (size_t e = 0; r->items && e < pr->n; e++) {
            r->items[pc->from + e] = pr->items[e];
            memset(&pr->items[e], 0, sizeof(pr->items[e]));
        }
        r->errors += pr->errors;
        r->lm_calls += pr->lm_calls;
        r->cache_hits += pr->cache_hits;
        r->usage.prompt_tokens += pr->usage.prompt_tokens;
        r->usage.completion_tokens += pr->usage.completion_tokens;
        r->usage.total_tokens += pr->usage.total_tokens;
        if (pr->wall_ns > r->wall_ns)
            r->wall_ns = pr->wall_ns;
        dspy_eval_result_release(pr);
        json_decref(pc->devset);
    }
    for (size_t i = 0; i < n; i++) { /* dspy_evaluate's sum and score, in devset order */
        struct dspy_eval_result *r = &jobs[i].result;
        r->sum = 0;
        for (size_t e = 0; r->items && e < r->n; e++)
            r->sum += r->items[e].score;
        r->score = r->n ? round(10000.0 * r->sum / (double)r->n) / 100.0 : 0.0;
        if (!r->items)
            r->n = 0;
    }
}

void dspy__evaluate_many(struct dspy__eval_job *jobs, size_t n, dspy_lm *lm,
                         const dspy_metric *metric, const struct dspy_eval_options *o,
                         unsigned concurrency)
{
    if (!concurrency)
        concurrency = 16;
    struct many m = { jobs, NULL, n, lm, metric, *o };
    unsigned threads;
    size_t npieces = 0;
    /* Several jobs without a progress callback or an error limit (which count over a whole
     * job) are cut into pieces of `per` examples that threads take in turn, each with `per`
     * calls in flight: every slot of --concurrency stays busy until the last piece, however
     * unequal the jobs (a job answered from the cache, a short devset). */
    unsigned per = (concurrency + 63) / 64;
    if (!o->progress && !o->max_errors && n > 1 && concurrency > 1 &&
        (m.pieces = make_pieces(jobs, n, per, &npieces))) {
        m.n = npieces;
        threads = concurrency / per;
        if (threads > npieces)
            threads = (unsigned)npieces;
        m.o.concurrency = per;
    } else {
        threads = n < 64 ? (unsigned)n : 64;
        if (threads > concurrency)
            threads = concurrency;
        m.o.concurrency = threads ? (concurrency + threads - 1) / threads : 1;
    }
    dspy__run_tasks(m.n, threads, many_task, &m);
    if (m.pieces) {
        join_pieces(jobs, n, m.pieces, npieces);
        dspy_free(m.pieces);
    }
}

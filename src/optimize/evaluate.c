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

struct many {
    struct dspy__eval_job *jobs;
    size_t n, next;
    dspy_lm *lm;
    const dspy_metric *metric;
    struct dspy_eval_options o;
    pthread_mutex_t lock;
};

static void *many_worker(void *arg)
{
    struct many *m = arg;
    for (;;) {
        pthread_mutex_lock(&m->lock);
        size_t i = m->next < m->n ? m->next++ : m->n;
        pthread_mutex_unlock(&m->lock);
        if (i >= m->n)
            return NULL;
        struct dspy__eval_job *j = &m->jobs[i];
        struct dspy_eval_options o = m->o;
        o.cfg = j->cfg ? j->cfg : m->o.cfg;
        dspy_error_clear(&j->err);
        j->rc = dspy_evaluate(j->program, m->lm, j->devset, m->metric, &o, &j->result, &j->err);
    }
}

void dspy__evaluate_many(struct dspy__eval_job *jobs, size_t n, dspy_lm *lm,
                         const dspy_metric *metric, const struct dspy_eval_options *o,
                         unsigned concurrency)
{
    unsigned threads = n < 64 ? (unsigned)n : 64;
    if (!concurrency)
        concurrency = 16;
    if (threads > concurrency)
        threads = concurrency;
    struct many m = { jobs, n, 0, lm, metric, *o, PTHREAD_MUTEX_INITIALIZER };
    m.o.concurrency = threads ? (concurrency + threads - 1) / threads : 1;
    pthread_t tids[64];
    unsigned started = 0;
    for (; started + 1 < threads; started++)
        if (pthread_create(&tids[started], NULL, many_worker, &m))
            break;
    many_worker(&m); /* the calling thread works too; all jobs run even if none started */
    for (unsigned i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    pthread_mutex_destroy(&m.lock);
}

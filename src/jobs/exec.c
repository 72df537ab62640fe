/* Running one job (jobs layer): a checked spec becomes a program, datasets, a metric and the
 * optimizer's options, run through the optimize layer's C API (dspy_optimize, dspy_evaluate)
 * or the batch executor, with the cycle timer's progress and cancellation. */
#include <math.h>
#include <string.h>
#include <time.h>

#include <dspyc/module.h>
#include <dspyc/optimize.h>
#include <dspyc/program.h>
#include <dspyc/signature.h>

#include "base/status.h"
#include "jobs/jobs_int.h"

struct exec {
    const struct dspy_job_exec_options *o;
    dspy_cycle *cycle;
    uint64_t lm_calls;
    double best;
};

static long geti(const json_t *spec, const char *k, long dflt)
{
    const json_t *v = json_object_get(spec, k);
    return json_is_integer(v) ? (long)json_integer_value(v) : dflt;
}

static double getd(const json_t *spec, const char *k, double dflt)
{
    const json_t *v = json_object_get(spec, k);
    return json_is_number(v) ? json_number_value(v) : dflt;
}

static const char *gets(const json_t *spec, const char *k)
{
    return json_string_value(json_object_get(spec, k));
}

static bool cancelled(struct exec *x)
{
    return x->o->cancelled && x->o->cancelled(x->o->userdata);
}

/* The cycle's clock: real time, until the job is cancelled; then far past any target, so
 * the optimizer (which stops at the target) ends after its current trial. */
static uint64_t cycle_clock(void *ud)
{
    struct exec *x = ud;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    return cancelled(x) ? now + (uint64_t)4e18 : now;
}

static void report_progress(struct exec *x, uint64_t done, uint64_t planned)
{
    if (!x->o->progress)
        return;
    struct dspy_job_progress p = { 0 };
    if (x->cycle) {
        struct dspy_cycle_status st;
        dspy_cycle_status(x->cycle, &st);
        p.done = st.iterations;
        p.planned = st.planned;
        p.fraction = st.progress;
        p.iterations_per_s = st.iterations_per_s;
        p.eta_s = st.eta_s;
        p.warned = st.warned;
        p.exceeded = st.exceeded && !cancelled(x);
    } else {
        p.done = done;
        p.planned = planned;
        p.fraction = planned ? (double)done / (double)planned : 0;
        p.eta_s = -1;
    }
    p.best = x->best;
    p.lm_calls = x->lm_calls;
    x->o->progress(x->o->userdata, &p);
}

static void on_event(void *ud, const struct dspy_optimize_event *e)
{
    struct exec *x = ud;
    x->lm_calls = e->lm_calls;
    if (!isnan(e->best))
        x->best = e->best;
    report_progress(x, 0, 0);
}

static int eval_progress(void *ud, const struct dspy_eval_progress *p)
{
    struct exec *x = ud;
    x->best = p->done ? 100.0 * p->score_sum / (double)p->done : NAN;
    report_progress(x, p->done, p->total);
    return cancelled(x);
}

static int batch_progress(void *ud, const struct dspy_batch_progress *p)
{
    struct exec *x = ud;
    report_progress(x, p->done, p->total);
    return cancelled(x);
}

static dspy_program *build_program(const json_t *spec, struct dspy_error *err)
{
    dspy_program *p = NULL;
    const json_t *prog = json_object_get(spec, "program");
    if (json_is_string(prog)) {
        if (dspy_program_load(json_string_value(prog), &p, err)) {
            dspy__err_field(err, "program");
            return NULL;
        }
    } else if (prog) {
        if (dspy_program_from_json(prog, "program", &p, err)) {
            dspy__err_field(err, "program");
            return NULL;
        }
    } else {
        dspy_signature *sig = NULL;
        if (dspy_signature_parse(gets(spec, "signature"), NULL, &sig, err)) {
            dspy__err_prefix(err, "signature");
            dspy__err_field(err, "signature");
            return NULL;
        }
        const char *mod = gets(spec, "module");
        int kind = mod ? dspy_module_kind_from_name(mod) : DSPY_MODULE_PREDICT;
        dspy_module *m = dspy_module_new((enum dspy_module_kind)kind, sig, DSPY_ADAPTER_CHAT);
        dspy_signature_free(sig);
        if (!m || !(p = dspy_program_single(m))) {
            dspy_module_free(m);
            dspy__err(err, DSPY_ENOMEM, "out of memory");
            return NULL;
        }
    }
    const json_t *state = json_object_get(spec, "state");
    dspy_status rc = DSPY_OK;
    if (json_is_string(state))
        rc = dspy_program_load_state(p, json_string_value(state), err);
    else if (state)
        rc = dspy_program_apply_state(p, state, err);
    if (rc) {
        dspy__err_field(err, "state");
        dspy_program_free(p);
        return NULL;
    }
    return p;
}

static dspy_status run_optimize(struct exec *x, const json_t *spec, dspy_program *p, dspy_lm *lm,
                                json_t **result, struct dspy_error *err)
{
    dspy_status rc;
    json_t *train = NULL, *val = NULL, *report = NULL;
    dspy_metric *metric = NULL;
    dspy_lm *plm = NULL, *rlm = NULL;
    struct dspy_optimize_options o = DSPY_OPTIMIZE_OPTIONS_INIT;
    struct dspy_cycle_options co = DSPY_CYCLE_OPTIONS_INIT;
    co.target_s = getd(spec, "target_duration", co.target_s);
    co.warn_at = getd(spec, "warn_at", co.warn_at);
    co.stop_at_target = true;
    co.clock = cycle_clock;
    co.clock_userdata = x;
    if (!(x->cycle = dspy_cycle_new(&co)))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    if (!(train = dspy__job_dataset(spec, "trainset", err))) {
        rc = err && err->code ? err->code : DSPY_EINVAL;
        goto out;
    }
    if (json_object_get(spec, "valset") && !(val = dspy__job_dataset(spec, "valset", err))) {
        rc = err && err->code ? err->code : DSPY_EINVAL;
        goto out;
    }
    if ((rc = dspy_metric_parse(gets(spec, "metric"), &metric, err)))
        goto out;
    o.optimizer = (enum dspy_optimizer)dspy_optimizer_from_name(gets(spec, "optimizer"));
    o.auto_budget = gets(spec, "auto");
    o.num_trials = geti(spec, "num_trials", o.num_trials);
    o.num_candidates = geti(spec, "num_candidates", o.num_candidates);
    o.max_bootstrapped_demos = geti(spec, "max_bootstrapped_demos", o.max_bootstrapped_demos);
    o.max_labeled_demos = geti(spec, "max_labeled_demos", o.max_labeled_demos);
    o.max_rounds = geti(spec, "max_rounds", o.max_rounds);
    o.max_metric_calls = geti(spec, "max_metric_calls", o.max_metric_calls);
    o.max_full_evals = geti(spec, "max_full_evals", o.max_full_evals);
    o.seed = (uint64_t)geti(spec, "seed", o.optimizer == DSPY_OPT_MIPRO ? 9 : 0);
    o.concurrency = (unsigned)geti(spec, "concurrency", o.concurrency);
    o.parallel_trials = (unsigned)geti(spec, "parallel_trials", o.parallel_trials);
    o.max_errors = (size_t)geti(spec, "max_errors", 0);
    o.max_cost_usd = getd(spec, "max_cost", 0);
    o.max_tokens = geti(spec, "max_tokens", 0);
    o.price_in_per_mtok = getd(spec, "price_in", 0);
    o.price_out_per_mtok = getd(spec, "price_out", 0);
    o.population = geti(spec, "population", o.population);
    o.generations = geti(spec, "generations", o.generations);
    o.mutation_rate = getd(spec, "mutation_rate", o.mutation_rate);
    o.checkpoint_dir = x->o->checkpoint_dir;
    o.task_lm = lm;
    if (gets(spec, "prompt_model") &&
        !(plm = x->o->lm(x->o->lm_userdata, gets(spec, "prompt_model")))) {
        rc = dspy__err(err, DSPY_EIO, "cannot open the LM for prompt_model");
        goto out;
    }
    if (gets(spec, "reflection_model") &&
        !(rlm = x->o->lm(x->o->lm_userdata, gets(spec, "reflection_model")))) {
        rc = dspy__err(err, DSPY_EIO, "cannot open the LM for reflection_model");
        goto out;
    }
    o.prompt_lm = plm;
    o.reflection_lm = rlm;
    o.cycle = x->cycle;
    o.on_event = on_event;
    o.event_userdata = x;
    rc = dspy_optimize(p, train, val, metric, &o, &report, err);
    if (cancelled(x)) {
        rc = dspy__err(err, DSPY_ECANCELED, "cancelled");
        goto out;
    }
    if (rc)
        goto out;
    json_t *best = json_object_get(json_object_get(report, "best"), "score");
    *result = json_pack("{s:o, s:O, s:O}", "state", dspy_program_dump_state(p), "report", report,
                        "best_score", best ? best : json_null());
    if (!*result)
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
out:
    json_decref(report);
    json_decref(train);
    json_decref(val);
    dspy_metric_free(metric);
    return rc;
}

static dspy_status run_eval(struct exec *x, const json_t *spec, dspy_program *p, dspy_lm *lm,
                            json_t **result, struct dspy_error *err)
{
    dspy_status rc;
    dspy_metric *metric = NULL;
    json_t *dev = dspy__job_dataset(spec, "devset", err);
    if (!dev)
        return err && err->code ? err->code : DSPY_EINVAL;
    if ((rc = dspy_metric_parse(gets(spec, "metric"), &metric, err)))
        goto out;
    struct dspy_eval_options eo = DSPY_EVAL_OPTIONS_INIT;
    eo.concurrency = (unsigned)geti(spec, "concurrency", 16);
    eo.max_errors = (size_t)geti(spec, "max_errors", 0);
    eo.failure_score = getd(spec, "failure_score", 0);
    eo.keep_predictions = false;
    eo.progress = eval_progress;
    eo.progress_userdata = x;
    struct dspy_eval_result r;
    memset(&r, 0, sizeof(r));
    rc = dspy_evaluate(p, lm, dev, metric, &eo, &r, err);
    if (cancelled(x)) {
        dspy_eval_result_release(&r);
        rc = dspy__err(err, DSPY_ECANCELED, "cancelled");
        goto out;
    }
    if (!rc) {
        *result = json_pack("{s:f, s:I, s:I, s:I}", "score", r.score, "n", (json_int_t)r.n,
                            "errors", (json_int_t)r.errors, "lm_calls", (json_int_t)r.lm_calls);
        x->best = r.score;
    }
    dspy_eval_result_release(&r);
out:
    dspy_metric_free(metric);
    json_decref(dev);
    return rc;
}

static dspy_status run_batch(struct exec *x, const json_t *spec, dspy_program *p, dspy_lm *lm,
                             json_t **result, struct dspy_error *err)
{
    json_t *in = dspy__job_dataset(spec, "input", err);
    if (!in)
        return err && err->code ? err->code : DSPY_EINVAL;
    size_t n = json_array_size(in);
    struct dspy_batch_result *res = dspy_calloc(n, sizeof(*res));
    if (!res) {
        json_decref(in);
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    }
    struct dspy_batch_options bo = { 0 };
    bo.concurrency = (unsigned)geti(spec, "concurrency", 16);
    bo.max_errors = (size_t)geti(spec, "max_errors", 0);
    bo.total = n;
    bo.progress = batch_progress;
    bo.progress_userdata = x;
    dspy_status rc = dspy_program_batch(p, lm, in, &bo, res, NULL, err);
    if (cancelled(x))
        rc = dspy__err(err, DSPY_ECANCELED, "cancelled");
    if (!rc) {
        json_t *outs = json_array();
        size_t errors = 0;
        for (size_t i = 0; i < n; i++) {
            if (res[i].status) {
                errors++;
                json_array_append_new(outs, json_pack("{s:s}", "error", res[i].error.message));
            } else {
                json_array_append(outs, res[i].outputs);
            }
        }
        *result = json_pack("{s:o, s:I}", "outputs", outs, "errors", (json_int_t)errors);
    }
    dspy_batch_results_release(res, n);
    dspy_free(res);
    json_decref(in);
    return rc;
}

static dspy_status run_noop(struct exec *x, const json_t *spec, json_t **result,
                            struct dspy_error *err)
{
    long ms = geti(spec, "sleep_ms", 0);
    for (long t = 0; t < ms; t += 10) {
        if (cancelled(x))
            return dspy__err(err, DSPY_ECANCELED, "cancelled");
        struct timespec ts = { 0, (ms - t < 10 ? ms - t : 10) * 1000000L };
        nanosleep(&ts, NULL);
    }
    if (gets(spec, "fail"))
        return dspy__err(err, DSPY_EINVAL, "%s", gets(spec, "fail"));
    *result = json_pack("{s:b}", "ok", 1);
    return *result ? DSPY_OK : dspy__err(err, DSPY_ENOMEM, "out of memory");
}

dspy_status dspy_job_execute(const json_t *spec, const struct dspy_job_exec_options *o,
                             json_t **result, struct dspy_error *err)
{
    *result = NULL;
    struct exec x = { o, NULL, 0, NAN };
    int kind = dspy__job_kind(spec);
    if (kind == 3)
        return run_noop(&x, spec, result, err);
    if (!o->lm)
        return dspy__err(err, DSPY_EINVAL, "no LM to run the job on");
    dspy_program *p = build_program(spec, err);
    if (!p)
        return err && err->code ? err->code : DSPY_EINVAL;
    dspy_status rc;
    dspy_lm *lm = o->lm(o->lm_userdata, gets(spec, "model"));
    if (!lm) {
        rc = dspy__err(err, DSPY_EIO, "cannot open the LM for model '%s'",
                       gets(spec, "model") ? gets(spec, "model") : "(default)");
        goto out;
    }
    if (kind == 0)
        rc = run_optimize(&x, spec, p, lm, result, err);
    else if (kind == 1)
        rc = run_eval(&x, spec, p, lm, result, err);
    else
        rc = run_batch(&x, spec, p, lm, result, err);
out:
    dspy_cycle_free(x.cycle);
    dspy_program_free(p);
    return rc;
}

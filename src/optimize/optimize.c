/* The optimizer driver (optimize layer): checks inputs before any LM call, plans and
 * refuses budgets, runs the chosen optimizer over candidates evaluated concurrently, keeps
 * the trial log and LM budget, writes checkpoints atomically and builds the report. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/status.h"
#include "optimize/optimize_run.h"

/* 3: the draws DSPy makes with random.Random follow Python's generator (checkpoints of
 * version 2 drew otherwise and cannot be resumed) */
#define CHECKPOINT_VERSION 3

int dspy_optimizer_from_name(const char *name)
{
    static const char *const names[] = { "labeled", "bootstrap", "random-search",
                                         "mipro",   "gepa",      "genetic" };
    for (int i = 0; i < 6; i++)
        if (!strcmp(name, names[i]))
            return i;
    if (!strcmp(name, "random_search") || !strcmp(name, "miprov2"))
        return !strcmp(name, "miprov2") ? DSPY_OPT_MIPRO : DSPY_OPT_RANDOM_SEARCH;
    return -1;
}

const char *dspy_optimizer_name(enum dspy_optimizer o)
{
    switch (o) {
    case DSPY_OPT_LABELED: return "labeled";
    case DSPY_OPT_BOOTSTRAP: return "bootstrap";
    case DSPY_OPT_RANDOM_SEARCH: return "random-search";
    case DSPY_OPT_MIPRO: return "mipro";
    case DSPY_OPT_GEPA: return "gepa";
    case DSPY_OPT_GENETIC: return "genetic";
    }
    return "?";
}

/* ---- candidates ----------------------------------------------------------------------- */

json_t *opt_candidate_of(dspy_program *p)
{
    json_t *ins = json_array(), *demos = json_array();
    json_t *c = json_pack("{s:o, s:o}", "instructions", ins, "demos", demos);
    if (!c)
        return NULL;
    for (size_t i = 0; i < dspy_program_count(p); i++) {
        dspy_module *m = dspy_program_module(p, i);
        json_array_append_new(ins,
                              json_string(dspy_signature_instructions(dspy_module_signature(m))));
        json_array_append_new(demos, json_deep_copy(dspy_module_demos(m)));
    }
    return c;
}

dspy_program *opt_build(struct opt_run *r, const json_t *cand)
{
    dspy_program *p = dspy_program_copy(r->student);
    if (!p)
        return NULL;
    const json_t *ins = json_object_get(cand, "instructions");
    const json_t *demos = json_object_get(cand, "demos");
    for (size_t i = 0; i < dspy_program_count(p); i++) {
        dspy_module *m = dspy_program_module(p, i);
        const json_t *t = json_array_get(ins, i), *d = json_array_get(demos, i);
        if ((json_is_string(t) && dspy_module_set_instructions(m, json_string_value(t))) ||
            (json_is_array(d) && dspy_module_set_demos(m, d))) {
            dspy_program_free(p);
            return NULL;
        }
    }
    return p;
}

/* ---- accounting and budgets ----------------------------------------------------------- */

/* The price of the task model: units read back from a checkpoint and the plan use it. */
static bool task_price(const struct opt_run *r, struct dspy_price *p)
{
    const struct dspy_optimize_options *o = r->o;
    if (o->price_in_per_mtok > 0 || o->price_out_per_mtok > 0) {
        p->input_per_1k = o->price_in_per_mtok / 1000.0;
        p->output_per_1k = o->price_out_per_mtok / 1000.0;
        return true;
    }
    return dspy_price_lookup(o->prices, dspy_lm_model(o->task_lm), p);
}

static void update_cost(struct opt_run *r)
{
    struct dspy_cost_totals t;
    dspy_cost_tally_totals(r->cost, &t);
    r->cost_usd = t.usd + r->restored_usd;
}

static void account_info(struct opt_run *r, const dspy_lm *lm, const struct dspy_call_info *info)
{
    if (info->lm_calls && r->cost &&
        !dspy_cost_tally_add(r->cost, dspy_lm_model(lm), info->lm_calls, info->cache_hits,
                             &info->usage, &info->cached_usage))
        update_cost(r);
    r->lm_calls += (uint64_t)info->lm_calls;
    r->cache_hits += (uint64_t)info->cache_hits;
    long pin = info->usage.prompt_tokens - info->cached_usage.prompt_tokens;
    long pout = info->usage.completion_tokens - info->cached_usage.completion_tokens;
    r->prompt_tokens += (uint64_t)(pin > 0 ? pin : 0);
    r->completion_tokens += (uint64_t)(pout > 0 ? pout : 0);
}

void opt_account(struct opt_run *r, const dspy_lm *lm, const struct dspy_call_info *info,
                 dspy_status rc)
{
    account_info(r, lm, info);
    if (rc)
        r->errors++;
}

bool opt_check_budget(struct opt_run *r)
{
    const struct dspy_optimize_options *o = r->o;
    if (r->stopped)
        return true;
    if (o->max_cost_usd > 0 && r->cost_usd >= o->max_cost_usd)
        snprintf(r->stop_reason, sizeof(r->stop_reason), "max-cost: spent $%.4f of $%.4f",
                 r->cost_usd, o->max_cost_usd);
    else if (o->max_tokens > 0 &&
             r->prompt_tokens + r->completion_tokens >= (uint64_t)o->max_tokens)
        snprintf(r->stop_reason, sizeof(r->stop_reason), "max-tokens: used %llu of %ld",
                 (unsigned long long)(r->prompt_tokens + r->completion_tokens), o->max_tokens);
    else if (o->max_errors && r->errors > o->max_errors)
        snprintf(r->stop_reason, sizeof(r->stop_reason),
                 "max-errors: %llu failed program runs (more than %zu)",
                 (unsigned long long)r->errors, o->max_errors);
    else if (o->optimizer != DSPY_OPT_GEPA && o->max_metric_calls > 0 &&
             r->metric_calls >= (uint64_t)o->max_metric_calls)
        snprintf(r->stop_reason, sizeof(r->stop_reason),
                 "max-metric-calls: %llu examples scored (limit %ld)",
                 (unsigned long long)r->metric_calls, o->max_metric_calls);
    else if (o->cycle && json_array_size(r->trials) && dspy_cycle_should_stop(o->cycle))
        snprintf(r->stop_reason, sizeof(r->stop_reason),
                 "stop-at-target: the target duration has passed");
    else
        return false;
    r->stopped = true;
    return true;
}

dspy_status opt_eval(struct opt_run *r, json_t *const *cands, const json_t *const *devsets,
                     size_t n, const struct dspy_call_config *cfg, bool trace, double *scores,
                     json_t **per_example, json_t **predictions)
{
    return opt_eval_feedback(r, cands, devsets, n, cfg, trace, scores, per_example, predictions,
                             NULL);
}

static dspy_status eval_impl(struct opt_run *r, json_t *const *cands, const json_t *const *devsets,
                             size_t n, const struct dspy_call_config *cfg, bool trace,
                             double *scores, json_t **per_example, json_t **predictions,
                             json_t **feedbacks, bool ahead);

dspy_status opt_eval_feedback(struct opt_run *r, json_t *const *cands, const json_t *const *devsets,
                              size_t n, const struct dspy_call_config *cfg, bool trace,
                              double *scores, json_t **per_example, json_t **predictions,
                              json_t **feedbacks)
{
    return eval_impl(r, cands, devsets, n, cfg, trace, scores, per_example, predictions, feedbacks,
                     false);
}

dspy_status opt_eval_ahead(struct opt_run *r, json_t *const *cands, const json_t *const *devsets,
                           size_t n, bool trace, double *scores, json_t **per_example,
                           json_t **predictions, json_t **feedbacks)
{
    return eval_impl(r, cands, devsets, n, NULL, trace, scores, per_example, predictions, feedbacks,
                     true);
}

static dspy_status eval_impl(struct opt_run *r, json_t *const *cands, const json_t *const *devsets,
                             size_t n, const struct dspy_call_config *cfg, bool trace,
                             double *scores, json_t **per_example, json_t **predictions,
                             json_t **feedbacks, bool ahead)
{
    struct dspy__eval_job *jobs = dspy_calloc(n ? n : 1, sizeof(*jobs));
    dspy_status rc = DSPY_OK;
    if (!jobs)
        return DSPY_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        jobs[i].devset = devsets[i];
        jobs[i].cfg = cfg;
        if (!(jobs[i].program = opt_build(r, cands[i]))) {
            rc = DSPY_ENOMEM;
            goto out;
        }
    }
    struct dspy_eval_options eo = DSPY_EVAL_OPTIONS_INIT;
    eo.keep_predictions = predictions != NULL;
    eo.with_trace = trace;
    unsigned conc = r->o->concurrency ? r->o->concurrency : 16;
    if (r->reserved && conc > r->reserved)
        conc -= r->reserved;
    dspy__evaluate_many(jobs, n, r->o->task_lm, r->metric, &eo, conc);
    for (size_t i = 0; i < n; i++) {
        struct dspy_eval_result *res = &jobs[i].result;
        scores[i] = res->score;
        if (!ahead) /* work done ahead is scored again, from the cache, when it is due */
            r->metric_calls += res->n;
        if (per_example)
            per_example[i] = json_array();
        if (predictions)
            predictions[i] = json_array();
        if (feedbacks)
            feedbacks[i] = json_array();
        for (size_t k = 0; k < res->n; k++) {
            struct dspy_eval_item *it = &res->items[k];
            account_info(r, r->o->task_lm, &it->info);
            if (!ahead && it->status && it->status != DSPY_ECANCELED)
                r->errors++;
            if (per_example)
                json_array_append_new(per_example[i], json_real(it->score));
            if (feedbacks)
                json_array_append_new(feedbacks[i],
                                      it->feedback ? json_string(it->feedback) : json_null());
            if (predictions) {
                json_array_append_new(predictions[i],
                                      it->prediction ? json_incref(it->prediction) : json_null());
            }
        }
    }
    if (!ahead)
        opt_check_budget(r);
out:
    for (size_t i = 0; i < n; i++) {
        dspy_eval_result_release(&jobs[i].result);
        dspy_program_free(jobs[i].program);
    }
    dspy_free(jobs);
    return rc;
}

/* ---- checkpoints ---------------------------------------------------------------------- */

static uint64_t *counter(struct opt_run *r, int i)
{
    uint64_t *c[6] = { &r->metric_calls,  &r->lm_calls,          &r->cache_hits,
                       &r->prompt_tokens, &r->completion_tokens, &r->errors };
    return c[i];
}

json_t *opt_memo_get(struct opt_run *r, const char *key)
{
    json_t *e = json_object_get(r->memo, key);
    if (!e)
        return NULL;
    if (!json_object_get(r->applied, key)) { /* a unit of an earlier run: count its cost */
        const json_t *d = json_object_get(e, "d");
        struct dspy_price p;
        uint64_t v[6];
        for (int i = 0; i < 6; i++) {
            v[i] = (uint64_t)json_integer_value(json_array_get(d, (size_t)i));
            *counter(r, i) += v[i];
            r->mark[i] += v[i];
        }
        r->restored_calls += v[1];
        if (task_price(r, &p))
            r->restored_usd += dspy_price_cost(&p, (long)v[3], (long)v[4]);
        update_cost(r);
        json_object_set_new(r->applied, key, json_true());
    }
    return json_object_get(e, "v");
}

static dspy_status write_checkpoint(struct opt_run *r)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", r->ckpt_path);
    json_t *doc = json_pack("{s:i, s:s, s:O}", "version", CHECKPOINT_VERSION, "key", r->ckpt_key,
                            "units", r->memo);
    if (!doc)
        return DSPY_ENOMEM;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dspy_status rc = DSPY_OK;
    if (fd < 0)
        rc = DSPY_EIO;
    else if (json_dumpfd(doc, fd, JSON_COMPACT) || fsync(fd))
        rc = DSPY_EIO;
    if (fd >= 0 && close(fd))
        rc = DSPY_EIO;
    if (!rc && rename(tmp, r->ckpt_path))
        rc = DSPY_EIO;
    json_decref(doc);
    return rc;
}

dspy_status opt_memo_put(struct opt_run *r, const char *key, json_t *value)
{
    json_t *d = json_array();
    for (int i = 0; i < 6; i++) {
        json_array_append_new(d, json_integer((json_int_t)(*counter(r, i) - r->mark[i])));
        r->mark[i] = *counter(r, i);
    }
    json_t *e = value && d ? json_pack("{s:o, s:o}", "v", value, "d", d) : NULL;
    if (!e) {
        json_decref(value);
        json_decref(d);
        return DSPY_ENOMEM;
    }
    if (json_object_set_new(r->memo, key, e) || json_object_set_new(r->applied, key, json_true()))
        return DSPY_ENOMEM;
    return r->ckpt_path ? write_checkpoint(r) : DSPY_OK;
}

/* What a checkpoint is valid for: the optimizer, seed, budget, data, metric and program. */
static char *checkpoint_key(struct opt_run *r)
{
    const struct dspy_optimize_options *o = r->o;
    json_t *state = dspy_program_dump_state(r->student);
    json_t *k = json_pack("{s:s, s:I, s:s?, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:o, "
                          "s:O, s:O}",
                          "optimizer", dspy_optimizer_name(o->optimizer), "seed",
                          (json_int_t)o->seed, "auto", o->auto_budget, "trials",
                          (json_int_t)o->num_trials, "candidates", (json_int_t)o->num_candidates,
                          "boot", (json_int_t)o->max_bootstrapped_demos, "labeled",
                          (json_int_t)o->max_labeled_demos, "rounds", (json_int_t)o->max_rounds,
                          "minibatch", (json_int_t)o->minibatch_size, "waves",
                          (json_int_t)o->parallel_trials, "full_every",
                          (json_int_t)o->minibatch_full_eval_steps, "metric",
                          dspy_metric_name(r->metric), "state", state ? state : json_null(),
                          "train", r->train, "val", r->val ? r->val : json_null());
    if (k) {
        json_object_set_new(k, "max_metric_calls", json_integer(o->max_metric_calls));
        json_object_set_new(k, "max_full_evals", json_integer(o->max_full_evals));
        json_object_set_new(k, "population", json_integer(o->population));
        json_object_set_new(k, "generations", json_integer(o->generations));
        json_object_set_new(k, "mutation_rate", json_real(o->mutation_rate));
        json_object_set_new(k, "merge", json_boolean(!o->no_merge));
        json_object_set_new(k, "max_merges", json_integer(o->max_merge_invocations));
        json_object_set_new(k, "no_baseline", json_boolean(o->no_baseline));
    }
    char *text = k ? json_dumps(k, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(k);
    if (!text)
        return NULL;
    /* FNV-1a is plenty to tell runs apart; the checkpoint is not a security boundary */
    uint64_t h = 1469598103934665603ull;
    for (const char *p = text; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    dspy_free(text);
    char hex[17];
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)h);
    return dspy_strdup(hex);
}

static dspy_status open_checkpoint(struct opt_run *r, struct dspy_error *err)
{
    const char *dir = r->o->checkpoint_dir;
    if (mkdir(dir, 0755) && errno != EEXIST)
        return dspy__err(err, DSPY_EIO, "checkpoint directory %s: %s", dir, strerror(errno));
    size_t n = strlen(dir) + 32;
    if (!(r->ckpt_path = dspy_malloc(n)))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    snprintf(r->ckpt_path, n, "%s/checkpoint.json", dir);
    json_error_t je;
    json_t *doc = json_load_file(r->ckpt_path, 0, &je);
    if (!doc) {
        if (access(r->ckpt_path, F_OK) == 0)
            return dspy__err(err, DSPY_EPARSE, "%s:%d: not a checkpoint: %s", r->ckpt_path, je.line,
                             je.text);
        return DSPY_OK; /* a fresh run */
    }
    const char *key = json_string_value(json_object_get(doc, "key"));
    json_t *units = json_object_get(doc, "units");
    if (!key || !json_is_object(units) || strcmp(key, r->ckpt_key) ||
        json_integer_value(json_object_get(doc, "version")) != CHECKPOINT_VERSION) {
        json_decref(doc);
        dspy__err(err, DSPY_EINVAL,
                  "%s was written by a different run (optimizer, seed, budget, data, metric "
                  "or program differ); remove it or use another --checkpoint directory",
                  r->ckpt_path);
        dspy__err_file(err, r->ckpt_path);
        return DSPY_EINVAL;
    }
    json_object_update(r->memo, units);
    json_decref(doc);
    return DSPY_OK;
}

/* ---- trials and events ---------------------------------------------------------------- */

void opt_event(struct opt_run *r, const char *what, size_t trial, size_t trials, double score)
{
    if (!r->o->on_event)
        return;
    struct dspy_optimize_event e = { what, trial, trials, score, r->best, r->lm_calls };
    r->o->on_event(r->o->event_userdata, &e);
}

void opt_trial(struct opt_run *r, json_t *rec, const json_t *cand, bool full, double score,
               size_t index, size_t planned)
{
    /* The run's cost so far (trials of a wave run at once, so no trial has a cost of its
     * own); a trial read back from a checkpoint keeps the figure it was recorded with. */
    if (rec && !json_object_get(rec, "cost_usd_total"))
        json_object_set_new(rec, "cost_usd_total", json_real(r->cost_usd));
    json_array_append_new(r->trials, rec);
    if (full && (isnan(r->best) || score > r->best)) {
        r->best = score;
        json_decref(r->best_cand);
        r->best_cand = json_deep_copy(cand);
    }
    if (r->o->cycle)
        dspy_cycle_tick(r->o->cycle, 1);
    opt_event(r, full ? "full" : "trial", index, planned, score);
}

/* ---- inputs --------------------------------------------------------------------------- */

static dspy_status check_examples(const json_t *set, const char *which, const json_t *inputs,
                                  const char *label, struct dspy_error *err)
{
    if (!json_is_array(set) || !json_array_size(set))
        return dspy__err(err, DSPY_EINVAL, "the %s is empty", which);
    for (size_t i = 0; i < json_array_size(set); i++) {
        const json_t *ex = json_array_get(set, i), *name;
        size_t k;
        if (!json_is_object(ex)) {
            dspy__err(err, DSPY_EINVAL, "%s example %zu is not a JSON object", which, i + 1);
            err->line = (long)i + 1;
            return DSPY_EINVAL;
        }
        const char *missing = NULL;
        json_array_foreach(inputs, k, name)
            if (!missing && !json_object_get(ex, json_string_value(name)))
                missing = json_string_value(name);
        if (!missing && label && !json_object_get(ex, label))
            missing = label;
        if (missing) {
            dspy__err(err, DSPY_EINVAL, "%s example %zu has no field '%s'", which, i + 1, missing);
            dspy__err_field(err, missing);
            err->line = (long)i + 1;
            return DSPY_EINVAL;
        }
    }
    return DSPY_OK;
}

static bool program_outputs(dspy_program *p, const char *field)
{
    for (size_t i = 0; i < dspy_program_count(p); i++) {
        const dspy_signature *sig = dspy_module_signature(dspy_program_module(p, i));
        long f = dspy_signature_find(sig, field);
        if (f >= (long)dspy_signature_ninputs(sig))
            return true;
    }
    return false;
}

static dspy_status check_inputs(struct opt_run *r, struct dspy_error *err)
{
    const char *label = dspy_metric_field(r->metric);
    json_t *inputs = dspy_program_inputs(r->student);
    dspy_status rc;
    if (!inputs)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    if (label && !program_outputs(r->student, label)) {
        json_decref(inputs);
        dspy__err(err, DSPY_EINVAL, "metric %s: '%s' is not an output field of the program",
                  dspy_metric_name(r->metric), label);
        dspy__err_field(err, label);
        return DSPY_EINVAL;
    }
    rc = check_examples(r->train, "trainset", inputs, label, err);
    if (!rc && r->val)
        rc = check_examples(r->val, "valset", inputs, label, err);
    json_decref(inputs);
    return rc;
}

/* ---- plans ---------------------------------------------------------------------------- */

/* Tokens of one call of the program, estimated from its rendered prompt (4 bytes a token)
 * plus room for the demos an optimizer may add and the answer. */
static double tokens_per_call(struct opt_run *r, long demos)
{
    double total = 0;
    const json_t *ex = json_array_get(r->val ? r->val : r->train, 0);
    for (size_t i = 0; i < dspy_program_count(r->student); i++) {
        json_t *msgs = NULL;
        if (dspy_module_format(dspy_program_module(r->student, i), ex, &msgs, NULL))
            continue;
        char *text = json_dumps(msgs, JSON_COMPACT);
        size_t len = text ? strlen(text) : 0;
        dspy_free(text);
        json_decref(msgs);
        total += (double)len / 4.0 + 60.0;
    }
    char *e = json_dumps(ex, JSON_COMPACT);
    double per_demo = e ? (double)strlen(e) / 4.0 + 12 : 40;
    dspy_free(e);
    return total + (double)demos * per_demo * (double)dspy_program_count(r->student);
}

static json_t *plan_simple(struct opt_run *r, double tpc)
{
    const struct dspy_optimize_options *o = r->o;
    size_t nv = json_array_size(r->val), nt = json_array_size(r->train);
    long boot = o->max_bootstrapped_demos, lab = o->max_labeled_demos;
    long rounds = o->max_rounds < 0 ? 1 : o->max_rounds;
    double task = 0;
    long full = 2; /* the baseline and the result */
    switch (o->optimizer) {
    case DSPY_OPT_LABELED: break;
    case DSPY_OPT_BOOTSTRAP: task = (double)nt * (double)rounds; break;
    case DSPY_OPT_RANDOM_SEARCH: {
        long c = o->num_candidates >= 0 ? o->num_candidates : 16;
        task = (double)(c + 1) * (double)nt * (double)rounds;
        full = c + 3;
        break;
    }
    case DSPY_OPT_GENETIC: {
        double P = o->population > 1 ? (double)o->population : 8;
        double G = o->generations > 0 ? (double)o->generations : 5;
        double mb = nv > 35 ? 35 : (double)nv;
        task = G * (P * mb + (double)nv) + P * 4 * 16;
        full = (long)G + 1;
        task -= (double)(full - 2) * (double)nv; /* counted in G above */
        break;
    }
    default: break;
    }
    task += (double)full * (double)nv;
    (void)boot;
    (void)lab;
    return json_pack("{s:f, s:f, s:f, s:I, s:f}", "task_calls", task, "prompt_calls", 0.0, "tokens",
                     task * tpc, "full_evals", (json_int_t)full, "calls_first_trial",
                     2.0 * (double)nv);
}

/* GEPA: the metric-call budget; a reflection call per iteration (6 metric calls, plus a full
 * evaluation when accepted). The first proposal needs the seed's full evaluation and one
 * iteration. */
static json_t *plan_gepa(struct opt_run *r, double tpc)
{
    const struct dspy_optimize_options *o = r->o;
    size_t nv = json_array_size(r->val);
    long budget = dspy__gepa_budget(dspy_program_count(r->student), o->auto_budget,
                                    o->max_metric_calls, o->max_full_evals,
                                    json_array_size(r->train), nv);
    if (budget <= 0)
        return NULL;
    double iters = (double)budget / 6.0;
    return json_pack("{s:f, s:f, s:f, s:I, s:f, s:f}", "task_calls", (double)budget, "prompt_calls",
                     iters, "tokens", (double)budget * tpc + iters * (tpc * 6 + 300),
                     "metric_calls", (json_int_t)budget, "calls_first_trial", (double)nv + 6.0,
                     "tokens_first_trial", ((double)nv + 6.0) * tpc);
}

/* ---- the run -------------------------------------------------------------------------- */

static dspy_status run_labeled_or_bootstrap(struct opt_run *r)
{
    const struct dspy_optimize_options *o = r->o;
    json_t *cand = NULL;
    dspy_status rc = DSPY_OK;
    long boot = o->max_bootstrapped_demos < 0 ? 4 : o->max_bootstrapped_demos;
    long lab = o->max_labeled_demos < 0 ? 16 : o->max_labeled_demos;
    long rounds = o->max_rounds < 0 ? 1 : o->max_rounds;
    uint64_t t0 = dspy__now_ns(), calls0 = r->lm_calls;
    if (o->cycle)
        dspy_cycle_plan(o->cycle, 1);
    if (o->optimizer == DSPY_OPT_LABELED)
        cand = opt_labeled(r, r->train, lab, 0);
    else
        rc = opt_bootstrap(r, r->train, boot, lab, rounds, 0, &cand);
    if (rc || !cand)
        return rc ? rc : DSPY_ENOMEM;
    json_t *saved = opt_memo_get(r, "trial:0");
    double score;
    if (saved) {
        score = json_real_value(json_object_get(saved, "score"));
        json_array_append(r->trials, saved);
        if (isnan(r->best) || score > r->best) {
            r->best = score;
            json_decref(r->best_cand);
            r->best_cand = json_incref(cand);
        }
    } else {
        const json_t *dev = r->val;
        rc = opt_eval(r, &cand, &dev, 1, NULL, false, &score, NULL, NULL);
        if (rc) {
            json_decref(cand);
            return rc;
        }
        json_t *rec = json_pack("{s:I, s:s, s:s, s:f, s:f, s:I}", "trial", (json_int_t)0, "kind",
                                "full", "candidate",
                                o->optimizer == DSPY_OPT_LABELED ? "labeled" : "bootstrapped",
                                "score", score, "elapsed_s", (double)(dspy__now_ns() - t0) / 1e9,
                                "lm_calls", (json_int_t)(r->lm_calls - calls0));
        opt_memo_put(r, "trial:0", json_incref(rec));
        opt_trial(r, rec, cand, true, score, 0, 1);
    }
    json_decref(cand);
    return DSPY_OK;
}

static json_t *report_of(struct opt_run *r, json_t *plan)
{
    const struct dspy_optimize_options *o = r->o;
    json_t *lm = json_pack("{s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:I}", "calls",
                           (json_int_t)r->lm_calls, "cache_hits", (json_int_t)r->cache_hits,
                           "prompt_tokens", (json_int_t)r->prompt_tokens, "completion_tokens",
                           (json_int_t)r->completion_tokens, "tokens",
                           (json_int_t)(r->prompt_tokens + r->completion_tokens), "cost_usd",
                           r->cost_usd, "errors", (json_int_t)r->errors, "metric_calls",
                           (json_int_t)r->metric_calls);
    if (lm) { /* calls made by this process, not read back from a checkpoint */
        json_object_set_new(lm, "calls_this_run",
                            json_integer((json_int_t)(r->lm_calls - r->restored_calls)));
        json_t *cost = dspy_cost_tally_json(r->cost);
        if (cost)
            json_object_set_new(cost, "restored_usd", json_real(r->restored_usd));
        json_object_set_new(lm, "cost", cost ? cost : json_null());
    }
    json_t *rep = json_pack(
        "{s:s, s:I, s:s, s:I, s:I, s:o, s:o, s:O, s:o, s:f, s:o}", "optimizer",
        dspy_optimizer_name(o->optimizer), "seed", (json_int_t)o->seed, "metric",
        dspy_metric_name(r->metric), "trainset", (json_int_t)json_array_size(r->train), "valset",
        (json_int_t)json_array_size(r->val), "baseline",
        isnan(r->baseline) ? json_pack("{s:n}", "score") : json_pack("{s:f}", "score", r->baseline),
        "best", isnan(r->best) ? json_pack("{s:n}", "score") : json_pack("{s:f}", "score", r->best),
        "trials", r->trials, "lm", lm, "elapsed_s", (double)(dspy__now_ns() - r->start_ns) / 1e9,
        "plan", plan ? plan : json_null());
    if (rep) {
        json_object_set_new(rep, "cycle", o->cycle ? dspy_cycle_json(o->cycle) : json_null());
        json_object_set_new(rep, "stopped", r->stopped ? json_string(r->stop_reason) : json_null());
        json_object_set_new(rep, "dry_run", json_boolean(o->dry_run));
        if (r->best_cand)
            json_object_set(rep, "best_candidate", r->best_cand);
        json_t *ins = opt_memo_get(r, "instructions");
        if (ins) /* mipro: the proposer's candidates per predictor, the original first */
            json_object_set(rep, "instruction_candidates", ins);
        json_object_update(rep, r->report_extra);
    }
    return rep;
}

/* Resolve the valset: given; else, as DSPy: mipro takes the last 80 % of the trainset,
 * the others score on the trainset. */
static dspy_status resolve_sets(struct opt_run *r, const json_t *valset)
{
    if (valset) {
        r->val = valset;
        return DSPY_OK;
    }
    if (r->o->optimizer != DSPY_OPT_MIPRO) {
        r->val = r->train;
        return DSPY_OK;
    }
    size_t n = json_array_size(r->train);
    size_t nv = (size_t)(0.8 * (double)n);
    nv = nv < 1 ? 1 : nv > 1000 ? 1000 : nv;
    if (n < 2)
        return DSPY_EINVAL;
    if (!(r->train_owned = json_array()) || !(r->val_owned = json_array()))
        return DSPY_ENOMEM;
    for (size_t i = 0; i < n; i++)
        json_array_append(i < n - nv ? r->train_owned : r->val_owned, json_array_get(r->train, i));
    r->train = r->train_owned;
    r->val = r->val_owned;
    return DSPY_OK;
}

dspy_status dspy_optimize(dspy_program *student, const json_t *trainset, const json_t *valset,
                          const dspy_metric *metric, const struct dspy_optimize_options *opts,
                          json_t **report, struct dspy_error *err)
{
    struct opt_run r;
    dspy_status rc;
    json_t *plan = NULL;
    memset(&r, 0, sizeof(r));
    *report = NULL;
    r.student = student;
    r.train = trainset;
    r.metric = metric;
    r.o = opts;
    r.fewshot_seed = opts->optimizer == DSPY_OPT_MIPRO ? 0 : opts->seed;
    r.best = NAN;
    r.baseline = NAN;
    r.start_ns = dspy__now_ns();
    if (!opts->task_lm)
        return dspy__err(err, DSPY_EINVAL, "dspy_optimize: a task LM is required");
    struct dspy_price flat = { opts->price_in_per_mtok / 1000.0,
                               opts->price_out_per_mtok / 1000.0 };
    bool is_flat = opts->price_in_per_mtok > 0 || opts->price_out_per_mtok > 0;
    if (!(r.trials = json_array()) || !(r.memo = json_object()) || !(r.applied = json_object()) ||
        !(r.report_extra = json_object()) ||
        !(r.cost = dspy_cost_tally_new(opts->prices, is_flat ? &flat : NULL))) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out;
    }
    if (opts->optimizer == DSPY_OPT_GEPA) {
        int given = (opts->auto_budget != NULL) + (opts->max_metric_calls > 0) +
                    (opts->max_full_evals > 0);
        if (given != 1) {
            rc = dspy__err(err, DSPY_EINVAL,
                           "gepa needs exactly one budget: --auto, --max-metric-calls or "
                           "--max-full-evals (%d given)",
                           given);
            goto out;
        }
    }
    if (opts->no_baseline &&
        (opts->optimizer == DSPY_OPT_MIPRO || opts->optimizer == DSPY_OPT_GEPA)) {
        rc = dspy__err(err, DSPY_EINVAL,
                       "--no-baseline: %s evaluates the program as given as part of its search",
                       dspy_optimizer_name(opts->optimizer));
        goto out;
    }
    if (opts->auto_budget &&
        (opts->optimizer == DSPY_OPT_MIPRO || opts->optimizer == DSPY_OPT_GEPA)) {
        long n, vs;
        if (!dspy__mipro_auto(opts->auto_budget, &n, &vs)) {
            rc = dspy__err(err, DSPY_EINVAL, "--auto '%s' is not light, medium or heavy",
                           opts->auto_budget);
            goto out;
        }
    }
    /* Every input is checked before the first LM call. */
    if ((rc = check_examples(trainset, "trainset", NULL, NULL, err)))
        goto out;
    if ((rc = resolve_sets(&r, valset))) {
        rc = dspy__err(err, rc,
                       rc == DSPY_EINVAL ? "mipro without a valset needs at least "
                                           "2 training examples"
                                         : "out of memory");
        goto out;
    }
    if ((rc = check_inputs(&r, err)))
        goto out;
    if (opts->optimizer == DSPY_OPT_MIPRO) { /* DSPy scores everything on the auto sample */
        json_t *v = opt_mipro_valset(&r);
        if (!v) {
            rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
            goto out;
        }
        json_decref(r.val_owned);
        r.val = r.val_owned = v;
    }
    if (!(r.ckpt_key = checkpoint_key(&r))) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out;
    }
    if (opts->checkpoint_dir && (rc = open_checkpoint(&r, err)))
        goto out;

    double tpc = tokens_per_call(&r, opts->optimizer == DSPY_OPT_MIPRO ? 4 : 8);
    plan = opts->optimizer == DSPY_OPT_MIPRO  ? opt_mipro_plan(&r, tpc)
           : opts->optimizer == DSPY_OPT_GEPA ? plan_gepa(&r, tpc)
                                              : plan_simple(&r, tpc);
    if (!plan) {
        rc = dspy__err(err, DSPY_EINVAL, "the budget cannot be planned");
        goto out;
    }
    {
        double tokens = json_number_value(json_object_get(plan, "tokens"));
        struct dspy_price tp = { 0, 0 };
        task_price(&r, &tp);
        double cost = tokens * (0.8 * tp.input_per_1k + 0.2 * tp.output_per_1k) / 1000.0;
        json_object_set_new(plan, "cost_usd", json_real(cost));
        double one = json_number_value(json_object_get(plan, "tokens_first_trial"));
        if (one <= 0)
            one = tpc * (double)json_array_size(r.val);
        double one_cost = one * (0.8 * tp.input_per_1k + 0.2 * tp.output_per_1k) / 1000.0;
        if (opts->max_tokens > 0 && one > (double)opts->max_tokens) {
            rc = dspy__err(err, DSPY_EINVAL,
                           "--max-tokens %ld is too small for a single proposal: the baseline "
                           "and first trial need about %.0f tokens",
                           opts->max_tokens, one);
            goto out;
        }
        double one_calls = json_number_value(json_object_get(plan, "calls_first_trial"));
        long mc = opts->max_metric_calls;
        if (opts->optimizer == DSPY_OPT_GEPA)
            mc = (long)json_integer_value(json_object_get(plan, "metric_calls"));
        if (mc > 0 && one_calls > (double)mc) {
            rc = dspy__err(err, DSPY_EINVAL,
                           "a budget of %ld metric calls is too small for a single proposal: "
                           "the baseline and first trial score %.0f examples",
                           mc, one_calls);
            goto out;
        }
        if (opts->max_cost_usd > 0 && one_cost > opts->max_cost_usd) {
            rc = dspy__err(err, DSPY_EINVAL,
                           "--max-cost $%.4f is too small for a single proposal: the baseline "
                           "and first trial cost about $%.4f",
                           opts->max_cost_usd, one_cost);
            goto out;
        }
    }
    if (opts->dry_run) {
        *report = report_of(&r, plan);
        plan = NULL;
        rc = DSPY_OK;
        goto out;
    }

    /* The baseline: the program as given, on the full valset (GEPA's seed evaluation is
     * its own, with per-instance scores). */
    if (opts->optimizer != DSPY_OPT_GEPA && !opts->no_baseline) {
        json_t *base = opt_candidate_of(student), *saved = opt_memo_get(&r, "baseline");
        if (!base) {
            rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
            goto out;
        }
        if (saved) {
            r.baseline = json_real_value(saved);
        } else {
            const json_t *dev = r.val;
            if ((rc = opt_eval(&r, &base, &dev, 1, NULL, false, &r.baseline, NULL, NULL))) {
                json_decref(base);
                goto out;
            }
            opt_memo_put(&r, "baseline", json_real(r.baseline));
        }
        opt_event(&r, "baseline", 0, 0, r.baseline);
        if (opts->optimizer == DSPY_OPT_MIPRO) { /* DSPy: the baseline is trial 0 */
            r.best = r.baseline;
            r.best_cand = base;
        } else {
            json_decref(base);
        }
    }
    switch (opts->optimizer) {
    case DSPY_OPT_LABELED:
    case DSPY_OPT_BOOTSTRAP: rc = run_labeled_or_bootstrap(&r); break;
    case DSPY_OPT_RANDOM_SEARCH: rc = opt_random_search(&r, err); break;
    case DSPY_OPT_MIPRO: rc = opt_mipro(&r, err); break;
    case DSPY_OPT_GEPA: rc = opt_gepa(&r, err); break;
    case DSPY_OPT_GENETIC: rc = opt_genetic(&r, err); break;
    default: rc = dspy__err(err, DSPY_EINVAL, "unknown optimizer");
    }
    if (rc && rc != DSPY_ECANCELED) {
        if (!err || !err->message[0])
            dspy__err(err, rc, "the optimizer failed: %s", dspy_strerror(rc));
    }
    /* The best full-evaluated candidate becomes the program; DSPy returns the compiled
     * program for labeled/bootstrap whatever its score, and so do we. */
    if (r.best_cand) {
        dspy_program *best = opt_build(&r, r.best_cand);
        if (best) {
            json_t *st = dspy_program_dump_state(best);
            if (st)
                dspy_program_apply_state(student, st, NULL);
            json_decref(st);
            dspy_program_free(best);
        }
    }
    if (!rc && r.stopped && r.errors > opts->max_errors && opts->max_errors) {
        rc = dspy__err(err, DSPY_ECANCELED, "%s", r.stop_reason);
    }
    *report = report_of(&r, plan);
    plan = NULL;
out:
    json_decref(plan);
    dspy_cost_tally_free(r.cost);
    json_decref(r.trials);
    json_decref(r.report_extra);
    json_decref(r.memo);
    json_decref(r.applied);
    json_decref(r.best_cand);
    json_decref(r.train_owned);
    json_decref(r.val_owned);
    dspy_free(r.ckpt_path);
    dspy_free(r.ckpt_key);
    return rc;
}

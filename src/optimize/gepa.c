/* GEPA (optimize layer): a pool of instruction candidates with a per-instance Pareto front
 * over the valset, parents sampled by how many instances they are best on, one predictor's
 * instruction at a time rewritten by the reflection LM from the metric's feedback on a
 * minibatch of 3, children kept on strict minibatch improvement and then fully evaluated,
 * within a metric-call budget computed as DSPy does. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/status.h"
#include "optimize/optimize_run.h"

#define MINIBATCH 3
#define MAX_POOL 256

long dspy__gepa_budget(size_t predictors, const char *auto_budget, long max_metric_calls,
                       long max_full_evals, size_t ntrain, size_t nval)
{
    int given = (auto_budget != NULL) + (max_metric_calls > 0) + (max_full_evals > 0);
    if (given != 1)
        return 0;
    if (max_metric_calls > 0)
        return max_metric_calls;
    if (max_full_evals > 0)
        return max_full_evals * (long)(ntrain + nval);
    long n = !strcmp(auto_budget, "light")    ? 6
             : !strcmp(auto_budget, "medium") ? 12
             : !strcmp(auto_budget, "heavy")  ? 18
                                              : 0;
    if (!n)
        return 0;
    /* DSPy's GEPA.auto_budget(num_preds, n, |val|), minibatch 35, full_eval_steps 5 */
    double a = 2.0 * (double)(predictors * 2) * log2((double)n), b = 1.5 * (double)n;
    long N = (long)(a > b ? a : b), V = (long)nval, M = 35, m = 5;
    long total = V + n * 5 + N * M;
    if (N == 0)
        return total;
    total += ((N + 1) / m + 1 + (N < m ? 1 : 0)) * V;
    return total;
}

void opt_account_lm(struct opt_run *r, const dspy_lm *lm, const struct dspy_lm_response *resp,
                    dspy_status rc)
{
    struct dspy_call_info info;
    memset(&info, 0, sizeof(info));
    info.lm_calls = 1;
    if (!rc) {
        info.usage = resp->usage;
        if (resp->cache_hit) {
            info.cache_hits = 1;
            info.cached_usage = resp->usage;
        }
    }
    opt_account(r, lm, &info, rc);
}

struct gcand {
    json_t *cand;   /* {"instructions": [...], "demos": [...]} */
    double *scores; /* per valset instance */
    double agg;     /* percent */
    long parent;
    size_t next_pred; /* round-robin component selection, per candidate */
};

/* Parent selection, "pareto": drop programs dominated on the per-instance fronts, then draw
 * among the rest weighted by the number of instances each is best on. */
static size_t select_parent(const struct gcand *pool, size_t n, size_t nv, struct dspy__rng *rng)
{
    bool alive[MAX_POOL];
    size_t wins[MAX_POOL];
    double best;
    for (size_t i = 0; i < n; i++)
        alive[i] = true;
    /* q dominates p when q is best on every instance p is best on (and p is not q); the
     * lower-scoring of two equal ones goes first */
    for (size_t p = 0; p < n; p++) {
        for (size_t q = 0; q < n && alive[p]; q++) {
            if (q == p || !alive[q])
                continue;
            bool covers = true, any = false;
            for (size_t j = 0; j < nv && covers; j++) {
                best = -INFINITY;
                for (size_t k = 0; k < n; k++)
                    best = fmax(best, pool[k].scores[j]);
                if (pool[p].scores[j] == best) {
                    any = true;
                    covers = pool[q].scores[j] == best;
                }
            }
            if (covers && any &&
                (pool[q].agg > pool[p].agg || (pool[q].agg == pool[p].agg && q < p)))
                alive[p] = false;
        }
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        wins[i] = 0;
        if (!alive[i])
            continue;
        for (size_t j = 0; j < nv; j++) {
            best = -INFINITY;
            for (size_t k = 0; k < n; k++)
                best = fmax(best, pool[k].scores[j]);
            wins[i] += pool[i].scores[j] == best;
        }
        total += wins[i];
    }
    if (!total) { /* no instance has a best: the highest aggregate */
        size_t b = 0;
        for (size_t i = 1; i < n; i++)
            if (pool[i].agg > pool[b].agg)
                b = i;
        return b;
    }
    size_t pick = dspy__rng_below(rng, total);
    for (size_t i = 0; i < n; i++) {
        if (pick < wins[i])
            return i;
        pick -= wins[i];
    }
    return 0;
}

/* GEPA's EpochShuffledBatchSampler: train ids shuffled each epoch, consumed 3 at a time
 * (an epoch's tail is padded from its start). */
static void next_minibatch(struct opt_run *r, size_t iteration, size_t *ids)
{
    size_t n = json_array_size(r->train);
    size_t per_epoch = (n + MINIBATCH - 1) / MINIBATCH;
    size_t epoch = iteration / per_epoch, slot = iteration % per_epoch;
    size_t *order = dspy_malloc(n * sizeof(*order));
    struct dspy__rng rng;
    if (!order) {
        for (size_t k = 0; k < MINIBATCH; k++)
            ids[k] = (slot * MINIBATCH + k) % n;
        return;
    }
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    dspy__rng_seed(&rng, r->o->seed, RNG_GEPA_EPOCH, epoch);
    dspy__rng_shuffle(&rng, order, n);
    for (size_t k = 0; k < MINIBATCH; k++)
        ids[k] = order[(slot * MINIBATCH + k) % n];
    dspy_free(order);
}

static void add_value(struct dspy_buf *b, const json_t *v)
{
    char *t = json_is_string(v) ? NULL : json_dumps(v, JSON_ENCODE_ANY);
    const char *s = json_is_string(v) ? json_string_value(v) : t ? t : "";
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t'))
        n--;
    while (n && (*s == ' ' || *s == '\n' || *s == '\t'))
        s++, n--;
    dspy__buf_add(b, s, n);
    dspy__buf_adds(b, "\n\n");
    dspy_free(t);
}

/* DSPy's InstructionProposalSignature prompt over the reflective dataset. */
static char *reflection_prompt(struct opt_run *r, size_t pred, const char *current,
                               const json_t *mb, const json_t *preds, const json_t *scores,
                               const json_t *feedback)
{
    struct dspy_buf b;
    const dspy_signature *sig = dspy_module_signature(dspy_program_module(r->student, pred));
    dspy__buf_init(&b, 1u << 20);
    dspy__buf_adds(&b, "I provided an assistant with the following instructions to perform a "
                       "task for me:\n```\n");
    dspy__buf_adds(&b, current);
    dspy__buf_adds(&b, "\n```\n\nThe following are examples of different task inputs "
                       "provided to the assistant along with the assistant's response for "
                       "each of them, and some feedback on how the assistant's response could "
                       "be better:\n```\n");
    for (size_t k = 0; k < json_array_size(mb); k++) {
        const json_t *ex = json_array_get(mb, k), *p = json_array_get(preds, k);
        const json_t *fb = json_array_get(feedback, k);
        json_t *trace = json_is_object(p) ? dspy__program_trace(r->student, ex, p) : NULL;
        const json_t *step = json_array_get(trace, pred);
        if (k)
            dspy__buf_adds(&b, "\n\n");
        dspy__buf_addf(&b, "# Example %zu\n## Inputs\n", k + 1);
        for (size_t f = 0; f < dspy_signature_ninputs(sig); f++) {
            const char *name = dspy_signature_field(sig, f)->name;
            const json_t *v = step ? json_object_get(json_object_get(step, "inputs"), name)
                                   : json_object_get(ex, name);
            dspy__buf_addf(&b, "### %s\n", name);
            add_value(&b, v ? v : json_null());
        }
        dspy__buf_adds(&b, "## Generated Outputs\n");
        if (step) {
            const char *name;
            json_t *v;
            json_object_foreach(json_object_get(step, "outputs"), name, v) {
                dspy__buf_addf(&b, "### %s\n", name);
                add_value(&b, v);
            }
        } else {
            dspy__buf_adds(&b, "The program failed on this input.\n\n");
        }
        dspy__buf_adds(&b, "## Feedback\n");
        if (json_is_string(fb))
            add_value(&b, fb);
        else
            dspy__buf_addf(&b, "This trajectory got a score of %g.\n\n",
                           json_real_value(json_array_get(scores, k)));
        json_decref(trace);
    }
    dspy__buf_adds(&b, "```\n\nYour task is to write a new instruction for the assistant.\n\n"
                       "Read the inputs carefully and identify the input format and infer "
                       "detailed task description about the task I wish to solve with the "
                       "assistant.\n\nRead all the assistant responses and the corresponding "
                       "feedback. Identify all niche and domain specific factual information "
                       "about the task and include it in the instruction, as a lot of it may "
                       "not be available to the assistant in the future. The assistant may "
                       "have utilized a generalizable strategy to solve the task, if so, "
                       "include that in the instruction as well.\n\nProvide the new "
                       "instructions within ``` blocks.");
    return dspy__buf_detach(&b, NULL);
}

/* The text between the first and the last ``` (a language tag on the first line skipped);
 * the whole reply, trimmed, when it has no such block. Caller owns. */
static char *extract_instruction(const char *reply)
{
    const char *a = strstr(reply, "```"), *z = NULL;
    for (const char *p = a ? a + 3 : NULL; p && (p = strstr(p, "```")); p += 3)
        z = p;
    const char *s = reply, *e = reply + strlen(reply);
    if (a && z) {
        s = a + 3;
        e = z;
        const char *nl = memchr(s, '\n', (size_t)(e - s));
        if (nl && strcspn(s, " \n") == (size_t)(nl - s)) /* "```text\n": a tag */
            s = nl + 1;
    }
    while (s < e && (*s == ' ' || *s == '\n'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\n'))
        e--;
    return dspy_strndup(s, (size_t)(e - s));
}

static char *reflect(struct opt_run *r, const char *prompt)
{
    dspy_lm *lm = r->o->reflection_lm ? r->o->reflection_lm
                  : r->o->prompt_lm   ? r->o->prompt_lm
                                      : r->o->task_lm;
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", prompt);
    struct dspy_lm_request req = DSPY_LM_REQUEST_INIT;
    struct dspy_lm_response resp;
    char *out = NULL;
    memset(&resp, 0, sizeof(resp));
    req.messages = msgs;
    req.temperature = 1.0;
    dspy_status rc = msgs ? dspy_lm_complete(lm, &req, &resp, NULL) : DSPY_ENOMEM;
    opt_account_lm(r, lm, &resp, rc);
    if (!rc && resp.n)
        out = extract_instruction(resp.texts[0]);
    dspy_lm_response_release(&resp);
    json_decref(msgs);
    return out;
}

static double sum_of(const json_t *a)
{
    double s = 0;
    for (size_t i = 0; i < json_array_size(a); i++)
        s += json_real_value(json_array_get(a, i));
    return s;
}

/* Fully evaluate a candidate into pool slot `slot` (or restore it from the memo). */
static dspy_status full_eval(struct opt_run *r, struct gcand *g, const char *key)
{
    size_t nv = json_array_size(r->val);
    json_t *saved = opt_memo_get(r, key), *per = NULL;
    double score;
    if (saved) {
        per = json_incref(json_object_get(saved, "scores"));
        score = json_real_value(json_object_get(saved, "score"));
    } else {
        const json_t *dev = r->val;
        dspy_status rc = opt_eval(r, &g->cand, &dev, 1, NULL, false, &score, &per, NULL);
        if (rc)
            return rc;
        opt_memo_put(r, key, json_pack("{s:f, s:O}", "score", score, "scores", per));
    }
    if (!(g->scores = dspy_calloc(nv ? nv : 1, sizeof(*g->scores)))) {
        json_decref(per);
        return DSPY_ENOMEM;
    }
    for (size_t j = 0; j < nv; j++)
        g->scores[j] = json_real_value(json_array_get(per, j));
    g->agg = score;
    json_decref(per);
    return DSPY_OK;
}

dspy_status opt_gepa(struct opt_run *r, struct dspy_error *err)
{
    const struct dspy_optimize_options *o = r->o;
    size_t np = dspy_program_count(r->student), npool = 0;
    long budget = dspy__gepa_budget(np, o->auto_budget, o->max_metric_calls, o->max_full_evals,
                                    json_array_size(r->train), json_array_size(r->val));
    struct gcand *pool = dspy_calloc(MAX_POOL, sizeof(*pool));
    dspy_status rc = DSPY_OK;
    if (!pool)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    /* the seed candidate on the full valset (also the baseline) */
    pool[0].cand = opt_candidate_of(r->student);
    pool[0].parent = -1;
    if (!pool[0].cand || (rc = full_eval(r, &pool[0], "gepa:seed")))
        goto out;
    npool = 1;
    r->baseline = pool[0].agg;
    opt_event(r, "baseline", 0, 0, r->baseline);
    if (o->cycle)
        dspy_cycle_plan(o->cycle, (uint64_t)(budget > 0 ? budget : 0));
    for (size_t it = 1; (long)r->metric_calls < budget && npool < MAX_POOL && !opt_check_budget(r);
         it++) {
        char key[48];
        uint64_t t0 = dspy__now_ns(), c0 = r->lm_calls, m0 = r->metric_calls;
        snprintf(key, sizeof(key), "gepa:%zu", it);
        json_t *saved = opt_memo_get(r, key);
        struct dspy__rng rng;
        dspy__rng_seed(&rng, o->seed, RNG_GEPA_SELECT, it);
        size_t parent = select_parent(pool, npool, json_array_size(r->val), &rng);
        size_t ids[MINIBATCH], pred = pool[parent].next_pred++ % np;
        next_minibatch(r, it - 1, ids);
        json_t *mb = json_array();
        for (size_t k = 0; k < MINIBATCH; k++)
            json_array_append(mb, json_array_get(r->train, ids[k]));
        json_t *rec;
        double ps, cs = NAN;
        bool accepted = false, skipped = false;
        char *inst = NULL;
        if (saved) {
            rec = json_incref(saved);
            ps = json_real_value(json_object_get(saved, "parent_score"));
            skipped = json_is_true(json_object_get(saved, "skipped"));
            accepted = json_is_true(json_object_get(saved, "accepted"));
            cs = json_real_value(json_object_get(saved, "score"));
            const char *t = json_string_value(json_object_get(saved, "instruction"));
            inst = t ? dspy_strdup(t) : NULL;
        } else {
            json_t *pp = NULL, *ppred = NULL, *pfb = NULL;
            const json_t *set = mb;
            rc = opt_eval_feedback(r, &pool[parent].cand, &set, 1, NULL, true, &ps, &pp, &ppred,
                                   &pfb);
            if (rc) {
                json_decref(mb);
                goto out;
            }
            bool perfect = true;
            for (size_t k = 0; k < MINIBATCH; k++)
                perfect &= json_real_value(json_array_get(pp, k)) >= 1.0;
            if (perfect) { /* skip_perfect_score */
                skipped = true;
            } else {
                const char *cur = json_string_value(
                    json_array_get(json_object_get(pool[parent].cand, "instructions"), pred));
                char *prompt = reflection_prompt(r, pred, cur ? cur : "", mb, ppred, pp, pfb);
                inst = prompt ? reflect(r, prompt) : NULL;
                dspy_free(prompt);
                if (inst && *inst) {
                    json_t *child = json_deep_copy(pool[parent].cand);
                    json_array_set_new(json_object_get(child, "instructions"), pred,
                                       json_string(inst));
                    json_t *cp = NULL;
                    rc = opt_eval(r, &child, &set, 1, NULL, false, &cs, &cp, NULL);
                    accepted = !rc && sum_of(cp) > sum_of(pp); /* strict improvement */
                    json_decref(cp);
                    json_decref(child);
                }
            }
            json_decref(pp);
            json_decref(ppred);
            json_decref(pfb);
            if (rc) {
                json_decref(mb);
                dspy_free(inst);
                goto out;
            }
            rec = json_pack("{s:I, s:s, s:I, s:I, s:f, s:b, s:b, s:f, s:I, s:I}", "trial",
                            (json_int_t)it, "kind", "minibatch", "parent", (json_int_t)parent,
                            "predictor", (json_int_t)pred, "parent_score", ps, "skipped", skipped,
                            "accepted", accepted, "elapsed_s", (double)(dspy__now_ns() - t0) / 1e9,
                            "lm_calls", (json_int_t)(r->lm_calls - c0), "metric_calls",
                            (json_int_t)(r->metric_calls - m0));
            json_object_set_new(rec, "score", isnan(cs) ? json_null() : json_real(cs));
            if (inst)
                json_object_set_new(rec, "instruction", json_string(inst));
            opt_memo_put(r, key, json_incref(rec));
        }
        json_decref(mb);
        opt_trial(r, rec, pool[parent].cand, false, isnan(cs) ? ps : cs, it, 0);
        if (accepted && inst) {
            struct gcand *g = &pool[npool];
            g->cand = json_deep_copy(pool[parent].cand);
            json_array_set_new(json_object_get(g->cand, "instructions"), pred, json_string(inst));
            g->parent = (long)parent;
            g->next_pred = (pred + 1) % np;
            snprintf(key, sizeof(key), "gepa:%zu:full", it);
            uint64_t f0 = dspy__now_ns(), fc0 = r->lm_calls;
            if ((rc = full_eval(r, g, key))) {
                dspy_free(inst);
                goto out;
            }
            npool++;
            json_t *frec = json_pack("{s:I, s:s, s:I, s:I, s:f, s:f, s:I}", "trial", (json_int_t)it,
                                     "kind", "full", "candidate", (json_int_t)(npool - 1), "parent",
                                     (json_int_t)parent, "score", g->agg, "elapsed_s",
                                     (double)(dspy__now_ns() - f0) / 1e9, "lm_calls",
                                     (json_int_t)(r->lm_calls - fc0));
            opt_trial(r, frec, g->cand, true, g->agg, it, 0);
        }
        dspy_free(inst);
    }
out:
    /* the best aggregate valset score wins; the seed counts */
    for (size_t i = 0; i < npool; i++)
        if (isnan(r->best) || pool[i].agg > r->best) {
            r->best = pool[i].agg;
            json_decref(r->best_cand);
            r->best_cand = json_incref(pool[i].cand);
        }
    for (size_t i = 0; i < MAX_POOL; i++) {
        json_decref(pool[i].cand);
        dspy_free(pool[i].scores);
    }
    dspy_free(pool);
    return rc;
}

/* GEPA (optimize layer): a pool of instruction candidates with a per-instance Pareto front
 * over the valset, parents sampled by how many instances they are best on, one predictor's
 * instruction at a time rewritten by the reflection LM from the metric's feedback on a
 * minibatch of 3, children kept on strict minibatch improvement and then fully evaluated,
 * within a metric-call budget computed as DSPy does. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/status.h"
#include "optimize/gepa_int.h"
#include "optimize/optimize_run.h"

#define MINIBATCH 3

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

/* gepa's select_program_candidate_from_pareto_front: choice() over the list of surviving
 * programs, each repeated once per instance it is best on, in order of first appearance. */
static size_t select_parent(const struct gcand *pool, size_t n, size_t nv, bool *front,
                            struct dspy__pyrandom *rng)
{
    bool dom[MAX_POOL], seen[MAX_POOL] = { false };
    size_t order[MAX_POOL], freq[MAX_POOL] = { 0 }, m = 0, total = 0;
    dspy__gepa_dominators(pool, n, nv, front, dom);
    for (size_t j = 0; j < nv; j++)
        for (size_t p = 0; p < n; p++)
            if (front[j * n + p] && !dom[p]) {
                if (!seen[p]) {
                    seen[p] = true;
                    order[m++] = p;
                }
                freq[p]++;
                total++;
            }
    if (!total)
        return 0;
    size_t pick = dspy__pyrandom_below(rng, total);
    for (size_t a = 0; a < m; a++) {
        if (pick < freq[order[a]])
            return order[a];
        pick -= freq[order[a]];
    }
    return 0;
}

/* GEPA's EpochShuffledBatchSampler on the shared generator: at each new epoch the train ids
 * are shuffled and padded to a multiple of 3 with the least used ids (the last shuffled
 * first); iteration i (merges count) takes ids [3i, 3i + 3) modulo the padded length. */
struct sampler {
    size_t *ids; /* |train| + 2 */
    size_t n;
    long epoch;
};

static void next_minibatch(struct sampler *s, size_t ntrain, size_t iteration,
                           struct dspy__pyrandom *rng, size_t *ids)
{
    size_t base = iteration * MINIBATCH;
    long epoch = s->epoch == -1 ? 0 : (long)(base / s->n);
    if (!s->n || epoch > s->epoch) {
        s->epoch = epoch;
        for (size_t i = 0; i < ntrain; i++)
            s->ids[i] = i;
        dspy__pyrandom_shuffle(rng, s->ids, ntrain);
        s->n = ntrain;
        for (size_t k = 0; ntrain % MINIBATCH && k < MINIBATCH - ntrain % MINIBATCH; k++)
            s->ids[s->n++] = s->ids[ntrain - 1 - k];
    }
    base %= s->n;
    for (size_t k = 0; k < MINIBATCH; k++)
        ids[k] = s->ids[base + k];
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

static dspy_lm *reflection_lm(const struct opt_run *r)
{
    return r->o->reflection_lm ? r->o->reflection_lm
           : r->o->prompt_lm   ? r->o->prompt_lm
                               : r->o->task_lm;
}

/* One reflection-LM call: the new instruction (caller owns) or NULL. Touches nothing of
 * the run but the LM, so several may run at once; the caller accounts `resp`. */
static char *reflect_call(const struct opt_run *r, const char *prompt,
                          struct dspy_lm_response *resp, dspy_status *rc)
{
    dspy_lm *lm = reflection_lm(r);
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", prompt);
    struct dspy_lm_request req = DSPY_LM_REQUEST_INIT;
    char *out = NULL;
    memset(resp, 0, sizeof(*resp));
    req.messages = msgs;
    req.temperature = 1.0;
    *rc = msgs ? dspy_lm_complete(lm, &req, resp, NULL) : DSPY_ENOMEM;
    if (!*rc && resp->n)
        out = extract_instruction(resp->texts[0]);
    json_decref(msgs);
    return out;
}

static char *reflect(struct opt_run *r, const char *prompt)
{
    struct dspy_lm_response resp;
    dspy_status rc;
    char *out = reflect_call(r, prompt, &resp, &rc);
    opt_account_lm(r, reflection_lm(r), &resp, rc);
    dspy_lm_response_release(&resp);
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

/* ---- lookahead ---------------------------------------------------------------------- */

#define MAX_AHEAD 16

struct ahead_job {
    const struct opt_run *r;
    char *prompt, *inst;
    struct dspy_lm_response resp;
    dspy_status rc;
    pthread_t thread;
    bool started;
};

static void *ahead_reflect(void *arg)
{
    struct ahead_job *j = arg;
    j->inst = reflect_call(j->r, j->prompt, &j->resp, &j->rc);
    return NULL;
}

/* Run iterations [it, it + k) ahead, all at once, as they will run if none of their
 * children is accepted: the parents' minibatches (one wave), the reflections (one wave),
 * the children's minibatches (one wave). Only the cache keeps what they did: the
 * iterations, when they come, make the same calls and draws and are answered from it, so
 * the result is the one without lookahead, and each iteration's three sequential LM round
 * trips become a third of one. Draws are made on copies of the generator and sampler. */
static void lookahead(struct opt_run *r, const struct gcand *pool, size_t npool, bool *front,
                      const struct dspy__pyrandom *rng0, const struct sampler *s0, size_t it,
                      size_t k)
{
    size_t nv = json_array_size(r->val), ntrain = json_array_size(r->train);
    size_t np = dspy_program_count(r->student), n = 0, ids[MINIBATCH], next[MAX_POOL];
    struct dspy__pyrandom *rng = dspy_malloc(sizeof(*rng));
    struct sampler s = *s0;
    json_t *cands[MAX_AHEAD], *sets[MAX_AHEAD], *children[MAX_AHEAD];
    json_t *pp[MAX_AHEAD] = { 0 }, *ppred[MAX_AHEAD] = { 0 }, *pfb[MAX_AHEAD] = { 0 };
    size_t preds[MAX_AHEAD];
    struct ahead_job jobs[MAX_AHEAD];
    double sc[MAX_AHEAD];
    memset(jobs, 0, sizeof(jobs));
    s.ids = dspy_malloc((ntrain + MINIBATCH) * sizeof(*s.ids));
    if (!rng || !s.ids)
        goto out;
    *rng = *rng0;
    memcpy(s.ids, s0->ids, s0->n * sizeof(*s.ids));
    for (size_t i = 0; i < npool; i++)
        next[i] = pool[i].next_pred;
    for (size_t j = 0; j < k && j < MAX_AHEAD; j++) {
        char key[48];
        size_t parent = select_parent(pool, npool, nv, front, rng);
        size_t pred = next[parent]++ % np;
        next_minibatch(&s, ntrain, it + j - 1, rng, ids);
        snprintf(key, sizeof(key), "gepa:%zu", it + j);
        if (json_object_get(r->memo, key)) /* done in an earlier run: nothing to fetch */
            continue;
        json_t *mb = json_array();
        for (size_t m = 0; m < MINIBATCH; m++)
            json_array_append(mb, json_array_get(r->train, ids[m]));
        cands[n] = pool[parent].cand;
        preds[n] = pred;
        sets[n++] = mb;
    }
    if (!n || opt_eval_ahead(r, cands, (const json_t *const *)sets, n, true, sc, pp, ppred, pfb))
        goto out;
    for (size_t j = 0; j < n; j++) { /* the reflections, each on a thread */
        bool perfect = true;
        for (size_t m = 0; m < MINIBATCH; m++)
            perfect &= json_real_value(json_array_get(pp[j], m)) >= 1.0;
        if (perfect)
            continue;
        const char *cur = json_string_value(
            json_array_get(json_object_get(cands[j], "instructions"), preds[j]));
        jobs[j].r = r;
        jobs[j].prompt = reflection_prompt(r, preds[j], cur ? cur : "", sets[j], ppred[j], pp[j],
                                           pfb[j]);
        jobs[j].started = jobs[j].prompt &&
                          !pthread_create(&jobs[j].thread, NULL, ahead_reflect, &jobs[j]);
    }
    size_t nc = 0;
    const json_t *csets[MAX_AHEAD];
    for (size_t j = 0; j < n; j++) {
        if (!jobs[j].started)
            continue;
        pthread_join(jobs[j].thread, NULL);
        opt_account_lm(r, reflection_lm(r), &jobs[j].resp, jobs[j].rc);
        dspy_lm_response_release(&jobs[j].resp);
        if (!jobs[j].inst || !*jobs[j].inst)
            continue;
        json_t *child = json_deep_copy(cands[j]);
        json_array_set_new(json_object_get(child, "instructions"), preds[j],
                           json_string(jobs[j].inst));
        csets[nc] = sets[j];
        children[nc++] = child;
    }
    if (nc)
        opt_eval_ahead(r, children, csets, nc, false, sc, NULL, NULL, NULL);
    for (size_t j = 0; j < nc; j++)
        json_decref(children[j]);
out:
    for (size_t j = 0; j < n; j++) {
        json_decref(sets[j]);
        json_decref(pp[j]);
        json_decref(ppred[j]);
        json_decref(pfb[j]);
        dspy_free(jobs[j].prompt);
        dspy_free(jobs[j].inst);
    }
    dspy_free(s.ids);
    dspy_free(rng);
}

/* Add a fully evaluated child to the pool and record its "full" trial. */
static dspy_status add_child(struct opt_run *r, struct gcand *pool, size_t *npool, json_t *cand,
                             long p1, long p2, size_t next_pred, size_t it)
{
    char key[48];
    struct gcand *g = &pool[*npool];
    uint64_t f0 = dspy__now_ns(), fc0 = r->lm_calls;
    g->cand = cand;
    g->parent[0] = p1;
    g->parent[1] = p2;
    g->next_pred = next_pred;
    snprintf(key, sizeof(key), p2 >= 0 ? "gepa:%zu:mfull" : "gepa:%zu:full", it);
    dspy_status rc = full_eval(r, g, key);
    if (rc)
        return rc;
    (*npool)++;
    json_t *frec = json_pack("{s:I, s:s, s:I, s:[I], s:f, s:f, s:I}", "trial", (json_int_t)it,
                             "kind", "full", "candidate", (json_int_t)(*npool - 1), "parents",
                             (json_int_t)p1, "score", g->agg, "elapsed_s",
                             (double)(dspy__now_ns() - f0) / 1e9, "lm_calls",
                             (json_int_t)(r->lm_calls - fc0));
    if (frec && p2 >= 0)
        json_array_append_new(json_object_get(frec, "parents"), json_integer(p2));
    if (frec) {
        json_object_set_new(frec, "parent", json_integer(p1));
        json_object_set(frec, "instructions", json_object_get(g->cand, "instructions"));
    }
    opt_trial(r, frec, g->cand, true, g->agg, it, 0);
    return DSPY_OK;
}

/* One merge iteration: the merged candidate on a subsample of 5 valset instances, accepted
 * when its sum there is at least the better parent's, then fully evaluated. */
static dspy_status merge_step(struct opt_run *r, struct gcand *pool, size_t *npool, struct merge *m,
                              json_t *merged, const size_t ids[3], struct dspy__pyrandom *rng,
                              size_t it)
{
    size_t nv = json_array_size(r->val), sub[MERGE_SUBSAMPLE];
    uint64_t t0 = dspy__now_ns(), c0 = r->lm_calls, m0 = r->metric_calls;
    size_t ns = dspy__gepa_merge_subsample(&pool[ids[0]], &pool[ids[1]], nv, rng, sub);
    char key[48];
    dspy_status rc = DSPY_OK;
    m->tried[m->ntried][0] = ids[0];
    m->tried[m->ntried][1] = ids[1];
    m->tried[m->ntried++][2] = ids[2];
    if (!ns) {
        json_decref(merged);
        return DSPY_OK;
    }
    json_t *set = json_array(), *per = NULL, *subj = json_array();
    double s1 = 0, s2 = 0, sn = 0, score = NAN;
    for (size_t k = 0; k < ns; k++) {
        json_array_append(set, json_array_get(r->val, sub[k]));
        json_array_append_new(subj, json_integer((json_int_t)sub[k]));
        s1 += pool[ids[0]].scores[sub[k]];
        s2 += pool[ids[1]].scores[sub[k]];
    }
    snprintf(key, sizeof(key), "gepa:%zu:merge", it);
    json_t *saved = opt_memo_get(r, key);
    if (saved) {
        per = json_incref(json_object_get(saved, "scores"));
        score = json_real_value(json_object_get(saved, "score"));
    } else {
        const json_t *dev = set;
        if (!(rc = opt_eval(r, &merged, &dev, 1, NULL, false, &score, &per, NULL)))
            opt_memo_put(r, key, json_pack("{s:f, s:O}", "score", score, "scores", per));
    }
    sn = sum_of(per);
    bool accepted = !rc && sn >= fmax(s1, s2);
    json_t *rec = json_pack(
        "{s:I, s:s, s:[I, I], s:I, s:O, s:[f, f], s:f, s:f, s:b, s:f, s:I, s:I}", "trial",
        (json_int_t)it, "kind", "merge", "parents", (json_int_t)ids[0], (json_int_t)ids[1],
        "ancestor", (json_int_t)ids[2], "subsample", subj, "parent_sums", s1, s2, "sum", sn,
        "score", score, "accepted", accepted, "elapsed_s", (double)(dspy__now_ns() - t0) / 1e9,
        "lm_calls", (json_int_t)(r->lm_calls - c0), "metric_calls",
        (json_int_t)(r->metric_calls - m0));
    json_decref(set);
    json_decref(subj);
    json_decref(per);
    if (rc) {
        json_decref(rec);
        json_decref(merged);
        return rc;
    }
    opt_trial(r, rec, merged, false, score, it, 0);
    if (!accepted) {
        json_decref(merged);
        return DSPY_OK;
    }
    m->due--;
    m->tested++;
    return add_child(r, pool, npool, merged, (long)ids[0], (long)ids[1], 0, it);
}

dspy_status opt_gepa(struct opt_run *r, struct dspy_error *err)
{
    const struct dspy_optimize_options *o = r->o;
    size_t np = dspy_program_count(r->student), npool = 0, nv = json_array_size(r->val);
    size_t ntrain = json_array_size(r->train);
    long budget = dspy__gepa_budget(np, o->auto_budget, o->max_metric_calls, o->max_full_evals,
                                    ntrain, nv);
    struct gcand *pool = dspy_calloc(MAX_POOL, sizeof(*pool));
    bool *front = dspy_calloc(MAX_POOL * (nv ? nv : 1), sizeof(*front));
    struct sampler sampler = { .ids = dspy_malloc((ntrain + MINIBATCH) * sizeof(size_t)),
                               .epoch = -1 };
    struct merge merge = { .on = !o->no_merge,
                           .max = o->max_merge_invocations < 0 ? 5 : o->max_merge_invocations,
                           .tried = dspy_calloc(MAX_POOL, sizeof(*merge.tried)) };
    /* one generator for every draw, as gepa's: parent choice, minibatches, merges */
    struct dspy__pyrandom rng;
    dspy_status rc = DSPY_OK;
    int lost = 0; /* merge attempts lost in a row to zero ancestor weights */
    unsigned conc = o->concurrency ? o->concurrency : 16;
    size_t ahead = o->lookahead >= 0 ? (size_t)o->lookahead : conc / MINIBATCH;
    size_t ahead_next = 0, ahead_npool = 0, ahead_runs = 0;
    ahead = ahead > MAX_AHEAD ? MAX_AHEAD : ahead;
    dspy__pyrandom_seed(&rng, o->seed);
    if (!pool || !front || !sampler.ids || !merge.tried) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out;
    }
    /* the seed candidate on the full valset (also the baseline) */
    pool[0].cand = opt_candidate_of(r->student);
    pool[0].parent[0] = pool[0].parent[1] = -1;
    if (!pool[0].cand || (rc = full_eval(r, &pool[0], "gepa:seed")))
        goto out;
    npool = 1;
    r->baseline = pool[0].agg;
    opt_event(r, "baseline", 0, 0, r->baseline);
    if (o->cycle)
        dspy_cycle_plan(o->cycle, (uint64_t)(budget > 0 ? budget : 0));
    for (size_t it = 1; (long)r->metric_calls < budget && npool < MAX_POOL &&
                        merge.ntried < MAX_POOL && !opt_check_budget(r);
         it++) {
        if (merge.on && merge.due > 0 && merge.last_new) {
            json_t *merged = NULL;
            size_t ids[3];
            merge.attempts++;
            int got = dspy__gepa_attempt_merge(pool, npool, nv, np, &merge, front, &rng, &merged,
                                               ids);
            if (got < 0 && ++lost < 10) /* gepa loses the iteration, tries again next one */
                continue;
            lost = 0; /* gepa would retry forever; ten lost iterations end the attempt */
            merge.last_new = false;
            if (got > 0) { /* accepted or not, the iteration makes no mutation */
                if ((rc = merge_step(r, pool, &npool, &merge, merged, ids, &rng, it)))
                    goto out;
                continue;
            }
        }
        merge.last_new = false;
        if (ahead > 1 && (it >= ahead_next || npool != ahead_npool)) {
            lookahead(r, pool, npool, front, &rng, &sampler, it, ahead);
            ahead_next = it + ahead;
            ahead_npool = npool;
            ahead_runs++;
        }
        char key[48];
        uint64_t t0 = dspy__now_ns(), c0 = r->lm_calls, m0 = r->metric_calls;
        snprintf(key, sizeof(key), "gepa:%zu", it);
        json_t *saved = opt_memo_get(r, key);
        size_t parent = select_parent(pool, npool, nv, front, &rng);
        size_t ids[MINIBATCH], pred = pool[parent].next_pred++ % np;
        next_minibatch(&sampler, ntrain, it - 1, &rng, ids);
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
            json_t *child = json_deep_copy(pool[parent].cand);
            json_array_set_new(json_object_get(child, "instructions"), pred, json_string(inst));
            if ((rc = add_child(r, pool, &npool, child, (long)parent, -1, (pred + 1) % np, it))) {
                dspy_free(inst);
                goto out;
            }
            merge.last_new = true; /* a new program: schedule a merge */
            if (merge.tested < merge.max)
                merge.due++;
        }
        dspy_free(inst);
    }
out:
    json_object_set_new(r->report_extra, "lookahead",
                        json_pack("{s:I, s:I}", "depth", (json_int_t)(ahead > 1 ? ahead : 0),
                                  "runs", (json_int_t)ahead_runs));
    json_object_set_new(r->report_extra, "merge",
                        json_pack("{s:b, s:I, s:I, s:I}", "enabled", merge.on, "max_invocations",
                                  (json_int_t)merge.max, "attempts", (json_int_t)merge.attempts,
                                  "accepted", (json_int_t)merge.tested));
    /* the best aggregate valset score wins; the seed counts */
    for (size_t i = 0; pool && i < npool; i++)
        if (isnan(r->best) || pool[i].agg > r->best) {
            r->best = pool[i].agg;
            json_decref(r->best_cand);
            r->best_cand = json_incref(pool[i].cand);
        }
    for (size_t i = 0; pool && i < MAX_POOL; i++) {
        json_decref(pool[i].cand);
        dspy_free(pool[i].scores);
    }
    dspy_free(pool);
    dspy_free(front);
    dspy_free(sampler.ids);
    dspy_free(merge.tried);
    dspy_free(merge.descs);
    return rc;
}

/* Genetic search (optimize layer): a population of candidates (instruction text and a demo
 * subset per predictor), fitness on a minibatch per generation with every individual
 * evaluated concurrently, the elite fully evaluated, tournament selection, elitism,
 * sentence-level instruction crossover, demo-set crossover, and mutation by an LM rewrite of
 * the instruction (the prompt model) or a demo swap. Seeded and reproducible. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/status.h"
#include "optimize/optimize_run.h"

#define MAX_POP 64

static const char REWRITE_SIG[] = "current_instruction, task_demos -> new_instruction";
static const char REWRITE_DOC[] =
    "You are an instruction optimizer for large language models. Rewrite the current "
    "instruction so that a language model following it solves the task shown by the "
    "examples better. Keep what works; make it specific.";

/* Sentences of a text: split after '.', '!' or '?' followed by a space or the end. */
static json_t *sentences(const char *text)
{
    json_t *out = json_array();
    const char *s = text;
    while (s && *s) {
        while (*s == ' ' || *s == '\n')
            s++;
        if (!*s)
            break;
        const char *e = s;
        while (*e &&
               !((*e == '.' || *e == '!' || *e == '?') && (e[1] == ' ' || !e[1] || e[1] == '\n')))
            e++;
        if (*e)
            e++;
        json_array_append_new(out, json_stringn(s, (size_t)(e - s)));
        s = e;
    }
    return out;
}

static bool has_sentence(const json_t *list, const char *s)
{
    for (size_t i = 0; i < json_array_size(list); i++)
        if (!strcmp(json_string_value(json_array_get(list, i)), s))
            return true;
    return false;
}

/* Sentence-level crossover: the first sentence (the task) from parent a, then every other
 * sentence of either parent kept with probability 1/2, in order, without repeats. */
static char *cross_instructions(const char *a, const char *b, struct dspy__rng *rng)
{
    json_t *sa = sentences(a), *sb = sentences(b), *kept = json_array();
    struct dspy_buf out;
    dspy__buf_init(&out, 1u << 16);
    for (int side = 0; side < 2; side++) {
        json_t *src = side ? sb : sa;
        for (size_t i = 0; i < json_array_size(src); i++) {
            const char *s = json_string_value(json_array_get(src, i));
            bool first = !side && i == 0;
            if (has_sentence(kept, s) || (!first && dspy__rng_unit(rng) >= 0.5))
                continue;
            json_array_append_new(kept, json_string(s));
        }
    }
    for (size_t i = 0; i < json_array_size(kept); i++) {
        if (i)
            dspy__buf_addc(&out, ' ');
        dspy__buf_adds(&out, json_string_value(json_array_get(kept, i)));
    }
    json_decref(sa);
    json_decref(sb);
    json_decref(kept);
    char *text = dspy__buf_detach(&out, NULL);
    return text ? text : dspy_strdup(a);
}

/* Demo-set crossover: each position from either parent, at most `max` demos, no repeats. */
static json_t *cross_demos(const json_t *a, const json_t *b, long max, struct dspy__rng *rng)
{
    json_t *out = json_array();
    size_t n = json_array_size(a) > json_array_size(b) ? json_array_size(a) : json_array_size(b);
    for (size_t i = 0; i < n && (long)json_array_size(out) < max; i++) {
        const json_t *pick = dspy__rng_unit(rng) < 0.5 ? json_array_get(a, i)
                                                       : json_array_get(b, i);
        if (!pick)
            pick = json_array_get(a, i) ? json_array_get(a, i) : json_array_get(b, i);
        bool dup = false;
        for (size_t k = 0; k < json_array_size(out); k++)
            dup |= json_equal(json_array_get(out, k), (json_t *)pick);
        if (pick && !dup)
            json_array_append(out, (json_t *)pick);
    }
    return out;
}

static char *demos_text(dspy_program *p, size_t pred, const json_t *demos)
{
    const dspy_signature *sig = dspy_module_signature(dspy_program_module(p, pred));
    struct dspy_buf b;
    dspy__buf_init(&b, 1u << 16);
    for (size_t i = 0; i < json_array_size(demos) && i < 3; i++) {
        const json_t *d = json_array_get(demos, i);
        for (size_t f = 0; f < dspy_signature_nfields(sig); f++) {
            const struct dspy_field *fd = dspy_signature_field(sig, f);
            const json_t *v = json_object_get(d, fd->name);
            if (json_is_string(v))
                dspy__buf_addf(&b, "%s %.400s\n", fd->prefix, json_string_value(v));
        }
        dspy__buf_adds(&b, "\n");
    }
    char *t = dspy__buf_detach(&b, NULL);
    return t ? t : dspy_strdup("");
}

/* Mutation by LM rewrite of one predictor's instruction on the prompt model. */
static char *rewrite(struct opt_run *r, size_t pred, const char *current, const json_t *demos)
{
    dspy_signature *sig = NULL;
    dspy_module *m = NULL;
    dspy_program *p = NULL;
    json_t *out = NULL;
    char *text = NULL, *shown = demos_text(r->student, pred, demos);
    struct dspy_call_info info;
    struct dspy_call_config cfg = DSPY_CALL_CONFIG_INIT;
    memset(&info, 0, sizeof(info));
    cfg.temperature = 1.0;
    if (!dspy_signature_parse(REWRITE_SIG, REWRITE_DOC, &sig, NULL) &&
        (m = dspy_module_new(DSPY_MODULE_PREDICT, sig, DSPY_ADAPTER_CHAT)) &&
        (p = dspy_program_single(m))) {
        json_t *in = json_pack("{s:s, s:s}", "current_instruction", current, "task_demos",
                               shown ? shown : "");
        dspy_lm *lm = r->o->prompt_lm ? r->o->prompt_lm : r->o->task_lm;
        dspy_status rc = in ? dspy_program_call(p, lm, in, &cfg, &out, &info, NULL) : DSPY_ENOMEM;
        opt_account(r, lm, &info, rc);
        const json_t *v = json_object_get(out, "new_instruction");
        if (!rc && json_is_string(v) && *json_string_value(v)) {
            text = dspy_strdup(json_string_value(v));
            dspy__strip_prefix(text);
        }
        json_decref(in);
    } else if (m && !p) {
        dspy_module_free(m);
    }
    json_decref(out);
    dspy_program_free(p);
    dspy_signature_free(sig);
    dspy_free(shown);
    return text;
}

struct indiv {
    json_t *cand;
    double fitness;
};

static size_t tournament(const struct indiv *pop, size_t n, struct dspy__rng *rng)
{
    size_t best = dspy__rng_below(rng, n);
    for (int k = 1; k < 3; k++) {
        size_t c = dspy__rng_below(rng, n);
        if (pop[c].fitness > pop[best].fitness)
            best = c;
    }
    return best;
}

dspy_status opt_genetic(struct opt_run *r, struct dspy_error *err)
{
    const struct dspy_optimize_options *o = r->o;
    size_t np = dspy_program_count(r->student);
    size_t P = o->population > 1 ? (size_t)o->population : 8;
    size_t G = o->generations > 0 ? (size_t)o->generations : 5;
    double rate = o->mutation_rate >= 0 ? o->mutation_rate : 0.3;
    size_t elite = P > 4 ? 2 : 1, nv = json_array_size(r->val);
    size_t mb = nv > 35 ? 35 : nv;
    long max_demos = o->max_bootstrapped_demos < 0 ? 4 : o->max_bootstrapped_demos;
    struct indiv pop[MAX_POP], next[MAX_POP];
    json_t *pool = json_array(); /* demos to draw from in mutation */
    dspy_status rc = DSPY_OK;
    if (P > MAX_POP)
        P = MAX_POP;
    memset(pop, 0, sizeof(pop));
    memset(next, 0, sizeof(next));
    if (o->cycle)
        dspy_cycle_plan(o->cycle, G);
    /* generation 0: the seed-schedule demo sets (zero-shot, labeled, bootstrap, shuffled
     * bootstraps) with the program's instructions */
    long seeds[MAX_POP];
    json_t *cands0[MAX_POP];
    for (size_t i = 0; i < P; i++)
        seeds[i] = (long)i - 3;
    /* their bootstraps run at once (each seed draws from its own generator) */
    if ((rc = opt_schedule_candidates(r, P, seeds, max_demos, max_demos, 1, NULL, cands0)))
        goto out;
    for (size_t i = 0; i < P; i++) {
        pop[i].cand = cands0[i];
        json_t *d, *demos = json_object_get(pop[i].cand, "demos");
        size_t k;
        json_array_foreach(demos, k, d)
            json_array_extend(pool, d);
    }
    for (size_t i = 0; i < json_array_size(r->train); i++)
        json_array_append(pool, json_array_get(r->train, i));
    for (size_t g = 0; g < G && !opt_check_budget(r); g++) {
        char key[48];
        uint64_t t0 = dspy__now_ns(), c0 = r->lm_calls;
        struct dspy__rng rng;
        /* fitness: every individual on this generation's minibatch, at once */
        json_t *set = json_array();
        size_t *idx = dspy_malloc(mb * sizeof(*idx) + 1);
        dspy__rng_seed(&rng, o->seed, RNG_MINIBATCH, 1000 + g);
        dspy__rng_sample(&rng, nv, mb, idx);
        for (size_t k = 0; k < mb; k++)
            json_array_append(set, json_array_get(r->val, idx[k]));
        dspy_free(idx);
        snprintf(key, sizeof(key), "genetic:%zu", g);
        json_t *saved = opt_memo_get(r, key), *fits = NULL;
        if (saved) {
            fits = json_incref(saved);
        } else {
            json_t *cands[MAX_POP];
            const json_t *sets[MAX_POP];
            double scores[MAX_POP];
            for (size_t i = 0; i < P; i++) {
                cands[i] = pop[i].cand;
                sets[i] = set;
            }
            if ((rc = opt_eval(r, cands, sets, P, NULL, false, scores, NULL, NULL))) {
                json_decref(set);
                goto out;
            }
            fits = json_array();
            for (size_t i = 0; i < P; i++)
                json_array_append_new(fits, json_real(scores[i]));
            opt_memo_put(r, key, json_incref(fits));
        }
        json_decref(set);
        for (size_t i = 0; i < P; i++)
            pop[i].fitness = json_real_value(json_array_get(fits, i));
        json_decref(fits);
        /* order by fitness (stable), best first */
        for (size_t i = 1; i < P; i++)
            for (size_t j = i; j > 0 && pop[j].fitness > pop[j - 1].fitness; j--) {
                struct indiv t = pop[j];
                pop[j] = pop[j - 1];
                pop[j - 1] = t;
            }
        json_t *rec = json_pack("{s:I, s:s, s:I, s:f, s:f, s:f, s:I, s:I}", "trial", (json_int_t)g,
                                "kind", "minibatch", "population", (json_int_t)P, "score",
                                pop[0].fitness, "worst", pop[P - 1].fitness, "elapsed_s",
                                (double)(dspy__now_ns() - t0) / 1e9, "lm_calls",
                                (json_int_t)(r->lm_calls - c0), "examples", (json_int_t)mb);
        opt_trial(r, rec, pop[0].cand, false, pop[0].fitness, g, G);
        /* the elite's best gets a full evaluation */
        snprintf(key, sizeof(key), "genetic:%zu:full", g);
        json_t *fsaved = opt_memo_get(r, key);
        double fs;
        uint64_t f0 = dspy__now_ns(), fc0 = r->lm_calls;
        if (fsaved) {
            fs = json_real_value(fsaved);
        } else {
            const json_t *dev = r->val;
            if ((rc = opt_eval(r, &pop[0].cand, &dev, 1, NULL, false, &fs, NULL, NULL)))
                goto out;
            opt_memo_put(r, key, json_real(fs));
        }
        opt_trial(r,
                  json_pack("{s:I, s:s, s:f, s:f, s:I}", "trial", (json_int_t)g, "kind", "full",
                            "score", fs, "elapsed_s", (double)(dspy__now_ns() - f0) / 1e9,
                            "lm_calls", (json_int_t)(r->lm_calls - fc0)),
                  pop[0].cand, true, fs, g, G);
        if (g + 1 == G)
            break;
        /* the next generation: elites, then children of tournament winners */
        for (size_t i = 0; i < elite; i++)
            next[i].cand = json_deep_copy(pop[i].cand);
        for (size_t i = elite; i < P; i++) {
            dspy__rng_seed(&rng, o->seed, RNG_GENETIC, g * MAX_POP + i);
            size_t a = tournament(pop, P, &rng), b = tournament(pop, P, &rng);
            json_t *child = json_deep_copy(pop[a].cand);
            json_t *ins = json_object_get(child, "instructions");
            json_t *dem = json_object_get(child, "demos");
            for (size_t p = 0; p < np; p++) {
                const char *ia = json_string_value(
                    json_array_get(json_object_get(pop[a].cand, "instructions"), p));
                const char *ib = json_string_value(
                    json_array_get(json_object_get(pop[b].cand, "instructions"), p));
                char *mixed = cross_instructions(ia ? ia : "", ib ? ib : "", &rng);
                json_array_set_new(ins, p, json_string(mixed));
                dspy_free(mixed);
                json_array_set_new(
                    dem, p,
                    cross_demos(json_array_get(json_object_get(pop[a].cand, "demos"), p),
                                json_array_get(json_object_get(pop[b].cand, "demos"), p), max_demos,
                                &rng));
                if (dspy__rng_unit(&rng) >= rate)
                    continue;
                json_t *d = json_array_get(dem, p);
                if (dspy__rng_unit(&rng) < 0.5 || !json_array_size(pool)) {
                    /* mutation by LM rewrite (memoized: the rewrite of this slot) */
                    char mkey[96];
                    snprintf(mkey, sizeof(mkey), "genetic:%zu:%zu:%zu", g, i, p);
                    json_t *ms = opt_memo_get(r, mkey);
                    char *text = ms ? dspy_strdup(json_string_value(ms))
                                    : rewrite(r, p, json_string_value(json_array_get(ins, p)), d);
                    if (text && *text) {
                        json_array_set_new(ins, p, json_string(text));
                        if (!ms)
                            opt_memo_put(r, mkey, json_string(text));
                    }
                    dspy_free(text);
                } else { /* demo swap: one demo replaced by one from the pool */
                    const json_t *in = json_array_get(pool,
                                                      dspy__rng_below(&rng, json_array_size(pool)));
                    if (json_array_size(d))
                        json_array_set(d, dspy__rng_below(&rng, json_array_size(d)), (json_t *)in);
                    else
                        json_array_append(d, (json_t *)in);
                }
            }
            next[i].cand = child;
        }
        for (size_t i = 0; i < P; i++) {
            json_decref(pop[i].cand);
            pop[i] = next[i];
            next[i].cand = NULL;
        }
    }
out:
    for (size_t i = 0; i < MAX_POP; i++) {
        json_decref(pop[i].cand);
        json_decref(next[i].cand);
    }
    json_decref(pool);
    (void)err;
    return rc;
}

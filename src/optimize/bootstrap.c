/* Few-shot optimizers (optimize layer): LabeledFewShot, BootstrapFewShot (a teacher with
 * labelled demos, traces kept when the metric passes, rounds with rollout ids, run in
 * concurrent windows, several bootstraps at once, that give DSPy's in-order result) and the random search over DSPy's
 * seed schedule, every candidate's evaluation concurrent. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/clock.h"
#include "optimize/optimize_run.h"

/* k sampled example indices for each predictor in turn, from one Random(seed) (DSPy's
 * LabeledFewShot shares one Random(0) across the predictors; --seed 0 draws as DSPy does). */
static dspy_status labeled_indices(struct opt_run *r, size_t n, long k, size_t npred, size_t *idx,
                                   size_t *count)
{
    struct dspy__pyrandom rng;
    dspy_status rc = DSPY_OK;
    dspy__pyrandom_seed(&rng, r->fewshot_seed);
    *count = (size_t)k < n ? (size_t)k : n;
    for (size_t p = 0; p < npred && !rc; p++)
        rc = dspy__pyrandom_sample(&rng, n, *count, idx + p * *count);
    return rc;
}

json_t *opt_labeled(struct opt_run *r, const json_t *train, long k, uint64_t key)
{
    size_t n = json_array_size(train), np = dspy_program_count(r->student), count;
    size_t *idx = dspy_malloc((np * n + 1) * sizeof(*idx));
    json_t *cand = opt_candidate_of(r->student);
    if (!idx || !cand) {
        dspy_free(idx);
        json_decref(cand);
        return NULL;
    }
    (void)key;
    if (labeled_indices(r, n, k < 0 ? 0 : k, np, idx, &count)) {
        dspy_free(idx);
        json_decref(cand);
        return NULL;
    }
    json_t *demos = json_object_get(cand, "demos");
    for (size_t p = 0; p < np; p++) {
        json_t *d = json_array();
        for (size_t i = 0; i < count; i++)
            json_array_append(d, json_array_get(train, idx[p * count + i]));
        json_array_set_new(demos, p, d);
    }
    dspy_free(idx);
    return cand;
}

/* The teacher's candidate with example `ex` taken out of every predictor's demos (DSPy
 * removes the example being bootstrapped from the teacher's demos), or NULL when no
 * predictor holds it (the shared teacher does). */
static json_t *teacher_without(const json_t *teacher, const json_t *ex)
{
    json_t *demos = json_object_get(teacher, "demos"), *d;
    size_t p;
    bool found = false;
    json_array_foreach(demos, p, d)
        for (size_t i = 0; i < json_array_size(d); i++)
            found |= json_array_get(d, i) == ex;
    if (!found)
        return NULL;
    json_t *c = json_deep_copy(teacher);
    json_t *cd = json_object_get(c, "demos");
    json_array_foreach(cd, p, d) {
        json_t *src = json_array_get(demos, p);
        for (size_t i = json_array_size(src); i-- > 0;)
            if (json_array_get(src, i) == ex)
                json_array_remove(d, i);
    }
    return c;
}

/* An augmented demo from one trace step: {"augmented": true, inputs..., outputs...}. */
static json_t *augmented_demo(const json_t *step)
{
    json_t *d = json_pack("{s:b}", "augmented", 1);
    if (d) {
        json_object_update(d, json_object_get(step, "inputs"));
        json_object_update(d, json_object_get(step, "outputs"));
    }
    return d;
}

/* One bootstrap of opt_bootstrap_many: its teacher, the traces found so far and the window
 * of examples [pos, end) it runs next. */
struct boot {
    const json_t *train;
    long max_boot, max_labeled;
    uint64_t key;
    json_t *teacher, **traces;
    size_t n, pos, end, found;
    bool active;
};

/* Jobs of one round of the window [b->pos, b->end): job 0 the shared teacher over the
 * examples it does not hold as demos, one job per example it does hold. */
static void boot_jobs(const struct boot *b, json_t **cands, json_t **sets, size_t *first,
                      size_t *jobs)
{
    json_t *shared = json_array();
    cands[*jobs] = json_incref(b->teacher);
    sets[*jobs] = shared;
    first[(*jobs)++] = b->pos;
    for (size_t i = b->pos; i < b->end; i++) {
        if (b->traces[i])
            continue;
        json_t *ex = json_array_get(b->train, i), *own = teacher_without(b->teacher, ex);
        if (!own) {
            json_array_append(shared, ex);
            continue;
        }
        cands[*jobs] = own;
        sets[*jobs] = json_array();
        json_array_append(sets[*jobs], ex);
        first[(*jobs)++] = i;
    }
}

/* Run every active bootstrap's window for `rounds` rounds, all of them in one evaluation per
 * round; fill traces[i] for each example whose prediction passes the metric. */
static dspy_status teach_windows(struct opt_run *r, struct boot *bs, size_t k, long rounds)
{
    size_t n = 0;
    for (size_t b = 0; b < k; b++)
        n += bs[b].active ? bs[b].end - bs[b].pos + 1 : 0;
    json_t **cands = dspy_calloc(n + 1, sizeof(*cands));
    json_t **sets = dspy_calloc(n + 1, sizeof(*sets));
    size_t *first = dspy_calloc(n + 1, sizeof(*first)); /* example of each job */
    size_t *owner = dspy_calloc(n + 1, sizeof(*owner)); /* bootstrap of each job */
    double *scores = dspy_calloc(n + 1, sizeof(*scores));
    json_t **per = dspy_calloc(n + 1, sizeof(*per)), **preds = dspy_calloc(n + 1, sizeof(*preds));
    dspy_status rc = DSPY_OK;
    if (!cands || !sets || !first || !owner || !scores || !per || !preds) {
        rc = DSPY_ENOMEM;
        goto out;
    }
    for (long round = 0; round < rounds && !r->stopped; round++) {
        size_t jobs = 0;
        for (size_t b = 0; b < k; b++) {
            size_t j0 = jobs;
            if (!bs[b].active)
                continue;
            boot_jobs(&bs[b], cands, sets, first, &jobs);
            for (size_t j = j0; j < jobs; j++)
                owner[j] = b;
        }
        struct dspy_call_config cfg = DSPY_CALL_CONFIG_INIT;
        if (round > 0) { /* DSPy: lm.copy(rollout_id=round_idx, temperature=1.0) */
            cfg.has_rollout_id = true;
            cfg.rollout_id = round;
            cfg.temperature = 1.0;
        }
        rc = opt_eval(r, cands, (const json_t *const *)sets, jobs, round ? &cfg : NULL, true,
                      scores, per, preds);
        for (size_t j = 0; !rc && j < jobs; j++) {
            struct boot *b = &bs[owner[j]];
            bool shared = cands[j] == b->teacher;
            for (size_t q = 0; q < json_array_size(sets[j]); q++) {
                const json_t *ex = json_array_get(sets[j], q);
                const json_t *pred = json_array_get(preds[j], q);
                double s = json_real_value(json_array_get(per[j], q));
                size_t i = first[j];
                if (shared) /* find the example's index in the window */
                    while (json_array_get(b->train, i) != ex)
                        i++;
                if (!json_is_object(pred) || !(s != 0.0) || b->traces[i])
                    continue;
                b->traces[i] = dspy__program_trace(r->student, ex, pred);
            }
        }
        for (size_t j = 0; j < jobs; j++) {
            json_decref(cands[j]);
            json_decref(sets[j]);
            json_decref(per[j]);
            json_decref(preds[j]);
            cands[j] = sets[j] = per[j] = preds[j] = NULL;
        }
        if (rc)
            break;
    }
out:
    dspy_free(cands);
    dspy_free(sets);
    dspy_free(first);
    dspy_free(owner);
    dspy_free(scores);
    dspy_free(per);
    dspy_free(preds);
    return rc;
}

/* The candidate of a finished bootstrap: the first max_boot traces per predictor plus a
 * sample of the rest of its trainset. */
static dspy_status boot_finish(struct opt_run *r, struct boot *b, json_t **cand)
{
    const json_t *train = b->train;
    size_t n = b->n, np = dspy_program_count(r->student);
    size_t *raw = dspy_malloc((n + 1) * sizeof(*raw));
    json_t **traces = b->traces;
    dspy_status rc = DSPY_OK;
    *cand = NULL;
    if (!raw)
        return DSPY_ENOMEM;
    /* Keep the first max_boot successes; the rest of the trainset is the raw pool. */
    size_t kept = 0, nraw = 0;
    for (size_t i = 0; i < n; i++) {
        if (traces[i] && kept < (size_t)b->max_boot)
            kept++;
        else {
            json_decref(traces[i]);
            traces[i] = NULL;
            raw[nraw++] = i;
        }
    }
    /* DSPy: random.Random(0).shuffle(validation), then a fresh Random(0) samples each
     * predictor's labelled demos from it (3.4's form; 3.3 sampled each predictor from the
     * one before's sample) */
    struct dspy__pyrandom rng;
    dspy__pyrandom_seed(&rng, r->fewshot_seed);
    dspy__pyrandom_shuffle(&rng, raw, nraw);
    dspy__pyrandom_seed(&rng, r->fewshot_seed);
    size_t *pick = dspy_malloc((nraw + 1) * sizeof(*pick));
    if (!pick || !(*cand = opt_candidate_of(r->student))) {
        rc = DSPY_ENOMEM;
        goto out;
    }
    json_t *demos = json_object_get(*cand, "demos");
    for (size_t p = 0; p < np; p++) {
        json_t *d = json_array();
        const char *pname = dspy_program_state_name(r->student, p);
        for (size_t i = 0; i < n; i++) {
            if (!traces[i])
                continue;
            json_t *step;
            size_t s;
            json_array_foreach(traces[i], s, step)
                if (!strcmp(json_string_value(json_object_get(step, "predictor")), pname))
                    json_array_append_new(d, augmented_demo(step));
        }
        long want = b->max_labeled - (long)json_array_size(d);
        size_t take = want <= 0 ? 0 : (size_t)want < nraw ? (size_t)want : nraw;
        if ((rc = dspy__pyrandom_sample(&rng, nraw, take, pick))) {
            json_decref(d);
            goto out;
        }
        for (size_t i = 0; i < take; i++)
            json_array_append(d, json_array_get(train, raw[pick[i]]));
        json_array_set_new(demos, p, d);
    }
out:
    if (rc) {
        json_decref(*cand);
        *cand = NULL;
    }
    dspy_free(pick);
    dspy_free(raw);
    return rc;
}

dspy_status opt_bootstrap_many(struct opt_run *r, size_t k, const json_t *const *trains,
                               const long *max_boot, long max_labeled, long max_rounds,
                               const uint64_t *keys, json_t **cands)
{
    struct boot *bs = dspy_calloc(k + 1, sizeof(*bs));
    dspy_status rc = DSPY_OK;
    if (!bs)
        return DSPY_ENOMEM;
    for (size_t b = 0; b < k; b++) {
        char mkey[64];
        snprintf(mkey, sizeof(mkey), "boot:%llu", (unsigned long long)keys[b]);
        json_t *saved = opt_memo_get(r, mkey);
        cands[b] = NULL;
        bs[b].train = trains[b];
        bs[b].n = json_array_size(trains[b]);
        bs[b].max_boot = max_boot[b];
        bs[b].max_labeled = max_labeled;
        bs[b].key = keys[b];
        if (saved) {
            if (!(cands[b] = json_deep_copy(saved)))
                rc = DSPY_ENOMEM;
            continue;
        }
        bs[b].teacher = opt_labeled(r, trains[b], max_labeled, keys[b]);
        bs[b].traces = dspy_calloc(bs[b].n + 1, sizeof(*bs[b].traces));
        if (!bs[b].teacher || !bs[b].traces)
            rc = DSPY_ENOMEM;
        bs[b].active = bs[b].n > 0 && bs[b].max_boot > 0;
    }
    /* Windows of every bootstrap run at once; the result is DSPy's sequential walk, because
     * an example's success does not depend on the others and the first max_boot successes in
     * trainset order win, however far past them a window reached. A window is sized for the
     * successes still missing, so that the bootstraps together fill about --concurrency. */
    size_t chunk = r->o->concurrency < 4 ? 4 : r->o->concurrency > 64 ? 64 : r->o->concurrency;
    for (;;) {
        size_t active = 0;
        for (size_t b = 0; b < k; b++)
            active += bs[b].active;
        if (rc || !active || r->stopped)
            break;
        for (size_t b = 0; b < k; b++) {
            struct boot *s = &bs[b];
            size_t need = (size_t)s->max_boot - s->found, w = chunk / active;
            if (w < 2 * need)
                w = 2 * need;
            if (w > chunk)
                w = chunk;
            s->end = s->pos + w < s->n ? s->pos + w : s->n;
        }
        if ((rc = teach_windows(r, bs, k, max_rounds)))
            break;
        for (size_t b = 0; b < k; b++) {
            struct boot *s = &bs[b];
            if (!s->active)
                continue;
            for (size_t i = s->pos; i < s->end; i++)
                s->found += s->traces[i] != NULL;
            s->pos = s->end;
            s->active = s->pos < s->n && s->found < (size_t)s->max_boot;
        }
    }
    /* finished in trainset order and recorded in index order, as the sequential run does */
    for (size_t b = 0; !rc && b < k; b++) {
        if (cands[b])
            continue;
        if ((rc = boot_finish(r, &bs[b], &cands[b])))
            break;
        char mkey[64];
        snprintf(mkey, sizeof(mkey), "boot:%llu", (unsigned long long)keys[b]);
        if (!r->stopped) /* a bootstrap cut short by a budget is not the one to resume with */
            opt_memo_put(r, mkey, json_deep_copy(cands[b]));
    }
    for (size_t b = 0; b < k; b++) {
        if (rc) {
            json_decref(cands[b]);
            cands[b] = NULL;
        }
        for (size_t i = 0; bs[b].traces && i < bs[b].n; i++)
            json_decref(bs[b].traces[i]);
        dspy_free(bs[b].traces);
        json_decref(bs[b].teacher);
    }
    dspy_free(bs);
    return rc;
}

dspy_status opt_bootstrap(struct opt_run *r, const json_t *train, long max_boot, long max_labeled,
                          long max_rounds, uint64_t key, json_t **cand)
{
    return opt_bootstrap_many(r, 1, &train, &max_boot, max_labeled, max_rounds, &key, cand);
}

/* The schedule's candidate for `seed` when it needs no LM call (*cand set), else the
 * bootstrap it needs: its trainset (new reference) and max_bootstrapped_demos. The draws
 * are made here, so that candidates prepared in order draw as DSPy's loop does. */
static dspy_status schedule_prepare(struct opt_run *r, long seed, long max_boot, long max_labeled,
                                    struct dspy__pyrandom *shared, json_t **cand, json_t **train,
                                    long *size)
{
    uint64_t key = (uint64_t)(seed + 10);
    *cand = *train = NULL;
    if (seed == -3) { /* zero-shot */
        *cand = opt_candidate_of(r->student);
        json_t *demos = json_object_get(*cand, "demos");
        for (size_t p = 0; p < json_array_size(demos); p++)
            json_array_set_new(demos, p, json_array());
        return *cand ? DSPY_OK : DSPY_ENOMEM;
    }
    if (seed == -2) {
        *cand = opt_labeled(r, r->train, max_labeled, key);
        return *cand ? DSPY_OK : DSPY_ENOMEM;
    }
    *size = max_boot;
    if (seed == -1) {
        *train = json_incref((json_t *)r->train);
        return DSPY_OK;
    }
    size_t n = json_array_size(r->train);
    size_t *idx = dspy_malloc((n + 1) * sizeof(*idx));
    json_t *shuffled = json_array();
    if (!idx || !shuffled) {
        dspy_free(idx);
        json_decref(shuffled);
        return DSPY_ENOMEM;
    }
    /* DSPy: random.Random(seed).shuffle(trainset) and Random(seed).randint(1, max) for
     * schedule seed s >= 0 (ours is Random(s + --seed), DSPy's at --seed 0), or both from
     * one shared generator (MIPROv2's create_n_fewshot_demo_sets) */
    struct dspy__pyrandom own, *rng = shared ? shared : &own;
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    if (!shared)
        dspy__pyrandom_seed(&own, (uint64_t)seed + r->o->seed);
    dspy__pyrandom_shuffle(rng, idx, n);
    for (size_t i = 0; i < n; i++)
        json_array_append(shuffled, json_array_get(r->train, idx[i]));
    if (!shared)
        dspy__pyrandom_seed(&own, (uint64_t)seed + r->o->seed);
    *size = max_boot >= 1 ? dspy__pyrandom_randint(rng, 1, max_boot) : 0;
    dspy_free(idx);
    *train = shuffled;
    return DSPY_OK;
}

dspy_status opt_schedule_candidates(struct opt_run *r, size_t k, const long *seeds, long max_boot,
                                    long max_labeled, long max_rounds,
                                    struct dspy__pyrandom *shared, json_t **cands)
{
    json_t **trains = dspy_calloc(k + 1, sizeof(*trains));
    json_t **boots = dspy_calloc(k + 1, sizeof(*boots));
    long *sizes = dspy_calloc(k + 1, sizeof(*sizes));
    uint64_t *keys = dspy_calloc(k + 1, sizeof(*keys));
    size_t *which = dspy_calloc(k + 1, sizeof(*which)), nb = 0;
    dspy_status rc = trains && boots && sizes && keys && which ? DSPY_OK : DSPY_ENOMEM;
    for (size_t i = 0; i < k; i++)
        cands[i] = NULL;
    /* every draw first, in the schedule's order; then the bootstraps, all at once */
    for (size_t i = 0; !rc && i < k; i++) {
        json_t *train = NULL;
        long size = 0;
        rc = schedule_prepare(r, seeds[i], max_boot, max_labeled, shared, &cands[i], &train, &size);
        if (!rc && train) {
            trains[nb] = train;
            sizes[nb] = size;
            keys[nb] = (uint64_t)(seeds[i] + 10);
            which[nb++] = i;
        }
    }
    if (!rc && nb)
        rc = opt_bootstrap_many(r, nb, (const json_t *const *)trains, sizes, max_labeled,
                                max_rounds, keys, boots);
    for (size_t b = 0; b < nb; b++) {
        cands[which[b]] = rc ? NULL : boots[b];
        if (rc)
            json_decref(boots[b]);
        json_decref(trains[b]);
    }
    for (size_t i = 0; rc && i < k; i++) {
        json_decref(cands[i]);
        cands[i] = NULL;
    }
    dspy_free(trains);
    dspy_free(boots);
    dspy_free(sizes);
    dspy_free(keys);
    dspy_free(which);
    return rc;
}

dspy_status opt_schedule_candidate(struct opt_run *r, long seed, long max_boot, long max_labeled,
                                   long max_rounds, struct dspy__pyrandom *shared, json_t **cand)
{
    return opt_schedule_candidates(r, 1, &seed, max_boot, max_labeled, max_rounds, shared, cand);
}

static const char *seed_name(long seed)
{
    return seed == -3   ? "zero-shot"
           : seed == -2 ? "labeled"
           : seed == -1 ? "bootstrap"
                        : "bootstrap-shuffled";
}

dspy_status opt_random_search(struct opt_run *r, struct dspy_error *err)
{
    const struct dspy_optimize_options *o = r->o;
    long boot = o->max_bootstrapped_demos < 0 ? 4 : o->max_bootstrapped_demos;
    long lab = o->max_labeled_demos < 0 ? 16 : o->max_labeled_demos;
    long rounds = o->max_rounds < 0 ? 1 : o->max_rounds;
    long ncand = o->num_candidates >= 0 ? o->num_candidates : 16;
    size_t total = (size_t)(ncand + 3), wave = o->parallel_trials ? o->parallel_trials : 4;
    dspy_status rc = DSPY_OK;
    (void)err;
    if (o->cycle)
        dspy_cycle_plan(o->cycle, total);
    for (size_t start = 0; start < total && !opt_check_budget(r); start += wave) {
        size_t end = start + wave < total ? start + wave : total, m = 0;
        json_t *cands[64];
        const json_t *sets[64];
        size_t which[64];
        double scores[64];
        uint64_t t0 = dspy__now_ns(), c0 = r->lm_calls;
        /* a wave is one checkpoint unit: its trials' evaluations ran together */
        char wkey[32];
        snprintf(wkey, sizeof(wkey), "wave:%zu", start);
        json_t *saved = opt_memo_get(r, wkey);
        long seeds[64];
        for (size_t t = start; t < end && m < 64; t++) {
            seeds[m] = (long)t - 3;
            sets[m] = r->val;
            which[m++] = t;
        }
        /* the wave's bootstraps run at once (each seed draws from its own generator) */
        if ((rc = opt_schedule_candidates(r, m, seeds, boot, lab, rounds, NULL, cands)))
            return rc;
        if (!saved && m && (rc = opt_eval(r, cands, sets, m, NULL, false, scores, NULL, NULL))) {
            for (size_t i = 0; i < m; i++)
                json_decref(cands[i]);
            return rc;
        }
        json_t *recs = saved ? json_incref(saved) : json_array();
        for (size_t i = 0; i < m; i++) {
            json_t *rec = json_array_get(recs, i);
            if (!saved) {
                rec = json_pack("{s:I, s:s, s:I, s:s, s:f, s:f, s:I, s:I}", "trial",
                                (json_int_t)which[i], "kind", "full", "seed",
                                (json_int_t)((long)which[i] - 3), "candidate",
                                seed_name((long)which[i] - 3), "score", scores[i], "elapsed_s",
                                (double)(dspy__now_ns() - t0) / 1e9, "lm_calls",
                                (json_int_t)((r->lm_calls - c0) / m), "demos",
                                (json_int_t)json_array_size(
                                    json_array_get(json_object_get(cands[i], "demos"), 0)));
                /* what the trial ran with, so a run can be compared demo by demo */
                json_object_set(rec, "demo_sets", json_object_get(cands[i], "demos"));
                json_array_append_new(recs, rec);
            }
            scores[i] = json_real_value(json_object_get(rec, "score"));
        }
        if (!saved)
            opt_memo_put(r, wkey, json_incref(recs));
        for (size_t i = 0; i < m; i++) {
            opt_trial(r, json_incref(json_array_get(recs, i)), cands[i], true, scores[i], which[i],
                      total);
            json_decref(cands[i]);
        }
        json_decref(recs);
    }
    return rc;
}

/* GEPA's merge proposer (optimize layer), as gepa's MergeProposer: two Pareto candidates
 * with a common ancestor that both outscore, merged by taking per predictor the instruction
 * that changed from the ancestor, with every draw on the shared Python generator. */
#include <math.h>
#include <string.h>

#include "optimize/gepa_int.h"

/* The per-instance Pareto fronts (front[j * n + p]: program p is best on instance j) after
 * gepa's remove_dominated_programs: programs in order of first appearance on the fronts,
 * stably sorted by aggregate score, ascending; repeatedly the first one whose every front
 * holds another surviving program is dropped. dom[p] says p was dropped or is on no front.
 * Python iterates each front (a set) in hash order, which is index order while the pool
 * holds fewer than 8 programs; here it is index order always. */
void dspy__gepa_dominators(const struct gcand *pool, size_t n, size_t nv, bool *front, bool *dom)
{
    size_t order[MAX_POOL], m = 0;
    bool seen[MAX_POOL] = { false };
    for (size_t j = 0; j < nv; j++) {
        double best = -INFINITY;
        for (size_t k = 0; k < n; k++)
            best = fmax(best, pool[k].scores[j]);
        for (size_t p = 0; p < n; p++) {
            front[j * n + p] = pool[p].scores[j] == best;
            if (front[j * n + p] && !seen[p]) {
                seen[p] = true;
                order[m++] = p;
            }
        }
    }
    for (size_t i = 1; i < m; i++) /* stable: insertion sort */
        for (size_t k = i; k > 0 && pool[order[k - 1]].agg > pool[order[k]].agg; k--) {
            size_t t = order[k];
            order[k] = order[k - 1];
            order[k - 1] = t;
        }
    for (size_t p = 0; p < n; p++)
        dom[p] = !seen[p];
    for (bool found = true; found;) {
        found = false;
        for (size_t a = 0; a < m && !found; a++) {
            size_t y = order[a];
            if (dom[y])
                continue;
            bool dominated = true;
            for (size_t j = 0; j < nv && dominated; j++) {
                if (!front[j * n + y])
                    continue;
                bool other = false;
                for (size_t b = 0; b < m && !other; b++)
                    other = order[b] != y && !dom[order[b]] && front[j * n + order[b]];
                dominated = other;
            }
            if (dominated)
                dom[y] = found = true;
        }
    }
}

static const char *inst_of(const struct gcand *g, size_t pred)
{
    const char *t = json_string_value(
        json_array_get(json_object_get(g->cand, "instructions"), pred));
    return t ? t : "";
}

static bool same_inst(const struct gcand *pool, size_t a, size_t b, size_t pred)
{
    return !strcmp(inst_of(&pool[a], pred), inst_of(&pool[b], pred));
}

static void ancestors(const struct gcand *pool, size_t node, bool *anc)
{
    for (int k = 0; k < 2; k++) {
        long p = pool[node].parent[k];
        if (p >= 0 && !anc[p]) {
            anc[p] = true;
            ancestors(pool, (size_t)p, anc);
        }
    }
}

static bool was_tried(const struct merge *m, size_t i, size_t j, size_t a)
{
    for (size_t k = 0; k < m->ntried; k++)
        if (m->tried[k][0] == i && m->tried[k][1] == j && m->tried[k][2] == a)
            return true;
    return false;
}

/* does_triplet_have_desirable_predictors: some predictor one of them left as the ancestor
 * had it while the other changed it */
static bool desirable(const struct gcand *pool, size_t np, size_t a, size_t i, size_t j)
{
    for (size_t p = 0; p < np; p++)
        if ((same_inst(pool, a, i, p) || same_inst(pool, a, j, p)) && !same_inst(pool, i, j, p))
            return true;
    return false;
}

/* find_common_ancestor_pair: 1 with (i, j, ancestor) set, 0 when none was found, -1 when
 * the ancestors' weights sum to zero (Python's choices() raises; the iteration is lost). */
static int common_ancestor_pair(const struct gcand *pool, size_t n, size_t np, const size_t *cands,
                                size_t nc, const struct merge *m, struct dspy__pyrandom *rng,
                                size_t out[3])
{
    for (int attempt = 0; attempt < 10; attempt++) {
        size_t pick[2];
        if (nc < 2 || dspy__pyrandom_sample(rng, nc, 2, pick))
            return 0;
        size_t i = cands[pick[0]], j = cands[pick[1]];
        if (j < i) {
            size_t t = i;
            i = j;
            j = t;
        }
        bool ai[MAX_POOL] = { false }, aj[MAX_POOL] = { false };
        ancestors(pool, i, ai);
        ancestors(pool, j, aj);
        if (ai[j] || aj[i])
            continue;
        size_t common[MAX_POOL], k = 0;
        double w[MAX_POOL];
        for (size_t a = 0; a < n; a++)
            if (ai[a] && aj[a] && !was_tried(m, i, j, a) && pool[a].agg <= pool[i].agg &&
                pool[a].agg <= pool[j].agg && desirable(pool, np, a, i, j)) {
                w[k] = pool[a].agg;
                common[k++] = a;
            }
        if (!k)
            continue;
        double total = 0;
        for (size_t a = 0; a < k; a++)
            total += w[a];
        if (!(total > 0))
            return -1;
        out[0] = i;
        out[1] = j;
        out[2] = common[dspy__pyrandom_choice_weighted(rng, w, k)];
        return 1;
    }
    return 0;
}

/* sample_and_attempt_merge_programs_by_common_predictors: 1 with the merged candidate in
 * *merged (caller owns) and (i, j, ancestor) in ids; 0 none; -1 as above. Per predictor the
 * merge takes the instruction that changed from the ancestor; when both changed it, the
 * better-scoring parent's (a coin on a tie); when neither did, the first parent's. */
int dspy__gepa_attempt_merge(const struct gcand *pool, size_t n, size_t nv, size_t np,
                             struct merge *m, bool *front, struct dspy__pyrandom *rng,
                             json_t **merged, size_t ids[3])
{
    bool dom[MAX_POOL];
    size_t cands[MAX_POOL], nc = 0;
    dspy__gepa_dominators(pool, n, nv, front, dom);
    for (size_t p = 0; p < n; p++) /* find_dominator_programs: the survivors on a front */
        if (!dom[p])
            for (size_t j = 0; j < nv; j++)
                if (front[j * n + p]) {
                    cands[nc++] = p;
                    break;
                }
    if (nc < 2 || n < 3)
        return 0;
    size_t *desc = dspy_malloc((2 + np) * sizeof(*desc));
    if (!desc)
        return 0;
    int found = 0;
    for (int attempt = 0; attempt < 10 && !found; attempt++) {
        int got = common_ancestor_pair(pool, n, np, cands, nc, m, rng, ids);
        if (got < 0) {
            found = -1;
            break;
        }
        if (!got || was_tried(m, ids[0], ids[1], ids[2]))
            continue;
        size_t i = ids[0], j = ids[1], a = ids[2];
        desc[0] = i;
        desc[1] = j;
        for (size_t p = 0; p < np; p++) {
            bool ai = same_inst(pool, a, i, p), aj = same_inst(pool, a, j, p);
            if ((ai || aj) && !same_inst(pool, i, j, p))
                desc[2 + p] = ai ? j : i;
            else if (!ai && !aj)
                desc[2 + p] = pool[i].agg > pool[j].agg      ? i
                              : pool[j].agg > pool[i].agg    ? j
                              : dspy__pyrandom_below(rng, 2) ? j
                                                             : i;
            else
                desc[2 + p] = i;
        }
        bool dup = false;
        for (size_t k = 0; k < m->ndescs && !dup; k++)
            dup = !memcmp(m->descs + k * (2 + np), desc, (2 + np) * sizeof(*desc));
        if (dup || nv < MERGE_OVERLAP_FLOOR) /* has_val_support_overlap */
            continue;
        size_t *grown = dspy_realloc(m->descs, (m->ndescs + 1) * (2 + np) * sizeof(*grown));
        json_t *c = json_deep_copy(pool[a].cand);
        if (!grown || !c) {
            if (grown)
                m->descs = grown;
            json_decref(c);
            break;
        }
        m->descs = grown;
        memcpy(m->descs + m->ndescs++ * (2 + np), desc, (2 + np) * sizeof(*desc));
        for (size_t p = 0; p < np; p++)
            json_array_set_new(json_object_get(c, "instructions"), p,
                               json_string(inst_of(&pool[desc[2 + p]], p)));
        *merged = c;
        found = 1;
    }
    dspy_free(desc);
    return found;
}

/* select_eval_subsample_for_merged_program: up to 2 instances where the first parent is
 * better, 2 where the second is, then ties, each drawn with sample(); the rest from those
 * left. */
size_t dspy__gepa_merge_subsample(const struct gcand *a, const struct gcand *b, size_t nv,
                                  struct dspy__pyrandom *rng, size_t *out)
{
    size_t *bucket = dspy_malloc((nv + 1) * sizeof(*bucket)), *pick = NULL, n = 0;
    bool *taken = dspy_calloc(nv + 1, sizeof(*taken));
    const size_t each = (MERGE_SUBSAMPLE + 2) / 3;
    if (!bucket || !taken || !(pick = dspy_malloc((nv + 1) * sizeof(*pick))))
        goto out;
    for (int kind = 0; kind < 4 && n < MERGE_SUBSAMPLE; kind++) {
        size_t m = 0;
        for (size_t j = 0; j < nv; j++) {
            double x = a->scores[j], y = b->scores[j];
            bool in = kind == 0 ? x > y : kind == 1 ? y > x : kind == 2 ? !(x > y || y > x) : 1;
            if (in && !taken[j])
                bucket[m++] = j;
        }
        size_t take = MERGE_SUBSAMPLE - n;
        if (kind < 3 && take > each)
            take = each;
        if (take > m)
            take = kind < 3 ? m : 0; /* too few left: nv >= the overlap floor rules it out */
        if (!take || dspy__pyrandom_sample(rng, m, take, pick))
            continue;
        for (size_t k = 0; k < take; k++) {
            out[n++] = bucket[pick[k]];
            taken[bucket[pick[k]]] = true;
        }
    }
out:
    dspy_free(bucket);
    dspy_free(taken);
    dspy_free(pick);
    return n;
}

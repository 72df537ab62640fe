/* GEPA's internals shared by its files (optimize layer): the candidate pool, the Pareto
 * fronts, and the merge proposer (gepa's MergeProposer) on the shared Python generator. */
#ifndef DSPY_OPTIMIZE_GEPA_INT_H
#define DSPY_OPTIMIZE_GEPA_INT_H

#include "optimize/optimize_int.h"

#define MAX_POOL 256
#define MERGE_SUBSAMPLE 5
#define MERGE_OVERLAP_FLOOR 5 /* gepa's val_overlap_floor */

struct gcand {
    json_t *cand;     /* {"instructions": [...], "demos": [...]} */
    double *scores;   /* per valset instance */
    double agg;       /* percent */
    long parent[2];   /* a mutation's parent, or a merge's two; -1 = none */
    size_t next_pred; /* round-robin component selection, per candidate */
};

/* The merge proposer's state (gepa's names in the comments). */
struct merge {
    bool on;
    long max;           /* max_merge_invocations */
    long due, tested;   /* merges_due, total_merges_tested */
    bool last_new;      /* last_iter_found_new_program */
    size_t (*tried)[3]; /* merges_performed[0]: (i, j, ancestor); MAX_POOL entries */
    size_t ntried;
    size_t *descs; /* merges_performed[1]: (i, j, source per predictor), 2 + np each */
    size_t ndescs;
    size_t attempts; /* merge proposals made (scheduled and tried) */
};

/* The per-instance Pareto fronts into front[j * n + p] (program p is best on instance j)
 * and gepa's remove_dominated_programs: dom[p] when p was dropped or is on no front. */
void dspy__gepa_dominators(const struct gcand *pool, size_t n, size_t nv, bool *front, bool *dom);

/* gepa's sample_and_attempt_merge_programs_by_common_predictors: 1 with the merged
 * candidate in *merged (caller owns) and (i, j, ancestor) in ids; 0 when no pair was found;
 * -1 when the common ancestors' weights sum to zero (Python's choices() raises). `front`
 * has room for n * nv flags. */
int dspy__gepa_attempt_merge(const struct gcand *pool, size_t n, size_t nv, size_t np,
                             struct merge *m, bool *front, struct dspy__pyrandom *rng,
                             json_t **merged, size_t ids[3]);

/* select_eval_subsample_for_merged_program: up to MERGE_SUBSAMPLE valset instances into out;
 * returns how many. */
size_t dspy__gepa_merge_subsample(const struct gcand *a, const struct gcand *b, size_t nv,
                                  struct dspy__pyrandom *rng, size_t *out);

#endif

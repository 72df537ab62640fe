/* The state of one optimization run shared by the optimizer files (optimize layer):
 * candidates, evaluation with LM accounting and budgets, trials, checkpoint memo. */
#ifndef DSPY_OPTIMIZE_OPTIMIZE_RUN_H
#define DSPY_OPTIMIZE_OPTIMIZE_RUN_H

#include "optimize/optimize_int.h"

/* Streams of the keyed generator (see dspy__rng_seed), one per purpose; the values are
 * part of what a seed means, so they stay fixed. The draws DSPy makes with
 * random.Random use dspy__pyrandom instead. */
enum {
    RNG_MINIBATCH = 6,
    RNG_TPE = 7,
    RNG_GENETIC = 12,
};

struct opt_run {
    dspy_program *student;     /* borrowed; set to the best at the end */
    const json_t *train, *val; /* val: resolved (owned in `val_owned` when made here) */
    json_t *train_owned, *val_owned;
    const dspy_metric *metric;
    const struct dspy_optimize_options *o;
    json_t *trials;          /* the report's trial records */
    json_t *memo;            /* finished units of work, by key (the checkpoint):
                                 * {"v": value, "d": [what the unit cost]} */
    json_t *applied;         /* keys whose cost is counted in this run already */
    json_t *report_extra;    /* keys an optimizer adds to the report (gepa: "merge") */
    uint64_t fewshot_seed;   /* LabeledFewShot's and BootstrapFewShot's Random(): DSPy's 0,
                              * plus --seed except under mipro (DSPy's MIPROv2 keeps 0) */
    uint64_t mark[6];        /* the counters when the last unit was recorded */
    uint64_t restored_calls; /* LM calls of units read back from the checkpoint */
    char *ckpt_path;         /* DIR/checkpoint.json or NULL */
    char *ckpt_key;          /* what the checkpoint must have been made for */
    uint64_t lm_calls, cache_hits, prompt_tokens, completion_tokens, errors;
    uint64_t metric_calls;
    double cost_usd;       /* the tally's, plus restored_usd */
    double restored_usd;   /* units read back from the checkpoint, at the task model's price */
    dspy_cost_tally *cost; /* this run's calls by model */
    double baseline, best; /* percent; best is NAN until a full evaluation */
    json_t *best_cand;     /* the best candidate so far */
    unsigned reserved;     /* LM calls in flight outside opt_eval (MIPROv2's proposer while
                        * the bootstraps run); opt_eval leaves them out of --concurrency */
    bool stopped;
    char stop_reason[200];
    uint64_t start_ns;
};

/* A candidate: {"instructions": [text per predictor], "demos": [[...] per predictor]}. */
json_t *opt_candidate_of(dspy_program *p);
/* A copy of the student with the candidate applied; NULL on allocation failure. */
dspy_program *opt_build(struct opt_run *r, const json_t *cand);

/* Evaluate candidates (each on its devset) at once; scores in percent. Accounts LM calls,
 * tokens, cost and errors, and checks budgets (sets r->stopped). per_example, when not
 * NULL, gets an array of per-example scores per candidate (caller owns). Returns DSPY_OK,
 * or DSPY_ENOMEM. */
dspy_status opt_eval(struct opt_run *r, json_t *const *cands, const json_t *const *devsets,
                     size_t n, const struct dspy_call_config *cfg, bool trace, double *scores,
                     json_t **per_example, json_t **predictions);
/* The same, also giving each example's metric feedback (a string or null) per candidate. */
dspy_status opt_eval_feedback(struct opt_run *r, json_t *const *cands, const json_t *const *devsets,
                              size_t n, const struct dspy_call_config *cfg, bool trace,
                              double *scores, json_t **per_example, json_t **predictions,
                              json_t **feedbacks);
/* Work done ahead (GEPA's lookahead): the same evaluation, its LM calls and tokens
 * accounted, its metric calls and errors not (they count when the evaluation is made for
 * real, answered from the cache). */
dspy_status opt_eval_ahead(struct opt_run *r, json_t *const *cands, const json_t *const *devsets,
                           size_t n, bool trace, double *scores, json_t **per_example,
                           json_t **predictions, json_t **feedbacks);
/* Account one direct program call (the proposer). */
void opt_account(struct opt_run *r, const dspy_lm *lm, const struct dspy_call_info *info,
                 dspy_status rc);
/* Check max-cost, max-tokens, max-errors and the cycle timer; true when the run must stop. */
bool opt_check_budget(struct opt_run *r);

/* The checkpoint memo: a finished unit's JSON by key (borrowed), or NULL. The first time a
 * unit read back from a checkpoint is asked for, what it cost (LM calls, tokens, metric
 * calls, errors) is added to the counters, so budgets see what an uninterrupted run saw. */
json_t *opt_memo_get(struct opt_run *r, const char *key);
/* Record a unit (takes ownership of `value`) and write the checkpoint atomically. */
dspy_status opt_memo_put(struct opt_run *r, const char *key, json_t *value);

/* Append a trial record (takes ownership) and report progress; updates best when the
 * trial is a full evaluation scoring higher. */
void opt_trial(struct opt_run *r, json_t *rec, const json_t *cand, bool full, double score,
               size_t index, size_t planned);
void opt_event(struct opt_run *r, const char *what, size_t trial, size_t trials, double score);

/* BootstrapFewShot over `train` (in this order): demos per predictor, as a candidate
 * (instructions from the student). `key` names the memo entry. */
dspy_status opt_bootstrap(struct opt_run *r, const json_t *train, long max_boot, long max_labeled,
                          long max_rounds, uint64_t key, json_t **cand);
/* k bootstraps at once (trainset, max_bootstrapped_demos and memo key each): their windows
 * of examples share one evaluation per round; each result is opt_bootstrap's. */
dspy_status opt_bootstrap_many(struct opt_run *r, size_t k, const json_t *const *trains,
                               const long *max_boot, long max_labeled, long max_rounds,
                               const uint64_t *keys, json_t **cands);
/* LabeledFewShot(k): a candidate with k sampled examples per predictor. */
json_t *opt_labeled(struct opt_run *r, const json_t *train, long k, uint64_t key);
/* The random-search seed schedule's candidate for `seed` (-3, -2, -1, 0, ...); a seed >= 0
 * draws its shuffle and size from `shared` when not NULL, else from Random(seed + --seed). */
dspy_status opt_schedule_candidate(struct opt_run *r, long seed, long max_boot, long max_labeled,
                                   long max_rounds, struct dspy__pyrandom *shared, json_t **cand);

/* The candidates of k schedule seeds: every draw first, in order, then their bootstraps at
 * once; each candidate is opt_schedule_candidate's. */
dspy_status opt_schedule_candidates(struct opt_run *r, size_t k, const long *seeds, long max_boot,
                                    long max_labeled, long max_rounds,
                                    struct dspy__pyrandom *shared, json_t **cands);

dspy_status opt_random_search(struct opt_run *r, struct dspy_error *err);
dspy_status opt_mipro(struct opt_run *r, struct dspy_error *err);
dspy_status opt_gepa(struct opt_run *r, struct dspy_error *err);
dspy_status opt_genetic(struct opt_run *r, struct dspy_error *err);
/* GEPA's metric-call budget from --auto / --max-metric-calls / --max-full-evals; 0 with
 * err set when none or more than one is given. */
long dspy__gepa_budget(size_t predictors, const char *auto_budget, long max_metric_calls,
                       long max_full_evals, size_t ntrain, size_t nval);
/* Account one direct LM call (the reflection LM). */
void opt_account_lm(struct opt_run *r, const dspy_lm *lm, const struct dspy_lm_response *resp,
                    dspy_status rc);
/* MIPROv2's valset: the --auto size sampled from r->val (new reference), or NULL. */
json_t *opt_mipro_valset(struct opt_run *r);
/* The plan of a run (calls, tokens) for --dry-run and budget refusal. */
json_t *opt_mipro_plan(struct opt_run *r, double tokens_per_call);

/* MIPROv2's auto settings: candidates n and the validation size for "light"/"medium"/
 * "heavy"; false for an unknown name. */
bool dspy__mipro_auto(const char *name, long *n, long *val_size);
/* int(max(2*V*log2(n), 1.5*n)), V = predictors * (zero-shot ? 1 : 2). */
long dspy__mipro_num_trials(size_t predictors, long n, bool zero_shot);

#endif

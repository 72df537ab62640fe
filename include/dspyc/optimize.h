/* Evaluation and optimization of programs: metrics over labelled examples, DSPy's Evaluate
 * on the batch executor, the cycle timer, and the optimizers (LabeledFewShot,
 * BootstrapFewShot, its random search, MIPROv2, GEPA, a genetic search) with budgets, reports and checkpoints. */
#ifndef DSPYC_OPTIMIZE_H
#define DSPYC_OPTIMIZE_H

#include <jansson.h>

#include <dspyc/common.h>
#include <dspyc/price.h>
#include <dspyc/program.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- metrics ---------------------------------------------------------------------------- */

/** A metric scores a prediction against an example (a JSON object holding the inputs and
 * the labels, as a DSPy Example). Threading: dspy_metric_score() may run on many threads
 * at once. */
typedef struct dspy_metric dspy_metric;

/** A metric written in C: set *score, and optionally *feedback (dspy_malloc'd; the caller
 * frees). `trace` is NULL (Evaluate) or a JSON array of {predictor, inputs, outputs}
 * (bootstrapping). A non-OK return is a per-example error. */
typedef dspy_status (*dspy_metric_fn)(void *userdata, const json_t *example,
                                      const json_t *prediction, const json_t *trace, double *score,
                                      char **feedback, struct dspy_error *err);

/** "exact_match:FIELD", "f1:FIELD" or "contains:FIELD" (DSPy's normalization; contains is
 * the normalized label as a substring of the normalized prediction). Errors name the
 * text. */
DSPY_EXTERN dspy_status dspy_metric_parse(const char *spec, dspy_metric **out,
                                          struct dspy_error *err);
/** A metric over a callback; `name` is copied. NULL on allocation failure. */
DSPY_EXTERN dspy_metric *dspy_metric_custom(const char *name, dspy_metric_fn fn, void *userdata);
/** LM as judge: `judge` (borrowed until the metric is freed) is run on `lm` with the
 * example's fields and the prediction's fields (prefixed "pred_" when they collide) as
 * inputs; its output field named `score` (else the first int/float/bool output) is the
 * score, clamped to [0, 1] (a bool is 1 or 0), and a str output named `feedback` is the
 * feedback. DSPY_EINVAL when the judge has no score field. */
DSPY_EXTERN dspy_status dspy_metric_judge(dspy_program *judge, dspy_lm *lm, dspy_metric **out,
                                          struct dspy_error *err);
DSPY_EXTERN void dspy_metric_free(dspy_metric *m);
/** The metric's name ("exact_match:answer"); borrowed. */
DSPY_EXTERN const char *dspy_metric_name(const dspy_metric *m);
/** The prediction field a built-in metric reads, or NULL (custom, judge). Borrowed. */
DSPY_EXTERN const char *dspy_metric_field(const dspy_metric *m);
/** Score one prediction. *feedback may be NULL on return; `feedback` itself may be NULL. */
DSPY_EXTERN dspy_status dspy_metric_score(const dspy_metric *m, const json_t *example,
                                          const json_t *prediction, const json_t *trace,
                                          double *score, char **feedback, struct dspy_error *err);

/* ---- Evaluate --------------------------------------------------------------------------- */

struct dspy_eval_progress {
    size_t done, total, errors;
    double score_sum; /* over done */
    uint64_t elapsed_ns;
};
typedef int (*dspy_eval_progress_fn)(void *userdata, const struct dspy_eval_progress *p);

struct dspy_eval_options {
    unsigned concurrency;  /* examples in flight; 0 = 16 */
    size_t max_errors;     /* DSPy's max_errors: once this many examples failed (the program
                            * or the metric), the rest are cancelled and the evaluation
                            * returns DSPY_ECANCELED; 0 = never */
    double failure_score;  /* score of a failed example (DSPy's failure_score, 0.0) */
    bool keep_predictions; /* keep each example's prediction in the result */
    bool with_trace;       /* give the metric the trace (bootstrapping) */
    const struct dspy_call_config *cfg; /* per call; may be NULL; borrowed */
    dspy_eval_progress_fn progress;     /* may be NULL; non-zero return cancels */
    void *progress_userdata;
    /* Routing, may be NULL: route(route_userdata, example) picks the LM of each example,
     * 0 = the `lm` argument, i = lms[i - 1] (a model selector; see select.h). lms is
     * borrowed for the call, at most DSPY_BATCH_MAX_LMS. */
    unsigned (*route)(void *route_userdata, const json_t *example);
    void *route_userdata;
    dspy_lm *const *lms;
    size_t nlms;
};
#define DSPY_EVAL_OPTIONS_INIT                      \
    {                                               \
        .concurrency = 16, .keep_predictions = true \
    }

struct dspy_eval_item {
    dspy_status status; /* DSPY_OK, the program's or the metric's error */
    double score;       /* failure_score on failure */
    json_t *prediction; /* caller owns (via release); NULL on failure or when not kept */
    char *feedback;     /* the metric's, may be NULL */
    struct dspy_error error;
    struct dspy_call_info info;
    unsigned lm; /* the LM that ran it (dspy_eval_options.route), 0 = the `lm` argument */
};

struct dspy_eval_result {
    double score; /* DSPy's: round(100 * sum / n, 2) */
    double sum;
    size_t n, errors;
    struct dspy_eval_item *items; /* n of them, in devset order */
    uint64_t lm_calls, cache_hits;
    struct dspy_lm_usage usage;
    uint64_t wall_ns;
};

/** Run `p` over every example of `devset` (a JSON array of objects; borrowed) on the batch
 * executor, score each with `metric` and fill `out` (release with
 * dspy_eval_result_release). Failures score failure_score and count as errors. Returns
 * DSPY_OK, DSPY_ECANCELED (max_errors or progress; `out` is filled all the same), or an
 * error that stopped it before any call (DSPY_EINVAL: an example that is not an object). */
DSPY_EXTERN dspy_status dspy_evaluate(dspy_program *p, dspy_lm *lm, const json_t *devset,
                                      const dspy_metric *metric,
                                      const struct dspy_eval_options *opts,
                                      struct dspy_eval_result *out, struct dspy_error *err);
DSPY_EXTERN void dspy_eval_result_release(struct dspy_eval_result *r);
/** The result as JSON: {score, n, errors, results: [{inputs, prediction, score, ...}]}.
 * `devset` gives each result's inputs (the program's input fields of each example). */
DSPY_EXTERN json_t *dspy_eval_result_json(const struct dspy_eval_result *r, const dspy_program *p,
                                          const json_t *devset);

/* ---- the cycle timer -------------------------------------------------------------------- */

/** Tracks an optimization run against a target duration: elapsed time, iterations done and
 * planned, rate, progress, ETA, a warning past warn_at of the target and "exceeded" past
 * it. Threading: all calls may run on many threads at once (one lock). */
typedef struct dspy_cycle dspy_cycle;

typedef uint64_t (*dspy_clock_fn)(void *userdata); /* nanoseconds, monotonic */

struct dspy_cycle_options {
    double target_s;     /* default 7200 */
    double warn_at;      /* fraction of the target, default 0.8 */
    bool stop_at_target; /* dspy_cycle_should_stop() turns true once exceeded */
    dspy_clock_fn clock; /* NULL = dspy_clock_ns */
    void *clock_userdata;
};
#define DSPY_CYCLE_OPTIONS_INIT            \
    {                                      \
        .target_s = 7200.0, .warn_at = 0.8 \
    }

struct dspy_cycle_status {
    double target_s, elapsed_s;
    uint64_t iterations, planned;
    double iterations_per_s;
    double progress; /* iterations / planned in [0, 1]; 0 when nothing is planned */
    double eta_s;    /* (planned - iterations) / rate; -1 when unknown */
    bool warned, exceeded;
};

/** Starts the clock. NULL on allocation failure or a target <= 0 or warn_at outside (0, 1]. */
DSPY_EXTERN dspy_cycle *dspy_cycle_new(const struct dspy_cycle_options *opts);
DSPY_EXTERN void dspy_cycle_free(dspy_cycle *c);
DSPY_EXTERN void dspy_cycle_plan(dspy_cycle *c, uint64_t planned);
DSPY_EXTERN void dspy_cycle_tick(dspy_cycle *c, uint64_t iterations);
DSPY_EXTERN void dspy_cycle_status(dspy_cycle *c, struct dspy_cycle_status *st);
/** True once exceeded with stop_at_target set. */
DSPY_EXTERN bool dspy_cycle_should_stop(dspy_cycle *c);
/** The report's "cycle" object (caller owns). */
DSPY_EXTERN json_t *dspy_cycle_json(dspy_cycle *c);

/* ---- optimizers ------------------------------------------------------------------------- */

enum dspy_optimizer {
    DSPY_OPT_LABELED,       /* LabeledFewShot */
    DSPY_OPT_BOOTSTRAP,     /* BootstrapFewShot */
    DSPY_OPT_RANDOM_SEARCH, /* BootstrapFewShotWithRandomSearch */
    DSPY_OPT_MIPRO,         /* MIPROv2 */
    DSPY_OPT_GEPA,          /* GEPA (reflective instruction evolution, Pareto selection) */
    DSPY_OPT_GENETIC,       /* genetic search over instructions and demo subsets */
};
/** "labeled", "bootstrap", "random-search", "mipro", "gepa", "genetic"; -1 for an unknown
 * name. */
DSPY_EXTERN int dspy_optimizer_from_name(const char *name);
DSPY_EXTERN const char *dspy_optimizer_name(enum dspy_optimizer o);

struct dspy_optimize_event {
    const char *what;     /* "baseline", "bootstrap", "propose", "trial", "full" */
    size_t trial, trials; /* trial index and planned count (0 when not a trial) */
    double score;         /* of this trial (percent), NAN when none */
    double best;          /* best full score so far (percent), NAN when none */
    uint64_t lm_calls;    /* so far */
};
typedef void (*dspy_optimize_event_fn)(void *userdata, const struct dspy_optimize_event *e);

struct dspy_optimize_options {
    enum dspy_optimizer optimizer;
    const char *auto_budget;  /* "light", "medium", "heavy" or NULL (mipro: default light) */
    long num_trials;          /* mipro without auto / random-search candidates; <0 = default */
    long num_candidates;      /* mipro without auto; <0 = default */
    uint64_t seed;            /* mipro: DSPy's default is 9; others 0 */
    unsigned concurrency;     /* LM calls in flight over all concurrent trials; 0 = 16 */
    unsigned parallel_trials; /* trials evaluated at once (a fixed wave, so results do not
                                * depend on concurrency); 0 = 4 */
    long max_bootstrapped_demos, max_labeled_demos, max_rounds; /* <0 = DSPy's defaults */
    long minibatch_size;                                        /* mipro: 35 */
    long minibatch_full_eval_steps;                             /* mipro: 5 */
    size_t max_errors;   /* failed LM calls (program runs) beyond which the run stops;
                                * 0 = DSPy's default 10 per evaluation, never for the run */
    double max_cost_usd; /* stop with the best so far past this; 0 = no limit */
    long max_tokens;     /* the same in tokens; 0 = no limit */
    double price_in_per_mtok, price_out_per_mtok; /* USD per million tokens for every model;
                                                   * both 0 = by model from `prices` */
    const dspy_price_table *prices;               /* the price table (borrowed); NULL with
                                                   * no flat price = nothing is priced */
    const char *checkpoint_dir;                   /* NULL = none */
    bool dry_run;                                 /* fill the report's "plan" and make no LM call */
    dspy_lm *task_lm;                             /* required */
    dspy_lm *prompt_lm;                           /* mipro's proposer; NULL = task_lm */
    dspy_cycle *cycle;                            /* may be NULL; borrowed */
    dspy_optimize_event_fn on_event;              /* on the calling thread */
    void *event_userdata;
    long max_metric_calls;      /* stop once this many examples were scored; 0 = no limit;
                                * gepa: its budget (exactly one of auto, this, full evals) */
    long max_full_evals;        /* gepa: budget of N x (|train| + |val|) metric calls */
    dspy_lm *reflection_lm;     /* gepa's reflection LM; NULL = prompt_lm, else task_lm */
    bool no_merge;              /* gepa: no merge step (DSPy's use_merge=False) */
    long max_merge_invocations; /* gepa: merges accepted at most; < 0 = DSPy's 5 */
    bool no_baseline;           /* labeled, bootstrap, random-search, genetic: no evaluation of the
                       * program as given (DSPy makes none there); the report's baseline
                       * score is null. mipro and gepa need theirs: DSPY_EINVAL */
    long lookahead;       /* gepa: iterations run ahead in parallel, assuming their children are
                     * rejected, to fill the cache (the result is unchanged); 0 = off,
                     * < 0 = concurrency / 3 (1 to 16) */
    long population;      /* genetic: individuals per generation; <= 1 = 8 */
    long generations;     /* genetic: generations; <= 0 = 5 */
    double mutation_rate; /* genetic: per predictor of a child; < 0 = 0.3 */
};
#define DSPY_OPTIMIZE_OPTIONS_INIT                                                          \
    {                                                                                       \
        .optimizer = DSPY_OPT_BOOTSTRAP, .num_trials = -1, .num_candidates = -1,            \
        .concurrency = 16, .parallel_trials = 4, .max_bootstrapped_demos = -1,              \
        .max_labeled_demos = -1, .max_rounds = -1, .minibatch_size = 35,                    \
        .minibatch_full_eval_steps = 5, .mutation_rate = -1.0, .max_merge_invocations = -1, \
        .lookahead = -1                                                                     \
    }

/** Optimize `student` (changed in place to the best program found) on `trainset`, scoring
 * on `valset` (NULL: as DSPy splits or reuses the trainset). Both are JSON arrays of
 * example objects, borrowed. *report gets the run's report (caller owns; also on most
 * failures after the start, with what was done). Checks every input before any LM call:
 * DSPY_EINVAL naming the example index and field. A failing LM call is a failed trial;
 * more than max_errors of them stop the run with DSPY_ECANCELED (the best so far is kept).
 * With a checkpoint directory, each finished trial is saved atomically and a run started
 * again with the same inputs and seed picks up where it stopped, ending with the same
 * result. Call from one thread; it runs its own. */
DSPY_EXTERN dspy_status dspy_optimize(dspy_program *student, const json_t *trainset,
                                      const json_t *valset, const dspy_metric *metric,
                                      const struct dspy_optimize_options *opts, json_t **report,
                                      struct dspy_error *err);

#ifdef __cplusplus
}
#endif
#endif

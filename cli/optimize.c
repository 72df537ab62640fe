/* `dspyc optimize`: the optimizers from the command line (apps layer): flags to options,
 * examples checked before any LM call, the cycle timer on the progress line, the optimized
 * program saved in DSPy's format and the report written. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "endpoint.h"
#include "optutil.h"
#include "util.h"

static const char optimize_usage[] =
    "usage: dspyc optimize (PROGRAM.json | --signature SIG [--module predict|cot])\n"
    "         --optimizer NAME --trainset TRAIN.jsonl --metric METRIC --save STATE.json\n"
    "         [options]\n\n"
    "Optimize a program's demos and instructions on TRAIN.jsonl and save it as a DSPy save\n"
    "file (DSPy's load() reads it; so do dspyc run/eval --state).\n\n"
    "optimizers:\n"
    "  labeled         LabeledFewShot: k sampled training examples as demos, no LM call\n"
    "  bootstrap       BootstrapFewShot: a teacher with labelled demos; runs whose\n"
    "                  prediction passes the metric become demos\n"
    "  random-search   BootstrapFewShotWithRandomSearch: zero-shot, labelled, bootstrap and\n"
    "                  --num-candidates shuffled bootstraps, each fully evaluated\n"
    "  mipro           MIPROv2: bootstrapped demo sets, instructions proposed by the prompt\n"
    "                  model, a TPE search with minibatch trials and full evaluations\n"
    "  gepa            GEPA: instructions rewritten by the reflection model from the metric's\n"
    "                  feedback, a per-instance Pareto front (needs exactly one budget)\n"
    "  genetic         a population of instructions and demo subsets: tournament selection,\n"
    "                  elitism, crossover, mutation by LM rewrite or demo swap\n\n";
/* (two literals: C11 promises only 4095 bytes per string literal) */
static const char optimize_usage2[] =
    "options:\n"
    "  --signature SIG       optimize one module with this signature\n"
    "  --module predict|cot  module for --signature (default predict)\n"
    "  --state STATE.json    start from this DSPy save file\n"
    "  --trainset FILE       training examples (JSON lines of inputs and labels)\n"
    "  --valset FILE         validation examples (default: as DSPy: mipro takes 80 % of the\n"
    "                        trainset, the others score on the trainset)\n"
    "  --metric METRIC       exact_match:FIELD, f1:FIELD, contains:FIELD, judge:PROGRAM.json\n"
    "  --metric-python MOD:FN  a Python metric, called as DSPy calls it (see dspyc eval)\n"
    "  --save FILE           write the optimized program (DSPy's save format)\n"
    "  --report FILE         write the report (baseline, best, every trial, LM budget, cycle)\n"
    "  --auto light|medium|heavy  mipro's (default light) or gepa's budget, as DSPy\n"
    "                        computes them\n"
    "  --num-trials N        mipro trials (instead of --auto)\n"
    "  --num-candidates N    mipro candidates / random-search programs (default 16)\n"
    "  --max-bootstrapped-demos N, --max-labeled-demos N, --max-rounds N\n"
    "                        DSPy's defaults: 4, 16 (mipro 4), 1\n"
    "  --max-metric-calls N  stop once N examples have been scored (gepa: its budget)\n"
    "  --max-full-evals N    gepa's budget: N x (|trainset| + |valset|) metric calls\n"
    "  --seed N              seed of every draw (default 0; mipro's default in DSPy is 9)\n"
    "  --concurrency N       LM calls in flight over all trials (default 16)\n"
    "  --parallel-trials N   trials evaluated at once (default 4; part of the result's\n"
    "                        definition, so the same N gives the same result)\n"
    "  --checkpoint DIR      save each finished trial; run again to resume\n"
    "  --target-duration S   the cycle timer's target (default 7200)\n"
    "  --warn-at F           warn past this fraction of the target (default 0.8)\n"
    "  --stop-at-target      stop with the best so far once the target has passed\n"
    "  --dry-run             print the planned LM calls, tokens and cost; call nothing\n"
    "  --max-cost USD        stop with the best so far past this cost\n"
    "  --max-tokens N        stop with the best so far past this many tokens (here this is\n"
    "                        the run's budget, not a completion limit)\n"
    "  --price-in USD, --price-out USD  one price per million prompt / completion tokens\n"
    "                        for every model (instead of --prices)\n" PRICES_USAGE
    "  --max-errors N        stop after more than N failed program runs (default never)\n"
    "  --task-model M        model of the program's calls (default --model)\n"
    "  --prompt-model M      model of mipro's proposer (default the task model)\n"
    "  --reflection-model M  model of gepa's reflection (default the prompt model)\n"
    "  --no-merge            gepa: no merge step (DSPy's use_merge=False; default on)\n"
    "  --max-merge-invocations N  gepa: merges accepted at most (default 5, as DSPy)\n"
    "  --no-baseline         labeled, bootstrap, random-search, genetic: do not evaluate the\n"
    "                        program as given (DSPy does not); the report's baseline is null\n"
    "  --lookahead N         gepa: run N iterations ahead at once, as if their children were\n"
    "                        rejected, so the real ones come from the cache (same result;\n"
    "                        default concurrency / 3, at most 16, off without a cache;\n"
    "                        0 or 1 = off)\n"
    "  --population N        genetic: individuals per generation (default 8, at most 64)\n"
    "  --generations N       genetic: generations (default 5)\n"
    "  --mutation-rate F     genetic: chance a child's predictor mutates (default 0.3)\n"
    "  -q, --quiet           no progress line, no summary\n"
    "  -h, --help            this text\n\n";

enum {
    OPT_SIGNATURE = 1,
    OPT_MODULE,
    OPT_STATE,
    OPT_OPTIMIZER,
    OPT_TRAIN,
    OPT_VAL,
    OPT_METRIC,
    OPT_METRIC_PYTHON,
    OPT_SAVE,
    OPT_REPORT,
    OPT_AUTO,
    OPT_NUM_TRIALS,
    OPT_NUM_CANDIDATES,
    OPT_MAX_BOOT,
    OPT_MAX_LABELED,
    OPT_MAX_ROUNDS,
    OPT_MAX_METRIC_CALLS,
    OPT_MAX_FULL_EVALS,
    OPT_SEED,
    OPT_CONCURRENCY,
    OPT_PARALLEL,
    OPT_CHECKPOINT,
    OPT_TARGET,
    OPT_WARN_AT,
    OPT_STOP_AT,
    OPT_DRY_RUN,
    OPT_MAX_COST,
    OPT_PRICE_IN,
    OPT_PRICE_OUT,
    OPT_PRICES,
    OPT_MAX_ERRORS,
    OPT_TASK_MODEL,
    OPT_PROMPT_MODEL,
    OPT_REFLECTION_MODEL,
    OPT_POPULATION,
    OPT_GENERATIONS,
    OPT_MUTATION,
    OPT_NO_MERGE,
    OPT_MAX_MERGES,
    OPT_LOOKAHEAD,
    OPT_NO_BASELINE,
};

struct progress {
    bool on;
    dspy_cycle *cycle;
};

static void print_usage(FILE *out)
{
    fputs(optimize_usage, out);
    endpoint_print_usage(out, optimize_usage2);
}

static void on_event(void *ud, const struct dspy_optimize_event *e)
{
    struct progress *pr = ud;
    if (!pr->on)
        return;
    struct dspy_cycle_status st;
    dspy_cycle_status(pr->cycle, &st);
    char eta[32] = "?";
    if (st.eta_s >= 0)
        snprintf(eta, sizeof(eta), "%.0fs", st.eta_s);
    fprintf(stderr,
            "\r%-9s trial %zu/%zu  score %5.1f  best %5.1f  LM calls %llu | %.1fs of %.0fs  "
            "%.0f%%  %.2f it/s  ETA %s%s ",
            e->what, e->trial, e->trials, isnan(e->score) ? 0.0 : e->score,
            isnan(e->best) ? 0.0 : e->best, (unsigned long long)e->lm_calls, st.elapsed_s,
            st.target_s, 100 * st.progress, st.iterations_per_s, eta,
            st.exceeded ? "  EXCEEDED"
            : st.warned ? "  WARNING"
                        : "");
}

static int write_json(const char *path, json_t *doc)
{
    if (!strcmp(path, "-")) {
        json_dumpf(doc, stdout, JSON_INDENT(1));
        fputc('\n', stdout);
        return 0;
    }
    return json_dump_file(doc, path, JSON_INDENT(1));
}

int cmd_optimize(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "signature", required_argument, NULL, OPT_SIGNATURE },
        { "module", required_argument, NULL, OPT_MODULE },
        { "state", required_argument, NULL, OPT_STATE },
        { "optimizer", required_argument, NULL, OPT_OPTIMIZER },
        { "trainset", required_argument, NULL, OPT_TRAIN },
        { "valset", required_argument, NULL, OPT_VAL },
        { "metric", required_argument, NULL, OPT_METRIC },
        { "metric-python", required_argument, NULL, OPT_METRIC_PYTHON },
        { "save", required_argument, NULL, OPT_SAVE },
        { "report", required_argument, NULL, OPT_REPORT },
        { "auto", required_argument, NULL, OPT_AUTO },
        { "num-trials", required_argument, NULL, OPT_NUM_TRIALS },
        { "num-candidates", required_argument, NULL, OPT_NUM_CANDIDATES },
        { "max-bootstrapped-demos", required_argument, NULL, OPT_MAX_BOOT },
        { "max-labeled-demos", required_argument, NULL, OPT_MAX_LABELED },
        { "max-rounds", required_argument, NULL, OPT_MAX_ROUNDS },
        { "max-metric-calls", required_argument, NULL, OPT_MAX_METRIC_CALLS },
        { "max-full-evals", required_argument, NULL, OPT_MAX_FULL_EVALS },
        { "seed", required_argument, NULL, OPT_SEED },
        { "concurrency", required_argument, NULL, OPT_CONCURRENCY },
        { "parallel-trials", required_argument, NULL, OPT_PARALLEL },
        { "checkpoint", required_argument, NULL, OPT_CHECKPOINT },
        { "target-duration", required_argument, NULL, OPT_TARGET },
        { "warn-at", required_argument, NULL, OPT_WARN_AT },
        { "stop-at-target", no_argument, NULL, OPT_STOP_AT },
        { "dry-run", no_argument, NULL, OPT_DRY_RUN },
        { "max-cost", required_argument, NULL, OPT_MAX_COST },
        { "price-in", required_argument, NULL, OPT_PRICE_IN },
        { "price-out", required_argument, NULL, OPT_PRICE_OUT },
        { "prices", required_argument, NULL, OPT_PRICES },
        { "max-errors", required_argument, NULL, OPT_MAX_ERRORS },
        { "task-model", required_argument, NULL, OPT_TASK_MODEL },
        { "prompt-model", required_argument, NULL, OPT_PROMPT_MODEL },
        { "reflection-model", required_argument, NULL, OPT_REFLECTION_MODEL },
        { "population", required_argument, NULL, OPT_POPULATION },
        { "generations", required_argument, NULL, OPT_GENERATIONS },
        { "mutation-rate", required_argument, NULL, OPT_MUTATION },
        { "no-merge", no_argument, NULL, OPT_NO_MERGE },
        { "max-merge-invocations", required_argument, NULL, OPT_MAX_MERGES },
        { "lookahead", required_argument, NULL, OPT_LOOKAHEAD },
        { "no-baseline", no_argument, NULL, OPT_NO_BASELINE },
        { "quiet", no_argument, NULL, 'q' },
        { "help", no_argument, NULL, 'h' },
        ENDPOINT_LONG_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    struct dspy_optimize_options o = DSPY_OPTIMIZE_OPTIONS_INIT;
    struct dspy_cycle_options co = DSPY_CYCLE_OPTIONS_INIT;
    const char *program_path = NULL, *signature = NULL, *state = NULL, *train_path = NULL;
    const char *val_path = NULL, *metric_spec = NULL, *save = NULL, *report_path = NULL;
    const char *optimizer = NULL, *task_model = NULL, *prompt_model = NULL;
    const char *reflection_model = NULL, *metric_python = NULL, *prices_path = NULL;
    int module = DSPY_MODULE_PREDICT, opt;
    bool quiet = false, seed_given = false;
    long v;
    double d;
    struct endpoint ep;
    endpoint_init(&ep);
    ep.cache.default_levels = "mem"; /* repeated candidates cost nothing */
    optind = 1;
#define LONGF(flag, lo, hi)                        \
    if (parse_long_flag(flag, optarg, lo, hi, &v)) \
        return 2;
#define DBLF(flag, lo, hi)                           \
    if (parse_double_flag(flag, optarg, lo, hi, &d)) \
        return 2;
    while ((opt = getopt_long(argc, argv, "hq", longopts, NULL)) != -1) {
        if (opt == ENDPOINT_OPT_MAX_TOKENS) { /* here: the run's token budget */
            LONGF("--max-tokens", 1, 1L << 50);
            o.max_tokens = v;
            continue;
        }
        int e = endpoint_option(&ep, opt, optarg);
        if (e < 0)
            return 2;
        if (e)
            continue;
        switch (opt) {
        case OPT_SIGNATURE: signature = optarg; break;
        case OPT_MODULE:
            if ((module = dspy_module_kind_from_name(optarg)) < 0) {
                fprintf(stderr, "dspyc optimize: --module: '%s' is not predict or cot\n", optarg);
                return 2;
            }
            break;
        case OPT_STATE: state = optarg; break;
        case OPT_OPTIMIZER: optimizer = optarg; break;
        case OPT_TRAIN: train_path = optarg; break;
        case OPT_VAL: val_path = optarg; break;
        case OPT_METRIC: metric_spec = optarg; break;
        case OPT_METRIC_PYTHON: metric_python = optarg; break;
        case OPT_SAVE: save = optarg; break;
        case OPT_REPORT: report_path = optarg; break;
        case OPT_AUTO: o.auto_budget = optarg; break;
        case OPT_NUM_TRIALS:
            LONGF("--num-trials", 1, 100000);
            o.num_trials = v;
            break;
        case OPT_NUM_CANDIDATES:
            LONGF("--num-candidates", 1, 1000);
            o.num_candidates = v;
            break;
        case OPT_MAX_BOOT:
            LONGF("--max-bootstrapped-demos", 0, 1000);
            o.max_bootstrapped_demos = v;
            break;
        case OPT_MAX_LABELED:
            LONGF("--max-labeled-demos", 0, 1000);
            o.max_labeled_demos = v;
            break;
        case OPT_MAX_ROUNDS:
            LONGF("--max-rounds", 1, 100);
            o.max_rounds = v;
            break;
        case OPT_MAX_METRIC_CALLS:
            LONGF("--max-metric-calls", 1, 1L << 40);
            o.max_metric_calls = v;
            break;
        case OPT_MAX_FULL_EVALS:
            LONGF("--max-full-evals", 1, 1L << 30);
            o.max_full_evals = v;
            break;
        case OPT_SEED:
            LONGF("--seed", 0, 1L << 62);
            o.seed = (uint64_t)v;
            seed_given = true;
            break;
        case OPT_CONCURRENCY:
            LONGF("--concurrency", 1, DSPY_BATCH_MAX_WORKERS);
            o.concurrency = (unsigned)v;
            break;
        case OPT_PARALLEL:
            LONGF("--parallel-trials", 1, 64);
            o.parallel_trials = (unsigned)v;
            break;
        case OPT_CHECKPOINT: o.checkpoint_dir = optarg; break;
        case OPT_TARGET:
            DBLF("--target-duration", 1e-6, 1e9);
            co.target_s = d;
            break;
        case OPT_WARN_AT:
            DBLF("--warn-at", 1e-6, 1);
            co.warn_at = d;
            break;
        case OPT_STOP_AT: co.stop_at_target = true; break;
        case OPT_DRY_RUN: o.dry_run = true; break;
        case OPT_MAX_COST:
            DBLF("--max-cost", 0, 1e9);
            o.max_cost_usd = d;
            break;
        case OPT_PRICE_IN:
            DBLF("--price-in", 0, 1e6);
            o.price_in_per_mtok = d;
            break;
        case OPT_PRICE_OUT:
            DBLF("--price-out", 0, 1e6);
            o.price_out_per_mtok = d;
            break;
        case OPT_PRICES: prices_path = optarg; break;
        case OPT_MAX_ERRORS:
            LONGF("--max-errors", 0, 1L << 40);
            o.max_errors = (size_t)v;
            break;
        case OPT_TASK_MODEL: task_model = optarg; break;
        case OPT_PROMPT_MODEL: prompt_model = optarg; break;
        case OPT_REFLECTION_MODEL: reflection_model = optarg; break;
        case OPT_POPULATION:
            LONGF("--population", 2, 64);
            o.population = v;
            break;
        case OPT_GENERATIONS:
            LONGF("--generations", 1, 10000);
            o.generations = v;
            break;
        case OPT_MUTATION:
            DBLF("--mutation-rate", 0, 1);
            o.mutation_rate = d;
            break;
        case OPT_NO_MERGE: o.no_merge = true; break;
        case OPT_MAX_MERGES:
            LONGF("--max-merge-invocations", 0, 1000);
            o.max_merge_invocations = v;
            break;
        case OPT_NO_BASELINE: o.no_baseline = true; break;
        case OPT_LOOKAHEAD:
            LONGF("--lookahead", 0, 16);
            o.lookahead = v;
            break;
        case 'q': quiet = true; break;
        case 'h': print_usage(stdout); return 0;
        default: print_usage(stderr); return 2;
        }
    }
    if (optind < argc)
        program_path = argv[optind++];
    if (optind < argc || !optimizer || !train_path || !metric_spec == !metric_python ||
        (!save && !o.dry_run) || !program_path == !signature) {
        fprintf(stderr, "dspyc optimize: name a program file or --signature (one of them), "
                        "--optimizer, --trainset, --metric or --metric-python, and --save\n\n");
        print_usage(stderr);
        return 2;
    }
    int which = dspy_optimizer_from_name(optimizer);
    if (which < 0) {
        fprintf(stderr,
                "dspyc optimize: --optimizer '%s' is not one of labeled, bootstrap, "
                "random-search, mipro, gepa, genetic\n",
                optimizer);
        return 2;
    }
    o.optimizer = (enum dspy_optimizer)which;
    if (o.auto_budget && strcmp(o.auto_budget, "light") && strcmp(o.auto_budget, "medium") &&
        strcmp(o.auto_budget, "heavy")) {
        fprintf(stderr, "dspyc optimize: --auto '%s' is not light, medium or heavy\n",
                o.auto_budget);
        return 2;
    }
    if (o.auto_budget && o.optimizer != DSPY_OPT_MIPRO && o.optimizer != DSPY_OPT_GEPA) {
        fprintf(stderr, "dspyc optimize: --auto is a budget of mipro and gepa, not of %s\n",
                optimizer);
        return 2;
    }
    if (o.max_full_evals && o.optimizer != DSPY_OPT_GEPA) {
        fprintf(stderr, "dspyc optimize: --max-full-evals is a budget of gepa, not of %s\n",
                optimizer);
        return 2;
    }
    if (o.auto_budget && o.num_trials > 0) {
        fprintf(stderr, "dspyc optimize: --auto and --num-trials exclude each other (as in "
                        "DSPy)\n");
        return 2;
    }
    if (o.optimizer == DSPY_OPT_MIPRO && !seed_given)
        o.seed = 9; /* DSPy's MIPROv2 default */

    /* Everything is read and checked before the first LM call. */
    int rc = 2;
    struct examples train = { 0 }, val = { 0 };
    dspy_program *p = opt_program("optimize", program_path, signature, module, state);
    dspy_program *judge = NULL;
    dspy_metric *metric = NULL;
    dspy_lm *lm = NULL, *plm = NULL, *rlm = NULL;
    dspy_cycle *cycle = NULL;
    json_t *report = NULL;
    dspy_price_table *prices = NULL;
    if (!p || !(prices = prices_open("optimize", prices_path)) ||
        !examples_load(&train, train_path, true) ||
        (val_path && !examples_load(&val, val_path, true)))
        goto out;
    if (metric_python) {
        if (!(metric = opt_metric_python("optimize", metric_python)))
            goto out;
    } else if (strncmp(metric_spec, "judge:", 6) &&
               !(metric = opt_metric("optimize", metric_spec, NULL, &judge))) {
        goto out;
    }
    if (!(cycle = dspy_cycle_new(&co))) {
        fprintf(stderr, "dspyc optimize: --target-duration/--warn-at out of range\n");
        goto out;
    }
    if (o.dry_run) {
        /* no endpoint is opened: a stand-in handle that never connects */
        struct dspy_lm_options lo = DSPY_LM_OPTIONS_INIT;
        lo.base_url = "http://127.0.0.1:9/v1";
        lo.model = "dry-run";
        lo.api_key = "unused";
        if (dspy_lm_new(&lo, &lm, NULL))
            goto out;
    } else {
        if (task_model)
            ep.model = task_model;
        if (!(lm = endpoint_open(&ep)))
            goto out;
        if (prompt_model) {
            ep.model = prompt_model;
            if (!(plm = endpoint_open(&ep)))
                goto out;
        }
        if (reflection_model) {
            ep.model = reflection_model;
            if (!(rlm = endpoint_open(&ep)))
                goto out;
        }
    }
    if (o.lookahead < 0 && (!ep.cache.cache || ep.cache.no_store))
        o.lookahead = 0; /* without a cache, work done ahead would be done twice */
    if (!metric && !(metric = opt_metric("optimize", metric_spec, lm, &judge)))
        goto out;
    struct progress pr = { !quiet && isatty(2), cycle };
    struct dspy_error err;
    o.task_lm = lm;
    o.prices = prices;
    o.prompt_lm = plm;
    o.reflection_lm = rlm;
    o.cycle = cycle;
    o.on_event = on_event;
    o.event_userdata = &pr;
    dspy_error_clear(&err);
    dspy_status orc = dspy_optimize(p, train.items, val_path ? val.items : NULL, metric, &o,
                                    &report, &err);
    if (pr.on)
        fputc('\n', stderr);
    if (orc && !report) {
        const struct examples *where = !strncmp(err.message, "valset", 6) ? &val : &train;
        examples_print_error("optimize", err.line > 0 ? where : NULL, &err);
        goto out;
    }
    if (o.dry_run) {
        json_t *plan = json_object_get(report, "plan");
        printf("dry run: %s, %.0f task-model calls, %.0f prompt-model calls, about %.0f tokens, "
               "about $%.4f; no LM call was made\n",
               dspy_optimizer_name(o.optimizer),
               json_number_value(json_object_get(plan, "task_calls")),
               json_number_value(json_object_get(plan, "prompt_calls")),
               json_number_value(json_object_get(plan, "tokens")),
               json_number_value(json_object_get(plan, "cost_usd")));
        rc = report_path && write_json(report_path, report) ? 2 : 0;
        goto out;
    }
    if (save && dspy_program_save_state(p, save, &err)) {
        print_error("save", &err);
        goto out;
    }
    if (report_path && write_json(report_path, report)) {
        fprintf(stderr, "dspyc optimize: cannot write %s\n", report_path);
        goto out;
    }
    if (!quiet) {
        json_t *lmj = json_object_get(report, "lm"), *cy = json_object_get(report, "cycle");
        json_t *best = json_object_get(json_object_get(report, "best"), "score");
        json_t *base = json_object_get(json_object_get(report, "baseline"), "score");
        fprintf(stderr,
                "dspyc optimize: %s: baseline %.2f, best %.2f over %zu trials in %.2f s; %lld "
                "LM calls (%lld from the cache), %lld tokens, $%.4f\n",
                dspy_optimizer_name(o.optimizer),
                json_is_number(base) ? json_number_value(base) : NAN,
                json_is_number(best) ? json_number_value(best) : NAN,
                json_array_size(json_object_get(report, "trials")),
                json_number_value(json_object_get(report, "elapsed_s")),
                (long long)json_integer_value(json_object_get(lmj, "calls")),
                (long long)json_integer_value(json_object_get(lmj, "cache_hits")),
                (long long)json_integer_value(json_object_get(lmj, "tokens")),
                json_number_value(json_object_get(lmj, "cost_usd")));
        print_cost_summary(stderr, json_object_get(lmj, "cost"));
        if (json_is_true(json_object_get(cy, "exceeded")))
            fprintf(stderr, "dspyc optimize: the target duration of %.0f s was exceeded\n",
                    co.target_s);
        else if (json_is_true(json_object_get(cy, "warned")))
            fprintf(stderr, "dspyc optimize: warning: past %.0f %% of the target duration\n",
                    100 * co.warn_at);
        if (json_is_string(json_object_get(report, "stopped")))
            fprintf(stderr, "dspyc optimize: stopped early: %s\n",
                    json_string_value(json_object_get(report, "stopped")));
    }
    rc = orc ? 1 : 0;
out:
    json_decref(report);
    dspy_price_table_free(prices);
    dspy_cycle_free(cycle);
    dspy_metric_free(metric);
    if (metric_python)
        opt_metric_python_done();
    dspy_program_free(judge);
    examples_release(&train);
    examples_release(&val);
    if (plm)
        dspy_lm_free(plm);
    if (rlm)
        dspy_lm_free(rlm);
    if (o.dry_run && lm) {
        dspy_lm_free(lm);
        lm = NULL;
    }
    endpoint_close(&ep, lm);
    dspy_program_free(p);
    return rc;
}

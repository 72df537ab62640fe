/* `dspyc eval`: DSPy's Evaluate from the command line (apps layer): a program over a devset
 * on the batch executor, scored by a metric, with a progress bar and a JSON report. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "endpoint.h"
#include "optutil.h"
#include "selector.h"
#include "util.h"

static const char eval_usage[] =
    "usage: dspyc eval (PROGRAM.json | --signature SIG [--module predict|cot])\n"
    "                  --devset DEV.jsonl --metric METRIC [options]\n\n"
    "Run the program over every example of DEV.jsonl (one JSON object per line holding the\n"
    "inputs and the labels, as a DSPy Example) and score each prediction, as DSPy's\n"
    "Evaluate does: the score is 100 * sum / n, failed examples score --failure-score.\n"
    "Prints the score (or writes --json). Exit status: 0 when every example was scored, 1\n"
    "when any failed (the program or the metric), 2 when the evaluation could not start.\n\n"
    "options:\n"
    "  --signature SIG       evaluate one module with this signature\n"
    "  --module predict|cot  module for --signature (default predict)\n"
    "  --state STATE.json    apply a DSPy save file first (e.g. from dspyc optimize)\n"
    "  --devset FILE         the examples (JSON lines)\n"
    "  --metric METRIC       exact_match:FIELD, f1:FIELD, contains:FIELD (DSPy's\n"
    "                        normalization), or judge:PROGRAM.json (an LM judge whose\n"
    "                        output 'score' is the score and 'feedback' the feedback)\n"
    "  --metric-python MOD:FN  a Python metric through the embedded interpreter, called as\n"
    "                        DSPy calls it: FN(example, pred, trace) with dspy.Example and\n"
    "                        dspy.Prediction (or GEPA's 5-argument form); returns a number,\n"
    "                        a bool, or an object with .score and .feedback\n"
    "  --concurrency N       examples in flight (default 16)\n"
    "  --max-errors N        stop after N failed examples (DSPy's max_errors; default never)\n"
    "  --failure-score X     score of a failed example (default 0)\n"
    "  --json OUT.json       write {score, n, errors, cost, results: [{inputs,\n"
    "                        prediction, metric}]} ('-' for stdout); cost: {usd,\n"
    "                        saved_usd, prompt_tokens, completion_tokens, by_model, "
    "...}\n" PRICES_USAGE "  -q, --quiet           no progress bar, no summary\n"
    "  -h, --help            this text\n\n";

static void eval_print_usage(FILE *out)
{
    fputs(eval_usage, out);
    fputs(SELECT_USAGE "  (the --metric above is what measured: scores with; with --models the\n"
                       "  --json results name each example's \"model\" and \"selection\" says\n"
                       "  what was measured and routed)\n\n",
          out);
    endpoint_print_usage(out, "");
}

enum {
    OPT_SIGNATURE = 1,
    OPT_MODULE,
    OPT_STATE,
    OPT_DEVSET,
    OPT_METRIC,
    OPT_METRIC_PYTHON,
    OPT_CONCURRENCY,
    OPT_MAX_ERRORS,
    OPT_FAILURE,
    OPT_JSON,
    OPT_PRICES
};

struct bar {
    bool on;
    uint64_t last_ns;
};

/* DSPy's tqdm line: "Average Metric: S / done (P%)". */
static int eval_bar(void *ud, const struct dspy_eval_progress *p)
{
    struct bar *b = ud;
    uint64_t now = dspy_clock_ns();
    if (b->on && (now - b->last_ns > 100000000ull || p->done == p->total)) {
        b->last_ns = now;
        double secs = (double)p->elapsed_ns / 1e9;
        fprintf(stderr, "\rAverage Metric: %.2f / %zu (%.1f%%)  %zu/%zu  %.1f/s  errors %zu ",
                p->score_sum, p->done, p->done ? 100.0 * p->score_sum / (double)p->done : 0.0,
                p->done, p->total, secs > 0 ? (double)p->done / secs : 0.0, p->errors);
    }
    return 0;
}

int cmd_eval(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "signature", required_argument, NULL, OPT_SIGNATURE },
        { "module", required_argument, NULL, OPT_MODULE },
        { "state", required_argument, NULL, OPT_STATE },
        { "devset", required_argument, NULL, OPT_DEVSET },
        { "metric", required_argument, NULL, OPT_METRIC },
        { "metric-python", required_argument, NULL, OPT_METRIC_PYTHON },
        { "concurrency", required_argument, NULL, OPT_CONCURRENCY },
        { "max-errors", required_argument, NULL, OPT_MAX_ERRORS },
        { "failure-score", required_argument, NULL, OPT_FAILURE },
        { "json", required_argument, NULL, OPT_JSON },
        { "prices", required_argument, NULL, OPT_PRICES },
        SELECT_LONG_OPTIONS,
        { "quiet", no_argument, NULL, 'q' },
        { "help", no_argument, NULL, 'h' },
        ENDPOINT_LONG_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    const char *program_path = NULL, *signature = NULL, *state = NULL, *devset = NULL;
    const char *metric_spec = NULL, *json_out = NULL, *metric_python = NULL, *prices_path = NULL;
    long concurrency = 16, max_errors = 0;
    double failure = 0;
    int module = DSPY_MODULE_PREDICT, opt;
    bool quiet = false;
    struct endpoint ep;
    struct selector_args sa;
    struct selection sel;
    memset(&sel, 0, sizeof(sel));
    selector_args_init(&sa);
    endpoint_init(&ep);
    ep.cache.default_levels = "mem";
    optind = 1;
    while ((opt = getopt_long(argc, argv, "hq", longopts, NULL)) != -1) {
        int sc = selector_option(&sa, "eval", opt, optarg);
        if (sc < 0)
            return 2;
        if (sc)
            continue;
        int e = endpoint_option(&ep, opt, optarg);
        if (e < 0)
            return 2;
        if (e)
            continue;
        switch (opt) {
        case OPT_SIGNATURE: signature = optarg; break;
        case OPT_MODULE:
            if ((module = dspy_module_kind_from_name(optarg)) < 0) {
                fprintf(stderr, "dspyc eval: --module: '%s' is not predict or cot\n", optarg);
                return 2;
            }
            break;
        case OPT_STATE: state = optarg; break;
        case OPT_DEVSET: devset = optarg; break;
        case OPT_METRIC: metric_spec = optarg; break;
        case OPT_METRIC_PYTHON: metric_python = optarg; break;
        case OPT_CONCURRENCY:
            if (parse_long_flag("--concurrency", optarg, 1, DSPY_BATCH_MAX_WORKERS, &concurrency))
                return 2;
            break;
        case OPT_MAX_ERRORS:
            if (parse_long_flag("--max-errors", optarg, 1, 1L << 40, &max_errors))
                return 2;
            break;
        case OPT_FAILURE:
            if (parse_double_flag("--failure-score", optarg, -1e9, 1e9, &failure))
                return 2;
            break;
        case OPT_JSON: json_out = optarg; break;
        case OPT_PRICES: prices_path = optarg; break;
        case 'q': quiet = true; break;
        case 'h': eval_print_usage(stdout); return 0;
        default: eval_print_usage(stderr); return 2;
        }
    }
    if (optind < argc)
        program_path = argv[optind++];
    if (optind < argc || !devset || !metric_spec == !metric_python || !program_path == !signature) {
        fprintf(stderr, "dspyc eval: name a program file or --signature (one of them), "
                        "--devset and --metric or --metric-python (one of them)\n\n");
        eval_print_usage(stderr);
        return 2;
    }
    struct examples ex;
    dspy_price_table *prices = prices_open("eval", prices_path);
    dspy_cost_tally *cost = NULL;
    dspy_program *p = prices ? opt_program("eval", program_path, signature, module, state) : NULL;
    if (!p) {
        dspy_price_table_free(prices);
        return 2;
    }
    if (!examples_load(&ex, devset, true)) {
        dspy_program_free(p);
        dspy_price_table_free(prices);
        return 2;
    }
    int rc = 2;
    dspy_program *judge = NULL;
    dspy_metric *metric = NULL;
    dspy_lm *lm = endpoint_open(&ep);
    if (!lm || !(metric = metric_python ? opt_metric_python("eval", metric_python)
                                        : opt_metric("eval", metric_spec, lm, &judge)))
        goto out;
    if (selection_open(&sel, "eval", &sa, &ep, prices, p, metric, (unsigned)concurrency, quiet))
        goto out;
    struct dspy_eval_options o = DSPY_EVAL_OPTIONS_INIT;
    struct dspy_eval_result res;
    struct dspy_error err;
    struct bar bar = { !quiet && isatty(2), 0 };
    o.concurrency = (unsigned)concurrency;
    o.max_errors = (size_t)max_errors;
    o.failure_score = failure;
    o.progress = eval_bar;
    o.progress_userdata = &bar;
    if (sel.sel) {
        o.route = selection_route;
        o.route_userdata = &sel;
        o.lms = sel.lms;
        o.nlms = sel.n;
    }
    dspy_error_clear(&err);
    dspy_status erc = dspy_evaluate(p, lm, ex.items, metric, &o, &res, &err);
    if (bar.on)
        fputc('\n', stderr);
    if (erc && erc != DSPY_ECANCELED) {
        examples_print_error("eval", &ex, &err);
        goto out;
    }
    if (!(cost = dspy_cost_tally_new(prices, NULL)))
        abort();
    for (size_t i = 0; i < res.n; i++) {
        const struct dspy_call_info *in = &res.items[i].info;
        const char *model = selection_model(&sel, res.items[i].lm, dspy_lm_model(lm));
        if (in->lm_calls && dspy_cost_tally_add(cost, model, in->lm_calls, in->cache_hits,
                                                &in->usage, &in->cached_usage))
            abort();
    }
    json_t *cost_json = dspy_cost_tally_json(cost);
    if (!quiet) {
        fprintf(stderr,
                "Average Metric: %.2f / %zu (%.1f%%)\ndspyc eval: score %.2f, %zu "
                "examples, %zu errors, %llu LM calls (%llu from the cache), tokens: %ld "
                "prompt, %ld completion\n",
                res.sum, res.n, res.n ? 100.0 * res.sum / (double)res.n : 0.0, res.score, res.n,
                res.errors, (unsigned long long)res.lm_calls, (unsigned long long)res.cache_hits,
                res.usage.prompt_tokens, res.usage.completion_tokens);
        print_cost_summary(stderr, cost_json);
        selection_print(&sel, stderr);
    }
    if (erc == DSPY_ECANCELED)
        fprintf(stderr, "dspyc eval: %s\n", err.message);
    rc = erc || res.errors ? 1 : 0;
    if (json_out) {
        json_t *doc = dspy_eval_result_json(&res, p, ex.items);
        if (doc) {
            json_object_set_new(doc, "cost", json_incref(cost_json));
            json_object_set_new(doc, "selection", selection_json(&sel));
            for (size_t i = 0; sel.sel && i < res.n; i++)
                json_object_set_new(json_array_get(json_object_get(doc, "results"), i), "model",
                                    json_string(
                                        selection_model(&sel, res.items[i].lm, dspy_lm_model(lm))));
        }
        int bad = !doc || (strcmp(json_out, "-") ? json_dump_file(doc, json_out, JSON_INDENT(1))
                                                 : json_dumpf(doc, stdout, JSON_INDENT(1)));
        if (!strcmp(json_out, "-"))
            fputc('\n', stdout);
        json_decref(doc);
        if (bad) {
            fprintf(stderr, "dspyc eval: cannot write %s\n", json_out);
            rc = 2;
        }
    } else {
        printf("%.2f\n", res.score);
    }
    dspy_eval_result_release(&res);
    json_decref(cost_json);
out:
    selection_close(&sel);
    dspy_cost_tally_free(cost);
    dspy_price_table_free(prices);
    dspy_metric_free(metric);
    if (metric_python)
        opt_metric_python_done();
    dspy_program_free(judge);
    examples_release(&ex);
    endpoint_close(&ep, lm);
    dspy_program_free(p);
    return rc;
}

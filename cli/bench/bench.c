/* `dspyc bench`: flags, the subjects to measure (modules × models), and the run (apps
 * layer). */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"
#include "endpoint.h"
#include "util.h"

static const char bench_usage[] =
    "usage: dspyc bench [options]\n\n"
    "Measure LM calls through dspyc: single-call latency percentiles, batch throughput\n"
    "sequential vs parallel, where each call's time goes (runtime vs wire+LM vs parsing),\n"
    "memory and leaks, module and model comparisons, and optionally the same program run\n"
    "by Python DSPy through embedded CPython. Against the built-in simulator by default.\n"
    "Failed calls are counted and left out of every figure: latency, the breakdown and\n"
    "calls/s (goodput: successful calls per second of the series' wall time) are over the\n"
    "calls that worked. A subject whose calls all failed is reported as FAILED, with no\n"
    "figures. Exit status: 0 when every subject was measured, 1 when one FAILED, 2 on bad\n"
    "flags or when the suite could not run.\n\n"
    "what to measure:\n"
    "  --signature SIG       signature (default 'question -> answer')\n"
    "  --modules LIST        modules to compare, first is the reference (default predict,cot)\n"
    "  --program FILE        a program file instead of --signature/--modules\n"
    "  --adapter chat|json   prompt format (default chat)\n"
    "  --input FILE.jsonl    input records, used round-robin (default: generated questions)\n"
    "  --model A,B           run the suite per model (default: the endpoint's)\n"
    "  --python MOD:ATTR     also call this Python DSPy module through embedded CPython\n"
    "  --python-threads T    C threads calling it under contention (default 4)\n"
    "how:\n"
    "  --iterations N        measured calls per series (default 100, or $ITERATIONS)\n"
    "  --warmup K            unmeasured calls first (default 3)\n"
    "  --concurrency C       threads for the parallel batch (default 8)\n" PRICES_USAGE "output:\n"
    "  --json FILE           every figure and the configuration as JSON (docs/bench.md)\n"
    "  --compare OLD.json    show the change against an earlier --json file\n"
    "  -h, --help            this text\n\n";

enum {
    OPT_SIGNATURE = 1,
    OPT_MODULES,
    OPT_PROGRAM,
    OPT_ADAPTER,
    OPT_INPUT,
    OPT_PYTHON,
    OPT_PYTHON_THREADS,
    OPT_ITERATIONS,
    OPT_WARMUP,
    OPT_CONCURRENCY,
    OPT_JSON,
    OPT_COMPARE,
    OPT_PRICES,
};

struct bench_args {
    const char *signature, *modules, *program, *input, *models, *python, *json_path, *compare;
    const char *prices_path;
    int adapter;
    long python_threads;
    struct bench_config cfg;
};

static json_t *generated_inputs(void)
{
    static const char *const items[] = { "apples", "marbles", "books", "coins", "shells" };
    json_t *arr = json_array();
    for (int i = 0; i < 64; i++) {
        char q[160];
        snprintf(q, sizeof(q), "Ava has %d %s. She buys %d more. How many %s does Ava have now?",
                 3 + i, items[i % 5], 2 + i % 7, items[i % 5]);
        json_array_append_new(arr, json_pack("{s:s}", "question", q));
    }
    return arr;
}

static dspy_program *subject_program(const struct bench_args *a, const char *module,
                                     struct dspy_error *err)
{
    dspy_program *p = NULL;
    if (a->program) {
        if (dspy_program_load(a->program, &p, err))
            return NULL;
        return p;
    }
    int kind = dspy_module_kind_from_name(module);
    dspy_signature *sig = NULL;
    if (kind < 0) {
        snprintf(err->message, sizeof(err->message), "--modules: '%s' is not predict or cot",
                 module);
        return NULL;
    }
    if (dspy_signature_parse(a->signature, NULL, &sig, err))
        return NULL;
    dspy_module *m = dspy_module_new((enum dspy_module_kind)kind, sig,
                                     (enum dspy_adapter_kind)a->adapter);
    dspy_signature_free(sig);
    if (m && !(p = dspy_program_single(m)))
        dspy_module_free(m);
    if (!p)
        snprintf(err->message, sizeof(err->message), "out of memory");
    return p;
}

/* Split "a,b,c" into at most `max` pieces in `buf`. */
static int split_list(const char *list, char *buf, size_t cap, char **out, int max)
{
    int n = 0;
    snprintf(buf, cap, "%s", list);
    for (char *t = strtok(buf, ","); t && n < max; t = strtok(NULL, ","))
        out[n++] = t;
    return n;
}

static int parse_bench_args(struct bench_args *a, struct endpoint *ep, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "signature", required_argument, NULL, OPT_SIGNATURE },
        { "modules", required_argument, NULL, OPT_MODULES },
        { "program", required_argument, NULL, OPT_PROGRAM },
        { "adapter", required_argument, NULL, OPT_ADAPTER },
        { "input", required_argument, NULL, OPT_INPUT },
        { "python", required_argument, NULL, OPT_PYTHON },
        { "python-threads", required_argument, NULL, OPT_PYTHON_THREADS },
        { "iterations", required_argument, NULL, OPT_ITERATIONS },
        { "warmup", required_argument, NULL, OPT_WARMUP },
        { "concurrency", required_argument, NULL, OPT_CONCURRENCY },
        { "json", required_argument, NULL, OPT_JSON },
        { "compare", required_argument, NULL, OPT_COMPARE },
        { "prices", required_argument, NULL, OPT_PRICES },
        { "help", no_argument, NULL, 'h' },
        ENDPOINT_LONG_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    int opt;
    const char *env_iter = getenv("ITERATIONS");
    if (env_iter && parse_long_flag("$ITERATIONS", env_iter, 1, 100000000, &a->cfg.iterations))
        return 2;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (opt == ENDPOINT_OPT_MODEL) { /* a list here: the suite runs per model */
            a->models = optarg;
            continue;
        }
        int e = endpoint_option(ep, opt, optarg);
        if (e < 0)
            return 2;
        if (e)
            continue;
        switch (opt) {
        case OPT_SIGNATURE: a->signature = optarg; break;
        case OPT_MODULES: a->modules = optarg; break;
        case OPT_PROGRAM: a->program = optarg; break;
        case OPT_ADAPTER:
            if ((a->adapter = dspy_adapter_from_name(optarg)) < 0) {
                fprintf(stderr, "dspyc bench: --adapter: '%s' is not chat or json\n", optarg);
                return 2;
            }
            break;
        case OPT_INPUT: a->input = optarg; break;
        case OPT_PYTHON: a->python = optarg; break;
        case OPT_PYTHON_THREADS:
            if (parse_long_flag("--python-threads", optarg, 1, 256, &a->python_threads))
                return 2;
            break;
        case OPT_ITERATIONS:
            if (parse_long_flag("--iterations", optarg, 1, 100000000, &a->cfg.iterations))
                return 2;
            break;
        case OPT_WARMUP:
            if (parse_long_flag("--warmup", optarg, 0, 1000000, &a->cfg.warmup))
                return 2;
            break;
        case OPT_CONCURRENCY:
            if (parse_long_flag("--concurrency", optarg, 1, 1024, &a->cfg.concurrency))
                return 2;
            break;
        case OPT_JSON: a->json_path = optarg; break;
        case OPT_COMPARE: a->compare = optarg; break;
        case OPT_PRICES: a->prices_path = optarg; break;
        case 'h': endpoint_print_usage(stdout, bench_usage); return 1;
        default: endpoint_print_usage(stderr, bench_usage); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dspyc bench: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    return 0;
}

static int write_json(const char *path, const json_t *doc)
{
    if (json_dump_file(doc, path, JSON_INDENT(2))) {
        fprintf(stderr, "dspyc bench: cannot write %s\n", path);
        return -1;
    }
    return 0;
}

int cmd_bench(int argc, char **argv)
{
    struct bench_args a = { .signature = "question -> answer",
                            .modules = "predict,cot",
                            .adapter = DSPY_ADAPTER_CHAT,
                            .python_threads = 4,
                            .cfg = { .iterations = 100, .warmup = 3, .concurrency = 8 } };
    struct endpoint ep;
    struct bench_subject subjects[32];
    char modbuf[256], modelbuf[1024], *mods[8], *models[8];
    int nmods, nmodels, rc;
    size_t n = 0;
    json_t *inputs = NULL;
    endpoint_init(&ep);
    if ((rc = parse_bench_args(&a, &ep, argc, argv)))
        return rc == 1 ? 0 : rc;
    a.cfg.progress = isatty(2);
    dspy_price_table *prices = prices_open("bench", a.prices_path);
    if (!prices)
        return 2;
    a.cfg.prices = prices;
    inputs = a.input ? load_jsonl_objects(a.input) : generated_inputs();
    if (!inputs || !json_array_size(inputs)) {
        fprintf(stderr, "dspyc bench: no input records\n");
        json_decref(inputs);
        dspy_price_table_free(prices);
        return 2;
    }
    a.cfg.inputs = inputs;
    nmods = a.program ? 1 : split_list(a.modules, modbuf, sizeof(modbuf), mods, 8);
    if (a.program)
        mods[0] = (char *)"program";
    nmodels = a.models ? split_list(a.models, modelbuf, sizeof(modelbuf), models, 8) : 1;
    rc = 2;
    for (int mi = 0; mi < nmodels; mi++) {
        if (a.models)
            ep.model = models[mi];
        dspy_lm *lm = endpoint_open(&ep);
        if (!lm)
            goto out;
        for (int k = 0; k < nmods; k++) {
            struct dspy_error err;
            struct bench_subject *s = &subjects[n];
            dspy_error_clear(&err);
            memset(s, 0, sizeof(*s));
            s->py_total_ns = -1;
            dspy_program *p = subject_program(&a, mods[k], &err);
            if (!p) {
                fprintf(stderr, "dspyc bench: %s\n", err.message);
                dspy_lm_free(lm);
                goto out;
            }
            snprintf(s->name, sizeof(s->name), "%s%s%s", a.program ? a.program : mods[k],
                     nmodels > 1 ? "@" : "", nmodels > 1 ? models[mi] : "");
            snprintf(s->model, sizeof(s->model), "%s", dspy_lm_model(lm));
            if (a.cfg.progress)
                fprintf(stderr, "measuring %s\n", s->name);
            int bad = bench_measure(p, lm, &a.cfg, s);
            if (!bad && a.python && k == 0)
                bad = bench_python(&a.cfg, a.python, a.python_threads, ep.base_url, s->model, s);
            dspy_program_free(p);
            n++;
            if (bad) {
                dspy_lm_free(lm);
                goto out;
            }
        }
        dspy_lm_free(lm);
    }
    double self_cost = bench_self_cost_ns();
    char masked[1024];
    const char *where = ep.sim ? "built-in simulator"
                               : (dspy_url_redact(ep.base_url, masked, sizeof(masked)), masked);
    bench_report(stdout, &a.cfg, where, subjects, n, self_cost);
    json_t *doc = bench_to_json(&a.cfg, where, subjects, n, self_cost);
    rc = 0;
    for (size_t i = 0; i < n; i++)
        if (subjects[i].failed) {
            fprintf(stderr, "dspyc bench: %s FAILED: all its calls failed (%s)\n", subjects[i].name,
                    subjects[i].first_error);
            rc = 1;
        }
    if (a.json_path && write_json(a.json_path, doc))
        rc = 2;
    if (a.compare && bench_compare(stdout, doc, a.compare))
        rc = 2;
    json_decref(doc);
out:
    for (size_t i = 0; i < n; i++)
        dspy_cost_tally_free(subjects[i].cost);
    dspy_price_table_free(prices);
    if (a.python)
        bench_python_done();
    json_decref(inputs);
    endpoint_close(&ep, NULL);
    return rc;
}

/* `dspyc predict`: one module call from the command line, the prediction printed as JSON
 * (apps layer). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "endpoint.h"
#include "util.h"

static const char predict_usage[] =
    "usage: dspyc predict [options] SIGNATURE field=value ...\n\n"
    "Call one module once and print its prediction as JSON. A value that parses as JSON is\n"
    "that JSON value (n=4, docs='[\"a\",\"b\"]'); anything else is a string.\n\n"
    "example:\n"
    "  dspyc predict --module cot 'question -> answer: int' question='What is 7 * 6?'\n\n"
    "options:\n"
    "  --module predict|cot  Predict (default) or ChainOfThought\n"
    "  --adapter chat|json   prompt format (default chat, falling back to json as DSPy does)\n"
    "  --instructions TEXT   task instructions (default: DSPy's generated text)\n"
    "  --demos FILE.jsonl    few-shot demos, one JSON object of field values per line\n"
    "  --n N                 number of completions; prints all of them\n"
    "  --rollout-id N        DSPy's rollout id (changes the cache key only)\n"
    "  --print-messages      print the messages that would be sent, and do not call the LM\n"
    "  --stream              stream the answer: the LM's raw text goes to stderr as it\n"
    "                        arrives (a cache hit, exact or semantic, is replayed in\n"
    "                        small pieces), then the prediction JSON to stdout as usual.\n"
    "                        The text is parsed with --adapter only (no second call with\n"
    "                        the JSON adapter); not with --n > 1\n"
    "  -h, --help            this text\n\n";

enum {
    OPT_MODULE = 1,
    OPT_ADAPTER,
    OPT_INSTRUCTIONS,
    OPT_DEMOS,
    OPT_N,
    OPT_ROLLOUT,
    OPT_PRINT,
    OPT_STREAM
};

static void print_json(const json_t *v)
{
    char *s = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY);
    if (!s)
        abort();
    puts(s);
    free(s);
}

/* Deltas as they come, on the LM's event-loop thread: stderr, unbuffered. */
static int print_delta(void *userdata, const char *text, size_t len, uint64_t recv_ns)
{
    (void)userdata;
    (void)recv_ns;
    fwrite(text, 1, len, stderr);
    fflush(stderr);
    return 0;
}

/* The module's request, streamed, and its text parsed with the module's adapter. */
static dspy_status predict_streamed(dspy_module *m, dspy_lm *lm, const json_t *inputs,
                                    const struct dspy_call_config *cfg, json_t **pred,
                                    struct dspy_error *err)
{
    struct dspy_lm_request req = DSPY_LM_REQUEST_INIT;
    struct dspy_lm_response resp;
    enum dspy_adapter_kind adapter = dspy_module_adapter(m);
    json_t *msgs = NULL, *rf = NULL;
    dspy_status rc = dspy_module_format(m, inputs, &msgs, err);
    if (rc)
        return rc;
    if (adapter == DSPY_ADAPTER_JSON && dspy_lm_structured_outputs(lm))
        rf = dspy_adapter_schema_format(dspy_module_signature(m));
    if (!rf)
        rf = dspy_adapter_response_format(adapter, dspy_module_signature(m));
    req.messages = msgs;
    req.response_format = rf;
    req.temperature = cfg->temperature;
    req.max_tokens = cfg->max_tokens;
    req.top_p = cfg->top_p;
    req.has_rollout_id = cfg->has_rollout_id;
    req.rollout_id = cfg->rollout_id;
    req.cache = cfg->cache;
    rc = dspy_lm_stream(lm, &req, print_delta, NULL, &resp, err);
    fputc('\n', stderr);
    if (!rc) {
        rc = dspy_adapter_parse(adapter, dspy_module_signature(m), resp.texts[0],
                                strlen(resp.texts[0]), pred, err);
        dspy_lm_response_release(&resp);
    }
    json_decref(rf);
    json_decref(msgs);
    return rc;
}

int cmd_predict(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "module", required_argument, NULL, OPT_MODULE },
        { "adapter", required_argument, NULL, OPT_ADAPTER },
        { "instructions", required_argument, NULL, OPT_INSTRUCTIONS },
        { "demos", required_argument, NULL, OPT_DEMOS },
        { "n", required_argument, NULL, OPT_N },
        { "rollout-id", required_argument, NULL, OPT_ROLLOUT },
        { "print-messages", no_argument, NULL, OPT_PRINT },
        { "stream", no_argument, NULL, OPT_STREAM },
        { "help", no_argument, NULL, 'h' },
        ENDPOINT_LONG_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    struct endpoint ep;
    struct dspy_call_config cfg = DSPY_CALL_CONFIG_INIT;
    int kind = DSPY_MODULE_PREDICT, adapter = DSPY_ADAPTER_CHAT, opt, rc = 2;
    const char *instructions = NULL, *demos_path = NULL;
    bool print_messages = false, stream = false;
    long n = 0;
    endpoint_init(&ep);
    ep.cache.default_levels = "mem,disk"; /* as DSPy: memory and disk by default */
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int e = endpoint_option(&ep, opt, optarg);
        if (e < 0)
            return 2;
        if (e)
            continue;
        switch (opt) {
        case OPT_MODULE:
            if ((kind = dspy_module_kind_from_name(optarg)) < 0) {
                fprintf(stderr, "dspyc predict: --module: '%s' is not predict or cot\n", optarg);
                return 2;
            }
            break;
        case OPT_ADAPTER:
            if ((adapter = dspy_adapter_from_name(optarg)) < 0) {
                fprintf(stderr, "dspyc predict: --adapter: '%s' is not chat or json\n", optarg);
                return 2;
            }
            break;
        case OPT_INSTRUCTIONS: instructions = optarg; break;
        case OPT_DEMOS: demos_path = optarg; break;
        case OPT_N:
            if (parse_long_flag("--n", optarg, 1, 128, &n))
                return 2;
            cfg.n = (int)n;
            break;
        case OPT_ROLLOUT:
            if (parse_long_flag("--rollout-id", optarg, 0, 1L << 62, &cfg.rollout_id))
                return 2;
            cfg.has_rollout_id = true;
            break;
        case OPT_PRINT: print_messages = true; break;
        case OPT_STREAM: stream = true; break;
        case 'h': endpoint_print_usage(stdout, predict_usage); return 0;
        default: endpoint_print_usage(stderr, predict_usage); return 2;
        }
    }
    if (optind >= argc) {
        endpoint_print_usage(stderr, predict_usage);
        return 2;
    }
    if (stream && cfg.n > 1) {
        fprintf(stderr, "dspyc predict: --stream takes one completion (no --n)\n");
        return 2;
    }

    struct dspy_error err;
    dspy_signature *sig = NULL;
    dspy_module *m = NULL;
    dspy_lm *lm = NULL;
    json_t *inputs = json_object(), *demos = NULL, *pred = NULL, *completions = NULL;
    dspy_error_clear(&err);
    if (dspy_signature_parse(argv[optind], instructions, &sig, &err)) {
        print_error("signature", &err);
        goto out;
    }
    for (int i = optind + 1; i < argc; i++)
        if (parse_assignment(argv[i], inputs))
            goto out;
    if (demos_path && !(demos = load_jsonl_objects(demos_path)))
        goto out;
    m = dspy_module_new((enum dspy_module_kind)kind, sig, (enum dspy_adapter_kind)adapter);
    if (!m || (demos && dspy_module_set_demos(m, demos))) {
        fprintf(stderr, "dspyc predict: out of memory\n");
        goto out;
    }
    if (print_messages) {
        json_t *msgs = NULL;
        if (dspy_module_format(m, inputs, &msgs, &err)) {
            print_error("predict", &err);
            rc = 1;
            goto out;
        }
        print_json(msgs);
        json_decref(msgs);
        rc = 0;
        goto out;
    }
    if (!(lm = endpoint_open(&ep)))
        goto out;
    if (stream ? predict_streamed(m, lm, inputs, &cfg, &pred, &err)
               : dspy_module_call(m, lm, inputs, &cfg, &pred, cfg.n > 1 ? &completions : NULL, NULL,
                                  &err)) {
        json_t *e = json_pack("{s:o}", "error", error_to_json(&err));
        print_json(e);
        json_decref(e);
        rc = 1;
        goto out;
    }
    print_json(completions ? completions : pred);
    rc = 0;
out:
    json_decref(pred);
    json_decref(completions);
    json_decref(demos);
    json_decref(inputs);
    dspy_module_free(m);
    dspy_signature_free(sig);
    endpoint_close(&ep, lm);
    return rc;
}

/* Framework overhead per module call: prompt rendering, request encoding and response
 * parsing, with the LM replaced by an in-process canned response (no network, no cache).
 * Prints microseconds per call for Predict with 0 and 4 demos and for ChainOfThought;
 * `--json` prints the same figures as one JSON object for the comparison harness;
 * `--scenario NAME` runs only that one (for profiling a single path). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/dspyc.h>

struct canned {
    const char *body;
    size_t len;
};

static dspy_status canned_transport(void *userdata, const char *url, const char *body,
                                    size_t body_len, long *http_status, char **response,
                                    size_t *response_len, struct dspy_error *err)
{
    const struct canned *c = userdata;
    (void)url;
    (void)body;
    (void)body_len;
    (void)err;
    *http_status = 200;
    *response = dspy_malloc(c->len);
    if (!*response)
        return DSPY_ENOMEM;
    memcpy(*response, c->body, c->len);
    *response_len = c->len;
    return DSPY_OK;
}

#define CANNED(content)                                                                        \
    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":0,\"model\":\"sim\","   \
    "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"" content     \
    "\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":120,\"completion_tokens\":" \
    "12,\"total_tokens\":132}}"

struct scenario {
    const char *name;
    enum dspy_module_kind kind;
    int ndemos;
    const char *response;
};

static const struct scenario scenarios[] = {
    { "predict_0_demos", DSPY_MODULE_PREDICT, 0,
      CANNED("[[ ## answer ## ]]\\nParis\\n\\n[[ ## completed ## ]]") },
    { "predict_4_demos", DSPY_MODULE_PREDICT, 4,
      CANNED("[[ ## answer ## ]]\\nParis\\n\\n[[ ## completed ## ]]") },
    { "cot_0_demos", DSPY_MODULE_COT, 0,
      CANNED("[[ ## reasoning ## ]]\\nThe capital of France is Paris.\\n\\n[[ ## answer ## ]]"
             "\\nParis\\n\\n[[ ## completed ## ]]") },
};

static double run_scenario(const struct scenario *s, long iterations)
{
    struct canned c = { s->response, strlen(s->response) };
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    struct dspy_error err;
    dspy_signature *sig = NULL;
    dspy_module *m = NULL;
    dspy_lm *lm = NULL;
    json_t *inputs = json_pack("{s:s}", "question", "What is the capital of France?");
    json_t *demos = json_array();
    double us = -1;
    o.base_url = "http://canned.invalid/v1";
    o.model = "openai/canned";
    o.transport = canned_transport;
    o.transport_userdata = &c;
    dspy_error_clear(&err);
    for (int i = 0; i < s->ndemos; i++) {
        char q[64], a[16];
        snprintf(q, sizeof(q), "What is %d + %d?", i, i + 1);
        snprintf(a, sizeof(a), "%d", 2 * i + 1);
        json_array_append_new(demos, json_pack("{s:s, s:s}", "question", q, "answer", a));
    }
    if (dspy_signature_parse("question -> answer", NULL, &sig, &err) ||
        !(m = dspy_module_new(s->kind, sig, DSPY_ADAPTER_CHAT)) ||
        dspy_module_set_demos(m, demos) || dspy_lm_new(&o, &lm, &err)) {
        fprintf(stderr, "bench_overhead: setup failed: %s\n", err.message);
        goto out;
    }
    /* Warm up: the module renders and caches its system and demo messages once. */
    for (long i = 0; i < 1000; i++) {
        json_t *pred = NULL;
        if (dspy_module_call(m, lm, inputs, NULL, &pred, NULL, NULL, &err)) {
            fprintf(stderr, "bench_overhead: call failed: %s\n", err.message);
            goto out;
        }
        json_decref(pred);
    }
    uint64_t t0 = dspy_clock_ns();
    for (long i = 0; i < iterations; i++) {
        json_t *pred = NULL;
        dspy_module_call(m, lm, inputs, NULL, &pred, NULL, NULL, &err);
        json_decref(pred);
    }
    us = (double)(dspy_clock_ns() - t0) / 1e3 / (double)iterations;
out:
    json_decref(inputs);
    json_decref(demos);
    dspy_lm_free(lm);
    dspy_module_free(m);
    dspy_signature_free(sig);
    return us;
}

int main(int argc, char **argv)
{
    long iterations = 200000;
    int as_json = 0;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            as_json = 1;
        else if (!strcmp(argv[i], "--iterations") && i + 1 < argc)
            iterations = atol(argv[++i]);
        else if (!strcmp(argv[i], "--scenario") && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: bench_overhead [--iterations N] [--scenario NAME] [--json]\n");
            return 2;
        }
    }
    if (iterations < 1)
        iterations = 1;
    if (!as_json)
        printf("dspyc framework overhead per call (canned LM, no cache, %ld calls each)\n",
               iterations);
    else
        printf("{\"iterations\": %ld", iterations);
    for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++) {
        if (only && strcmp(only, scenarios[i].name))
            continue;
        double us = run_scenario(&scenarios[i], iterations);
        if (us < 0)
            return 1;
        if (as_json)
            printf(", \"%s_us\": %.4f", scenarios[i].name, us);
        else
            printf("  %-18s %9.3f us/call\n", scenarios[i].name, us);
    }
    if (as_json)
        printf("}\n");
    return 0;
}

/* Calls in flight (bench): dspy_program_batch_stream runs a Predict over N records at
 * concurrency C against a server of a fixed latency (`dspyc sim --latency-ms L`), records
 * made by the source and dropped by the sink, so what the process holds is the batch's own:
 * prints records/s against the ideal C / latency and the growth of peak RSS over the idle
 * process per call in flight. Fixed output format; not a pass/fail test.
 *
 * usage: bench_inflight --url BASE --latency-ms L [--concurrency C] [--records N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <dspyc/dspyc.h>

struct feed {
    size_t next, n;
};

static long max_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static int source(void *ud, struct dspy_batch_item *item)
{
    struct feed *f = ud;
    char q[64];
    if (f->next >= f->n)
        return 0;
    snprintf(q, sizeof(q), "What is %zu + 7?", f->next++);
    item->inputs = json_pack("{s:s}", "question", q);
    return 1;
}

static int sink(void *ud, size_t index, struct dspy_batch_item *item, struct dspy_batch_result *r)
{
    (void)ud;
    (void)index;
    (void)item;
    (void)r;
    return 0;
}

int main(int argc, char **argv)
{
    const char *url = NULL;
    int latency_ms = 2000;
    unsigned conc = 10000;
    size_t n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--url") && i + 1 < argc)
            url = argv[++i];
        else if (!strcmp(argv[i], "--latency-ms") && i + 1 < argc)
            latency_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--concurrency") && i + 1 < argc)
            conc = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--records") && i + 1 < argc)
            n = (size_t)atol(argv[++i]);
        else
            url = NULL, i = argc;
    }
    if (!url || latency_ms <= 0 || !conc) {
        fprintf(stderr, "usage: bench_inflight --url BASE --latency-ms L [--concurrency C] "
                        "[--records N]\n");
        return 2;
    }
    if (!n)
        n = (size_t)conc * 3;
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    struct dspy_error err;
    dspy_lm *lm = NULL;
    dspy_signature *sig = NULL;
    o.base_url = url;
    o.model = "openai/dspyc-sim";
    o.api_key_env = "DSPYC_BENCH_NO_KEY";
    if (dspy_lm_new(&o, &lm, &err) ||
        dspy_signature_parse("question -> answer", NULL, &sig, &err)) {
        fprintf(stderr, "bench_inflight: %s\n", err.message);
        return 2;
    }
    dspy_program *p = dspy_program_single(
        dspy_module_new(DSPY_MODULE_PREDICT, sig, DSPY_ADAPTER_CHAT));
    dspy_signature_free(sig);
    struct feed warm = { 0, 4 }, f = { 0, n };
    struct dspy_batch_options bo = DSPY_BATCH_OPTIONS_INIT;
    struct dspy_batch_stats st;
    bo.concurrency = 4;
    dspy_program_batch_stream(p, lm, &bo, source, sink, &warm, &st, NULL);
    long rss0 = max_rss_kb();
    bo.concurrency = conc;
    uint64_t t0 = dspy_clock_ns();
    dspy_status rc = dspy_program_batch_stream(p, lm, &bo, source, sink, &f, &st, &err);
    double wall = (double)(dspy_clock_ns() - t0) / 1e9;
    long rss1 = max_rss_kb();
    double ideal = (double)conc * 1000.0 / latency_ms;
    printf("# dspy_program_batch_stream, %zu records at concurrency %u, latency %d ms\n", n, conc,
           latency_ms);
    printf("rec_s %.1f ideal %.1f pct_ideal %.1f failed %zu rss_idle_kb %ld rss_peak_kb %ld "
           "kb_per_call_in_flight %.2f%s%s\n",
           (double)n / wall, ideal, 100.0 * (double)n / wall / ideal, st.failed, rss0, rss1,
           (double)(rss1 - rss0) / conc, rc ? " error " : "", rc ? err.message : "");
    dspy_program_free(p);
    dspy_lm_free(lm);
    return 0;
}

/* Batch execution vs concurrency (bench): dspy_program_batch runs a Predict over C x rounds
 * questions at concurrency C against an OpenAI-compatible server with a fixed latency
 * (`dspyc sim --latency-ms L`, given with --url; bench/concurrency_vs_dspy.py starts it).
 * Prints achieved records/s against the ideal C / latency and CPU per record (getrusage of
 * this process: the whole stack, prompt rendering and parsing included) and the batch's
 * worker threads (0: the calls ran straight on the event loop), then, with
 * --sched-url (a server of 20 ms), the DSRs-style scheduling case: 256 calls at
 * concurrency 16, ideal 320 ms. Fixed output format; not a pass/fail test.
 *
 * usage: bench_concurrency --url BASE --latency-ms L [--levels 1,16,256] [--rounds R]
 *                          [--sched-url BASE] [--sched-only] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>

#include <dspyc/dspyc.h>

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static dspy_lm *open_lm(const char *url)
{
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    struct dspy_error err;
    o.base_url = url;
    o.model = "openai/dspyc-sim";
    o.api_key_env = "DSPYC_BENCH_NO_KEY";
    if (dspy_lm_new(&o, &lm, &err)) {
        fprintf(stderr, "bench_concurrency: %s\n", err.message);
        exit(2);
    }
    return lm;
}

static dspy_program *qa_program(void)
{
    dspy_signature *sig = NULL;
    if (dspy_signature_parse("question -> answer", NULL, &sig, NULL))
        exit(2);
    dspy_program *p = dspy_program_single(
        dspy_module_new(DSPY_MODULE_PREDICT, sig, DSPY_ADAPTER_CHAT));
    dspy_signature_free(sig);
    if (!p)
        exit(2);
    return p;
}

static json_t *questions(size_t n, size_t salt)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        char q[64];
        snprintf(q, sizeof(q), "What is %zu + %zu?", i + salt, i + 1);
        json_array_append_new(a, json_pack("{s:s}", "question", q));
    }
    return a;
}

/* Run n records at concurrency c; wall seconds, CPU seconds, failures and the worker threads
 * it ran on (0: on the event loop) out. */
static void run_batch(dspy_program *p, dspy_lm *lm, size_t n, unsigned c, size_t salt, double *wall,
                      double *cpu, size_t *failed, size_t *threads)
{
    json_t *in = questions(n, salt);
    struct dspy_batch_result *res = calloc(n, sizeof(*res));
    struct dspy_batch_options o = DSPY_BATCH_OPTIONS_INIT;
    struct dspy_batch_stats st;
    if (!res)
        exit(2);
    o.concurrency = c;
    double c0 = cpu_s();
    uint64_t t0 = dspy_clock_ns();
    dspy_program_batch(p, lm, in, &o, res, &st, NULL);
    *wall = (double)(dspy_clock_ns() - t0) / 1e9;
    *cpu = cpu_s() - c0;
    *failed = st.failed;
    *threads = st.threads;
    dspy_batch_results_release(res, n);
    free(res);
    json_decref(in);
}

int main(int argc, char **argv)
{
    const char *url = NULL, *sched_url = NULL;
    int latency_ms = 100, rounds = 5;
    unsigned levels[16] = { 1, 16, 256, 1000, 10000 };
    int nlevels = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--url") && i + 1 < argc)
            url = argv[++i];
        else if (!strcmp(argv[i], "--sched-url") && i + 1 < argc)
            sched_url = argv[++i];
        else if (!strcmp(argv[i], "--latency-ms") && i + 1 < argc)
            latency_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--levels") && i + 1 < argc) {
            nlevels = 0;
            for (char *t = strtok(argv[++i], ","); t && nlevels < 16; t = strtok(NULL, ","))
                levels[nlevels++] = (unsigned)atoi(t);
        } else {
            fprintf(stderr, "usage: bench_concurrency --url BASE --latency-ms L "
                            "[--levels 1,16,256] [--rounds R] [--sched-url BASE]\n");
            return 2;
        }
    }
    dspy_program *p = qa_program();
    if (url) {
        dspy_lm *lm = open_lm(url);
        double w, c;
        size_t failed, threads;
        run_batch(p, lm, 32, 16, 1u << 30, &w, &c, &failed, &threads); /* warm connections */
        printf("# dspy_program_batch vs concurrency, server latency %d ms, %d rounds\n", latency_ms,
               rounds);
        printf("%-12s %8s %8s %10s %10s %8s %12s %7s\n", "concurrency", "workers", "records",
               "rec/s", "ideal", "%ideal", "cpu_us/rec", "failed");
        for (int i = 0; i < nlevels; i++) {
            unsigned conc = levels[i];
            size_t n = (size_t)conc * (size_t)rounds;
            run_batch(p, lm, n, conc, (size_t)i << 24, &w, &c, &failed, &threads);
            double ideal = (double)conc * 1000.0 / latency_ms;
            double rate = (double)n / w;
            printf("%-12u %8zu %8zu %10.1f %10.1f %7.1f%% %12.1f %7zu\n", conc, threads, n, rate,
                   ideal, 100.0 * rate / ideal, c * 1e6 / (double)n, failed);
            fflush(stdout);
        }
        dspy_lm_free(lm);
    }
    if (sched_url) {
        dspy_lm *lm = open_lm(sched_url);
        double w, c, best = 1e9;
        size_t failed, threads;
        run_batch(p, lm, 32, 16, 1u << 30, &w, &c, &failed, &threads);
        for (int r = 0; r < 5; r++) {
            run_batch(p, lm, 256, 16, (size_t)(r + 1) << 20, &w, &c, &failed, &threads);
            if (w < best)
                best = w;
        }
        printf("# scheduling: 256 calls of 20 ms at concurrency 16 (ideal 320 ms), best of 5\n");
        printf("dspyc_sched_ms %.1f over_ideal_ms %.1f failed %zu\n", best * 1e3,
               best * 1e3 - 320.0, failed);
        dspy_lm_free(lm);
    }
    dspy_program_free(p);
    return 0;
}

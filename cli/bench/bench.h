/* `dspyc bench`: the benchmark suite for LM calls (apps layer). bench.c reads the flags and
 * runs the suite, measure.c takes the measurements, report.c prints and compares them. */
#ifndef DSPYC_CLI_BENCH_H
#define DSPYC_CLI_BENCH_H

#include <stdbool.h>
#include <stdio.h>

#include <jansson.h>

#include <dspyc/dspyc.h>

struct bench_config {
    long iterations;                /* measured calls per series (--iterations, $ITERATIONS) */
    long warmup;                    /* unmeasured calls first */
    long concurrency;               /* threads for the parallel batch */
    const json_t *inputs;           /* array of input objects, used round-robin; borrowed */
    bool progress;                  /* show a progress line on stderr (a terminal) */
    const dspy_price_table *prices; /* --prices over the defaults; borrowed */
};

/* A latency summary in nanoseconds. */
struct bench_latency {
    uint64_t count, min, max, p50, p95, p99;
    double mean, stdev;
};

/* What one subject (a program on one model) measured. */
struct bench_subject {
    char name[96];
    char model[128];
    struct bench_latency latency; /* single calls, one after another */
    long errors;                  /* failed calls over all series, warm-up included */
    char first_error[256];
    /* Measured calls that succeeded and failed, per series. Failed calls enter no figure:
     * latency, breakdown and calls/s are over successful calls only. */
    long seq_ok, seq_failed, par_ok, par_failed;
    bool failed; /* every measured call failed: no figures at all */
    /* Where a call's time went, mean ns per call. */
    double format_ns, lm_ns, parse_ns, other_ns, total_ns;
    /* The same N inputs one after another and from `concurrency` threads: wall seconds of
     * each series, and successful calls per wall second (goodput). */
    double seq_s, par_s, seq_qps, par_qps, speedup;
    /* Memory. */
    uint64_t rss_baseline, rss_peak, rss_end;
    double bytes_per_call; /* RSS growth over the measured calls / calls */
    double leak_slope;     /* least-squares RSS slope after warm-up, bytes per call */
    bool leak_suspected;
    /* Python bridge beside it (--python), mean ns per call; < 0 when not run. */
    double py_total_ns, py_gil_ns, py_exec_ns, py_convert_ns;
    double py_contended_gil_ns, py_contended_total_ns;
    long py_threads;
    /* Usage and cost of every call the subject made (warm-up and both series), by model;
     * owned, freed with dspy_cost_tally_free. */
    dspy_cost_tally *cost;
};

/* Measure `prog` on `lm`; fills everything but the name, model and Python figures. */
int bench_measure(dspy_program *prog, dspy_lm *lm, const struct bench_config *cfg,
                  struct bench_subject *out);
/* Call the Python module `target` ("pkg.module:attr") through embedded CPython with the
 * same inputs: one thread, then `threads` at once; fills the py_* figures of `out`. The
 * module finds the endpoint in $DSPYC_BENCH_BASE_URL and $DSPYC_BENCH_MODEL. */
int bench_python(const struct bench_config *cfg, const char *target, long threads,
                 const char *base_url, const char *model, struct bench_subject *out);
/* Shut down the embedded interpreter, if bench_python started it. */
void bench_python_done(void);
/* The suite's own cost per measured call (clock reads and histogram record), in ns. */
double bench_self_cost_ns(void);

/* Print the human report of all subjects. */
void bench_report(FILE *out, const struct bench_config *cfg, const char *endpoint,
                  const struct bench_subject *subjects, size_t n, double self_cost_ns);
/* Every figure and the configuration as JSON (see docs/bench.md). Caller owns. */
json_t *bench_to_json(const struct bench_config *cfg, const char *endpoint,
                      const struct bench_subject *subjects, size_t n, double self_cost_ns);
/* Print the change from an earlier --json file. 0, or -1 after printing why. */
int bench_compare(FILE *out, const json_t *now, const char *old_path);

#endif

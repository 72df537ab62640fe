/* Cache hit latency end to end through a module call: a Predict module over an LM whose
 * cache holds the answer in exactly one level (L1 memory, L2 Redis, L3 disk), so every
 * timed call is a hit there. The LM's transport is an in-process canned response that
 * counts its calls (one, the warm-up miss, per level). Prints wall-clock and thread CPU
 * time per call, with the uncached call (canned LM, no cache) beside them; `--json` prints
 * one JSON object for bench/cache_vs_dspy.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <dspyc/dspyc.h>

#include "canned.h"

static long upstream_calls;

static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct result {
    double wall_ns, cpu_ns;
    long hits, upstream;
};

/* Time `iterations` calls of a Predict module through an LM over `cache` (NULL = none). */
static int time_calls(dspy_cache *cache, long iterations, struct result *out)
{
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    struct dspy_error err;
    dspy_signature *sig = NULL;
    dspy_module *m = NULL;
    dspy_lm *lm = NULL;
    json_t *inputs = json_pack("{s:s}", "question", "What is the capital of France?");
    int rc = -1;
    o.base_url = "http://canned.invalid/v1";
    o.model = "openai/canned";
    o.transport = canned_transport;
    o.transport_userdata = &upstream_calls;
    o.cache = cache;
    dspy_error_clear(&err);
    upstream_calls = 0;
    memset(out, 0, sizeof(*out));
    if (dspy_signature_parse("question -> answer", NULL, &sig, &err) ||
        !(m = dspy_module_new(DSPY_MODULE_PREDICT, sig, DSPY_ADAPTER_CHAT)) ||
        dspy_lm_new(&o, &lm, &err)) {
        fprintf(stderr, "bench_cache_hit: setup failed: %s\n", err.message);
        goto out;
    }
    /* The first call fills the cache; the rest of the warm-up runs the hit path. */
    for (long i = 0; i < 200; i++) {
        json_t *pred = NULL;
        if (dspy_module_call(m, lm, inputs, NULL, &pred, NULL, NULL, &err)) {
            fprintf(stderr, "bench_cache_hit: call failed: %s\n", err.message);
            goto out;
        }
        json_decref(pred);
    }
    struct dspy_call_info info;
    uint64_t w0 = dspy_clock_ns(), c0 = cpu_ns();
    for (long i = 0; i < iterations; i++) {
        json_t *pred = NULL;
        /* info only on the last call: asking for it makes the call read the clock */
        dspy_module_call(m, lm, inputs, NULL, &pred, NULL, i + 1 == iterations ? &info : NULL,
                         &err);
        json_decref(pred);
    }
    out->wall_ns = (double)(dspy_clock_ns() - w0) / (double)iterations;
    out->cpu_ns = (double)(cpu_ns() - c0) / (double)iterations;
    out->hits = info.cache_hits;
    out->upstream = upstream_calls;
    rc = 0;
out:
    json_decref(inputs);
    dspy_lm_free(lm);
    dspy_module_free(m);
    dspy_signature_free(sig);
    return rc;
}

struct level {
    const char *name;
    unsigned bit;
    long iterations;
    struct result r;
    bool done;
};

int main(int argc, char **argv)
{
    long iterations = 1000000, slow_iterations = 5000;
    const char *redis_url = NULL, *dir = NULL, *only = NULL;
    char tmpl[] = "/tmp/dspyc-bench-cache-XXXXXX";
    bool as_json = false, made_dir = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            as_json = true;
        else if (!strcmp(argv[i], "--iterations") && i + 1 < argc)
            iterations = atol(argv[++i]);
        else if (!strcmp(argv[i], "--slow-iterations") && i + 1 < argc)
            slow_iterations = atol(argv[++i]);
        else if (!strcmp(argv[i], "--redis-url") && i + 1 < argc)
            redis_url = argv[++i];
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--level") && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: bench_cache_hit [--iterations N] [--slow-iterations N]\n"
                            "                       [--redis-url URL] [--dir DIR]\n"
                            "                       [--level l1|l2|l3] [--json]\n"
                            "L1 runs N calls, L2 and L3 the slow count (L3 four times it).\n"
                            "L2 is measured only with --redis-url; L3 in DIR (default: a new\n"
                            "temporary directory, removed afterwards). --level times one\n"
                            "level and nothing else.\n");
            return 2;
        }
    }
    if (iterations < 1)
        iterations = 1;
    if (slow_iterations < 1)
        slow_iterations = 1;
    if (!dir) {
        if (!(dir = mkdtemp(tmpl))) {
            perror("bench_cache_hit: mkdtemp");
            return 1;
        }
        made_dir = true;
    }
    struct result base = { 0, 0, 0, 0 };
    struct level levels[] = {
        { "l1", DSPY_CACHE_L1, iterations, { 0, 0, 0, 0 }, false },
        { "l2", DSPY_CACHE_L2, slow_iterations, { 0, 0, 0, 0 }, false },
        { "l3", DSPY_CACHE_L3, slow_iterations * 4, { 0, 0, 0, 0 }, false },
    };
    int rc = 1;
    if (!only && time_calls(NULL, iterations / 4 + 1, &base))
        goto out;
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        struct level *l = &levels[i];
        struct dspy_cache_options co = DSPY_CACHE_OPTIONS_INIT;
        struct dspy_error err;
        dspy_cache *c = NULL;
        if ((l->bit == DSPY_CACHE_L2 && !redis_url) || (only && strcmp(only, l->name)))
            continue;
        co.levels = l->bit;
        co.redis_url = redis_url;
        co.redis_timeout_ms = 1000;
        co.disk_path = dir;
        dspy_error_clear(&err);
        if (dspy_cache_new(&co, &c, &err)) {
            fprintf(stderr, "bench_cache_hit: cache %s: %s\n", l->name, err.message);
            goto out;
        }
        dspy_cache_clear(c, 0, NULL);
        int bad = time_calls(c, l->iterations, &l->r);
        dspy_cache_free(c);
        if (bad)
            goto out;
        if (l->r.upstream != 1)
            fprintf(stderr, "bench_cache_hit: %s: %ld upstream calls, expected 1 (not all hits)\n",
                    l->name, l->r.upstream);
        l->done = true;
    }
    if (as_json) {
        printf("{\"uncached_wall_ns\": %.1f, \"uncached_cpu_ns\": %.1f", base.wall_ns, base.cpu_ns);
        for (size_t i = 0; i < 3; i++)
            if (levels[i].done)
                printf(", \"%s_wall_ns\": %.1f, \"%s_cpu_ns\": %.1f, \"%s_iterations\": %ld",
                       levels[i].name, levels[i].r.wall_ns, levels[i].name, levels[i].r.cpu_ns,
                       levels[i].name, levels[i].iterations);
        printf("}\n");
    } else {
        printf("cache hit through dspy_module_call (Predict, 0 demos, chat adapter)\n");
        printf("  %-28s %12s %12s %10s\n", "", "wall ns/call", "CPU ns/call", "calls");
        printf("  %-28s %12.0f %12.0f %10ld\n", "no cache (canned LM)", base.wall_ns, base.cpu_ns,
               iterations / 4 + 1);
        static const char *const label[] = { "L1 hit (memory)", "L2 hit (Redis)",
                                             "L3 hit (disk, LMDB)" };
        for (size_t i = 0; i < 3; i++)
            if (levels[i].done)
                printf("  %-28s %12.0f %12.0f %10ld\n", label[i], levels[i].r.wall_ns,
                       levels[i].r.cpu_ns, levels[i].iterations);
            else
                printf("  %-28s %12s %12s\n", label[i], "-", "-");
        if (!redis_url)
            printf("  (L2 needs --redis-url)\n");
    }
    rc = 0;
out:
    if (made_dir) {
        char path[sizeof(tmpl) + 16];
        static const char *const files[] = { "data.mdb", "lock.mdb" };
        for (size_t i = 0; i < 2; i++) {
            snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
            unlink(path);
        }
        rmdir(dir);
    }
    return rc;
}

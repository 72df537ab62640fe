/* `dspyc worker` (apps layer): runs jobs from the Redis streams of `dspyc serve --jobs
 * --redis`, on any number of machines, with the endpoint flags as its LM. The behaviour is
 * in src/jobs/redis.c. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <dspyc/dspyc.h>
#include <dspyc/jobs.h>

#include "cli.h"
#include "endpoint.h"
#include "jobs_lm.h"
#include "util.h"

enum {
    OPT_REDIS = 1500,
    OPT_CONC,
    OPT_NAME,
    OPT_MAX_ATTEMPTS,
    OPT_VISIBILITY,
    OPT_CKPT,
    OPT_MEMORY_BUDGET
};

static const char usage_text[] =
    "usage: dspyc worker --redis URL [--concurrency N] [--memory-budget BYTES]\n"
    "                    [endpoint flags]\n\n"
    "Run the jobs that 'dspyc serve --jobs --redis URL' queues: claim one from the\n"
    "highest-priority stream (XREADGROUP), run it, write its result once by job id,\n"
    "acknowledge it; take over jobs of dead workers once they sit idle past the visibility\n"
    "timeout (XAUTOCLAIM); after --max-attempts deliveries a job goes to the dead letters.\n"
    "Stops on SIGINT/SIGTERM (jobs running then are picked up by another worker).\n\n"
    "flags:\n"
    "  --redis URL           redis://HOST[:PORT][/DB] (required)\n"
    "  --concurrency N       jobs at once (default 4)\n"
    "  --name NAME           consumer name in the group (default HOST:PID)\n"
    "  --max-attempts N      deliveries before a job is dead (default 3)\n"
    "  --visibility-timeout S  reclaim a job idle this long (default 10; a live worker\n"
    "                        renews its jobs every S/4)\n"
    "  --checkpoints DIR     optimize jobs checkpoint in DIR/ID (shared storage lets\n"
    "                        another worker resume them)\n"
    "  --memory-budget BYTES its running jobs hold at most this much together (K, M, G, T\n"
    "                        suffixes; each its memory_bytes or an estimate from its\n"
    "                        datasets); a claimed job waits for its share (default: none)\n"
    "  -h, --help            this text\n\n";

static volatile int stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED); /* read by the worker threads */
}

int cmd_worker(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "redis", required_argument, NULL, OPT_REDIS },
        { "concurrency", required_argument, NULL, OPT_CONC },
        { "name", required_argument, NULL, OPT_NAME },
        { "max-attempts", required_argument, NULL, OPT_MAX_ATTEMPTS },
        { "visibility-timeout", required_argument, NULL, OPT_VISIBILITY },
        { "checkpoints", required_argument, NULL, OPT_CKPT },
        { "memory-budget", required_argument, NULL, OPT_MEMORY_BUDGET },
        { "help", no_argument, NULL, 'h' },
        ENDPOINT_LONG_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    struct dspy_worker_options wo = DSPY_WORKER_OPTIONS_INIT;
    struct endpoint ep;
    struct jobs_lm pool;
    long v;
    double d;
    uint64_t size;
    int opt;
    endpoint_init(&ep);
    ep.cache.default_levels = "mem";
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int e = endpoint_option(&ep, opt, optarg);
        if (e < 0)
            return 2;
        if (e)
            continue;
        switch (opt) {
        case OPT_REDIS: wo.redis_url = optarg; break;
        case OPT_CONC:
            if (parse_long_flag("--concurrency", optarg, 1, 4096, &v))
                return 2;
            wo.concurrency = (unsigned)v;
            break;
        case OPT_NAME: wo.name = optarg; break;
        case OPT_MAX_ATTEMPTS:
            if (parse_long_flag("--max-attempts", optarg, 1, 1000, &v))
                return 2;
            wo.max_attempts = (unsigned)v;
            break;
        case OPT_VISIBILITY:
            if (parse_double_flag("--visibility-timeout", optarg, 0.1, 86400, &d))
                return 2;
            wo.visibility_s = d;
            break;
        case OPT_CKPT: wo.checkpoint_root = optarg; break;
        case OPT_MEMORY_BUDGET:
            if (parse_size_flag("--memory-budget", optarg, 1, 1e18, &size))
                return 2;
            wo.memory_budget = size;
            break;
        case 'h': endpoint_print_usage(stdout, usage_text); return 0;
        default: fprintf(stderr, "see 'dspyc worker --help'\n"); return 2;
        }
    }
    if (optind < argc || !wo.redis_url) {
        fprintf(stderr, "dspyc worker: --redis URL is required (see 'dspyc worker --help')\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (!jobs_lm_init(&pool, &ep)) {
        endpoint_close(&ep, NULL);
        return 1;
    }
    wo.lm = jobs_lm_get;
    wo.lm_userdata = &pool;
    wo.lm_pool = jobs_lm_pool;
    wo.stop = &stop_flag;
    struct dspy_error err;
    dspy_error_clear(&err);
    fprintf(stderr, "dspyc worker: %s, %u at once\n", wo.redis_url, wo.concurrency);
    fflush(stderr);
    dspy_status rc = dspy_worker_run(&wo, &err);
    if (rc)
        print_error("worker", &err);
    jobs_lm_release(&pool);
    return rc ? 1 : 0;
}

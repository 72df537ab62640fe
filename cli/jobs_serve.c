/* `dspyc serve --jobs` (apps layer): the optimization service. Flags to the job queue's
 * options and the server's, the endpoint flags as the jobs' default LM (which the proxy
 * routes also serve), then serve until SIGINT/SIGTERM. The behaviour is in src/jobs and
 * src/serve/serve_jobs.c. */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/dspyc.h>
#include <dspyc/jobs.h>

#include "cli.h"
#include "endpoint.h"
#include "jobs_lm.h"
#include "util.h"

enum {
    OPT_JOBS = 1400,
    OPT_PORT,
    OPT_HOST,
    OPT_THREADS,
    OPT_DB,
    OPT_REDIS,
    OPT_WORKERS,
    OPT_MAX_CONCURRENT,
    OPT_MAX_QUEUE,
    OPT_BACKPRESSURE,
    OPT_AUTH,
    OPT_MAX_BODY,
    OPT_CHECKPOINTS,
    OPT_MAX_ATTEMPTS,
    OPT_ACCESS_LOG,
    OPT_MEMORY_BUDGET,
    OPT_RETENTION,
};

static const char usage_text[] =
    "usage: dspyc serve --jobs [--port P] [--db FILE.sqlite] [--redis URL] [--workers N]\n"
    "         [--max-concurrent-jobs N] [--max-queue N] [--memory-budget BYTES]\n"
    "         [--retention SECONDS] [--auth-token-file F]\n"
    "         [endpoint flags]\n\n"
    "The optimization service: takes optimization, evaluation and batch-run jobs over HTTP,\n"
    "queues them by priority, runs them on a pool of worker threads (or hands them to\n"
    "'dspyc worker' processes through Redis) within the endpoint's rate limits, and keeps\n"
    "them in SQLite so a restart loses none. Routes: POST /v1/jobs, POST /v1/jobs/batch,\n"
    "GET /v1/jobs, GET /v1/jobs/ID, DELETE /v1/jobs/ID (cancel; ?purge=1 removes an ended\n"
    "job), DELETE /v1/jobs?older_than=S&state=S (purge), GET /v1/jobs/ID/result,\n"
    "GET /v1/jobs/ID/events (SSE), GET /v1/queue, plus the proxy's routes to the default\n"
    "LM. See docs/jobs.md.\n\n"
    "flags:\n"
    "  --port N              port (default 8080; 0 picks a free one)\n"
    "  --host ADDR           address to listen on (default 127.0.0.1)\n"
    "  --threads N           HTTP polling threads (default: one per CPU)\n"
    "  --db FILE             SQLite job store (WAL); without it jobs live in memory only\n"
    "  --checkpoints DIR     optimize jobs checkpoint in DIR/ID (default FILE.ckpt)\n"
    "  --redis URL           redis://HOST[:PORT][/DB]: jobs go to Redis Streams for\n"
    "                        'dspyc worker' processes (no worker threads here)\n"
    "  --workers N           worker threads running jobs here (default 4)\n"
    "  --max-concurrent-jobs N  jobs running at once (default: --workers)\n"
    "  --max-queue N         queued jobs at most (default 10000)\n"
    "  --backpressure F      refuse new jobs (429 + Retry-After) once the queue is this\n"
    "                        full (default 0.9)\n"
    "  --max-attempts N      runs of a job interrupted by a crash before it is dead\n"
    "                        (default 3)\n"
    "  --memory-budget BYTES the running jobs hold at most this much together (K, M, G,\n"
    "                        T suffixes): each its spec's memory_bytes or an estimate from\n"
    "                        its datasets; the next job waits until its share fits\n"
    "                        (default: no budget)\n"
    "  --retention SECONDS   ended jobs, their results and their Redis keys are removed\n"
    "                        this long after they end (default 604800, 7 days; 0 = keep)\n"
    "  --auth-token-file F   require 'Authorization: Bearer TOKEN' (format: docs/serve.md)\n"
    "  --max-body BYTES      larger request bodies get 413 (default 4M)\n"
    "  --access-log FILE|-   JSON-lines access log\n"
    "  -h, --help            this text\n\n";

static void usage(FILE *out)
{
    endpoint_print_usage(out, usage_text);
}

int cmd_serve_jobs(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "jobs", no_argument, NULL, OPT_JOBS },
        { "port", required_argument, NULL, OPT_PORT },
        { "host", required_argument, NULL, OPT_HOST },
        { "threads", required_argument, NULL, OPT_THREADS },
        { "db", required_argument, NULL, OPT_DB },
        { "checkpoints", required_argument, NULL, OPT_CHECKPOINTS },
        { "redis", required_argument, NULL, OPT_REDIS },
        { "workers", required_argument, NULL, OPT_WORKERS },
        { "max-concurrent-jobs", required_argument, NULL, OPT_MAX_CONCURRENT },
        { "max-queue", required_argument, NULL, OPT_MAX_QUEUE },
        { "backpressure", required_argument, NULL, OPT_BACKPRESSURE },
        { "max-attempts", required_argument, NULL, OPT_MAX_ATTEMPTS },
        { "auth-token-file", required_argument, NULL, OPT_AUTH },
        { "max-body", required_argument, NULL, OPT_MAX_BODY },
        { "access-log", required_argument, NULL, OPT_ACCESS_LOG },
        { "memory-budget", required_argument, NULL, OPT_MEMORY_BUDGET },
        { "retention", required_argument, NULL, OPT_RETENTION },
        { "help", no_argument, NULL, 'h' },
        ENDPOINT_LONG_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    struct dspy_serve_options so = DSPY_SERVE_OPTIONS_INIT;
    struct dspy_jobq_options qo = DSPY_JOBQ_OPTIONS_INIT;
    struct endpoint ep;
    struct jobs_lm pool;
    bool pool_open = false;
    dspy_jobq *q = NULL;
    dspy_server *srv = NULL;
    struct dspy_error err;
    long v;
    double d;
    uint64_t size;
    int opt, rc = 2;
    endpoint_init(&ep);
    qo.retention_s = 7 * 86400;
    ep.cache.default_levels = "mem"; /* repeated candidates of many jobs cost nothing */
    so.port = 8080;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int e = endpoint_option(&ep, opt, optarg);
        if (e < 0)
            return 2;
        if (e)
            continue;
        switch (opt) {
        case OPT_JOBS: break;
        case OPT_PORT:
            if (parse_long_flag("--port", optarg, 0, 65535, &v))
                return 2;
            so.port = (int)v;
            break;
        case OPT_HOST: so.host = optarg; break;
        case OPT_THREADS:
            if (parse_long_flag("--threads", optarg, 1, 1024, &v))
                return 2;
            so.threads = (unsigned)v;
            break;
        case OPT_DB: qo.db_path = optarg; break;
        case OPT_CHECKPOINTS: qo.checkpoint_root = optarg; break;
        case OPT_REDIS: qo.redis_url = optarg; break;
        case OPT_WORKERS:
            if (parse_long_flag("--workers", optarg, 1, 4096, &v))
                return 2;
            qo.workers = (unsigned)v;
            break;
        case OPT_MAX_CONCURRENT:
            if (parse_long_flag("--max-concurrent-jobs", optarg, 1, 4096, &v))
                return 2;
            qo.max_concurrent = (unsigned)v;
            break;
        case OPT_MAX_QUEUE:
            if (parse_long_flag("--max-queue", optarg, 1, 10000000, &v))
                return 2;
            qo.max_queue = (size_t)v;
            break;
        case OPT_BACKPRESSURE:
            if (parse_double_flag("--backpressure", optarg, 0.01, 1, &d))
                return 2;
            qo.backpressure = d;
            break;
        case OPT_MAX_ATTEMPTS:
            if (parse_long_flag("--max-attempts", optarg, 1, 1000, &v))
                return 2;
            qo.max_attempts = (unsigned)v;
            break;
        case OPT_AUTH: so.auth_token_file = optarg; break;
        case OPT_MAX_BODY:
            if (parse_long_flag("--max-body", optarg, 1024, 1L << 32, &v))
                return 2;
            so.max_body = (size_t)v;
            break;
        case OPT_ACCESS_LOG: so.access_log = optarg; break;
        case OPT_MEMORY_BUDGET:
            if (parse_size_flag("--memory-budget", optarg, 1, 1e18, &size))
                return 2;
            qo.memory_budget = size;
            break;
        case OPT_RETENTION:
            if (parse_double_flag("--retention", optarg, 0, 1e10, &d))
                return 2;
            qo.retention_s = d;
            break;
        case 'h': usage(stdout); return 0;
        default: fprintf(stderr, "see 'dspyc serve --jobs --help'\n"); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dspyc serve: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    sigset_t set;
    int sig = 0;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (!(pool_open = jobs_lm_init(&pool, &ep))) {
        rc = 1;
        goto out;
    }
    qo.lm = jobs_lm_get;
    qo.lm_userdata = &pool;
    qo.lm_pool = jobs_lm_pool;
    dspy_error_clear(&err);
    if (!(q = dspy_jobq_new(&qo, &err))) {
        print_error("serve --jobs", &err);
        rc = 1;
        goto out;
    }
    so.upstream_url = ep.base_url; /* the proxy routes serve the default LM */
    so.api_key_env = ep.api_key_env;
    so.api_key_file = ep.api_key_file;
    so.cache = ep.cache.cache;
    so.jobs = q;
    if (dspy_serve_new(&so, &srv, &err) || dspy_serve_start(srv, &err)) {
        print_error("serve --jobs", &err);
        rc = 1;
        goto out;
    }
    fprintf(stderr, "dspyc serve listening on http://%s:%d/v1 (jobs: %s, %s%s)\n",
            so.host ? so.host : "127.0.0.1", dspy_serve_port(srv),
            qo.redis_url ? "through Redis" : "local workers", qo.db_path ? "store " : "no store",
            qo.db_path ? qo.db_path : "");
    fflush(stderr);
    while (sigwait(&set, &sig) != 0)
        ;
    fprintf(stderr, "dspyc serve: stopping on signal %d\n", sig);
    rc = 0;
out:
    if (q)
        dspy_jobq_end_watches(q); /* the event feeds end while their server is alive */
    dspy_serve_free(srv);
    dspy_jobq_free(q);
    if (pool_open)
        jobs_lm_release(&pool);
    else
        endpoint_close(&ep, NULL);
    return rc;
}

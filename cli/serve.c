/* `dspyc serve` (apps layer): flags to struct dspy_serve_options, the cache from the same
 * flags as `dspyc run`, then serve until SIGINT/SIGTERM. The behaviour is in src/serve. */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/dspyc.h>

#include "cache_config.h"
#include "cli.h"
#include "util.h"

enum {
    OPT_PORT = 1300,
    OPT_HOST,
    OPT_UPSTREAM,
    OPT_CONFIG,
    OPT_API_KEY_ENV,
    OPT_API_KEY_FILE,
    OPT_TIMEOUT,
    OPT_MAX_RETRIES,
    OPT_AUTH,
    OPT_MAX_IN_FLIGHT,
    OPT_MAX_BODY,
    OPT_CLIENT_TIMEOUT,
    OPT_ACCESS_LOG,
    OPT_THREADS,
    OPT_PROGRAM,
    OPT_PROGRAM_WORKERS,
    OPT_UPSTREAM_CONCURRENCY,
    OPT_PRICES,
};

#define MAX_PROGRAMS 64

static const char usage_text[] =
    "usage: dspyc serve [--port P] [--host H] (--upstream URL | --config FILE) [flags]\n\n"
    "An OpenAI-compatible caching proxy: point any OpenAI client or dspy.LM(...,\n"
    "api_base=http://HOST:PORT/v1) at it. Routes: POST /v1/chat/completions (plain and\n"
    "streamed), POST /v1/embeddings, GET /v1/models, GET /metrics (Prometheus),\n"
    "GET /dashboard (live page), GET /dashboard/data, GET /debug/profile, GET /health.\n"
    "See docs/serve.md.\n\n"
    "flags:\n"
    "  --port N              port (default 8080; 0 picks a free one)\n"
    "  --host ADDR           address to listen on (default 127.0.0.1)\n"
    "  --threads N           HTTP polling threads (default: one per CPU)\n"
    "  --upstream URL        the one upstream, e.g. http://127.0.0.1:8000/v1 (any model)\n"
    "  --api-key-env VAR     its API key from $VAR (default OPENAI_API_KEY; never logged)\n"
    "  --api-key-file FILE   else from the first line of FILE\n"
    "  --upstream-timeout S  per upstream attempt (default 600)\n"
    "  --max-retries N       retries of a 429, 5xx, timeout or dropped connection (default 2)\n"
    "  --upstream-concurrency N  its calls on the wire at once; more wait in order, with\n"
    "                        no connection or thread (default 256)\n"
    "  --config FILE         JSON file of upstreams: base_url, api_key_env/api_key_file,\n"
    "                        models, aliases, rpm, tpm, max_concurrency, timeout_s,\n"
    "                        max_retries, fallbacks, prices (docs/serve.md)\n"
    "  --auth-token-file F   require 'Authorization: Bearer TOKEN'; one token a line:\n"
    "                        'TOKEN [namespace=NS] [admin]' (admin: /metrics, /dashboard)\n"
    "  --max-in-flight N     requests answered at once; more get 429 (default 10000)\n"
    "  --max-body BYTES      larger request bodies get 413 (default 4M; k/M/G)\n"
    "  --client-timeout S    close connections silent this long (default 60)\n"
    "  --access-log FILE|-   JSON-lines access log (- = stderr; no secrets)\n"
    "  --prices FILE         USD per 1k prompt / completion tokens by model (JSON, as for\n"
    "                        dspyc run) over the defaults for common models, for the\n"
    "                        cost metrics of upstreams the config gives no prices\n"
    "  --program NAME=PROGRAM.json[:STATE.json]\n"
    "                        serve a program file (with a DSPy save file applied) at\n"
    "                        POST /v1/programs/NAME and /v1/programs/NAME/batch (repeatable)\n"
    "  --program-workers N   threads running program calls and batches (default 16)\n"
    "  --jobs                the optimization service instead (see 'dspyc serve --jobs\n"
    "                        --help' and docs/jobs.md)\n"
    "  --help                show this help\n\n";

static const char cache_default_note[] =
    "The proxy caches in memory by default (--cache mem); --cache off turns it off.\n\n";

static void usage(FILE *out)
{
    fputs(usage_text, out);
    fputs(cache_default_note, out);
    fputs(CACHE_HELP, out);
}

int cmd_serve(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "port", required_argument, NULL, OPT_PORT },
        { "host", required_argument, NULL, OPT_HOST },
        { "threads", required_argument, NULL, OPT_THREADS },
        { "upstream", required_argument, NULL, OPT_UPSTREAM },
        { "config", required_argument, NULL, OPT_CONFIG },
        { "api-key-env", required_argument, NULL, OPT_API_KEY_ENV },
        { "api-key-file", required_argument, NULL, OPT_API_KEY_FILE },
        { "upstream-timeout", required_argument, NULL, OPT_TIMEOUT },
        { "max-retries", required_argument, NULL, OPT_MAX_RETRIES },
        { "upstream-concurrency", required_argument, NULL, OPT_UPSTREAM_CONCURRENCY },
        { "auth-token-file", required_argument, NULL, OPT_AUTH },
        { "max-in-flight", required_argument, NULL, OPT_MAX_IN_FLIGHT },
        { "max-body", required_argument, NULL, OPT_MAX_BODY },
        { "client-timeout", required_argument, NULL, OPT_CLIENT_TIMEOUT },
        { "access-log", required_argument, NULL, OPT_ACCESS_LOG },
        { "program", required_argument, NULL, OPT_PROGRAM },
        { "program-workers", required_argument, NULL, OPT_PROGRAM_WORKERS },
        { "prices", required_argument, NULL, OPT_PRICES },
        { "help", no_argument, NULL, 'h' },
        CACHE_LONG_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    struct dspy_serve_options o = DSPY_SERVE_OPTIONS_INIT;
    struct dspy_serve_program progs[MAX_PROGRAMS];
    char *prog_args[MAX_PROGRAMS];
    size_t nprogs = 0;
    uint64_t size;
    struct cache_config cc;
    struct dspy_error err;
    dspy_server *srv = NULL;
    long v;
    double d;
    int opt, rc = 2;
    const char *prices_path = NULL;
    dspy_price_table *prices = NULL;

    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--jobs"))
            return cmd_serve_jobs(argc, argv); /* the optimization service: cli/jobs_serve.c */
    o.port = 8080;
    cache_config_init(&cc, "mem");
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int c = cache_config_option(&cc, opt, optarg);
        if (c < 0)
            goto free_progs;
        if (c > 0)
            continue;
        switch (opt) {
        case OPT_PORT:
            if (parse_long_flag("--port", optarg, 0, 65535, &v))
                goto free_progs;
            o.port = (int)v;
            break;
        case OPT_HOST: o.host = optarg; break;
        case OPT_THREADS:
            if (parse_long_flag("--threads", optarg, 1, 1024, &v))
                goto free_progs;
            o.threads = (unsigned)v;
            break;
        case OPT_UPSTREAM: o.upstream_url = optarg; break;
        case OPT_CONFIG: o.config_path = optarg; break;
        case OPT_API_KEY_ENV: o.api_key_env = optarg; break;
        case OPT_API_KEY_FILE: o.api_key_file = optarg; break;
        case OPT_TIMEOUT:
            if (parse_double_flag("--upstream-timeout", optarg, 0.001, 86400, &d))
                goto free_progs;
            o.upstream_timeout_s = d;
            break;
        case OPT_MAX_RETRIES:
            if (parse_long_flag("--max-retries", optarg, 0, 100, &v))
                goto free_progs;
            o.max_retries = (int)v;
            break;
        case OPT_UPSTREAM_CONCURRENCY:
            if (parse_long_flag("--upstream-concurrency", optarg, 1, 100000, &v))
                goto free_progs;
            o.upstream_concurrency = (unsigned)v;
            break;
        case OPT_AUTH: o.auth_token_file = optarg; break;
        case OPT_MAX_IN_FLIGHT:
            if (parse_long_flag("--max-in-flight", optarg, 1, 10000000, &v))
                goto free_progs;
            o.max_in_flight = (unsigned)v;
            break;
        case OPT_MAX_BODY:
            if (parse_size_flag("--max-body", optarg, 1, 1e12, &size))
                goto free_progs;
            o.max_body = (size_t)size;
            break;
        case OPT_CLIENT_TIMEOUT:
            if (parse_long_flag("--client-timeout", optarg, 1, 86400, &v))
                goto free_progs;
            o.client_timeout_s = (unsigned)v;
            break;
        case OPT_ACCESS_LOG: o.access_log = optarg; break;
        case OPT_PRICES: prices_path = optarg; break;
        case OPT_PROGRAM_WORKERS:
            if (parse_long_flag("--program-workers", optarg, 1, 4096, &v))
                goto free_progs;
            o.program_workers = (unsigned)v;
            break;
        case OPT_PROGRAM: {
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg || !eq[1] || nprogs == MAX_PROGRAMS) {
                fprintf(stderr,
                        "dspyc serve: --program wants NAME=PROGRAM.json[:STATE.json] "
                        "(at most %d), not '%s'\n",
                        MAX_PROGRAMS, optarg);
                goto free_progs;
            }
            char *copy = strdup(optarg);
            if (!copy)
                abort();
            prog_args[nprogs] = copy;
            copy[eq - optarg] = '\0';
            char *path = copy + (eq - optarg) + 1;
            char *colon = strrchr(path, ':');
            if (colon)
                *colon = '\0';
            progs[nprogs++] = (struct dspy_serve_program){ copy, path, colon ? colon + 1 : NULL };
            break;
        }
        case 'h':
            usage(stdout);
            rc = 0;
            goto free_progs;
        default: fprintf(stderr, "see 'dspyc serve --help'\n"); goto free_progs;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dspyc serve: unexpected argument '%s'\n", argv[optind]);
        goto free_progs;
    }
    if (!o.upstream_url == !o.config_path) {
        fprintf(stderr, "dspyc serve: name the upstream with --upstream URL or --config FILE "
                        "(one of the two)\n");
        goto free_progs;
    }
    if (!(prices = prices_open("serve", prices_path)))
        goto free_progs;
    o.prices = prices;
    if (cache_config_open(&cc, "dspyc serve")) {
        rc = 1;
        goto free_progs;
    }
    o.programs = progs;
    o.nprograms = nprogs;
    o.cache = cc.cache;
    cache_config_ctl(&cc, &o.cache_ctl);
    if (cc.ttl_s > 0)
        o.cache_ctl.ttl_s = cc.ttl_s;

    sigset_t set;
    int sig = 0;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    dspy_error_clear(&err);
    if (dspy_serve_new(&o, &srv, &err) || dspy_serve_start(srv, &err)) {
        print_error("serve", &err);
        rc = 1;
        goto out;
    }
    {
        const char *host = o.host ? o.host : "127.0.0.1";
        bool v6 = strchr(host, ':') != NULL;
        char levels[64];
        fprintf(stderr, "dspyc serve listening on http://%s%s%s:%d/v1\n", v6 ? "[" : "", host,
                v6 ? "]" : "", dspy_serve_port(srv));
        fprintf(stderr, "dspyc serve: cache %s, auth %s\n",
                cache_levels_name(cc.cache ? dspy_cache_levels(cc.cache) : 0, levels,
                                  sizeof(levels)),
                o.auth_token_file ? "on" : "off");
        fflush(stderr);
    }
    while (sigwait(&set, &sig) != 0)
        ;
    fprintf(stderr, "dspyc serve: stopping on signal %d\n", sig);
    rc = 0;
out:
    dspy_serve_free(srv);
    cache_config_close(&cc);
free_progs:
    dspy_price_table_free(prices);
    for (size_t i = 0; i < nprogs; i++)
        free(prog_args[i]);
    return rc;
}

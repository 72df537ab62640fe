/* Endpoint selection shared by the LM-calling subcommands (apps layer). */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "endpoint.h"
#include "sim.h"
#include "util.h"

void endpoint_init(struct endpoint *ep)
{
    ep->base_url = NULL;
    ep->model = NULL;
    ep->api_key_env = NULL;
    ep->api_key_file = NULL;
    ep->timeout_s = DSPY_LM_DEFAULT_TIMEOUT_S;
    ep->request_timeout_s = 0;
    ep->max_retries = -1;
    ep->rpm = ep->tpm = 0;
    ep->max_waiting = 0;
    ep->temperature = NAN;
    ep->max_tokens = -1;
    ep->structured = DSPY_STRUCTURED_AUTO;
    ep->sim_flags = NULL;
    ep->sim = NULL;
    ep->sim_url[0] = '\0';
    cache_config_init(&ep->cache, "off");
}

void endpoint_print_usage(FILE *out, const char *own)
{
    fputs(own, out);
    fputs(ENDPOINT_HELP, out);
    fputs(CACHE_HELP, out); /* apart: one string literal of both is over C's 4095 bytes */
}

int endpoint_option(struct endpoint *ep, int opt, const char *arg)
{
    int c = cache_config_option(&ep->cache, opt, arg);
    if (c)
        return c;
    switch (opt) {
    case ENDPOINT_OPT_BASE_URL: ep->base_url = arg; return 1;
    case ENDPOINT_OPT_MODEL: ep->model = arg; return 1;
    case ENDPOINT_OPT_API_KEY_ENV: ep->api_key_env = arg; return 1;
    case ENDPOINT_OPT_API_KEY_FILE: ep->api_key_file = arg; return 1;
    case ENDPOINT_OPT_TIMEOUT:
        return parse_double_flag("--timeout", arg, 0, 1e6, &ep->timeout_s) ? -1 : 1;
    case ENDPOINT_OPT_TEMPERATURE:
        return parse_double_flag("--temperature", arg, 0, 10, &ep->temperature) ? -1 : 1;
    case ENDPOINT_OPT_SIM: ep->sim_flags = arg; return 1;
    case ENDPOINT_OPT_REQUEST_TIMEOUT:
        return parse_double_flag("--request-timeout", arg, 0.001, 1e6, &ep->request_timeout_s) ? -1
                                                                                               : 1;
    case ENDPOINT_OPT_MAX_RETRIES:
        return parse_long_flag("--max-retries", arg, 0, 100, &ep->max_retries) ? -1 : 1;
    case ENDPOINT_OPT_RPM: return parse_double_flag("--rpm", arg, 0, 1e9, &ep->rpm) ? -1 : 1;
    case ENDPOINT_OPT_TPM: return parse_double_flag("--tpm", arg, 0, 1e12, &ep->tpm) ? -1 : 1;
    case ENDPOINT_OPT_MAX_WAITING:
        return parse_long_flag("--max-waiting", arg, 1, 100000000, &ep->max_waiting) ? -1 : 1;
    case ENDPOINT_OPT_STRUCTURED:
        if (!strcmp(arg, "auto"))
            ep->structured = DSPY_STRUCTURED_AUTO;
        else if (!strcmp(arg, "on"))
            ep->structured = DSPY_STRUCTURED_ON;
        else if (!strcmp(arg, "off"))
            ep->structured = DSPY_STRUCTURED_OFF;
        else {
            fprintf(stderr, "dspyc: --structured-outputs: '%s' is not auto, on or off\n", arg);
            return -1;
        }
        return 1;
    case ENDPOINT_OPT_MAX_TOKENS:
        return parse_long_flag("--max-tokens", arg, 1, 10000000, &ep->max_tokens) ? -1 : 1;
    default: return 0;
    }
}

/* Start the built-in simulator with the --sim flags; 0 or -1 after printing why. */
static int start_sim(struct endpoint *ep)
{
    struct dspy_sim_options so = DSPY_SIM_OPTIONS_INIT;
    char *copy = NULL, *argv[64];
    int argc = 0, code;
    if (ep->sim_flags) {
        if (!(copy = strdup(ep->sim_flags)))
            abort();
        for (char *tok = strtok(copy, " \t"); tok; tok = strtok(NULL, " \t")) {
            if (argc == 64) {
                fprintf(stderr, "dspyc: --sim: too many flags\n");
                free(copy);
                return -1;
            }
            argv[argc++] = tok;
        }
        if (sim_parse_args(&so, argc, argv, stderr)) {
            fprintf(stderr, "dspyc: --sim '%s': not valid simulator flags\n", ep->sim_flags);
            free(copy);
            return -1;
        }
    }
    ep->sim = sim_open(&so, stderr, &code);
    free(copy); /* dspy_sim_new copies what it keeps */
    if (!ep->sim) {
        fprintf(stderr, "dspyc: cannot start the built-in simulator\n");
        return -1;
    }
    snprintf(ep->sim_url, sizeof(ep->sim_url), "http://127.0.0.1:%d/v1", dspy_sim_port(ep->sim));
    return 0;
}

/* Every call in flight holds a socket: let this process have all the open files its hard
 * limit allows (many systems start processes with a soft limit of 1,024). */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Descriptors open now (-1 when /proc cannot tell). */
static long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    long n = 0;
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own descriptor */
}

long endpoint_connection_room(const struct endpoint *ep, long *soft, long *hard)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur == RLIM_INFINITY)
        return -1;
    long used = open_fds();
    long room = (long)rl.rlim_cur - (used >= 0 ? used : 64) - ENDPOINT_FD_HEADROOM;
    if (ep->sim) /* the built-in simulator holds the other end of each connection */
        room /= 2;
    *soft = (long)rl.rlim_cur;
    *hard = rl.rlim_max == RLIM_INFINITY ? -1 : (long)rl.rlim_max;
    return room > 1 ? room : 1;
}

dspy_lm *endpoint_open(struct endpoint *ep)
{
    raise_fd_limit();
    if (!ep->base_url)
        ep->base_url = getenv("DSPYC_BASE_URL");
    if (!ep->base_url)
        ep->base_url = getenv("OPENAI_BASE_URL");
    if (!ep->model)
        ep->model = getenv("DSPYC_MODEL");
    if (cache_config_open(&ep->cache, "dspyc"))
        return NULL;
    if (!ep->base_url) {
        if (!ep->sim && start_sim(ep))
            return NULL;
        ep->base_url = ep->sim_url;
        if (!ep->model)
            ep->model = "openai/dspyc-sim";
    }
    if (!ep->model) {
        fprintf(stderr, "dspyc: --model (or $DSPYC_MODEL) is required with --base-url\n");
        return NULL;
    }
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    o.base_url = ep->base_url;
    o.model = ep->model;
    if (ep->api_key_env)
        o.api_key_env = ep->api_key_env;
    o.api_key_file = ep->api_key_file;
    o.deadline_s = ep->timeout_s;
    o.timeout_s = ep->request_timeout_s > 0 ? ep->request_timeout_s : ep->timeout_s;
    if (ep->max_retries >= 0)
        o.max_attempts = (unsigned)ep->max_retries + 1;
    o.requests_per_minute = ep->rpm;
    o.tokens_per_minute = ep->tpm;
    o.max_waiting = (size_t)ep->max_waiting;
    o.temperature = ep->temperature;
    o.max_tokens = ep->max_tokens;
    o.structured_outputs = ep->structured;
    o.cache = ep->cache.cache;
    cache_config_ctl(&ep->cache, &o.cache_ctl);
    dspy_lm *lm = NULL;
    struct dspy_error err;
    dspy_error_clear(&err);
    if (dspy_lm_new(&o, &lm, &err)) {
        fprintf(stderr, "dspyc: %s\n", err.message);
        return NULL;
    }
    return lm;
}

void endpoint_close(struct endpoint *ep, dspy_lm *lm)
{
    dspy_lm_free(lm);
    dspy_sim_free(ep->sim);
    ep->sim = NULL;
    cache_config_close(&ep->cache);
}

/* Endpoint selection shared by the subcommands that call an LM (apps layer): flags and
 * environment name an OpenAI-compatible endpoint; with none given, the built-in simulator
 * is started in-process on a loopback port. The cache flags (cache_config.h) come along:
 * every LM opened here calls through the one cache they configure. */
#ifndef DSPYC_CLI_ENDPOINT_H
#define DSPYC_CLI_ENDPOINT_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

#include <dspyc/dspyc.h>

#include "cache_config.h"

struct endpoint {
    const char *base_url;                    /* --base-url, $DSPYC_BASE_URL, $OPENAI_BASE_URL */
    const char *model;                       /* --model, $DSPYC_MODEL */
    const char *api_key_env;                 /* --api-key-env */
    const char *api_key_file;                /* --api-key-file */
    double timeout_s;                        /* --timeout: a whole call, retries included */
    double request_timeout_s;                /* --request-timeout: one attempt; 0 = --timeout */
    long max_retries;                        /* --max-retries; -1 = the library's default (3) */
    double rpm, tpm;                         /* --rpm, --tpm; 0 = no limit */
    long max_waiting;                        /* --max-waiting; 0 = the library's default */
    double temperature;                      /* --temperature, NAN = endpoint default */
    long max_tokens;                         /* --max-tokens, -1 = endpoint default */
    enum dspy_structured_outputs structured; /* --structured-outputs */
    const char *sim_flags;                   /* --sim: flags for the built-in simulator */
    dspy_sim *sim;                           /* the in-process simulator, when one was started */
    char sim_url[64];                        /* its base URL */
    struct cache_config cache;               /* --cache and friends; cache.cache once opened */
};

enum {
    ENDPOINT_OPT_BASE_URL = 1000,
    ENDPOINT_OPT_MODEL,
    ENDPOINT_OPT_API_KEY_ENV,
    ENDPOINT_OPT_API_KEY_FILE,
    ENDPOINT_OPT_TIMEOUT,
    ENDPOINT_OPT_TEMPERATURE,
    ENDPOINT_OPT_MAX_TOKENS,
    ENDPOINT_OPT_SIM,
    ENDPOINT_OPT_REQUEST_TIMEOUT,
    ENDPOINT_OPT_MAX_RETRIES,
    ENDPOINT_OPT_RPM,
    ENDPOINT_OPT_TPM,
    ENDPOINT_OPT_MAX_WAITING,
    ENDPOINT_OPT_STRUCTURED,
};

#define ENDPOINT_LONG_OPTIONS                                                         \
    { "base-url", required_argument, NULL, ENDPOINT_OPT_BASE_URL },                   \
        { "model", required_argument, NULL, ENDPOINT_OPT_MODEL },                     \
        { "api-key-env", required_argument, NULL, ENDPOINT_OPT_API_KEY_ENV },         \
        { "api-key-file", required_argument, NULL, ENDPOINT_OPT_API_KEY_FILE },       \
        { "timeout", required_argument, NULL, ENDPOINT_OPT_TIMEOUT },                 \
        { "temperature", required_argument, NULL, ENDPOINT_OPT_TEMPERATURE },         \
        { "max-tokens", required_argument, NULL, ENDPOINT_OPT_MAX_TOKENS },           \
        { "sim", required_argument, NULL, ENDPOINT_OPT_SIM },                         \
        { "request-timeout", required_argument, NULL, ENDPOINT_OPT_REQUEST_TIMEOUT }, \
        { "max-retries", required_argument, NULL, ENDPOINT_OPT_MAX_RETRIES },         \
        { "rpm", required_argument, NULL, ENDPOINT_OPT_RPM },                         \
        { "tpm", required_argument, NULL, ENDPOINT_OPT_TPM },                         \
        { "max-waiting", required_argument, NULL, ENDPOINT_OPT_MAX_WAITING },         \
        { "structured-outputs", required_argument, NULL, ENDPOINT_OPT_STRUCTURED },   \
        CACHE_LONG_OPTIONS

#define ENDPOINT_HELP                                                                      \
    "endpoint (default: the built-in simulator, started in-process):\n"                    \
    "  --base-url URL        OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1\n"  \
    "                        (else $DSPYC_BASE_URL, else $OPENAI_BASE_URL)\n"              \
    "  --model NAME          model name, e.g. openai/gpt-4o-mini (else $DSPYC_MODEL;\n"    \
    "                        a leading 'openai/' is not sent)\n"                           \
    "  --api-key-env VAR     read the API key from $VAR (default OPENAI_API_KEY)\n"        \
    "  --api-key-file FILE   read the API key from the first line of FILE; it wins over\n" \
    "                        $OPENAI_API_KEY (an explicit --api-key-env wins over it)\n"   \
    "  --timeout SECONDS     per LM call, retries and waits included (default 600)\n"      \
    "  --request-timeout S   per attempt (default: --timeout); a timed-out attempt is\n"   \
    "                        retried like a 429, 5xx or dropped connection\n"              \
    "  --max-retries N       retries of a failed attempt (default 3), with exponential\n"  \
    "                        backoff and jitter, or the server's Retry-After\n"            \
    "  --rpm N, --tpm N      requests / tokens per minute to this endpoint+model; calls\n" \
    "                        wait for capacity (default: no limit)\n"                      \
    "  --max-waiting N       calls that may wait for the rate limit at once; more fail\n"  \
    "                        at once with a 'busy' error (default 10000)\n"                \
    "  --temperature T       sampling temperature (default: not sent)\n"                   \
    "  --max-tokens N        completion token limit (default: not sent)\n"                 \
    "  --structured-outputs auto|on|off  with --adapter json, send a JSON-schema\n"        \
    "                        response_format built from the output fields (retried once\n" \
    "                        in JSON mode if the reply does not parse); auto (default):\n" \
    "                        for models litellm says support it, as DSPy does\n"           \
    "  --sim 'FLAGS'         flags for the built-in simulator, e.g. '--latency-ms 20'\n"   \
    "                        (see 'dspyc sim --help')\n\n"

/* Caching is off unless the command sets ep->cache.default_levels (run and predict use
 * "mem,disk", as DSPy caches in memory and on disk by default) or the user asks for it. */
void endpoint_init(struct endpoint *ep);
/* Print a subcommand's own usage text followed by the endpoint and cache flags. (Kept as
 * separate strings: C11 only promises string literals of 4095 bytes.) */
void endpoint_print_usage(FILE *out, const char *own);
/* Handle one getopt_long result; returns 1 when it was an endpoint option, 0 when not,
 * -1 (after printing why) when its value is invalid. */
int endpoint_option(struct endpoint *ep, int opt, const char *arg);
/* Resolve the environment, open the cache (once), start the simulator when no endpoint was
 * named (once: later calls reuse it), and open an LM for ep->model over that cache. NULL
 * (after printing why to stderr) on failure. May be called again with another ep->model;
 * free each LM with dspy_lm_free before endpoint_close. */
dspy_lm *endpoint_open(struct endpoint *ep);
/* Open files kept free beside the connections (output files, the cache, curl's own). */
#define ENDPOINT_FD_HEADROOM 32
/* After endpoint_open (which raises the soft open-files limit to the hard one): how many
 * connections fit in what is left of the limit, with headroom, counting both ends when the
 * simulator runs in this process; -1 when unlimited. *soft and *hard get the limits (hard
 * -1 = unlimited). */
long endpoint_connection_room(const struct endpoint *ep, long *soft, long *hard);
/* Free `lm` (may be NULL), then stop the simulator and close the cache. */
void endpoint_close(struct endpoint *ep, dspy_lm *lm);

#endif

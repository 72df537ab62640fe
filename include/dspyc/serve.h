/* The server behind `dspyc serve`: an OpenAI-compatible caching proxy (chat completions,
 * embeddings, models) in front of one or more upstream endpoints, with bearer-token auth
 * and tenant namespaces, Prometheus metrics, a live dashboard, a per-stage profiler and a
 * JSON-lines access log. See docs/serve.md. */
#ifndef DSPYC_SERVE_H
#define DSPYC_SERVE_H

#include <stdio.h>

#include <dspyc/cache.h>
#include <dspyc/common.h>
#include <dspyc/price.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A program served at POST /v1/programs/NAME (and .../batch): a program file
 * (docs/program-file.md) with an optional DSPy save file applied. */
struct dspy_serve_program {
    const char *name;
    const char *program_path;
    const char *state_path; /* NULL = none */
};

/** Options of dspy_serve_new(). Strings are copied; the cache is borrowed. */
struct dspy_serve_options {
    const char *host; /* address to listen on; NULL = "127.0.0.1" */
    int port;         /* 0 = an ephemeral port (dspy_serve_port) */
    unsigned threads; /* HTTP polling threads; 0 = one per CPU */
    /* Upstreams: exactly one of the two. */
    const char *upstream_url;  /* one upstream, e.g. "http://127.0.0.1:8000/v1", any model */
    const char *api_key_env;   /* its API key's variable; NULL = "OPENAI_API_KEY" */
    const char *api_key_file;  /* else the first line of this file */
    const char *config_path;   /* a JSON config file naming several upstreams (docs/serve.md) */
    double upstream_timeout_s; /* per attempt, for --upstream; 0 = 600 */
    int max_retries;           /* retries of a retryable upstream failure (--upstream); -1 = 2 */
    unsigned upstream_concurrency; /* its calls on the wire at once, more wait; 0 = 256 */
    /* Cache: borrowed until dspy_serve_free(); NULL = no caching. */
    dspy_cache *cache;
    struct dspy_cache_ctl cache_ctl; /* server-wide defaults (no_cache, no_store, ttl, ns) */
    const char *auth_token_file;     /* NULL = no auth; see docs/serve.md for the format */
    unsigned max_in_flight;          /* requests being answered at once; more get 429; 0 = 10,000 */
    size_t max_body;                 /* larger request bodies get 413; 0 = 4 MiB */
    unsigned client_timeout_s;       /* close a connection silent this long (headers or body
                                    not coming, idle keep-alive); 0 = 60 */
    const char *access_log;          /* JSON-lines access log: a path, "-" = stderr; NULL = none */
    const struct dspy_serve_program *programs; /* borrowed during dspy_serve_new */
    size_t nprograms;
    unsigned program_workers;       /* threads running program calls and batches; 0 = 16 */
    struct dspy_jobq *jobs;         /* the job API at /v1/jobs and /v1/queue (docs/jobs.md);
                                    borrowed until dspy_serve_free(); NULL = none */
    const dspy_price_table *prices; /* prices by model for the cost metrics where the config
                                       names none for the upstream; borrowed until
                                       dspy_serve_free(); NULL = only the config's */
};
#define DSPY_SERVE_OPTIONS_INIT                                                                   \
    {                                                                                             \
        .host = NULL, .port = 0, .threads = 0, .upstream_url = NULL, .api_key_env = NULL,         \
        .api_key_file = NULL, .config_path = NULL, .upstream_timeout_s = 0, .max_retries = -1,    \
        .upstream_concurrency = 0, .cache = NULL, .cache_ctl = DSPY_CACHE_CTL_INIT,               \
        .auth_token_file = NULL, .max_in_flight = 0, .max_body = 0, .client_timeout_s = 0,        \
        .access_log = NULL, .programs = NULL, .nprograms = 0, .program_workers = 0, .jobs = NULL, \
        .prices = NULL                                                                            \
    }

/** A server. Threading: new/start/free from one thread; dspy_serve_port from any. Requests
 * are answered on the server's own threads (HTTP polling threads and one event-loop thread
 * per upstream); nothing holds a thread while it waits for an upstream. */
typedef struct dspy_server dspy_server;

/** Read the config and token files, open the upstreams and register the routes (not yet
 * listening). Errors: DSPY_EINVAL (bad option), DSPY_EPARSE (config or token file, with
 * file, line and field in err), DSPY_EIO, DSPY_ENOMEM; *out is NULL then. */
DSPY_EXTERN dspy_status dspy_serve_new(const struct dspy_serve_options *opts, dspy_server **out,
                                       struct dspy_error *err);
/** Start listening. DSPY_EIO when the address cannot be bound. */
DSPY_EXTERN dspy_status dspy_serve_start(dspy_server *s, struct dspy_error *err);
/** The bound port, -1 before start. */
DSPY_EXTERN int dspy_serve_port(const dspy_server *s);
/** Stop listening, end requests still open, close upstreams; NULL is a no-op. */
DSPY_EXTERN void dspy_serve_free(dspy_server *s);

#ifdef __cplusplus
}
#endif
#endif

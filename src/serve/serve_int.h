/* Private parts of the server (serve layer) shared by serve.c (lifecycle, route table,
 * auth and overload checks, answers), serve_config.c (upstreams), serve_proxy.c (the
 * OpenAI-compatible caching proxy), serve_auth.c (token file) and serve_metrics.c
 * (Prometheus text, dashboard feed, profiler, access log). Other modules mount their
 * routes on the same server with dspy__serve_route() before dspy_serve_start(). */
#ifndef DSPY_SERVE_SERVE_INT_H
#define DSPY_SERVE_SERVE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include <dspyc/lm.h>
#include <dspyc/serve.h>

#include "base/buf.h"
#include "net/server.h"

/* ---- routes ---------------------------------------------------------------------------- */

enum dspy__serve_access {
    DSPY__SERVE_OPEN,  /* anyone (health) */
    DSPY__SERVE_USER,  /* any valid token when auth is on */
    DSPY__SERVE_ADMIN, /* an admin token when auth is on */
};

/* Profiler stages, in the order a proxied request goes through them. */
enum dspy__serve_stage {
    DSPY__STAGE_PARSE,    /* reading and checking the request */
    DSPY__STAGE_CACHE,    /* key and lookup */
    DSPY__STAGE_FORMAT,   /* the upstream body */
    DSPY__STAGE_UPSTREAM, /* waiting for the upstream (retries and rate limits included) */
    DSPY__STAGE_REPLY,    /* reading the upstream's answer, storing it */
    DSPY__STAGE_WRITE,    /* handing the answer to the connection */
    DSPY__NSTAGES
};

#define DSPY__SERVE_MAX_ROUTES 32
#define DSPY__SERVE_MODEL_MAX 128

/* One request being answered: created before the handler runs, freed with the request. The
 * thread that holds the request's turn (the handler, then an upstream callback) writes it. */
struct dspy__serve_ctx {
    dspy_server *s;
    struct dspy__srv_req *req;
    unsigned route;     /* index in the route table (metrics label) */
    const char *tenant; /* the token's namespace (borrowed from the token table), or NULL */
    bool admin;         /* the token is an admin token (or auth is off) */
    uint64_t t0;        /* received */
    uint64_t mark;      /* end of the last stage */
    uint64_t stage_ns[DSPY__NSTAGES];
    char model[DSPY__SERVE_MODEL_MAX];
    int upstream;             /* index, -1 = none */
    const char *cache_status; /* "hit", "miss" or NULL (not cacheable, or caching off) */
    long tokens_in, tokens_out;
    uint64_t upstream_ns, ttft_ns; /* 0 = not measured */
    uint64_t bytes_out;
    int status;           /* answered status; 0 = not yet */
    atomic_bool finished; /* metrics and log written */
    bool counted;         /* holds an in-flight slot */
};

typedef void (*dspy__serve_handler)(struct dspy__serve_ctx *ctx, void *ud);

/* Mount `fn` at `method` `path` (a trailing '*' matches a prefix) before dspy_serve_start.
 * `label` names the route in metrics and the profiler (static storage). The server checks
 * access and overload first; fn must end the request with one of the answers below, now or
 * later from any thread (take a reference with dspy__srv_req_ref to answer later). */
dspy_status dspy__serve_route(dspy_server *s, const char *method, const char *path,
                              const char *label, enum dspy__serve_access access,
                              dspy__serve_handler fn, void *ud);

/* Close the current profiler stage: its time since the last mark goes to `stage`. */
void dspy__serve_stage(struct dspy__serve_ctx *ctx, enum dspy__serve_stage stage);

/* Answers: any thread, exactly one per request (a second is refused). */
dspy_status dspy__serve_send(struct dspy__serve_ctx *ctx, int status, const char *content_type,
                             const char *const *headers, const void *body, size_t len);
dspy_status dspy__serve_error(struct dspy__serve_ctx *ctx, int status, const char *type,
                              const char *code, const char *const *headers, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Status 200 and headers now, then a chunked body; content_type NULL = text/event-stream. */
dspy_status dspy__serve_stream_start(struct dspy__serve_ctx *ctx, const char *content_type,
                                     const char *const *headers);
dspy_status dspy__serve_stream_push(struct dspy__serve_ctx *ctx, const void *data, size_t len);
void dspy__serve_stream_end(struct dspy__serve_ctx *ctx, bool abort);

/* ---- upstreams (serve_config.c) -------------------------------------------------------- */

struct dspy__serve_alias {
    char *name; /* what clients ask for */
    char *to;   /* what this upstream is sent */
};

struct dspy__serve_upstream {
    char *name;
    char *base_url;
    char *chat_url, *embed_url, *models_url;
    char *api_key_env, *api_key_file; /* where its key comes from (programs open their own LM) */
    char **models;                    /* served model names; none = any model */
    size_t nmodels;
    struct dspy__serve_alias *aliases;
    size_t naliases;
    char **fallback_names;
    size_t nfallbacks;
    int *fallbacks;           /* indexes, resolved after loading */
    double cost_in, cost_out; /* USD per million tokens, for the cost estimate */
    dspy_lm *lm;              /* engine, key header, retry policy, rate limiter */
};

/* Build s->ups from opts (one --upstream, or the config file). */
dspy_status dspy__serve_upstreams_open(dspy_server *s, const struct dspy_serve_options *o,
                                       struct dspy_error *err);
void dspy__serve_upstreams_close(dspy_server *s);
/* The upstream serving `model` and the name to send it (an alias resolved), or -1. */
int dspy__serve_route_model(const dspy_server *s, const char *model, const char **send_as);
/* `model` as upstream u should be sent it (its alias for the name, or the name). */
const char *dspy__serve_upstream_model(const struct dspy__serve_upstream *u, const char *model);
bool dspy__serve_upstream_serves(const struct dspy__serve_upstream *u, const char *model);

/* ---- auth (serve_auth.c) --------------------------------------------------------------- */

struct dspy__serve_token {
    char *secret;
    char *ns; /* bound cache namespace, or NULL */
    bool admin;
};

struct dspy__serve_auth {
    struct dspy__serve_token *tokens; /* none = auth off */
    size_t ntokens;
};

dspy_status dspy__serve_auth_load(struct dspy__serve_auth *a, const char *path,
                                  struct dspy_error *err);
void dspy__serve_auth_release(struct dspy__serve_auth *a);
/* The token an "Authorization: Bearer ..." value names, or NULL (constant time in the
 * secret's bytes). */
const struct dspy__serve_token *dspy__serve_auth_check(const struct dspy__serve_auth *a,
                                                       const char *header);

/* ---- metrics (serve_metrics.c) --------------------------------------------------------- */

struct dspy__serve_metrics;
struct dspy__serve_metrics *dspy__serve_metrics_new(void);
void dspy__serve_metrics_free(struct dspy__serve_metrics *m);
/* A request ended: counters, histograms, profiler, dashboard series, access log. */
void dspy__serve_metrics_finish(dspy_server *s, const struct dspy__serve_ctx *ctx);
void dspy__serve_metrics_cache(dspy_server *s, enum dspy_cache_source src);
void dspy__serve_metrics_event(dspy_server *s, int what); /* DSPY__EV_* */
enum { DSPY__EV_OVERLOAD, DSPY__EV_FALLBACK, DSPY__EV_UNAUTHORIZED, DSPY__EV_COALESCED };
/* Start the once-a-second process sampler (on the HTTP server's timer thread). */
dspy_status dspy__serve_metrics_start(dspy_server *s);
dspy_status dspy__serve_metrics_routes(dspy_server *s);

/* ---- the proxy (serve_proxy.c) --------------------------------------------------------- */

struct dspy__serve_flights;
dspy_status dspy__serve_proxy_routes(dspy_server *s);
/* LiteLLM's controls in a request body's "cache" member, over *ctl; false with *why (a
 * static text) on a bad one. Exposed for the fuzz target. */
bool dspy__serve_body_controls(const json_t *body, struct dspy_cache_ctl *ctl, double *s_maxage,
                               const char **ns, const char **why);
/* A stored chat completion body as the SSE stream a client asked for, into `out`.
 * DSPY_EPARSE when the body has no "choices" array. */
dspy_status dspy__serve_replay_sse(const char *body, size_t len, bool include_usage,
                                   struct dspy_buf *out);
void dspy__serve_proxy_release(dspy_server *s);

/* ---- programs (serve_program.c) -------------------------------------------------------- */

struct dspy__serve_programs;
dspy_status dspy__serve_programs_open(dspy_server *s, const struct dspy_serve_options *o,
                                      struct dspy_error *err);
dspy_status dspy__serve_program_routes(dspy_server *s);
/* Stop the workers (after the HTTP side stopped) and free the programs. */
void dspy__serve_programs_close(dspy_server *s);

/* ---- the job API (serve_jobs.c) ------------------------------------------------------- */

struct dspy_jobq;
dspy_status dspy__serve_jobs_routes(dspy_server *s, struct dspy_jobq *q);
/* The queue's figures in Prometheus text (for /metrics). */
struct dspy_buf;
void dspy__serve_jobs_metrics(struct dspy_buf *b, struct dspy_jobq *q);

/* ---- the server ------------------------------------------------------------------------ */

struct dspy__serve_route_def {
    const char *label;
    enum dspy__serve_access access;
    dspy__serve_handler fn;
    void *ud;
    dspy_server *s;
};

struct dspy_server {
    struct dspy__srv *srv;
    dspy_cache *cache;              /* borrowed */
    struct dspy_jobq *jobs;         /* borrowed; NULL without --jobs */
    const dspy_price_table *prices; /* borrowed; NULL = the config's prices only */
    struct dspy_cache_ctl cache_ctl;
    char *default_ns;
    struct dspy__serve_upstream *ups;
    size_t nups;
    bool list_models; /* some upstream names its models: /v1/models lists them */
    struct dspy__serve_auth auth;
    unsigned max_in_flight;
    atomic_uint in_flight;
    struct dspy__serve_route_def routes[DSPY__SERVE_MAX_ROUTES];
    size_t nroutes;
    struct dspy__serve_metrics *metrics;
    struct dspy__serve_flights *flights;   /* serve_proxy.c */
    struct dspy__serve_programs *programs; /* serve_program.c */
    FILE *access_log;                      /* NULL = none */
    bool access_log_owned;
    pthread_mutex_t log_lock; /* guards access_log writes */
    uint64_t started_ns;
    bool started;
};

#endif

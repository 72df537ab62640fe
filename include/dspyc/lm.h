/* The LM client: OpenAI-compatible chat completions over HTTP (libcurl), with sampling
 * parameters, usage accounting, timeouts, HTTP errors mapped to error classes, and an
 * optional cache in front (cache-through, single-flight; see docs/cache.md section 8). */
#ifndef DSPYC_LM_H
#define DSPYC_LM_H

#include <math.h>

#include <jansson.h>

#include <dspyc/cache.h>
#include <dspyc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Replaces the HTTP exchange, for in-process endpoints (tests, overhead benchmarks).
 * Gets the full URL and request body; sets *http_status and a response body allocated
 * with dspy_malloc (the client takes ownership). Returns DSPY_OK or a network-class error.
 * Called from whichever thread calls the client. */
typedef dspy_status (*dspy_lm_transport_fn)(void *userdata, const char *url, const char *body,
                                            size_t body_len, long *http_status, char **response,
                                            size_t *response_len, struct dspy_error *err);

struct dspy_lm_options {
    const char *base_url;     /* "http://127.0.0.1:8000/v1"; required */
    const char *model;        /* "openai/gpt-4o-mini": a leading "openai/" is not sent */
    const char *api_key;      /* used as is when set */
    const char *api_key_env;  /* else read from this variable ("OPENAI_API_KEY" by default) */
    const char *api_key_file; /* else read from this file (first line) */
    double timeout_s;         /* whole request; 0 = none. Default 600 */
    double connect_timeout_s; /* default 10 */
    double temperature;       /* default sampling; NAN = not sent */
    long max_tokens;          /* default; < 0 = not sent */
    size_t max_response_bytes; /* responses longer than this fail with DSPY_ETOOBIG; 16 MiB */
    dspy_lm_transport_fn transport; /* NULL = HTTP */
    void *transport_userdata;
    /* Cache-through: borrowed until dspy_lm_free() (the cache must outlive the handle);
     * NULL = no caching. Every request is looked up first and a success is stored;
     * errors never are. Streaming requests are not cached yet. */
    dspy_cache *cache;
    /* Default per-request cache control for every request through this handle (no_cache,
     * no_store, ttl_s, levels, ns); a request's own control is applied on top of it.
     * Copied by dspy_lm_new(). */
    struct dspy_cache_ctl cache_ctl;
};
#define DSPY_LM_OPTIONS_INIT                                                                 \
    { NULL, NULL, NULL, "OPENAI_API_KEY", NULL, 600.0, 10.0, NAN, -1, 16u << 20, NULL, NULL,  \
      NULL, DSPY_CACHE_CTL_INIT }

/** Handle to one endpoint and model. Threading: dspy_lm_complete() may be called from many
 * threads at once on one handle; new/free from one thread while no call is running. */
typedef struct dspy_lm dspy_lm;

/** Copies everything it needs from `opts`. The API key is never logged or reported. */
DSPY_EXTERN dspy_status dspy_lm_new(const struct dspy_lm_options *opts, dspy_lm **out,
                                    struct dspy_error *err);
DSPY_EXTERN void dspy_lm_free(dspy_lm *lm);
/** The model name as configured (borrowed for the handle's life). */
DSPY_EXTERN const char *dspy_lm_model(const dspy_lm *lm);

/** One chat completion request. Unset numbers are not sent (they fall back to the
 * handle's defaults, then to the endpoint's). */
struct dspy_lm_request {
    const json_t *messages;        /* array of {"role","content"}; borrowed */
    double temperature;            /* NAN = default */
    long max_tokens;               /* < 0 = default */
    double top_p;                  /* NAN = not sent */
    int n;                         /* number of choices; 0 = not sent (1) */
    const json_t *response_format; /* borrowed, may be NULL */
    const json_t *extra;           /* more body keys (object), borrowed, may be NULL */
    bool has_rollout_id;
    long rollout_id;               /* DSPy's rollout id: in the cache key, never sent */
    /* Cache control for this request, over the handle's cache_ctl: no_cache and no_store
     * add to it, ttl_s > 0, levels != 0 and ns != NULL replace it. Ignored without a
     * cache. `ns` is borrowed for the call. */
    struct dspy_cache_ctl cache;
};
#define DSPY_LM_REQUEST_INIT { NULL, NAN, -1, NAN, 0, NULL, NULL, false, 0, DSPY_CACHE_CTL_INIT }

struct dspy_lm_usage {
    long prompt_tokens;
    long completion_tokens;
    long total_tokens;
};

/** Caller-allocated; filled by dspy_lm_complete, released with dspy_lm_response_release. */
struct dspy_lm_response {
    size_t n;              /* number of choices */
    char **texts;          /* choices[i].message.content ("" when null) */
    char **finish_reasons; /* may hold NULLs */
    char *model;           /* model named in the response, may be NULL */
    struct dspy_lm_usage usage; /* as the endpoint reported it, on a cache hit too */
    long http_status;           /* 200 on a cache hit */
    bool cache_hit;             /* answered from the cache (any level, or another caller's
                                   in-flight request for the same key): no upstream call */
};

/** Send one request and wait for the answer. Errors are classed (DSPY_ELM_*); err gets
 * the HTTP status and the endpoint's error message. With a cache, the request is looked
 * up first (a hit sets resp->cache_hit and reports the original usage), concurrent
 * identical misses make one upstream call, and a 2xx answer that parses is stored.
 * Thread-safe. */
DSPY_EXTERN dspy_status dspy_lm_complete(dspy_lm *lm, const struct dspy_lm_request *req,
                                         struct dspy_lm_response *resp,
                                         struct dspy_error *err);
DSPY_EXTERN void dspy_lm_response_release(struct dspy_lm_response *resp);

/** The error class for an HTTP status and error body (OpenAI error object or text):
 * 401/403 auth, 429 rate limit, 400 with a context-length code or message -> context,
 * other 4xx bad request, 5xx server. Exposed for tests and custom transports. */
DSPY_EXTERN dspy_status dspy_lm_classify_http(long http_status, const char *body, size_t len);

#ifdef __cplusplus
}
#endif
#endif

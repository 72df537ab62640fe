/* The LM client: OpenAI-compatible chat completions over HTTP, with sampling parameters,
 * usage accounting, retries with backoff (Retry-After honoured), per-attempt timeouts and a
 * whole-call deadline, rate limits (requests/tokens per minute, concurrency, a bounded wait
 * queue), HTTP errors mapped to error classes, and an optional cache in front
 * (cache-through, single-flight; see docs/cache.md section 8). Each handle owns one event
 * loop thread (libcurl multi) that every call, synchronous or not, goes through. */
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

/** Whether the JSON adapter asks this model for structured outputs (a JSON-schema
 * response_format built from the signature, retried once in JSON mode when the reply does
 * not parse), as DSPy's JSONAdapter does for models litellm says support response
 * schemas. AUTO decides by dspy_model_supports_response_schema(); ON and OFF override. */
enum dspy_structured_outputs {
    DSPY_STRUCTURED_AUTO,
    DSPY_STRUCTURED_ON,
    DSPY_STRUCTURED_OFF,
};

struct dspy_lm_options {
    const char *base_url; /* "http://127.0.0.1:8000/v1"; required */
    const char *model;    /* "openai/gpt-4o-mini": a leading "openai/" is not sent */
    const char *api_key;  /* used as is when set */
    /* Else the key from this variable (then api_key_file when it is unset); NULL (the
     * default): from api_key_file when one is named, else $OPENAI_API_KEY. An explicit
     * file wins over the ambient variable. */
    const char *api_key_env;
    const char *api_key_file;       /* the key from this file (first line) */
    double timeout_s;               /* one attempt, connecting included; 0 = none. Default 600 s */
    double connect_timeout_s;       /* default 10 */
    double temperature;             /* default sampling; NAN = not sent */
    long max_tokens;                /* default; < 0 = not sent */
    size_t max_response_bytes;      /* responses longer than this fail with DSPY_ETOOBIG; 16 MiB */
    dspy_lm_transport_fn transport; /* NULL = HTTP */
    void *transport_userdata;
    /* Cache-through: borrowed until dspy_lm_free() (the cache must outlive the handle);
     * NULL = no caching. Every request is looked up first and a success is stored;
     * errors never are. Streamed calls share entries with plain ones (dspy_lm_stream). */
    dspy_cache *cache;
    /* Default per-request cache control for every request through this handle (no_cache,
     * no_store, ttl_s, levels, ns); a request's own control is applied on top of it.
     * Copied by dspy_lm_new(). */
    struct dspy_cache_ctl cache_ctl;
    /* Retries of what may succeed when repeated (429, 408, 5xx, connection failures and
     * timeouts; never other 4xx): exponential backoff with full jitter between
     * retry_base_s and retry_cap_s, or the server's Retry-After on 429/503. */
    unsigned max_attempts; /* attempts in all, the first included; default 4 (3 retries,
                               * as DSPy/litellm's num_retries=3); 1 = never retry */
    double retry_base_s;   /* default 0.5 */
    double retry_cap_s;    /* default 8 */
    double deadline_s;     /* whole call: attempts, backoff and rate-limit waits; 0 =
                               * none (default) */
    /* Rate limits for this handle (one endpoint+model); 0 = none. Requests beyond them wait
     * for capacity, in order; when max_waiting requests already wait, a call fails at once
     * with DSPY_EBUSY (back off and try again). Not applied with a transport hook. */
    double requests_per_minute;
    double tokens_per_minute; /* tokens pre-estimated from the request (prompt bytes / 4
                               * plus max_tokens), corrected from the answer's usage */
    unsigned max_concurrency; /* requests on the wire at once */
    size_t max_waiting;       /* default 10,000 when any limit is set */
    enum dspy_structured_outputs structured_outputs; /* default AUTO */
};
/* The defaults, each named once: DSPY_LM_OPTIONS_INIT sets them, and the client falls back
 * to them where a field is left 0 or NULL (max_response_bytes). */
#define DSPY_LM_DEFAULT_API_KEY_ENV "OPENAI_API_KEY"
#define DSPY_LM_DEFAULT_TIMEOUT_S 600.0
#define DSPY_LM_DEFAULT_CONNECT_TIMEOUT_S 10.0
#define DSPY_LM_DEFAULT_MAX_RESPONSE_BYTES ((size_t)16 << 20)
#define DSPY_LM_DEFAULT_MAX_ATTEMPTS 4
#define DSPY_LM_DEFAULT_RETRY_BASE_S 0.5
#define DSPY_LM_DEFAULT_RETRY_CAP_S 8.0
#define DSPY_LM_OPTIONS_INIT                                                                     \
    {                                                                                            \
        .api_key_env = NULL, .timeout_s = DSPY_LM_DEFAULT_TIMEOUT_S,                             \
        .connect_timeout_s = DSPY_LM_DEFAULT_CONNECT_TIMEOUT_S, .temperature = NAN,              \
        .max_tokens = -1, .max_response_bytes = DSPY_LM_DEFAULT_MAX_RESPONSE_BYTES,              \
        .cache_ctl = DSPY_CACHE_CTL_INIT, .max_attempts = DSPY_LM_DEFAULT_MAX_ATTEMPTS,          \
        .retry_base_s = DSPY_LM_DEFAULT_RETRY_BASE_S, .retry_cap_s = DSPY_LM_DEFAULT_RETRY_CAP_S \
    }

/** Handle to one endpoint and model. Threading: dspy_lm_complete() and dspy_lm_submit() may
 * be called from many threads at once on one handle; new/free from one thread while no call
 * is running. */
typedef struct dspy_lm dspy_lm;

/** Copies everything it needs from `opts`. The API key is never logged or reported. */
DSPY_EXTERN dspy_status dspy_lm_new(const struct dspy_lm_options *opts, dspy_lm **out,
                                    struct dspy_error *err);
DSPY_EXTERN void dspy_lm_free(dspy_lm *lm);
/** The model name as configured (borrowed for the handle's life). */
DSPY_EXTERN const char *dspy_lm_model(const dspy_lm *lm);
/** Whether the JSON adapter sends this handle's model a JSON-schema response_format (the
 * handle's structured_outputs setting resolved against its model). */
DSPY_EXTERN bool dspy_lm_structured_outputs(const dspy_lm *lm);
/** litellm's supports_response_schema for an OpenAI model name: a leading "openai/" is
 * dropped, the name is matched without regard to case, and a dated ("-2024-08-06") or
 * fine-tuned ("ft:gpt-4o-2024-08-06:org::id") name not in the table falls back to its
 * stem. False for unknown names and for other providers' ("vendor/model"). */
DSPY_EXTERN bool dspy_model_supports_response_schema(const char *model);

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
    long rollout_id; /* DSPy's rollout id: in the cache key, never sent */
    /* Cache control for this request, over the handle's cache_ctl: no_cache and no_store
     * add to it, ttl_s > 0, levels != 0 and ns != NULL replace it. Ignored without a
     * cache. `ns` is borrowed for the call. */
    struct dspy_cache_ctl cache;
};
#define DSPY_LM_REQUEST_INIT                                                             \
    {                                                                                    \
        .temperature = NAN, .max_tokens = -1, .top_p = NAN, .cache = DSPY_CACHE_CTL_INIT \
    }

struct dspy_lm_usage {
    long prompt_tokens;
    long completion_tokens;
    long total_tokens;
};

/** Caller-allocated; filled by dspy_lm_complete, released with dspy_lm_response_release. */
struct dspy_lm_response {
    size_t n;                   /* number of choices */
    char **texts;               /* choices[i].message.content ("" when null) */
    char **finish_reasons;      /* may hold NULLs */
    char *model;                /* model named in the response, may be NULL */
    struct dspy_lm_usage usage; /* as the endpoint reported it, on a cache hit too */
    long http_status;           /* 200 on a cache hit */
    bool cache_hit;             /* answered from the cache (any level, or another caller's
                                   in-flight request for the same key): no upstream call */
    bool cache_semantic;        /* ... by the semantic level: a near-duplicate's entry */
    float cache_similarity;     /* its cosine similarity to this request (semantic hits) */
};

/** Send one request and wait for the answer (retrying as the options say). Errors are
 * classed (DSPY_ELM_*); err gets the HTTP status and the endpoint's error message, and,
 * when more than one attempt was made, "(after N attempts)". DSPY_EBUSY: the rate
 * limiter's wait queue is full. With a cache, the request is looked
 * up first (a hit sets resp->cache_hit and reports the original usage), concurrent
 * identical misses make one upstream call, and a 2xx answer that parses is stored.
 * Thread-safe. */
DSPY_EXTERN dspy_status dspy_lm_complete(dspy_lm *lm, const struct dspy_lm_request *req,
                                         struct dspy_lm_response *resp, struct dspy_error *err);
DSPY_EXTERN void dspy_lm_response_release(struct dspy_lm_response *resp);

/** Completion of dspy_lm_submit(). `resp` is the callback's: release it with
 * dspy_lm_response_release() (or copy the struct to keep it). `err` is borrowed until the
 * callback returns; status is DSPY_OK or what dspy_lm_complete() would have returned. */
typedef void (*dspy_lm_done_fn)(void *userdata, dspy_status status, struct dspy_lm_response *resp,
                                const struct dspy_error *err);

/** Send one request without waiting: the same request, retries, limits and errors as
 * dspy_lm_complete(), with `on_done` called exactly once when it ends. Over HTTP, on_done
 * runs on the handle's event-loop thread: it must not block, nor wait on another call, nor
 * free the handle (a slow callback delays every call of the handle); it may submit more.
 * With a cache or a transport hook the call runs on the calling thread instead, and
 * on_done runs there before dspy_lm_submit returns. `req` and what it points to are
 * borrowed for this call only. On failure (DSPY_EINVAL, DSPY_ENOMEM, DSPY_EBUSY when the
 * rate limiter's wait queue is full) on_done is not called. dspy_lm_free() waits for
 * nothing: calls still running end with DSPY_ECANCELED. Any thread. */
DSPY_EXTERN dspy_status dspy_lm_submit(dspy_lm *lm, const struct dspy_lm_request *req,
                                       dspy_lm_done_fn on_done, void *userdata,
                                       struct dspy_error *err);

/** Counters of a handle's upstream traffic since dspy_lm_new (not counting cache hits nor
 * calls through a transport hook, which bypass the event loop). */
struct dspy_lm_stats {
    uint64_t requests;        /* calls sent upstream */
    uint64_t attempts;        /* HTTP attempts, retries included */
    uint64_t retries;         /* attempts after the first */
    uint64_t ratelimit_waits; /* times a call queued for the rate limiter */
    uint64_t rejected_busy;   /* calls refused with DSPY_EBUSY (wait queue full) */
    uint64_t failed;          /* calls that ended without an HTTP answer */
    uint64_t in_flight;       /* HTTP attempts on the wire now */
    uint64_t pending;         /* calls sent and not ended now (waits and backoff included) */
};
/** A snapshot, read with relaxed atomics (may be a few events behind). Any thread. */
DSPY_EXTERN void dspy_lm_get_stats(dspy_lm *lm, struct dspy_lm_stats *st);

/** The error class for an HTTP status and error body (OpenAI error object or text):
 * 401/403 auth, 429 rate limit, 400 with a context-length code or message -> context,
 * other 4xx bad request, 5xx server. Exposed for tests and custom transports. */
DSPY_EXTERN dspy_status dspy_lm_classify_http(long http_status, const char *body, size_t len);

/** One piece of streamed text: `text` is `len` bytes of choice 0's content (not
 * NUL-terminated, borrowed until the callback returns; may split a UTF-8 sequence when the
 * endpoint does), received at `recv_ns` (dspy_clock_ns). Return 0 to go on, non-zero to
 * stop the call (it ends with DSPY_ECANCELED). */
typedef int (*dspy_lm_delta_fn)(void *userdata, const char *text, size_t len, uint64_t recv_ns);

/** Like dspy_lm_complete(), streamed: the request is sent with "stream": true and
 * "stream_options": {"include_usage": true}, on_delta (may be NULL) gets each content delta
 * of choice 0 as it arrives (reasoning_content deltas are not passed on, as the plain
 * response does not carry them either), and `resp` gets the assembled answer (every
 * choice's text and finish_reason, the usage chunk) when the stream ends with [DONE].
 *
 * Errors are classed as dspy_lm_complete() classes them: an HTTP error before the stream
 * (with the endpoint's message), DSPY_ELM_TIMEOUT (the per-attempt timeout bounds the
 * whole stream), DSPY_ELM_BAD_RESPONSE for a malformed event and for a stream that ends
 * or drops before [DONE] ("stream ended before [DONE]"), DSPY_ELM_SERVER for an event that
 * carries an "error" object, DSPY_ETOOBIG past max_response_bytes, DSPY_ECANCELED when
 * on_delta stops it. A stream is never retried (deltas already delivered cannot be taken
 * back); rate limits apply as to any call. Deltas delivered before an error stand: discard
 * them on failure.
 *
 * With a cache, the key is the plain request's (streaming does not change the answer), so
 * streamed and plain calls share entries: the assembled answer is stored in the format of
 * a plain response, and only when the stream finished cleanly ([DONE], no error). A hit
 * sets resp->cache_hit, reports the original usage and is replayed to on_delta in pieces
 * of about 4 bytes (never splitting a UTF-8 sequence), all at once. Concurrent identical
 * misses make one upstream stream (the cache's single-flight): the others wait for it to
 * finish and get the replay.
 *
 * Threading: any thread, many at once on one handle; blocks until the stream ends. Over
 * HTTP, on_delta runs on the handle's event-loop thread: it must not block, nor call the
 * same handle synchronously (that call would fail with DSPY_EINVAL), nor free it. A replay
 * from the cache, and a stream through a transport hook (whose response body is read as an
 * SSE stream), call on_delta on the calling thread. */
DSPY_EXTERN dspy_status dspy_lm_stream(dspy_lm *lm, const struct dspy_lm_request *req,
                                       dspy_lm_delta_fn on_delta, void *userdata,
                                       struct dspy_lm_response *resp, struct dspy_error *err);

#ifdef __cplusplus
}
#endif
#endif

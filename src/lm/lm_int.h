/* Internal entry points of the LM client (lm layer) for callers that already hold their
 * messages as JSON text: modules cache the encoded system and demo messages and add only
 * the final user message per call, so no json_t array is built on the hot path. Shared by
 * lm.c (the exchange) and lm_cache.c (cache-through). */
#ifndef DSPY_LM_LM_INT_H
#define DSPY_LM_LM_INT_H

#include <math.h>

#include <dspyc/lm.h>

#include "base/buf.h"
#include "net/engine.h"

/* What a caller wants back about the cache entry that answered a call (module memo). */
struct dspy__lm_cached {
    struct dspy_cache_key key;
    struct dspy_cache_value value; /* a reference to the stored bytes; release it */
};

/* A batch's lookup of a call's key, made before the call (dspy_cache_get_many for many
 * records at once): the call takes the hit instead of asking the cache again, and a miss
 * goes straight to the single-flight fill. Used only when `key` is the call's own key. */
struct dspy__lm_prefetched {
    struct dspy_cache_key key;
    struct dspy_cache_value value; /* the hit (the call takes it), or empty for a miss */
    bool looked_up;                /* false: no lookup was made, the call makes its own */
};

/* One chat request with pre-encoded pieces. The body's "messages" array is `messages`
 * (encoded message objects separated by commas, no brackets; may be empty) followed, when
 * `user` is not NULL, by {"role":"user","content":<user escaped here>}. */
struct dspy__lm_call {
    const char *messages;
    size_t messages_len;
    const char *user; /* raw text of the final user message, or NULL */
    size_t user_len;
    double temperature;          /* NAN = the handle's default */
    long max_tokens;             /* < 0 = the handle's default */
    double top_p;                /* NAN = not sent */
    int n;                       /* 0 = not sent */
    const char *response_format; /* encoded JSON object, or NULL */
    size_t response_format_len;
    const json_t *extra; /* more body keys, or NULL */
    /* For the cache key: the same pieces in canonical form (docs/cache.md 1.2), when the
     * caller has them: `messages` with every message as {"content":..,"role":..}, and the
     * response format with sorted keys. NULL = not available: the key is then computed
     * from the encoded body (slower). */
    const char *canon_messages;
    size_t canon_messages_len;
    const char *canon_response_format;
    size_t canon_response_format_len;
    bool has_rollout_id;
    long rollout_id;                        /* in the cache key, never sent */
    const struct dspy_cache_ctl *ctl;       /* over the handle's defaults; NULL = none */
    struct dspy__lm_cached *cached;         /* when not NULL and the answer came from or went
                                         into the cache: its key and value (else
                                         value.ref stays NULL) */
    struct dspy__lm_prefetched *prefetched; /* the batch's lookup of this call, or NULL */
    struct dspy__engine_group *group;       /* over HTTP the call joins this group of the
                                         handle's engine (a batch, cancelled together:
                                         dspy__lm_group_new); NULL = none */
};
#define DSPY__LM_CALL_INIT                                 \
    {                                                      \
        .temperature = NAN, .max_tokens = -1, .top_p = NAN \
    }

#define DSPY__LM_MAX_BODY ((size_t)64 << 20) /* longest request body */

/* A public request as a call: its messages and response format encoded into `msgs` and
 * `rf` (caller-initialized, released by the caller), which `call` points into. */
dspy_status dspy__lm_call_from_request(const struct dspy_lm_request *req, struct dspy_buf *msgs,
                                       struct dspy_buf *rf, struct dspy__lm_call *call,
                                       struct dspy_error *err);

/* Same contract as dspy_lm_complete(). */
dspy_status dspy__lm_complete_call(dspy_lm *lm, const struct dspy__lm_call *call,
                                   struct dspy_lm_response *resp, struct dspy_error *err);

/* Read a 2xx chat completion body into `resp` (filled as dspy_lm_complete fills it);
 * malformed or incomplete bodies are DSPY_ELM_BAD_RESPONSE naming what is wrong. */
dspy_status dspy__lm_parse_response(const char *body, size_t len, struct dspy_lm_response *resp,
                                    struct dspy_error *err);

/* The same with jansson alone, which the fast reader above defers to on anything unusual;
 * exposed so that tests can check that both read every body alike. */
dspy_status dspy__lm_parse_response_tree(const char *body, size_t len,
                                         struct dspy_lm_response *resp, struct dspy_error *err);
/* The fast reader alone, for tests that check it reads what it should without deferring:
 * DSPY_OK, DSPY_ENOMEM, or another code where dspy__lm_parse_response() defers to jansson
 * (`resp` then holds nothing). */
dspy_status dspy__lm_parse_response_fast(const char *body, size_t len,
                                         struct dspy_lm_response *resp);

/* The handle's default temperature (NAN when unset), for DSPy's n > 1 rule. */
double dspy__lm_temperature(const dspy_lm *lm);

/* Append {"role":<role>,"content":<content>} (no separator) to `b`. */
dspy_status dspy__lm_encode_message(struct dspy_buf *b, const char *role, const char *content,
                                    size_t len);
/* The same message in canonical member order, {"content":<content>,"role":<role>}. */
dspy_status dspy__lm_encode_message_canon(struct dspy_buf *b, const char *role, const char *content,
                                          size_t len);

/* ---- between lm.c and lm_cache.c ---- */

/* Where encode_body put the pieces the fast cache key reuses: the escaped model and user
 * content strings (with their quotes), as offsets into the body. */
struct dspy__lm_body_marks {
    size_t model_off, model_len;
    size_t user_off, user_len; /* user_len 0: no user message */
    double temperature;        /* as resolved against the handle's defaults */
    long max_tokens;
};

/* The request body of `c` into `b`, and where its pieces sit. */
dspy_status dspy__lm_encode_body(const dspy_lm *lm, const struct dspy__lm_call *c,
                                 struct dspy_buf *b, struct dspy__lm_body_marks *mk);

/* Send an encoded body and read the answer into `resp`: the exchange, HTTP status
 * classes and parsing. On success *body_out (when not NULL) receives the raw response
 * body (caller owns, dspy_free); resp->http_status is set in every case. */
dspy_status dspy__lm_send(dspy_lm *lm, struct dspy__engine_group *group, const char *body,
                          size_t len, struct dspy_lm_response *resp, char **body_out,
                          size_t *body_len, struct dspy_error *err);

/* Submit an encoded body to the handle's engine (no transport hook) with its retry policy,
 * timeouts and limiter, the call joining `group` (NULL = none); the engine's contract
 * otherwise (net/engine.h). DSPY_EBUSY with a message when the limiter's wait queue is
 * full. */
dspy_status dspy__lm_submit_body(dspy_lm *lm, struct dspy__engine_group *group, const char *body,
                                 size_t len, bool take_body, dspy__engine_done_fn on_done,
                                 void *userdata, struct dspy__engine_call **handle,
                                 struct dspy_error *err);

/* ---- what other layers read of a handle (the program layer: modules, batches) ---- */

/* Whether the handle's calls truly leave the calling thread: over HTTP with no cache (a
 * cache's single-flight and a transport hook both run calls in place). */
bool dspy__lm_calls_async(const dspy_lm *lm);

/* The handle's cache (borrowed), or NULL. */
dspy_cache *dspy__lm_cache(const dspy_lm *lm);

/* The handle's cache control with `over` (may be NULL) on top. */
void dspy__lm_cache_ctl(const dspy_lm *lm, const struct dspy_cache_ctl *over,
                        struct dspy_cache_ctl *out);

/* Unique per handle in this process, never reused. */
uint64_t dspy__lm_id(const dspy_lm *lm);

/* A group of the handle's engine that calls join through dspy__lm_call.group, cancelled
 * together. *g is NULL (and DSPY_OK) for a handle with a transport hook; DSPY_ENOMEM. */
dspy_status dspy__lm_group_new(dspy_lm *lm, struct dspy__engine_group **g);
/* Cancel every call of the group, in flight or to come; NULL is a no-op. */
void dspy__lm_group_cancel(struct dspy__engine_group *g);
/* After its calls ended; NULL is a no-op. */
void dspy__lm_group_free(struct dspy__engine_group *g);

/* Read an engine result into `resp` as dspy__lm_send does (classing, parsing, usage
 * reconciled with the limiter, attempts noted on failure); `call` is the engine call. */
dspy_status dspy__lm_read_result(dspy_lm *lm, struct dspy__engine_call *call,
                                 const struct dspy__engine_result *res,
                                 struct dspy_lm_response *resp, char **body_out, size_t *body_len,
                                 struct dspy_error *err);

/* The cache-through call (lm_cache.c): key the request, fetch with single-flight (the
 * fill sends `body`), and read a hit back into `resp`. Requires lm->cache. */
dspy_status dspy__lm_cache_call(dspy_lm *lm, const struct dspy__lm_call *call, const char *body,
                                size_t body_len, const struct dspy__lm_body_marks *marks,
                                struct dspy_lm_response *resp, struct dspy_error *err);

/* The cache key of a call with its encoded body. `fast` false forces the slow way (the
 * body re-read with jansson), for tests that check both agree. */
dspy_status dspy__lm_cache_key(dspy_lm *lm, const struct dspy__lm_call *call, const char *body,
                               size_t body_len, const struct dspy__lm_body_marks *marks,
                               const struct dspy_cache_ctl *ctl, bool fast,
                               struct dspy_cache_key *key, struct dspy_error *err);

/* The key dspy__lm_complete_call() would use for `call` (encodes the body to get it);
 * `fast` as above. For tests and tools. */
dspy_status dspy__lm_request_key(dspy_lm *lm, const struct dspy__lm_call *call, bool fast,
                                 struct dspy_cache_key *key, struct dspy_error *err);

/* The request as keyed, for the semantic level (caller owns), or NULL when the level is not
 * open or `ctl` leaves it out (docs/semantic-cache.md section 2). */
json_t *dspy__lm_semantic_request(dspy_lm *lm, const struct dspy__lm_call *call, const char *body,
                                  size_t body_len, const struct dspy_cache_ctl *ctl);

/* A semantic hit for an exact miss: the near-duplicate's bytes (a copy) in `fill`, marked
 * no_store (never stored under this request's key), and its similarity. False on a miss. */
bool dspy__lm_fill_from_semantic(dspy_lm *lm, const json_t *sreq, const struct dspy_cache_ctl *ctl,
                                 struct dspy_cache_fill *fill, float *similarity);

/* The handle's control with a request's on top (see struct dspy_lm_request). */
void dspy__lm_cache_ctl_merge(struct dspy_cache_ctl *into, const struct dspy_cache_ctl *over);

/* Look `key` up again and tell whether the cache still answers it with the very bytes
 * `held` refers to (an entry held by a memo is still current). Counts as a cache get. */
bool dspy__lm_cache_still(dspy_lm *lm, const struct dspy_cache_key *key,
                          const struct dspy_cache_ctl *ctl, const struct dspy_cache_value *held);

/* ---- asynchronous module calls (lm_async.c) ---- */

/* dspy_lm_submit() for a call with pre-encoded pieces, which are borrowed for this call only
 * (the body is encoded before it returns). Over HTTP the call joins call->group; with a
 * cache or a transport hook it runs on this thread, on_done included. */
dspy_status dspy__lm_submit_call(dspy_lm *lm, const struct dspy__lm_call *call,
                                 dspy_lm_done_fn on_done, void *userdata, struct dspy_error *err);

/* ---- raw exchanges and stream assembly for the proxy (serve layer) ---- */

/* One request body sent as is through the handle's engine, headers (API key), timeouts and
 * limiter: the proxy's upstream call. `url` NULL = the handle's chat completions URL;
 * `method` NULL = POST with a body, else GET. With `retry` the handle's retry policy
 * applies (never with on_event: a retried stream would repeat its events). The engine's
 * contract otherwise (net/engine.h); DSPY_EBUSY with a message when the limiter is full. */
struct dspy__lm_raw_request {
    const char *url;
    const char *method;
    const char *body;
    size_t len;
    bool take_body;
    bool retry;
    dspy__engine_event_fn on_event;
    dspy__engine_done_fn on_done;
    void *userdata;
};
dspy_status dspy__lm_submit_raw(dspy_lm *lm, const struct dspy__lm_raw_request *r,
                                struct dspy_error *err);

/* Replace every occurrence of the handle's API key in `s` (NUL-terminated) with "***". */
void dspy__lm_scrub_key(const dspy_lm *lm, char *s);

/* A streamed chat answer assembled event by event into the plain body the cache stores
 * (the same assembly dspy_lm_stream does). Feed every SSE event of a 2xx stream; finish
 * gives the body (caller owns, dspy_free) and its usage, or the error that ended it. */
struct dspy__lm_stream_acc;
struct dspy__lm_stream_acc *dspy__lm_stream_acc_new(dspy_lm *lm);
/* 0 to go on; non-zero once the stream is broken (finish says why). */
int dspy__lm_stream_acc_event(struct dspy__lm_stream_acc *a, const struct dspy__sse_event *ev);
dspy_status dspy__lm_stream_acc_finish(struct dspy__lm_stream_acc *a, long http_status,
                                       const char *detail, char **body, size_t *len,
                                       struct dspy_lm_usage *usage, struct dspy_error *err);
void dspy__lm_stream_acc_free(struct dspy__lm_stream_acc *a);

#endif

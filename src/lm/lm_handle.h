/* The LM client handle's fields (lm layer), private to src/lm/: other layers reach what they
 * need through the functions of lm_int.h. */
#ifndef DSPY_LM_LM_HANDLE_H
#define DSPY_LM_LM_HANDLE_H

#include "lm/lm_int.h"
#include "net/ratelimit.h"
#include "net/retry.h"

struct dspy_lm {
    char *model;            /* as configured, e.g. "openai/gpt-4o-mini" */
    const char *wire_model; /* what is sent: `model` without a leading "openai/" */
    char *url;              /* base_url + "/chat/completions" */
    char *api_key;          /* NULL when none; wiped on free */
    double timeout_s;       /* per attempt */
    double temperature;     /* NAN = not sent */
    long max_tokens;        /* < 0 = not sent */
    size_t max_response_bytes;
    dspy_lm_transport_fn transport;
    void *transport_userdata;
    struct dspy__engine *engine;          /* the event loop; NULL with a transport hook */
    struct dspy__engine_headers *headers; /* includes the Authorization line */
    struct dspy__engine_limiter *limiter; /* NULL when no limit is set */
    struct dspy__retry_policy retry;
    uint64_t deadline_ns;            /* whole call; 0 = none */
    dspy_cache *cache;               /* borrowed; NULL = no caching */
    struct dspy_cache_ctl cache_ctl; /* defaults; ns points at ns_copy */
    char *ns_copy;
    bool cache_has_ns; /* the cache has a default namespace of its own: keys of requests
                           that name none go through dspy_cache_key() (lm_cache.c) */
    uint64_t id;       /* unique per handle in this process, never reused */
    bool structured;   /* the JSON adapter sends a JSON-schema response_format */
};

#endif

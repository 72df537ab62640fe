/* Modules: Predict and ChainOfThought. A module holds a signature, demos and an adapter,
 * renders the prompt, calls the LM and parses the answer, as DSPy's modules do. */
#ifndef DSPYC_MODULE_H
#define DSPYC_MODULE_H

#include <math.h>

#include <jansson.h>

#include <dspyc/adapter.h>
#include <dspyc/common.h>
#include <dspyc/lm.h>
#include <dspyc/signature.h>

#ifdef __cplusplus
extern "C" {
#endif

enum dspy_module_kind { DSPY_MODULE_PREDICT, DSPY_MODULE_COT };

/** "predict" / "cot"; from_name also accepts "chain_of_thought"/"ChainOfThought" and
 * "Predict", and returns -1 for an unknown name. */
DSPY_EXTERN const char *dspy_module_kind_name(enum dspy_module_kind kind);
DSPY_EXTERN int dspy_module_kind_from_name(const char *name);

/** Per-call settings (DSPy's `config`). Unset values fall back to the module's, then the LM's. */
struct dspy_call_config {
    double temperature; /* NAN = unset */
    long max_tokens;    /* < 0 = unset */
    double top_p;       /* NAN = unset */
    int n;              /* 0 = unset; n > 1 with temperature unset or <= 0.15 uses 0.7 */
    bool has_rollout_id;
    long rollout_id; /* changes the cache key only; never sent */
    /* Cache control (no_cache, no_store, ttl_s, levels, ns), used when the LM has a cache.
     * Per call over the module's over the LM's: the flags add up, ttl_s > 0, levels != 0
     * and ns != NULL replace. `ns` is borrowed (for the call, or while the module's
     * config holds it). */
    struct dspy_cache_ctl cache;
};
#define DSPY_CALL_CONFIG_INIT                                                            \
    {                                                                                    \
        .temperature = NAN, .max_tokens = -1, .top_p = NAN, .cache = DSPY_CACHE_CTL_INIT \
    }

/** What one module call cost. Caller-allocated, optional. */
struct dspy_call_info {
    int lm_calls;                      /* 2 when the Chat adapter fell back to JSON */
    struct dspy_lm_usage usage;        /* summed over the LM calls */
    uint64_t format_ns;                /* prompt rendering and request building */
    uint64_t lm_ns;                    /* waiting for the LM */
    uint64_t parse_ns;                 /* parsing the answer */
    int cache_hits;                    /* of lm_calls, answered by the LM's cache */
    struct dspy_lm_usage cached_usage; /* the part of `usage` those hits reported */
};

/** Threading: dspy_module_call() and dspy_module_call_async() may run on many threads at
 * once; the setters may not run while a call is in flight (an asynchronous call is in flight
 * until its callback returns). */
typedef struct dspy_module dspy_module;

/** New module over a copy of `sig`. ChainOfThought prepends a `reasoning` output field.
 * NULL on allocation failure. */
DSPY_EXTERN dspy_module *dspy_module_new(enum dspy_module_kind kind, const dspy_signature *sig,
                                         enum dspy_adapter_kind adapter);
DSPY_EXTERN void dspy_module_free(dspy_module *m);
/** A deep copy: signature, demos, adapter and config (its cache.ns stays borrowed as the
 * original's). NULL on allocation failure. Not while `src` is being changed. */
DSPY_EXTERN dspy_module *dspy_module_copy(const dspy_module *src);
DSPY_EXTERN enum dspy_module_kind dspy_module_kind(const dspy_module *m);
/** The signature the module renders (with `reasoning` for ChainOfThought); borrowed. */
DSPY_EXTERN const dspy_signature *dspy_module_signature(const dspy_module *m);
/** Mutable signature, to apply saved state (instructions, descs, prefixes). Borrowed.
 * Drops the module's cached system and demo messages: finish the changes before the
 * next call. */
DSPY_EXTERN dspy_signature *dspy_module_signature_mut(dspy_module *m);
DSPY_EXTERN void dspy_module_set_adapter(dspy_module *m, enum dspy_adapter_kind adapter);
DSPY_EXTERN enum dspy_adapter_kind dspy_module_adapter(const dspy_module *m);
/** Replace the demos with a copy of `demos` (array of objects; NULL clears). */
DSPY_EXTERN dspy_status dspy_module_set_demos(dspy_module *m, const json_t *demos);
/** Demos (array, borrowed until they change). */
DSPY_EXTERN const json_t *dspy_module_demos(const dspy_module *m);
DSPY_EXTERN dspy_status dspy_module_set_instructions(dspy_module *m, const char *text);
/** Module-level defaults (DSPy's Predict(**config)); `cfg` is copied. */
DSPY_EXTERN void dspy_module_set_config(dspy_module *m, const struct dspy_call_config *cfg);

/** Render the messages this module would send for `inputs` (caller owns). */
DSPY_EXTERN dspy_status dspy_module_format(dspy_module *m, const json_t *inputs, json_t **messages,
                                           struct dspy_error *err);

/** Run the module: render, call `lm`, parse (falling back from the Chat to the JSON adapter
 * on a parse failure, as DSPy does). *prediction gets an object of the output fields of the
 * first choice; `completions`, when not NULL, gets an array with one object per choice.
 * `cfg` and `info` may be NULL. Missing input fields are an error naming the field. */
DSPY_EXTERN dspy_status dspy_module_call(dspy_module *m, dspy_lm *lm, const json_t *inputs,
                                         const struct dspy_call_config *cfg, json_t **prediction,
                                         json_t **completions, struct dspy_call_info *info,
                                         struct dspy_error *err);

/** Completion of dspy_module_call_async(). On success `prediction` and `completions` (one
 * object per choice) are the callback's to keep or json_decref(); on failure both are NULL.
 * `info` and `err` (set when status is not DSPY_OK) are borrowed until it returns. */
typedef void (*dspy_module_done_fn)(void *userdata, dspy_status status, json_t *prediction,
                                    json_t *completions, const struct dspy_call_info *info,
                                    const struct dspy_error *err);

/** dspy_module_call() without waiting: the same rendering, LM call, parsing and Chat->JSON
 * fallback (its second LM call submitted from the completion of the first), with `on_done`
 * called exactly once at the end. Nothing waits per call: over HTTP, the LM calls go onto
 * the LM's event loop and on_done runs on the LM's event-loop thread, with the same rules as
 * dspy_lm_submit()'s callback (do not block or wait there; submitting more calls is fine).
 * With a cache or a transport hook on `lm` the call runs on the calling thread instead and
 * on_done runs there before this returns. `m`, `lm` and `inputs` are borrowed until on_done
 * returns (do not change them meanwhile); `cfg` is copied (its cache.ns is borrowed as
 * `inputs`). On failure to start (DSPY_EINVAL for a missing input field, DSPY_ENOMEM,
 * DSPY_EBUSY when the rate limiter's wait queue is full, ...) on_done is not called and `err`
 * says why; failures after the start (the LM's, a reply that does not parse) go to on_done.
 * Any thread, as dspy_module_call(). */
DSPY_EXTERN dspy_status dspy_module_call_async(dspy_module *m, dspy_lm *lm, const json_t *inputs,
                                               const struct dspy_call_config *cfg,
                                               dspy_module_done_fn on_done, void *userdata,
                                               struct dspy_error *err);

#ifdef __cplusplus
}
#endif
#endif

/* Internal module entry points (program layer) for programs and saved state: swap in a
 * signature and demos prepared on copies, so a failed state load leaves the module as it
 * was; and the decoded-hit memo of module_memo.c. */
#ifndef DSPY_PROGRAM_MODULE_INT_H
#define DSPY_PROGRAM_MODULE_INT_H

#include <dspyc/module.h>

#include "lm/lm_int.h"

/* Replace the module's signature and demos; takes ownership of both (`demos` an array of
 * objects). Drops the cached messages. Never fails. Not while a call is in flight. */
void dspy__module_replace(dspy_module *m, dspy_signature *sig, json_t *demos);

/* The module-level defaults set by dspy_module_set_config(). */
const struct dspy_call_config *dspy__module_config(const dspy_module *m);

/* dspy_module_call() and dspy_module_call_async() with every LM call of the module call
 * joining `group` (dspy__lm_group_new; NULL = none): the batch executor cancels a whole
 * batch through it. `pre` (may be NULL) is the batch's lookup of the first call's key
 * (struct dspy__lm_prefetched): the call takes a hit from it and releases nothing. */
dspy_status dspy__module_call_in(dspy_module *m, dspy_lm *lm, struct dspy__engine_group *group,
                                 struct dspy__lm_prefetched *pre, const json_t *inputs,
                                 const struct dspy_call_config *cfg, json_t **prediction,
                                 json_t **completions, struct dspy_call_info *info,
                                 struct dspy_error *err);
dspy_status dspy__module_call_async_in(dspy_module *m, dspy_lm *lm,
                                       struct dspy__engine_group *group, const json_t *inputs,
                                       const struct dspy_call_config *cfg,
                                       dspy_module_done_fn on_done, void *userdata,
                                       struct dspy_error *err);

/* The cache key of the first LM call dspy_module_call() would make for `inputs` and the
 * cache control it would use (the handle's, the module's and cfg's merged), for a batch
 * that looks many records up at once; that call then takes its lookup through `pre` of
 * dspy__module_call_in(). The LM must have a cache (else DSPY_EINVAL); input errors are
 * the call's own. */
dspy_status dspy__module_request_key(dspy_module *m, dspy_lm *lm, const json_t *inputs,
                                     const struct dspy_call_config *cfg, struct dspy_cache_key *key,
                                     struct dspy_cache_ctl *ctl, struct dspy_error *err);

/* ---- decoded-hit memo (module_memo.c) ---- */

/* Per module; every call may run on many threads at once, except clear and free. */
struct dspy__memo;
struct dspy__memo *dspy__memo_new(void);
void dspy__memo_free(struct dspy__memo *memo);
void dspy__memo_clear(struct dspy__memo *memo);

/* 128-bit fingerprint of what a call's request depends on besides the module's state. */
dspy_status dspy__memo_fingerprint(const dspy_lm *lm, const dspy_signature *sig,
                                   enum dspy_adapter_kind adapter, const struct dspy_call_config *c,
                                   const struct dspy_cache_ctl *ctl, const json_t *inputs,
                                   struct dspy_cache_key *fp);

/* A copy of the remembered prediction (and completions, when asked for) and its usage,
 * when the memo has `fp` and the LM's L1 still answers its key with the same bytes. */
bool dspy__memo_get(struct dspy__memo *memo, dspy_lm *lm, const struct dspy_cache_key *fp,
                    const struct dspy_cache_ctl *ctl, json_t **prediction, json_t **completions,
                    struct dspy_lm_usage *usage);

/* Remember a call's outcome; takes the reference in `cached` (released if not kept). */
void dspy__memo_put(struct dspy__memo *memo, const struct dspy_cache_key *fp,
                    struct dspy__lm_cached *cached, const json_t *prediction,
                    const json_t *completions, const struct dspy_lm_usage *usage);

#endif

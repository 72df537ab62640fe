/* What the cache hierarchy (cache layer) offers the layers below it beyond the public API:
 * the second half of a fetch, for callers that already looked the key up in a batch. */
#ifndef DSPY_CACHE_CACHE_H
#define DSPY_CACHE_CACHE_H

#include <dspyc/cache.h>

/* dspy_cache_fetch() for a key that a dspy_cache_get_many() of this caller has just missed
 * (and counted): the single-flight fill without the first lookup. The leader still looks
 * again before it fills, so a value stored meanwhile (by another thread or process) is
 * found. With ctl->no_cache it is dspy_cache_fetch(). Same contract otherwise. */
dspy_status dspy__cache_fetch_missed(dspy_cache *c, const struct dspy_cache_key *key,
                                     const struct dspy_cache_ctl *ctl, dspy_cache_fill_fn fill,
                                     void *userdata, struct dspy_cache_value *out,
                                     struct dspy_error *err);

#endif

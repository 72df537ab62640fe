/* One binary heap for the whole library (base layer): fixed-size elements ordered by a
 * caller's comparison, the "smallest" on top. Growable up to a maximum, or over storage the
 * caller provides (no allocation). Not thread-safe; callers lock. */
#ifndef DSPY_BASE_HEAP_H
#define DSPY_BASE_HEAP_H

#include <stdbool.h>
#include <stddef.h>

#include <dspyc/common.h>

/* < 0 when `a` belongs above `b` (nearer the top), > 0 when below, 0 when either will do. */
typedef int (*dspy__heap_cmp)(const void *a, const void *b, void *ctx);

struct dspy_heap {
    char *items;      /* len elements of `size` bytes, heap-ordered */
    size_t len, cap;
    size_t max;       /* most elements; push beyond it fails with DSPY_ETOOBIG */
    size_t size;      /* bytes per element */
    bool owned;       /* items came from dspy_malloc (and may grow) */
    dspy__heap_cmp cmp;
    void *ctx;        /* passed to cmp */
};

/* A growable heap holding at most `max` elements (0 = no limit). */
void dspy__heap_init(struct dspy_heap *h, size_t size, size_t max, dspy__heap_cmp cmp,
                     void *ctx);
/* A heap over `cap` elements of caller storage (borrowed until release); never allocates. */
void dspy__heap_init_over(struct dspy_heap *h, void *storage, size_t size, size_t cap,
                          dspy__heap_cmp cmp, void *ctx);
void dspy__heap_release(struct dspy_heap *h);
static inline size_t dspy__heap_len(const struct dspy_heap *h) { return h->len; }
/* The top element, or NULL when empty. Borrowed until the next change. */
static inline void *dspy__heap_top(const struct dspy_heap *h)
{
    return h->len ? h->items : NULL;
}
/* Copy `item` in. DSPY_ETOOBIG at the maximum (or the caller's capacity), DSPY_ENOMEM. */
dspy_status dspy__heap_push(struct dspy_heap *h, const void *item);
/* Remove the top into `out` (may be NULL); false when empty. */
bool dspy__heap_pop(struct dspy_heap *h, void *out);
/* Replace the top with `item` in one sift (pop then push, without the second walk). The
 * heap must not be empty. The bounded top-k idiom: when full and `item` beats the top. */
void dspy__heap_replace_top(struct dspy_heap *h, const void *item);
/* Empty the heap, keeping its memory. */
static inline void dspy__heap_clear(struct dspy_heap *h) { h->len = 0; }

#endif

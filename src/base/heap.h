/* The one binary heap (base layer): elements of any fixed size stored by value, ordered by
 * the type's `before`; an optional `moved` hook tells each element its index, so an owner
 * that keeps it can remove or re-key the element in O(log n) (intrusive timers). Used by
 * the engine's timers, the server's timer thread and the load generator; a bounded top-k
 * is a max-first heap with dspy__heap_replace_top. Not thread-safe: the owner locks. */
#ifndef DSPY_BASE_HEAP_H
#define DSPY_BASE_HEAP_H

#include <stdbool.h>
#include <stddef.h>

#include <dspyc/common.h>

/* Largest element dspy__heap supports, in bytes. */
#define DSPY__HEAP_ELEM_MAX 64

struct dspy__heap_type {
    size_t size;                                  /* bytes per element, <= DSPY__HEAP_ELEM_MAX */
    bool (*before)(const void *a, const void *b); /* strict order: true when a comes out first */
    void (*moved)(void *elem, size_t idx);        /* optional: elem now sits at idx
                                                     (SIZE_MAX: it left the heap) */
};

struct dspy__heap {
    const struct dspy__heap_type *type;
    unsigned char *v; /* n elements of type->size bytes */
    size_t n, cap;
    bool borrowed; /* v is the caller's storage (dspy__heap_init_over): never grown or freed */
};

void dspy__heap_init(struct dspy__heap *h, const struct dspy__heap_type *type);
/* A heap over `cap` elements of caller storage (borrowed until release) that never
 * allocates: a push beyond `cap` fails with DSPY_ETOOBIG. For hot paths (per-query top-k). */
void dspy__heap_init_over(struct dspy__heap *h, const struct dspy__heap_type *type, void *storage,
                          size_t cap);
/* Frees the storage; elements still in it are told SIZE_MAX through `moved`. A zeroed
 * struct (never initialized) may be released too. */
void dspy__heap_release(struct dspy__heap *h);
/* Empty the heap, keeping its storage; elements are told SIZE_MAX through `moved`. */
void dspy__heap_clear(struct dspy__heap *h);
/* Room for `n` elements, so pushes up to that many never fail. DSPY_ENOMEM. */
dspy_status dspy__heap_reserve(struct dspy__heap *h, size_t n);
/* Copy `elem` in, growing the storage if needed. DSPY_ENOMEM leaves the heap unchanged. */
dspy_status dspy__heap_push(struct dspy__heap *h, const void *elem);

static inline size_t dspy__heap_len(const struct dspy__heap *h)
{
    return h->n;
}

/* The element at index i (0 is the first out); borrowed until the next change. */
static inline void *dspy__heap_at(const struct dspy__heap *h, size_t i)
{
    return h->v + i * h->type->size;
}

/* The first element out, or NULL when empty; borrowed until the next change. */
static inline void *dspy__heap_top(const struct dspy__heap *h)
{
    return h->n ? (void *)h->v : NULL;
}

/* Remove the first element into *out (may be NULL); false when empty. */
bool dspy__heap_pop(struct dspy__heap *h, void *out);
/* Remove the element at index i into *out (may be NULL). */
void dspy__heap_remove(struct dspy__heap *h, size_t i, void *out);
/* Restore the order after the key of the element at index i changed. */
void dspy__heap_update(struct dspy__heap *h, size_t i);
/* Replace the first element with `elem` (one sift instead of pop + push); the heap must
 * not be empty. For bounded top-k: keep the k best with the worst first, replace it. */
void dspy__heap_replace_top(struct dspy__heap *h, const void *elem);

#endif

/* The library's binary heap (base layer): sift-up and sift-down over fixed-size elements
 * with a caller's comparison; see heap.h. */
#include "base/heap.h"

#include <string.h>

void dspy__heap_init(struct dspy_heap *h, size_t size, size_t max, dspy__heap_cmp cmp,
                     void *ctx)
{
    memset(h, 0, sizeof(*h));
    h->size = size;
    h->max = max ? max : SIZE_MAX / (size ? size : 1);
    h->owned = true;
    h->cmp = cmp;
    h->ctx = ctx;
}

void dspy__heap_init_over(struct dspy_heap *h, void *storage, size_t size, size_t cap,
                          dspy__heap_cmp cmp, void *ctx)
{
    memset(h, 0, sizeof(*h));
    h->items = storage;
    h->cap = h->max = cap;
    h->size = size;
    h->cmp = cmp;
    h->ctx = ctx;
}

void dspy__heap_release(struct dspy_heap *h)
{
    if (h->owned)
        dspy_free(h->items);
    h->items = NULL;
    h->len = h->cap = 0;
}

static inline char *at(const struct dspy_heap *h, size_t i)
{
    return h->items + i * h->size;
}

static void swap(char *a, char *b, size_t size)
{
    char t[64];
    while (size) {
        size_t n = size < sizeof(t) ? size : sizeof(t);
        memcpy(t, a, n);
        memcpy(a, b, n);
        memcpy(b, t, n);
        a += n, b += n, size -= n;
    }
}

static void sift_down(struct dspy_heap *h, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, best = i;
        if (l < h->len && h->cmp(at(h, l), at(h, best), h->ctx) < 0)
            best = l;
        if (l + 1 < h->len && h->cmp(at(h, l + 1), at(h, best), h->ctx) < 0)
            best = l + 1;
        if (best == i)
            return;
        swap(at(h, i), at(h, best), h->size);
        i = best;
    }
}

dspy_status dspy__heap_push(struct dspy_heap *h, const void *item)
{
    if (h->len == h->max)
        return DSPY_ETOOBIG;
    if (h->len == h->cap) {
        if (!h->owned)
            return DSPY_ETOOBIG;
        size_t cap = h->cap ? h->cap * 2 : 16;
        if (cap > h->max)
            cap = h->max;
        char *p = dspy_realloc(h->items, cap * h->size);
        if (!p)
            return DSPY_ENOMEM;
        h->items = p;
        h->cap = cap;
    }
    size_t i = h->len++;
    memcpy(at(h, i), item, h->size);
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->cmp(at(h, i), at(h, parent), h->ctx) >= 0)
            break;
        swap(at(h, i), at(h, parent), h->size);
        i = parent;
    }
    return DSPY_OK;
}

bool dspy__heap_pop(struct dspy_heap *h, void *out)
{
    if (!h->len)
        return false;
    if (out)
        memcpy(out, at(h, 0), h->size);
    h->len--;
    if (h->len) {
        memcpy(at(h, 0), at(h, h->len), h->size);
        sift_down(h, 0);
    }
    return true;
}

void dspy__heap_replace_top(struct dspy_heap *h, const void *item)
{
    memcpy(at(h, 0), item, h->size);
    sift_down(h, 0);
}

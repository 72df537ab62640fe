/* The one binary heap (base layer): sift up and down over elements stored by value, with
 * the type's order and index hook; see heap.h. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "base/heap.h"

void dspy__heap_init(struct dspy__heap *h, const struct dspy__heap_type *type)
{
    assert(type->size > 0 && type->size <= DSPY__HEAP_ELEM_MAX && type->before);
    h->type = type;
    h->v = NULL;
    h->n = h->cap = 0;
    h->borrowed = false;
}

void dspy__heap_init_over(struct dspy__heap *h, const struct dspy__heap_type *type, void *storage,
                          size_t cap)
{
    dspy__heap_init(h, type);
    h->v = storage;
    h->cap = cap;
    h->borrowed = true;
}

void dspy__heap_clear(struct dspy__heap *h)
{
    if (h->type && h->type->moved)
        for (size_t i = 0; i < h->n; i++)
            h->type->moved(dspy__heap_at(h, i), SIZE_MAX);
    h->n = 0;
}

void dspy__heap_release(struct dspy__heap *h)
{
    dspy__heap_clear(h);
    if (!h->borrowed)
        dspy_free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}

dspy_status dspy__heap_reserve(struct dspy__heap *h, size_t n)
{
    if (n <= h->cap)
        return DSPY_OK;
    if (h->borrowed)
        return DSPY_ETOOBIG;
    size_t cap = h->cap ? h->cap : 64;
    while (cap < n)
        cap *= 2;
    if (cap > SIZE_MAX / h->type->size)
        return DSPY_ENOMEM;
    unsigned char *v = dspy_realloc(h->v, cap * h->type->size);
    if (!v)
        return DSPY_ENOMEM;
    h->v = v;
    h->cap = cap;
    return DSPY_OK;
}

/* Write `elem` at index i and tell it so. */
static void place(struct dspy__heap *h, size_t i, const void *elem)
{
    void *at = dspy__heap_at(h, i);
    memcpy(at, elem, h->type->size);
    if (h->type->moved)
        h->type->moved(at, i);
}

/* Put `elem` (a copy held outside the array) into the hole at i, moving it up. */
static size_t sift_up(struct dspy__heap *h, size_t i, const void *elem)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!h->type->before(elem, dspy__heap_at(h, parent)))
            break;
        place(h, i, dspy__heap_at(h, parent));
        i = parent;
    }
    place(h, i, elem);
    return i;
}

/* Put `elem` into the hole at i, moving it down. */
static void sift_down(struct dspy__heap *h, size_t i, const void *elem)
{
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && h->type->before(dspy__heap_at(h, c + 1), dspy__heap_at(h, c)))
            c++;
        if (!h->type->before(dspy__heap_at(h, c), elem))
            break;
        place(h, i, dspy__heap_at(h, c));
        i = c;
    }
    place(h, i, elem);
}

/* Re-seat `elem` at the hole i, up or down as its key needs. */
static void reseat(struct dspy__heap *h, size_t i, const void *elem)
{
    if (i > 0 && h->type->before(elem, dspy__heap_at(h, (i - 1) / 2)))
        sift_up(h, i, elem);
    else
        sift_down(h, i, elem);
}

dspy_status dspy__heap_push(struct dspy__heap *h, const void *elem)
{
    dspy_status rc = dspy__heap_reserve(h, h->n + 1);
    if (rc)
        return rc;
    unsigned char tmp[DSPY__HEAP_ELEM_MAX];
    memcpy(tmp, elem, h->type->size); /* elem may point into the heap */
    sift_up(h, h->n++, tmp);
    return DSPY_OK;
}

void dspy__heap_remove(struct dspy__heap *h, size_t i, void *out)
{
    assert(i < h->n);
    unsigned char gone[DSPY__HEAP_ELEM_MAX], last[DSPY__HEAP_ELEM_MAX];
    memcpy(gone, dspy__heap_at(h, i), h->type->size);
    h->n--;
    if (i < h->n) {
        memcpy(last, dspy__heap_at(h, h->n), h->type->size);
        reseat(h, i, last);
    }
    if (h->type->moved)
        h->type->moved(gone, SIZE_MAX);
    if (out)
        memcpy(out, gone, h->type->size);
}

bool dspy__heap_pop(struct dspy__heap *h, void *out)
{
    if (!h->n)
        return false;
    dspy__heap_remove(h, 0, out);
    return true;
}

void dspy__heap_update(struct dspy__heap *h, size_t i)
{
    assert(i < h->n);
    unsigned char tmp[DSPY__HEAP_ELEM_MAX];
    memcpy(tmp, dspy__heap_at(h, i), h->type->size);
    reseat(h, i, tmp);
}

void dspy__heap_replace_top(struct dspy__heap *h, const void *elem)
{
    assert(h->n > 0);
    unsigned char tmp[DSPY__HEAP_ELEM_MAX];
    memcpy(tmp, elem, h->type->size);
    if (h->type->moved)
        h->type->moved(dspy__heap_at(h, 0), SIZE_MAX);
    sift_down(h, 0, tmp);
}

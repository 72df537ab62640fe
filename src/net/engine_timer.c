/* Timers of the HTTP client engine (net layer): the base heap of intrusive timers that
 * know their index, so re-arming and cancelling are O(log n). Retry waits, deadlines and
 * rate-limit wake-ups all live here; only the loop thread touches it. */
#include <assert.h>
#include <stdint.h>

#include "net/engine_int.h"

static bool due_before(const void *a, const void *b)
{
    const struct dspy__engine_timer *x = *(struct dspy__engine_timer *const *)a;
    const struct dspy__engine_timer *y = *(struct dspy__engine_timer *const *)b;
    return x->due_ns < y->due_ns;
}

static void timer_moved(void *elem, size_t idx)
{
    (*(struct dspy__engine_timer **)elem)->idx = idx;
}

static const struct dspy__heap_type timer_heap = {
    .size = sizeof(struct dspy__engine_timer *),
    .before = due_before,
    .moved = timer_moved,
};

void dspy__engine_timer_init(struct dspy__engine_timer *t, dspy__engine_timer_fn fire)
{
    t->due_ns = 0;
    t->idx = SIZE_MAX;
    t->fire = fire;
}

void dspy__engine_timers_init(struct dspy__engine_timers *h)
{
    dspy__heap_init(&h->heap, &timer_heap);
}

void dspy__engine_timers_release(struct dspy__engine_timers *h)
{
    dspy__heap_release(&h->heap); /* disarms what is left */
}

dspy_status dspy__engine_timers_reserve(struct dspy__engine_timers *h, size_t n)
{
    return dspy__heap_reserve(&h->heap, n);
}

void dspy__engine_timer_disarm(struct dspy__engine_timers *h, struct dspy__engine_timer *t)
{
    if (t->idx != SIZE_MAX)
        dspy__heap_remove(&h->heap, t->idx, NULL);
}

void dspy__engine_timer_arm(struct dspy__engine_timers *h, struct dspy__engine_timer *t,
                            uint64_t due_ns)
{
    t->due_ns = due_ns;
    if (t->idx != SIZE_MAX) {
        dspy__heap_update(&h->heap, t->idx);
        return;
    }
    assert(dspy__heap_len(&h->heap) < h->heap.cap);
    dspy_status rc = dspy__heap_push(&h->heap, &t); /* reserved: cannot fail */
    assert(rc == DSPY_OK);
    (void)rc;
}

uint64_t dspy__engine_timers_next(const struct dspy__engine_timers *h)
{
    struct dspy__engine_timer **top = dspy__heap_top(&h->heap);
    return top ? (*top)->due_ns : UINT64_MAX;
}

struct dspy__engine_timer *dspy__engine_timers_pop_due(struct dspy__engine_timers *h,
                                                       uint64_t now_ns)
{
    struct dspy__engine_timer **top = dspy__heap_top(&h->heap), *t;
    if (!top || (*top)->due_ns > now_ns)
        return NULL;
    t = *top;
    dspy__heap_pop(&h->heap, NULL);
    return t;
}

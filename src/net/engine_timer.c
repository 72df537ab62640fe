/* Timer heap of the HTTP client engine (net layer): a binary min-heap of intrusive timers
 * that know their index, so re-arming and cancelling are O(log n). Retry waits, deadlines
 * and rate-limit wake-ups all live here; only the loop thread touches it. */
#include <assert.h>

#include "net/engine_int.h"

void dspy__engine_timer_init(struct dspy__engine_timer *t, dspy__engine_timer_fn fire)
{
    t->due_ns = 0;
    t->idx = SIZE_MAX;
    t->fire = fire;
}

void dspy__engine_timers_init(struct dspy__engine_timers *h)
{
    h->v = NULL;
    h->n = h->cap = 0;
}

void dspy__engine_timers_release(struct dspy__engine_timers *h)
{
    for (size_t i = 0; i < h->n; i++)
        h->v[i]->idx = SIZE_MAX;
    dspy_free(h->v);
    dspy__engine_timers_init(h);
}

dspy_status dspy__engine_timers_reserve(struct dspy__engine_timers *h, size_t n)
{
    if (n <= h->cap)
        return DSPY_OK;
    size_t cap = h->cap ? h->cap : 64;
    while (cap < n)
        cap *= 2;
    struct dspy__engine_timer **v = dspy_realloc(h->v, cap * sizeof(*v));
    if (!v)
        return DSPY_ENOMEM;
    h->v = v;
    h->cap = cap;
    return DSPY_OK;
}

static void place(struct dspy__engine_timers *h, size_t i, struct dspy__engine_timer *t)
{
    h->v[i] = t;
    t->idx = i;
}

static void sift_up(struct dspy__engine_timers *h, size_t i)
{
    struct dspy__engine_timer *t = h->v[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->v[parent]->due_ns <= t->due_ns)
            break;
        place(h, i, h->v[parent]);
        i = parent;
    }
    place(h, i, t);
}

static void sift_down(struct dspy__engine_timers *h, size_t i)
{
    struct dspy__engine_timer *t = h->v[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && h->v[c + 1]->due_ns < h->v[c]->due_ns)
            c++;
        if (h->v[c]->due_ns >= t->due_ns)
            break;
        place(h, i, h->v[c]);
        i = c;
    }
    place(h, i, t);
}

void dspy__engine_timer_disarm(struct dspy__engine_timers *h, struct dspy__engine_timer *t)
{
    size_t i = t->idx;
    if (i == SIZE_MAX)
        return;
    t->idx = SIZE_MAX;
    struct dspy__engine_timer *last = h->v[--h->n];
    if (last == t)
        return;
    place(h, i, last);
    if (i > 0 && h->v[(i - 1) / 2]->due_ns > last->due_ns)
        sift_up(h, i);
    else
        sift_down(h, i);
}

void dspy__engine_timer_arm(struct dspy__engine_timers *h, struct dspy__engine_timer *t,
                            uint64_t due_ns)
{
    dspy__engine_timer_disarm(h, t);
    assert(h->n < h->cap);
    t->due_ns = due_ns;
    place(h, h->n++, t);
    sift_up(h, t->idx);
}

uint64_t dspy__engine_timers_next(const struct dspy__engine_timers *h)
{
    return h->n ? h->v[0]->due_ns : UINT64_MAX;
}

struct dspy__engine_timer *dspy__engine_timers_pop_due(struct dspy__engine_timers *h,
                                                       uint64_t now_ns)
{
    if (!h->n || h->v[0]->due_ns > now_ns)
        return NULL;
    struct dspy__engine_timer *t = h->v[0];
    dspy__engine_timer_disarm(h, t);
    return t;
}

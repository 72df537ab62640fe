/* Timer heap and timer thread of the HTTP server (net layer): the base heap ordered by
 * (due time, insertion order), and one thread that runs entries as they fall due, so
 * thousands of delayed answers cost one sleeping thread, not one each. */
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "base/clock.h"
#include "net/server_int.h"

static bool entry_before(const void *a, const void *b)
{
    const struct dspy__timer_entry *x = a, *y = b;
    return x->due_ns < y->due_ns || (x->due_ns == y->due_ns && x->seq < y->seq);
}

static const struct dspy__heap_type entry_heap = {
    .size = sizeof(struct dspy__timer_entry),
    .before = entry_before,
};

void dspy__timerheap_init(struct dspy__timerheap *h)
{
    dspy__heap_init(&h->heap, &entry_heap);
    h->next_seq = 0;
}

void dspy__timerheap_release(struct dspy__timerheap *h)
{
    dspy__heap_release(&h->heap);
    h->next_seq = 0;
}

dspy_status dspy__timerheap_push(struct dspy__timerheap *h, uint64_t due_ns, dspy__timer_fn fn,
                                 void *arg)
{
    struct dspy__timer_entry e = { due_ns, h->next_seq, fn, arg };
    dspy_status rc = dspy__heap_push(&h->heap, &e);
    if (!rc)
        h->next_seq++;
    return rc;
}

bool dspy__timerheap_peek(const struct dspy__timerheap *h, struct dspy__timer_entry *out)
{
    const struct dspy__timer_entry *top = dspy__heap_top(&h->heap);
    if (!top)
        return false;
    *out = *top;
    return true;
}

bool dspy__timerheap_pop(struct dspy__timerheap *h, struct dspy__timer_entry *out)
{
    return dspy__heap_pop(&h->heap, out);
}

/* ---- The thread ---- */

dspy_status dspy__timer_init(struct dspy__timer *t)
{
    pthread_condattr_t ca;
    memset(t, 0, sizeof(*t));
    dspy__timerheap_init(&t->heap);
    if (pthread_mutex_init(&t->lock, NULL))
        return DSPY_ENOMEM;
    if (pthread_condattr_init(&ca))
        goto fail_mutex;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_cond_init(&t->cond, &ca)) {
        pthread_condattr_destroy(&ca);
        goto fail_mutex;
    }
    pthread_condattr_destroy(&ca);
    return DSPY_OK;
fail_mutex:
    pthread_mutex_destroy(&t->lock);
    return DSPY_ENOMEM;
}

/* Run due entries in batches outside the lock, so a callback may add timers. */
static void *timer_main(void *arg)
{
    struct dspy__timer *t = arg;
    struct dspy__timer_entry batch[256];
    /* Delayed answers leave when due, not up to the default 50 us later. */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);

    pthread_mutex_lock(&t->lock);
    while (!t->stop) {
        struct dspy__timer_entry top;
        if (!dspy__timerheap_peek(&t->heap, &top)) {
            pthread_cond_wait(&t->cond, &t->lock);
            continue;
        }
        uint64_t now = dspy__now_ns();
        if (top.due_ns > now) {
            struct timespec ts = { (time_t)(top.due_ns / 1000000000u),
                                   (long)(top.due_ns % 1000000000u) };
            pthread_cond_timedwait(&t->cond, &t->lock, &ts);
            continue;
        }
        size_t n = 0;
        while (n < sizeof(batch) / sizeof(batch[0]) && dspy__timerheap_peek(&t->heap, &top) &&
               top.due_ns <= now)
            dspy__timerheap_pop(&t->heap, &batch[n++]);
        pthread_mutex_unlock(&t->lock);
        for (size_t i = 0; i < n; i++)
            batch[i].fn(batch[i].arg);
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

dspy_status dspy__timer_start(struct dspy__timer *t)
{
    if (pthread_create(&t->thread, NULL, timer_main, t))
        return DSPY_ENOMEM;
    t->running = true;
    return DSPY_OK;
}

dspy_status dspy__timer_add(struct dspy__timer *t, uint64_t due_ns, dspy__timer_fn fn, void *arg)
{
    struct dspy__timer_entry top;
    pthread_mutex_lock(&t->lock);
    bool had = dspy__timerheap_peek(&t->heap, &top);
    dspy_status rc = dspy__timerheap_push(&t->heap, due_ns, fn, arg);
    /* Wake the thread only when its sleep would now end too late. */
    if (rc == DSPY_OK && (!had || due_ns < top.due_ns))
        pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    return rc;
}

void dspy__timer_stop(struct dspy__timer *t)
{
    if (!t->running)
        return;
    pthread_mutex_lock(&t->lock);
    t->stop = true;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    t->running = false;
}

void dspy__timer_release(struct dspy__timer *t)
{
    dspy__timer_stop(t);
    dspy__timerheap_release(&t->heap);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
}

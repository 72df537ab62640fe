/* Rate limiter (net layer): two lazily refilled token buckets (requests, LM tokens), a
 * concurrency count and an intrusive FIFO of waiters. A request whose token estimate
 * exceeds the bucket depth goes when the bucket is full and leaves it in debt, so large
 * requests are slowed, never starved. */
#include <math.h>
#include <stdatomic.h>

#include "net/ratelimit.h"

/* Float slack so that a wake-up computed for the exact refill instant is not missed by
 * rounding. */
#define LEVEL_EPS 1e-9

struct bucket {
    double rate;  /* units per ns; 0 = unlimited */
    double depth; /* most units the bucket holds */
    double level; /* units available now; may go negative (debt) */
};

struct dspy__ratelimit {
    struct bucket req;
    struct bucket tok;
    uint64_t last_ns;         /* time of the last refill */
    uint32_t max_concurrency; /* 0 = unlimited */
    uint32_t in_flight;       /* permits held */
    size_t max_waiting;
    _Atomic size_t admitted; /* admitted and not yet granted; any thread */
    _Atomic int64_t adjust;  /* token refunds (+) and charges (-) not yet applied */
    struct dspy__ratelimit_waiter *head, *tail;
    size_t queued;
};

static void bucket_init(struct bucket *b, double per_minute, double burst_s)
{
    b->rate = per_minute > 0 ? per_minute / 60e9 : 0;
    b->depth = per_minute > 0 ? per_minute / 60.0 * burst_s : 0;
    if (b->rate > 0 && b->depth < 1)
        b->depth = 1;
    b->level = b->depth;
}

struct dspy__ratelimit *dspy__ratelimit_new(const struct dspy__ratelimit_options *opts,
                                            uint64_t now_ns)
{
    if (opts->requests_per_minute < 0 || opts->tokens_per_minute < 0 || opts->burst_s < 0)
        return NULL;
    struct dspy__ratelimit *rl = dspy_calloc(1, sizeof(*rl));
    if (!rl)
        return NULL;
    double burst = opts->burst_s > 0 ? opts->burst_s : 1.0;
    bucket_init(&rl->req, opts->requests_per_minute, burst);
    bucket_init(&rl->tok, opts->tokens_per_minute, burst);
    rl->last_ns = now_ns;
    rl->max_concurrency = opts->max_concurrency;
    rl->max_waiting = opts->max_waiting ? opts->max_waiting : DSPY__RATELIMIT_DEFAULT_MAX_WAITING;
    atomic_init(&rl->admitted, 0);
    atomic_init(&rl->adjust, 0);
    return rl;
}

void dspy__ratelimit_free(struct dspy__ratelimit *rl)
{
    dspy_free(rl);
}

dspy_status dspy__ratelimit_admit(struct dspy__ratelimit *rl, bool force)
{
    size_t cur = atomic_load_explicit(&rl->admitted, memory_order_relaxed);
    do {
        if (!force && cur >= rl->max_waiting)
            return DSPY_EBUSY;
    } while (!atomic_compare_exchange_weak_explicit(&rl->admitted, &cur, cur + 1,
                                                    memory_order_relaxed, memory_order_relaxed));
    return DSPY_OK;
}

void dspy__ratelimit_leave(struct dspy__ratelimit *rl)
{
    atomic_fetch_sub_explicit(&rl->admitted, 1, memory_order_relaxed);
}

size_t dspy__ratelimit_waiting(const struct dspy__ratelimit *rl)
{
    return atomic_load_explicit(&rl->admitted, memory_order_relaxed);
}

static void refill(struct dspy__ratelimit *rl, uint64_t now_ns)
{
    if (now_ns > rl->last_ns) {
        double dt = (double)(now_ns - rl->last_ns);
        struct bucket *bs[2] = { &rl->req, &rl->tok };
        for (int i = 0; i < 2; i++) {
            if (bs[i]->rate > 0) {
                bs[i]->level += dt * bs[i]->rate;
                if (bs[i]->level > bs[i]->depth)
                    bs[i]->level = bs[i]->depth;
            }
        }
        rl->last_ns = now_ns;
    }
    int64_t adj = atomic_exchange_explicit(&rl->adjust, 0, memory_order_relaxed);
    if (adj && rl->tok.rate > 0) {
        rl->tok.level += (double)adj;
        if (rl->tok.level > rl->tok.depth)
            rl->tok.level = rl->tok.depth;
    }
}

static double tokens_needed(const struct dspy__ratelimit *rl, uint64_t tokens)
{
    double need = (double)tokens;
    return need > rl->tok.depth ? rl->tok.depth : need;
}

static bool can_go(const struct dspy__ratelimit *rl, uint64_t tokens)
{
    if (rl->max_concurrency && rl->in_flight >= rl->max_concurrency)
        return false;
    if (rl->req.rate > 0 && rl->req.level < 1 - LEVEL_EPS)
        return false;
    if (rl->tok.rate > 0 && rl->tok.level < tokens_needed(rl, tokens) - LEVEL_EPS)
        return false;
    return true;
}

static void charge(struct dspy__ratelimit *rl, uint64_t tokens)
{
    if (rl->req.rate > 0)
        rl->req.level -= 1;
    if (rl->tok.rate > 0)
        rl->tok.level -= (double)tokens;
    rl->in_flight++;
}

bool dspy__ratelimit_try_acquire(struct dspy__ratelimit *rl, uint64_t now_ns, uint64_t tokens)
{
    if (rl->head)
        return false;
    refill(rl, now_ns);
    if (!can_go(rl, tokens))
        return false;
    charge(rl, tokens);
    return true;
}

void dspy__ratelimit_enqueue(struct dspy__ratelimit *rl, struct dspy__ratelimit_waiter *w,
                             uint64_t now_ns)
{
    w->since_ns = now_ns;
    w->next = NULL;
    w->prev = rl->tail;
    if (rl->tail)
        rl->tail->next = w;
    else
        rl->head = w;
    rl->tail = w;
    w->queued = true;
    rl->queued++;
}

void dspy__ratelimit_remove(struct dspy__ratelimit *rl, struct dspy__ratelimit_waiter *w)
{
    if (!w->queued)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        rl->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        rl->tail = w->prev;
    w->prev = w->next = NULL;
    w->queued = false;
    rl->queued--;
}

struct dspy__ratelimit_waiter *dspy__ratelimit_grant(struct dspy__ratelimit *rl, uint64_t now_ns)
{
    struct dspy__ratelimit_waiter *w = rl->head;
    if (!w)
        return NULL;
    refill(rl, now_ns);
    if (!can_go(rl, w->tokens))
        return NULL;
    charge(rl, w->tokens);
    dspy__ratelimit_remove(rl, w);
    return w;
}

/* ns until `b` holds `need` units, at its refill rate. */
static double wait_for(const struct bucket *b, double need)
{
    if (b->rate <= 0 || b->level >= need - LEVEL_EPS)
        return 0;
    return (need - b->level) / b->rate;
}

uint64_t dspy__ratelimit_next_ns(struct dspy__ratelimit *rl, uint64_t now_ns)
{
    struct dspy__ratelimit_waiter *w = rl->head;
    if (!w)
        return UINT64_MAX;
    if (rl->max_concurrency && rl->in_flight >= rl->max_concurrency)
        return UINT64_MAX;
    refill(rl, now_ns);
    double a = wait_for(&rl->req, 1);
    double b = wait_for(&rl->tok, tokens_needed(rl, w->tokens));
    double dt = a > b ? a : b;
    if (dt > 9e18)
        return UINT64_MAX;
    return now_ns + (uint64_t)ceil(dt);
}

void dspy__ratelimit_release(struct dspy__ratelimit *rl)
{
    if (rl->in_flight)
        rl->in_flight--;
}

void dspy__ratelimit_reconcile(struct dspy__ratelimit *rl, uint64_t estimated, uint64_t actual)
{
    int64_t diff = (int64_t)estimated - (int64_t)actual;
    if (diff)
        atomic_fetch_add_explicit(&rl->adjust, diff, memory_order_relaxed);
}

uint64_t dspy__ratelimit_estimate_tokens(size_t prompt_bytes, uint64_t max_output_tokens)
{
    return (uint64_t)(prompt_bytes + 3) / 4 + max_output_tokens;
}

void dspy__ratelimit_get_state(struct dspy__ratelimit *rl, uint64_t now_ns,
                               struct dspy__ratelimit_state *st)
{
    refill(rl, now_ns);
    st->request_level = rl->req.level;
    st->token_level = rl->tok.level;
    st->in_flight = rl->in_flight;
    st->queued = rl->queued;
}

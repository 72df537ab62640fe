/* Rate limiter for one key, e.g. one endpoint+model (net layer): token buckets for
 * requests/minute and tokens/minute, a maximum concurrency, and a FIFO of waiters that are
 * granted capacity in order as it frees up. Time is passed in, so the limiter has no clock
 * or thread of its own; the engine drives it from its loop thread with timers.
 *
 * Threading: the grant side (try_acquire, enqueue, grant, remove, next_ns, release) belongs
 * to one thread, the engine's loop. admit/leave (the bounded wait budget) and reconcile
 * are atomic and safe from any thread. */
#ifndef DSPY_NET_RATELIMIT_H
#define DSPY_NET_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dspyc/common.h>

struct dspy__ratelimit;

struct dspy__ratelimit_options {
    double requests_per_minute; /* 0 = no request limit */
    double tokens_per_minute;   /* 0 = no token limit */
    double burst_s;             /* bucket depth, in seconds of refill; 0 = 1 s */
    uint32_t max_concurrency;   /* requests holding a permit at once; 0 = no limit */
    size_t max_waiting;         /* requests admitted and not yet granted; beyond: DSPY_EBUSY.
                                 * 0 = DSPY__RATELIMIT_DEFAULT_MAX_WAITING */
};

#define DSPY__RATELIMIT_DEFAULT_MAX_WAITING 10000 /* when max_waiting is 0 */
#define DSPY__RATELIMIT_OPTIONS_INIT \
    {                                \
        .requests_per_minute = 0     \
    }

/* A request waiting for capacity: embedded in the caller's request object, linked into the
 * limiter's FIFO while it waits. */
struct dspy__ratelimit_waiter {
    struct dspy__ratelimit_waiter *prev, *next;
    uint64_t tokens;   /* tokens this request is expected to use */
    uint64_t since_ns; /* when it started waiting */
    bool queued;       /* linked into the FIFO */
};

/* `now_ns` starts the buckets full. NULL on failure. */
struct dspy__ratelimit *dspy__ratelimit_new(const struct dspy__ratelimit_options *opts,
                                            uint64_t now_ns);
void dspy__ratelimit_free(struct dspy__ratelimit *rl);

/* Count one request into the wait budget. DSPY_EBUSY when max_waiting requests are already
 * admitted and not yet granted (unless `force`: a retry of a request already accepted must
 * not be turned away). Every admit is matched by one leave: the engine calls it when the
 * request is granted or leaves the queue. Any thread. */
dspy_status dspy__ratelimit_admit(struct dspy__ratelimit *rl, bool force);
void dspy__ratelimit_leave(struct dspy__ratelimit *rl);
size_t dspy__ratelimit_waiting(const struct dspy__ratelimit *rl);

/* Take a permit now for a request of `tokens` if nobody waits ahead and there is capacity.
 * Loop thread. */
bool dspy__ratelimit_try_acquire(struct dspy__ratelimit *rl, uint64_t now_ns, uint64_t tokens);
/* Queue `w` (tokens set by the caller) at the back of the FIFO. Loop thread. */
void dspy__ratelimit_enqueue(struct dspy__ratelimit *rl, struct dspy__ratelimit_waiter *w,
                             uint64_t now_ns);
/* Take `w` out of the FIFO without granting it (cancelled, deadline passed). */
void dspy__ratelimit_remove(struct dspy__ratelimit *rl, struct dspy__ratelimit_waiter *w);
/* Grant the head of the FIFO a permit if capacity allows: it is unlinked and returned;
 * NULL when nobody waits or the head must wait longer. Call until NULL. Loop thread. */
struct dspy__ratelimit_waiter *dspy__ratelimit_grant(struct dspy__ratelimit *rl, uint64_t now_ns);
/* When the head of the FIFO can next be granted, if time alone is what it waits for:
 * an absolute ns time, or UINT64_MAX when nobody waits or a permit must be released first. */
uint64_t dspy__ratelimit_next_ns(struct dspy__ratelimit *rl, uint64_t now_ns);
/* A request holding a permit finished (one attempt of it): frees a concurrency slot. */
void dspy__ratelimit_release(struct dspy__ratelimit *rl);

/* Correct the token bucket once the real usage of a request is known (`usage.total_tokens`
 * of an OpenAI response): the difference to the estimate is charged or refunded. Any
 * thread; applied by the loop at its next grant. */
void dspy__ratelimit_reconcile(struct dspy__ratelimit *rl, uint64_t estimated, uint64_t actual);

/* A pre-estimate of the tokens a chat request uses: prompt bytes / 4 (OpenAI's rule of
 * thumb for English) plus the output budget (max_tokens; 0 if unknown). */
uint64_t dspy__ratelimit_estimate_tokens(size_t prompt_bytes, uint64_t max_output_tokens);

/* Snapshot for tests and stats. Loop thread. */
struct dspy__ratelimit_state {
    double request_level; /* requests that could start now (bucket level) */
    double token_level;   /* tokens that could be spent now (negative: in debt) */
    uint32_t in_flight;   /* permits held */
    size_t queued;        /* waiters in the FIFO */
};
void dspy__ratelimit_get_state(struct dspy__ratelimit *rl, uint64_t now_ns,
                               struct dspy__ratelimit_state *st);

#endif

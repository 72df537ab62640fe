/* Retry policy (net layer): which outcomes of an HTTP attempt are worth another try, and
 * how long to wait first: exponential backoff with full jitter, or the server's Retry-After
 * on 429/503. Pure functions over a caller-held random state; the engine applies them with
 * timers on its loop thread. */
#ifndef DSPY_NET_RETRY_H
#define DSPY_NET_RETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <dspyc/common.h>

struct dspy__retry_policy {
    uint32_t max_attempts;       /* attempts in all, the first included; 1 = never retry */
    uint64_t base_ns;            /* backoff before retry n: uniform in
                                   * [0, min(cap_ns, base_ns * 2^(n-1))] */
    uint64_t cap_ns;             /* longest backoff */
    uint64_t max_retry_after_ns; /* a longer Retry-After is not waited out: give up instead */
    uint64_t deadline_ns;        /* whole call, from submit, waits included; 0 = none */
};

/* OpenAI's client defaults to 2 retries with 0.5 s .. 8 s backoff; we allow a few more
 * because a rate-limited batch should slow down, not fail. */
#define DSPY__RETRY_POLICY_INIT                                              \
    {                                                                        \
        .max_attempts = 5, .base_ns = 500000000ull, .cap_ns = 8000000000ull, \
        .max_retry_after_ns = 60000000000ull                                 \
    }

/* Whether an attempt outcome may succeed when repeated. `outcome` is the HTTP status
 * (100..599) when a response arrived, else the negative dspy_status of the failure.
 * Retryable: 408, 429, 5xx except 501/505, DSPY_ELM_NETWORK, DSPY_ELM_TIMEOUT, DSPY_ERESOURCE
 * (out of sockets). Not: other
 * 4xx (the request itself is wrong), DSPY_ETOOBIG, DSPY_ECANCELED, DSPY_EINVAL, ... */
bool dspy__retry_is_retryable(int outcome);

/* Delay in ns before attempt `attempt + 1`, after `attempt` attempts (>= 1) have been made
 * and the last one ended in `outcome` (see above); -1 = do not retry (not retryable, out of
 * attempts, or a Retry-After longer than policy->max_retry_after_ns). `retry_after_ns` is
 * the server's Retry-After (-1 if none); it is honoured on 429 and 503 only, plus a jitter
 * of up to base_ns so that callers told the same instant do not return together.
 * `rng` is the caller's random state (any seed; updated). The per-call deadline is the
 * caller's to apply: it alone knows how much time has passed. Thread-safe. */
int64_t dspy__retry_next_delay(const struct dspy__retry_policy *policy, uint32_t attempt,
                               int outcome, int64_t retry_after_ns, uint64_t *rng);

/* Parse a Retry-After value: delta-seconds ("120", fractions accepted) or an HTTP-date
 * (IMF-fixdate, RFC 850 or asctime form) relative to `now` (wall clock, seconds since the
 * epoch). Returns ns (0 for a date in the past) or -1 when the value is not valid. */
int64_t dspy__retry_parse_after(const char *value, size_t len, time_t now);

/* Parse the non-standard `retry-after-ms` header (OpenAI, Azure): milliseconds. ns or -1. */
int64_t dspy__retry_parse_after_ms(const char *value, size_t len);

/* Next value of a splitmix64 generator; `state` may hold any seed. */
uint64_t dspy__retry_rand(uint64_t *state);

#endif

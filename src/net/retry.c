/* Retry policy (net layer): retryable outcomes, full-jitter backoff after the AWS
 * architecture blog's "Exponential Backoff And Jitter", and Retry-After parsing (RFC 9110
 * section 10.2.3: delta-seconds or an HTTP-date in any of its three historic forms). */
#include <string.h>

#include "net/retry.h"

#define NS_PER_S 1000000000ll

uint64_t dspy__retry_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, bound]. */
static uint64_t uniform(uint64_t *rng, uint64_t bound)
{
    if (bound == UINT64_MAX)
        return dspy__retry_rand(rng);
    return dspy__retry_rand(rng) % (bound + 1);
}

bool dspy__retry_is_retryable(int outcome)
{
    if (outcome < 0)
        return outcome == DSPY_ELM_NETWORK || outcome == DSPY_ELM_TIMEOUT ||
               outcome == DSPY_ERESOURCE; /* sockets close: a later attempt may get one */
    if (outcome == 408 || outcome == 429)
        return true;
    /* 501 Not Implemented and 505 Version Not Supported will not change on a retry. */
    return outcome >= 500 && outcome <= 599 && outcome != 501 && outcome != 505;
}

int64_t dspy__retry_next_delay(const struct dspy__retry_policy *policy, uint32_t attempt,
                               int outcome, int64_t retry_after_ns, uint64_t *rng)
{
    if (!dspy__retry_is_retryable(outcome) || attempt == 0 || attempt >= policy->max_attempts)
        return -1;
    if (retry_after_ns >= 0 && (outcome == 429 || outcome == 503)) {
        if ((uint64_t)retry_after_ns > policy->max_retry_after_ns)
            return -1;
        uint64_t jitter = uniform(rng, policy->base_ns);
        return retry_after_ns + (int64_t)(jitter > (uint64_t)INT64_MAX / 2 ? 0 : jitter);
    }
    uint64_t ceiling = policy->base_ns;
    for (uint32_t i = 1; i < attempt && ceiling < policy->cap_ns; i++)
        ceiling = ceiling > UINT64_MAX / 2 ? UINT64_MAX : ceiling * 2;
    if (ceiling > policy->cap_ns)
        ceiling = policy->cap_ns;
    if (ceiling > (uint64_t)INT64_MAX)
        ceiling = (uint64_t)INT64_MAX;
    return (int64_t)uniform(rng, ceiling);
}

/* A cursor over the header value. */
struct cur {
    const char *p, *end;
};

static void skip_spaces(struct cur *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

static bool take_char(struct cur *c, char ch)
{
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* 1..max_digits decimal digits. */
static bool take_num(struct cur *c, int max_digits, long *out)
{
    long v = 0;
    int n = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9' && n < max_digits) {
        v = v * 10 + (*c->p - '0');
        c->p++;
        n++;
    }
    *out = v;
    return n > 0;
}

static size_t take_alpha(struct cur *c)
{
    size_t n = 0;
    while (c->p < c->end && ((*c->p >= 'A' && *c->p <= 'Z') || (*c->p >= 'a' && *c->p <= 'z'))) {
        c->p++;
        n++;
    }
    return n;
}

static bool take_month(struct cur *c, int *month)
{
    static const char names[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    if (c->end - c->p < 3)
        return false;
    for (int m = 0; m < 12; m++) {
        if (memcmp(c->p, names + 3 * m, 3) == 0) {
            *month = m + 1;
            c->p += 3;
            return true;
        }
    }
    return false;
}

static bool take_time(struct cur *c, long *h, long *mi, long *s)
{
    return take_num(c, 2, h) && take_char(c, ':') && take_num(c, 2, mi) && take_char(c, ':') &&
           take_num(c, 2, s) && *h < 24 && *mi < 60 && *s < 61;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static long days_from_civil(long y, int m, long d)
{
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool parse_date(struct cur *c, time_t *out)
{
    long day, year, h, mi, s;
    int month;
    if (take_alpha(c) < 3)
        return false;
    if (take_char(c, ',')) {
        skip_spaces(c);
        if (!take_num(c, 2, &day))
            return false;
        if (take_char(c, '-')) { /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
            if (!take_month(c, &month) || !take_char(c, '-') || !take_num(c, 4, &year))
                return false;
            if (year < 100)
                year += year < 70 ? 2000 : 1900;
        } else { /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
            skip_spaces(c);
            if (!take_month(c, &month))
                return false;
            skip_spaces(c);
            if (!take_num(c, 4, &year))
                return false;
        }
        skip_spaces(c);
        if (!take_time(c, &h, &mi, &s))
            return false;
        skip_spaces(c);
        if (c->end - c->p < 3 || memcmp(c->p, "GMT", 3) != 0)
            return false;
        c->p += 3;
    } else { /* asctime: Sun Nov  6 08:49:37 1994 */
        skip_spaces(c);
        if (!take_month(c, &month))
            return false;
        skip_spaces(c);
        if (!take_num(c, 2, &day))
            return false;
        skip_spaces(c);
        if (!take_time(c, &h, &mi, &s))
            return false;
        skip_spaces(c);
        if (!take_num(c, 4, &year))
            return false;
    }
    skip_spaces(c);
    if (c->p != c->end || day < 1 || day > 31)
        return false;
    long days = days_from_civil(year, month, day);
    *out = (time_t)(days * 86400 + h * 3600 + mi * 60 + s);
    return true;
}

int64_t dspy__retry_parse_after(const char *value, size_t len, time_t now)
{
    struct cur c = { value, value + len };
    skip_spaces(&c);
    while (c.end > c.p && (c.end[-1] == ' ' || c.end[-1] == '\t'))
        c.end--;
    if (c.p == c.end)
        return -1;
    if (*c.p >= '0' && *c.p <= '9') {
        long secs;
        if (!take_num(&c, 9, &secs))
            return -1;
        int64_t ns = (int64_t)secs * NS_PER_S;
        if (take_char(&c, '.')) {
            int64_t scale = NS_PER_S / 10;
            while (c.p < c.end && *c.p >= '0' && *c.p <= '9') {
                ns += (*c.p - '0') * scale;
                scale /= 10;
                c.p++;
            }
        }
        return c.p == c.end ? ns : -1;
    }
    time_t when;
    if (!parse_date(&c, &when))
        return -1;
    return when <= now ? 0 : (int64_t)(when - now) * NS_PER_S;
}

int64_t dspy__retry_parse_after_ms(const char *value, size_t len)
{
    struct cur c = { value, value + len };
    skip_spaces(&c);
    while (c.end > c.p && (c.end[-1] == ' ' || c.end[-1] == '\t'))
        c.end--;
    long ms;
    if (!take_num(&c, 12, &ms))
        return -1;
    int64_t ns = (int64_t)ms * 1000000;
    if (take_char(&c, '.')) { /* Azure sends fractional milliseconds */
        int64_t scale = 100000;
        while (c.p < c.end && *c.p >= '0' && *c.p <= '9') {
            ns += (*c.p - '0') * scale;
            scale /= 10;
            c.p++;
        }
    }
    return c.p == c.end ? ns : -1;
}

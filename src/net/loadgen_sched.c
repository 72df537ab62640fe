/* Arrival schedules of the load generator (net layer): seeded renewal processes (constant,
 * Poisson, gamma with burstiness) laid over a piecewise-linear rate profile by drawing gaps
 * in operational time (the integrated rate) and mapping them back to wall time exactly. */
#include <math.h>

#include <dspyc/loadgen.h>

#include "net/loadgen_int.h"

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t dspy__lg_splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void dspy__lg_rng_seed(uint64_t rng[4], uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        rng[i] = dspy__lg_splitmix(&seed);
}

/* xoshiro256**, then 53 bits to (0, 1]. */
double dspy__lg_uniform(uint64_t s[4])
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return ((double)(r >> 11) + 1.0) * (1.0 / 9007199254740992.0);
}

static double normal(uint64_t s[4])
{
    double u = dspy__lg_uniform(s), v = dspy__lg_uniform(s);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* Marsaglia and Tsang; shapes below 1 use the Gamma(k + 1) * U^(1/k) boost. */
static double gamma_unit(uint64_t s[4], double k)
{
    double boost = 1.0;
    if (k < 1.0) {
        boost = pow(dspy__lg_uniform(s), 1.0 / k);
        k += 1.0;
    }
    double d = k - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = normal(s), v = 1.0 + c * x;
        if (v <= 0)
            continue;
        v = v * v * v;
        double u = dspy__lg_uniform(s);
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v))
            return d * v * boost;
    }
}

double dspy__lg_exponential(uint64_t s[4])
{
    return -log(dspy__lg_uniform(s));
}

dspy_status dspy_schedule_init(struct dspy_schedule *s, const struct dspy_rate_stage *stages,
                               size_t n, enum dspy_arrival arrival, double burstiness,
                               uint64_t seed)
{
    if (!s || (!stages && n))
        return DSPY_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!(stages[i].duration_s >= 0) || !(stages[i].from_rps >= 0) || !(stages[i].to_rps >= 0))
            return DSPY_EINVAL;
    if (arrival == DSPY_ARRIVAL_GAMMA && !(burstiness > 0))
        return DSPY_EINVAL;
    s->stages = stages;
    s->nstages = n;
    s->arrival = arrival;
    s->burstiness = burstiness;
    s->seed = seed;
    dspy__lg_rng_seed(s->rng, seed);
    s->stage = 0;
    s->stage_t0 = 0;
    s->stage_l0 = 0;
    s->lambda = 0;
    s->last_t = 0;
    return DSPY_OK;
}

double dspy_schedule_duration(const struct dspy_schedule *s)
{
    double d = 0;
    for (size_t i = 0; i < s->nstages; i++)
        d += s->stages[i].duration_s;
    return d;
}

double dspy_schedule_rate_at(const struct dspy_schedule *s, double t_s)
{
    double t0 = 0;
    for (size_t i = 0; i < s->nstages; i++) {
        const struct dspy_rate_stage *st = &s->stages[i];
        if (t_s < t0 + st->duration_s) {
            double f = st->duration_s > 0 ? (t_s - t0) / st->duration_s : 0;
            return st->from_rps + (st->to_rps - st->from_rps) * f;
        }
        t0 += st->duration_s;
    }
    return 0;
}

/* Time into a stage at which its integrated rate reaches `dl` (0 < dl <= its integral). */
static double solve_stage(const struct dspy_rate_stage *st, double dl)
{
    double a = st->from_rps, slope = (st->to_rps - st->from_rps) / st->duration_s;
    if (fabs(slope) < 1e-12)
        return dl / a;
    double disc = a * a + 2.0 * slope * dl;
    if (disc < 0)
        disc = 0;
    double t = (-a + sqrt(disc)) / slope;
    return t < 0 ? 0 : (t > st->duration_s ? st->duration_s : t);
}

bool dspy_schedule_next(struct dspy_schedule *s, double *t_s)
{
    double x = 1.0;
    if (s->arrival == DSPY_ARRIVAL_POISSON)
        x = dspy__lg_exponential(s->rng);
    else if (s->arrival == DSPY_ARRIVAL_GAMMA)
        x = gamma_unit(s->rng, s->burstiness) / s->burstiness;
    double target = s->lambda + x;
    while (s->stage < s->nstages) {
        const struct dspy_rate_stage *st = &s->stages[s->stage];
        double area = 0.5 * (st->from_rps + st->to_rps) * st->duration_s;
        if (area > 0 && target <= s->stage_l0 + area) {
            double t = s->stage_t0 + solve_stage(st, target - s->stage_l0);
            if (t < s->last_t) /* rounding at stage edges: never go back in time */
                t = s->last_t;
            s->lambda = target;
            s->last_t = t;
            *t_s = t;
            return true;
        }
        s->stage_l0 += area;
        s->stage_t0 += st->duration_s;
        s->stage++;
    }
    return false;
}

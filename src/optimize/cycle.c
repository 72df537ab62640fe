/* The cycle timer (optimize layer): an optimization run measured against its target
 * duration, with iterations, rate, progress, ETA, a warning and an exceeded state; the
 * clock is injectable so tests never wait on the wall. */
#include <pthread.h>

#include <dspyc/optimize.h>

#include "base/clock.h"

struct dspy_cycle {
    struct dspy_cycle_options o;
    uint64_t start_ns;
    uint64_t iterations, planned; /* under lock */
    bool warned, exceeded;        /* under lock; sticky once set */
    pthread_mutex_t lock;
};

static uint64_t now_ns(const dspy_cycle *c)
{
    return c->o.clock ? c->o.clock(c->o.clock_userdata) : dspy__now_ns();
}

dspy_cycle *dspy_cycle_new(const struct dspy_cycle_options *opts)
{
    struct dspy_cycle_options d = DSPY_CYCLE_OPTIONS_INIT;
    const struct dspy_cycle_options *o = opts ? opts : &d;
    if (!(o->target_s > 0) || !(o->warn_at > 0) || o->warn_at > 1)
        return NULL;
    dspy_cycle *c = dspy_calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->o = *o;
    if (pthread_mutex_init(&c->lock, NULL)) {
        dspy_free(c);
        return NULL;
    }
    c->start_ns = now_ns(c);
    return c;
}

void dspy_cycle_free(dspy_cycle *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->lock);
    dspy_free(c);
}

void dspy_cycle_plan(dspy_cycle *c, uint64_t planned)
{
    pthread_mutex_lock(&c->lock);
    c->planned = planned;
    pthread_mutex_unlock(&c->lock);
}

void dspy_cycle_tick(dspy_cycle *c, uint64_t iterations)
{
    pthread_mutex_lock(&c->lock);
    c->iterations += iterations;
    pthread_mutex_unlock(&c->lock);
}

void dspy_cycle_status(dspy_cycle *c, struct dspy_cycle_status *st)
{
    uint64_t now = now_ns(c);
    pthread_mutex_lock(&c->lock);
    double elapsed = now > c->start_ns ? (double)(now - c->start_ns) / 1e9 : 0.0;
    if (elapsed >= c->o.warn_at * c->o.target_s)
        c->warned = true;
    if (elapsed > c->o.target_s)
        c->exceeded = c->warned = true;
    st->target_s = c->o.target_s;
    st->elapsed_s = elapsed;
    st->iterations = c->iterations;
    st->planned = c->planned;
    st->iterations_per_s = elapsed > 0 ? (double)c->iterations / elapsed : 0.0;
    st->progress = c->planned ? (double)(c->iterations < c->planned ? c->iterations : c->planned) /
                                    (double)c->planned
                              : 0.0;
    if (c->planned && c->iterations >= c->planned)
        st->eta_s = 0.0;
    else if (c->planned && st->iterations_per_s > 0)
        st->eta_s = (double)(c->planned - c->iterations) / st->iterations_per_s;
    else
        st->eta_s = -1.0;
    st->warned = c->warned;
    st->exceeded = c->exceeded;
    pthread_mutex_unlock(&c->lock);
}

bool dspy_cycle_should_stop(dspy_cycle *c)
{
    struct dspy_cycle_status st;
    dspy_cycle_status(c, &st);
    return c->o.stop_at_target && st.exceeded;
}

json_t *dspy_cycle_json(dspy_cycle *c)
{
    struct dspy_cycle_status st;
    dspy_cycle_status(c, &st);
    return json_pack("{s:f, s:f, s:I, s:I, s:f, s:f, s:f, s:b, s:b}", "target_s", st.target_s,
                     "elapsed_s", st.elapsed_s, "iterations", (json_int_t)st.iterations, "planned",
                     (json_int_t)st.planned, "iterations_per_s", st.iterations_per_s, "progress",
                     st.progress, "eta_s", st.eta_s, "warned", st.warned, "exceeded", st.exceeded);
}

/* `dspyc loadtest --program` (apps layer): runs a program file through the public program
 * API on a pool of threads, open loop (each thread takes the next intended time from one
 * shared seeded schedule, so waiting for a free thread counts in response time) or closed
 * loop (one thread per user), and measures per-program latency. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loadtest.h"
#include "util.h"

struct pool {
    struct lt_run *r;
    dspy_program *prog;
    dspy_lm *lm;
    json_t *inputs; /* array of input objects, used in turn */
    pthread_mutex_t lock;
    struct dspy_schedule sched; /* open loop, under lock */
    uint64_t next_seq;
    uint64_t end_ns;
    volatile const int *stop;
    struct dspy_loadgen_stats st; /* under lock */
};

struct worker_arg {
    struct pool *p;
    unsigned idx;
};

static void sleep_until(uint64_t t)
{
    uint64_t now = dspy_clock_ns();
    if (t <= now)
        return;
    struct timespec ts = { (time_t)((t - now) / 1000000000u), (long)((t - now) % 1000000000u) };
    nanosleep(&ts, NULL);
}

static enum dspy_loadgen_outcome outcome_of(dspy_status rc)
{
    switch (rc) {
    case DSPY_OK: return DSPY_LG_OK;
    case DSPY_ELM_TIMEOUT: return DSPY_LG_TIMEOUT;
    case DSPY_ELM_NETWORK: return DSPY_LG_CONNECT;
    case DSPY_ELM_AUTH:
    case DSPY_ELM_RATE_LIMIT:
    case DSPY_ELM_CONTEXT:
    case DSPY_ELM_BAD_REQUEST:
    case DSPY_ELM_SERVER: return DSPY_LG_HTTP;
    default: return DSPY_LG_MALFORMED;
    }
}

/* The next intended time and number, or false when the run is over. */
static bool next_arrival(struct pool *p, unsigned idx, uint64_t *seq, uint64_t *at,
                         uint64_t *last_done)
{
    const struct lt_opts *o = p->r->o;
    bool ok = false;
    pthread_mutex_lock(&p->lock);
    if ((p->stop && *p->stop) || (o->count && p->next_seq >= o->count))
        goto out;
    if (o->closed) {
        double think = o->think_s * (o->think_exp ? -log((rand() + 1.0) / (RAND_MAX + 2.0)) : 1);
        *at = *last_done ? *last_done + (uint64_t)(think * 1e9) : p->r->origin_ns;
        (void)idx;
    } else {
        double t;
        if (!dspy_schedule_next(&p->sched, &t))
            goto out;
        *at = p->r->origin_ns + (uint64_t)(t * 1e9);
    }
    if (*at >= p->end_ns)
        goto out;
    *seq = p->next_seq++;
    p->st.scheduled++;
    ok = true;
out:
    pthread_mutex_unlock(&p->lock);
    return ok;
}

static void *worker_main(void *arg)
{
    struct worker_arg *wa = arg;
    struct pool *p = wa->p;
    uint64_t seq, at, last_done = 0;
    while (next_arrival(p, wa->idx, &seq, &at, &last_done)) {
        sleep_until(at);
        json_t *in = json_array_get(p->inputs, seq % json_array_size(p->inputs)), *out = NULL;
        struct dspy_call_info info;
        struct dspy_error err;
        memset(&info, 0, sizeof(info));
        dspy_error_clear(&err);
        struct dspy_loadgen_result res;
        memset(&res, 0, sizeof(res));
        res.seq = seq;
        res.user = wa->idx;
        res.intended_ns = at;
        res.sent_ns = dspy_clock_ns();
        dspy_status rc = dspy_program_call(p->prog, p->lm, in, NULL, &out, &info, &err);
        res.done_ns = last_done = dspy_clock_ns();
        res.outcome = outcome_of(rc);
        res.status = rc == DSPY_OK ? 200 : err.http_status;
        res.usage_tokens = info.usage.completion_tokens;
        res.prompt_tokens = info.usage.prompt_tokens;
        json_decref(out);
        pthread_mutex_lock(&p->lock);
        p->st.sent++;
        p->st.completed++;
        if (res.sent_ns > p->st.issue_end_ns)
            p->st.issue_end_ns = res.sent_ns;
        pthread_mutex_unlock(&p->lock);
        lt_record(p->r, wa->idx, &res);
    }
    return NULL;
}

static json_t *make_inputs(const struct lt_opts *o, dspy_program *prog)
{
    if (o->prompts_file)
        return load_jsonl_objects(o->prompts_file);
    json_t *names = dspy_program_inputs(prog), *all = json_array();
    for (unsigned i = 0; i < o->ntemplates; i++) {
        json_t *rec = json_object();
        size_t k;
        json_t *nm;
        json_array_foreach(names, k, nm) {
            char q[96];
            snprintf(q, sizeof(q), "What is %u plus %u?", i * 7 % 100, i * 13 % 100);
            json_object_set_new(rec, json_string_value(nm), json_string(q));
        }
        json_array_append_new(all, rec);
    }
    json_decref(names);
    return all;
}

int lt_run_program(struct lt_run *r, volatile const int *stop)
{
    const struct lt_opts *o = r->o;
    struct pool p;
    struct dspy_error err;
    struct dspy_lm_options lo = DSPY_LM_OPTIONS_INIT;
    pthread_t *tids = NULL;
    struct worker_arg *args = NULL;
    unsigned n = r->nshards, started = 0;
    int ret = -1;
    memset(&p, 0, sizeof(p));
    p.r = r;
    p.stop = stop;
    pthread_mutex_init(&p.lock, NULL);
    dspy_error_clear(&err);
    if (dspy_program_load(o->program_file, &p.prog, &err)) {
        print_error("cannot load the program", &err);
        goto out;
    }
    lo.base_url = o->url;
    lo.model = o->model ? o->model : dspy_program_model(p.prog);
    if (!lo.model)
        lo.model = "dspyc-sim";
    lo.timeout_s = o->timeout_s;
    if (o->api_key_env)
        lo.api_key_env = o->api_key_env;
    if (dspy_lm_new(&lo, &p.lm, &err)) {
        print_error("cannot open the LM", &err);
        goto out;
    }
    if (!(p.inputs = make_inputs(o, p.prog)) || !json_array_size(p.inputs))
        goto out;
    if (!o->closed &&
        dspy_schedule_init(&p.sched, r->stages, r->nstages, o->arrival, o->burstiness, o->seed))
        goto out;
    p.end_ns = o->duration_s > 0 ? r->origin_ns + (uint64_t)(o->duration_s * 1e9) : UINT64_MAX;
    tids = calloc(n, sizeof(*tids));
    args = calloc(n, sizeof(*args));
    p.st.started_ns = r->origin_ns;
    for (; started < n; started++) {
        args[started].p = &p;
        args[started].idx = started;
        if (pthread_create(&tids[started], NULL, worker_main, &args[started]))
            break;
    }
    for (unsigned i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    p.st.ended_ns = dspy_clock_ns();
    r->gs = p.st;
    lt_finish(r);
    ret = 0;
out:
    free(tids);
    free(args);
    json_decref(p.inputs);
    dspy_lm_free(p.lm);
    dspy_program_free(p.prog);
    pthread_mutex_destroy(&p.lock);
    return ret;
}

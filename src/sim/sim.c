/* The simulator's lifecycle (sim layer): options checked and copied, the server created
 * with its routes, started, stopped and freed, and the counters read back. The behaviour
 * is in the other sim_*.c files. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/secret.h"
#include "base/status.h"
#include "sim_int.h"

static dspy_status bad_opt(struct dspy_error *err, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* DSPY_EINVAL with "field: message" and err->field set. */
static dspy_status bad_opt(struct dspy_error *err, const char *field, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    dspy__err(err, DSPY_EINVAL, "%s: %s", field, msg);
    dspy__err_field(err, field);
    return DSPY_EINVAL;
}

/* Each failed rule names its option in err->field. */
static dspy_status check(const struct dspy_sim_options *o, struct dspy_error *err)
{
    const double rates[] = { o->fail_429,  o->fail_500,       o->fail_503,     o->fail_timeout,
                             o->fail_drop, o->fail_malformed, o->fail_truncate };
    static const char *const rate_names[] = { "fail_429",     "fail_500",  "fail_503",
                                              "fail_timeout", "fail_drop", "fail_malformed",
                                              "fail_truncate" };
    double sum = 0;
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
        if (!(rates[i] >= 0 && rates[i] <= 1))
            return bad_opt(err, rate_names[i], "a rate from 0 to 1");
        sum += rates[i];
    }
    if (sum > 1.0 + 1e-9)
        return dspy__err(err, DSPY_EINVAL,
                         "the fault rates add up to %g; they must add up to at most 1", sum);
    const struct {
        const char *name;
        double v;
    } times[] = { { "ttft_ms", o->ttft_ms },
                  { "tpot_ms", o->tpot_ms },
                  { "retry_after_s", o->retry_after_s },
                  { "timeout_hold_ms", o->timeout_hold_ms } };
    for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++)
        if (!(times[i].v >= 0 && times[i].v < 1e12))
            return bad_opt(err, times[i].name, "must be from 0 to 1e12");
    if (!(o->latency_ms < 1e12))
        return bad_opt(err, "latency_ms", "must be below 1e12");
    if (!(o->jitter >= 0 && o->jitter <= 1))
        return bad_opt(err, "jitter", "must be from 0 to 1");
    if (o->queue_full_status != 429 && o->queue_full_status != 503)
        return bad_opt(err, "queue_full_status", "must be 429 or 503");
    if (o->embed_dim < 1 || o->embed_dim > 65536)
        return bad_opt(err, "embed_dim", "must be from 1 to 65536");
    if (o->embedder && *o->embedder && strcmp(o->embedder, "hash") && strcmp(o->embedder, "minilm"))
        return bad_opt(err, "embedder", "must be hash or minilm, not '%s'", o->embedder);
    if (o->port < 0 || o->port > 65535)
        return bad_opt(err, "port", "must be from 0 to 65535");
    if (o->reply_tokens > DSPY_SIM_MAX_REPLY_TOKENS)
        return bad_opt(err, "reply_tokens", "must be at most %d", DSPY_SIM_MAX_REPLY_TOKENS);
    if (o->max_body < 1024)
        return bad_opt(err, "max_body", "must be at least 1024 bytes");
    if (o->header_timeout_ms < 1 || o->header_timeout_ms > 3600000)
        return bad_opt(err, "header_timeout_ms", "must be from 1 to 3600000");
    if (o->body_timeout_ms < 1 || o->body_timeout_ms > 3600000)
        return bad_opt(err, "body_timeout_ms", "must be from 1 to 3600000");
    if (o->max_body_bytes_total && o->max_body_bytes_total < o->max_body)
        return bad_opt(err, "max_body_bytes_total", "must be at least max_body (%zu bytes)",
                       o->max_body);
    return DSPY_OK;
}

/* model_quality: "NAME=Q,NAME=Q" with Q in (0, 2]. */
static dspy_status parse_quality(struct dspy_sim *s, const char *spec, struct dspy_error *err)
{
    const char *p = spec;
    while (p && *p) {
        const char *end = strchr(p, ','), *eq = memchr(p, '=', end ? (size_t)(end - p) : strlen(p));
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char num[32], *stop;
        if (!eq || eq == p || (size_t)(eq - p) >= sizeof(s->quality[0].model) ||
            len - (size_t)(eq - p) - 1 >= sizeof(num) || s->nquality == DSPY_SIM_MAX_QUALITY)
            return bad_opt(err, "model_quality",
                           "'%.*s' is not NAME=Q (at most %d models, names under 128 bytes)",
                           (int)len, p, DSPY_SIM_MAX_QUALITY);
        memcpy(num, eq + 1, len - (size_t)(eq - p) - 1);
        num[len - (size_t)(eq - p) - 1] = 0;
        double q = strtod(num, &stop);
        if (!num[0] || *stop || !(q > 0 && q <= 2))
            return bad_opt(err, "model_quality", "the factor of '%.*s' must be a number in (0, 2]",
                           (int)(eq - p), p);
        memcpy(s->quality[s->nquality].model, p, (size_t)(eq - p));
        s->quality[s->nquality].model[eq - p] = 0;
        s->quality[s->nquality++].q = q;
        p = end ? end + 1 : NULL;
    }
    return DSPY_OK;
}

double dspy__sim_model_quality(const struct dspy_sim *s, const char *model)
{
    const char *slash = model ? strrchr(model, '/') : NULL;
    for (size_t i = 0; model && i < s->nquality; i++)
        if (!strcmp(s->quality[i].model, model) ||
            (slash && !strcmp(s->quality[i].model, slash + 1)))
            return s->quality[i].q;
    return 1.0;
}

static char *dup_opt(const char *s, bool *fail)
{
    char *d = s ? dspy_strdup(s) : NULL;
    if (s && !d)
        *fail = true;
    return d;
}

dspy_status dspy_sim_new(const struct dspy_sim_options *o, dspy_sim **out, struct dspy_error *err)
{
    bool fail = false;
    dspy_status rc = check(o, err);
    *out = NULL;
    if (rc)
        return rc;
    struct dspy_sim *s = dspy_calloc(1, sizeof(*s));
    if (!s)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    s->o = *o;
    s->bind = dup_opt(o->bind ? o->bind : "127.0.0.1", &fail);
    s->model = dup_opt(o->model ? o->model : "dspyc-sim", &fail);
    s->record_path = dup_opt(o->record_path, &fail);
    s->o.bind = s->bind;
    s->o.model = s->model;
    s->o.record_path = s->record_path;
    pthread_mutex_init(&s->record_lock, NULL);
    pthread_mutex_init(&s->qlock, NULL);
    if ((rc = parse_quality(s, o->model_quality, err)))
        goto fail;
    s->o.model_quality = NULL;                   /* parsed into s->quality */
    s->o.api_key_env = s->o.api_key_file = NULL; /* read once, here */
    if ((rc = dspy__secret_read("API key", o->api_key, o->api_key_env, o->api_key_file, &s->api_key,
                                err)))
        goto fail;
    s->o.api_key = s->api_key;
    if ((rc = dspy__sim_minilm_open(s, o, err)))
        goto fail;
    if (!fail && s->o.capacity && !(s->slots = dspy_calloc(s->o.capacity, sizeof(uint64_t))))
        fail = true;
    if (fail) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto fail;
    }
    struct dspy__srv_options so = DSPY__SRV_OPTIONS_INIT;
    so.bind = s->bind;
    so.port = s->o.port;
    so.threads = s->o.threads;
    so.max_body = s->o.max_body;
    so.header_timeout_ms = s->o.header_timeout_ms;
    so.body_timeout_ms = s->o.body_timeout_ms;
    so.max_connections = s->o.max_connections;
    so.max_connections_per_ip = s->o.max_connections_per_ip;
    so.max_body_bytes_total = s->o.max_body_bytes_total;
    so.on_status = dspy__sim_count;
    so.on_status_ud = s;
    if (s->record_path) {
        so.on_request = dspy__sim_record; /* the file is opened by dspy_sim_start */
        so.on_request_ud = s;
    }
    if (!(s->srv = dspy__srv_new(&so, err))) {
        rc = err && err->code ? err->code : DSPY_ENOMEM;
        goto fail;
    }
    if ((rc = dspy__sim_routes(s))) {
        dspy__err(err, rc, "cannot add the simulator's routes");
        goto fail;
    }
    *out = s;
    return DSPY_OK;
fail:
    dspy_sim_free(s);
    return rc;
}

dspy_status dspy_sim_start(dspy_sim *s, struct dspy_error *err)
{
    if (!s->srv)
        return dspy__err(err, DSPY_EINVAL, "the simulator was stopped");
    if (s->record_path && !s->record && !(s->record = fopen(s->record_path, "w")))
        return dspy__err(err, DSPY_EIO, "cannot open the record file %s: %s", s->record_path,
                         strerror(errno));
    s->start_ns = dspy__now_ns();
    return dspy__srv_start(s->srv, err);
}

int dspy_sim_port(const dspy_sim *s)
{
    return s->srv ? dspy__srv_port(s->srv) : -1;
}

const char *dspy_sim_bind(const dspy_sim *s)
{
    return s->bind;
}

void dspy_sim_stop(dspy_sim *s)
{
    if (!s || !s->srv)
        return;
    struct dspy__srv_stats last;
    dspy__srv_stats(s->srv, &last);
    dspy__srv_free(s->srv); /* joins the server threads: none reads s->last after this */
    s->srv = NULL;
    s->last = last;
}

void dspy_sim_free(dspy_sim *s)
{
    if (!s)
        return;
    dspy_sim_stop(s);
    if (s->record)
        fclose(s->record);
    pthread_mutex_destroy(&s->record_lock);
    pthread_mutex_destroy(&s->qlock);
    dspy_free(s->slots);
    dspy_free(s->queue);
    dspy_free(s->bind);
    dspy_free(s->model);
    dspy__secret_free(s->api_key);
    dspy_embedder_free(s->minilm);
    dspy_free(s->record_path);
    dspy_free(s);
}

void dspy_sim_stats(const dspy_sim *s, struct dspy_sim_stats *out)
{
    struct dspy__srv_stats st;
    if (s->srv)
        dspy__srv_stats(s->srv, &st);
    else
        st = s->last;
    memset(out, 0, sizeof(*out));
    out->requests = st.requests;
    out->in_flight = st.in_flight;
    out->in_flight_peak = st.in_flight_peak;
    out->waiting = st.waiting;
    out->too_big = st.too_big;
    out->connections = st.connections;
    out->body_bytes = st.body_bytes;
    out->evicted = st.evicted;
    out->header_timeouts = st.header_timeouts;
    out->body_timeouts = st.body_timeouts;
    out->bodies_refused = st.bodies_refused;
    out->streams = atomic_load(&s->streams);
    out->completion_tokens = atomic_load(&s->completion_tokens);
}

uint64_t dspy_sim_status_count(const dspy_sim *s, int status)
{
    return status >= 100 && status < 600 ? atomic_load(&s->by_status[status]) : 0;
}

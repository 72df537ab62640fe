/* The job API of `dspyc serve --jobs` (serve layer): POST/GET/DELETE /v1/jobs, a job's
 * result and its event feed (SSE), and GET /v1/queue, over the jobs layer's queue. Access,
 * bearer auth and body limits are the server's. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/jobs.h>

#include "base/buf.h"
#include "serve/serve_int.h"

#define PREFIX "/v1/jobs/"

static void send_json(struct dspy__serve_ctx *ctx, int status, json_t *v,
                      const char *const *headers)
{
    char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    if (text)
        dspy__serve_send(ctx, status, "application/json", headers, text, strlen(text));
    else
        dspy__serve_error(ctx, 500, "server_error", NULL, NULL, "Out of memory.");
    dspy_free(text);
    json_decref(v);
}

static void submit(struct dspy__serve_ctx *ctx, void *ud)
{
    dspy_jobq *q = ud;
    size_t len;
    const char *body = dspy__srv_req_body(ctx->req, &len);
    json_error_t je;
    json_t *spec = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!spec) {
        dspy__serve_error(ctx, 400, "invalid_request_error", "invalid_json", NULL,
                          "The body is not JSON: %s at byte %d.", je.text, je.position);
        return;
    }
    char id[40];
    bool existing;
    double retry;
    struct dspy_error err;
    dspy_error_clear(&err);
    dspy_status rc = dspy_jobq_submit(q, spec, id, &existing, &retry, &err);
    json_decref(spec);
    if (rc == DSPY_EINVAL) {
        dspy__serve_error(ctx, 400, "invalid_request_error", "invalid_spec", NULL, "%s",
                          err.message);
        return;
    }
    if (rc == DSPY_EBUSY) {
        char ra[32];
        snprintf(ra, sizeof(ra), "%.0f", retry);
        const char *const hdr[] = { "Retry-After", ra, NULL };
        dspy__serve_error(ctx, 429, "queue_full", "backpressure", hdr, "%s; retry in %s s.",
                          err.message, ra);
        return;
    }
    if (rc) {
        dspy__serve_error(ctx, 503, "server_error", NULL, NULL, "%s", err.message);
        return;
    }
    json_t *job = dspy_jobq_get(q, id);
    const char *state = json_string_value(json_object_get(job, "state"));
    json_t *o = json_pack("{s:s, s:s, s:b}", "id", id, "state", state ? state : "queued",
                          "existing", existing);
    json_decref(job);
    send_json(ctx, existing ? 200 : 202, o, NULL);
}

/* POST /v1/jobs/batch: an array of specs, each accepted or refused on its own (backpressure
 * included: once the queue passes its mark, the rest get 429 items), answered in order. */
#define BATCH_MAX 10000

static void submit_batch(struct dspy__serve_ctx *ctx, void *ud)
{
    dspy_jobq *q = ud;
    size_t len;
    const char *body = dspy__srv_req_body(ctx->req, &len);
    json_error_t je;
    json_t *specs = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!specs) {
        dspy__serve_error(ctx, 400, "invalid_request_error", "invalid_json", NULL,
                          "The body is not JSON: %s at byte %d.", je.text, je.position);
        return;
    }
    if (!json_is_array(specs) || !json_array_size(specs) || json_array_size(specs) > BATCH_MAX) {
        json_decref(specs);
        dspy__serve_error(ctx, 400, "invalid_request_error", "invalid_batch", NULL,
                          "The body must be an array of 1 to %d job specs.", BATCH_MAX);
        return;
    }
    json_t *out = json_array();
    size_t accepted = 0, refused = 0;
    double retry_max = 0;
    for (size_t i = 0; out && i < json_array_size(specs); i++) {
        char id[40];
        bool existing;
        double retry;
        struct dspy_error err;
        dspy_error_clear(&err);
        dspy_status rc = dspy_jobq_submit(q, json_array_get(specs, i), id, &existing, &retry, &err);
        json_t *item;
        if (!rc) {
            json_t *job = existing ? dspy_jobq_get(q, id) : NULL;
            const char *state = job ? json_string_value(json_object_get(job, "state")) : NULL;
            item = json_pack("{s:s, s:s, s:b, s:i}", "id", id, "state", state ? state : "queued",
                             "existing", existing, "status", existing ? 200 : 202);
            json_decref(job);
            accepted++;
        } else {
            int status = rc == DSPY_EINVAL ? 400 : rc == DSPY_EBUSY ? 429 : 503;
            item = json_pack("{s:n, s:s, s:i, s:s}", "id", "state", "refused", "status", status,
                             "error", err.message);
            if (rc == DSPY_EBUSY) {
                json_object_set_new(item, "retry_after_s", json_real(retry));
                if (retry > retry_max)
                    retry_max = retry;
            }
            refused++;
        }
        json_array_append_new(out, item);
    }
    json_decref(specs);
    char ra[32];
    snprintf(ra, sizeof(ra), "%.0f", retry_max);
    const char *const hdr[] = { "Retry-After", ra, NULL };
    /* 200 when every item has its own answer; Retry-After when some met backpressure */
    send_json(ctx, 200,
              out ? json_pack("{s:o, s:I, s:I}", "jobs", out, "accepted", (json_int_t)accepted,
                              "refused", (json_int_t)refused)
                  : NULL,
              retry_max > 0 ? hdr : NULL);
}

/* DELETE /v1/jobs?older_than=S&state=S: purge ended jobs. */
static void purge_many(struct dspy__serve_ctx *ctx, void *ud)
{
    dspy_jobq *q = ud;
    const char *st = dspy__srv_req_query(ctx->req, "state");
    const char *older = dspy__srv_req_query(ctx->req, "older_than");
    int state = -1;
    if (st && ((state = dspy_job_state_from_name(st)) < 0 ||
               !dspy_job_state_terminal((enum dspy_job_state)state))) {
        dspy__serve_error(ctx, 400, "invalid_request_error", "state", NULL,
                          "state: '%s' is not succeeded, failed, cancelled or dead.", st);
        return;
    }
    char *end = NULL;
    double s = older ? strtod(older, &end) : 0;
    if (older && (end == older || *end || !(s >= 0) || s > 1e10)) {
        dspy__serve_error(ctx, 400, "invalid_request_error", "older_than", NULL,
                          "older_than: '%s' is not a number of seconds.", older);
        return;
    }
    size_t n = 0;
    struct dspy_error err;
    dspy_error_clear(&err);
    if (dspy_jobq_purge(q, NULL, state, s, &n, &err)) {
        dspy__serve_error(ctx, 400, "invalid_request_error", NULL, NULL, "%s.", err.message);
        return;
    }
    send_json(ctx, 200, json_pack("{s:I}", "purged", (json_int_t)n), NULL);
}

static void list(struct dspy__serve_ctx *ctx, void *ud)
{
    dspy_jobq *q = ud;
    const char *st = dspy__srv_req_query(ctx->req, "state");
    const char *lim = dspy__srv_req_query(ctx->req, "limit");
    int state = -1;
    if (st && (state = dspy_job_state_from_name(st)) < 0) {
        dspy__serve_error(ctx, 400, "invalid_request_error", "state", NULL,
                          "state: '%s' is not queued, running, succeeded, failed, cancelled or "
                          "dead.",
                          st);
        return;
    }
    char *end = NULL;
    long limit = lim ? strtol(lim, &end, 10) : 100;
    if (lim && (*end || limit < 1 || limit > 100000)) {
        dspy__serve_error(ctx, 400, "invalid_request_error", "limit", NULL,
                          "limit: '%s' is not a number in [1, 100000].", lim);
        return;
    }
    send_json(ctx, 200, json_pack("{s:o}", "jobs", dspy_jobq_list(q, state, (size_t)limit)), NULL);
}

static void queue_stats(struct dspy__serve_ctx *ctx, void *ud)
{
    send_json(ctx, 200, dspy_jobq_stats(ud), NULL);
}

/* The event feed: one SSE event per state change or progress report until the job ends. */
struct feed {
    struct dspy__serve_ctx *ctx; /* holds a request reference */
};

static bool feed_event(void *ud, const json_t *ev)
{
    struct feed *f = ud;
    if (!ev) { /* the queue is going away */
        dspy__serve_stream_end(f->ctx, false);
        dspy__srv_req_unref(f->ctx->req);
        dspy_free(f);
        return false;
    }
    char *text = json_dumps(ev, JSON_COMPACT);
    const char *type = json_string_value(json_object_get(ev, "type"));
    struct dspy_buf b;
    dspy__buf_init(&b, 1u << 20);
    dspy__buf_addf(&b, "event: %s\ndata: %s\n\n", type ? type : "state", text ? text : "{}");
    dspy_free(text);
    dspy_status rc = dspy__serve_stream_push(f->ctx, b.ptr, b.len);
    dspy__buf_release(&b);
    int s = dspy_job_state_from_name(json_string_value(json_object_get(ev, "state")));
    bool end = rc || (s >= 0 && dspy_job_state_terminal((enum dspy_job_state)s));
    if (end) {
        dspy__serve_stream_end(f->ctx, false);
        dspy__srv_req_unref(f->ctx->req);
        dspy_free(f);
        return false;
    }
    return true;
}

static void one(struct dspy__serve_ctx *ctx, void *ud)
{
    dspy_jobq *q = ud;
    const char *path = dspy__srv_req_path(ctx->req) + strlen(PREFIX);
    char id[64];
    size_t n = strcspn(path, "/");
    const char *rest = path + n;
    if (!n || n >= sizeof(id)) {
        dspy__serve_error(ctx, 404, "not_found", NULL, NULL, "No such job.");
        return;
    }
    memcpy(id, path, n);
    id[n] = 0;
    const char *method = dspy__srv_req_method(ctx->req);
    bool get = !strcmp(method, "GET");
    struct dspy_error err;
    dspy_error_clear(&err);
    const char *purge = dspy__srv_req_query(ctx->req, "purge");
    if (!strcmp(method, "DELETE") && !*rest && purge && strcmp(purge, "0")) {
        size_t purged = 0;
        dspy_status rc = dspy_jobq_purge(q, id, -1, 0, &purged, &err);
        if (rc == DSPY_ENOTFOUND)
            dspy__serve_error(ctx, 404, "not_found", NULL, NULL, "No job %s.", id);
        else if (rc)
            dspy__serve_error(ctx, 409, "conflict", "not_ended", NULL, "%s.", err.message);
        else
            send_json(ctx, 200, json_pack("{s:s, s:b}", "id", id, "purged", purged > 0), NULL);
        return;
    }
    if (!strcmp(method, "DELETE") && !*rest) {
        dspy_status rc = dspy_jobq_cancel(q, id, &err);
        if (rc == DSPY_ENOTFOUND)
            dspy__serve_error(ctx, 404, "not_found", NULL, NULL, "No job %s.", id);
        else if (rc)
            dspy__serve_error(ctx, 409, "conflict", "ended", NULL, "%s.", err.message);
        else
            send_json(ctx, 200, dspy_jobq_get(q, id), NULL);
        return;
    }
    if (get && !*rest) {
        json_t *j = dspy_jobq_get(q, id);
        if (j)
            send_json(ctx, 200, j, NULL);
        else
            dspy__serve_error(ctx, 404, "not_found", NULL, NULL, "No job %s.", id);
        return;
    }
    if (get && !strcmp(rest, "/result")) {
        json_t *r = NULL;
        dspy_status rc = dspy_jobq_result(q, id, &r, &err);
        if (rc == DSPY_ENOTFOUND)
            dspy__serve_error(ctx, 404, "not_found", NULL, NULL, "No job %s.", id);
        else if (rc == DSPY_EBUSY)
            dspy__serve_error(ctx, 409, "conflict", "not_ended", NULL, "%s.", err.message);
        else if (rc)
            dspy__serve_error(ctx, 409, "conflict", "no_result", NULL, "%s.", err.message);
        else
            send_json(ctx, 200, r, NULL);
        return;
    }
    if (get && !strcmp(rest, "/events")) {
        json_t *j = dspy_jobq_get(q, id);
        if (!j) {
            dspy__serve_error(ctx, 404, "not_found", NULL, NULL, "No job %s.", id);
            return;
        }
        json_decref(j);
        static const char *const hdr[] = { "Cache-Control", "no-cache", NULL };
        struct feed *f = dspy_malloc(sizeof(*f));
        if (!f || dspy__serve_stream_start(ctx, "text/event-stream", hdr)) {
            dspy_free(f);
            if (!f)
                dspy__serve_error(ctx, 500, "server_error", NULL, NULL, "Out of memory.");
            return;
        }
        f->ctx = ctx;
        dspy__srv_req_ref(ctx->req);
        dspy_jobq_watch(q, id, feed_event, f); /* ends the stream itself */
        return;
    }
    dspy__serve_error(ctx, 404, "not_found", NULL, NULL, "No such route under /v1/jobs.");
}

dspy_status dspy__serve_jobs_routes(dspy_server *s, struct dspy_jobq *q)
{
    dspy_status rc;
    if ((rc = dspy__serve_route(s, "POST", "/v1/jobs", "jobs_submit", DSPY__SERVE_USER, submit,
                                q)) ||
        (rc = dspy__serve_route(s, "POST", "/v1/jobs/batch", "jobs_batch", DSPY__SERVE_USER,
                                submit_batch, q)) ||
        (rc = dspy__serve_route(s, "DELETE", "/v1/jobs", "jobs_purge", DSPY__SERVE_USER, purge_many,
                                q)) ||
        (rc = dspy__serve_route(s, "GET", "/v1/jobs", "jobs_list", DSPY__SERVE_USER, list, q)) ||
        (rc = dspy__serve_route(s, "GET", PREFIX "*", "job", DSPY__SERVE_USER, one, q)) ||
        (rc = dspy__serve_route(s, "DELETE", PREFIX "*", "job_cancel", DSPY__SERVE_USER, one, q)) ||
        (rc = dspy__serve_route(s, "GET", "/v1/queue", "queue", DSPY__SERVE_USER, queue_stats, q)))
        return rc;
    return DSPY_OK;
}

/* The queue's gauges and counters for /metrics, from its stats. */
static void gauge(struct dspy_buf *b, const char *name, const char *type, const char *help,
                  const json_t *v)
{
    dspy__buf_addf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name,
                   json_number_value(v));
}

void dspy__serve_jobs_metrics(struct dspy_buf *b, struct dspy_jobq *q)
{
    json_t *st = dspy_jobq_stats(q);
    if (!st)
        return;
    const json_t *mem = json_object_get(st, "memory"), *pool = json_object_get(st, "lm_pool");
    gauge(b, "dspyc_jobs_queued", "gauge", "Jobs waiting to run.", json_object_get(st, "queued"));
    gauge(b, "dspyc_jobs_running", "gauge", "Jobs running now.", json_object_get(st, "running"));
    gauge(b, "dspyc_jobs_workers", "gauge", "Worker threads of this process.",
          json_object_get(st, "workers"));
    gauge(b, "dspyc_jobs_utilization", "gauge", "Running jobs / --max-concurrent-jobs.",
          json_object_get(st, "utilization"));
    gauge(b, "dspyc_jobs_memory_budget_bytes", "gauge", "--memory-budget (0 = none).",
          json_object_get(mem, "budget"));
    gauge(b, "dspyc_jobs_memory_used_bytes", "gauge", "Memory the running jobs hold of it.",
          json_object_get(mem, "used"));
    gauge(b, "dspyc_jobs_memory_utilization", "gauge", "Used / budget.",
          json_object_get(mem, "utilization"));
    gauge(b, "dspyc_jobs_purged_total", "counter", "Ended jobs removed (retention and purge).",
          json_object_get(json_object_get(st, "retention"), "purged"));
    if (pool) {
        gauge(b, "dspyc_jobs_lm_handles", "gauge", "LM handles open (one per endpoint+model).",
              json_object_get(pool, "handles"));
        gauge(b, "dspyc_jobs_lm_pool_utilization", "gauge", "LM handles open / at most.",
              json_object_get(pool, "utilization"));
        gauge(b, "dspyc_jobs_lm_in_flight", "gauge", "Jobs' LM calls on the wire now.",
              json_object_get(pool, "in_flight"));
        gauge(b, "dspyc_jobs_lm_waiting", "gauge", "Jobs' LM calls waiting (rate limit, backoff).",
              json_object_get(pool, "waiting"));
    }
    const json_t *rw = json_object_get(st, "redis_workers");
    if (rw) {
        gauge(b, "dspyc_jobs_redis_workers", "gauge", "Live Redis workers.",
              json_object_get(rw, "workers"));
        gauge(b, "dspyc_jobs_redis_slots", "gauge", "Their job slots.",
              json_object_get(rw, "slots"));
        gauge(b, "dspyc_jobs_redis_running", "gauge", "Jobs they run now.",
              json_object_get(rw, "running"));
        gauge(b, "dspyc_jobs_redis_memory_used_bytes", "gauge",
              "Memory their jobs hold of their budgets.", json_object_get(rw, "memory_used"));
        gauge(b, "dspyc_jobs_redis_memory_budget_bytes", "gauge", "Their budgets together.",
              json_object_get(rw, "memory_budget"));
        gauge(b, "dspyc_jobs_redis_lm_in_flight", "gauge", "Their LM calls on the wire now.",
              json_object_get(rw, "lm_in_flight"));
        gauge(b, "dspyc_jobs_redis_lm_waiting", "gauge",
              "Their LM calls waiting (rate limit, backoff).", json_object_get(rw, "lm_waiting"));
    }
    dspy__buf_addf(b, "# HELP dspyc_jobs_ended_total Jobs ended, by state.\n"
                      "# TYPE dspyc_jobs_ended_total counter\n");
    const char *k;
    const json_t *v;
    json_object_foreach(json_object_get(st, "ended"), k, v)
        dspy__buf_addf(b, "dspyc_jobs_ended_total{state=\"%s\"} %lld\n", k,
                       (long long)json_integer_value(v));
    json_decref(st);
}

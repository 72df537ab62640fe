/* The server (serve layer): lifecycle, the route table other modules mount routes on, the
 * checks every route gets first (bearer token, in-flight cap), and the answer helpers that
 * close a request's metrics and access-log line exactly once. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <dspyc/serve.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/status.h"
#include "serve/serve_int.h"

#define DEFAULT_MAX_IN_FLIGHT 10000

/* ---- answers --------------------------------------------------------------------------- */

static void finish(struct dspy__serve_ctx *ctx, int status)
{
    bool was = false;
    if (!atomic_compare_exchange_strong(&ctx->finished, &was, true))
        return;
    if (!ctx->status)
        ctx->status = status;
    dspy__serve_metrics_finish(ctx->s, ctx);
    if (ctx->counted)
        atomic_fetch_sub(&ctx->s->in_flight, 1);
}

void dspy__serve_stage(struct dspy__serve_ctx *ctx, enum dspy__serve_stage stage)
{
    uint64_t now = dspy__now_ns();
    ctx->stage_ns[stage] += now - ctx->mark;
    ctx->mark = now;
}

dspy_status dspy__serve_send(struct dspy__serve_ctx *ctx, int status, const char *content_type,
                             const char *const *headers, const void *body, size_t len)
{
    struct dspy__srv_reply r = { status, content_type, headers, body, len, NULL };
    ctx->status = status;
    ctx->bytes_out = len;
    dspy_status rc = dspy__srv_send(ctx->req, &r, 0);
    dspy__serve_stage(ctx, DSPY__STAGE_WRITE);
    if (rc != DSPY_EINVAL)
        finish(ctx, rc ? 499 : status);
    return rc;
}

dspy_status dspy__serve_error(struct dspy__serve_ctx *ctx, int status, const char *type,
                              const char *code, const char *const *headers, const char *fmt, ...)
{
    char msg[512];
    struct dspy_buf b;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    dspy__buf_init(&b, 4096);
    dspy_status rc = dspy__buf_adds(&b, "{\"error\":{\"message\":");
    if (!rc)
        rc = dspy__buf_add_json_str(&b, msg, strlen(msg));
    if (!rc)
        rc = dspy__buf_addf(&b, ",\"type\":\"%s\",\"param\":null,\"code\":", type);
    if (!rc)
        rc = code ? dspy__buf_add_json_str(&b, code, strlen(code)) : dspy__buf_adds(&b, "null");
    if (!rc)
        rc = dspy__buf_adds(&b, "}}\n");
    if (!rc)
        rc = dspy__serve_send(ctx, status, "application/json", headers, b.ptr, b.len);
    dspy__buf_release(&b);
    return rc;
}

dspy_status dspy__serve_stream_start(struct dspy__serve_ctx *ctx, const char *content_type,
                                     const char *const *headers)
{
    struct dspy__srv_reply r = { 200,     content_type ? content_type : "text/event-stream",
                                 headers, NULL,
                                 0,       NULL };
    ctx->status = 200;
    return dspy__srv_stream_start(ctx->req, &r, 0);
}

dspy_status dspy__serve_stream_push(struct dspy__serve_ctx *ctx, const void *data, size_t len)
{
    ctx->bytes_out += len;
    return dspy__srv_stream_push(ctx->req, data, len, 0);
}

void dspy__serve_stream_end(struct dspy__serve_ctx *ctx, bool abort)
{
    dspy__srv_stream_end(ctx->req, 0, abort);
    dspy__serve_stage(ctx, DSPY__STAGE_WRITE);
    finish(ctx, abort ? 502 : 200);
}

/* ---- routing --------------------------------------------------------------------------- */

static void ctx_free(void *p)
{
    struct dspy__serve_ctx *ctx = p;
    finish(ctx, 499); /* the client went away before an answer */
    dspy_free(ctx);
}

static const char *bearer(struct dspy__srv_req *req)
{
    const char *h = dspy__srv_req_header(req, "Authorization");
    if (h && !strncasecmp(h, "Bearer ", 7))
        return h + 7;
    return NULL;
}

static void dispatch(struct dspy__srv_req *req, void *ud)
{
    struct dspy__serve_route_def *r = ud;
    dspy_server *s = r->s;
    struct dspy__serve_ctx *ctx = dspy_calloc(1, sizeof(*ctx));
    if (!ctx) {
        dspy__srv_send_error(req, 500, "server_error", NULL, "out_of_memory", NULL,
                             "Out of memory.");
        return;
    }
    ctx->s = s;
    ctx->req = req;
    ctx->route = (unsigned)(r - s->routes);
    ctx->t0 = dspy__srv_req_received_ns(req);
    ctx->mark = dspy__now_ns();
    ctx->upstream = -1;
    ctx->admin = true;
    atomic_init(&ctx->finished, false);
    dspy__srv_req_set_data(req, ctx, ctx_free);

    if (r->access != DSPY__SERVE_OPEN && s->auth.ntokens) {
        const char *tok = bearer(req);
        if (!tok && r->access == DSPY__SERVE_ADMIN)
            tok = dspy__srv_req_query(req, "token"); /* the dashboard, opened in a browser */
        const struct dspy__serve_token *t = dspy__serve_auth_check(&s->auth, tok);
        if (!t || (r->access == DSPY__SERVE_ADMIN && !t->admin)) {
            static const char *const hdr[] = { "WWW-Authenticate", "Bearer", NULL };
            dspy__serve_metrics_event(s, DSPY__EV_UNAUTHORIZED);
            if (t)
                dspy__serve_error(ctx, 403, "invalid_request_error", "admin_required", NULL,
                                  "This route needs an admin token.");
            else
                dspy__serve_error(ctx, 401, "invalid_request_error", "invalid_api_key", hdr,
                                  tok ? "Invalid bearer token."
                                      : "Missing bearer token: send 'Authorization: Bearer "
                                        "TOKEN'.");
            return;
        }
        ctx->tenant = t->ns;
        ctx->admin = t->admin;
    }
    if (r->access == DSPY__SERVE_USER) {
        unsigned n = atomic_fetch_add(&s->in_flight, 1);
        ctx->counted = true;
        if (n >= s->max_in_flight) {
            static const char *const hdr[] = { "Retry-After", "1", NULL };
            dspy__serve_metrics_event(s, DSPY__EV_OVERLOAD);
            dspy__serve_error(ctx, 429, "rate_limit_error", "overloaded", hdr,
                              "Server overloaded: %u requests in flight; retry after 1 s.",
                              s->max_in_flight);
            return;
        }
    }
    r->fn(ctx, r->ud);
}

dspy_status dspy__serve_route(dspy_server *s, const char *method, const char *path,
                              const char *label, enum dspy__serve_access access,
                              dspy__serve_handler fn, void *ud)
{
    if (s->started || s->nroutes == DSPY__SERVE_MAX_ROUTES)
        return DSPY_EINVAL;
    struct dspy__serve_route_def *r = &s->routes[s->nroutes];
    *r = (struct dspy__serve_route_def){ label, access, fn, ud, s };
    dspy_status rc = dspy__srv_route(s->srv, method, path, 0, dispatch, r);
    if (!rc)
        s->nroutes++;
    return rc;
}

static void health(struct dspy__serve_ctx *ctx, void *ud)
{
    (void)ud;
    dspy__serve_send(ctx, 200, "application/json", NULL, "{\"status\":\"ok\"}\n", 16);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static dspy_status open_log(dspy_server *s, const char *path, struct dspy_error *err)
{
    if (!path)
        return DSPY_OK;
    if (!strcmp(path, "-")) {
        s->access_log = stderr;
        return DSPY_OK;
    }
    if (!(s->access_log = fopen(path, "a"))) {
        dspy__err(err, DSPY_EIO, "cannot open the access log %s", path);
        dspy__err_file(err, path);
        return DSPY_EIO;
    }
    setvbuf(s->access_log, NULL, _IOLBF, 1 << 16);
    s->access_log_owned = true;
    return DSPY_OK;
}

dspy_status dspy_serve_new(const struct dspy_serve_options *o, dspy_server **out,
                           struct dspy_error *err)
{
    dspy_status rc;
    if (!o || !out)
        return dspy__err(err, DSPY_EINVAL, "dspy_serve_new: options and out are required");
    *out = NULL;
    if (!!o->upstream_url == !!o->config_path)
        return dspy__err(err, DSPY_EINVAL,
                         "name the upstream: either an upstream URL or a config file");
    dspy_server *s = dspy_calloc(1, sizeof(*s));
    if (!s)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    pthread_mutex_init(&s->log_lock, NULL);
    atomic_init(&s->in_flight, 0);
    s->cache = o->cache;
    s->jobs = o->jobs;
    s->cache_ctl = o->cache_ctl;
    s->prices = o->prices;
    s->cache_ctl.ns = NULL;
    s->max_in_flight = o->max_in_flight ? o->max_in_flight : DEFAULT_MAX_IN_FLIGHT;
    s->started_ns = dspy__now_ns();
    if (o->cache_ctl.ns && !(s->default_ns = dspy_strdup(o->cache_ctl.ns))) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto fail;
    }
    s->cache_ctl.ns = s->default_ns;
    if (!(s->metrics = dspy__serve_metrics_new())) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = open_log(s, o->access_log, err)))
        goto fail;
    if (o->auth_token_file && (rc = dspy__serve_auth_load(&s->auth, o->auth_token_file, err)))
        goto fail;
    if ((rc = dspy__serve_upstreams_open(s, o, err)))
        goto fail;
    if ((rc = dspy__serve_programs_open(s, o, err)))
        goto fail;

    struct dspy__srv_options so = DSPY__SRV_OPTIONS_INIT;
    so.bind = o->host;
    so.port = o->port;
    so.threads = o->threads;
    so.max_body = o->max_body;
    so.idle_timeout_s = o->client_timeout_s ? o->client_timeout_s : 60;
    if (!(s->srv = dspy__srv_new(&so, err))) {
        rc = err && err->code ? err->code : DSPY_ENOMEM;
        goto fail;
    }
    if ((rc = dspy__serve_route(s, "GET", "/health", "health", DSPY__SERVE_OPEN, health, NULL)) ||
        (rc = dspy__serve_proxy_routes(s)) || (rc = dspy__serve_metrics_routes(s)) ||
        (rc = dspy__serve_program_routes(s)) ||
        (o->jobs && (rc = dspy__serve_jobs_routes(s, o->jobs)))) {
        dspy__err(err, rc, "cannot register the routes");
        goto fail;
    }
    *out = s;
    return DSPY_OK;
fail:
    dspy_serve_free(s);
    return rc;
}

dspy_status dspy_serve_start(dspy_server *s, struct dspy_error *err)
{
    dspy_status rc = dspy__srv_start(s->srv, err);
    if (rc)
        return rc;
    s->started = true;
    return dspy__serve_metrics_start(s);
}

int dspy_serve_port(const dspy_server *s)
{
    return s && s->srv ? dspy__srv_port(s->srv) : -1;
}

void dspy_serve_free(dspy_server *s)
{
    if (!s)
        return;
    dspy__srv_free(s->srv);         /* no handler runs after this */
    dspy__serve_programs_close(s);  /* their calls use the upstreams' handles' cache */
    dspy__serve_upstreams_close(s); /* their engines end calls still running */
    dspy__serve_proxy_release(s);
    dspy__serve_metrics_free(s->metrics);
    dspy__serve_auth_release(&s->auth);
    if (s->access_log_owned)
        fclose(s->access_log);
    pthread_mutex_destroy(&s->log_lock);
    dspy_free(s->default_ns);
    dspy_free(s);
}

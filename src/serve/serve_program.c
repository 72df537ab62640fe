/* Programs over HTTP (serve layer): `--program NAME=PROGRAM.json[:STATE.json]` files served
 * at POST /v1/programs/NAME (one record: {"inputs": {...}} in, the prediction or a structured
 * error out), POST /v1/programs/NAME/batch (JSON lines in, JSON lines out in input order,
 * streamed as they complete, through the batch executor) and GET /v1/programs. Program calls
 * block, so they run on a small pool of worker threads fed by a queue; each program has its
 * own LM handle on the upstream its model routes to, caching through the server's cache. */
#include <pthread.h>
#include <string.h>

#include <jansson.h>

#include <dspyc/module.h>
#include <dspyc/program.h>
#include <dspyc/signature.h>

#include "base/buf.h"
#include "base/status.h"
#include "serve/serve_int.h"

#define DEFAULT_WORKERS 16
#define MAX_QUEUED 100000

struct prog {
    char *name;
    dspy_program *p;
    dspy_lm *lm;
    json_t *listing; /* its entry in GET /v1/programs */
};

struct job {
    struct dspy__serve_ctx *ctx; /* holds a request reference */
    struct prog *pg;
    bool batch;
    struct job *next;
};

struct dspy__serve_programs {
    struct prog *v;
    size_t n;
    pthread_t *threads;
    size_t nthreads;
    pthread_mutex_t lock; /* guards the queue and stop */
    pthread_cond_t cond;
    struct job *head, *tail;
    size_t queued;
    bool stop;
};

/* ---- errors ------------------------------------------------------------------------------- */

static json_t *error_json(const struct dspy_error *err)
{
    json_t *e = json_pack("{s:s,s:s,s:s}", "type", "program_error", "code",
                          dspy_status_name(err->code), "message",
                          err->message[0] ? err->message : dspy_strerror(err->code));
    if (e && err->field[0])
        json_object_set_new(e, "field", json_string(err->field));
    if (e && err->http_status)
        json_object_set_new(e, "http_status", json_integer(err->http_status));
    return e;
}

static int http_status_of(dspy_status rc)
{
    switch (rc) {
    case DSPY_EINVAL:
    case DSPY_EPARSE:
    case DSPY_ENOTFOUND: return 400;
    case DSPY_EADAPTER: return 422;
    case DSPY_ELM_TIMEOUT: return 504;
    case DSPY_EBUSY:
    case DSPY_ELM_RATE_LIMIT: return 429;
    default: return rc <= DSPY_ELM_AUTH ? 502 : 500;
    }
}

static void send_json(struct dspy__serve_ctx *ctx, int status, json_t *v)
{
    char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    if (text)
        dspy__serve_send(ctx, status, "application/json", NULL, text, strlen(text));
    else
        dspy__serve_error(ctx, 500, "server_error", NULL, NULL, "Out of memory.");
    dspy_free(text);
    json_decref(v);
}

/* ---- one record ----------------------------------------------------------------------------- */

static void call_config(const struct dspy__serve_ctx *ctx, struct dspy_call_config *cfg)
{
    *cfg = (struct dspy_call_config)DSPY_CALL_CONFIG_INIT;
    cfg->cache.ns = ctx->tenant; /* tenants keep their programs' entries apart too */
}

static void run_one(struct job *j)
{
    struct dspy__serve_ctx *ctx = j->ctx;
    struct dspy_error err;
    struct dspy_call_config cfg;
    struct dspy_call_info info;
    json_error_t je;
    json_t *outputs = NULL;
    size_t len;
    const char *body = dspy__srv_req_body(ctx->req, &len);
    json_t *root = json_loadb(body, len, 0, &je);
    json_t *inputs = json_object_get(root, "inputs");
    dspy__serve_stage(ctx, DSPY__STAGE_PARSE);
    if (!root) {
        dspy__serve_error(ctx, 400, "invalid_request_error", "invalid_json", NULL,
                          "Request body is not valid JSON: %s (line %d, column %d).", je.text,
                          je.line, je.column);
        return;
    }
    if (!json_is_object(inputs)) {
        json_decref(root);
        dspy__serve_error(ctx, 400, "invalid_request_error", "inputs", NULL,
                          "The body must be {\"inputs\": {...}} with the program's input "
                          "fields.");
        return;
    }
    call_config(ctx, &cfg);
    memset(&info, 0, sizeof(info));
    dspy_error_clear(&err);
    dspy_status rc = dspy_program_call(j->pg->p, j->pg->lm, inputs, &cfg, &outputs, &info, &err);
    dspy__serve_stage(ctx, DSPY__STAGE_UPSTREAM);
    json_decref(root);
    if (rc) {
        send_json(ctx, http_status_of(rc), json_pack("{s:o}", "error", error_json(&err)));
        return;
    }
    ctx->tokens_in = info.usage.prompt_tokens;
    ctx->tokens_out = info.usage.completion_tokens;
    send_json(ctx, 200,
              json_pack("{s:o,s:{s:I,s:I}}", "outputs", outputs, "usage", "prompt_tokens",
                        (json_int_t)info.usage.prompt_tokens, "completion_tokens",
                        (json_int_t)info.usage.completion_tokens));
}

/* ---- a batch: JSON lines in, JSON lines out ------------------------------------------------ */

struct batch_io {
    struct dspy__serve_ctx *ctx;
    const char *body;
    size_t len, off;
    long line;
    bool gone; /* the client went away: stop pulling */
};

static int batch_source(void *ud, struct dspy_batch_item *item)
{
    struct batch_io *b = ud;
    for (;;) {
        if (b->gone || b->off >= b->len)
            return 0;
        const char *s = b->body + b->off;
        const char *nl = memchr(s, '\n', b->len - b->off);
        size_t n = nl ? (size_t)(nl - s) : b->len - b->off;
        b->off += n + (nl != NULL);
        b->line++;
        while (n && (s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
            n--;
        if (!n)
            continue; /* blank lines are not records */
        json_error_t je;
        json_t *v = json_loadb(s, n, 0, &je);
        json_t *in = json_object_get(v, "inputs");
        memset(item, 0, sizeof(*item));
        dspy_error_clear(&item->error);
        if (json_is_object(in)) {
            item->inputs = json_incref(in);
            json_decref(v);
        } else if (json_is_object(v)) {
            item->inputs = v;
        } else {
            json_decref(v);
            dspy__err(&item->error, v ? DSPY_EINVAL : DSPY_EPARSE,
                      v ? "line %ld is not a JSON object" : "line %ld is not JSON: %s", b->line,
                      v ? "" : je.text);
            item->error.line = b->line;
        }
        return 1;
    }
}

static int batch_sink(void *ud, size_t index, struct dspy_batch_item *item,
                      struct dspy_batch_result *r)
{
    struct batch_io *b = ud;
    json_t *line;
    (void)item;
    if (r->status == DSPY_OK) {
        line = json_pack("{s:I,s:O}", "index", (json_int_t)index, "outputs", r->outputs);
        b->ctx->tokens_in += r->info.usage.prompt_tokens;
        b->ctx->tokens_out += r->info.usage.completion_tokens;
    } else {
        line = json_pack("{s:I,s:o}", "index", (json_int_t)index, "error", error_json(&r->error));
    }
    char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
    json_decref(line);
    if (!text)
        return 1;
    size_t n = strlen(text);
    text[n] = '\n'; /* json_dumps leaves room for its NUL: the newline takes its place */
    dspy_status rc = dspy__serve_stream_push(b->ctx, text, n + 1);
    dspy_free(text);
    if (rc)
        b->gone = true;
    return 0;
}

static void run_batch(struct job *j)
{
    struct dspy__serve_ctx *ctx = j->ctx;
    struct dspy_batch_options bo = DSPY_BATCH_OPTIONS_INIT;
    struct dspy_call_config cfg;
    struct dspy_error err;
    struct batch_io b = { ctx, NULL, 0, 0, 0, false };
    static const char *const hdr[] = { "Cache-Control", "no-cache", NULL };
    b.body = dspy__srv_req_body(ctx->req, &b.len);
    dspy__serve_stage(ctx, DSPY__STAGE_PARSE);
    if (dspy__serve_stream_start(ctx, "application/x-ndjson", hdr))
        return;
    call_config(ctx, &cfg);
    bo.cfg = &cfg;
    dspy_error_clear(&err);
    dspy_status rc = dspy_program_batch_stream(j->pg->p, j->pg->lm, &bo, batch_source, batch_sink,
                                               &b, NULL, &err);
    dspy__serve_stage(ctx, DSPY__STAGE_UPSTREAM);
    dspy__serve_stream_end(ctx, rc != DSPY_OK && rc != DSPY_ECANCELED);
}

/* ---- the pool ------------------------------------------------------------------------------- */

static void *worker(void *arg)
{
    struct dspy__serve_programs *ps = arg;
    for (;;) {
        pthread_mutex_lock(&ps->lock);
        while (!ps->head && !ps->stop)
            pthread_cond_wait(&ps->cond, &ps->lock);
        struct job *j = ps->stop ? NULL : ps->head;
        if (j) {
            ps->head = j->next;
            if (!ps->head)
                ps->tail = NULL;
            ps->queued--;
        }
        pthread_mutex_unlock(&ps->lock);
        if (!j)
            return NULL;
        if (j->batch)
            run_batch(j);
        else
            run_one(j);
        dspy__srv_req_unref(j->ctx->req);
        dspy_free(j);
    }
}

static struct prog *find(struct dspy__serve_programs *ps, const char *name, size_t len)
{
    for (size_t i = 0; ps && i < ps->n; i++)
        if (strlen(ps->v[i].name) == len && !memcmp(ps->v[i].name, name, len))
            return &ps->v[i];
    return NULL;
}

static void program_route(struct dspy__serve_ctx *ctx, void *ud)
{
    struct dspy__serve_programs *ps = ctx->s->programs;
    const char *name = dspy__srv_req_path(ctx->req) + strlen("/v1/programs/");
    size_t len = strlen(name);
    bool batch = len > 6 && !strcmp(name + len - 6, "/batch");
    (void)ud;
    if (batch)
        len -= 6;
    struct prog *pg = find(ps, name, len);
    if (!pg) {
        dspy__serve_error(ctx, 404, "invalid_request_error", "program_not_found", NULL,
                          "No program named '%.*s' is served here (see GET /v1/programs).",
                          (int)(len > 200 ? 200 : len), name);
        return;
    }
    snprintf(ctx->model, sizeof(ctx->model), "%s", pg->name);
    struct job *j = dspy_malloc(sizeof(*j));
    if (!j) {
        dspy__serve_error(ctx, 500, "server_error", NULL, NULL, "Out of memory.");
        return;
    }
    *j = (struct job){ ctx, pg, batch, NULL };
    pthread_mutex_lock(&ps->lock);
    bool full = ps->queued >= MAX_QUEUED;
    if (!full) {
        dspy__srv_req_ref(ctx->req);
        if (ps->tail)
            ps->tail->next = j;
        else
            ps->head = j;
        ps->tail = j;
        ps->queued++;
        pthread_cond_signal(&ps->cond);
    }
    pthread_mutex_unlock(&ps->lock);
    if (full) {
        static const char *const hdr[] = { "Retry-After", "1", NULL };
        dspy_free(j);
        dspy__serve_error(ctx, 429, "rate_limit_error", "overloaded", hdr,
                          "Too many program calls queued; retry after 1 s.");
    }
}

static void list_route(struct dspy__serve_ctx *ctx, void *ud)
{
    struct dspy__serve_programs *ps = ctx->s->programs;
    json_t *data = json_array();
    (void)ud;
    for (size_t i = 0; ps && i < ps->n; i++)
        json_array_append(data, ps->v[i].listing);
    send_json(ctx, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}

dspy_status dspy__serve_program_routes(dspy_server *s)
{
    dspy_status rc = dspy__serve_route(s, "GET", "/v1/programs", "programs", DSPY__SERVE_USER,
                                       list_route, NULL);
    if (!rc)
        rc = dspy__serve_route(s, "POST", "/v1/programs/*", "program", DSPY__SERVE_USER,
                               program_route, NULL);
    return rc;
}

/* ---- loading ---------------------------------------------------------------------------------- */

static json_t *listing(const struct prog *pg)
{
    json_t *preds = json_array();
    for (size_t i = 0; i < dspy_program_count(pg->p); i++) {
        const dspy_signature *sig = dspy_module_signature(dspy_program_module(pg->p, i));
        json_t *in = json_array(), *out = json_array();
        for (size_t f = 0; f < dspy_signature_nfields(sig); f++) {
            const struct dspy_field *fd = dspy_signature_field(sig, f);
            json_array_append_new(fd->role == DSPY_FIELD_INPUT ? in : out, json_string(fd->name));
        }
        json_array_append_new(preds,
                              json_pack("{s:s,s:o,s:o}", "name", dspy_program_state_name(pg->p, i),
                                        "inputs", in, "outputs", out));
    }
    const char *model = dspy_program_model(pg->p);
    return json_pack("{s:s,s:o,s:s?,s:o}", "name", pg->name, "inputs", dspy_program_inputs(pg->p),
                     "model", model, "predictors", preds);
}

static dspy_status open_program(dspy_server *s, struct prog *pg,
                                const struct dspy_serve_program *sp, struct dspy_error *err)
{
    dspy_status rc;
    const char *send_as = NULL;
    if (!sp->name || !*sp->name || strchr(sp->name, '/'))
        return dspy__err(err, DSPY_EINVAL, "program name '%s' must be non-empty, without '/'",
                         sp->name ? sp->name : "");
    if (!(pg->name = dspy_strdup(sp->name)))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    if ((rc = dspy_program_load(sp->program_path, &pg->p, err)))
        return rc;
    if (sp->state_path && (rc = dspy_program_load_state(pg->p, sp->state_path, err)))
        return rc;
    const char *model = dspy_program_model(pg->p);
    if (!model)
        model = "default";
    int up = dspy__serve_route_model(s, model, &send_as);
    if (up < 0)
        up = 0; /* a model no upstream names: the first one (it will say if it disagrees) */
    const struct dspy__serve_upstream *u = &s->ups[up];
    struct dspy_lm_options lo = DSPY_LM_OPTIONS_INIT;
    lo.base_url = u->base_url;
    lo.model = send_as ? send_as : model;
    if (u->api_key_env)
        lo.api_key_env = u->api_key_env;
    lo.api_key_file = u->api_key_file;
    lo.cache = s->cache;
    lo.cache_ctl = s->cache_ctl;
    if ((rc = dspy_lm_new(&lo, &pg->lm, err)))
        return rc;
    if (!(pg->listing = listing(pg)))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    return DSPY_OK;
}

dspy_status dspy__serve_programs_open(dspy_server *s, const struct dspy_serve_options *o,
                                      struct dspy_error *err)
{
    struct dspy__serve_programs *ps;
    dspy_status rc = DSPY_OK;
    if (!o->nprograms)
        return DSPY_OK;
    if (!(ps = s->programs = dspy_calloc(1, sizeof(*ps))))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    pthread_mutex_init(&ps->lock, NULL);
    pthread_cond_init(&ps->cond, NULL);
    if (!(ps->v = dspy_calloc(o->nprograms, sizeof(*ps->v))))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    for (size_t i = 0; i < o->nprograms && !rc; i++) {
        if (find(ps, o->programs[i].name ? o->programs[i].name : "",
                 o->programs[i].name ? strlen(o->programs[i].name) : 0))
            return dspy__err(err, DSPY_EINVAL, "program name '%s' is given twice",
                             o->programs[i].name);
        ps->n++;
        if ((rc = open_program(s, &ps->v[i], &o->programs[i], err)))
            dspy__err_prefix(err, "program %s: ", o->programs[i].name ? o->programs[i].name : "");
    }
    if (rc)
        return rc;
    size_t want = o->program_workers ? o->program_workers : DEFAULT_WORKERS;
    if (!(ps->threads = dspy_calloc(want, sizeof(pthread_t))))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    for (; ps->nthreads < want; ps->nthreads++)
        if (pthread_create(&ps->threads[ps->nthreads], NULL, worker, ps))
            return dspy__err(err, DSPY_ENOMEM, "cannot start the program workers");
    return DSPY_OK;
}

void dspy__serve_programs_close(dspy_server *s)
{
    struct dspy__serve_programs *ps = s->programs;
    if (!ps)
        return;
    pthread_mutex_lock(&ps->lock);
    ps->stop = true;
    pthread_cond_broadcast(&ps->cond);
    pthread_mutex_unlock(&ps->lock);
    for (size_t i = 0; i < ps->nthreads; i++)
        pthread_join(ps->threads[i], NULL);
    while (ps->head) { /* never started: the HTTP side already ended their connections */
        struct job *j = ps->head;
        ps->head = j->next;
        dspy__srv_req_unref(j->ctx->req);
        dspy_free(j);
    }
    for (size_t i = 0; i < ps->n; i++) {
        json_decref(ps->v[i].listing);
        dspy_lm_free(ps->v[i].lm);
        dspy_program_free(ps->v[i].p);
        dspy_free(ps->v[i].name);
    }
    dspy_free(ps->v);
    dspy_free(ps->threads);
    pthread_mutex_destroy(&ps->lock);
    pthread_cond_destroy(&ps->cond);
    dspy_free(ps);
    s->programs = NULL;
}

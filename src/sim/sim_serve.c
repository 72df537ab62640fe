/* The simulator's HTTP side (sim layer): routes, API key check, body parsing into
 * OpenAI-style errors, the fault and jitter sequence, the capacity/queue model, counters,
 * recording, and the small endpoints (embeddings, models, health, admin). Chat completions
 * live in sim_chat.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "sim_int.h"

static const char *const fault_names[DSPY__SIM_F_COUNT] = {
    "429", "500", "503", "timeout", "drop", "malformed", "truncate",
};

/* ---- Draws, faults, counters ---- */

enum dspy__sim_fault dspy__sim_draw(struct dspy_sim *s, double *jitter_u)
{
    uint64_t k = atomic_fetch_add(&s->attempts, 1);
    double u = dspy__sim_unit(dspy__sim_mix(s->o.seed ^ 0xfa17ull, k));
    *jitter_u = 2.0 * dspy__sim_unit(dspy__sim_mix(s->o.seed ^ 0x7177ull, k)) - 1.0;
    const double rates[DSPY__SIM_F_COUNT] = { s->o.fail_429,     s->o.fail_500,
                                              s->o.fail_503,     s->o.fail_timeout,
                                              s->o.fail_drop,    s->o.fail_malformed,
                                              s->o.fail_truncate };
    double acc = 0;
    for (int f = 0; f < DSPY__SIM_F_COUNT; f++) {
        acc += rates[f];
        if (u < acc)
            return (enum dspy__sim_fault)f;
    }
    return DSPY__SIM_F_NONE;
}

void dspy__sim_count(int status, void *sim)
{
    struct dspy_sim *s = sim;
    if (status >= 100 && status < 600)
        atomic_fetch_add(&s->by_status[status], 1);
}

uint64_t dspy__sim_ns(const struct dspy_sim *s, double ms, double u)
{
    double v = ms * (1.0 + s->o.jitter * u);
    return v > 0 ? (uint64_t)(v * 1e6) : 0;
}

bool dspy__sim_fault_answer(struct dspy_sim *s, struct dspy__srv_req *req, enum dspy__sim_fault f)
{
    char retry[32];
    const char *hdr[] = { "Retry-After", retry, NULL };
    snprintf(retry, sizeof(retry), "%g", s->o.retry_after_s);
    switch (f) {
    case DSPY__SIM_F_429:
        dspy__srv_send_error(req, 429, "rate_limit_error", NULL, "rate_limit_exceeded", hdr,
                             "Rate limit reached (simulated fault). Retry after %s s.", retry);
        break;
    case DSPY__SIM_F_500:
        dspy__srv_send_error(req, 500, "server_error", NULL, NULL, NULL,
                             "The server had an error while processing your request "
                             "(simulated fault).");
        break;
    case DSPY__SIM_F_503:
        dspy__srv_send_error(req, 503, "server_error", NULL, "overloaded", hdr,
                             "The server is overloaded (simulated fault).");
        break;
    case DSPY__SIM_F_TIMEOUT:
        dspy__srv_drop(req, dspy__now_ns() + (uint64_t)(s->o.timeout_hold_ms * 1e6));
        break;
    case DSPY__SIM_F_DROP: dspy__srv_drop(req, 0); break;
    default: return false;
    }
    atomic_fetch_add(&s->faults[f], 1);
    return true;
}

bool dspy__sim_auth(struct dspy_sim *s, struct dspy__srv_req *req)
{
    if (!s->api_key)
        return true;
    const char *h = dspy__srv_req_header(req, "Authorization");
    if (h && !strncmp(h, "Bearer ", 7) && !strcmp(h + 7, s->api_key))
        return true;
    dspy__srv_send_error(req, 401, "invalid_request_error", NULL, "invalid_api_key", NULL,
                         h ? "Incorrect API key provided." : "You didn't provide an API key.");
    return false;
}

json_t *dspy__sim_body_json(struct dspy__srv_req *req)
{
    size_t len;
    const char *body = dspy__srv_req_body(req, &len);
    json_error_t e;
    if (!len) {
        dspy__srv_send_error(req, 400, "invalid_request_error", NULL, "invalid_json", NULL,
                             "We could not parse the JSON body of your request: the body is "
                             "empty.");
        return NULL;
    }
    size_t bad = dspy__sim_utf8_check(body, len);
    if (bad != len) {
        dspy__srv_send_error(req, 400, "invalid_request_error", NULL, "invalid_utf8", NULL,
                             "The request body is not valid UTF-8 (byte offset %zu).", bad);
        return NULL;
    }
    json_t *j = json_loadb(body, len, JSON_ALLOW_NUL, &e);
    if (!j) {
        dspy__srv_send_error(req, 400, "invalid_request_error", NULL, "invalid_json", NULL,
                             "We could not parse the JSON body of your request: %s (line %d, "
                             "column %d).",
                             e.text, e.line, e.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        dspy__srv_send_error(req, 400, "invalid_request_error", NULL, "invalid_json", NULL,
                             "The request body must be a JSON object.");
        return NULL;
    }
    return j;
}

void dspy__sim_send_json(struct dspy_sim *s, struct dspy__srv_req *req, struct dspy_buf *body,
                         uint64_t due, enum dspy__sim_fault f)
{
    struct dspy__srv_reply r = { 200, "application/json", NULL, body->ptr, body->len, NULL };
    if (f == DSPY__SIM_F_MALFORMED) {
        /* Cut the JSON short and append garbage: a 200 whose body does not parse. */
        body->len = body->len / 2;
        dspy__buf_adds(body, "<<simulated malformed body\n");
        r.body = body->ptr;
        r.len = body->len;
        atomic_fetch_add(&s->faults[f], 1);
    } else if (f == DSPY__SIM_F_TRUNCATE) {
        atomic_fetch_add(&s->faults[f], 1);
        dspy__srv_send_truncated(req, &r, due, body->len / 2);
        return;
    }
    dspy__srv_send(req, &r, due);
}

/* ---- Capacity: C slots, FIFO; a request starts when the earliest slot frees up. ---- */

static void heap_up(uint64_t *h, size_t i)
{
    while (i > 0 && h[(i - 1) / 2] > h[i]) {
        uint64_t t = h[i];
        h[i] = h[(i - 1) / 2];
        h[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

static void heap_down(uint64_t *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l] < h[m])
            m = l;
        if (r < n && h[r] < h[m])
            m = r;
        if (m == i)
            return;
        uint64_t t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static size_t queued_now(struct dspy_sim *s, uint64_t now)
{
    while (s->qlen && s->queue[0] <= now) {
        s->queue[0] = s->queue[--s->qlen];
        heap_down(s->queue, s->qlen, 0);
    }
    return s->qlen;
}

bool dspy__sim_admit(struct dspy_sim *s, uint64_t now, uint64_t service_ns, uint64_t *start)
{
    bool ok = true;
    *start = now;
    if (!s->o.capacity)
        return true;
    pthread_mutex_lock(&s->qlock);
    size_t waiting = queued_now(s, now);
    uint64_t st = s->slots[0] > now ? s->slots[0] : now;
    if (st > now && s->o.max_queue && waiting >= s->o.max_queue) {
        ok = false;
        goto out;
    }
    if (st > now) {
        if (s->qlen == s->qcap) {
            size_t cap = s->qcap ? s->qcap * 2 : 64;
            uint64_t *q = dspy_realloc(s->queue, cap * sizeof(*q));
            if (!q) {
                ok = false;
                goto out;
            }
            s->queue = q;
            s->qcap = cap;
        }
        s->queue[s->qlen++] = st;
        heap_up(s->queue, s->qlen - 1);
    }
    s->slots[0] = st + service_ns;
    heap_down(s->slots, s->o.capacity, 0);
    *start = st;
out:
    pthread_mutex_unlock(&s->qlock);
    return ok;
}

void dspy__sim_queue_full(struct dspy_sim *s, struct dspy__srv_req *req)
{
    char retry[32];
    const char *hdr[] = { "Retry-After", retry, NULL };
    int status = s->o.queue_full_status;
    snprintf(retry, sizeof(retry), "%g", s->o.retry_after_s);
    dspy__srv_send_error(req, status, status == 429 ? "rate_limit_error" : "server_error", NULL,
                         "queue_full", hdr,
                         "The server is at capacity: %u requests in service and %u waiting.",
                         s->o.capacity, s->o.max_queue);
}

/* ---- Recording ---- */

/* Raw text as a JSON string, invalid UTF-8 bytes replaced by U+FFFD. */
static json_t *lossy_string(const char *p, size_t n)
{
    struct dspy_buf b;
    dspy__buf_init(&b, n * 3 + 16);
    size_t i = 0;
    while (i < n) {
        size_t ok = dspy__sim_utf8_check(p + i, n - i);
        dspy__buf_add(&b, p + i, ok);
        i += ok;
        if (i < n) {
            dspy__buf_adds(&b, "\xef\xbf\xbd");
            i++;
        }
    }
    json_t *s = json_stringn(b.ptr ? b.ptr : "", b.len);
    dspy__buf_release(&b);
    return s;
}

void dspy__sim_record(struct dspy__srv_req *req, void *ud)
{
    struct dspy_sim *s = ud;
    size_t len;
    const char *body = dspy__srv_req_body(req, &len);
    json_error_t e;
    json_t *line = json_object();
    json_t *parsed = len ? json_loadb(body, len, JSON_ALLOW_NUL, &e) : NULL;
    uint64_t size = dspy__srv_req_body_size(req);
    if (!parsed)
        parsed = size > len ? json_null() : lossy_string(body, len);
    json_object_set_new(line, "ts", json_real(dspy__wall_s()));
    json_object_set_new(line, "method", json_string(dspy__srv_req_method(req)));
    json_object_set_new(line, "path",
                        lossy_string(dspy__srv_req_path(req), strlen(dspy__srv_req_path(req))));
    json_object_set_new(line, "body", parsed);
    json_object_set_new(line, "body_bytes", json_integer((json_int_t)size));
    if (size > len)
        json_object_set_new(line, "too_big", json_true());
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    if (!text)
        return;
    pthread_mutex_lock(&s->record_lock);
    fputs(text, s->record);
    fputc('\n', s->record);
    fflush(s->record);
    pthread_mutex_unlock(&s->record_lock);
    free(text);
}

/* ---- Embeddings ---- */

static dspy_status add_embedding(struct dspy_sim *s, struct dspy_buf *b, const char *text, size_t n,
                                 unsigned dim, bool base64, size_t index, float *vec)
{
    dspy_status rc = DSPY_OK;
    if (s->minilm)
        rc = dspy__sim_minilm_embed(s, text, n, vec);
    else
        dspy__sim_embed(text, n, vec, dim);
    if (!rc)
        rc = dspy__buf_addf(b, "%s{\"object\":\"embedding\",\"index\":%zu,\"embedding\":",
                            index ? "," : "", index);
    if (!rc && base64) {
        rc = dspy__buf_addc(b, '"');
        if (!rc)
            rc = dspy__buf_add_base64(b, vec,
                                      dim * sizeof(float)); /* little-endian float32, as OpenAI */
        if (!rc)
            rc = dspy__buf_addc(b, '"');
    } else if (s->minilm && !rc) {
        char json[DSPY_EMBEDDING_JSON_MAX];
        rc = dspy__buf_add(b, json, dspy_embedding_json(vec, dim, json, sizeof(json)));
    } else {
        for (unsigned d = 0; !rc && d < dim; d++)
            rc = dspy__buf_addf(b, "%s%.6g", d ? "," : "[", (double)vec[d]);
        if (!rc)
            rc = dspy__buf_addc(b, ']');
    }
    return rc ? rc : dspy__buf_addc(b, '}');
}

/* Token-id inputs become words so that equal ids embed alike. */
static void tokens_text(json_t *arr, struct dspy_buf *t)
{
    size_t i;
    json_t *v;
    dspy__buf_reset(t);
    json_array_foreach(arr, i, v) {
        dspy__buf_addf(t, "t%lld ", (long long)json_integer_value(v));
    }
}

static bool all_ints(json_t *arr)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        if (!json_is_integer(v))
            return false;
    }
    return json_array_size(arr) > 0;
}

static void embeddings(struct dspy__srv_req *req, void *ud)
{
    struct dspy_sim *s = ud;
    struct dspy_buf out, tmp;
    float *vec = NULL;
    json_t *body;
    if (!dspy__sim_auth(s, req) || !(body = dspy__sim_body_json(req)))
        return;
    dspy__buf_init(&out, (size_t)1 << 30);
    dspy__buf_init(&tmp, (size_t)1 << 24);
    json_t *input = json_object_get(body, "input");
    json_t *model = json_object_get(body, "model");
    json_t *fmt = json_object_get(body, "encoding_format");
    json_t *dims = json_object_get(body, "dimensions");
    const char *bad = NULL, *param = "input";
    bool b64 = json_is_string(fmt) && !strcmp(json_string_value(fmt), "base64");
    unsigned dim = s->minilm ? DSPY_EMBED_DIM : s->o.embed_dim;
    if (!input)
        bad = "Missing required parameter: 'input'.";
    else if (json_is_string(input) && !json_string_length(input))
        bad = "'input' must not be an empty string.";
    else if (!json_is_string(input) &&
             !(json_is_array(input) && json_array_size(input) && json_array_size(input) <= 2048))
        bad = "'input' must be a non-empty string or an array of 1 to 2048 items.";
    else if (model && !json_is_string(model))
        bad = "Invalid type for 'model': expected a string.", param = "model";
    else if (fmt && !json_is_null(fmt) && !b64 &&
             !(json_is_string(fmt) && !strcmp(json_string_value(fmt), "float")))
        bad = "'encoding_format' must be 'float' or 'base64'.", param = "encoding_format";
    else if (dims && !json_is_null(dims) &&
             !(json_is_integer(dims) && json_integer_value(dims) >= 1 &&
               json_integer_value(dims) <= 8192))
        bad = "'dimensions' must be an integer from 1 to 8192.", param = "dimensions";
    else if (s->minilm && json_is_integer(dims) && json_integer_value(dims) != DSPY_EMBED_DIM)
        bad = "This model (all-MiniLM-L6-v2) has 384 dimensions.", param = "dimensions";
    size_t i;
    json_t *it;
    if (!bad && json_is_array(input) && !all_ints(input))
        json_array_foreach(input, i, it) {
            if (!((json_is_string(it) && json_string_length(it)) || all_ints(it))) {
                bad = "Each item of 'input' must be a non-empty string or an array of token ids.";
                break;
            }
        }
    if (bad) {
        dspy__srv_send_error(req, 400, "invalid_request_error", param, "invalid_value", NULL, "%s",
                             bad);
        goto out;
    }
    if (json_is_integer(dims))
        dim = (unsigned)json_integer_value(dims);
    double ju;
    enum dspy__sim_fault f = dspy__sim_draw(s, &ju);
    if (dspy__sim_fault_answer(s, req, f))
        goto out;
    vec = dspy_malloc(dim * sizeof(float));
    dspy_status rc = vec ? dspy__buf_adds(&out, "{\"object\":\"list\",\"data\":[") : DSPY_ENOMEM;
    size_t tokens = 0;
    bool one = json_is_string(input) || all_ints(input);
    for (size_t k = 0; !rc && k < (one ? 1 : json_array_size(input)); k++) {
        json_t *x = one ? input : json_array_get(input, k);
        const char *text = json_string_value(x);
        size_t n = json_string_length(x);
        if (!text) {
            tokens_text(x, &tmp);
            text = tmp.ptr ? tmp.ptr : "";
            n = tmp.len;
            tokens += json_array_size(x);
        } else {
            tokens += s->minilm ? dspy__sim_minilm_tokens(s, text, n) : dspy__sim_tokens(text, n);
        }
        rc = add_embedding(s, &out, text, n, dim, b64, k, vec);
    }
    if (!rc)
        rc = dspy__buf_adds(&out, "],\"model\":");
    const char *m = model ? json_string_value(model) : s->model;
    if (!rc)
        rc = dspy__buf_add_json_str(&out, m, strlen(m));
    if (!rc)
        rc = dspy__buf_addf(&out, ",\"usage\":{\"prompt_tokens\":%zu,\"total_tokens\":%zu}}\n",
                            tokens, tokens);
    if (rc) {
        dspy__srv_send_error(req, 500, "server_error", NULL, NULL, NULL,
                             "The simulator could not build the response (%s).", dspy_strerror(rc));
        goto out;
    }
    uint64_t now = dspy__now_ns(), start;
    double ms = s->o.latency_ms >= 0 ? s->o.latency_ms : s->o.ttft_ms;
    uint64_t service = dspy__sim_ns(s, ms, ju);
    if (!dspy__sim_admit(s, now, service, &start)) {
        dspy__sim_queue_full(s, req);
        goto out;
    }
    dspy__sim_send_json(s, req, &out, start + service, f);
out:
    dspy_free(vec);
    dspy__buf_release(&out);
    dspy__buf_release(&tmp);
    json_decref(body);
}

/* ---- Models, health, admin ---- */

static void send_text(struct dspy__srv_req *req, int status, struct dspy_buf *b)
{
    struct dspy__srv_reply r = { status, "application/json", NULL, b->ptr, b->len, NULL };
    dspy__srv_send(req, &r, 0);
    dspy__buf_release(b);
}

static void models(struct dspy__srv_req *req, void *ud)
{
    struct dspy_sim *s = ud;
    struct dspy_buf b;
    if (!dspy__sim_auth(s, req))
        return;
    dspy__buf_init(&b, 4096);
    const char *path = dspy__srv_req_path(req);
    bool one = strlen(path) > strlen("/v1/models/");
    const char *id = one ? path + strlen("/v1/models/") : s->model;
    if (!one)
        dspy__buf_adds(&b, "{\"object\":\"list\",\"data\":[");
    dspy__buf_adds(&b, "{\"id\":");
    dspy__buf_add_json_str(&b, id, strlen(id));
    dspy__buf_adds(&b, ",\"object\":\"model\",\"created\":0,\"owned_by\":\"dspyc-sim\"}");
    dspy__buf_adds(&b, one ? "\n" : "]}\n");
    send_text(req, 200, &b);
}

static void health(struct dspy__srv_req *req, void *ud)
{
    struct dspy_buf b;
    (void)ud;
    dspy__buf_init(&b, 256);
    dspy__buf_adds(&b, "{\"status\":\"ok\",\"simulator\":true}\n");
    send_text(req, 200, &b);
}

static void pause_all(struct dspy__srv_req *req, void *ud)
{
    struct dspy_sim *s = ud;
    const char *ms = dspy__srv_req_query(req, "ms");
    char *end = NULL;
    double v = ms ? strtod(ms, &end) : -1;
    if (!ms || *end || !(v >= 0 && v <= 3600e3)) {
        dspy__srv_send_error(req, 400, "invalid_request_error", "ms", "invalid_value", NULL,
                             "Give the pause as ?ms=N with N from 0 to 3600000.");
        return;
    }
    dspy__srv_pause(s->srv, (uint64_t)v);
    struct dspy_buf b;
    dspy__buf_init(&b, 256);
    dspy__buf_addf(&b, "{\"paused_ms\":%.0f}\n", v);
    send_text(req, 200, &b);
}

static void stats(struct dspy__srv_req *req, void *ud)
{
    struct dspy_sim *s = ud;
    struct dspy_sim_stats st;
    struct dspy_buf b;
    uint64_t now = dspy__now_ns();
    size_t queued = 0;
    dspy_sim_stats(s, &st);
    if (s->o.capacity) {
        pthread_mutex_lock(&s->qlock);
        queued = queued_now(s, now);
        pthread_mutex_unlock(&s->qlock);
    }
    dspy__buf_init(&b, 1 << 16);
    dspy__buf_addf(&b,
                   "{\"simulator\":\"dspyc sim\",\"uptime_s\":%.3f,\"requests\":%llu,"
                   "\"by_status\":{",
                   (double)(now - s->start_ns) / 1e9, (unsigned long long)st.requests);
    bool first = true;
    for (int code = 100; code < 600; code++) {
        uint64_t n = atomic_load(&s->by_status[code]);
        if (n) {
            dspy__buf_addf(&b, "%s\"%d\":%llu", first ? "" : ",", code, (unsigned long long)n);
            first = false;
        }
    }
    dspy__buf_adds(&b, "},\"faults\":{");
    for (int f = 0; f < DSPY__SIM_F_COUNT; f++)
        dspy__buf_addf(&b, "%s\"%s\":%llu", f ? "," : "", fault_names[f],
                       (unsigned long long)atomic_load(&s->faults[f]));
    /* The stats request itself is in flight; leave it out. */
    dspy__buf_addf(&b,
                   "},\"in_flight\":%llu,\"in_flight_peak\":%llu,\"waiting\":%llu,"
                   "\"queued\":%zu,\"too_big\":%llu,\"streams\":%llu,\"completion_tokens\":%llu,",
                   (unsigned long long)(st.in_flight ? st.in_flight - 1 : 0),
                   (unsigned long long)st.in_flight_peak, (unsigned long long)st.waiting, queued,
                   (unsigned long long)st.too_big, (unsigned long long)st.streams,
                   (unsigned long long)st.completion_tokens);
    dspy__buf_addf(&b,
                   "\"connections\":%llu,\"body_bytes\":%llu,\"evicted\":%llu,"
                   "\"header_timeouts\":%llu,\"body_timeouts\":%llu,\"bodies_refused\":%llu}\n",
                   (unsigned long long)st.connections, (unsigned long long)st.body_bytes,
                   (unsigned long long)st.evicted, (unsigned long long)st.header_timeouts,
                   (unsigned long long)st.body_timeouts, (unsigned long long)st.bodies_refused);
    send_text(req, 200, &b);
}

dspy_status dspy__sim_routes(struct dspy_sim *s)
{
    dspy_status rc = dspy__srv_route(s->srv, "POST", "/v1/chat/completions", 0, dspy__sim_chat, s);
    if (!rc)
        rc = dspy__srv_route(s->srv, "POST", "/v1/embeddings", 0, embeddings, s);
    if (!rc)
        rc = dspy__srv_route(s->srv, "GET", "/v1/models", 0, models, s);
    if (!rc)
        rc = dspy__srv_route(s->srv, "GET", "/v1/models/*", 0, models, s);
    if (!rc)
        rc = dspy__srv_route(s->srv, "GET", "/health", 0, health, s);
    if (!rc)
        rc = dspy__srv_route(s->srv, "POST", "/admin/pause", DSPY__SRV_NO_PAUSE, pause_all, s);
    if (!rc)
        rc = dspy__srv_route(s->srv, "GET", "/admin/stats", DSPY__SRV_NO_PAUSE, stats, s);
    return rc;
}

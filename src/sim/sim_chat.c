/* POST /v1/chat/completions of the simulator (sim layer): validates the request as OpenAI
 * does, answers every choice through dspy__sim_answer, and sends the completion whole or as an
 * SSE stream paced by the latency model, with faults applied. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "sim_int.h"

#define IMAGE_TOKENS 85
#define REPLY_MAX ((size_t)16 << 20)

struct choice {
    struct dspy_buf text;
    size_t tokens;
    bool length; /* cut by max_tokens */
};

static const char *json_kind(json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* ---- Validation ---- */

void dspy__sim_chat_init(struct dspy__sim_chat *c)
{
    memset(c, 0, sizeof(*c));
    dspy__buf_init(&c->parts, (size_t)64 << 20);
}

void dspy__sim_chat_release(struct dspy__sim_chat *c)
{
    dspy_free(c->msgs);
    c->msgs = NULL;
    dspy__buf_release(&c->parts);
}

static bool bad(struct dspy__sim_bad *why, const char *param, const char *code, const char *msg)
{
    snprintf(why->param, sizeof(why->param), "%s", param);
    why->code = code;
    snprintf(why->message, sizeof(why->message), "%s", msg);
    return false;
}

static bool bad_type(struct dspy__sim_bad *why, const char *param, json_t *v, const char *want)
{
    char msg[256];
    snprintf(msg, sizeof(msg), "Invalid type for '%s': expected %s, but got %s instead.", param,
             want, json_kind(v));
    return bad(why, param, "invalid_type", msg);
}

/* Answer 400 with what dspy__sim_chat_parse found. */
static void send_bad(struct dspy__srv_req *req, const struct dspy__sim_bad *why)
{
    dspy__srv_send_error(req, 400, "invalid_request_error", why->param, why->code, NULL, "%s",
                         why->message);
}

static bool opt_int(struct dspy__sim_bad *why, json_t *body, const char *key, long lo, long hi,
                    long *out)
{
    json_t *v = json_object_get(body, key);
    char msg[256];
    if (!v || json_is_null(v))
        return true;
    if (!json_is_integer(v))
        return bad_type(why, key, v, "an integer");
    if (json_integer_value(v) < lo || json_integer_value(v) > hi) {
        snprintf(msg, sizeof(msg), "Invalid value for '%s': %lld is not in [%ld, %ld].", key,
                 (long long)json_integer_value(v), lo, hi);
        return bad(why, key, "invalid_value", msg);
    }
    *out = (long)json_integer_value(v);
    return true;
}

static bool opt_bool(struct dspy__sim_bad *why, json_t *obj, const char *key, const char *param,
                     bool *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_boolean(v))
        return bad_type(why, param, v, "a boolean");
    *out = json_is_true(v);
    return true;
}

static enum dspy__sim_role role_of(const char *r)
{
    if (!strcmp(r, "system") || !strcmp(r, "developer"))
        return DSPY__SIM_ROLE_SYSTEM;
    if (!strcmp(r, "user"))
        return DSPY__SIM_ROLE_USER;
    if (!strcmp(r, "assistant"))
        return DSPY__SIM_ROLE_ASSISTANT;
    if (!strcmp(r, "tool") || !strcmp(r, "function"))
        return DSPY__SIM_ROLE_OTHER;
    return (enum dspy__sim_role) - 1;
}

/* Text parts of an array content go into c->parts; their views are set afterwards because
 * the buffer may move while it grows. */
static bool message_texts(struct dspy__sim_bad *why, json_t *msgs, struct dspy__sim_chat *c,
                          size_t *offs, size_t *lens)
{
    char param[64];
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        snprintf(param, sizeof(param), "messages[%zu]", i);
        if (!json_is_object(m))
            return bad_type(why, param, m, "an object");
        json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
        snprintf(param, sizeof(param), "messages[%zu].role", i);
        if (!json_is_string(role))
            return role ? bad_type(why, param, role, "a string")
                        : bad(why, param, "missing_required_parameter",
                              "Missing required parameter: 'role' of a message.");
        if ((int)role_of(json_string_value(role)) < 0)
            return bad(why, param, "invalid_value",
                       "Invalid value for 'role': use system, developer, user, assistant or tool.");
        c->msgs[i].role = role_of(json_string_value(role));
        offs[i] = lens[i] = 0;
        snprintf(param, sizeof(param), "messages[%zu].content", i);
        if (!content || json_is_null(content) || json_is_string(content))
            continue;
        if (!json_is_array(content))
            return bad_type(why, param, content, "a string or an array of parts");
        offs[i] = c->parts.len;
        size_t k;
        json_t *part;
        json_array_foreach(content, k, part) {
            const char *type = json_string_value(json_object_get(part, "type"));
            json_t *text = json_object_get(part, "text");
            if (!type)
                return bad(why, param, "invalid_value", "Each content part needs a 'type'.");
            if (!strcmp(type, "text")) {
                if (!json_is_string(text))
                    return bad(why, param, "invalid_value", "A text part needs a 'text' string.");
                if ((c->parts.len > offs[i] && dspy__buf_addc(&c->parts, '\n')) ||
                    dspy__buf_add(&c->parts, json_string_value(text), json_string_length(text)))
                    return bad(why, param, "invalid_value", "The message text is too long.");
            } else {
                c->images++;
            }
        }
        lens[i] = c->parts.len - offs[i];
    }
    json_array_foreach(msgs, i, m) {
        json_t *content = json_object_get(m, "content");
        if (json_is_string(content))
            c->msgs[i].text = (struct dspy__sim_view){ json_string_value(content),
                                                       json_string_length(content) };
        else if (json_is_array(content) && lens[i]) /* image-only content has no text */
            c->msgs[i].text = (struct dspy__sim_view){ c->parts.ptr + offs[i], lens[i] };
        else
            c->msgs[i].text = (struct dspy__sim_view){ "", 0 };
    }
    return true;
}

bool dspy__sim_chat_parse(json_t *body, struct dspy__sim_chat *c, struct dspy__sim_bad *why)
{
    json_t *model = json_object_get(body, "model"), *msgs = json_object_get(body, "messages");
    if (!model)
        return bad(why, "model", "missing_required_parameter",
                   "Missing required parameter: 'model'.");
    if (!json_is_string(model))
        return bad_type(why, "model", model, "a string");
    c->model = json_string_value(model);
    if (!msgs)
        return bad(why, "messages", "missing_required_parameter",
                   "Missing required parameter: 'messages'.");
    if (!json_is_array(msgs))
        return bad_type(why, "messages", msgs, "an array");
    if (!json_array_size(msgs))
        return bad(why, "messages", "invalid_value", "'messages' must not be empty.");
    long n = 1, mt = 0, mct = 0;
    if (!opt_int(why, body, "n", 1, DSPY__SIM_MAX_CHOICES, &n) ||
        !opt_int(why, body, "max_tokens", 1, 1L << 30, &mt) ||
        !opt_int(why, body, "max_completion_tokens", 1, 1L << 30, &mct) ||
        !opt_bool(why, body, "stream", "stream", &c->stream) ||
        !opt_bool(why, body, "ignore_eos", "ignore_eos", &c->ignore_eos))
        return false;
    c->n = (size_t)n;
    c->max_tokens = mct ? mct : mt;
    json_t *t = json_object_get(body, "temperature");
    if (t && !json_is_null(t)) {
        if (!json_is_number(t))
            return bad_type(why, "temperature", t, "a number");
        c->temperature = json_number_value(t);
        if (c->temperature < 0 || c->temperature > 2)
            return bad(why, "temperature", "invalid_value",
                       "Invalid value for 'temperature': it must be from 0 to 2.");
    }
    json_t *so = json_object_get(body, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so))
            return bad_type(why, "stream_options", so, "an object");
        if (!opt_bool(why, so, "include_usage", "stream_options.include_usage", &c->include_usage))
            return false;
    }
    json_t *rf = json_object_get(body, "response_format");
    if (rf && !json_is_null(rf)) {
        const char *type = json_string_value(json_object_get(rf, "type"));
        if (!json_is_object(rf) || !type)
            return bad(why, "response_format", "invalid_value",
                       "'response_format' must be an object with a 'type'.");
        if (!strcmp(type, "json_object"))
            c->json_object = true;
        else if (!strcmp(type, "json_schema"))
            c->schema = json_object_get(json_object_get(rf, "json_schema"), "schema");
        else if (strcmp(type, "text"))
            return bad(why, "response_format.type", "invalid_value",
                       "'response_format.type' must be text, json_object or json_schema.");
        if (c->schema && !json_is_object(c->schema))
            c->schema = NULL;
        if (!strcmp(type, "json_schema") && !c->schema)
            c->json_object = true;
    }
    c->n_msgs = json_array_size(msgs);
    c->msgs = dspy_calloc(c->n_msgs, sizeof(*c->msgs));
    size_t *offs = dspy_calloc(c->n_msgs * 2, sizeof(size_t));
    bool ok = c->msgs && offs ? message_texts(why, msgs, c, offs, offs + c->n_msgs)
                              : bad(why, "messages", "invalid_value", "Too many messages.");
    dspy_free(offs);
    return ok;
}

uint64_t dspy__sim_request_hash(json_t *body)
{
    static const char *const drop[] = {
        "stream", "stream_options", "n",        "max_tokens", "max_completion_tokens",
        "user",   "ignore_eos",     "metadata", "store"
    };
    json_t *copy = json_copy(body);
    for (size_t i = 0; copy && i < sizeof(drop) / sizeof(drop[0]); i++)
        json_object_del(copy, drop[i]);
    char *text = copy ? json_dumps(copy, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    uint64_t h = text ? dspy__sim_hash(0x5eedull, text, strlen(text)) : 0;
    free(text);
    json_decref(copy);
    return h;
}

/* ---- Responses ---- */

static dspy_status add_str(struct dspy_buf *b, const char *s, size_t n)
{
    return dspy__buf_add_json_str(b, s, n);
}

static dspy_status head(struct dspy_buf *b, const char *id, const char *object, long created,
                        const char *model)
{
    dspy_status rc = dspy__buf_addf(b,
                                    "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%ld,"
                                    "\"model\":",
                                    id, object, created);
    if (!rc)
        rc = add_str(b, model, strlen(model));
    return rc ? rc : dspy__buf_adds(b, ",\"system_fingerprint\":\"dspyc-sim\",\"choices\":[");
}

static dspy_status usage(struct dspy_buf *b, size_t prompt, size_t completion)
{
    return dspy__buf_addf(b,
                          "\"usage\":{\"prompt_tokens\":%zu,\"completion_tokens\":%zu,"
                          "\"total_tokens\":%zu}",
                          prompt, completion, prompt + completion);
}

static dspy_status whole_body(struct dspy_buf *b, const struct dspy__sim_chat *c, const char *id,
                              long created, struct choice *ch, size_t prompt, size_t completion)
{
    dspy_status rc = head(b, id, "chat.completion", created, c->model);
    for (size_t i = 0; !rc && i < c->n; i++) {
        rc = dspy__buf_addf(b, "%s{\"index\":%zu,\"message\":{\"role\":\"assistant\",\"content\":",
                            i ? "," : "", i);
        if (!rc)
            rc = add_str(b, ch[i].text.ptr ? ch[i].text.ptr : "", ch[i].text.len);
        if (!rc)
            rc = dspy__buf_addf(b, ",\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"%s\"}",
                                ch[i].length ? "length" : "stop");
    }
    if (!rc)
        rc = dspy__buf_adds(b, "],");
    if (!rc)
        rc = usage(b, prompt, completion);
    return rc ? rc : dspy__buf_adds(b, "}\n");
}

struct streamer {
    struct dspy_sim *s;
    struct dspy__srv_req *req;
    const struct dspy__sim_chat *c;
    const char *id;
    long created;
    struct dspy_buf ev;
    size_t events, cut; /* cut: stop after this many events (truncate fault), 0 = never */
    bool malformed;     /* garble the first content event */
    bool stopped;
};

/* One SSE event; delta is the inner JSON of "delta" or NULL for a usage-only chunk. */
static void event(struct streamer *st, size_t index, const char *delta, const char *piece,
                  size_t plen, const char *finish, uint64_t due)
{
    struct dspy_buf *b = &st->ev;
    if (st->stopped)
        return;
    if (st->cut && st->events == st->cut) {
        dspy__srv_stream_end(st->req, due, true);
        st->stopped = true;
        return;
    }
    dspy__buf_reset(b);
    dspy_status rc = dspy__buf_adds(b, "data: ");
    if (!rc)
        rc = head(b, st->id, "chat.completion.chunk", st->created, st->c->model);
    if (!rc && delta) {
        rc = dspy__buf_addf(b, "{\"index\":%zu,\"delta\":{%s", index, delta);
        if (!rc && piece)
            rc = add_str(b, piece, plen);
        if (!rc)
            rc = dspy__buf_addf(b, "},\"logprobs\":null,\"finish_reason\":%s%s%s}]",
                                finish ? "\"" : "", finish ? finish : "null", finish ? "\"" : "");
        if (!rc && st->c->include_usage)
            rc = dspy__buf_adds(b, ",\"usage\":null");
        if (!rc)
            rc = dspy__buf_adds(b, "}\n\n");
    }
    if (!rc && st->malformed && piece) {
        b->len = b->len / 2;
        rc = dspy__buf_adds(b, "<<simulated malformed event\n\n");
        st->malformed = false;
    }
    if (!rc)
        rc = dspy__srv_stream_push(st->req, b->ptr, b->len, due);
    st->events++;
    if (rc) { /* out of room: end the stream rather than leave it hanging */
        dspy__srv_stream_end(st->req, due, true);
        st->stopped = true;
    }
}

static void send_stream(struct dspy_sim *s, struct dspy__srv_req *req,
                        const struct dspy__sim_chat *c, const char *id, long created,
                        struct choice *ch, size_t prompt, size_t completion, uint64_t t0,
                        uint64_t tpot, enum dspy__sim_fault f)
{
    static const char *const hdr[] = { "Cache-Control", "no-cache", NULL };
    struct dspy__srv_reply r = { 200, "text/event-stream", hdr, NULL, 0, NULL };
    struct streamer st = { s, req, c, id, created, { 0 }, 0, 0, f == DSPY__SIM_F_MALFORMED, false };
    size_t steps = 1, *off = dspy_calloc(c->n, sizeof(size_t));
    for (size_t i = 0; i < c->n; i++)
        if (ch[i].tokens > steps)
            steps = ch[i].tokens;
    dspy__buf_init(&st.ev, REPLY_MAX);
    atomic_fetch_add(&s->streams, 1);
    if (f == DSPY__SIM_F_MALFORMED || f == DSPY__SIM_F_TRUNCATE)
        atomic_fetch_add(&s->faults[f], 1);
    if (f == DSPY__SIM_F_TRUNCATE)
        st.cut = (c->n * (steps + 2)) / 2 + 1;
    if (!off || dspy__srv_stream_start(req, &r, t0))
        goto out;
    uint64_t due = t0;
    for (size_t k = 0; k < steps && !st.stopped; k++) {
        due = t0 + k * tpot;
        for (size_t i = 0; i < c->n; i++) {
            const char *text = ch[i].text.ptr ? ch[i].text.ptr : "";
            if (k == 0)
                event(&st, i, "\"role\":\"assistant\",\"content\":\"\",\"refusal\":null", NULL, 0,
                      NULL, due);
            if (k < ch[i].tokens) {
                size_t len = dspy__sim_token_len(text + off[i], ch[i].text.len - off[i]);
                event(&st, i, "\"content\":", text + off[i], len, NULL, due);
                off[i] += len;
            }
            if (k + 1 == ch[i].tokens || (k == 0 && ch[i].tokens == 0))
                event(&st, i, "", NULL, 0, ch[i].length ? "length" : "stop", due);
        }
    }
    if (!st.stopped && c->include_usage) {
        dspy__buf_reset(&st.ev);
        if (!dspy__buf_adds(&st.ev, "data: ") &&
            !head(&st.ev, id, "chat.completion.chunk", created, c->model) &&
            !dspy__buf_adds(&st.ev, "],") && !usage(&st.ev, prompt, completion) &&
            !dspy__buf_adds(&st.ev, "}\n\n"))
            dspy__srv_stream_push(req, st.ev.ptr, st.ev.len, due);
    }
    if (!st.stopped) {
        dspy__srv_stream_push(req, "data: [DONE]\n\n", 14, due);
        dspy__srv_stream_end(req, due, false);
    }
out:
    dspy_free(off);
    dspy__buf_release(&st.ev);
}

static void respond(struct dspy_sim *s, struct dspy__srv_req *req, struct dspy__sim_chat *c,
                    json_t *body, enum dspy__sim_fault f, double ju)
{
    struct dspy__sim_prompt p;
    struct choice *ch = dspy_calloc(c->n, sizeof(*ch));
    struct dspy_buf out;
    dspy_status rc = ch ? DSPY_OK : DSPY_ENOMEM;
    size_t prompt = 3 + IMAGE_TOKENS * c->images, completion = 0, steps = 1;
    char id[48];

    dspy__buf_init(&out, (size_t)1 << 30);
    dspy__sim_prompt_parse(&p, c->msgs, c->n_msgs);
    for (size_t i = 0; i < c->n_msgs; i++)
        prompt += 4 + dspy__sim_tokens(c->msgs[i].text.p, c->msgs[i].text.n);
    struct dspy__sim_answer_opts ao = { s->o.seed,
                                        dspy__sim_request_hash(body),
                                        0,
                                        c->temperature,
                                        s->o.reply_tokens,
                                        c->schema,
                                        c->json_object,
                                        dspy__sim_model_quality(s, c->model) };
    if (c->ignore_eos && c->max_tokens && p.adapter == DSPY__SIM_ADAPTER_NONE)
        ao.reply_tokens = c->max_tokens < DSPY_SIM_MAX_REPLY_TOKENS ? (unsigned)c->max_tokens
                                                                    : DSPY_SIM_MAX_REPLY_TOKENS;
    if ((uint64_t)c->n * (ao.reply_tokens ? ao.reply_tokens : 64) >
        DSPY_SIM_MAX_REPLY_TOKENS * 8ull) {
        struct dspy__sim_bad why;
        bad(&why, "n", "invalid_value", "n times max_tokens is more than the simulator makes.");
        send_bad(req, &why);
        goto out;
    }
    for (size_t i = 0; !rc && i < c->n; i++) {
        dspy__buf_init(&ch[i].text, REPLY_MAX);
        ao.choice = (unsigned)i;
        rc = dspy__sim_answer(&p, &ao, &ch[i].text);
        ch[i].tokens = dspy__sim_tokens(ch[i].text.ptr, ch[i].text.len);
        if (c->max_tokens && ch[i].tokens >= (size_t)c->max_tokens) {
            ch[i].length = true;
            ch[i].tokens = (size_t)c->max_tokens;
            ch[i].text.len = dspy__sim_tokens_prefix(ch[i].text.ptr, ch[i].text.len, ch[i].tokens);
            if (ch[i].text.ptr)
                ch[i].text.ptr[ch[i].text.len] = '\0';
        }
        completion += ch[i].tokens;
        steps = ch[i].tokens > steps ? ch[i].tokens : steps;
    }
    snprintf(id, sizeof(id), "chatcmpl-sim%016llx",
             (unsigned long long)dspy__sim_mix(ao.req_hash, atomic_fetch_add(&s->ids, 1)));
    long created = (long)time(NULL);
    if (rc) {
        dspy__srv_send_error(req, 500, "server_error", NULL, NULL, NULL,
                             "The simulator could not build the answer (%s).", dspy_strerror(rc));
        goto out;
    }
    /* Latency: total = ttft + tpot * (tokens - 1), or --latency-ms spread the same way. */
    uint64_t ttft = dspy__sim_ns(s, s->o.ttft_ms, ju), tpot = dspy__sim_ns(s, s->o.tpot_ms, ju);
    uint64_t total = ttft + tpot * (steps - 1);
    if (s->o.latency_ms >= 0) {
        total = dspy__sim_ns(s, s->o.latency_ms, ju);
        ttft = ttft < total ? ttft : total;
        tpot = steps > 1 ? (total - ttft) / (steps - 1) : 0;
    }
    uint64_t now = dspy__now_ns(), start;
    if (!dspy__sim_admit(s, now, total, &start)) {
        dspy__sim_queue_full(s, req);
        goto out;
    }
    atomic_fetch_add(&s->completion_tokens, completion);
    if (c->stream) {
        send_stream(s, req, c, id, created, ch, prompt, completion, start + ttft, tpot, f);
    } else if (!whole_body(&out, c, id, created, ch, prompt, completion)) {
        dspy__sim_send_json(s, req, &out, start + total, f);
    } else {
        dspy__srv_send_error(req, 500, "server_error", NULL, NULL, NULL,
                             "The response is too large to build.");
    }
out:
    for (size_t i = 0; ch && i < c->n; i++)
        dspy__buf_release(&ch[i].text);
    dspy_free(ch);
    dspy__buf_release(&out);
    dspy__sim_prompt_release(&p);
}

void dspy__sim_chat(struct dspy__srv_req *req, void *ud)
{
    struct dspy_sim *s = ud;
    struct dspy__sim_chat c;
    struct dspy__sim_bad why;
    json_t *body;
    if (!dspy__sim_auth(s, req) || !(body = dspy__sim_body_json(req)))
        return;
    dspy__sim_chat_init(&c);
    if (!dspy__sim_chat_parse(body, &c, &why)) {
        send_bad(req, &why);
    } else {
        double ju;
        enum dspy__sim_fault f = dspy__sim_draw(s, &ju);
        if (!dspy__sim_fault_answer(s, req, f))
            respond(s, req, &c, body, f, ju);
    }
    dspy__sim_chat_release(&c);
    json_decref(body);
}

/* Modules (program layer): Predict and ChainOfThought. A call checks the inputs, renders
 * the prompt (system and demo messages are encoded once per module and adapter and reused;
 * only the user message is rendered per call), calls the LM, parses every choice, and falls
 * back from the Chat to the JSON adapter on a parse failure as DSPy 3.x does. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include <dspyc/module.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/status.h"
#include "base/jsonw.h"
#include "lm/lm_int.h"
#include "program/adapter_int.h"
#include "program/module_int.h"

#define MODULE_MAX_PROMPT ((size_t)64 << 20)

static const char JSON_OBJECT_FORMAT[] = "{\"type\":\"json_object\"}";

/* What one adapter renders independently of the inputs, built on first use. */
struct rendered {
    atomic_bool ready; /* set (release) once the fields below are complete */
    char *prefix;      /* encoded system and demo messages, comma-separated */
    size_t prefix_len;
    char *response_format; /* the JSON adapter's structured-output format, encoded; NULL
                            * for Chat and when the signature cannot have one */
    size_t response_format_len;
    /* The same in canonical form (sorted members), for the LM's cache key */
    char *canon_prefix;
    size_t canon_prefix_len;
    char *canon_response_format;
    size_t canon_response_format_len;
    struct dspy_buf reminder; /* the adapter's reminder line, the end of each user message */
};

struct dspy_module {
    enum dspy_module_kind kind;
    enum dspy_adapter_kind adapter;
    dspy_signature *sig;
    json_t *demos;                     /* array of objects, never NULL */
    struct dspy_call_config config;    /* Predict(**config) */
    pthread_mutex_t build_lock;        /* serializes building `rendered` and `memo` */
    struct rendered rendered[2];       /* by enum dspy_adapter_kind */
    _Atomic(struct dspy__memo *) memo; /* decoded hits, made on the first cached call */
};

const char *dspy_module_kind_name(enum dspy_module_kind kind)
{
    return kind == DSPY_MODULE_COT ? "cot" : "predict";
}

int dspy_module_kind_from_name(const char *name)
{
    static const struct {
        const char *name;
        enum dspy_module_kind kind;
    } names[] = {
        { "predict", DSPY_MODULE_PREDICT },
        { "Predict", DSPY_MODULE_PREDICT },
        { "cot", DSPY_MODULE_COT },
        { "chain_of_thought", DSPY_MODULE_COT },
        { "ChainOfThought", DSPY_MODULE_COT },
    };
    for (size_t i = 0; name && i < sizeof(names) / sizeof(names[0]); i++)
        if (!strcmp(name, names[i].name))
            return (int)names[i].kind;
    return -1;
}

/* ---- rendering ------------------------------------------------------------------------ */

/* Append canonical JSON of `v` (sorted members) to `b`. */
static dspy_status add_canonical(struct dspy_buf *b, const json_t *v)
{
    char *text = NULL;
    size_t len = 0;
    dspy_status rc = dspy_cache_canonical_json(v, NULL, &text, &len, NULL);
    if (!rc)
        rc = dspy__buf_add(b, text, len);
    dspy_free(text);
    return rc;
}

/* Append the messages as comma-separated message objects, after what `b` holds; `canon`
 * gets the same messages in canonical form (the cache key's). */
static dspy_status encode_messages(const json_t *msgs, struct dspy_buf *b, struct dspy_buf *canon)
{
    dspy_status rc = DSPY_OK;
    for (size_t i = 0; !rc && i < json_array_size(msgs); i++) {
        const json_t *msg = json_array_get(msgs, i);
        const char *role = json_string_value(json_object_get(msg, "role"));
        const json_t *content = json_object_get(msg, "content");
        if ((b->len && (rc = dspy__buf_addc(b, ','))) ||
            (canon->len && (rc = dspy__buf_addc(canon, ','))))
            break;
        if (role && json_is_string(content)) {
            rc = dspy__lm_encode_message(b, role, json_string_value(content),
                                         json_string_length(content));
            if (!rc)
                rc = dspy__lm_encode_message_canon(canon, role, json_string_value(content),
                                                   json_string_length(content));
        } else {
            rc = dspy__json_write(b, msg, DSPY__JSON_COMPACT, 0);
            if (!rc)
                rc = add_canonical(canon, msg);
        }
    }
    return rc;
}

/* The system and demo messages, encoded: everything before the final user message, which
 * does not depend on the inputs. */
static dspy_status render_prefix(enum dspy_adapter_kind kind, const dspy_signature *sig,
                                 const json_t *demos, struct dspy_buf *b, struct dspy_buf *canon,
                                 struct dspy_error *err)
{
    struct dspy_buf system;
    json_t *msgs = json_array();
    dspy_status rc;
    dspy__buf_init(&system, b->max);
    if (!msgs) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto release;
    }
    if ((rc = dspy__adapter_render_system(kind, sig, &system, err)) ||
        (rc = dspy__adapter_render_demos(kind, sig, demos, msgs, err)))
        goto release;
    if ((rc = dspy__lm_encode_message(b, "system", system.ptr ? system.ptr : "", system.len)) ||
        (rc = dspy__lm_encode_message_canon(canon, "system", system.ptr ? system.ptr : "",
                                            system.len)) ||
        (rc = encode_messages(msgs, b, canon)))
        rc = dspy__err(err, rc, "cannot encode the prompt: %s", dspy_strerror(rc));

release:
    json_decref(msgs);
    dspy__buf_release(&system);
    return rc;
}

/* ---- cache of rendered pieces --------------------------------------------------------- */

static void rendered_drop(struct rendered *r)
{
    atomic_store_explicit(&r->ready, false, memory_order_relaxed);
    dspy_free(r->prefix);
    dspy_free(r->response_format);
    dspy_free(r->canon_prefix);
    dspy_free(r->canon_response_format);
    dspy__buf_release(&r->reminder);
    r->prefix = r->response_format = r->canon_prefix = r->canon_response_format = NULL;
    r->prefix_len = r->response_format_len = 0;
    r->canon_prefix_len = r->canon_response_format_len = 0;
}

/* Setters may not run during calls (see module.h), so dropping needs no lock. */
static void invalidate(dspy_module *m)
{
    rendered_drop(&m->rendered[DSPY_ADAPTER_CHAT]);
    rendered_drop(&m->rendered[DSPY_ADAPTER_JSON]);
    dspy__memo_clear(atomic_load_explicit(&m->memo, memory_order_relaxed));
}

static struct dspy__memo *get_memo(dspy_module *m)
{
    struct dspy__memo *memo = atomic_load_explicit(&m->memo, memory_order_acquire);
    if (memo)
        return memo;
    pthread_mutex_lock(&m->build_lock);
    if (!(memo = atomic_load_explicit(&m->memo, memory_order_relaxed)) && (memo = dspy__memo_new()))
        atomic_store_explicit(&m->memo, memo, memory_order_release);
    pthread_mutex_unlock(&m->build_lock);
    return memo;
}

static dspy_status build_rendered(dspy_module *m, enum dspy_adapter_kind kind, struct rendered *r,
                                  struct dspy_error *err)
{
    struct dspy_buf b, canon;
    dspy_status rc = DSPY_OK;
    json_t *rf = NULL;
    dspy__buf_init(&b, MODULE_MAX_PROMPT);
    dspy__buf_init(&canon, MODULE_MAX_PROMPT);
    if ((rc = render_prefix(kind, m->sig, m->demos, &b, &canon, err)))
        goto release;
    dspy__buf_init(&r->reminder, MODULE_MAX_PROMPT);
    if ((rc = dspy__adapter_render_reminder(kind, m->sig, &r->reminder)) ||
        (rc = dspy__buf_add(&r->reminder, "", 0))) {
        rc = dspy__err(err, rc, "cannot render the prompt: %s", dspy_strerror(rc));
        goto release;
    }
    /* The JSON adapter's structured-output format; JSON mode needs nothing rendered. */
    if (kind == DSPY_ADAPTER_JSON && (rf = dspy_adapter_schema_format(m->sig))) {
        struct dspy_buf rb;
        dspy__buf_init(&rb, MODULE_MAX_PROMPT);
        if ((rc = dspy__json_write(&rb, rf, DSPY__JSON_COMPACT, 0)) ||
            (rc = dspy_cache_canonical_json(rf, NULL, &r->canon_response_format,
                                            &r->canon_response_format_len, NULL))) {
            dspy__buf_release(&rb);
            rc = dspy__err(err, rc, "cannot encode the response format");
            goto release;
        }
        r->response_format = dspy__buf_detach(&rb, &r->response_format_len);
    }
    r->prefix = dspy__buf_detach(&b, &r->prefix_len);
    r->canon_prefix = dspy__buf_detach(&canon, &r->canon_prefix_len);
    if (!r->prefix || !r->canon_prefix) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto release;
    }
    atomic_store_explicit(&r->ready, true, memory_order_release);

release:
    json_decref(rf);
    dspy__buf_release(&canon);
    dspy__buf_release(&b);
    return rc;
}

static dspy_status get_rendered(dspy_module *m, enum dspy_adapter_kind kind,
                                const struct rendered **out, struct dspy_error *err)
{
    struct rendered *r = &m->rendered[kind];
    dspy_status rc = DSPY_OK;
    if (!atomic_load_explicit(&r->ready, memory_order_acquire)) {
        pthread_mutex_lock(&m->build_lock);
        if (!atomic_load_explicit(&r->ready, memory_order_relaxed)) {
            rendered_drop(r);
            rc = build_rendered(m, kind, r, err);
        }
        pthread_mutex_unlock(&m->build_lock);
    }
    *out = r;
    return rc;
}

/* ---- lifecycle and setters ------------------------------------------------------------- */

dspy_module *dspy_module_new(enum dspy_module_kind kind, const dspy_signature *sig,
                             enum dspy_adapter_kind adapter)
{
    if (!sig || (kind != DSPY_MODULE_PREDICT && kind != DSPY_MODULE_COT) ||
        (adapter != DSPY_ADAPTER_CHAT && adapter != DSPY_ADAPTER_JSON))
        return NULL;
    dspy_module *m = dspy_calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->kind = kind;
    m->adapter = adapter;
    m->config = (struct dspy_call_config)DSPY_CALL_CONFIG_INIT;
    if (!(m->sig = dspy_signature_copy(sig)))
        goto free_module;
    if (kind == DSPY_MODULE_COT &&
        dspy_signature_prepend_output(m->sig, "reasoning", "${reasoning}"))
        goto free_sig;
    if (!(m->demos = json_array()))
        goto free_sig;
    if (pthread_mutex_init(&m->build_lock, NULL))
        goto free_demos;
    atomic_init(&m->rendered[DSPY_ADAPTER_CHAT].ready, false);
    atomic_init(&m->rendered[DSPY_ADAPTER_JSON].ready, false);
    atomic_init(&m->memo, NULL);
    return m;

free_demos:
    json_decref(m->demos);
free_sig:
    dspy_signature_free(m->sig);
free_module:
    dspy_free(m);
    return NULL;
}

void dspy_module_free(dspy_module *m)
{
    if (!m)
        return;
    invalidate(m);
    dspy__memo_free(atomic_load(&m->memo));
    pthread_mutex_destroy(&m->build_lock);
    json_decref(m->demos);
    dspy_signature_free(m->sig);
    dspy_free(m);
}

dspy_module *dspy_module_copy(const dspy_module *src)
{
    dspy_module *m = dspy_calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->kind = src->kind;
    m->adapter = src->adapter;
    m->config = src->config;
    if (!(m->sig = dspy_signature_copy(src->sig)))
        goto free_module;
    if (!(m->demos = json_deep_copy(src->demos)))
        goto free_sig;
    if (pthread_mutex_init(&m->build_lock, NULL))
        goto free_demos;
    atomic_init(&m->rendered[DSPY_ADAPTER_CHAT].ready, false);
    atomic_init(&m->rendered[DSPY_ADAPTER_JSON].ready, false);
    atomic_init(&m->memo, NULL);
    return m;

free_demos:
    json_decref(m->demos);
free_sig:
    dspy_signature_free(m->sig);
free_module:
    dspy_free(m);
    return NULL;
}

enum dspy_module_kind dspy_module_kind(const dspy_module *m)
{
    return m->kind;
}

const dspy_signature *dspy_module_signature(const dspy_module *m)
{
    return m->sig;
}

dspy_signature *dspy_module_signature_mut(dspy_module *m)
{
    /* The caller is about to change what the cached messages were rendered from. */
    invalidate(m);
    return m->sig;
}

void dspy_module_set_adapter(dspy_module *m, enum dspy_adapter_kind adapter)
{
    if (adapter == DSPY_ADAPTER_CHAT || adapter == DSPY_ADAPTER_JSON)
        m->adapter = adapter;
}

enum dspy_adapter_kind dspy_module_adapter(const dspy_module *m)
{
    return m->adapter;
}

dspy_status dspy_module_set_demos(dspy_module *m, const json_t *demos)
{
    if (demos && !json_is_array(demos))
        return DSPY_EINVAL;
    for (size_t i = 0; i < json_array_size(demos); i++)
        if (!json_is_object(json_array_get(demos, i)))
            return DSPY_EINVAL;
    json_t *copy = demos ? json_deep_copy(demos) : json_array();
    if (!copy)
        return DSPY_ENOMEM;
    json_decref(m->demos);
    m->demos = copy;
    invalidate(m);
    return DSPY_OK;
}

const json_t *dspy_module_demos(const dspy_module *m)
{
    return m->demos;
}

dspy_status dspy_module_set_instructions(dspy_module *m, const char *text)
{
    char *def = NULL;
    if (!text && !(text = def = dspy_signature_default_instructions(m->sig)))
        return DSPY_ENOMEM;
    dspy_status rc = dspy_signature_set_instructions(m->sig, text);
    dspy_free(def);
    invalidate(m);
    return rc;
}

void dspy_module_set_config(dspy_module *m, const struct dspy_call_config *cfg)
{
    m->config = cfg ? *cfg : (struct dspy_call_config)DSPY_CALL_CONFIG_INIT;
}

const struct dspy_call_config *dspy__module_config(const dspy_module *m)
{
    return &m->config;
}

void dspy__module_replace(dspy_module *m, dspy_signature *sig, json_t *demos)
{
    invalidate(m);
    dspy_signature_free(m->sig);
    json_decref(m->demos);
    m->sig = sig;
    m->demos = demos;
}

dspy_status dspy_module_format(dspy_module *m, const json_t *inputs, json_t **messages,
                               struct dspy_error *err)
{
    if (!json_is_object(inputs))
        return dspy__err(err, DSPY_EINVAL, "inputs must be a JSON object");
    return dspy_adapter_format(m->adapter, m->sig, m->demos, inputs, messages, err);
}

/* ---- the call ------------------------------------------------------------------------- */

/* DSPy only warns about missing inputs; dspyc refuses them (except Optional ones), since
 * a prompt with a hole in it costs an LM call and answers nothing. */
static dspy_status check_inputs(const dspy_module *m, const json_t *inputs, struct dspy_error *err)
{
    if (!json_is_object(inputs))
        return dspy__err(err, DSPY_EINVAL, "inputs must be a JSON object");
    size_t n = dspy_signature_ninputs(m->sig);
    for (size_t i = 0; i < n; i++) {
        const struct dspy_field *f = dspy_signature_field(m->sig, i);
        if (!json_object_get(inputs, f->name) && !dspy__type_allows_none(f->type)) {
            dspy__err(err, DSPY_EINVAL, "missing input field \"%s\"", f->name);
            dspy__err_field(err, f->name);
            return DSPY_EINVAL;
        }
    }
    return DSPY_OK;
}

/* Per-call config over the module's, then DSPy's rule: n > 1 with the temperature unset or
 * <= 0.15 samples at 0.7 (DSPy reads `config.temperature or lm.temperature`, so a 0.0 in
 * the config defers to the LM's value for the test). */
static struct dspy_call_config resolve_config(const dspy_module *m, const dspy_lm *lm,
                                              const struct dspy_call_config *cfg)
{
    struct dspy_call_config c = m->config;
    if (cfg) {
        if (!isnan(cfg->temperature))
            c.temperature = cfg->temperature;
        if (cfg->max_tokens >= 0)
            c.max_tokens = cfg->max_tokens;
        if (!isnan(cfg->top_p))
            c.top_p = cfg->top_p;
        if (cfg->n > 0)
            c.n = cfg->n;
        if (cfg->has_rollout_id) {
            c.has_rollout_id = true;
            c.rollout_id = cfg->rollout_id;
        }
        dspy__lm_cache_ctl_merge(&c.cache, &cfg->cache);
    }
    double t = !isnan(c.temperature) && c.temperature != 0.0 ? c.temperature
                                                             : dspy__lm_temperature(lm);
    if (c.n > 1 && (isnan(t) || t <= 0.15))
        c.temperature = 0.7;
    return c;
}

/* One module call in progress, over its one to three LM calls ("hops": the module's
 * adapter; after a Chat reply that does not parse, the JSON adapter; after a structured
 * JSON reply that does not parse, JSON mode). dspy_module_call() keeps it on its stack and
 * runs each hop on its own thread; dspy_module_call_async() keeps it on the heap and
 * submits each hop, the next one from the completion of the last. One mechanism for both,
 * so they render, parse and fall back alike. */
struct call_state {
    dspy_module *m;
    dspy_lm *lm;
    const json_t *inputs;
    struct dspy_call_config cfg; /* resolved */
    struct dspy_call_info *info; /* the caller's (sync) or info_store */
    struct dspy_error *err;      /* the caller's, may be NULL (sync), or err_store */
    bool timed;                  /* take the clock (about 20-60 ns a reading) */
    bool blocking;               /* hops run here through dspy__lm_complete_call() */
    bool want_completions;
    enum dspy_adapter_kind kind;      /* the adapter of the hop in flight */
    bool structured;                  /* that hop sent a structured response_format */
    bool plain_json;                  /* that hop is JSON mode after a structured reply failed */
    struct dspy__engine_group *group; /* the caller's batch (every hop joins it), or NULL */
    uint64_t sent_ns;
    struct dspy__memo *memo;          /* NULL unless the call reads through an L1 cache */
    struct dspy_cache_key fp;         /* the memo's key for this call */
    struct dspy__lm_cached cached;    /* the last hop's cache entry, for the memo */
    struct dspy__lm_prefetched *pre;  /* the batch's lookup, for the first hop; or NULL */
    json_t *prediction, *completions; /* the outcome, kept by a blocking call */
    dspy_status rc;
    dspy_module_done_fn on_done; /* NULL for a blocking call */
    void *userdata;
    struct dspy_call_info info_store;
    struct dspy_error err_store;
};

static uint64_t stamp(const struct call_state *st)
{
    return st->timed ? dspy__now_ns() : 0;
}

static void add_usage(struct dspy_lm_usage *sum, const struct dspy_lm_usage *u)
{
    sum->prompt_tokens += u->prompt_tokens;
    sum->completion_tokens += u->completion_tokens;
    sum->total_tokens += u->total_tokens;
}

/* Parse every choice; all must fit the signature (DSPy parses each one in turn). */
static dspy_status parse_choices(const dspy_module *m, enum dspy_adapter_kind kind,
                                 const struct dspy_lm_response *resp, json_t **prediction,
                                 json_t **completions, struct dspy_error *err)
{
    json_t *all = NULL, *first = NULL;
    dspy_status rc;
    if (completions && !(all = json_array()))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    for (size_t i = 0; i < resp->n; i++) {
        json_t *out = NULL;
        const char *text = resp->texts[i];
        if ((rc = dspy_adapter_parse(kind, m->sig, text, strlen(text), &out, err)))
            goto fail;
        if (!first)
            first = json_incref(out);
        if (all && json_array_append(all, out)) {
            json_decref(out);
            rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
            goto fail;
        }
        json_decref(out);
    }
    *prediction = first;
    if (completions)
        *completions = all;
    return DSPY_OK;

fail:
    json_decref(first);
    json_decref(all);
    return rc;
}

/* The end of a call, reached once: remember it in the memo, then hand the outcome to the
 * asynchronous caller (and free the state) or leave it for the blocking one. */
static void finish(struct call_state *st, dspy_status rc)
{
    if (st->memo && !rc && st->info->lm_calls == 1 && st->cached.value.ref)
        dspy__memo_put(st->memo, &st->fp, &st->cached, st->prediction, st->completions,
                       &st->info->usage);
    dspy_cache_value_release(&st->cached.value);
    if (rc) {
        json_decref(st->prediction);
        json_decref(st->completions);
        st->prediction = st->completions = NULL;
    }
    st->rc = rc;
    if (!st->on_done)
        return;
    st->on_done(st->userdata, rc, st->prediction, st->completions, st->info, rc ? st->err : NULL);
    dspy_free(st);
}

static void hop_done(void *userdata, dspy_status rc, struct dspy_lm_response *resp,
                     const struct dspy_error *err);

/* The hop's LM call: its pieces rendered into `user` (caller-initialized and released) and
 * the module's cached prefix, which `call` points into. */
static dspy_status make_call(struct call_state *st, struct dspy_buf *user,
                             struct dspy__lm_call *call)
{
    const struct rendered *r;
    dspy_status rc = get_rendered(st->m, st->kind, &r, st->err);
    if (rc)
        return rc;
    /* One allocation for the usual user message instead of a few doublings. */
    if ((rc = dspy__buf_reserve(user, 1024)))
        return dspy__err(st->err, rc, "out of memory");
    if ((rc = dspy__adapter_render_user(st->kind, st->m->sig, st->inputs, &r->reminder, user,
                                        st->err)))
        return rc;
    *call = (struct dspy__lm_call)DSPY__LM_CALL_INIT;
    call->messages = r->prefix;
    call->messages_len = r->prefix_len;
    call->user = user->len ? user->ptr : NULL; /* DSPy drops an empty user message */
    call->user_len = user->len;
    call->temperature = st->cfg.temperature;
    call->max_tokens = st->cfg.max_tokens;
    call->top_p = st->cfg.top_p;
    call->n = st->cfg.n;
    /* DSPy's JSONAdapter: structured outputs for a model that supports response schemas
     * (unless a field is an open-ended dict), else and on the retry JSON mode. */
    st->structured = st->kind == DSPY_ADAPTER_JSON && !st->plain_json && r->response_format &&
                     dspy_lm_structured_outputs(st->lm);
    if (st->structured) {
        call->response_format = r->response_format;
        call->response_format_len = r->response_format_len;
        call->canon_response_format = r->canon_response_format;
        call->canon_response_format_len = r->canon_response_format_len;
    } else if (st->kind == DSPY_ADAPTER_JSON) {
        call->response_format = call->canon_response_format = JSON_OBJECT_FORMAT;
        call->response_format_len = call->canon_response_format_len = sizeof(JSON_OBJECT_FORMAT) -
                                                                      1;
    }
    call->canon_messages = r->canon_prefix;
    call->canon_messages_len = r->canon_prefix_len;
    call->has_rollout_id = st->cfg.has_rollout_id;
    call->rollout_id = st->cfg.rollout_id;
    call->ctl = &st->cfg.cache;
    call->group = st->group;
    return DSPY_OK;
}

/* Render the user message for the hop's adapter and send it. Asynchronously, DSPY_OK means
 * hop_done() will run (perhaps already ran: `st` may be gone); an error means it will not. */
static dspy_status send_hop(struct call_state *st)
{
    struct dspy_buf user;
    struct dspy__lm_call call;
    uint64_t t0 = stamp(st);
    dspy_status rc;
    dspy__buf_init(&user, MODULE_MAX_PROMPT);
    if ((rc = make_call(st, &user, &call)))
        goto release_user;
    call.prefetched = st->pre; /* the first hop's: a fallback sends another request */
    st->pre = NULL;
    if (st->memo) { /* a fallback's second call: only the last one is remembered */
        dspy_cache_value_release(&st->cached.value);
        call.cached = &st->cached;
    }
    st->info->lm_calls++;
    st->sent_ns = stamp(st);
    st->info->format_ns += st->sent_ns - t0;
    if (st->blocking) {
        struct dspy_lm_response resp;
        rc = dspy__lm_complete_call(st->lm, &call, &resp, st->err);
        dspy__buf_release(&user);
        hop_done(st, rc, &resp, st->err);
        return DSPY_OK;
    }
    rc = dspy__lm_submit_call(st->lm, &call, hop_done, st, st->err);

release_user:
    dspy__buf_release(&user);
    return rc;
}

/* After a reply that does not parse, the next hop, as DSPy does: JSONAdapter retries a
 * structured response_format once in plain JSON mode; ChatAdapter falls back to the
 * JSONAdapter. False when there is none left. */
static bool next_hop(struct call_state *st)
{
    if (st->kind == DSPY_ADAPTER_JSON && st->structured && !st->plain_json) {
        st->plain_json = true;
        return true;
    }
    if (st->kind == DSPY_ADAPTER_CHAT) {
        st->kind = DSPY_ADAPTER_JSON;
        st->plain_json = false;
        return true;
    }
    return false;
}

/* A hop's LM call ended (on the loop thread, or on the caller's for a blocking call or an
 * LM that runs calls in place): parse, and end the call or send the next hop. */
static void hop_done(void *userdata, dspy_status rc, struct dspy_lm_response *resp,
                     const struct dspy_error *err)
{
    struct call_state *st = userdata;
    json_t *prediction = NULL, *completions = NULL;
    uint64_t t0 = stamp(st);
    st->info->lm_ns += t0 - st->sent_ns;
    if (rc) {
        if (st->err && err && err != st->err)
            *st->err = *err;
        dspy_lm_response_release(resp);
        finish(st, rc);
        return;
    }
    add_usage(&st->info->usage, &resp->usage);
    if (resp->cache_hit) {
        st->info->cache_hits++;
        add_usage(&st->info->cached_usage, &resp->usage);
    }
    rc = parse_choices(st->m, st->kind, resp, &prediction,
                       st->want_completions ? &completions : NULL, st->err);
    st->info->parse_ns += stamp(st) - t0;
    dspy_lm_response_release(resp);
    if (!rc) {
        st->prediction = prediction;
        st->completions = completions;
    } else if (rc == DSPY_EADAPTER && next_hop(st) && !(rc = send_hop(st))) {
        return; /* the next hop ends the call */
    }
    finish(st, rc);
}

/* The memo applies to calls that read through a cache with an L1. */
static struct dspy__memo *memo_for(dspy_module *m, const dspy_lm *lm,
                                   const struct dspy_cache_ctl *ctl)
{
    dspy_cache *cache = dspy__lm_cache(lm);
    if (!cache || ctl->no_cache || ctl->no_store || !(dspy_cache_levels(cache) & DSPY_CACHE_L1) ||
        (ctl->levels && !(ctl->levels & DSPY_CACHE_L1)))
        return NULL;
    return get_memo(m);
}

static bool memo_hit(struct call_state *st, const struct dspy_cache_ctl *ctl)
{
    struct dspy_lm_usage usage;
    uint64_t t0 = stamp(st);
    if (!dspy__memo_get(st->memo, st->lm, &st->fp, ctl, &st->prediction,
                        st->want_completions ? &st->completions : NULL, &usage))
        return false;
    st->info->lm_calls = 1;
    st->info->cache_hits = 1;
    st->info->usage = st->info->cached_usage = usage;
    st->info->lm_ns = stamp(st) - t0;
    return true;
}

/* Check, resolve the config, answer from the memo or send the first hop. The fields before
 * `kind` are set by the caller. An error means finish() did not run. */
static dspy_status call_start(struct call_state *st, const struct dspy_call_config *cfg)
{
    dspy_status rc = check_inputs(st->m, st->inputs, st->err);
    if (rc)
        return rc;
    st->cfg = resolve_config(st->m, st->lm, cfg);
    st->kind = st->m->adapter;
    /* A batch that looked the key up already: the memo would look it up again. */
    if (dspy__lm_cache(st->lm) && !(st->pre && st->pre->looked_up)) {
        struct dspy_cache_ctl ctl;
        dspy__lm_cache_ctl(st->lm, &st->cfg.cache, &ctl);
        if ((st->memo = memo_for(st->m, st->lm, &ctl)) &&
            dspy__memo_fingerprint(st->lm, st->m->sig, st->m->adapter, &st->cfg, &ctl, st->inputs,
                                   &st->fp))
            st->memo = NULL;
        if (st->memo && memo_hit(st, &ctl)) {
            st->memo = NULL; /* nothing new to remember */
            finish(st, DSPY_OK);
            return DSPY_OK;
        }
    }
    return send_hop(st);
}

static void call_state_init(struct call_state *st, dspy_module *m, dspy_lm *lm,
                            struct dspy__engine_group *group, struct dspy__lm_prefetched *pre,
                            const json_t *inputs)
{
    /* Not memset: the stores are large and a blocking call uses neither. */
    st->m = m;
    st->lm = lm;
    st->group = group;
    st->inputs = inputs;
    st->structured = st->plain_json = false;
    st->memo = NULL;
    st->pre = pre;
    st->cached = (struct dspy__lm_cached){ { { 0 } }, DSPY_CACHE_VALUE_INIT };
    st->prediction = st->completions = NULL;
    st->rc = DSPY_OK;
    st->on_done = NULL;
    st->userdata = NULL;
}

dspy_status dspy_module_call(dspy_module *m, dspy_lm *lm, const json_t *inputs,
                             const struct dspy_call_config *cfg, json_t **prediction,
                             json_t **completions, struct dspy_call_info *info,
                             struct dspy_error *err)
{
    return dspy__module_call_in(m, lm, NULL, NULL, inputs, cfg, prediction, completions, info, err);
}

dspy_status dspy__module_call_in(dspy_module *m, dspy_lm *lm, struct dspy__engine_group *group,
                                 struct dspy__lm_prefetched *pre, const json_t *inputs,
                                 const struct dspy_call_config *cfg, json_t **prediction,
                                 json_t **completions, struct dspy_call_info *info,
                                 struct dspy_error *err)
{
    struct dspy_call_info local;
    struct call_state st;
    dspy_status rc;
    bool timed = info != NULL;
    if (!info)
        info = &local;
    memset(info, 0, sizeof(*info));
    if (prediction)
        *prediction = NULL;
    if (completions)
        *completions = NULL;
    if (!m || !lm || !prediction)
        return dspy__err(err, DSPY_EINVAL,
                         "dspy_module_call: module, lm and prediction are required");
    call_state_init(&st, m, lm, group, pre, inputs);
    st.info = info;
    st.err = err;
    st.timed = timed;
    st.blocking = true;
    st.want_completions = completions != NULL;
    if ((rc = call_start(&st, cfg))) {
        dspy_cache_value_release(&st.cached.value);
        return rc;
    }
    *prediction = st.prediction;
    if (completions)
        *completions = st.completions;
    return st.rc;
}

dspy_status dspy_module_call_async(dspy_module *m, dspy_lm *lm, const json_t *inputs,
                                   const struct dspy_call_config *cfg, dspy_module_done_fn on_done,
                                   void *userdata, struct dspy_error *err)
{
    return dspy__module_call_async_in(m, lm, NULL, inputs, cfg, on_done, userdata, err);
}

dspy_status dspy__module_call_async_in(dspy_module *m, dspy_lm *lm,
                                       struct dspy__engine_group *group, const json_t *inputs,
                                       const struct dspy_call_config *cfg,
                                       dspy_module_done_fn on_done, void *userdata,
                                       struct dspy_error *err)
{
    struct call_state *st;
    dspy_status rc;
    if (!m || !lm || !on_done)
        return dspy__err(err, DSPY_EINVAL,
                         "dspy_module_call_async: module, lm and on_done are required");
    if (!(st = dspy_malloc(sizeof(*st))))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    call_state_init(st, m, lm, group, NULL, inputs);
    memset(&st->info_store, 0, sizeof(st->info_store));
    dspy_error_clear(&st->err_store);
    st->info = &st->info_store;
    st->err = &st->err_store;
    st->timed = true;
    st->blocking = false;
    st->want_completions = true;
    st->on_done = on_done;
    st->userdata = userdata;
    if ((rc = call_start(st, cfg))) {
        if (err)
            *err = st->err_store;
        dspy_cache_value_release(&st->cached.value);
        dspy_free(st);
    }
    return rc;
}

dspy_status dspy__module_request_key(dspy_module *m, dspy_lm *lm, const json_t *inputs,
                                     const struct dspy_call_config *cfg, struct dspy_cache_key *key,
                                     struct dspy_cache_ctl *ctl, struct dspy_error *err)
{
    struct call_state st;
    struct dspy__lm_call call;
    struct dspy_buf user;
    struct dspy_call_info info;
    dspy_status rc;
    if (!m || !lm || !dspy__lm_cache(lm))
        return DSPY_EINVAL;
    call_state_init(&st, m, lm, NULL, NULL, inputs);
    memset(&info, 0, sizeof(info));
    st.info = &info;
    st.err = err;
    if ((rc = check_inputs(m, inputs, err)))
        return rc;
    st.cfg = resolve_config(m, lm, cfg);
    st.kind = m->adapter;
    dspy__lm_cache_ctl(lm, &st.cfg.cache, ctl);
    dspy__buf_init(&user, MODULE_MAX_PROMPT);
    if (!(rc = make_call(&st, &user, &call)))
        rc = dspy__lm_request_key(lm, &call, true, key, err);
    dspy__buf_release(&user);
    return rc;
}

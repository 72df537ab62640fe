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
#include "lm/jsonw.h"
#include "lm/lm_int.h"
#include "program/adapter_int.h"
#include "program/module_int.h"

#define MODULE_MAX_PROMPT ((size_t)64 << 20)

static const char JSON_OBJECT_FORMAT[] = "{\"type\":\"json_object\"}";

/* What one adapter renders independently of the inputs, built on first use. */
struct rendered {
    atomic_bool ready;        /* set (release) once the fields below are complete */
    char *prefix;             /* encoded system and demo messages, comma-separated */
    size_t prefix_len;
    char *response_format;    /* encoded JSON, or NULL when the adapter sends none */
    size_t response_format_len;
    bool structured;          /* response_format is a schema, not {"type":"json_object"} */
    /* The same in canonical form (sorted members), for the LM's cache key */
    char *canon_prefix;
    size_t canon_prefix_len;
    char *canon_response_format;
    size_t canon_response_format_len;
};

struct dspy_module {
    enum dspy_module_kind kind;
    enum dspy_adapter_kind adapter;
    dspy_signature *sig;
    json_t *demos;                  /* array of objects, never NULL */
    struct dspy_call_config config; /* Predict(**config) */
    pthread_mutex_t build_lock;     /* serializes building `rendered` and `memo` */
    struct rendered rendered[2];    /* by enum dspy_adapter_kind */
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
        { "predict", DSPY_MODULE_PREDICT }, { "Predict", DSPY_MODULE_PREDICT },
        { "cot", DSPY_MODULE_COT },         { "chain_of_thought", DSPY_MODULE_COT },
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
static dspy_status encode_messages(const json_t *msgs, struct dspy_buf *b,
                                   struct dspy_buf *canon)
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
                                 const json_t *demos, struct dspy_buf *b,
                                 struct dspy_buf *canon, struct dspy_error *err)
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
    r->prefix = r->response_format = r->canon_prefix = r->canon_response_format = NULL;
    r->prefix_len = r->response_format_len = 0;
    r->canon_prefix_len = r->canon_response_format_len = 0;
    r->structured = false;
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
    if (!(memo = atomic_load_explicit(&m->memo, memory_order_relaxed)) &&
        (memo = dspy__memo_new()))
        atomic_store_explicit(&m->memo, memo, memory_order_release);
    pthread_mutex_unlock(&m->build_lock);
    return memo;
}

static dspy_status build_rendered(dspy_module *m, enum dspy_adapter_kind kind,
                                  struct rendered *r, struct dspy_error *err)
{
    struct dspy_buf b, canon;
    dspy_status rc = DSPY_OK;
    json_t *rf = NULL;
    dspy__buf_init(&b, MODULE_MAX_PROMPT);
    dspy__buf_init(&canon, MODULE_MAX_PROMPT);
    if ((rc = render_prefix(kind, m->sig, m->demos, &b, &canon, err)))
        goto release;
    if (kind == DSPY_ADAPTER_JSON && (rf = dspy_adapter_response_format(kind, m->sig))) {
        struct dspy_buf rb;
        dspy__buf_init(&rb, MODULE_MAX_PROMPT);
        if ((rc = dspy__json_write(&rb, rf, DSPY__JSON_COMPACT, 0)) ||
            (rc = dspy_cache_canonical_json(rf, NULL, &r->canon_response_format,
                                            &r->canon_response_format_len, NULL))) {
            dspy__buf_release(&rb);
            rc = dspy__err(err, rc, "cannot encode the response format");
            goto release;
        }
        const char *type = json_string_value(json_object_get(rf, "type"));
        r->structured = !type || strcmp(type, "json_object") != 0;
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
static dspy_status check_inputs(const dspy_module *m, const json_t *inputs,
                                struct dspy_error *err)
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

struct attempt {
    dspy_module *m;
    dspy_lm *lm;
    const json_t *inputs;
    const struct dspy_call_config *cfg;
    struct dspy_call_info *info;
    bool timed; /* the caller asked for info: take the clock (about 20-60 ns a reading) */
    struct dspy__lm_cached *cached; /* the last LM call's cache entry, for the memo */
};

static uint64_t stamp(const struct attempt *a)
{
    return a->timed ? dspy__now_ns() : 0;
}

static void add_usage(struct dspy_lm_usage *sum, const struct dspy_lm_usage *u)
{
    sum->prompt_tokens += u->prompt_tokens;
    sum->completion_tokens += u->completion_tokens;
    sum->total_tokens += u->total_tokens;
}

/* Parse every choice; all must fit the signature (DSPy parses each one in turn). */
static dspy_status parse_choices(const struct attempt *a, enum dspy_adapter_kind kind,
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
        if ((rc = dspy_adapter_parse(kind, a->m->sig, text, strlen(text), &out, err)))
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

/* One LM call with one adapter and response format. */
static dspy_status attempt_once(const struct attempt *a, enum dspy_adapter_kind kind,
                                const struct rendered *r, const char *rf, size_t rf_len,
                                const char *canon_rf, size_t canon_rf_len,
                                json_t **prediction, json_t **completions,
                                struct dspy_error *err)
{
    struct dspy_buf user;
    struct dspy_lm_response resp;
    struct dspy__lm_call call = DSPY__LM_CALL_INIT;
    dspy_status rc;
    uint64_t t0 = stamp(a);
    dspy__buf_init(&user, MODULE_MAX_PROMPT);
    /* One allocation for the usual user message instead of a few doublings. */
    if ((rc = dspy__buf_reserve(&user, 1024))) {
        rc = dspy__err(err, rc, "out of memory");
        goto release_user;
    }
    if ((rc = dspy__adapter_render_user(kind, a->m->sig, a->inputs, &user, err)))
        goto release_user;
    call.messages = r->prefix;
    call.messages_len = r->prefix_len;
    call.user = user.len ? user.ptr : NULL; /* DSPy drops an empty user message */
    call.user_len = user.len;
    call.temperature = a->cfg->temperature;
    call.max_tokens = a->cfg->max_tokens;
    call.top_p = a->cfg->top_p;
    call.n = a->cfg->n;
    call.response_format = rf;
    call.response_format_len = rf_len;
    call.canon_messages = r->canon_prefix;
    call.canon_messages_len = r->canon_prefix_len;
    call.canon_response_format = canon_rf;
    call.canon_response_format_len = canon_rf_len;
    call.has_rollout_id = a->cfg->has_rollout_id;
    call.rollout_id = a->cfg->rollout_id;
    call.ctl = &a->cfg->cache;
    if (a->cached) { /* a fallback's second call: only the last one is remembered */
        dspy_cache_value_release(&a->cached->value);
        call.cached = a->cached;
    }
    uint64_t t1 = stamp(a);
    rc = dspy__lm_complete_call(a->lm, &call, &resp, err);
    uint64_t t2 = stamp(a);
    a->info->format_ns += t1 - t0;
    a->info->lm_ns += t2 - t1;
    a->info->lm_calls++;
    if (rc)
        goto release_user;
    add_usage(&a->info->usage, &resp.usage);
    if (resp.cache_hit) {
        a->info->cache_hits++;
        add_usage(&a->info->cached_usage, &resp.usage);
    }
    rc = parse_choices(a, kind, &resp, prediction, completions, err);
    a->info->parse_ns += stamp(a) - t2;
    dspy_lm_response_release(&resp);

release_user:
    dspy__buf_release(&user);
    return rc;
}

/* One adapter's attempt, DSPy's JSONAdapter included: a structured response_format whose
 * answer does not parse is retried once in plain JSON mode. */
static dspy_status run_adapter(const struct attempt *a, enum dspy_adapter_kind kind,
                               json_t **prediction, json_t **completions,
                               struct dspy_error *err)
{
    const struct rendered *r;
    dspy_status rc = get_rendered(a->m, kind, &r, err);
    if (rc)
        return rc;
    rc = attempt_once(a, kind, r, r->response_format, r->response_format_len,
                      r->canon_response_format, r->canon_response_format_len, prediction,
                      completions, err);
    if (rc == DSPY_EADAPTER && kind == DSPY_ADAPTER_JSON && r->structured)
        rc = attempt_once(a, kind, r, JSON_OBJECT_FORMAT, sizeof(JSON_OBJECT_FORMAT) - 1,
                          JSON_OBJECT_FORMAT, sizeof(JSON_OBJECT_FORMAT) - 1, prediction,
                          completions, err);
    return rc;
}

/* The memo applies to calls that read through a cache with an L1. */
static struct dspy__memo *memo_for(dspy_module *m, const dspy_lm *lm,
                                   const struct dspy_cache_ctl *ctl)
{
    if (!lm->cache || ctl->no_cache || ctl->no_store ||
        !(dspy_cache_levels(lm->cache) & DSPY_CACHE_L1) ||
        (ctl->levels && !(ctl->levels & DSPY_CACHE_L1)))
        return NULL;
    return get_memo(m);
}

static bool memo_hit(struct dspy__memo *memo, const struct attempt *a,
                     const struct dspy_cache_key *fp, const struct dspy_cache_ctl *ctl,
                     json_t **prediction, json_t **completions)
{
    struct dspy_lm_usage usage;
    uint64_t t0 = stamp(a);
    if (!dspy__memo_get(memo, a->lm, fp, ctl, prediction, completions, &usage))
        return false;
    a->info->lm_calls = 1;
    a->info->cache_hits = 1;
    a->info->usage = a->info->cached_usage = usage;
    a->info->lm_ns = stamp(a) - t0;
    return true;
}

dspy_status dspy_module_call(dspy_module *m, dspy_lm *lm, const json_t *inputs,
                             const struct dspy_call_config *cfg, json_t **prediction,
                             json_t **completions, struct dspy_call_info *info,
                             struct dspy_error *err)
{
    struct dspy_call_info local;
    struct dspy__lm_cached cached = { { { 0 } }, DSPY_CACHE_VALUE_INIT };
    struct dspy__memo *memo = NULL;
    struct dspy_cache_key fp;
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
    if ((rc = check_inputs(m, inputs, err)))
        return rc;
    struct dspy_call_config c = resolve_config(m, lm, cfg);
    struct attempt a = { m, lm, inputs, &c, info, timed, NULL };
    if (lm->cache) {
        struct dspy_cache_ctl ctl = lm->cache_ctl;
        dspy__lm_cache_ctl_merge(&ctl, &c.cache);
        if ((memo = memo_for(m, lm, &ctl)) &&
            dspy__memo_fingerprint(lm, m->sig, m->adapter, &c, &ctl, inputs, &fp))
            memo = NULL;
        if (memo && memo_hit(memo, &a, &fp, &ctl, prediction, completions))
            return DSPY_OK;
        a.cached = memo ? &cached : NULL;
    }
    rc = run_adapter(&a, m->adapter, prediction, completions, err);
    /* DSPy's ChatAdapter retries with the JSONAdapter on anything but an LM error; here
     * that is a reply that does not parse. */
    if (rc == DSPY_EADAPTER && m->adapter == DSPY_ADAPTER_CHAT)
        rc = run_adapter(&a, DSPY_ADAPTER_JSON, prediction, completions, err);
    if (memo && !rc && info->lm_calls == 1 && cached.value.ref)
        dspy__memo_put(memo, &fp, &cached, *prediction, completions ? *completions : NULL,
                       &info->usage);
    dspy_cache_value_release(&cached.value);
    return rc;
}

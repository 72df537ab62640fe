/* Cache-through for the LM client (lm layer): the request key, the single-flight fetch whose
 * fill is the real exchange, and hits read back as responses with their original usage.
 * The key is the cache layer's (docs/cache.md section 1) over the request as sent, plus
 * "_endpoint":"chat" and DSPy's rollout_id; callers that hold their messages in canonical
 * form get it by hashing the pieces in place, the others by re-reading the body. */
#include <math.h>
#include <string.h>

#include <dspyc/lm.h>

#include "base/status.h"
#include "cache/cache.h"
#include "lm/lm_handle.h"

void dspy__lm_cache_ctl_merge(struct dspy_cache_ctl *into, const struct dspy_cache_ctl *over)
{
    if (!over)
        return;
    into->no_cache = into->no_cache || over->no_cache;
    into->no_store = into->no_store || over->no_store;
    if (over->ttl_s > 0)
        into->ttl_s = over->ttl_s;
    if (over->levels)
        into->levels = over->levels;
    if (over->ns)
        into->ns = over->ns;
    into->no_semantic = into->no_semantic || over->no_semantic;
}

/* ---- the key ------------------------------------------------------------------------ */

#define ADD_LIT(h, s) dspy_cache_key_hasher_update((h), (s), sizeof(s) - 1)

static void add_long(struct dspy_cache_key_hasher *h, long v)
{
    char num[24];
    size_t i = sizeof(num);
    unsigned long u = v < 0 ? 0UL - (unsigned long)v : (unsigned long)v;
    do {
        num[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        num[--i] = '-';
    dspy_cache_key_hasher_update(h, num + i, sizeof(num) - i);
}

static void add_real(struct dspy_cache_key_hasher *h, double v)
{
    char num[32];
    dspy_cache_key_hasher_update(h, num, dspy_cache_canonical_real(v, num));
}

/* The canonical request, fed in sorted member order without building it:
 * {"_endpoint":"chat","max_tokens":..,"messages":[..],"model":..,"n":..,
 *  "response_format":..,"rollout_id":..,"temperature":..,"top_p":..} */
static void key_from_pieces(const struct dspy__lm_call *c, const char *body,
                            const struct dspy__lm_body_marks *mk, const char *ns,
                            struct dspy_cache_key *key)
{
    struct dspy_cache_key_hasher h;
    dspy_cache_key_hasher_init(&h, ns);
    ADD_LIT(&h, "{\"_endpoint\":\"chat\"");
    if (mk->max_tokens >= 0) {
        ADD_LIT(&h, ",\"max_tokens\":");
        add_long(&h, mk->max_tokens);
    }
    ADD_LIT(&h, ",\"messages\":[");
    if (c->canon_messages_len)
        dspy_cache_key_hasher_update(&h, c->canon_messages, c->canon_messages_len);
    if (mk->user_len) {
        if (c->canon_messages_len)
            ADD_LIT(&h, ",");
        ADD_LIT(&h, "{\"content\":");
        dspy_cache_key_hasher_update(&h, body + mk->user_off, mk->user_len);
        ADD_LIT(&h, ",\"role\":\"user\"}");
    }
    ADD_LIT(&h, "],\"model\":");
    dspy_cache_key_hasher_update(&h, body + mk->model_off, mk->model_len);
    if (c->n > 0) {
        ADD_LIT(&h, ",\"n\":");
        add_long(&h, c->n);
    }
    if (c->response_format) {
        ADD_LIT(&h, ",\"response_format\":");
        dspy_cache_key_hasher_update(&h, c->canon_response_format, c->canon_response_format_len);
    }
    if (c->has_rollout_id) {
        ADD_LIT(&h, ",\"rollout_id\":");
        add_long(&h, c->rollout_id);
    }
    if (!isnan(mk->temperature)) {
        ADD_LIT(&h, ",\"temperature\":");
        add_real(&h, mk->temperature);
    }
    if (!isnan(c->top_p)) {
        ADD_LIT(&h, ",\"top_p\":");
        add_real(&h, c->top_p);
    }
    ADD_LIT(&h, "}");
    dspy_cache_key_hasher_final(&h, key);
}

/* The request as keyed: the body exactly as sent, read back, plus what is keyed but not
 * sent. NULL with err set when it does not read back. */
static json_t *keyed_request(const struct dspy__lm_call *c, const char *body, size_t len,
                             struct dspy_error *err)
{
    json_error_t je;
    json_t *req = json_loadb(body, len, JSON_ALLOW_NUL, &je), *rollout = NULL;
    if (!req) {
        dspy__err(err, DSPY_EINVAL, "cache key: the request body does not read back: %s", je.text);
        return NULL;
    }
    if (c->has_rollout_id)
        rollout = json_integer(c->rollout_id);
    else if (c->extra && json_object_get(c->extra, "rollout_id"))
        rollout = json_deep_copy(json_object_get(c->extra, "rollout_id"));
    if (json_object_set_new(req, "_endpoint", json_string("chat")) ||
        (rollout && json_object_set(req, "rollout_id", rollout))) {
        dspy__err(err, DSPY_ENOMEM, "out of memory");
        json_decref(req);
        req = NULL;
    }
    json_decref(rollout);
    return req;
}

/* The general way: the key of the request as keyed. */
static dspy_status key_from_body(dspy_lm *lm, const struct dspy__lm_call *c, const char *body,
                                 size_t len, const struct dspy_cache_ctl *ctl,
                                 struct dspy_cache_key *key, struct dspy_error *err)
{
    json_t *req = keyed_request(c, body, len, err);
    if (!req)
        return err ? err->code : DSPY_EINVAL;
    dspy_status rc = dspy_cache_key(lm->cache, req, ctl, key, err);
    json_decref(req);
    return rc;
}

dspy_status dspy__lm_cache_key(dspy_lm *lm, const struct dspy__lm_call *call, const char *body,
                               size_t body_len, const struct dspy__lm_body_marks *marks,
                               const struct dspy_cache_ctl *ctl, bool fast,
                               struct dspy_cache_key *key, struct dspy_error *err)
{
    if (fast && !call->extra && (call->canon_messages || !call->messages_len) &&
        (!call->response_format || call->canon_response_format) && (ctl->ns || !lm->cache_has_ns)) {
        key_from_pieces(call, body, marks, ctl->ns, key);
        return DSPY_OK;
    }
    return key_from_body(lm, call, body, body_len, ctl, key, err);
}

/* ---- the call ----------------------------------------------------------------------- */

struct fill_ctx {
    dspy_lm *lm;
    struct dspy__engine_group *group;
    const char *body;
    size_t len;
    struct dspy_lm_response *resp;
    bool sent; /* this caller made the upstream call: resp holds its parsed answer */
    /* the semantic level (when open): the request as keyed, and what it found */
    json_t *sreq;
    const struct dspy_cache_ctl *ctl;
    bool sem_hit;
    float similarity;
};

json_t *dspy__lm_semantic_request(dspy_lm *lm, const struct dspy__lm_call *call, const char *body,
                                  size_t body_len, const struct dspy_cache_ctl *ctl)
{
    if (!(dspy_cache_levels(lm->cache) & DSPY_CACHE_SEMANTIC) ||
        (ctl->levels && !(ctl->levels & DSPY_CACHE_SEMANTIC)) || (ctl->no_cache && ctl->no_store))
        return NULL;
    return keyed_request(call, body, body_len, NULL);
}

bool dspy__lm_fill_from_semantic(dspy_lm *lm, const json_t *sreq, const struct dspy_cache_ctl *ctl,
                                 struct dspy_cache_fill *fill, float *similarity)
{
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    struct dspy_cache_semantic_hit hit;
    if (!sreq || dspy_cache_semantic_get(lm->cache, sreq, ctl, &v, &hit))
        return false;
    size_t len = v.len;
    void *copy = dspy_malloc(len ? len : 1);
    if (copy && len)
        memcpy(copy, v.data, len);
    dspy_cache_value_release(&v);
    if (!copy)
        return false;
    fill->value = copy;
    fill->len = len;
    fill->no_store = true;
    *similarity = hit.similarity;
    return true;
}

/* The upstream call for a miss. Only a 2xx answer that parses is handed to the cache. */
static dspy_status fill_from_endpoint(void *ud, struct dspy_cache_fill *fill,
                                      struct dspy_error *err)
{
    struct fill_ctx *x = ud;
    char *raw = NULL;
    size_t rlen = 0;
    if (dspy__lm_fill_from_semantic(x->lm, x->sreq, x->ctl, fill, &x->similarity)) {
        x->sem_hit = true;
        return DSPY_OK;
    }
    dspy_status rc = dspy__lm_send(x->lm, x->group, x->body, x->len, x->resp, &raw, &rlen, err);
    if (rc)
        return rc;
    x->sent = true;
    fill->value = raw;
    fill->len = rlen;
    return DSPY_OK;
}

/* Fetch through the cache; `missed`: the batch's lookup of this key just missed, so only
 * the single-flight fill is left. */
static dspy_status fetch(dspy_lm *lm, const struct dspy_cache_key *key,
                         const struct dspy_cache_ctl *ctl, bool missed, struct fill_ctx *x,
                         struct dspy_cache_value *v, struct dspy_error *err)
{
    x->sent = false;
    x->sem_hit = false;
    dspy_status rc = missed ? dspy__cache_fetch_missed(lm->cache, key, ctl, fill_from_endpoint, x,
                                                       v, err)
                            : dspy_cache_fetch(lm->cache, key, ctl, fill_from_endpoint, x, v, err);
    if (rc && x->sent) /* answered, but could not be handed over (out of memory) */
        dspy_lm_response_release(x->resp);
    return rc;
}

/* Fill `resp` from what the cache handed back; false when the bytes do not read as a
 * response (an imported or foreign entry): the caller drops it and asks upstream. */
static bool read_hit(const struct fill_ctx *x, const struct dspy_cache_value *v,
                     struct dspy_lm_response *resp)
{
    if (v->source == DSPY_CACHE_FILLED && x->sent)
        return true;
    if (dspy__lm_parse_response(v->data, v->len, resp, NULL))
        return false;
    resp->http_status = 200;
    resp->cache_hit = true;
    return true;
}

dspy_status dspy__lm_cache_call(dspy_lm *lm, const struct dspy__lm_call *call, const char *body,
                                size_t body_len, const struct dspy__lm_body_marks *marks,
                                struct dspy_lm_response *resp, struct dspy_error *err)
{
    struct dspy_cache_ctl ctl = lm->cache_ctl;
    struct dspy_cache_key key;
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    struct fill_ctx x = { lm, call->group, body, body_len, resp, false, NULL, &ctl, false, 0 };
    dspy_status rc;
    dspy__lm_cache_ctl_merge(&ctl, call->ctl);
    /* A request that cannot be keyed (it cannot: the body is our own JSON) is still sent. */
    if (dspy__lm_cache_key(lm, call, body, body_len, marks, &ctl, true, &key, NULL))
        return dspy__lm_send(lm, call->group, body, body_len, resp, NULL, NULL, err);
    struct dspy__lm_prefetched *pre = call->prefetched;
    bool looked = pre && pre->looked_up && !memcmp(pre->key.bytes, key.bytes, sizeof(key.bytes));
    if (looked && pre->value.ref) { /* the batch's hit: no second lookup */
        v = pre->value;
        pre->value = (struct dspy_cache_value)DSPY_CACHE_VALUE_INIT;
        rc = DSPY_OK;
        goto read;
    }
    x.sreq = dspy__lm_semantic_request(lm, call, body, body_len, &ctl);
    rc = fetch(lm, &key, &ctl, looked, &x, &v, err);
    if (!rc && x.sent && x.sreq && v.source == DSPY_CACHE_FILLED)
        dspy_cache_semantic_put(lm->cache, x.sreq, &key, &ctl);
    json_decref(x.sreq);
    x.sreq = NULL;
    if (rc)
        return rc;
read:
    if (!read_hit(&x, &v, resp)) {
        struct dspy_cache_ctl fresh = ctl;
        dspy_cache_value_release(&v);
        dspy_cache_delete(lm->cache, &key, &ctl);
        fresh.no_cache = true;
        if ((rc = fetch(lm, &key, &fresh, false, &x, &v, err)))
            return rc;
        if (!read_hit(&x, &v, resp)) { /* cannot happen: a fresh fill parsed */
            dspy_cache_value_release(&v);
            return dspy__err(err, DSPY_ELM_BAD_RESPONSE, "cached LM response does not parse");
        }
    }
    resp->cache_semantic = x.sem_hit;
    resp->cache_similarity = x.sem_hit ? x.similarity : 0.0f;
    if (call->cached) {
        call->cached->key = key;
        call->cached->value = v;
    } else {
        dspy_cache_value_release(&v);
    }
    return DSPY_OK;
}

bool dspy__lm_cache_still(dspy_lm *lm, const struct dspy_cache_key *key,
                          const struct dspy_cache_ctl *ctl, const struct dspy_cache_value *held)
{
    struct dspy_cache_ctl merged = lm->cache_ctl;
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    dspy__lm_cache_ctl_merge(&merged, ctl);
    if (!lm->cache || merged.no_cache || dspy_cache_get(lm->cache, key, &merged, &v))
        return false;
    bool same = v.data == held->data && v.len == held->len;
    dspy_cache_value_release(&v);
    return same;
}

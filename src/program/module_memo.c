/* Decoded-hit memo of a module (program layer). Rendering a prompt and parsing an answer
 * cost several times more than an L1 cache lookup, and for the same module state, LM
 * handle, call settings and inputs they give the same request and the same prediction. So
 * a module that calls through a cached LM remembers, per fingerprint of those, the request
 * key, a reference to the cached bytes that answered it, and the decoded prediction. A
 * later call with the same fingerprint asks the cache's L1 for the key again and, if L1
 * still hands out those very bytes (same entry: not expired, evicted, cleared or
 * replaced), returns a copy of the prediction without rendering or parsing. The cache
 * still sees, counts and decides every hit; the memo only skips work whose result is
 * known. */
#include <pthread.h>
#include <string.h>

#include <xxhash.h>

#include "base/status.h"
#include "base/jsonw.h"
#include "program/module_int.h"

#define MEMO_SLOTS 64 /* direct-mapped by fingerprint; a power of two */

struct memo_slot {
    pthread_mutex_t lock; /* guards the rest; callers only try it */
    bool used;
    struct dspy_cache_key fp;
    struct dspy__lm_cached cached; /* the key and a reference to the bytes */
    json_t *prediction;            /* decoded; handed out as copies only */
    json_t *completions;           /* NULL when the storing call did not ask for them */
    struct dspy_lm_usage usage;
};

struct dspy__memo {
    struct memo_slot slot[MEMO_SLOTS];
};

struct dspy__memo *dspy__memo_new(void)
{
    struct dspy__memo *memo = dspy_calloc(1, sizeof(*memo));
    if (!memo)
        return NULL;
    for (size_t i = 0; i < MEMO_SLOTS; i++)
        pthread_mutex_init(&memo->slot[i].lock, NULL);
    return memo;
}

static void slot_drop(struct memo_slot *s)
{
    dspy_cache_value_release(&s->cached.value);
    json_decref(s->prediction);
    json_decref(s->completions);
    s->prediction = s->completions = NULL;
    s->used = false;
}

void dspy__memo_clear(struct dspy__memo *memo)
{
    for (size_t i = 0; memo && i < MEMO_SLOTS; i++) {
        pthread_mutex_lock(&memo->slot[i].lock);
        slot_drop(&memo->slot[i]);
        pthread_mutex_unlock(&memo->slot[i].lock);
    }
}

void dspy__memo_free(struct dspy__memo *memo)
{
    if (!memo)
        return;
    for (size_t i = 0; i < MEMO_SLOTS; i++) {
        slot_drop(&memo->slot[i]);
        pthread_mutex_destroy(&memo->slot[i].lock);
    }
    dspy_free(memo);
}

/* ---- fingerprint ---------------------------------------------------------------------- */

/* Bytes to hash, gathered on the stack and hashed in one go (one XXH3 call costs less than
 * a dozen small streaming updates); spills into a streaming hasher when inputs are long. */
struct fp_writer {
    unsigned char buf[512];
    size_t len;
    bool streaming;
    struct dspy_cache_key_hasher h;
};

static void fp_add(struct fp_writer *w, const void *p, size_t n)
{
    if (w->len + n <= sizeof(w->buf)) {
        memcpy(w->buf + w->len, p, n);
        w->len += n;
        return;
    }
    if (!w->streaming) {
        dspy_cache_key_hasher_init(&w->h, NULL);
        w->streaming = true;
    }
    dspy_cache_key_hasher_update(&w->h, w->buf, w->len);
    w->len = 0;
    if (n > sizeof(w->buf))
        dspy_cache_key_hasher_update(&w->h, p, n);
    else
        fp_add(w, p, n);
}

static void fp_u64(struct fp_writer *w, uint64_t v)
{
    fp_add(w, &v, sizeof(v));
}

static void fp_bytes(struct fp_writer *w, const void *p, size_t n)
{
    fp_u64(w, n);
    fp_add(w, p, n);
}

static void fp_final(struct fp_writer *w, struct dspy_cache_key *fp)
{
    if (!w->streaming) { /* the usual case: one short XXH3 call, no hasher state */
        XXH128_hash_t h = XXH3_128bits(w->buf, w->len);
        memcpy(fp->bytes, &h.high64, 8);
        memcpy(fp->bytes + 8, &h.low64, 8);
        return;
    }
    dspy_cache_key_hasher_update(&w->h, w->buf, w->len);
    dspy_cache_key_hasher_final(&w->h, fp);
}

/* Everything the request (and so the answer's decoding) depends on besides the module's
 * own state: the LM handle (its model and defaults), the adapter, the resolved settings,
 * and each input field's value in signature order. Values are length-prefixed: strings as
 * their bytes, others as their compact JSON (which keeps member order and tells 1 from
 * 1.0), so different inputs never run together. */
dspy_status dspy__memo_fingerprint(const dspy_lm *lm, const dspy_signature *sig,
                                   enum dspy_adapter_kind adapter, const struct dspy_call_config *c,
                                   const struct dspy_cache_ctl *ctl, const json_t *inputs,
                                   struct dspy_cache_key *fp)
{
    struct fp_writer w;
    struct dspy_buf scratch;
    dspy_status rc = DSPY_OK;
    size_t n = dspy_signature_ninputs(sig);
    struct {
        uint64_t domain, lm, adapter, max_tokens, n, rollout, levels;
        double temperature, top_p;
        uint32_t has_rollout, has_ns;
    } head;
    memset(&head, 0, sizeof(head));    /* padding too: it is hashed */
    head.domain = 0x6d656d6f64737079u; /* "dspymemo" */
    head.lm = dspy__lm_id(lm);
    head.adapter = (uint64_t)adapter;
    head.max_tokens = (uint64_t)c->max_tokens;
    head.n = (uint64_t)c->n;
    head.rollout = (uint64_t)c->rollout_id;
    head.levels = ctl->levels;
    head.temperature = c->temperature;
    head.top_p = c->top_p;
    head.has_rollout = c->has_rollout_id;
    head.has_ns = ctl->ns != NULL;
    w.len = 0;
    w.streaming = false;
    fp_add(&w, &head, sizeof(head));
    if (ctl->ns)
        fp_bytes(&w, ctl->ns, strlen(ctl->ns));
    dspy__buf_init(&scratch, (size_t)64 << 20);
    for (size_t i = 0; !rc && i < n; i++) {
        const json_t *v = json_object_get(inputs, dspy_signature_field(sig, i)->name);
        if (!v) {
            fp_u64(&w, 0);
        } else if (json_is_string(v)) {
            fp_u64(&w, 1);
            fp_bytes(&w, json_string_value(v), json_string_length(v));
        } else {
            fp_u64(&w, 2);
            dspy__buf_reset(&scratch);
            if (!(rc = dspy__json_write(&scratch, v, DSPY__JSON_COMPACT, 0)))
                fp_bytes(&w, scratch.ptr, scratch.len);
        }
    }
    dspy__buf_release(&scratch);
    fp_final(&w, fp);
    return rc;
}

/* ---- lookup and store ----------------------------------------------------------------- */

/* A deep copy of a decoded prediction. json_deep_copy() would do, but jansson 2.14 checks
 * it for cycles with a table keyed by printed addresses, which costs more than the rest of
 * a memo hit; parsed answers have no cycles and little depth. */
static json_t *copy_value(const json_t *v, int depth)
{
    json_t *out;
    if (depth > 32)
        return json_deep_copy(v);
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        size_t klen;
        json_t *child;
        if (!(out = json_object()))
            return NULL;
        json_object_keylen_foreach((json_t *)(uintptr_t)v, key, klen, child) {
            if (json_object_setn_new_nocheck(out, key, klen, copy_value(child, depth + 1))) {
                json_decref(out);
                return NULL;
            }
        }
        return out;
    }
    case JSON_ARRAY:
        if (!(out = json_array()))
            return NULL;
        for (size_t i = 0; i < json_array_size(v); i++)
            if (json_array_append_new(out, copy_value(json_array_get(v, i), depth + 1))) {
                json_decref(out);
                return NULL;
            }
        return out;
    case JSON_STRING: return json_stringn_nocheck(json_string_value(v), json_string_length(v));
    case JSON_INTEGER: return json_integer(json_integer_value(v));
    case JSON_REAL: return json_real(json_real_value(v));
    default: /* true, false, null: shared singletons */ return json_incref((json_t *)(uintptr_t)v);
    }
}

static struct memo_slot *slot_of(struct dspy__memo *memo, const struct dspy_cache_key *fp)
{
    return &memo->slot[fp->bytes[15] & (MEMO_SLOTS - 1)];
}

bool dspy__memo_get(struct dspy__memo *memo, dspy_lm *lm, const struct dspy_cache_key *fp,
                    const struct dspy_cache_ctl *ctl, json_t **prediction, json_t **completions,
                    struct dspy_lm_usage *usage)
{
    struct memo_slot *s = slot_of(memo, fp);
    struct dspy_cache_ctl l1 = *ctl;
    bool hit = false;
    /* Held bytes can only still be current in L1: a lower level hands out a new copy. */
    l1.levels = (ctl->levels ? ctl->levels : DSPY_CACHE_ALL) & DSPY_CACHE_L1;
    if (!l1.levels || pthread_mutex_trylock(&s->lock))
        return false;
    if (!s->used || memcmp(fp->bytes, s->fp.bytes, sizeof(fp->bytes)) ||
        (completions && !s->completions) ||
        !dspy__lm_cache_still(lm, &s->cached.key, &l1, &s->cached.value))
        goto unlock;
    if (!(*prediction = copy_value(s->prediction, 0)))
        goto unlock;
    if (completions && !(*completions = copy_value(s->completions, 0))) {
        json_decref(*prediction);
        *prediction = NULL;
        goto unlock;
    }
    *usage = s->usage;
    hit = true;
unlock:
    pthread_mutex_unlock(&s->lock);
    return hit;
}

void dspy__memo_put(struct dspy__memo *memo, const struct dspy_cache_key *fp,
                    struct dspy__lm_cached *cached, const json_t *prediction,
                    const json_t *completions, const struct dspy_lm_usage *usage)
{
    struct memo_slot *s = slot_of(memo, fp);
    json_t *p = copy_value(prediction, 0);
    json_t *all = completions ? copy_value(completions, 0) : NULL;
    if (!p || (completions && !all) || pthread_mutex_trylock(&s->lock)) {
        json_decref(p);
        json_decref(all);
        dspy_cache_value_release(&cached->value);
        return;
    }
    slot_drop(s);
    s->fp = *fp;
    s->cached = *cached;
    cached->value = (struct dspy_cache_value)DSPY_CACHE_VALUE_INIT;
    s->prediction = p;
    s->completions = all;
    s->usage = *usage;
    s->used = true;
    pthread_mutex_unlock(&s->lock);
}

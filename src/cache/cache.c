/* The cache hierarchy (cache layer): read-through L1 -> L2 -> L3 with promotion on a hit,
 * write-through to the open levels, per-request control, single-flight fills (in-process
 * waiters share the leader's result; other processes wait on a Redis lease), and a
 * writer that stores a streamed response only when it finishes cleanly. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/status.h"
#include "cache/cache.h"
#include "cache/cache_int.h"

#define L1 0
#define L2 1
#define L3 2

/* One fill in progress: the leader runs it, waiters sleep on `cond`. */
struct dspy__flight {
    struct dspy__flight *next; /* shard list; shard lock */
    uint8_t key[16];
    unsigned refs;      /* leader + waiters still to read the result; shard lock */
    bool done;          /* shard lock */
    dspy_status status; /* written before done, read after */
    struct dspy_error err;
    struct dspy__cache_entry *value; /* the flight's own reference */
    pthread_cond_t cond;
};

const char *dspy_cache_source_name(enum dspy_cache_source s)
{
    static const char *const names[] = { "miss", "l1", "l2", "l3", "filled", "shared", "remote" };
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

void dspy_cache_value_release(struct dspy_cache_value *v)
{
    if (!v)
        return;
    dspy__cache_entry_unref(v->ref);
    *v = (struct dspy_cache_value)DSPY_CACHE_VALUE_INIT;
}

static void set_value(struct dspy_cache_value *out, struct dspy__cache_entry *e,
                      enum dspy_cache_source src)
{
    out->data = e->data;
    out->len = e->len;
    out->source = src;
    out->ref = e;
}

void dspy__cache_put_entry(struct dspy_cache *c, struct dspy__cache_entry *e, unsigned levels)
{
    for (int i = 0; i < 3; i++)
        if (c->lvl[i] && (levels & (1u << i)))
            c->ops[i]->put(c->lvl[i], e);
}

/* Read through the levels in order; a hit below L1 is copied into the levels above it
 * that the request may use. */
static bool lookup(struct dspy_cache *c, const uint8_t key[16], unsigned levels,
                   struct dspy__cache_entry **out, enum dspy_cache_source *src)
{
    for (int i = 0; i < 3; i++) {
        if (!c->lvl[i] || !(levels & (1u << i)))
            continue;
        if (c->ops[i]->get(c->lvl[i], key, out)) {
            dspy__cache_put_entry(c, *out, levels & ((1u << i) - 1));
            *src = (enum dspy_cache_source)(DSPY_CACHE_FROM_L1 + i);
            return true;
        }
    }
    return false;
}

dspy_status dspy_cache_get(dspy_cache *c, const struct dspy_cache_key *key,
                           const struct dspy_cache_ctl *ctl, struct dspy_cache_value *out)
{
    struct dspy__cache_entry *e;
    enum dspy_cache_source src;
    if (!c || !key || !out)
        return DSPY_EINVAL;
    *out = (struct dspy_cache_value)DSPY_CACHE_VALUE_INIT;
    atomic_fetch_add_explicit(&c->gets, 1, memory_order_relaxed);
    if (!(ctl && ctl->no_cache) &&
        lookup(c, key->bytes, dspy__cache_levels_for(c, ctl), &e, &src)) {
        atomic_fetch_add_explicit(&c->hits, 1, memory_order_relaxed);
        set_value(out, e, src);
        return DSPY_OK;
    }
    atomic_fetch_add_explicit(&c->misses, 1, memory_order_relaxed);
    return DSPY_ENOTFOUND;
}

size_t dspy_cache_get_many(dspy_cache *c, const struct dspy_cache_key *keys, size_t n,
                           const struct dspy_cache_ctl *ctl, struct dspy_cache_value *out)
{
    struct dspy__cache_entry **found;
    unsigned levels;
    size_t hits = 0;
    if (!c || !keys || !out || !n)
        return 0;
    for (size_t j = 0; j < n; j++)
        out[j] = (struct dspy_cache_value)DSPY_CACHE_VALUE_INIT;
    atomic_fetch_add_explicit(&c->gets, n, memory_order_relaxed);
    levels = dspy__cache_levels_for(c, ctl);
    if ((ctl && ctl->no_cache) || !(found = dspy_calloc(n, sizeof(*found)))) {
        atomic_fetch_add_explicit(&c->misses, n, memory_order_relaxed);
        return 0;
    }
    for (int i = 0; i < 3 && hits < n; i++) {
        if (!c->lvl[i] || !(levels & (1u << i)))
            continue;
        if (c->ops[i]->get_many)
            c->ops[i]->get_many(c->lvl[i], keys, n, found);
        for (size_t j = 0; j < n; j++) {
            if (!found[j] && !c->ops[i]->get_many)
                c->ops[i]->get(c->lvl[i], keys[j].bytes, &found[j]);
            if (!found[j] || out[j].ref)
                continue;
            dspy__cache_put_entry(c, found[j], levels & ((1u << i) - 1));
            set_value(&out[j], found[j], (enum dspy_cache_source)(DSPY_CACHE_FROM_L1 + i));
            hits++;
        }
    }
    dspy_free(found);
    atomic_fetch_add_explicit(&c->hits, hits, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->misses, n - hits, memory_order_relaxed);
    return hits;
}

bool dspy_cache_has(dspy_cache *c, const struct dspy_cache_key *key)
{
    struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
    bool hit = dspy_cache_get(c, key, NULL, &v) == DSPY_OK;
    dspy_cache_value_release(&v);
    return hit;
}

static struct dspy__cache_entry *new_entry(dspy_cache *c, const struct dspy_cache_key *key,
                                           const void *data, size_t len, double ttl_s,
                                           dspy_status *rc, struct dspy_error *err)
{
    struct dspy__cache_entry *e;
    if (len > c->opts.max_value_bytes) {
        *rc = dspy__err(err, DSPY_ETOOBIG, "cache value of %zu bytes exceeds max_value_bytes %zu",
                        len, c->opts.max_value_bytes);
        return NULL;
    }
    if (!(e = dspy__cache_entry_new(key->bytes, data, len,
                                    dspy__cache_expiry(ttl_s, dspy__wall_ms()))))
        *rc = dspy__err(err, DSPY_ENOMEM, "out of memory storing a cache value");
    else
        e->ttl_exact = ttl_s > 0;
    return e;
}

dspy_status dspy_cache_put(dspy_cache *c, const struct dspy_cache_key *key, const void *data,
                           size_t len, const struct dspy_cache_ctl *ctl, struct dspy_error *err)
{
    struct dspy__cache_entry *e;
    dspy_status rc = DSPY_OK;
    if (!c || !key || (!data && len))
        return dspy__err(err, DSPY_EINVAL, "cache put: missing argument");
    if (ctl && ctl->no_store)
        return DSPY_OK;
    if (!(e = new_entry(c, key, data, len, ctl ? ctl->ttl_s : 0, &rc, err)))
        return rc;
    dspy__cache_put_entry(c, e, dspy__cache_levels_for(c, ctl));
    dspy__cache_entry_unref(e);
    return DSPY_OK;
}

dspy_status dspy_cache_delete(dspy_cache *c, const struct dspy_cache_key *key,
                              const struct dspy_cache_ctl *ctl)
{
    unsigned levels;
    if (!c || !key)
        return DSPY_EINVAL;
    levels = dspy__cache_levels_for(c, ctl);
    for (int i = 0; i < 3; i++)
        if (c->lvl[i] && (levels & (1u << i)))
            c->ops[i]->del(c->lvl[i], key->bytes);
    return DSPY_OK;
}

dspy_status dspy_cache_clear(dspy_cache *c, unsigned levels, struct dspy_error *err)
{
    dspy_status rc = DSPY_OK;
    if (!c)
        return dspy__err(err, DSPY_EINVAL, "cache clear: no cache");
    levels = levels ? levels & c->levels : c->levels;
    for (int i = 0; i < 3 && !rc; i++)
        if (c->lvl[i] && (levels & (1u << i)))
            rc = c->ops[i]->clear(c->lvl[i], err);
    /* records go with the store that holds their entries (a record whose entry is gone
     * elsewhere is dropped when a lookup finds it) */
    if (!rc && ((levels & (DSPY_CACHE_L3 | DSPY_CACHE_SEMANTIC)) ||
                !(c->levels & (DSPY_CACHE_L2 | DSPY_CACHE_L3))))
        dspy__semantic_clear(c);
    return rc;
}

dspy_status dspy_cache_key(const dspy_cache *c, const json_t *request,
                           const struct dspy_cache_ctl *ctl, struct dspy_cache_key *out,
                           struct dspy_error *err)
{
    if (!c)
        return dspy__err(err, DSPY_EINVAL, "cache key: no cache");
    return dspy_cache_key_from_json(request, NULL, ctl && ctl->ns ? ctl->ns : c->ns, out, err);
}

/* --- single-flight ---------------------------------------------------------------- */

static struct dspy__flight_shard *flight_shard(dspy_cache *c, const uint8_t key[16])
{
    return &c->flights[key[14] % DSPY__FLIGHT_SHARDS];
}

static void flight_free(struct dspy__flight *f)
{
    dspy__cache_entry_unref(f->value);
    pthread_cond_destroy(&f->cond);
    dspy_free(f);
}

/* Run the fill function and store its value. The value's reference goes to *out. */
/* Run the fill and store its value. With `lease` (the token of the Redis lease this caller
 * holds), the L2 write and the lease release go together in one round trip. */
static dspy_status run_fill(dspy_cache *c, const struct dspy_cache_key *key,
                            const struct dspy_cache_ctl *ctl, dspy_cache_fill_fn fill, void *ud,
                            const char *lease, struct dspy__cache_entry **out,
                            struct dspy_error *err)
{
    bool stored = false;
    struct dspy_cache_fill f = { NULL, 0, 0.0, false };
    dspy_status rc;
    atomic_fetch_add(&c->fills, 1);
    rc = fill(ud, &f, err);
    if (!rc && !f.value && f.len)
        rc = dspy__err(err, DSPY_EINVAL, "cache fill returned no bytes");
    if (!rc) {
        double ttl = f.ttl_s > 0 ? f.ttl_s : ctl ? ctl->ttl_s : 0;
        /* a value too big to store still goes to this caller and the waiters */
        bool store = !f.no_store && !(ctl && ctl->no_store) && f.len <= c->opts.max_value_bytes;
        *out = dspy__cache_entry_new(key->bytes, f.value, f.len,
                                     dspy__cache_expiry(ttl, dspy__wall_ms()));
        if (!*out)
            rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        else
            (*out)->ttl_exact = ttl > 0;
        if (*out && store) {
            unsigned levels = dspy__cache_levels_for(c, ctl);
            dspy__cache_put_entry(c, *out, lease ? levels & ~DSPY_CACHE_L2 : levels);
            stored = true;
        }
    }
    if (lease)
        dspy__cache_redis_put_unlease(c->lvl[L2], key->bytes, stored ? *out : NULL, lease);
    if (rc)
        atomic_fetch_add(&c->fill_errors, 1);
    dspy_free(f.value);
    return rc;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* Whether a leader takes a Redis lease for a fill at `levels`. */
static bool leases(const dspy_cache *c, unsigned levels)
{
    return c->lvl[L2] && (levels & DSPY_CACHE_L2) && c->opts.lease_ms;
}

/* Cross-process step of the leader: wait while another process holds the lease. Returns
 * true with *out (source REMOTE) when that process's value appeared; false when this
 * process should fill, with *leased telling whether it holds the lease. */
static bool lease_wait(dspy_cache *c, const uint8_t key[16], unsigned levels, char *token,
                       size_t token_cap, bool *leased, struct dspy__cache_entry **out)
{
    uint64_t deadline = dspy__now_ns() + 2 * (uint64_t)c->opts.lease_ms * 1000000u;
    bool waited = false;
    *leased = false;
    if (!leases(c, levels))
        return false;
    snprintf(token, token_cap, "%ld-%llx-%llx", (long)getpid(), (unsigned long long)dspy__now_ns(),
             (unsigned long long)atomic_fetch_add(&c->token_seq, 1));
    for (;;) {
        switch (dspy__cache_redis_lease(c->lvl[L2], key, token, c->opts.lease_ms, out)) {
        case DSPY__LEASE_DOWN: return false;
        case DSPY__LEASE_ACQUIRED: *leased = true; return false;
        case DSPY__LEASE_VALUE:
            if (waited)
                atomic_fetch_add(&c->remote_fills, 1);
            dspy__cache_put_entry(c, *out, levels & DSPY_CACHE_L1);
            return true;
        case DSPY__LEASE_BUSY: break;
        }
        if (!waited)
            atomic_fetch_add(&c->lease_waits, 1);
        waited = true;
        if (dspy__now_ns() > deadline)
            return false;
        sleep_ms(c->opts.lease_poll_ms ? c->opts.lease_poll_ms : 10);
    }
}

/* The leader's part: look again (a fill may have finished between our miss and our
 * registration), then the lease, then the fill. The lease script reads Redis's value
 * before it takes the lease, in the same round trip: the look again skips Redis then (it
 * would be a second GET, and a second miss in Redis's counters, for nothing). */
static dspy_status lead(dspy_cache *c, const struct dspy_cache_key *key,
                        const struct dspy_cache_ctl *ctl, dspy_cache_fill_fn fill, void *ud,
                        struct dspy__cache_entry **out, enum dspy_cache_source *src,
                        struct dspy_error *err)
{
    unsigned levels = dspy__cache_levels_for(c, ctl);
    char token[64];
    bool leased;
    if (lookup(c, key->bytes, leases(c, levels) ? levels & ~DSPY_CACHE_L2 : levels, out, src))
        return DSPY_OK;
    if (lease_wait(c, key->bytes, levels, token, sizeof(token), &leased, out)) {
        *src = DSPY_CACHE_REMOTE;
        return DSPY_OK;
    }
    *src = DSPY_CACHE_FILLED;
    return run_fill(c, key, ctl, fill, ud, leased ? token : NULL, out, err);
}

static dspy_status wait_for(struct dspy__flight_shard *s, struct dspy__flight *f,
                            struct dspy_cache_value *out, struct dspy_error *err)
{
    dspy_status rc;
    bool last;
    while (!f->done)
        pthread_cond_wait(&f->cond, &s->lock);
    rc = f->status;
    if (!rc) {
        dspy__cache_entry_ref(f->value);
        set_value(out, f->value, DSPY_CACHE_SHARED);
    } else if (err) {
        *err = f->err;
    }
    last = --f->refs == 0;
    pthread_mutex_unlock(&s->lock);
    if (last)
        flight_free(f);
    return rc;
}

/* The single-flight part of a fetch, after a lookup that missed (and was counted). */
static dspy_status fetch_missed(dspy_cache *c, const struct dspy_cache_key *key,
                                const struct dspy_cache_ctl *ctl, dspy_cache_fill_fn fill,
                                void *userdata, struct dspy_cache_value *out,
                                struct dspy_error *err)
{
    struct dspy__cache_entry *e = NULL;
    enum dspy_cache_source src;
    struct dspy__flight_shard *s;
    struct dspy__flight *f;
    struct dspy_error local;
    dspy_status rc;
    bool last;
    s = flight_shard(c, key->bytes);
    pthread_mutex_lock(&s->lock);
    for (f = s->head; f && memcmp(f->key, key->bytes, 16) != 0; f = f->next)
        ;
    if (f) {
        f->refs++;
        atomic_fetch_add(&c->coalesced, 1);
        return wait_for(s, f, out, err);
    }
    if (!(f = dspy_calloc(1, sizeof(*f)))) {
        pthread_mutex_unlock(&s->lock);
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    }
    memcpy(f->key, key->bytes, 16);
    f->refs = 1;
    pthread_cond_init(&f->cond, NULL);
    f->next = s->head;
    s->head = f;
    pthread_mutex_unlock(&s->lock);

    dspy_error_clear(&local);
    rc = lead(c, key, ctl, fill, userdata, &e, &src, &local);

    pthread_mutex_lock(&s->lock);
    for (struct dspy__flight **p = &s->head; *p; p = &(*p)->next)
        if (*p == f) {
            *p = f->next;
            break;
        }
    f->status = rc;
    f->err = local;
    if (!rc) {
        dspy__cache_entry_ref(e);
        f->value = e;
    }
    f->done = true;
    pthread_cond_broadcast(&f->cond);
    last = --f->refs == 0;
    pthread_mutex_unlock(&s->lock);
    if (last)
        flight_free(f);
    if (rc) {
        if (err)
            *err = local;
        return rc;
    }
    set_value(out, e, src);
    return DSPY_OK;
}

dspy_status dspy_cache_fetch(dspy_cache *c, const struct dspy_cache_key *key,
                             const struct dspy_cache_ctl *ctl, dspy_cache_fill_fn fill,
                             void *userdata, struct dspy_cache_value *out, struct dspy_error *err)
{
    struct dspy__cache_entry *e = NULL;
    enum dspy_cache_source src;
    dspy_status rc;
    if (!c || !key || !fill || !out)
        return dspy__err(err, DSPY_EINVAL, "cache fetch: missing argument");
    *out = (struct dspy_cache_value)DSPY_CACHE_VALUE_INIT;
    atomic_fetch_add_explicit(&c->gets, 1, memory_order_relaxed);
    if (ctl && ctl->no_cache) {
        atomic_fetch_add(&c->misses, 1);
        if ((rc = run_fill(c, key, ctl, fill, userdata, NULL, &e, err)))
            return rc;
        set_value(out, e, DSPY_CACHE_FILLED);
        return DSPY_OK;
    }
    if (lookup(c, key->bytes, dspy__cache_levels_for(c, ctl), &e, &src)) {
        atomic_fetch_add_explicit(&c->hits, 1, memory_order_relaxed);
        set_value(out, e, src);
        return DSPY_OK;
    }
    atomic_fetch_add(&c->misses, 1);
    return fetch_missed(c, key, ctl, fill, userdata, out, err);
}

dspy_status dspy__cache_fetch_missed(dspy_cache *c, const struct dspy_cache_key *key,
                                     const struct dspy_cache_ctl *ctl, dspy_cache_fill_fn fill,
                                     void *userdata, struct dspy_cache_value *out,
                                     struct dspy_error *err)
{
    if (!c || !key || !fill || !out)
        return dspy__err(err, DSPY_EINVAL, "cache fetch: missing argument");
    *out = (struct dspy_cache_value)DSPY_CACHE_VALUE_INIT;
    if (ctl && ctl->no_cache)
        return dspy_cache_fetch(c, key, ctl, fill, userdata, out, err);
    return fetch_missed(c, key, ctl, fill, userdata, out, err);
}

/* --- streamed responses ------------------------------------------------------------ */

struct dspy_cache_writer {
    dspy_cache *c;
    struct dspy_cache_key key;
    struct dspy_cache_ctl ctl;
    struct dspy_buf buf;
    bool failed; /* went past max_value_bytes: commit stores nothing */
};

dspy_cache_writer *dspy_cache_writer_new(dspy_cache *c, const struct dspy_cache_key *key,
                                         const struct dspy_cache_ctl *ctl)
{
    dspy_cache_writer *w;
    if (!c || !key || !(w = dspy_calloc(1, sizeof(*w))))
        return NULL;
    w->c = c;
    w->key = *key;
    if (ctl)
        w->ctl = *ctl;
    w->ctl.ns = NULL;
    dspy__buf_init(&w->buf, c->opts.max_value_bytes);
    return w;
}

dspy_status dspy_cache_writer_append(dspy_cache_writer *w, const void *data, size_t len)
{
    if (!w)
        return DSPY_EINVAL;
    if (w->failed)
        return DSPY_ETOOBIG;
    dspy_status rc = dspy__buf_add(&w->buf, data, len);
    if (rc)
        w->failed = true;
    return rc;
}

dspy_status dspy_cache_writer_commit(dspy_cache_writer *w, struct dspy_error *err)
{
    dspy_status rc = DSPY_OK;
    if (!w)
        return dspy__err(err, DSPY_EINVAL, "cache writer: none");
    if (w->failed)
        rc = dspy__err(err, DSPY_ETOOBIG, "streamed value exceeded max_value_bytes; not stored");
    else
        rc = dspy_cache_put(w->c, &w->key, w->buf.ptr ? w->buf.ptr : "", w->buf.len, &w->ctl, err);
    dspy_cache_writer_abort(w);
    return rc;
}

void dspy_cache_writer_abort(dspy_cache_writer *w)
{
    if (!w)
        return;
    dspy__buf_release(&w->buf);
    dspy_free(w);
}

/* --- lifecycle --------------------------------------------------------------------- */

unsigned dspy_cache_levels(const dspy_cache *c)
{
    return c ? c->levels : 0;
}

static dspy_status copy_str(char **dst, const char **member)
{
    if (!*member)
        return DSPY_OK;
    if (!(*dst = dspy_strdup(*member)))
        return DSPY_ENOMEM;
    *member = *dst;
    return DSPY_OK;
}

static dspy_status open_levels(dspy_cache *c, struct dspy_error *err)
{
    static const struct {
        unsigned bit;
        const struct dspy__cache_level_ops *ops;
        dspy_status (*open)(const struct dspy_cache_options *, void **, struct dspy_error *);
    } table[3] = {
        { DSPY_CACHE_L1, &dspy__cache_mem_ops, dspy__cache_mem_new },
        { DSPY_CACHE_L2, &dspy__cache_redis_ops, dspy__cache_redis_new },
        { DSPY_CACHE_L3, &dspy__cache_disk_ops, dspy__cache_disk_new },
    };
    for (int i = 0; i < 3; i++) {
        if (!(c->opts.levels & table[i].bit))
            continue;
        dspy_status rc = table[i].open(&c->opts, &c->lvl[i], err);
        if (rc)
            return rc;
        c->ops[i] = table[i].ops;
        c->levels |= table[i].bit;
    }
    return DSPY_OK;
}

/* Records follow the level that holds the answers longest: L3 when open, else L2 (Redis
 * evicts on its own and says nothing: its records go when a lookup finds the entry gone),
 * else L1. An entry leaving a level above that one is still answered from below. */
static void watch_answers(dspy_cache *c)
{
    for (int i = 2; i >= 0; i--) {
        if (!c->lvl[i])
            continue;
        if (c->ops[i]->watch)
            c->ops[i]->watch(c->lvl[i], dspy__semantic_gone, c);
        return;
    }
}

dspy_status dspy_cache_new(const struct dspy_cache_options *opts, dspy_cache **out,
                           struct dspy_error *err)
{
    struct dspy_cache_options defaults = DSPY_CACHE_OPTIONS_INIT;
    dspy_cache *c;
    dspy_status rc;
    if (!out)
        return dspy__err(err, DSPY_EINVAL, "cache: no output handle");
    *out = NULL;
    if (!opts)
        opts = &defaults;
    if (opts->levels & ~(DSPY_CACHE_ALL | DSPY_CACHE_SEMANTIC))
        return dspy__err(err, DSPY_EINVAL, "cache: unknown level bits 0x%x", opts->levels);
    if (opts->max_value_bytes > DSPY__CACHE_VALUE_HARD_MAX)
        return dspy__err(err, DSPY_EINVAL, "cache: max_value_bytes above %zu",
                         DSPY__CACHE_VALUE_HARD_MAX);
    if (opts->ns && strlen(opts->ns) > DSPY_CACHE_NS_MAX)
        return dspy__err(err, DSPY_EINVAL, "cache: namespace longer than %d bytes",
                         DSPY_CACHE_NS_MAX);
    if (!(c = dspy_calloc(1, sizeof(*c))))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    c->opts = *opts;
    if (!c->opts.max_value_bytes)
        c->opts.max_value_bytes = defaults.max_value_bytes;
    for (int i = 0; i < DSPY__FLIGHT_SHARDS; i++)
        pthread_mutex_init(&c->flights[i].lock, NULL);
    if (copy_str(&c->ns, &c->opts.ns) || copy_str(&c->redis_url, &c->opts.redis_url) ||
        copy_str(&c->redis_prefix, &c->opts.redis_prefix) ||
        copy_str(&c->disk_path, &c->opts.disk_path)) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out_free;
    }
    if ((rc = open_levels(c, err)))
        goto out_free;
    if (c->opts.levels & DSPY_CACHE_SEMANTIC) {
        if (!(c->levels & DSPY_CACHE_ALL)) {
            rc = dspy__err(err, DSPY_EINVAL,
                           "cache: the semantic level needs an exact level "
                           "to hold the values");
            goto out_free;
        }
        if (!(c->opts.semantic_threshold > 0 && c->opts.semantic_threshold <= 1)) {
            rc = dspy__err(err, DSPY_EINVAL, "cache: semantic_threshold %g is not in (0, 1]",
                           c->opts.semantic_threshold);
            goto out_free;
        }
        if (c->opts.semantic_projection < DSPY_SEMANTIC_LAST_USER ||
            c->opts.semantic_projection > DSPY_SEMANTIC_ALL) {
            rc = dspy__err(err, DSPY_EINVAL, "cache: unknown semantic_projection %d",
                           c->opts.semantic_projection);
            goto out_free;
        }
        if (!c->opts.semantic_max_bytes)
            c->opts.semantic_max_bytes = DSPY_CACHE_DEFAULT_SEMANTIC_MAX_BYTES;
        if ((rc = copy_str(&c->embed_model, &c->opts.embed_model)) ||
            (rc = dspy__semantic_new(c, err)))
            goto out_free;
        c->levels |= DSPY_CACHE_SEMANTIC;
        watch_answers(c);
    }
    *out = c;
    return DSPY_OK;
out_free:
    dspy_cache_free(c);
    return rc;
}

void dspy_cache_free(dspy_cache *c)
{
    if (!c)
        return;
    dspy__semantic_free(c);
    for (int i = 0; i < 3; i++)
        if (c->lvl[i])
            c->ops[i]->free(c->lvl[i]);
    for (int i = 0; i < DSPY__FLIGHT_SHARDS; i++)
        pthread_mutex_destroy(&c->flights[i].lock);
    dspy_free(c->ns);
    dspy_free(c->redis_url);
    dspy_free(c->redis_prefix);
    dspy_free(c->disk_path);
    dspy_free(c->embed_model);
    dspy_free(c);
}

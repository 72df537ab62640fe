/* L1 of the cache (cache layer): an in-process LRU split into 16 shards, each a mutex, a
 * chained hash table and an intrusive LRU list, with a TTL and a byte and entry budget.
 * Entries are refcounted, so a hit hands out a reference without copying or allocating.
 * Keys are already uniform 128-bit hashes, so the table needs no hash/compare vtable. */
#include <pthread.h>
#include <stdalign.h>
#include <string.h>

#include "base/status.h"
#include "base/clock.h"
#include "cache/cache_int.h"

#define SHARDS 16
#define INITIAL_BUCKETS 64

struct shard {
    alignas(64) pthread_mutex_t lock;
    struct dspy__cache_entry **buckets;              /* lock */
    size_t nbuckets;                                 /* power of two; lock */
    struct dspy__cache_entry *head;                  /* most recently used; lock */
    struct dspy__cache_entry *tail;                  /* least recently used; lock */
    size_t count, bytes;                             /* lock */
    uint64_t hits, misses, puts, evictions, expired; /* lock */
};

struct mem {
    struct shard shards[SHARDS];
    size_t shard_max_bytes;
    size_t shard_max_entries; /* 0 = no limit */
    double ttl_s;
    dspy__cache_gone_fn gone; /* set once before use (mem_watch), or NULL */
    void *gone_ud;
};

/* What an entry costs against the budget: its bytes and its bookkeeping. */
static size_t charge(const struct dspy__cache_entry *e)
{
    return sizeof(*e) + e->len;
}

static uint64_t key_hash(const uint8_t key[16])
{
    uint64_t h;
    memcpy(&h, key, 8);
    return h;
}

static struct shard *shard_of(struct mem *m, const uint8_t key[16])
{
    return &m->shards[key[15] & (SHARDS - 1)];
}

static struct dspy__cache_entry **slot_of(struct shard *s, const uint8_t key[16])
{
    struct dspy__cache_entry **p = &s->buckets[key_hash(key) & (s->nbuckets - 1)];
    while (*p && memcmp((*p)->key, key, 16) != 0)
        p = &(*p)->hnext;
    return p;
}

static void lru_unlink(struct shard *s, struct dspy__cache_entry *e)
{
    if (e->lprev)
        e->lprev->lnext = e->lnext;
    else
        s->head = e->lnext;
    if (e->lnext)
        e->lnext->lprev = e->lprev;
    else
        s->tail = e->lprev;
    e->lprev = e->lnext = NULL;
}

static void lru_push_head(struct shard *s, struct dspy__cache_entry *e)
{
    e->lprev = NULL;
    e->lnext = s->head;
    if (s->head)
        s->head->lprev = e;
    s->head = e;
    if (!s->tail)
        s->tail = e;
}

/* Take `e` (found at *slot) out of the shard; the table's reference passes to the caller
 * through the `dead` list (chained by hnext), released after the lock is dropped. */
static void remove_at(struct shard *s, struct dspy__cache_entry **slot,
                      struct dspy__cache_entry **dead)
{
    struct dspy__cache_entry *e = *slot;
    *slot = e->hnext;
    lru_unlink(s, e);
    s->count--;
    s->bytes -= charge(e);
    e->hnext = *dead;
    *dead = e;
}

/* Unreference removed entries; those other than `kept` (a key put again) are gone for
 * good, and the watcher hears of each (none when `m` is NULL: a clear). */
static void release_dead(const struct mem *m, struct dspy__cache_entry *dead, const uint8_t *kept)
{
    while (dead) {
        struct dspy__cache_entry *next = dead->hnext;
        if (m && m->gone && (!kept || memcmp(dead->key, kept, 16)))
            m->gone(m->gone_ud, dead->key);
        dspy__cache_entry_unref(dead);
        dead = next;
    }
}

/* Double the table when it is fuller than one entry per bucket. On allocation failure the
 * old table stays: longer chains, still correct. */
static void maybe_grow(struct shard *s)
{
    if (s->count <= s->nbuckets)
        return;
    size_t n = s->nbuckets * 2;
    struct dspy__cache_entry **b = dspy_calloc(n, sizeof(*b));
    if (!b)
        return;
    for (size_t i = 0; i < s->nbuckets; i++) {
        struct dspy__cache_entry *e = s->buckets[i];
        while (e) {
            struct dspy__cache_entry *next = e->hnext;
            size_t j = key_hash(e->key) & (n - 1);
            e->hnext = b[j];
            b[j] = e;
            e = next;
        }
    }
    dspy_free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
}

static bool mem_get(void *lvl, const uint8_t key[16], struct dspy__cache_entry **out)
{
    struct mem *m = lvl;
    struct shard *s = shard_of(m, key);
    struct dspy__cache_entry *dead = NULL, **slot, *e;
    pthread_mutex_lock(&s->lock);
    slot = slot_of(s, key);
    e = *slot;
    if (e && e->mem_expires_ms && e->mem_expires_ms <= dspy__wall_ms()) {
        remove_at(s, slot, &dead);
        s->expired++;
        e = NULL;
    }
    if (!e) {
        s->misses++;
        pthread_mutex_unlock(&s->lock);
        release_dead(m, dead, NULL);
        return false;
    }
    if (s->head != e) {
        lru_unlink(s, e);
        lru_push_head(s, e);
    }
    dspy__cache_entry_ref(e);
    s->hits++;
    pthread_mutex_unlock(&s->lock);
    *out = e;
    return true;
}

static void mem_put(void *lvl, struct dspy__cache_entry *e)
{
    struct mem *m = lvl;
    struct shard *s = shard_of(m, e->key);
    struct dspy__cache_entry *dead = NULL, **slot;
    uint8_t kept[16];
    uint64_t now = dspy__wall_ms();
    uint64_t exp = dspy__cache_level_expiry(e, m->ttl_s, now);
    if (charge(e) > m->shard_max_bytes || (exp && exp <= now))
        return;
    /* The links live in the entry, so it can be in the table only once; a second put of
     * the same entry (it was evicted and put again) stores a copy. */
    if (atomic_exchange(&e->in_mem, true)) {
        struct dspy__cache_entry *copy = dspy__cache_entry_new(e->key, e->data, e->len,
                                                               e->expires_ms);
        if (!copy)
            return;
        copy->ttl_exact = e->ttl_exact;
        atomic_store(&copy->in_mem, true);
        e = copy;
    } else {
        dspy__cache_entry_ref(e);
    }
    e->mem_expires_ms = exp;
    pthread_mutex_lock(&s->lock);
    slot = slot_of(s, e->key);
    if (*slot)
        remove_at(s, slot, &dead);
    e->hnext = *slot;
    *slot = e;
    lru_push_head(s, e);
    s->count++;
    s->bytes += charge(e);
    s->puts++;
    while (s->bytes > m->shard_max_bytes ||
           (m->shard_max_entries && s->count > m->shard_max_entries)) {
        struct dspy__cache_entry *victim = s->tail;
        remove_at(s, slot_of(s, victim->key), &dead);
        s->evictions++;
    }
    maybe_grow(s);
    memcpy(kept, e->key, sizeof(kept)); /* e may be among the dead (a copy, evicted) */
    pthread_mutex_unlock(&s->lock);
    release_dead(m, dead, kept);
}

static void mem_del(void *lvl, const uint8_t key[16])
{
    struct mem *m = lvl;
    struct shard *s = shard_of(m, key);
    struct dspy__cache_entry *dead = NULL, **slot;
    pthread_mutex_lock(&s->lock);
    slot = slot_of(s, key);
    if (*slot)
        remove_at(s, slot, &dead);
    pthread_mutex_unlock(&s->lock);
    release_dead(m, dead, NULL);
}

static dspy_status mem_clear(void *lvl, struct dspy_error *err)
{
    struct mem *m = lvl;
    (void)err;
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &m->shards[i];
        struct dspy__cache_entry *dead = NULL;
        pthread_mutex_lock(&s->lock);
        while (s->tail)
            remove_at(s, slot_of(s, s->tail->key), &dead);
        pthread_mutex_unlock(&s->lock);
        release_dead(NULL, dead, NULL);
    }
    return DSPY_OK;
}

/* Walk one shard without holding its lock during the callback: take references to its
 * live entries first, oldest first. */
static dspy_status each_shard(struct shard *s, dspy__cache_each_fn fn, void *ud,
                              struct dspy_error *err)
{
    struct dspy__cache_entry **refs = NULL;
    size_t n = 0;
    dspy_status rc = DSPY_OK;
    uint64_t now = dspy__wall_ms();
    pthread_mutex_lock(&s->lock);
    if (s->count && !(refs = dspy_malloc(s->count * sizeof(*refs)))) {
        pthread_mutex_unlock(&s->lock);
        return dspy__err(err, DSPY_ENOMEM, "out of memory walking the memory cache");
    }
    for (struct dspy__cache_entry *e = s->tail; e; e = e->lprev) {
        if (e->mem_expires_ms && e->mem_expires_ms <= now)
            continue;
        dspy__cache_entry_ref(e);
        refs[n++] = e;
    }
    /* L1's expiry already includes the source's; read it while the lock is held */
    uint64_t *exps = n ? dspy_malloc(n * sizeof(*exps)) : NULL;
    for (size_t i = 0; exps && i < n; i++)
        exps[i] = refs[i]->mem_expires_ms;
    pthread_mutex_unlock(&s->lock);
    if (n && !exps)
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory walking the memory cache");
    for (size_t i = 0; i < n; i++) {
        if (!rc)
            rc = fn(ud, refs[i]->key, refs[i]->data, refs[i]->len, exps[i]);
        dspy__cache_entry_unref(refs[i]);
    }
    dspy_free(exps);
    dspy_free(refs);
    return rc;
}

static dspy_status mem_each(void *lvl, dspy__cache_each_fn fn, void *ud, struct dspy_error *err)
{
    struct mem *m = lvl;
    dspy_status rc = DSPY_OK;
    for (int i = 0; i < SHARDS && !rc; i++)
        rc = each_shard(&m->shards[i], fn, ud, err);
    return rc;
}

static void mem_stats(void *lvl, struct dspy_cache_level_stats *st)
{
    struct mem *m = lvl;
    memset(st, 0, sizeof(*st));
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &m->shards[i];
        pthread_mutex_lock(&s->lock);
        st->hits += s->hits;
        st->misses += s->misses;
        st->puts += s->puts;
        st->evictions += s->evictions;
        st->expired += s->expired;
        st->entries += s->count;
        st->bytes += s->bytes;
        pthread_mutex_unlock(&s->lock);
    }
}

static void mem_free(void *lvl)
{
    struct mem *m = lvl;
    if (!m)
        return;
    mem_clear(m, NULL);
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_destroy(&m->shards[i].lock);
        dspy_free(m->shards[i].buckets);
    }
    dspy_free(m);
}

dspy_status dspy__cache_mem_new(const struct dspy_cache_options *o, void **out,
                                struct dspy_error *err)
{
    struct mem *m = dspy_calloc(1, sizeof(*m));
    int i;
    if (!m)
        return dspy__err(err, DSPY_ENOMEM, "out of memory creating the memory cache");
    m->shard_max_bytes = o->mem_max_bytes / SHARDS;
    m->shard_max_entries = o->mem_max_entries ? (o->mem_max_entries + SHARDS - 1) / SHARDS : 0;
    m->ttl_s = o->mem_ttl_s;
    for (i = 0; i < SHARDS; i++) {
        struct shard *s = &m->shards[i];
        s->nbuckets = INITIAL_BUCKETS;
        s->buckets = dspy_calloc(INITIAL_BUCKETS, sizeof(*s->buckets));
        if (!s->buckets || pthread_mutex_init(&s->lock, NULL) != 0) {
            dspy_free(s->buckets);
            goto out_shards;
        }
    }
    *out = m;
    return DSPY_OK;
out_shards:
    while (i-- > 0) {
        pthread_mutex_destroy(&m->shards[i].lock);
        dspy_free(m->shards[i].buckets);
    }
    dspy_free(m);
    return dspy__err(err, DSPY_ENOMEM, "out of memory creating the memory cache");
}

static void mem_watch(void *lvl, dspy__cache_gone_fn gone, void *ud)
{
    struct mem *m = lvl;
    m->gone = gone;
    m->gone_ud = ud;
}

const struct dspy__cache_level_ops dspy__cache_mem_ops = {
    "l1", mem_get, mem_put, mem_del, mem_clear, mem_each, mem_stats, mem_free, NULL, mem_watch,
};

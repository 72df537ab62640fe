/* Private interface of the cache layer: the refcounted entry every level hands around,
 * the small vtable the three level backends (cache_mem.c, cache_redis.c, cache_disk.c)
 * implement, and the on-disk/in-Redis entry frame (entry.c). */
#ifndef DSPY_CACHE_CACHE_INT_H
#define DSPY_CACHE_CACHE_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include <dspyc/cache.h>

/* Hard bound on a stored value, whatever the options say. */
#define DSPY__CACHE_VALUE_HARD_MAX ((size_t)256 << 20)

/* An immutable value with its key, shared by reference between L1, callers holding a
 * dspy_cache_value, and single-flight waiters. Data is written once before the entry is
 * published and never again; only `refs` and the L1 fields change afterwards. */
struct dspy__cache_entry {
    atomic_uint refs;
    atomic_bool in_mem; /* set once when L1 links it; an entry is linked at most once */
    uint8_t key[16];
    uint64_t expires_ms; /* absolute wall-clock ms; 0 = no constraint from its source */
    bool ttl_exact;      /* expires_ms is a per-request TTL: levels use it as is instead
                                 of capping it with their own TTL */
    /* L1 fields, guarded by the owning shard's lock */
    struct dspy__cache_entry *hnext;
    struct dspy__cache_entry *lprev, *lnext;
    uint64_t mem_expires_ms; /* L1's own expiry (level TTL applied); 0 = none */
    size_t len;
    unsigned char data[];
};

/* New entry with refs = 1 and room for `len` bytes (copied from `data` when not NULL). */
struct dspy__cache_entry *dspy__cache_entry_new(const uint8_t key[16], const void *data, size_t len,
                                                uint64_t expires_ms);
static inline void dspy__cache_entry_ref(struct dspy__cache_entry *e)
{
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
}
void dspy__cache_entry_unref(struct dspy__cache_entry *e);

/* Expiry times are wall-clock ms (dspy__wall_ms, which tests step with the base clock hook)
 * so they mean the same in Redis and on disk. The absolute expiry for a TTL in seconds from
 * now; 0 for ttl <= 0. */
uint64_t dspy__cache_expiry(double ttl_s, uint64_t now_ms);
/* The earlier of two expiries, where 0 means none. */
static inline uint64_t dspy__cache_min_expiry(uint64_t a, uint64_t b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    return a < b ? a : b;
}
/* When a level with TTL `level_ttl_s` should drop `e`. */
static inline uint64_t dspy__cache_level_expiry(const struct dspy__cache_entry *e,
                                                double level_ttl_s, uint64_t now_ms)
{
    if (e->ttl_exact)
        return e->expires_ms;
    return dspy__cache_min_expiry(e->expires_ms, dspy__cache_expiry(level_ttl_s, now_ms));
}

/* Record a level failure in its stats: counter and last error text. Thread-safe. */
struct dspy__cache_errlog {
    atomic_ullong count;
    atomic_flag busy; /* guards `text` (spin; writers are rare) */
    char text[160];
};
void dspy__cache_errlog_set(struct dspy__cache_errlog *log, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void dspy__cache_errlog_get(struct dspy__cache_errlog *log, char *out, size_t cap);

/* Called for each live entry by a level's `each`; returning non-zero stops the walk and
 * becomes each's result. `value` is borrowed for the call. */
typedef dspy_status (*dspy__cache_each_fn)(void *ud, const uint8_t key[16], const void *value,
                                           size_t len, uint64_t expires_ms);

/* An entry left a level for good (see the ops' `watch`). */
typedef void (*dspy__cache_gone_fn)(void *ud, const uint8_t key[16]);

/* One level. `get` returns true on a hit with *out a new reference (caller unrefs).
 * `put` stores the entry (L1 keeps a reference or a copy; others serialise it); it
 * applies the level's own TTL on top of e->expires_ms. A level that fails degrades: get
 * misses, put/del do nothing; the failure is counted in its stats. */
struct dspy__cache_level_ops {
    const char *name;
    bool (*get)(void *lvl, const uint8_t key[16], struct dspy__cache_entry **out);
    void (*put)(void *lvl, struct dspy__cache_entry *e);
    void (*del)(void *lvl, const uint8_t key[16]);
    dspy_status (*clear)(void *lvl, struct dspy_error *err);
    dspy_status (*each)(void *lvl, dspy__cache_each_fn fn, void *ud, struct dspy_error *err);
    void (*stats)(void *lvl, struct dspy_cache_level_stats *st);
    void (*free)(void *lvl);
    /* Optional: look up every key whose out[i] is NULL in one go (one round trip); NULL
     * means the hierarchy calls get per key. */
    void (*get_many)(void *lvl, const struct dspy_cache_key *keys, size_t n,
                     struct dspy__cache_entry **out);
    /* Optional: call `gone` (from the thread that did it, no level lock held, except L3's
     * write transaction) for every entry that leaves the level for good: evicted, found
     * expired or corrupt, deleted; not for a replacement or a clear. Set once, before the
     * level is shared. NULL: the level cannot tell (Redis evicts on its own). */
    void (*watch)(void *lvl, dspy__cache_gone_fn gone, void *ud);
};

extern const struct dspy__cache_level_ops dspy__cache_mem_ops;
extern const struct dspy__cache_level_ops dspy__cache_redis_ops;
extern const struct dspy__cache_level_ops dspy__cache_disk_ops;

/* Constructors: each reads its part of the options. */
dspy_status dspy__cache_mem_new(const struct dspy_cache_options *o, void **out,
                                struct dspy_error *err);
dspy_status dspy__cache_redis_new(const struct dspy_cache_options *o, void **out,
                                  struct dspy_error *err);
dspy_status dspy__cache_disk_new(const struct dspy_cache_options *o, void **out,
                                 struct dspy_error *err);

/* Redis extras for the cross-process lease (cache_redis.c). */
enum dspy__lease_state {
    DSPY__LEASE_DOWN,     /* Redis unreachable: proceed without a lease */
    DSPY__LEASE_ACQUIRED, /* this caller holds the lease */
    DSPY__LEASE_VALUE,    /* the value is already in L2: *out set */
    DSPY__LEASE_BUSY      /* another holder; poll again */
};
enum dspy__lease_state dspy__cache_redis_lease(void *lvl, const uint8_t key[16], const char *token,
                                               unsigned lease_ms, struct dspy__cache_entry **out);
/* The lease holder's fill of `key` is over: write `e` to L2 (unless NULL, expired or Redis
 * is backing off) and release the lease `token`, in one round trip. */
void dspy__cache_redis_put_unlease(void *lvl, const uint8_t key[16], struct dspy__cache_entry *e,
                                   const char *token);
bool dspy__cache_redis_up(void *lvl);

/* The entry frame used by L2 and L3 (entry.c). Little-endian, 40-byte header:
 *   0 magic "DSPC" | 4 version (1) | 5 flags (bit 0: zlib) | 6 reserved (0, 2 bytes)
 *   8 stored payload length u32 | 12 value length u32 | 16 created ms u64
 *  24 expires ms u64 (0 = none) | 32 XXH3-64 of key(16) + header[0..32) + payload
 * followed by the payload. The key in the checksum catches an entry under the wrong key. */
#define DSPY__FRAME_HDR 40
#define DSPY__FRAME_VERSION 1
#define DSPY__FRAME_ZLIB 1u

struct dspy__frame {
    unsigned flags;
    uint32_t stored_len;
    uint32_t value_len;
    uint64_t created_ms;
    uint64_t expires_ms;
    const unsigned char *payload; /* points into the checked buffer */
};

/* Largest frame for a value of `len` bytes (compression may need slightly more). */
size_t dspy__frame_bound(size_t len);
/* Encode into `out` (at least dspy__frame_bound(len) bytes); compresses when
 * compress_min > 0, len >= compress_min and it saves space. Sets *out_len. */
dspy_status dspy__frame_encode(const uint8_t key[16], const void *value, size_t len,
                               uint64_t created_ms, uint64_t expires_ms, size_t compress_min,
                               unsigned char *out, size_t *out_len);
/* Validate a frame read back under `key`: magic, version, lengths, checksum. DSPY_EPARSE
 * (corrupt or truncated) or DSPY_EUNSUPPORTED (newer version) otherwise. */
dspy_status dspy__frame_check(const uint8_t key[16], const void *buf, size_t len,
                              struct dspy__frame *f);
/* Write the value of a checked frame into `out` (f->value_len bytes). DSPY_EPARSE when
 * the compressed payload does not inflate to exactly value_len bytes. */
dspy_status dspy__frame_decode(const struct dspy__frame *f, void *out);

/* The hierarchy handle (cache.c; export, import and stats JSON in cache_io.c). */
#define DSPY__FLIGHT_SHARDS 64
struct dspy__flight;
struct dspy__flight_shard {
    pthread_mutex_t lock;
    struct dspy__flight *head; /* in-progress fills in this shard; lock */
};

struct dspy_cache {
    struct dspy_cache_options opts; /* string members point at the copies below */
    char *ns, *redis_url, *redis_prefix, *disk_path, *embed_model;
    unsigned levels; /* open levels */
    void *lvl[3];    /* [0] L1, [1] L2, [2] L3; NULL if closed */
    const struct dspy__cache_level_ops *ops[3];
    struct dspy__flight_shard flights[DSPY__FLIGHT_SHARDS];
    atomic_ullong gets, hits, misses, fills, fill_errors, coalesced, lease_waits, remote_fills,
        token_seq;
    struct dspy__semantic *sem; /* the semantic level, or NULL */
};

/* The semantic level (cache_semantic.c): opened after the exact levels (its record log
 * lives in the disk store's folder), freed with the cache, cleared with L3 or everything,
 * its counters added to the stats. */
struct dspy__semantic;
dspy_status dspy__semantic_new(struct dspy_cache *c, struct dspy_error *err);
void dspy__semantic_free(struct dspy_cache *c);
void dspy__semantic_clear(struct dspy_cache *c);
void dspy__semantic_stats(struct dspy_cache *c, struct dspy_cache_stats *out);
/* The exact entry `key` is gone from the level that holds the answers: its record goes
 * in the same step (a dspy__cache_gone_fn; `ud` is the cache). */
void dspy__semantic_gone(void *ud, const uint8_t key[16]);

/* Levels a request may use: ctl->levels within the open ones. */
static inline unsigned dspy__cache_levels_for(const struct dspy_cache *c,
                                              const struct dspy_cache_ctl *ctl)
{
    return ctl && ctl->levels ? ctl->levels & c->levels : c->levels;
}

/* Store an entry in the given levels. */
void dspy__cache_put_entry(struct dspy_cache *c, struct dspy__cache_entry *e, unsigned levels);

#endif

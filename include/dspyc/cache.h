/* The LM call cache (cache layer): request keys, and a hierarchy of an in-process memory
 * LRU (L1), Redis (L2) and an LMDB disk store (L3) with promotion on hit, per-request
 * control, single-flight fills, stats and export/import. See docs/cache.md. */
#ifndef DSPYC_CACHE_H
#define DSPYC_CACHE_H

#include <stdio.h>

#include <jansson.h>

#include <dspyc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------ */
/* Keys                                                                                 */
/* ------------------------------------------------------------------------------------ */

/** Version of the key schema. It is part of the hashed bytes, so changing the canonical
 * form (and bumping this) never makes an old entry answer a new request. */
#define DSPY_CACHE_KEY_VERSION 1
/** Longest namespace (tenant) accepted, in bytes. */
#define DSPY_CACHE_NS_MAX 256

/** A request key: XXH3-128 of
 *     "dspyc-cache-key/v1" NUL <namespace> NUL <canonical JSON of the request>
 * stored in XXH3's canonical (big-endian) byte order, so its hex form is what
 * `xxhsum -H2` prints for those bytes. Caller-allocated, plain value. */
struct dspy_cache_key {
    uint8_t bytes[16];
};

/** Top-level request fields that never change the answer and are left out of the key by
 * default: credentials, endpoints, timeouts, retry settings, stream flags, headers,
 * per-request cache control. NULL-terminated; static storage. */
DSPY_EXTERN extern const char *const dspy_cache_default_ignore[];

/** Key of `request` (a JSON object: model, messages, sampling parameters, n, tools,
 * response_format, rollout_id, ...). Top-level members named in `ignore` (NULL-terminated;
 * NULL = dspy_cache_default_ignore) are left out; nested objects are hashed whole.
 * `ns` is the namespace (NULL or "" = none), at most DSPY_CACHE_NS_MAX bytes.
 * Does not allocate for objects of up to 64 members. Errors: DSPY_EINVAL (not an object,
 * NaN/infinite real, nesting deeper than 128, namespace too long). Thread-safe. */
DSPY_EXTERN dspy_status dspy_cache_key_from_json(const json_t *request, const char *const *ignore,
                                                 const char *ns, struct dspy_cache_key *out,
                                                 struct dspy_error *err);

/** Fast path: key of `canon`, bytes the caller already holds in canonical form (exactly
 * what dspy_cache_canonical_json() would produce; not checked). Never fails. */
DSPY_EXTERN void dspy_cache_key_from_canonical(const void *canon, size_t len, const char *ns,
                                               struct dspy_cache_key *out);

/** Incremental form of the fast path, for callers that emit their canonical JSON in
 * pieces: init, any number of updates, final. Caller-allocated (on the stack is fine);
 * do not copy an initialised hasher. One thread at a time per hasher. */
struct dspy_cache_key_hasher {
    unsigned char opaque[704]; /* an XXH3 state, aligned inside at run time */
};
DSPY_EXTERN void dspy_cache_key_hasher_init(struct dspy_cache_key_hasher *h, const char *ns);
DSPY_EXTERN void dspy_cache_key_hasher_update(struct dspy_cache_key_hasher *h, const void *data,
                                              size_t len);
DSPY_EXTERN void dspy_cache_key_hasher_final(struct dspy_cache_key_hasher *h,
                                             struct dspy_cache_key *out);

/** The canonical JSON of `v` (see docs/cache.md: sorted keys, compact, shortest
 * round-trip reals with ".0", minimal string escapes, raw UTF-8), with top-level members
 * named in `ignore` left out when `v` is an object (NULL = keep all). On success *out is
 * NUL-terminated and the caller owns it (dspy_free). Errors as dspy_cache_key_from_json,
 * plus DSPY_ENOMEM. Thread-safe. */
DSPY_EXTERN dspy_status dspy_cache_canonical_json(const json_t *v, const char *const *ignore,
                                                  char **out, size_t *len, struct dspy_error *err);

/** A real number in canonical form ("0.7", "1.0", "1e20", "-0.0"; docs/cache.md), for
 * callers that build canonical bytes themselves. Writes a NUL-terminated string into
 * `out` and returns its length, or 0 for NaN and infinities. Thread-safe. */
DSPY_EXTERN size_t dspy_cache_canonical_real(double v, char out[32]);

/** 32 lowercase hex digits and a NUL into `out`. */
DSPY_EXTERN void dspy_cache_key_hex(const struct dspy_cache_key *key, char out[33]);
/** Parse 32 hex digits (either case, nothing else). DSPY_EINVAL otherwise. */
DSPY_EXTERN dspy_status dspy_cache_key_parse_hex(const char *hex, struct dspy_cache_key *out);

/* ------------------------------------------------------------------------------------ */
/* The cache                                                                            */
/* ------------------------------------------------------------------------------------ */

/** Level bits, for options and per-request masks. */
#define DSPY_CACHE_L1 1u /* in-process memory */
#define DSPY_CACHE_L2 2u /* Redis */
#define DSPY_CACHE_L3 4u /* disk (LMDB) */
#define DSPY_CACHE_ALL 7u
/* The semantic level (docs/semantic-cache.md): after the exact levels, a request that
 * misses them may be answered by the entry of a near-duplicate request of the same
 * partition. Not part of DSPY_CACHE_ALL (those are the exact levels). */
#define DSPY_CACHE_SEMANTIC 8u

/** Guards of the semantic level: each forces a miss when the two texts differ in that way. */
#define DSPY_SEMANTIC_GUARD_NUMBER 1u   /* a word with a digit: ids, amounts, years */
#define DSPY_SEMANTIC_GUARD_NEGATION 2u /* not, no, never, n't, ... or safe / unsafe */
#define DSPY_SEMANTIC_GUARD_DATE 4u     /* weekdays, months, today / tomorrow, ... */
#define DSPY_SEMANTIC_GUARD_ENTITY \
    8u                                  /* capitalized words away from sentence start,
                                           quoted strings */
#define DSPY_SEMANTIC_GUARD_SCOPE 16u   /* all / any / first / last / only / ... */
#define DSPY_SEMANTIC_GUARD_ANTONYM 32u /* on / off, enable / disable, buy / sell, ... */
#define DSPY_SEMANTIC_GUARD_SUBSTITUTION \
    64u /* another verb or object: "cancel my order" / "track my order" */
#define DSPY_SEMANTIC_GUARDS_ALL 127u
#define DSPY_SEMANTIC_NGUARDS 7

/** What the semantic level embeds. */
enum dspy_semantic_projection {
    DSPY_SEMANTIC_LAST_USER = 0, /* the last user message (default) */
    DSPY_SEMANTIC_USER_TURNS,    /* every user message, joined by newlines */
    DSPY_SEMANTIC_ALL            /* every message as "role: content" lines */
};

/** Configuration. Strings are copied by dspy_cache_new(). */
struct dspy_cache_options {
    unsigned levels;        /* DSPY_CACHE_L* bits; default L1 only */
    size_t max_value_bytes; /* larger values are not stored; default 16 MiB */
    const char *ns;         /* default namespace for dspy_cache_key(); NULL = none */
    /* L1 */
    size_t mem_max_bytes;   /* budget, value bytes + per-entry overhead; 256 MiB */
    size_t mem_max_entries; /* 0 = no count limit; default 1,000,000 */
    double mem_ttl_s;       /* 0 = no expiry (LRU only); default 0 */
    /* L2 */
    const char *redis_url;         /* redis://[user:password@]host[:port][/db] or unix:///path */
    const char *redis_prefix;      /* prefix of every Redis key; default "dspyc:cache:" */
    unsigned redis_pool;           /* connections, default 4 */
    unsigned redis_timeout_ms;     /* connect and command timeout, default 50 */
    unsigned redis_backoff_max_ms; /* reconnect backoff cap (starts at 25 ms); default 1000 */
    double redis_ttl_s;            /* every Redis entry gets a TTL; default 7 days, must be > 0 */
    size_t redis_compress_min;     /* zlib-compress values of at least this size; 0 = never */
    /* L3 */
    const char *disk_path;    /* directory (created); required with DSPY_CACHE_L3 */
    size_t disk_max_bytes;    /* budget of framed entry bytes; oldest evicted; 1 GiB */
    double disk_ttl_s;        /* 0 = no expiry; default 0 */
    size_t disk_compress_min; /* zlib-compress values of at least this size; 0 = never;
                                  default 1024 */
    bool disk_sync;           /* fsync every commit (slow); default off: a process crash
                                  loses nothing, an OS crash may lose recent entries */
    /* Single-flight across processes (needs L2) */
    unsigned lease_ms;      /* lease on a missing key while one process fills it;
                                  0 = off; default 30000 */
    unsigned lease_poll_ms; /* how often waiting processes look for the value; 10 */
    /* Semantic level (with DSPY_CACHE_SEMANTIC) */
    double semantic_threshold;   /* cosine similarity in (0, 1] a candidate must reach;
                                  default DSPY_CACHE_DEFAULT_SEMANTIC_THRESHOLD */
    unsigned semantic_guards;    /* DSPY_SEMANTIC_GUARD_* bits; default all */
    int semantic_projection;     /* enum dspy_semantic_projection */
    size_t semantic_max_bytes;   /* vectors and texts kept; oldest dropped; default 64 MiB */
    size_t semantic_index_min;   /* records from which a partition is searched through an
                                  HNSW index instead of exactly; 0 = default
                                  DSPY_CACHE_DEFAULT_SEMANTIC_INDEX_MIN; SIZE_MAX = never */
    unsigned semantic_ef_search; /* the index search's beam width; 0 = default
                                    DSPY_CACHE_DEFAULT_SEMANTIC_EF_SEARCH */
    size_t semantic_scan8_min;   /* slots from which a partition's exact scan reads an int8
                                    copy and re-ranks its best in f32; 0 = default
                                    DSPY_CACHE_DEFAULT_SEMANTIC_SCAN8_MIN; SIZE_MAX = never */
    const char *embed_model;     /* model folder; NULL = the embedder's default */
};
/* The defaults, each named once: DSPY_CACHE_OPTIONS_INIT sets them, and the levels fall
 * back to them where a field is left 0 or NULL. */
#define DSPY_CACHE_DEFAULT_MAX_VALUE_BYTES ((size_t)16 << 20)
#define DSPY_CACHE_DEFAULT_MEM_MAX_BYTES ((size_t)256 << 20)
#define DSPY_CACHE_DEFAULT_MEM_MAX_ENTRIES 1000000
#define DSPY_CACHE_DEFAULT_REDIS_PREFIX "dspyc:cache:"
#define DSPY_CACHE_DEFAULT_REDIS_POOL 4
#define DSPY_CACHE_DEFAULT_REDIS_TIMEOUT_MS 50
#define DSPY_CACHE_DEFAULT_REDIS_BACKOFF_MAX_MS 1000
#define DSPY_CACHE_DEFAULT_REDIS_TTL_S 604800.0 /* 7 days */
#define DSPY_CACHE_DEFAULT_DISK_MAX_BYTES ((size_t)1 << 30)
#define DSPY_CACHE_DEFAULT_DISK_COMPRESS_MIN 1024
#define DSPY_CACHE_DEFAULT_LEASE_MS 30000
#define DSPY_CACHE_DEFAULT_LEASE_POLL_MS 10
#define DSPY_CACHE_DEFAULT_SEMANTIC_THRESHOLD 0.85
#define DSPY_CACHE_DEFAULT_SEMANTIC_MAX_BYTES ((size_t)64 << 20)
#define DSPY_CACHE_DEFAULT_SEMANTIC_INDEX_MIN 20000
#define DSPY_CACHE_DEFAULT_SEMANTIC_EF_SEARCH 64
#define DSPY_CACHE_DEFAULT_SEMANTIC_SCAN8_MIN 2048
#define DSPY_CACHE_OPTIONS_INIT                                                         \
    {                                                                                   \
        .levels = DSPY_CACHE_L1, .max_value_bytes = DSPY_CACHE_DEFAULT_MAX_VALUE_BYTES, \
        .mem_max_bytes = DSPY_CACHE_DEFAULT_MEM_MAX_BYTES,                              \
        .mem_max_entries = DSPY_CACHE_DEFAULT_MEM_MAX_ENTRIES,                          \
        .redis_prefix = DSPY_CACHE_DEFAULT_REDIS_PREFIX,                                \
        .redis_pool = DSPY_CACHE_DEFAULT_REDIS_POOL,                                    \
        .redis_timeout_ms = DSPY_CACHE_DEFAULT_REDIS_TIMEOUT_MS,                        \
        .redis_backoff_max_ms = DSPY_CACHE_DEFAULT_REDIS_BACKOFF_MAX_MS,                \
        .redis_ttl_s = DSPY_CACHE_DEFAULT_REDIS_TTL_S,                                  \
        .disk_max_bytes = DSPY_CACHE_DEFAULT_DISK_MAX_BYTES,                            \
        .disk_compress_min = DSPY_CACHE_DEFAULT_DISK_COMPRESS_MIN,                      \
        .lease_ms = DSPY_CACHE_DEFAULT_LEASE_MS,                                        \
        .lease_poll_ms = DSPY_CACHE_DEFAULT_LEASE_POLL_MS,                              \
        .semantic_threshold = DSPY_CACHE_DEFAULT_SEMANTIC_THRESHOLD,                    \
        .semantic_guards = DSPY_SEMANTIC_GUARDS_ALL,                                    \
        .semantic_max_bytes = DSPY_CACHE_DEFAULT_SEMANTIC_MAX_BYTES                     \
    }

/** Handle to a cache hierarchy. Threading: every call below may be made from many threads
 * at once on one handle, except dspy_cache_free() (no call may be running). After fork(),
 * the child must not use the parent's handle; it opens its own. */
typedef struct dspy_cache dspy_cache;

/** Open the configured levels. L3 creates `disk_path` if needed. An unreachable Redis
 * is not an error: L2 starts degraded and reconnects later. Errors: DSPY_EINVAL (bad
 * option or URL), DSPY_EIO (disk store cannot be opened), DSPY_ECORRUPT (the disk store's
 * file is damaged, e.g. cut short: it is checked against its own header before it is
 * mapped, never read past its end; the message names the file; dspy_cache_disk_reset()
 * repairs it), DSPY_ENOMEM. On error *out is NULL. */
DSPY_EXTERN dspy_status dspy_cache_new(const struct dspy_cache_options *opts, dspy_cache **out,
                                       struct dspy_error *err);
/** Close everything; NULL is a no-op. Values still held stay valid until released. */
DSPY_EXTERN void dspy_cache_free(dspy_cache *c);
/** Remove the disk store in directory `dir` (its data.mdb and lock.mdb), as a repair of a
 * damaged one: its entries are lost, the next dspy_cache_new() starts it empty. No process
 * may have it open. DSPY_OK when there was nothing to remove; DSPY_EIO names the file that
 * could not be removed. */
DSPY_EXTERN dspy_status dspy_cache_disk_reset(const char *dir, struct dspy_error *err);
/** Level bits actually open. */
DSPY_EXTERN unsigned dspy_cache_levels(const dspy_cache *c);

/** Per-request control. NULL anywhere a `const struct dspy_cache_ctl *` is taken means
 * DSPY_CACHE_CTL_INIT. */
struct dspy_cache_ctl {
    bool no_cache;    /* do not read ("no-cache"): fetch always fills, get always misses */
    bool no_store;    /* do not write ("no-store") */
    double ttl_s;     /* > 0: this entry's TTL at every level, replacing the configured ones
                        (Redis's included); promotion keeps it */
    unsigned levels;  /* 0 = all open levels; else only these */
    const char *ns;   /* namespace for dspy_cache_key(); NULL = the cache's default */
    bool no_semantic; /* skip the semantic level's lookup (records are still written) */
};
#define DSPY_CACHE_CTL_INIT \
    {                       \
        .no_cache = false   \
    }

/** Key of `request` with the cache's namespace (ctl->ns, else options.ns) and the
 * default ignore list. As dspy_cache_key_from_json(). */
DSPY_EXTERN dspy_status dspy_cache_key(const dspy_cache *c, const json_t *request,
                                       const struct dspy_cache_ctl *ctl, struct dspy_cache_key *out,
                                       struct dspy_error *err);

/** Where a value came from. */
enum dspy_cache_source {
    DSPY_CACHE_MISS = 0,
    DSPY_CACHE_FROM_L1,
    DSPY_CACHE_FROM_L2,
    DSPY_CACHE_FROM_L3,
    DSPY_CACHE_FILLED, /* this call ran the fill function */
    DSPY_CACHE_SHARED, /* another thread of this process filled it while this call waited */
    DSPY_CACHE_REMOTE  /* another process filled it (found in L2 under its lease) */
};
/** Short name: "miss", "l1", "l2", "l3", "filled", "shared", "remote". */
DSPY_EXTERN const char *dspy_cache_source_name(enum dspy_cache_source s);

/** A value handed out by the cache: a reference to immutable bytes. `data` is borrowed
 * until dspy_cache_value_release(), and stays valid even if the entry is evicted or the
 * cache freed meanwhile. Caller-allocated; start from DSPY_CACHE_VALUE_INIT. */
struct dspy_cache_value {
    const void *data;
    size_t len;
    enum dspy_cache_source source;
    void *ref; /* private */
};
#define DSPY_CACHE_VALUE_INIT     \
    {                             \
        .source = DSPY_CACHE_MISS \
    }
/** Drop the reference and reset `v`. Releasing an empty value is a no-op. Any thread. */
DSPY_EXTERN void dspy_cache_value_release(struct dspy_cache_value *v);

/** Read through L1 -> L2 -> L3; a hit in a lower level is copied into the levels above it
 * (keeping its expiry). DSPY_OK on a hit (*out filled, release it), DSPY_ENOTFOUND on a
 * miss, DSPY_EINVAL on bad arguments. A level that is down or slow, or an entry that is
 * corrupt, counts as a miss there: never an error. An L1 hit does not allocate. */
DSPY_EXTERN dspy_status dspy_cache_get(dspy_cache *c, const struct dspy_cache_key *key,
                                       const struct dspy_cache_ctl *ctl,
                                       struct dspy_cache_value *out);
/** dspy_cache_get for n keys at once, for batch execution (look everything up, send only
 * the misses): out[i] is a hit to release, or DSPY_CACHE_VALUE_INIT (source MISS). L2 is
 * asked for all keys L1 missed in one round trip (pipelined MGETs). Returns the number
 * of hits; never fails (allocation failure reads as all misses). */
DSPY_EXTERN size_t dspy_cache_get_many(dspy_cache *c, const struct dspy_cache_key *keys, size_t n,
                                       const struct dspy_cache_ctl *ctl,
                                       struct dspy_cache_value *out);
/** True if get would hit (counts as a get). */
DSPY_EXTERN bool dspy_cache_has(dspy_cache *c, const struct dspy_cache_key *key);

/** Store a copy of `data` in every open level (or ctl->levels), replacing an entry under
 * the same key. Put only successful responses: errors are never to be cached. With
 * ctl->no_store it does nothing. Errors: DSPY_ETOOBIG (len > max_value_bytes),
 * DSPY_ENOMEM, DSPY_EINVAL. A level that fails (Redis down, disk full) is skipped,
 * counted and reported in the stats, never an error. */
DSPY_EXTERN dspy_status dspy_cache_put(dspy_cache *c, const struct dspy_cache_key *key,
                                       const void *data, size_t len,
                                       const struct dspy_cache_ctl *ctl, struct dspy_error *err);
/** Remove the key from every open level (or ctl->levels). DSPY_OK even if absent. */
DSPY_EXTERN dspy_status dspy_cache_delete(dspy_cache *c, const struct dspy_cache_key *key,
                                          const struct dspy_cache_ctl *ctl);
/** Remove every entry from the given levels (0 = all open). L2 deletes only keys under
 * redis_prefix. Errors: DSPY_EIO (disk), DSPY_ELM_NETWORK (Redis unreachable), DSPY_EPARSE
 * (a malformed SCAN reply from Redis, named in the message). */
DSPY_EXTERN dspy_status dspy_cache_clear(dspy_cache *c, unsigned levels, struct dspy_error *err);

/** What a fill function produces: bytes allocated with dspy_malloc (the cache takes
 * ownership, also on error), an optional TTL, and whether to skip storing them (waiters
 * still receive them). */
struct dspy_cache_fill {
    void *value;
    size_t len;
    double ttl_s;  /* > 0 overrides ctl/configured TTLs for this entry */
    bool no_store; /* hand to waiters but do not store (e.g. a truncated answer) */
};
/** Makes the upstream call for a missing key. Return DSPY_OK with fill->value set, or an
 * error (which is never cached) with `err` filled. Runs on the calling thread of
 * dspy_cache_fetch(), outside every cache lock; it may stream to its own consumer and
 * return the assembled value when the stream finishes cleanly. */
typedef dspy_status (*dspy_cache_fill_fn)(void *userdata, struct dspy_cache_fill *fill,
                                          struct dspy_error *err);

/** Get, or fill on a miss with single-flight: of the concurrent callers in this process
 * that miss the same key, one (the leader) calls `fill`; the others wait and receive the
 * same bytes (source SHARED) or, if the fill failed, the same status and error (they do
 * not retry). With L2 and lease_ms > 0 the leader first takes a Redis lease on the key;
 * if another process holds it, the leader polls L2 until that process stores the value
 * (source REMOTE), the lease is released without a value (then it fills itself), or the
 * lease expires (a dead holder blocks nobody longer than lease_ms). Redis down: the
 * lease step is skipped. ctl->no_cache skips the lookup and the coalescing: it always
 * fills. The filled value is stored unless ctl->no_store or fill->no_store.
 * Returns DSPY_OK with *out set (release it), or the fill's error. */
DSPY_EXTERN dspy_status dspy_cache_fetch(dspy_cache *c, const struct dspy_cache_key *key,
                                         const struct dspy_cache_ctl *ctl, dspy_cache_fill_fn fill,
                                         void *userdata, struct dspy_cache_value *out,
                                         struct dspy_error *err);

/** Accumulates a streamed response and stores it only on commit (a clean finish). Append
 * the bytes as they arrive; abort on a failed stream. Past max_value_bytes appends fail
 * with DSPY_ETOOBIG and commit stores nothing. One thread at a time per writer. */
typedef struct dspy_cache_writer dspy_cache_writer;
/** `ctl` is copied; the cache must outlive the writer. NULL on allocation failure. */
DSPY_EXTERN dspy_cache_writer *dspy_cache_writer_new(dspy_cache *c,
                                                     const struct dspy_cache_key *key,
                                                     const struct dspy_cache_ctl *ctl);
DSPY_EXTERN dspy_status dspy_cache_writer_append(dspy_cache_writer *w, const void *data,
                                                 size_t len);
/** Store what was appended (as dspy_cache_put) and free the writer. */
DSPY_EXTERN dspy_status dspy_cache_writer_commit(dspy_cache_writer *w, struct dspy_error *err);
/** Free the writer without storing; NULL is a no-op. */
DSPY_EXTERN void dspy_cache_writer_abort(dspy_cache_writer *w);

/* ------------------------------------------------------------------------------------ */
/* The semantic level (docs/semantic-cache.md)                                          */
/* ------------------------------------------------------------------------------------ */

/** A semantic hit: the exact key of the entry that answered, and how similar it was. */
struct dspy_cache_semantic_hit {
    struct dspy_cache_key key;
    float similarity;
    unsigned guard; /* on a miss: the guard that refused the best candidate, else 0 */
};

/** On an exact miss: embed `request`'s projection and search the records of its partition;
 * the best candidates at or above the threshold go through the guards, and the first that
 * passes is read from the exact levels. DSPY_OK with *out (source: the level it came from)
 * and *hit filled; DSPY_ENOTFOUND otherwise (also when the level is not open, ctl says
 * no_cache or no_semantic, the model files are missing, or the request has nothing to
 * project). Never an error. Thread-safe. */
DSPY_EXTERN dspy_status dspy_cache_semantic_get(dspy_cache *c, const json_t *request,
                                                const struct dspy_cache_ctl *ctl,
                                                struct dspy_cache_value *out,
                                                struct dspy_cache_semantic_hit *hit);
/** After `request`'s answer was stored under `key`: write its semantic record (kept in
 * memory, and in the disk store's folder when L3 is open). Does nothing when the level is
 * not open or ctl says no_store. Thread-safe. */
DSPY_EXTERN void dspy_cache_semantic_put(dspy_cache *c, const json_t *request,
                                         const struct dspy_cache_key *key,
                                         const struct dspy_cache_ctl *ctl);

/** The partition of `request` (XXH3-128 over the canonical request with the projected text
 * replaced by a placeholder, the namespace and the semantic schema version) and its
 * projected text (caller frees *text with dspy_free). DSPY_ENOTFOUND when there is no text
 * to project (no messages, no user message); DSPY_EINVAL as dspy_cache_key_from_json. */
DSPY_EXTERN dspy_status dspy_cache_semantic_partition(const json_t *request, const char *ns,
                                                      int projection,
                                                      struct dspy_cache_key *partition, char **text,
                                                      size_t *text_len, struct dspy_error *err);
/** The guards as a pure function: the first DSPY_SEMANTIC_GUARD_* bit (of `guards`) that
 * refuses `a` against `b`, or 0 when they may share an answer. */
DSPY_EXTERN unsigned dspy_cache_semantic_guard(const char *a, size_t alen, const char *b,
                                               size_t blen, unsigned guards);
/** Short name of one guard bit: "number", "negation", "date", "entity", "scope",
 * "antonym" ("" for anything else). */
DSPY_EXTERN const char *dspy_cache_semantic_guard_name(unsigned bit);

/* ------------------------------------------------------------------------------------ */
/* Stats, export, import                                                                */
/* ------------------------------------------------------------------------------------ */

struct dspy_cache_level_stats {
    uint64_t hits, misses, puts;
    uint64_t evictions;   /* removed to stay within budget */
    uint64_t expired;     /* found past their TTL and dropped */
    uint64_t corrupt;     /* failed the frame check: dropped, never returned */
    uint64_t errors;      /* failed operations (Redis down or slow, disk errors) */
    uint64_t skipped;     /* operations not tried because the level was backing off */
    uint64_t entries;     /* current; L2: not tracked (0) */
    uint64_t bytes;       /* current, as charged against the budget; L2: not tracked */
    uint64_t round_trips; /* L2: commands or pipelines sent to Redis; others: 0 */
    char last_error[160]; /* most recent error, "" if none */
};

struct dspy_cache_stats {
    struct dspy_cache_level_stats level[3]; /* [0] L1, [1] L2, [2] L3 */
    uint64_t gets, hits, misses;            /* whole-hierarchy lookups (get, has, fetch) */
    uint64_t fills;                         /* fill functions run */
    uint64_t fill_errors;                   /* of which failed */
    uint64_t coalesced;                     /* fetches that waited for another thread's fill */
    uint64_t lease_waits;                   /* fetches that found another process's lease */
    uint64_t remote_fills;                  /* ... and then got its value from L2 */
    bool redis_up;                          /* L2 open and not backing off */
    /* semantic level (zero when it is not open) */
    uint64_t sem_lookups;                        /* exact misses searched */
    uint64_t sem_hits;                           /* answered from a near-duplicate's entry */
    double sem_similarity_sum;                   /* of the hits: mean = sum / sem_hits */
    uint64_t sem_below;                          /* best candidate under the threshold (or none) */
    uint64_t sem_guarded[DSPY_SEMANTIC_NGUARDS]; /* refused by guard, in bit order */
    uint64_t sem_stale;    /* candidate whose exact entry was gone: record dropped */
    uint64_t sem_followed; /* records dropped as their exact entry left the level that
                              holds the answers (evicted, expired, deleted) */
    uint64_t sem_puts, sem_entries, sem_bytes, sem_partitions, sem_evictions;
    bool sem_unavailable; /* the model could not be loaded: every lookup misses */
    /* the HNSW indexes of large partitions */
    uint64_t sem_indexed_lookups; /* lookups answered through an index */
    uint64_t sem_scan8_lookups;   /* exact scans through the int8 copy (then f32 re-rank) */
    uint64_t sem_index_nodes;     /* live nodes in the indexes searched */
    uint64_t sem_index_building;  /* partitions whose index is being built (searched
                                     exactly meanwhile) */
    uint64_t sem_index_loaded;    /* saved indexes loaded at open */
    uint64_t sem_index_tail;      /* records added to a loaded index (the log's tail) */
    uint64_t sem_index_rebuilds;  /* indexes renewed (mostly deleted nodes) */
};

/** Snapshot of the counters (each exact; the set is not one atomic snapshot). */
DSPY_EXTERN void dspy_cache_stats(dspy_cache *c, struct dspy_cache_stats *out);
/** The same as a JSON object {"gets":..,"l1":{..},"l2":{..},"l3":{..},..} (caller owns;
 * NULL on allocation failure). Levels not open are left out. */
DSPY_EXTERN json_t *dspy_cache_stats_json(dspy_cache *c);

/** Write every live entry of one level (DSPY_CACHE_L1, _L2 or _L3) to `out` as JSON
 * lines: {"key":"<32 hex>","ttl_s":<remaining, 0 = none>,"text":"<value>"} when the value
 * is valid UTF-8, else "b64":"<base64>" instead of "text". *count (may be
 * NULL) gets the number written. Errors: DSPY_EINVAL (level not open), DSPY_EIO,
 * DSPY_ELM_NETWORK (Redis unreachable), DSPY_EPARSE (a malformed SCAN reply from Redis). */
DSPY_EXTERN dspy_status dspy_cache_export(dspy_cache *c, unsigned level, FILE *out, size_t *count,
                                          struct dspy_error *err);
/** Read lines written by dspy_cache_export() and put each (with its ttl_s, or ctl's when
 * 0) into the open levels or ctl->levels. Blank lines are skipped. Errors: DSPY_EPARSE
 * naming the line (entries before it are stored), DSPY_EIO. */
DSPY_EXTERN dspy_status dspy_cache_import(dspy_cache *c, FILE *in, const struct dspy_cache_ctl *ctl,
                                          size_t *count, struct dspy_error *err);

#ifdef __cplusplus
}
#endif
#endif

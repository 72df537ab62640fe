/* Cache configuration shared by the subcommands that call an LM (through endpoint.h) and by
 * `dspyc cache` (apps layer): which levels, where the disk store lives, the Redis URL,
 * TTL, namespace, sizes and per-request control, from flags, then the environment, then a
 * JSON config file, then the defaults (docs/cache.md section 8). */
#ifndef DSPYC_CLI_CACHE_CONFIG_H
#define DSPYC_CLI_CACHE_CONFIG_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

#include <dspyc/dspyc.h>

enum cache_setting {
    CACHE_LEVELS,
    CACHE_DIR,
    CACHE_REDIS_URL,
    CACHE_TTL,
    CACHE_NAMESPACE,
    CACHE_MEM_SIZE,
    CACHE_DISK_SIZE,
    CACHE_NO_CACHE,
    CACHE_NO_STORE,
    CACHE_REDIS_TIMEOUT,
    CACHE_SEMANTIC_THRESHOLD,
    CACHE_EMBED_MODEL,
    CACHE_SEMANTIC_PROJECTION,
    CACHE_SEMANTIC_GUARDS,
    CACHE_SEMANTIC_SIZE,
    CACHE_SEMANTIC_INDEX_MIN,
    CACHE_NSETTINGS
};

struct cache_config {
    const char *default_levels;        /* the command's default, e.g. "mem,disk" or "off" */
    const char *flag[CACHE_NSETTINGS]; /* values given as flags; NULL = not given */
    const char *config_path;           /* --cache-config */
    unsigned exclude;                  /* levels never opened, whatever the settings say */
    /* resolved by cache_config_open() */
    unsigned levels; /* DSPY_CACHE_L* bits actually open */
    char *dir;       /* disk path (with L3) */
    char *redis_url; /* with L2 */
    char *ns;        /* namespace, or NULL */
    double ttl_s;    /* 0 = the levels' defaults */
    size_t mem_bytes, disk_bytes;
    double redis_timeout_ms;   /* 0 = the library's default (50 ms) */
    double semantic_threshold; /* 0 = the library's default */
    char *embed_model;         /* model folder of the semantic level, or NULL */
    int semantic_projection;   /* enum dspy_semantic_projection */
    unsigned semantic_guards;  /* DSPY_SEMANTIC_GUARD_* bits */
    size_t semantic_bytes;     /* 0 = the library's default (64 MiB) */
    size_t semantic_index_min; /* 0 = the library's default */
    bool no_cache, no_store;
    dspy_cache *cache;     /* NULL when caching is off */
    bool repair_disk;      /* set before open: remove a damaged disk store and
                                        * start it empty (`dspyc cache clear`) */
    char disk_damage[512]; /* after open: why the disk level was left out as
                                        * damaged ("" = it was not) */
};

enum {
    CACHE_OPT_LEVELS = 1100,
    CACHE_OPT_DIR,
    CACHE_OPT_REDIS_URL,
    CACHE_OPT_TTL,
    CACHE_OPT_NAMESPACE,
    CACHE_OPT_MEM_SIZE,
    CACHE_OPT_DISK_SIZE,
    CACHE_OPT_NO_CACHE,
    CACHE_OPT_NO_STORE,
    CACHE_OPT_REDIS_TIMEOUT,
    CACHE_OPT_SEMANTIC_THRESHOLD,
    CACHE_OPT_EMBED_MODEL,
    CACHE_OPT_SEMANTIC_PROJECTION,
    CACHE_OPT_SEMANTIC_GUARDS,
    CACHE_OPT_SEMANTIC_SIZE,
    CACHE_OPT_SEMANTIC_INDEX_MIN,
    CACHE_OPT_CONFIG,
};

#define CACHE_LONG_OPTIONS                                                                 \
    { "cache", required_argument, NULL, CACHE_OPT_LEVELS },                                \
        { "cache-dir", required_argument, NULL, CACHE_OPT_DIR },                           \
        { "redis-url", required_argument, NULL, CACHE_OPT_REDIS_URL },                     \
        { "cache-ttl", required_argument, NULL, CACHE_OPT_TTL },                           \
        { "cache-namespace", required_argument, NULL, CACHE_OPT_NAMESPACE },               \
        { "cache-mem-size", required_argument, NULL, CACHE_OPT_MEM_SIZE },                 \
        { "cache-disk-size", required_argument, NULL, CACHE_OPT_DISK_SIZE },               \
        { "no-cache", no_argument, NULL, CACHE_OPT_NO_CACHE },                             \
        { "no-store", no_argument, NULL, CACHE_OPT_NO_STORE },                             \
        { "redis-timeout-ms", required_argument, NULL, CACHE_OPT_REDIS_TIMEOUT },          \
        { "semantic-threshold", required_argument, NULL, CACHE_OPT_SEMANTIC_THRESHOLD },   \
        { "embed-model", required_argument, NULL, CACHE_OPT_EMBED_MODEL },                 \
        { "semantic-projection", required_argument, NULL, CACHE_OPT_SEMANTIC_PROJECTION }, \
        { "semantic-guards", required_argument, NULL, CACHE_OPT_SEMANTIC_GUARDS },         \
        { "semantic-size", required_argument, NULL, CACHE_OPT_SEMANTIC_SIZE },             \
        { "semantic-index-min", required_argument, NULL, CACHE_OPT_SEMANTIC_INDEX_MIN },   \
    {                                                                                      \
        "cache-config", required_argument, NULL, CACHE_OPT_CONFIG                          \
    }

#define CACHE_HELP                                                                             \
    "cache (flags > environment > config file > defaults; see docs/cache.md):\n"               \
    "  --cache LEVELS        mem, redis, disk, semantic, comma-separated, or off\n"            \
    "                        ($DSPYC_CACHE; default mem,disk for run and predict,\n"           \
    "                        off for bench; semantic: near-duplicate requests,\n"              \
    "                        streamed or not, see docs/semantic-cache.md)\n"                   \
    "  --cache-dir DIR       disk cache directory ($DSPYC_CACHE_DIR; default\n"                \
    "                        $XDG_CACHE_HOME/dspyc, else ~/.cache/dspyc)\n"                    \
    "  --redis-url URL       Redis for the redis level ($DSPYC_REDIS_URL; default\n"           \
    "                        redis://127.0.0.1:6379)\n"                                        \
    "  --redis-timeout-ms MS connect and command timeout; past it Redis counts as down\n"      \
    "                        and lookups miss ($DSPYC_REDIS_TIMEOUT_MS; default 50)\n"         \
    "  --cache-ttl SECONDS   lifetime of new entries at every level ($DSPYC_CACHE_TTL;\n"      \
    "                        default: none in memory and on disk, 7 days in Redis)\n"          \
    "  --cache-namespace NS  keep these entries apart from others ($DSPYC_CACHE_NAMESPACE)\n"  \
    "  --cache-mem-size N    memory budget, e.g. 256M ($DSPYC_CACHE_MEM_SIZE; 256M)\n"         \
    "  --cache-disk-size N   disk budget, oldest evicted ($DSPYC_CACHE_DISK_SIZE; 1G)\n"       \
    "  --no-cache            do not read the cache; still store answers ($DSPYC_NO_CACHE=1)\n" \
    "  --no-store            do not store answers ($DSPYC_NO_STORE=1)\n"                       \
    "  --semantic-threshold X  cosine similarity a near-duplicate must reach for the\n"        \
    "                        semantic level, in (0, 1] ($DSPYC_SEMANTIC_THRESHOLD; 0.85)\n"    \
    "  --embed-model DIR     model folder of the semantic level ($DSPYC_EMBED_MODEL;\n"        \
    "                        default models/all-MiniLM-L6-v2)\n"                               \
    "  --semantic-projection P  what is embedded: last-user (default), user-turns or all\n"    \
    "                        ($DSPYC_SEMANTIC_PROJECTION)\n"                                   \
    "  --semantic-guards G   guards that refuse a near-duplicate: comma-separated of\n"        \
    "                        number, negation, date, entity, scope, antonym, substitution,\n"  \
    "                        or all (the default) or none ($DSPYC_SEMANTIC_GUARDS)\n"          \
    "  --semantic-size N     budget of the semantic level's records and indexes, oldest\n"     \
    "                        evicted ($DSPYC_SEMANTIC_SIZE; 64M)\n"                            \
    "  --semantic-index-min N  records from which a partition is searched through an\n"        \
    "                        HNSW index instead of exactly ($DSPYC_SEMANTIC_INDEX_MIN;\n"      \
    "                        20000; never = exact always)\n"                                   \
    "  --cache-config FILE   JSON file with the same keys: cache, cache_dir, redis_url,\n"     \
    "                        cache_ttl, cache_namespace, cache_mem_size, cache_disk_size,\n"   \
    "                        no_cache, no_store, redis_timeout_ms, semantic_threshold,\n"      \
    "                        embed_model, semantic_projection, semantic_guards,\n"             \
    "                        semantic_size, semantic_index_min\n"                              \
    "                        ($DSPYC_CONFIG)\n"

void cache_config_init(struct cache_config *cc, const char *default_levels);
/* Handle one getopt_long result: 1 when it was a cache option, 0 when not, -1 (after
 * printing why) when its value is invalid. */
int cache_config_option(struct cache_config *cc, int opt, const char *arg);
/* Resolve the settings and open the cache (cc->cache stays NULL when caching is off).
 * When the default disk store cannot be opened, warns and goes on without it, as DSPy
 * does; a level the user asked for that cannot be opened is an error. 0, or -1 after
 * printing why, prefixed with `who`. */
int cache_config_open(struct cache_config *cc, const char *who);
/* The per-request control the settings imply (no_cache, no_store, namespace). */
void cache_config_ctl(const struct cache_config *cc, struct dspy_cache_ctl *ctl);
/* Close the cache and free what open resolved. */
void cache_config_close(struct cache_config *cc);

/* "mem,redis,disk" for level bits ("off" for none). */
const char *cache_levels_name(unsigned levels, char *buf, size_t cap);
/* Bytes as "1.5 MiB". */
const char *cache_fmt_bytes(uint64_t n, char *buf, size_t cap);
/* The per-level table of `st` (levels open in `levels`), each line prefixed with
 * `indent`; used by `dspyc cache stats` and the run summary. */
void cache_print_levels(FILE *out, const struct dspy_cache_stats *st, unsigned levels,
                        const char *indent);
/* The semantic level's line: lookups, hits and their mean similarity, refusals by guard,
 * records. */
void cache_print_semantic(FILE *out, const struct dspy_cache_stats *st, const char *indent);

#endif

/* Cache configuration from flags, environment, a JSON config file and defaults (apps
 * layer); see cache_config.h. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache_config.h"

/* Where each setting is read from: the config file key, the flag, the variable. */
static const struct {
    const char *key, *flag, *env;
} settings[CACHE_NSETTINGS] = {
    [CACHE_LEVELS] = { "cache", "--cache", "DSPYC_CACHE" },
    [CACHE_DIR] = { "cache_dir", "--cache-dir", "DSPYC_CACHE_DIR" },
    [CACHE_REDIS_URL] = { "redis_url", "--redis-url", "DSPYC_REDIS_URL" },
    [CACHE_TTL] = { "cache_ttl", "--cache-ttl", "DSPYC_CACHE_TTL" },
    [CACHE_NAMESPACE] = { "cache_namespace", "--cache-namespace", "DSPYC_CACHE_NAMESPACE" },
    [CACHE_MEM_SIZE] = { "cache_mem_size", "--cache-mem-size", "DSPYC_CACHE_MEM_SIZE" },
    [CACHE_DISK_SIZE] = { "cache_disk_size", "--cache-disk-size", "DSPYC_CACHE_DISK_SIZE" },
    [CACHE_NO_CACHE] = { "no_cache", "--no-cache", "DSPYC_NO_CACHE" },
    [CACHE_NO_STORE] = { "no_store", "--no-store", "DSPYC_NO_STORE" },
    [CACHE_REDIS_TIMEOUT] = { "redis_timeout_ms", "--redis-timeout-ms", "DSPYC_REDIS_TIMEOUT_MS" },
    [CACHE_SEMANTIC_THRESHOLD] = { "semantic_threshold", "--semantic-threshold",
                                   "DSPYC_SEMANTIC_THRESHOLD" },
    [CACHE_EMBED_MODEL] = { "embed_model", "--embed-model", "DSPYC_EMBED_MODEL" },
    [CACHE_SEMANTIC_PROJECTION] = { "semantic_projection", "--semantic-projection",
                                    "DSPYC_SEMANTIC_PROJECTION" },
    [CACHE_SEMANTIC_GUARDS] = { "semantic_guards", "--semantic-guards", "DSPYC_SEMANTIC_GUARDS" },
    [CACHE_SEMANTIC_SIZE] = { "semantic_size", "--semantic-size", "DSPYC_SEMANTIC_SIZE" },
    [CACHE_SEMANTIC_INDEX_MIN] = { "semantic_index_min", "--semantic-index-min",
                                   "DSPYC_SEMANTIC_INDEX_MIN" },
};

#define DEFAULT_REDIS_URL "redis://127.0.0.1:6379"

/* One setting's winning value and where it came from, for error messages. */
struct source {
    const char *value; /* NULL = not set anywhere: the default applies */
    char origin[160];
    char text[64]; /* a config file number, as text */
    char *owned;   /* a config file string, copied */
};

void cache_config_init(struct cache_config *cc, const char *default_levels)
{
    memset(cc, 0, sizeof(*cc));
    cc->default_levels = default_levels ? default_levels : "off";
}

int cache_config_option(struct cache_config *cc, int opt, const char *arg)
{
    if (opt == CACHE_OPT_CONFIG) {
        cc->config_path = arg;
        return 1;
    }
    if (opt < CACHE_OPT_LEVELS || opt >= CACHE_OPT_LEVELS + CACHE_NSETTINGS)
        return 0;
    int i = opt - CACHE_OPT_LEVELS;
    cc->flag[i] = (i == CACHE_NO_CACHE || i == CACHE_NO_STORE) ? "1" : arg;
    return 1;
}

/* ---- value parsers: 0, or -1 with *why set ------------------------------------------- */

static int parse_levels(const char *s, unsigned *out, const char **why)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {
        { "mem", DSPY_CACHE_L1 },
        { "memory", DSPY_CACHE_L1 },
        { "l1", DSPY_CACHE_L1 },
        { "redis", DSPY_CACHE_L2 },
        { "l2", DSPY_CACHE_L2 },
        { "disk", DSPY_CACHE_L3 },
        { "l3", DSPY_CACHE_L3 },
        { "off", 0 },
        { "none", 0 },
        { "semantic", DSPY_CACHE_SEMANTIC },
    };
    unsigned bits = 0;
    while (*s) {
        size_t n = strcspn(s, ",");
        size_t k = 0;
        while (k < sizeof(names) / sizeof(names[0]) &&
               (strlen(names[k].name) != n || strncasecmp(s, names[k].name, n)))
            k++;
        if (k == sizeof(names) / sizeof(names[0])) {
            *why = "not a list of mem, redis, disk, semantic (or off)";
            return -1;
        }
        bits |= names[k].bit;
        s += n;
        if (*s == ',')
            s++;
    }
    *out = bits;
    return 0;
}

static int parse_projection(const char *s, int *out, const char **why)
{
    if (!strcasecmp(s, "last-user"))
        *out = DSPY_SEMANTIC_LAST_USER;
    else if (!strcasecmp(s, "user-turns"))
        *out = DSPY_SEMANTIC_USER_TURNS;
    else if (!strcasecmp(s, "all"))
        *out = DSPY_SEMANTIC_ALL;
    else {
        *why = "not one of last-user, user-turns, all";
        return -1;
    }
    return 0;
}

static int parse_guards(const char *s, unsigned *out, const char **why)
{
    unsigned bits = 0;
    if (!strcasecmp(s, "all"))
        return *out = DSPY_SEMANTIC_GUARDS_ALL, 0;
    if (!strcasecmp(s, "none"))
        return *out = 0, 0;
    while (*s) {
        size_t n = strcspn(s, ","), i = 0;
        while (i < DSPY_SEMANTIC_NGUARDS &&
               (strlen(dspy_cache_semantic_guard_name(1u << i)) != n ||
                strncasecmp(s, dspy_cache_semantic_guard_name(1u << i), n)))
            i++;
        if (i == DSPY_SEMANTIC_NGUARDS) {
            *why = "not a list of number, negation, date, entity, scope, antonym, "
                   "substitution (or all, none)";
            return -1;
        }
        bits |= 1u << i;
        s += n;
        if (*s == ',')
            s++;
    }
    *out = bits;
    return 0;
}

/* "1048576", "64K", "256M", "1G", "2GiB", "512MB": binary multiples. */
/* A count of records from 1 up, or "never". */
static int parse_index_min(const char *s, size_t *out, const char **why)
{
    char *end;
    if (!strcasecmp(s, "never")) {
        *out = SIZE_MAX;
        return 0;
    }
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end || errno || v < 1 || *s == '-') {
        *why = "not a number of records from 1 up, or never";
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

static int parse_size(const char *s, size_t *out, const char **why)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double mult = 1;
    while (*end == ' ')
        end++;
    switch (toupper((unsigned char)*end)) {
    case 'K':
        mult = 1024.0;
        end++;
        break;
    case 'M':
        mult = 1024.0 * 1024;
        end++;
        break;
    case 'G':
        mult = 1024.0 * 1024 * 1024;
        end++;
        break;
    case 'T':
        mult = 1024.0 * 1024 * 1024 * 1024;
        end++;
        break;
    default: break;
    }
    if (mult > 1 && *end == 'i')
        end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (errno || end == s || *end || !(v >= 0) || v * mult > 1e15) {
        *why = "not a size such as 65536, 64K, 256M or 1G";
        return -1;
    }
    *out = (size_t)(v * mult);
    return 0;
}

static int parse_seconds(const char *s, double *out, const char **why)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0) || v > 1e10) {
        *why = "not a number of seconds >= 0";
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out, const char **why)
{
    static const char *const yes[] = { "1", "true", "yes", "on" };
    static const char *const no[] = { "0", "false", "no", "off", "" };
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        if (!strcasecmp(s, yes[i]))
            return *out = true, 0;
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        if (!strcasecmp(s, no[i]))
            return *out = false, 0;
    *why = "not a boolean (1/0, true/false, yes/no, on/off)";
    return -1;
}

/* ---- sources --------------------------------------------------------------------------- */

/* Read the config file's values into the settings that flags and the environment left
 * unset. 0, or -1 after printing why. */
static int read_config_file(const char *path, const char *origin, struct source *src,
                            const char *who)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je), *v;
    const char *key;
    int rc = -1;
    if (!root) {
        fprintf(stderr, "%s: %s %s:%d:%d: %s\n", who, origin, path, je.line, je.column, je.text);
        return -1;
    }
    if (!json_is_object(root)) {
        fprintf(stderr, "%s: %s %s: must hold a JSON object\n", who, origin, path);
        goto out;
    }
    json_object_foreach(root, key, v) {
        int i = 0;
        while (i < CACHE_NSETTINGS && strcmp(settings[i].key, key))
            i++;
        if (i == CACHE_NSETTINGS) {
            fprintf(stderr,
                    "%s: %s %s: unknown key \"%s\" (known: cache, cache_dir, "
                    "redis_url, cache_ttl, cache_namespace, cache_mem_size, "
                    "cache_disk_size, no_cache, no_store, redis_timeout_ms, "
                    "semantic_threshold, embed_model, semantic_projection, "
                    "semantic_guards, semantic_size, semantic_index_min)\n",
                    who, origin, path, key);
            goto out;
        }
        if (src[i].value)
            continue; /* a flag or the environment set it */
        struct source *s = &src[i];
        snprintf(s->origin, sizeof(s->origin), "%s: \"%s\"", path, key);
        if (json_is_string(v)) {
            if (!(s->owned = strdup(json_string_value(v))))
                abort();
            s->value = s->owned;
        } else if (json_is_number(v) &&
                   (i == CACHE_TTL || i == CACHE_MEM_SIZE || i == CACHE_DISK_SIZE ||
                    i == CACHE_REDIS_TIMEOUT || i == CACHE_SEMANTIC_THRESHOLD ||
                    i == CACHE_SEMANTIC_SIZE || i == CACHE_SEMANTIC_INDEX_MIN)) {
            snprintf(s->text, sizeof(s->text), "%.17g", json_number_value(v));
            s->value = s->text;
        } else if (json_is_boolean(v) && (i == CACHE_NO_CACHE || i == CACHE_NO_STORE)) {
            s->value = json_is_true(v) ? "1" : "0";
        } else {
            fprintf(stderr, "%s: %s: must be a %s\n", who, s->origin,
                    i == CACHE_NO_CACHE || i == CACHE_NO_STORE ? "boolean"
                    : i == CACHE_TTL || i == CACHE_MEM_SIZE || i == CACHE_DISK_SIZE ||
                            i == CACHE_REDIS_TIMEOUT || i == CACHE_SEMANTIC_THRESHOLD ||
                            i == CACHE_SEMANTIC_SIZE || i == CACHE_SEMANTIC_INDEX_MIN
                        ? "number or a string"
                        : "string");
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

static void free_sources(struct source *src)
{
    for (int i = 0; i < CACHE_NSETTINGS; i++)
        free(src[i].owned);
}

/* Flags, then the environment, then the config file. */
static int gather(const struct cache_config *cc, struct source *src, const char *who)
{
    memset(src, 0, sizeof(*src) * CACHE_NSETTINGS);
    for (int i = 0; i < CACHE_NSETTINGS; i++) {
        const char *env = getenv(settings[i].env);
        if (cc->flag[i]) {
            src[i].value = cc->flag[i];
            snprintf(src[i].origin, sizeof(src[i].origin), "%s", settings[i].flag);
        } else if (env && *env) { /* an empty variable counts as unset */
            src[i].value = env;
            snprintf(src[i].origin, sizeof(src[i].origin), "$%s", settings[i].env);
        }
    }
    const char *path = cc->config_path, *origin = "--cache-config";
    if (!path && (path = getenv("DSPYC_CONFIG")) && !*path)
        path = NULL;
    if (path && !cc->config_path)
        origin = "$DSPYC_CONFIG";
    return path ? read_config_file(path, origin, src, who) : 0;
}

static char *default_dir(void)
{
    const char *base = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char path[4096];
    if (base && *base)
        snprintf(path, sizeof(path), "%s/dspyc", base);
    else if (home && *home)
        snprintf(path, sizeof(path), "%s/.cache/dspyc", home);
    else
        return NULL;
    return strdup(path);
}

/* Parse every setting into cc; -1 after printing which one is wrong. */
static int resolve(struct cache_config *cc, const struct source *src, bool *levels_given,
                   const char *who)
{
    const char *why = NULL;
    int bad = -1;
    *levels_given = src[CACHE_LEVELS].value != NULL;
    if (parse_levels(*levels_given ? src[CACHE_LEVELS].value : cc->default_levels, &cc->levels,
                     &why)) {
        bad = CACHE_LEVELS;
        goto fail;
    }
    if (src[CACHE_TTL].value && parse_seconds(src[CACHE_TTL].value, &cc->ttl_s, &why)) {
        bad = CACHE_TTL;
        goto fail;
    }
    if (src[CACHE_MEM_SIZE].value && parse_size(src[CACHE_MEM_SIZE].value, &cc->mem_bytes, &why)) {
        bad = CACHE_MEM_SIZE;
        goto fail;
    }
    if (src[CACHE_DISK_SIZE].value &&
        parse_size(src[CACHE_DISK_SIZE].value, &cc->disk_bytes, &why)) {
        bad = CACHE_DISK_SIZE;
        goto fail;
    }
    if (src[CACHE_NO_CACHE].value && parse_bool(src[CACHE_NO_CACHE].value, &cc->no_cache, &why)) {
        bad = CACHE_NO_CACHE;
        goto fail;
    }
    if (src[CACHE_NO_STORE].value && parse_bool(src[CACHE_NO_STORE].value, &cc->no_store, &why)) {
        bad = CACHE_NO_STORE;
        goto fail;
    }
    if (src[CACHE_REDIS_TIMEOUT].value &&
        (parse_seconds(src[CACHE_REDIS_TIMEOUT].value, &cc->redis_timeout_ms, &why) ||
         cc->redis_timeout_ms < 1 || cc->redis_timeout_ms > 600000)) {
        why = "not a number of milliseconds from 1 to 600000";
        bad = CACHE_REDIS_TIMEOUT;
        goto fail;
    }
    if (src[CACHE_SEMANTIC_THRESHOLD].value &&
        (parse_seconds(src[CACHE_SEMANTIC_THRESHOLD].value, &cc->semantic_threshold, &why) ||
         !(cc->semantic_threshold > 0 && cc->semantic_threshold <= 1))) {
        why = "not a cosine similarity in (0, 1]";
        bad = CACHE_SEMANTIC_THRESHOLD;
        goto fail;
    }
    cc->semantic_projection = DSPY_SEMANTIC_LAST_USER;
    cc->semantic_guards = DSPY_SEMANTIC_GUARDS_ALL;
    if (src[CACHE_SEMANTIC_PROJECTION].value &&
        parse_projection(src[CACHE_SEMANTIC_PROJECTION].value, &cc->semantic_projection, &why)) {
        bad = CACHE_SEMANTIC_PROJECTION;
        goto fail;
    }
    if (src[CACHE_SEMANTIC_GUARDS].value &&
        parse_guards(src[CACHE_SEMANTIC_GUARDS].value, &cc->semantic_guards, &why)) {
        bad = CACHE_SEMANTIC_GUARDS;
        goto fail;
    }
    if (src[CACHE_SEMANTIC_SIZE].value &&
        parse_size(src[CACHE_SEMANTIC_SIZE].value, &cc->semantic_bytes, &why)) {
        bad = CACHE_SEMANTIC_SIZE;
        goto fail;
    }
    if (src[CACHE_SEMANTIC_INDEX_MIN].value &&
        parse_index_min(src[CACHE_SEMANTIC_INDEX_MIN].value, &cc->semantic_index_min, &why)) {
        bad = CACHE_SEMANTIC_INDEX_MIN;
        goto fail;
    }
    if (src[CACHE_NAMESPACE].value && strlen(src[CACHE_NAMESPACE].value) > DSPY_CACHE_NS_MAX) {
        why = "longer than 256 bytes";
        bad = CACHE_NAMESPACE;
        goto fail;
    }
    /* resolved again when a command opens a second LM over the same flags */
    free(cc->ns);
    free(cc->redis_url);
    free(cc->dir);
    free(cc->embed_model);
    cc->embed_model = src[CACHE_EMBED_MODEL].value && *src[CACHE_EMBED_MODEL].value
                          ? strdup(src[CACHE_EMBED_MODEL].value)
                          : NULL;
    cc->ns = src[CACHE_NAMESPACE].value && *src[CACHE_NAMESPACE].value
                 ? strdup(src[CACHE_NAMESPACE].value)
                 : NULL;
    cc->redis_url = strdup(src[CACHE_REDIS_URL].value ? src[CACHE_REDIS_URL].value
                                                      : DEFAULT_REDIS_URL);
    cc->dir = src[CACHE_DIR].value ? strdup(src[CACHE_DIR].value) : default_dir();
    return 0;
fail:
    fprintf(stderr, "%s: %s: '%s' is %s\n", who, src[bad].value ? src[bad].origin : "default",
            src[bad].value ? src[bad].value : cc->default_levels, why);
    return -1;
}

static dspy_status open_cache(struct cache_config *cc, unsigned levels, struct dspy_error *err)
{
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    o.levels = levels;
    o.ns = cc->ns;
    if (cc->mem_bytes)
        o.mem_max_bytes = cc->mem_bytes;
    if (cc->disk_bytes)
        o.disk_max_bytes = cc->disk_bytes;
    if (cc->ttl_s > 0) {
        o.mem_ttl_s = o.disk_ttl_s = o.redis_ttl_s = cc->ttl_s;
    }
    o.redis_url = cc->redis_url;
    if (cc->redis_timeout_ms > 0)
        o.redis_timeout_ms = (unsigned)cc->redis_timeout_ms;
    o.disk_path = cc->dir;
    if (cc->semantic_threshold > 0)
        o.semantic_threshold = cc->semantic_threshold;
    o.embed_model = cc->embed_model;
    o.semantic_projection = cc->semantic_projection;
    o.semantic_guards = cc->semantic_guards;
    if (cc->semantic_bytes)
        o.semantic_max_bytes = cc->semantic_bytes;
    o.semantic_index_min = cc->semantic_index_min;
    dspy_error_clear(err);
    return dspy_cache_new(&o, &cc->cache, err);
}

int cache_config_open(struct cache_config *cc, const char *who)
{
    struct source src[CACHE_NSETTINGS];
    struct dspy_error err;
    bool levels_given;
    int rc = -1;
    if (cc->cache || cc->disk_damage[0]) /* opened before (and warned once) */
        return 0;
    if (gather(cc, src, who) || resolve(cc, src, &levels_given, who))
        goto out;
    rc = 0;
    cc->levels &= ~cc->exclude;
    if (!cc->levels)
        goto out;
    if (cc->levels == DSPY_CACHE_SEMANTIC) {
        fprintf(stderr,
                "%s: the semantic level needs an exact level to hold the answers: "
                "--cache mem,semantic or mem,disk,semantic\n",
                who);
        rc = -1;
        goto out;
    }
    if ((cc->levels & DSPY_CACHE_L3) && !cc->dir) {
        if (levels_given) {
            fprintf(stderr, "%s: the disk cache needs --cache-dir (no $HOME to put it in)\n", who);
            rc = -1;
            goto out;
        }
        cc->levels &= ~DSPY_CACHE_L3;
    }
    if (!cc->levels)
        goto out;
    if (open_cache(cc, cc->levels, &err) && err.code == DSPY_ECORRUPT &&
        (cc->levels & DSPY_CACHE_L3)) {
        /* A damaged file never stops a command: without it, with one warning naming it and
         * the repair; or, for `cache clear`, repaired here. */
        if (cc->repair_disk) {
            struct dspy_error rerr;
            if (dspy_cache_disk_reset(cc->dir, &rerr)) {
                fprintf(stderr, "%s: %s\n", who, rerr.message);
                rc = -1;
                goto out;
            }
            fprintf(stderr, "%s: %s; removed it (its entries are lost)\n", who, err.message);
        } else {
            snprintf(cc->disk_damage, sizeof(cc->disk_damage), "%s", err.message);
            fprintf(stderr,
                    "%s: warning: %s; going on without the disk cache. Repair it with "
                    "`dspyc cache clear --level disk` (its entries are lost)\n",
                    who, err.message);
            cc->levels &= ~DSPY_CACHE_L3;
            if (!cc->levels)
                goto out;
        }
        if (!open_cache(cc, cc->levels, &err))
            goto out;
        fprintf(stderr, "%s: cannot open the cache: %s\n", who, err.message);
        rc = -1;
    } else if (!cc->cache && err.code) {
        /* DSPy falls back to memory when its disk cache cannot be opened; so do we when the
         * disk level was a default rather than asked for. */
        if ((cc->levels & DSPY_CACHE_L3) && !levels_given && cc->levels != DSPY_CACHE_L3) {
            fprintf(stderr, "%s: warning: disk cache at %s unavailable (%s); going on without it\n",
                    who, cc->dir, err.message);
            cc->levels &= ~DSPY_CACHE_L3;
            if (!open_cache(cc, cc->levels, &err))
                goto out;
        }
        fprintf(stderr, "%s: cannot open the cache: %s\n", who, err.message);
        rc = -1;
    }
out:
    free_sources(src);
    return rc;
}

void cache_config_ctl(const struct cache_config *cc, struct dspy_cache_ctl *ctl)
{
    *ctl = (struct dspy_cache_ctl)DSPY_CACHE_CTL_INIT;
    ctl->no_cache = cc->no_cache;
    ctl->no_store = cc->no_store;
    ctl->ns = cc->ns;
}

void cache_config_close(struct cache_config *cc)
{
    dspy_cache_free(cc->cache);
    cc->cache = NULL;
    free(cc->dir);
    free(cc->redis_url);
    free(cc->ns);
    free(cc->embed_model);
    cc->dir = cc->redis_url = cc->ns = cc->embed_model = NULL;
}

/* ---- printing -------------------------------------------------------------------------- */

const char *cache_levels_name(unsigned levels, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s%s%s%s%s%s%s", levels & DSPY_CACHE_L1 ? "mem" : "",
             (levels & DSPY_CACHE_L1) && (levels & 6u) ? "," : "",
             levels & DSPY_CACHE_L2 ? "redis" : "",
             (levels & DSPY_CACHE_L2) && (levels & DSPY_CACHE_L3) ? "," : "",
             levels & DSPY_CACHE_L3 ? "disk" : "",
             (levels & DSPY_CACHE_ALL) && (levels & DSPY_CACHE_SEMANTIC) ? "," : "",
             levels & DSPY_CACHE_SEMANTIC ? "semantic" : "");
    if (!levels)
        snprintf(buf, cap, "off");
    return buf;
}

const char *cache_fmt_bytes(uint64_t n, char *buf, size_t cap)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%llu B", (unsigned long long)n);
    else
        snprintf(buf, cap, "%.1f %s", v, units[u]);
    return buf;
}

void cache_print_levels(FILE *out, const struct dspy_cache_stats *st, unsigned levels,
                        const char *indent)
{
    static const char *const names[3] = { "mem", "redis", "disk" };
    fprintf(out, "%s%-6s %8s %8s %8s %9s %8s %8s %8s %8s %8s %10s\n", indent, "level", "hits",
            "misses", "puts", "evictions", "expired", "corrupt", "errors", "skipped", "entries",
            "bytes");
    for (int i = 0; i < 3; i++) {
        const struct dspy_cache_level_stats *l = &st->level[i];
        char bytes[32], entries[24];
        if (!(levels & (1u << i)))
            continue;
        if (i == 1) { /* Redis owns its entries: not tracked here */
            snprintf(entries, sizeof(entries), "-");
            snprintf(bytes, sizeof(bytes), "-");
        } else {
            snprintf(entries, sizeof(entries), "%llu", (unsigned long long)l->entries);
            cache_fmt_bytes(l->bytes, bytes, sizeof(bytes));
        }
        fprintf(out, "%s%-6s %8llu %8llu %8llu %9llu %8llu %8llu %8llu %8llu %8s %10s\n", indent,
                names[i], (unsigned long long)l->hits, (unsigned long long)l->misses,
                (unsigned long long)l->puts, (unsigned long long)l->evictions,
                (unsigned long long)l->expired, (unsigned long long)l->corrupt,
                (unsigned long long)l->errors, (unsigned long long)l->skipped, entries, bytes);
    }
    for (int i = 0; i < 3; i++)
        if ((levels & (1u << i)) && st->level[i].last_error[0])
            fprintf(out, "%s%s: last error: %s\n", indent, names[i], st->level[i].last_error);
    if (levels & DSPY_CACHE_L2)
        fprintf(out, "%sredis: %s\n", indent,
                st->redis_up ? "up"
                             : "down (lookups miss, "
                               "stores are dropped)");
    if (levels & DSPY_CACHE_SEMANTIC)
        cache_print_semantic(out, st, indent);
}

void cache_print_semantic(FILE *out, const struct dspy_cache_stats *st, const char *indent)
{
    char bytes[32];
    uint64_t guarded = 0;
    for (int i = 0; i < DSPY_SEMANTIC_NGUARDS; i++)
        guarded += st->sem_guarded[i];
    fprintf(out,
            "%ssemantic: %llu lookups, %llu hits (mean similarity %.3f), %llu below the "
            "threshold, %llu refused by the guards",
            indent, (unsigned long long)st->sem_lookups, (unsigned long long)st->sem_hits,
            st->sem_hits ? st->sem_similarity_sum / (double)st->sem_hits : 0.0,
            (unsigned long long)st->sem_below, (unsigned long long)guarded);
    for (int i = 0, first = 1; i < DSPY_SEMANTIC_NGUARDS; i++)
        if (st->sem_guarded[i]) {
            fprintf(out, "%s%s %llu", first ? " (" : ", ", dspy_cache_semantic_guard_name(1u << i),
                    (unsigned long long)st->sem_guarded[i]);
            first = 0;
        }
    if (guarded)
        fputc(')', out);
    fprintf(out, "; %llu records (%s) in %llu partitions", (unsigned long long)st->sem_entries,
            cache_fmt_bytes(st->sem_bytes, bytes, sizeof(bytes)),
            (unsigned long long)st->sem_partitions);
    if (st->sem_followed)
        fprintf(out, ", %llu dropped with their exact entries",
                (unsigned long long)st->sem_followed);
    fprintf(out, "%s\n", st->sem_unavailable ? "; model unavailable: every lookup misses" : "");
    if (st->sem_index_nodes || st->sem_index_building || st->sem_indexed_lookups)
        fprintf(out,
                "%s  index: %llu records in HNSW indexes, %llu lookups through them, %llu "
                "being built\n",
                indent, (unsigned long long)st->sem_index_nodes,
                (unsigned long long)st->sem_indexed_lookups,
                (unsigned long long)st->sem_index_building);
}

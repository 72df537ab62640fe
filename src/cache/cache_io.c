/* Cache stats as a struct and as JSON, and export/import of entries as JSON lines for the
 * `dspyc cache` command (cache layer). */
#include <stdio.h>
#include <string.h>

#include "base/base64.h"
#include "base/buf.h"
#include "base/status.h"
#include "base/clock.h"
#include "cache/cache_int.h"

#define LINE_SLACK ((size_t)1 << 20)

void dspy_cache_stats(dspy_cache *c, struct dspy_cache_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!c)
        return;
    for (int i = 0; i < 3; i++)
        if (c->lvl[i])
            c->ops[i]->stats(c->lvl[i], &out->level[i]);
    out->gets = atomic_load(&c->gets);
    out->hits = atomic_load(&c->hits);
    out->misses = atomic_load(&c->misses);
    out->fills = atomic_load(&c->fills);
    out->fill_errors = atomic_load(&c->fill_errors);
    out->coalesced = atomic_load(&c->coalesced);
    out->lease_waits = atomic_load(&c->lease_waits);
    out->remote_fills = atomic_load(&c->remote_fills);
    out->redis_up = c->lvl[1] && dspy__cache_redis_up(c->lvl[1]);
    dspy__semantic_stats(c, out);
}

static json_t *semantic_json(const struct dspy_cache_stats *s)
{
    json_t *g = json_object();
    for (int i = 0; g && i < DSPY_SEMANTIC_NGUARDS; i++)
        json_object_set_new(g, dspy_cache_semantic_guard_name(1u << i),
                            json_integer((json_int_t)s->sem_guarded[i]));
    json_t *idx = json_pack("{sIsIsIsIsIsI}", "lookups", (json_int_t)s->sem_indexed_lookups,
                            "nodes", (json_int_t)s->sem_index_nodes, "building",
                            (json_int_t)s->sem_index_building, "loaded",
                            (json_int_t)s->sem_index_loaded, "tail_added",
                            (json_int_t)s->sem_index_tail, "rebuilds",
                            (json_int_t)s->sem_index_rebuilds);
    return json_pack("{sIsIsfsIsosIsIsIsIsIsIsIsIsbso}", "lookups", (json_int_t)s->sem_lookups,
                     "hits", (json_int_t)s->sem_hits, "mean_similarity",
                     s->sem_hits ? s->sem_similarity_sum / (double)s->sem_hits : 0.0,
                     "below_threshold", (json_int_t)s->sem_below, "guarded", g, "stale",
                     (json_int_t)s->sem_stale, "followed", (json_int_t)s->sem_followed,
                     "scan8_lookups", (json_int_t)s->sem_scan8_lookups, "puts",
                     (json_int_t)s->sem_puts, "entries", (json_int_t)s->sem_entries, "bytes",
                     (json_int_t)s->sem_bytes, "partitions", (json_int_t)s->sem_partitions,
                     "evictions", (json_int_t)s->sem_evictions, "unavailable", s->sem_unavailable,
                     "index", idx);
}

static json_t *level_json(const struct dspy_cache_level_stats *s)
{
    return json_pack("{sIsIsIsIsIsIsIsIsIsIss}", "hits", (json_int_t)s->hits, "misses",
                     (json_int_t)s->misses, "puts", (json_int_t)s->puts, "evictions",
                     (json_int_t)s->evictions, "expired", (json_int_t)s->expired, "corrupt",
                     (json_int_t)s->corrupt, "errors", (json_int_t)s->errors, "skipped",
                     (json_int_t)s->skipped, "entries", (json_int_t)s->entries, "bytes",
                     (json_int_t)s->bytes, "last_error", s->last_error);
}

json_t *dspy_cache_stats_json(dspy_cache *c)
{
    static const char *const names[3] = { "l1", "l2", "l3" };
    struct dspy_cache_stats s;
    json_t *o;
    if (!c)
        return NULL;
    dspy_cache_stats(c, &s);
    o = json_pack("{sIsIsIsfsIsIsIsIsI}", "gets", (json_int_t)s.gets, "hits", (json_int_t)s.hits,
                  "misses", (json_int_t)s.misses, "hit_rate",
                  s.gets ? (double)s.hits / (double)s.gets : 0.0, "fills", (json_int_t)s.fills,
                  "fill_errors", (json_int_t)s.fill_errors, "coalesced", (json_int_t)s.coalesced,
                  "lease_waits", (json_int_t)s.lease_waits, "remote_fills",
                  (json_int_t)s.remote_fills);
    for (int i = 0; o && i < 3; i++) {
        if (!c->lvl[i])
            continue;
        json_t *l = level_json(&s.level[i]);
        if (l && i == 1)
            json_object_set_new(l, "up", json_boolean(s.redis_up));
        if (!l || json_object_set_new(o, names[i], l)) {
            json_decref(o);
            o = NULL;
        }
    }
    if (o && c->sem) {
        json_t *sj = semantic_json(&s);
        if (!sj || json_object_set_new(o, "semantic", sj)) {
            json_decref(o);
            o = NULL;
        }
    }
    return o;
}

/* --- base64 (RFC 4648, padded) ------------------------------------------------------ */

static char *b64_encode(const unsigned char *p, size_t n)
{
    struct dspy_buf b;
    dspy__buf_init(&b, (n + 2) / 3 * 4 + 1);
    if (dspy__buf_add_base64(&b, p, n)) {
        dspy__buf_release(&b);
        return NULL;
    }
    return dspy__buf_detach(&b, NULL);
}

/* Decode into a new buffer; NULL (and *ok false) on bad input. */
static unsigned char *b64_decode(const char *s, size_t n, size_t *len, bool *ok)
{
    unsigned char *out = dspy_malloc(n / 4 * 3 + 1);
    *ok = false;
    if (!out)
        return NULL;
    if (!dspy__base64_decode(s, n, out, len)) {
        dspy_free(out);
        return NULL;
    }
    *ok = true;
    return out;
}

/* --- export ------------------------------------------------------------------------- */

struct export_ctx {
    FILE *out;
    size_t count;
    uint64_t now;
};

static dspy_status export_one(void *ud, const uint8_t key[16], const void *value, size_t len,
                              uint64_t expires_ms)
{
    struct export_ctx *x = ud;
    struct dspy_cache_key k;
    char hex[33];
    double ttl = expires_ms > x->now ? (double)(expires_ms - x->now) / 1000.0 : 0.0;
    json_t *line, *text = json_stringn(value, len);
    dspy_status rc = DSPY_OK;
    memcpy(k.bytes, key, 16);
    dspy_cache_key_hex(&k, hex);
    if (expires_ms && expires_ms <= x->now)
        return DSPY_OK;
    if (text) {
        line = json_pack("{sssfso}", "key", hex, "ttl_s", ttl, "text", text);
    } else {
        char *enc = b64_encode(value, len);
        line = enc ? json_pack("{sssfss}", "key", hex, "ttl_s", ttl, "b64", enc) : NULL;
        dspy_free(enc);
    }
    if (!line)
        return DSPY_ENOMEM;
    if (json_dumpf(line, x->out, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0 ||
        fputc('\n', x->out) == EOF)
        rc = DSPY_EIO;
    else
        x->count++;
    json_decref(line);
    return rc;
}

dspy_status dspy_cache_export(dspy_cache *c, unsigned level, FILE *out, size_t *count,
                              struct dspy_error *err)
{
    struct export_ctx x = { out, 0, dspy__wall_ms() };
    int i = level == DSPY_CACHE_L1   ? 0
            : level == DSPY_CACHE_L2 ? 1
            : level == DSPY_CACHE_L3 ? 2
                                     : -1;
    dspy_status rc;
    if (count)
        *count = 0;
    if (!c || !out || i < 0 || !c->lvl[i])
        return dspy__err(err, DSPY_EINVAL, "cache export: level %u is not open", level);
    rc = c->ops[i]->each(c->lvl[i], export_one, &x, err);
    if (count)
        *count = x.count;
    if (rc == DSPY_EIO)
        return dspy__err(err, rc, "cache export: write failed");
    if (rc == DSPY_ENOMEM)
        return dspy__err(err, rc, "out of memory exporting the cache");
    if (!rc && fflush(out) != 0)
        return dspy__err(err, DSPY_EIO, "cache export: write failed");
    return rc;
}

/* --- import ------------------------------------------------------------------------- */

/* One line into `b` without its newline. DSPY_ENOTFOUND at end of input. */
static dspy_status read_line(FILE *in, struct dspy_buf *b)
{
    char chunk[65536];
    dspy__buf_reset(b);
    while (fgets(chunk, sizeof(chunk), in)) {
        size_t n = strlen(chunk);
        bool eol = n && chunk[n - 1] == '\n';
        dspy_status rc = dspy__buf_add(b, chunk, eol ? n - 1 : n);
        if (rc)
            return rc;
        if (eol)
            return DSPY_OK;
    }
    if (ferror(in))
        return DSPY_EIO;
    return b->len ? DSPY_OK : DSPY_ENOTFOUND;
}

static dspy_status import_line(dspy_cache *c, const char *text, size_t n,
                               const struct dspy_cache_ctl *ctl, struct dspy_error *err)
{
    json_error_t jerr;
    struct dspy_cache_key key;
    struct dspy_cache_ctl put = ctl ? *ctl : (struct dspy_cache_ctl)DSPY_CACHE_CTL_INIT;
    unsigned char *bytes = NULL;
    size_t len = 0;
    bool ok;
    dspy_status rc;
    json_t *o = json_loadb(text, n, JSON_ALLOW_NUL, &jerr);
    json_t *k = json_object_get(o, "key"), *t = json_object_get(o, "text");
    json_t *b = json_object_get(o, "b64"), *ttl = json_object_get(o, "ttl_s");
    if (!o || !json_is_object(o)) {
        rc = dspy__err(err, DSPY_EPARSE, "cache import: not a JSON object (%s)",
                       o ? "wrong type" : jerr.text);
        goto out_json;
    }
    if (!json_is_string(k) || dspy_cache_key_parse_hex(json_string_value(k), &key) ||
        (ttl && !json_is_number(ttl)) || (!json_is_string(t) && !json_is_string(b))) {
        rc = dspy__err(err, DSPY_EPARSE,
                       "cache import: need \"key\" (32 hex digits), \"text\" or \"b64\", and "
                       "a numeric \"ttl_s\"");
        goto out_json;
    }
    if (ttl && json_number_value(ttl) > 0)
        put.ttl_s = json_number_value(ttl);
    if (json_is_string(t)) {
        rc = dspy_cache_put(c, &key, json_string_value(t), json_string_length(t), &put, err);
        goto out_json;
    }
    bytes = b64_decode(json_string_value(b), json_string_length(b), &len, &ok);
    if (!ok) {
        rc = dspy__err(err, DSPY_EPARSE, "cache import: bad base64");
        goto out_bytes;
    }
    rc = dspy_cache_put(c, &key, bytes, len, &put, err);
out_bytes:
    dspy_free(bytes);
out_json:
    json_decref(o);
    return rc;
}

dspy_status dspy_cache_import(dspy_cache *c, FILE *in, const struct dspy_cache_ctl *ctl,
                              size_t *count, struct dspy_error *err)
{
    struct dspy_buf line;
    dspy_status rc;
    long lineno = 0;
    if (count)
        *count = 0;
    if (!c || !in)
        return dspy__err(err, DSPY_EINVAL, "cache import: missing argument");
    dspy__buf_init(&line, c->opts.max_value_bytes * 2 + LINE_SLACK);
    while ((rc = read_line(in, &line)) == DSPY_OK) {
        lineno++;
        if (!line.len || strspn(line.ptr, " \t\r") == line.len)
            continue;
        if ((rc = import_line(c, line.ptr, line.len, ctl, err))) {
            if (err) {
                err->line = lineno;
                dspy__err_prefix(err, "line %ld", lineno);
            }
            goto out_line;
        }
        if (count)
            (*count)++;
    }
    if (rc == DSPY_ENOTFOUND)
        rc = DSPY_OK;
    else if (rc == DSPY_ETOOBIG)
        rc = dspy__err(err, rc, "cache import: line %ld too long", lineno + 1);
    else if (rc)
        rc = dspy__err(err, rc, "cache import: read failed after line %ld", lineno);
out_line:
    dspy__buf_release(&line);
    return rc;
}

/* Cache keys (cache layer): the canonical JSON of a request and its XXH3-128 hash with
 * the key-schema version and namespace in front. The canonical form is byte-for-byte what
 * orjson.dumps(request, option=OPT_SORT_KEYS) writes, so it can be checked from Python. */
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <dspyc/cache.h>

#include "base/ascii.h"
#include "base/buf.h"
#include "base/fmtfloat.h"
#include "base/status.h"

#define KEY_PREFIX "dspyc-cache-key/v1"
#define MAX_DEPTH 128
#define STACK_MEMBERS 64

_Static_assert(sizeof(XXH3_state_t) + alignof(XXH3_state_t) <=
                   sizeof(((struct dspy_cache_key_hasher *)0)->opaque),
               "dspy_cache_key_hasher too small for XXH3_state_t");

const char *const dspy_cache_default_ignore[] = {
    "api_key",         "api_base",       "base_url",    "api_version",
    "organization",    "project",        "timeout",     "request_timeout",
    "connect_timeout", "num_retries",    "max_retries", "retry_strategy",
    "stream",          "stream_options", "headers",     "extra_headers",
    "cache",           "user_agent",     NULL,
};

/* Where canonical bytes go: a hash state or a buffer. Hashing goes through a small
 * staging area, because the encoder emits many one-byte pieces and each XXH3 update has
 * a fixed cost. */
struct sink {
    XXH3_state_t *xxh;
    struct dspy_buf *buf;
    size_t staged;
    unsigned char stage[1024];
};

static void flush(struct sink *s)
{
    XXH3_128bits_update(s->xxh, s->stage, s->staged);
    s->staged = 0;
}

static dspy_status emit(struct sink *s, const void *p, size_t n)
{
    if (!s->xxh)
        return dspy__buf_add(s->buf, p, n);
    if (s->staged + n > sizeof(s->stage))
        flush(s);
    if (n > sizeof(s->stage) / 2) {
        XXH3_128bits_update(s->xxh, p, n);
    } else {
        memcpy(s->stage + s->staged, p, n);
        s->staged += n;
    }
    return DSPY_OK;
}

static dspy_status emit_str(struct sink *s, const char *p, size_t n)
{
    dspy_status rc;
    size_t run = 0;
    if ((rc = emit(s, "\"", 1)))
        return rc;
    for (size_t i = 0; i < n; i++) {
        char esc[6];
        size_t len = dspy__json_escape_byte((unsigned char)p[i], esc);
        if (!len)
            continue;
        if ((rc = emit(s, p + run, i - run)) || (rc = emit(s, esc, len)))
            return rc;
        run = i + 1;
    }
    if ((rc = emit(s, p + run, n - run)))
        return rc;
    return emit(s, "\"", 1);
}

/* orjson 3.8's layout (cache.md 1.2), frozen so keys stay stable across orjson releases. */
size_t dspy_cache_canonical_real(double v, char out[32])
{
    if (v != v || v - v != 0)
        return 0;
    return dspy__float_fmt(out, v, DSPY__FLOAT_ORJSON_38);
}

static dspy_status emit_real(struct sink *s, double v)
{
    char out[32];
    size_t n = dspy_cache_canonical_real(v, out);
    return n ? emit(s, out, n) : DSPY_EINVAL;
}

struct member {
    const char *key;
    size_t len;
    json_t *value;
};

/* Byte order of UTF-8 equals code point order, which is what Python's sort uses. */
static int member_cmp(const void *a, const void *b)
{
    const struct member *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->key, y->key, n);
    if (c)
        return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

static bool ignored(const char *const *ignore, const char *key, size_t len)
{
    if (!ignore)
        return false;
    for (; *ignore; ignore++)
        if (strlen(*ignore) == len && memcmp(*ignore, key, len) == 0)
            return true;
    return false;
}

static dspy_status emit_value(struct sink *s, const json_t *v, const char *const *ignore,
                              int depth);

static dspy_status emit_object(struct sink *s, const json_t *v, const char *const *ignore,
                               int depth)
{
    struct member stack[STACK_MEMBERS], *m = stack;
    size_t size = json_object_size(v), n = 0;
    dspy_status rc = DSPY_OK;
    if (size > STACK_MEMBERS && !(m = dspy_malloc(size * sizeof(*m))))
        return DSPY_ENOMEM;
    for (void *it = json_object_iter((json_t *)v); it && n < size;
         it = json_object_iter_next((json_t *)v, it)) {
        const char *key = json_object_iter_key(it);
        size_t len = json_object_iter_key_len(it);
        if (ignored(ignore, key, len))
            continue;
        m[n++] = (struct member){ key, len, json_object_iter_value(it) };
    }
    qsort(m, n, sizeof(*m), member_cmp);
    if ((rc = emit(s, "{", 1)))
        goto out_free;
    for (size_t i = 0; i < n; i++) {
        if ((i && (rc = emit(s, ",", 1))) || (rc = emit_str(s, m[i].key, m[i].len)) ||
            (rc = emit(s, ":", 1)) || (rc = emit_value(s, m[i].value, NULL, depth + 1)))
            goto out_free;
    }
    rc = emit(s, "}", 1);
out_free:
    if (m != stack)
        dspy_free(m);
    return rc;
}

static dspy_status emit_value(struct sink *s, const json_t *v, const char *const *ignore, int depth)
{
    char num[32];
    dspy_status rc;
    if (depth > MAX_DEPTH)
        return DSPY_EINVAL;
    switch (json_typeof(v)) {
    case JSON_OBJECT: return emit_object(s, v, ignore, depth);
    case JSON_ARRAY:
        if ((rc = emit(s, "[", 1)))
            return rc;
        for (size_t i = 0; i < json_array_size(v); i++)
            if ((i && (rc = emit(s, ",", 1))) ||
                (rc = emit_value(s, json_array_get(v, i), NULL, depth + 1)))
                return rc;
        return emit(s, "]", 1);
    case JSON_STRING: return emit_str(s, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return emit(s, num,
                    (size_t)snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
                                     json_integer_value(v)));
    case JSON_REAL: return emit_real(s, json_real_value(v));
    case JSON_TRUE: return emit(s, "true", 4);
    case JSON_FALSE: return emit(s, "false", 5);
    case JSON_NULL: return emit(s, "null", 4);
    }
    return DSPY_EINVAL;
}

static XXH3_state_t *hasher_state(struct dspy_cache_key_hasher *h)
{
    uintptr_t p = (uintptr_t)h->opaque;
    uintptr_t a = alignof(XXH3_state_t);
    return (XXH3_state_t *)((p + a - 1) & ~(a - 1));
}

void dspy_cache_key_hasher_init(struct dspy_cache_key_hasher *h, const char *ns)
{
    XXH3_state_t *st = hasher_state(h);
    size_t nslen = ns ? strnlen(ns, DSPY_CACHE_NS_MAX) : 0;
    XXH3_INITSTATE(st);
    XXH3_128bits_reset(st);
    /* Prefix and namespace end in NUL: neither may contain one, so the split is unique. */
    XXH3_128bits_update(st, KEY_PREFIX, sizeof(KEY_PREFIX));
    XXH3_128bits_update(st, ns ? ns : "", nslen);
    XXH3_128bits_update(st, "", 1);
}

void dspy_cache_key_hasher_update(struct dspy_cache_key_hasher *h, const void *data, size_t len)
{
    XXH3_128bits_update(hasher_state(h), data, len);
}

void dspy_cache_key_hasher_final(struct dspy_cache_key_hasher *h, struct dspy_cache_key *out)
{
    XXH128_hash_t v = XXH3_128bits_digest(hasher_state(h));
    XXH128_canonicalFromHash((XXH128_canonical_t *)out->bytes, v);
}

void dspy_cache_key_from_canonical(const void *canon, size_t len, const char *ns,
                                   struct dspy_cache_key *out)
{
    struct dspy_cache_key_hasher h;
    dspy_cache_key_hasher_init(&h, ns);
    dspy_cache_key_hasher_update(&h, canon, len);
    dspy_cache_key_hasher_final(&h, out);
}

static dspy_status input_error(struct dspy_error *err, dspy_status rc)
{
    if (rc == DSPY_ENOMEM)
        return dspy__err(err, rc, "out of memory encoding the cache key");
    if (rc == DSPY_ETOOBIG)
        return dspy__err(err, rc, "request too large for a cache key");
    return dspy__err(err, rc,
                     "request cannot be keyed: nesting deeper than %d or a non-finite number",
                     MAX_DEPTH);
}

dspy_status dspy_cache_key_from_json(const json_t *request, const char *const *ignore,
                                     const char *ns, struct dspy_cache_key *out,
                                     struct dspy_error *err)
{
    struct dspy_cache_key_hasher h;
    struct sink s;
    dspy_status rc;
    s.buf = NULL;
    s.staged = 0;
    if (!request || !json_is_object(request) || !out)
        return dspy__err(err, DSPY_EINVAL, "cache key: the request must be a JSON object");
    if (ns && strnlen(ns, DSPY_CACHE_NS_MAX + 1) > DSPY_CACHE_NS_MAX)
        return dspy__err(err, DSPY_EINVAL, "cache key: namespace longer than %d bytes",
                         DSPY_CACHE_NS_MAX);
    dspy_cache_key_hasher_init(&h, ns);
    s.xxh = hasher_state(&h);
    rc = emit_value(&s, request, ignore ? ignore : dspy_cache_default_ignore, 0);
    if (rc)
        return input_error(err, rc);
    flush(&s);
    dspy_cache_key_hasher_final(&h, out);
    return DSPY_OK;
}

dspy_status dspy_cache_canonical_json(const json_t *v, const char *const *ignore, char **out,
                                      size_t *len, struct dspy_error *err)
{
    struct dspy_buf b;
    struct sink s;
    dspy_status rc;
    s.xxh = NULL;
    s.buf = &b;
    if (!v || !out)
        return dspy__err(err, DSPY_EINVAL, "canonical JSON: no value");
    dspy__buf_init(&b, DSPY_BUF_MAX_DEFAULT);
    rc = emit_value(&s, v, ignore, 0);
    if (rc) {
        dspy__buf_release(&b);
        return input_error(err, rc);
    }
    *out = dspy__buf_detach(&b, len);
    return *out ? DSPY_OK : dspy__err(err, DSPY_ENOMEM, "out of memory");
}

void dspy_cache_key_hex(const struct dspy_cache_key *key, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[key->bytes[i] >> 4];
        out[2 * i + 1] = hex[key->bytes[i] & 15];
    }
    out[32] = '\0';
}

dspy_status dspy_cache_key_parse_hex(const char *hex, struct dspy_cache_key *out)
{
    if (!hex || !out)
        return DSPY_EINVAL;
    for (int i = 0; i < 16; i++) {
        int hi = dspy__hexval(hex[2 * i]), lo = hi < 0 ? -1 : dspy__hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return DSPY_EINVAL;
        out->bytes[i] = (uint8_t)(hi << 4 | lo);
    }
    return hex[32] == '\0' ? DSPY_OK : DSPY_EINVAL;
}

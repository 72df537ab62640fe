/* Reading chat completion responses (lm layer). A small strict scanner pulls out what the
 * client needs (choices[].message.content, finish_reason, model, usage) without building a
 * JSON tree: jansson takes ~15 us for a typical 300-byte body, the scanner well under one.
 * Anything the scanner does not handle plainly (a malformed body, a missing field, an odd
 * escape, duplicate keys, many choices) goes to the jansson reader, which gives the same
 * answer for every body both accept and the detailed error otherwise. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "base/ascii.h"
#include "base/buf.h"
#include "base/pyfmt.h"
#include "base/status.h"
#include "lm/lm_int.h"

#define FAST_MAX_CHOICES 8
#define FAST_MAX_DEPTH 64

/* A string value: either a span of the body (no escapes) or a span of the scratch area. */
struct span {
    size_t off;
    size_t len;
    bool decoded; /* off is into scratch, not the body */
    bool present;
    bool null; /* present as JSON null */
};

struct scan {
    const char *s;
    size_t n;
    size_t i;
    char *scratch;      /* decoded strings: the body's length is enough for all of them */
    size_t scratch_len; /* bytes of it in use */
};

struct fast_result {
    size_t nchoices;
    struct span content[FAST_MAX_CHOICES];
    struct span finish[FAST_MAX_CHOICES];
    struct span model;
    struct dspy_lm_usage usage;
};

static inline void ws(struct scan *sc)
{
    while (sc->i < sc->n && (sc->s[sc->i] == ' ' || sc->s[sc->i] == '\n' || sc->s[sc->i] == '\r' ||
                             sc->s[sc->i] == '\t'))
        sc->i++;
}

static inline bool eat(struct scan *sc, char c)
{
    if (sc->i < sc->n && sc->s[sc->i] == c) { /* compact bodies: no whitespace to skip */
        sc->i++;
        return true;
    }
    ws(sc);
    if (sc->i < sc->n && sc->s[sc->i] == c) {
        sc->i++;
        return true;
    }
    return false;
}

static bool hex4(struct scan *sc, unsigned *out)
{
    if (sc->n - sc->i < 4)
        return false;
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        int h = dspy__hexval(sc->s[sc->i + (size_t)k]);
        if (h < 0)
            return false;
        v = v << 4 | (unsigned)h;
    }
    sc->i += 4;
    *out = v;
    return true;
}

static char *put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | cp >> 6);
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | cp >> 12);
        *o++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | cp >> 18);
        *o++ = (char)(0x80 | (cp >> 12 & 0x3F));
        *o++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

/* What each one-letter escape stands for; 0 where the letter is not one. */
static const char short_escape[256] = {
    ['"'] = '"',  ['\\'] = '\\', ['/'] = '/',  ['b'] = '\b',
    ['f'] = '\f', ['n'] = '\n',  ['r'] = '\r', ['t'] = '\t',
};

/* Decode the escapes of body[start, end) (a string's inside) into scratch, written in
 * place: the decoded text is never longer than its escaped form (\uXXXX gives at most 3
 * bytes, a surrogate pair 4 for 12). NUL (\u0000) and lone surrogates are left to jansson,
 * which refuses them. */
static bool decode(struct scan *sc, size_t start, size_t end, struct span *out)
{
    struct scan in = { sc->s, end, start, NULL, 0 };
    out->off = sc->scratch_len;
    out->decoded = true;
    char *o = sc->scratch + sc->scratch_len;
    while (in.i < end) {
        const char *bs = memchr(in.s + in.i, '\\', end - in.i);
        size_t run = bs ? (size_t)(bs - in.s) - in.i : end - in.i;
        memcpy(o, in.s + in.i, run);
        o += run;
        in.i += run;
        if (in.i >= end)
            break;
        char e = in.s[++in.i];
        in.i++;
        char k = short_escape[(unsigned char)e];
        if (k) {
            *o++ = k;
            continue;
        }
        unsigned cp, lo;
        if (e != 'u' || !hex4(&in, &cp) || cp == 0 || (cp >= 0xDC00 && cp <= 0xDFFF))
            return false;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (in.i + 1 >= end || in.s[in.i] != '\\' || in.s[in.i + 1] != 'u')
                return false;
            in.i += 2;
            if (!hex4(&in, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        o = put_utf8(o, cp);
    }
    sc->scratch_len = (size_t)(o - sc->scratch);
    out->len = sc->scratch_len - out->off;
    return true;
}

/* Bytes that need no attention inside a string: not '"', '\\', a control or >= 0x80. */
static const bool plain[256] = {
#define R8(x) x, x, x, x, x, x, x, x
    R8(0), R8(0), R8(0), R8(0),                    /* 0x00-0x1f: controls */
    1,     1,     0,     1,     1, 1, 1, 1, R8(1), /* 0x20-0x2f: '"' is 0x22 */
    R8(1), R8(1), R8(1), R8(1),                    /* 0x30-0x4f */
    R8(1), 1,     1,     1,     1, 0, 1, 1, 1,     /* 0x50-0x5f: '\\' is 0x5c */
    R8(1), R8(1), R8(1), R8(1),                    /* 0x60-0x7f; 0x80-0xff stay 0 */
#undef R8
};

/* The high bit of each of the 8 bytes of `w` that is '"', '\\', a control or >= 0x80, and
 * perhaps of bytes after the first such (the classic has-zero-byte tricks, exact for
 * detection); 0 when none is. */
static inline uint64_t word_special(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t quote = w ^ (ones * '"'), backslash = w ^ (ones * '\\');
    uint64_t special = ((w - ones * 0x20) & ~w) | ((quote - ones) & ~quote) |
                       ((backslash - ones) & ~backslash) | w;
    return special & highs;
}

/* A string; `out` may be NULL to skip it. */
static bool string(struct scan *sc, struct span *out)
{
    if (!eat(sc, '"'))
        return false;
    size_t start = sc->i;
    bool escaped = false, high = false;
    for (;;) {
        /* Eight plain bytes at a time, then one by one up to the next byte that matters. */
        uint64_t w, sp = 0;
        while (sc->n - sc->i >= 8 && (memcpy(&w, sc->s + sc->i, 8), !(sp = word_special(w))))
            sc->i += 8;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        /* The lowest flag is exact (borrows only run towards later bytes): go straight to
         * the first byte that matters. */
        if (sp)
            sc->i += (size_t)__builtin_ctzll(sp) >> 3;
#endif
        while (sc->i < sc->n && plain[(unsigned char)sc->s[sc->i]])
            sc->i++;
        if (sc->i >= sc->n)
            return false;
        unsigned char c = (unsigned char)sc->s[sc->i];
        if (c == '"')
            break;
        if (c < 0x20)
            return false;
        if (c == '\\') {
            if (sc->n - sc->i < 2)
                return false;
            escaped = true;
            sc->i += 2; /* the escaped byte is checked by decode() */
        } else {
            high = true;
            sc->i++;
        }
    }
    size_t end = sc->i++;
    if (high && !dspy__utf8_valid(sc->s + start, end - start))
        return false;
    if (!out) {
        /* Skipped strings still get their escapes checked, as jansson checks them. */
        struct span tmp;
        size_t mark = sc->scratch_len;
        bool ok = !escaped || decode(sc, start, end, &tmp);
        sc->scratch_len = mark;
        return ok;
    }
    out->present = true;
    if (!escaped) {
        out->off = start;
        out->len = end - start;
        out->decoded = false;
        return true;
    }
    return decode(sc, start, end, out);
}

static inline bool literal_n(struct scan *sc, const char *word, size_t n)
{
    ws(sc);
    if (sc->n - sc->i < n || memcmp(sc->s + sc->i, word, n))
        return false;
    sc->i += n;
    return true;
}
#define literal(sc, word) literal_n((sc), (word), sizeof(word) - 1)

/* A JSON number, refused where jansson refuses it too (integers beyond long long, reals
 * that overflow); *is_int says whether it was written as an integer. */
static bool number(struct scan *sc, bool *is_int, long *integer)
{
    char tmp[64];
    ws(sc);
    size_t start = sc->i;
    if (sc->i < sc->n && sc->s[sc->i] == '-')
        sc->i++;
    size_t d = sc->i;
    while (sc->i < sc->n && sc->s[sc->i] >= '0' && sc->s[sc->i] <= '9')
        sc->i++;
    if (sc->i == d || (sc->i - d > 1 && sc->s[d] == '0'))
        return false;
    *is_int = true;
    if (sc->i < sc->n && sc->s[sc->i] == '.') {
        *is_int = false;
        size_t f = ++sc->i;
        while (sc->i < sc->n && sc->s[sc->i] >= '0' && sc->s[sc->i] <= '9')
            sc->i++;
        if (sc->i == f)
            return false;
    }
    if (sc->i < sc->n && (sc->s[sc->i] == 'e' || sc->s[sc->i] == 'E')) {
        *is_int = false;
        sc->i++;
        if (sc->i < sc->n && (sc->s[sc->i] == '+' || sc->s[sc->i] == '-'))
            sc->i++;
        size_t e = sc->i;
        while (sc->i < sc->n && sc->s[sc->i] >= '0' && sc->s[sc->i] <= '9')
            sc->i++;
        if (sc->i == e)
            return false;
    }
    size_t len = sc->i - start;
    if (*is_int && sc->i - d <= 18) { /* cannot overflow: no strtoll needed */
        long v = 0;
        for (size_t k = d; k < sc->i; k++)
            v = v * 10 + (sc->s[k] - '0');
        *integer = sc->s[start] == '-' ? -v : v;
        return true;
    }
    if (len >= sizeof(tmp))
        return false;
    memcpy(tmp, sc->s + start, len);
    tmp[len] = '\0';
    errno = 0;
    if (*is_int) {
        long long v = strtoll(tmp, NULL, 10);
        if (errno || v > LONG_MAX || v < LONG_MIN)
            return false;
        *integer = (long)v;
        return true;
    }
    return !isinf(strtod(tmp, NULL));
}

static bool skip_value(struct scan *sc, int depth);

static bool skip_members(struct scan *sc, int depth, char close)
{
    if (eat(sc, close))
        return true;
    do {
        if (close == '}' && (!string(sc, NULL) || !eat(sc, ':')))
            return false;
        if (!skip_value(sc, depth + 1))
            return false;
    } while (eat(sc, ','));
    return eat(sc, close);
}

static bool skip_value(struct scan *sc, int depth)
{
    bool is_int;
    long v;
    if (depth > FAST_MAX_DEPTH)
        return false;
    ws(sc);
    if (sc->i >= sc->n)
        return false;
    switch (sc->s[sc->i]) {
    case '{': sc->i++; return skip_members(sc, depth, '}');
    case '[': sc->i++; return skip_members(sc, depth, ']');
    case '"': return string(sc, NULL);
    case 't': return literal(sc, "true");
    case 'f': return literal(sc, "false");
    case 'n': return literal(sc, "null");
    default: return number(sc, &is_int, &v);
    }
}

/* Object member loop: calls on_key for each key; on_key reads the value. */
typedef bool (*member_fn)(struct scan *sc, const struct span *key, void *ctx);

static inline bool key_is_n(const struct scan *sc, const struct span *key, const char *name,
                            size_t n)
{
    return !key->decoded && key->len == n && !memcmp(sc->s + key->off, name, n);
}
#define key_is(sc, key, name) key_is_n((sc), (key), (name), sizeof(name) - 1)

static bool members(struct scan *sc, member_fn fn, void *ctx)
{
    if (!eat(sc, '{'))
        return false;
    if (eat(sc, '}'))
        return true;
    do {
        struct span key = { 0 };
        /* An escaped key may spell a field we look for: left to jansson. */
        if (!string(sc, &key) || key.decoded || !eat(sc, ':') || !fn(sc, &key, ctx))
            return false;
    } while (eat(sc, ','));
    return eat(sc, '}');
}

/* A string or null into `out`; a key seen twice is jansson's to settle. */
static bool string_or_null(struct scan *sc, struct span *out)
{
    if (out->present)
        return false;
    ws(sc);
    if (literal(sc, "null")) {
        out->present = out->null = true;
        return true;
    }
    return string(sc, out);
}

struct choice_ctx {
    struct span *content;
    struct span *finish;
    bool message_seen;
};

static bool message_member(struct scan *sc, const struct span *key, void *ctx)
{
    struct choice_ctx *c = ctx;
    return key_is(sc, key, "content") ? string_or_null(sc, c->content) : skip_value(sc, 2);
}

static bool choice_member(struct scan *sc, const struct span *key, void *ctx)
{
    struct choice_ctx *c = ctx;
    if (key_is(sc, key, "message")) {
        if (c->message_seen)
            return false;
        c->message_seen = true;
        return members(sc, message_member, c);
    }
    if (key_is(sc, key, "finish_reason"))
        return string_or_null(sc, c->finish);
    return skip_value(sc, 2);
}

static bool usage_member(struct scan *sc, const struct span *key, void *ctx)
{
    struct dspy_lm_usage *u = ctx;
    long *slot = key_is(sc, key, "prompt_tokens")       ? &u->prompt_tokens
                 : key_is(sc, key, "completion_tokens") ? &u->completion_tokens
                 : key_is(sc, key, "total_tokens")      ? &u->total_tokens
                                                        : NULL;
    bool is_int;
    if (!slot || *slot != -1) /* -1: not seen yet; a key seen twice is jansson's */
        return slot ? false : skip_value(sc, 2);
    if (literal(sc, "null")) {
        *slot = -2;
        return true;
    }
    return number(sc, &is_int, slot) && is_int && *slot >= 0;
}

struct root_ctx {
    struct fast_result *r;
    bool choices_seen, model_seen, usage_seen;
};

static bool root_member(struct scan *sc, const struct span *key, void *ctx)
{
    struct root_ctx *c = ctx;
    struct fast_result *r = c->r;
    if (key_is(sc, key, "choices")) {
        if (c->choices_seen || !eat(sc, '['))
            return false;
        c->choices_seen = true;
        if (eat(sc, ']'))
            return false; /* no choices: an error, worded by the jansson reader */
        do {
            if (r->nchoices == FAST_MAX_CHOICES)
                return false;
            struct choice_ctx cc = { &r->content[r->nchoices], &r->finish[r->nchoices], false };
            if (!members(sc, choice_member, &cc) || !cc.message_seen || !cc.content->present)
                return false;
            r->nchoices++;
        } while (eat(sc, ','));
        return eat(sc, ']');
    }
    if (key_is(sc, key, "model")) {
        if (c->model_seen)
            return false;
        c->model_seen = true;
        return string_or_null(sc, &r->model);
    }
    if (key_is(sc, key, "usage")) {
        if (c->usage_seen)
            return false;
        c->usage_seen = true;
        if (literal(sc, "null"))
            return true;
        r->usage.prompt_tokens = r->usage.completion_tokens = r->usage.total_tokens = -1;
        if (!members(sc, usage_member, &r->usage))
            return false;
        long *slots[3] = { &r->usage.prompt_tokens, &r->usage.completion_tokens,
                           &r->usage.total_tokens };
        for (int k = 0; k < 3; k++)
            if (*slots[k] < 0)
                *slots[k] = 0;
        return true;
    }
    return skip_value(sc, 1);
}

static const char *span_ptr(const struct scan *sc, const struct span *sp)
{
    return sp->decoded ? sc->scratch + sp->off : sc->s + sp->off;
}

/* Texts, finish reasons and the model name live in one block hung off resp->texts, which
 * dspy_lm_response_release() frees. */
static dspy_status fill_fast(const struct scan *sc, const struct fast_result *r,
                             struct dspy_lm_response *resp)
{
    size_t n = r->nchoices;
    bool has_model = r->model.present && !r->model.null;
    size_t bytes = 2 * n * sizeof(char *) + (has_model ? r->model.len + 1 : 0);
    for (size_t i = 0; i < n; i++)
        bytes += r->content[i].len + 1 + r->finish[i].len + 1;
    char **block = dspy_malloc(bytes);
    if (!block)
        return DSPY_ENOMEM;
    char *p = (char *)(block + 2 * n);
    resp->n = n;
    resp->texts = block;
    resp->finish_reasons = block + n;
    for (size_t i = 0; i < n; i++) {
        const struct span *c = &r->content[i], *f = &r->finish[i];
        resp->texts[i] = p;
        memcpy(p, span_ptr(sc, c), c->len);
        p[c->len] = '\0';
        p += c->len + 1;
        resp->finish_reasons[i] = NULL;
        if (f->present && !f->null) {
            resp->finish_reasons[i] = p;
            memcpy(p, span_ptr(sc, f), f->len);
            p[f->len] = '\0';
            p += f->len + 1;
        }
    }
    resp->model = NULL;
    if (has_model) {
        resp->model = p;
        memcpy(p, span_ptr(sc, &r->model), r->model.len);
        p[r->model.len] = '\0';
    }
    resp->usage = r->usage;
    return DSPY_OK;
}

/* DSPY_OK, DSPY_ENOMEM, or DSPY_EUNSUPPORTED when the jansson reader must decide. */
static dspy_status parse_fast(const char *body, size_t len, struct dspy_lm_response *resp)
{
    char stack[4096]; /* the scratch area of a usual body: no allocation */
    struct fast_result r;
    struct scan sc = { body, len, 0, stack, 0 };
    struct root_ctx ctx = { &r, false, false, false };
    dspy_status rc = DSPY_EUNSUPPORTED;
    memset(&r, 0, sizeof(r));
    if (len > sizeof(stack) && !(sc.scratch = dspy_malloc(len)))
        return DSPY_ENOMEM;
    if (members(&sc, root_member, &ctx) && ctx.choices_seen) {
        ws(&sc);
        if (sc.i == sc.n)
            rc = fill_fast(&sc, &r, resp);
    }
    if (sc.scratch != stack)
        dspy_free(sc.scratch);
    return rc;
}

/* ---- the jansson reader: exact errors ----------------------------------------------------- */

static dspy_status bad(struct dspy_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static dspy_status bad(struct dspy_error *err, const char *fmt, ...)
{
    char text[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    return dspy__err(err, DSPY_ELM_BAD_RESPONSE, "%s", text);
}

static bool read_usage(const json_t *u, struct dspy_lm_usage *usage)
{
    static const char *const names[3] = { "prompt_tokens", "completion_tokens", "total_tokens" };
    long *slots[3] = { &usage->prompt_tokens, &usage->completion_tokens, &usage->total_tokens };
    memset(usage, 0, sizeof(*usage));
    if (!u || json_is_null(u))
        return true;
    if (!json_is_object(u))
        return false;
    for (int i = 0; i < 3; i++) {
        json_t *v = json_object_get(u, names[i]);
        if (v && !json_is_null(v) && (!json_is_integer(v) || json_integer_value(v) < 0))
            return false;
        *slots[i] = v ? (long)json_integer_value(v) : 0;
    }
    return true;
}

static dspy_status check_tree(const json_t *root, struct dspy_error *err)
{
    const json_t *choices = json_object_get(root, "choices");
    const json_t *model = json_object_get(root, "model");
    if (!json_is_object(root))
        return bad(err, "LM response is not a JSON object");
    if (!choices)
        return bad(err, "LM response has no \"choices\"");
    if (!json_is_array(choices) || !json_array_size(choices))
        return bad(err, "LM response has an empty or malformed \"choices\"");
    if (model && !json_is_null(model) && !json_is_string(model))
        return bad(err, "LM response field \"model\" is not a string");
    for (size_t i = 0; i < json_array_size(choices); i++) {
        const json_t *ch = json_array_get(choices, i);
        const json_t *msg = json_object_get(ch, "message");
        const json_t *content = json_object_get(msg, "content");
        const json_t *fr = json_object_get(ch, "finish_reason");
        if (!json_is_object(ch) || !json_is_object(msg))
            return bad(err, "LM response choice %zu has no \"message\" object", i);
        if (!content)
            return bad(err, "LM response message %zu has no \"content\"", i);
        if (!json_is_null(content) && !json_is_string(content))
            return bad(err, "LM response message %zu has a non-string \"content\"", i);
        if (fr && !json_is_null(fr) && !json_is_string(fr))
            return bad(err, "LM response field \"finish_reason\" of choice %zu is not a string", i);
    }
    return DSPY_OK;
}

dspy_status dspy__lm_parse_response_tree(const char *body, size_t len,
                                         struct dspy_lm_response *resp, struct dspy_error *err)
{
    json_error_t je;
    memset(resp, 0, sizeof(*resp));
    json_t *root = json_loadb(body, len, 0, &je);
    if (!root)
        return bad(err, "LM response is not JSON: %s (line %d, column %d)", je.text, je.line,
                   je.column);
    dspy_status rc = check_tree(root, err);
    if (!rc && !read_usage(json_object_get(root, "usage"), &resp->usage))
        rc = bad(err, "LM response field \"usage\" is malformed");
    if (rc)
        goto free_root;

    const json_t *choices = json_object_get(root, "choices");
    const json_t *model = json_object_get(root, "model");
    size_t n = json_array_size(choices);
    size_t bytes = 2 * n * sizeof(char *);
    if (json_is_string(model))
        bytes += json_string_length(model) + 1;
    for (size_t i = 0; i < n; i++) {
        const json_t *ch = json_array_get(choices, i);
        const json_t *fr = json_object_get(ch, "finish_reason");
        bytes += json_string_length(json_object_get(json_object_get(ch, "message"), "content")) +
                 1 + (json_is_string(fr) ? json_string_length(fr) + 1 : 0);
    }
    char **block = dspy_malloc(bytes);
    if (!block) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory reading the LM response");
        goto free_root;
    }
    char *p = (char *)(block + 2 * n);
    resp->n = n;
    resp->texts = block;
    resp->finish_reasons = block + n;
    for (size_t i = 0; i < n; i++) {
        const json_t *ch = json_array_get(choices, i);
        const json_t *content = json_object_get(json_object_get(ch, "message"), "content");
        const json_t *fr = json_object_get(ch, "finish_reason");
        size_t l = json_string_length(content); /* 0 for null */
        resp->texts[i] = p;
        memcpy(p, l ? json_string_value(content) : "", l);
        p[l] = '\0';
        p += l + 1;
        resp->finish_reasons[i] = NULL;
        if (json_is_string(fr)) {
            l = json_string_length(fr);
            resp->finish_reasons[i] = memcpy(p, json_string_value(fr), l + 1);
            p += l + 1;
        }
    }
    resp->model = NULL;
    if (json_is_string(model))
        resp->model = memcpy(p, json_string_value(model), json_string_length(model) + 1);

free_root:
    if (rc)
        memset(resp, 0, sizeof(*resp));
    json_decref(root);
    return rc;
}

dspy_status dspy__lm_parse_response_fast(const char *body, size_t len,
                                         struct dspy_lm_response *resp)
{
    return parse_fast(body, len, resp);
}

dspy_status dspy__lm_parse_response(const char *body, size_t len, struct dspy_lm_response *resp,
                                    struct dspy_error *err)
{
    dspy_status rc = parse_fast(body, len, resp);
    if (rc == DSPY_ENOMEM)
        return dspy__err(err, rc, "out of memory reading the LM response");
    if (rc == DSPY_OK)
        return rc;
    return dspy__lm_parse_response_tree(body, len, resp, err);
}

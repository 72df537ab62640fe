/* Python literals (program layer): ast.literal_eval for the literal subset DSPy's
 * parse_value falls back to when json_repair finds nothing (numbers, strings, True/False/
 * None, lists, tuples, sets, dicts), read into JSON values. Bounded in depth. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/pyfmt.h"
#include "program/adapter_int.h"

#define MAX_DEPTH DSPY__READER_MAX_DEPTH

/* Short local names for the shared reader helpers (adapter_int.h). */
static inline int at(const struct dspy__reader *r, size_t k)
{
    return dspy__reader_at(r, k);
}
static inline json_t *keep(struct dspy__reader *r, json_t *v)
{
    return dspy__reader_keep(r, v);
}
static inline bool put(struct dspy__reader *r, json_t *o, const char *k, size_t n, json_t *v)
{
    return dspy__reader_set(r, o, k, n, v);
}
static inline bool append(struct dspy__reader *r, json_t *a, json_t *v)
{
    return dspy__reader_append(r, a, v);
}

static void py_ws(struct dspy__reader *r)
{
    while (r->pos < r->len) {
        char c = r->s[r->pos];
        if (c == ' ' || c == '\t' || c == '\f' || (r->nest && (c == '\n' || c == '\r'))) {
            r->pos++;
        } else if (c == '\\' && at(r, 1) == '\n') {
            r->pos += 2;
        } else if (c == '#') {
            while (r->pos < r->len && r->s[r->pos] != '\n')
                r->pos++;
        } else {
            break;
        }
    }
}

static json_t *py_atom(struct dspy__reader *r);

static json_t *py_number(struct dspy__reader *r, bool negative)
{
    const char *p = r->s + r->pos;
    size_t n = 0, left = r->len - r->pos;
    char buf[128];
    size_t k = 0;
    int base = 10;
    bool is_float = false;

    if (negative)
        buf[k++] = '-';
    if (left > 1 && p[0] == '0' && strchr("xXoObB", p[1]) && p[1]) {
        base = strchr("xX", p[1]) ? 16 : strchr("oO", p[1]) ? 8 : 2;
        n = 2;
    }
    for (; n < left && k + 1 < sizeof(buf); n++) {
        char c = p[n];
        bool digit = base == 16 ? strchr("0123456789abcdefABCDEF", c) && c
                                : c >= '0' && c < (char)('0' + (base < 10 ? base : 10));
        if (digit) {
            buf[k++] = c;
        } else if (c == '_' && n + 1 < left && p[n + 1] != '_' && n > 0 && p[n - 1] != '_') {
            continue;
        } else if (base == 10 && (c == '.' || c == 'e' || c == 'E')) {
            is_float = true;
            buf[k++] = c;
            if ((c == 'e' || c == 'E') && n + 1 < left && (p[n + 1] == '+' || p[n + 1] == '-'))
                buf[k++] = p[++n];
        } else {
            break;
        }
    }
    buf[k] = '\0';
    if (n < left &&
        (p[n] == 'j' || p[n] == 'J' || p[n] == '_' || p[n] == '.' || (p[n] >= '0' && p[n] <= '9') ||
         (p[n] >= 'a' && p[n] <= 'z') || (p[n] >= 'A' && p[n] <= 'Z')))
        return NULL; /* complex numbers and malformed literals */
    r->pos += n;
    char *end;
    if (!is_float) {
        const char *digits = buf + (negative ? 1 : 0);
        if (!*digits || (base == 10 && digits[0] == '0' && strspn(digits, "0") != strlen(digits)))
            return NULL;
        errno = 0;
        long long v = strtoll(buf, &end, base);
        if (*end)
            return NULL;
        if (errno != ERANGE)
            return keep(r, json_integer(v));
        if (base != 10)
            return NULL;
    }
    double d = strtod(buf, &end);
    if (*end || !isfinite(d))
        return NULL;
    return keep(r, json_real(d));
}

static bool py_string_piece(struct dspy__reader *r, struct dspy_buf *b)
{
    bool raw = false;
    while (at(r, 0) > 0 && strchr("rRuUbB", at(r, 0))) {
        raw = raw || at(r, 0) == 'r' || at(r, 0) == 'R';
        r->pos++;
    }
    int q = at(r, 0);
    bool triple = at(r, 1) == q && at(r, 2) == q;
    dspy_status rc = DSPY_OK;
    r->pos += triple ? 3 : 1;
    for (;;) {
        int c = at(r, 0);
        if (c < 0 || (!triple && c == '\n'))
            return false;
        if (c == q && (!triple || (at(r, 1) == q && at(r, 2) == q))) {
            r->pos += triple ? 3 : 1;
            return true;
        }
        if (c == '\\' && !raw) {
            int e = at(r, 1);
            const char *m = e > 0 ? strchr("\\'\"abfnrtv\n", e) : NULL;
            static const char out[] = "\\'\"\a\b\f\n\r\t\v";
            if (m && e == '\n') {
                r->pos += 2;
            } else if (m) {
                rc = dspy__buf_addc(b, out[m - "\\'\"abfnrtv\n"]);
                r->pos += 2;
            } else if (e == 'x' || e == 'u' || e == 'U' || (e >= '0' && e <= '7')) {
                uint32_t cp = 0;
                size_t k = 1, ndig = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 3;
                if (e >= '0' && e <= '7') {
                    for (k = 1; k <= ndig && at(r, k) >= '0' && at(r, k) <= '7'; k++)
                        cp = cp * 8 + (uint32_t)(at(r, k) - '0');
                } else {
                    for (k = 2; k < 2 + ndig; k++) {
                        int c2 = at(r, k);
                        const char *h = c2 > 0 ? strchr("0123456789abcdef", c2 | 0x20) : NULL;
                        if (!h)
                            return false;
                        cp = cp * 16 + (uint32_t)(h - "0123456789abcdef");
                    }
                }
                if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                    return false; /* Python can hold lone surrogates; JSON text cannot */
                rc = dspy__utf8_add(b, cp);
                r->pos += k;
            } else if (e == 'N') {
                return false; /* named escapes: leave the text to the raw-string fallback */
            } else {
                rc = dspy__buf_addc(b, '\\');
                r->pos++;
            }
        } else if (c == '\\' && raw && (at(r, 1) == q || at(r, 1) == '\\')) {
            rc = dspy__buf_add(b, r->s + r->pos, 2);
            r->pos += 2;
        } else {
            rc = dspy__buf_addc(b, (char)c);
            r->pos++;
        }
        if (rc) {
            r->oom = true;
            return false;
        }
    }
}

static bool starts_string(const struct dspy__reader *r)
{
    size_t k = 0;
    while (k < 2 && at(r, k) > 0 && strchr("rRuUbB", at(r, k)))
        k++;
    return at(r, k) == '\'' || at(r, k) == '"';
}

static json_t *py_string(struct dspy__reader *r)
{
    struct dspy_buf b;
    json_t *v = NULL;
    dspy__buf_init(&b, 0);
    do {
        if (!py_string_piece(r, &b))
            goto out;
        py_ws(r);
    } while (starts_string(r));
    if (dspy__buf_add(&b, "", 0))
        r->oom = true;
    else
        v = keep(r, json_stringn(b.ptr, b.len));
out:
    dspy__buf_release(&b);
    return v;
}

/* A dict key as a JSON key: Python's str() of the key. */
static json_t *key_text(struct dspy__reader *r, json_t *k)
{
    struct dspy_buf b;
    json_t *s = NULL;
    if (json_is_string(k))
        return json_incref(k);
    if (json_is_array(k) || json_is_object(k))
        return NULL; /* unhashable */
    dspy__buf_init(&b, 0);
    if (dspy__py_str(&b, k))
        r->oom = true;
    else
        s = keep(r, json_stringn(b.ptr, b.len));
    dspy__buf_release(&b);
    return s;
}

/* Items up to `close`; braces may hold a dict or a set; parentheses hold a tuple, or
 * one parenthesized value when there is no comma. */
static json_t *py_items(struct dspy__reader *r, char close, bool braces)
{
    json_t *c = NULL;
    bool comma = false;
    r->pos++;
    r->nest++;
    if (++r->depth > MAX_DEPTH)
        goto fail;
    for (;;) {
        py_ws(r);
        if (at(r, 0) == close) {
            r->pos++;
            break;
        }
        json_t *k = py_atom(r);
        if (!k)
            goto fail;
        py_ws(r);
        bool is_dict = braces && at(r, 0) == ':';
        if (!c)
            c = keep(r, is_dict ? json_object() : json_array());
        if (!c || is_dict != json_is_object(c)) {
            json_decref(k);
            goto fail;
        }
        if (is_dict) {
            r->pos++;
            json_t *v = py_atom(r), *ks = key_text(r, k);
            json_decref(k);
            bool ok = ks && put(r, c, json_string_value(ks), json_string_length(ks), v);
            json_decref(ks);
            if (!ok) {
                if (!ks)
                    json_decref(v);
                goto fail;
            }
        } else if (!append(r, c, k)) {
            goto fail;
        }
        py_ws(r);
        if (at(r, 0) == ',') {
            r->pos++;
            comma = true;
            continue;
        }
        if (at(r, 0) != close)
            goto fail;
        r->pos++;
        break;
    }
    r->nest--;
    r->depth--;
    if (!c)
        return keep(r, braces ? json_object() : json_array());
    if (close == ')' && !comma && json_array_size(c) == 1) {
        json_t *only = json_incref(json_array_get(c, 0));
        json_decref(c);
        return only;
    }
    return c;
fail:
    r->nest--;
    r->depth--;
    json_decref(c);
    return NULL;
}

static json_t *py_atom(struct dspy__reader *r)
{
    const char *p;
    size_t left;
    py_ws(r);
    p = r->s + r->pos;
    left = r->len - r->pos;
    int c = at(r, 0);
    if (c == '-' || c == '+') {
        r->pos++;
        py_ws(r);
        c = at(r, 0);
        if (!((c >= '0' && c <= '9') || c == '.'))
            return NULL;
        return py_number(r, p[0] == '-');
    }
    if ((c >= '0' && c <= '9') || (c == '.' && at(r, 1) >= '0' && at(r, 1) <= '9'))
        return py_number(r, false);
    if (starts_string(r))
        return py_string(r);
    if (c == '[')
        return py_items(r, ']', false);
    if (c == '{')
        return py_items(r, '}', true);
    if (c == '(')
        return py_items(r, ')', false);
    static const char *const words[] = { "True", "False", "None" };
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(words[i]);
        if (left >= n && !memcmp(p, words[i], n) &&
            (left == n || !(p[n] == '_' || (p[n] >= '0' && p[n] <= '9') ||
                            ((p[n] | 0x20) >= 'a' && (p[n] | 0x20) <= 'z')))) {
            r->pos += n;
            return i == 0 ? json_true() : i == 1 ? json_false() : json_null();
        }
    }
    if (left >= 5 && !memcmp(p, "set()", 5)) {
        r->pos += 5;
        return keep(r, json_array());
    }
    return NULL;
}

json_t *dspy__py_literal_eval(const char *s, size_t len, bool *oom)
{
    struct dspy__reader r = { s, len, 0, 0, 0, false, 0 };
    json_t *v = NULL, *tuple = NULL;

    /* Blank and comment lines may precede the expression. */
    for (;;) {
        py_ws(&r);
        if (at(&r, 0) == '\n' || at(&r, 0) == '\r')
            r.pos++;
        else
            break;
    }
    if (!(v = py_atom(&r)))
        goto fail;
    py_ws(&r);
    if (at(&r, 0) == ',') {
        /* a bare tuple at the top level */
        tuple = keep(&r, json_array());
        bool ok = tuple && append(&r, tuple, v);
        if (!tuple)
            json_decref(v);
        v = NULL;
        if (!ok)
            goto fail;
        while (at(&r, 0) == ',') {
            r.pos++;
            py_ws(&r);
            if (r.pos >= len || at(&r, 0) == '\n' || at(&r, 0) == '\r')
                break;
            if (!append(&r, tuple, py_atom(&r)))
                goto fail;
            py_ws(&r);
        }
        v = tuple;
        tuple = NULL;
    }
    /* Only trailing newlines, blanks and comments may follow. */
    for (;;) {
        py_ws(&r);
        if (at(&r, 0) == '\n' || at(&r, 0) == '\r')
            r.pos++;
        else
            break;
    }
    if (r.pos == len && !r.oom)
        return v;
fail:
    json_decref(v);
    json_decref(tuple);
    *oom = r.oom;
    return NULL;
}

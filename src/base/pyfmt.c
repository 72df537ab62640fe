/* Python-compatible text helpers (base layer): CPython's float repr, str()/repr() of
 * JSON-shaped values, json.dumps layouts, and the Unicode str methods DSPy relies on. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fmtfloat.h"
#include "base/pyfmt.h"

/* ---- UTF-8 ---- */

size_t dspy__utf8_decode(const char *s, size_t len, size_t i, uint32_t *cp)
{
    const unsigned char *p = (const unsigned char *)s + i;
    size_t left = len - i;
    unsigned char c = p[0];
    uint32_t v, min;
    size_t n;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        v = c & 0x1F;
        min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        v = c & 0x0F;
        min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        v = c & 0x07;
        min = 0x10000;
    } else {
        goto bad;
    }
    if (left < n)
        goto bad;
    for (size_t k = 1; k < n; k++) {
        if ((p[k] & 0xC0) != 0x80)
            goto bad;
        v = (v << 6) | (p[k] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        goto bad;
    *cp = v;
    return n;
bad:
    *cp = 0xFFFD;
    return 1;
}

dspy_status dspy__utf8_add(struct dspy_buf *b, uint32_t cp)
{
    char u[4];
    size_t n = 0;
    if (cp < 0x80) {
        u[n++] = (char)cp;
    } else if (cp < 0x800) {
        u[n++] = (char)(0xC0 | (cp >> 6));
        u[n++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        u[n++] = (char)(0xE0 | (cp >> 12));
        u[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[n++] = (char)(0x80 | (cp & 0x3F));
    } else {
        u[n++] = (char)(0xF0 | (cp >> 18));
        u[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[n++] = (char)(0x80 | (cp & 0x3F));
    }
    return dspy__buf_add(b, u, n);
}

/* Bytes from `i` on that are ASCII, eight at a time then one by one: where the next
 * byte >= 0x80 is (or `len`). */
static size_t skip_ascii(const char *s, size_t len, size_t i)
{
    uint64_t w;
    while (len - i >= 8 && (memcpy(&w, s + i, 8), !(w & 0x8080808080808080ULL)))
        i += 8;
    while (i < len && (unsigned char)s[i] < 0x80)
        i++;
    return i;
}

bool dspy__utf8_valid(const char *s, size_t len)
{
    size_t i = 0;
    while ((i = skip_ascii(s, len, i)) < len) {
        uint32_t cp;
        unsigned char c = (unsigned char)s[i];
        size_t n = dspy__utf8_decode(s, len, i, &cp);
        if (cp == 0xFFFD && n == 1 && c >= 0x80)
            return false;
        i += n;
    }
    return true;
}

dspy_status dspy__utf8_sanitize(struct dspy_buf *b, const char *s, size_t len)
{
    size_t i = 0, run = 0;
    dspy_status rc = DSPY_OK;
    while ((i = skip_ascii(s, len, i)) < len) {
        uint32_t cp;
        unsigned char c = (unsigned char)s[i];
        size_t n = dspy__utf8_decode(s, len, i, &cp);
        if (cp == 0xFFFD && n == 1 && c >= 0x80) {
            if ((rc = dspy__buf_add(b, s + run, i - run)))
                return rc;
            if ((rc = dspy__buf_add(b, "\xEF\xBF\xBD", 3)))
                return rc;
            run = i + 1;
        }
        i += n;
    }
    return dspy__buf_add(b, s + run, len - run);
}

/* Start of the code point that ends just before byte `end` (end > 0). */
static size_t utf8_prev(const char *s, size_t end)
{
    size_t i = end - 1;
    int back = 0;
    while (i > 0 && back < 3 && ((unsigned char)s[i] & 0xC0) == 0x80) {
        i--;
        back++;
    }
    return i;
}

/* ---- str methods ---- */

bool dspy__py_isspace(uint32_t cp)
{
    if (cp <= 0x20)
        return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20);
    if (cp < 0x85)
        return false;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

bool dspy__py_is_linebreak(uint32_t cp)
{
    return cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || cp == 0x1C || cp == 0x1D ||
           cp == 0x1E || cp == 0x85 || cp == 0x2028 || cp == 0x2029;
}

void dspy__py_strip(const char *s, size_t *start, size_t *end)
{
    size_t a = *start, z = *end;
    while (a < z) {
        uint32_t cp;
        unsigned char c = (unsigned char)s[a];
        if (c > 0x20 && c < 0x80) /* printable ASCII: not whitespace (the common case) */
            break;
        size_t n = dspy__utf8_decode(s, z, a, &cp);
        if (!dspy__py_isspace(cp))
            break;
        a += n;
    }
    while (z > a) {
        uint32_t cp;
        unsigned char c = (unsigned char)s[z - 1];
        if (c > 0x20 && c < 0x80)
            break;
        size_t p = utf8_prev(s, z);
        if (p < a)
            p = a;
        dspy__utf8_decode(s, z, p, &cp);
        if (!dspy__py_isspace(cp))
            break;
        z = p;
    }
    *start = a;
    *end = z;
}

bool dspy__py_next_line(const char *s, size_t len, size_t *pos, size_t *line_start,
                        size_t *line_end)
{
    size_t i = *pos;
    if (i >= len)
        return false;
    *line_start = i;
    while (i < len) {
        /* Printable ASCII is never a line break (Python's are all controls or non-ASCII). */
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t n = dspy__utf8_decode(s, len, i, &cp);
        if (dspy__py_is_linebreak(cp)) {
            *line_end = i;
            i += n;
            if (cp == '\r' && i < len && s[i] == '\n')
                i++;
            *pos = i;
            return true;
        }
        i += n;
    }
    *line_end = len;
    *pos = len;
    return true;
}

/* ---- str() and repr() ---- */

/* str.isprintable() for a code point, approximated without Unicode tables: controls,
 * separators other than ' ', format characters, surrogates, private use and
 * noncharacters are not printable. Only decides repr() escapes of rare characters. */
static bool py_isprintable(uint32_t cp)
{
    if (cp < 0x20 || cp == 0x7F)
        return false;
    if (cp < 0x80)
        return true;
    if (cp <= 0xA0 || cp == 0xAD)
        return false;
    if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200F) || (cp >= 0x2028 && cp <= 0x202F) ||
        (cp >= 0x205F && cp <= 0x206F) || cp == 0x3000 || cp == 0xFEFF ||
        (cp >= 0xFFF9 && cp <= 0xFFFB))
        return false;
    if ((cp >= 0x600 && cp <= 0x605) || cp == 0x61C || cp == 0x6DD || cp == 0x70F || cp == 0x180E)
        return false;
    if ((cp >= 0xD800 && cp <= 0xF8FF) || (cp >= 0xFDD0 && cp <= 0xFDEF))
        return false;
    if ((cp & 0xFFFE) == 0xFFFE || cp >= 0xF0000 || (cp >= 0xE0000 && cp <= 0xE0FFF))
        return false;
    return true;
}

dspy_status dspy__py_repr_str(struct dspy_buf *b, const char *s, size_t len)
{
    bool has_single = memchr(s, '\'', len) != NULL;
    bool has_double = memchr(s, '"', len) != NULL;
    char quote = has_single && !has_double ? '"' : '\'';
    dspy_status rc = dspy__buf_addc(b, quote);
    size_t i = 0;
    while (!rc && i < len) {
        uint32_t cp;
        size_t n = dspy__utf8_decode(s, len, i, &cp);
        if (cp == (uint32_t)quote || cp == '\\')
            rc = dspy__buf_addf(b, "\\%c", (char)cp);
        else if (cp == '\n')
            rc = dspy__buf_adds(b, "\\n");
        else if (cp == '\r')
            rc = dspy__buf_adds(b, "\\r");
        else if (cp == '\t')
            rc = dspy__buf_adds(b, "\\t");
        else if (py_isprintable(cp))
            rc = dspy__buf_add(b, s + i, n);
        else if (cp < 0x100)
            rc = dspy__buf_addf(b, "\\x%02x", (unsigned)cp);
        else if (cp < 0x10000)
            rc = dspy__buf_addf(b, "\\u%04x", (unsigned)cp);
        else
            rc = dspy__buf_addf(b, "\\U%08x", (unsigned)cp);
        i += n;
    }
    return rc ? rc : dspy__buf_addc(b, quote);
}

static dspy_status py_scalar(struct dspy_buf *b, const json_t *v)
{
    char num[DSPY__FLOAT_MAX];
    switch (json_typeof(v)) {
    case JSON_TRUE: return dspy__buf_adds(b, "True");
    case JSON_FALSE: return dspy__buf_adds(b, "False");
    case JSON_NULL: return dspy__buf_adds(b, "None");
    case JSON_INTEGER: return dspy__buf_addf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    case JSON_REAL:
        dspy__float_fmt(num, json_real_value(v), DSPY__FLOAT_PYTHON);
        return dspy__buf_adds(b, num);
    default: return DSPY_EINVAL;
    }
}

static dspy_status py_repr_depth(struct dspy_buf *b, const json_t *v, int depth)
{
    dspy_status rc = DSPY_OK;
    if (depth > 200)
        return DSPY_ETOOBIG;
    if (json_is_string(v))
        return dspy__py_repr_str(b, json_string_value(v), json_string_length(v));
    if (json_is_array(v)) {
        size_t i;
        json_t *item;
        rc = dspy__buf_addc(b, '[');
        json_array_foreach(v, i, item) {
            if (!rc && i)
                rc = dspy__buf_adds(b, ", ");
            if (!rc)
                rc = py_repr_depth(b, item, depth + 1);
        }
        return rc ? rc : dspy__buf_addc(b, ']');
    }
    if (json_is_object(v)) {
        const char *key;
        size_t klen;
        json_t *item;
        bool first = true;
        rc = dspy__buf_addc(b, '{');
        json_object_keylen_foreach((json_t *)v, key, klen, item) {
            if (!rc && !first)
                rc = dspy__buf_adds(b, ", ");
            first = false;
            if (!rc)
                rc = dspy__py_repr_str(b, key, klen);
            if (!rc)
                rc = dspy__buf_adds(b, ": ");
            if (!rc)
                rc = py_repr_depth(b, item, depth + 1);
        }
        return rc ? rc : dspy__buf_addc(b, '}');
    }
    return py_scalar(b, v);
}

dspy_status dspy__py_repr(struct dspy_buf *b, const json_t *v)
{
    return py_repr_depth(b, v, 0);
}

dspy_status dspy__py_str(struct dspy_buf *b, const json_t *v)
{
    if (json_is_string(v))
        return dspy__buf_add(b, json_string_value(v), json_string_length(v));
    return py_repr_depth(b, v, 0);
}

/* ---- json.dumps ---- */

struct key_ref {
    const char *key;
    size_t len;
    json_t *value;
};

static int key_cmp(const void *pa, const void *pb)
{
    const struct key_ref *a = pa, *b = pb;
    bool ta = a->len == 4 && !memcmp(a->key, "type", 4);
    bool tb = b->len == 4 && !memcmp(b->key, "type", 4);
    if (ta != tb)
        return ta ? -1 : 1;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->key, b->key, n);
    if (c)
        return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

static dspy_status newline_indent(struct dspy_buf *b, int indent, int level)
{
    dspy_status rc = dspy__buf_addc(b, '\n');
    for (int k = 0; !rc && k < indent * level; k++)
        rc = dspy__buf_addc(b, ' ');
    return rc;
}

static dspy_status dumps_depth(struct dspy_buf *b, const json_t *v, int indent, bool sorted,
                               int level);

static dspy_status dumps_object(struct dspy_buf *b, const json_t *v, int indent, bool sorted,
                                int level)
{
    size_t n = json_object_size(v), k = 0;
    const char *key;
    size_t klen;
    json_t *item;
    dspy_status rc = DSPY_OK;

    if (n == 0)
        return dspy__buf_adds(b, "{}");
    struct key_ref *keys = dspy_malloc(n * sizeof(*keys));
    if (!keys)
        return DSPY_ENOMEM;
    json_object_keylen_foreach((json_t *)v, key, klen, item) {
        keys[k].key = key;
        keys[k].len = klen;
        keys[k].value = item;
        k++;
    }
    if (sorted)
        qsort(keys, n, sizeof(*keys), key_cmp);
    rc = dspy__buf_addc(b, '{');
    for (k = 0; !rc && k < n; k++) {
        if (k)
            rc = dspy__buf_adds(b, indent < 0 ? ", " : ",");
        if (!rc && indent >= 0)
            rc = newline_indent(b, indent, level + 1);
        if (!rc)
            rc = dspy__buf_add_json_str(b, keys[k].key, keys[k].len);
        if (!rc)
            rc = dspy__buf_adds(b, ": ");
        if (!rc)
            rc = dumps_depth(b, keys[k].value, indent, sorted, level + 1);
    }
    if (!rc && indent >= 0)
        rc = newline_indent(b, indent, level);
    if (!rc)
        rc = dspy__buf_addc(b, '}');
    dspy_free(keys);
    return rc;
}

static dspy_status dumps_depth(struct dspy_buf *b, const json_t *v, int indent, bool sorted,
                               int level)
{
    dspy_status rc = DSPY_OK;
    if (level > 200)
        return DSPY_ETOOBIG;
    switch (json_typeof(v)) {
    case JSON_STRING: return dspy__buf_add_json_str(b, json_string_value(v), json_string_length(v));
    case JSON_TRUE: return dspy__buf_adds(b, "true");
    case JSON_FALSE: return dspy__buf_adds(b, "false");
    case JSON_NULL: return dspy__buf_adds(b, "null");
    case JSON_OBJECT: return dumps_object(b, v, indent, sorted, level);
    case JSON_ARRAY: {
        size_t i;
        json_t *item;
        if (json_array_size(v) == 0)
            return dspy__buf_adds(b, "[]");
        rc = dspy__buf_addc(b, '[');
        json_array_foreach(v, i, item) {
            if (!rc && i)
                rc = dspy__buf_adds(b, indent < 0 ? ", " : ",");
            if (!rc && indent >= 0)
                rc = newline_indent(b, indent, level + 1);
            if (!rc)
                rc = dumps_depth(b, item, indent, sorted, level + 1);
        }
        if (!rc && indent >= 0)
            rc = newline_indent(b, indent, level);
        return rc ? rc : dspy__buf_addc(b, ']');
    }
    default: return py_scalar(b, v);
    }
}

dspy_status dspy__py_json_dumps(struct dspy_buf *b, const json_t *v, int indent,
                                bool type_first_sorted)
{
    return dumps_depth(b, v, indent, type_first_sorted, 0);
}

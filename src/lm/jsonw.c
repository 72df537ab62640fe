/* JSON writing without a jansson dump (lm layer): Python/orjson number text, compact and
 * orjson-indented output of json_t values. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lm/jsonw.h"

static const double pow10_small[] = { 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6 };

/* Digits of u, right-aligned ending at `end`; returns the start. At least `min` digits. */
static char *put_digits(char *end, unsigned long long u, int min)
{
    int written = 0;
    do {
        *--end = (char)('0' + u % 10);
        u /= 10;
        written++;
    } while (u || written < min);
    return end;
}

/* Common values (0.7, 1.0, 1000.25) without a printf round trip: exact when the value is
 * the nearest double to n / 10^k with n < 1e15, which then is also its shortest text. */
static size_t fmt_short_decimal(char *out, double a, bool negative)
{
    if (!(a >= 1e-3 && a < 1e15))
        return 0;
    for (int k = 0; k <= 6; k++) {
        double s = a * pow10_small[k];
        if (s >= 1e15)
            return 0;
        unsigned long long n = (unsigned long long)s;
        if ((double)n != s || (double)n / pow10_small[k] != a)
            continue;
        /* a * 10^k may land on an integer at a larger k than the shortest one. */
        while (k > 0 && n % 10 == 0) {
            n /= 10;
            k--;
        }
        unsigned long long scale = (unsigned long long)pow10_small[k];
        char tmp[DSPY__FMT_DOUBLE_MAX], *end = tmp + sizeof(tmp), *p;
        p = put_digits(end, k ? n % scale : 0, k ? k : 1);
        *--p = '.';
        p = put_digits(p, n / scale, 1);
        if (negative)
            *--p = '-';
        size_t len = (size_t)(end - p);
        memcpy(out, p, len);
        out[len] = '\0';
        return len;
    }
    return 0;
}

size_t dspy__fmt_double(char *out, double v, bool orjson)
{
    if (!isfinite(v)) {
        memcpy(out, "null", 5);
        return 4;
    }
    const char *sign = signbit(v) ? "-" : "";
    double a = fabs(v);
    if (a == 0.0)
        return (size_t)snprintf(out, DSPY__FMT_DOUBLE_MAX, "%s0.0", sign);
    size_t n = fmt_short_decimal(out, a, sign[0] == '-');
    if (n)
        return n;

    /* Shortest of 15, 16 or 17 significant digits that reads back as the same double. */
    char tmp[40];
    /* Subnormals carry fewer digits: search them from one digit up. */
    for (int p = a < DBL_MIN ? 1 : 15; p <= 17; p++) {
        snprintf(tmp, sizeof(tmp), "%.*e", p - 1, a);
        if (strtod(tmp, NULL) == a)
            break;
    }
    char digits[20];
    size_t nd = 0;
    const char *q = tmp;
    for (; *q && *q != 'e'; q++)
        if (*q >= '0' && *q <= '9' && nd < sizeof(digits) - 1)
            digits[nd++] = *q;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = '\0';
    int e = *q == 'e' ? atoi(q + 1) : 0;

    char body[48];
    size_t len = 0;
    if (e >= (orjson ? -5 : -4) && e < 16) {
        if (e >= 0) {
            for (int i = 0; i <= e; i++)
                body[len++] = (size_t)i < nd ? digits[i] : '0';
            body[len++] = '.';
            if ((size_t)e + 1 < nd) {
                memcpy(body + len, digits + e + 1, nd - (size_t)e - 1);
                len += nd - (size_t)e - 1;
            } else {
                body[len++] = '0';
            }
        } else {
            body[len++] = '0';
            body[len++] = '.';
            for (int i = 0; i < -e - 1; i++)
                body[len++] = '0';
            memcpy(body + len, digits, nd);
            len += nd;
        }
        body[len] = '\0';
    } else {
        /* Python pads the exponent to two digits; orjson does not pad negative ones. */
        int width = e < 0 && orjson ? 1 : 2;
        snprintf(body, sizeof(body), "%c%s%se%c%0*d", digits[0], nd > 1 ? "." : "", digits + 1,
                 e < 0 ? '-' : '+', width, abs(e));
        len = strlen(body);
    }
    return (size_t)snprintf(out, DSPY__FMT_DOUBLE_MAX, "%s%s", sign, body);
}

static dspy_status add_indent(struct dspy_buf *b, int depth)
{
    dspy_status rc = dspy__buf_addc(b, '\n');
    for (int i = 0; !rc && i < depth; i++)
        rc = dspy__buf_add(b, "  ", 2);
    return rc;
}

static dspy_status write_value(struct dspy_buf *b, const json_t *v, bool pretty, int depth);

static dspy_status write_object(struct dspy_buf *b, const json_t *v, bool pretty, int depth)
{
    const char *key;
    json_t *item;
    dspy_status rc = dspy__buf_addc(b, '{');
    bool first = true;
    /* json_object_foreach wants a non-const object; iteration does not modify it. */
    json_t *obj = (json_t *)(uintptr_t)v;
    json_object_foreach(obj, key, item) {
        if (!rc && !first)
            rc = dspy__buf_addc(b, ',');
        if (!rc && pretty)
            rc = add_indent(b, depth + 1);
        if (!rc)
            rc = dspy__buf_add_json_str(b, key, strlen(key));
        if (!rc)
            rc = pretty ? dspy__buf_add(b, ": ", 2) : dspy__buf_addc(b, ':');
        if (!rc)
            rc = write_value(b, item, pretty, depth + 1);
        first = false;
        if (rc)
            return rc;
    }
    if (!rc && pretty && !first)
        rc = add_indent(b, depth);
    return rc ? rc : dspy__buf_addc(b, '}');
}

static dspy_status write_array(struct dspy_buf *b, const json_t *v, bool pretty, int depth)
{
    dspy_status rc = dspy__buf_addc(b, '[');
    size_t n = json_array_size(v);
    for (size_t i = 0; !rc && i < n; i++) {
        if (i)
            rc = dspy__buf_addc(b, ',');
        if (!rc && pretty)
            rc = add_indent(b, depth + 1);
        if (!rc)
            rc = write_value(b, json_array_get(v, i), pretty, depth + 1);
    }
    if (!rc && pretty && n)
        rc = add_indent(b, depth);
    return rc ? rc : dspy__buf_addc(b, ']');
}

static dspy_status write_value(struct dspy_buf *b, const json_t *v, bool pretty, int depth)
{
    char num[DSPY__FMT_DOUBLE_MAX];
    if (depth > 512)
        return DSPY_ETOOBIG; /* jansson's own parse depth limit is lower; be safe anyway */
    switch (json_typeof(v)) {
    case JSON_OBJECT: return write_object(b, v, pretty, depth);
    case JSON_ARRAY: return write_array(b, v, pretty, depth);
    case JSON_STRING: return dspy__buf_add_json_str(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER: return dspy__buf_addf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    case JSON_REAL: {
        size_t n = dspy__fmt_double(num, json_real_value(v), pretty);
        return dspy__buf_add(b, num, n);
    }
    case JSON_TRUE: return dspy__buf_add(b, "true", 4);
    case JSON_FALSE: return dspy__buf_add(b, "false", 5);
    case JSON_NULL: return dspy__buf_add(b, "null", 4);
    }
    return DSPY_EINVAL;
}

dspy_status dspy__json_write(struct dspy_buf *b, const json_t *v, enum dspy__json_style style,
                             int depth)
{
    if (!v)
        return DSPY_EINVAL;
    return write_value(b, v, style == DSPY__JSON_ORJSON, depth);
}

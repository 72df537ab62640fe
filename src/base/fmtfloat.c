/* The one float formatter (base layer): shortest round-trip digits (Python repr's and
 * ryu's choice) from the C library's exact printf/strtod, and the three layouts callers
 * need. Near powers of two the nearest p-digit decimal can fall outside a double's
 * (asymmetric) rounding interval while its neighbour lies inside, so each length tries
 * both neighbours too. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fmtfloat.h"

static const double pow10_small[] = { 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6 };

/* Common values (0.7, 1000.25): `a` is the double nearest n / 10^k for some n < 1e15.
 * Two distinct decimals of at most 15 digits never read back as the same double, so
 * n's digits are then the unique shortest. Returns 0 when no such n exists. */
static size_t short_decimal(double a, char digits[17], int *decpt)
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
        while (n && n % 10 == 0) {
            n /= 10;
            k--;
        }
        char tmp[24];
        size_t nd = 0;
        do {
            tmp[nd++] = (char)('0' + n % 10);
            n /= 10;
        } while (n);
        for (size_t i = 0; i < nd; i++)
            digits[i] = tmp[nd - 1 - i];
        *decpt = (int)nd - k;
        return nd;
    }
    return 0;
}

/* p-digit decimals as digits + exponent of the first digit (d.ddd x 10^e). */
struct dec {
    char d[17];
    int p, e;
};

/* Does x read back as a: as a double, or as a float32 when `single`? */
static bool reads_back(const struct dec *x, double a, bool single)
{
    char txt[48];
    int o = 0;
    txt[o++] = x->d[0];
    txt[o++] = '.';
    memcpy(txt + o, x->d + 1, (size_t)x->p - 1);
    o += x->p - 1;
    snprintf(txt + o, sizeof(txt) - (size_t)o, "e%d", x->e);
    return single ? (double)strtof(txt, NULL) == a : strtod(txt, NULL) == a;
}

/* The next p-digit decimal above (+1) or below (-1) x. */
static void step(struct dec *x, int dir)
{
    int i = x->p - 1;
    if (dir > 0) {
        while (i >= 0 && x->d[i] == '9')
            x->d[i--] = '0';
        if (i >= 0) {
            x->d[i]++;
        } else { /* 9.99 -> 10.0 = 1.00e+1 */
            x->d[0] = '1';
            x->e++;
        }
    } else {
        while (i >= 0 && x->d[i] == '0')
            x->d[i--] = '9';
        x->d[i]--;            /* x > 0, so some digit is not 0 */
        if (x->d[0] == '0') { /* 1.00 -> 0.999 = 9.99e-1 */
            memmove(x->d, x->d + 1, (size_t)x->p - 1);
            x->d[x->p - 1] = '9';
            x->e--;
        }
    }
}

/* A p-digit decimal that reads back as a, the nearest one where that one does. */
static bool try_digits(double a, int p, bool single, struct dec *out)
{
    char txt[48];
    snprintf(txt, sizeof(txt), "%.*e", p - 1, a); /* correctly rounded: the nearest */
    struct dec x = { .p = p };
    const char *q = txt;
    int n = 0;
    for (; *q && *q != 'e'; q++)
        if (*q >= '0' && *q <= '9')
            x.d[n++] = *q;
    x.e = atoi(q + 1);
    if (reads_back(&x, a, single)) {
        *out = x;
        return true;
    }
    for (int dir = -1; dir <= 1; dir += 2) {
        struct dec y = x;
        step(&y, dir);
        if (reads_back(&y, a, single)) {
            *out = y;
            return true;
        }
    }
    return false;
}

/* The shortest digits of a double, or of a float32 (widened exactly into `a`) when
 * `single`: 9 digits always read back as a float32, 17 as a double. */
static size_t shortest_digits(double a, bool single, char digits[17], int *decpt)
{
    size_t n = single ? 0 : short_decimal(a, digits, decpt);
    if (n)
        return n;
    /* Some p-digit decimal reads back => some (p+1)-digit one does (the same number):
     * bisect on the length. */
    struct dec best, x;
    int lo = 1, hi = single ? 9 : 17;
    try_digits(a, hi, single, &best);
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (try_digits(a, mid, single, &x)) {
            best = x;
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    n = (size_t)best.p;
    while (n > 1 && best.d[n - 1] == '0')
        n--;
    memcpy(digits, best.d, n);
    *decpt = best.e + 1;
    return n;
}

size_t dspy__float_digits(double a, char digits[17], int *decpt)
{
    return shortest_digits(a, false, digits, decpt);
}

static size_t fmt(char out[DSPY__FLOAT_MAX], double v, bool single, enum dspy__float_layout layout)
{
    char digits[17];
    int decpt;
    size_t o = 0;
    bool python = layout == DSPY__FLOAT_PYTHON;

    if (!isfinite(v)) {
        const char *t = !python ? "null" : isnan(v) ? "nan" : v < 0 ? "-inf" : "inf";
        size_t n = strlen(t);
        memcpy(out, t, n + 1);
        return n;
    }
    if (signbit(v))
        out[o++] = '-';
    if (v == 0) {
        memcpy(out + o, "0.0", 4);
        return o + 3;
    }
    size_t nd = shortest_digits(fabs(v), single, digits, &decpt);
    /* Plain decimals: Python for 1e-4 <= |v| < 1e16, orjson down to 1e-5. */
    if (decpt > (python ? -4 : -5) && decpt <= 16) {
        if (decpt <= 0) {
            out[o++] = '0';
            out[o++] = '.';
            for (int i = 0; i < -decpt; i++)
                out[o++] = '0';
            memcpy(out + o, digits, nd);
            o += nd;
        } else {
            for (int i = 0; i < decpt; i++)
                out[o++] = (size_t)i < nd ? digits[i] : '0';
            out[o++] = '.';
            if ((size_t)decpt < nd) {
                memcpy(out + o, digits + decpt, nd - (size_t)decpt);
                o += nd - (size_t)decpt;
            } else {
                out[o++] = '0';
            }
        }
        out[o] = '\0';
        return o;
    }
    out[o++] = digits[0];
    if (nd > 1) {
        out[o++] = '.';
        memcpy(out + o, digits + 1, nd - 1);
        o += nd - 1;
    }
    int e = decpt - 1;
    /* Python: e+16, e-05; orjson: e+16, e-6; orjson 3.8: e16, e-6 */
    const char *sign = e < 0 ? "-" : layout == DSPY__FLOAT_ORJSON_38 ? "" : "+";
    o += (size_t)snprintf(out + o, DSPY__FLOAT_MAX - o, "e%s%0*d", sign, python ? 2 : 1, abs(e));
    return o;
}

size_t dspy__float_fmt(char out[DSPY__FLOAT_MAX], double v, enum dspy__float_layout layout)
{
    return fmt(out, v, false, layout);
}

size_t dspy__float32_fmt(char out[DSPY__FLOAT_MAX], float v, enum dspy__float_layout layout)
{
    return fmt(out, (double)v, true, layout);
}

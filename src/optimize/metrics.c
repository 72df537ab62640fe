/* Metrics (optimize layer): DSPy's normalize_text, exact match and token F1. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/metrics.h>

#include "base/buf.h"

static bool is_article(const char *w, size_t n)
{
    return (n == 1 && w[0] == 'a') || (n == 2 && !memcmp(w, "an", 2)) ||
           (n == 3 && !memcmp(w, "the", 3));
}

char *dspy_normalize_text(const char *text)
{
    struct dspy_buf out;
    size_t len = strlen(text), i = 0;
    char *lower = dspy_malloc(len + 1), *res = NULL;
    if (!lower)
        return NULL;
    /* Lower case and drop punctuation first, as DSPy does, then split into words. */
    size_t n = 0;
    for (size_t k = 0; k < len; k++) {
        unsigned char c = (unsigned char)text[k];
        if (c < 0x80 && ispunct(c))
            continue;
        lower[n++] = (char)(c < 0x80 ? tolower(c) : c);
    }
    lower[n] = '\0';
    dspy__buf_init(&out, len + 1);
    if (dspy__buf_reserve(&out, 0))
        goto out;
    while (i < n) {
        while (i < n && isspace((unsigned char)lower[i]))
            i++;
        size_t start = i;
        while (i < n && !isspace((unsigned char)lower[i]))
            i++;
        if (i == start || is_article(lower + start, i - start))
            continue;
        if ((out.len && dspy__buf_addc(&out, ' ')) || dspy__buf_add(&out, lower + start, i - start))
            goto out;
    }
    res = dspy__buf_detach(&out, NULL);
out:
    dspy__buf_release(&out);
    dspy_free(lower);
    return res;
}

/* The text a value is compared by: a string itself, anything else its compact JSON. */
static char *value_text(const json_t *v)
{
    if (json_is_string(v))
        return dspy_strdup(json_string_value(v));
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    char *copy = s ? dspy_strdup(s) : NULL;
    free(s);
    return copy;
}

static char *normalized(const json_t *v)
{
    char *t = value_text(v);
    char *n = t ? dspy_normalize_text(t) : NULL;
    dspy_free(t);
    return n;
}

static double em_one(const char *p, const json_t *gold)
{
    char *g = normalized(gold);
    double s = g && !strcmp(p, g) ? 1.0 : 0.0;
    dspy_free(g);
    return s;
}

/* Token F1 of two normalized, space-separated texts. */
static double f1_one(const char *p, const json_t *gold)
{
    char *g = normalized(gold);
    double f1 = 0.0;
    if (!g)
        return 0.0;
    size_t np = 0, ng = 0, same = 0;
    /* Count how many prediction tokens find a gold token not yet matched (a multiset
     * intersection, as Python's Counter & Counter); a matched gold token is overwritten. */
    for (const char *t = g; *t;) {
        size_t tl = strcspn(t, " ");
        ng++;
        t += tl + (t[tl] == ' ');
    }
    for (const char *q = p; *q;) {
        size_t wl = strcspn(q, " ");
        char *hit = NULL;
        np++;
        for (char *t = g; *t;) {
            size_t tl = strcspn(t, " ");
            if (tl == wl && !memcmp(t, q, wl)) {
                hit = t;
                break;
            }
            t += tl + (t[tl] == ' ');
        }
        if (hit) {
            same++;
            memset(hit, '\x01', wl);
        }
        q += wl + (q[wl] == ' ');
    }
    if (same && np && ng) {
        double prec = (double)same / (double)np, rec = (double)same / (double)ng;
        f1 = 2 * prec * rec / (prec + rec);
    }
    dspy_free(g);
    return f1;
}

static double best_over(const json_t *pred, const json_t *gold,
                        double (*one)(const char *, const json_t *))
{
    char *p = normalized(pred);
    double best = 0.0;
    if (!p)
        return 0.0;
    if (json_is_array(gold)) {
        size_t i;
        const json_t *g;
        json_array_foreach(gold, i, g) {
            double s = one(p, g);
            if (s > best)
                best = s;
        }
    } else {
        best = one(p, gold);
    }
    dspy_free(p);
    return best;
}

double dspy_metric_exact_match(const json_t *pred, const json_t *gold)
{
    return pred && gold ? best_over(pred, gold, em_one) : 0.0;
}

double dspy_metric_f1(const json_t *pred, const json_t *gold)
{
    return pred && gold ? best_over(pred, gold, f1_one) : 0.0;
}

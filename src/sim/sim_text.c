/* Text utilities of the simulator (sim layer): seeded hashing and uniform draws, the
 * documented token approximation, UTF-8 checking, keyword picking and base64. */
#include <ctype.h>
#include <string.h>
#include <strings.h>
#include <xxhash.h>

#include "sim_int.h"

uint64_t dspy__sim_hash(uint64_t seed, const void *p, size_t n)
{
    return XXH3_64bits_withSeed(p, n, seed);
}

/* splitmix64 finalizer over a combination of both inputs. */
uint64_t dspy__sim_mix(uint64_t a, uint64_t b)
{
    uint64_t z = a ^ (b + 0x9e3779b97f4a7c15ull + (a << 6) + (a >> 2));
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double dspy__sim_unit(uint64_t h)
{
    return (double)(h >> 11) * (1.0 / 9007199254740992.0);
}

/* ---- Tokens ---- */

enum tclass { T_WORD, T_SPACE, T_PUNCT };

static enum tclass tclass(unsigned char c)
{
    if (c >= 0x80 || isalnum(c) || c == '_')
        return T_WORD;
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
        return T_SPACE;
    return T_PUNCT;
}

/* Bytes of the UTF-8 character starting at s (1 for a stray byte). */
static size_t char_len(const char *s, size_t n)
{
    unsigned char c = (unsigned char)s[0];
    size_t k = c < 0xc0 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    if (k > n)
        return 1;
    for (size_t i = 1; i < k; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            return 1;
    return k;
}

size_t dspy__sim_token_len(const char *s, size_t n)
{
    if (!n)
        return 0;
    size_t i = 0;
    if (s[0] == ' ' && n > 1 && tclass((unsigned char)s[1]) == T_WORD)
        i = 1;
    enum tclass cls = tclass((unsigned char)s[i]);
    if (cls == T_PUNCT)
        return i + 1;
    size_t len = i + char_len(s + i, n - i);
    while (len < n && tclass((unsigned char)s[len]) == cls) {
        size_t k = char_len(s + len, n - len);
        if (len + k > 4)
            break;
        len += k;
    }
    return len;
}

size_t dspy__sim_tokens(const char *s, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; count++)
        i += dspy__sim_token_len(s + i, n - i);
    return count;
}

size_t dspy__sim_tokens_prefix(const char *s, size_t n, size_t max)
{
    size_t i = 0;
    for (size_t t = 0; t < max && i < n; t++)
        i += dspy__sim_token_len(s + i, n - i);
    return i;
}

size_t dspy__sim_utf8_check(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = u[i];
        size_t k;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            k = 2, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 3, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 4, min = 0x10000;
        } else {
            return i;
        }
        if (i + k > n)
            return i;
        unsigned cp = c & (0xff >> (k + 1));
        for (size_t j = 1; j < k; j++) {
            if ((u[i + j] & 0xc0) != 0x80)
                return i;
            cp = (cp << 6) | (u[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return i;
        i += k;
    }
    return n;
}

/* ---- Views ---- */

bool dspy__sim_view_eq(struct dspy__sim_view v, const char *s)
{
    return strlen(s) == v.n && !memcmp(v.p, s, v.n);
}

struct dspy__sim_view dspy__sim_view_strip(struct dspy__sim_view v)
{
    while (v.n && isspace((unsigned char)v.p[0]))
        v.p++, v.n--;
    while (v.n && isspace((unsigned char)v.p[v.n - 1]))
        v.n--;
    return v;
}

const char *dspy__sim_find(struct dspy__sim_view hay, const char *needle)
{
    size_t k = strlen(needle);
    if (!k || k > hay.n)
        return NULL;
    const char *end = hay.p + hay.n - k;
    for (const char *p = hay.p; p <= end; p++) {
        p = memchr(p, needle[0], (size_t)(end - p) + 1);
        if (!p)
            return NULL;
        if (!memcmp(p, needle, k))
            return p;
    }
    return NULL;
}

const char *dspy__sim_find_ci(struct dspy__sim_view hay, const char *needle)
{
    size_t k = strlen(needle);
    if (!k || k > hay.n)
        return NULL;
    for (size_t i = 0; i + k <= hay.n; i++)
        if (!strncasecmp(hay.p + i, needle, k))
            return hay.p + i;
    return NULL;
}

static const char *const stop_words[] = {
    "the",   "and",  "for",   "with",  "that", "this", "from",  "are",    "was",   "what", "which",
    "who",   "how",  "many",  "does",  "have", "has",  "you",   "your",   "into",  "then", "than",
    "about", "each", "there", "their", "they", "will", "would", "should", "could", "can",  "not",
    "but",   "all",  "any",   "its",   "his",  "her",  "she",   "him",    "our",   "were", "been",
    "being", "when", "where", "why",   "also", "some", "more",  "most",   "other", "such", "only",
    "own",   "same", "too",   "very",  "just", "now",  "did",   "give",
};

static bool is_stop(const char *w, size_t n)
{
    for (size_t i = 0; i < sizeof(stop_words) / sizeof(stop_words[0]); i++)
        if (strlen(stop_words[i]) == n && !strncasecmp(stop_words[i], w, n))
            return true;
    return false;
}

size_t dspy__sim_keywords(struct dspy__sim_view v, struct dspy__sim_view *out, size_t have,
                          size_t max)
{
    size_t i = 0;
    while (i < v.n && have < max) {
        while (i < v.n && tclass((unsigned char)v.p[i]) != T_WORD)
            i++;
        size_t start = i;
        while (i < v.n && tclass((unsigned char)v.p[i]) == T_WORD)
            i++;
        size_t len = i - start;
        if (len < 3 || len > 40 || is_stop(v.p + start, len))
            continue;
        /* Whole characters only: drop a word with stray bytes so outputs stay UTF-8. */
        if (dspy__sim_utf8_check(v.p + start, len) != len)
            continue;
        bool dup = false;
        for (size_t k = 0; k < have && !dup; k++)
            dup = out[k].n == len && !strncasecmp(out[k].p, v.p + start, len);
        if (!dup)
            out[have++] = (struct dspy__sim_view){ v.p + start, len };
    }
    return have;
}

/* The pre-tokenizers of OpenAI's cl100k_base and o200k_base encodings (retrieve layer),
 * hand-written from their split patterns: each function below is one pattern, its
 * alternatives tried in order at the piece's first character, with the backtracking the
 * regex would do worked out in advance, so one piece costs one forward scan. */
#include "retrieve/bpe.h"

#include <stdbool.h>

/* The table's classes, plus CR and LF (which the patterns name apart from \s) and the
 * end of the text. */
enum { NL = 7, END = 8 };

#define BIT(c) (1u << (c))
#define L_ (BIT(DSPY__BPE_UPPER) | BIT(DSPY__BPE_LOWER) | BIT(DSPY__BPE_OLETTER)) /* \p{L} */
#define WS_ (BIT(DSPY__BPE_SPACE) | BIT(NL))                                      /* \s */
/* [^\r\n\p{L}\p{N}], the optional character before a word */
#define PREFIX_ (BIT(DSPY__BPE_OTHER) | BIT(DSPY__BPE_MARK) | BIT(DSPY__BPE_SPACE))
/* [^\s\p{L}\p{N}], punctuation and the rest */
#define PUNCT_ (BIT(DSPY__BPE_OTHER) | BIT(DSPY__BPE_MARK))
/* o200k_base: [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] and [\p{Ll}\p{Lm}\p{Lo}\p{M}]; BOTH_ is in each */
#define UPPERISH_ (BIT(DSPY__BPE_UPPER) | BIT(DSPY__BPE_OLETTER) | BIT(DSPY__BPE_MARK))
#define LOWERISH_ (BIT(DSPY__BPE_LOWER) | BIT(DSPY__BPE_OLETTER) | BIT(DSPY__BPE_MARK))
#define BOTH_ (BIT(DSPY__BPE_OLETTER) | BIT(DSPY__BPE_MARK))
#define IN(c, set) ((BIT(c) & (set)) != 0)

/* The class of the character at s[i] and its length in *n (valid UTF-8 assumed). */
static inline unsigned cls_at(const unsigned char *s, size_t len, size_t i, size_t *n)
{
    if (i >= len) {
        *n = 0;
        return END;
    }
    unsigned c = s[i];
    uint32_t cp;
    if (c < 0x80) {
        *n = 1;
        return c == '\r' || c == '\n' ? NL : dspy__bpe_stage2[0][c];
    }
    if (c < 0xE0) {
        cp = (c & 0x1Fu) << 6 | (s[i + 1] & 0x3Fu);
        *n = 2;
    } else if (c < 0xF0) {
        cp = (c & 0x0Fu) << 12 | (s[i + 1] & 0x3Fu) << 6 | (s[i + 2] & 0x3Fu);
        *n = 3;
    } else {
        cp = (c & 0x07u) << 18 | (s[i + 1] & 0x3Fu) << 12 | (s[i + 2] & 0x3Fu) << 6 |
             (s[i + 3] & 0x3Fu);
        *n = 4;
    }
    return dspy__bpe_class_of(cp);
}

/* The end of the run of characters in `set` from i. */
static size_t run(const unsigned char *s, size_t len, size_t i, unsigned set)
{
    size_t n;
    while (IN(cls_at(s, len, i, &n), set))
        i += n;
    return i;
}

/* '(?i:[sdmt]|ll|ve|re) at s[i] == '\'': its end, or 0. Case-insensitive 's' also
 * matches U+017F LATIN SMALL LETTER LONG S, as Unicode case folding has it. */
static size_t contraction(const unsigned char *s, size_t len, size_t i)
{
    if (i + 1 >= len)
        return 0;
    unsigned a = s[i + 1] | 0x20u;
    if (a == 's' || a == 'd' || a == 'm' || a == 't')
        return i + 2;
    if (i + 2 >= len)
        return 0;
    if (s[i + 1] == 0xC5 && s[i + 2] == 0xBF)
        return i + 3;
    unsigned b = s[i + 2] | 0x20u;
    return (a == 'l' && b == 'l') || (a == 'v' && b == 'e') || (a == 'r' && b == 'e') ? i + 3 : 0;
}

/* Whitespace at s[i]: the pattern's last alternatives. `end_first`: cl100k_base's \s++$
 * comes before \s*[\r\n]. */
static size_t spaces(const unsigned char *s, size_t len, size_t i, bool end_first)
{
    size_t k = i, n, after_nl = 0, last = i, count = 0;
    unsigned c;
    while (IN(c = cls_at(s, len, k, &n), WS_)) {
        if (c == NL)
            after_nl = k + n;
        last = k;
        k += n;
        count++;
    }
    if (end_first && k == len)
        return len; /* \s++$ */
    if (after_nl)
        return after_nl; /* \s*[\r\n] and \s*[\r\n]+: up to the run's last CR or LF */
    if (k == len)
        return len; /* \s+(?!\S) at the end */
    if (count >= 2)
        return last; /* \s+(?!\S): all but the last, which the next piece may take */
    return k;        /* \s */
}

/* ' ?[^\s\p{L}\p{N}]+' then any of `tail` (CR, LF, and '/' in o200k_base), or 0. */
static size_t punct(const unsigned char *s, size_t len, size_t i, bool slash)
{
    size_t j = s[i] == ' ' ? i + 1 : i, n;
    if (!IN(cls_at(s, len, j, &n), PUNCT_))
        return 0;
    size_t e = run(s, len, j, PUNCT_);
    while (e < len && (s[e] == '\r' || s[e] == '\n' || (slash && s[e] == '/')))
        e++;
    return e;
}

/* \p{N}{1,3} */
static size_t digits(const unsigned char *s, size_t len, size_t i)
{
    size_t n;
    for (int k = 0; k < 3 && cls_at(s, len, i, &n) == DSPY__BPE_NUMBER; k++)
        i += n;
    return i;
}

/* '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|
 * \s++$|\s*[\r\n]|\s+(?!\S)|\s */
static size_t cl100k(const unsigned char *s, size_t len, size_t i)
{
    size_t n0, n, e;
    unsigned c0 = cls_at(s, len, i, &n0);
    if (s[i] == '\'' && (e = contraction(s, len, i)))
        return e;
    size_t j = IN(c0, PREFIX_) ? i + n0 : i;
    if (IN(cls_at(s, len, j, &n), L_))
        return run(s, len, j, L_);
    if (c0 == DSPY__BPE_NUMBER)
        return digits(s, len, i);
    if ((e = punct(s, len, i, false)))
        return e;
    return spaces(s, len, i, true);
}

/* [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+ from j: its end, or 0. The
 * greedy first run gives back characters until one can start the second: the character
 * after the run when it is Ll, else the run's last Lm/Lo/M, which then ends the match. */
static size_t o200k_lower(const unsigned char *s, size_t len, size_t j)
{
    size_t k = j, n, last_both = 0;
    unsigned c;
    while (IN(c = cls_at(s, len, k, &n), UPPERISH_)) {
        k += n;
        if (IN(c, BOTH_))
            last_both = k;
    }
    if (c == DSPY__BPE_LOWER)
        return run(s, len, k, LOWERISH_);
    return last_both;
}

/* [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]* from j: its end, or 0. */
static size_t o200k_upper(const unsigned char *s, size_t len, size_t j)
{
    size_t k = run(s, len, j, UPPERISH_);
    return k == j ? 0 : run(s, len, k, LOWERISH_);
}

/* The optional contraction after an o200k_base word. */
static size_t o200k_tail(const unsigned char *s, size_t len, size_t e)
{
    size_t c;
    return e < len && s[e] == '\'' && (c = contraction(s, len, e)) ? c : e;
}

/* [^\r\n\p{L}\p{N}]?<lower word>(?i:'s|'t|'re|'ve|'m|'ll|'d)?|
 * [^\r\n\p{L}\p{N}]?<upper word>(?i:...)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|
 * \s+(?!\S)|\s+ */
static size_t o200k(const unsigned char *s, size_t len, size_t i)
{
    size_t n0, e;
    unsigned c0 = cls_at(s, len, i, &n0);
    bool pre = IN(c0, PREFIX_);
    /* Without the prefix only a mark (the one prefix character a word may hold) or a
     * letter can start a word; the calls fail at once otherwise. */
    if ((pre && (e = o200k_lower(s, len, i + n0))) || (e = o200k_lower(s, len, i)))
        return o200k_tail(s, len, e);
    if ((pre && (e = o200k_upper(s, len, i + n0))) || (e = o200k_upper(s, len, i)))
        return o200k_tail(s, len, e);
    if (c0 == DSPY__BPE_NUMBER)
        return digits(s, len, i);
    if ((e = punct(s, len, i, true)))
        return e;
    return spaces(s, len, i, false);
}

size_t dspy__bpe_next_piece(enum dspy__bpe_split split, const char *text, size_t len, size_t i)
{
    const unsigned char *s = (const unsigned char *)text;
    return split == DSPY__BPE_SPLIT_O200K ? o200k(s, len, i) : cl100k(s, len, i);
}

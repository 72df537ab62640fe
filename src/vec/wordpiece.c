/* BERT uncased basic tokenization and WordPiece (vec layer). One pass over the UTF-8 text:
 * each code point is classed and normalized through the generated tables, words are built
 * in a small fixed buffer and split into vocabulary pieces as soon as they end, and the pass
 * stops producing pieces once the id budget is full (it still checks the UTF-8 to the end). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <xxhash.h>

#include "base/pyfmt.h"
#include "base/status.h"
#include "vec/wordpiece.h"

#define MAX_VOCAB_FILE ((size_t)64 << 20)
#define MAX_TOKEN_BYTES 256
/* A word is at most 100 characters of at most 4 bytes; longer ones are only counted. */
#define WORD_BYTES (DSPY__WP_MAX_WORD_CHARS * 4)

struct entry {
    uint32_t off; /* token text in `text` (without a leading "##" for continuations) */
    uint16_t len;
    uint8_t cont; /* a "##" continuation piece */
    int32_t id;   /* -1: empty slot */
};

struct dspy__wordpiece {
    char *text; /* all token texts */
    struct entry *slots;
    size_t mask;      /* slots - 1, a power of two */
    size_t n;         /* tokens */
    size_t max_piece; /* longest token text in bytes, continuation prefix excluded */
    int32_t unk, cls, sep;
};

/* ---- Unicode classes and normalization ---- */

enum dspy__wp_class dspy__wp_class_of(uint32_t cp)
{
    size_t lo = 0, hi = dspy__wp_n_ranges; /* last range with start <= cp */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (dspy__wp_ranges[mid].start <= cp)
            lo = mid;
        else
            hi = mid;
    }
    return (enum dspy__wp_class)dspy__wp_ranges[lo].cls;
}

size_t dspy__wp_normalize(uint32_t cp, uint32_t out[4])
{
    if (cp >= 0xAC00 && cp <= 0xD7A3) { /* Hangul syllable: canonical decomposition to jamo */
        uint32_t s = cp - 0xAC00, t = s % 28;
        out[0] = 0x1100 + s / 588;
        out[1] = 0x1161 + (s % 588) / 28;
        if (!t)
            return 2;
        out[2] = 0x11A7 + t;
        return 3;
    }
    size_t lo = 0, hi = dspy__wp_n_maps;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (dspy__wp_maps[mid].cp < cp) {
            lo = mid + 1;
        } else if (dspy__wp_maps[mid].cp > cp) {
            hi = mid;
        } else {
            const struct dspy__wp_map *m = &dspy__wp_maps[mid];
            for (size_t k = 0; k < m->len; k++)
                out[k] = dspy__wp_pool[m->off + k];
            return m->len;
        }
    }
    out[0] = cp;
    return 1;
}

/* ASCII fast path: class and lower-case without a table search. */
static enum dspy__wp_class ascii_class(unsigned char c)
{
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
        return DSPY__WP_SPACE;
    if (c < 0x20 || c == 0x7F)
        return DSPY__WP_DROP;
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
        (c >= 123 && c <= 126))
        return DSPY__WP_PUNCT;
    return DSPY__WP_OTHER;
}

/* ---- Vocabulary ---- */

static uint64_t piece_hash(int cont, const char *s, size_t len)
{
    return XXH3_64bits_withSeed(s, len, cont ? 0x2323u : 0);
}

static struct entry *slot_for(const struct dspy__wordpiece *wp, int cont, const char *s, size_t len)
{
    size_t i = (size_t)piece_hash(cont, s, len) & wp->mask;
    for (;;) {
        struct entry *e = &wp->slots[i];
        if (e->id < 0 || (e->cont == cont && e->len == len && !memcmp(wp->text + e->off, s, len)))
            return e;
        i = (i + 1) & wp->mask;
    }
}

static int32_t lookup(const struct dspy__wordpiece *wp, int cont, const char *s, size_t len)
{
    if (len > wp->max_piece)
        return -1;
    return slot_for(wp, cont, s, len)->id;
}

int32_t dspy__wordpiece_id(const struct dspy__wordpiece *wp, const char *tok, size_t len)
{
    if (len > 2 && !memcmp(tok, "##", 2))
        return lookup(wp, 1, tok + 2, len - 2);
    return lookup(wp, 0, tok, len);
}

size_t dspy__wordpiece_size(const struct dspy__wordpiece *wp)
{
    return wp->n;
}

void dspy__wordpiece_free(struct dspy__wordpiece *wp)
{
    if (!wp)
        return;
    dspy_free(wp->text);
    dspy_free(wp->slots);
    dspy_free(wp);
}

static dspy_status parse_err(struct dspy_error *err, const char *name, long line, const char *what)
{
    dspy__err(err, DSPY_EPARSE, "%s, line %ld: %s", name, line, what);
    dspy__err_file(err, name);
    if (err)
        err->line = line;
    return DSPY_EPARSE;
}

dspy_status dspy__wordpiece_parse(const char *text, size_t len, const char *name,
                                  struct dspy__wordpiece **out, struct dspy_error *err)
{
    dspy_status rc = DSPY_OK;
    *out = NULL;
    if (len == 0) {
        dspy__err(err, DSPY_EPARSE, "%s: empty vocabulary file", name);
        dspy__err_file(err, name);
        return DSPY_EPARSE;
    }
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    if (lines > ((size_t)1 << 24)) {
        dspy__err(err, DSPY_ETOOBIG, "%s: more than 16M lines", name);
        dspy__err_file(err, name);
        return DSPY_ETOOBIG;
    }
    struct dspy__wordpiece *wp = dspy_calloc(1, sizeof(*wp));
    if (!wp)
        return DSPY_ENOMEM;
    wp->unk = wp->cls = wp->sep = -1;
    size_t cap = 16;
    while (cap < lines * 2)
        cap *= 2;
    wp->mask = cap - 1;
    wp->text = dspy_malloc(len + 1);
    wp->slots = dspy_malloc(cap * sizeof(*wp->slots));
    if (!wp->text || !wp->slots) {
        rc = DSPY_ENOMEM;
        goto fail;
    }
    memcpy(wp->text, text, len);
    wp->text[len] = '\0';
    for (size_t i = 0; i < cap; i++)
        wp->slots[i].id = -1;
    size_t pos = 0;
    long line = 0;
    while (pos < len) {
        size_t end = pos;
        while (end < len && text[end] != '\n')
            end++;
        line++;
        size_t tl = end;
        if (tl > pos && text[tl - 1] == '\r')
            tl--;
        const char *tok = text + pos;
        size_t n = tl - pos;
        if (n == 0) {
            rc = parse_err(err, name, line, "empty token");
            goto fail;
        }
        if (n > MAX_TOKEN_BYTES) {
            rc = parse_err(err, name, line, "token longer than 256 bytes");
            goto fail;
        }
        if (!dspy__utf8_valid(tok, n)) {
            rc = parse_err(err, name, line, "invalid UTF-8");
            goto fail;
        }
        int cont = n > 2 && !memcmp(tok, "##", 2);
        size_t off = (size_t)(tok - text) + (cont ? 2 : 0), plen = n - (cont ? 2 : 0);
        struct entry *e = slot_for(wp, cont, wp->text + off, plen);
        if (e->id >= 0) {
            rc = parse_err(err, name, line, "duplicate token");
            goto fail;
        }
        e->off = (uint32_t)off;
        e->len = (uint16_t)plen;
        e->cont = (uint8_t)cont;
        e->id = (int32_t)wp->n++;
        if (plen > wp->max_piece)
            wp->max_piece = plen;
        pos = end + 1;
    }
    wp->unk = dspy__wordpiece_id(wp, "[UNK]", 5);
    wp->cls = dspy__wordpiece_id(wp, "[CLS]", 5);
    wp->sep = dspy__wordpiece_id(wp, "[SEP]", 5);
    if (wp->unk < 0 || wp->cls < 0 || wp->sep < 0) {
        dspy__err(err, DSPY_EPARSE, "%s: no [UNK], [CLS] or [SEP] token: not a BERT vocabulary",
                  name);
        dspy__err_file(err, name);
        rc = DSPY_EPARSE;
        goto fail;
    }
    *out = wp;
    return DSPY_OK;
fail:
    dspy__wordpiece_free(wp);
    return rc;
}

dspy_status dspy__wordpiece_load(const char *path, struct dspy__wordpiece **out,
                                 struct dspy_error *err)
{
    dspy_status rc = DSPY_OK;
    char *data = NULL;
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        rc = dspy__err(err, errno == ENOENT ? DSPY_ENOTFOUND : DSPY_EIO, "%s: cannot open: %s",
                       path, strerror(errno));
        dspy__err_file(err, path);
        return rc;
    }
    long size = fseek(f, 0, SEEK_END) ? -1 : ftell(f);
    rewind(f);
    if (size < 0) {
        rc = dspy__err(err, DSPY_EIO, "%s: not a regular file", path);
        dspy__err_file(err, path);
        goto out;
    }
    size_t want = (size_t)size < MAX_VOCAB_FILE ? (size_t)size : MAX_VOCAB_FILE;
    data = dspy_malloc(want + 1);
    if (!data) {
        rc = DSPY_ENOMEM;
        goto out;
    }
    size_t len = fread(data, 1, want + 1, f);
    if (ferror(f)) {
        rc = dspy__err(err, DSPY_EIO, "%s: read failed", path);
        dspy__err_file(err, path);
        goto out;
    }
    if (len > MAX_VOCAB_FILE) {
        rc = dspy__err(err, DSPY_ETOOBIG, "%s: larger than 64 MiB: not a vocabulary", path);
        dspy__err_file(err, path);
        goto out;
    }
    rc = dspy__wordpiece_parse(data, len, path, out, err);
out:
    dspy_free(data);
    fclose(f);
    return rc;
}

/* ---- Encoding ---- */

struct encoder {
    const struct dspy__wordpiece *wp;
    int32_t *ids;
    size_t n, max; /* ids written, most allowed (room for [SEP] kept aside) */
    char word[WORD_BYTES + 4];
    size_t wlen;   /* bytes in word */
    size_t wchars; /* characters in the word, counted past the buffer too */
};

static void emit(struct encoder *e, int32_t id)
{
    if (e->n < e->max) {
        if (e->ids) /* NULL: counting only */
            e->ids[e->n] = id;
        e->n++;
    }
}

/* Greedy longest-match-first over the word's bytes, at character boundaries. The whole
 * word is matched before anything is emitted: a word with any unmatched piece is one [UNK],
 * even when the id budget would cut it. */
static void flush_word(struct encoder *e)
{
    int32_t pieces[DSPY__WP_MAX_WORD_CHARS];
    size_t np = 0;
    if (!e->wchars)
        return;
    const struct dspy__wordpiece *wp = e->wp;
    size_t len = e->wlen, start = 0;
    if (e->wchars > DSPY__WP_MAX_WORD_CHARS)
        goto unknown;
    while (start < len) {
        size_t end = len;
        if (end - start > wp->max_piece) {
            end = start + wp->max_piece;
            while (end > start && ((unsigned char)e->word[end] & 0xC0) == 0x80)
                end--;
        }
        int32_t id = -1;
        while (end > start) {
            id = lookup(wp, start > 0, e->word + start, end - start);
            if (id >= 0)
                break;
            end--;
            while (end > start && ((unsigned char)e->word[end] & 0xC0) == 0x80)
                end--;
        }
        if (id < 0)
            goto unknown;
        pieces[np++] = id; /* each piece is at least one character: np <= wchars */
        start = end;
    }
    for (size_t k = 0; k < np; k++)
        emit(e, pieces[k]);
    goto done;
unknown:
    emit(e, wp->unk);
done:
    e->wlen = 0;
    e->wchars = 0;
}

static void add_char(struct encoder *e, uint32_t cp)
{
    e->wchars++;
    if (e->wchars > DSPY__WP_MAX_WORD_CHARS)
        return; /* an [UNK] whatever follows; keep counting */
    char *p = e->word + e->wlen;
    if (cp < 0x80) {
        p[0] = (char)cp;
        e->wlen += 1;
    } else if (cp < 0x800) {
        p[0] = (char)(0xC0 | (cp >> 6));
        p[1] = (char)(0x80 | (cp & 0x3F));
        e->wlen += 2;
    } else if (cp < 0x10000) {
        p[0] = (char)(0xE0 | (cp >> 12));
        p[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        p[2] = (char)(0x80 | (cp & 0x3F));
        e->wlen += 3;
    } else {
        p[0] = (char)(0xF0 | (cp >> 18));
        p[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        p[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        p[3] = (char)(0x80 | (cp & 0x3F));
        e->wlen += 4;
    }
}

/* One normalized character into the pre-tokenizer: whitespace ends a word, punctuation is
 * a word of its own, anything else extends the word. */
static void feed(struct encoder *e, uint32_t c)
{
    enum dspy__wp_class k = c < 0x80 ? ascii_class((unsigned char)c) : dspy__wp_class_of(c);
    if (k == DSPY__WP_SPACE) {
        flush_word(e);
    } else if (k == DSPY__WP_PUNCT) {
        flush_word(e);
        add_char(e, c);
        flush_word(e);
    } else {
        add_char(e, c);
    }
}

dspy_status dspy__wordpiece_encode(const struct dspy__wordpiece *wp, const char *text, size_t len,
                                   int32_t *ids, size_t max_ids, size_t *n, struct dspy_error *err)
{
    *n = 0;
    if (max_ids < 2)
        return dspy__err(err, DSPY_EINVAL, "room for at least 2 token ids is needed");
    struct encoder e;
    e.wp = wp;
    e.ids = ids;
    e.n = 0;
    e.max = max_ids - 1;
    e.wlen = e.wchars = 0;
    emit(&e, wp->cls);
    size_t i = 0;
    while (i < len) {
        unsigned char b = (unsigned char)text[i];
        if (b < 0x80) { /* ASCII: lower-case in place, no table */
            i++;
            if (e.n >= e.max)
                continue;
            enum dspy__wp_class k = ascii_class(b);
            if (k == DSPY__WP_DROP)
                continue;
            feed(&e, b >= 'A' && b <= 'Z' ? (uint32_t)b + 32 : b);
            continue;
        }
        uint32_t cp;
        size_t step = dspy__utf8_decode(text, len, i, &cp);
        if (cp == 0xFFFD && step == 1)
            return dspy__err_at(err, DSPY_EUTF8, text, i, "invalid UTF-8 at byte %zu", i);
        i += step;
        if (e.n >= e.max)
            continue; /* budget full: only the UTF-8 check goes on */
        enum dspy__wp_class k = dspy__wp_class_of(cp);
        if (k == DSPY__WP_DROP)
            continue;
        if (k == DSPY__WP_SPACE) {
            flush_word(&e);
            continue;
        }
        uint32_t out[4];
        size_t m = dspy__wp_normalize(cp, out);
        if (k == DSPY__WP_CJK)
            flush_word(&e);
        for (size_t j = 0; j < m; j++)
            feed(&e, out[j]);
        if (k == DSPY__WP_CJK)
            flush_word(&e);
    }
    if (e.n < e.max)
        flush_word(&e);
    if (ids)
        ids[e.n] = wp->sep;
    *n = ++e.n;
    return DSPY_OK;
}

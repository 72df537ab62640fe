/* BERT uncased tokenization (vec layer): the basic tokenizer (clean text, CJK padding,
 * accent stripping, lower-casing, whitespace and punctuation splitting) and greedy
 * longest-match-first WordPiece over a vocab.txt, as the Hugging Face fast tokenizer that
 * sentence-transformers runs does it. The Unicode tables are generated (wordpiece_tables.c). */
#ifndef DSPY_VEC_WORDPIECE_H
#define DSPY_VEC_WORDPIECE_H

#include <stddef.h>
#include <stdint.h>

#include <dspyc/common.h>

/* ---- Generated tables (wordpiece_tables.c, scripts/gen_wordpiece_tables.py) ---- */

enum dspy__wp_class {
    DSPY__WP_OTHER = 0, /* part of a word */
    DSPY__WP_DROP,      /* removed: NUL, U+FFFD, control, format, unassigned, private use */
    DSPY__WP_SPACE,     /* separates words */
    DSPY__WP_PUNCT,     /* a word of its own */
    DSPY__WP_CJK        /* an ideograph: padded with spaces, so a word of its own */
};
/* The class of code points from `start` up to the next entry's start. */
struct dspy__wp_range {
    uint32_t start;
    uint8_t cls;
};
/* Code point `cp` becomes dspy__wp_pool[off .. off + len) (NFD, marks dropped, lower-cased);
 * code points not listed stay as they are. Sorted by cp. */
struct dspy__wp_map {
    uint32_t cp;
    uint16_t off;
    uint8_t len;
};
extern const struct dspy__wp_range dspy__wp_ranges[];
extern const size_t dspy__wp_n_ranges;
extern const struct dspy__wp_map dspy__wp_maps[];
extern const size_t dspy__wp_n_maps;
extern const uint32_t dspy__wp_pool[];

/* Class of one code point. */
enum dspy__wp_class dspy__wp_class_of(uint32_t cp);
/* What `cp` becomes after accent stripping and lower-casing: writes up to 4 code points
 * (Hangul syllables become 2 or 3 jamo; no table entry is longer) to out, returns the count
 * (0 for a dropped mark). */
size_t dspy__wp_normalize(uint32_t cp, uint32_t out[4]);

/* ---- Vocabulary and encoding ---- */

#define DSPY__WP_MAX_WORD_CHARS 100 /* longer words become [UNK] */

struct dspy__wordpiece;

/* Load vocab.txt (one token per line, line number = id). Errors name the file and line:
 * DSPY_EIO unreadable, DSPY_EPARSE empty/invalid UTF-8/duplicate token/no [UNK], [CLS],
 * [SEP]. */
dspy_status dspy__wordpiece_load(const char *path, struct dspy__wordpiece **out,
                                 struct dspy_error *err);
/* The same from the file's bytes; `name` is used in error messages. */
dspy_status dspy__wordpiece_parse(const char *text, size_t len, const char *name,
                                  struct dspy__wordpiece **out, struct dspy_error *err);
void dspy__wordpiece_free(struct dspy__wordpiece *wp);
size_t dspy__wordpiece_size(const struct dspy__wordpiece *wp);
/* Id of a whole vocabulary entry ("##ing" included), or -1. */
int32_t dspy__wordpiece_id(const struct dspy__wordpiece *wp, const char *tok, size_t len);

/* Tokenize UTF-8 text into [CLS] pieces... [SEP], keeping at most max_ids (>= 2) ids: word
 * pieces past max_ids - 2 are cut (the text is still checked to its end). Writes *n ids;
 * with ids NULL, only counts them (no memory in proportion to the text).
 * Thread-safe on a shared vocabulary. DSPY_EUTF8 with the byte offset for invalid UTF-8. */
dspy_status dspy__wordpiece_encode(const struct dspy__wordpiece *wp, const char *text, size_t len,
                                   int32_t *ids, size_t max_ids, size_t *n, struct dspy_error *err);

#endif

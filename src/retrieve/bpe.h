/* OpenAI BPE tokenization (retrieve layer): the generated Unicode classes its two
 * pre-tokenizers ask about (bpe_tables.c, scripts/gen_bpe_tables.py), and the split of a
 * text into the pieces that byte-pair merging then encodes; the rank-file parser for tests
 * and fuzzers. */
#ifndef DSPY_RETRIEVE_BPE_H
#define DSPY_RETRIEVE_BPE_H

#include <stddef.h>
#include <stdint.h>

#include <dspyc/tokens.h>

/* ---- Generated tables (bpe_tables.c) ---- */

enum dspy__bpe_class {
    DSPY__BPE_OTHER = 0, /* punctuation, symbols, controls, unassigned */
    DSPY__BPE_UPPER,     /* Lu, Lt */
    DSPY__BPE_LOWER,     /* Ll */
    DSPY__BPE_OLETTER,   /* Lm, Lo */
    DSPY__BPE_MARK,      /* Mn, Mc, Me */
    DSPY__BPE_NUMBER,    /* Nd, Nl, No */
    DSPY__BPE_SPACE      /* White_Space (what \s matches) */
};
/* The class of cp is dspy__bpe_stage2[dspy__bpe_stage1[cp >> 7]][cp & 127]. */
extern const uint16_t dspy__bpe_stage1[0x110000 >> 7];
extern const uint8_t dspy__bpe_stage2[][128];

static inline enum dspy__bpe_class dspy__bpe_class_of(uint32_t cp)
{
    return (enum dspy__bpe_class)dspy__bpe_stage2[dspy__bpe_stage1[cp >> 7]][cp & 127];
}

/* ---- Pre-tokenizers ---- */

enum dspy__bpe_split {
    DSPY__BPE_SPLIT_CL100K, /* cl100k_base's pattern */
    DSPY__BPE_SPLIT_O200K   /* o200k_base's pattern */
};

/* The end of the piece that starts at text[i] (i < len) under `split`'s pattern, as
 * tiktoken's regex finds it. The text must be valid UTF-8. */
size_t dspy__bpe_next_piece(enum dspy__bpe_split split, const char *text, size_t len, size_t i);

/* ---- The tokenizer from a rank file's bytes (tests and fuzzers) ---- */

/* dspy_tokenizer_open() over `len` bytes of rank-file text; `name` is used in errors. */
dspy_status dspy__tokenizer_parse(const char *encoding, const char *text, size_t len,
                                  const char *name, dspy_tokenizer **out, struct dspy_error *err);

#endif

/* Word lists of the substitution guard (cache layer): function words and synonym groups,
 * see src/cache/semantic_lexicon.c and docs/semantic-cache.md section 5. */
#ifndef DSPYC_SEMANTIC_LEXICON_H
#define DSPYC_SEMANTIC_LEXICON_H

#include <stdbool.h>
#include <stddef.h>

/* Whether a lower-cased word is a function or framing word ("the", "how", "explain"). */
bool dspy__semantic_function_word(const char *w);

/* Light stemming of a lower-cased word into out (size >= strlen(w) + 1): plural, -ed,
 * -ing, -ly, -est and a final e stripped, so that "baking" and "bake" meet. */
void dspy__semantic_stem(const char *w, char *out, size_t size);

/* The synonym group of a stem ("repair" and "fix" share one), or -1. */
int dspy__semantic_synonym_group(const char *stem);

#endif

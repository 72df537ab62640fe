/* Deterministic embeddings of the simulator (sim layer): feature hashing of words and
 * character trigrams into a fixed number of dimensions, L2-normalized, so texts that share
 * most words (near duplicates) get a high cosine similarity. */
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "sim_int.h"

#define WORD_WEIGHT 1.0f
#define TRIGRAM_WEIGHT 0.5f
#define MAX_WORD 64

static void add_feature(float *out, unsigned dim, uint64_t h, float w)
{
    out[h % dim] += (h >> 63) ? -w : w;
}

void dspy__sim_embed(const char *s, size_t n, float *out, unsigned dim)
{
    char word[MAX_WORD + 2];
    memset(out, 0, dim * sizeof(float));
    size_t i = 0;
    while (i < n) {
        while (i < n && !(isalnum((unsigned char)s[i]) || (unsigned char)s[i] >= 0x80))
            i++;
        size_t k = 0;
        word[k++] = ' ';
        while (i < n && (isalnum((unsigned char)s[i]) || (unsigned char)s[i] >= 0x80)) {
            if (k <= MAX_WORD)
                word[k++] = (char)tolower((unsigned char)s[i]);
            i++;
        }
        if (k == 1)
            continue;
        word[k++] = ' ';
        add_feature(out, dim, dspy__sim_hash(0x3e3dull, word + 1, k - 2), WORD_WEIGHT);
        for (size_t t = 0; t + 3 <= k; t++)
            add_feature(out, dim, dspy__sim_hash(0x7219ull, word + t, 3), TRIGRAM_WEIGHT);
    }
    double norm = 0;
    for (unsigned d = 0; d < dim; d++)
        norm += (double)out[d] * out[d];
    if (norm == 0) {
        /* No word at all (punctuation only): a fixed unit vector from the bytes. */
        out[dspy__sim_hash(0x0e11ull, s, n) % dim] = 1.0f;
        return;
    }
    float inv = (float)(1.0 / sqrt(norm));
    for (unsigned d = 0; d < dim; d++)
        out[d] *= inv;
}

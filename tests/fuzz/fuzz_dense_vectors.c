/* Fuzz target for dense.vec files: the input is checked as a vector file against a small
 * BM25 index built once. Nothing may crash or read out of bounds; a bad file is an error. */
#include <stdint.h>
#include <string.h>

#include <dspyc/dspyc.h>

#include "retrieve/retrieve_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static dspy_retriever *bm25;
    static const char corpus[] = "{\"id\": 1, \"text\": \"a\"}\n{\"id\": 2, \"text\": \"b\"}\n";
    struct dspy_error err;
    if (!bm25) {
        unsigned char *img = NULL;
        size_t n = 0;
        if (dspy__bm25_build_text("fuzz.jsonl", corpus, sizeof(corpus) - 1, &img, &n, NULL, &err) ||
            dspy__bm25_open_image(img, n, true, "fuzz", &bm25, &err))
            return 0;
    }
    dspy__dvec_validate(data, size, bm25, "fuzz", &err);
    return 0;
}

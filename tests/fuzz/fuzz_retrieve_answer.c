/* Fuzz target for the answers of remote retrieval services: the input is read both as a
 * ColBERTv2 search answer and as an embeddings answer of 1 to 4 rows (the first byte picks
 * the count). Nothing may crash, hang or leak; a bad answer is an error. */
#include <stdint.h>
#include <string.h>

#include <dspyc/dspyc.h>

#include "retrieve/retrieve_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dspy_error err;
    struct dspy_passage *p = NULL;
    size_t n = 0;
    if (!dspy__colbert_read_topk("fuzz", (const char *)data, size, 10, &p, &n, &err))
        dspy_passages_free(p, n);
    float *v = NULL;
    size_t dim = 0, rows = size ? 1 + data[0] % 4 : 1;
    if (!dspy__dense_read_embeddings("fuzz", (const char *)data, size, rows, &v, &dim, &err))
        dspy_free(v);
    return 0;
}

/* Fuzz target for passage corpora: the input is a JSON-lines corpus. It is indexed in
 * memory, the index opened (and so checked), and searched with queries cut from the input.
 * Nothing may crash, hang or leak; a bad corpus must fail with an error. */
#include <stdint.h>
#include <string.h>

#include <dspyc/dspyc.h>

#include "retrieve/retrieve_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dspy_error err;
    unsigned char *img = NULL;
    size_t n = 0;
    dspy_retriever *r = NULL;
    if (dspy__bm25_build_text("fuzz-corpus", (const char *)data, size, &img, &n, NULL, &err))
        return 0;
    if (dspy__bm25_open_image(img, n, true, "fuzz-index", &r, &err))
        __builtin_trap(); /* an image we built must pass our own checks */
    char q[64];
    size_t qlen = size < sizeof(q) - 1 ? size : sizeof(q) - 1;
    memcpy(q, data, qlen);
    q[qlen] = '\0';
    struct dspy_passage *p;
    size_t np;
    if (!dspy_retriever_search(r, q, 5, &p, &np, &err))
        dspy_passages_free(p, np);
    if (!dspy_retriever_search(r, "the a of", 1000, &p, &np, &err))
        dspy_passages_free(p, np);
    dspy_retriever_free(r);
    return 0;
}

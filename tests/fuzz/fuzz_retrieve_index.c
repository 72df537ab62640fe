/* Fuzz target for BM25 index files: the input is a bm25.idx image, as read from disk. It
 * is checked and, when accepted, searched. Nothing may crash, hang or leak; a damaged
 * image must be refused with DSPY_ECORRUPT. The checksum would hide most mutations from
 * the structural checks, so the input's checksum is recomputed first when its first byte
 * after the header says so (odd). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/dspyc.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "retrieve/retrieve_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dspy_error err;
    dspy_retriever *r = NULL;
    unsigned char *img = dspy_malloc(size ? size : 1);
    if (!img)
        return 0;
    memcpy(img, data, size);
    struct dspy__bm25_header h;
    if (size > sizeof(h) && (img[sizeof(h)] & 1)) {
        memcpy(&h, img, sizeof(h));
        h.checksum = XXH3_64bits(img + sizeof(h), size - sizeof(h));
        memcpy(img, &h, sizeof(h));
    }
    dspy_status rc = dspy__bm25_open_image(img, size, true, "fuzz-index", &r, &err);
    if (rc) {
        if (rc != DSPY_ECORRUPT && rc != DSPY_ENOMEM)
            __builtin_trap();
        return 0;
    }
    struct dspy_passage *p;
    size_t np;
    const char *queries[] = { "the", "fox dog", "a b c d e f", "zzz" };
    for (size_t i = 0; i < 4; i++)
        if (!dspy_retriever_search(r, queries[i], 10, &p, &np, &err))
            dspy_passages_free(p, np);
    dspy_retriever_free(r);
    return 0;
}

/* Fuzz target for the HNSW index file loader (vec layer): arbitrary bytes as an index file,
 * checked with and without the checksum (without, the structural checks see every input:
 * sizes, counts, levels, every link). A file that loads must then answer a search and take
 * an add without reading past anything. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/vec.h>

#include "vec/vec_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int verify = 0; verify < 2; verify++) {
        dspy_vec_hnsw *h = NULL;
        struct dspy_error err;
        if (dspy__vec_hnsw_load_mem(data, size, "fuzz", verify, &h, &err))
            continue;
        size_t d = dspy_vec_hnsw_dim(h);
        if (d <= 4096) {
            float *q = calloc(d, sizeof(float)), sc[8];
            uint32_t nodes[8];
            size_t found;
            if (q) {
                q[0] = 1;
                dspy_vec_hnsw_search(h, q, 8, 16, sc, nodes, &found, NULL);
                dspy_vec_hnsw_add(h, 7, q, NULL, NULL);
                dspy_vec_hnsw_search(h, q, 8, 16, sc, nodes, &found, NULL);
                free(q);
            }
        }
        dspy_vec_hnsw_free(h);
    }
    return 0;
}

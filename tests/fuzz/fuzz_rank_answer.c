/* Fuzz target for a rank step's reading of an LM's ranking: the input is the
 * ranked_documents text over five documents. Nothing may crash, hang or leak, and the
 * order given back is always a permutation of the documents. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/dspyc.h>

#include "program/program_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static json_t *docs;
    size_t order[5];
    bool seen[5] = { false };
    if (!docs)
        docs = json_pack("[sssss]", "Paris is the capital of France.", "Bananas are yellow.",
                         "The Seine flows through Paris.", "[2] a mark", "");
    dspy__rank_read((const char *)data, size, docs, order);
    for (int i = 0; i < 5; i++) {
        if (order[i] >= 5 || seen[order[i]])
            abort();
        seen[order[i]] = true;
    }
    return 0;
}

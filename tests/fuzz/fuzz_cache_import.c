/* Fuzz target for the cache import line reader (cache layer): the input is a file of export
 * lines read by dspy_cache_import() into a memory cache. Whatever it holds, the import must
 * end with a status, never a crash, and a parse error must say where. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/dspyc.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size)
        return 0;
    FILE *in = fmemopen((void *)data, size, "rb");
    if (!in)
        return 0;
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    dspy_cache *c = NULL;
    if (dspy_cache_new(&o, &c, NULL)) {
        fclose(in);
        return 0;
    }
    size_t count = 0;
    struct dspy_error err;
    dspy_error_clear(&err);
    dspy_status rc = dspy_cache_import(c, in, NULL, &count, &err);
    fclose(in);
    if (rc == DSPY_EPARSE && !strstr(err.message, "line") && !strstr(err.message, "cache import")) {
        fprintf(stderr, "fuzz_cache_import: parse error without a place: %s\n", err.message);
        abort();
    }
    (void)count;
    dspy_cache_free(c);
    return 0;
}

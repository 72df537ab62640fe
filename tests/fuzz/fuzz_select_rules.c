/* Fuzz target for the model selector's rules file: the input is the file. A bad file must
 * fail with an error; a good one must give every record (the input itself as a field
 * value) a level within bounds and a route to a candidate. Nothing may crash or leak. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <dspyc/dspyc.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static dspy_price_table *prices;
    const char *models[] = { "gpt-4o", "gpt-4o-mini", "o1" };
    char path[64];
    struct dspy_error err;
    dspy_selector *s = NULL;
    FILE *f = tmpfile();
    if (!f || (!prices && dspy_price_table_new(NULL, &prices, NULL)))
        __builtin_trap();
    if (size && fwrite(data, 1, size, f) != size)
        __builtin_trap();
    fflush(f);
    snprintf(path, sizeof(path), "/dev/fd/%d", fileno(f));
    if (!dspy_selector_new(models, 3, prices, path, &s, &err)) {
        json_t *rec = json_pack("{s:s%, s:s}", "question", (const char *)data, size, "context",
                                "c");
        if (rec) {
            int level = dspy_selector_level(s, rec);
            if (level < 0 || level > DSPY_SELECT_MAX_LEVEL ||
                dspy_selector_route(s, rec) >= dspy_selector_count(s))
                __builtin_trap();
        }
        json_decref(rec);
        json_decref(dspy_selector_json(s));
        dspy_selector_free(s);
    } else if (!err.message[0]) {
        __builtin_trap(); /* a refusal says why */
    }
    fclose(f);
    return 0;
}

/* Fuzz target for the semantic cache level's parsers: the guards' word splitter on two
 * arbitrary texts (first byte even), and the record log replayed at start (first byte odd:
 * the rest, after the log's magic, is the file). Every input must end in a verdict or a
 * cache that opens with the damaged tail cut, never a crash or a read past the end. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dspyc/cache.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];

static void cleanup(void)
{
    static const char *const files[] = { "semantic.log", "semantic.log.tmp", "data.mdb",
                                         "lock.mdb" };
    char path[128];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void log_case(const uint8_t *data, size_t size)
{
    char path[128];
    if (!dir[0]) {
        snprintf(dir, sizeof(dir), "/tmp/dspyc-fuzz-semantic-XXXXXX");
        if (!mkdtemp(dir))
            abort();
        atexit(cleanup);
    }
    snprintf(path, sizeof(path), "%s/semantic.log", dir);
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    fwrite("dspyc-semantic1\n", 1, 16, f);
    fwrite(data, 1, size, f);
    fclose(f);
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    dspy_cache *c = NULL;
    struct dspy_cache_stats st;
    o.levels = DSPY_CACHE_L3 | DSPY_CACHE_SEMANTIC;
    o.disk_path = dir;
    o.embed_model = "/nonexistent"; /* the log is read without the model */
    if (dspy_cache_new(&o, &c, NULL))
        abort();
    dspy_cache_stats(c, &st);
    if (st.sem_entries > size)
        abort();
    dspy_cache_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    if (data[0] & 1) {
        log_case(data + 1, size - 1);
        return 0;
    }
    size_t half = (size - 1) / 2;
    const char *a = (const char *)data + 1, *b = a + half;
    unsigned g = dspy_cache_semantic_guard(a, half, b, size - 1 - half, DSPY_SEMANTIC_GUARDS_ALL);
    if (g & (g - 1)) /* one bit at most */
        abort();
    if (dspy_cache_semantic_guard(a, half, a, half, DSPY_SEMANTIC_GUARDS_ALL))
        abort(); /* a text never differs from itself */
    return 0;
}

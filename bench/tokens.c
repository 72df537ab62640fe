/* BPE tokenization throughput (bench): dspy_tokenizer_encode over one text file, single
 * thread, the best of R rounds after a warm-up. Prints one JSON line: encoding, bytes,
 * tokens, seconds of the best round and MB/s. bench/tokens_vs_tiktoken.py runs it beside
 * tiktoken on the same text. Fixed output format; not a pass/fail test.
 *
 * usage: bench_tokens --encoding NAME --file TEXT [--rounds R] [--ranks DIR] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/dspyc.h>

#include "base/clock.h"

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    char *data = malloc((size_t)size + 1);
    if (!data || fread(data, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "%s: read failed\n", path);
        exit(2);
    }
    fclose(f);
    *len = (size_t)size;
    return data;
}

int main(int argc, char **argv)
{
    const char *encoding = "o200k_base", *file = NULL, *ranks = NULL;
    long rounds = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--encoding"))
            encoding = argv[i + 1];
        else if (!strcmp(argv[i], "--file"))
            file = argv[i + 1];
        else if (!strcmp(argv[i], "--rounds"))
            rounds = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--ranks"))
            ranks = argv[i + 1];
    }
    if (!file || rounds < 1) {
        fprintf(stderr, "usage: bench_tokens --encoding NAME --file TEXT [--rounds R] "
                        "[--ranks DIR]\n");
        return 2;
    }
    size_t len;
    char *text = read_all(file, &len);
    dspy_tokenizer *t;
    struct dspy_error err;
    uint64_t t0 = dspy__now_ns();
    if (dspy_tokenizer_open(encoding, ranks, &t, &err)) {
        fprintf(stderr, "bench_tokens: %s\n", err.message);
        return 2;
    }
    double open_s = (double)(dspy__now_ns() - t0) / 1e9, best = 1e30;
    size_t n = 0;
    for (long r = 0; r <= rounds; r++) { /* round 0 warms up */
        uint32_t *ids;
        t0 = dspy__now_ns();
        if (dspy_tokenizer_encode(t, text, len, 0, &ids, &n, &err)) {
            fprintf(stderr, "bench_tokens: %s\n", err.message);
            return 2;
        }
        double s = (double)(dspy__now_ns() - t0) / 1e9;
        dspy_free(ids);
        if (r && s < best)
            best = s;
    }
    printf("{\"encoding\":\"%s\",\"bytes\":%zu,\"tokens\":%zu,\"open_s\":%.4f,\"best_s\":%.6f,"
           "\"mb_s\":%.2f}\n",
           encoding, len, n, open_s, best, (double)len / 1e6 / best);
    dspy_tokenizer_free(t);
    free(text);
    return 0;
}

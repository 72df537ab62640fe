/* MiniLM embedding throughput (bench): dspy_embedder_embed over the lines of a text file (or
 * built-in short sentences) in batches of B on T threads, for about S seconds after a warm-up.
 * Prints one JSON line per batch size: sentences/s, ms per batch (median and p90), CPU
 * seconds per sentence. bench/embed_vs_peers.py runs it beside sentence-transformers and
 * onnxruntime on the same texts. Fixed output format; not a pass/fail test.
 *
 * usage: bench_embed [--model DIR] [--texts FILE] [--batch 1,32] [--threads T] [--seconds S] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>

#include <dspyc/dspyc.h>
#include <dspyc/embed.h>

static const char *const builtin[] = {
    "How do I cancel my subscription?", "What is the capital of France?",
    "Track my order 48213 please",      "Is ibuprofen safe with alcohol?",
    "The weather is lovely today.",     "Where can I find the invoice for May?",
    "Reset my password, I forgot it",   "Which plan includes priority support?",
};

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static char **read_lines(const char *path, size_t *n)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        exit(2);
    }
    char **v = NULL, line[65536];
    size_t cap = 0;
    *n = 0;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            v = realloc(v, cap * sizeof(*v));
        }
        v[(*n)++] = strdup(line);
    }
    fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *texts_path = NULL, *batches = "1,32";
    unsigned threads = 1;
    double seconds = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model"))
            model = argv[i + 1];
        else if (!strcmp(argv[i], "--texts"))
            texts_path = argv[i + 1];
        else if (!strcmp(argv[i], "--batch"))
            batches = argv[i + 1];
        else if (!strcmp(argv[i], "--threads"))
            threads = (unsigned)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seconds"))
            seconds = atof(argv[i + 1]);
        else {
            fprintf(stderr, "bench_embed: unknown flag %s\n", argv[i]);
            return 2;
        }
    }
    size_t n;
    const char *const *texts = builtin;
    n = sizeof(builtin) / sizeof(builtin[0]);
    if (texts_path)
        texts = (const char *const *)read_lines(texts_path, &n);
    struct dspy_embedder_options o = DSPY_EMBEDDER_OPTIONS_INIT;
    o.model_dir = model;
    o.threads = threads;
    dspy_embedder *e;
    struct dspy_error err;
    uint64_t t0 = dspy_clock_ns();
    if (dspy_embedder_new(&o, &e, &err)) {
        fprintf(stderr, "bench_embed: %s\n", err.message);
        return 2;
    }
    double load_ms = (double)(dspy_clock_ns() - t0) / 1e6;
    char *list = strdup(batches);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        size_t b = (size_t)atoi(tok);
        if (b < 1)
            continue;
        const char **batch = malloc(b * sizeof(*batch));
        float *out = malloc(b * DSPY_EMBED_DIM * sizeof(float));
        size_t cap = 1 << 16, rounds = 0, next = 0;
        double *ms = malloc(cap * sizeof(double));
        for (int warm = 0; warm < 3; warm++) {
            for (size_t k = 0; k < b; k++)
                batch[k] = texts[(next + k) % n];
            dspy_embedder_embed(e, batch, NULL, b, out, NULL);
        }
        double c0 = cpu_s();
        uint64_t start = dspy_clock_ns(), end = start + (uint64_t)(seconds * 1e9);
        uint64_t now = start;
        while ((now < end || rounds < 3) && rounds < cap) {
            for (size_t k = 0; k < b; k++)
                batch[k] = texts[(next + k) % n];
            next += b;
            uint64_t a = dspy_clock_ns();
            if (dspy_embedder_embed(e, batch, NULL, b, out, &err)) {
                fprintf(stderr, "bench_embed: %s\n", err.message);
                return 2;
            }
            now = dspy_clock_ns();
            ms[rounds++] = (double)(now - a) / 1e6;
        }
        double wall = (double)(now - start) / 1e9, cpu = cpu_s() - c0;
        qsort(ms, rounds, sizeof(double), cmp_double);
        printf("{\"impl\":\"dspyc\",\"batch\":%zu,\"threads\":%u,\"sentences\":%zu,"
               "\"sentences_per_s\":%.1f,\"ms_per_batch_p50\":%.3f,\"ms_per_batch_p90\":%.3f,"
               "\"cpu_ms_per_sentence\":%.3f,\"load_ms\":%.1f}\n",
               b, threads, rounds * b, (double)(rounds * b) / wall, ms[rounds / 2],
               ms[rounds * 9 / 10], cpu * 1e3 / (double)(rounds * b), load_ms);
        fflush(stdout);
        free(ms);
        free(batch);
        free(out);
    }
    free(list);
    dspy_embedder_free(e);
    return 0;
}

/* Semantic cache precision and lookup latency (bench). Precision: over the labelled pairs
 * of examples/semantic/pairs.jsonl (scripts/gen_semantic_pairs.py), the level's decision for
 * "b after a was stored" (same partition, cosine >= threshold, no guard fires) at several
 * thresholds: hit rate on the pairs that should hit, false-hit rate on those that must miss,
 * each with a Wilson 95 % interval, per kind; beside it, in the same run, cosine alone on
 * the last message (no partitions, no guards: how GPTCache's default keys and decides).
 * Latency: one query's embedding (one thread), then the level's exact search (f32 inner
 * products over one partition, best candidates, guards) over N synthetic random unit
 * vectors (N = 10k and 1M; the int8 stored scan beside it, and the level's int8 path from
 * semantic_scan8_min slots: int8 top 32 re-ranked in f32, with how often it finds the f32
 * scan's best for near-duplicate queries), p50 / p99. Then the HNSW index
 * large partitions use (the level's M, efConstruction, efSearch): built one insert at a
 * time over N unit vectors (--index-data: clustered, the default, N/100 random topic
 * centres with each vector at cosine ~0.75 to its own, as embeddings of real requests
 * group; or random, uniform on the sphere, the worst case for a graph index), at
 * --index-sizes (default 10k and 100k; 1M takes many
 * minutes on two cores, so it is asked for with --index-sizes 1000000), time per insert,
 * file save and load time, and per query: the embedding of one projection plus the index
 * search, timed together (p50 / p99), for near-duplicate queries (a stored vector plus
 * noise, cosine about 0.9: whether its record comes back is the hit recall) and for
 * random ones (recall@10 against the exact scan). FAISS's IndexHNSWFlat is the peer, run
 * by bench/semantic_index_vs_faiss.py on the same kind of data. Figures, never pass/fail.
 *
 * usage: bench_semantic_cache [--pairs FILE] [--model DIR] [--sizes 10000,1000000]
 *                             [--index-sizes 10000,100000] [--ef-search 16,32,64,128]
 *                             [--ef-construction 100] [--index-data clustered|random]
 *                             [--index-dir DIR] [--queries Q]
 *                             [--device cpu|cuda]
 *                             [--dspy-template] [--show-errors] [--split dev|heldout]
 * --dspy-template wraps each question in the user message DSPy's ChatAdapter sends (what
 * `dspyc run --signature "question -> answer"` projects). --show-errors lists the pairs the
 * level decides wrongly at the default threshold (false hits, missed hits), with the cosine
 * and the guard that fired. --split keeps the pairs of one split ("dev": those the guards
 * were written against; "heldout": written afterwards, see scripts/gen_semantic_pairs.py). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <dspyc/dspyc.h>
#include <dspyc/embed.h>
#include <dspyc/vec.h>

#define DIM DSPY_EMBED_DIM
#define NTHR 8
static const double thresholds[NTHR] = { 0.70, 0.75, 0.80, 0.85, 0.88, 0.90, 0.95, 0.98 };
#define MAXKINDS 16

struct pair {
    char kind[32];
    bool expect_hit;
    bool same_part;
    unsigned guard;
    float cos;
    char *ta, *tb;
};

static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    qsort(v, n, sizeof(*v), cmp_double);
    size_t i = (size_t)ceil(p / 100.0 * (double)n);
    return v[i ? i - 1 : 0];
}

/* Wilson score interval, 95 %. */
static void wilson(size_t k, size_t n, double *lo, double *hi)
{
    if (!n) {
        *lo = *hi = 0;
        return;
    }
    double z = 1.959964, p = (double)k / (double)n, d = 1 + z * z / (double)n;
    double c = (p + z * z / (2.0 * (double)n)) / d;
    double h = z * sqrt(p * (1 - p) / (double)n + z * z / (4.0 * (double)n * (double)n)) / d;
    *lo = c - h < 0 ? 0 : c - h;
    *hi = c + h > 1 ? 1 : c + h;
}

static bool served(const struct pair *p, double thr, bool level)
{
    if (level)
        return p->same_part && p->cos >= (float)thr && !p->guard;
    return p->cos >= (float)thr; /* cosine alone on the last message */
}

static void report(const struct pair *ps, size_t n, bool level)
{
    char kinds[MAXKINDS][32];
    size_t nk = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        while (k < nk && strcmp(kinds[k], ps[i].kind))
            k++;
        if (k == nk && nk < MAXKINDS)
            snprintf(kinds[nk++], sizeof(kinds[0]), "%s", ps[i].kind);
    }
    printf("\n%s\n", level ? "the semantic level (partitions + guards + threshold)"
                           : "peer in this run: cosine alone on the last message "
                             "(no partitions, no guards)");
    printf("%-6s %-22s %-22s", "thr", "hit rate [95% CI]", "false hits [95% CI]");
    for (size_t k = 0; k < nk; k++)
        printf(" %8.8s", kinds[k]);
    printf("\n");
    for (int t = 0; t < NTHR; t++) {
        size_t h = 0, hn = 0, f = 0, fn = 0;
        for (size_t i = 0; i < n; i++) {
            bool s = served(&ps[i], thresholds[t], level);
            if (ps[i].expect_hit) {
                hn++;
                h += s;
            } else {
                fn++;
                f += s;
            }
        }
        double hl, hh, fl, fh;
        char a[64], b[64];
        wilson(h, hn, &hl, &hh);
        wilson(f, fn, &fl, &fh);
        snprintf(a, sizeof(a), "%5.1f%% [%4.1f,%5.1f]", 100.0 * (double)h / (double)hn, 100 * hl,
                 100 * hh);
        snprintf(b, sizeof(b), "%5.1f%% [%4.1f,%5.1f]", 100.0 * (double)f / (double)fn, 100 * fl,
                 100 * fh);
        printf("%-6.2f %-22s %-22s", thresholds[t], a, b);
        for (size_t k = 0; k < nk; k++) {
            size_t s = 0, m = 0;
            for (size_t i = 0; i < n; i++)
                if (!strcmp(ps[i].kind, kinds[k])) {
                    m++;
                    s += served(&ps[i], thresholds[t], level);
                }
            printf(" %3zu/%-4zu", s, m);
        }
        printf("\n");
    }
}

static void rand_unit(float *v, unsigned *seed)
{
    double s = 0;
    for (int i = 0; i < DIM; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        double u1 = ((*seed >> 8) + 0.5) / 16777216.0;
        *seed = *seed * 1664525u + 1013904223u;
        double u2 = ((*seed >> 8) + 0.5) / 16777216.0;
        v[i] = (float)(sqrt(-2 * log(u1)) * cos(6.283185307 * u2));
        s += (double)v[i] * v[i];
    }
    for (int i = 0; i < DIM; i++)
        v[i] = (float)(v[i] / sqrt(s));
}

/* A stored vector plus Gaussian noise scaled so the cosine with it is about `cos`. */
static void near_copy(const float *x, float cos, float *out, unsigned *seed)
{
    float noise[DIM];
    rand_unit(noise, seed);
    double t = sqrt(1.0 / ((double)cos * cos) - 1.0);
    for (int i = 0; i < DIM; i++)
        out[i] = (float)(x[i] + t * noise[i]);
    double s = 0;
    for (int i = 0; i < DIM; i++)
        s += (double)out[i] * out[i];
    for (int i = 0; i < DIM; i++)
        out[i] = (float)(out[i] / sqrt(s));
}

static void index_bench(dspy_embedder *emb1, struct pair *ps, size_t npairs, const char *sizes,
                        const char *efs_s, const char *dir, unsigned efc, bool clustered)
{
    printf("\nHNSW index (M %d, efConstruction %u, cache default efSearch %d; one thread; "
           "candidates k = 4 as the level asks):\n",
           16, efc, DSPY_CACHE_DEFAULT_SEMANTIC_EF_SEARCH);
    for (const char *s = sizes; *s;) {
        size_t N = (size_t)strtoull(s, NULL, 10);
        s += strcspn(s, ",");
        if (*s == ',')
            s++;
        if (!N)
            continue;
        float *x = malloc(N * DIM * sizeof(float));
        if (!x) {
            fprintf(stderr, "bench_semantic_cache: no memory for %zu vectors\n", N);
            return;
        }
        unsigned seed = 777;
        if (clustered) {
            /* topics: N/100 random centres, each vector at cosine ~0.75 to its own */
            size_t nc = N / 100 ? N / 100 : 1;
            float *c = malloc(nc * DIM * sizeof(float));
            for (size_t i = 0; i < nc; i++)
                rand_unit(c + i * DIM, &seed);
            for (size_t i = 0; i < N; i++) {
                seed = seed * 1664525u + 1013904223u;
                near_copy(c + (size_t)(seed % nc) * DIM, 0.75f, x + i * DIM, &seed);
            }
            free(c);
        } else {
            for (size_t i = 0; i < N; i++)
                rand_unit(x + i * DIM, &seed);
        }
        struct dspy_vec_hnsw_options o = DSPY_VEC_HNSW_OPTIONS_INIT;
        dspy_vec_hnsw *h = NULL, *g = NULL;
        struct dspy_error err;
        o.dim = DIM;
        o.m = 16;
        o.ef_construction = efc;
        o.ef_search = DSPY_CACHE_DEFAULT_SEMANTIC_EF_SEARCH;
        dspy_vec_hnsw_new(&o, &h, NULL);
        double t0 = now_ms(), last = t0, c0 = cpu_ms();
        for (size_t i = 0; i < N; i++) {
            if (dspy_vec_hnsw_add(h, i, x + i * DIM, NULL, &err)) {
                fprintf(stderr, "bench_semantic_cache: %s\n", err.message);
                return;
            }
            if (N >= 200000 && (i + 1) % 100000 == 0) {
                fprintf(stderr, "  built %zu of %zu (%.0f us per insert for the last 100k)\n",
                        i + 1, N, (now_ms() - last) / 100);
                last = now_ms();
            }
        }
        double build_ms = now_ms() - t0, build_cpu = cpu_ms() - c0;
        char path[4096];
        snprintf(path, sizeof(path), "%s/bench-semantic-%zu.hnsw", dir, N);
        t0 = now_ms();
        dspy_status rc = dspy_vec_hnsw_save(h, path, &err);
        double save_ms = now_ms() - t0;
        t0 = now_ms();
        if (!rc)
            rc = dspy_vec_hnsw_load(path, &g, &err);
        double load_ms = now_ms() - t0;
        if (rc)
            fprintf(stderr, "bench_semantic_cache: %s\n", err.message);
        unlink(path);
        printf("  %zu %s vectors: build %.1f s, %.0f us per insert (%.0f us of CPU: the machine's "
               "load shows in the difference); %.1f MB in memory; file save %.2f s, load %.2f s "
               "(what a start-up costs instead of a rebuild)\n",
               N, clustered ? "clustered" : "random", build_ms / 1e3, build_ms * 1e3 / (double)N,
               build_cpu * 1e3 / (double)N, (double)dspy_vec_hnsw_bytes(h) / 1e6, save_ms / 1e3,
               load_ms / 1e3);
        dspy_vec_hnsw_free(g);
        size_t nq = 200;
        float *q = malloc(nq * DIM * sizeof(float));
        size_t *planted = malloc(nq * sizeof(size_t));
        double *lat = malloc(nq * sizeof(double)), *slat = malloc(nq * sizeof(double));
        double *clat = malloc(nq * sizeof(double));
        for (const char *e = efs_s; *e;) {
            unsigned ef = (unsigned)strtoul(e, NULL, 10);
            e += strcspn(e, ",");
            if (*e == ',')
                e++;
            if (!ef)
                continue;
            /* near-duplicates: embedding + search, timed together */
            size_t found_planted = 0;
            for (size_t i = 0; i < nq; i++) {
                seed = seed * 1664525u + 1013904223u;
                planted[i] = (size_t)seed % N;
                near_copy(x + planted[i] * DIM, 0.9f, q + i * DIM, &seed);
            }
            for (size_t i = 0; i < nq; i++) {
                float sc[4], v[DIM];
                uint32_t nodes[4];
                size_t found = 0;
                const char *one = ps[i % npairs].tb;
                double st = now_ms(), cst = cpu_ms();
                dspy_embedder_embed(emb1, &one, NULL, 1, v, NULL);
                double mid = now_ms();
                dspy_vec_hnsw_search(h, q + i * DIM, 4, ef, sc, nodes, &found, NULL);
                lat[i] = now_ms() - st;
                clat[i] = cpu_ms() - cst;
                slat[i] = now_ms() - mid;
                for (size_t j = 0; j < found; j++)
                    found_planted += nodes[j] == planted[i];
            }
            double p50 = pct(lat, nq, 50), p99 = pct(lat, nq, 99);
            double s50 = pct(slat, nq, 50), s99 = pct(slat, nq, 99);
            double c50 = pct(clat, nq, 50), c99 = pct(clat, nq, 99);
            /* random queries: recall@10 against the exact scan (the hard case) */
            size_t hit = 0, nr = N >= 500000 ? 20 : 100;
            for (size_t i = 0; i < nr; i++) {
                float qq[DIM], sc[10], best[10];
                uint32_t nodes[10];
                size_t ids[10], found = 0;
                rand_unit(qq, &seed);
                for (int j = 0; j < 10; j++) {
                    best[j] = -2;
                    ids[j] = SIZE_MAX;
                }
                for (size_t r = 0; r < N; r++) {
                    float d = dspy_vec_dot(qq, x + r * DIM, DIM);
                    if (d <= best[9])
                        continue;
                    int j = 9;
                    while (j > 0 && best[j - 1] < d) {
                        best[j] = best[j - 1];
                        ids[j] = ids[j - 1];
                        j--;
                    }
                    best[j] = d;
                    ids[j] = r;
                }
                dspy_vec_hnsw_search(h, qq, 10, ef, sc, nodes, &found, NULL);
                for (int j = 0; j < 10; j++)
                    for (size_t k = 0; k < found; k++)
                        hit += nodes[k] == ids[j];
            }
            printf("    efSearch %3u: lookup, embedding included, p50 %.2f ms p99 %.2f ms wall, "
                   "%.2f / %.2f ms of CPU (search alone p50 %.3f ms p99 %.3f ms wall); "
                   "near-duplicate found %zu/%zu; random queries recall@10 vs exact %.3f\n",
                   ef, p50, p99, c50, c99, s50, s99, found_planted, nq,
                   (double)hit / (10.0 * (double)nr));
        }
        dspy_vec_hnsw_free(h);
        free(q);
        free(planted);
        free(lat);
        free(slat);
        free(clat);
        free(x);
    }
}

/* The level's int8 path (cache_semantic.c, candidates()): the int8 copy's best 32, each
 * re-scored in f32 against the stored vector; the best id in *best. */
static void rerank8(dspy_vec *vec, const dspy_vec_matrix *m8, const float *x, const float *q,
                    int64_t *best)
{
    float sc[32], top = -2;
    int64_t ids[32];
    dspy_vec_topk(vec, m8, DSPY_VEC_IP, q, 1, DIM, 32, sc, ids, NULL);
    for (int i = 0; i < 32; i++) {
        if (ids[i] < 0)
            continue;
        float e = dspy_vec_dot(q, x + (size_t)ids[i] * DIM, DIM);
        if (e > top) {
            top = e;
            *best = ids[i];
        }
    }
}

int main(int argc, char **argv)
{
    const char *pairs_path = "examples/semantic/pairs.jsonl", *model = NULL, *device = "cpu";
    const char *sizes_s = "10000,1000000", *index_sizes_s = "10000,100000";
    const char *efs_s = "16,32,64,128", *index_dir = ".", *index_data = "clustered";
    const char *split = NULL;
    long queries = 200;
    unsigned efc = 100; /* the level's (HNSW_EF_CONSTRUCTION in src/cache/cache_semantic.c) */
    bool templated = false, show_errors = false;
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc && strcmp(argv[i], "--dspy-template") &&
            strcmp(argv[i], "--show-errors")) {
            fprintf(stderr, "bench_semantic_cache: %s needs a value\n", argv[i]);
            return 2;
        }
        if (!strcmp(argv[i], "--dspy-template")) {
            templated = true;
            i--;
        } else if (!strcmp(argv[i], "--show-errors")) {
            show_errors = true;
            i--;
        } else if (!strcmp(argv[i], "--pairs"))
            pairs_path = argv[i + 1];
        else if (!strcmp(argv[i], "--model"))
            model = argv[i + 1];
        else if (!strcmp(argv[i], "--sizes"))
            sizes_s = argv[i + 1];
        else if (!strcmp(argv[i], "--index-sizes"))
            index_sizes_s = argv[i + 1];
        else if (!strcmp(argv[i], "--ef-search"))
            efs_s = argv[i + 1];
        else if (!strcmp(argv[i], "--index-data"))
            index_data = argv[i + 1];
        else if (!strcmp(argv[i], "--ef-construction"))
            efc = (unsigned)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--index-dir"))
            index_dir = argv[i + 1];
        else if (!strcmp(argv[i], "--queries"))
            queries = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--device"))
            device = argv[i + 1];
        else if (!strcmp(argv[i], "--split"))
            split = argv[i + 1];
        else {
            fprintf(stderr, "bench_semantic_cache: unknown flag %s\n", argv[i]);
            return 2;
        }
    }
    struct dspy_error err;
    struct dspy_embedder_options eo = DSPY_EMBEDDER_OPTIONS_INIT;
    dspy_embedder *emb = NULL, *emb1 = NULL;
    eo.model_dir = model;
    eo.threads = 0;
    if (dspy_embedder_new(&eo, &emb, &err)) {
        fprintf(stderr, "bench_semantic_cache: %s\n", err.message);
        return 1;
    }
    eo.threads = 1;
    if (dspy_embedder_new(&eo, &emb1, &err)) {
        fprintf(stderr, "bench_semantic_cache: %s\n", err.message);
        return 1;
    }
    /* ---- the pairs ---- */
    FILE *f = fopen(pairs_path, "r");
    if (!f) {
        perror(pairs_path);
        return 1;
    }
    struct pair *ps = NULL;
    size_t n = 0, cap = 0;
    char line[1 << 16];
    while (fgets(line, sizeof(line), f)) {
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        if (!o) {
            fprintf(stderr, "%s:%zu: %s\n", pairs_path, n + 1, je.text);
            return 1;
        }
        const char *sp = json_string_value(json_object_get(o, "split"));
        if (split && (!sp || strcmp(sp, split))) {
            json_decref(o);
            continue;
        }
        if (n == cap)
            ps = realloc(ps, (cap = cap ? 2 * cap : 512) * sizeof(*ps));
        struct pair *p = &ps[n++];
        memset(p, 0, sizeof(*p));
        snprintf(p->kind, sizeof(p->kind), "%s", json_string_value(json_object_get(o, "kind")));
        p->expect_hit = !strcmp(json_string_value(json_object_get(o, "expect")), "hit");
        json_t *a = json_object_get(o, "a"), *b = json_object_get(o, "b");
        struct dspy_cache_key ka, kb;
        size_t la, lb;
        if (templated) { /* the user message DSPy's ChatAdapter sends for `question` */
            json_t *r[2] = { a, b };
            for (int k = 0; k < 2; k++) {
                json_t *msgs = json_object_get(r[k], "messages");
                json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
                char w[4096];
                snprintf(w, sizeof(w),
                         "[[ ## question ## ]]\n%s\n\nRespond with the corresponding output "
                         "fields, starting with the field `[[ ## answer ## ]]`, and then "
                         "ending with the marker for `[[ ## completed ## ]]`.",
                         json_string_value(json_object_get(last, "content")));
                json_object_set_new(last, "content", json_string(w));
            }
        }
        if (dspy_cache_semantic_partition(a, NULL, DSPY_SEMANTIC_LAST_USER, &ka, &p->ta, &la,
                                          NULL) ||
            dspy_cache_semantic_partition(b, NULL, DSPY_SEMANTIC_LAST_USER, &kb, &p->tb, &lb,
                                          NULL)) {
            fprintf(stderr, "%s:%zu: a request with nothing to project\n", pairs_path, n);
            return 1;
        }
        p->same_part = !memcmp(ka.bytes, kb.bytes, 16);

        p->guard = dspy_cache_semantic_guard(p->tb, lb, p->ta, la, DSPY_SEMANTIC_GUARDS_ALL);
        json_decref(o);
    }
    fclose(f);
    const char **texts = malloc(2 * n * sizeof(*texts));
    float *vecs = malloc(2 * n * DIM * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        texts[2 * i] = ps[i].ta;
        texts[2 * i + 1] = ps[i].tb;
    }
    double t0 = now_ms();
    if (dspy_embedder_embed(emb, texts, NULL, 2 * n, vecs, &err)) {
        fprintf(stderr, "bench_semantic_cache: %s\n", err.message);
        return 1;
    }
    printf("semantic cache bench: %zu labelled pairs from %s%s%s; model %s; %zu texts "
           "embedded in %.0f ms\n",
           n, pairs_path, split ? ", split " : "", split ? split : "", dspy_embedder_model_dir(emb),
           2 * n, now_ms() - t0);
    for (size_t i = 0; i < n; i++)
        ps[i].cos = dspy_vec_dot(vecs + 2 * i * DIM, vecs + (2 * i + 1) * DIM, DIM);
    report(ps, n, true);
    report(ps, n, false);
    if (show_errors) /* the level's wrong decisions at the default threshold */
        for (size_t i = 0; i < n; i++) {
            bool s = served(&ps[i], DSPY_CACHE_DEFAULT_SEMANTIC_THRESHOLD, true);
            if (s != ps[i].expect_hit)
                printf("%s %-10s cos %.3f guard %-8s | %s | %s\n", s ? "FALSE HIT" : "MISSED   ",
                       ps[i].kind, ps[i].cos,
                       ps[i].guard ? dspy_cache_semantic_guard_name(ps[i].guard) : "-", ps[i].ta,
                       ps[i].tb);
        }
    /* cosine distribution per kind, for choosing the threshold */
    printf("\ncosine per kind (min / median / max):");
    for (size_t i = 0; i < n; i++) {
        if (i && !strcmp(ps[i].kind, ps[i - 1].kind))
            continue;
        double c[512];
        size_t m = 0;
        for (size_t j = i; j < n && m < 512 && !strcmp(ps[j].kind, ps[i].kind); j++)
            c[m++] = ps[j].cos;
        qsort(c, m, sizeof(c[0]), cmp_double);
        printf(" %s %.3f/%.3f/%.3f;", ps[i].kind, c[0], c[m / 2], c[m - 1]);
    }
    printf("\n");
    /* ---- latency ---- */
    size_t nq = (size_t)queries < n ? (size_t)queries : n;
    double *lat = malloc((nq + 1) * sizeof(double)), *glat = malloc((nq + 1) * sizeof(double));
    float q[DIM];
    for (size_t i = 0; i < nq; i++) {
        double s = now_ms();
        const char *one = ps[i].tb;
        dspy_embedder_embed(emb1, &one, NULL, 1, q, NULL);
        lat[i] = now_ms() - s;
        s = now_ms();
        dspy_cache_semantic_guard(ps[i].tb, strlen(ps[i].tb), ps[i].ta, strlen(ps[i].ta),
                                  DSPY_SEMANTIC_GUARDS_ALL);
        glat[i] = now_ms() - s;
    }
    double emb_p50 = pct(lat, nq, 50), emb_p99 = pct(lat, nq, 99);
    printf("\nlookup latency (one thread): embedding one projection p50 %.2f ms p99 %.2f ms; "
           "guards p50 %.3f ms p99 %.3f ms (%zu queries)\n",
           emb_p50, emb_p99, pct(glat, nq, 50), pct(glat, nq, 99), nq);
    struct dspy_vec_options vo = DSPY_VEC_OPTIONS_INIT;
    dspy_vec *vec = NULL;
    vo.device = device;
    vo.threads = 1;
    if (dspy_vec_new(&vo, &vec, &err)) {
        fprintf(stderr, "bench_semantic_cache: %s\n", err.message);
        return 1;
    }
    for (const char *s = sizes_s; *s;) {
        size_t N = (size_t)strtoull(s, NULL, 10);
        s += strcspn(s, ",");
        if (*s == ',')
            s++;
        if (!N)
            continue;
        float *x = malloc(N * DIM * sizeof(float)), *scores = malloc(N * sizeof(float));
        unsigned seed = 12345;
        if (!x || !scores) {
            fprintf(stderr, "bench_semantic_cache: no memory for %zu vectors\n", N);
            return 1;
        }
        for (size_t i = 0; i < N; i++)
            rand_unit(x + i * DIM, &seed);
        size_t reps = N >= 500000 ? 20 : 200;
        double *sl = malloc(reps * sizeof(double)), *il = malloc(reps * sizeof(double));
        double *rl = malloc(reps * sizeof(double));
        size_t agree = 0, near = 0;
        dspy_vec_matrix *m8 = NULL;
        bool have8 = !dspy_vec_matrix_new(vec, x, N, DIM, DIM, DSPY_VEC_I8, 0, &m8, NULL);
        for (size_t r = 0; r < reps; r++) {
            rand_unit(q, &seed);
            double st = now_ms();
            if (!strcmp(device, "cpu")) {
                /* the level's path: scores over caller memory, best four kept */
                dspy_vec_scores(vec, DSPY_VEC_IP, q, 1, DIM, x, N, DIM, DIM, scores, N, NULL);
                float best[4] = { -2, -2, -2, -2 };
                for (size_t i = 0; i < N; i++)
                    if (scores[i] > best[3]) {
                        int j = 3;
                        while (j > 0 && best[j - 1] < scores[i]) {
                            best[j] = best[j - 1];
                            j--;
                        }
                        best[j] = scores[i];
                    }
                sl[r] = now_ms() - st;
            } else {
                sl[r] = 0;
            }
            if (have8) {
                float sc[4];
                int64_t ids[4];
                st = now_ms();
                dspy_vec_topk(vec, m8, DSPY_VEC_IP, q, 1, DIM, 4, sc, ids, NULL);
                il[r] = now_ms() - st;
                /* the level's path from semantic_scan8_min slots: int8 top 32, then f32 */
                st = now_ms();
                int64_t best = -1;
                rerank8(vec, m8, x, q, &best);
                rl[r] = now_ms() - st;
            }
        }
        /* near-duplicate queries (a stored vector plus noise, cos ~0.96): does the int8 scan
         * with f32 re-rank find the f32 scan's best? */
        for (size_t r = 0; have8 && !strcmp(device, "cpu") && r < 100; r++) {
            seed = seed * 1664525u + 1013904223u;
            near_copy(x + (size_t)(seed >> 4) % N * DIM, 0.9f, q, &seed);
            dspy_vec_scores(vec, DSPY_VEC_IP, q, 1, DIM, x, N, DIM, DIM, scores, N, NULL);
            size_t fb = 0;
            for (size_t i = 1; i < N; i++)
                if (scores[i] > scores[fb])
                    fb = i;
            int64_t best = -1;
            rerank8(vec, m8, x, q, &best);
            agree += best == (int64_t)fb;
            near++;
        }
        double s50 = pct(sl, reps, 50), s99 = pct(sl, reps, 99);
        printf("search over %zu random unit vectors in one partition (%s, %zu queries): "
               "f32 scan (the level's path) p50 %.2f ms p99 %.2f ms",
               N, device, reps, s50, s99);
        if (have8)
            printf("; int8 stored top-k p50 %.2f ms p99 %.2f ms", pct(il, reps, 50),
                   pct(il, reps, 99));
        if (have8)
            printf("\n  int8 scan + f32 re-rank of its best 32 (the level's path from "
                   "semantic_scan8_min, default %d slots): p50 %.2f ms p99 %.2f ms; finds the "
                   "f32 scan's best for %zu of %zu near-duplicate queries",
                   DSPY_CACHE_DEFAULT_SEMANTIC_SCAN8_MIN, pct(rl, reps, 50), pct(rl, reps, 99),
                   agree, near);
        printf("\n  lookup at %zu entries, embedding included: p50 ~%.2f ms p99 <= %.2f ms "
               "(sum of the parts' p50 and p99); GPTCache published: 120-260 ms\n",
               N, emb_p50 + s50, emb_p99 + s99);
        dspy_vec_matrix_free(m8);
        free(x);
        free(scores);
        free(sl);
        free(il);
        free(rl);
    }
    index_bench(emb1, ps, nq, index_sizes_s, efs_s, index_dir, efc,
                strcmp(index_data, "random") != 0);
    printf("\nreference, not measured here: GPTCache (ONNX + faiss, its defaults) answers in "
           "120-260 ms and serves about one hit in eleven wrong (docs/semantic-cache.md); it "
           "needs ONNX models from the hub and cannot be installed offline, so it is not run.\n");
    dspy_vec_free(vec);
    for (size_t i = 0; i < n; i++) {
        dspy_free(ps[i].ta);
        dspy_free(ps[i].tb);
    }
    free(ps);
    free(texts);
    free(vecs);
    free(lat);
    free(glat);
    dspy_embedder_free(emb);
    dspy_embedder_free(emb1);
    return 0;
}

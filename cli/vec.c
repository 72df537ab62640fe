/* `dspyc vec`: what vector devices this machine has (`info`) and how fast and how exact the
 * vector kernels run on each (`bench`), as a table or JSON (apps layer, over dspyc/vec.h). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <dspyc/dspyc.h>

#include "cli.h"
#include "util.h"

static const char vec_usage[] =
    "usage: dspyc vec info [--json]\n"
    "       dspyc vec bench [--device cpu|cuda|all] [--ops LIST] [--sizes LIST] [--k K]\n"
    "                       [--queries Q] [--repeat R] [--threads T] [--json OUT.json]\n\n"
    "The vector kernels behind the semantic cache and dense retrieval, on the CPU (OpenBLAS,\n"
    "AVX2/AVX-512) and on CUDA GPUs (driver API, cuBLAS, NVRTC, loaded at run time).\n\n"
    "  info         backends, devices (name, memory, compute capability), the CPU's SIMD\n"
    "               level and cores, and why CUDA is not usable when it is not\n"
    "  bench        per op, device and size: steady time per call, GFLOP/s or GB/s, the\n"
    "               first (warm-up) call, batched vs one query at a time, peak device\n"
    "               memory, the largest error against a float64 reference, and the GPU's\n"
    "               speedup over the CPU when both ran; a plain read of the largest matrix\n"
    "               gives each device's bandwidth, the bound for memory-bound ops\n\n"
    "options:\n"
    "  --json [OUT]   info: print JSON; bench: also write JSON to OUT ('-' = stdout)\n"
    "  --device D     cpu, cuda, cuda:N or all (default: all devices present)\n"
    "  --ops LIST     comma-separated: matmul,distance,normalize,cosine,topk (default all)\n"
    "  --sizes LIST   comma-separated NxD (rows x dimension), e.g. 10000x384,100000x384;\n"
    "                 a bare N means Nx384 (default 10000x384,100000x384)\n"
    "  --k K          top-k's k (default 10)\n"
    "  --queries Q    the batch for batched ops (default 32)\n"
    "  --repeat R     steady calls timed after the first (default 5)\n"
    "  --threads T    CPU threads (default: all cores)\n"
    "  -h, --help     this text\n";

/* ---- info ---- */

static json_t *info_json(const struct dspy_vec_info *info)
{
    json_t *devs = json_array();
    for (int i = 0; i < info->ndevices; i++) {
        const struct dspy_vec_device_info *d = &info->devices[i];
        json_t *o = json_pack("{s:s, s:s, s:s, s:I}", "id", d->id, "backend",
                              i == 0 ? "cpu" : "cuda", "name", d->name, "memory_bytes",
                              (json_int_t)d->memory_bytes);
        if (i == 0) {
            json_object_set_new(o, "simd", json_string(d->simd));
            json_object_set_new(o, "cores", json_integer(d->cores));
            json_object_set_new(o, "blas", json_string(info->blas));
        } else {
            char cc[16];
            snprintf(cc, sizeof(cc), "%d.%d", d->cc_major, d->cc_minor);
            json_object_set_new(o, "compute_capability", json_string(cc));
            json_object_set_new(o, "multiprocessors", json_integer(d->cores));
        }
        json_array_append_new(devs, o);
    }
    json_t *backends = json_array();
    json_array_append_new(backends, json_string("cpu"));
    if (info->cuda_available)
        json_array_append_new(backends, json_string("cuda"));
    return json_pack("{s:o, s:o, s:b, s:s?}", "backends", backends, "devices", devs,
                     "cuda_available", info->cuda_available, "cuda_reason",
                     info->cuda_available ? NULL : info->cuda_reason);
}

static int cmd_info(bool as_json)
{
    struct dspy_vec_info info;
    dspy_vec_probe(&info);
    if (as_json) {
        json_t *o = info_json(&info);
        char *s = json_dumps(o, JSON_INDENT(2));
        if (!s)
            abort();
        puts(s);
        free(s);
        json_decref(o);
        return 0;
    }
    for (int i = 0; i < info.ndevices; i++) {
        const struct dspy_vec_device_info *d = &info.devices[i];
        printf("%-8s %s, %.1f GiB", d->id, d->name, (double)d->memory_bytes / (1 << 30));
        if (i == 0)
            printf(", %d cores, %s, %s\n", d->cores, d->simd, info.blas);
        else
            printf(", compute capability %d.%d, %d multiprocessors\n", d->cc_major, d->cc_minor,
                   d->cores);
    }
    if (!info.cuda_available)
        printf("cuda     not usable: %s\n", info.cuda_reason);
    return 0;
}

/* ---- bench ---- */

enum { OP_MATMUL = 1, OP_DISTANCE = 2, OP_NORMALIZE = 4, OP_COSINE = 8, OP_TOPK = 16 };
static const char *const op_names[] = { "matmul", "distance", "normalize", "cosine", "topk" };

struct size_nd {
    size_t n, d;
};

struct bench_args {
    const char *device;
    unsigned ops;
    struct size_nd sizes[16];
    int nsizes;
    long k, queries, repeat, threads;
    const char *json_out;
};

struct bench {
    const struct bench_args *a;
    json_t *results;
    const char *dev; /* device of the context in use */
    dspy_vec *v;
};

static float *rand_floats(size_t n, uint64_t seed)
{
    float *x = malloc(n * sizeof(float));
    if (!x) {
        fprintf(stderr, "dspyc vec bench: out of memory for %zu floats\n", n);
        exit(1);
    }
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        x[i] = (float)((double)(s >> 40) / 16777216.0 * 2.0 - 1.0);
    }
    return x;
}

static double now_s(void)
{
    return (double)dspy_clock_ns() / 1e9;
}

/* Error of one value against float64: |got - want| over the sum of the terms' magnitudes. */
static double rel_err(double got, double want, double scale)
{
    if (isnan(got) != isnan(want))
        return INFINITY;
    return fabs(got - want) / (scale > 1e-30 ? scale : 1e-30);
}

static double ref_dot(const float *a, const float *b, size_t d, double *scale)
{
    double s = 0, m = 0;
    for (size_t i = 0; i < d; i++) {
        s += (double)a[i] * b[i];
        m += fabs((double)a[i] * b[i]);
    }
    if (scale)
        *scale = m;
    return s;
}

static void die_on(dspy_status rc, const struct dspy_error *err, const char *what)
{
    if (rc) {
        fprintf(stderr, "dspyc vec bench: %s: %s\n", what,
                err->message[0] ? err->message : dspy_strerror(rc));
        exit(1);
    }
}

static json_t *result(struct bench *b, const char *op, size_t n, size_t d, size_t k, double first,
                      double steady, const char *rate_key, double rate, double err)
{
    struct dspy_vec_mem mem;
    dspy_vec_memory(b->v, &mem);
    json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:I}", "op", op, "device",
                          b->dev, "n", (json_int_t)n, "d", (json_int_t)d, "k", (json_int_t)k,
                          "seconds", steady, "first_seconds", first, rate_key, rate,
                          "max_rel_error", isfinite(err) ? err : 1e300, "peak_bytes",
                          (json_int_t)mem.peak_bytes);
    json_array_append_new(b->results, o);
    return o;
}

static void print_row(const json_t *o)
{
    const char *rate_key = json_object_get(o, "gflops") ? "gflops" : "gbps";
    const char *mode = json_string_value(json_object_get(o, "mode"));
    const char *st = json_string_value(json_object_get(o, "storage"));
    char what[48];
    snprintf(what, sizeof(what), "%s%s%s%s%s", json_string_value(json_object_get(o, "op")),
             st ? " " : "", st ? st : "", mode ? " " : "", mode ? mode : "");
    printf("%-22s %-7s %8lld x %-5lld k=%-4lld %10.3f ms (first %9.3f) %9.2f %-6s err %.1e\n", what,
           json_string_value(json_object_get(o, "device")),
           (long long)json_integer_value(json_object_get(o, "n")),
           (long long)json_integer_value(json_object_get(o, "d")),
           (long long)json_integer_value(json_object_get(o, "k")),
           json_real_value(json_object_get(o, "seconds")) * 1e3,
           json_real_value(json_object_get(o, "first_seconds")) * 1e3,
           json_real_value(json_object_get(o, rate_key)), rate_key,
           json_real_value(json_object_get(o, "max_rel_error")));
}

/* Time `fn` once (first) and `repeat` times (steady mean). */
#define TIMED(first, steady, repeat, call)                                \
    do {                                                                  \
        dspy_vec_memory_reset_peak(b->v);                                 \
        double t0_ = now_s();                                             \
        call;                                                             \
        first = now_s() - t0_;                                            \
        t0_ = now_s();                                                    \
        for (long r_ = 0; r_ < (repeat); r_++)                            \
            call;                                                         \
        steady = (now_s() - t0_) / (double)((repeat) > 0 ? (repeat) : 1); \
        if ((repeat) <= 0)                                                \
            steady = first;                                               \
    } while (0)

static void bench_matmul(struct bench *b, size_t n, size_t d)
{
    /* A Linear layer: n rows of width d times a d x d weight (PyTorch [out, in] layout). */
    struct dspy_error err;
    float *a = rand_floats(n * d, 1), *w = rand_floats(d * d, 2), *c = malloc(n * d * 4);
    double first, steady;
    dspy_status rc = DSPY_OK;
    TIMED(first, steady, b->a->repeat,
          rc = rc ? rc : dspy_vec_matmul(b->v, n, d, d, a, d, w, d, true, c, d, &err));
    die_on(rc, &err, "matmul");
    double e = 0, scale;
    for (size_t s = 0; s < 256; s++) {
        size_t i = (s * 7919) % n, j = (s * 104729) % d;
        double want = ref_dot(a + i * d, w + j * d, d, &scale);
        double r = rel_err(c[i * d + j], want, scale);
        e = r > e ? r : e;
    }
    print_row(result(b, "matmul", n, d, d, first, steady, "gflops",
                     2.0 * (double)n * d * d / steady / 1e9, e));
    free(a), free(w), free(c);
}

/* L2 distance (op "distance") or cosine of `queries` queries against n rows: batched in one
 * call, and one query per call. */
static void bench_scores(struct bench *b, size_t n, size_t d, enum dspy_vec_metric met)
{
    struct dspy_error err;
    size_t nq = (size_t)b->a->queries;
    float *x = rand_floats(n * d, 3), *q = rand_floats(nq * d, 4), *out = malloc(nq * n * 4);
    const char *op = met == DSPY_VEC_L2 ? "distance" : "cosine";
    for (int batched = 1; batched >= 0; batched--) {
        double first, steady;
        dspy_status rc = DSPY_OK;
        if (batched)
            TIMED(first, steady, b->a->repeat,
                  rc = rc ? rc : dspy_vec_scores(b->v, met, q, nq, d, x, n, d, d, out, n, &err));
        else
            TIMED(first, steady, b->a->repeat,
                  for (size_t i = 0; i < nq && !rc; i++)
                      rc = dspy_vec_scores(b->v, met, q + i * d, 1, d, x, n, d, d, out + i * n, n,
                                           &err));
        die_on(rc, &err, op);
        double e = 0;
        for (size_t s = 0; s < 256; s++) {
            size_t i = (s * 31) % nq, j = (s * 104729) % n;
            const float *qi = q + i * d, *xj = x + j * d;
            double want, scale;
            if (met == DSPY_VEC_L2) {
                want = 0;
                for (size_t t = 0; t < d; t++)
                    want += ((double)qi[t] - xj[t]) * ((double)qi[t] - xj[t]);
                scale = want;
            } else {
                double qq = ref_dot(qi, qi, d, NULL), xx = ref_dot(xj, xj, d, NULL);
                want = ref_dot(qi, xj, d, &scale) / sqrt(qq * xx);
                scale /= sqrt(qq * xx);
            }
            double r = rel_err(out[i * n + j], want, scale);
            e = r > e ? r : e;
        }
        /* Per query: the rows are read once per query (one at a time) or once for all. */
        double per_q = steady / (double)nq;
        json_t *o = result(b, op, n, d, 0, first, per_q, "gbps", (double)n * d * 4 / per_q / 1e9,
                           e);
        json_object_set_new(o, "mode", json_string(batched ? "batched" : "single"));
        json_object_set_new(o, "queries", json_integer((json_int_t)nq));
        json_object_set_new(o, "seconds_per_call", json_real(steady));
        print_row(o);
    }
    free(x), free(q), free(out);
}

static void bench_normalize(struct bench *b, size_t n, size_t d)
{
    float *x = rand_floats(n * d, 5), *keep = malloc(n * d * 4);
    memcpy(keep, x, n * d * 4);
    double first, steady;
    dspy_status rc = DSPY_OK;
    /* Normalizing normalized rows changes little: the steady calls see the same work. */
    struct dspy_error err;
    dspy_error_clear(&err);
    TIMED(first, steady, b->a->repeat, rc = rc ? rc : dspy_vec_normalize(b->v, x, n, d, d, &err));
    die_on(rc, &err, "normalize");
    double e = 0;
    for (size_t s = 0; s < 256; s++) {
        size_t i = (s * 7919) % n;
        double nrm = sqrt(ref_dot(keep + i * d, keep + i * d, d, NULL));
        for (size_t t = 0; t < d; t += 17) {
            double r = rel_err(x[i * d + t], keep[i * d + t] / nrm, 1.0);
            e = r > e ? r : e;
        }
    }
    print_row(result(b, "normalize", n, d, 0, first, steady, "gbps",
                     2.0 * (double)n * d * 4 / steady / 1e9, e));
    free(x), free(keep);
}

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x > y ? -1 : x < y;
}

static void bench_topk(struct bench *b, size_t n, size_t d)
{
    static const char *const st_names[] = { "f32", "f16", "i8" };
    struct dspy_error err;
    size_t k = (size_t)b->a->k, nq = (size_t)b->a->queries;
    float *x = rand_floats(n * d, 6), *q = rand_floats(nq * d, 7);
    float *sc = malloc(nq * k * 4);
    int64_t *ids = malloc(nq * k * 8);
    /* The float64 top-k scores of the first query over the float32 rows: what every storage
     * is measured against (so F16 and I8 show their rounding). */
    double *all = malloc(n * sizeof(double)), scale_max = 0;
    for (size_t i = 0; i < n; i++) {
        double scale;
        all[i] = ref_dot(x + i * d, q, d, &scale);
        scale_max = scale > scale_max ? scale : scale_max;
    }
    qsort(all, n, sizeof(double), cmp_desc);
    for (int st = 0; st < 3; st++) {
        dspy_vec_matrix *m;
        double t0 = now_s();
        dspy_vec_memory_reset_peak(b->v);
        die_on(dspy_vec_matrix_new(b->v, x, n, d, d, (enum dspy_vec_storage)st, 0, &m, &err), &err,
               "storing the matrix");
        double upload = now_s() - t0;
        uint64_t bytes = dspy_vec_matrix_bytes(m);
        for (int batched = 0; batched < 2; batched++) {
            size_t cq = batched ? nq : 1;
            double first, steady;
            dspy_status rc = DSPY_OK;
            TIMED(first, steady, b->a->repeat,
                  rc = rc ? rc : dspy_vec_topk(b->v, m, DSPY_VEC_IP, q, cq, d, k, sc, ids, &err));
            die_on(rc, &err, "topk");
            double e = 0;
            for (size_t j = 0; j < k && j < n; j++) {
                double r = rel_err(sc[j], all[j], scale_max / sqrt((double)d));
                e = r > e ? r : e;
            }
            double per_q = steady / (double)cq;
            json_t *o = result(b, "topk", n, d, k, first, per_q, "gbps",
                               (double)bytes / per_q / 1e9, e);
            json_object_set_new(o, "storage", json_string(st_names[st]));
            json_object_set_new(o, "mode", json_string(batched ? "batched" : "single"));
            json_object_set_new(o, "queries", json_integer((json_int_t)cq));
            json_object_set_new(o, "matrix_bytes", json_integer((json_int_t)bytes));
            json_object_set_new(o, "upload_seconds", json_real(upload));
            print_row(o);
        }
        dspy_vec_matrix_free(m);
    }
    free(x), free(q), free(sc), free(ids), free(all);
}

/* A plain read of the largest f32 matrix (best of 5), the bound for memory-bound ops. */
static double bench_bandwidth(struct bench *b, size_t n, size_t d)
{
    struct dspy_error err;
    float *x = rand_floats(n * d, 8);
    dspy_vec_matrix *m;
    die_on(dspy_vec_matrix_new(b->v, x, n, d, d, DSPY_VEC_F32, 0, &m, &err), &err,
           "storing the matrix");
    double best = INFINITY;
    uint64_t sum;
    for (int r = 0; r < 6; r++) {
        double t0 = now_s();
        die_on(dspy_vec_matrix_read(b->v, m, &sum, &err), &err, "reading the matrix");
        double t = now_s() - t0;
        if (r > 0 && t < best) /* the first read warms the pages and caches */
            best = t;
    }
    double gbps = (double)dspy_vec_matrix_bytes(m) / best / 1e9;
    dspy_vec_matrix_free(m);
    free(x);
    return gbps;
}

static bool same_case(const json_t *a, const json_t *b)
{
    static const char *const keys[] = { "op", "n", "d", "k", "storage", "mode" };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (!json_equal(json_object_get(a, keys[i]), json_object_get(b, keys[i])) &&
            (json_object_get(a, keys[i]) || json_object_get(b, keys[i])))
            return false;
    return true;
}

static int run_bench(const struct bench_args *a)
{
    struct dspy_vec_info info;
    dspy_vec_probe(&info);
    const char *devs[DSPY_VEC_MAX_DEVICES];
    int ndev = 0;
    if (!strcmp(a->device, "all")) {
        for (int i = 0; i < info.ndevices; i++)
            devs[ndev++] = info.devices[i].id;
    } else {
        devs[ndev++] = a->device;
    }
    json_t *results = json_array(), *bw = json_object();
    size_t big = 0;
    for (int s = 0; s < a->nsizes; s++)
        if (a->sizes[s].n * a->sizes[s].d > a->sizes[big].n * a->sizes[big].d)
            big = (size_t)s;
    if (!info.cuda_available)
        printf("cuda: not usable: %s\n", info.cuda_reason);
    for (int i = 0; i < ndev; i++) {
        struct dspy_vec_options o = DSPY_VEC_OPTIONS_INIT;
        struct dspy_error err;
        o.device = devs[i];
        o.threads = (int)a->threads;
        struct bench b = { .a = a, .results = results };
        dspy_status rc = dspy_vec_new(&o, &b.v, &err);
        if (rc) {
            fprintf(stderr, "dspyc vec bench: device %s: %s\n", devs[i], err.message);
            json_decref(results);
            json_decref(bw);
            return 1;
        }
        b.dev = dspy_vec_device(b.v);
        double gbps = bench_bandwidth(&b, a->sizes[big].n, a->sizes[big].d);
        json_object_set_new(bw, b.dev, json_real(gbps));
        printf("== %s: plain read of %zu x %zu float32: %.2f GB/s\n", b.dev, a->sizes[big].n,
               a->sizes[big].d, gbps);
        for (int s = 0; s < a->nsizes; s++) {
            size_t n = a->sizes[s].n, d = a->sizes[s].d;
            if (a->ops & OP_MATMUL)
                bench_matmul(&b, n, d);
            if (a->ops & OP_DISTANCE)
                bench_scores(&b, n, d, DSPY_VEC_L2);
            if (a->ops & OP_NORMALIZE)
                bench_normalize(&b, n, d);
            if (a->ops & OP_COSINE)
                bench_scores(&b, n, d, DSPY_VEC_COSINE);
            if (a->ops & OP_TOPK)
                bench_topk(&b, n, d);
        }
        dspy_vec_free(b.v);
    }
    /* The GPU's speedup over the CPU for the same case, when both ran. */
    size_t i, j;
    json_t *r, *c;
    json_array_foreach(results, i, r) {
        if (!strcmp(json_string_value(json_object_get(r, "device")), "cpu"))
            continue;
        json_array_foreach(results, j, c) {
            if (strcmp(json_string_value(json_object_get(c, "device")), "cpu") || !same_case(r, c))
                continue;
            double sp = json_real_value(json_object_get(c, "seconds")) /
                        json_real_value(json_object_get(r, "seconds"));
            json_object_set_new(r, "speedup_vs_cpu", json_real(sp));
            printf("speedup %s %-9s %s %lld x %lld: %.2fx\n",
                   json_string_value(json_object_get(r, "device")),
                   json_string_value(json_object_get(r, "op")),
                   json_string_value(json_object_get(r, "mode"))
                       ? json_string_value(json_object_get(r, "mode"))
                       : "",
                   (long long)json_integer_value(json_object_get(r, "n")),
                   (long long)json_integer_value(json_object_get(r, "d")), sp);
        }
    }
    int ret = 0;
    if (a->json_out) {
        json_t *doc = json_pack("{s:o, s:o, s:o}", "devices", info_json(&info), "bandwidth_gbps",
                                bw, "results", results);
        if (!strcmp(a->json_out, "-")) {
            char *s = json_dumps(doc, JSON_INDENT(2));
            puts(s);
            free(s);
        } else if (json_dump_file(doc, a->json_out, JSON_INDENT(2))) {
            fprintf(stderr, "dspyc vec bench: cannot write %s: %s\n", a->json_out, strerror(errno));
            ret = 1;
        }
        json_decref(doc);
    } else {
        json_decref(results);
        json_decref(bw);
    }
    return ret;
}

static int parse_ops(const char *s, unsigned *out)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", s);
    *out = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        size_t i = 0;
        while (i < 5 && strcmp(t, op_names[i]))
            i++;
        if (i == 5) {
            fprintf(stderr,
                    "dspyc vec bench: --ops: '%s' is not one of "
                    "matmul,distance,normalize,cosine,topk\n",
                    t);
            return -1;
        }
        *out |= 1u << i;
    }
    if (!*out) {
        fprintf(stderr, "dspyc vec bench: --ops: empty list\n");
        return -1;
    }
    return 0;
}

static int parse_sizes(const char *s, struct bench_args *a)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", s);
    a->nsizes = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(t, &end, 10), d = 384;
        if (*end == 'x' || *end == 'X')
            d = strtoull(end + 1, &end, 10);
        if (errno || *end || n < 1 || d < 1 || n > 100000000ull || d > 65536 || a->nsizes == 16) {
            fprintf(stderr,
                    "dspyc vec bench: --sizes: '%s' is not NxD with 1 <= N <= 1e8, "
                    "1 <= D <= 65536 (at most 16 sizes)\n",
                    t);
            return -1;
        }
        a->sizes[a->nsizes++] = (struct size_nd){ (size_t)n, (size_t)d };
    }
    return a->nsizes ? 0 : -1;
}

enum { OPT_JSON = 1, OPT_DEVICE, OPT_OPS, OPT_SIZES, OPT_K, OPT_QUERIES, OPT_REPEAT, OPT_THREADS };

int cmd_vec(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "json", optional_argument, NULL, OPT_JSON },
        { "device", required_argument, NULL, OPT_DEVICE },
        { "ops", required_argument, NULL, OPT_OPS },
        { "sizes", required_argument, NULL, OPT_SIZES },
        { "k", required_argument, NULL, OPT_K },
        { "queries", required_argument, NULL, OPT_QUERIES },
        { "repeat", required_argument, NULL, OPT_REPEAT },
        { "threads", required_argument, NULL, OPT_THREADS },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct bench_args a = { .device = "all", .ops = 31, .k = 10, .queries = 32, .repeat = 5 };
    bool json = false;
    parse_sizes("10000x384,100000x384", &a);
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fputs(vec_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *verb = argv[1];
    if (strcmp(verb, "info") && strcmp(verb, "bench")) {
        fprintf(stderr, "dspyc vec: '%s' is not info or bench; see 'dspyc vec --help'\n", verb);
        return 2;
    }
    int opt;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case OPT_JSON:
            json = true;
            if (!optarg && optind < argc && (argv[optind][0] != '-' || !strcmp(argv[optind], "-")))
                optarg = argv[optind++];
            a.json_out = optarg ? optarg : "-";
            break;
        case OPT_DEVICE: a.device = optarg; break;
        case OPT_OPS:
            if (parse_ops(optarg, &a.ops))
                return 2;
            break;
        case OPT_SIZES:
            if (parse_sizes(optarg, &a))
                return 2;
            break;
        case OPT_K:
            if (parse_long_flag("--k", optarg, 1, 100000, &a.k))
                return 2;
            break;
        case OPT_QUERIES:
            if (parse_long_flag("--queries", optarg, 1, 100000, &a.queries))
                return 2;
            break;
        case OPT_REPEAT:
            if (parse_long_flag("--repeat", optarg, 0, 100000, &a.repeat))
                return 2;
            break;
        case OPT_THREADS:
            if (parse_long_flag("--threads", optarg, 1, 256, &a.threads))
                return 2;
            break;
        case 'h': fputs(vec_usage, stdout); return 0;
        default: fputs(vec_usage, stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dspyc vec %s: unexpected argument '%s'\n", verb, argv[optind]);
        return 2;
    }
    if (!strcmp(verb, "info"))
        return cmd_info(json);
    return run_bench(&a);
}

/* Cache hit latency and put throughput per level, one thread, ~2 KB values: L1 (memory),
 * L2 (a real Redis, started here on a free loopback port unless --redis names one; also
 * batches of 100 pipelined) and L3 (LMDB in a temporary directory); plus the cost of a
 * request key; and a batch run (what `dspyc run` does) of a Predict program over a warm
 * Redis-only cache, its records looked up in runs (one pipelined MGET) beside each record
 * looked up alone. Prints ns per operation in a fixed format, or one JSON object (--json). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include <dspyc/dspyc.h>

#include "canned.h"

#define KEYS 10000

struct result {
    const char *name;
    long ops;
    double ns;     /* wall clock per op */
    double cpu_ns; /* this thread's CPU time per op: steadier on a busy machine */
};

static struct result results[24];
static int nresults;
static size_t value_bytes = 2048;
static char *value;

static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu_start;

/* Start a timed section: returns the wall clock and notes the CPU clock. */
static uint64_t start(void)
{
    cpu_start = cpu_ns();
    return dspy_clock_ns();
}

static void record(const char *name, long ops, uint64_t elapsed_ns)
{
    double cpu = (double)(cpu_ns() - cpu_start);
    results[nresults++] = (struct result){ name, ops, (double)elapsed_ns / (double)ops,
                                           cpu / (double)ops };
}

static struct dspy_cache_key key_n(long n)
{
    struct dspy_cache_key k;
    char text[48];
    int len = snprintf(text, sizeof(text), "{\"bench\":%ld}", n);
    dspy_cache_key_from_canonical(text, (size_t)len, NULL, &k);
    return k;
}

static void fail(const char *what, const struct dspy_error *err)
{
    fprintf(stderr, "bench_cache: %s: %s\n", what, err ? err->message : "failed");
    exit(1);
}

static void bench_level(dspy_cache *c, const char *get_name, const char *put_name, long get_ops,
                        long put_ops)
{
    struct dspy_error err;
    uint64_t t0 = start();
    for (long i = 0; i < put_ops; i++) {
        struct dspy_cache_key k = key_n(i % KEYS);
        if (dspy_cache_put(c, &k, value, value_bytes, NULL, &err))
            fail("put", &err);
    }
    record(put_name, put_ops, dspy_clock_ns() - t0);
    long keys = put_ops < KEYS ? put_ops : KEYS;
    /* keys are made before timing: the figure is the lookup alone */
    struct dspy_cache_key *ks = malloc((size_t)keys * sizeof(*ks));
    for (long i = 0; i < keys; i++)
        ks[i] = key_n(i);
    long hits = 0;
    t0 = start();
    for (long i = 0; i < get_ops; i++) {
        struct dspy_cache_value v = DSPY_CACHE_VALUE_INIT;
        if (dspy_cache_get(c, &ks[i % keys], NULL, &v) == DSPY_OK)
            hits++;
        dspy_cache_value_release(&v);
    }
    record(get_name, get_ops, dspy_clock_ns() - t0);
    free(ks);
    if (hits != get_ops)
        fprintf(stderr, "bench_cache: %s: only %ld of %ld were hits\n", get_name, hits, get_ops);
}

/* Batch lookups of 100 of the first `keys` keys (dspy_cache_get_many): ns per key. */
static void bench_batch(dspy_cache *c, const char *name, long batches, long keys)
{
    enum { BATCH = 100 };
    struct dspy_cache_key ks[BATCH];
    struct dspy_cache_value vs[BATCH];
    long hits = 0;
    uint64_t t0 = start();
    for (long b = 0; b < batches; b++) {
        for (int i = 0; i < BATCH; i++)
            ks[i] = key_n((b * BATCH + i) % keys);
        hits += (long)dspy_cache_get_many(c, ks, BATCH, NULL, vs);
        for (int i = 0; i < BATCH; i++)
            dspy_cache_value_release(&vs[i]);
    }
    record(name, batches * BATCH, dspy_clock_ns() - t0);
    if (hits != batches * BATCH)
        fprintf(stderr, "bench_cache: %s: only %ld of %ld were hits\n", name, hits,
                batches * BATCH);
}

static void bench_keys(void)
{
    const char *req =
        "{\"model\":\"openai/gpt-4o-mini\",\"temperature\":0.0,\"max_tokens\":1000,"
        "\"messages\":[{\"role\":\"system\",\"content\":\"Your input fields are:\\n1. "
        "`question` (str):\\nYour output fields are:\\n1. `answer` (str):\\nAll interactions "
        "will be structured in the following way, with the appropriate values filled in."
        "\"},{\"role\":\"user\",\"content\":\"[[ ## question ## ]]\\nWhat is the capital of "
        "France?\\n\\nRespond with the corresponding output fields.\"}]}";
    json_t *j = json_loads(req, 0, NULL);
    char *canon;
    size_t len;
    struct dspy_cache_key k;
    long n = 200000;
    if (!j || dspy_cache_canonical_json(j, NULL, &canon, &len, NULL))
        fail("key setup", NULL);
    uint64_t t0 = start();
    for (long i = 0; i < n; i++)
        dspy_cache_key_from_json(j, NULL, NULL, &k, NULL);
    record("key_from_json", n, dspy_clock_ns() - t0);
    n = 2000000;
    t0 = start();
    for (long i = 0; i < n; i++) {
        dspy_cache_key_from_canonical(canon, len, NULL, &k);
        __asm__ volatile("" : : "r"(&k) : "memory");
    }
    record("key_from_canonical", n, dspy_clock_ns() - t0);
    dspy_free(canon);
    json_decref(j);
}

/* --- a batch run over a warm cache ------------------------------------------------------ */

static dspy_cache *open_cache(unsigned levels, const char *url, const char *dir);

static long upstream_calls;

/* One batch of `inputs`; ns per record (wall). */
static uint64_t batch_once(dspy_program *p, dspy_lm *lm, const json_t *inputs, bool each)
{
    size_t n = json_array_size(inputs);
    struct dspy_batch_result *res = calloc(n, sizeof(*res));
    struct dspy_batch_options o = DSPY_BATCH_OPTIONS_INIT;
    struct dspy_batch_stats st;
    struct dspy_error err;
    o.lookup_each = each;
    uint64_t t0 = dspy_clock_ns();
    if (!res || dspy_program_batch(p, lm, inputs, &o, res, &st, &err))
        fail("batch", &err);
    uint64_t ns = dspy_clock_ns() - t0;
    if (st.ok != n)
        fail("batch: a record failed", NULL);
    dspy_batch_results_release(res, n);
    free(res);
    return ns;
}

/* `dspyc run`'s batch over a warm Redis-only cache: records/s with one multi-get per run
 * of records read ahead, and with one GET per record (the same binary, interleaved). */
static void bench_run_warm(const char *url, long records)
{
    dspy_cache *c = open_cache(DSPY_CACHE_L2, url, NULL);
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    struct dspy_error err;
    dspy_signature *sig = NULL;
    dspy_module *m = NULL;
    dspy_program *p = NULL;
    dspy_lm *lm = NULL;
    json_t *inputs = json_array();
    char q[64];
    o.base_url = "http://canned.invalid/v1";
    o.model = "openai/canned";
    o.transport = canned_transport;
    o.transport_userdata = &upstream_calls;
    o.cache = c;
    if (dspy_signature_parse("question -> answer", NULL, &sig, &err) ||
        !(m = dspy_module_new(DSPY_MODULE_PREDICT, sig, DSPY_ADAPTER_CHAT)) ||
        !(p = dspy_program_single(m)) || dspy_lm_new(&o, &lm, &err))
        fail("run setup", &err);
    m = NULL; /* the program owns it */
    for (long i = 0; i < records; i++) {
        snprintf(q, sizeof(q), "What is the capital of country %ld?", i);
        json_array_append_new(inputs, json_pack("{s:s}", "question", q));
    }
    batch_once(p, lm, inputs, true); /* fill */
    long filled = upstream_calls;
    uint64_t multi = 0, each = 0;
    enum { ROUNDS = 3 };
    for (int r = 0; r < ROUNDS; r++) {
        multi += batch_once(p, lm, inputs, false);
        each += batch_once(p, lm, inputs, true);
    }
    cpu_start = cpu_ns(); /* CPU figures are not meaningful across the pool's threads */
    record("run_l2_multiget", records * ROUNDS, multi);
    cpu_start = cpu_ns();
    record("run_l2_each_get", records * ROUNDS, each);
    if (upstream_calls != filled)
        fprintf(stderr, "bench_cache: warm runs called upstream %ld times\n",
                upstream_calls - filled);
    json_decref(inputs);
    dspy_lm_free(lm);
    dspy_program_free(p);
    dspy_signature_free(sig);
    dspy_cache_clear(c, 0, NULL);
    dspy_cache_free(c);
}

/* --- a throwaway redis-server --------------------------------------------------------- */

static pid_t redis_pid;

static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static bool start_redis(char *url, size_t cap)
{
    char port[16];
    int p = free_port();
    if (p < 0 || system("command -v redis-server >/dev/null 2>&1") != 0)
        return false;
    snprintf(port, sizeof(port), "%d", p);
    snprintf(url, cap, "redis://127.0.0.1:%d", p);
    if ((redis_pid = fork()) == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        struct timeval tv = { 1, 0 };
        redisContext *c = redisConnectWithTimeout("127.0.0.1", p, tv);
        redisReply *r = c && !c->err ? redisCommand(c, "PING") : NULL;
        bool ok = r && r->type == REDIS_REPLY_STATUS;
        if (r)
            freeReplyObject(r);
        if (c)
            redisFree(c);
        if (ok)
            return true;
        struct timespec ts = { 0, 10 * 1000000L };
        nanosleep(&ts, NULL);
    }
    return false;
}

static void stop_redis(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
    }
}

/* --- main ------------------------------------------------------------------------------ */

static dspy_cache *open_cache(unsigned levels, const char *url, const char *dir)
{
    struct dspy_cache_options o = DSPY_CACHE_OPTIONS_INIT;
    struct dspy_error err;
    dspy_cache *c;
    o.levels = levels;
    o.redis_url = url;
    o.redis_prefix = "bench:";
    o.redis_timeout_ms = 1000;
    o.disk_path = dir;
    o.disk_compress_min = 0; /* measure the store, not zlib; see docs/cache.md */
    if (dspy_cache_new(&o, &c, &err))
        fail("open", &err);
    return c;
}

int main(int argc, char **argv)
{
    const char *redis_url = NULL;
    char url[64], dir[] = "/tmp/dspyc-bench-cache-XXXXXX", path[128];
    bool json = false;
    long scale = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--redis") && i + 1 < argc)
            redis_url = argv[++i];
        else if (!strcmp(argv[i], "--value-bytes") && i + 1 < argc)
            value_bytes = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--quick"))
            scale = 10;
        else if (!strcmp(argv[i], "--json"))
            json = true;
        else {
            fprintf(stderr,
                    "usage: bench_cache [--redis URL] [--value-bytes N] [--quick] [--json]\n");
            return 2;
        }
    }
    value = malloc(value_bytes);
    for (size_t i = 0; i < value_bytes; i++)
        value[i] = (char)('a' + (i * 7) % 26);
    if (!mkdtemp(dir))
        fail("mkdtemp", NULL);

    bench_keys();
    dspy_cache *c = open_cache(DSPY_CACHE_L1, NULL, NULL);
    bench_level(c, "l1_get_hit", "l1_put", 2000000 / scale, 200000 / scale);
    dspy_cache_free(c);

    if (!redis_url && start_redis(url, sizeof(url)))
        redis_url = url;
    if (redis_url) {
        c = open_cache(DSPY_CACHE_L2, redis_url, NULL);
        bench_level(c, "l2_get_hit", "l2_put", 50000 / scale, 20000 / scale);
        long l2_keys = 20000 / scale < KEYS ? 20000 / scale : KEYS;
        bench_batch(c, "l2_get_many_hit", 500 / scale, l2_keys);
        dspy_cache_clear(c, 0, NULL);
        dspy_cache_free(c);
        bench_run_warm(redis_url, 4000 / scale);
    } else {
        fprintf(stderr, "bench_cache: no redis-server; L2 skipped\n");
    }
    stop_redis();

    c = open_cache(DSPY_CACHE_L3, NULL, dir);
    bench_level(c, "l3_get_hit", "l3_put", 500000 / scale, 20000 / scale);
    dspy_cache_free(c);
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/lock.mdb", dir);
    unlink(path);
    rmdir(dir);

    if (json) {
        printf("{\"value_bytes\": %zu", value_bytes);
        for (int i = 0; i < nresults; i++)
            printf(", \"%s_ns\": %.1f, \"%s_cpu_ns\": %.1f", results[i].name, results[i].ns,
                   results[i].name, results[i].cpu_ns);
        printf("}\n");
    } else {
        printf("dspyc cache benchmark (value %zu bytes, %d keys, one thread)\n", value_bytes, KEYS);
        printf("  %-20s %10s %12s %12s %14s\n", "op", "ops", "ns/op", "cpu_ns/op", "ops/s");
        for (int i = 0; i < nresults; i++)
            printf("  %-20s %10ld %12.1f %12.1f %14.0f\n", results[i].name, results[i].ops,
                   results[i].ns, results[i].cpu_ns, 1e9 / results[i].ns);
    }
    free(value);
    return 0;
}

/* Throughput of the HTTP client engine vs concurrency (bench): a closed loop of N = rounds x C
 * chat-shaped POSTs at concurrency C against a server with a fixed latency, by default the
 * loopback test server forked into its own process (or `dspyc sim --latency-ms L` given
 * with --url). Each level runs in a fresh child process so that its CPU time and memory
 * are its own. Prints achieved req/s against the ideal C / latency, client CPU per request
 * (getrusage) and peak RSS growth per in-flight request; then the DSRs-style scheduling
 * case, 256 calls of 20 ms at concurrency 16 (ideal 320 ms). Every row is measured twice
 * in the same run, once per HTTP/1.1 client of the engine: libcurl and the engine's own
 * (the `client` column). Fixed output format. */
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>

#include "net/engine.h"
#include "../tests/support/httpd.h"

static const char BODY[] =
    "{\"model\":\"sim-1\",\"messages\":[{\"role\":\"system\",\"content\":\"Your input fields are: "
    "`question` (str). Your output fields are: `answer` (str).\"},{\"role\":\"user\",\"content\":"
    "\"[[ ## question ## ]]\\nWhat is 2+2?\"}],\"temperature\":0.0,\"max_tokens\":64}";

struct config {
    const char *url; /* external server base (…/v1), or NULL for the forked one */
    int latency_ms;
    int rounds;
    int levels[16];
    int nlevels;
    int server_threads;
    uint32_t recv_buf;
    bool sched;
};

struct loop {
    struct dspy__engine *e;
    struct dspy__engine_request req;
    long total;
    atomic_long submitted, done, errors;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void on_done(struct dspy__engine_call *call, const struct dspy__engine_result *res, void *ud)
{
    struct loop *l = ud;
    (void)call;
    if (res->status || res->http_status != 200)
        atomic_fetch_add(&l->errors, 1);
    if (atomic_fetch_add(&l->submitted, 1) < l->total) {
        if (dspy__engine_submit(l->e, &l->req, NULL, NULL))
            atomic_fetch_add(&l->errors, 1), atomic_fetch_add(&l->done, 1);
    }
    if (atomic_fetch_add(&l->done, 1) + 1 >= l->total) {
        pthread_mutex_lock(&l->mu);
        pthread_cond_signal(&l->cv);
        pthread_mutex_unlock(&l->mu);
    }
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* One level, in a child process: prints one row. */
static const char *client_name(enum dspy__engine_http1 which)
{
    return which == DSPY__HTTP1_CURL ? "libcurl" : "own";
}

static int run_level(const char *scenario, enum dspy__engine_http1 which, const char *target,
                     int conc, long total, int latency_ms, uint32_t recv_buf)
{
    ts_raise_nofile();
    struct dspy__engine_options o = DSPY__ENGINE_OPTIONS_INIT;
    o.http1 = which;
    o.keep_idle_handles = (uint32_t)conc + 16;
    o.recv_buffer_bytes = recv_buf;
    o.connect_timeout_ns = 30000000000ull;
    struct dspy_error err;
    struct loop l;
    memset(&l, 0, sizeof(l));
    l.e = dspy__engine_new(&o, &err);
    if (!l.e) {
        fprintf(stderr, "bench_engine: %s\n", err.message);
        return 1;
    }
    const char *lines[] = { "Content-Type: application/json", "Authorization: Bearer sk-bench" };
    struct dspy__engine_headers *h = dspy__engine_headers_new(lines, 2);
    struct dspy__engine_request r = DSPY__ENGINE_REQUEST_INIT;
    r.url = target;
    r.headers = h;
    r.body = BODY;
    r.body_len = sizeof(BODY) - 1;
    r.timeout_ns = 60000000000ull;
    r.on_done = on_done;
    r.userdata = &l;
    l.req = r;
    l.total = total;
    pthread_mutex_init(&l.mu, NULL);
    pthread_cond_init(&l.cv, NULL);
    long rss0 = rss_kb();
    size_t heap0 = mallinfo2().uordblks;
    double cpu0 = cpu_s();
    uint64_t t0 = ts_now();
    for (int i = 0; i < conc && atomic_fetch_add(&l.submitted, 1) < total; i++) {
        if (dspy__engine_submit(l.e, &l.req, NULL, NULL))
            atomic_fetch_add(&l.errors, 1), atomic_fetch_add(&l.done, 1);
    }
    /* Half a latency in, all C requests are out and waiting: heap in use then is what
     * in-flight requests cost (bodies here are ~100 bytes). */
    usleep((useconds_t)latency_ms * 500);
    size_t heap_mid = mallinfo2().uordblks;
    double heap_kb = heap_mid > heap0 ? (double)(heap_mid - heap0) / 1024.0 / conc : 0;
    pthread_mutex_lock(&l.mu);
    while (atomic_load(&l.done) < total)
        pthread_cond_wait(&l.cv, &l.mu);
    pthread_mutex_unlock(&l.mu);
    double elapsed = (double)(ts_now() - t0) / 1e9;
    double cpu = cpu_s() - cpu0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long grow_kb = ru.ru_maxrss - rss0;
    double ideal = (double)conc / (latency_ms / 1000.0);
    double ideal_elapsed = (double)((total + conc - 1) / conc) * latency_ms / 1000.0;
    double rate = (double)total / elapsed;
    printf("%-10s %-7s %6d %9ld %8d %10.3f %10.1f %11.1f %8.1f%% %+9.1f %10.1f %8.2f %8.2f %7ld\n",
           scenario, client_name(which), conc, total, latency_ms, elapsed, rate, ideal,
           100.0 * rate / ideal, (elapsed - ideal_elapsed) * 1000.0, cpu * 1e6 / (double)total,
           (double)(grow_kb > 0 ? grow_kb : 0) / conc, heap_kb, atomic_load(&l.errors));
    fflush(stdout);
    dspy__engine_free(l.e);
    dspy__engine_headers_free(h);
    return 0;
}

static int child_level(const char *scenario, const char *target, int conc, long total,
                       int latency_ms, uint32_t recv_buf)
{
    static const enum dspy__engine_http1 clients[] = { DSPY__HTTP1_CURL, DSPY__HTTP1_OWN };
    for (int i = 0; i < 2; i++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0)
            _exit(run_level(scenario, clients[i], target, conc, total, latency_ms, recv_buf));
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status))
            return 1;
    }
    return 0;
}

/* Fork the loopback server; its port comes back through a pipe. */
static pid_t fork_server(int threads, int *port)
{
    int fds[2];
    if (pipe(fds))
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        struct ts_options o = { threads, 0 };
        struct ts_server *s = ts_start(&o);
        int p = s ? ts_port(s) : -1;
        if (write(fds[1], &p, sizeof(p)) != sizeof(p))
            _exit(1);
        for (;;)
            pause();
    }
    close(fds[1]);
    if (read(fds[0], port, sizeof(*port)) != sizeof(*port) || *port < 0)
        *port = -1;
    close(fds[0]);
    return pid;
}

static int parse_args(int argc, char **argv, struct config *c)
{
    static const int defaults[] = { 1, 16, 256, 1000, 10000 };
    memcpy(c->levels, defaults, sizeof(defaults));
    c->nlevels = 5;
    c->latency_ms = 100;
    c->rounds = 10;
    c->server_threads = 1;
    c->sched = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--url") && v) {
            c->url = v;
        } else if (!strcmp(a, "--latency-ms") && v) {
            c->latency_ms = atoi(v);
        } else if (!strcmp(a, "--rounds") && v) {
            c->rounds = atoi(v);
        } else if (!strcmp(a, "--server-threads") && v) {
            c->server_threads = atoi(v);
        } else if (!strcmp(a, "--recv-buf") && v) {
            c->recv_buf = (uint32_t)atoi(v);
        } else if (!strcmp(a, "--levels") && v) {
            c->nlevels = 0;
            for (char *p = (char *)v; *p && c->nlevels < 16; p += strspn(p, ","))
                c->levels[c->nlevels++] = (int)strtol(p, &p, 10);
        } else if (!strcmp(a, "--no-sched")) {
            c->sched = false;
            continue;
        } else {
            fprintf(stderr,
                    "usage: bench_engine [--url BASE] [--latency-ms MS] [--rounds N] [--levels "
                    "1,16,...] [--server-threads N] [--recv-buf BYTES] [--no-sched]\n");
            return -1;
        }
        i++;
    }
    return c->latency_ms > 0 && c->rounds > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    struct config c;
    memset(&c, 0, sizeof(c));
    if (parse_args(argc, argv, &c))
        return 2;
    long nofile = ts_raise_nofile();
    pid_t server = -1;
    char base[256], target[320];
    if (c.url) {
        snprintf(base, sizeof(base), "%s", c.url);
    } else {
        int port;
        server = fork_server(c.server_threads, &port);
        if (server < 0 || port < 0) {
            fprintf(stderr, "bench_engine: cannot start the loopback server\n");
            return 1;
        }
        snprintf(base, sizeof(base), "http://127.0.0.1:%d/v1", port);
    }
    printf("# bench_engine: closed loop of rounds x C POSTs; server %s; %ld cores; libcurl %s; "
           "nofile %ld\n",
           c.url ? c.url : "loopback (forked, fixed delay)", sysconf(_SC_NPROCESSORS_ONLN),
           curl_version_info(CURLVERSION_NOW)->version, nofile);
    printf("%-10s %-7s %6s %9s %8s %10s %10s %11s %9s %9s %10s %8s %8s %7s\n", "scenario", "client",
           "conc", "requests", "lat_ms", "elapsed_s", "req_s", "ideal_req_s", "of_ideal", "over_ms",
           "cpu_us_req", "rss_kb", "heap_kb", "errors");
    printf("# rss_kb, heap_kb: peak RSS growth and heap in use per in-flight request\n");
    int rc = 0;
    for (int i = 0; i < c.nlevels && !rc; i++) {
        int conc = c.levels[i];
        if (conc > nofile - 64) {
            printf("# C=%d skipped: RLIMIT_NOFILE %ld\n", conc, nofile);
            continue;
        }
        if (c.url)
            snprintf(target, sizeof(target), "%s/chat/completions", base);
        else
            snprintf(target, sizeof(target), "%s/chat/completions?d=%d", base, c.latency_ms);
        rc = child_level("throughput", target, conc, (long)conc * c.rounds, c.latency_ms,
                         c.recv_buf);
    }
    if (c.sched && !rc && !c.url) {
        snprintf(target, sizeof(target), "%s/chat/completions?d=20", base);
        rc = child_level("sched", target, 16, 256, 20, c.recv_buf);
    }
    if (server > 0) {
        kill(server, SIGKILL);
        waitpid(server, NULL, 0);
    }
    return rc;
}

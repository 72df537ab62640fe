/* `dspyc loadtest` (apps layer): flags, then one run, a sweep over rates, or a search for
 * the highest rate that meets an SLO, each reported to the terminal, JSON, a per-request
 * log and an HTML report; thresholds set the exit status (99 when one fails, as k6 does). */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "loadtest.h"
#include "util.h"

static volatile int interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void usage(FILE *out)
{
    fputs("usage: dspyc loadtest --url URL [flags]\n\n"
          "Open- and closed-loop load tests of OpenAI-compatible endpoints, dspyc programs and\n"
          "any HTTP endpoint, measured without coordinated omission. See docs/loadtest.md.\n\n"
          "target:\n"
          "  --url URL              OpenAI base URL (http://127.0.0.1:8000/v1), or with --http\n"
          "                         the full URL of the endpoint\n"
          "  --chat                 POST {url}/chat/completions (default)\n"
          "  --embeddings           POST {url}/embeddings\n"
          "  --http                 any endpoint: --method, --header, --body\n"
          "  --program FILE         run a dspyc program file through the library against --url\n"
          "  --stream / --no-stream chat streaming with usage (default: stream)\n"
          "  --model NAME           model name sent (default dspyc-sim)\n"
          "  --method M             HTTP method (default POST with a body, else GET)\n"
          "  --header 'N: V'        extra request header (repeatable)\n"
          "  --body TEXT|@FILE      body template; {{prompt}} and {{i}} are filled per template\n"
          "  --prompts FILE         JSONL prompts: \"messages\", \"prompt\", \"text\" or\n"
          "                         \"question\" (program: the input fields)\n"
          "  --input-words M[:SD]   generated prompts of ~Normal(M, SD) words (default 32:8)\n"
          "  --max-tokens N         max_tokens sent with chat requests\n"
          "  --templates N          distinct generated requests, picked at random (default 64)\n"
          "  --api-key-env VAR      send 'Authorization: Bearer $VAR' (default OPENAI_API_KEY)\n",
          out);
    fputs("load:\n"
          "  --rate R               open loop at R requests/s (default 10)\n"
          "  --arrival A            constant | poisson (default) | gamma\n"
          "  --burstiness K         gamma shape (vLLM --burstiness; <1 burstier, 1 = Poisson)\n"
          "  --users N              closed loop: N virtual users, each waits for its answer\n"
          "  --think S              closed loop: pause S seconds after each answer\n"
          "  --think-exp            draw the pause from an exponential with mean S\n"
          "  --max-concurrency N    cap requests in flight (with --rate: waiting counts in\n"
          "                         response time, not in service time; --program: the\n"
          "                         size of its thread pool, default 64)\n"
          "  --connections N        most keep-alive connections (default 1024, closed: users)\n"
          "  --threads N            generator threads, one epoll loop each (default 1; 0 = one\n"
          "                         per core)\n"
          "  --pattern P            constant | ramp | spike | wave | steps (default constant)\n"
          "  --ramp-up S / --ramp-down S       ramp: warm-up from 0 and cool-down to 0\n"
          "  --spike-at S / --spike-duration S / --spike-multiplier X\n"
          "                         spike: baseline --rate, X times it for a while, recovery\n"
          "  --wave-period S / --wave-amplitude F   wave: rate * (1 + F sin(2 pi t / S))\n"
          "  --steps R1,R2,...      steps: these rates in turn, --step-duration S each\n"
          "  --sweep R1,R2,...      a separate run at each rate, one report each\n"
          "  --duration S           issue requests for S seconds (default 10)\n"
          "  --count N              stop after N requests (with or without --duration)\n"
          "  --warmup S             leave requests intended in the first S seconds out of\n"
          "                         the statistics (they stay in the log and time series)\n",
          out);
    fputs("  --seed N               seed of arrivals, prompts and template choice (default 0)\n"
          "  --timeout S            per request, from the actual send (default 30)\n"
          "  --drain S              wait for answers after the last send (default: timeout)\n"
          "analysis:\n"
          "  --slo 'TERMS'          e.g. 'p95(ttft)<200ms,errors<1%': goodput counts requests\n"
          "                         meeting every ttft/tpot/e2el limit; the run passes or not\n"
          "  --search               find the highest rate meeting --slo (bisection of runs of\n"
          "                         --duration each, between 0 and --search-max, default\n"
          "                         4 x --rate; --search-iters N, default 6)\n"
          "  --threshold COND       e.g. 'p99(e2e)<500ms', 'error_rate<5%', 'throughput>90'\n"
          "                         (repeatable); any failure exits 99\n"
          "  --p95-limit MS         bottleneck rule: P95 latency above this (default 1000)\n"
          "  --pid PID              sample CPU % and RSS of the target process each second\n"
          "output:\n"
          "  --json FILE            summary as JSON with vLLM key names ('-' for stdout)\n"
          "  --log FILE             one JSON line per request\n"
          "  --html FILE            self-contained HTML report with charts (works offline)\n"
          "  --quiet                no terminal summary\n"
          "metrics: e2el latency service lag ttfb ttft ttft_service ttfc itl itl_token tpot;\n"
          "aggregates: p50..p99.9 (p(N) or pN), mean, median, min, max; rates: error_rate,\n"
          "success_rate, throughput, output_throughput, goodput, achieved_ratio.\n",
          out);
}

enum {
    O_URL = 1,
    O_CHAT,
    O_EMBED,
    O_HTTP,
    O_PROGRAM,
    O_STREAM,
    O_NOSTREAM,
    O_MODEL,
    O_METHOD,
    O_HEADER,
    O_BODY,
    O_PROMPTS,
    O_INWORDS,
    O_MAXTOK,
    O_TEMPLATES,
    O_KEYENV,
    O_RATE,
    O_ARRIVAL,
    O_BURST,
    O_USERS,
    O_THINK,
    O_THINKEXP,
    O_MAXCONC,
    O_CONNS,
    O_THREADS,
    O_PATTERN,
    O_RAMPUP,
    O_RAMPDOWN,
    O_SPIKEAT,
    O_SPIKELEN,
    O_SPIKEMULT,
    O_WAVEP,
    O_WAVEA,
    O_STEPS,
    O_STEPDUR,
    O_SWEEP,
    O_DURATION,
    O_COUNT,
    O_WARMUP,
    O_SEED,
    O_TIMEOUT,
    O_DRAIN,
    O_SLO,
    O_SEARCH,
    O_SEARCHMAX,
    O_SEARCHIT,
    O_THRESH,
    O_P95,
    O_PID,
    O_JSON,
    O_LOG,
    O_HTML,
    O_QUIET,
    O_HELP
};

static const struct option longopts[] = {
    { "url", 1, 0, O_URL },
    { "chat", 0, 0, O_CHAT },
    { "embeddings", 0, 0, O_EMBED },
    { "http", 0, 0, O_HTTP },
    { "program", 1, 0, O_PROGRAM },
    { "stream", 0, 0, O_STREAM },
    { "no-stream", 0, 0, O_NOSTREAM },
    { "model", 1, 0, O_MODEL },
    { "method", 1, 0, O_METHOD },
    { "header", 1, 0, O_HEADER },
    { "body", 1, 0, O_BODY },
    { "prompts", 1, 0, O_PROMPTS },
    { "input-words", 1, 0, O_INWORDS },
    { "max-tokens", 1, 0, O_MAXTOK },
    { "templates", 1, 0, O_TEMPLATES },
    { "api-key-env", 1, 0, O_KEYENV },
    { "rate", 1, 0, O_RATE },
    { "arrival", 1, 0, O_ARRIVAL },
    { "burstiness", 1, 0, O_BURST },
    { "users", 1, 0, O_USERS },
    { "think", 1, 0, O_THINK },
    { "think-exp", 0, 0, O_THINKEXP },
    { "max-concurrency", 1, 0, O_MAXCONC },
    { "connections", 1, 0, O_CONNS },
    { "threads", 1, 0, O_THREADS },
    { "pattern", 1, 0, O_PATTERN },
    { "ramp-up", 1, 0, O_RAMPUP },
    { "ramp-down", 1, 0, O_RAMPDOWN },
    { "spike-at", 1, 0, O_SPIKEAT },
    { "spike-duration", 1, 0, O_SPIKELEN },
    { "spike-multiplier", 1, 0, O_SPIKEMULT },
    { "wave-period", 1, 0, O_WAVEP },
    { "wave-amplitude", 1, 0, O_WAVEA },
    { "steps", 1, 0, O_STEPS },
    { "step-duration", 1, 0, O_STEPDUR },
    { "sweep", 1, 0, O_SWEEP },
    { "duration", 1, 0, O_DURATION },
    { "count", 1, 0, O_COUNT },
    { "warmup", 1, 0, O_WARMUP },
    { "seed", 1, 0, O_SEED },
    { "timeout", 1, 0, O_TIMEOUT },
    { "drain", 1, 0, O_DRAIN },
    { "slo", 1, 0, O_SLO },
    { "search", 0, 0, O_SEARCH },
    { "search-max", 1, 0, O_SEARCHMAX },
    { "search-iters", 1, 0, O_SEARCHIT },
    { "threshold", 1, 0, O_THRESH },
    { "p95-limit", 1, 0, O_P95 },
    { "pid", 1, 0, O_PID },
    { "json", 1, 0, O_JSON },
    { "log", 1, 0, O_LOG },
    { "html", 1, 0, O_HTML },
    { "quiet", 0, 0, O_QUIET },
    { "help", 0, 0, O_HELP },
    { 0, 0, 0, 0 },
};

static int parse_rates(const char *flag, const char *arg, struct lt_opts *o)
{
    char *copy = strdup(arg), *save = NULL;
    o->nrates = 0;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o->nrates == 64 || parse_double_flag(flag, t, 0, 1e7, &o->rates[o->nrates])) {
            free(copy);
            return -1;
        }
        o->nrates++;
    }
    free(copy);
    return o->nrates ? 0 : -1;
}

static char *read_body(const char *arg)
{
    if (arg[0] != '@')
        return strdup(arg);
    FILE *f = fopen(arg + 1, "rb");
    if (!f)
        return NULL;
    char *b = malloc(1 << 22);
    size_t n = fread(b, 1, (1 << 22) - 1, f);
    b[n] = '\0';
    fclose(f);
    return b;
}

static int parse_opt(struct lt_opts *o, int c, const char *a, char **body_mem)
{
    double d;
    long l;
    switch (c) {
    case O_URL: o->url = a; return 0;
    case O_CHAT: o->target = LT_CHAT; return 0;
    case O_EMBED: o->target = LT_EMBED; return 0;
    case O_HTTP: o->target = LT_HTTP; return 0;
    case O_PROGRAM:
        o->target = LT_PROGRAM;
        o->program_file = a;
        return 0;
    case O_STREAM: o->stream = true; return 0;
    case O_NOSTREAM: o->stream = false; return 0;
    case O_MODEL: o->model = a; return 0;
    case O_METHOD: o->method = a; return 0;
    case O_HEADER:
        if (o->nheaders == 32 || !strchr(a, ':')) {
            fprintf(stderr, "dspyc loadtest: --header wants 'Name: value'\n");
            return -1;
        }
        for (const char *p = a; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) {
                fprintf(stderr,
                        "dspyc loadtest: --header: control character (byte 0x%02x) "
                        "at offset %ld refused: CR or LF would start another header\n",
                        (unsigned char)*p, (long)(p - a));
                return -1;
            }
        o->headers[o->nheaders++] = a;
        return 0;
    case O_BODY:
        free(*body_mem);
        if (!(*body_mem = read_body(a))) {
            fprintf(stderr, "dspyc loadtest: cannot read --body %s\n", a);
            return -1;
        }
        o->body = *body_mem;
        return 0;
    case O_PROMPTS: o->prompts_file = a; return 0;
    case O_INWORDS: {
        const char *colon = strchr(a, ':');
        char m[64];
        snprintf(m, sizeof(m), "%.*s", colon ? (int)(colon - a) : (int)strlen(a), a);
        if (parse_double_flag("--input-words", m, 1, 1e6, &o->input_words))
            return -1;
        o->input_words_sd = 0;
        return colon ? parse_double_flag("--input-words", colon + 1, 0, 1e6, &o->input_words_sd)
                     : 0;
    }
    case O_MAXTOK: return parse_long_flag("--max-tokens", a, 1, 1 << 24, &o->max_tokens);
    case O_TEMPLATES:
        if (parse_long_flag("--templates", a, 1, 100000, &l))
            return -1;
        o->ntemplates = (unsigned)l;
        return 0;
    case O_KEYENV: o->api_key_env = a; return 0;
    case O_RATE: return parse_double_flag("--rate", a, 1e-6, 1e8, &o->rate);
    case O_ARRIVAL:
        if (!strcmp(a, "constant"))
            o->arrival = DSPY_ARRIVAL_CONSTANT;
        else if (!strcmp(a, "poisson"))
            o->arrival = DSPY_ARRIVAL_POISSON;
        else if (!strcmp(a, "gamma"))
            o->arrival = DSPY_ARRIVAL_GAMMA;
        else {
            fprintf(stderr, "dspyc loadtest: --arrival is constant, poisson or gamma\n");
            return -1;
        }
        return 0;
    case O_BURST:
        if (parse_double_flag("--burstiness", a, 1e-3, 1e6, &o->burstiness))
            return -1;
        if (o->arrival == DSPY_ARRIVAL_POISSON)
            o->arrival = DSPY_ARRIVAL_GAMMA;
        return 0;
    case O_USERS:
        if (parse_long_flag("--users", a, 1, 1000000, &l))
            return -1;
        o->users = (unsigned)l;
        o->closed = true;
        return 0;
    case O_THINK: return parse_double_flag("--think", a, 0, 3600, &o->think_s);
    case O_THINKEXP: o->think_exp = true; return 0;
    case O_MAXCONC:
    case O_CONNS:
    case O_THREADS:
        if (parse_long_flag(c == O_MAXCONC ? "--max-concurrency"
                            : c == O_CONNS ? "--connections"
                                           : "--threads",
                            a, c == O_THREADS ? 0 : 1, 1000000, &l))
            return -1;
        if (c == O_THREADS && l == 0) /* one generator thread per online core */
            l = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1;
        *(c == O_MAXCONC ? &o->max_in_flight
          : c == O_CONNS ? &o->connections
                         : &o->threads) = (unsigned)l;
        return 0;
    case O_PATTERN: {
        static const char *const names[] = { "constant", "ramp", "spike", "wave", "steps" };
        for (int i = 0; i < 5; i++)
            if (!strcmp(a, names[i])) {
                o->pattern = (enum lt_pattern)i;
                return 0;
            }
        fprintf(stderr, "dspyc loadtest: --pattern is constant, ramp, spike, wave or steps\n");
        return -1;
    }
    case O_RAMPUP: return parse_double_flag("--ramp-up", a, 0, 1e6, &o->ramp_up_s);
    case O_RAMPDOWN: return parse_double_flag("--ramp-down", a, 0, 1e6, &o->ramp_down_s);
    case O_SPIKEAT: return parse_double_flag("--spike-at", a, 0, 1e6, &o->spike_at_s);
    case O_SPIKELEN: return parse_double_flag("--spike-duration", a, 0, 1e6, &o->spike_len_s);
    case O_SPIKEMULT: return parse_double_flag("--spike-multiplier", a, 0, 1e6, &o->spike_mult);
    case O_WAVEP: return parse_double_flag("--wave-period", a, 0.01, 1e6, &o->wave_period_s);
    case O_WAVEA: return parse_double_flag("--wave-amplitude", a, 0, 1, &o->wave_amp);
    case O_STEPS: o->pattern = LT_STEPS; return parse_rates("--steps", a, o);
    case O_STEPDUR: return parse_double_flag("--step-duration", a, 0.01, 1e6, &o->step_s);
    case O_SWEEP: o->sweep = true; return parse_rates("--sweep", a, o);
    case O_DURATION: return parse_double_flag("--duration", a, 0, 1e7, &o->duration_s);
    case O_COUNT:
        if (parse_long_flag("--count", a, 1, 1L << 50, &l))
            return -1;
        o->count = (uint64_t)l;
        return 0;
    case O_WARMUP: return parse_double_flag("--warmup", a, 0, 1e6, &o->warmup_s);
    case O_SEED:
        if (parse_long_flag("--seed", a, 0, 1L << 62, &l))
            return -1;
        o->seed = (uint64_t)l;
        return 0;
    case O_TIMEOUT: return parse_double_flag("--timeout", a, 0.001, 1e6, &o->timeout_s);
    case O_DRAIN: return parse_double_flag("--drain", a, 0, 1e6, &o->drain_s);
    case O_SLO: o->slo_text = a; return lt_parse_conds(a, o->slo, 16, &o->nslo);
    case O_SEARCH: o->search = true; return 0;
    case O_SEARCHMAX: return parse_double_flag("--search-max", a, 1e-3, 1e8, &o->search_max);
    case O_SEARCHIT:
        if (parse_long_flag("--search-iters", a, 1, 30, &l))
            return -1;
        o->search_iters = (unsigned)l;
        return 0;
    case O_THRESH: {
        size_t n = 0;
        if (o->nthresholds == 32 ||
            lt_parse_conds(a, &o->thresholds[o->nthresholds], 32 - o->nthresholds, &n))
            return -1;
        o->nthresholds += n;
        return 0;
    }
    case O_P95: return parse_double_flag("--p95-limit", a, 0, 1e9, &o->p95_limit_ms);
    case O_PID:
        if (parse_long_flag("--pid", a, 1, 1L << 30, &l))
            return -1;
        o->pid = (int)l;
        return 0;
    case O_JSON: o->json_path = a; return 0;
    case O_LOG: o->log_path = a; return 0;
    case O_HTML: o->html_path = a; return 0;
    case O_QUIET: o->quiet = true; return 0;
    default: (void)d; return -1;
    }
}

static void defaults(struct lt_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->stream = true;
    o->input_words = 32;
    o->input_words_sd = 8;
    o->max_tokens = -1;
    o->ntemplates = 64;
    o->rate = 10;
    o->arrival = DSPY_ARRIVAL_POISSON;
    o->burstiness = 1;
    o->threads = 1;
    o->duration_s = -1;
    o->timeout_s = 30;
    o->drain_s = -1;
    o->spike_mult = 5;
    o->wave_period_s = 10;
    o->wave_amp = 0.5;
    o->step_s = 5;
    o->search_iters = 6;
    o->p95_limit_ms = 1000;
}

/* One run at `rate`: collect, analyze, report. Returns the run (caller releases) or NULL. */
static struct lt_run *run_once(const struct lt_opts *o, double rate,
                               const struct dspy_loadgen_request *reqs, size_t n, const char *host,
                               int port, bool report)
{
    struct lt_run *r = malloc(sizeof(*r));
    if (lt_run_init(r, o, rate)) {
        free(r);
        return NULL;
    }
    int rc = o->target == LT_PROGRAM ? lt_run_program(r, &interrupted)
                                     : lt_run_http(r, reqs, n, host, port, &interrupted);
    if (rc) {
        lt_run_release(r);
        free(r);
        return NULL;
    }
    lt_analyze(r);
    if (report && !o->quiet) /* with --json - the JSON owns stdout */
        lt_print_summary(r, o->json_path && !strcmp(o->json_path, "-") ? stderr : stdout);
    return r;
}

static int write_json(const char *path, json_t *j)
{
    int rc = path && !strcmp(path, "-") ? json_dumpf(j, stdout, JSON_INDENT(2))
                                        : json_dump_file(j, path, JSON_INDENT(2));
    if (path && !strcmp(path, "-"))
        fputc('\n', stdout);
    if (rc)
        fprintf(stderr, "dspyc loadtest: cannot write %s\n", path);
    return rc;
}

static int finish_outputs(const struct lt_opts *o, json_t *report)
{
    int rc = 0;
    if (o->json_path)
        rc |= write_json(o->json_path, report);
    if (o->html_path)
        rc |= lt_write_html(o->html_path, report);
    return rc;
}

int cmd_loadtest(int argc, char **argv)
{
    struct lt_opts o;
    char *body_mem = NULL, host[256];
    int port = 0, c, ret = 1;
    struct dspy_loadgen_request *reqs = NULL;
    size_t nreqs = 0;
    json_t *report = NULL;
    defaults(&o);
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (c == O_HELP) {
            usage(stdout);
            ret = 0;
            goto out;
        }
        if (c == '?' || parse_opt(&o, c, optarg, &body_mem))
            goto out_usage;
    }
    if (optind < argc || !o.url) {
        fprintf(stderr, "dspyc loadtest: %s\n",
                o.url ? "unexpected argument" : "--url is required");
        goto out_usage;
    }
    if (o.duration_s < 0)
        o.duration_s = o.count ? 0 : 10;
    if (o.drain_s < 0)
        o.drain_s = o.timeout_s;
    if (o.closed && o.target != LT_PROGRAM && !o.connections)
        o.connections = o.users;
    if (o.search && !o.nslo) {
        fprintf(stderr, "dspyc loadtest: --search needs --slo\n");
        goto out_usage;
    }
    if ((o.search || o.sweep) && o.closed) {
        fprintf(stderr, "dspyc loadtest: --search and --sweep vary the open-loop --rate\n");
        goto out_usage;
    }
    signal(SIGINT, on_sigint);
    if (o.target != LT_PROGRAM && lt_build_requests(&o, &reqs, &nreqs, host, sizeof(host), &port))
        goto out;
    if (o.sweep || o.search) {
        report = json_object();
        json_t *runs = json_array();
        double lo = 0, hi = o.search_max > 0 ? o.search_max : 4 * o.rate, best = 0;
        size_t iters = o.sweep ? o.nrates : o.search_iters;
        for (size_t i = 0; i < iters && !interrupted; i++) {
            double rate = o.sweep ? o.rates[i] : (i == 0 ? hi : (lo + hi) / 2);
            struct lt_run *r = run_once(&o, rate, reqs, nreqs, host, port, false);
            if (!r)
                goto out;
            json_t *j = lt_run_json(r);
            json_array_append_new(runs, j);
            bool pass = r->slo_ok;
            if (!o.quiet)
                fprintf(o.json_path && !strcmp(o.json_path, "-") ? stderr : stdout,
                        "rate %9.2f req/s: achieved %9.2f req/s, p50 %8.2f ms, p99 %8.2f ms, "
                        "errors %5.2f %%%s\n",
                        rate, lt_achieved_rps(r),
                        lt_ms(dspy_hist_percentile(r->total.h[M_E2EL], 50)),
                        lt_ms(dspy_hist_percentile(r->total.h[M_E2EL], 99)), 100 * lt_error_rate(r),
                        o.nslo ? (pass ? "  SLO met" : "  SLO missed") : "");
            lt_run_release(r);
            free(r);
            if (!o.search)
                continue;
            if (!pass) {
                hi = rate;
                continue;
            }
            lo = rate;
            best = rate > best ? rate : best;
            if (i == 0)
                break; /* even the top of the range meets it */
        }
        json_object_set_new(report, "runs", runs);
        if (o.search) {
            json_object_set_new(report, "slo", json_string(o.slo_text));
            json_object_set_new(report, "max_rate_meeting_slo", json_real(best));
            json_object_set_new(report, "search_bracket", json_pack("[f,f]", lo, hi));
            if (!o.quiet)
                printf("highest rate meeting '%s': %.2f req/s (bracket %.2f .. %.2f)\n", o.slo_text,
                       best, lo, hi);
        }
        ret = finish_outputs(&o, report) ? 1 : 0;
        goto out;
    }
    struct lt_run *r = run_once(&o, o.rate, reqs, nreqs, host, port, true);
    if (!r)
        goto out;
    report = lt_run_json(r);
    ret = finish_outputs(&o, report) ? 1 : 0;
    if (!ret && !r->thresholds_ok)
        ret = 99;
    lt_run_release(r);
    free(r);
    goto out;
out_usage:
    fprintf(stderr, "see 'dspyc loadtest --help'\n");
    ret = 2;
out:
    json_decref(report);
    lt_free_requests(reqs, nreqs);
    free(body_mem);
    return ret;
}

/* `dspyc jobs submit|status|list|cancel|wait|result` (apps layer): a thin client of the job
 * API of `dspyc serve --jobs`, over libcurl. */
#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dspyc/dspyc.h>
#include <jansson.h>

#include "cli.h"
#include "util.h"

enum {
    OPT_SERVER = 1600,
    OPT_TOKEN_FILE,
    OPT_PRIORITY,
    OPT_KEY,
    OPT_STATE,
    OPT_LIMIT,
    OPT_TIMEOUT,
    OPT_SAVE,
    OPT_FILE,
    OPT_OLDER_THAN
};

static const char usage_text[] =
    "usage: dspyc jobs submit SPEC.json|- [--priority N] [--idempotency-key K]\n"
    "       dspyc jobs submit --file SPECS.jsonl [--priority N]\n"
    "       dspyc jobs status ID\n"
    "       dspyc jobs list [--state STATE] [--limit N]\n"
    "       dspyc jobs cancel ID\n"
    "       dspyc jobs wait ID [--timeout S]\n"
    "       dspyc jobs result ID [--save STATE.json]\n"
    "       dspyc jobs purge [ID] [--older-than S] [--state STATE]\n\n"
    "A client of 'dspyc serve --jobs' (docs/jobs.md has the spec format).\n"
    "  submit   queue a job; prints its id. Exit 3 when the queue refuses it (full).\n"
    "           With --file, one spec a line, sent 1,000 at a time (POST /v1/jobs/batch):\n"
    "           one 'ID STATE' line each, or '- refused HTTP-STATUS REASON'; exit 3 when\n"
    "           backpressure refused some, 2 when a spec was bad\n"
    "  status   the job as JSON: state, progress, ETA, best score, timings, error\n"
    "  list     one job a line: id, state, priority, kind, best score\n"
    "  cancel   cancel a queued or running job\n"
    "  wait     until the job ends; exit 0 when it succeeded, 1 when not\n"
    "  result   the job's result JSON; --save writes its DSPy state (DSPy's load() reads it)\n"
    "  purge    remove ended jobs with their results: job ID, or every ended job (of\n"
    "           --state, ended more than --older-than seconds ago); prints how many\n\n"
    "flags:\n"
    "  --server URL          the server (default $DSPYC_SERVER, else http://127.0.0.1:8080)\n"
    "  --token-file F        send the bearer token on the first line of F\n"
    "  --priority N          0-9, higher first (overrides the spec's)\n"
    "  --idempotency-key K   a second submission with K returns the first job\n"
    "  --state S             queued, running, succeeded, failed, cancelled or dead\n"
    "  --limit N             at most N jobs (default 100)\n"
    "  --timeout S           give up waiting after S seconds (exit 2; default: never)\n"
    "  --file F              submit: the JSON-lines file of specs (- = stdin)\n"
    "  --older-than S        purge: only jobs that ended more than S seconds ago\n"
    "  -h, --help            this text\n";

struct client {
    const char *server;
    char auth[600];
};

struct body {
    char *ptr;
    size_t len;
};

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    struct body *b = ud;
    size_t add = size * n;
    if (b->len + add > (64u << 20))
        return 0;
    char *q = realloc(b->ptr, b->len + add + 1);
    if (!q)
        return 0;
    memcpy(q + b->len, p, add);
    b->ptr = q;
    b->len += add;
    b->ptr[b->len] = 0;
    return add;
}

static char retry_after[32];

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    (void)ud;
    size_t len = size * n;
    if (len > 12 && !strncasecmp(p, "Retry-After:", 12)) {
        size_t k = strspn(p + 12, " ");
        size_t m = strcspn(p + 12 + k, "\r\n");
        if (m >= sizeof(retry_after))
            m = sizeof(retry_after) - 1;
        memcpy(retry_after, p + 12 + k, m);
        retry_after[m] = 0;
    }
    return len;
}

/* One request; *status gets the HTTP status (0 when it could not be sent). The body is
 * returned (caller frees with free) or NULL. */
static char *request(const struct client *c, const char *method, const char *path, const char *data,
                     long *status)
{
    CURL *h = curl_easy_init();
    struct body b = { NULL, 0 };
    char url[2048];
    struct curl_slist *hdr = NULL;
    *status = 0;
    if (!h)
        return NULL;
    snprintf(url, sizeof(url), "%s%s", c->server, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    if (c->auth[0])
        hdr = curl_slist_append(hdr, c->auth);
    if (data) {
        hdr = curl_slist_append(hdr, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, data);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    CURLcode rc = curl_easy_perform(h);
    if (rc != CURLE_OK) {
        fprintf(stderr, "dspyc jobs: %s: %s\n", url, curl_easy_strerror(rc));
        free(b.ptr);
        b.ptr = NULL;
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    }
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    return b.ptr;
}

/* The server's error message from an error body, or the body itself. */
static void print_fail(const char *what, long status, const char *body)
{
    json_t *j = body ? json_loads(body, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    fprintf(stderr, "dspyc jobs %s: HTTP %ld: %s\n", what, status,
            msg    ? msg
            : body ? body
                   : "(no answer)");
    json_decref(j);
}

static json_t *get_json(const struct client *c, const char *what, const char *path)
{
    long st;
    char *body = request(c, "GET", path, NULL, &st);
    if (!body)
        return NULL;
    if (st != 200) {
        print_fail(what, st, body);
        free(body);
        return NULL;
    }
    json_t *j = json_loads(body, 0, NULL);
    free(body);
    if (!j)
        fprintf(stderr, "dspyc jobs %s: the server's answer is not JSON\n", what);
    return j;
}

static int do_submit(const struct client *c, const char *file, long priority, const char *key)
{
    json_error_t je;
    json_t *spec = !strcmp(file, "-") ? json_loadf(stdin, 0, &je) : json_load_file(file, 0, &je);
    if (!spec) {
        fprintf(stderr, "dspyc jobs submit: %s:%d:%d: %s\n", file, je.line, je.column, je.text);
        return 2;
    }
    if (priority >= 0)
        json_object_set_new(spec, "priority", json_integer(priority));
    if (key)
        json_object_set_new(spec, "idempotency_key", json_string(key));
    char *data = json_dumps(spec, JSON_COMPACT);
    json_decref(spec);
    long st;
    char *body = request(c, "POST", "/v1/jobs", data, &st);
    dspy_free(data);
    int rc = 1;
    if (body && (st == 202 || st == 200)) {
        json_t *j = json_loads(body, 0, NULL);
        printf("%s\t%s\n", json_string_value(json_object_get(j, "id")),
               json_string_value(json_object_get(j, "state")));
        json_decref(j);
        rc = 0;
    } else if (body) {
        print_fail("submit", st, body);
        if (st == 429) {
            fprintf(stderr, "dspyc jobs submit: retry after %s s\n", retry_after);
            rc = 3;
        } else if (st == 400) {
            rc = 2;
        }
    }
    free(body);
    return rc;
}

/* One batch of specs (a JSON array's text): prints a line per item; the worst exit code. */
static int post_batch(const struct client *c, json_t *batch)
{
    char *data = json_dumps(batch, JSON_COMPACT);
    long st;
    char *body = data ? request(c, "POST", "/v1/jobs/batch", data, &st) : NULL;
    dspy_free(data);
    if (!body || st != 200) {
        if (body)
            print_fail("submit", st, body);
        free(body);
        return st == 400 ? 2 : 1;
    }
    json_t *j = json_loads(body, 0, NULL), *item;
    free(body);
    size_t i;
    int rc = j ? 0 : 1;
    json_array_foreach(json_object_get(j, "jobs"), i, item) {
        int status = (int)json_integer_value(json_object_get(item, "status"));
        if (status == 200 || status == 202) {
            printf("%s\t%s\n", json_string_value(json_object_get(item, "id")),
                   json_string_value(json_object_get(item, "state")));
            continue;
        }
        const char *e = json_string_value(json_object_get(item, "error"));
        printf("-\trefused\t%d\t%s\n", status, e ? e : "");
        int r = status == 429 ? 3 : status == 400 ? 2 : 1;
        if (r > rc)
            rc = r;
    }
    json_decref(j);
    return rc;
}

static int do_submit_file(const struct client *c, const char *file, long priority)
{
    FILE *f = !strcmp(file, "-") ? stdin : fopen(file, "r");
    if (!f) {
        fprintf(stderr, "dspyc jobs submit: cannot open %s\n", file);
        return 2;
    }
    json_t *batch = json_array();
    char *line = NULL;
    size_t cap = 0, sent = 0;
    ssize_t n;
    long lineno = 0;
    int rc = 0;
    while (rc != 2 && (n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)n)
            continue;
        json_error_t je;
        json_t *spec = json_loadb(line, (size_t)n, 0, &je);
        if (!json_is_object(spec)) {
            fprintf(stderr, "dspyc jobs submit: %s:%ld: %s\n", file, lineno,
                    spec ? "not a JSON object" : je.text);
            json_decref(spec);
            rc = 2;
            break;
        }
        if (priority >= 0)
            json_object_set_new(spec, "priority", json_integer(priority));
        json_array_append_new(batch, spec);
        if (json_array_size(batch) == 1000) {
            int r = post_batch(c, batch);
            rc = r > rc ? r : rc;
            sent += json_array_size(batch);
            json_array_clear(batch);
        }
    }
    if (rc != 2 && json_array_size(batch)) {
        int r = post_batch(c, batch);
        rc = r > rc ? r : rc;
        sent += json_array_size(batch);
    }
    if (rc != 2 && !sent) {
        fprintf(stderr, "dspyc jobs submit: %s has no specs\n", file);
        rc = 2;
    }
    free(line); /* getline's */
    json_decref(batch);
    if (f != stdin)
        fclose(f);
    return rc;
}

static int do_purge(const struct client *c, const char *id, const char *state, double older_s)
{
    char path[256];
    if (id)
        snprintf(path, sizeof(path), "/v1/jobs/%s?purge=1", id);
    else
        snprintf(path, sizeof(path), "/v1/jobs?older_than=%.3f%s%s", older_s,
                 state ? "&state=" : "", state ? state : "");
    long st;
    char *body = request(c, "DELETE", path, NULL, &st);
    int rc = 1;
    if (body && st == 200) {
        json_t *j = json_loads(body, 0, NULL);
        json_t *p = json_object_get(j, "purged");
        printf("purged %lld\n",
               json_is_boolean(p) ? (long long)json_is_true(p) : (long long)json_integer_value(p));
        json_decref(j);
        rc = 0;
    } else if (body) {
        print_fail("purge", st, body);
    }
    free(body);
    return rc;
}

static int do_list(const struct client *c, const char *state, long limit)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/jobs?limit=%ld%s%s", limit, state ? "&state=" : "",
             state ? state : "");
    json_t *j = get_json(c, "list", path);
    if (!j)
        return 1;
    json_t *jobs = json_object_get(j, "jobs"), *job;
    size_t i;
    json_array_foreach(jobs, i, job) {
        json_t *best = json_object_get(job, "best_score");
        char b[32] = "-";
        if (json_is_number(best))
            snprintf(b, sizeof(b), "%.2f", json_number_value(best));
        printf("%s\t%s\t%d\t%s\t%s\n", json_string_value(json_object_get(job, "id")),
               json_string_value(json_object_get(job, "state")),
               (int)json_integer_value(json_object_get(job, "priority")),
               json_string_value(json_object_get(job, "kind")), b);
    }
    json_decref(j);
    return 0;
}

static bool valid_id(const char *id)
{
    return id && *id && strlen(id) < 64 &&
           strspn(id, "abcdefghijklmnopqrstuvwxyz0123456789-") == strlen(id);
}

static int do_wait(const struct client *c, const char *id, double timeout_s)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/jobs/%s", id);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        json_t *j = get_json(c, "wait", path);
        if (!j)
            return 1;
        const char *st = json_string_value(json_object_get(j, "state"));
        int s = dspy_job_state_from_name(st);
        if (s >= 0 && dspy_job_state_terminal((enum dspy_job_state)s)) {
            const char *e = json_string_value(json_object_get(j, "error"));
            printf("%s\t%s%s%s\n", id, st, e ? "\t" : "", e ? e : "");
            json_decref(j);
            return s == DSPY_JOB_SUCCEEDED ? 0 : 1;
        }
        char state[32];
        snprintf(state, sizeof(state), "%s", st ? st : "?");
        json_decref(j);
        clock_gettime(CLOCK_MONOTONIC, &now);
        double el = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
        if (timeout_s > 0 && el > timeout_s) {
            fprintf(stderr, "dspyc jobs wait: %s still %s after %g s\n", id, state, timeout_s);
            return 2;
        }
        struct timespec ts = { 0, 200000000L };
        nanosleep(&ts, NULL);
    }
}

int cmd_jobs(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "server", required_argument, NULL, OPT_SERVER },
        { "token-file", required_argument, NULL, OPT_TOKEN_FILE },
        { "priority", required_argument, NULL, OPT_PRIORITY },
        { "idempotency-key", required_argument, NULL, OPT_KEY },
        { "state", required_argument, NULL, OPT_STATE },
        { "limit", required_argument, NULL, OPT_LIMIT },
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { "save", required_argument, NULL, OPT_SAVE },
        { "file", required_argument, NULL, OPT_FILE },
        { "older-than", required_argument, NULL, OPT_OLDER_THAN },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct client c = { getenv("DSPYC_SERVER"), "" };
    const char *token_file = NULL, *key = NULL, *state = NULL, *save = NULL, *file = NULL;
    long priority = -1, limit = 100, v;
    double timeout_s = 0, older_s = 0, d;
    int opt;
    if (!c.server)
        c.server = "http://127.0.0.1:8080";
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case OPT_SERVER: c.server = optarg; break;
        case OPT_TOKEN_FILE: token_file = optarg; break;
        case OPT_PRIORITY:
            if (parse_long_flag("--priority", optarg, 0, 9, &v))
                return 2;
            priority = v;
            break;
        case OPT_KEY: key = optarg; break;
        case OPT_STATE:
            if (dspy_job_state_from_name(optarg) < 0) {
                fprintf(stderr,
                        "dspyc jobs: --state '%s' is not queued, running, succeeded, "
                        "failed, cancelled or dead\n",
                        optarg);
                return 2;
            }
            state = optarg;
            break;
        case OPT_LIMIT:
            if (parse_long_flag("--limit", optarg, 1, 100000, &v))
                return 2;
            limit = v;
            break;
        case OPT_TIMEOUT:
            if (parse_double_flag("--timeout", optarg, 0.001, 1e9, &d))
                return 2;
            timeout_s = d;
            break;
        case OPT_SAVE: save = optarg; break;
        case OPT_FILE: file = optarg; break;
        case OPT_OLDER_THAN:
            if (parse_double_flag("--older-than", optarg, 0, 1e10, &d))
                return 2;
            older_s = d;
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        default: fprintf(stderr, "see 'dspyc jobs --help'\n"); return 2;
        }
    }
    if (optind >= argc) {
        fputs(usage_text, stderr);
        return 2;
    }
    if (token_file) {
        FILE *f = fopen(token_file, "r");
        char tok[512];
        if (!f || !fgets(tok, sizeof(tok), f)) {
            fprintf(stderr, "dspyc jobs: cannot read the token from %s\n", token_file);
            if (f)
                fclose(f);
            return 2;
        }
        fclose(f);
        tok[strcspn(tok, " \t\r\n")] = 0;
        snprintf(c.auth, sizeof(c.auth), "Authorization: Bearer %s", tok);
    }
    const char *sub = argv[optind++];
    const char *arg = optind < argc ? argv[optind++] : NULL;
    bool purge = !strcmp(sub, "purge");
    bool needs_id = strcmp(sub, "submit") && strcmp(sub, "list") && !purge;
    if (file && strcmp(sub, "submit")) {
        fprintf(stderr, "dspyc jobs %s: --file is for submit\n", sub);
        return 2;
    }
    if (file && (arg || key)) {
        fprintf(stderr, "dspyc jobs submit: --file takes the specs (and their keys) from the "
                        "file: no SPEC.json nor --idempotency-key with it\n");
        return 2;
    }
    if (purge && arg && (older_s > 0 || state)) {
        fprintf(stderr, "dspyc jobs purge: an ID or --older-than/--state, not both\n");
        return 2;
    }
    if (purge && state && (dspy_job_state_from_name(state) < DSPY_JOB_SUCCEEDED)) {
        fprintf(stderr,
                "dspyc jobs purge: --state '%s' is not an ended state (succeeded, "
                "failed, cancelled, dead)\n",
                state);
        return 2;
    }
    if (purge && arg && !valid_id(arg)) {
        fprintf(stderr, "dspyc jobs purge: '%s' is not a job id\n", arg);
        return 2;
    }
    if ((needs_id || (!strcmp(sub, "submit") && !file)) && !arg) {
        fprintf(stderr, "dspyc jobs %s: name the %s\n", sub, needs_id ? "job id" : "spec file");
        return 2;
    }
    if (needs_id && !valid_id(arg)) {
        fprintf(stderr, "dspyc jobs %s: '%s' is not a job id\n", sub, arg);
        return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "dspyc jobs %s: unexpected argument '%s'\n", sub, argv[optind]);
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = 2;
    char path[160];
    if (!strcmp(sub, "submit") && file) {
        rc = do_submit_file(&c, file, priority);
    } else if (!strcmp(sub, "submit")) {
        rc = do_submit(&c, arg, priority, key);
    } else if (purge) {
        rc = do_purge(&c, arg, state, older_s);
    } else if (!strcmp(sub, "list")) {
        rc = do_list(&c, state, limit);
    } else if (!strcmp(sub, "wait")) {
        rc = do_wait(&c, arg, timeout_s);
    } else if (!strcmp(sub, "status") || !strcmp(sub, "result")) {
        bool res = !strcmp(sub, "result");
        snprintf(path, sizeof(path), "/v1/jobs/%s%s", arg, res ? "/result" : "");
        json_t *j = get_json(&c, sub, path);
        rc = j ? 0 : 1;
        if (j && res && save) {
            json_t *st = json_object_get(j, "state");
            if (!st || json_dump_file(st, save, JSON_INDENT(2))) {
                fprintf(stderr, "dspyc jobs result: cannot write the state to %s\n", save);
                rc = 1;
            }
        } else if (j) {
            json_dumpf(j, stdout, JSON_INDENT(2));
            fputc('\n', stdout);
        }
        json_decref(j);
    } else if (!strcmp(sub, "cancel")) {
        long st;
        snprintf(path, sizeof(path), "/v1/jobs/%s", arg);
        char *body = request(&c, "DELETE", path, NULL, &st);
        if (body && st == 200) {
            printf("%s\tcancelled\n", arg);
            rc = 0;
        } else {
            if (body)
                print_fail("cancel", st, body);
            rc = 1;
        }
        free(body);
    } else {
        fprintf(stderr,
                "dspyc jobs: '%s' is not submit, status, list, cancel, wait, result or purge\n",
                sub);
    }
    curl_global_cleanup();
    return rc;
}

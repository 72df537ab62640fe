/* `dspyc loadtest` targets (apps layer): parses the URL and pre-builds the request bytes
 * of every template once (OpenAI chat or embeddings, or any HTTP method and body), with
 * prompts from a JSONL dataset or generated with a seeded length distribution. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loadtest.h"
#include "util.h"

static const char *const words[] = {
    "the",   "model",   "answers", "a",        "question", "about",  "latency", "under",
    "load",  "with",    "many",    "requests", "in",       "flight", "and",     "each",
    "token", "arrives", "as",      "an",       "event",    "from",   "server",  "queue",
    "time",  "rate",    "simple",  "program",  "tests",    "data",
};

static uint64_t mix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double unit(uint64_t *x)
{
    return ((double)(mix(x) >> 11) + 1.0) / 9007199254740993.0;
}

/* Words ~ Normal(mean, sd), at least 1. Caller owns. */
static char *gen_prompt(const struct lt_opts *o, uint64_t *rng)
{
    double z = sqrt(-2.0 * log(unit(rng))) * cos(6.283185307179586 * unit(rng));
    long n = lround(o->input_words + o->input_words_sd * z);
    if (n < 1)
        n = 1;
    char *s = malloc((size_t)n * 12 + 1);
    size_t len = 0;
    for (long i = 0; i < n; i++) {
        const char *w = words[mix(rng) % (sizeof(words) / sizeof(words[0]))];
        len += (size_t)sprintf(s + len, "%s%s", i ? " " : "", w);
    }
    s[len] = '\0';
    return s;
}

static int parse_url(const char *url, char *host, size_t hostlen, int *port, const char **path)
{
    char masked[1024];
    dspy_url_redact(url, masked, sizeof(masked));
    if (strncmp(url, "http://", 7)) {
        fprintf(stderr,
                "dspyc loadtest: --url must start with http:// (got '%s'); the load "
                "generator speaks plain HTTP/1.1\n",
                masked);
        return -1;
    }
    if (dspy_url_has_credentials(url)) {
        fprintf(stderr,
                "dspyc loadtest: --url '%s': credentials in the URL are not "
                "supported; send them with --header\n",
                masked);
        return -1;
    }
    const char *h = url + 7, *slash = strchr(h, '/');
    const char *end = slash ? slash : h + strlen(h);
    const char *colon = memchr(h, ':', (size_t)(end - h));
    if (h[0] == '[') /* [v6]:port */
        colon = memchr(h, ']', (size_t)(end - h)) ? strchr(memchr(h, ']', (size_t)(end - h)), ':')
                                                  : NULL;
    size_t hl = (size_t)((colon ? colon : end) - h);
    if (!hl || hl >= hostlen) {
        fprintf(stderr, "dspyc loadtest: no host in '%s'\n", masked);
        return -1;
    }
    memcpy(host, h[0] == '[' ? h + 1 : h, h[0] == '[' ? hl - 2 : hl);
    host[h[0] == '[' ? hl - 2 : hl] = '\0';
    *port = colon ? atoi(colon + 1) : 80;
    *path = slash ? slash : "/";
    return 0;
}

/* The i-th prompt: a JSON value for "messages" (array) or a string. Caller owns. */
static json_t *prompt_at(const struct lt_opts *o, json_t *dataset, size_t i, uint64_t *rng)
{
    if (dataset && json_array_size(dataset)) {
        json_t *rec = json_array_get(dataset, i % json_array_size(dataset));
        json_t *v = json_object_get(rec, "messages");
        if (!json_is_array(v))
            v = json_object_get(rec, "prompt");
        if (!v)
            v = json_object_get(rec, "text");
        if (!v)
            v = json_object_get(rec, "question");
        if (v)
            return json_incref(v);
        char *t = json_dumps(rec, JSON_COMPACT);
        json_t *s = json_string(t ? t : "");
        free(t);
        return s;
    }
    char *p = gen_prompt(o, rng);
    json_t *s = json_string(p);
    free(p);
    return s;
}

static char *replace_all(const char *tmpl, const char *key, const char *val)
{
    size_t kl = strlen(key), vl = strlen(val), n = 0;
    for (const char *p = strstr(tmpl, key); p; p = strstr(p + kl, key))
        n++;
    char *out = malloc(strlen(tmpl) + n * vl + 1), *w = out;
    for (const char *p = tmpl;;) {
        const char *q = strstr(p, key);
        if (!q) {
            strcpy(w, p);
            break;
        }
        memcpy(w, p, (size_t)(q - p));
        w += q - p;
        memcpy(w, val, vl);
        w += vl;
        p = q + kl;
    }
    return out;
}

static char *openai_body(const struct lt_opts *o, json_t *prompt)
{
    json_t *b = json_object();
    json_object_set_new(b, "model", json_string(o->model ? o->model : "dspyc-sim"));
    if (o->target == LT_EMBED) {
        json_object_set(b, "input", json_is_array(prompt) ? json_string("embed me") : prompt);
    } else {
        json_t *msgs = prompt;
        if (json_is_array(prompt)) {
            json_incref(msgs);
        } else {
            msgs = json_array();
            json_t *m = json_object();
            json_object_set_new(m, "role", json_string("user"));
            json_object_set(m, "content", prompt);
            json_array_append_new(msgs, m);
        }
        json_object_set_new(b, "messages", msgs);
        if (o->max_tokens >= 0)
            json_object_set_new(b, "max_tokens", json_integer(o->max_tokens));
        if (o->stream) {
            json_object_set_new(b, "stream", json_true());
            json_t *so = json_object();
            json_object_set_new(so, "include_usage", json_true());
            json_object_set_new(b, "stream_options", so);
        }
    }
    char *s = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    return s;
}

int lt_build_requests(struct lt_opts *o, struct dspy_loadgen_request **reqs, size_t *n, char *host,
                      size_t hostlen, int *port)
{
    const char *path;
    char full[2048], auth[1024];
    const char *hdrs[40];
    size_t nh = 0;
    json_t *dataset = NULL;
    if (parse_url(o->url, host, hostlen, port, &path))
        return -1;
    if (o->target != LT_HTTP) {
        snprintf(full, sizeof(full), "%s%s%s", path, path[strlen(path) - 1] == '/' ? "" : "/",
                 o->target == LT_EMBED ? "embeddings" : "chat/completions");
        path = full;
        hdrs[nh++] = "Content-Type: application/json";
        const char *key = getenv(o->api_key_env ? o->api_key_env : DSPY_LM_DEFAULT_API_KEY_ENV);
        if (key && *key) {
            snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
            hdrs[nh++] = auth;
        }
    }
    for (size_t i = 0; i < o->nheaders && nh < 40; i++)
        hdrs[nh++] = o->headers[i];
    if (o->prompts_file && !(dataset = load_jsonl_objects(o->prompts_file)))
        return -1;
    size_t count = dataset ? json_array_size(dataset) : o->ntemplates;
    if (o->target == LT_HTTP && !o->body && !o->prompts_file)
        count = 1;
    if (count < 1)
        count = 1;
    if (count > 100000)
        count = 100000;
    *reqs = calloc(count, sizeof(**reqs));
    uint64_t rng = o->seed ^ 0x5eedull;
    for (size_t i = 0; i < count; i++) {
        char *body = NULL;
        if (o->target == LT_HTTP) {
            if (o->body) {
                json_t *p = prompt_at(o, dataset, i, &rng);
                char *ps = json_is_string(p) ? strdup(json_string_value(p))
                                             : json_dumps(p, JSON_COMPACT);
                char idx[32];
                snprintf(idx, sizeof(idx), "%zu", i);
                char *t = replace_all(o->body, "{{prompt}}", ps);
                body = replace_all(t, "{{i}}", idx);
                free(t);
                free(ps);
                json_decref(p);
            }
        } else {
            json_t *p = prompt_at(o, dataset, i, &rng);
            body = openai_body(o, p);
            json_decref(p);
        }
        const char *method = o->method ? o->method
                                       : (o->target == LT_HTTP && !body ? "GET" : "POST");
        char *bytes = dspy_loadgen_build_request(method, host, *port, path, hdrs, nh, body,
                                                 body ? strlen(body) : 0, &(*reqs)[i].len);
        free(body);
        if (!bytes) {
            fprintf(stderr, "dspyc loadtest: out of memory\n");
            exit(1);
        }
        (*reqs)[i].bytes = bytes;
    }
    *n = count;
    json_decref(dataset);
    return 0;
}

void lt_free_requests(struct dspy_loadgen_request *reqs, size_t n)
{
    for (size_t i = 0; reqs && i < n; i++)
        dspy_free((char *)reqs[i].bytes);
    free(reqs);
}

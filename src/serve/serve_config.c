/* The proxy's upstreams (serve layer): one from --upstream, or several from a JSON config
 * file (base URL, API key source, models and aliases, rate limits, timeouts, retries,
 * fallbacks, prices), each opened as an LM handle whose engine, headers, retry policy and
 * limiter carry its calls. Routing by model name lives here too. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "base/buf.h"
#include "base/jsonfile.h"
#include "base/status.h"
#include "serve/serve_int.h"

#define MAX_UPSTREAMS 64
#define DEFAULT_CONCURRENCY 256 /* upstream calls on the wire at once, per upstream */

static char *join_url(const char *base, const char *tail)
{
    struct dspy_buf b;
    size_t n = strlen(base);
    while (n && base[n - 1] == '/')
        n--;
    dspy__buf_init(&b, 8192);
    if (dspy__buf_add(&b, base, n) || dspy__buf_adds(&b, tail)) {
        dspy__buf_release(&b);
        return NULL;
    }
    return dspy__buf_detach(&b, NULL);
}

static void upstream_release(struct dspy__serve_upstream *u)
{
    dspy_lm_free(u->lm);
    dspy_free(u->name);
    dspy_free(u->base_url);
    dspy_free(u->chat_url);
    dspy_free(u->embed_url);
    dspy_free(u->models_url);
    dspy_free(u->api_key_env);
    dspy_free(u->api_key_file);
    for (size_t i = 0; i < u->nmodels; i++)
        dspy_free(u->models[i]);
    dspy_free(u->models);
    for (size_t i = 0; i < u->naliases; i++) {
        dspy_free(u->aliases[i].name);
        dspy_free(u->aliases[i].to);
    }
    dspy_free(u->aliases);
    for (size_t i = 0; i < u->nfallbacks; i++)
        dspy_free(u->fallback_names[i]);
    dspy_free(u->fallback_names);
    dspy_free(u->fallbacks);
}

void dspy__serve_upstreams_close(dspy_server *s)
{
    for (size_t i = 0; i < s->nups; i++)
        upstream_release(&s->ups[i]);
    dspy_free(s->ups);
    s->ups = NULL;
    s->nups = 0;
}

/* The settings of one upstream, however they were given. */
struct upstream_spec {
    const char *name, *base_url, *api_key_env, *api_key_file;
    double timeout_s, rpm, tpm;
    unsigned max_concurrency, max_retries;
};

static dspy_status upstream_open(struct dspy__serve_upstream *u, const struct upstream_spec *sp,
                                 struct dspy_error *err)
{
    struct dspy_lm_options lo = DSPY_LM_OPTIONS_INIT;
    u->name = dspy_strdup(sp->name);
    u->base_url = dspy_strdup(sp->base_url);
    u->chat_url = join_url(sp->base_url, "/chat/completions");
    u->embed_url = join_url(sp->base_url, "/embeddings");
    u->models_url = join_url(sp->base_url, "/models");
    if (sp->api_key_env && !(u->api_key_env = dspy_strdup(sp->api_key_env)))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    if (sp->api_key_file && !(u->api_key_file = dspy_strdup(sp->api_key_file)))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    if (!u->name || !u->base_url || !u->chat_url || !u->embed_url || !u->models_url)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    lo.base_url = sp->base_url;
    lo.model = "proxy"; /* never sent: the proxy forwards the client's body */
    if (sp->api_key_env)
        lo.api_key_env = sp->api_key_env;
    lo.api_key_file = sp->api_key_file;
    lo.timeout_s = sp->timeout_s > 0 ? sp->timeout_s : 600;
    lo.max_attempts = sp->max_retries + 1;
    lo.retry_base_s = 0.1;
    lo.retry_cap_s = 2;
    lo.requests_per_minute = sp->rpm;
    lo.tokens_per_minute = sp->tpm;
    /* HTTP/1.1 upstreams need a connection per call on the wire: past a few hundred, more
     * connections only thrash both sides, so calls beyond this wait in the limiter's queue
     * (no connection, no thread) instead. */
    lo.max_concurrency = sp->max_concurrency ? sp->max_concurrency : DEFAULT_CONCURRENCY;
    lo.max_waiting = 100000;
    lo.max_response_bytes = 64u << 20;
    dspy_status rc = dspy_lm_new(&lo, &u->lm, err);
    if (rc)
        dspy__err_prefix(err, "upstream %s: ", sp->name);
    return rc;
}

/* ---- the config file --------------------------------------------------------------------- */

static dspy_status cfg_error(struct dspy_error *err, const char *path, const char *field,
                             const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static dspy_status cfg_error(struct dspy_error *err, const char *path, const char *field,
                             const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    dspy__err(err, DSPY_EPARSE, "%s: %s: %s", path, field, msg);
    dspy__err_file(err, path);
    dspy__err_field(err, field);
    return DSPY_EPARSE;
}

static dspy_status strings_of(const json_t *arr, char ***out, size_t *n, const char *path,
                              const char *field, struct dspy_error *err)
{
    if (!arr)
        return DSPY_OK;
    if (!json_is_array(arr))
        return cfg_error(err, path, field, "must be %s", "an array of strings");
    *out = dspy_calloc(json_array_size(arr) + 1, sizeof(char *));
    if (!*out)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const char *v = json_string_value(json_array_get(arr, i));
        if (!v)
            return cfg_error(err, path, field, "must be %s", "an array of strings");
        if (!((*out)[i] = dspy_strdup(v)))
            return dspy__err(err, DSPY_ENOMEM, "out of memory");
        (*n)++;
    }
    return DSPY_OK;
}

static dspy_status num_of(const json_t *o, const char *key, double *v, const char *path,
                          const char *field, struct dspy_error *err)
{
    const json_t *j = json_object_get(o, key);
    if (!j)
        return DSPY_OK;
    if (!json_is_number(j) || json_number_value(j) < 0)
        return cfg_error(err, path, field, "must be %s", "a number >= 0");
    *v = json_number_value(j);
    return DSPY_OK;
}

static const char *const known_keys[] = {
    "name",    "base_url",        "api_key_env",         "api_key_file",         "models",
    "aliases", "fallbacks",       "timeout_s",           "max_retries",          "rpm",
    "tpm",     "max_concurrency", "input_cost_per_mtok", "output_cost_per_mtok", NULL,
};

static dspy_status load_one(struct dspy__serve_upstream *u, const json_t *o, size_t idx,
                            const char *path, struct dspy_error *err)
{
    char field[96];
    struct upstream_spec sp = { 0 };
    double retries = 2, conc = 0;
    dspy_status rc;
    const char *key;
    const json_t *v;
#define FIELD(k) (snprintf(field, sizeof(field), "upstreams[%zu].%s", idx, (k)), field)
    if (!json_is_object(o))
        return cfg_error(err, path, FIELD("*"), "must be %s", "an object");
    json_object_foreach((json_t *)(uintptr_t)o, key, v) {
        size_t k = 0;
        while (known_keys[k] && strcmp(known_keys[k], key))
            k++;
        if (!known_keys[k])
            return cfg_error(err, path, FIELD(key), "%s", "unknown key");
    }
    sp.name = json_string_value(json_object_get(o, "name"));
    sp.base_url = json_string_value(json_object_get(o, "base_url"));
    if (!sp.name || !*sp.name)
        return cfg_error(err, path, FIELD("name"), "%s", "a non-empty string is required");
    if (!sp.base_url || strncmp(sp.base_url, "http", 4))
        return cfg_error(err, path, FIELD("base_url"), "%s",
                         "an http(s) URL is required, e.g. http://127.0.0.1:8000/v1");
    sp.api_key_env = json_string_value(json_object_get(o, "api_key_env"));
    sp.api_key_file = json_string_value(json_object_get(o, "api_key_file"));
    if ((json_object_get(o, "api_key_env") && !sp.api_key_env) ||
        (json_object_get(o, "api_key_file") && !sp.api_key_file))
        return cfg_error(err, path, FIELD("api_key_env"), "%s",
                         "api_key_env and api_key_file must be strings");
    if ((rc = num_of(o, "timeout_s", &sp.timeout_s, path, FIELD("timeout_s"), err)) ||
        (rc = num_of(o, "rpm", &sp.rpm, path, FIELD("rpm"), err)) ||
        (rc = num_of(o, "tpm", &sp.tpm, path, FIELD("tpm"), err)) ||
        (rc = num_of(o, "max_retries", &retries, path, FIELD("max_retries"), err)) ||
        (rc = num_of(o, "max_concurrency", &conc, path, FIELD("max_concurrency"), err)) ||
        (rc = num_of(o, "input_cost_per_mtok", &u->cost_in, path, FIELD("input_cost_per_mtok"),
                     err)) ||
        (rc = num_of(o, "output_cost_per_mtok", &u->cost_out, path, FIELD("output_cost_per_mtok"),
                     err)))
        return rc;
    sp.max_retries = (unsigned)retries;
    sp.max_concurrency = (unsigned)conc;
    if ((rc = strings_of(json_object_get(o, "models"), &u->models, &u->nmodels, path,
                         FIELD("models"), err)) ||
        (rc = strings_of(json_object_get(o, "fallbacks"), &u->fallback_names, &u->nfallbacks, path,
                         FIELD("fallbacks"), err)))
        return rc;
    const json_t *al = json_object_get(o, "aliases");
    if (al && !json_is_object(al))
        return cfg_error(err, path, FIELD("aliases"), "must be %s",
                         "an object of alias: model name");
    if (al) {
        if (!(u->aliases = dspy_calloc(json_object_size(al) + 1, sizeof(*u->aliases))))
            return dspy__err(err, DSPY_ENOMEM, "out of memory");
        json_object_foreach((json_t *)(uintptr_t)al, key, v) {
            if (!json_is_string(v))
                return cfg_error(err, path, FIELD("aliases"), "%s", "values must be strings");
            struct dspy__serve_alias *a = &u->aliases[u->naliases++];
            a->name = dspy_strdup(key);
            a->to = dspy_strdup(json_string_value(v));
            if (!a->name || !a->to)
                return dspy__err(err, DSPY_ENOMEM, "out of memory");
        }
    }
#undef FIELD
    return upstream_open(u, &sp, err);
}

static dspy_status resolve_fallbacks(dspy_server *s, const char *path, struct dspy_error *err)
{
    for (size_t i = 0; i < s->nups; i++) {
        struct dspy__serve_upstream *u = &s->ups[i];
        if (u->models || u->aliases)
            s->list_models = true;
        for (size_t j = i + 1; j < s->nups; j++)
            if (!strcmp(u->name, s->ups[j].name))
                return cfg_error(err, path, "upstreams", "upstream name '%s' is used twice",
                                 u->name);
        if (!u->nfallbacks)
            continue;
        if (!(u->fallbacks = dspy_calloc(u->nfallbacks, sizeof(int))))
            return dspy__err(err, DSPY_ENOMEM, "out of memory");
        for (size_t f = 0; f < u->nfallbacks; f++) {
            size_t j = 0;
            while (j < s->nups && strcmp(s->ups[j].name, u->fallback_names[f]))
                j++;
            if (j == s->nups || j == i)
                return cfg_error(err, path, "fallbacks", "'%s' names no other upstream",
                                 u->fallback_names[f]);
            u->fallbacks[f] = (int)j;
        }
    }
    return DSPY_OK;
}

static dspy_status load_config(dspy_server *s, const char *path, struct dspy_error *err)
{
    dspy_status rc = DSPY_OK;
    json_t *root = dspy__json_load_file(path, err);
    if (!root)
        return DSPY_EPARSE;
    const json_t *arr = json_object_get(root, "upstreams");
    if (!json_is_array(arr) || !json_array_size(arr) || json_array_size(arr) > MAX_UPSTREAMS) {
        rc = cfg_error(err, path, "upstreams", "must be %s",
                       "an array of 1 to 64 upstream objects");
        goto out;
    }
    if (!(s->ups = dspy_calloc(json_array_size(arr), sizeof(*s->ups)))) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < json_array_size(arr) && !rc; i++) {
        s->nups++;
        rc = load_one(&s->ups[i], json_array_get(arr, i), i, path, err);
    }
    if (!rc)
        rc = resolve_fallbacks(s, path, err);
out:
    json_decref(root);
    return rc;
}

dspy_status dspy__serve_upstreams_open(dspy_server *s, const struct dspy_serve_options *o,
                                       struct dspy_error *err)
{
    if (o->config_path)
        return load_config(s, o->config_path, err);
    struct upstream_spec sp = { "default",
                                o->upstream_url,
                                o->api_key_env,
                                o->api_key_file,
                                o->upstream_timeout_s,
                                0,
                                0,
                                o->upstream_concurrency,
                                o->max_retries >= 0 ? (unsigned)o->max_retries : 2 };
    if (strncmp(o->upstream_url, "http", 4))
        return dspy__err(err, DSPY_EINVAL, "upstream '%s' is not an http(s) URL", o->upstream_url);
    if (!(s->ups = dspy_calloc(1, sizeof(*s->ups))))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    s->nups = 1;
    return upstream_open(&s->ups[0], &sp, err);
}

/* ---- routing ------------------------------------------------------------------------------ */

bool dspy__serve_upstream_serves(const struct dspy__serve_upstream *u, const char *model)
{
    if (!u->models && !u->aliases)
        return true;
    for (size_t i = 0; i < u->nmodels; i++)
        if (!strcmp(u->models[i], model))
            return true;
    for (size_t i = 0; i < u->naliases; i++)
        if (!strcmp(u->aliases[i].name, model))
            return true;
    return false;
}

const char *dspy__serve_upstream_model(const struct dspy__serve_upstream *u, const char *model)
{
    for (size_t i = 0; i < u->naliases; i++)
        if (!strcmp(u->aliases[i].name, model))
            return u->aliases[i].to;
    return model;
}

int dspy__serve_route_model(const dspy_server *s, const char *model, const char **send_as)
{
    /* Upstreams that name the model come before catch-alls. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < s->nups; i++) {
            const struct dspy__serve_upstream *u = &s->ups[i];
            bool catch_all = !u->models && !u->aliases;
            if (catch_all != (pass == 1) || !dspy__serve_upstream_serves(u, model))
                continue;
            *send_as = dspy__serve_upstream_model(u, model);
            return (int)i;
        }
    return -1;
}

/* Programs (program layer): named predictors run in order over one record, built from a
 * JSON program file (docs/program-file.md) or from one module. Unknown keys and bad values
 * are refused with the file, line and key named. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include <dspyc/program.h>

#include "base/status.h"
#include "program/module_int.h"
#include "program/program_int.h"
#include "retrieve/retrieve_int.h"

#define PROGRAM_FILE_MAX ((size_t)64 << 20)
#define PROGRAM_MAX_PREDICTORS 256

static const char *const TOP_KEYS[] = {
    "name", "description", "adapter", "lm", "predictors", NULL
};
static const char *const LM_KEYS[] = { "model", "temperature", "max_tokens", "top_p", "n", NULL };
static const char *const PREDICTOR_KEYS[] = { "name",         "module", "signature",
                                              "instructions", "demos",  "adapter",
                                              "fields",       "config", NULL };
static const char *const CONFIG_KEYS[] = { "temperature", "max_tokens", "top_p",
                                           "n",           "rollout_id", NULL };
static const char *const FIELD_KEYS[] = { "desc", "prefix", NULL };
static const char *const STEP_KEYS[] = { "name",   "module", "k",           "query",
                                         "output", "index",  "corpus",      "url",
                                         "post",   "mode",   "dense",       "depth",
                                         "mmr",    "rerank", "embed_model", NULL };
static const char *const RANK_KEYS[] = { "name",   "module",       "k", "query", "documents",
                                         "output", "instructions", NULL };
static const char *const DENSE_KEYS[] = { "base_url", "model", "api_key_env", NULL };

/* Where we are in the spec, for errors. */
struct spec {
    const struct dspy__jsource *src;
    struct dspy__jpath path;
    struct dspy_error *err;
};

static dspy_status spec_err(struct spec *s, dspy_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static dspy_status spec_err(struct spec *s, dspy_status code, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return dspy__jpath_err(s->err, code, s->src, &s->path, "%s", msg);
}

static dspy_status check_keys(struct spec *s, const json_t *obj, const char *const *allowed,
                              const char *what)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)(uintptr_t)obj, key, v) {
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], key))
            i++;
        if (allowed[i])
            continue;
        char list[256];
        size_t len = 0;
        list[0] = '\0';
        for (i = 0; allowed[i] && len < sizeof(list); i++)
            len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "",
                                    allowed[i]);
        s->path.at_key = key;
        dspy_status rc = spec_err(s, DSPY_EINVAL, "unknown key \"%s\" in %s (allowed: %s)", key,
                                  what, list);
        s->path.at_key = NULL;
        return rc;
    }
    return DSPY_OK;
}

/* Optional member of `obj` with the given JSON type check; error when present but wrong. */
static dspy_status member(struct spec *s, const json_t *obj, const char *key, json_type type,
                          const char *what, json_t **out)
{
    *out = json_object_get(obj, key);
    if (!*out || json_typeof(*out) == type || (type == JSON_REAL && json_is_integer(*out)))
        return DSPY_OK;
    s->path.at_key = key;
    dspy_status rc = spec_err(s, DSPY_EINVAL, "\"%s\" must be %s", key, what);
    s->path.at_key = NULL;
    return rc;
}

static dspy_status bad_value(struct spec *s, const char *key, const char *what)
{
    s->path.at_key = key;
    dspy_status rc = spec_err(s, DSPY_EINVAL, "\"%s\" must be %s", key, what);
    s->path.at_key = NULL;
    return rc;
}

/* Sampling settings shared by "lm" and a predictor's "config". */
static dspy_status read_config(struct spec *s, const json_t *obj, struct dspy_call_config *c)
{
    json_t *v;
    dspy_status rc;
    if ((rc = member(s, obj, "temperature", JSON_REAL, "a number", &v)))
        return rc;
    if (v) {
        if (!(json_number_value(v) >= 0 && json_number_value(v) <= 100))
            return bad_value(s, "temperature", "a number >= 0");
        c->temperature = json_number_value(v);
    }
    if ((rc = member(s, obj, "top_p", JSON_REAL, "a number", &v)))
        return rc;
    if (v) {
        if (!(json_number_value(v) >= 0 && json_number_value(v) <= 1))
            return bad_value(s, "top_p", "a number between 0 and 1");
        c->top_p = json_number_value(v);
    }
    if ((rc = member(s, obj, "max_tokens", JSON_INTEGER, "an integer", &v)))
        return rc;
    if (v) {
        if (json_integer_value(v) < 1 || json_integer_value(v) > 100000000)
            return bad_value(s, "max_tokens", "an integer >= 1");
        c->max_tokens = (long)json_integer_value(v);
    }
    if ((rc = member(s, obj, "n", JSON_INTEGER, "an integer", &v)))
        return rc;
    if (v) {
        if (json_integer_value(v) < 1 || json_integer_value(v) > 128)
            return bad_value(s, "n", "an integer from 1 to 128");
        c->n = (int)json_integer_value(v);
    }
    if (json_object_get(obj, "rollout_id")) {
        if ((rc = member(s, obj, "rollout_id", JSON_INTEGER, "an integer", &v)))
            return rc;
        c->has_rollout_id = true;
        c->rollout_id = (long)json_integer_value(v);
    }
    return DSPY_OK;
}

static bool valid_name(const char *s)
{
    if (!*s || (*s >= '0' && *s <= '9'))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return false;
    return true;
}

static dspy_status read_adapter(struct spec *s, const json_t *obj, enum dspy_adapter_kind *out)
{
    json_t *v;
    dspy_status rc = member(s, obj, "adapter", JSON_STRING, "\"chat\" or \"json\"", &v);
    if (rc || !v)
        return rc;
    int k = dspy_adapter_from_name(json_string_value(v));
    if (k < 0)
        return bad_value(s, "adapter", "\"chat\" or \"json\"");
    *out = (enum dspy_adapter_kind)k;
    return DSPY_OK;
}

/* "fields": {"question": {"desc": "...", "prefix": "Question:"}} */
static dspy_status apply_fields(struct spec *s, const json_t *fields, dspy_module *m)
{
    const char *name;
    json_t *f;
    dspy_status rc = DSPY_OK;
    dspy_signature *sig = dspy_module_signature_mut(m);
    dspy__jpath_key(&s->path, "fields");
    json_object_foreach((json_t *)(uintptr_t)fields, name, f) {
        json_t *desc, *prefix;
        if (dspy_signature_find(sig, name) < 0) {
            s->path.at_key = name;
            rc = spec_err(s, DSPY_ENOTFOUND, "the signature has no field \"%s\"", name);
            s->path.at_key = NULL;
            break;
        }
        dspy__jpath_key(&s->path, name);
        if (!json_is_object(f))
            rc = spec_err(s, DSPY_EINVAL, "must be an object with \"desc\" and/or \"prefix\"");
        else if (!(rc = check_keys(s, f, FIELD_KEYS, "a field")) &&
                 !(rc = member(s, f, "desc", JSON_STRING, "a string", &desc)) &&
                 !(rc = member(s, f, "prefix", JSON_STRING, "a string", &prefix))) {
            if (desc && (rc = dspy_signature_set_desc(sig, name, json_string_value(desc))))
                rc = spec_err(s, rc, "cannot set the description");
            else if (prefix &&
                     (rc = dspy_signature_set_prefix(sig, name, json_string_value(prefix))))
                rc = spec_err(s, rc, "cannot set the prefix");
        }
        dspy__jpath_pop(&s->path);
        if (rc)
            break;
    }
    dspy__jpath_pop(&s->path);
    return rc;
}

static char *state_name_for(const char *name, enum dspy_module_kind kind)
{
    if (!name)
        return dspy_strdup(kind == DSPY_MODULE_COT ? "predict" : "self");
    if (kind == DSPY_MODULE_PREDICT)
        return dspy_strdup(name);
    size_t n = strlen(name);
    char *s = dspy_malloc(n + 9);
    if (s) {
        memcpy(s, name, n);
        memcpy(s + n, ".predict", 9);
    }
    return s;
}

static dspy_status read_predictor(struct spec *s, const json_t *spec, bool lone,
                                  enum dspy_adapter_kind adapter,
                                  const struct dspy_call_config *base, struct dspy__predictor *out)
{
    json_t *name, *module, *sigtext, *instructions, *demos, *fields, *config;
    dspy_status rc;
    int kind = DSPY_MODULE_PREDICT;
    struct dspy_call_config cfg = *base;
    dspy_signature *sig = NULL;
    if (!json_is_object(spec))
        return spec_err(s, DSPY_EINVAL, "a predictor must be a JSON object");
    if ((rc = check_keys(s, spec, PREDICTOR_KEYS, "a predictor")) ||
        (rc = member(s, spec, "name", JSON_STRING, "a string", &name)) ||
        (rc = member(s, spec, "module", JSON_STRING, "\"predict\" or \"cot\"", &module)) ||
        (rc = member(s, spec, "signature", JSON_STRING, "a string", &sigtext)) ||
        (rc = member(s, spec, "instructions", JSON_STRING, "a string", &instructions)) ||
        (rc = member(s, spec, "demos", JSON_ARRAY, "an array of objects", &demos)) ||
        (rc = member(s, spec, "fields", JSON_OBJECT, "an object", &fields)) ||
        (rc = member(s, spec, "config", JSON_OBJECT, "an object", &config)) ||
        (rc = read_adapter(s, spec, &adapter)))
        return rc;
    if (!sigtext)
        return spec_err(s, DSPY_EINVAL, "a predictor needs a \"signature\"");
    if (!name && !lone)
        return spec_err(s, DSPY_EINVAL,
                        "a predictor needs a \"name\" when the program has more than one");
    if (name && !valid_name(json_string_value(name)))
        return bad_value(s, "name", "an identifier (letters, digits, _)");
    if (module && (kind = dspy_module_kind_from_name(json_string_value(module))) < 0)
        return bad_value(s, "module", "\"predict\" or \"cot\"");
    for (size_t i = 0; i < json_array_size(demos); i++)
        if (!json_is_object(json_array_get(demos, i))) {
            dspy__jpath_key(&s->path, "demos");
            dspy__jpath_index(&s->path, i);
            rc = spec_err(s, DSPY_EINVAL, "a demo must be an object of field values");
            s->path.depth -= 2;
            return rc;
        }
    if (config) {
        dspy__jpath_key(&s->path, "config");
        if (!(rc = check_keys(s, config, CONFIG_KEYS, "a config")))
            rc = read_config(s, config, &cfg);
        dspy__jpath_pop(&s->path);
        if (rc)
            return rc;
    }
    if ((rc = dspy_signature_parse(json_string_value(sigtext),
                                   instructions ? json_string_value(instructions) : NULL, &sig,
                                   s->err))) {
        char why[sizeof(s->err->message)];
        snprintf(why, sizeof(why), "%s", s->err ? s->err->message : dspy_strerror(rc));
        s->path.at_key = "signature";
        spec_err(s, rc, "invalid signature: %s", why);
        s->path.at_key = NULL;
        return rc;
    }
    out->module = dspy_module_new((enum dspy_module_kind)kind, sig, adapter);
    dspy_signature_free(sig);
    if (!out->module)
        return spec_err(s, DSPY_ENOMEM, "out of memory");
    dspy_module_set_config(out->module, &cfg);
    if (demos && dspy_module_set_demos(out->module, demos))
        return spec_err(s, DSPY_ENOMEM, "out of memory");
    if (fields && (rc = apply_fields(s, fields, out->module)))
        return rc;
    if (name && !(out->name = dspy_strdup(json_string_value(name))))
        return spec_err(s, DSPY_ENOMEM, "out of memory");
    if (!(out->state_name = state_name_for(out->name, (enum dspy_module_kind)kind)))
        return spec_err(s, DSPY_ENOMEM, "out of memory");
    return DSPY_OK;
}

/* The keys every step shares: "name" and the field names (identifiers), "k" (1-1000), and
 * the name unused so far ("name" absent: `dflt`). */
static dspy_status check_step_fields(struct spec *s, const json_t *spec, const dspy_program *p,
                                     const char *const *fields, const char *dflt)
{
    const json_t *name = json_object_get(spec, "name"), *k = json_object_get(spec, "k");
    if (name && !valid_name(json_string_value(name)))
        return bad_value(s, "name", "an identifier (letters, digits, _)");
    for (size_t i = 0; fields[i]; i++) {
        const json_t *v = json_object_get(spec, fields[i]);
        if (v && !valid_name(json_string_value(v)))
            return bad_value(s, fields[i], "a field name (letters, digits, _)");
    }
    if (k && (json_integer_value(k) < 1 || json_integer_value(k) > DSPY_RETRIEVE_MAX_K))
        return bad_value(s, "k", "an integer from 1 to 1000");
    if (dspy__program_name_taken(p, name ? json_string_value(name) : dflt))
        return bad_value(s, "name", "unique among the predictors and steps");
    return DSPY_OK;
}

/* An entry with "module": "retrieve" (DSPy's Retrieve). */
static bool is_step(const json_t *spec)
{
    const char *m = json_string_value(json_object_get(spec, "module"));
    return m && (!strcmp(m, "retrieve") || !strcmp(m, "Retrieve"));
}

/* An entry with "module": "rank": an LM ranking of a list field (program_rank.c). */
static bool is_rank(const json_t *spec)
{
    const char *m = json_string_value(json_object_get(spec, "module"));
    return m && (!strcmp(m, "rank") || !strcmp(m, "Rank"));
}

/* A path in a program file is relative to the file's folder. */
static char *resolve_path(const struct spec *s, const char *path)
{
    const char *origin = s->src ? s->src->origin : NULL;
    const char *slash = origin ? strrchr(origin, '/') : NULL;
    if (path[0] == '/' || !slash)
        return dspy_strdup(path);
    size_t dir = (size_t)(slash - origin) + 1, n = strlen(path);
    char *out = dspy_malloc(dir + n + 1);
    if (out) {
        memcpy(out, origin, dir);
        memcpy(out + dir, path, n + 1);
    }
    return out;
}

/* Replace the BM25 retriever *r by the dense one `d` (taken), or by their fusion. */
static dspy_status take_dense(struct spec *s, dspy_retriever **r, dspy_retriever *d, bool hybrid,
                              const json_t *depth)
{
    struct dspy_error why;
    if (hybrid) {
        dspy_retriever *h = NULL;
        dspy_error_clear(&why);
        dspy_status rc = dspy_retriever_hybrid(*r, d, depth ? (size_t)json_integer_value(depth) : 0,
                                               &h, &why);
        dspy_retriever_free(d);
        if (rc)
            return spec_err(s, rc, "%s", why.message);
        d = h;
    }
    dspy_retriever_free(*r);
    *r = d;
    return DSPY_OK;
}

/* The path of the dense.vec beside an "index" (a folder or its bm25.idx); NULL when out of
 * memory. */
static char *index_vectors(struct spec *s, const char *index)
{
    char *path = resolve_path(s, index), *vectors;
    size_t n = path ? strlen(path) : 0;
    if (path && n > 9 && !strcmp(path + n - 9, "/bm25.idx"))
        path[n - 9] = '\0';
    vectors = path ? dspy_malloc(strlen(path) + 16) : NULL;
    if (vectors)
        sprintf(vectors, "%s/dense.vec", path);
    dspy_free(path);
    return vectors;
}

/* The in-process MiniLM encoder for "mode": "dense" or "hybrid": with an "index", its
 * dense.vec (dspyc index build --dense minilm) mapped; with a "corpus", every passage
 * embedded now. *r (the BM25 retriever) is replaced. */
static dspy_status wrap_minilm(struct spec *s, const json_t *spec, bool hybrid, const json_t *depth,
                               dspy_retriever **r)
{
    const char *index = json_string_value(json_object_get(spec, "index"));
    const char *emodel = json_string_value(json_object_get(spec, "embed_model"));
    json_t *mmr = json_object_get(spec, "mmr");
    struct dspy_dense_options o = DSPY_DENSE_OPTIONS_INIT;
    struct dspy_error why;
    char *vectors = NULL, *dir = NULL;
    dspy_status rc = DSPY_OK;
    if (mmr && !json_object_get(spec, "rerank")) {
        if (hybrid || !json_is_number(mmr) || !(json_number_value(mmr) > 0) ||
            json_number_value(mmr) > 1)
            return bad_value(s, "mmr", "a number in (0, 1], with \"mode\": \"dense\"");
        o.mmr_lambda = json_number_value(mmr);
        o.mmr_depth = depth ? (size_t)json_integer_value(depth) : 0;
    }
    if (index && !(vectors = index_vectors(s, index)))
        return spec_err(s, DSPY_ENOMEM, "out of memory");
    if (emodel && !(dir = resolve_path(s, emodel))) {
        dspy_free(vectors);
        return spec_err(s, DSPY_ENOMEM, "out of memory");
    }
    o.encoder = "minilm";
    o.model_dir = dir;
    o.vectors = vectors;
    dspy_retriever *d = NULL;
    dspy_error_clear(&why);
    if ((rc = dspy_retriever_dense(*r, &o, &d, &why))) {
        s->path.at_key = emodel && rc == DSPY_ENOTFOUND && !strstr(why.message, "dense.vec")
                             ? "embed_model"
                         : index ? "index"
                                 : "dense";
        spec_err(s, rc, "%s", why.message);
        s->path.at_key = NULL;
    }
    dspy_free(vectors);
    dspy_free(dir);
    if (rc)
        return rc;
    return take_dense(s, r, d, hybrid, depth);
}

/* "mode": "dense" or "hybrid" over the step's passages, with "dense": {"base_url", "model",
 * "api_key_env"}; *r is replaced by the dense or hybrid retriever. */
static dspy_status wrap_dense(struct spec *s, const json_t *spec, dspy_retriever **r)
{
    json_t *mode, *dense = json_object_get(spec, "dense"), *depth, *url, *model, *key_env;
    dspy_status rc;
    struct dspy_error why;
    if (dense && !json_is_object(dense) &&
        !(json_is_string(dense) && !strcmp(json_string_value(dense), "minilm")))
        return bad_value(s, "dense",
                         "\"minilm\" (the in-process encoder) or an object {\"base_url\", "
                         "\"model\"} (an embeddings API)");
    if ((rc = member(s, spec, "mode", JSON_STRING, "\"bm25\", \"dense\" or \"hybrid\"", &mode)) ||
        (rc = member(s, spec, "depth", JSON_INTEGER, "an integer", &depth)))
        return rc;
    const char *m = mode ? json_string_value(mode) : dense ? "hybrid" : "bm25";
    bool is_dense = !strcmp(m, "dense"), is_hybrid = !strcmp(m, "hybrid");
    if (!is_dense && !is_hybrid && strcmp(m, "bm25"))
        return bad_value(s, "mode", "\"bm25\", \"dense\" or \"hybrid\"");
    bool rerank = json_object_get(spec, "rerank") != NULL; /* then "mmr" is the re-rank's */
    if (json_object_get(spec, "mmr") && !is_dense && !rerank)
        return bad_value(s, "mmr", "a number in (0, 1], with \"mode\": \"dense\" or \"rerank\"");
    if (!is_dense && !is_hybrid)
        return dense ? bad_value(s, "dense", "left out with \"mode\": \"bm25\"") : DSPY_OK;
    if (strcmp(dspy_retriever_kind(*r), "bm25"))
        return bad_value(s, "mode", "\"bm25\" with a ColBERTv2 \"url\"");
    if (depth && (json_integer_value(depth) < 1 || json_integer_value(depth) > DSPY_RETRIEVE_MAX_K))
        return bad_value(s, "depth", "an integer from 1 to 1000");
    if (json_is_string(dense) || (!dense && json_object_get(spec, "index")))
        return wrap_minilm(s, spec, is_hybrid, depth, r);
    if (!dense)
        return spec_err(s, DSPY_EINVAL,
                        "\"mode\": \"%s\" needs \"dense\": {\"base_url\", "
                        "\"model\"} (an OpenAI-compatible embeddings API) or \"minilm\" (the "
                        "in-process encoder)",
                        m);
    if (depth && (json_integer_value(depth) < 1 || json_integer_value(depth) > DSPY_RETRIEVE_MAX_K))
        return bad_value(s, "depth", "an integer from 1 to 1000");
    dspy__jpath_key(&s->path, "dense");
    if (!(rc = check_keys(s, dense, DENSE_KEYS, "\"dense\"")) &&
        !(rc = member(s, dense, "base_url", JSON_STRING, "a URL", &url)) &&
        !(rc = member(s, dense, "model", JSON_STRING, "a model name", &model)) &&
        !(rc = member(s, dense, "api_key_env", JSON_STRING, "an environment variable", &key_env)) &&
        (!url || !model))
        rc = spec_err(s, DSPY_EINVAL, "\"dense\" needs \"base_url\" and \"model\"");
    if (rc) {
        dspy__jpath_pop(&s->path);
        return rc;
    }
    struct dspy_dense_options o = DSPY_DENSE_OPTIONS_INIT;
    json_t *mmr = rerank ? NULL : json_object_get(spec, "mmr");
    if (mmr) {
        if (!is_dense || !json_is_number(mmr) || !(json_number_value(mmr) > 0) ||
            json_number_value(mmr) > 1) {
            dspy__jpath_pop(&s->path);
            return bad_value(s, "mmr", "a number in (0, 1], with \"mode\": \"dense\"");
        }
        o.mmr_lambda = json_number_value(mmr);
        o.mmr_depth = depth ? (size_t)json_integer_value(depth) : 0;
    }
    o.base_url = json_string_value(url);
    o.model = json_string_value(model);
    o.api_key = key_env ? getenv(json_string_value(key_env)) : NULL;
    dspy_retriever *d = NULL;
    dspy_error_clear(&why);
    rc = dspy_retriever_dense(*r, &o, &d, &why);
    if (rc) {
        s->path.at_key = "base_url";
        spec_err(s, rc, "%s", why.message);
        s->path.at_key = NULL;
        dspy__jpath_pop(&s->path);
        return rc;
    }
    dspy__jpath_pop(&s->path);
    return take_dense(s, r, d, is_hybrid, depth);
}

/* "rerank": "embed": *r's top "depth" re-ranked by MiniLM cosine to the query ("mmr": the
 * diverse pick among them); *r is replaced by the re-ranking retriever. Over an "index"
 * with a dense.vec, the passages' stored vectors are used. */
static dspy_status wrap_rerank(struct spec *s, const json_t *spec, dspy_retriever **r)
{
    json_t *rerank, *depth, *model, *mmr = json_object_get(spec, "mmr");
    dspy_status rc;
    if ((rc = member(s, spec, "rerank", JSON_STRING, "\"embed\"", &rerank)) ||
        (rc = member(s, spec, "embed_model", JSON_STRING, "a folder", &model)))
        return rc;
    if (!rerank) {
        const char *m = json_string_value(json_object_get(spec, "mode"));
        bool dense = m && (!strcmp(m, "dense") || !strcmp(m, "hybrid"));
        return model && !dense ? bad_value(s, "embed_model",
                                           "left out without \"rerank\": \"embed\" or "
                                           "\"mode\": \"dense\" or \"hybrid\"")
                               : DSPY_OK;
    }
    if (strcmp(json_string_value(rerank), "embed"))
        return bad_value(s, "rerank", "\"embed\" (MiniLM cosine to the query)");
    if (mmr &&
        (!json_is_number(mmr) || !(json_number_value(mmr) > 0) || json_number_value(mmr) > 1))
        return bad_value(s, "mmr", "a number in (0, 1]");
    depth = json_object_get(spec, "depth");
    if (depth && (!json_is_integer(depth) || json_integer_value(depth) < 1 ||
                  json_integer_value(depth) > DSPY_RETRIEVE_MAX_K))
        return bad_value(s, "depth", "an integer from 1 to 1000");
    struct dspy_rerank_options o = DSPY_RERANK_OPTIONS_INIT;
    o.depth = depth ? (size_t)json_integer_value(depth) : 0;
    o.mmr_lambda = mmr ? json_number_value(mmr) : 0;
    char *dir = model ? resolve_path(s, json_string_value(model)) : NULL;
    if (model && !dir)
        return spec_err(s, DSPY_ENOMEM, "out of memory");
    o.model_dir = dir;
    const char *index = json_string_value(json_object_get(spec, "index"));
    char *vectors = index ? index_vectors(s, index) : NULL;
    if (index && !vectors) {
        dspy_free(dir);
        return spec_err(s, DSPY_ENOMEM, "out of memory");
    }
    if (vectors && access(vectors, F_OK) == 0) /* built with --dense minilm */
        o.vectors = vectors;
    dspy_retriever *rr = NULL;
    struct dspy_error why;
    dspy_error_clear(&why);
    rc = dspy_retriever_rerank(*r, &o, &rr, &why);
    dspy_free(dir);
    dspy_free(vectors);
    if (rc) {
        s->path.at_key = o.vectors && strstr(why.message, "dense.vec") ? "index"
                         : model                                       ? "embed_model"
                                                                       : "rerank";
        spec_err(s, rc, "%s", why.message);
        s->path.at_key = NULL;
        return rc;
    }
    dspy_retriever_free(*r);
    *r = rr;
    return DSPY_OK;
}

static dspy_status read_step(struct spec *s, const json_t *spec, dspy_program *p, size_t before)
{
    json_t *name, *k, *query, *output, *index, *corpus, *url, *post;
    dspy_status rc;
    dspy_retriever *r = NULL;
    struct dspy_error why;
    if ((rc = check_keys(s, spec, STEP_KEYS, "a retrieve step")) ||
        (rc = member(s, spec, "name", JSON_STRING, "a string", &name)) ||
        (rc = member(s, spec, "k", JSON_INTEGER, "an integer", &k)) ||
        (rc = member(s, spec, "query", JSON_STRING, "a field name", &query)) ||
        (rc = member(s, spec, "output", JSON_STRING, "a field name", &output)) ||
        (rc = member(s, spec, "index", JSON_STRING, "a path", &index)) ||
        (rc = member(s, spec, "corpus", JSON_STRING, "a path", &corpus)) ||
        (rc = member(s, spec, "url", JSON_STRING, "a URL", &url)))
        return rc;
    post = json_object_get(spec, "post");
    if (post && !json_is_boolean(post))
        return bad_value(s, "post", "true or false");
    if (!!index + !!corpus + !!url != 1)
        return spec_err(s, DSPY_EINVAL,
                        "a retrieve step needs one of \"index\" (a BM25 index "
                        "folder), \"corpus\" (a JSON-lines corpus) or \"url\" "
                        "(a ColBERTv2 server)");
    static const char *const fields[] = { "query", "output", NULL };
    if ((rc = check_step_fields(s, spec, p, fields, "retrieve")))
        return rc;
    const char *nm = name ? json_string_value(name) : "retrieve";
    dspy_error_clear(&why);
    if (url) {
        struct dspy_colbert_options o = DSPY_COLBERT_OPTIONS_INIT;
        o.url = json_string_value(url);
        o.post_requests = json_is_true(post);
        rc = dspy_retriever_colbert(&o, &r, &why);
    } else {
        char *path = resolve_path(s, json_string_value(index ? index : corpus));
        if (!path)
            return spec_err(s, DSPY_ENOMEM, "out of memory");
        rc = index ? dspy_retriever_open_bm25(path, &r, &why)
                   : dspy_retriever_bm25_from_corpus(path, &r, &why);
        dspy_free(path);
    }
    if (rc) {
        s->path.at_key = url ? "url" : index ? "index" : "corpus";
        spec_err(s, rc, "%s", why.message);
        s->path.at_key = NULL;
        if (s->err && why.line > 0) { /* a corpus error: keep its own file and line */
            snprintf(s->err->file, sizeof(s->err->file), "%s", why.file);
            s->err->line = why.line;
            snprintf(s->err->field, sizeof(s->err->field), "%s", why.field);
        }
        return rc;
    }
    if ((rc = wrap_dense(s, spec, &r)) || (rc = wrap_rerank(s, spec, &r))) {
        dspy_retriever_free(r);
        return rc;
    }
    rc = dspy__program_add_step(p, before, nm, r, query ? json_string_value(query) : "question",
                                output ? json_string_value(output) : "passages",
                                k ? (size_t)json_integer_value(k) : 3);
    dspy_retriever_free(r);
    return rc ? spec_err(s, DSPY_ENOMEM, "out of memory") : DSPY_OK;
}

static dspy_status read_rank(struct spec *s, const json_t *spec, dspy_program *p, size_t before,
                             enum dspy_adapter_kind adapter)
{
    json_t *name, *k, *query, *documents, *output, *instructions;
    dspy_status rc;
    if ((rc = check_keys(s, spec, RANK_KEYS, "a rank step")) ||
        (rc = member(s, spec, "name", JSON_STRING, "a string", &name)) ||
        (rc = member(s, spec, "k", JSON_INTEGER, "an integer", &k)) ||
        (rc = member(s, spec, "query", JSON_STRING, "a field name", &query)) ||
        (rc = member(s, spec, "documents", JSON_STRING, "a field name", &documents)) ||
        (rc = member(s, spec, "output", JSON_STRING, "a field name", &output)) ||
        (rc = member(s, spec, "instructions", JSON_STRING, "a string", &instructions)))
        return rc;
    static const char *const fields[] = { "query", "documents", "output", NULL };
    if ((rc = check_step_fields(s, spec, p, fields, "rank")))
        return rc;
    const char *nm = name ? json_string_value(name) : "rank";
    const char *docs = documents ? json_string_value(documents) : "passages";
    dspy_module *m = dspy__rank_module(instructions ? json_string_value(instructions) : NULL,
                                       adapter);
    rc = dspy__program_add_rank(p, before, nm, query ? json_string_value(query) : "question", docs,
                                output ? json_string_value(output) : docs,
                                k ? (size_t)json_integer_value(k) : 0, m);
    return rc ? spec_err(s, DSPY_ENOMEM, "out of memory") : DSPY_OK;
}

static dspy_program *program_alloc(size_t n)
{
    dspy_program *p = dspy_calloc(1, sizeof(*p));
    if (p && !(p->preds = dspy_calloc(n, sizeof(*p->preds)))) {
        dspy_free(p);
        return NULL;
    }
    return p;
}

void dspy_program_free(dspy_program *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++) {
        dspy_module_free(p->preds[i].module);
        dspy_free(p->preds[i].name);
        dspy_free(p->preds[i].state_name);
    }
    dspy_free(p->preds);
    json_decref(p->state_metadata);
    dspy__demo_select_free(p->demo_select);
    dspy__program_steps_free(p);
    dspy_free(p->name);
    dspy_free(p->model);
    dspy_free(p);
}

static dspy_status read_top(struct spec *s, const json_t *spec, dspy_program *p,
                            enum dspy_adapter_kind *adapter, struct dspy_call_config *base)
{
    json_t *name, *desc, *lm, *model;
    dspy_status rc;
    if ((rc = member(s, spec, "name", JSON_STRING, "a string", &name)) ||
        (rc = member(s, spec, "description", JSON_STRING, "a string", &desc)) ||
        (rc = member(s, spec, "lm", JSON_OBJECT, "an object", &lm)) ||
        (rc = read_adapter(s, spec, adapter)))
        return rc;
    if (name && !(p->name = dspy_strdup(json_string_value(name))))
        return spec_err(s, DSPY_ENOMEM, "out of memory");
    if (!lm)
        return DSPY_OK;
    dspy__jpath_key(&s->path, "lm");
    if (!(rc = check_keys(s, lm, LM_KEYS, "\"lm\"")) &&
        !(rc = member(s, lm, "model", JSON_STRING, "a string", &model)) &&
        !(rc = read_config(s, lm, base)) && model &&
        !(p->model = dspy_strdup(json_string_value(model))))
        rc = spec_err(s, DSPY_ENOMEM, "out of memory");
    dspy__jpath_pop(&s->path);
    return rc;
}

static dspy_status from_json(const json_t *spec, const struct dspy__jsource *src,
                             dspy_program **out, struct dspy_error *err)
{
    struct spec s = { .src = src, .err = err };
    enum dspy_adapter_kind adapter = DSPY_ADAPTER_CHAT;
    struct dspy_call_config base = DSPY_CALL_CONFIG_INIT;
    dspy_status rc;
    json_t *preds;
    if (!json_is_object(spec))
        return spec_err(&s, DSPY_EINVAL, "a program file must hold a JSON object");
    if ((rc = check_keys(&s, spec, TOP_KEYS, "a program")) ||
        (rc = member(&s, spec, "predictors", JSON_ARRAY, "an array of predictors", &preds)))
        return rc;
    size_t entries = json_array_size(preds), n = 0;
    for (size_t i = 0; i < entries; i++)
        n += !is_step(json_array_get(preds, i)) && !is_rank(json_array_get(preds, i));
    if (!n || entries > PROGRAM_MAX_PREDICTORS)
        return preds ? bad_value(&s, "predictors",
                                 "an array of 1 to 256 predictors (and retrieve "
                                 "steps), at least one predictor")
                     : spec_err(&s, DSPY_EINVAL, "a program needs \"predictors\"");
    dspy_program *p = program_alloc(n);
    if (!p)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    if ((rc = read_top(&s, spec, p, &adapter, &base)))
        goto free_program;
    dspy__jpath_key(&s.path, "predictors");
    for (size_t e = 0, i = 0; e < entries; e++) {
        const json_t *entry = json_array_get(preds, e);
        dspy__jpath_index(&s.path, e);
        if (is_step(entry) || is_rank(entry)) {
            rc = is_rank(entry) ? read_rank(&s, entry, p, i, adapter) : read_step(&s, entry, p, i);
            dspy__jpath_pop(&s.path);
            if (rc)
                goto free_program;
            continue;
        }
        rc = read_predictor(&s, entry, n == 1, adapter, &base, &p->preds[i]);
        p->n = i + 1; /* so that free releases what this predictor allocated */
        for (size_t j = 0; !rc && j < i; j++)
            if (p->preds[i].name && !strcmp(p->preds[i].name, p->preds[j].name))
                rc = bad_value(&s, "name", "unique among the predictors");
        for (size_t j = 0; !rc && p->preds[i].name && j < p->nsteps; j++)
            if (!strcmp(p->preds[i].name, p->steps[j].name))
                rc = bad_value(&s, "name", "unique among the predictors and steps");
        dspy__jpath_pop(&s.path);
        if (rc)
            goto free_program;
        i++;
    }
    p->flat = n == 1 && !p->preds[0].name && !p->nsteps &&
              dspy_module_kind(p->preds[0].module) == DSPY_MODULE_PREDICT;
    *out = p;
    return DSPY_OK;

free_program:
    dspy_program_free(p);
    return rc;
}

dspy_status dspy_program_from_json(const json_t *spec, const char *origin, dspy_program **out,
                                   struct dspy_error *err)
{
    struct dspy__jsource src = { origin, NULL, 0 };
    if (!out)
        return dspy__err(err, DSPY_EINVAL, "dspy_program_from_json: out is required");
    return from_json(spec, &src, out, err);
}

dspy_status dspy__program_from_text(const struct dspy__jsource *src, dspy_program **out,
                                    struct dspy_error *err)
{
    json_t *spec;
    dspy_status rc = dspy__json_parse(src, &spec, err);
    if (rc)
        return rc;
    rc = from_json(spec, src, out, err);
    json_decref(spec);
    return rc;
}

dspy_status dspy_program_load(const char *path, dspy_program **out, struct dspy_error *err)
{
    char *text;
    size_t len;
    if (!path || !out)
        return dspy__err(err, DSPY_EINVAL, "dspy_program_load: path and out are required");
    dspy_status rc = dspy__read_file(path, PROGRAM_FILE_MAX, &text, &len, err);
    if (rc)
        return rc;
    struct dspy__jsource src = { path, text, len };
    rc = dspy__program_from_text(&src, out, err);
    dspy_free(text);
    return rc;
}

dspy_program *dspy_program_single(dspy_module *m)
{
    if (!m)
        return NULL;
    dspy_program *p = program_alloc(1);
    if (!p)
        return NULL;
    enum dspy_module_kind kind = dspy_module_kind(m);
    if (!(p->preds[0].state_name = state_name_for(NULL, kind))) {
        dspy_free(p->preds);
        dspy_free(p);
        return NULL;
    }
    p->preds[0].module = m;
    p->n = 1;
    p->flat = kind == DSPY_MODULE_PREDICT;
    return p;
}

dspy_program *dspy_program_copy(const dspy_program *src)
{
    dspy_program *p = program_alloc(src->n ? src->n : 1);
    if (!p)
        return NULL;
    p->flat = src->flat;
    if ((src->name && !(p->name = dspy_strdup(src->name))) ||
        (src->model && !(p->model = dspy_strdup(src->model))))
        goto fail;
    for (size_t i = 0; i < src->n; i++, p->n++) {
        const struct dspy__predictor *s = &src->preds[i];
        struct dspy__predictor *d = &p->preds[i];
        if ((s->name && !(d->name = dspy_strdup(s->name))) ||
            !(d->state_name = dspy_strdup(s->state_name)) ||
            !(d->module = dspy_module_copy(s->module))) {
            p->n++; /* free what this predictor got */
            goto fail;
        }
    }
    if (dspy__program_steps_copy(p, src))
        goto fail;
    p->context_budget = src->context_budget;
    p->completion_budget = src->completion_budget;
    p->context_bpe = src->context_bpe;
    p->context_wordpiece = src->context_wordpiece;
    p->prompt_budget = src->prompt_budget;
    return p;
fail:
    dspy_program_free(p);
    return NULL;
}

size_t dspy_program_count(const dspy_program *p)
{
    return p ? p->n : 0;
}

const char *dspy_program_state_name(const dspy_program *p, size_t i)
{
    return p && i < p->n ? p->preds[i].state_name : NULL;
}

dspy_module *dspy_program_module(dspy_program *p, size_t i)
{
    return p && i < p->n ? p->preds[i].module : NULL;
}

const char *dspy_program_model(const dspy_program *p)
{
    return p ? p->model : NULL;
}

json_t *dspy_program_inputs(const dspy_program *p)
{
    json_t *names = json_array(), *produced = json_object();
    if (!names || !produced)
        goto fail;
    for (size_t i = 0; i <= p->n; i++) {
        for (size_t st = 0; st < p->nsteps; st++) {
            const struct dspy__retrieve_step *step = &p->steps[st];
            if (step->before != i)
                continue;
            if (!json_object_get(produced, step->query) &&
                (json_object_set_new(produced, step->query, json_true()) ||
                 json_array_append_new(names, json_string(step->query))))
                goto fail;
            if (step->documents && !json_object_get(produced, step->documents) &&
                (json_object_set_new(produced, step->documents, json_true()) ||
                 json_array_append_new(names, json_string(step->documents))))
                goto fail;
            if (json_object_set_new(produced, step->output, json_true()))
                goto fail;
        }
        if (i == p->n)
            break;
        const dspy_signature *sig = dspy_module_signature(p->preds[i].module);
        size_t nin = dspy_signature_ninputs(sig), nall = dspy_signature_nfields(sig);
        for (size_t f = 0; f < nin; f++) {
            const char *name = dspy_signature_field(sig, f)->name;
            if (json_object_get(produced, name))
                continue;
            if (json_object_set_new(produced, name, json_true()) ||
                json_array_append_new(names, json_string(name)))
                goto fail;
        }
        for (size_t f = nin; f < nall; f++)
            if (json_object_set_new(produced, dspy_signature_field(sig, f)->name, json_true()))
                goto fail;
    }
    json_decref(produced);
    return names;

fail:
    json_decref(produced);
    json_decref(names);
    return NULL;
}

static void add_info(struct dspy_call_info *sum, const struct dspy_call_info *one)
{
    sum->lm_calls += one->lm_calls;
    sum->usage.prompt_tokens += one->usage.prompt_tokens;
    sum->usage.completion_tokens += one->usage.completion_tokens;
    sum->usage.total_tokens += one->usage.total_tokens;
    sum->cache_hits += one->cache_hits;
    sum->cached_usage.prompt_tokens += one->cached_usage.prompt_tokens;
    sum->cached_usage.completion_tokens += one->cached_usage.completion_tokens;
    sum->cached_usage.total_tokens += one->cached_usage.total_tokens;
    sum->format_ns += one->format_ns;
    sum->lm_ns += one->lm_ns;
    sum->parse_ns += one->parse_ns;
}

dspy_status dspy_program_call(dspy_program *p, dspy_lm *lm, const json_t *inputs,
                              const struct dspy_call_config *cfg, json_t **outputs,
                              struct dspy_call_info *info, struct dspy_error *err)
{
    return dspy__program_call_in(p, lm, NULL, NULL, NULL, inputs, cfg, outputs, info, err);
}

void dspy__program_first_release(struct dspy__program_first *f)
{
    json_decref(f->record);
    json_decref(f->all);
    json_decref(f->report);
    dspy_module_free(f->use);
    memset(f, 0, sizeof(*f));
}

/* The steps before predictor `i` and its context fit, on `record` (outputs into `all`);
 * *use and *report as dspy__context_fit leaves them. */
static dspy_status before_pred(dspy_program *p, size_t i, dspy_lm *lm,
                               struct dspy__engine_group *group, const struct dspy_call_config *cfg,
                               json_t *record, json_t *all, json_t **report, json_t **picked,
                               dspy_module **use, struct dspy_call_info *sum,
                               struct dspy_error *err)
{
    dspy_status rc;
    const char *name = p->preds[i].name ? p->preds[i].name : "predict";
    *use = NULL;
    if (p->nsteps && (rc = dspy__program_run_steps(p, i, record, all, lm, group, cfg, sum, err)))
        return rc;
    if (p->demo_select) {
        if (!*picked && !(*picked = json_object()))
            return dspy__err(err, DSPY_ENOMEM, "out of memory");
        if ((rc = dspy__demo_select_fit(p, i, record, use, *picked, err))) {
            dspy__err_prefix(err, "predictor %s", name);
            return rc;
        }
    }
    if (!p->context_budget && !p->prompt_budget)
        return DSPY_OK;
    if (!*report && !(*report = json_object()))
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
    else if ((rc = dspy__context_fit(p, i, record, use, *report, err)))
        dspy__err_prefix(err, "predictor %s", name);
    if (rc) {
        dspy_module_free(*use);
        *use = NULL;
    }
    return rc;
}

dspy_status dspy__program_call_in(dspy_program *p, dspy_lm *lm, struct dspy__engine_group *group,
                                  struct dspy__lm_prefetched *pre,
                                  struct dspy__program_first *first, const json_t *inputs,
                                  const struct dspy_call_config *cfg, json_t **outputs,
                                  struct dspy_call_info *info, struct dspy_error *err)
{
    struct dspy_call_info sum, one;
    struct dspy__program_first ready = { NULL, NULL, NULL, NULL };
    dspy_status rc = DSPY_OK;
    memset(&sum, 0, sizeof(sum));
    if (first) { /* taken: released below whatever happens */
        ready = *first;
        memset(first, 0, sizeof(*first));
    }
    if (outputs)
        *outputs = NULL;
    if (!p || !lm || !outputs) {
        dspy__program_first_release(&ready);
        return dspy__err(err, DSPY_EINVAL,
                         "dspy_program_call: program, lm and outputs are required");
    }
    if (!json_is_object(inputs)) {
        dspy__program_first_release(&ready);
        return dspy__err(err, DSPY_EINVAL, "inputs must be a JSON object");
    }
    if (!ready.record && p->n == 1 && !p->nsteps && !p->context_budget && !p->prompt_budget &&
        !p->demo_select) { /* the common case needs no record */
        rc = dspy__module_call_in(p->preds[0].module, lm, group, pre, inputs, cfg, outputs, NULL,
                                  info, err);
        if (rc && p->preds[0].name)
            dspy__err_prefix(err, "predictor %s", p->preds[0].name);
        return rc;
    }
    bool prepared = ready.record != NULL; /* the steps before predictor 0 and its fit ran */
    json_t *record = ready.record, *all = ready.all, *report = ready.report, *picked = NULL;
    dspy_module *use0 = ready.use;
    if (!prepared && (!(record = json_object()) || !(all = json_object()) ||
                      json_object_update(record, (json_t *)(uintptr_t)inputs))) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto release;
    }
    for (size_t i = 0; i < p->n; i++) {
        json_t *pred = NULL;
        dspy_module *use = NULL;
        if (!i && prepared) {
            use = use0;
            use0 = NULL;
        } else if ((rc = before_pred(p, i, lm, group, cfg, record, all, &report, &picked, &use,
                                     &sum, err))) {
            goto release;
        }
        rc = dspy__module_call_in(use ? use : p->preds[i].module, lm, group, i ? NULL : pre, record,
                                  cfg, &pred, NULL, &one, err);
        dspy_module_free(use);
        add_info(&sum, &one);
        if (rc) {
            dspy__err_prefix(err, "predictor %s", p->preds[i].name);
            goto release;
        }
        if (json_object_update(record, pred) || json_object_update(all, pred)) {
            json_decref(pred);
            rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
            goto release;
        }
        json_decref(pred);
    }
    if (p->nsteps &&
        (rc = dspy__program_run_steps(p, p->n, record, all, lm, group, cfg, &sum, err)))
        goto release;
    if ((json_object_size(report) && json_object_set(all, "context_dropped", report)) ||
        (json_object_size(picked) && json_object_set(all, "demos_selected", picked))) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto release;
    }
    *outputs = all;
    all = NULL;

release:
    if (info)
        *info = sum;
    dspy_module_free(use0);
    json_decref(report);
    json_decref(picked);
    json_decref(all);
    json_decref(record);
    return rc;
}

bool dspy__program_first_local(const dspy_program *p)
{
    for (size_t i = 0; i < p->nsteps; i++)
        if (p->steps[i].before == 0 && !dspy__retriever_local(p->steps[i].retriever))
            return false; /* an LM rank step (no retriever), a remote service */
    return true;
}

dspy_status dspy__program_prepare(dspy_program *p, dspy_lm *lm, const json_t *inputs,
                                  const struct dspy_call_config *cfg,
                                  struct dspy__program_first *first, struct dspy_cache_key *key,
                                  struct dspy_cache_ctl *ctl)
{
    dspy_status rc;
    memset(first, 0, sizeof(*first));
    if (!p || !p->n || !json_is_object(inputs) || !dspy__program_first_local(p) ||
        p->demo_select) /* demo selection reports its picks per call: not prepared */
        return DSPY_EINVAL;
    if (!p->nsteps && !p->context_budget && !p->prompt_budget) /* the key of the inputs */
        return dspy__module_request_key(p->preds[0].module, lm, inputs, cfg, key, ctl, NULL);
    struct dspy__program_first f = { json_deep_copy(inputs), json_object(), NULL, NULL };
    if (!f.record || !f.all) {
        rc = DSPY_ENOMEM;
        goto fail;
    }
    json_t *no_picks = NULL;
    if ((rc = before_pred(p, 0, NULL, NULL, NULL, f.record, f.all, &f.report, &no_picks, &f.use,
                          NULL, NULL)) ||
        (rc = dspy__module_request_key(f.use ? f.use : p->preds[0].module, lm, f.record, cfg, key,
                                       ctl, NULL)))
        goto fail;
    *first = f;
    return DSPY_OK;
fail:
    dspy__program_first_release(&f);
    return rc;
}

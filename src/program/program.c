/* Programs (program layer): named predictors run in order over one record, built from a
 * JSON program file (docs/program-file.md) or from one module. Unknown keys and bad values
 * are refused with the file, line and key named. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <dspyc/program.h>

#include "base/status.h"
#include "program/module_int.h"
#include "program/program_int.h"

#define PROGRAM_FILE_MAX ((size_t)64 << 20)
#define PROGRAM_MAX_PREDICTORS 256

static const char *const TOP_KEYS[] = { "name", "description", "adapter", "lm", "predictors",
                                        NULL };
static const char *const LM_KEYS[] = { "model", "temperature", "max_tokens", "top_p", "n",
                                       NULL };
static const char *const PREDICTOR_KEYS[] = { "name",   "module", "signature", "instructions",
                                              "demos",  "adapter", "fields",  "config",
                                              NULL };
static const char *const CONFIG_KEYS[] = { "temperature", "max_tokens", "top_p", "n",
                                           "rollout_id", NULL };
static const char *const FIELD_KEYS[] = { "desc", "prefix", NULL };

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
    if (!*out || json_typeof(*out) == type ||
        (type == JSON_REAL && json_is_integer(*out)))
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
                                  const struct dspy_call_config *base,
                                  struct dspy__predictor *out)
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
    size_t n = json_array_size(preds);
    if (!n || n > PROGRAM_MAX_PREDICTORS)
        return preds ? bad_value(&s, "predictors", "an array of 1 to 256 predictors")
                     : spec_err(&s, DSPY_EINVAL, "a program needs \"predictors\"");
    dspy_program *p = program_alloc(n);
    if (!p)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    if ((rc = read_top(&s, spec, p, &adapter, &base)))
        goto free_program;
    dspy__jpath_key(&s.path, "predictors");
    for (size_t i = 0; i < n; i++) {
        dspy__jpath_index(&s.path, i);
        rc = read_predictor(&s, json_array_get(preds, i), n == 1, adapter, &base, &p->preds[i]);
        p->n = i + 1; /* so that free releases what this predictor allocated */
        for (size_t j = 0; !rc && j < i; j++)
            if (p->preds[i].name && !strcmp(p->preds[i].name, p->preds[j].name))
                rc = bad_value(&s, "name", "unique among the predictors");
        dspy__jpath_pop(&s.path);
        if (rc)
            goto free_program;
    }
    p->flat = n == 1 && !p->preds[0].name &&
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
    for (size_t i = 0; i < p->n; i++) {
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
    return dspy__program_call_in(p, lm, NULL, inputs, cfg, outputs, info, err);
}

dspy_status dspy__program_call_in(dspy_program *p, dspy_lm *lm, struct dspy__engine_group *group,
                                  const json_t *inputs, const struct dspy_call_config *cfg,
                                  json_t **outputs, struct dspy_call_info *info,
                                  struct dspy_error *err)
{
    struct dspy_call_info sum, one;
    dspy_status rc = DSPY_OK;
    memset(&sum, 0, sizeof(sum));
    if (outputs)
        *outputs = NULL;
    if (!p || !lm || !outputs)
        return dspy__err(err, DSPY_EINVAL,
                         "dspy_program_call: program, lm and outputs are required");
    if (!json_is_object(inputs))
        return dspy__err(err, DSPY_EINVAL, "inputs must be a JSON object");
    if (p->n == 1) { /* the common case needs no record */
        rc = dspy__module_call_in(p->preds[0].module, lm, group, inputs, cfg, outputs, NULL, info,
                                  err);
        if (rc && p->preds[0].name)
            dspy__err_prefix(err, "predictor %s", p->preds[0].name);
        return rc;
    }
    json_t *record = json_object(), *all = json_object();
    if (!record || !all || json_object_update(record, (json_t *)(uintptr_t)inputs)) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto release;
    }
    for (size_t i = 0; i < p->n; i++) {
        json_t *pred = NULL;
        rc = dspy__module_call_in(p->preds[i].module, lm, group, record, cfg, &pred, NULL, &one,
                                  err);
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
    *outputs = all;
    all = NULL;

release:
    if (info)
        *info = sum;
    json_decref(all);
    json_decref(record);
    return rc;
}

/* DSPy saved-program state (program layer): reads the JSON that DSPy's module.save() writes
 * (demos, instructions, field prefixes and descriptions per predictor name) and writes the
 * same shape, key order and layout (orjson, 2-space indent, trailing newline), so DSPy's
 * load() accepts it. A load is applied to copies and swapped in only when all of it fits. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <dspyc/program.h>

#include "base/buf.h"
#include "base/status.h"
#include "base/jsonw.h"
#include "program/module_int.h"
#include "program/program_int.h"

#define STATE_FILE_MAX ((size_t)256 << 20)

/* The versions DSPy writes into "metadata" of a file dspyc writes afresh: the newest DSPy
 * it matches (both 3.3.1 and 3.4.1 load it; see docs/dspy-compat.md). A file whose state
 * was loaded keeps the metadata it came with. */
#define STATE_PYTHON "3.11"
#define STATE_DSPY "3.4.1"
#define STATE_CLOUDPICKLE "3.1"

/* ---- dump ------------------------------------------------------------------------------ */

static json_t *signature_state(const dspy_signature *sig)
{
    json_t *fields = json_array();
    json_t *out = json_pack("{s:s, s:o}", "instructions", dspy_signature_instructions(sig),
                            "fields", fields);
    if (!out)
        return NULL;
    for (size_t i = 0; i < dspy_signature_nfields(sig); i++) {
        const struct dspy_field *f = dspy_signature_field(sig, i);
        if (json_array_append_new(fields, json_pack("{s:s, s:s}", "prefix", f->prefix,
                                                    "description", f->desc))) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* One predictor, keys in DSPy's order: traces, train, demos, signature, lm. */
static json_t *predictor_state(const dspy_module *m)
{
    json_t *demos = json_deep_copy(dspy_module_demos(m));
    json_t *sig = signature_state(dspy_module_signature(m));
    if (!demos || !sig) {
        json_decref(demos);
        json_decref(sig);
        return NULL;
    }
    return json_pack("{s:[], s:[], s:o, s:o, s:n}", "traces", "train", "demos", demos, "signature",
                     sig, "lm");
}

/* A retrieve step's state, {"k": k} as DSPy's Retrieve.dump_state() writes it; a rank
 * step's, its ranker's as DSPy's Predict writes it (its instructions in the signature),
 * plus "k" when it keeps k (DSPy's load_state sets that on the Predict: harmless). */
static json_t *step_state(const struct dspy__retrieve_step *s)
{
    if (!s->ranker)
        return json_pack("{s:I}", "k", (json_int_t)s->k);
    json_t *st = predictor_state(s->ranker);
    if (st && s->k && json_object_set_new(st, "k", json_integer((json_int_t)s->k))) {
        json_decref(st);
        return NULL;
    }
    return st;
}

json_t *dspy_program_dump_state(const dspy_program *p)
{
    json_t *root = NULL;
    if (!p || !p->n)
        return NULL;
    if (p->flat) {
        root = predictor_state(p->preds[0].module);
    } else if ((root = json_object())) {
        /* In the order DSPy's named_parameters() lists them: a Retrieve is {"k": k}, a
         * rank step its ranker's Predict state (with "k" when it keeps k). */
        for (size_t i = 0; i <= p->n; i++) {
            for (size_t st = 0; st < p->nsteps; st++)
                if (p->steps[st].before == i &&
                    json_object_set_new(root, p->steps[st].name, step_state(&p->steps[st]))) {
                    json_decref(root);
                    return NULL;
                }
            if (i < p->n && json_object_set_new(root, p->preds[i].state_name,
                                                predictor_state(p->preds[i].module))) {
                json_decref(root);
                return NULL;
            }
        }
    }
    json_t *meta = p->state_metadata ? json_deep_copy(p->state_metadata)
                                     : json_pack("{s:{s:s, s:s, s:s}}", "dependency_versions",
                                                 "python", STATE_PYTHON, "dspy", STATE_DSPY,
                                                 "cloudpickle", STATE_CLOUDPICKLE);
    if (!root) {
        json_decref(meta);
        return NULL;
    }
    if (json_object_set_new(root, "metadata", meta)) { /* takes meta either way */
        json_decref(root);
        return NULL;
    }
    return root;
}

dspy_status dspy_program_save_state(const dspy_program *p, const char *path, struct dspy_error *err)
{
    struct dspy_buf b;
    char tmp[4096];
    dspy_status rc;
    if (!p || !path)
        return dspy__err(err, DSPY_EINVAL,
                         "dspy_program_save_state: program and path are required");
    json_t *state = dspy_program_dump_state(p);
    if (!state)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    dspy__buf_init(&b, STATE_FILE_MAX);
    if ((rc = dspy__json_write(&b, state, DSPY__JSON_ORJSON, 0)) ||
        (rc = dspy__buf_addc(&b, '\n'))) {
        rc = dspy__err(err, rc, "cannot encode the state: %s", dspy_strerror(rc));
        goto release;
    }
    /* Write beside the target and rename, so a reader never sees half a file. */
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        rc = dspy__err(err, DSPY_EINVAL, "state path is too long");
        goto release;
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        rc = dspy__err(err, DSPY_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        goto release;
    }
    bool ok = fwrite(b.ptr, 1, b.len, f) == b.len;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path)) {
        rc = dspy__err(err, DSPY_EIO, "%s: cannot write: %s", path, strerror(errno));
        remove(tmp);
    }

release:
    if (rc)
        dspy__err_file(err, path);
    dspy__buf_release(&b);
    json_decref(state);
    return rc;
}

/* ---- load ------------------------------------------------------------------------------ */

/* A predictor's new state, prepared on copies. */
struct staged {
    dspy_signature *sig;
    json_t *demos;
};

struct loader {
    const struct dspy__jsource *src;
    struct dspy__jpath path;
    struct dspy_error *err;
};

static dspy_status stage_signature(struct loader *l, const json_t *js, dspy_signature *sig)
{
    const char *key;
    json_t *v;
    dspy_status rc = DSPY_OK;
    if (!json_is_object(js))
        return dspy__jpath_err(l->err, DSPY_EINVAL, l->src, &l->path,
                               "must be an object with \"instructions\" and \"fields\"");
    json_object_foreach((json_t *)(uintptr_t)js, key, v) {
        if (strcmp(key, "instructions") && strcmp(key, "fields")) {
            l->path.at_key = key;
            rc = dspy__jpath_err(l->err, DSPY_EINVAL, l->src, &l->path,
                                 "unknown key \"%s\" in a saved signature (expected "
                                 "instructions, fields)",
                                 key);
            l->path.at_key = NULL;
            return rc;
        }
    }
    json_t *ins = json_object_get(js, "instructions");
    json_t *fields = json_object_get(js, "fields");
    if (!ins || !fields)
        return dspy__jpath_err(l->err, DSPY_EINVAL, l->src, &l->path,
                               "a saved signature needs \"instructions\" and \"fields\"");
    dspy__jpath_key(&l->path, "instructions");
    if (!json_is_string(ins))
        rc = dspy__jpath_err(l->err, DSPY_EINVAL, l->src, &l->path, "must be a string");
    else if (dspy_signature_set_instructions(sig, json_string_value(ins)))
        rc = dspy__err(l->err, DSPY_ENOMEM, "out of memory");
    dspy__jpath_pop(&l->path);
    if (rc)
        return rc;

    size_t n = dspy_signature_nfields(sig);
    dspy__jpath_key(&l->path, "fields");
    if (!json_is_array(fields))
        rc = dspy__jpath_err(l->err, DSPY_EINVAL, l->src, &l->path, "must be an array");
    else if (json_array_size(fields) != n)
        rc = dspy__jpath_err(l->err, DSPY_EINVAL, l->src, &l->path,
                             "the saved signature has %zu fields but the program's has %zu",
                             json_array_size(fields), n);
    /* Positional, as DSPy's Signature.load_state zips them: inputs, then outputs. */
    for (size_t i = 0; !rc && i < n; i++) {
        const json_t *f = json_array_get(fields, i);
        const json_t *prefix = json_object_get(f, "prefix");
        const json_t *desc = json_object_get(f, "description");
        const char *name = dspy_signature_field(sig, i)->name;
        dspy__jpath_index(&l->path, i);
        if (!json_is_object(f) || !json_is_string(prefix) || !json_is_string(desc) ||
            json_object_size(f) != 2)
            rc = dspy__jpath_err(l->err, DSPY_EINVAL, l->src, &l->path,
                                 "field %zu (%s) must be {\"prefix\": string, \"description\": "
                                 "string}",
                                 i, name);
        else if (dspy_signature_set_prefix(sig, name, json_string_value(prefix)) ||
                 dspy_signature_set_desc(sig, name, json_string_value(desc)))
            rc = dspy__err(l->err, DSPY_ENOMEM, "out of memory");
        dspy__jpath_pop(&l->path);
    }
    dspy__jpath_pop(&l->path);
    return rc;
}

static dspy_status stage_demos(struct loader *l, const json_t *demos, json_t **out)
{
    if (!json_is_array(demos))
        return dspy__jpath_err(l->err, DSPY_EINVAL, l->src, &l->path, "must be an array");
    for (size_t i = 0; i < json_array_size(demos); i++)
        if (!json_is_object(json_array_get(demos, i))) {
            dspy__jpath_index(&l->path, i);
            dspy_status rc = dspy__jpath_err(l->err, DSPY_EINVAL, l->src, &l->path,
                                             "a demo must be an object of field values");
            dspy__jpath_pop(&l->path);
            return rc;
        }
    if (!(*out = json_deep_copy(demos)))
        return dspy__err(l->err, DSPY_ENOMEM, "out of memory");
    return DSPY_OK;
}

/* Keys a predictor's state may hold. traces, train and lm are read and ignored: dspyc takes
 * its LM from the caller, as DSPy does when the saved lm is null. */
static bool known_predictor_key(const char *key, bool flat)
{
    return !strcmp(key, "traces") || !strcmp(key, "train") || !strcmp(key, "demos") ||
           !strcmp(key, "signature") || !strcmp(key, "lm") || (flat && !strcmp(key, "metadata"));
}

static dspy_status stage_predictor(struct loader *l, const json_t *ps, const dspy_module *m,
                                   bool flat, struct staged *out)
{
    const char *key;
    json_t *v;
    dspy_status rc;
    if (!json_is_object(ps))
        return dspy__jpath_err(l->err, DSPY_EINVAL, l->src, &l->path,
                               "a predictor's state must be a JSON object");
    json_object_foreach((json_t *)(uintptr_t)ps, key, v) {
        if (known_predictor_key(key, flat))
            continue;
        l->path.at_key = key;
        if (flat && json_is_object(v) && json_object_get(v, "signature"))
            rc = dspy__jpath_err(l->err, DSPY_ENOTFOUND, l->src, &l->path,
                                 "the state holds predictor \"%s\", but the program is a lone "
                                 "Predict, whose state is the whole file",
                                 key);
        else if (!strcmp(key, "extended_signature"))
            rc = dspy__jpath_err(l->err, DSPY_EUNSUPPORTED, l->src, &l->path,
                                 "\"extended_signature\" is the DSPy 2.5 save format, which "
                                 "DSPy 2.6+ and dspyc no longer load; re-save it with DSPy 3");
        else
            rc = dspy__jpath_err(l->err, DSPY_EINVAL, l->src, &l->path,
                                 "unknown key \"%s\" in a predictor's state (expected traces, "
                                 "train, demos, signature, lm)",
                                 key);
        l->path.at_key = NULL;
        return rc;
    }
    const json_t *sig = json_object_get(ps, "signature");
    const json_t *demos = json_object_get(ps, "demos");
    if (!sig)
        return dspy__jpath_err(l->err, DSPY_EINVAL, l->src, &l->path,
                               "a predictor's state needs \"signature\"");
    if (!(out->sig = dspy_signature_copy(dspy_module_signature(m))))
        return dspy__err(l->err, DSPY_ENOMEM, "out of memory");
    dspy__jpath_key(&l->path, "signature");
    rc = stage_signature(l, sig, out->sig);
    dspy__jpath_pop(&l->path);
    if (rc)
        return rc;
    /* Without "demos" the predictor keeps its own, as DSPy's setattr loop does. */
    dspy__jpath_key(&l->path, "demos");
    rc = demos ? stage_demos(l, demos, &out->demos)
               : ((out->demos = json_deep_copy(dspy_module_demos(m)))
                      ? DSPY_OK
                      : dspy__err(l->err, DSPY_ENOMEM, "out of memory"));
    dspy__jpath_pop(&l->path);
    return rc;
}

static long step_index(const dspy_program *p, const char *name)
{
    for (size_t i = 0; i < p->nsteps; i++)
        if (!strcmp(p->steps[i].name, name))
            return (long)i;
    return -1;
}

/* A retrieve step's state, DSPy's Retrieve.dump_state(): {"k": k}. */
static dspy_status stage_step(struct loader *l, const json_t *ps, size_t *k)
{
    const char *key;
    json_t *v;
    if (!json_is_object(ps))
        return dspy__jpath_err(l->err, DSPY_EINVAL, l->src, &l->path,
                               "a retrieve step's state must be an object {\"k\": N}");
    json_object_foreach((json_t *)(uintptr_t)ps, key, v) {
        if (strcmp(key, "k")) {
            l->path.at_key = key;
            dspy_status rc = dspy__jpath_err(l->err, DSPY_EINVAL, l->src, &l->path,
                                             "unknown key \"%s\" in a retrieve step's state "
                                             "(allowed: k)",
                                             key);
            l->path.at_key = NULL;
            return rc;
        }
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > DSPY_RETRIEVE_MAX_K) {
            l->path.at_key = key;
            dspy_status rc = dspy__jpath_err(l->err, DSPY_EINVAL, l->src, &l->path,
                                             "\"k\" must be an integer from 1 to %d",
                                             DSPY_RETRIEVE_MAX_K);
            l->path.at_key = NULL;
            return rc;
        }
        *k = (size_t)json_integer_value(v);
    }
    return DSPY_OK;
}

/* A step's state: a retrieve step's {"k": k}; a rank step's either that (older files) or
 * its ranker's predictor state, with "k" beside it when the step keeps k. */
static dspy_status stage_step_state(struct loader *l, const struct dspy__retrieve_step *s,
                                    const json_t *ps, size_t *k, struct staged *ranker)
{
    if (!s->ranker || !json_is_object(ps) || !json_object_get(ps, "signature"))
        return stage_step(l, ps, k);
    json_t *pred = json_copy((json_t *)(uintptr_t)ps), *kv = json_object_get(ps, "k");
    json_t *kst = kv ? json_pack("{s:O}", "k", kv) : NULL;
    dspy_status rc = DSPY_OK;
    if (!pred || (kv && !kst))
        rc = dspy__err(l->err, DSPY_ENOMEM, "out of memory");
    else if (!(kv && json_object_del(pred, "k"))) /* the rest is DSPy's Predict state */
        rc = stage_predictor(l, pred, s->ranker, false, ranker);
    if (!rc && kst)
        rc = stage_step(l, kst, k);
    json_decref(pred);
    json_decref(kst);
    return rc;
}

static long predictor_index(const dspy_program *p, const char *state_name)
{
    for (size_t i = 0; i < p->n; i++)
        if (!strcmp(p->preds[i].state_name, state_name))
            return (long)i;
    return -1;
}

/* Every top-level key names a predictor (or is "metadata"), and every predictor is there. */
static dspy_status check_names(struct loader *l, const dspy_program *p, const json_t *state)
{
    const char *key;
    json_t *v;
    char have[256];
    size_t len = 0;
    have[0] = '\0';
    for (size_t i = 0; i < p->n && len < sizeof(have); i++)
        len += (size_t)snprintf(have + len, sizeof(have) - len, "%s%s", i ? ", " : "",
                                p->preds[i].state_name);
    json_object_foreach((json_t *)(uintptr_t)state, key, v) {
        if (!strcmp(key, "metadata") || predictor_index(p, key) >= 0 || step_index(p, key) >= 0)
            continue;
        l->path.at_key = key;
        dspy_status rc = dspy__jpath_err(
            l->err, DSPY_ENOTFOUND, l->src, &l->path,
            "the state has predictor \"%s\", which the program does not have (it has: %s)%s", key,
            have,
            json_object_get(state, "signature")
                ? "; this file looks like the state of a lone Predict"
                : "");
        l->path.at_key = NULL;
        return rc;
    }
    for (size_t i = 0; i < p->n; i++)
        if (!json_object_get(state, p->preds[i].state_name)) {
            dspy__err(l->err, DSPY_ENOTFOUND, "%s%sthe state has no entry \"%s\" for predictor %s",
                      l->src->origin ? l->src->origin : "", l->src->origin ? ": " : "",
                      p->preds[i].state_name,
                      p->preds[i].name ? p->preds[i].name : p->preds[i].state_name);
            dspy__err_field(l->err, p->preds[i].state_name);
            dspy__err_file(l->err, l->src->origin);
            return DSPY_ENOTFOUND;
        }
    return DSPY_OK;
}

dspy_status dspy__program_apply_state_src(dspy_program *p, const json_t *state,
                                          const struct dspy__jsource *src, struct dspy_error *err)
{
    struct loader l = { .src = src, .err = err };
    struct staged *rst = NULL; /* the rank steps' rankers */
    dspy_status rc = DSPY_OK;
    if (!p || !json_is_object(state))
        return dspy__jpath_err(err, DSPY_EINVAL, src, &l.path,
                               "a saved program state must be a JSON object");
    struct staged *st = dspy_calloc(p->n, sizeof(*st));
    if (!st)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    if (!p->flat && (rc = check_names(&l, p, state)))
        goto release;
    for (size_t i = 0; i < p->n; i++) {
        const json_t *ps = p->flat ? state : json_object_get(state, p->preds[i].state_name);
        if (!p->flat)
            dspy__jpath_key(&l.path, p->preds[i].state_name);
        rc = stage_predictor(&l, ps, p->preds[i].module, p->flat, &st[i]);
        if (!p->flat)
            dspy__jpath_pop(&l.path);
        if (rc)
            goto release;
    }
    /* Retrieve steps: "k" when the file has the step (older files may not); a rank step's
     * ranker state too when the file has it (older files hold only {"k": k}). */
    size_t *ks = p->nsteps ? dspy_calloc(p->nsteps, sizeof(*ks)) : NULL;
    if (p->nsteps && (!ks || !(rst = dspy_calloc(p->nsteps, sizeof(*rst))))) {
        dspy_free(ks);
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto release;
    }
    for (size_t i = 0; !p->flat && i < p->nsteps; i++) {
        const json_t *ps = json_object_get(state, p->steps[i].name);
        ks[i] = p->steps[i].k;
        if (!ps)
            continue;
        dspy__jpath_key(&l.path, p->steps[i].name);
        rc = stage_step_state(&l, &p->steps[i], ps, &ks[i], &rst[i]);
        dspy__jpath_pop(&l.path);
        if (rc) {
            dspy_free(ks);
            goto release;
        }
    }
    for (size_t i = 0; i < p->nsteps; i++)
        p->steps[i].k = ks ? ks[i] : p->steps[i].k;
    dspy_free(ks);
    json_t *meta = json_object_get(state, "metadata"), *copy = NULL;
    if (json_is_object(meta) && !(copy = json_deep_copy(meta))) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto release;
    }
    json_decref(p->state_metadata);
    p->state_metadata = copy;
    for (size_t i = 0; i < p->n; i++) {
        dspy__module_replace(p->preds[i].module, st[i].sig, st[i].demos);
        st[i].sig = NULL;
        st[i].demos = NULL;
    }
    for (size_t i = 0; rst && i < p->nsteps; i++)
        if (rst[i].sig) {
            dspy__module_replace(p->steps[i].ranker, rst[i].sig, rst[i].demos);
            rst[i].sig = NULL;
            rst[i].demos = NULL;
        }

release:
    for (size_t i = 0; i < p->n; i++) {
        dspy_signature_free(st[i].sig);
        json_decref(st[i].demos);
    }
    for (size_t i = 0; rst && i < p->nsteps; i++) {
        dspy_signature_free(rst[i].sig);
        json_decref(rst[i].demos);
    }
    dspy_free(rst);
    dspy_free(st);
    return rc;
}

dspy_status dspy_program_apply_state(dspy_program *p, const json_t *state, struct dspy_error *err)
{
    struct dspy__jsource src = { NULL, NULL, 0 };
    return dspy__program_apply_state_src(p, state, &src, err);
}

dspy_status dspy_program_load_state(dspy_program *p, const char *path, struct dspy_error *err)
{
    char *text;
    size_t len;
    json_t *state;
    if (!p || !path)
        return dspy__err(err, DSPY_EINVAL,
                         "dspy_program_load_state: program and path are required");
    dspy_status rc = dspy__read_file(path, STATE_FILE_MAX, &text, &len, err);
    if (rc)
        return rc;
    struct dspy__jsource src = { path, text, len };
    if (!(rc = dspy__json_parse(&src, &state, err))) {
        rc = dspy__program_apply_state_src(p, state, &src, err);
        json_decref(state);
    }
    dspy_free(text);
    return rc;
}

/* The JSON adapter's structured-output request (program layer): the response_format DSPy's
 * JSONAdapter sends a model that supports response schemas, built from the signature's
 * output fields as DSPy builds it (a pydantic model's JSON schema, made strict), with the
 * same members in the same order. */
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "program/adapter_int.h"

/* pydantic's get_title_from_name(): name.title().replace('_', ' ').strip(). Python's
 * title() capitalises a letter that follows a character without case and lowers the
 * others; the casing here is ASCII's (see docs/dspy-compat.md for other letters). */
static json_t *field_title(const char *name)
{
    size_t n = strlen(name), start = 0, end;
    char *t = dspy_malloc(n + 1);
    bool prev_cased = false;
    json_t *s;
    if (!t)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        bool upper = c >= 'A' && c <= 'Z', lower = c >= 'a' && c <= 'z';
        if (c == '_')
            t[i] = ' ';
        else if (prev_cased && upper)
            t[i] = (char)(c + 32);
        else if (!prev_cased && lower)
            t[i] = (char)(c - 32);
        else
            t[i] = (char)c;
        prev_cased = upper || lower;
    }
    end = n;
    while (start < end && t[start] == ' ')
        start++;
    while (end > start && t[end - 1] == ' ')
        end--;
    s = json_stringn(t + start, end - start);
    dspy_free(t);
    return s;
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* pydantic's GenerateJsonSchema.sort(): every object's members sorted by key, except the
 * members of "properties" (field order) and "default"; arrays keep their order and pass
 * their parent's key on. Returns a new value. */
static json_t *sorted(json_t *v, const char *parent)
{
    if (json_is_array(v)) {
        json_t *a = json_array();
        size_t i;
        json_t *x;
        if (!a)
            return NULL;
        json_array_foreach(v, i, x) {
            if (json_array_append_new(a, sorted(x, parent))) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    if (!json_is_object(v))
        return json_incref(v);
    size_t n = json_object_size(v), i = 0;
    const char **keys = dspy_malloc((n ? n : 1) * sizeof(*keys));
    json_t *o = json_object(), *x;
    const char *k;
    if (!keys || !o)
        goto fail;
    json_object_foreach(v, k, x) {
        keys[i++] = k;
    }
    if (!parent || (strcmp(parent, "properties") && strcmp(parent, "default")))
        qsort(keys, n, sizeof(*keys), key_cmp);
    for (i = 0; i < n; i++)
        if (json_object_set_new(o, keys[i], sorted(json_object_get(v, keys[i]), keys[i])))
            goto fail;
    dspy_free(keys);
    return o;
fail:
    dspy_free(keys);
    json_decref(o);
    return NULL;
}

/* DSPy's enforce_required(): every object schema lists all its properties as required and
 * forbids others (an object without properties gets empty ones); the same for the items of
 * arrays and the property schemas, in place (a member already there keeps its place). */
static bool enforce_required(json_t *s)
{
    const char *type = json_string_value(json_object_get(s, "type"));
    json_t *items = json_object_get(s, "items");
    if (type && !strcmp(type, "object")) {
        json_t *props = json_object_get(s, "properties"), *req = json_array(), *p;
        const char *k;
        bool ok = req != NULL;
        if (ok && !props) {
            ok = !json_object_set_new(s, "properties", json_object());
        } else if (ok) {
            json_object_foreach(props, k, p) {
                ok = ok && !json_array_append_new(req, json_string(k));
            }
        }
        if (!ok || json_object_set_new(s, "required", req) ||
            json_object_set_new(s, "additionalProperties", json_false())) {
            if (!ok)
                json_decref(req);
            return false;
        }
        json_object_foreach(props, k, p) {
            if (json_is_object(p) && !enforce_required(p))
                return false;
        }
    }
    if (type && !strcmp(type, "array") && json_is_object(items) && !enforce_required(items))
        return false;
    return true;
}

/* DSPy's _has_open_ended_mapping(): an output field typed dict[K, V] (bare `dict` has no
 * typing origin in Python, so it does not count). */
static bool open_ended(const dspy_signature *sig)
{
    for (size_t i = 0; i < dspy_signature_nfields(sig); i++) {
        const struct dspy_field *f = dspy_signature_field(sig, i);
        if (f->role == DSPY_FIELD_OUTPUT && f->type->kind == DSPY_TYPE_DICT && f->type->nargs)
            return true;
    }
    return false;
}

/* The pydantic model schema of the output fields: {"additionalProperties": false,
 * "properties": {...}, "required": [...], "title": "DSPyProgramOutputs", "type": "object"}
 * with each field's schema titled. */
static json_t *outputs_schema(const dspy_signature *sig)
{
    json_t *props = json_object(), *req = json_array(), *raw = NULL, *out = NULL;
    if (!props || !req)
        goto out;
    for (size_t i = 0; i < dspy_signature_nfields(sig); i++) {
        const struct dspy_field *f = dspy_signature_field(sig, i);
        json_t *fs;
        if (f->role != DSPY_FIELD_OUTPUT)
            continue;
        if (!(fs = dspy__adapter_type_schema(f->type)))
            goto out;
        if (json_object_set_new(fs, "title", field_title(f->name))) {
            json_decref(fs);
            goto out;
        }
        if (json_object_set_new(props, f->name, fs) ||
            json_array_append_new(req, json_string(f->name)))
            goto out;
    }
    /* pydantic leaves "required" out when no field is required; enforce_required() then
     * adds it after the others. */
    if (!(raw = json_pack("{s:b,s:O}", "additionalProperties", 0, "properties", props)))
        goto out;
    if (json_array_size(req) && json_object_set(raw, "required", req))
        goto out;
    if (json_object_set_new(raw, "title", json_string("DSPyProgramOutputs")) ||
        json_object_set_new(raw, "type", json_string("object")))
        goto out;
    if ((out = sorted(raw, NULL)) && !enforce_required(out)) {
        json_decref(out);
        out = NULL;
    }
out:
    json_decref(raw);
    json_decref(props);
    json_decref(req);
    return out;
}

json_t *dspy_adapter_schema_format(const dspy_signature *sig)
{
    json_t *schema;
    if (!sig || open_ended(sig) || !(schema = outputs_schema(sig)))
        return NULL;
    /* As DSPy 3.4's transport sends it; through litellm (DSPy 3.3) "schema" comes first. */
    return json_pack("{s:s,s:{s:s,s:o,s:b}}", "type", "json_schema", "json_schema", "name",
                     "DSPyProgramOutputs", "schema", schema, "strict", 1);
}

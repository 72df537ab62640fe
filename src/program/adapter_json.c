/* JSON adapter (program layer): DSPy's JSONAdapter format, where inputs keep the
 * "[[ ## name ## ]]" sections but the reply is one JSON object, and its parser (JSON
 * repair, the first balanced {...} of chatty replies, unknown keys dropped). */
#include <stdio.h>
#include <string.h>

#include "base/pyfmt.h"
#include "base/status.h"
#include "program/adapter_int.h"

static dspy_status json_structure(struct dspy_buf *b, const dspy_signature *sig,
                                  struct dspy_error *err)
{
    struct dspy_buf d, note;
    json_t *shape = json_object();
    dspy_status rc = shape ? DSPY_OK : DSPY_ENOMEM;

    dspy__buf_init(&d, b->max);
    dspy__buf_init(&note, b->max);
    for (size_t i = sig->ninputs; !rc && i < sig->nfields; i++) {
        json_t *s;
        dspy__buf_reset(&note);
        rc = dspy__adapter_field_note(&note, &sig->fields[i]);
        if (!rc && (!(s = json_stringn(note.ptr, note.len)) ||
                    json_object_set_new(shape, sig->fields[i].name, s)))
            rc = DSPY_ENOMEM;
    }
    if (!rc)
        rc = dspy__buf_adds(&d, "All interactions will be structured in the following way, "
                                "with the appropriate values filled in.\n\n"
                                "Inputs will have the following structure:\n\n");
    if (!rc)
        rc = dspy__adapter_field_blocks(&d, sig, 0, sig->ninputs, NULL, NULL, err);
    if (!rc)
        rc = dspy__buf_adds(&d, "\n\nOutputs will be a JSON object with the following fields.\n\n");
    if (!rc)
        rc = dspy__py_json_dumps(&d, shape, 2, false);
    if (!rc) {
        dspy__adapter_strip(&d);
        rc = dspy__buf_add(b, d.ptr, d.len);
    }
    json_decref(shape);
    dspy__buf_release(&d);
    dspy__buf_release(&note);
    return rc;
}

static dspy_status json_reminder(struct dspy_buf *b, const dspy_signature *sig)
{
    dspy_status rc =
        dspy__buf_adds(b, "Respond with a JSON object in the following order of fields: ");
    for (size_t i = sig->ninputs; !rc && i < sig->nfields; i++) {
        rc = dspy__buf_addf(b, "%s`%s`", i > sig->ninputs ? ", then " : "", sig->fields[i].name);
        if (!rc)
            rc = dspy__adapter_type_suffix(b, &sig->fields[i]);
    }
    return rc ? rc : dspy__buf_addc(b, '.');
}

static dspy_status json_assistant(struct dspy_buf *b, const dspy_signature *sig,
                                  const json_t *outputs, const char *missing,
                                  struct dspy_error *err)
{
    json_t *o = json_object();
    dspy_status rc = o ? DSPY_OK : DSPY_ENOMEM;
    (void)err;
    for (size_t i = sig->ninputs; !rc && i < sig->nfields; i++) {
        json_t *v = json_object_get(outputs, sig->fields[i].name);
        if (json_object_set_new(o, sig->fields[i].name, v ? json_incref(v) : json_string(missing)))
            rc = DSPY_ENOMEM;
    }
    if (!rc)
        rc = dspy__py_json_dumps(b, o, 2, false);
    json_decref(o);
    return rc;
}

static long output_index(const dspy_signature *sig, const char *name)
{
    for (size_t i = sig->ninputs; i < sig->nfields; i++)
        if (!strcmp(sig->fields[i].name, name))
            return (long)i;
    return -1;
}

static dspy_status json_parse(const dspy_signature *sig, const char *text, size_t len,
                              json_t **outputs, struct dspy_error *err)
{
    bool oom = false;
    json_t *obj = dspy__json_repair(text, len, &oom), *fields = NULL, *present = NULL;
    const char *src = text;
    size_t srclen = len, bs, be;
    struct dspy_buf why;
    dspy_status rc;
    const char *key;
    json_t *value;
    int found = 0;

    dspy__buf_init(&why, 0);
    if (!oom && !json_is_object(obj) && (found = dspy__find_braces(text, len, &bs, &be)) > 0) {
        json_decref(obj);
        src = text + bs;
        srclen = be - bs;
        obj = dspy__json_repair(src, srclen, &oom);
    }
    if (oom || found < 0) {
        rc = dspy__err(err, DSPY_ENOMEM, "adapter: out of memory");
        goto out;
    }
    if (!json_is_object(obj)) {
        rc = dspy__adapter_parse_error(err, "JSONAdapter", sig, src, srclen,
                                       "LM response cannot be serialized to a JSON object.", NULL);
        goto out;
    }
    if (!(fields = json_object()) || !(present = json_object())) {
        rc = dspy__err(err, DSPY_ENOMEM, "adapter: out of memory");
        goto out;
    }
    json_object_foreach(obj, key, value) /* the output fields the reply has, in its order */
        if (output_index(sig, key) >= 0 && json_object_set(present, key, json_null())) {
            rc = dspy__err(err, DSPY_ENOMEM, "adapter: out of memory");
            goto out;
        }
    json_object_foreach(obj, key, value) {
        long i = output_index(sig, key);
        json_t *parsed = NULL;
        if (i < 0)
            continue; /* keys that are not output fields are dropped */
        dspy__buf_reset(&why);
        rc = dspy__adapter_parse_value(sig->fields[i].type, value, &parsed, &why);
        if (rc == DSPY_ENOMEM) {
            rc = dspy__err(err, rc, "adapter: out of memory");
            goto out;
        }
        if (rc) {
            /* DSPy 3.4 wraps the field's ValueError in an AdapterParseError (3.3 let it
             * escape as it was): the same text, with the fields the reply had. */
            char what[512];
            snprintf(what, sizeof(what), "Failed to parse field %s: %s", key,
                     why.ptr ? why.ptr : "invalid value");
            rc = dspy__adapter_parse_error(err, "JSONAdapter", sig, src, srclen, what, present);
            dspy__err_field(err, key);
            goto out;
        }
        if (json_object_set_new(fields, key, parsed)) {
            rc = dspy__err(err, DSPY_ENOMEM, "adapter: out of memory");
            goto out;
        }
    }
    rc = dspy__adapter_finish("JSONAdapter", sig, src, srclen, &fields, err);
    if (!rc) {
        *outputs = fields;
        fields = NULL;
    }
out:
    json_decref(obj);
    json_decref(fields);
    json_decref(present);
    dspy__buf_release(&why);
    return rc;
}

const struct dspy__adapter_ops dspy__json_ops = {
    "JSONAdapter", json_structure, json_reminder, json_assistant, json_parse,
};

/* Compatibility helper for tests/compat/test_format.py: reads JSONL cases on stdin and
 * prints, per case, one JSONL line with what dspyc's adapters render ("messages") or
 * parse ("outputs"), or {"error": ...}, for comparison with real DSPy.
 *
 * A case: {"signature": "q -> a", "instructions": optional, "descs": optional {name: desc},
 *          "module": "predict" | "cot", "adapter": "chat" | "json",
 *          "demos": [...], "inputs": {...}}            -> {"messages": [...]}
 *      or the same with "completion": "LM text"        -> {"outputs": {...}}
 *      or {"signature": ..., "type_names": true}       -> {"type_names": {field: name}} */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <dspyc/adapter.h>
#include <dspyc/signature.h>

static json_t *error_obj(const struct dspy_error *e)
{
    return json_pack("{s:s, s:s, s:I}", "error", e->message, "code", dspy_status_name(e->code),
                     "offset", (json_int_t)e->offset);
}

static json_t *run_case(const json_t *c)
{
    struct dspy_error err;
    dspy_signature *sig = NULL;
    json_t *res = NULL, *out = NULL;
    const char *text = json_string_value(json_object_get(c, "signature"));
    const char *instr = json_string_value(json_object_get(c, "instructions"));
    const char *module = json_string_value(json_object_get(c, "module"));
    const char *adapter = json_string_value(json_object_get(c, "adapter"));
    json_t *descs = json_object_get(c, "descs"), *completion = json_object_get(c, "completion");
    int kind = dspy_adapter_from_name(adapter ? adapter : "chat");

    dspy_error_clear(&err);
    if (!text || kind < 0)
        return json_pack("{s:s}", "error", "bad case: needs signature and a known adapter");
    if (dspy_signature_parse(text, instr, &sig, &err))
        return error_obj(&err);
    if (module && !strcmp(module, "cot") && dspy_signature_prepend_output(sig, "reasoning", NULL)) {
        res = json_pack("{s:s}", "error", "prepend reasoning failed");
        goto out;
    }
    if (json_is_object(descs)) {
        const char *k;
        json_t *v;
        json_object_foreach(descs, k, v) {
            if (dspy_signature_set_desc(sig, k, json_string_value(v))) {
                res = json_pack("{s:s}", "error", "set desc failed");
                goto out;
            }
        }
    }
    if (json_is_true(json_object_get(c, "type_names"))) {
        res = json_object();
        for (size_t i = 0; i < dspy_signature_nfields(sig); i++) {
            const struct dspy_field *f = dspy_signature_field(sig, i);
            char *name = dspy_type_name(f->type);
            json_object_set_new(res, f->name, json_string(name));
            dspy_free(name);
        }
        json_t *wrap = json_pack("{s:o, s:s}", "type_names", res, "instructions",
                                 dspy_signature_instructions(sig));
        res = wrap;
        goto out;
    }
    if (json_is_string(completion)) {
        if (dspy_adapter_parse((enum dspy_adapter_kind)kind, sig, json_string_value(completion),
                               json_string_length(completion), &out, &err))
            res = error_obj(&err);
        else
            res = json_pack("{s:o}", "outputs", out);
        goto out;
    }
    if (dspy_adapter_format((enum dspy_adapter_kind)kind, sig, json_object_get(c, "demos"),
                            json_object_get(c, "inputs"), &out, &err))
        res = error_obj(&err);
    else
        res = json_pack("{s:o}", "messages", out);
out:
    dspy_signature_free(sig);
    return res;
}

int main(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int status = 0;

    while ((n = getline(&line, &cap, stdin)) > 0) {
        json_error_t jerr;
        json_t *c, *res;
        if (n == 1 && line[0] == '\n')
            continue;
        c = json_loadb(line, (size_t)n, JSON_ALLOW_NUL, &jerr);
        res = c ? run_case(c) : json_pack("{s:s}", "error", jerr.text);
        char *s = res ? json_dumps(res, JSON_COMPACT) : NULL;
        if (!s) {
            puts("{\"error\": \"internal: could not render the result\"}");
            status = 1;
        } else {
            puts(s);
            free(s);
        }
        json_decref(res);
        json_decref(c);
        fflush(stdout);
    }
    free(line);
    return status;
}

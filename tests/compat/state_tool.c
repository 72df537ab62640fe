/* Compatibility helper for tests/compat/test_state.py (built as compat_state_tool): loads
 * DSPy save files into dspyc programs and writes dspyc's own, so the test can check both
 * directions against real DSPy.
 *
 *   compat_state_tool load SPEC STATE.json      apply a DSPy state; print what arrived
 *   compat_state_tool save SPEC OUT.json [STATE.json]
 *                                               write the program's state (after applying
 *                                               STATE.json when given)
 *
 * SPEC is a program file path or the program JSON itself (when it starts with '{').
 * `load` prints {"predictors": [{"state_name", "instructions", "demos", "fields":
 * [{"name", "prefix", "desc"}]}]}. Errors go to stderr as {"error", "code"}, exit 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/dspyc.h>

static int fail(const struct dspy_error *err)
{
    json_t *e = json_pack("{s:s, s:s, s:s, s:I}", "error", err->message, "code",
                          dspy_status_name(err->code), "field", err->field, "line",
                          (json_int_t)err->line);
    char *text = json_dumps(e, JSON_COMPACT);
    fprintf(stderr, "%s\n", text ? text : err->message);
    free(text);
    json_decref(e);
    return 1;
}

static dspy_status open_program(const char *spec, dspy_program **p, struct dspy_error *err)
{
    if (spec[0] != '{')
        return dspy_program_load(spec, p, err);
    json_error_t je;
    json_t *j = json_loads(spec, 0, &je);
    if (!j) {
        snprintf(err->message, sizeof(err->message), "SPEC is not JSON: %s", je.text);
        err->code = DSPY_EPARSE;
        return DSPY_EPARSE;
    }
    dspy_status rc = dspy_program_from_json(j, "SPEC", p, err);
    json_decref(j);
    return rc;
}

static json_t *describe(dspy_program *p)
{
    json_t *preds = json_array();
    for (size_t i = 0; i < dspy_program_count(p); i++) {
        dspy_module *m = dspy_program_module(p, i);
        const dspy_signature *sig = dspy_module_signature(m);
        json_t *fields = json_array();
        for (size_t f = 0; f < dspy_signature_nfields(sig); f++) {
            const struct dspy_field *fd = dspy_signature_field(sig, f);
            json_array_append_new(fields, json_pack("{s:s, s:s, s:s}", "name", fd->name, "prefix",
                                                    fd->prefix, "desc", fd->desc));
        }
        json_array_append_new(preds, json_pack("{s:s, s:s, s:O, s:o}", "state_name",
                                               dspy_program_state_name(p, i), "instructions",
                                               dspy_signature_instructions(sig), "demos",
                                               dspy_module_demos(m), "fields", fields));
    }
    return json_pack("{s:o}", "predictors", preds);
}

int main(int argc, char **argv)
{
    struct dspy_error err;
    dspy_program *p = NULL;
    int code = 1;
    dspy_error_clear(&err);
    if (argc < 4 || (strcmp(argv[1], "load") && strcmp(argv[1], "save")) ||
        (!strcmp(argv[1], "load") && argc != 4) || argc > 5) {
        fprintf(stderr, "usage: compat_state_tool load SPEC STATE.json\n"
                        "       compat_state_tool save SPEC OUT.json [STATE.json]\n");
        return 2;
    }
    if (open_program(argv[2], &p, &err))
        return fail(&err);
    if (!strcmp(argv[1], "load")) {
        if (dspy_program_load_state(p, argv[3], &err)) {
            code = fail(&err);
            goto out;
        }
        json_t *d = describe(p);
        char *text = json_dumps(d, JSON_INDENT(2));
        printf("%s\n", text);
        free(text);
        json_decref(d);
        code = 0;
        goto out;
    }
    if (argc == 5 && dspy_program_load_state(p, argv[4], &err)) {
        code = fail(&err);
        goto out;
    }
    if (dspy_program_save_state(p, argv[3], &err)) {
        code = fail(&err);
        goto out;
    }
    code = 0;
out:
    dspy_program_free(p);
    return code;
}

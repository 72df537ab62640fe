/* Helpers shared by `dspyc eval` and `dspyc optimize` (apps layer): programs, example files
 * with line numbers for errors, metrics. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "optutil.h"
#include "util.h"

bool examples_load(struct examples *ex, const char *path, bool nonempty)
{
    memset(ex, 0, sizeof(*ex));
    ex->path = path;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "dspyc: cannot open %s: %s\n", path, strerror(errno));
        return false;
    }
    struct line_reader r;
    const char *line;
    size_t len, cap = 0;
    bool too_long, ok = false;
    int got;
    ex->items = json_array();
    line_reader_init(&r, f, 16u << 20);
    while ((got = line_reader_next(&r, &line, &len, &too_long)) == 1) {
        if (too_long) {
            fprintf(stderr, "dspyc: %s:%ld: line longer than 16 MiB\n", path, r.lineno);
            goto out;
        }
        if (strspn(line, " \t\r") == len)
            continue;
        json_error_t je;
        json_t *v = json_loadb(line, len, 0, &je);
        if (!v || !json_is_object(v)) {
            fprintf(stderr, "dspyc: %s:%ld:%d: not an example: %s\n", path, r.lineno,
                    v ? 1 : je.column, v ? "expected a JSON object of fields" : je.text);
            json_decref(v);
            goto out;
        }
        size_t n = json_array_size(ex->items);
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            long *l = dspy_realloc(ex->lines, cap * sizeof(*l));
            if (!l)
                abort();
            ex->lines = l;
        }
        ex->lines[n] = r.lineno;
        json_array_append_new(ex->items, v);
    }
    if (got < 0) {
        fprintf(stderr, "dspyc: reading %s: %s\n", path, strerror(errno));
        goto out;
    }
    if (nonempty && !json_array_size(ex->items)) {
        fprintf(stderr, "dspyc: %s: no examples (the file is empty)\n", path);
        goto out;
    }
    ok = true;
out:
    line_reader_release(&r);
    fclose(f);
    if (!ok)
        examples_release(ex);
    return ok;
}

void examples_release(struct examples *ex)
{
    json_decref(ex->items);
    dspy_free(ex->lines);
    ex->items = NULL;
    ex->lines = NULL;
}

void examples_print_error(const char *cmd, const struct examples *ex, const struct dspy_error *err)
{
    long i = err->line - 1;
    const char *f = err->field;
    if (ex && i >= 0 && (size_t)i < json_array_size(ex->items))
        fprintf(stderr, "dspyc %s: %s:%ld: %s%s%s%s\n", cmd, ex->path, ex->lines[i],
                err->message, f[0] ? " (field '" : "", f, f[0] ? "')" : "");
    else
        fprintf(stderr, "dspyc %s: %s\n", cmd, err->message);
}

dspy_program *opt_program(const char *cmd, const char *path, const char *signature, int module,
                          const char *state_path)
{
    struct dspy_error err;
    dspy_program *p = NULL;
    dspy_error_clear(&err);
    if (path) {
        if (dspy_program_load(path, &p, &err)) {
            print_error("program", &err);
            return NULL;
        }
    } else {
        dspy_signature *sig = NULL;
        if (dspy_signature_parse(signature, NULL, &sig, &err)) {
            print_error("signature", &err);
            return NULL;
        }
        dspy_module *m = dspy_module_new((enum dspy_module_kind)module, sig, DSPY_ADAPTER_CHAT);
        dspy_signature_free(sig);
        if (!m || !(p = dspy_program_single(m))) {
            fprintf(stderr, "dspyc %s: out of memory\n", cmd);
            dspy_module_free(m);
            return NULL;
        }
    }
    if (state_path && dspy_program_load_state(p, state_path, &err)) {
        print_error("state", &err);
        dspy_program_free(p);
        return NULL;
    }
    return p;
}

dspy_metric *opt_metric(const char *cmd, const char *spec, dspy_lm *lm, dspy_program **judge)
{
    struct dspy_error err;
    dspy_metric *m = NULL;
    dspy_error_clear(&err);
    *judge = NULL;
    if (!strncmp(spec, "judge:", 6)) {
        if (dspy_program_load(spec + 6, judge, &err)) {
            print_error("judge program", &err);
            return NULL;
        }
        if (dspy_metric_judge(*judge, lm, &m, &err)) {
            fprintf(stderr, "dspyc %s: --metric %s: %s\n", cmd, spec, err.message);
            dspy_program_free(*judge);
            *judge = NULL;
            return NULL;
        }
        return m;
    }
    if (dspy_metric_parse(spec, &m, &err)) {
        fprintf(stderr, "dspyc %s: --metric: %s\n", cmd, err.message);
        return NULL;
    }
    return m;
}

/* Fuzz target for program files and DSPy saved state: the input is a program file, then
 * optionally a line "---" and a state to apply to it. Loads the program (with positions
 * for errors), applies the state, dumps the state back out in DSPy's layout, and lists the
 * program's inputs. Nothing may crash, hang or leak. */
#include <stdint.h>
#include <string.h>

#include <dspyc/dspyc.h>

#include "base/buf.h"
#include "base/jsonw.h"
#include "program/program_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char SEPARATOR[] = "\n---\n";

static const char *find_separator(const char *s, size_t n)
{
    size_t m = sizeof(SEPARATOR) - 1;
    for (size_t i = 0; n >= m && i <= n - m; i++)
        if (!memcmp(s + i, SEPARATOR, m))
            return s + i;
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *sep = find_separator(text, size);
    size_t spec_len = sep ? (size_t)(sep - text) : size;
    struct dspy__jsource spec = { "fuzz-program", text, spec_len };
    struct dspy_error err;
    dspy_program *p = NULL;
    if (dspy__program_from_text(&spec, &p, &err))
        return 0;
    if (sep) {
        const char *st = sep + sizeof(SEPARATOR) - 1;
        struct dspy__jsource state = { "fuzz-state", st, size - (size_t)(st - text) };
        json_t *js = NULL;
        if (!dspy__json_parse(&state, &js, &err)) {
            dspy__program_apply_state_src(p, js, &state, &err);
            json_decref(js);
        }
    }
    json_t *dump = dspy_program_dump_state(p);
    if (dump) {
        struct dspy_buf b;
        dspy__buf_init(&b, 0);
        dspy__json_write(&b, dump, DSPY__JSON_ORJSON, 0);
        dspy__buf_release(&b);
        json_decref(dump);
    }
    json_decref(dspy_program_inputs(p));
    dspy_program_free(p);
    return 0;
}

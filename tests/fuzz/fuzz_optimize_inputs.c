/* Fuzz target for what the optimizers read from outside: a proposer LM's instruction text
 * (DSPy's strip_prefix), and a metric spec scored over an example and a prediction given as
 * JSON. Input: instruction \0 metric spec \0 example JSON \0 prediction JSON. Never a crash,
 * leak or read past the input; the stripped text never grows. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/optimize.h>

#include "optimize/optimize_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *next_part(const char *p, const char *end)
{
    size_t n = strnlen(p, (size_t)(end - p));
    return p + n < end ? p + n + 1 : end;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0;
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *end = buf + size;
    char *inst = buf;
    const char *spec = next_part(inst, end), *ex = next_part(spec, end);
    const char *pred = next_part(ex, end);
    size_t before = strlen(inst);
    char *copy = strdup(inst);
    if (copy) {
        dspy__strip_prefix(copy);
        if (strlen(copy) > before)
            abort();
        free(copy);
    }
    dspy_metric *m = NULL;
    struct dspy_error err;
    if (spec < end && !dspy_metric_parse(spec, &m, &err)) {
        json_t *e = ex < end ? json_loads(ex, 0, NULL) : NULL;
        json_t *p = pred < end ? json_loads(pred, 0, NULL) : NULL;
        if (json_is_object(e)) {
            double s = -1;
            char *fb = NULL;
            if (!dspy_metric_score(m, e, json_is_object(p) ? p : NULL, NULL, &s, &fb, &err) &&
                !(s >= 0 && s <= 1))
                abort();
            dspy_free(fb);
        }
        json_decref(e);
        json_decref(p);
        dspy_metric_free(m);
    }
    free(buf);
    return 0;
}

/* Fuzz target for chat completion response bodies: the fast scanner (with its jansson
 * fallback) and the jansson reader alone must agree on every input, status and content,
 * and neither may crash or leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/lm.h>

#include "lm/lm_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dspy_lm_response a, b;
    const char *body = (const char *)data;
    dspy_status ra = dspy__lm_parse_response(body, size, &a, NULL);
    dspy_status rb = dspy__lm_parse_response_tree(body, size, &b, NULL);
    if (ra != rb || a.n != b.n || !same(a.model, b.model) ||
        memcmp(&a.usage, &b.usage, sizeof(a.usage)))
        abort();
    for (size_t i = 0; i < a.n; i++)
        if (strcmp(a.texts[i], b.texts[i]) || !same(a.finish_reasons[i], b.finish_reasons[i]))
            abort();
    dspy_lm_response_release(&a);
    dspy_lm_response_release(&b);
    return 0;
}

/* The Python bridge's stand-in for builds without libpython (python layer): every call
 * fails with DSPY_EUNSUPPORTED and says how to get a build that has it. */
#include <dspyc/python.h>

#include "base/status.h"

#define NO_PYTHON "built without Python support (install python3-dev and rebuild)"

bool dspy_python_available(void)
{
    return false;
}

dspy_python_bridge *dspy_python_bridge_new(const struct dspy_python_options *opts,
                                           struct dspy_error *err)
{
    (void)opts;
    dspy__err(err, DSPY_EUNSUPPORTED, NO_PYTHON);
    return NULL;
}

void dspy_python_bridge_free(dspy_python_bridge *b)
{
    (void)b;
}

dspy_status dspy_python_bridge_info(dspy_python_bridge *b, json_t **info, struct dspy_error *err)
{
    (void)b;
    if (info)
        *info = NULL;
    return dspy__err(err, DSPY_EUNSUPPORTED, NO_PYTHON);
}

dspy_status dspy_python_load(dspy_python_bridge *b, const char *target, dspy_python_callable **out,
                             struct dspy_error *err)
{
    (void)b;
    (void)target;
    if (out)
        *out = NULL;
    return dspy__err(err, DSPY_EUNSUPPORTED, NO_PYTHON);
}

void dspy_python_callable_free(dspy_python_callable *c)
{
    (void)c;
}

const char *dspy_python_callable_name(const dspy_python_callable *c)
{
    (void)c;
    return NULL;
}

dspy_status dspy_python_call(dspy_python_callable *c, const json_t *kwargs, json_t **result,
                             struct dspy_python_timing *t, struct dspy_error *err)
{
    (void)c;
    (void)kwargs;
    if (result)
        *result = NULL;
    if (t)
        *t = (struct dspy_python_timing){ 0 };
    return dspy__err(err, DSPY_EUNSUPPORTED, NO_PYTHON);
}

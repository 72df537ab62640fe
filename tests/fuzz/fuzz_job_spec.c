/* Fuzz target for job specs (the body of POST /v1/jobs): any bytes are either refused as
 * JSON, refused by dspy_job_spec_check with the bad key named, or accepted; never a crash,
 * leak or read past the input. */
#include <stdint.h>
#include <string.h>

#include <dspyc/jobs.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    json_t *spec = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!spec)
        return 0;
    struct dspy_error err;
    dspy_error_clear(&err);
    dspy_status rc = dspy_job_spec_check(spec, &err);
    if (rc && !err.message[0])
        __builtin_trap(); /* a refusal always says why */
    json_decref(spec);
    return 0;
}

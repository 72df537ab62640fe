/* Data folders found beside the running program (base layer): a build tree's binary
 * (repo/build/dspyc) finds repo/models/... without being told. */
#ifndef DSPY_BASE_PATH_H
#define DSPY_BASE_PATH_H

#include <stddef.h>

#include <dspyc/common.h>

/* The folder `opt` when set, else the value of environment variable `env`, else `rel`
 * under the folder above the running program's, into out[cap]. DSPY_ENOTFOUND when the
 * program's own path is unknown, DSPY_EINVAL when the path does not fit. Does not check
 * that the folder exists. */
dspy_status dspy__data_dir(const char *opt, const char *env, const char *rel, char *out, size_t cap,
                           struct dspy_error *err);

#endif

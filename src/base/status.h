/* Internal helpers for filling `struct dspy_error` (base layer). */
#ifndef DSPY_BASE_STATUS_H
#define DSPY_BASE_STATUS_H

#include <dspyc/common.h>

/* Set err (when not NULL) to `code` with a printf-style message; returns `code`, so
 * callers write `return dspy__err(err, DSPY_EINVAL, "...")`. Positions are reset to -1. */
dspy_status dspy__err(struct dspy_error *err, dspy_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Same, recording the byte offset (and, from `text`, the line and column) of the problem. */
dspy_status dspy__err_at(struct dspy_error *err, dspy_status code, const char *text, size_t offset,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Record the field or key, or the input file, involved. NULL err is a no-op. */
void dspy__err_field(struct dspy_error *err, const char *field);
void dspy__err_file(struct dspy_error *err, const char *file);
/* Prefix the existing message with "context: ". */
void dspy__err_prefix(struct dspy_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif

/* JSON files read strictly (base layer): duplicate keys refused, and a file that does not
 * parse named with its line, column and offset in the error. */
#ifndef DSPY_BASE_JSONFILE_H
#define DSPY_BASE_JSONFILE_H

#include <jansson.h>

#include <dspyc/common.h>

/* The document in `path` (caller owns), or NULL with err set to DSPY_EPARSE
 * ("path:line:column: why", file, line, column, offset). */
json_t *dspy__json_load_file(const char *path, struct dspy_error *err);

#endif

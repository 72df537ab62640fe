/* Secrets (API keys) read from the environment or a file (base layer): trimmed, refused
 * when they hold control characters (a CR or LF in a key would end an HTTP header line),
 * wiped when freed. Messages name where a secret came from, never the secret. */
#ifndef DSPY_BASE_SECRET_H
#define DSPY_BASE_SECRET_H

#include <dspyc/common.h>

/* The secret called `what` (e.g. "API key", for messages) from, in order: `value` when not
 * empty, else the variable `env` when named, set and not empty, else the first line of
 * `file` when named. *out is NULL when none of them is given (no secret wanted); it is an
 * error when a named variable is unset and no file is given, or the file has no secret on
 * its first line. Trimmed of surrounding white space. Free *out with dspy__secret_free. */
dspy_status dspy__secret_read(const char *what, const char *value, const char *env,
                              const char *file, char **out, struct dspy_error *err);
/* Wipe and free. NULL is a no-op. */
void dspy__secret_free(char *secret);

#endif

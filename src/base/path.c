/* Data folders beside the running program (base layer). */
#include "base/path.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/status.h"

dspy_status dspy__data_dir(const char *opt, const char *env, const char *rel, char *out, size_t cap,
                           struct dspy_error *err)
{
    const char *val = env ? getenv(env) : NULL;
    const char *dir = opt && *opt ? opt : val && *val ? val : NULL;
    if (dir) {
        if ((size_t)snprintf(out, cap, "%s", dir) >= cap)
            return dspy__err(err, DSPY_EINVAL, "folder path too long: %s", dir);
        return DSPY_OK;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return dspy__err(err, DSPY_ENOTFOUND,
                         "no folder given and the program's own path is unknown; set %s or "
                         "pass the folder",
                         env ? env : "it");
    exe[n] = '\0';
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = '\0';
    }
    if ((size_t)snprintf(out, cap, "%s/%s", exe, rel) >= cap)
        return dspy__err(err, DSPY_EINVAL, "folder path too long: %s", exe);
    return DSPY_OK;
}

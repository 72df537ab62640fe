/* Secrets from the environment or a file (base layer): see secret.h. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/secret.h"
#include "base/status.h"

#define SECRET_LINE_MAX 8192

static void wipe(char *s, size_t n)
{
    volatile char *p = s;
    while (n--)
        *p++ = '\0';
}

void dspy__secret_free(char *secret)
{
    if (!secret)
        return;
    wipe(secret, strlen(secret));
    dspy_free(secret);
}

/* A copy of s[0..n) without surrounding white space; *out NULL when nothing is left. */
static dspy_status trimmed(const char *s, size_t n, char **out, struct dspy_error *err)
{
    while (n && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    *out = NULL;
    if (n && !(*out = dspy_strndup(s, n)))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    return DSPY_OK;
}

static dspy_status from_file(const char *what, const char *path, char **out, struct dspy_error *err)
{
    char line[SECRET_LINE_MAX];
    FILE *f = fopen(path, "r");
    if (!f) {
        dspy__err(err, DSPY_EIO, "cannot open the %s file %s: %s", what, path, strerror(errno));
        dspy__err_file(err, path);
        return DSPY_EIO;
    }
    bool got = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    dspy_status rc = got ? trimmed(line, strcspn(line, "\r\n"), out, err) : DSPY_OK;
    wipe(line, sizeof(line));
    if (!rc && !*out) {
        rc = dspy__err(err, DSPY_EINVAL, "the %s file %s has no %s on its first line", what, path,
                       what);
        dspy__err_file(err, path);
    }
    return rc;
}

dspy_status dspy__secret_read(const char *what, const char *value, const char *env,
                              const char *file, char **out, struct dspy_error *err)
{
    const char *src = "the options", *v = NULL;
    dspy_status rc = DSPY_OK;
    *out = NULL;
    if (value && *value)
        rc = trimmed(value, strlen(value), out, err);
    else if (env && (v = getenv(env)) && *v)
        rc = trimmed(v, strlen(v), out, err), src = env;
    else if (file)
        rc = from_file(what, file, out, err), src = file;
    else if (env)
        return dspy__err(err, DSPY_EINVAL, "the variable %s, named for the %s, is not set", env,
                         what);
    if (rc)
        return rc;
    for (const unsigned char *p = (const unsigned char *)*out; p && *p; p++)
        if (*p < 0x20 || *p == 0x7f) {
            long at = (long)(p - (const unsigned char *)*out);
            unsigned byte = *p;
            dspy__secret_free(*out);
            *out = NULL;
            return dspy__err(err, DSPY_EINVAL,
                             "the %s (from %s) has a control character (byte 0x%02x at offset "
                             "%ld): refused, it would corrupt HTTP headers",
                             what, src, byte, at);
        }
    return DSPY_OK;
}

/* Bearer-token auth for the server (serve layer): the token file (one token a line, with
 * optional `namespace=NS` binding it to a cache namespace and `admin` for admin routes) and
 * the constant-time check of an Authorization header against it. Secrets never reach an
 * error message: errors name the file and line only. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/status.h"
#include "serve/serve_int.h"

#define TOKEN_LINE_MAX 4096
#define TOKENS_MAX 10000

static void wipe(char *s)
{
    volatile char *p = s;
    while (p && *p)
        *p++ = '\0';
}

void dspy__serve_auth_release(struct dspy__serve_auth *a)
{
    for (size_t i = 0; i < a->ntokens; i++) {
        wipe(a->tokens[i].secret);
        dspy_free(a->tokens[i].secret);
        dspy_free(a->tokens[i].ns);
    }
    dspy_free(a->tokens);
    a->tokens = NULL;
    a->ntokens = 0;
}

static dspy_status line_error(struct dspy_error *err, const char *path, long line, const char *what)
{
    dspy__err(err, DSPY_EPARSE, "%s:%ld: %s", path, line, what);
    dspy__err_file(err, path);
    if (err)
        err->line = line;
    return DSPY_EPARSE;
}

/* Split the next space-separated word off *p. */
static char *word(char **p)
{
    char *s = *p;
    while (*s && isspace((unsigned char)*s))
        s++;
    if (!*s)
        return NULL;
    char *e = s;
    while (*e && !isspace((unsigned char)*e))
        e++;
    if (*e)
        *e++ = '\0';
    *p = e;
    return s;
}

static dspy_status parse_line(struct dspy__serve_auth *a, char *text, const char *path, long line,
                              struct dspy_error *err)
{
    char *p = text, *w;
    struct dspy__serve_token t = { NULL, NULL, false };
    char *secret = word(&p);
    if (!secret || secret[0] == '#')
        return DSPY_OK;
    while ((w = word(&p))) {
        if (!strcmp(w, "admin")) {
            t.admin = true;
        } else if (!strncmp(w, "namespace=", 10) && w[10]) {
            if (strlen(w + 10) > DSPY_CACHE_NS_MAX)
                return line_error(err, path, line, "namespace is longer than 256 bytes");
            dspy_free(t.ns);
            if (!(t.ns = dspy_strdup(w + 10)))
                return dspy__err(err, DSPY_ENOMEM, "out of memory");
        } else {
            dspy_free(t.ns);
            return line_error(err, path, line,
                              "expected 'TOKEN [namespace=NS] [admin]' (unknown word after the "
                              "token)");
        }
    }
    if (a->ntokens == TOKENS_MAX) {
        dspy_free(t.ns);
        return line_error(err, path, line, "more than 10000 tokens");
    }
    struct dspy__serve_token *v = dspy_realloc(a->tokens, (a->ntokens + 1) * sizeof(*v));
    if (!v || !(t.secret = dspy_strdup(secret))) {
        if (v)
            a->tokens = v;
        dspy_free(t.ns);
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    }
    a->tokens = v;
    a->tokens[a->ntokens++] = t;
    return DSPY_OK;
}

dspy_status dspy__serve_auth_load(struct dspy__serve_auth *a, const char *path,
                                  struct dspy_error *err)
{
    char text[TOKEN_LINE_MAX];
    long line = 0;
    dspy_status rc = DSPY_OK;
    FILE *f = fopen(path, "r");
    if (!f) {
        dspy__err(err, DSPY_EIO, "cannot open the token file %s: %s", path, strerror(errno));
        dspy__err_file(err, path);
        return DSPY_EIO;
    }
    while (!rc && fgets(text, sizeof(text), f)) {
        line++;
        size_t n = strlen(text);
        if (n == sizeof(text) - 1 && text[n - 1] != '\n')
            rc = line_error(err, path, line, "line longer than 4095 bytes");
        else
            rc = parse_line(a, text, path, line, err);
    }
    wipe(text);
    fclose(f);
    if (!rc && !a->ntokens)
        rc = line_error(err, path, line, "no token in the file");
    if (rc)
        dspy__serve_auth_release(a);
    return rc;
}

/* Compare without an early exit on the first differing byte. */
static bool same_secret(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < la; i++)
        d |= (unsigned char)(a[i] ^ b[i < lb ? i : 0]);
    return !d;
}

const struct dspy__serve_token *dspy__serve_auth_check(const struct dspy__serve_auth *a,
                                                       const char *given)
{
    const struct dspy__serve_token *found = NULL;
    if (!given || !*given)
        return NULL;
    for (size_t i = 0; i < a->ntokens; i++)
        if (same_secret(a->tokens[i].secret, given) && !found)
            found = &a->tokens[i];
    return found;
}

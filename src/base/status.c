/* Status codes and error details (base layer). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <dspyc/common.h>

#include "base/status.h"

struct status_text {
    dspy_status code;
    const char *name;
    const char *text;
};

static const struct status_text status_texts[] = {
    { DSPY_OK, "ok", "success" },
    { DSPY_ENOMEM, "nomem", "out of memory" },
    { DSPY_EINVAL, "invalid", "invalid argument or input" },
    { DSPY_EPARSE, "parse", "parse error" },
    { DSPY_EIO, "io", "input/output error" },
    { DSPY_ETOOBIG, "too_big", "size limit exceeded" },
    { DSPY_EADAPTER, "adapter_parse", "LM output does not match the signature" },
    { DSPY_ENOTFOUND, "not_found", "not found" },
    { DSPY_EUNSUPPORTED, "unsupported", "not supported" },
    { DSPY_EBUSY, "busy", "queue full, try again later" },
    { DSPY_ECANCELED, "canceled", "canceled" },
    { DSPY_EUTF8, "utf8", "invalid UTF-8" },
    { DSPY_ECORRUPT, "corrupt", "a stored file is damaged" },
    { DSPY_ERESOURCE, "resource", "out of a system resource (open files)" },
    { DSPY_ELM_AUTH, "auth", "LM endpoint refused the credentials" },
    { DSPY_ELM_RATE_LIMIT, "rate_limit", "LM endpoint rate limit" },
    { DSPY_ELM_CONTEXT, "context_window", "prompt exceeds the model's context window" },
    { DSPY_ELM_BAD_REQUEST, "bad_request", "LM endpoint rejected the request" },
    { DSPY_ELM_SERVER, "server", "LM endpoint server error" },
    { DSPY_ELM_NETWORK, "network", "network error talking to the LM endpoint" },
    { DSPY_ELM_TIMEOUT, "timeout", "LM endpoint timed out" },
    { DSPY_ELM_BAD_RESPONSE, "bad_response", "LM endpoint sent a malformed response" },
};

static const struct status_text *lookup(dspy_status code)
{
    for (size_t i = 0; i < sizeof(status_texts) / sizeof(status_texts[0]); i++)
        if (status_texts[i].code == code)
            return &status_texts[i];
    return NULL;
}

const char *dspy_strerror(dspy_status code)
{
    const struct status_text *t = lookup(code);
    return t ? t->text : "unknown error";
}

const char *dspy_status_name(dspy_status code)
{
    const struct status_text *t = lookup(code);
    return t ? t->name : "unknown";
}

const char *dspy_version(void)
{
    return DSPY_VERSION_STRING;
}

void dspy_error_clear(struct dspy_error *err)
{
    if (!err)
        return;
    memset(err, 0, sizeof(*err));
    err->line = err->column = err->offset = -1;
}

__attribute__((format(printf, 3, 0))) static void
set_message(struct dspy_error *err, dspy_status code, const char *fmt, va_list ap)
{
    char file[sizeof(err->file)];
    /* Keep a file set by an outer caller before the inner error was raised. */
    memcpy(file, err->file, sizeof(file));
    dspy_error_clear(err);
    memcpy(err->file, file, sizeof(file));
    err->code = code;
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
}

dspy_status dspy__err(struct dspy_error *err, dspy_status code, const char *fmt, ...)
{
    if (!err)
        return code;
    va_list ap;
    va_start(ap, fmt);
    set_message(err, code, fmt, ap);
    va_end(ap);
    return code;
}

dspy_status dspy__err_at(struct dspy_error *err, dspy_status code, const char *text, size_t offset,
                         const char *fmt, ...)
{
    if (!err)
        return code;
    va_list ap;
    va_start(ap, fmt);
    set_message(err, code, fmt, ap);
    va_end(ap);
    err->offset = (long)offset;
    if (text) {
        long line = 1, col = 1;
        for (size_t i = 0; i < offset && text[i]; i++) {
            if (text[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        err->line = line;
        err->column = col;
    }
    return code;
}

void dspy__err_field(struct dspy_error *err, const char *field)
{
    if (err && field)
        snprintf(err->field, sizeof(err->field), "%s", field);
}

void dspy__err_file(struct dspy_error *err, const char *file)
{
    if (err && file)
        snprintf(err->file, sizeof(err->file), "%s", file);
}

void dspy__err_prefix(struct dspy_error *err, const char *fmt, ...)
{
    if (!err)
        return;
    char head[256], old[sizeof(err->message)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof(head), fmt, ap);
    va_end(ap);
    memcpy(old, err->message, sizeof(old));
    /* The message keeps as much of the old text as fits after the new context. */
    int room = (int)(sizeof(err->message) - strlen(head) - 3);
    snprintf(err->message, sizeof(err->message), "%s: %.*s", head, room > 0 ? room : 0, old);
}

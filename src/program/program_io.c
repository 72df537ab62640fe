/* Program input helpers (program layer): bounded file reads, JSON parsing with positions,
 * and error messages that name the file, line, column and JSON path of a bad key. jansson
 * keeps no positions for parsed values, so a small scanner finds a path in the text. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "base/status.h"
#include "program/program_int.h"

void dspy__jpath_key(struct dspy__jpath *p, const char *key)
{
    if (p->depth < DSPY__JPATH_MAX) {
        p->step[p->depth].key = key;
        p->step[p->depth].index = 0;
    }
    p->depth++;
}

void dspy__jpath_index(struct dspy__jpath *p, size_t index)
{
    if (p->depth < DSPY__JPATH_MAX) {
        p->step[p->depth].key = NULL;
        p->step[p->depth].index = index;
    }
    p->depth++;
}

void dspy__jpath_pop(struct dspy__jpath *p)
{
    if (p->depth > 0)
        p->depth--;
}

/* ---- locating a path in JSON text ------------------------------------------------------ */

static size_t skip_ws(const char *t, size_t n, size_t i)
{
    while (i < n && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r'))
        i++;
    return i;
}

/* `i` at an opening quote; returns the index after the closing one. */
static size_t skip_string(const char *t, size_t n, size_t i)
{
    for (i++; i < n && t[i] != '"'; i++)
        if (t[i] == '\\')
            i++;
    return i < n ? i + 1 : n;
}

static size_t skip_value(const char *t, size_t n, size_t i)
{
    if (i >= n)
        return n;
    if (t[i] == '"')
        return skip_string(t, n, i);
    if (t[i] != '{' && t[i] != '[') {
        while (i < n && !strchr(",}] \t\r\n", t[i]))
            i++;
        return i;
    }
    size_t depth = 0;
    while (i < n) {
        if (t[i] == '"') {
            i = skip_string(t, n, i);
            continue;
        }
        if (t[i] == '{' || t[i] == '[')
            depth++;
        else if ((t[i] == '}' || t[i] == ']') && --depth == 0)
            return i + 1;
        i++;
    }
    return n;
}

/* `i` at '{': find member `key`; returns the index of its key's quote, or n. */
static size_t find_member(const char *t, size_t n, size_t i, const char *key, size_t *value)
{
    size_t klen = strlen(key);
    for (i = skip_ws(t, n, i + 1); i < n && t[i] == '"';) {
        size_t start = i, end = skip_string(t, n, i);
        bool match = end - start == klen + 2 && !memcmp(t + start + 1, key, klen);
        i = skip_ws(t, n, end);
        if (i >= n || t[i] != ':')
            return n;
        i = skip_ws(t, n, i + 1);
        if (match) {
            *value = i;
            return start;
        }
        i = skip_ws(t, n, skip_value(t, n, i));
        if (i >= n || t[i] != ',')
            return n;
        i = skip_ws(t, n, i + 1);
    }
    return n;
}

/* `i` at '[': returns the index where element `index` starts, or n. */
static size_t find_element(const char *t, size_t n, size_t i, size_t index)
{
    i = skip_ws(t, n, i + 1);
    for (size_t k = 0; k < index && i < n; k++) {
        i = skip_ws(t, n, skip_value(t, n, i));
        if (i >= n || t[i] != ',')
            return n;
        i = skip_ws(t, n, i + 1);
    }
    return i < n && t[i] != ']' ? i : n;
}

long dspy__json_locate(const char *text, size_t len, const struct dspy__jpath *path)
{
    size_t i = skip_ws(text, len, 0), at = i;
    int depth = path->depth < DSPY__JPATH_MAX ? path->depth : DSPY__JPATH_MAX;
    for (int s = 0; s < depth && i < len; s++) {
        if (path->step[s].key) {
            if (text[i] != '{')
                return -1;
            size_t value = len;
            at = find_member(text, len, i, path->step[s].key, &value);
            i = value;
        } else {
            if (text[i] != '[')
                return -1;
            at = i = find_element(text, len, i, path->step[s].index);
        }
        if (at >= len)
            return -1;
    }
    return at < len ? (long)at : -1;
}

/* ---- errors ------------------------------------------------------------------------------ */

static bool is_identifier(const char *s)
{
    if (!*s || (*s >= '0' && *s <= '9'))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return false;
    return true;
}

static void path_text(const struct dspy__jpath *path, char *out, size_t cap)
{
    size_t len = 0;
    int depth = path->depth < DSPY__JPATH_MAX ? path->depth : DSPY__JPATH_MAX;
    out[0] = '\0';
    for (int s = 0; s < depth && len < cap; s++) {
        const char *key = path->step[s].key;
        int w;
        if (!key)
            w = snprintf(out + len, cap - len, "[%zu]", path->step[s].index);
        else if (is_identifier(key))
            w = snprintf(out + len, cap - len, "%s%s", len ? "." : "", key);
        else
            w = snprintf(out + len, cap - len, "%s\"%s\"", len ? "." : "", key);
        if (w < 0)
            break;
        len += (size_t)w;
    }
}

dspy_status dspy__jpath_err(struct dspy_error *err, dspy_status code,
                            const struct dspy__jsource *src, const struct dspy__jpath *path,
                            const char *fmt, ...)
{
    char msg[384], where[160], at[300];
    long offset = -1;
    if (!err)
        return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    path_text(path, where, sizeof(where));
    if (src && src->text) {
        struct dspy__jpath full = *path;
        if (path->at_key)
            dspy__jpath_key(&full, path->at_key);
        offset = dspy__json_locate(src->text, src->len, &full);
    }
    if (offset >= 0)
        dspy__err_at(err, code, src->text, (size_t)offset, "%s", "");
    else
        dspy__err(err, code, "%s", "");
    if (offset >= 0)
        snprintf(at, sizeof(at), "%s:%ld:%ld: ", src->origin ? src->origin : "<input>", err->line,
                 err->column);
    else if (src && src->origin)
        snprintf(at, sizeof(at), "%s: ", src->origin);
    else
        at[0] = '\0';
    /* Each part is capped so that together they fit; err->file, line and field keep the
     * facts a long origin or path would push out. */
    snprintf(err->message, sizeof(err->message), "%.120s%.100s%s%.280s", at, where,
             where[0] ? ": " : "", msg);
    if (src && src->origin)
        dspy__err_file(err, src->origin);
    if (path->at_key) {
        dspy__err_field(err, path->at_key);
        return code;
    }
    for (int s = (path->depth < DSPY__JPATH_MAX ? path->depth : DSPY__JPATH_MAX) - 1; s >= 0; s--)
        if (path->step[s].key) {
            dspy__err_field(err, path->step[s].key);
            break;
        }
    return code;
}

/* ---- files and parsing -------------------------------------------------------------------- */

dspy_status dspy__read_file(const char *path, size_t max, char **text, size_t *len,
                            struct dspy_error *err)
{
    struct dspy_buf b;
    char chunk[16384];
    dspy_status rc = DSPY_OK;
    FILE *f = fopen(path, "rb");
    if (!f) {
        dspy__err(err, DSPY_EIO, "%s: cannot open: %s", path, strerror(errno));
        dspy__err_file(err, path);
        return DSPY_EIO;
    }
    dspy__buf_init(&b, max);
    size_t got;
    while (!rc && (got = fread(chunk, 1, sizeof(chunk), f)) > 0)
        rc = dspy__buf_add(&b, chunk, got);
    if (!rc && ferror(f))
        rc = DSPY_EIO;
    fclose(f);
    if (!rc && !(*text = dspy__buf_detach(&b, len)))
        rc = DSPY_ENOMEM;
    if (rc) {
        dspy__buf_release(&b);
        dspy__err(err, rc, "%s: %s", path,
                  rc == DSPY_ETOOBIG ? "file is too large" : dspy_strerror(rc));
        dspy__err_file(err, path);
    }
    return rc;
}

dspy_status dspy__json_parse(const struct dspy__jsource *src, json_t **out, struct dspy_error *err)
{
    json_error_t je;
    *out = json_loadb(src->text, src->len, JSON_REJECT_DUPLICATES, &je);
    if (*out)
        return DSPY_OK;
    dspy__err(err, DSPY_EPARSE, "%s:%d:%d: invalid JSON: %s", src->origin ? src->origin : "<input>",
              je.line, je.column, je.text);
    if (err) {
        err->line = je.line;
        err->column = je.column;
        err->offset = je.position;
        dspy__err_file(err, src->origin);
    }
    return DSPY_EPARSE;
}

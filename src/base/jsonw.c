/* JSON writing without a jansson dump (base layer): compact and orjson-indented output of
 * json_t values, numbers through the one float formatter (fmtfloat.c). */
#include <stdint.h>
#include <string.h>

#include "base/fmtfloat.h"
#include "base/jsonw.h"

static dspy_status add_indent(struct dspy_buf *b, int depth)
{
    dspy_status rc = dspy__buf_addc(b, '\n');
    for (int i = 0; !rc && i < depth; i++)
        rc = dspy__buf_add(b, "  ", 2);
    return rc;
}

static dspy_status write_value(struct dspy_buf *b, const json_t *v, bool pretty, int depth);

static dspy_status write_object(struct dspy_buf *b, const json_t *v, bool pretty, int depth)
{
    const char *key;
    json_t *item;
    dspy_status rc = dspy__buf_addc(b, '{');
    bool first = true;
    /* json_object_foreach wants a non-const object; iteration does not modify it. */
    json_t *obj = (json_t *)(uintptr_t)v;
    json_object_foreach(obj, key, item) {
        if (!rc && !first)
            rc = dspy__buf_addc(b, ',');
        if (!rc && pretty)
            rc = add_indent(b, depth + 1);
        if (!rc)
            rc = dspy__buf_add_json_str(b, key, strlen(key));
        if (!rc)
            rc = pretty ? dspy__buf_add(b, ": ", 2) : dspy__buf_addc(b, ':');
        if (!rc)
            rc = write_value(b, item, pretty, depth + 1);
        first = false;
        if (rc)
            return rc;
    }
    if (!rc && pretty && !first)
        rc = add_indent(b, depth);
    return rc ? rc : dspy__buf_addc(b, '}');
}

static dspy_status write_array(struct dspy_buf *b, const json_t *v, bool pretty, int depth)
{
    dspy_status rc = dspy__buf_addc(b, '[');
    size_t n = json_array_size(v);
    for (size_t i = 0; !rc && i < n; i++) {
        if (i)
            rc = dspy__buf_addc(b, ',');
        if (!rc && pretty)
            rc = add_indent(b, depth + 1);
        if (!rc)
            rc = write_value(b, json_array_get(v, i), pretty, depth + 1);
    }
    if (!rc && pretty && n)
        rc = add_indent(b, depth);
    return rc ? rc : dspy__buf_addc(b, ']');
}

static dspy_status write_value(struct dspy_buf *b, const json_t *v, bool pretty, int depth)
{
    char num[DSPY__FLOAT_MAX];
    if (depth > 512)
        return DSPY_ETOOBIG; /* jansson's own parse depth limit is lower; be safe anyway */
    switch (json_typeof(v)) {
    case JSON_OBJECT: return write_object(b, v, pretty, depth);
    case JSON_ARRAY: return write_array(b, v, pretty, depth);
    case JSON_STRING: return dspy__buf_add_json_str(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER: return dspy__buf_addf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    case JSON_REAL: {
        /* request bodies as Python's json.dumps writes them, state files as orjson */
        size_t n = dspy__float_fmt(num, json_real_value(v),
                                   pretty ? DSPY__FLOAT_ORJSON : DSPY__FLOAT_PYTHON);
        return dspy__buf_add(b, num, n);
    }
    case JSON_TRUE: return dspy__buf_add(b, "true", 4);
    case JSON_FALSE: return dspy__buf_add(b, "false", 5);
    case JSON_NULL: return dspy__buf_add(b, "null", 4);
    }
    return DSPY_EINVAL;
}

dspy_status dspy__json_write(struct dspy_buf *b, const json_t *v, enum dspy__json_style style,
                             int depth)
{
    if (!v)
        return DSPY_EINVAL;
    return write_value(b, v, style == DSPY__JSON_ORJSON, depth);
}

/* Adapters (program layer): the parts of DSPy's Adapter and ChatAdapter that both the Chat
 * and JSON formats use (field descriptions, type notes and schemas, value formatting,
 * demos, the task description, parse errors) and the public entry points. */
#include <stdlib.h>
#include <string.h>

#include "base/pyfmt.h"
#include "base/status.h"
#include "program/adapter_int.h"

static const struct dspy__adapter_ops *ops_of(enum dspy_adapter_kind kind)
{
    return kind == DSPY_ADAPTER_JSON ? &dspy__json_ops : &dspy__chat_ops;
}

const char *dspy_adapter_name(enum dspy_adapter_kind kind)
{
    return kind == DSPY_ADAPTER_JSON ? "json" : "chat";
}

int dspy_adapter_from_name(const char *name)
{
    if (!name)
        return -1;
    if (!strcmp(name, "chat") || !strcmp(name, "ChatAdapter"))
        return DSPY_ADAPTER_CHAT;
    if (!strcmp(name, "json") || !strcmp(name, "JSONAdapter"))
        return DSPY_ADAPTER_JSON;
    return -1;
}

static bool valid_kind(enum dspy_adapter_kind kind)
{
    return kind == DSPY_ADAPTER_CHAT || kind == DSPY_ADAPTER_JSON;
}

static dspy_status nomem(struct dspy_error *err, dspy_status rc)
{
    if (rc == DSPY_ENOMEM)
        return dspy__err(err, rc, "adapter: out of memory");
    if (rc == DSPY_ETOOBIG)
        return dspy__err(err, rc, "adapter: rendered text exceeds its size limit");
    return rc;
}

void dspy__adapter_strip(struct dspy_buf *b)
{
    size_t a = 0, z = b->len;
    if (!b->ptr)
        return;
    dspy__py_strip(b->ptr, &a, &z);
    memmove(b->ptr, b->ptr + a, z - a);
    b->len = z - a;
    b->ptr[b->len] = '\0';
}

/* ---- values ---- */

/* _format_blob for one list item given to a str field. */
static dspy_status format_blob(struct dspy_buf *b, const struct dspy_field *f, const json_t *v,
                               struct dspy_error *err)
{
    static const char *const marks[] = { "\n", "\xC2\xAB", "\xC2\xBB" }; /* \n « » */
    dspy_status rc;
    bool special = false;

    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        for (size_t i = 0; i < n && !special; i++)
            special = s[i] == '\n' ||
                      ((unsigned char)s[i] == 0xC2 && i + 1 < n &&
                       ((unsigned char)s[i + 1] == 0xAB || (unsigned char)s[i + 1] == 0xBB));
        if (!special) {
            if ((rc = dspy__buf_adds(b, "\xC2\xAB")) || (rc = dspy__buf_add(b, s, n)))
                return rc;
            return dspy__buf_adds(b, "\xC2\xBB");
        }
        if ((rc = dspy__buf_adds(b, "\xC2\xAB\xC2\xAB\xC2\xAB\n    ")))
            return rc;
        for (size_t i = 0; i < n; i++)
            if ((rc = s[i] == '\n' ? dspy__buf_adds(b, "\n    ") : dspy__buf_addc(b, s[i])))
                return rc;
        return dspy__buf_adds(b, "\n\xC2\xBB\xC2\xBB\xC2\xBB");
    }
    if (json_is_array(v) || json_is_object(v)) {
        /* `"\n" in item` tests list elements or dict keys; a hit leads DSPy to call
         * .replace() on the container, which fails. */
        size_t i;
        json_t *item;
        const char *key;
        for (size_t m = 0; m < 3 && !special; m++) {
            if (json_is_array(v)) {
                json_array_foreach(v, i, item)
                    special = special ||
                              (json_is_string(item) &&
                               json_string_length(item) == strlen(marks[m]) &&
                               !memcmp(json_string_value(item), marks[m], strlen(marks[m])));
            } else {
                json_object_foreach((json_t *)v, key, item)
                    special = special || !strcmp(key, marks[m]);
            }
        }
        if (special) {
            dspy__err_field(err, f->name);
            return dspy__err(err, DSPY_EINVAL,
                             "field `%s`: '%s' object has no attribute 'replace' (DSPy formats "
                             "a list given to a str field as text items)",
                             f->name, json_is_array(v) ? "list" : "dict");
        }
        if ((rc = dspy__buf_adds(b, "\xC2\xAB")) || (rc = dspy__py_repr(b, v)))
            return rc;
        return dspy__buf_adds(b, "\xC2\xBB");
    }
    const char *pytype = json_is_integer(v) ? "int"
                         : json_is_real(v)  ? "float"
                         : json_is_null(v)  ? "NoneType"
                                            : "bool";
    dspy__err(err, DSPY_EINVAL,
              "field `%s`: argument of type '%s' is not iterable (DSPy formats a list given "
              "to a str field as text items)",
              f->name, pytype);
    dspy__err_field(err, f->name);
    return DSPY_EINVAL;
}

dspy_status dspy__adapter_format_value(struct dspy_buf *b, const struct dspy_field *f,
                                       const json_t *value, struct dspy_error *err)
{
    dspy_status rc = DSPY_OK;
    if (json_is_array(value) && f->type->kind == DSPY_TYPE_STR) {
        size_t n = json_array_size(value);
        if (n == 0)
            return dspy__buf_adds(b, "N/A");
        if (n == 1)
            return format_blob(b, f, json_array_get(value, 0), err);
        for (size_t i = 0; !rc && i < n; i++) {
            rc = dspy__buf_addf(b, "%s[%zu] ", i ? "\n" : "", i + 1);
            if (!rc)
                rc = format_blob(b, f, json_array_get(value, i), err);
        }
        return rc;
    }
    if (json_is_array(value) || json_is_object(value))
        return dspy__py_json_dumps(b, value, -1, false);
    return dspy__py_str(b, value);
}

/* ---- types in prompts ---- */

static json_t *literal_value(const struct dspy_type *t, size_t i)
{
    const char *s = t->literals[i];
    if (t->literal_is_str[i])
        return json_string(s);
    if (!strcmp(s, "True"))
        return json_true();
    if (!strcmp(s, "False"))
        return json_false();
    if (!strcmp(s, "None"))
        return json_null();
    if (strpbrk(s, ".eEn"))
        return json_real(strtod(s, NULL));
    return json_integer(strtoll(s, NULL, 10));
}

/* The Python type of choice i: 's'tr, 'b'ool, 'n'one, 'f'loat or 'i'nt. */
static char literal_pytype(const struct dspy_type *t, size_t i)
{
    const char *s = t->literals[i];
    if (t->literal_is_str[i])
        return 's';
    if (!strcmp(s, "True") || !strcmp(s, "False"))
        return 'b';
    if (!strcmp(s, "None"))
        return 'n';
    return strpbrk(s, ".eEn") ? 'f' : 'i';
}

static json_t *literal_schema(const struct dspy_type *t, bool with_type)
{
    static const char *const names[] = { "string", "boolean", "null", "number", "integer" };
    json_t *o = json_object(), *vals = json_array();
    bool same = true;
    if (!o || !vals)
        goto fail;
    for (size_t i = 0; i < t->nliterals; i++) {
        same = same && literal_pytype(t, i) == literal_pytype(t, 0);
        if (json_array_append_new(vals, literal_value(t, i)))
            goto fail;
    }
    if (same && with_type) {
        const char *k = strchr("sbnfi", literal_pytype(t, 0));
        if (json_object_set_new(o, "type", json_string(names[k - "sbnfi"])))
            goto fail;
    }
    if (t->nliterals == 1) {
        json_t *only = json_incref(json_array_get(vals, 0));
        json_decref(vals);
        vals = NULL;
        if (json_object_set_new(o, "const", only))
            goto fail;
    } else if (json_object_set_new(o, "enum", vals)) {
        vals = NULL;
        goto fail;
    }
    return o;
fail:
    json_decref(vals);
    json_decref(o);
    return NULL;
}

static bool all_str_literal(const struct dspy_type *t)
{
    if (t->kind != DSPY_TYPE_LITERAL)
        return false;
    for (size_t i = 0; i < t->nliterals; i++)
        if (!t->literal_is_str[i])
            return false;
    return true;
}

/* Set key to a new value; NULL value or failure fails. */
static bool put(json_t *o, const char *key, json_t *value)
{
    return value && json_object_set_new(o, key, value) == 0;
}

json_t *dspy__adapter_type_schema(const struct dspy_type *t)
{
    json_t *o, *a;
    switch (t->kind) {
    case DSPY_TYPE_STR: return json_pack("{s:s}", "type", "string");
    case DSPY_TYPE_INT: return json_pack("{s:s}", "type", "integer");
    case DSPY_TYPE_FLOAT: return json_pack("{s:s}", "type", "number");
    case DSPY_TYPE_BOOL: return json_pack("{s:s}", "type", "boolean");
    case DSPY_TYPE_NONE: return json_pack("{s:s}", "type", "null");
    case DSPY_TYPE_ANY: return json_object();
    case DSPY_TYPE_LITERAL: return literal_schema(t, true);
    default: break;
    }
    if (!(o = json_object()))
        return NULL;
    if (t->kind == DSPY_TYPE_UNION) {
        bool nullable = false;
        if (!(a = json_array()) || json_object_set_new(o, "anyOf", a))
            goto fail;
        for (size_t i = 0; i < t->nargs; i++) {
            if (t->args[i]->kind == DSPY_TYPE_NONE)
                nullable = true;
            else if (json_array_append_new(a, dspy__adapter_type_schema(t->args[i])))
                goto fail;
        }
        if (nullable && json_array_append_new(a, json_pack("{s:s}", "type", "null")))
            goto fail;
        return o;
    }
    if (t->kind == DSPY_TYPE_DICT) {
        bool open = !t->nargs || t->args[1]->kind == DSPY_TYPE_ANY;
        if (!put(o, "type", json_string("object")) ||
            !put(o, "additionalProperties",
                 open ? json_true() : dspy__adapter_type_schema(t->args[1])))
            goto fail;
        if (t->nargs && all_str_literal(t->args[0]) &&
            !put(o, "propertyNames", literal_schema(t->args[0], false)))
            goto fail;
        return o;
    }
    /* list and tuple */
    if (!put(o, "type", json_string("array")))
        goto fail;
    if (t->kind == DSPY_TYPE_TUPLE && t->nargs && !t->variadic) {
        if (!put(o, "maxItems", json_integer((json_int_t)t->nargs)) ||
            !put(o, "minItems", json_integer((json_int_t)t->nargs)))
            goto fail;
        if (!(a = json_array()) || json_object_set_new(o, "prefixItems", a))
            goto fail;
        for (size_t i = 0; i < t->nargs; i++)
            if (json_array_append_new(a, dspy__adapter_type_schema(t->args[i])))
                goto fail;
        return o;
    }
    if (!put(o, "items", t->nargs ? dspy__adapter_type_schema(t->args[0]) : json_object()))
        goto fail;
    return o;
fail:
    json_decref(o);
    return NULL;
}

dspy_status dspy__adapter_field_note(struct dspy_buf *b, const struct dspy_field *f)
{
    const struct dspy_type *t = f->type;
    dspy_status rc = dspy__buf_addf(b, "{%s}", f->name);
    if (rc || f->role == DSPY_FIELD_INPUT || t->kind == DSPY_TYPE_STR)
        return rc;
    if ((rc = dspy__buf_adds(b, "        # note: the value you produce ")))
        return rc;
    switch (t->kind) {
    case DSPY_TYPE_BOOL: return dspy__buf_adds(b, "must be True or False");
    case DSPY_TYPE_INT:
    case DSPY_TYPE_FLOAT:
        return dspy__buf_addf(b, "must be a single %s value",
                              t->kind == DSPY_TYPE_INT ? "int" : "float");
    case DSPY_TYPE_LITERAL:
        rc = dspy__buf_adds(b, "must exactly match (no extra characters) one of: ");
        for (size_t i = 0; !rc && i < t->nliterals; i++)
            rc = dspy__buf_addf(b, "%s%s", i ? "; " : "", t->literals[i]);
        return rc;
    default: {
        json_t *schema = dspy__adapter_type_schema(t);
        if (!schema)
            return DSPY_ENOMEM;
        rc = dspy__buf_adds(b, "must adhere to the JSON schema: ");
        if (!rc)
            rc = dspy__py_json_dumps(b, schema, -1, true);
        json_decref(schema);
        return rc;
    }
    }
}

dspy_status dspy__adapter_type_suffix(struct dspy_buf *b, const struct dspy_field *f)
{
    dspy_status rc;
    if (f->type->kind == DSPY_TYPE_STR)
        return DSPY_OK;
    if ((rc = dspy__buf_adds(b, " (must be formatted as a valid Python ")))
        return rc;
    if ((rc = dspy__type_add_name(b, f->type)))
        return rc;
    return dspy__buf_addc(b, ')');
}

/* ---- system message ---- */

static dspy_status describe_fields(struct dspy_buf *b, const dspy_signature *sig, size_t from,
                                   size_t to)
{
    struct dspy_buf d;
    dspy_status rc = DSPY_OK;
    dspy__buf_init(&d, b->max);
    for (size_t i = from; !rc && i < to; i++) {
        const struct dspy_field *f = &sig->fields[i];
        const char *desc = f->desc;
        size_t n = strlen(f->name);
        /* The "${name}" placeholder means "no description". */
        if (strlen(desc) == n + 3 && !strncmp(desc, "${", 2) && !strncmp(desc + 2, f->name, n) &&
            desc[n + 2] == '}')
            desc = "";
        rc = dspy__buf_addf(&d, "%s%zu. `%s` (", i > from ? "\n" : "", i - from + 1, f->name);
        if (!rc)
            rc = dspy__type_add_name(&d, f->type);
        if (!rc)
            rc = dspy__buf_addf(&d, "): %s", desc);
    }
    if (!rc && d.ptr) {
        dspy__adapter_strip(&d);
        rc = dspy__buf_add(b, d.ptr, d.len);
    }
    dspy__buf_release(&d);
    return rc;
}

/* textwrap.dedent: blank out lines of only spaces and tabs, then remove the longest
 * common leading run of spaces and tabs. */
static dspy_status dedent(struct dspy_buf *out, const char *s)
{
    size_t len = strlen(s), margin_len = 0, pos = 0;
    const char *margin = NULL;
    dspy_status rc = dspy__buf_reserve(out, len);

    for (pos = 0; pos <= len;) {
        const char *line = s + pos, *nl = memchr(line, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - line) : len - pos, ind = strspn(line, " \t");
        if (ind > ll)
            ind = ll;
        if (ind < ll) {
            if (!margin) {
                margin = line;
                margin_len = ind;
            } else {
                size_t k = 0;
                while (k < margin_len && k < ind && margin[k] == line[k])
                    k++;
                margin_len = k;
            }
        }
        pos += ll + 1;
    }
    for (pos = 0; !rc && pos <= len;) {
        const char *line = s + pos, *nl = memchr(line, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - line) : len - pos, skip = 0;
        if (strspn(line, " \t") >= ll)
            skip = ll; /* whitespace-only line */
        else if (margin_len && !memcmp(line, margin, margin_len))
            skip = margin_len;
        rc = dspy__buf_add(out, line + skip, ll - skip);
        if (!rc && nl)
            rc = dspy__buf_addc(out, '\n');
        pos += ll + 1;
    }
    return rc;
}

static dspy_status task_description(struct dspy_buf *b, const dspy_signature *sig)
{
    struct dspy_buf d;
    size_t pos = 0, ls, le;
    dspy_status rc;

    dspy__buf_init(&d, b->max);
    rc = dspy__buf_adds(b, "In adhering to this structure, your objective is: ");
    if (!rc)
        rc = dedent(&d, sig->instructions);
    while (!rc && d.ptr && dspy__py_next_line(d.ptr, d.len, &pos, &ls, &le)) {
        rc = dspy__buf_adds(b, "\n        ");
        if (!rc)
            rc = dspy__buf_add(b, d.ptr + ls, le - ls);
    }
    dspy__buf_release(&d);
    return rc;
}

dspy_status dspy__adapter_render_system(enum dspy_adapter_kind kind, const dspy_signature *sig,
                                        struct dspy_buf *out, struct dspy_error *err)
{
    size_t ni = sig->ninputs;
    dspy_status rc = dspy__buf_adds(out, "Your input fields are:\n");
    if (!rc)
        rc = describe_fields(out, sig, 0, ni);
    if (!rc)
        rc = dspy__buf_adds(out, "\nYour output fields are:\n");
    if (!rc)
        rc = describe_fields(out, sig, ni, sig->nfields);
    if (!rc)
        rc = dspy__buf_addc(out, '\n');
    if (!rc)
        rc = ops_of(kind)->structure(out, sig, err);
    if (!rc)
        rc = dspy__buf_addc(out, '\n');
    if (!rc)
        rc = task_description(out, sig);
    return nomem(err, rc);
}

/* ---- user and demo messages ---- */

dspy_status dspy__adapter_field_blocks(struct dspy_buf *b, const dspy_signature *sig, size_t from,
                                       size_t to, const json_t *values, const char *missing,
                                       struct dspy_error *err)
{
    struct dspy_buf d;
    dspy_status rc = DSPY_OK;
    bool first = true;

    dspy__buf_init(&d, b->max);
    for (size_t i = from; !rc && i < to; i++) {
        const struct dspy_field *f = &sig->fields[i];
        const json_t *v = values ? json_object_get(values, f->name) : NULL;
        if (values && !v && !missing)
            continue;
        rc = dspy__buf_addf(&d, "%s[[ ## %s ## ]]\n", first ? "" : "\n\n", f->name);
        first = false;
        if (rc)
            break;
        if (!values)
            rc = dspy__adapter_field_note(&d, f);
        else if (!v)
            rc = dspy__buf_adds(&d, missing);
        else
            rc = dspy__adapter_format_value(&d, f, v, err);
    }
    if (!rc && d.ptr) {
        dspy__adapter_strip(&d);
        rc = dspy__buf_add(b, d.ptr, d.len);
    }
    dspy__buf_release(&d);
    return rc;
}

/* format_user_message_content */
static dspy_status user_content(enum dspy_adapter_kind kind, const dspy_signature *sig,
                                const json_t *values, const char *prefix, bool main_request,
                                const struct dspy_buf *reminder, struct dspy_buf *b,
                                struct dspy_error *err)
{
    dspy_status rc = dspy__buf_adds(b, prefix);
    for (size_t i = 0; !rc && i < sig->ninputs; i++) {
        const struct dspy_field *f = &sig->fields[i];
        const json_t *v = json_object_get(values, f->name);
        if (!v)
            continue;
        /* Plain appends, not printf: this runs on every call. */
        if (!(rc = dspy__buf_adds(b, "\n\n[[ ## ")) && !(rc = dspy__buf_adds(b, f->name)) &&
            !(rc = dspy__buf_adds(b, " ## ]]\n")))
            rc = dspy__adapter_format_value(b, f, v, err);
    }
    if (!rc && main_request)
        rc = dspy__buf_adds(b, "\n\n");
    if (!rc && main_request)
        rc = reminder ? dspy__buf_add(b, reminder->ptr, reminder->len)
                      : ops_of(kind)->reminder(b, sig);
    if (!rc)
        rc = dspy__buf_adds(b, "\n\n");
    if (!rc)
        dspy__adapter_strip(b);
    return rc;
}

dspy_status dspy__adapter_render_user(enum dspy_adapter_kind kind, const dspy_signature *sig,
                                      const json_t *inputs, const struct dspy_buf *reminder,
                                      struct dspy_buf *out, struct dspy_error *err)
{
    struct dspy_buf d;
    dspy_status rc;
    if (inputs && !json_is_object(inputs))
        return dspy__err(err, DSPY_EINVAL, "adapter: inputs must be a JSON object");
    if (out->len == 0) /* the usual case: render in place, no copy */
        return nomem(err, user_content(kind, sig, inputs, "", true, reminder, out, err));
    dspy__buf_init(&d, out->max);
    rc = user_content(kind, sig, inputs, "", true, reminder, &d, err);
    if (!rc && d.ptr)
        rc = dspy__buf_add(out, d.ptr, d.len);
    dspy__buf_release(&d);
    return nomem(err, rc);
}

dspy_status dspy__adapter_render_reminder(enum dspy_adapter_kind kind, const dspy_signature *sig,
                                          struct dspy_buf *out)
{
    return ops_of(kind)->reminder(out, sig);
}

dspy_status dspy__adapter_add_message(json_t *messages, const char *role, const char *content,
                                      size_t len, struct dspy_error *err)
{
    json_t *m, *c = json_stringn(content ? content : "", len);
    if (!c && content && !dspy__utf8_valid(content, len))
        return dspy__err(err, DSPY_EUTF8, "adapter: %s message is not valid UTF-8", role);
    if (!c)
        goto nomem;
    /* each *_new call takes its value, also when it fails */
    if (!(m = json_object()) || json_object_set_new(m, "role", json_string(role))) {
        json_decref(m);
        json_decref(c);
        goto nomem;
    }
    if (json_object_set_new(m, "content", c)) {
        json_decref(m);
        goto nomem;
    }
    if (json_array_append_new(messages, m))
        goto nomem;
    return DSPY_OK;
nomem:
    return dspy__err(err, DSPY_ENOMEM, "adapter: out of memory");
}

static dspy_status add_buf_message(json_t *messages, const char *role, struct dspy_buf *b,
                                   struct dspy_error *err)
{
    return dspy__adapter_add_message(messages, role, b->ptr ? b->ptr : "", b->len, err);
}

/* One demo as a user and an assistant message. */
static dspy_status render_demo(enum dspy_adapter_kind kind, const dspy_signature *sig,
                               const json_t *demo, bool complete, json_t *messages,
                               struct dspy_error *err)
{
    struct dspy_buf b;
    dspy_status rc;
    dspy__buf_init(&b, 0);
    rc = user_content(kind, sig, demo,
                      complete ? ""
                               : "This is an example of the task, though some input or output "
                                 "fields are not supplied.",
                      false, NULL, &b, err);
    if (!rc)
        rc = add_buf_message(messages, "user", &b, err);
    dspy__buf_reset(&b);
    if (!rc)
        rc = ops_of(kind)->assistant(&b, sig, demo,
                                     complete
                                         ? "Not supplied for this conversation history message. "
                                         : "Not supplied for this particular example. ",
                                     err);
    if (!rc)
        rc = add_buf_message(messages, "assistant", &b, err);
    dspy__buf_release(&b);
    return nomem(err, rc);
}

dspy_status dspy__adapter_render_demos(enum dspy_adapter_kind kind, const dspy_signature *sig,
                                       const json_t *demos, json_t *messages,
                                       struct dspy_error *err)
{
    size_t i;
    json_t *demo;
    if (!demos)
        return DSPY_OK;
    if (!json_is_array(demos))
        return dspy__err(err, DSPY_EINVAL, "adapter: demos must be a JSON array");
    json_array_foreach(demos, i, demo) {
        if (!json_is_object(demo))
            return dspy__err(err, DSPY_EINVAL, "adapter: demo %zu is not a JSON object", i);
    }
    /* Incomplete demos (some input and some output present) first, then complete ones
     * (every field present and not None); others are dropped. */
    for (int pass = 0; pass < 2; pass++) {
        json_array_foreach(demos, i, demo) {
            bool complete = true, has_in = false, has_out = false;
            for (size_t k = 0; k < sig->nfields; k++) {
                json_t *v = json_object_get(demo, sig->fields[k].name);
                complete = complete && v && !json_is_null(v);
                if (v && k < sig->ninputs)
                    has_in = true;
                else if (v)
                    has_out = true;
            }
            bool keep = pass == 0 ? !complete && has_in && has_out : complete;
            if (!keep)
                continue;
            dspy_status rc = render_demo(kind, sig, demo, complete, messages, err);
            if (rc)
                return rc;
        }
    }
    return DSPY_OK;
}

/* ---- public API ---- */

dspy_status dspy_adapter_format(enum dspy_adapter_kind kind, const dspy_signature *sig,
                                const json_t *demos, const json_t *inputs, json_t **messages,
                                struct dspy_error *err)
{
    struct dspy_buf b;
    json_t *msgs;
    dspy_status rc;

    if (!sig || !messages || !valid_kind(kind))
        return dspy__err(err, DSPY_EINVAL, "adapter: invalid argument");
    if (!(msgs = json_array()))
        return dspy__err(err, DSPY_ENOMEM, "adapter: out of memory");
    dspy__buf_init(&b, 0);
    rc = dspy__adapter_render_system(kind, sig, &b, err);
    if (!rc)
        rc = add_buf_message(msgs, "system", &b, err);
    if (!rc)
        rc = dspy__adapter_render_demos(kind, sig, demos, msgs, err);
    dspy__buf_reset(&b);
    if (!rc)
        rc = dspy__adapter_render_user(kind, sig, inputs, NULL, &b, err);
    if (!rc && b.len)
        rc = add_buf_message(msgs, "user", &b, err);
    dspy__buf_release(&b);
    if (rc) {
        json_decref(msgs);
        return rc;
    }
    *messages = msgs;
    return DSPY_OK;
}

json_t *dspy_adapter_response_format(enum dspy_adapter_kind kind, const dspy_signature *sig)
{
    /* DSPy's JSONAdapter asks for structured outputs only when litellm knows the model
     * supports response schemas; for OpenAI-compatible endpoints ("openai/<name>" with a
     * custom api_base) it does not, so DSPy sends JSON mode. */
    (void)sig;
    if (kind != DSPY_ADAPTER_JSON)
        return NULL;
    return json_pack("{s:s}", "type", "json_object");
}

dspy_status dspy_adapter_parse(enum dspy_adapter_kind kind, const dspy_signature *sig,
                               const char *text, size_t len, json_t **outputs,
                               struct dspy_error *err)
{
    struct dspy_buf clean;
    dspy_status rc;

    if (!sig || !outputs || (!text && len) || !valid_kind(kind))
        return dspy__err(err, DSPY_EINVAL, "adapter: invalid argument");
    if (!text)
        text = "";
    if (dspy__utf8_valid(text, len))
        return ops_of(kind)->parse(sig, text, len, outputs, err);
    /* LM text arrives decoded with errors="replace" in Python; do the same. */
    dspy__buf_init(&clean, len < ((size_t)1 << 40) ? len * 3 + 16 : 0);
    rc = dspy__utf8_sanitize(&clean, text, len);
    if (!rc)
        rc = ops_of(kind)->parse(sig, clean.ptr, clean.len, outputs, err);
    else
        rc = nomem(err, rc);
    dspy__buf_release(&clean);
    return rc;
}

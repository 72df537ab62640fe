/* String-signature parser (program layer): "question: str, k: int -> answer: list[str]"
 * parsed as DSPy parses it (each side a Python argument list, types from the typing
 * subset DSPy prompts can name), with errors that point at the offending byte. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/ascii.h"
#include "base/fmtfloat.h"
#include "base/pyfmt.h"
#include "base/status.h"
#include "base/unicode_ident.h"
#include "program/signature_int.h"

#define MAX_TYPE_DEPTH 32
#define MAX_FIELDS 4096

struct parser {
    const char *text; /* the whole signature, for error positions */
    size_t pos;
    size_t end; /* end of the side being parsed */
    int depth;
    struct dspy_error *err;
};

/* A parsed annotation and whether it was the bare constant `None` (which DSPy turns into
 * `str` at the top level and NoneType inside a union). */
struct parsed {
    struct dspy_type *type;
    bool none_const;
};

static bool is_ident_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_ident_char(char c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9');
}

/* The length in bytes of the run of Python identifier characters (str.isidentifier()'s
 * XID_Continue, so digits too) at s[at]; invalid UTF-8 ends it. */
static size_t ident_len(const char *s, size_t end, size_t at)
{
    size_t i = at;
    while (i < end) {
        uint32_t cp;
        size_t n = dspy__utf8_decode(s, end, i, &cp);
        if (!dspy__py_ident_continue(cp))
            break;
        i += n;
    }
    return i - at;
}

/* Whether the character at s[at] may start a Python identifier. */
static bool ident_starts(const char *s, size_t end, size_t at)
{
    uint32_t cp;
    dspy__utf8_decode(s, end, at, &cp);
    return dspy__py_ident_start(cp);
}

static dspy_status fail(struct parser *p, size_t at, const char *what)
{
    return dspy__err_at(p->err, DSPY_EPARSE, p->text, at, "signature: %s at offset %zu", what, at);
}

static void skip_ws(struct parser *p)
{
    while (p->pos < p->end && strchr(" \t\r\n\f", p->text[p->pos]))
        p->pos++;
}

static char peek(struct parser *p)
{
    skip_ws(p);
    return p->pos < p->end ? p->text[p->pos] : '\0';
}

static bool eat(struct parser *p, char c)
{
    if (peek(p) != c)
        return false;
    p->pos++;
    return true;
}

static dspy_status oom(struct parser *p)
{
    return dspy__err(p->err, DSPY_ENOMEM, "signature: out of memory");
}

static dspy_status add_arg(struct parser *p, struct dspy_type *t, struct dspy_type *arg)
{
    struct dspy_type **a = dspy_realloc(t->args, (t->nargs + 1) * sizeof(*a));
    if (!a) {
        dspy__type_free(arg);
        return oom(p);
    }
    t->args = a;
    t->args[t->nargs++] = arg;
    return DSPY_OK;
}

/* typing.Union[...]: flatten nested unions, drop duplicates, collapse a single member.
 * Takes ownership of the members (and clears the array). */
static dspy_status make_union(struct parser *p, struct dspy_type **members, size_t n,
                              struct dspy_type **out)
{
    struct dspy_type *u = dspy__type_new(DSPY_TYPE_UNION);
    dspy_status rc = u ? DSPY_OK : oom(p);
    for (size_t i = 0; i < n; i++) {
        struct dspy_type *m = members[i];
        members[i] = NULL;
        bool nested = m->kind == DSPY_TYPE_UNION;
        size_t nparts = nested ? m->nargs : 1;
        for (size_t k = 0; !rc && k < nparts; k++) {
            struct dspy_type *part = nested ? m->args[k] : m;
            bool dup = false;
            for (size_t j = 0; j < u->nargs && !dup; j++)
                dup = dspy__type_equal(u->args[j], part);
            if (dup)
                continue;
            if (nested)
                m->args[k] = NULL;
            else
                m = NULL;
            rc = add_arg(p, u, part);
        }
        dspy__type_free(m); /* what is left: a duplicate, or the emptied union */
    }
    if (rc) {
        dspy__type_free(u);
        return rc;
    }
    if (u->nargs == 1) {
        *out = u->args[0];
        u->nargs = 0;
        dspy__type_free(u);
    } else {
        *out = u;
    }
    return DSPY_OK;
}

static dspy_status parse_union(struct parser *p, struct parsed *out);

/* A type used as an argument of another (not the top level). */
static dspy_status parse_arg(struct parser *p, struct dspy_type **out, bool in_union)
{
    struct parsed a;
    size_t at = (skip_ws(p), p->pos);
    dspy_status rc = parse_union(p, &a);
    if (rc)
        return rc;
    if (a.none_const && !in_union) {
        dspy__type_free(a.type);
        return fail(p, at, "write NoneType, not None, inside a container type");
    }
    *out = a.type;
    return DSPY_OK;
}

/* ---- Literal values ---- */

/* One escape after a backslash at p->pos (pointing past the backslash). */
static dspy_status string_escape(struct parser *p, struct dspy_buf *b)
{
    const char *s = p->text;
    size_t at = p->pos - 1;
    char c = p->pos < p->end ? s[p->pos] : '\0';
    uint32_t cp = 0;
    int ndig = 0;
    p->pos++;
    switch (c) {
    case '\n': return DSPY_OK;
    case '\\':
    case '\'':
    case '"': return dspy__buf_addc(b, c);
    case 'a': return dspy__buf_addc(b, '\a');
    case 'b': return dspy__buf_addc(b, '\b');
    case 'f': return dspy__buf_addc(b, '\f');
    case 'n': return dspy__buf_addc(b, '\n');
    case 'r': return dspy__buf_addc(b, '\r');
    case 't': return dspy__buf_addc(b, '\t');
    case 'v': return dspy__buf_addc(b, '\v');
    case 'x': ndig = 2; break;
    case 'u': ndig = 4; break;
    case 'U': ndig = 8; break;
    default:
        if (c >= '0' && c <= '7') {
            cp = (uint32_t)(c - '0');
            for (int k = 0; k < 2 && p->pos < p->end && s[p->pos] >= '0' && s[p->pos] <= '7'; k++)
                cp = cp * 8 + (uint32_t)(s[p->pos++] - '0');
            goto emit;
        }
        if (c == 'N')
            return fail(p, at, "\\N{...} escapes are not supported");
        /* Unknown escapes keep their backslash, as Python does. */
        p->pos--;
        return dspy__buf_addc(b, '\\');
    }
    for (int k = 0; k < ndig; k++) {
        int h = p->pos < p->end ? dspy__hexval(s[p->pos]) : -1;
        if (h < 0)
            return fail(p, at, "truncated escape in string");
        cp = cp * 16 + (uint32_t)h;
        p->pos++;
    }
emit:
    if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return fail(p, at, "string escape gives a character that is not supported");
    return dspy__utf8_add(b, cp);
}

/* One or more adjacent string literals ('a' "b" -> "ab"), optionally u- or r-prefixed. */
static dspy_status parse_string(struct parser *p, struct dspy_buf *b)
{
    const char *s = p->text;
    dspy_status rc = DSPY_OK;
    do {
        bool raw = false;
        size_t at = p->pos;
        if (strchr("uUrR", s[p->pos])) {
            raw = s[p->pos] == 'r' || s[p->pos] == 'R';
            p->pos++;
        }
        char q = s[p->pos];
        if (p->pos + 2 < p->end && s[p->pos + 1] == q && s[p->pos + 2] == q)
            return fail(p, at, "triple-quoted strings are not supported");
        p->pos++;
        for (;;) {
            if (p->pos >= p->end || s[p->pos] == '\n' || s[p->pos] == '\r')
                return fail(p, at, "unterminated string");
            char c = s[p->pos++];
            if (c == q)
                break;
            if (c == '\\' && raw) {
                rc = dspy__buf_addc(b, c);
                if (!rc && p->pos < p->end && (s[p->pos] == q || s[p->pos] == '\\'))
                    rc = dspy__buf_addc(b, s[p->pos++]);
            } else if (c == '\\') {
                rc = string_escape(p, b);
            } else {
                rc = dspy__buf_addc(b, c);
            }
            if (rc)
                return rc;
        }
        skip_ws(p);
    } while (p->pos < p->end && (s[p->pos] == '\'' || s[p->pos] == '"' ||
                                 (strchr("uUrR", s[p->pos]) && p->pos + 1 < p->end &&
                                  (s[p->pos + 1] == '\'' || s[p->pos + 1] == '"'))));
    return dspy__buf_add(b, "", 0);
}

/* Digits of `base` with single underscores between them; copies the digits to `out`. */
static size_t scan_digits(const char *s, size_t i, size_t end, int base, char *out, size_t *olen,
                          size_t omax, bool after_prefix)
{
    size_t start = i;
    bool last_us = after_prefix;
    while (i < end) {
        char c = s[i];
        int v = dspy__hexval(c);
        if (c == '_' && !last_us && i > start) {
            last_us = true;
        } else if (c == '_' && after_prefix && i == start) {
            last_us = true;
        } else if (v >= 0 && v < base) {
            if (*olen + 1 < omax)
                out[(*olen)++] = c;
            last_us = false;
        } else {
            break;
        }
        i++;
    }
    if (last_us && i > start)
        i--; /* a trailing underscore is not part of the number */
    return i;
}

/* A Python number literal; writes the value as Python's str() prints it. */
static dspy_status parse_number(struct parser *p, struct dspy_buf *b)
{
    const char *s = p->text;
    size_t at = p->pos, i = p->pos, n = 0;
    char dig[64];
    int base = 10;
    bool is_float = false;

    if (s[i] == '0' && i + 1 < p->end && strchr("xXoObB", s[i + 1])) {
        base = strchr("xX", s[i + 1]) ? 16 : strchr("oO", s[i + 1]) ? 8 : 2;
        i = scan_digits(s, i + 2, p->end, base, dig, &n, sizeof(dig), true);
        if (!n)
            return fail(p, at, "invalid number");
    } else {
        i = scan_digits(s, i, p->end, 10, dig, &n, sizeof(dig), false);
        if (i < p->end && s[i] == '.') {
            is_float = true;
            if (n + 1 < sizeof(dig))
                dig[n++] = '.';
            i = scan_digits(s, i + 1, p->end, 10, dig, &n, sizeof(dig), false);
        }
        if (i < p->end && (s[i] == 'e' || s[i] == 'E')) {
            size_t j = i + 1, before = n;
            if (n + 1 < sizeof(dig))
                dig[n++] = 'e';
            if (j < p->end && (s[j] == '+' || s[j] == '-') && n + 1 < sizeof(dig))
                dig[n++] = s[j++];
            else if (j < p->end && (s[j] == '+' || s[j] == '-'))
                j++;
            size_t k = scan_digits(s, j, p->end, 10, dig, &n, sizeof(dig), false);
            if (k == j) {
                n = before;
            } else {
                is_float = true;
                i = k;
            }
        }
    }
    if (i < p->end && (is_ident_char(s[i]) || s[i] == '.'))
        return fail(p, at, "invalid number");
    if (n >= sizeof(dig) - 1)
        return fail(p, at, "number too long");
    dig[n] = '\0';
    p->pos = i;
    if (is_float) {
        char r[DSPY__FLOAT_MAX];
        double d = strtod(dig, NULL);
        if (d > 1.7976931348623157e308 || d < -1.7976931348623157e308)
            return fail(p, at, "float literal out of range");
        dspy__float_fmt(r, d, DSPY__FLOAT_PYTHON);
        return dspy__buf_adds(b, r);
    }
    if (base == 10 && dig[0] == '0' && strspn(dig, "0") != n)
        return fail(p, at, "leading zeros in a decimal number");
    errno = 0;
    long long v = strtoll(dig, NULL, base);
    if (errno == ERANGE)
        return fail(p, at, "integer literal out of range");
    return dspy__buf_addf(b, "%lld", v);
}

static dspy_status add_literal(struct parser *p, struct dspy_type *t, struct dspy_buf *text,
                               bool is_str)
{
    for (size_t i = 0; i < t->nliterals; i++)
        if (t->literal_is_str[i] == is_str && !strcmp(t->literals[i], text->ptr))
            return DSPY_OK; /* Literal drops duplicates */
    char **l = dspy_realloc(t->literals, (t->nliterals + 1) * sizeof(*l));
    if (!l)
        return oom(p);
    t->literals = l;
    bool *f = dspy_realloc(t->literal_is_str, (t->nliterals + 1) * sizeof(*f));
    if (!f)
        return oom(p);
    t->literal_is_str = f;
    l[t->nliterals] = dspy_strdup(text->ptr);
    if (!l[t->nliterals])
        return oom(p);
    f[t->nliterals++] = is_str;
    return DSPY_OK;
}

static dspy_status parse_literal_args(struct parser *p, struct dspy_type *t);

static dspy_status parse_literal_value(struct parser *p, struct dspy_type *t)
{
    struct dspy_buf b;
    dspy_status rc;
    const char *s = p->text;
    char c = peek(p);
    size_t at = p->pos, n = 0;

    dspy__buf_init(&b, 1 << 20);
    while (at + n < p->end && is_ident_char(s[at + n]))
        n++;
    bool prefixed = n == 1 && strchr("uUrR", c) && at + 1 < p->end &&
                    (s[at + 1] == '\'' || s[at + 1] == '"');
    if (c == '\'' || c == '"' || prefixed) {
        rc = parse_string(p, &b);
        if (!rc)
            rc = add_literal(p, t, &b, true);
    } else if ((c >= '0' && c <= '9') || c == '.') {
        rc = parse_number(p, &b);
        if (!rc)
            rc = add_literal(p, t, &b, false);
    } else if ((n == 4 && !memcmp(s + at, "True", 4)) || (n == 5 && !memcmp(s + at, "False", 5)) ||
               (n == 4 && !memcmp(s + at, "None", 4))) {
        p->pos += n;
        rc = dspy__buf_add(&b, s + at, n);
        if (!rc)
            rc = add_literal(p, t, &b, false);
    } else if (n == 7 && !memcmp(s + at, "Literal", 7)) {
        p->pos += n;
        rc = eat(p, '[') ? parse_literal_args(p, t) : fail(p, p->pos, "expected '['");
    } else if (c == '-' || c == '+') {
        rc = fail(p, at, "signed numbers are not supported in Literal[...] (DSPy rejects them)");
    } else {
        rc = fail(p, at, "expected a string, number, True, False or None in Literal[...]");
    }
    dspy__buf_release(&b);
    return rc;
}

/* Values up to and including the closing ']'. */
static dspy_status parse_literal_args(struct parser *p, struct dspy_type *t)
{
    dspy_status rc;
    if (peek(p) == ']')
        return fail(p, p->pos, "Literal[...] needs at least one value");
    do {
        if ((rc = parse_literal_value(p, t)))
            return rc;
    } while (eat(p, ','));
    return eat(p, ']') ? DSPY_OK : fail(p, p->pos, "expected ',' or ']' in Literal[...]");
}

/* ---- types ---- */

static dspy_status parse_subscript(struct parser *p, const char *name, size_t name_at,
                                   struct dspy_type **out)
{
    struct dspy_type *t = NULL, *arg = NULL;
    dspy_status rc = DSPY_OK;
    bool is_union = !strcmp(name, "Union"), is_optional = !strcmp(name, "Optional");

    if (!strcmp(name, "Literal")) {
        if (!(t = dspy__type_new(DSPY_TYPE_LITERAL)))
            return oom(p);
        rc = parse_literal_args(p, t);
        goto done;
    }
    if (is_union || is_optional) {
        struct dspy_type **all = NULL;
        size_t n = 0;
        do {
            struct dspy_type **a = dspy_realloc(all, (n + 1) * sizeof(*a));
            if (!a) {
                rc = oom(p);
                break;
            }
            all = a;
            if ((rc = parse_arg(p, &all[n], true)))
                break;
            n++;
        } while (eat(p, ','));
        if (!rc && !eat(p, ']'))
            rc = fail(p, p->pos, "expected ',' or ']'");
        if (!rc && is_optional && n != 1)
            rc = fail(p, name_at, "Optional must have exactly one type argument");
        if (!rc && is_optional) {
            struct dspy_type **a = dspy_realloc(all, 2 * sizeof(*a));
            if (a)
                all = a;
            if (!a || !(all[1] = dspy__type_new(DSPY_TYPE_NONE)))
                rc = oom(p);
            else
                n = 2;
        }
        if (!rc)
            rc = make_union(p, all, n, &t);
        for (size_t i = 0; i < n; i++)
            dspy__type_free(all[i]);
        dspy_free(all);
        goto done;
    }
    enum dspy_type_kind kind = name[0] == 'l' || name[0] == 'L'   ? DSPY_TYPE_LIST
                               : name[0] == 'd' || name[0] == 'D' ? DSPY_TYPE_DICT
                                                                  : DSPY_TYPE_TUPLE;
    if (!(t = dspy__type_new(kind)))
        return oom(p);
    do {
        if (kind == DSPY_TYPE_TUPLE && t->nargs == 1 && peek(p) == '.' && p->pos + 3 <= p->end &&
            !memcmp(p->text + p->pos, "...", 3)) {
            p->pos += 3;
            t->variadic = true;
            break;
        }
        if (peek(p) == '(' && kind == DSPY_TYPE_TUPLE)
            rc = fail(p, p->pos, "tuple[()] is not supported");
        else if (!(rc = parse_arg(p, &arg, false)))
            rc = add_arg(p, t, arg);
    } while (!rc && eat(p, ','));
    if (!rc && !eat(p, ']'))
        rc = fail(p, p->pos, t->variadic ? "expected ']' after '...'" : "expected ',' or ']'");
    if (!rc && kind == DSPY_TYPE_LIST && t->nargs != 1)
        rc = fail(p, name_at, "list[...] takes exactly one type argument");
    if (!rc && kind == DSPY_TYPE_DICT && t->nargs != 2)
        rc = fail(p, name_at, "dict[...] takes exactly two type arguments");
done:
    if (rc) {
        dspy__type_free(t);
        return rc;
    }
    *out = t;
    return DSPY_OK;
}

static dspy_status parse_primary(struct parser *p, struct parsed *out)
{
    static const struct {
        const char *name;
        enum dspy_type_kind kind;
    } simple[] = {
        { "str", DSPY_TYPE_STR },     { "int", DSPY_TYPE_INT },   { "float", DSPY_TYPE_FLOAT },
        { "bool", DSPY_TYPE_BOOL },   { "Any", DSPY_TYPE_ANY },   { "NoneType", DSPY_TYPE_NONE },
        { "None", DSPY_TYPE_NONE },   { "list", DSPY_TYPE_LIST }, { "dict", DSPY_TYPE_DICT },
        { "tuple", DSPY_TYPE_TUPLE },
    };
    static const char *const generic[] = { "list",  "List",    "dict",     "Dict", "tuple",
                                           "Tuple", "Literal", "Optional", "Union" };
    const char *s = p->text;
    char name[16];
    size_t at, n = 0;
    dspy_status rc;

    out->type = NULL;
    out->none_const = false;
    if (++p->depth > MAX_TYPE_DEPTH) {
        rc = fail(p, p->pos, "type nested too deeply");
        goto out;
    }
    char c = peek(p);
    at = p->pos;
    if (c == '(') {
        p->pos++;
        rc = parse_union(p, out);
        if (!rc && !eat(p, ')')) {
            dspy__type_free(out->type);
            out->type = NULL;
            rc = fail(p, p->pos, "expected ')'");
        }
        goto out;
    }
    while (at + n < p->end && (is_ident_char(s[at + n]) || (unsigned char)s[at + n] >= 0x80))
        n++;
    if (!n || !is_ident_start(c)) {
        rc = fail(p, at, c ? "expected a type" : "expected a type after ':'");
        goto out;
    }
    if (n >= sizeof(name) || (at + n < p->end && s[at + n] == '.')) {
        while (at + n < p->end && (is_ident_char(s[at + n]) || s[at + n] == '.'))
            n++;
        rc = dspy__err_at(p->err, DSPY_EPARSE, s, at,
                          "signature: unknown type '%.*s' at offset %zu", (int)n, s + at, at);
        goto out;
    }
    memcpy(name, s + at, n);
    name[n] = '\0';
    p->pos += n;
    if (eat(p, '[')) {
        bool ok = false;
        for (size_t i = 0; i < sizeof(generic) / sizeof(generic[0]); i++)
            ok = ok || !strcmp(name, generic[i]);
        if (!ok) {
            bool known = false;
            for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++)
                known = known || !strcmp(name, simple[i].name);
            rc = known ? dspy__err_at(p->err, DSPY_EPARSE, s, at,
                                      "signature: type '%s' is not subscriptable at offset %zu",
                                      name, at)
                       : dspy__err_at(p->err, DSPY_EPARSE, s, at,
                                      "signature: unknown type '%s' at offset %zu", name, at);
            goto out;
        }
        rc = parse_subscript(p, name, at, &out->type);
        goto out;
    }
    for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++) {
        if (strcmp(name, simple[i].name))
            continue;
        out->type = dspy__type_new(simple[i].kind);
        out->none_const = !strcmp(name, "None");
        rc = out->type ? DSPY_OK : oom(p);
        goto out;
    }
    for (size_t i = 0; i < sizeof(generic) / sizeof(generic[0]); i++) {
        if (!strcmp(name, generic[i])) {
            rc = dspy__err_at(p->err, DSPY_EPARSE, s, at,
                              "signature: type '%s' needs arguments ('%s[...]') at offset %zu",
                              name, name, at);
            goto out;
        }
    }
    rc = dspy__err_at(p->err, DSPY_EPARSE, s, at, "signature: unknown type '%s' at offset %zu",
                      name, at);
out:
    p->depth--;
    return rc;
}

/* A | B | ...: PEP 604 unions, with `X | None` = Optional[X] as DSPy builds them. */
static dspy_status parse_union(struct parser *p, struct parsed *out)
{
    dspy_status rc = parse_primary(p, out);
    while (!rc && eat(p, '|')) {
        struct parsed r;
        struct dspy_type *m[2];
        if ((rc = parse_primary(p, &r)))
            break;
        if (out->type->kind == DSPY_TYPE_NONE && !out->none_const) {
            /* DSPy builds Optional[right] when the left side is the NoneType class; the
             * bare constant None is not that class, so `None | int` keeps its order. */
            m[0] = r.type;
            m[1] = out->type;
        } else {
            m[0] = out->type;
            m[1] = r.type;
        }
        out->type = NULL;
        out->none_const = false;
        rc = make_union(p, m, 2, &out->type);
    }
    if (rc) {
        dspy__type_free(out->type);
        out->type = NULL;
    }
    return rc;
}

/* ---- fields ---- */

struct field_list {
    struct dspy_field *fields;
    size_t n;
    size_t *offsets; /* where each name starts, for duplicate errors */
};

static dspy_status add_field(struct parser *p, struct field_list *l, size_t at, size_t len,
                             enum dspy_field_role role, struct dspy_type *type, bool given)
{
    if (l->n >= MAX_FIELDS) {
        dspy__type_free(type);
        return fail(p, at, "too many fields");
    }
    struct dspy_field *f = dspy_realloc(l->fields, (l->n + 1) * sizeof(*f));
    if (!f) {
        dspy__type_free(type);
        return oom(p);
    }
    l->fields = f;
    size_t *o = dspy_realloc(l->offsets, (l->n + 1) * sizeof(*o));
    if (!o) {
        dspy__type_free(type);
        return oom(p);
    }
    l->offsets = o;
    if (dspy__field_init(&f[l->n], p->text + at, len, role, type, given)) {
        dspy__type_free(type);
        return oom(p);
    }
    o[l->n++] = at;
    return DSPY_OK;
}

static dspy_status parse_side(struct parser *p, struct field_list *l, enum dspy_field_role role)
{
    const char *s = p->text;
    dspy_status rc = DSPY_OK;
    size_t first = l->n;

    if (!peek(p))
        return DSPY_OK;
    for (;;) {
        size_t at = p->pos, n = ident_len(s, p->end, at);
        if (!n && at < p->end && (unsigned char)s[at] >= 0x80)
            return fail(p, at, "a field name must be a Python identifier");
        if (!n)
            return fail(p, at,
                        at < p->end && s[at] == ',' ? "empty field name" : "expected a field name");
        if (!ident_starts(s, p->end, at))
            return dspy__err_at(p->err, DSPY_EPARSE, s, at,
                                "signature: invalid field name '%.*s' at offset %zu", (int)n,
                                s + at, at);
        if (s[at] == '_')
            return dspy__err_at(p->err, DSPY_EPARSE, s, at,
                                "signature: field name '%.*s' may not start with '_' at offset "
                                "%zu",
                                (int)n, s + at, at);
        for (size_t i = at; i < at + n;) {
            uint32_t cp;
            size_t w = dspy__utf8_decode(s, p->end, i, &cp);
            if (dspy__py_ident_nfkc_changes(cp))
                return dspy__err_at(p->err, DSPY_EPARSE, s, at,
                                    "signature: field name '%.*s' is not in NFKC form (Python "
                                    "would read '%.*s' as another name) at offset %zu",
                                    (int)n, s + at, (int)w, s + i, i);
            i += w;
        }
        if (dspy__is_py_keyword(s + at, n))
            return dspy__err_at(p->err, DSPY_EPARSE, s, at,
                                "signature: '%.*s' is a Python keyword, not a field name, at "
                                "offset %zu",
                                (int)n, s + at, at);
        for (size_t i = first; i < l->n; i++)
            if (strlen(l->fields[i].name) == n && !memcmp(l->fields[i].name, s + at, n))
                return dspy__err_at(p->err, DSPY_EPARSE, s, at,
                                    "signature: duplicate field name '%.*s' at offset %zu", (int)n,
                                    s + at, at);
        p->pos += n;
        struct dspy_type *type = NULL;
        bool given = false;
        if (eat(p, ':')) {
            struct parsed t;
            if ((rc = parse_union(p, &t)))
                return rc;
            given = true;
            type = t.type;
            if (t.none_const)
                type->kind = DSPY_TYPE_STR; /* DSPy reads `x: None` as an untyped field */
        } else if (!(type = dspy__type_new(DSPY_TYPE_STR))) {
            return oom(p);
        }
        if ((rc = add_field(p, l, at, n, role, type, given)))
            return rc;
        char c = peek(p);
        if (!c)
            return DSPY_OK;
        if (c == '=')
            return fail(p, p->pos, "default values are not supported");
        if (c != ',') {
            /* the whole character, not one byte of it: "x²" is not an identifier */
            uint32_t cp;
            int w = (int)dspy__utf8_decode(s, p->end, p->pos, &cp);
            if (cp == 0xFFFD && w == 1 && (unsigned char)c >= 0x80)
                return dspy__err_at(p->err, DSPY_EPARSE, s, p->pos,
                                    "signature: invalid UTF-8 byte 0x%02X at offset %zu",
                                    (unsigned char)c, p->pos);
            return dspy__err_at(p->err, DSPY_EPARSE, s, p->pos,
                                "signature: unexpected '%.*s' at offset %zu (expected ',')%s", w,
                                s + p->pos, p->pos,
                                cp >= 0x80 ? ": a field name must be a Python identifier" : "");
        }
        p->pos++;
        if (!peek(p))
            return DSPY_OK; /* a trailing comma, as Python allows */
    }
}

dspy_status dspy__signature_parse_fields(const char *text, struct dspy_field **fields,
                                         size_t *nfields, size_t *ninputs, struct dspy_error *err)
{
    struct parser p = { text, 0, 0, 0, err };
    struct field_list l = { NULL, 0, NULL };
    size_t len = strlen(text), arrow = 0, count = 0;
    dspy_status rc;

    for (size_t i = 0; i + 1 < len; i++) {
        if (text[i] == '-' && text[i + 1] == '>') {
            if (++count == 1)
                arrow = i;
            else
                return fail(&p, i, "expected exactly one '->', found another");
            i++;
        }
    }
    if (!count)
        return fail(&p, len, "expected '->' between inputs and outputs");
    for (size_t i = 0; i < len; i++) {
        uint32_t cp;
        size_t n = dspy__utf8_decode(text, len, i, &cp);
        if (cp == 0xFFFD && n == 1 && (unsigned char)text[i] >= 0x80)
            return dspy__err_at(err, DSPY_EUTF8, text, i, "signature: invalid UTF-8 at offset %zu",
                                i);
        i += n - 1;
    }
    p.end = arrow;
    if ((rc = parse_side(&p, &l, DSPY_FIELD_INPUT)))
        goto fail;
    size_t nin = l.n;
    p.pos = arrow + 2;
    p.end = len;
    if ((rc = parse_side(&p, &l, DSPY_FIELD_OUTPUT)))
        goto fail;
    for (size_t o = nin; o < l.n; o++) {
        for (size_t i = 0; i < nin; i++) {
            if (strcmp(l.fields[i].name, l.fields[o].name))
                continue;
            rc = dspy__err_at(err, DSPY_EPARSE, text, l.offsets[o],
                              "signature: '%s' is both an input and an output field (offset "
                              "%zu)",
                              l.fields[o].name, l.offsets[o]);
            dspy__err_field(err, l.fields[o].name);
            goto fail;
        }
    }
    dspy_free(l.offsets);
    *fields = l.fields;
    *nfields = l.n;
    *ninputs = nin;
    return DSPY_OK;
fail:
    for (size_t i = 0; i < l.n; i++)
        dspy__field_release(&l.fields[i]);
    dspy_free(l.fields);
    dspy_free(l.offsets);
    return rc;
}

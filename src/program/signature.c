/* Signatures (program layer): the signature object, its accessors and setters, and the
 * naming rules DSPy applies to it (default instructions, inferred prefixes, cleandoc'd
 * instructions, type names as get_annotation_name prints them). */
#include <string.h>

#include "base/pyfmt.h"
#include "base/status.h"
#include "program/signature_int.h"

/* ---- types ---- */

struct dspy_type *dspy__type_new(enum dspy_type_kind kind)
{
    struct dspy_type *t = dspy_calloc(1, sizeof(*t));
    if (t)
        t->kind = kind;
    return t;
}

void dspy__type_free(struct dspy_type *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nargs; i++)
        dspy__type_free(t->args[i]);
    dspy_free(t->args);
    for (size_t i = 0; i < t->nliterals; i++)
        dspy_free(t->literals[i]);
    dspy_free(t->literals);
    dspy_free(t->literal_is_str);
    dspy_free(t);
}

struct dspy_type *dspy__type_copy(const struct dspy_type *t)
{
    struct dspy_type *c = dspy__type_new(t->kind);
    if (!c)
        return NULL;
    c->variadic = t->variadic;
    if (t->nargs) {
        c->args = dspy_calloc(t->nargs, sizeof(*c->args));
        if (!c->args)
            goto fail;
        for (; c->nargs < t->nargs; c->nargs++) {
            c->args[c->nargs] = dspy__type_copy(t->args[c->nargs]);
            if (!c->args[c->nargs])
                goto fail;
        }
    }
    if (t->nliterals) {
        c->literals = dspy_calloc(t->nliterals, sizeof(*c->literals));
        c->literal_is_str = dspy_calloc(t->nliterals, sizeof(*c->literal_is_str));
        if (!c->literals || !c->literal_is_str)
            goto fail;
        for (; c->nliterals < t->nliterals; c->nliterals++) {
            c->literals[c->nliterals] = dspy_strdup(t->literals[c->nliterals]);
            if (!c->literals[c->nliterals])
                goto fail;
            c->literal_is_str[c->nliterals] = t->literal_is_str[c->nliterals];
        }
    }
    return c;
fail:
    dspy__type_free(c);
    return NULL;
}

static bool has_literal(const struct dspy_type *t, const char *text, bool is_str)
{
    for (size_t i = 0; i < t->nliterals; i++)
        if (t->literal_is_str[i] == is_str && !strcmp(t->literals[i], text))
            return true;
    return false;
}

bool dspy__type_equal(const struct dspy_type *a, const struct dspy_type *b)
{
    if (a->kind != b->kind || a->nargs != b->nargs || a->variadic != b->variadic)
        return false;
    if (a->kind == DSPY_TYPE_LITERAL) {
        /* typing compares Literal choices as a set of (value, type) pairs. */
        for (size_t i = 0; i < a->nliterals; i++)
            if (!has_literal(b, a->literals[i], a->literal_is_str[i]))
                return false;
        for (size_t i = 0; i < b->nliterals; i++)
            if (!has_literal(a, b->literals[i], b->literal_is_str[i]))
                return false;
        return true;
    }
    for (size_t i = 0; i < a->nargs; i++)
        if (!dspy__type_equal(a->args[i], b->args[i]))
            return false;
    return true;
}

bool dspy__type_allows_none(const struct dspy_type *t)
{
    if (t->kind == DSPY_TYPE_NONE)
        return true;
    if (t->kind == DSPY_TYPE_UNION)
        for (size_t i = 0; i < t->nargs; i++)
            if (dspy__type_allows_none(t->args[i]))
                return true;
    return false;
}

/* _quoted_string_for_literal_type_annotation */
static dspy_status add_quoted_literal(struct dspy_buf *b, const char *s)
{
    bool has_single = strchr(s, '\'') != NULL, has_double = strchr(s, '"') != NULL;
    dspy_status rc;
    if (has_single && !has_double)
        return dspy__buf_addf(b, "\"%s\"", s);
    if (!has_single)
        return dspy__buf_addf(b, "'%s'", s);
    rc = dspy__buf_addc(b, '\'');
    for (const char *p = s; !rc && *p; p++)
        rc = *p == '\'' ? dspy__buf_adds(b, "\\'") : dspy__buf_addc(b, *p);
    return rc ? rc : dspy__buf_addc(b, '\'');
}

static const char *const kind_names[] = {
    [DSPY_TYPE_STR] = "str",         [DSPY_TYPE_INT] = "int",       [DSPY_TYPE_FLOAT] = "float",
    [DSPY_TYPE_BOOL] = "bool",       [DSPY_TYPE_NONE] = "NoneType", [DSPY_TYPE_ANY] = "Any",
    [DSPY_TYPE_LIST] = "list",       [DSPY_TYPE_DICT] = "dict",     [DSPY_TYPE_TUPLE] = "tuple",
    [DSPY_TYPE_LITERAL] = "Literal", [DSPY_TYPE_UNION] = "Union",
};

dspy_status dspy__type_add_name(struct dspy_buf *b, const struct dspy_type *t)
{
    dspy_status rc = dspy__buf_adds(b, kind_names[t->kind]);
    if (rc)
        return rc;
    if (t->kind == DSPY_TYPE_LITERAL) {
        rc = dspy__buf_addc(b, '[');
        for (size_t i = 0; !rc && i < t->nliterals; i++) {
            if (i)
                rc = dspy__buf_adds(b, ", ");
            if (!rc)
                rc = t->literal_is_str[i] ? add_quoted_literal(b, t->literals[i])
                                          : dspy__buf_adds(b, t->literals[i]);
        }
        return rc ? rc : dspy__buf_addc(b, ']');
    }
    if (t->nargs == 0 && !t->variadic)
        return DSPY_OK;
    rc = dspy__buf_addc(b, '[');
    for (size_t i = 0; !rc && i < t->nargs; i++) {
        if (i)
            rc = dspy__buf_adds(b, ", ");
        if (!rc)
            rc = dspy__type_add_name(b, t->args[i]);
    }
    if (!rc && t->variadic)
        rc = dspy__buf_adds(b, ", Ellipsis");
    return rc ? rc : dspy__buf_addc(b, ']');
}

char *dspy_type_name(const struct dspy_type *type)
{
    struct dspy_buf b;
    dspy__buf_init(&b, 0);
    if (!type || dspy__type_add_name(&b, type)) {
        dspy__buf_release(&b);
        return NULL;
    }
    return dspy__buf_detach(&b, NULL);
}

/* ---- naming rules ---- */

static bool is_upper(char c)
{
    return c >= 'A' && c <= 'Z';
}
static bool is_lower(char c)
{
    return c >= 'a' && c <= 'z';
}
static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}
static bool is_alpha(char c)
{
    return is_upper(c) || is_lower(c);
}

/* One left-to-right re.sub pass of a two-group pattern "(A)(B)" -> "\1_\2", where A is
 * one character and B's length at position i is returned by `second` (0: no match). */
static dspy_status sub_pass(struct dspy_buf *out, const char *s, bool (*first)(char),
                            size_t (*second)(const char *))
{
    dspy_status rc = DSPY_OK;
    size_t i = 0, n = strlen(s);
    dspy__buf_reset(out);
    while (!rc && i < n) {
        size_t m = i + 1 < n && first(s[i]) ? second(s + i + 1) : 0;
        if (m) {
            rc = dspy__buf_addc(out, s[i]);
            if (!rc)
                rc = dspy__buf_addc(out, '_');
            if (!rc)
                rc = dspy__buf_add(out, s + i + 1, m);
            i += 1 + m;
        } else {
            rc = dspy__buf_addc(out, s[i++]);
        }
    }
    if (!rc && !out->ptr)
        rc = dspy__buf_add(out, "", 0);
    return rc;
}

static bool any_char(char c)
{
    return c != '\n';
}
static bool lower_or_digit(char c)
{
    return is_lower(c) || is_digit(c);
}
static size_t upper_then_lowers(const char *s)
{
    size_t m = 1;
    if (!is_upper(s[0]) || !is_lower(s[1]))
        return 0;
    while (is_lower(s[m]))
        m++;
    return m;
}
static size_t one_upper(const char *s)
{
    return is_upper(s[0]) ? 1 : 0;
}
static size_t one_digit(const char *s)
{
    return is_digit(s[0]) ? 1 : 0;
}
static size_t one_alpha(const char *s)
{
    return is_alpha(s[0]) ? 1 : 0;
}

/* Python's str.isupper() for an ASCII word: some cased character and no lowercase one. */
static bool word_is_upper(const char *w, size_t n)
{
    bool cased = false;
    for (size_t i = 0; i < n; i++) {
        if (is_lower(w[i]))
            return false;
        if (is_upper(w[i]))
            cased = true;
    }
    return cased;
}

char *dspy__infer_prefix(const char *name)
{
    struct dspy_buf a, b, out;
    char *res = NULL;
    dspy__buf_init(&a, 0);
    dspy__buf_init(&b, 0);
    dspy__buf_init(&out, 0);
    if (sub_pass(&a, name, any_char, upper_then_lowers) ||
        sub_pass(&b, a.ptr, lower_or_digit, one_upper) ||
        sub_pass(&a, b.ptr, is_alpha, one_digit) || sub_pass(&b, a.ptr, is_digit, one_alpha))
        goto out;
    /* Split on "_" and title-case each word, keeping acronyms. */
    const char *s = b.ptr;
    for (;;) {
        size_t n = strcspn(s, "_");
        bool upper = word_is_upper(s, n);
        for (size_t i = 0; i < n; i++) {
            char c = s[i];
            if (!upper)
                c = i == 0 ? (is_lower(c) ? (char)(c - 32) : c)
                           : (is_upper(c) ? (char)(c + 32) : c);
            if (dspy__buf_addc(&out, c))
                goto out;
        }
        if (!s[n])
            break;
        if (dspy__buf_addc(&out, ' '))
            goto out;
        s += n + 1;
    }
    if (dspy__buf_addc(&out, ':'))
        goto out;
    res = dspy__buf_detach(&out, NULL);
out:
    dspy__buf_release(&a);
    dspy__buf_release(&b);
    dspy__buf_release(&out);
    return res;
}

/* Length in code points of the leading str.lstrip() whitespace of s[0..len), and whether
 * the line has any other content. */
static size_t lead_ws(const char *s, size_t len, bool *has_content)
{
    size_t i = 0, cps = 0;
    *has_content = false;
    while (i < len) {
        uint32_t cp;
        size_t n = dspy__utf8_decode(s, len, i, &cp);
        if (!dspy__py_isspace(cp)) {
            *has_content = true;
            break;
        }
        i += n;
        cps++;
    }
    return cps;
}

/* Byte offset after skipping `cps` code points of s[0..len). */
static size_t skip_cps(const char *s, size_t len, size_t cps)
{
    size_t i = 0;
    while (cps-- && i < len) {
        uint32_t cp;
        i += dspy__utf8_decode(s, len, i, &cp);
    }
    return i;
}

/* str.expandtabs(8): columns count code points and restart after \n and \r. */
static dspy_status expand_tabs(struct dspy_buf *b, const char *s)
{
    size_t col = 0, len = strlen(s), i = 0;
    dspy_status rc = dspy__buf_reserve(b, len);
    while (!rc && i < len) {
        uint32_t cp;
        size_t n = dspy__utf8_decode(s, len, i, &cp);
        if (cp == '\t') {
            size_t pad = 8 - col % 8;
            col += pad;
            while (!rc && pad--)
                rc = dspy__buf_addc(b, ' ');
        } else {
            rc = dspy__buf_add(b, s + i, n);
            col = cp == '\n' || cp == '\r' ? 0 : col + 1;
        }
        i += n;
    }
    return rc ? rc : dspy__buf_add(b, "", 0);
}

char *dspy__cleandoc(const char *text)
{
    struct dspy_buf x, out;
    char *res = NULL;
    size_t margin = (size_t)-1, nlines = 1;
    dspy__buf_init(&x, 0);
    dspy__buf_init(&out, 0);
    if (expand_tabs(&x, text))
        goto out;
    const char *s = x.ptr;
    size_t len = x.len;
    /* Minimum indentation of the non-blank lines after the first. */
    const char *nl = memchr(s, '\n', len);
    while (nl) {
        const char *line = nl + 1;
        const char *next = memchr(line, '\n', len - (size_t)(line - s));
        size_t llen = next ? (size_t)(next - line) : len - (size_t)(line - s);
        bool content;
        size_t ind = lead_ws(line, llen, &content);
        if (content && ind < margin)
            margin = ind;
        nl = next;
        nlines++;
    }
    /* Rebuild: first line lstripped, others minus the margin; then drop leading and
     * trailing empty lines. */
    size_t first_kept = 0, last_kept = 0;
    bool any = false;
    size_t pos = 0;
    struct {
        size_t start, len;
    } cur;
    for (size_t k = 0; k < nlines; k++) {
        const char *line = s + pos;
        const char *next = memchr(line, '\n', len - pos);
        size_t llen = next ? (size_t)(next - line) : len - pos;
        bool content;
        if (k == 0) {
            size_t cps = lead_ws(line, llen, &content);
            cur.start = pos + skip_cps(line, llen, cps);
        } else {
            cur.start = pos + (margin == (size_t)-1 ? 0 : skip_cps(line, llen, margin));
        }
        cur.len = pos + llen - cur.start;
        if (cur.len) {
            if (!any)
                first_kept = k;
            last_kept = k;
            any = true;
        }
        pos += llen + 1;
    }
    pos = 0;
    for (size_t k = 0; any && k <= last_kept; k++) {
        const char *line = s + pos;
        const char *next = memchr(line, '\n', len - pos);
        size_t llen = next ? (size_t)(next - line) : len - pos;
        bool content;
        size_t start;
        if (k == 0)
            start = skip_cps(line, llen, lead_ws(line, llen, &content));
        else
            start = margin == (size_t)-1 ? 0 : skip_cps(line, llen, margin);
        if (k >= first_kept) {
            if (k > first_kept && dspy__buf_addc(&out, '\n'))
                goto out;
            if (dspy__buf_add(&out, line + start, llen - start))
                goto out;
        }
        pos += llen + 1;
    }
    if (dspy__buf_add(&out, "", 0)) /* an empty result still needs its NUL */
        goto out;
    res = dspy__buf_detach(&out, NULL);
out:
    dspy__buf_release(&x);
    dspy__buf_release(&out);
    return res;
}

bool dspy__is_py_keyword(const char *s, size_t len)
{
    static const char *const kw[] = {
        "False", "None",     "True",  "and",    "as",   "assert", "async",  "await",    "break",
        "class", "continue", "def",   "del",    "elif", "else",   "except", "finally",  "for",
        "from",  "global",   "if",    "import", "in",   "is",     "lambda", "nonlocal", "not",
        "or",    "pass",     "raise", "return", "try",  "while",  "with",   "yield",
    };
    for (size_t i = 0; i < sizeof(kw) / sizeof(kw[0]); i++)
        if (strlen(kw[i]) == len && !memcmp(kw[i], s, len))
            return true;
    return false;
}

/* ---- fields ---- */

void dspy__field_release(struct dspy_field *f)
{
    dspy_free(f->name);
    dspy_free(f->desc);
    dspy_free(f->prefix);
    dspy__type_free(f->type);
    memset(f, 0, sizeof(*f));
}

dspy_status dspy__field_init(struct dspy_field *f, const char *name, size_t len,
                             enum dspy_field_role role, struct dspy_type *type, bool given)
{
    memset(f, 0, sizeof(*f));
    f->role = role;
    f->type = type;
    f->type_given = given;
    f->name = dspy_strndup(name, len);
    if (!f->name)
        goto fail;
    f->desc = dspy_malloc(len + 4);
    if (!f->desc)
        goto fail;
    memcpy(f->desc, "${", 2);
    memcpy(f->desc + 2, name, len);
    memcpy(f->desc + 2 + len, "}", 2);
    f->prefix = dspy__infer_prefix(f->name);
    if (!f->prefix)
        goto fail;
    return DSPY_OK;
fail:
    f->type = NULL; /* the caller still owns `type` on failure */
    dspy__field_release(f);
    return DSPY_ENOMEM;
}

/* ---- the signature object ---- */

static void free_fields(struct dspy_field *fields, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dspy__field_release(&fields[i]);
    dspy_free(fields);
}

dspy_status dspy_signature_parse(const char *text, const char *instructions, dspy_signature **out,
                                 struct dspy_error *err)
{
    struct dspy_signature *sig;
    dspy_status rc;

    if (!text || !out)
        return dspy__err(err, DSPY_EINVAL, "signature: NULL argument");
    if (instructions && !dspy__utf8_valid(instructions, strlen(instructions)))
        return dspy__err(err, DSPY_EUTF8, "signature: instructions are not valid UTF-8");
    sig = dspy_calloc(1, sizeof(*sig));
    if (!sig)
        return dspy__err(err, DSPY_ENOMEM, "signature: out of memory");
    rc = dspy__signature_parse_fields(text, &sig->fields, &sig->nfields, &sig->ninputs, err);
    if (rc)
        goto fail;
    /* DSPy falls back to the default text for "" as well as for None. */
    sig->instructions = instructions && *instructions ? dspy__cleandoc(instructions)
                                                      : dspy_signature_default_instructions(sig);
    if (!sig->instructions) {
        rc = dspy__err(err, DSPY_ENOMEM, "signature: out of memory");
        goto fail;
    }
    *out = sig;
    return DSPY_OK;
fail:
    dspy_signature_free(sig);
    return rc;
}

dspy_signature *dspy_signature_copy(const dspy_signature *sig)
{
    struct dspy_signature *c = dspy_calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->ninputs = sig->ninputs;
    c->instructions = dspy_strdup(sig->instructions);
    if (!c->instructions)
        goto fail;
    if (sig->nfields) {
        c->fields = dspy_calloc(sig->nfields, sizeof(*c->fields));
        if (!c->fields)
            goto fail;
    }
    for (; c->nfields < sig->nfields; c->nfields++) {
        const struct dspy_field *f = &sig->fields[c->nfields];
        struct dspy_field *g = &c->fields[c->nfields];
        g->role = f->role;
        g->type_given = f->type_given;
        g->name = dspy_strdup(f->name);
        g->desc = dspy_strdup(f->desc);
        g->prefix = dspy_strdup(f->prefix);
        g->type = dspy__type_copy(f->type);
        if (!g->name || !g->desc || !g->prefix || !g->type) {
            c->nfields++;
            goto fail;
        }
    }
    return c;
fail:
    dspy_signature_free(c);
    return NULL;
}

void dspy_signature_free(dspy_signature *sig)
{
    if (!sig)
        return;
    free_fields(sig->fields, sig->nfields);
    dspy_free(sig->instructions);
    dspy_free(sig);
}

size_t dspy_signature_nfields(const dspy_signature *sig)
{
    return sig->nfields;
}
size_t dspy_signature_ninputs(const dspy_signature *sig)
{
    return sig->ninputs;
}

const struct dspy_field *dspy_signature_field(const dspy_signature *sig, size_t i)
{
    return i < sig->nfields ? &sig->fields[i] : NULL;
}

long dspy_signature_find(const dspy_signature *sig, const char *name)
{
    for (size_t i = 0; name && i < sig->nfields; i++)
        if (!strcmp(sig->fields[i].name, name))
            return (long)i;
    return -1;
}

const char *dspy_signature_instructions(const dspy_signature *sig)
{
    return sig->instructions;
}

static dspy_status add_name_list(struct dspy_buf *b, const dspy_signature *sig, size_t from,
                                 size_t to)
{
    dspy_status rc = DSPY_OK;
    for (size_t i = from; !rc && i < to; i++)
        rc = dspy__buf_addf(b, "%s`%s`", i > from ? ", " : "", sig->fields[i].name);
    return rc;
}

char *dspy_signature_default_instructions(const dspy_signature *sig)
{
    struct dspy_buf b;
    dspy__buf_init(&b, 0);
    if (dspy__buf_adds(&b, "Given the fields ") || add_name_list(&b, sig, 0, sig->ninputs) ||
        dspy__buf_adds(&b, ", produce the fields ") ||
        add_name_list(&b, sig, sig->ninputs, sig->nfields) || dspy__buf_addc(&b, '.')) {
        dspy__buf_release(&b);
        return NULL;
    }
    return dspy__buf_detach(&b, NULL);
}

dspy_status dspy_signature_set_instructions(dspy_signature *sig, const char *text)
{
    if (text && !dspy__utf8_valid(text, strlen(text)))
        return DSPY_EUTF8;
    /* As DSPy's `instructions` setter (used by load_state): "" stays "". */
    char *c = text ? dspy__cleandoc(text) : dspy_signature_default_instructions(sig);
    if (!c)
        return DSPY_ENOMEM;
    dspy_free(sig->instructions);
    sig->instructions = c;
    return DSPY_OK;
}

static dspy_status set_string(dspy_signature *sig, const char *field, const char *value,
                              size_t member)
{
    long i = dspy_signature_find(sig, field);
    if (i < 0)
        return DSPY_ENOTFOUND;
    if (!value)
        return DSPY_EINVAL;
    if (!dspy__utf8_valid(value, strlen(value)))
        return DSPY_EUTF8;
    char *c = dspy_strdup(value);
    if (!c)
        return DSPY_ENOMEM;
    char **slot = (char **)((char *)&sig->fields[i] + member);
    dspy_free(*slot);
    *slot = c;
    return DSPY_OK;
}

dspy_status dspy_signature_set_desc(dspy_signature *sig, const char *field, const char *desc)
{
    return set_string(sig, field, desc, offsetof(struct dspy_field, desc));
}

dspy_status dspy_signature_set_prefix(dspy_signature *sig, const char *field, const char *prefix)
{
    return set_string(sig, field, prefix, offsetof(struct dspy_field, prefix));
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (!n || s[0] == '_' || is_digit(s[0]) || dspy__is_py_keyword(s, n))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_alpha(s[i]) && !is_digit(s[i]) && s[i] != '_')
            return false;
    return true;
}

dspy_status dspy_signature_prepend_output(dspy_signature *sig, const char *name, const char *desc)
{
    struct dspy_field f;
    struct dspy_type *t;
    dspy_status rc;

    if (!name || !valid_name(name))
        return DSPY_EINVAL;
    if (dspy_signature_find(sig, name) >= 0)
        return DSPY_EINVAL;
    t = dspy__type_new(DSPY_TYPE_STR);
    if (!t)
        return DSPY_ENOMEM;
    rc = dspy__field_init(&f, name, strlen(name), DSPY_FIELD_OUTPUT, t, true);
    if (rc) {
        dspy__type_free(t);
        return rc;
    }
    if (desc && !dspy__utf8_valid(desc, strlen(desc))) {
        dspy__field_release(&f);
        return DSPY_EUTF8;
    }
    if (desc) {
        char *d = dspy_strdup(desc);
        if (!d) {
            dspy__field_release(&f);
            return DSPY_ENOMEM;
        }
        dspy_free(f.desc);
        f.desc = d;
    }
    struct dspy_field *nf = dspy_realloc(sig->fields, (sig->nfields + 1) * sizeof(*nf));
    if (!nf) {
        dspy__field_release(&f);
        return DSPY_ENOMEM;
    }
    sig->fields = nf;
    memmove(&nf[sig->ninputs + 1], &nf[sig->ninputs], (sig->nfields - sig->ninputs) * sizeof(*nf));
    nf[sig->ninputs] = f;
    sig->nfields++;
    /* DSPy's prepend() builds a new signature, and an empty instruction text becomes the
     * default one, which now names the new field too. */
    if (!sig->instructions[0]) {
        char *d = dspy_signature_default_instructions(sig);
        if (d) {
            dspy_free(sig->instructions);
            sig->instructions = d;
        }
    }
    return DSPY_OK;
}

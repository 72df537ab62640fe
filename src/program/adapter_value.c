/* Typed output values (program layer): DSPy's parse_value (str as is, Literal
 * normalization, json_repair then literal_eval) followed by the pydantic lax-mode
 * validation it relies on ("42" -> 42, "yes" -> True, smart unions), and the
 * AdapterParseError texts the adapters raise. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/fmtfloat.h"
#include "base/pyfmt.h"
#include "base/status.h"
#include "program/adapter_int.h"

#define MAX_DEPTH 128

/* How well a value fit a type, as pydantic's smart union ranks candidates. */
enum fit { FIT_NONE = 0, FIT_LAX = 1, FIT_STRICT = 2, FIT_EXACT = 3, FIT_OOM = -1 };

static enum fit fail_with(struct dspy_buf *why, const char *msg, const json_t *input)
{
    dspy__buf_reset(why);
    if (dspy__buf_adds(why, msg) || dspy__buf_adds(why, " [input_value=") ||
        dspy__py_repr(why, input) || dspy__buf_addc(why, ']'))
        return FIT_OOM;
    return FIT_NONE;
}

static enum fit give(json_t **out, json_t *v, enum fit fit)
{
    if (!v)
        return FIT_OOM;
    *out = v;
    return fit;
}

/* ---- scalars from strings (pydantic's lax rules) ---- */

/* The string without leading and trailing Unicode whitespace, copied into `tmp`. */
static bool trimmed(const json_t *v, char *tmp, size_t cap, size_t *n)
{
    const char *s = json_string_value(v);
    size_t a = 0, z = json_string_length(v);
    dspy__py_strip(s, &a, &z);
    if (z - a >= cap)
        return false;
    memcpy(tmp, s + a, z - a);
    tmp[z - a] = '\0';
    *n = z - a;
    return true;
}

/* int from str: sign, digits with single underscores between them, and optionally a
 * fraction of zeros ("42.0"). */
static bool str_to_int(const json_t *v, json_int_t *out)
{
    char t[96], digits[96];
    size_t n, i = 0, k = 0;
    if (!trimmed(v, t, sizeof(t), &n))
        return false;
    if (i < n && (t[i] == '+' || t[i] == '-'))
        digits[k++] = t[i++];
    size_t start = i;
    for (; i < n; i++) {
        if (t[i] >= '0' && t[i] <= '9')
            digits[k++] = t[i];
        else if (t[i] == '_' && i > start && i + 1 < n && t[i + 1] >= '0' && t[i + 1] <= '9' &&
                 t[i - 1] != '_')
            continue;
        else
            break;
    }
    if (i == start)
        return false;
    if (i < n && t[i] == '.') {
        size_t z = ++i;
        while (i < n && t[i] == '0')
            i++;
        if (i == z)
            return false;
    }
    if (i != n)
        return false;
    digits[k] = '\0';
    errno = 0;
    long long r = strtoll(digits, NULL, 10);
    if (errno == ERANGE)
        return false;
    *out = r;
    return true;
}

static bool ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if ((*a | 0x20) != (*b | 0x20))
            return false;
    return !*a && !*b;
}

/* float from str: Python float() syntax with underscores, plus inf/nan words. */
static bool str_to_float(const json_t *v, double *out)
{
    char t[512], clean[512];
    size_t n, k = 0;
    if (!trimmed(v, t, sizeof(t), &n) || !n)
        return false;
    const char *w = t + (t[0] == '+' || t[0] == '-');
    if (ieq(w, "inf") || ieq(w, "infinity") || ieq(w, "nan")) {
        *out = ieq(w, "nan") ? NAN : t[0] == '-' ? -INFINITY : INFINITY;
        return true;
    }
    if (t[0] == '_' || t[n - 1] == '_')
        return false;
    bool digit = false;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (c == '_')
            continue;
        if (!strchr("0123456789.eE+-", c))
            return false;
        digit = digit || (c >= '0' && c <= '9');
        clean[k++] = c;
    }
    clean[k] = '\0';
    if (!digit || strchr(clean, 'x') || strchr(clean, 'X'))
        return false;
    char *end;
    *out = strtod(clean, &end);
    return *end == '\0';
}

static bool str_to_bool(const json_t *v, bool *out)
{
    static const char *const yes[] = { "1", "on", "t", "true", "y", "yes" };
    static const char *const no[] = { "0", "off", "f", "false", "n", "no" };
    const char *s = json_string_value(v);
    if (json_string_length(v) > 5)
        return false;
    for (size_t i = 0; i < 6; i++) {
        if (ieq(s, yes[i]))
            return *out = true, true;
        if (ieq(s, no[i]))
            return *out = false, true;
    }
    return false;
}

static enum fit v_int(const json_t *v, json_t **out, struct dspy_buf *why)
{
    json_int_t i;
    if (json_is_integer(v))
        return give(out, json_incref((json_t *)v), FIT_EXACT);
    if (json_is_boolean(v))
        return give(out, json_integer(json_is_true(v)), FIT_LAX);
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != floor(d))
            return fail_with(why,
                             "Input should be a valid integer, got a number with a "
                             "fractional part",
                             v);
        if (d < -9.2233720368547758e18 || d >= 9.2233720368547758e18)
            return fail_with(why, "Input is an integer too large for dspyc to hold", v);
        return give(out, json_integer((json_int_t)d), FIT_LAX);
    }
    if (json_is_string(v)) {
        if (str_to_int(v, &i))
            return give(out, json_integer(i), FIT_LAX);
        return fail_with(why,
                         "Input should be a valid integer, unable to parse string as an "
                         "integer",
                         v);
    }
    return fail_with(why, "Input should be a valid integer", v);
}

static enum fit v_float(const json_t *v, json_t **out, struct dspy_buf *why)
{
    double d;
    if (json_is_real(v))
        return give(out, json_incref((json_t *)v), FIT_EXACT);
    if (json_is_integer(v))
        return give(out, json_real((double)json_integer_value(v)), FIT_STRICT);
    if (json_is_boolean(v))
        return give(out, json_real(json_is_true(v) ? 1.0 : 0.0), FIT_LAX);
    if (json_is_string(v)) {
        if (!str_to_float(v, &d))
            return fail_with(why,
                             "Input should be a valid number, unable to parse string as "
                             "a number",
                             v);
        if (!isfinite(d))
            return fail_with(why, "Input is an infinite or NaN float, which JSON cannot hold", v);
        return give(out, json_real(d), FIT_LAX);
    }
    return fail_with(why, "Input should be a valid number", v);
}

static enum fit v_bool(const json_t *v, json_t **out, struct dspy_buf *why)
{
    bool b;
    if (json_is_boolean(v))
        return give(out, json_incref((json_t *)v), FIT_EXACT);
    if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1))
        return give(out, json_boolean(json_integer_value(v)), FIT_LAX);
    if (json_is_real(v) && (json_real_value(v) == 0.0 || json_real_value(v) == 1.0))
        return give(out, json_boolean(json_real_value(v) == 1.0), FIT_LAX);
    if (json_is_string(v) && str_to_bool(v, &b))
        return give(out, json_boolean(b), FIT_LAX);
    return fail_with(why,
                     json_is_string(v) ? "Input should be a valid boolean, unable to interpret "
                                         "input"
                                       : "Input should be a valid boolean",
                     v);
}

/* ---- Literal ---- */

/* The choice's value as JSON (new reference). */
static json_t *choice_value(const struct dspy_type *t, size_t i)
{
    const char *s = t->literals[i];
    if (t->literal_is_str[i])
        return json_string(s);
    if (!strcmp(s, "True") || !strcmp(s, "False"))
        return json_boolean(s[0] == 'T');
    if (!strcmp(s, "None"))
        return json_null();
    if (strpbrk(s, ".eEn"))
        return json_real(strtod(s, NULL));
    return json_integer(strtoll(s, NULL, 10));
}

static char pykind(const json_t *v)
{
    return json_is_boolean(v) ? 'b' : json_is_integer(v) ? 'i' : 'f';
}

/* Python's `v == choice` (1 or 0; -1 when out of memory); *same_type tells whether the
 * types also agree. */
static int choice_equals(const struct dspy_type *t, size_t i, const json_t *v, bool *same_type)
{
    json_t *c = choice_value(t, i);
    bool eq = false;
    *same_type = false;
    if (!c)
        return -1;
    if (json_is_string(c) || json_is_null(c)) {
        eq = json_equal(c, (json_t *)v);
        *same_type = eq;
    } else if (json_is_number(v) || json_is_boolean(v)) {
        /* bool, int and float compare by numeric value */
        double a = json_is_boolean(c) ? json_is_true(c) : json_number_value(c);
        double b = json_is_boolean(v) ? json_is_true(v) : json_number_value(v);
        eq = a == b;
        *same_type = eq && pykind(c) == pykind(v);
    }
    json_decref(c);
    return eq;
}

static dspy_status add_choices_repr(struct dspy_buf *b, const struct dspy_type *t)
{
    dspy_status rc = dspy__buf_addc(b, '(');
    for (size_t i = 0; !rc && i < t->nliterals; i++) {
        if (i)
            rc = dspy__buf_adds(b, ", ");
        if (!rc)
            rc = t->literal_is_str[i] ? dspy__py_repr_str(b, t->literals[i], strlen(t->literals[i]))
                                      : dspy__buf_adds(b, t->literals[i]);
    }
    if (!rc && t->nliterals == 1)
        rc = dspy__buf_addc(b, ',');
    return rc ? rc : dspy__buf_addc(b, ')');
}

static enum fit v_literal(const struct dspy_type *t, const json_t *v, json_t **out,
                          struct dspy_buf *why)
{
    for (size_t i = 0; i < t->nliterals; i++) {
        bool same;
        int eq = choice_equals(t, i, v, &same);
        if (eq < 0)
            return FIT_OOM;
        if (eq)
            return give(out, choice_value(t, i), same ? FIT_EXACT : FIT_LAX);
    }
    dspy__buf_reset(why);
    if (dspy__buf_adds(why, "Input should be one of ") || add_choices_repr(why, t) ||
        dspy__buf_adds(why, " [input_value=") || dspy__py_repr(why, v) || dspy__buf_addc(why, ']'))
        return FIT_OOM;
    return FIT_NONE;
}

/* ---- containers and unions ---- */

static enum fit validate(const struct dspy_type *t, const json_t *v, json_t **out,
                         struct dspy_buf *why, int depth);

static const struct dspy_type any_type = { DSPY_TYPE_ANY, 0, NULL, 0, NULL, NULL, false };

static enum fit at_index(enum fit f, struct dspy_buf *why, size_t i)
{
    if (f == FIT_NONE && dspy__buf_addf(why, " (at item %zu)", i))
        return FIT_OOM;
    return f;
}

static enum fit v_array(const struct dspy_type *t, const json_t *v, json_t **out,
                        struct dspy_buf *why, int depth)
{
    bool tuple = t->kind == DSPY_TYPE_TUPLE;
    size_t n = json_array_size(v);
    enum fit fit = tuple ? FIT_LAX : FIT_EXACT; /* a JSON list is not a tuple */
    json_t *a;

    if (!json_is_array(v))
        return fail_with(why,
                         tuple ? "Input should be a valid tuple" : "Input should be a valid list",
                         v);
    if (tuple && t->nargs && !t->variadic && n != t->nargs) {
        dspy__buf_reset(why);
        if (dspy__buf_addf(why, "Tuple should have %zu item%s, not %zu", t->nargs,
                           t->nargs == 1 ? "" : "s", n))
            return FIT_OOM;
        return FIT_NONE;
    }
    if (!(a = json_array()))
        return FIT_OOM;
    for (size_t i = 0; i < n; i++) {
        const struct dspy_type *it = !t->nargs               ? &any_type
                                     : tuple && !t->variadic ? t->args[i]
                                                             : t->args[0];
        json_t *item = NULL;
        enum fit f = at_index(validate(it, json_array_get(v, i), &item, why, depth + 1), why, i);
        if (f <= FIT_NONE || json_array_append_new(a, item)) {
            json_decref(a);
            return f <= FIT_NONE ? f : FIT_OOM;
        }
        if (f < fit)
            fit = f;
    }
    *out = a;
    return fit;
}

/* json.dumps turns non-string dict keys into text this way. */
static json_t *json_key(const json_t *k)
{
    char num[DSPY__FLOAT_MAX];
    if (json_is_string(k))
        return json_incref((json_t *)k);
    if (json_is_true(k))
        return json_string("true");
    if (json_is_false(k))
        return json_string("false");
    if (json_is_null(k))
        return json_string("null");
    if (json_is_integer(k))
        return json_sprintf("%" JSON_INTEGER_FORMAT, json_integer_value(k));
    if (json_is_real(k)) {
        dspy__float_fmt(num, json_real_value(k), DSPY__FLOAT_PYTHON);
        return json_string(num);
    }
    return NULL;
}

static enum fit v_dict(const struct dspy_type *t, const json_t *v, json_t **out,
                       struct dspy_buf *why, int depth)
{
    const char *key;
    size_t klen;
    json_t *value, *o;
    enum fit fit = FIT_EXACT;

    if (!json_is_object(v))
        return fail_with(why, "Input should be a valid dictionary", v);
    if (!(o = json_object()))
        return FIT_OOM;
    json_object_keylen_foreach((json_t *)v, key, klen, value) {
        json_t *k = json_stringn(key, klen), *kv = NULL, *vv = NULL, *ks;
        enum fit fk = k ? validate(t->nargs ? t->args[0] : &any_type, k, &kv, why, depth + 1)
                        : FIT_OOM;
        json_decref(k);
        enum fit fv = fk > FIT_NONE
                          ? validate(t->nargs ? t->args[1] : &any_type, value, &vv, why, depth + 1)
                          : fk;
        ks = kv ? json_key(kv) : NULL;
        json_decref(kv);
        if (fv <= FIT_NONE || !ks ||
            json_object_setn_new(o, json_string_value(ks), json_string_length(ks), vv)) {
            if (fv > FIT_NONE && !ks)
                json_decref(vv);
            json_decref(ks);
            json_decref(o);
            return fv <= FIT_NONE ? fv : FIT_OOM;
        }
        json_decref(ks);
        if (fk < fit)
            fit = fk;
        if (fv < fit)
            fit = fv;
    }
    *out = o;
    return fit;
}

/* Smart mode: the first member that fits exactly wins; otherwise the best fit, the
 * earliest on ties. */
static enum fit v_union(const struct dspy_type *t, const json_t *v, json_t **out,
                        struct dspy_buf *why, int depth)
{
    json_t *best = NULL;
    enum fit best_fit = FIT_NONE;
    struct dspy_buf errs;
    dspy__buf_init(&errs, 4096);
    for (size_t i = 0; i < t->nargs; i++) {
        json_t *cand = NULL;
        enum fit f = validate(t->args[i], v, &cand, why, depth + 1);
        if (f == FIT_OOM) {
            json_decref(best);
            dspy__buf_release(&errs);
            return FIT_OOM;
        }
        if (f == FIT_NONE) {
            dspy__buf_addf(&errs, "%s%s", errs.len ? "; " : "", why->ptr ? why->ptr : "");
            continue;
        }
        if (f > best_fit) {
            json_decref(best);
            best = cand;
            best_fit = f;
            if (f == FIT_EXACT)
                break;
        } else {
            json_decref(cand);
        }
    }
    if (best_fit > FIT_NONE) {
        dspy__buf_release(&errs);
        *out = best;
        return best_fit;
    }
    dspy__buf_reset(why);
    enum fit r = dspy__buf_adds(why, "No member of the union matched: ") ||
                         dspy__buf_add(why, errs.ptr ? errs.ptr : "", errs.len)
                     ? FIT_OOM
                     : FIT_NONE;
    dspy__buf_release(&errs);
    return r;
}

static enum fit validate(const struct dspy_type *t, const json_t *v, json_t **out,
                         struct dspy_buf *why, int depth)
{
    if (depth > MAX_DEPTH)
        return fail_with(why, "Value nested too deeply", v);
    switch (t->kind) {
    case DSPY_TYPE_STR:
        if (json_is_string(v))
            return give(out, json_incref((json_t *)v), FIT_EXACT);
        return fail_with(why, "Input should be a valid string", v);
    case DSPY_TYPE_INT: return v_int(v, out, why);
    case DSPY_TYPE_FLOAT: return v_float(v, out, why);
    case DSPY_TYPE_BOOL: return v_bool(v, out, why);
    case DSPY_TYPE_NONE:
        if (json_is_null(v))
            return give(out, json_null(), FIT_EXACT);
        return fail_with(why, "Input should be None", v);
    case DSPY_TYPE_ANY: return give(out, json_incref((json_t *)v), FIT_EXACT);
    case DSPY_TYPE_LIST:
    case DSPY_TYPE_TUPLE: return v_array(t, v, out, why, depth);
    case DSPY_TYPE_DICT: return v_dict(t, v, out, why, depth);
    case DSPY_TYPE_LITERAL: return v_literal(t, v, out, why);
    case DSPY_TYPE_UNION: return v_union(t, v, out, why, depth);
    }
    return FIT_NONE;
}

static dspy_status finish_validate(const struct dspy_type *t, const json_t *v, json_t **out,
                                   struct dspy_buf *why)
{
    struct dspy_buf msg;
    dspy_status rc;
    json_t *res = NULL;
    enum fit f = validate(t, v, &res, why, 0);
    if (f == FIT_OOM)
        return DSPY_ENOMEM;
    if (f > FIT_NONE) {
        *out = res;
        return DSPY_OK;
    }
    /* pydantic's ValidationError opens with "1 validation error for <type>". */
    dspy__buf_init(&msg, 0);
    rc = dspy__buf_adds(&msg, "1 validation error for ");
    if (!rc)
        rc = dspy__type_add_name(&msg, t);
    if (!rc)
        rc = dspy__buf_adds(&msg, "\n  ");
    if (!rc)
        rc = dspy__buf_add(&msg, why->ptr ? why->ptr : "", why->len);
    if (!rc) {
        dspy__buf_reset(why);
        rc = dspy__buf_add(why, msg.ptr, msg.len);
    }
    dspy__buf_release(&msg);
    return rc ? DSPY_ENOMEM : DSPY_EADAPTER;
}

/* ---- parse_value ---- */

static bool is_str_or_none_union(const struct dspy_type *t)
{
    bool has_str = false, has_none = false;
    if (t->kind != DSPY_TYPE_UNION)
        return false;
    for (size_t i = 0; i < t->nargs; i++) {
        has_str = has_str || t->args[i]->kind == DSPY_TYPE_STR;
        has_none = has_none || t->args[i]->kind == DSPY_TYPE_NONE;
    }
    return has_str && has_none;
}

static dspy_status parse_literal(const struct dspy_type *t, const json_t *value, json_t **out,
                                 struct dspy_buf *why)
{
    bool same;
    for (size_t i = 0; i < t->nliterals; i++) {
        int eq = choice_equals(t, i, value, &same);
        if (eq < 0)
            return DSPY_ENOMEM;
        if (eq) {
            *out = json_incref((json_t *)value);
            return DSPY_OK;
        }
    }
    if (json_is_string(value)) {
        /* strip, unwrap Literal[...] / str[...], drop one pair of matching quotes */
        const char *s = json_string_value(value);
        size_t a = 0, z = json_string_length(value);
        dspy__py_strip(s, &a, &z);
        if (z > a && s[z - 1] == ']' &&
            ((z - a >= 8 && !memcmp(s + a, "Literal[", 8)) ||
             (z - a >= 4 && !memcmp(s + a, "str[", 4)))) {
            a = (size_t)((const char *)memchr(s + a, '[', z - a) - s) + 1;
            z--;
        }
        if (z > a + 1 && s[a] == s[z - 1] && (s[a] == '"' || s[a] == '\'')) {
            a++;
            z--;
        }
        for (size_t i = 0; i < t->nliterals; i++) {
            const char *c = t->literals[i];
            if (t->literal_is_str[i] && strlen(c) == z - a && !memcmp(c, s + a, z - a)) {
                *out = json_stringn(s + a, z - a);
                return *out ? DSPY_OK : DSPY_ENOMEM;
            }
        }
    }
    dspy__buf_reset(why);
    if (dspy__py_repr(why, value) || dspy__buf_adds(why, " is not one of ") ||
        add_choices_repr(why, t))
        return DSPY_ENOMEM;
    return DSPY_EADAPTER;
}

dspy_status dspy__adapter_parse_value(const struct dspy_type *t, const json_t *value, json_t **out,
                                      struct dspy_buf *why)
{
    json_t *cand;
    dspy_status rc;

    if (t->kind == DSPY_TYPE_STR) {
        struct dspy_buf b;
        if (json_is_string(value)) {
            *out = json_incref((json_t *)value);
            return DSPY_OK;
        }
        dspy__buf_init(&b, 0);
        rc = dspy__py_str(&b, value);
        *out = rc ? NULL : json_stringn(b.ptr, b.len);
        dspy__buf_release(&b);
        return *out ? DSPY_OK : DSPY_ENOMEM;
    }
    if (t->kind == DSPY_TYPE_LITERAL)
        return parse_literal(t, value, out, why);
    if (!json_is_string(value) || is_str_or_none_union(t))
        return finish_validate(t, value, out, why);
    const char *s = json_string_value(value);
    size_t n = json_string_length(value);
    if (dspy__json_nonfinite(s, n)) {
        dspy__buf_reset(why);
        if (dspy__buf_adds(why, "Input should be a finite number (dspyc cannot hold inf or "
                                "nan) [input_value=") ||
            dspy__buf_add(why, s, n) || dspy__buf_addc(why, ']'))
            return DSPY_ENOMEM;
        return DSPY_EADAPTER;
    }
    bool oom = false;
    cand = dspy__json_repair(s, n, &oom);
    if ((!cand || (json_is_string(cand) && json_string_length(cand) == 0)) && n && !oom) {
        json_decref(cand);
        cand = dspy__py_literal_eval(s, n, &oom);
        if (!cand)
            cand = json_incref((json_t *)value);
    }
    if (!cand && !oom)
        cand = json_string("");
    if (!cand || oom) {
        json_decref(cand);
        return DSPY_ENOMEM;
    }
    rc = finish_validate(t, cand, out, why);
    json_decref(cand);
    return rc;
}

/* ---- errors and defaults ---- */

/* Append at most `max` bytes of s (cut on a character boundary, marked with "..."). */
static dspy_status add_clipped(struct dspy_buf *b, const char *s, size_t len, size_t max)
{
    if (len <= max)
        return dspy__buf_add(b, s, len);
    size_t cut = max > 3 ? max - 3 : 0;
    while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
        cut--;
    dspy_status rc = dspy__buf_add(b, s, cut);
    return rc ? rc : dspy__buf_adds(b, "...");
}

static dspy_status add_names(struct dspy_buf *b, const dspy_signature *sig, const json_t *parsed)
{
    dspy_status rc = dspy__buf_addc(b, '[');
    bool first = true;
    if (parsed) {
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)parsed, key, v) {
            if (!rc)
                rc = dspy__buf_addf(b, "%s%s", first ? "" : ", ", key);
            first = false;
        }
    } else {
        for (size_t i = sig->ninputs; !rc && i < sig->nfields; i++) {
            rc = dspy__buf_addf(b, "%s%s", first ? "" : ", ", sig->fields[i].name);
            first = false;
        }
    }
    return rc ? rc : dspy__buf_addc(b, ']');
}

dspy_status dspy__adapter_parse_error(struct dspy_error *err, const char *class_name,
                                      const dspy_signature *sig, const char *text, size_t len,
                                      const char *message, const json_t *parsed)
{
    struct dspy_buf head, tail, all;
    size_t cap = err ? sizeof(err->message) - 1 : 511;
    dspy_status rc;

    dspy__buf_init(&head, 0);
    dspy__buf_init(&tail, 0);
    dspy__buf_init(&all, 0);
    rc = message ? add_clipped(&head, message, strlen(message), 240) : DSPY_OK;
    if (!rc && message)
        rc = dspy__buf_adds(&head, "\n\n");
    if (!rc)
        rc = dspy__buf_addf(&head, "Adapter %s failed to parse the LM response. \n\nLM Response: ",
                            class_name);
    if (!rc)
        rc = dspy__buf_adds(&tail, " \n\nExpected to find output fields in the LM response: ");
    if (!rc)
        rc = add_names(&tail, sig, NULL);
    if (!rc)
        rc = dspy__buf_adds(&tail, " \n\n");
    if (!rc && parsed) {
        rc = dspy__buf_adds(&tail, "Actual output fields parsed from the LM response: ");
        if (!rc)
            rc = add_names(&tail, sig, parsed);
        if (!rc)
            rc = dspy__buf_adds(&tail, " \n\n");
    }
    if (!rc) {
        /* The LM response gets what room is left; the rest is DSPy's text as is. */
        size_t fixed = head.len + tail.len, room = cap > fixed + 32 ? cap - fixed : 32;
        rc = dspy__buf_add(&all, head.ptr, head.len);
        if (!rc)
            rc = add_clipped(&all, text, len, room);
        if (!rc)
            rc = dspy__buf_add(&all, tail.ptr, tail.len);
    }
    if (rc)
        dspy__err(err, DSPY_ENOMEM, "adapter: out of memory");
    else
        dspy__err(err, DSPY_EADAPTER, "%s", all.ptr);
    dspy__buf_release(&head);
    dspy__buf_release(&tail);
    dspy__buf_release(&all);
    return rc ? DSPY_ENOMEM : DSPY_EADAPTER;
}

dspy_status dspy__adapter_finish(const char *class_name, const dspy_signature *sig,
                                 const char *text, size_t len, json_t **fields,
                                 struct dspy_error *err)
{
    /* The usual reply already holds every output, in the signature's order (the Chat
     * parser sets them so): nothing to rebuild. */
    size_t nout = sig->nfields - sig->ninputs;
    if (json_object_size(*fields) == nout) {
        void *it = json_object_iter(*fields);
        size_t i = sig->ninputs;
        while (it && i < sig->nfields && !strcmp(json_object_iter_key(it), sig->fields[i].name)) {
            it = json_object_iter_next(*fields, it);
            i++;
        }
        if (!it && i == sig->nfields)
            return DSPY_OK;
    }
    json_t *ordered = json_object();
    bool complete = true;
    if (!ordered)
        return dspy__err(err, DSPY_ENOMEM, "adapter: out of memory");
    for (size_t i = sig->ninputs; i < sig->nfields; i++) {
        const struct dspy_field *f = &sig->fields[i];
        json_t *v = json_object_get(*fields, f->name);
        if (v)
            v = json_incref(v);
        else if (dspy__type_allows_none(f->type))
            v = json_null();
        else {
            complete = false;
            continue;
        }
        if (json_object_set_new(ordered, f->name, v)) {
            json_decref(ordered);
            return dspy__err(err, DSPY_ENOMEM, "adapter: out of memory");
        }
    }
    json_decref(*fields);
    *fields = ordered;
    if (complete)
        return DSPY_OK;
    return dspy__adapter_parse_error(err, class_name, sig, text, len, NULL, ordered);
}

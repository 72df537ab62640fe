/* LM text to loose values (program layer): the reduced json_repair.loads that DSPy's
 * parse_value and JSONAdapter.parse run before validation (json_repair 0.64's number,
 * comment, string-end, escape and missing-colon repairs), and JSONAdapter's balanced-brace
 * search. Bounded in depth and linear in the input. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/ascii.h"
#include "base/pyfmt.h"
#include "program/adapter_int.h"

#define MAX_DEPTH DSPY__READER_MAX_DEPTH
/* json_repair reads a top-level "(...)" as a tuple. Deciding that scans ahead, so only the
 * first PAREN_TRIES candidates, each within PAREN_SCAN bytes, are considered. */
#define PAREN_TRIES 64
#define PAREN_SCAN 4096

/* Short local names for the shared reader helpers (adapter_int.h). */
static inline int at(const struct dspy__reader *r, size_t k)
{
    return dspy__reader_at(r, k);
}
static inline json_t *keep(struct dspy__reader *r, json_t *v)
{
    return dspy__reader_keep(r, v);
}
static inline bool put(struct dspy__reader *r, json_t *o, const char *k, size_t n, json_t *v)
{
    return dspy__reader_set(r, o, k, n, v);
}
static inline bool append(struct dspy__reader *r, json_t *a, json_t *v)
{
    return dspy__reader_append(r, a, v);
}
static inline int hex4(const struct dspy__reader *r, size_t k)
{
    return dspy__reader_hex4(r, k);
}

json_t *dspy__reader_keep(struct dspy__reader *r, json_t *v)
{
    if (!v)
        r->oom = true;
    return v;
}

bool dspy__reader_set(struct dspy__reader *r, json_t *o, const char *key, size_t klen, json_t *v)
{
    if (!v)
        return false;
    if (json_object_setn_new(o, key, klen, v) == 0)
        return true;
    r->oom = true;
    return false;
}

bool dspy__reader_append(struct dspy__reader *r, json_t *a, json_t *v)
{
    if (!v)
        return false;
    if (json_array_append_new(a, v) == 0)
        return true;
    r->oom = true;
    return false;
}

/* ---- shared scanners ---- */

int dspy__reader_hex4(const struct dspy__reader *r, size_t k)
{
    int v = 0;
    for (size_t i = 0; i < 4; i++) {
        int h = dspy__hexval(at(r, k + i));
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

/* A JSON-style escape after the backslash at r->pos; `strict` rejects unknown ones
 * (lenient mode keeps them as written). Returns false on a strict-mode error. */
static bool json_escape(struct dspy__reader *r, struct dspy_buf *b, bool strict, dspy_status *rc)
{
    int c = at(r, 1);
    const char *map = strchr("\"\\/bfnrt'", c > 0 ? c : 1);
    static const char out[] = "\"\\/\b\f\n\r\t'";
    if (map && (c != '\'' || !strict)) {
        *rc = dspy__buf_addc(b, out[map - "\"\\/bfnrt'"]);
        r->pos += 2;
        return true;
    }
    if (c == 'u') {
        int hi = hex4(r, 2);
        if (hi >= 0 && (hi < 0xD800 || hi > 0xDFFF)) {
            r->pos += 6;
            *rc = dspy__utf8_add(b, (uint32_t)hi);
            return true;
        }
        if (hi >= 0xD800 && hi <= 0xDBFF && at(r, 6) == '\\' && at(r, 7) == 'u') {
            int lo = hex4(r, 8);
            if (lo >= 0xDC00 && lo <= 0xDFFF) {
                r->pos += 12;
                *rc = dspy__utf8_add(b, 0x10000 + (((uint32_t)hi - 0xD800) << 10) +
                                            ((uint32_t)lo - 0xDC00));
                return true;
            }
        }
    }
    if (c == 'x' && !strict) {
        int h1 = dspy__hexval(at(r, 2)), h2 = dspy__hexval(at(r, 3));
        if (h1 >= 0 && h2 >= 0) { /* json_repair reads \xNN as the code point NN */
            r->pos += 4;
            *rc = dspy__utf8_add(b, (uint32_t)(h1 * 16 + h2));
            return true;
        }
    }
    if (strict)
        return false;
    *rc = dspy__buf_addc(b, '\\');
    r->pos++;
    return true;
}

/* ---- strict JSON (json.loads) ---- */

static void json_ws(struct dspy__reader *r)
{
    while (r->pos < r->len && strchr(" \t\n\r", r->s[r->pos]) && r->s[r->pos])
        r->pos++;
}

static json_t *strict_value(struct dspy__reader *r);

static json_t *strict_string(struct dspy__reader *r, struct dspy_buf *b)
{
    dspy_status rc = DSPY_OK;
    dspy__buf_reset(b);
    r->pos++;
    for (;;) {
        int c = at(r, 0);
        if (c < 0x20)
            return NULL; /* end of text or a raw control character */
        if (c == '"') {
            r->pos++;
            if (rc)
                r->oom = true;
            return rc ? NULL : keep(r, json_stringn(b->ptr ? b->ptr : "", b->len));
        }
        if (c == '\\') {
            if (!json_escape(r, b, true, &rc))
                return NULL;
        } else {
            rc = dspy__buf_addc(b, (char)c);
            r->pos++;
        }
        if (rc) {
            r->oom = true;
            return NULL;
        }
    }
}

/* JSON number grammar; sets *is_int. Returns its length, 0 if none. */
static size_t json_number_len(const char *s, size_t len, bool *is_int)
{
    size_t i = 0;
    *is_int = true;
    if (i < len && s[i] == '-')
        i++;
    if (i < len && s[i] == '0')
        i++;
    else if (i < len && s[i] >= '1' && s[i] <= '9')
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
    else
        return 0;
    if (i + 1 < len && s[i] == '.' && s[i + 1] >= '0' && s[i + 1] <= '9') {
        *is_int = false;
        i++;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1;
        if (j < len && (s[j] == '+' || s[j] == '-'))
            j++;
        if (j < len && s[j] >= '0' && s[j] <= '9') {
            *is_int = false;
            while (j < len && s[j] >= '0' && s[j] <= '9')
                j++;
            i = j;
        }
    }
    return i;
}

/* The value of a number token; big integers become floats, as json_t cannot hold them.
 * NULL for an infinite float (or, with r->oom set, when out of memory). */
static json_t *number_value(struct dspy__reader *r, const char *tok, size_t n, bool is_int)
{
    char buf[512];
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < sizeof(buf); i++)
        if (tok[i] != '_')
            buf[k++] = tok[i];
    buf[k] = '\0';
    if (n >= sizeof(buf))
        return NULL;
    if (is_int) {
        errno = 0;
        long long v = strtoll(buf, NULL, 10);
        if (errno != ERANGE)
            return keep(r, json_integer(v));
    }
    double d = strtod(buf, NULL);
    return isfinite(d) ? keep(r, json_real(d)) : NULL;
}

static json_t *strict_container(struct dspy__reader *r, bool is_object)
{
    struct dspy_buf key;
    json_t *c = keep(r, is_object ? json_object() : json_array());
    char close = is_object ? '}' : ']';
    dspy__buf_init(&key, 0);
    if (!c || ++r->depth > MAX_DEPTH)
        goto fail;
    r->pos++;
    json_ws(r);
    if (at(r, 0) == close) {
        r->pos++;
        goto done;
    }
    for (;;) {
        json_t *k = NULL, *v;
        json_ws(r);
        if (is_object) {
            if (at(r, 0) != '"' || !(k = strict_string(r, &key)))
                goto fail;
            json_ws(r);
            if (at(r, 0) != ':') {
                json_decref(k);
                goto fail;
            }
            r->pos++;
        }
        v = strict_value(r);
        if (is_object) {
            bool ok = put(r, c, json_string_value(k), json_string_length(k), v);
            json_decref(k);
            if (!ok)
                goto fail;
        } else if (!append(r, c, v)) {
            goto fail;
        }
        json_ws(r);
        if (at(r, 0) == ',') {
            r->pos++;
            continue;
        }
        if (at(r, 0) != close)
            goto fail;
        r->pos++;
        break;
    }
done:
    r->depth--;
    dspy__buf_release(&key);
    return c;
fail:
    r->depth--;
    dspy__buf_release(&key);
    json_decref(c);
    return NULL;
}

static json_t *strict_value(struct dspy__reader *r)
{
    const char *p = r->s + r->pos;
    size_t left = r->len - r->pos, n;
    bool is_int;
    json_ws(r);
    p = r->s + r->pos;
    left = r->len - r->pos;
    switch (at(r, 0)) {
    case '{': return strict_container(r, true);
    case '[': return strict_container(r, false);
    case '"': {
        struct dspy_buf b;
        dspy__buf_init(&b, 0);
        json_t *v = strict_string(r, &b);
        dspy__buf_release(&b);
        return v;
    }
    case 't':
        if (left >= 4 && !memcmp(p, "true", 4))
            return r->pos += 4, json_true();
        return NULL;
    case 'f':
        if (left >= 5 && !memcmp(p, "false", 5))
            return r->pos += 5, json_false();
        return NULL;
    case 'n':
        if (left >= 4 && !memcmp(p, "null", 4))
            return r->pos += 4, json_null();
        return NULL;
    default:
        if (!(n = json_number_len(p, left, &is_int)))
            return NULL; /* NaN and Infinity included: json_t has no place for them */
        r->pos += n;
        return number_value(r, p, n, is_int);
    }
}

/* ---- lenient JSON (json_repair) ---- */

static void loose_ws(struct dspy__reader *r)
{
    while (r->pos < r->len) {
        uint32_t cp;
        size_t n = dspy__utf8_decode(r->s, r->len, r->pos, &cp);
        if (!dspy__py_isspace(cp))
            break;
        r->pos += n;
    }
}

/* Where a lenient value sits: json_repair ends unterminated strings, unquoted words and
 * numbers differently inside objects, arrays and tuples. */
enum loose_ctx { IN_OBJECT, IN_ARRAY, IN_TUPLE };

/* json_repair's skip_whitespace_and_comments: "#" and "//" comments run to the end of the
 * line ("#" also to the closing bracket of an enclosing array or nested object), block
 * comments to their "*" "/" or the end of the text. */
static void loose_skip(struct dspy__reader *r, enum loose_ctx ctx)
{
    for (;;) {
        loose_ws(r);
        int c = at(r, 0);
        if (c == '#' || (c == '/' && at(r, 1) == '/')) {
            while (r->pos < r->len && r->s[r->pos] != '\n' && r->s[r->pos] != '\r' &&
                   !(c == '#' && ((ctx != IN_OBJECT && r->s[r->pos] == ']') ||
                                  (r->depth > 1 && r->s[r->pos] == '}'))))
                r->pos++;
        } else if (c == '/' && at(r, 1) == '*') {
            size_t i = r->pos + 2;
            while (i + 1 < r->len && !(r->s[i] == '*' && r->s[i + 1] == '/'))
                i++;
            r->pos = i + 1 < r->len ? i + 2 : r->len;
        } else {
            return;
        }
    }
}

static json_t *loose_value(struct dspy__reader *r, enum loose_ctx ctx);

/* Whether an unescaped `q` closes the string whose body starts at r->pos. */
static bool quote_follows(const struct dspy__reader *r, int q)
{
    for (size_t i = r->pos; i < r->len; i++) {
        if (r->s[i] == '\\')
            i++;
        else if (r->s[i] == q)
            return true;
    }
    return false;
}

/* The length of s[0, n) without Python-whitespace at its end. */
static size_t py_rstrip(const char *s, size_t n)
{
    while (n) {
        size_t k = n - 1;
        uint32_t cp;
        while (k > 0 && n - k < 4 && ((unsigned char)s[k] & 0xC0) == 0x80)
            k--;
        dspy__utf8_decode(s, n, k, &cp);
        if (!dspy__py_isspace(cp))
            break;
        n = k;
    }
    return n;
}

/* In a key, json_repair takes the quote at r->pos as text when another quote follows
 * before any ':' or '}' with something other than spaces between: {"a" 5, "b": 1} has
 * the key `a" 5, "b`, while {"a" "x"} has the key "a" with a missing colon. */
static bool key_quote_is_text(const struct dspy__reader *r, int q)
{
    bool blank = true;
    for (size_t i = r->pos + 1; i < r->len; i++) {
        char c = r->s[i];
        if (c == ':' || c == '}')
            return false;
        if (c == q)
            return !blank && r->s[i - 1] != '\\';
        if (!strchr(" \t\n\r", c) || !c)
            blank = false;
    }
    return false;
}

/* json_repair's skip_to_character: the first of `chars` at or after `from` that no odd run
 * of backslashes escapes, else r->len. */
static size_t skip_to(const struct dspy__reader *r, size_t from, const char *chars)
{
    size_t slashes = 0;
    for (size_t i = from; i < r->len; i++) {
        if (r->s[i] == '\\') {
            slashes++;
            continue;
        }
        if (r->s[i] && strchr(chars, r->s[i]) && slashes % 2 == 0)
            return i;
        slashes = 0;
    }
    return r->len;
}

static size_t skip_blank(const struct dspy__reader *r, size_t i)
{
    while (i < r->len && strchr(" \t\n\r\f\v", r->s[i]) && r->s[i])
        i++;
    return i;
}

/* At a '}' inside an object value's string (position p), whether json_repair ends the
 * string there (parse_string, "a } that closes the object"): when a quote follows, unless it
 * closes this string (',' or '}' or nothing after it) or what follows is not a key ("x":);
 * when none follows, at a '}' with a ':' anywhere after it, or with at most one character
 * before the next '}' (or the end); always at the last one. */
static bool brace_ends_string(const struct dspy__reader *r, size_t p, int q)
{
    char qs[2] = { (char)q, 0 };
    bool ends = p + 1 >= r->len || r->s[p + 1] != '\\';
    size_t i = skip_to(r, p + 1, qs);
    if (i < r->len) {
        i = skip_blank(r, i + 1);
        if (i >= r->len || r->s[i] == ',' || r->s[i] == '}') {
            ends = false;
        } else if ((i = skip_to(r, i, qs)) >= r->len) {
            ends = false;
        } else {
            i = skip_blank(r, i + 1);
            if (i < r->len && r->s[i] != ':')
                ends = false;
        }
    } else {
        if (skip_to(r, p + 1, ":") < r->len)
            return true;
        i = skip_blank(r, p + 1);
        if (skip_to(r, i, "}") - i > 1)
            ends = false;
    }
    return ends || skip_blank(r, p + 1) >= r->len;
}

/* A quoted string. In an object value a '}' may end it (brace_ends_string, unless it
 * closes a '{' of the string's own); one never closed in an array ends, as in json_repair,
 * at the first ']' (left for the container), else at the end. */
static json_t *loose_string(struct dspy__reader *r, int close, bool is_key)
{
    struct dspy_buf b;
    dspy_status rc = DSPY_OK;
    int q = at(r, 0);
    size_t end = r->len, open_braces = 0;
    json_t *v = NULL;
    dspy__buf_init(&b, 0);
    r->pos++;
    if (close == ']' && !quote_follows(r, q)) {
        const char *c = memchr(r->s + r->pos, close, r->len - r->pos);
        if (c)
            end = (size_t)(c - r->s);
    }
    while (!rc && r->pos < end && (at(r, 0) != q || (is_key && key_quote_is_text(r, q)))) {
        int c = at(r, 0);
        if (c == q) {
            rc = dspy__buf_addc(&b, (char)q);
            r->pos++;
        } else if (c == '\\' && r->pos + 1 < end) {
            json_escape(r, &b, false, &rc);
        } else {
            if (close == '}' && c == '}' && !open_braces && brace_ends_string(r, r->pos, q))
                break;
            if (c == '{')
                open_braces++;
            else if (c == '}' && open_braces)
                open_braces--;
            rc = dspy__buf_addc(&b, r->s[r->pos]);
            r->pos++;
        }
    }
    bool closed = at(r, 0) == q;
    if (closed)
        r->pos++; /* the closing quote; a missing one is forgiven */
    size_t n = b.len;
    if (!rc && n && (!closed || b.ptr[n - 1] == '\n'))
        n = py_rstrip(b.ptr, n); /* json_repair's rstrip of a string left open or ending in \n */
    if (rc)
        r->oom = true;
    else
        v = keep(r, json_stringn(b.ptr ? b.ptr : "", n));
    dspy__buf_release(&b);
    return v;
}

/* An unquoted word up to one of `stops` (or a newline), trimmed; constants by name. */
static json_t *loose_word(struct dspy__reader *r, const char *stops)
{
    size_t a = r->pos, z;
    while (r->pos < r->len && (r->s[r->pos] == '\0' || !strchr(stops, r->s[r->pos])) &&
           r->s[r->pos] != '\n')
        r->pos++;
    z = r->pos;
    dspy__py_strip(r->s, &a, &z);
    static const struct {
        const char *word;
        int kind;
    } consts[] = { { "true", 1 },  { "True", 1 }, { "false", 2 },
                   { "False", 2 }, { "null", 3 }, { "None", 3 } };
    for (size_t i = 0; i < sizeof(consts) / sizeof(consts[0]); i++) {
        if (z - a == strlen(consts[i].word) && !memcmp(r->s + a, consts[i].word, z - a))
            return consts[i].kind == 1   ? json_true()
                   : consts[i].kind == 2 ? json_false()
                                         : json_null();
    }
    bool is_int;
    size_t n = json_number_len(r->s + a, z - a, &is_int);
    if (n && n == z - a) {
        json_t *num = number_value(r, r->s + a, n, is_int);
        if (num || r->oom)
            return num;
    }
    return keep(r, json_stringn(r->s + a, z - a));
}

/* An unquoted key, up to ':' ',' '}' ']' or a newline, trimmed; always text ({2: 1} has
 * the key "2", {true: 1} the key "true"). */
static json_t *loose_key(struct dspy__reader *r)
{
    size_t a = r->pos, z;
    uint32_t cp;
    while (r->pos < r->len && (r->s[r->pos] == '\0' || !strchr(":,}]", r->s[r->pos]))) {
        size_t n = dspy__utf8_decode(r->s, r->len, r->pos, &cp);
        if (dspy__py_isspace(cp))
            break;
        r->pos += n;
    }
    z = r->pos;
    if (at(r, 0) == ',') {
        z = a; /* "{x, "d": 2}": a bare word before a comma is no key */
    } else if (r->pos < r->len && dspy__py_isspace(cp)) {
        /* json_repair takes "key junk" as a comment: "my key: 1" has the key "key" */
        loose_ws(r);
        if (at(r, 0) != ':' && at(r, 0) != ',')
            z = a;
    }
    return keep(r, json_stringn(r->s + a, z - a));
}

/* json_repair's parse_boolean_or_null: true/false/null/none in any case, ending at the end
 * of the text, a space or one of ",)]}". */
static json_t *loose_literal(struct dspy__reader *r)
{
    static const char *const words[] = { "true", "false", "null", "none" };
    for (size_t w = 0; w < 4; w++) {
        size_t n = strlen(words[w]), k = 0;
        while (k < n && r->pos + k < r->len && (r->s[r->pos + k] | 0x20) == words[w][k])
            k++;
        if (k != n)
            continue;
        int next = at(r, n);
        uint32_t cp = 0;
        if (next >= 0)
            dspy__utf8_decode(r->s, r->len, r->pos + n, &cp);
        if (next < 0 || (next && strchr(",)]}", next)) || dspy__py_isspace(cp)) {
            r->pos += n;
            return w == 0 ? json_true() : w == 1 ? json_false() : json_null();
        }
    }
    return NULL;
}

static const char *word_stops(enum loose_ctx ctx)
{
    return ctx == IN_OBJECT ? ",}]\"" : ctx == IN_ARRAY ? ",]}" : ",)";
}

/* Python's float() and int() grammars over text without underscores. */
static bool py_number_ok(const char *s, size_t n, bool is_float)
{
    size_t i = 0, digits = 0;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        i++;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++, digits++;
    if (!is_float)
        return digits && i == n;
    if (i < n && s[i] == '.')
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            digits++;
    if (!digits)
        return false;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t d = 0;
        if (++i < n && (s[i] == '-' || s[i] == '+'))
            i++;
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            d++;
        if (!d)
            return false;
    }
    return i == n;
}

/* json_repair's parse_number: a run of "0-9 - . e E / , _" ("," not in arrays, "+" after
 * an exponent mark), read as a word instead when a letter follows; a trailing "+-eE/," is
 * given back ("1e" is 1, "5 // c" is 5); what Python's int()/float() refuse stays text. */
static json_t *loose_number(struct dspy__reader *r, enum loose_ctx ctx)
{
    struct dspy_buf num;
    size_t start = r->pos;
    json_t *v = NULL;
    dspy__buf_init(&num, 0);
    for (; r->pos < r->len; r->pos++) {
        char c = r->s[r->pos];
        bool after_e = num.len && (num.ptr[num.len - 1] == 'e' || num.ptr[num.len - 1] == 'E');
        if (!(c && (strchr("0123456789-.eE/,_", c) || (c == '+' && after_e))) ||
            (c == ',' && ctx != IN_OBJECT))
            break;
        if (c != '_' && dspy__buf_addc(&num, c)) {
            r->oom = true;
            goto out;
        }
    }
    int next = at(r, 0);
    if ((next >= 'a' && next <= 'z') || (next >= 'A' && next <= 'Z') || next >= 0x80) {
        r->pos = start; /* "5x" is a word */
        v = loose_word(r, word_stops(ctx));
        goto out;
    }
    if (num.len && strchr("+-eE/,", num.ptr[num.len - 1])) {
        num.len--;
        r->pos--;
    }
    const char *s = num.ptr ? num.ptr : "";
    bool is_float = memchr(s, '.', num.len) || memchr(s, 'e', num.len) || memchr(s, 'E', num.len);
    if (!memchr(s, ',', num.len) && py_number_ok(s, num.len, is_float)) {
        v = number_value(r, s, num.len, !is_float);
        if (v || r->oom)
            goto out;
    }
    v = keep(r, json_stringn(s, num.len));
out:
    dspy__buf_release(&num);
    return v;
}

/* After a member's value json_repair steps over one ',' or stray quote. */
static void loose_after_member(struct dspy__reader *r)
{
    int c = at(r, 0);
    if (c == ',' || c == '"' || c == '\'')
        r->pos++;
}

/* One "key: value" member; false on a hard failure (out of memory, a constant as key). */
static bool loose_member(struct dspy__reader *r, json_t *obj)
{
    int ch = at(r, 0);
    if (ch == ':') {
        r->pos++; /* a ':' before the key is ignored */
        ch = at(r, 0);
        if (ch < 0)
            return true;
    }
    bool quoted = ch == '"' || ch == '\'';
    if (!quoted && ch < 0x80 && !(ch >= 'a' && ch <= 'z') && !(ch >= 'A' && ch <= 'Z') &&
        !(ch >= '0' && ch <= '9') && ch != '_') {
        r->pos++; /* no key starts with punctuation: json_repair steps over it */
        return true;
    }
    json_t *k = quoted ? loose_string(r, 0, true) : loose_key(r);
    if (!k)
        return false;
    loose_skip(r, IN_OBJECT);
    ch = at(r, 0);
    if (ch < 0 || ch == '}' || (!quoted && !json_string_length(k) && ch != ':')) {
        json_decref(k); /* a key with no value is dropped */
        return true;
    }
    /* json_repair steps over the character after the key whether or not it is the colon,
     * so {"a" "x"} reads as {"a": "x"} */
    uint32_t cp;
    r->pos += dspy__utf8_decode(r->s, r->len, r->pos, &cp);
    loose_skip(r, IN_OBJECT);
    ch = at(r, 0);
    json_t *v = ch < 0 || ch == ',' || ch == '}' ? keep(r, json_string(""))
                                                 : loose_value(r, IN_OBJECT);
    bool ok = put(r, obj, json_string_value(k), json_string_length(k), v);
    json_decref(k);
    if (ok)
        loose_after_member(r);
    return ok;
}

static bool truthy(const json_t *v);

/* After the top-level object's '}': json_repair reads `, "key": value ...` that follows
 * into the same object (a '}' that ended a string left open, say). True, at the key's
 * quote, when such members follow. */
static bool more_members(struct dspy__reader *r)
{
    size_t p = skip_blank(r, r->pos);
    if (p >= r->len || r->s[p] != ',')
        return false;
    p = skip_blank(r, p + 1);
    if (p >= r->len || (r->s[p] != '"' && r->s[p] != '\''))
        return false;
    r->pos = p;
    return true;
}

static json_t *loose_container(struct dspy__reader *r, bool is_object)
{
    json_t *c = keep(r, is_object ? json_object() : json_array());
    char close = is_object ? '}' : ']';
    enum loose_ctx ctx = is_object ? IN_OBJECT : IN_ARRAY;
    if (!c || ++r->depth > MAX_DEPTH)
        goto fail;
    r->pos++;
    for (size_t top = (size_t)-1;;) {
        if (r->pos == top)
            r->pos++; /* the last round made no progress on a stray character: skip it */
        top = r->pos;
        loose_skip(r, ctx);
        int ch = at(r, 0);
        if (ch < 0 || (ch == '`' && at(r, 1) == '`' && at(r, 2) == '`'))
            break; /* unterminated, or a code fence closes first: close it */
        if (ch == close || ch == '}' || ch == ']') {
            r->pos++;
            if (is_object && r->depth == 1 && more_members(r))
                continue;
            break;
        }
        if (ch == ',') {
            r->pos++;
            continue;
        }
        if (!is_object) {
            json_t *v = loose_value(r, IN_ARRAY);
            int next = at(r, 0);
            if (v && !truthy(v) && next != ']' && next != ',' && next >= 0) {
                /* json_repair drops an empty item that does not end at ']' or ',' ("[-]")
                 * and steps over one character */
                uint32_t cp;
                json_decref(v);
                r->pos += dspy__utf8_decode(r->s, r->len, r->pos, &cp);
                continue;
            }
            if (!append(r, c, v))
                goto fail;
            continue;
        }
        if (!loose_member(r, c))
            goto fail;
    }
    r->depth--;
    return c;
fail:
    r->depth--;
    json_decref(c);
    return NULL;
}

static json_t *loose_tuple(struct dspy__reader *r);

static json_t *loose_value(struct dspy__reader *r, enum loose_ctx ctx)
{
    loose_ws(r);
    int ch = at(r, 0);
    if (ch == '{' || ch == '[')
        return loose_container(r, ch == '{');
    if (ch == '(')
        return loose_tuple(r);
    if (ch == '"' || ch == '\'')
        return loose_string(r, ctx == IN_OBJECT ? '}' : ctx == IN_ARRAY ? ']' : 0, false);
    if ((ch >= '0' && ch <= '9') || ch == '-' || ch == '.')
        return loose_number(r, ctx);
    if (ch == '/') {
        r->pos++; /* a stray slash (comments were skipped before): json_repair's "" */
        return keep(r, json_string(""));
    }
    json_t *lit = loose_literal(r);
    return lit ? lit : loose_word(r, word_stops(ctx));
}

/* json_repair's ObjectComparer.is_same_object: same Python types and shape. */
static bool same_shape(const json_t *a, const json_t *b)
{
    if (json_is_boolean(a) && json_is_boolean(b))
        return true;
    if (json_typeof(a) != json_typeof(b))
        return false;
    if (json_is_object(a)) {
        const char *k;
        json_t *v;
        if (json_object_size(a) != json_object_size(b))
            return false;
        json_object_foreach((json_t *)a, k, v) {
            json_t *w = json_object_get(b, k);
            if (!w || !same_shape(v, w))
                return false;
        }
        return true;
    }
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!same_shape(json_array_get(a, i), json_array_get(b, i)))
                return false;
    }
    return true;
}

/* Python truthiness of a container or string: json_repair's "strictly empty" negated. */
static bool truthy(const json_t *v)
{
    return !((json_is_array(v) && !json_array_size(v)) ||
             (json_is_object(v) && !json_object_size(v)) ||
             (json_is_string(v) && !json_string_length(v)));
}

/* Position just past the ')' closing the '(' at `open`, skipping quoted text and nested
 * brackets; 0 when it is not closed within PAREN_SCAN bytes. */
static size_t paren_end(const char *s, size_t len, size_t open)
{
    int depth = 0;
    char quote = 0;
    if (len - open > PAREN_SCAN)
        len = open + PAREN_SCAN;
    for (size_t i = open + 1; i < len; i++) {
        char c = s[i];
        if (c == '\\') {
            i++;
        } else if (quote) {
            quote = c == quote ? 0 : quote;
        } else if (c == '"' || c == '\'') {
            quote = c;
        } else if (c == '(' || c == '[' || c == '{') {
            depth++;
        } else if (c == ')' || c == ']' || c == '}') {
            if (depth == 0)
                return c == ')' ? i + 1 : 0;
            depth--;
        }
    }
    return 0;
}

/* json_repair's top_level_parenthesized_can_start_value, reduced: a '(' alone at the start
 * of its line, opening something value-like, closed before the end of a line. */
static bool paren_starts_value(const char *s, size_t len, size_t open)
{
    size_t i = open, j = open + 1, end;
    uint32_t cp;
    while (i > 0 && s[i - 1] != '\n' && s[i - 1] != '\r') {
        size_t k = i - 1;
        while (k > 0 && i - k < 4 && ((unsigned char)s[k] & 0xC0) == 0x80)
            k--;
        dspy__utf8_decode(s, i, k, &cp);
        if (!dspy__py_isspace(cp))
            return false;
        i = k;
    }
    while (j < len && strchr(" \t\n\r", s[j]) && s[j])
        j++;
    if (j >= len)
        return false;
    char c = s[j];
    bool ok = (c && strchr(")[{(\"'-.", c)) || (c >= '0' && c <= '9');
    static const char *const words[] = { "true", "null", "none", "false" };
    for (size_t w = 0; !ok && w < 4; w++) {
        size_t n = strlen(words[w]), k = 0;
        while (k < n && j + k < len && (s[j + k] | 0x20) == words[w][k])
            k++;
        ok = k == n;
    }
    if (!ok || !(end = paren_end(s, len, open)))
        return false;
    while (end < len && s[end] != '\n' && s[end] != '\r') {
        size_t n = dspy__utf8_decode(s, len, end, &cp);
        if (!dspy__py_isspace(cp))
            return false;
        end += n;
    }
    return true;
}

/* A tuple "(a, b)" read leniently as a list; "(a)" is just a. */
static json_t *loose_tuple(struct dspy__reader *r)
{
    json_t *c = keep(r, json_array());
    bool comma = false;
    if (!c || ++r->depth > MAX_DEPTH)
        goto fail;
    r->pos++;
    for (size_t top = (size_t)-1;;) {
        if (r->pos == top)
            r->pos++;
        top = r->pos;
        loose_ws(r);
        int ch = at(r, 0);
        if (ch < 0 || (ch == '`' && at(r, 1) == '`' && at(r, 2) == '`'))
            break;
        if (ch == ')') {
            r->pos++;
            break;
        }
        if (ch == ',') {
            comma = true;
            r->pos++;
            continue;
        }
        json_t *v = loose_value(r, IN_TUPLE);
        if (!append(r, c, v))
            goto fail;
    }
    r->depth--;
    if (!comma && json_array_size(c) == 1) {
        json_t *only = json_incref(json_array_get(c, 0));
        json_decref(c);
        return only;
    }
    return c;
fail:
    r->depth--;
    json_decref(c);
    return NULL;
}

/* The next top-level value at or after r->pos, read leniently; NULL if none. */
static json_t *next_container(struct dspy__reader *r, bool *found)
{
    *found = false;
    while (r->pos < r->len && r->s[r->pos] != '{' && r->s[r->pos] != '[' &&
           !(r->s[r->pos] == '(' && r->tries++ < PAREN_TRIES &&
             paren_starts_value(r->s, r->len, r->pos)))
        r->pos++;
    if (r->pos >= r->len)
        return NULL;
    *found = true;
    r->depth = 0;
    if (r->s[r->pos] == '(')
        return loose_tuple(r);
    return loose_container(r, r->s[r->pos] == '{');
}

/* Whether the first non-space character after a top-level value is a comma. */
static bool comma_follows(const char *s, size_t from, size_t len)
{
    size_t a = from, z = len;
    dspy__py_strip(s, &a, &z);
    return a < len && s[a] == ',';
}

json_t *dspy__json_repair(const char *s, size_t len, bool *oom)
{
    struct dspy__reader r = { s, len, 0, 0, 0, false, 0 };
    json_t *v = strict_value(&r), *all = NULL;
    bool found;
    if (v) {
        json_ws(&r);
        if (r.pos == len)
            return v;
        json_decref(v);
    }
    if (r.oom)
        goto fail;
    r.pos = 0;
    v = next_container(&r, &found);
    if (!v || r.pos >= len)
        goto out;
    /* More values may follow: json_repair returns them all as a list, where a value of
     * the same shape as the one before (and not comma-separated) replaces it. */
    if (!(all = keep(&r, json_array())) || !append(&r, all, v)) {
        if (!all)
            json_decref(v);
        v = NULL;
        goto fail;
    }
    v = NULL;
    while (r.pos < len) {
        bool comma = comma_follows(s, r.pos, len);
        json_t *j = next_container(&r, &found);
        if (!found || !j)
            break; /* nothing more, or a value too deep to read: keep what we have */
        size_t last = json_array_size(all) - 1;
        if (!truthy(j)) {
            json_decref(j);
            continue;
        }
        if ((!comma && same_shape(json_array_get(all, last), j)) ||
            !truthy(json_array_get(all, last)))
            json_array_remove(all, last);
        if (!append(&r, all, j))
            goto fail;
    }
    if (r.oom)
        goto fail;
    if (json_array_size(all) == 1) {
        v = json_incref(json_array_get(all, 0));
        json_decref(all);
        return v;
    }
    return all;
out:
    if (!r.oom)
        return v;
fail:
    json_decref(v);
    json_decref(all);
    *oom = r.oom;
    return NULL;
}

bool dspy__json_nonfinite(const char *s, size_t len)
{
    struct dspy__reader r = { s, len, 0, 0, 0, false, 0 };
    bool is_int;
    size_t n;
    json_ws(&r);
    const char *p = s + r.pos;
    size_t left = len - r.pos;
    if (left >= 1 && p[0] == '-' && left >= 9 && !memcmp(p + 1, "Infinity", 8))
        n = 9;
    else if (left >= 8 && !memcmp(p, "Infinity", 8))
        n = 8;
    else if (left >= 3 && !memcmp(p, "NaN", 3))
        n = 3;
    else if ((n = json_number_len(p, left, &is_int)) != 0) {
        json_t *v = number_value(&r, p, n, is_int);
        if (v || r.oom) {
            json_decref(v);
            return false;
        }
    }
    if (!n)
        return false;
    r.pos += n;
    json_ws(&r);
    return r.pos == len;
}

/* ---- balanced braces ---- */

int dspy__find_braces(const char *s, size_t len, size_t *start, size_t *end)
{
    /* The regex's first match starts at the earliest '{' that has a matching '}'; a
     * stack of open positions finds every pair in one pass. */
    size_t *stack = NULL, depth = 0, cap = 0, best = (size_t)-1, best_end = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '{') {
            if (depth == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                size_t *ns = dspy_realloc(stack, ncap * sizeof(*ns));
                if (!ns) {
                    dspy_free(stack);
                    return -1;
                }
                stack = ns;
                cap = ncap;
            }
            stack[depth++] = i;
        } else if (s[i] == '}' && depth) {
            size_t open = stack[--depth];
            if (open < best) {
                best = open;
                best_end = i + 1;
            }
        }
    }
    dspy_free(stack);
    if (best == (size_t)-1)
        return 0;
    *start = best;
    *end = best_end;
    return 1;
}

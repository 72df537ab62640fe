/* Small helpers shared by the dspyc subcommands (apps layer). */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

int parse_double_flag(const char *flag, const char *arg, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (errno || end == arg || *end || v < lo || v > hi) {
        fprintf(stderr, "dspyc: %s: '%s' is not a number in [%g, %g]\n", flag, arg, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int parse_long_flag(const char *flag, const char *arg, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno || end == arg || *end || v < lo || v > hi) {
        fprintf(stderr, "dspyc: %s: '%s' is not a whole number in [%ld, %ld]\n", flag, arg, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int parse_size_flag(const char *flag, const char *arg, double lo, double hi, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(arg, &end), mul = 1;
    switch (*end) {
    case 'k':
    case 'K': mul = 1024.0; break;
    case 'm':
    case 'M': mul = 1024.0 * 1024; break;
    case 'g':
    case 'G': mul = 1024.0 * 1024 * 1024; break;
    case 't':
    case 'T': mul = 1024.0 * 1024 * 1024 * 1024; break;
    default: break;
    }
    if (mul > 1)
        end++;
    v *= mul;
    if (errno || end == arg || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr,
                "dspyc: %s: '%s' is not a size in [%.0f, %.0f] bytes (suffixes K, M, G, T)\n", flag,
                arg, lo, hi);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

void line_reader_init(struct line_reader *r, FILE *f, size_t max)
{
    r->f = f;
    r->buf = NULL;
    r->cap = 0;
    r->max = max;
    r->lineno = 0;
    r->in_pos = r->in_len = 0;
    r->eof = false;
    r->stop = NULL;
}

void line_reader_release(struct line_reader *r)
{
    free(r->buf);
    r->buf = NULL;
}

/* More input into r->in: 1, 0 at the end (or on *stop), -1 on an error. */
static int refill(struct line_reader *r)
{
    int fd = fileno(r->f);
    for (;;) {
        if (r->stop) {
            struct pollfd p = { .fd = fd, .events = POLLIN };
            int ready = poll(&p, 1, 50);
            if (*r->stop)
                return 0;
            if (ready == 0 || (ready < 0 && errno == EINTR))
                continue;
        }
        ssize_t n = read(fd, r->in, sizeof(r->in));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        r->in_pos = 0;
        r->in_len = (size_t)n;
        return n > 0;
    }
}

static void keep_byte(struct line_reader *r, size_t *n, char c, bool *too_long)
{
    if (*n >= r->max) {
        *too_long = true;
        return;
    }
    if (*n + 1 >= r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 4096;
        char *p = realloc(r->buf, cap);
        if (!p)
            abort(); /* the CLI may abort on OOM (STYLE 16) */
        r->buf = p;
        r->cap = cap;
    }
    r->buf[(*n)++] = c;
}

int line_reader_next(struct line_reader *r, const char **line, size_t *len, bool *too_long)
{
    size_t n = 0;
    bool got_any = false, ended = false;
    *too_long = false;
    while (!ended) {
        if (r->in_pos == r->in_len) {
            int rc = r->eof ? 0 : refill(r);
            if (rc < 0)
                return -1;
            if (rc == 0) {
                r->eof = true;
                break;
            }
        }
        const char *start = r->in + r->in_pos, *end = r->in + r->in_len;
        const char *nl = memchr(start, '\n', (size_t)(end - start));
        const char *stop_at = nl ? nl : end;
        got_any = true;
        for (const char *p = start; p < stop_at; p++) /* bounded: at most max kept */
            keep_byte(r, &n, *p, too_long);
        r->in_pos = (size_t)((nl ? nl + 1 : end) - r->in);
        ended = nl != NULL;
    }
    if (!got_any && !*too_long)
        return 0;
    if (!r->buf) {
        r->buf = malloc(1);
        if (!r->buf)
            abort();
        r->cap = 1;
    }
    r->buf[n] = '\0';
    if (n && r->buf[n - 1] == '\r')
        r->buf[--n] = '\0';
    r->lineno++;
    *line = r->buf;
    *len = n;
    return 1;
}

json_t *error_to_json(const struct dspy_error *err)
{
    json_t *e = json_pack("{s:s, s:s}", "class", dspy_status_name(err->code), "message",
                          err->message[0] ? err->message : dspy_strerror(err->code));
    if (!e)
        abort();
    if (err->field[0])
        json_object_set_new(e, "field", json_string(err->field));
    if (err->file[0])
        json_object_set_new(e, "file", json_string(err->file));
    if (err->line >= 0)
        json_object_set_new(e, "line", json_integer(err->line));
    if (err->column >= 0)
        json_object_set_new(e, "column", json_integer(err->column));
    if (err->offset >= 0)
        json_object_set_new(e, "offset", json_integer(err->offset));
    if (err->http_status)
        json_object_set_new(e, "http_status", json_integer(err->http_status));
    return e;
}

void print_error(const char *what, const struct dspy_error *err)
{
    fprintf(stderr, "dspyc: %s: %s", what,
            err->message[0] ? err->message : dspy_strerror(err->code));
    if (err->file[0] && !strstr(err->message, err->file))
        fprintf(stderr, " (in %s%s%ld)", err->file, err->line >= 0 ? ", line " : "",
                err->line >= 0 ? err->line : 0L);
    fputc('\n', stderr);
}

int read_jsonl(const char *cmd, const char *path, size_t max_line, bool skip_blank,
               const char *expect, jsonl_fn fn, void *ud)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "dspyc%s%s: cannot open %s: %s\n", *cmd ? " " : "", cmd, path,
                strerror(errno));
        return -1;
    }
    struct line_reader lr;
    const char *line;
    size_t len;
    bool too_long;
    int got, stop = 0;
    long index = 0;
    line_reader_init(&lr, f, max_line);
    while (!stop && (got = line_reader_next(&lr, &line, &len, &too_long)) == 1) {
        bool blank = !too_long && strspn(line, " \t") == len;
        if (blank && skip_blank)
            continue;
        struct dspy_error err;
        dspy_error_clear(&err);
        err.line = lr.lineno;
        json_t *v = NULL;
        json_error_t je;
        if (too_long) {
            err.code = DSPY_ETOOBIG;
            snprintf(err.message, sizeof(err.message), "line longer than --max-line-bytes");
        } else if (blank) {
            err.code = DSPY_EINVAL;
            snprintf(err.message, sizeof(err.message), "empty line (every line must be %s)",
                     expect);
        } else if (!(v = json_loadb(line, len, JSON_ALLOW_NUL, &je))) {
            err.code = DSPY_EPARSE;
            err.column = je.column;
            snprintf(err.message, sizeof(err.message), "%s", je.text);
        } else if (!json_is_object(v)) {
            err.code = DSPY_EPARSE;
            err.column = 1;
            snprintf(err.message, sizeof(err.message), "expected %s", expect);
            json_decref(v);
            v = NULL;
        }
        stop = fn(ud, index++, lr.lineno, v, v ? NULL : &err);
        json_decref(v);
    }
    line_reader_release(&lr);
    if (!stop && got < 0)
        fprintf(stderr, "dspyc%s%s: reading %s: %s\n", *cmd ? " " : "", cmd, path, strerror(errno));
    if (f != stdin)
        fclose(f);
    return !stop && got < 0 ? -1 : stop;
}

struct objects {
    const char *path;
    json_t *arr;
};

static int keep_object(void *ud, long index, long lineno, json_t *obj, struct dspy_error *err)
{
    struct objects *o = ud;
    (void)index;
    if (!obj) {
        if (err->code == DSPY_ETOOBIG)
            fprintf(stderr, "dspyc: %s, line %ld: longer than 16 MiB\n", o->path, lineno);
        else if (err->column > 0)
            fprintf(stderr, "dspyc: %s, line %ld, column %ld: %s\n", o->path, lineno, err->column,
                    err->message);
        else
            fprintf(stderr, "dspyc: %s, line %ld: %s\n", o->path, lineno, err->message);
        return -1;
    }
    json_array_append(o->arr, obj);
    return 0;
}

json_t *load_jsonl_objects(const char *path)
{
    struct objects o = { path, json_array() };
    if (read_jsonl("", path, 16u << 20, false, "a JSON object", keep_object, &o)) {
        json_decref(o.arr);
        return NULL;
    }
    return o.arr;
}

int parse_assignment(const char *arg, json_t *into)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg) {
        fprintf(stderr, "dspyc: '%s' is not of the form field=value\n", arg);
        return -1;
    }
    char *name = strndup(arg, (size_t)(eq - arg));
    if (!name)
        abort();
    const char *text = eq + 1;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!v)
        v = json_string(text);
    if (!v) {
        fprintf(stderr, "dspyc: the value of '%s' is not valid UTF-8\n", name);
        free(name);
        return -1;
    }
    json_object_set_new(into, name, v);
    free(name);
    return 0;
}

dspy_price_table *prices_open(const char *cmd, const char *path)
{
    struct dspy_error err;
    dspy_price_table *t = NULL;
    dspy_error_clear(&err);
    if (dspy_price_table_new(path, &t, &err)) {
        fprintf(stderr, "dspyc %s: --prices: %s\n", cmd, err.message);
        return NULL;
    }
    return t;
}

static void print_unpriced(FILE *out, const json_t *by)
{
    const char *model;
    const json_t *row;
    int k = 0;
    json_object_foreach((json_t *)by, model, row) {
        if (json_integer_value(json_object_get(row, "calls")) &&
            !json_is_true(json_object_get(row, "priced")))
            fprintf(out, "%s%s", k++ ? ", " : "", model);
    }
}

void print_cost_summary(FILE *out, const json_t *cost)
{
    const json_t *by = json_object_get(cost, "by_model"), *row;
    const char *model;
    int priced_models = 0, shown = 0;
    if (!json_integer_value(json_object_get(cost, "calls")))
        return;
    json_object_foreach((json_t *)by, model, row) {
        priced_models += json_is_true(json_object_get(row, "priced"));
    }
    if (!priced_models) {
        fputs("estimated cost: unknown (no price for model ", out);
        print_unpriced(out, by);
        fputs("; add it with --prices FILE)\n", out);
        return;
    }
    fprintf(out, "estimated cost: $%.6f (", json_number_value(json_object_get(cost, "usd")));
    json_object_foreach((json_t *)by, model, row) {
        long calls = (long)json_integer_value(json_object_get(row, "calls"));
        if (!calls || !json_is_true(json_object_get(row, "priced")))
            continue;
        fprintf(out, "%s%s at $%g / $%g per 1k prompt / completion tokens: %ld calls, $%.6f",
                shown++ ? "; " : "", model, json_number_value(json_object_get(row, "input_per_1k")),
                json_number_value(json_object_get(row, "output_per_1k")), calls,
                json_number_value(json_object_get(row, "usd")));
    }
    fputc(')', out);
    double saved = json_number_value(json_object_get(cost, "saved_usd"));
    if (saved > 0)
        fprintf(out, "; cache hits saved $%.6f", saved);
    fputc('\n', out);
    if (!json_is_true(json_object_get(cost, "priced"))) {
        fputs("  not counted: no price for model ", out);
        print_unpriced(out, by);
        fputs(" (add it with --prices FILE)\n", out);
    }
}

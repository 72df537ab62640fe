/* Reads DSPy adapter prompts (sim layer): the Chat adapter's field lists,
 * structure placeholders and [[ ## field ## ]] blocks, and the JSON adapter's output
 * structure, as DSPy 3.x renders them (see docs/simulator.md). Works on borrowed views;
 * every input is untrusted, so every scan is bounded by the view. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "sim_int.h"

static const char IN_HEAD[] = "Your input fields are:\n";
static const char OUT_HEAD[] = "Your output fields are:\n";
static const char STRUCT_HEAD[] = "All interactions will be structured in the following way";
static const char JSON_HEAD[] = "Outputs will be a JSON object with the following fields.";
static const char OBJECTIVE[] = "In adhering to this structure, your objective is: ";
static const char NOTE[] = "# note: the value you produce ";
static const char SCHEMA_NOTE[] = "must adhere to the JSON schema: ";

static bool is_word(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

static struct dspy__sim_view view_from(const char *p, const char *end)
{
    return (struct dspy__sim_view){ p, (size_t)(end - p) };
}

static struct dspy__sim_view view_after(struct dspy__sim_view v, const char *at)
{
    return view_from(at, v.p + v.n);
}

/* ---- Field lists: "1. `name` (type): desc" lines; other lines continue a desc. ---- */

/* End of the type in "(type):" starting after '(' at p: the ')' that closes it, skipping
 * brackets and quoted strings. NULL if the line ends first. */
static const char *type_end(const char *p, const char *end)
{
    int depth = 0;
    char quote = 0;
    for (; p < end && *p != '\n'; p++) {
        if (quote) {
            if (*p == '\\' && p + 1 < end)
                p++;
            else if (*p == quote)
                quote = 0;
        } else if (*p == '\'' || *p == '"') {
            quote = *p;
        } else if (*p == '(' || *p == '[' || *p == '{') {
            depth++;
        } else if (*p == ']' || *p == '}') {
            depth--;
        } else if (*p == ')') {
            if (depth == 0 && p + 1 < end && p[1] == ':')
                return p;
            depth--;
        }
    }
    return NULL;
}

static bool parse_field_line(const char *p, const char *end, struct dspy__sim_field *f)
{
    const char *q = p;
    while (q < end && isdigit((unsigned char)*q))
        q++;
    if (q == p || end - q < 3 || q[0] != '.' || q[1] != ' ' || q[2] != '`')
        return false;
    const char *name = q += 3;
    while (q < end && is_word(*q))
        q++;
    if (q == name || end - q < 3 || q[0] != '`' || q[1] != ' ' || q[2] != '(')
        return false;
    const char *type = q + 3;
    const char *te = type_end(type, end);
    if (!te)
        return false;
    memset(f, 0, sizeof(*f));
    f->name = view_from(name, q);
    f->type = view_from(type, te);
    return true;
}

static size_t parse_fields(struct dspy__sim_view list, struct dspy__sim_field *out, size_t max)
{
    size_t n = 0;
    const char *p = list.p, *end = list.p + list.n;
    while (p < end && n < max) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        if (parse_field_line(p, le, &out[n]))
            n++;
        p = nl ? nl + 1 : end;
    }
    return n;
}

/* ---- [[ ## name ## ]] blocks ---- */

/* If the line [p, le) is a header, set *name and return where its same-line text starts. */
static const char *header(const char *p, const char *le, struct dspy__sim_view *name)
{
    while (p < le && isspace((unsigned char)*p))
        p++;
    if (le - p < 6 || memcmp(p, "[[ ## ", 6))
        return NULL;
    const char *n0 = p + 6, *q = n0;
    while (q < le && is_word(*q))
        q++;
    if (q == n0 || le - q < 6 || memcmp(q, " ## ]]", 6))
        return NULL;
    *name = view_from(n0, q);
    return q + 6;
}

size_t dspy__sim_blocks(struct dspy__sim_view text, struct dspy__sim_block *out, size_t max)
{
    size_t n = 0;
    bool open = false;
    if (!text.n)
        return 0; /* text.p may be NULL, and NULL + 0 is undefined */
    const char *p = text.p, *end = text.p + text.n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        struct dspy__sim_view name;
        const char *rest = header(p, le, &name);
        if (rest) {
            if (open)
                out[n - 1].value = dspy__sim_view_strip(out[n - 1].value);
            open = false;
            bool seen = false;
            for (size_t i = 0; i < n && !seen; i++)
                seen = out[i].name.n == name.n && !memcmp(out[i].name.p, name.p, name.n);
            if (!seen && n < max) {
                out[n++] = (struct dspy__sim_block){ name, view_from(rest, le) };
                open = true;
            }
        } else if (open) {
            out[n - 1].value = view_from(out[n - 1].value.p, le);
        }
        p = nl ? nl + 1 : end;
    }
    if (open)
        out[n - 1].value = dspy__sim_view_strip(out[n - 1].value);
    return n;
}

/* ---- Structure notes and schemas ---- */

static void set_note(struct dspy__sim_field *f, struct dspy__sim_view after_placeholder)
{
    struct dspy__sim_view v = after_placeholder;
    size_t i = 0;
    while (i < v.n && v.p[i] == ' ')
        i++;
    if (v.n - i < sizeof(NOTE) - 1 || memcmp(v.p + i, NOTE, sizeof(NOTE) - 1))
        return;
    const char *s = v.p + i + sizeof(NOTE) - 1;
    const char *nl = memchr(s, '\n', (size_t)(v.p + v.n - s));
    f->note = view_from(s, nl ? nl : v.p + v.n);
    size_t k = sizeof(SCHEMA_NOTE) - 1;
    if (f->note.n > k && !memcmp(f->note.p, SCHEMA_NOTE, k)) {
        json_error_t e;
        f->schema = json_loadb(f->note.p + k, f->note.n - k, JSON_DISABLE_EOF_CHECK, &e);
        if (f->schema && !json_is_object(f->schema)) {
            json_decref(f->schema);
            f->schema = NULL;
        }
    }
}

static void chat_notes(struct dspy__sim_prompt *p, struct dspy__sim_view structure)
{
    char needle[160];
    for (size_t i = 0; i < p->n_outputs; i++) {
        struct dspy__sim_field *f = &p->outputs[i];
        if (f->name.n > 60)
            continue;
        int k = snprintf(needle, sizeof(needle), "[[ ## %.*s ## ]]\n{%.*s}", (int)f->name.n,
                         f->name.p, (int)f->name.n, f->name.p);
        const char *at = dspy__sim_find(structure, needle);
        if (at)
            set_note(f, view_after(structure, at + k));
    }
}

static void json_notes(struct dspy__sim_prompt *p, struct dspy__sim_view structure)
{
    const char *at = dspy__sim_find(structure, JSON_HEAD);
    if (!at)
        return;
    const char *s = at + sizeof(JSON_HEAD) - 1;
    while (s < structure.p + structure.n && isspace((unsigned char)*s))
        s++;
    json_error_t e;
    p->structure = json_loadb(s, (size_t)(structure.p + structure.n - s), JSON_DISABLE_EOF_CHECK,
                              &e);
    if (!json_is_object(p->structure))
        return;
    for (size_t i = 0; i < p->n_outputs; i++) {
        struct dspy__sim_field *f = &p->outputs[i];
        json_t *ph = json_object_getn(p->structure, f->name.p, f->name.n);
        if (!json_is_string(ph))
            continue;
        struct dspy__sim_view v = { json_string_value(ph), json_string_length(ph) };
        /* The placeholder is "{name}" then the note. */
        if (v.n >= f->name.n + 2 && v.p[0] == '{' && !memcmp(v.p + 1, f->name.p, f->name.n) &&
            v.p[f->name.n + 1] == '}')
            set_note(f, (struct dspy__sim_view){ v.p + f->name.n + 2, v.n - f->name.n - 2 });
    }
}

/* ---- The whole prompt ---- */

static struct dspy__sim_view cut_reminder(struct dspy__sim_view v)
{
    static const char *const reminders[] = {
        "Respond with the corresponding output fields",
        "Respond with a JSON object in the following order of fields",
    };
    for (size_t i = 0; i < 2; i++) {
        const char *at = dspy__sim_find(v, reminders[i]);
        if (at)
            v.n = (size_t)(at - v.p);
    }
    return dspy__sim_view_strip(v);
}

static void parse_system(struct dspy__sim_prompt *p)
{
    struct dspy__sim_view sys = p->system;
    const char *in = dspy__sim_find(sys, IN_HEAD);
    const char *out = dspy__sim_find(sys, OUT_HEAD);
    if (!out)
        return;
    const char *st = dspy__sim_find(view_after(sys, out), STRUCT_HEAD);
    const char *list_end = st ? st : sys.p + sys.n;
    if (in && in < out)
        p->n_inputs = parse_fields(view_from(in + sizeof(IN_HEAD) - 1, out), p->inputs,
                                   DSPY__SIM_MAX_FIELDS);
    p->n_outputs = parse_fields(view_from(out + sizeof(OUT_HEAD) - 1, list_end), p->outputs,
                                DSPY__SIM_MAX_FIELDS);
    if (!p->n_outputs)
        return;
    const char *obj = dspy__sim_find(view_after(sys, list_end), OBJECTIVE);
    struct dspy__sim_view structure = view_from(list_end, obj ? obj : sys.p + sys.n);
    if (obj)
        p->instructions = dspy__sim_view_strip(view_after(sys, obj + sizeof(OBJECTIVE) - 1));
    if (dspy__sim_find(structure, JSON_HEAD)) {
        p->adapter = DSPY__SIM_ADAPTER_JSON;
        json_notes(p, structure);
    } else {
        p->adapter = DSPY__SIM_ADAPTER_CHAT;
        chat_notes(p, structure);
    }
}

void dspy__sim_prompt_parse(struct dspy__sim_prompt *p, const struct dspy__sim_msg *msgs, size_t n)
{
    memset(p, 0, sizeof(*p));
    /* Absent parts are empty views over "", never NULL: code that scans them does pointer
     * arithmetic on p, and NULL + 0 is undefined. */
    p->final_user = p->system = p->instructions = (struct dspy__sim_view){ "", 0 };
    p->msgs = msgs;
    p->n_msgs = n;
    p->final_idx = n;
    for (size_t i = n; i-- > 0;)
        if (msgs[i].role == DSPY__SIM_ROLE_USER) {
            p->final_idx = i;
            p->final_user = msgs[i].text;
            break;
        }
    if (n && msgs[0].role == DSPY__SIM_ROLE_SYSTEM)
        p->system = msgs[0].text;
    if (p->system.n)
        parse_system(p);
    if (p->adapter == DSPY__SIM_ADAPTER_NONE) {
        p->instructions = p->system;
        return;
    }
    struct dspy__sim_block blocks[DSPY__SIM_MAX_BLOCKS];
    size_t nb = dspy__sim_blocks(p->final_user, blocks, DSPY__SIM_MAX_BLOCKS);
    for (size_t b = 0; b < nb; b++)
        for (size_t i = 0; i < p->n_inputs; i++)
            if (blocks[b].name.n == p->inputs[i].name.n &&
                !memcmp(blocks[b].name.p, p->inputs[i].name.p, blocks[b].name.n))
                p->inputs[i].value = cut_reminder(blocks[b].value);
}

void dspy__sim_prompt_release(struct dspy__sim_prompt *p)
{
    for (size_t i = 0; i < p->n_outputs; i++)
        json_decref(p->outputs[i].schema);
    json_decref(p->structure);
    p->structure = NULL;
    p->n_outputs = 0;
}

const struct dspy__sim_field *dspy__sim_prompt_output(const struct dspy__sim_prompt *p,
                                                      const char *name)
{
    for (size_t i = 0; i < p->n_outputs; i++)
        if (dspy__sim_view_eq(p->outputs[i].name, name))
            return &p->outputs[i];
    return NULL;
}

/* ---- Literal and enum choices ---- */

/* One Python literal at [p, end): a quoted string, a number, True/False/None or a bare word. */
static json_t *py_literal(const char *p, const char *end)
{
    struct dspy__sim_view v = dspy__sim_view_strip(view_from(p, end));
    if (!v.n)
        return NULL;
    char q = v.p[0];
    if ((q == '\'' || q == '"') && v.n >= 2 && v.p[v.n - 1] == q) {
        char buf[256];
        size_t k = 0;
        for (size_t i = 1; i + 1 < v.n && k < sizeof(buf) - 1; i++) {
            char c = v.p[i];
            if (c == '\\' && i + 2 < v.n) {
                c = v.p[++i];
                c = c == 'n' ? '\n' : c == 't' ? '\t' : c;
            }
            buf[k++] = c;
        }
        return json_stringn(buf, k);
    }
    if (dspy__sim_view_eq(v, "True") || dspy__sim_view_eq(v, "False"))
        return json_boolean(v.p[0] == 'T');
    if (dspy__sim_view_eq(v, "None"))
        return json_null();
    char num[64];
    if (v.n < sizeof(num)) {
        char *e;
        memcpy(num, v.p, v.n);
        num[v.n] = '\0';
        long long ll = strtoll(num, &e, 10);
        if (*e == '\0')
            return json_integer(ll);
        double d = strtod(num, &e);
        if (*e == '\0')
            return json_real(d);
    }
    return json_stringn(v.p, v.n);
}

static json_t *literal_choices(struct dspy__sim_view type)
{
    const char *at = dspy__sim_find(type, "Literal[");
    if (!at)
        return NULL;
    json_t *arr = json_array();
    const char *p = at + 8, *end = type.p + type.n, *item = p;
    char quote = 0;
    for (; p < end && arr; p++) {
        if (quote) {
            if (*p == '\\' && p + 1 < end)
                p++;
            else if (*p == quote)
                quote = 0;
        } else if (*p == '\'' || *p == '"') {
            quote = *p;
        } else if (*p == ',' || *p == ']') {
            json_t *v = py_literal(item, p);
            if (v)
                json_array_append_new(arr, v);
            item = p + 1;
            if (*p == ']')
                break;
        }
    }
    if (arr && !json_array_size(arr)) {
        json_decref(arr);
        arr = NULL;
    }
    return arr;
}

json_t *dspy__sim_type_choices(struct dspy__sim_view type, struct dspy__sim_view note)
{
    static const char *const heads[] = {
        "must exactly match (no extra characters) one of: ",
        "must be one of: ",
    };
    json_t *arr = literal_choices(type);
    if (arr)
        return arr;
    for (size_t h = 0; h < 2; h++) {
        size_t k = strlen(heads[h]);
        if (note.n <= k || memcmp(note.p, heads[h], k))
            continue;
        arr = json_array();
        const char *p = note.p + k, *end = note.p + note.n;
        while (arr && p < end) {
            const char *semi = dspy__sim_find(view_from(p, end), "; ");
            const char *ie = semi ? semi : end;
            json_t *s = json_stringn(p, (size_t)(ie - p));
            if (s)
                json_array_append_new(arr, s);
            p = semi ? semi + 2 : end;
        }
        if (arr && !json_array_size(arr)) {
            json_decref(arr);
            arr = NULL;
        }
        return arr;
    }
    return NULL;
}

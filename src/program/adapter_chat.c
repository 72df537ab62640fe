/* Chat adapter (program layer): DSPy's ChatAdapter format, where every field is a
 * "[[ ## name ## ]]" section and the reply ends with "[[ ## completed ## ]]", and the
 * parser that splits an LM reply back into those sections. */
#include <string.h>

#include "base/pyfmt.h"
#include "base/status.h"
#include "program/adapter_int.h"

#define INTRO                                                                         \
    "All interactions will be structured in the following way, with the appropriate " \
    "values filled in."

static dspy_status chat_structure(struct dspy_buf *b, const dspy_signature *sig,
                                  struct dspy_error *err)
{
    struct dspy_buf d;
    dspy_status rc;
    dspy__buf_init(&d, b->max);
    rc = dspy__buf_adds(&d, INTRO "\n\n");
    if (!rc)
        rc = dspy__adapter_field_blocks(&d, sig, 0, sig->ninputs, NULL, NULL, err);
    if (!rc)
        rc = dspy__buf_adds(&d, "\n\n");
    if (!rc)
        rc = dspy__adapter_field_blocks(&d, sig, sig->ninputs, sig->nfields, NULL, NULL, err);
    if (!rc)
        rc = dspy__buf_adds(&d, "\n\n[[ ## completed ## ]]\n");
    if (!rc) {
        dspy__adapter_strip(&d);
        rc = dspy__buf_add(b, d.ptr, d.len);
    }
    dspy__buf_release(&d);
    return rc;
}

static dspy_status chat_reminder(struct dspy_buf *b, const dspy_signature *sig)
{
    dspy_status rc =
        dspy__buf_adds(b, "Respond with the corresponding output fields, starting with the field ");
    for (size_t i = sig->ninputs; !rc && i < sig->nfields; i++) {
        if (!(rc = dspy__buf_adds(b, i > sig->ninputs ? ", then `[[ ## " : "`[[ ## ")) &&
            !(rc = dspy__buf_adds(b, sig->fields[i].name)))
            rc = dspy__buf_adds(b, " ## ]]`");
        if (!rc)
            rc = dspy__adapter_type_suffix(b, &sig->fields[i]);
    }
    if (!rc)
        rc = dspy__buf_adds(b, ", and then ending with the marker for `[[ ## completed ## ]]`.");
    return rc;
}

static dspy_status chat_assistant(struct dspy_buf *b, const dspy_signature *sig,
                                  const json_t *outputs, const char *missing,
                                  struct dspy_error *err)
{
    dspy_status rc = dspy__adapter_field_blocks(b, sig, sig->ninputs, sig->nfields, outputs,
                                                missing, err);
    return rc ? rc : dspy__buf_adds(b, "\n\n[[ ## completed ## ]]\n");
}

/* ---- parsing ---- */

/* Python's \w for a code point: ASCII letters, digits and '_', and non-ASCII characters
 * that are letters or digits, approximated by excluding spaces, punctuation and symbols
 * of the common blocks. */
static bool is_word_cp(uint32_t cp)
{
    if (cp < 0x80)
        return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9') ||
               cp == '_';
    if (dspy__py_isspace(cp))
        return false;
    if (cp < 0xC0)
        return cp == 0xAA || cp == 0xB2 || cp == 0xB3 || cp == 0xB5 || cp == 0xB9 || cp == 0xBA ||
               (cp >= 0xBC && cp <= 0xBE);
    if (cp == 0xD7 || cp == 0xF7)
        return false;
    if ((cp >= 0x2000 && cp <= 0x206F) || (cp >= 0x20A0 && cp <= 0x20CF) ||
        (cp >= 0x2190 && cp <= 0x245F) || (cp >= 0x2500 && cp <= 0x2775) ||
        (cp >= 0x2794 && cp <= 0x2BFF) || (cp >= 0x3000 && cp <= 0x3004) ||
        (cp >= 0x3008 && cp <= 0x3020) || (cp >= 0xFE00 && cp <= 0xFE0F) ||
        (cp >= 0xFF00 && cp <= 0xFF0F) || (cp >= 0xFF1A && cp <= 0xFF20) ||
        (cp >= 0x1F000 && cp <= 0x1FAFF) || cp == 0xFFFD)
        return false;
    return true;
}

/* field_header_pattern.match(): "[[ ## name ## ]]" at s[0..len). On a match, sets the
 * name span and the match length in code points. */
static bool match_header(const char *s, size_t len, size_t *name_s, size_t *name_e,
                         size_t *match_cps)
{
    size_t i = 6, cps = 6;
    if (len < 13 || memcmp(s, "[[ ## ", 6))
        return false;
    while (i < len) {
        uint32_t cp = (unsigned char)s[i];
        size_t n = cp < 0x80 ? 1 : dspy__utf8_decode(s, len, i, &cp);
        if (!is_word_cp(cp))
            break;
        i += n;
        cps++;
    }
    if (i == 6 || len - i < 6 || memcmp(s + i, " ## ]]", 6))
        return false;
    *name_s = 6;
    *name_e = i;
    *match_cps = cps + 6;
    return true;
}

struct section {
    size_t field;          /* output field index */
    size_t rem_s, rem_e;   /* text after the header on its own line, stripped */
    size_t body_s, body_e; /* the lines that follow, up to the next header */
    bool has_body;
};

struct sections {
    struct section *v;
    size_t n;
    bool *seen; /* per output: first occurrence already taken */
};

static dspy_status close_section(struct sections *ss, const struct section *cur, bool open)
{
    if (!open || cur->field == (size_t)-1 || ss->seen[cur->field])
        return DSPY_OK;
    ss->seen[cur->field] = true;
    ss->v[ss->n++] = *cur;
    return DSPY_OK;
}

static size_t output_index(const dspy_signature *sig, const char *name, size_t len)
{
    for (size_t i = sig->ninputs; i < sig->nfields; i++)
        if (strlen(sig->fields[i].name) == len && !memcmp(sig->fields[i].name, name, len))
            return i - sig->ninputs;
    return (size_t)-1;
}

/* Split the completion into sections, keeping the first one of each output field in the
 * order they appear. */
static dspy_status find_sections(const dspy_signature *sig, const char *text, size_t len,
                                 struct sections *ss)
{
    struct section cur = { (size_t)-1, 0, 0, 0, 0, false };
    size_t pos = 0, ls, le;
    bool open = false;

    while (dspy__py_next_line(text, len, &pos, &ls, &le)) {
        size_t a = ls, z = le, ns, ne, mcps;
        dspy__py_strip(text, &a, &z);
        if (match_header(text + a, z - a, &ns, &ne, &mcps)) {
            close_section(ss, &cur, open);
            open = true;
            cur.field = output_index(sig, text + a + ns, ne - ns);
            /* DSPy cuts the header's length (measured on the stripped line) from the
             * unstripped line, so leading whitespace shifts the cut. */
            size_t r = ls;
            for (size_t k = 0; k < mcps && r < le; k++) {
                uint32_t cp;
                r += (unsigned char)text[r] < 0x80 ? 1 : dspy__utf8_decode(text, le, r, &cp);
            }
            cur.rem_s = r;
            cur.rem_e = le;
            dspy__py_strip(text, &cur.rem_s, &cur.rem_e);
            cur.body_s = cur.body_e = pos;
            cur.has_body = false;
        } else if (open) {
            cur.body_e = le;
            cur.has_body = true;
        }
    }
    return close_section(ss, &cur, open);
}

/* "\n".join(lines).strip() for one section. */
static dspy_status section_text(const char *text, const struct section *s, struct dspy_buf *b)
{
    size_t pos = s->body_s, ls, le;
    bool any = s->rem_e > s->rem_s;
    dspy_status rc = dspy__buf_add(b, text + s->rem_s, s->rem_e - s->rem_s);
    while (!rc && s->has_body && dspy__py_next_line(text, s->body_e, &pos, &ls, &le)) {
        if (any)
            rc = dspy__buf_addc(b, '\n');
        any = true;
        if (!rc)
            rc = dspy__buf_add(b, text + ls, le - ls);
    }
    if (!rc)
        rc = dspy__buf_add(b, "", 0);
    if (!rc)
        dspy__adapter_strip(b);
    return rc;
}

static dspy_status chat_parse(const dspy_signature *sig, const char *text, size_t len,
                              json_t **outputs, struct dspy_error *err)
{
    size_t nout = sig->nfields - sig->ninputs;
    /* The usual signature's sections and values fit on the stack. */
    struct section v_stack[8];
    bool seen_stack[8] = { false };
    json_t *parsed_stack[8];
    struct sections ss = { v_stack, 0, seen_stack };
    json_t **values = parsed_stack; /* per output, in signature order */
    struct dspy_buf value, why, msg;
    json_t *fields = NULL;
    dspy_status rc = DSPY_ENOMEM;

    dspy__buf_init(&value, len + 1);
    dspy__buf_init(&why, 0);
    dspy__buf_init(&msg, 0);
    if (nout > 8) {
        ss.v = dspy_calloc(nout, sizeof(*ss.v));
        ss.seen = dspy_calloc(nout, sizeof(*ss.seen));
        values = dspy_calloc(nout, sizeof(*values));
    }
    if (!ss.v || !ss.seen || !values)
        goto nomem;
    for (size_t k = 0; k < nout; k++)
        values[k] = NULL;
    fields = json_object();
    if (!fields || find_sections(sig, text, len, &ss))
        goto nomem;
    /* Values are parsed in the order of the reply (the first failure is the one reported)
     * and set in the order of the signature, the order the prediction keeps. */
    for (size_t k = 0; k < ss.n; k++) {
        const struct dspy_field *f = &sig->fields[sig->ninputs + ss.v[k].field];
        json_t *raw, *parsed = NULL;
        dspy__buf_reset(&value);
        if (section_text(text, &ss.v[k], &value) || !(raw = json_stringn(value.ptr, value.len)))
            goto nomem;
        dspy__buf_reset(&why);
        rc = dspy__adapter_parse_value(f->type, raw, &parsed, &why);
        json_decref(raw);
        if (rc == DSPY_ENOMEM)
            goto nomem;
        if (rc) {
            if (dspy__buf_addf(&msg, "Failed to parse field %s with value ", f->name) ||
                dspy__buf_add(&msg, value.ptr, value.len > 160 ? 160 : value.len) ||
                dspy__buf_adds(&msg, value.len > 160 ? "..." : "") ||
                dspy__buf_adds(&msg, " from the LM response. Error message: ") ||
                dspy__buf_add(&msg, why.ptr ? why.ptr : "", why.len > 200 ? 200 : why.len))
                goto nomem;
            rc = dspy__adapter_parse_error(err, "ChatAdapter", sig, text, len, msg.ptr, NULL);
            dspy__err_field(err, f->name);
            goto out;
        }
        values[ss.v[k].field] = parsed;
    }
    for (size_t k = 0; k < nout; k++) {
        json_t *parsed = values[k];
        values[k] = NULL;
        if (parsed && json_object_set_new(fields, sig->fields[sig->ninputs + k].name, parsed))
            goto nomem;
    }
    rc = dspy__adapter_finish("ChatAdapter", sig, text, len, &fields, err);
    if (!rc) {
        *outputs = fields;
        fields = NULL;
    }
    goto out;
nomem:
    rc = dspy__err(err, DSPY_ENOMEM, "adapter: out of memory");
out:
    json_decref(fields);
    for (size_t k = 0; values && k < nout; k++)
        json_decref(values[k]);
    if (ss.v != v_stack)
        dspy_free(ss.v);
    if (ss.seen != seen_stack)
        dspy_free(ss.seen);
    if (values != parsed_stack)
        dspy_free(values);
    dspy__buf_release(&value);
    dspy__buf_release(&why);
    dspy__buf_release(&msg);
    return rc;
}

const struct dspy__adapter_ops dspy__chat_ops = {
    "ChatAdapter", chat_structure, chat_reminder, chat_assistant, chat_parse,
};

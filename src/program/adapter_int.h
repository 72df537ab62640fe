/* Private parts of the adapters (program layer). adapter.c holds what the Chat and JSON
 * adapters share (field descriptions, type notes, value formatting, demos) and the
 * dispatch; adapter_chat.c and adapter_json.c are the two formats behind a small vtable;
 * adapter_repair.c, adapter_literal.c and adapter_value.c turn LM text into typed values
 * as DSPy's parse_value does. Modules use the render functions to cache the system and
 * demo messages and render only the user message per call. All functions are reentrant:
 * many threads may render and parse with one signature at once. */
#ifndef DSPY_PROGRAM_ADAPTER_INT_H
#define DSPY_PROGRAM_ADAPTER_INT_H

#include <dspyc/adapter.h>

#include "base/buf.h"
#include "program/signature_int.h"

/* ---- rendering: dspy_adapter_format() is exactly these, in this order ---- */

/* Append the system message's content (Adapter.format_system_message). */
dspy_status dspy__adapter_render_system(enum dspy_adapter_kind kind, const dspy_signature *sig,
                                        struct dspy_buf *out, struct dspy_error *err);
/* Append the demo messages (user/assistant pairs, incomplete demos first) to the JSON
 * array `messages`. `demos` may be NULL. */
dspy_status dspy__adapter_render_demos(enum dspy_adapter_kind kind, const dspy_signature *sig,
                                       const json_t *demos, json_t *messages,
                                       struct dspy_error *err);
/* Append the final user message's content (with the output reminder). DSPy sends the
 * message only when this is non-empty. `reminder` is the adapter's reminder line for `sig`
 * rendered once (dspy__adapter_render_reminder), or NULL to render it here. */
dspy_status dspy__adapter_render_user(enum dspy_adapter_kind kind, const dspy_signature *sig,
                                      const json_t *inputs, const struct dspy_buf *reminder,
                                      struct dspy_buf *out, struct dspy_error *err);
/* Append the adapter's reminder line (the end of every final user message) for `sig`. */
dspy_status dspy__adapter_render_reminder(enum dspy_adapter_kind kind, const dspy_signature *sig,
                                          struct dspy_buf *out);
/* Append {"role": role, "content": content} to `messages`. */
dspy_status dspy__adapter_add_message(json_t *messages, const char *role, const char *content,
                                      size_t len, struct dspy_error *err);

/* ---- pieces shared by the two formats (adapter.c) ---- */

/* One adapter format. */
struct dspy__adapter_ops {
    const char *class_name; /* "ChatAdapter", "JSONAdapter": used in error texts */
    /* format_field_structure */
    dspy_status (*structure)(struct dspy_buf *b, const dspy_signature *sig, struct dspy_error *err);
    /* user_message_output_requirements */
    dspy_status (*reminder)(struct dspy_buf *b, const dspy_signature *sig);
    /* format_assistant_message_content; `missing` replaces absent outputs */
    dspy_status (*assistant)(struct dspy_buf *b, const dspy_signature *sig, const json_t *outputs,
                             const char *missing, struct dspy_error *err);
    /* parse; `text` is valid UTF-8 */
    dspy_status (*parse)(const dspy_signature *sig, const char *text, size_t len, json_t **outputs,
                         struct dspy_error *err);
};
extern const struct dspy__adapter_ops dspy__chat_ops;
extern const struct dspy__adapter_ops dspy__json_ops;

/* Python's str.strip() applied to the whole buffer, in place. */
void dspy__adapter_strip(struct dspy_buf *b);
/* "[[ ## name ## ]]\n<value>" for fields [from, to), joined by blank lines and stripped
 * (format_field_with_value). `values` NULL renders each field's type note instead (the
 * structure block); otherwise a field missing from `values` is skipped when `missing` is
 * NULL and rendered as `missing` when not. */
dspy_status dspy__adapter_field_blocks(struct dspy_buf *b, const dspy_signature *sig, size_t from,
                                       size_t to, const json_t *values, const char *missing,
                                       struct dspy_error *err);
/* format_field_value: how a value appears in a prompt for field `f`. */
dspy_status dspy__adapter_format_value(struct dspy_buf *b, const struct dspy_field *f,
                                       const json_t *value, struct dspy_error *err);
/* translate_field_type: "{name}" plus the "        # note: ..." for output types. */
dspy_status dspy__adapter_field_note(struct dspy_buf *b, const struct dspy_field *f);
/* " (must be formatted as a valid Python <type>)" for non-str fields, else nothing. */
dspy_status dspy__adapter_type_suffix(struct dspy_buf *b, const struct dspy_field *f);
/* pydantic's JSON schema for `t` (caller owns); key order is applied when printing. */
json_t *dspy__adapter_type_schema(const struct dspy_type *t);
/* Fill `err` with DSPy's AdapterParseError text: optional `message`, the adapter line, the
 * LM response (shortened to fit), the expected fields and, when `parsed` is not NULL, the
 * fields parsed. Returns DSPY_EADAPTER. */
dspy_status dspy__adapter_parse_error(struct dspy_error *err, const char *class_name,
                                      const dspy_signature *sig, const char *text, size_t len,
                                      const char *message, const json_t *parsed);
/* apply_output_field_defaults and the key-set check: replaces *fields by an object in
 * signature order (missing outputs that allow None become null) and returns DSPY_OK when
 * every output is present, else the AdapterParseError. *fields stays the caller's. */
dspy_status dspy__adapter_finish(const char *class_name, const dspy_signature *sig,
                                 const char *text, size_t len, json_t **fields,
                                 struct dspy_error *err);

/* ---- text to values (adapter_repair.c, adapter_literal.c, adapter_value.c) ---- */

#define DSPY__READER_MAX_DEPTH 128

/* A cursor over LM text, shared by the JSON-repair and literal_eval readers. */
struct dspy__reader {
    const char *s;
    size_t len;
    size_t pos;
    int depth; /* containers open, bounded by DSPY__READER_MAX_DEPTH */
    int nest;  /* literal_eval: open brackets, inside which newlines are whitespace */
    bool oom;  /* an allocation failed: the result is not to be trusted */
    int tries; /* json_repair: top-level '(' looked at, bounded to keep the scan linear */
};

/* The byte k ahead of the cursor, or -1 past the end. */
static inline int dspy__reader_at(const struct dspy__reader *r, size_t k)
{
    return r->pos + k < r->len ? (unsigned char)r->s[r->pos + k] : -1;
}
/* v, noting an allocation failure when it is NULL. */
json_t *dspy__reader_keep(struct dspy__reader *r, json_t *v);
/* Store v (taking it) in an object or array; false when v is NULL or storing failed
 * (then r->oom is set). */
bool dspy__reader_set(struct dspy__reader *r, json_t *o, const char *key, size_t klen, json_t *v);
bool dspy__reader_append(struct dspy__reader *r, json_t *a, json_t *v);
/* Value of the four hex digits k bytes ahead, or -1. */
int dspy__reader_hex4(const struct dspy__reader *r, size_t k);

/* json_repair.loads, reduced: strict JSON first, else the first {...}, [...] or (...) read
 * leniently (single quotes, bare words, Python constants, missing closers, trailing
 * text; several values make a list). NULL when nothing was found (json_repair's "") or,
 * with *oom set, when an allocation failed; a new reference otherwise. */
json_t *dspy__json_repair(const char *s, size_t len, bool *oom);
/* Whether s is, as json.loads reads it, one non-finite number (NaN, Infinity, 1e400):
 * DSPy would go on with a float json_t cannot hold. */
bool dspy__json_nonfinite(const char *s, size_t len);
/* ast.literal_eval for the literal subset (numbers, strings, True/False/None, lists,
 * tuples, sets, dicts); NULL when the text is not such a literal (*oom tells when the
 * reason was an allocation failure). */
json_t *dspy__py_literal_eval(const char *s, size_t len, bool *oom);
/* First balanced {...} in s (regex \{(?:[^{}]|(?R))*\}): 1 found, 0 none, -1 no memory. */
int dspy__find_braces(const char *s, size_t len, size_t *start, size_t *end);
/* DSPy's parse_value(value, annotation): *out gets a new value typed as `t`; on failure
 * `why` gets the error text (as DSPy's exception says it) and DSPY_EADAPTER returns. */
dspy_status dspy__adapter_parse_value(const struct dspy_type *t, const json_t *value, json_t **out,
                                      struct dspy_buf *why);

#endif

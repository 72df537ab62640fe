/* Private parts of the signature module (program layer), shared by signature.c (the object
 * and DSPy's naming rules) and signature_parse.c (the string-signature parser), and read
 * by the adapters. */
#ifndef DSPY_PROGRAM_SIGNATURE_INT_H
#define DSPY_PROGRAM_SIGNATURE_INT_H

#include <dspyc/signature.h>

#include "base/buf.h"

struct dspy_signature {
    struct dspy_field *fields; /* inputs first, then outputs */
    size_t nfields;
    size_t ninputs;
    char *instructions; /* after inspect.cleandoc, as DSPy's `instructions` reads */
};

/* Type trees. new_type returns a zeroed node of `kind`; free/copy are recursive. */
struct dspy_type *dspy__type_new(enum dspy_type_kind kind);
void dspy__type_free(struct dspy_type *t);
struct dspy_type *dspy__type_copy(const struct dspy_type *t);
/* Structural equality as typing compares types (Literal choices as sets). */
bool dspy__type_equal(const struct dspy_type *a, const struct dspy_type *b);
/* DSPy's annotation_allows_none: NoneType, or a Union with a member that allows None. */
bool dspy__type_allows_none(const struct dspy_type *t);
/* Append get_annotation_name(t). */
dspy_status dspy__type_add_name(struct dspy_buf *b, const struct dspy_type *t);

/* DSPy's infer_prefix(name) + ":" (caller owns). */
char *dspy__infer_prefix(const char *name);
/* inspect.cleandoc(text) (caller owns). */
char *dspy__cleandoc(const char *text);
/* Python keywords that may not name a field ("class", "None", ...). */
bool dspy__is_py_keyword(const char *s, size_t len);

/* Parse a whole string signature into fields (inputs then outputs, with types, default
 * descs and prefixes); *nfields and *ninputs describe the array. Errors: DSPY_EPARSE with
 * the offset of the problem. */
dspy_status dspy__signature_parse_fields(const char *text, struct dspy_field **fields,
                                         size_t *nfields, size_t *ninputs, struct dspy_error *err);
/* Release one field's strings and type (not the struct itself). */
void dspy__field_release(struct dspy_field *f);
/* Fill `f` as a new field named `name` (copied) with DSPy's default desc and prefix. */
dspy_status dspy__field_init(struct dspy_field *f, const char *name, size_t len,
                             enum dspy_field_role role, struct dspy_type *type, bool given);

#endif

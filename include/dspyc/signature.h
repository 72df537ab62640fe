/* Signatures: the typed input and output fields of an LM task, parsed from DSPy's string
 * syntax ("question: str, k: int -> answer: list[str]"), with instructions and per-field
 * descriptions and prefixes as DSPy keeps them. */
#ifndef DSPYC_SIGNATURE_H
#define DSPYC_SIGNATURE_H

#include <dspyc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

enum dspy_type_kind {
    DSPY_TYPE_STR,
    DSPY_TYPE_INT,
    DSPY_TYPE_FLOAT,
    DSPY_TYPE_BOOL,
    DSPY_TYPE_NONE,    /* NoneType / None */
    DSPY_TYPE_ANY,     /* typing.Any */
    DSPY_TYPE_LIST,    /* list[T] (args[0]); bare `list` has nargs 0 and means list[Any] */
    DSPY_TYPE_DICT,    /* dict[K, V] (args[0], args[1]); bare `dict` has nargs 0 */
    DSPY_TYPE_TUPLE,   /* tuple[A, B] (fixed), tuple[T, ...] (`variadic`), tuple alone */
    DSPY_TYPE_LITERAL, /* Literal[...]: `literals` holds the choices */
    DSPY_TYPE_UNION    /* Union[...] and Optional[T] (= Union[T, None]) */
};

/** A field type as a small tree. Owned by its signature; read-only for callers. */
struct dspy_type {
    enum dspy_type_kind kind;
    size_t nargs;
    struct dspy_type **args;
    size_t nliterals;
    char **literals;      /* Literal choices: a string's value (pos), else Python's str()
                              of the value (1, 1.5, True, None) */
    bool *literal_is_str; /* per choice: a string (true) or a number/bool/None */
    bool variadic;        /* tuple[T, ...]: args holds T alone */
};

enum dspy_field_role { DSPY_FIELD_INPUT, DSPY_FIELD_OUTPUT };

/** One field. Owned by its signature; strings are never NULL. */
struct dspy_field {
    char *name;
    enum dspy_field_role role;
    struct dspy_type *type;
    bool type_given; /* false when the signature gave no annotation (defaults to str) */
    char *desc;      /* description; "${name}" (DSPy's placeholder) when none was given */
    char *prefix;    /* DSPy's inferred prefix, "Question:" for `question` */
};

/** A parsed signature. Threading: immutable after setup; safe to read from many threads
 * once no thread changes it. */
typedef struct dspy_signature dspy_signature;

/** Parse DSPy's string syntax. `instructions` NULL or "" gives DSPy's default instruction
 * text; other text is kept as DSPy reads it back (inspect.cleandoc). On failure *out is
 * untouched and `err` names the offset of the problem: DSPY_EPARSE, or DSPY_EUTF8 for text
 * that is not UTF-8. Field names must be ASCII identifiers; defaults (`x = 1`) are refused. */
DSPY_EXTERN dspy_status dspy_signature_parse(const char *text, const char *instructions,
                                             dspy_signature **out, struct dspy_error *err);
/** Deep copy; NULL on allocation failure. */
DSPY_EXTERN dspy_signature *dspy_signature_copy(const dspy_signature *sig);
/** NULL is a no-op. */
DSPY_EXTERN void dspy_signature_free(dspy_signature *sig);

/** Fields in order: inputs, then outputs. Pointers borrowed until the signature changes. */
DSPY_EXTERN size_t dspy_signature_nfields(const dspy_signature *sig);
DSPY_EXTERN size_t dspy_signature_ninputs(const dspy_signature *sig);
DSPY_EXTERN const struct dspy_field *dspy_signature_field(const dspy_signature *sig, size_t i);
/** Index of the field named `name`, or -1. */
DSPY_EXTERN long dspy_signature_find(const dspy_signature *sig, const char *name);
/** Instruction text (borrowed until it changes). */
DSPY_EXTERN const char *dspy_signature_instructions(const dspy_signature *sig);
/** The default instruction DSPy writes for this signature's field names (caller owns). */
DSPY_EXTERN char *dspy_signature_default_instructions(const dspy_signature *sig);

/** Replace the instructions (cleandoc'd, as DSPy's setter and load_state do; "" stays "",
 * NULL restores the default). set_desc/set_prefix change one field as load_state does.
 * Setters copy their text; errors: DSPY_ENOTFOUND (no such field), DSPY_EUTF8,
 * DSPY_EINVAL (NULL text), DSPY_ENOMEM. */
DSPY_EXTERN dspy_status dspy_signature_set_instructions(dspy_signature *sig, const char *text);
DSPY_EXTERN dspy_status dspy_signature_set_desc(dspy_signature *sig, const char *field,
                                                const char *desc);
DSPY_EXTERN dspy_status dspy_signature_set_prefix(dspy_signature *sig, const char *field,
                                                  const char *prefix);
/** Insert a `str` output field before the other outputs, as ChainOfThought does with
 * `reasoning`. `desc` NULL means the "${name}" placeholder. Empty instructions become the
 * default text for the new field list, as in DSPy. DSPY_EINVAL when `name` is not a valid
 * field name or is already taken. */
DSPY_EXTERN dspy_status dspy_signature_prepend_output(dspy_signature *sig, const char *name,
                                                      const char *desc);

/** Type name as DSPy prints it in prompts: "str", "list[str]", "Literal['a', 'b']",
 * "Union[str, NoneType]". Caller owns. */
DSPY_EXTERN char *dspy_type_name(const struct dspy_type *type);

#ifdef __cplusplus
}
#endif
#endif

/* JSON writing without a jansson dump (lm layer, shared with program): numbers formatted
 * as Python and orjson print them, compact request bodies, and the 2-space indented layout
 * of DSPy's saved-program files. It belongs with the base layer's JSON helpers and may move
 * there; nothing here depends on the LM. */
#ifndef DSPY_LM_JSONW_H
#define DSPY_LM_JSONW_H

#include <jansson.h>

#include "base/buf.h"

enum dspy__json_style {
    DSPY__JSON_COMPACT, /* {"a":1,"b":[0.7]}: request bodies */
    DSPY__JSON_ORJSON   /* orjson OPT_INDENT_2: saved-program state */
};

#define DSPY__FMT_DOUBLE_MAX 32

/* Shortest round-trip text of a finite double, as Python's repr ("0.7", "1.0", "1e+20",
 * "1e-05"), or with `orjson` as orjson prints it (same, but "0.00001" and "1e-6"). Writes
 * at most DSPY__FMT_DOUBLE_MAX bytes including the NUL; returns the length. Non-finite
 * values print as "null". */
size_t dspy__fmt_double(char *out, double v, bool orjson);

/* Append `v` as JSON text. Strings escape as dspy__buf_add_json_str does; object keys keep
 * their insertion order. In the ORJSON style `depth` is the starting indent level. */
dspy_status dspy__json_write(struct dspy_buf *b, const json_t *v, enum dspy__json_style style,
                             int depth);

#endif

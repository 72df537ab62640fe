/* JSON writing without a jansson dump (base layer): compact request bodies (numbers as
 * Python's json.dumps writes them) and the 2-space indented layout of DSPy's saved-program
 * files (numbers as orjson writes them). */
#ifndef DSPY_BASE_JSONW_H
#define DSPY_BASE_JSONW_H

#include <jansson.h>

#include "base/buf.h"

enum dspy__json_style {
    DSPY__JSON_COMPACT, /* {"a":1,"b":[0.7]}: request bodies */
    DSPY__JSON_ORJSON   /* orjson OPT_INDENT_2: saved-program state */
};

/* Append `v` as JSON text. Strings escape as dspy__buf_add_json_str does; object keys keep
 * their insertion order. In the ORJSON style `depth` is the starting indent level. */
dspy_status dspy__json_write(struct dspy_buf *b, const json_t *v, enum dspy__json_style style,
                             int depth);

#endif

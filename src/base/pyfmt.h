/* Python-compatible text helpers (base layer): the parts of CPython's str(), repr(),
 * float repr, json.dumps and str methods (strip, splitlines, isspace) whose exact output
 * leaks into DSPy prompts and parsing, reimplemented over jansson values and UTF-8. */
#ifndef DSPY_BASE_PYFMT_H
#define DSPY_BASE_PYFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/buf.h"

/* Longest repr(float) plus NUL: "-2.2250738585072014e-308". */
#define DSPY_PY_FLOAT_MAX 32

/* Python's repr(d): shortest round-trip digits, "1.0", "0.1", "1e+20", "1.5e-07", "inf",
 * "-inf", "nan". Writes a NUL-terminated string into `out`; returns its length. */
size_t dspy__py_float_repr(double d, char out[DSPY_PY_FLOAT_MAX]);
/* The same for a float32: the shortest digits that read back as the same float (numpy's
 * str(np.float32(x)) digits, as OpenAI's embeddings print them) in Python's float repr
 * layout, so that Python's repr(float(text)) gives back the same text. */
size_t dspy__py_float32_repr(float f, char out[DSPY_PY_FLOAT_MAX]);

/* Python's str(v) for the value json.loads would give: strings as they are, True/False/
 * None, ints, float repr; lists and dicts as Python prints them (repr of the items). */
dspy_status dspy__py_str(struct dspy_buf *b, const json_t *v);
/* Python's repr(v): strings quoted and escaped as CPython does ('a', "it's"). */
dspy_status dspy__py_repr(struct dspy_buf *b, const json_t *v);
/* repr() of a UTF-8 string of `len` bytes. */
dspy_status dspy__py_repr_str(struct dspy_buf *b, const char *s, size_t len);

/* json.dumps(v, ensure_ascii=False): separators ", " and ": " when indent < 0, else
 * Python's indent layout with `indent` spaces (and "," item separators). Object keys keep
 * their order unless `type_first_sorted`, which orders each object's keys as DSPy's JSON
 * schema notes do: "type" first, then the rest sorted. */
dspy_status dspy__py_json_dumps(struct dspy_buf *b, const json_t *v, int indent,
                                bool type_first_sorted);

/* Decode the UTF-8 sequence at s[i] (i < len). Returns its length in bytes (>= 1) and the
 * code point in *cp; an invalid or truncated sequence yields one byte and cp 0xFFFD. */
size_t dspy__utf8_decode(const char *s, size_t len, size_t i, uint32_t *cp);
/* Append code point cp (<= 0x10FFFF) encoded as UTF-8. */
dspy_status dspy__utf8_add(struct dspy_buf *b, uint32_t cp);
/* Whether s[0..len) is valid UTF-8 (no surrogates, no overlongs). */
bool dspy__utf8_valid(const char *s, size_t len);
/* Append s with each invalid byte replaced by U+FFFD (Python's errors="replace"). */
dspy_status dspy__utf8_sanitize(struct dspy_buf *b, const char *s, size_t len);

/* str.isspace() for one code point. */
bool dspy__py_isspace(uint32_t cp);
/* Code points str.splitlines() breaks on (\r\n counts as one break). */
bool dspy__py_is_linebreak(uint32_t cp);
/* str.strip(): narrow [*start, *end) (byte offsets into s, initially 0 and len) past
 * leading and trailing Unicode whitespace. */
void dspy__py_strip(const char *s, size_t *start, size_t *end);

/* str.splitlines() as an iterator: with *pos at the start of a line (0 at first), sets
 * [*line_start, *line_end) to the line without its terminator, moves *pos past the
 * terminator and returns true; returns false when no line is left. */
bool dspy__py_next_line(const char *s, size_t len, size_t *pos, size_t *line_start,
                        size_t *line_end);

#endif

/* The one float formatter (base layer): shortest round-trip digits of a double, as Python's
 * repr and orjson (ryu) choose them, laid out as Python, orjson or orjson 3.8 print them. */
#ifndef DSPY_BASE_FMTFLOAT_H
#define DSPY_BASE_FMTFLOAT_H

#include <stddef.h>

/* Longest text plus NUL: "-2.2250738585072014e-308" is 24 bytes. */
#define DSPY__FLOAT_MAX 32

enum dspy__float_layout {
    DSPY__FLOAT_PYTHON,    /* repr(): 0.0001, 1e-05, 1e+16, 1.5e+300; nan, inf, -inf */
    DSPY__FLOAT_ORJSON,    /* orjson 3.11+: 0.00001, 1e-6, 1e+16; non-finite as null */
    DSPY__FLOAT_ORJSON_38, /* orjson 3.8 (cache keys, frozen): as ORJSON but 1e16 */
};

/* The shortest decimal digits that read back as `a` (finite, > 0), the one nearest `a`
 * where several of that length do: writes them to `digits` (no NUL) and returns their
 * count (1..17); a == 0.DIGITS x 10^(*decpt). */
size_t dspy__float_digits(double a, char digits[17], int *decpt);

/* `v` as text in `layout`, NUL-terminated in `out`; returns the length. */
size_t dspy__float_fmt(char out[DSPY__FLOAT_MAX], double v, enum dspy__float_layout layout);

/* The same for a float32: the shortest digits that read back as the same float32 (numpy's
 * str(np.float32(x)) digits, as OpenAI's embeddings print them), so that float32(text)
 * gives back `v`. */
size_t dspy__float32_fmt(char out[DSPY__FLOAT_MAX], float v, enum dspy__float_layout layout);

#endif

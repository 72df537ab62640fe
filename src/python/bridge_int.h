/* Private declarations shared by the embedded-CPython bridge's files (python layer):
 * bridge.c (interpreter, threads, calls) and convert.c (JSON <-> Python, exceptions).
 * Every function here must be called with the GIL held. */
#ifndef DSPY_PYTHON_BRIDGE_INT_H
#define DSPY_PYTHON_BRIDGE_INT_H

/* Python.h first: it sets feature macros the C library headers must see. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <jansson.h>

#include <dspyc/common.h>

/* Deepest nesting converted in either direction; deeper (or cyclic) data is an error. */
#define DSPY_PYTHON_MAX_DEPTH 256

/* New reference to the Python value of `j`, or NULL with a Python exception set. */
PyObject *dspy__py_from_json(const json_t *j);

/* JSON for `o` (caller owns), or NULL with a Python exception set. */
json_t *dspy__py_to_json(PyObject *o);

/* Turn the pending Python exception into a status and a message
 * "<context>: <Type> at <file>:<line> in <function>: <text>" in `err` (may be NULL), and
 * clear it; the context is printf-formatted. The status is chosen from the exception's
 * class hierarchy. Returns it. */
dspy_status dspy__py_err(struct dspy_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif

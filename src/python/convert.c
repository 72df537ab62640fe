/* JSON <-> Python values and Python exceptions -> dspyc errors, for the embedded-CPython
 * bridge (python layer). Everything here runs with the GIL held. */
#include "python/bridge_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/status.h"

/* ---- JSON -> Python ---------------------------------------------------------------- */

static PyObject *from_json(const json_t *j, int depth);

static PyObject *object_from_json(const json_t *j, int depth)
{
    PyObject *dict = PyDict_New();
    const char *key;
    size_t key_len;
    json_t *val;

    if (!dict)
        return NULL;
    /* jansson's iterators take a non-const object; nothing here modifies it. */
    json_object_keylen_foreach((json_t *)j, key, key_len, val) {
        PyObject *k = PyUnicode_DecodeUTF8(key, (Py_ssize_t)key_len, "strict");
        PyObject *v = k ? from_json(val, depth + 1) : NULL;
        int rc = v ? PyDict_SetItem(dict, k, v) : -1;
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (rc < 0) {
            Py_DECREF(dict);
            return NULL;
        }
    }
    return dict;
}

static PyObject *array_from_json(const json_t *j, int depth)
{
    size_t n = json_array_size(j);
    PyObject *list = PyList_New((Py_ssize_t)n);

    if (!list)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *v = from_json(json_array_get(j, i), depth + 1);
        if (!v) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, v); /* steals v */
    }
    return list;
}

static PyObject *from_json(const json_t *j, int depth)
{
    if (depth > DSPY_PYTHON_MAX_DEPTH) {
        PyErr_Format(PyExc_RecursionError, "JSON nests deeper than %d levels",
                     DSPY_PYTHON_MAX_DEPTH);
        return NULL;
    }
    switch (json_typeof(j)) {
    case JSON_OBJECT: return object_from_json(j, depth);
    case JSON_ARRAY: return array_from_json(j, depth);
    case JSON_STRING:
        return PyUnicode_DecodeUTF8(json_string_value(j), (Py_ssize_t)json_string_length(j),
                                    "strict");
    case JSON_INTEGER: return PyLong_FromLongLong(json_integer_value(j));
    case JSON_REAL: return PyFloat_FromDouble(json_real_value(j));
    case JSON_TRUE: Py_RETURN_TRUE;
    case JSON_FALSE: Py_RETURN_FALSE;
    case JSON_NULL: Py_RETURN_NONE;
    }
    PyErr_SetString(PyExc_TypeError, "unknown JSON value type");
    return NULL;
}

PyObject *dspy__py_from_json(const json_t *j)
{
    return from_json(j, 0);
}

/* ---- Python -> JSON ---------------------------------------------------------------- */

static json_t *to_json(PyObject *o, int depth);

static json_t *no_memory(void)
{
    PyErr_NoMemory();
    return NULL;
}

static json_t *string_to_json(PyObject *s)
{
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(s, &n);
    PyObject *bytes;
    json_t *j;

    if (p) {
        /* CPython's UTF-8 is always valid, so skip jansson's check. */
        j = json_stringn_nocheck(p, (size_t)n);
        return j ? j : no_memory();
    }
    /* Lone surrogates have no UTF-8 form: replace them rather than fail the whole call. */
    PyErr_Clear();
    bytes = PyUnicode_AsEncodedString(s, "utf-8", "replace");
    if (!bytes)
        return NULL;
    j = json_stringn_nocheck(PyBytes_AS_STRING(bytes), (size_t)PyBytes_GET_SIZE(bytes));
    Py_DECREF(bytes);
    return j ? j : no_memory();
}

/* str(o) as a JSON string. */
static json_t *str_to_json(PyObject *o)
{
    PyObject *s = PyObject_Str(o);
    json_t *j;

    if (!s)
        return NULL;
    j = string_to_json(s);
    Py_DECREF(s);
    return j;
}

static json_t *int_to_json(PyObject *o)
{
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    json_t *j;

    if (overflow)
        return str_to_json(o); /* beyond 64 bits: keep every digit, as a string */
    if (v == -1 && PyErr_Occurred())
        return NULL;
    j = json_integer(v);
    return j ? j : no_memory();
}

static json_t *float_to_json(PyObject *o)
{
    double d = PyFloat_AS_DOUBLE(o);
    json_t *j;

    if (!isfinite(d))
        return str_to_json(o); /* JSON has no NaN or infinity: "nan", "inf", "-inf" */
    j = json_real(d);
    return j ? j : no_memory();
}

/* An object from a list of (key, value) pairs; keys that are not str go through str(). */
static json_t *pairs_to_json(PyObject *pairs, int depth)
{
    json_t *obj = json_object();

    if (!obj)
        return no_memory();
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pairs); i++) {
        PyObject *pair = PyList_GET_ITEM(pairs, i);
        PyObject *key;
        const char *k;
        Py_ssize_t klen;
        json_t *v;

        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "items() did not yield (key, value) pairs");
            goto fail;
        }
        key = PyTuple_GET_ITEM(pair, 0);
        key = PyUnicode_Check(key) ? Py_NewRef(key) : PyObject_Str(key);
        if (!key)
            goto fail;
        k = PyUnicode_AsUTF8AndSize(key, &klen);
        v = k ? to_json(PyTuple_GET_ITEM(pair, 1), depth + 1) : NULL;
        if (v && json_object_setn_new_nocheck(obj, k, (size_t)klen, v) != 0) {
            v = no_memory(); /* jansson released v */
        }
        Py_DECREF(key);
        if (!v)
            goto fail;
    }
    return obj;
fail:
    json_decref(obj);
    return NULL;
}

/* Arrays from lists, tuples and sets. Iterating (rather than indexing) stays safe when
 * str() of an element runs code that changes the list. */
static json_t *iterable_to_json(PyObject *o, int depth)
{
    PyObject *it = PyObject_GetIter(o);
    PyObject *item;
    json_t *arr;

    if (!it)
        return NULL;
    arr = json_array();
    if (!arr) {
        Py_DECREF(it);
        return no_memory();
    }
    while ((item = PyIter_Next(it)) != NULL) {
        json_t *v = to_json(item, depth + 1);
        Py_DECREF(item);
        if (!v || json_array_append_new(arr, v) != 0) {
            if (v)
                no_memory();
            goto fail;
        }
    }
    if (PyErr_Occurred())
        goto fail;
    Py_DECREF(it);
    return arr;
fail:
    Py_DECREF(it);
    json_decref(arr);
    return NULL;
}

/* Call o.name() when o has such a method: 1 with *res set, 0 when absent, -1 on error. */
static int call_method_if_present(PyObject *o, const char *name, PyObject **res)
{
    PyObject *m = PyObject_GetAttrString(o, name);

    if (!m) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    if (!PyCallable_Check(m)) {
        Py_DECREF(m);
        return 0;
    }
    *res = PyObject_CallNoArgs(m);
    Py_DECREF(m);
    return *res ? 1 : -1;
}

/* Objects that are not plain data: DSPy's Prediction/Example (toDict), pydantic models
 * (model_dump), other mappings (items), and str() for the rest. */
static json_t *object_to_json(PyObject *o, int depth)
{
    static const char *const methods[] = { "toDict", "model_dump" };
    PyObject *res = NULL, *pairs;
    json_t *j;
    int rc;

    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        rc = call_method_if_present(o, methods[i], &res);
        if (rc < 0)
            return NULL;
        if (rc > 0) {
            j = to_json(res, depth + 1);
            Py_DECREF(res);
            return j;
        }
    }
    if (PyMapping_Check(o)) {
        rc = call_method_if_present(o, "items", &res);
        if (rc < 0)
            return NULL;
        if (rc > 0) {
            pairs = PySequence_List(res);
            Py_DECREF(res);
            if (!pairs)
                return NULL;
            j = pairs_to_json(pairs, depth);
            Py_DECREF(pairs);
            return j;
        }
    }
    return str_to_json(o);
}

static json_t *to_json(PyObject *o, int depth)
{
    PyObject *pairs;
    json_t *j;

    if (o == Py_None)
        return json_null();
    if (PyBool_Check(o))
        return json_boolean(o == Py_True);
    if (PyLong_Check(o))
        return int_to_json(o);
    if (PyFloat_Check(o))
        return float_to_json(o);
    if (PyUnicode_Check(o))
        return string_to_json(o);
    if (depth >= DSPY_PYTHON_MAX_DEPTH) {
        PyErr_Format(PyExc_RecursionError,
                     "the result nests deeper than %d levels (or contains itself)",
                     DSPY_PYTHON_MAX_DEPTH);
        return NULL;
    }
    if (PyDict_Check(o)) {
        /* A copy of the items: converting a value may run code that changes the dict. */
        pairs = PyDict_Items(o);
        if (!pairs)
            return NULL;
        j = pairs_to_json(pairs, depth);
        Py_DECREF(pairs);
        return j;
    }
    if (PyList_Check(o) || PyTuple_Check(o) || PyAnySet_Check(o))
        return iterable_to_json(o, depth);
    return object_to_json(o, depth);
}

json_t *dspy__py_to_json(PyObject *o)
{
    return to_json(o, 0);
}

/* ---- exceptions -------------------------------------------------------------------- */

/* Status for an exception class found anywhere in its MRO, most derived first. Names
 * cover the builtins, DSPy's errors (dspy.utils.exceptions, which wrap LiteLLM's since
 * DSPy 3.3) and openai/LiteLLM's own. */
static const struct {
    const char *name;
    dspy_status code;
} exc_statuses[] = {
    { "KeyboardInterrupt", DSPY_ECANCELED },
    { "MemoryError", DSPY_ENOMEM },
    { "RecursionError", DSPY_ETOOBIG },
    { "ModuleNotFoundError", DSPY_ENOTFOUND },
    { "ImportError", DSPY_ENOTFOUND },
    { "AdapterParseError", DSPY_EADAPTER },
    { "LMAuthError", DSPY_ELM_AUTH },
    { "LMBillingError", DSPY_ELM_AUTH },
    { "LMRateLimitError", DSPY_ELM_RATE_LIMIT },
    { "LMInvalidRequestError", DSPY_ELM_BAD_REQUEST },
    { "LMTimeoutError", DSPY_ELM_TIMEOUT },
    { "LMServerError", DSPY_ELM_SERVER },
    { "LMTransportError", DSPY_ELM_NETWORK },
    { "AuthenticationError", DSPY_ELM_AUTH },
    { "PermissionDeniedError", DSPY_ELM_AUTH },
    { "RateLimitError", DSPY_ELM_RATE_LIMIT },
    { "ContextWindowExceededError", DSPY_ELM_CONTEXT },
    { "APITimeoutError", DSPY_ELM_TIMEOUT },
    { "Timeout", DSPY_ELM_TIMEOUT },
    { "APIConnectionError", DSPY_ELM_NETWORK },
    { "InternalServerError", DSPY_ELM_SERVER },
    { "ServiceUnavailableError", DSPY_ELM_SERVER },
    { "BadGatewayError", DSPY_ELM_SERVER },
    { "BadRequestError", DSPY_ELM_BAD_REQUEST },
    { "NotFoundError", DSPY_ELM_BAD_REQUEST },
    { "UnprocessableEntityError", DSPY_ELM_BAD_REQUEST },
    { "JSONDecodeError", DSPY_EPARSE },
    { "UnicodeError", DSPY_EUTF8 },
    { "OSError", DSPY_EIO },
};

static dspy_status status_of(PyTypeObject *type)
{
    PyObject *mro = type->tp_mro;

    if (!mro || !PyTuple_Check(mro))
        return DSPY_EINVAL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
        const char *name = ((PyTypeObject *)PyTuple_GET_ITEM(mro, i))->tp_name;
        const char *dot = strrchr(name, '.');
        name = dot ? dot + 1 : name;
        for (size_t k = 0; k < sizeof(exc_statuses) / sizeof(exc_statuses[0]); k++)
            if (strcmp(name, exc_statuses[k].name) == 0)
                return exc_statuses[k].code;
    }
    return DSPY_EINVAL;
}

/* The pending exception, normalized, as a new reference (NULL when none). */
static PyObject *take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;

    PyErr_Fetch(&type, &value, &tb);
    if (!type)
        return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (value && tb)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

/* UTF-8 of str(getattr(o, name)) (or of str(o) when name is NULL) into buf; "" on any
 * failure, which is cleared. */
static void attr_text(PyObject *o, const char *name, char *buf, size_t size)
{
    PyObject *v = name ? PyObject_GetAttrString(o, name) : Py_NewRef(o);
    PyObject *s = v ? PyObject_Str(v) : NULL;
    const char *p = s ? PyUnicode_AsUTF8(s) : NULL;

    snprintf(buf, size, "%s", p ? p : "");
    if (!p)
        PyErr_Clear();
    Py_XDECREF(s);
    Py_XDECREF(v);
}

static long attr_long(PyObject *o, const char *name)
{
    PyObject *v = PyObject_GetAttrString(o, name);
    long n = -1;

    if (v && PyLong_Check(v))
        n = PyLong_AsLong(v);
    Py_XDECREF(v);
    PyErr_Clear();
    return n;
}

/* HTTP status an LM error carries: openai's status_code or DSPy's status; 0 if none. */
static int http_status_of(PyObject *exc)
{
    long n = attr_long(exc, "status_code");

    if (n < 100 || n > 599)
        n = attr_long(exc, "status");
    return n >= 100 && n <= 599 ? (int)n : 0;
}

/* For provider errors of a class not in the table. */
static dspy_status status_of_http(int http)
{
    if (http == 401 || http == 403)
        return DSPY_ELM_AUTH;
    if (http == 429)
        return DSPY_ELM_RATE_LIMIT;
    if (http == 408)
        return DSPY_ELM_TIMEOUT;
    if (http >= 400 && http < 500)
        return DSPY_ELM_BAD_REQUEST;
    if (http >= 500)
        return DSPY_ELM_SERVER;
    return DSPY_EINVAL;
}

struct exc_where {
    char file[256];
    char func[128];
    long line;
};

/* Fill w from one traceback entry. */
static void frame_of(PyObject *tb, struct exc_where *w)
{
    PyObject *frame = PyObject_GetAttrString(tb, "tb_frame");
    PyObject *code = frame ? PyObject_GetAttrString(frame, "f_code") : NULL;

    w->file[0] = w->func[0] = '\0';
    w->line = attr_long(tb, "tb_lineno");
    if (code) {
        attr_text(code, "co_filename", w->file, sizeof(w->file));
        attr_text(code, "co_name", w->func, sizeof(w->func));
    }
    Py_XDECREF(code);
    Py_XDECREF(frame);
    PyErr_Clear();
}

/* Source position where the exception was raised: the innermost traceback entry that is
 * not inside the import machinery (Python's own tracebacks hide those frames too). */
static void innermost_frame(PyObject *exc, struct exc_where *w)
{
    PyObject *tb = PyException_GetTraceback(exc), *next;
    struct exc_where cur;

    w->file[0] = w->func[0] = '\0';
    w->line = -1;
    while (tb && tb != Py_None) {
        frame_of(tb, &cur);
        if (cur.file[0] && strncmp(cur.file, "<frozen importlib", 17) != 0)
            *w = cur;
        next = PyObject_GetAttrString(tb, "tb_next");
        Py_DECREF(tb);
        tb = next;
    }
    Py_XDECREF(tb);
    PyErr_Clear();
}

/* For a module that cannot be found, say which Python looked and how to change it. */
static void missing_module_hint(PyObject *exc, char *buf, size_t size)
{
    char name[128], prefix[256];
    PyObject *sys_prefix = PySys_GetObject("prefix"); /* borrowed */

    buf[0] = '\0';
    if (!PyErr_GivenExceptionMatches(exc, PyExc_ModuleNotFoundError))
        return;
    attr_text(exc, "name", name, sizeof(name));
    prefix[0] = '\0';
    if (sys_prefix)
        attr_text(sys_prefix, NULL, prefix, sizeof(prefix));
    if (strcmp(name, "dspy") == 0 || strncmp(name, "dspy.", 5) == 0)
        snprintf(buf, size,
                 " (DSPy is not installed for the embedded Python, sys.prefix=%s: install "
                 "it there, or point the bridge at a venv that has it with the venv "
                 "option, $VIRTUAL_ENV or ./.venv)",
                 prefix);
    else
        snprintf(buf, size,
                 " (embedded Python sys.prefix=%s: is it installed in the venv "
                 "the bridge uses, or on sys.path?)",
                 prefix);
}

dspy_status dspy__py_err(struct dspy_error *err, const char *fmt, ...)
{
    PyObject *exc = take_exception();
    PyTypeObject *type;
    char context[256], module[128], qualname[128], text[384], hint[384], where[320];
    struct exc_where w;
    const char *slash;
    dspy_status code;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(context, sizeof(context), fmt, ap);
    va_end(ap);
    if (!exc)
        return dspy__err(err, DSPY_EINVAL, "%s: failed without a Python exception", context);
    type = Py_TYPE(exc);
    code = status_of(type);
    if (code == DSPY_EINVAL)
        code = status_of_http(http_status_of(exc));
    attr_text((PyObject *)type, "__module__", module, sizeof(module));
    attr_text((PyObject *)type, "__qualname__", qualname, sizeof(qualname));
    attr_text(exc, NULL, text, sizeof(text));
    missing_module_hint(exc, hint, sizeof(hint));
    innermost_frame(exc, &w);
    where[0] = '\0';
    if (w.file[0]) {
        slash = strrchr(w.file, '/');
        snprintf(where, sizeof(where), " at %.120s:%ld in %.60s", slash ? slash + 1 : w.file,
                 w.line, w.func);
    }
    dspy__err(err, code, "%s: %s%s%s%s%s%s", context,
              module[0] && strcmp(module, "builtins") != 0 ? module : "",
              module[0] && strcmp(module, "builtins") != 0 ? "." : "", qualname, where,
              text[0] ? ": " : "", text);
    if (err) {
        size_t len = strlen(err->message);
        snprintf(err->message + len, sizeof(err->message) - len, "%s", hint);
        if (w.file[0]) {
            dspy__err_file(err, w.file);
            err->line = w.line;
        }
        err->http_status = http_status_of(exc);
    }
    Py_DECREF(exc);
    return code;
}

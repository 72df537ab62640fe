/* Python layer, public API: an embedded CPython interpreter that loads a Python DSPy module
 * (or any callable) and calls it from C threads with JSON in and JSON out, timing GIL
 * acquisition, Python execution and conversion. Optional at build time. */
#ifndef DSPYC_PYTHON_H
#define DSPYC_PYTHON_H

#include <jansson.h>

#include <dspyc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The embedded interpreter. One per process: CPython is started by
 * dspy_python_bridge_new() and finalized by dspy_python_bridge_free(), and cannot be
 * started again afterwards (see dspy_python_bridge_free()).
 * Threading: create and free it on the same thread; everything in between
 * (dspy_python_load(), dspy_python_call(), dspy_python_callable_free(),
 * dspy_python_bridge_info()) may run on any thread, concurrently. The GIL serializes the
 * Python work itself. */
typedef struct dspy_python_bridge dspy_python_bridge;

/** A Python callable loaded through a bridge (a DSPy module instance, a function, any object
 * with __call__). Threading: dspy_python_call() may run on many threads at once. */
typedef struct dspy_python_callable dspy_python_callable;

/** How to start the interpreter. All pointers are borrowed for the duration of
 * dspy_python_bridge_new(). */
struct dspy_python_options {
    /* Virtualenv whose packages the interpreter sees (its pyvenv.cfg must name the same
     * Python major.minor as the libpython dspyc was built against). NULL: $VIRTUAL_ENV if
     * set, else ./.venv when it holds a pyvenv.cfg, else none. "": no virtualenv. */
    const char *venv;
    /* PYTHONHOME: the prefix holding the standard library. NULL: what libpython computes
     * (normally the prefix it was built for). Setting it disables venv detection by
     * CPython; the venv's site-packages is still added to sys.path. */
    const char *home;
    /* Extra directories put at the front of sys.path, in this order. NULL-terminated
     * array, or NULL. */
    const char *const *sys_path;
    /* Environment changes applied with setenv() before the interpreter starts:
     * "NAME=VALUE" sets, "NAME" unsets. NULL-terminated array, or NULL. */
    const char *const *env;
    /* Ignore PYTHON* environment variables and the user site-packages directory. */
    bool isolated;
};
#define DSPY_PYTHON_OPTIONS_INIT \
    {                            \
        .venv = NULL             \
    }

/** Where the time of one dspy_python_call() went, in nanoseconds of dspy_clock_ns().
 * Filled on success and on failure; phases that were not reached are 0. */
struct dspy_python_timing {
    uint64_t gil_wait_ns;    /* acquiring the GIL (on a thread's first call, also creating
                              * its Python thread state) */
    uint64_t to_python_ns;   /* kwargs JSON -> Python dict */
    uint64_t exec_ns;        /* inside the Python call; includes any time the call spends
                              * re-acquiring the GIL after giving it up (I/O, sleeps, the
                              * interpreter's switch interval) */
    uint64_t from_python_ns; /* result -> JSON */
    uint64_t convert_ns;     /* to_python_ns + from_python_ns */
    uint64_t total_ns;       /* the whole call, GIL release included */
};

/** True when this build of libdspyc embeds Python. When false, every other function here
 * fails with DSPY_EUNSUPPORTED. */
DSPY_EXTERN bool dspy_python_available(void);

/** Start the embedded interpreter. `opts` may be NULL (defaults). Returns NULL and fills
 * `err` (optional) on failure:
 * DSPY_EUNSUPPORTED when built without Python, when the interpreter was already finalized
 * in this process, when the process already runs a Python interpreter dspyc did not start,
 * or when the venv was made by another Python major.minor; DSPY_EBUSY when a bridge already
 * exists; DSPY_ENOTFOUND when an explicitly named venv has no pyvenv.cfg; DSPY_EINVAL when
 * CPython refuses to start (its message is in `err`). Caller owns the bridge; free it with
 * dspy_python_bridge_free(). Call it from one thread while no other thread reads the
 * environment (`opts->env` uses setenv()). */
DSPY_EXTERN dspy_python_bridge *dspy_python_bridge_new(const struct dspy_python_options *opts,
                                                       struct dspy_error *err);

/** Finalize the interpreter (Py_FinalizeEx: atexit handlers run, non-daemon Python threads
 * are joined, buffered Python output is flushed) and free the bridge. CPython cannot be
 * reliably started twice in one process (extension modules such as pydantic-core keep
 * global state), so a later dspy_python_bridge_new() fails with DSPY_EUNSUPPORTED: free
 * the bridge only when the process is done with Python. No dspy_python_call() may be in
 * flight; callables not yet freed become inert (freeing them later only releases memory).
 * Call it on the thread that created the bridge. NULL is a no-op. */
DSPY_EXTERN void dspy_python_bridge_free(dspy_python_bridge *b);

/** Describe the interpreter: {"version", "executable", "prefix", "base_prefix", "venv",
 * "path": [sys.path...], "dspy": installed DSPy version or null} (DSPy is looked up in the
 * package metadata, not imported). Caller owns *info. Any thread. */
DSPY_EXTERN dspy_status dspy_python_bridge_info(dspy_python_bridge *b, json_t **info,
                                                struct dspy_error *err);

/** Import `target`, "package.module:attribute" (the attribute may be dotted, e.g.
 * "app:program.qa"), and hand back the object, which must be callable. Importing runs the
 * module's top-level code (e.g. dspy.configure()). Errors: DSPY_EINVAL for a malformed
 * target, an exception while importing, or an object that is not callable;
 * DSPY_ENOTFOUND when the module or attribute does not exist. The message carries the
 * Python exception type, text and innermost source line, and for a missing module the
 * sys.prefix searched and how to point the bridge at a venv. Caller owns *out; free it
 * with dspy_python_callable_free(). Any thread. */
DSPY_EXTERN dspy_status dspy_python_load(dspy_python_bridge *b, const char *target,
                                         dspy_python_callable **out, struct dspy_error *err);

/** Release the Python object and free the handle. No call on it may be in flight.
 * NULL is a no-op. Any thread. */
DSPY_EXTERN void dspy_python_callable_free(dspy_python_callable *c);

/** The target it was loaded from ("module:attribute"); borrowed until it is freed. */
DSPY_EXTERN const char *dspy_python_callable_name(const dspy_python_callable *c);

/** Call it with keyword arguments `kwargs` (a JSON object, or NULL for none; borrowed) and
 * put the converted return value in *result (caller owns). JSON maps to Python as
 * object->dict, array->list, string->str, integer->int, real->float, true/false->bool,
 * null->None. The return value maps back as: None/bool/int/float/str/dict/list/tuple/set
 * directly (ints beyond 64 bits, NaN and infinities as strings, non-string dict keys
 * through str()); objects with toDict() (a DSPy Prediction or Example) or model_dump()
 * (pydantic) through that method; other mappings through items(); anything else as str().
 * A Python exception becomes a status chosen by its class: DSPy's LM errors and
 * openai/LiteLLM's by name (LMAuthError/AuthenticationError -> DSPY_ELM_AUTH,
 * LMRateLimitError/RateLimitError -> DSPY_ELM_RATE_LIMIT, LMTimeoutError/APITimeoutError
 * -> DSPY_ELM_TIMEOUT, LMTransportError/APIConnectionError -> DSPY_ELM_NETWORK,
 * LMServerError -> DSPY_ELM_SERVER, LMInvalidRequestError -> DSPY_ELM_BAD_REQUEST, ...),
 * other errors carrying an HTTP status by that status, AdapterParseError ->
 * DSPY_EADAPTER, ImportError -> DSPY_ENOTFOUND, MemoryError -> DSPY_ENOMEM,
 * RecursionError or nesting deeper than 256 levels -> DSPY_ETOOBIG, the rest
 * DSPY_EINVAL. `err` gets the exception's type, text and innermost source file/line (also
 * in err->file and err->line) and err->http_status (status_code or status, else 0).
 * `t` (optional) receives the timing. Any thread, concurrently: each C thread gets its own
 * Python thread state on its first call, kept until the thread exits. */
DSPY_EXTERN dspy_status dspy_python_call(dspy_python_callable *c, const json_t *kwargs,
                                         json_t **result, struct dspy_python_timing *t,
                                         struct dspy_error *err);

#ifdef __cplusplus
}
#endif
#endif

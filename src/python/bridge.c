/* The embedded-CPython bridge (python layer): starts the process's one interpreter, pointed
 * at a virtualenv, loads "module:attribute" callables and calls them from any C thread,
 * each thread with its own Python thread state, timing GIL wait, execution and conversion. */
#include "python/bridge_int.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <dspyc/python.h>

#include "base/status.h"

enum bridge_state { STATE_NONE, STATE_LIVE, STATE_FINALIZED };

struct dspy_python_bridge {
    char *venv; /* absolute path of the virtualenv in use, or NULL */
};

struct dspy_python_callable {
    PyObject *obj; /* strong reference, released under the GIL */
    char *name;    /* "module:attribute" */
};

/* CPython has one runtime per process, so the bridge's state is process-wide. g_state
 * changes only under g_lock (which is never taken while holding the GIL, only before
 * acquiring it); the hot path reads it atomically. The rest is written before g_state
 * becomes LIVE and read-only afterwards. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int g_state = STATE_NONE;
static PyThreadState *g_main_tstate; /* the creating thread's state, saved while idle */
static pthread_t g_owner;            /* the thread that created the bridge */
static PyInterpreterState *g_interp;
/* Each other C thread's PyThreadState, made on its first call and deleted when the thread
 * exits: creating one per call (as PyGILState_Ensure/Release would) costs microseconds and
 * throws away Python thread-locals such as HTTP clients between calls. */
static pthread_key_t g_tstate_key;
static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;
static int g_key_rc;

/* pthread key destructor: runs on a C thread's exit with that thread's state. */
static void thread_state_delete(void *p)
{
    PyThreadState *ts = p;

    pthread_mutex_lock(&g_lock);
    if (atomic_load(&g_state) == STATE_LIVE) {
        PyEval_RestoreThread(ts);
        PyThreadState_Clear(ts);
        PyThreadState_DeleteCurrent();
    }
    pthread_mutex_unlock(&g_lock);
}

static void key_create(void)
{
    g_key_rc = pthread_key_create(&g_tstate_key, thread_state_delete);
}

/* Take the GIL on this C thread, making its thread state on first use. */
static dspy_status gil_acquire(struct dspy_error *err)
{
    PyThreadState *ts;

    if (pthread_equal(pthread_self(), g_owner)) {
        PyEval_RestoreThread(g_main_tstate);
        return DSPY_OK;
    }
    ts = pthread_getspecific(g_tstate_key);
    if (!ts) {
        ts = PyThreadState_New(g_interp);
        if (!ts)
            return dspy__err(err, DSPY_ENOMEM, "cannot create a Python thread state");
        if (pthread_setspecific(g_tstate_key, ts) != 0) {
            PyEval_RestoreThread(ts);
            PyThreadState_Clear(ts);
            PyThreadState_DeleteCurrent();
            return dspy__err(err, DSPY_ENOMEM, "cannot keep a Python thread state");
        }
    }
    PyEval_RestoreThread(ts);
    return DSPY_OK;
}

static void gil_release(void)
{
    (void)PyEval_SaveThread();
}

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* "NAME=VALUE" sets, "NAME" unsets. */
static dspy_status apply_env(const char *const *env, struct dspy_error *err)
{
    for (; env && *env; env++) {
        const char *eq = strchr(*env, '=');
        char *name;
        int rc;

        if (!eq) {
            rc = unsetenv(*env);
        } else {
            name = dspy_strndup(*env, (size_t)(eq - *env));
            if (!name)
                return dspy__err(err, DSPY_ENOMEM, "out of memory");
            rc = setenv(name, eq + 1, 1);
            dspy_free(name);
        }
        if (rc != 0)
            return dspy__err(err, DSPY_EINVAL, "cannot set environment entry '%s'", *env);
    }
    return DSPY_OK;
}

/* A venv's packages are compiled for one Python major.minor: refuse another one early,
 * with a message, instead of failing later inside an extension module. */
static dspy_status venv_check_version(const char *cfg_path, struct dspy_error *err)
{
    FILE *f = fopen(cfg_path, "r");
    char line[512], key[64];
    int major = -1, minor = -1, a, b;

    if (!f)
        return dspy__err(err, DSPY_EIO, "cannot read %s", cfg_path);
    while (fgets(line, sizeof(line), f)) {
        /* venv writes "version = 3.11.7", virtualenv "version_info = 3.11.2.final.0" */
        if (sscanf(line, " %63[A-Za-z_] = %d.%d", key, &a, &b) == 3 &&
            (strcmp(key, "version") == 0 || strcmp(key, "version_info") == 0)) {
            major = a;
            minor = b;
            break;
        }
    }
    fclose(f);
    if (major >= 0 && (major != PY_MAJOR_VERSION || minor != PY_MINOR_VERSION))
        return dspy__err(err, DSPY_EUNSUPPORTED,
                         "%s: the virtualenv was made by Python %d.%d but dspyc embeds "
                         "libpython %d.%d; make the venv with python%d.%d or rebuild dspyc "
                         "against Python %d.%d",
                         cfg_path, major, minor, PY_MAJOR_VERSION, PY_MINOR_VERSION,
                         PY_MAJOR_VERSION, PY_MINOR_VERSION, major, minor);
    return DSPY_OK;
}

/* The venv to use: the option, else $VIRTUAL_ENV, else ./.venv when it is one. *out gets
 * its absolute path (caller frees) or NULL for none. */
static dspy_status venv_resolve(const char *opt, char **out, struct dspy_error *err)
{
    const char *path = opt, *source = "venv option";
    char cfg[PATH_MAX], *abs;
    bool named = true;
    dspy_status rc;

    *out = NULL;
    if (!path) {
        path = getenv("VIRTUAL_ENV");
        source = "$VIRTUAL_ENV";
        if (!path || !*path) {
            path = ".venv";
            named = false;
        }
    }
    if (!*path)
        return DSPY_OK;
    if ((size_t)snprintf(cfg, sizeof(cfg), "%s/pyvenv.cfg", path) >= sizeof(cfg))
        return dspy__err(err, DSPY_ETOOBIG, "%s '%s' is too long a path", source, path);
    if (!is_file(cfg)) {
        if (!named)
            return DSPY_OK;
        return dspy__err(err, DSPY_ENOTFOUND, "%s '%s' is not a virtualenv (no pyvenv.cfg)", source,
                         path);
    }
    rc = venv_check_version(cfg, err);
    if (rc)
        return rc;
    abs = realpath(path, NULL);
    if (!abs)
        return dspy__err(err, DSPY_EIO, "cannot resolve %s '%s'", source, path);
    *out = dspy_strdup(abs);
    free(abs); /* realpath() allocates with malloc */
    return *out ? DSPY_OK : dspy__err(err, DSPY_ENOMEM, "out of memory");
}

static dspy_status config_set(PyConfig *cfg, wchar_t **field, const char *value, const char *what,
                              struct dspy_error *err)
{
    PyStatus st = PyConfig_SetBytesString(cfg, field, value);
    if (PyStatus_Exception(st))
        return dspy__err(err, DSPY_EINVAL, "cannot set Python %s to '%s': %s", what, value,
                         st.err_msg ? st.err_msg : "error");
    return DSPY_OK;
}

/* Prefix of the libpython this process runs: the nearest ancestor of its directory that
 * holds lib/pythonX.Y/os.py. Without it CPython guesses from the first python3 on $PATH,
 * which may be another installation's standard library. */
static bool libpython_prefix(char *out, size_t size)
{
    Dl_info info;
    char landmark[PATH_MAX], *lib, *slash;
    bool found = false;

    /* Py_None's address lies in libpython (or in the program, when linked statically). */
    if (!dladdr((void *)Py_None, &info) || !info.dli_fname)
        return false;
    lib = realpath(info.dli_fname, NULL);
    if (!lib)
        return false;
    while (!found && (slash = strrchr(lib, '/')) != NULL) {
        *slash = '\0';
        snprintf(landmark, sizeof(landmark), "%s/lib/python%d.%d/os.py", lib, PY_MAJOR_VERSION,
                 PY_MINOR_VERSION);
        found = is_file(landmark) && (size_t)snprintf(out, size, "%s", lib) < size;
    }
    free(lib); /* realpath() allocates with malloc */
    return found;
}

/* Py_InitializeFromConfig with the venv's interpreter as sys.executable, so CPython finds
 * the venv's pyvenv.cfg and sets sys.prefix and site-packages as the venv's python does;
 * without a venv, with the python next to our libpython. */
static dspy_status start_interpreter(const struct dspy_python_options *o, const char *venv,
                                     struct dspy_error *err)
{
    char exe[PATH_MAX], prefix[PATH_MAX - 32];
    dspy_status rc = DSPY_OK;
    PyConfig cfg;
    PyStatus st;

    PyConfig_InitPythonConfig(&cfg);
    cfg.install_signal_handlers = 0; /* SIGINT and friends stay the host program's */
    cfg.parse_argv = 0;
    if (o->isolated) {
        cfg.isolated = 1;
        cfg.use_environment = 0;
        cfg.user_site_directory = 0;
    }
    if (venv) {
        snprintf(exe, sizeof(exe), "%s/bin/python3", venv);
        if (!is_file(exe))
            snprintf(exe, sizeof(exe), "%s/bin/python", venv);
        if (is_file(exe))
            rc = config_set(&cfg, &cfg.executable, exe, "executable", err);
    } else if (!o->home && libpython_prefix(prefix, sizeof(prefix))) {
        snprintf(exe, sizeof(exe), "%s/bin/python%d.%d", prefix, PY_MAJOR_VERSION,
                 PY_MINOR_VERSION);
        if (is_file(exe))
            rc = config_set(&cfg, &cfg.executable, exe, "executable", err);
        else
            rc = config_set(&cfg, &cfg.home, prefix, "home", err);
    }
    if (!rc && o->home)
        rc = config_set(&cfg, &cfg.home, o->home, "home", err);
    if (rc)
        goto out;
    st = Py_InitializeFromConfig(&cfg);
    if (PyStatus_Exception(st))
        rc = dspy__err(err, DSPY_EINVAL, "cannot start the embedded Python: %s%s%s",
                       st.func ? st.func : "", st.func ? ": " : "",
                       st.err_msg ? st.err_msg : "it asked to exit");
out:
    PyConfig_Clear(&cfg);
    return rc;
}

/* With the GIL: the extra sys.path entries in front, the venv's site-packages (with its
 * .pth files) when CPython did not already add it, and `threading` imported here so that
 * its notion of the main thread is the thread that will finalize. */
static dspy_status setup_paths(const struct dspy_python_options *o, const char *venv,
                               struct dspy_error *err)
{
    PyObject *path = PySys_GetObject("path"); /* borrowed */
    PyObject *site = NULL, *dir = NULL, *res = NULL, *threading = NULL;
    char sitedir[PATH_MAX];
    size_t n = 0;
    dspy_status rc = DSPY_OK;

    if (!path || !PyList_Check(path))
        return dspy__err(err, DSPY_EINVAL, "the embedded Python has no sys.path list");
    while (o->sys_path && o->sys_path[n])
        n++;
    while (n-- > 0) {
        dir = PyUnicode_DecodeFSDefault(o->sys_path[n]);
        if (!dir || PyList_Insert(path, 0, dir) < 0) {
            rc = dspy__py_err(err, "cannot add '%s' to sys.path", o->sys_path[n]);
            goto out;
        }
        Py_CLEAR(dir);
    }
    if (venv) {
        snprintf(sitedir, sizeof(sitedir), "%s/lib/python%d.%d/site-packages", venv,
                 PY_MAJOR_VERSION, PY_MINOR_VERSION);
        site = PyImport_ImportModule("site");
        dir = site ? PyUnicode_DecodeFSDefault(sitedir) : NULL;
        res = dir ? PyObject_CallMethod(site, "addsitedir", "O", dir) : NULL;
        if (!res) {
            rc = dspy__py_err(err, "cannot add the venv's site-packages %s", sitedir);
            goto out;
        }
    }
    threading = PyImport_ImportModule("threading");
    if (!threading)
        rc = dspy__py_err(err, "cannot import threading");
out:
    Py_XDECREF(threading);
    Py_XDECREF(res);
    Py_XDECREF(dir);
    Py_XDECREF(site);
    return rc;
}

static dspy_status check_startable(struct dspy_error *err)
{
    switch (atomic_load(&g_state)) {
    case STATE_LIVE:
        return dspy__err(err, DSPY_EBUSY,
                         "a Python bridge already exists in this process; "
                         "share it (one interpreter per process)");
    case STATE_FINALIZED:
        return dspy__err(err, DSPY_EUNSUPPORTED,
                         "the embedded Python was already finalized in this process and "
                         "CPython cannot be started twice; keep one bridge for the life of "
                         "the process");
    default: break;
    }
    if (Py_IsInitialized())
        return dspy__err(err, DSPY_EUNSUPPORTED,
                         "this process already runs a Python "
                         "interpreter that dspyc did not start; embedding into it is not "
                         "supported");
    return DSPY_OK;
}

bool dspy_python_available(void)
{
    return true;
}

dspy_python_bridge *dspy_python_bridge_new(const struct dspy_python_options *opts,
                                           struct dspy_error *err)
{
    static const struct dspy_python_options defaults = DSPY_PYTHON_OPTIONS_INIT;
    dspy_python_bridge *b = NULL;
    char *venv = NULL;
    dspy_status rc;

    if (!opts)
        opts = &defaults;
    pthread_mutex_lock(&g_lock);
    rc = check_startable(err);
    if (rc)
        goto out_unlock;
    pthread_once(&g_key_once, key_create);
    if (g_key_rc != 0) {
        rc = dspy__err(err, DSPY_ENOMEM, "cannot create a thread-local key");
        goto out_unlock;
    }
    b = dspy_calloc(1, sizeof(*b));
    if (!b) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out_unlock;
    }
    rc = apply_env(opts->env, err);
    if (!rc)
        rc = venv_resolve(opts->venv, &venv, err);
    if (!rc)
        rc = start_interpreter(opts, venv, err);
    if (rc)
        goto out_free;
    rc = setup_paths(opts, venv, err);
    if (rc) {
        (void)Py_FinalizeEx();
        atomic_store(&g_state, STATE_FINALIZED);
        goto out_free;
    }
    b->venv = venv;
    g_interp = PyInterpreterState_Get();
    g_owner = pthread_self();
    g_main_tstate = PyEval_SaveThread();
    atomic_store(&g_state, STATE_LIVE);
    goto out_unlock;
out_free:
    dspy_free(venv);
    dspy_free(b);
    b = NULL;
out_unlock:
    pthread_mutex_unlock(&g_lock);
    return b;
}

void dspy_python_bridge_free(dspy_python_bridge *b)
{
    if (!b)
        return;
    /* From here thread-exit destructors and callable frees leave Python alone. */
    pthread_mutex_lock(&g_lock);
    atomic_store(&g_state, STATE_FINALIZED);
    pthread_mutex_unlock(&g_lock);
    PyEval_RestoreThread(g_main_tstate);
    (void)Py_FinalizeEx();
    g_main_tstate = NULL;
    g_interp = NULL;
    dspy_free(b->venv);
    dspy_free(b);
}

static dspy_status check_live(struct dspy_error *err)
{
    if (atomic_load(&g_state) != STATE_LIVE)
        return dspy__err(err, DSPY_EINVAL, "the Python bridge has been freed");
    return DSPY_OK;
}

/* With the GIL: a dict of what bridge_info reports. */
static PyObject *info_dict(const dspy_python_bridge *b)
{
    static const char *const sys_names[] = { "version", "executable", "prefix", "base_prefix",
                                             "path" };
    PyObject *d = PyDict_New(), *v, *md;
    int rc = d ? 0 : -1;

    for (size_t i = 0; !rc && i < sizeof(sys_names) / sizeof(sys_names[0]); i++) {
        v = PySys_GetObject(sys_names[i]); /* borrowed, NULL when absent */
        rc = PyDict_SetItemString(d, sys_names[i], v ? v : Py_None);
    }
    if (!rc) {
        v = b->venv ? PyUnicode_DecodeFSDefault(b->venv) : Py_NewRef(Py_None);
        rc = v ? PyDict_SetItemString(d, "venv", v) : -1;
        Py_XDECREF(v);
    }
    if (!rc) {
        /* The installed version without importing DSPy (which takes seconds). */
        md = PyImport_ImportModule("importlib.metadata");
        v = md ? PyObject_CallMethod(md, "version", "s", "dspy") : NULL;
        Py_XDECREF(md);
        if (!v) {
            PyErr_Clear();
            v = Py_NewRef(Py_None);
        }
        rc = PyDict_SetItemString(d, "dspy", v);
        Py_DECREF(v);
    }
    if (rc) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

dspy_status dspy_python_bridge_info(dspy_python_bridge *b, json_t **info, struct dspy_error *err)
{
    PyObject *d;
    dspy_status rc;

    if (!b || !info)
        return dspy__err(err, DSPY_EINVAL, "dspy_python_bridge_info: NULL argument");
    *info = NULL;
    rc = check_live(err);
    if (!rc)
        rc = gil_acquire(err);
    if (rc)
        return rc;
    d = info_dict(b);
    *info = d ? dspy__py_to_json(d) : NULL;
    if (!*info)
        rc = dspy__py_err(err, "cannot describe the embedded Python");
    Py_XDECREF(d);
    gil_release();
    return rc;
}

/* With the GIL: getattr(mod, "a.b.c") one dotted part at a time. */
static dspy_status get_attr_path(PyObject *mod, const char *attr, const char *target,
                                 PyObject **out, struct dspy_error *err)
{
    char part[256];
    PyObject *cur = Py_NewRef(mod), *next;
    const char *p = attr, *dot;
    size_t len;
    dspy_status rc = DSPY_OK;

    while (*p) {
        dot = strchr(p, '.');
        len = dot ? (size_t)(dot - p) : strlen(p);
        if (len >= sizeof(part)) {
            rc = dspy__err(err, DSPY_ETOOBIG, "Python target '%s' has too long a name", target);
            goto out;
        }
        memcpy(part, p, len);
        part[len] = '\0';
        next = PyObject_GetAttrString(cur, part);
        if (!next) {
            bool missing = PyErr_ExceptionMatches(PyExc_AttributeError);
            rc = dspy__py_err(err, "cannot load '%s'", target);
            if (missing) {
                rc = DSPY_ENOTFOUND;
                if (err)
                    err->code = rc;
            }
            goto out;
        }
        Py_SETREF(cur, next);
        p = dot ? dot + 1 : p + len;
    }
    *out = cur;
    cur = NULL;
out:
    Py_XDECREF(cur);
    return rc;
}

dspy_status dspy_python_load(dspy_python_bridge *b, const char *target, dspy_python_callable **out,
                             struct dspy_error *err)
{
    dspy_python_callable *c = NULL;
    PyObject *mod = NULL, *obj = NULL;
    const char *colon;
    char *modname = NULL;
    dspy_status rc;

    if (!b || !target || !out)
        return dspy__err(err, DSPY_EINVAL, "dspy_python_load: NULL argument");
    *out = NULL;
    colon = strchr(target, ':');
    if (!colon || colon == target || !colon[1] || colon[1] == '.' || strstr(colon, "..") ||
        colon[strlen(colon) - 1] == '.')
        return dspy__err(err, DSPY_EINVAL, "Python target '%s' is not 'package.module:attribute'",
                         target);
    rc = check_live(err);
    if (rc)
        return rc;
    modname = dspy_strndup(target, (size_t)(colon - target));
    c = dspy_calloc(1, sizeof(*c));
    if (c)
        c->name = dspy_strdup(target);
    if (!modname || !c || !c->name) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out_free;
    }
    rc = gil_acquire(err);
    if (rc)
        goto out_free;
    mod = PyImport_ImportModule(modname);
    if (!mod) {
        rc = dspy__py_err(err, "cannot import Python module '%s'", modname);
        goto out_gil;
    }
    rc = get_attr_path(mod, colon + 1, target, &obj, err);
    if (rc)
        goto out_gil;
    if (!PyCallable_Check(obj)) {
        rc = dspy__err(err, DSPY_EINVAL, "Python object '%s' is a %s, which is not callable",
                       target, Py_TYPE(obj)->tp_name);
        goto out_gil;
    }
    c->obj = obj;
    obj = NULL;
out_gil:
    Py_XDECREF(obj);
    Py_XDECREF(mod);
    gil_release();
out_free:
    if (rc) {
        if (c)
            dspy_free(c->name);
        dspy_free(c);
    } else {
        *out = c;
    }
    dspy_free(modname);
    return rc;
}

void dspy_python_callable_free(dspy_python_callable *c)
{
    if (!c)
        return;
    /* Under g_lock so the bridge cannot finalize between the check and the release. */
    pthread_mutex_lock(&g_lock);
    if (atomic_load(&g_state) == STATE_LIVE && gil_acquire(NULL) == DSPY_OK) {
        Py_DECREF(c->obj);
        gil_release();
    }
    pthread_mutex_unlock(&g_lock);
    dspy_free(c->name);
    dspy_free(c);
}

const char *dspy_python_callable_name(const dspy_python_callable *c)
{
    return c ? c->name : NULL;
}

/* With the GIL: kwargs -> call -> result, timing each step into t. */
static dspy_status call_locked(dspy_python_callable *c, const json_t *kwargs, json_t **result,
                               struct dspy_python_timing *t, struct dspy_error *err)
{
    PyObject *args = NULL, *ret = NULL;
    uint64_t t0 = dspy_clock_ns(), t1, t2;
    dspy_status rc = DSPY_OK;

    if (kwargs) {
        args = dspy__py_from_json(kwargs);
        t->to_python_ns = dspy_clock_ns() - t0;
        if (!args) {
            rc = dspy__py_err(err, "%s: cannot convert the arguments to Python", c->name);
            goto out;
        }
    }
    t1 = dspy_clock_ns();
    ret = PyObject_VectorcallDict(c->obj, NULL, 0, args);
    t2 = dspy_clock_ns();
    t->exec_ns = t2 - t1;
    if (!ret) {
        rc = dspy__py_err(err, "%s", c->name);
        goto out;
    }
    *result = dspy__py_to_json(ret);
    t->from_python_ns = dspy_clock_ns() - t2;
    if (!*result)
        rc = dspy__py_err(err, "%s: cannot convert the result to JSON", c->name);
out:
    Py_XDECREF(ret);
    Py_XDECREF(args);
    return rc;
}

dspy_status dspy_python_call(dspy_python_callable *c, const json_t *kwargs, json_t **result,
                             struct dspy_python_timing *t, struct dspy_error *err)
{
    struct dspy_python_timing local;
    uint64_t t0 = dspy_clock_ns();
    dspy_status rc;

    if (!t)
        t = &local;
    memset(t, 0, sizeof(*t));
    if (!c || !result)
        return dspy__err(err, DSPY_EINVAL, "dspy_python_call: NULL argument");
    *result = NULL;
    if (kwargs && !json_is_object(kwargs))
        return dspy__err(err, DSPY_EINVAL, "%s: keyword arguments must be a JSON object", c->name);
    rc = check_live(err);
    if (!rc)
        rc = gil_acquire(err);
    t->gil_wait_ns = dspy_clock_ns() - t0;
    if (rc)
        goto out;
    rc = call_locked(c, kwargs, result, t, err);
    gil_release();
out:
    t->convert_ns = t->to_python_ns + t->from_python_ns;
    t->total_ns = dspy_clock_ns() - t0;
    return rc;
}

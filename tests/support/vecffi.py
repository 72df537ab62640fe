"""ctypes bindings of the vec layer's public API (include/dspyc/vec.h) over the built
libdspyc.so, for the end-to-end tests and bench/vec_vs_peers.py: numpy arrays in, numpy
arrays out, one context per Vec."""
import ctypes as C
import os

import numpy as np

IP, COSINE, L2 = 0, 1, 2
F32, F16, I8 = 0, 1, 2
BORROW = 1


class _Options(C.Structure):
    _fields_ = [("device", C.c_char_p), ("memory_budget", C.c_uint64), ("threads", C.c_int)]


class _Error(C.Structure):
    _fields_ = [("code", C.c_int), ("message", C.c_char * 512), ("file", C.c_char * 256),
                ("line", C.c_long), ("column", C.c_long), ("offset", C.c_long),
                ("field", C.c_char * 128), ("http_status", C.c_int)]


class _Mem(C.Structure):
    _fields_ = [("current_bytes", C.c_uint64), ("peak_bytes", C.c_uint64),
                ("allocations", C.c_uint64), ("failures", C.c_uint64),
                ("budget_bytes", C.c_uint64)]


def load(build):
    lib = C.CDLL(os.path.join(build, "libdspyc.so"))
    P, S = C.c_void_p, C.c_size_t
    fp = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
    lib.dspy_vec_new.argtypes = [C.POINTER(_Options), C.POINTER(P), C.POINTER(_Error)]
    lib.dspy_vec_free.argtypes = [P]
    lib.dspy_vec_device.argtypes = [P]
    lib.dspy_vec_device.restype = C.c_char_p
    lib.dspy_vec_fallback_reason.argtypes = [P]
    lib.dspy_vec_fallback_reason.restype = C.c_char_p
    lib.dspy_vec_memory.argtypes = [P, C.POINTER(_Mem)]
    lib.dspy_vec_normalize.argtypes = [P, fp, S, S, S, C.POINTER(_Error)]
    lib.dspy_vec_matmul.argtypes = [P, S, S, S, fp, S, fp, S, C.c_bool, fp, S, C.POINTER(_Error)]
    lib.dspy_vec_scores.argtypes = [P, C.c_int, fp, S, S, fp, S, S, S, fp, S, C.POINTER(_Error)]
    lib.dspy_vec_matrix_new.argtypes = [P, fp, S, S, S, C.c_int, C.c_uint, C.POINTER(P),
                                        C.POINTER(_Error)]
    lib.dspy_vec_matrix_free.argtypes = [P]
    lib.dspy_vec_matrix_bytes.argtypes = [P]
    lib.dspy_vec_matrix_bytes.restype = C.c_uint64
    lib.dspy_vec_matrix_read.argtypes = [P, P, C.POINTER(C.c_uint64), C.POINTER(_Error)]
    lib.dspy_vec_topk.argtypes = [P, P, C.c_int, fp, S, S, S,
                                  np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS"),
                                  np.ctypeslib.ndpointer(np.int64, flags="C_CONTIGUOUS"),
                                  C.POINTER(_Error)]
    return lib


class VecError(RuntimeError):
    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code


class Vec:
    def __init__(self, lib, device="cpu", threads=0, budget=0):
        self.lib = lib
        self.h = C.c_void_p()
        err = _Error()
        rc = lib.dspy_vec_new(C.byref(_Options(device.encode(), budget, threads)),
                              C.byref(self.h), C.byref(err))
        if rc:
            raise VecError(rc, err.message.decode())

    def close(self):
        if self.h:
            self.lib.dspy_vec_free(self.h)
            self.h = C.c_void_p()

    @property
    def device(self):
        return self.lib.dspy_vec_device(self.h).decode()

    @property
    def fallback_reason(self):
        r = self.lib.dspy_vec_fallback_reason(self.h)
        return r.decode() if r else None

    def memory(self):
        m = _Mem()
        self.lib.dspy_vec_memory(self.h, C.byref(m))
        return {f: getattr(m, f) for f, _ in _Mem._fields_}

    def _check(self, rc, err):
        if rc:
            raise VecError(rc, err.message.decode())

    def normalize(self, x):
        err = _Error()
        self._check(self.lib.dspy_vec_normalize(self.h, x, x.shape[0], x.shape[1], x.shape[1],
                                                C.byref(err)), err)

    def matmul_bt(self, a, b, out=None):
        """a @ b.T (b laid out like a PyTorch Linear weight)."""
        m, k = a.shape
        n = b.shape[0]
        c = out if out is not None else np.empty((m, n), np.float32)
        err = _Error()
        self._check(self.lib.dspy_vec_matmul(self.h, m, n, k, a, k, b, k, True, c, n,
                                             C.byref(err)), err)
        return c

    def scores(self, metric, q, x):
        out = np.empty((q.shape[0], x.shape[0]), np.float32)
        err = _Error()
        self._check(self.lib.dspy_vec_scores(self.h, metric, q, q.shape[0], q.shape[1], x,
                                             x.shape[0], x.shape[1], x.shape[1], out,
                                             x.shape[0], C.byref(err)), err)
        return out

    def matrix(self, x, storage=F32, borrow=False):
        return Matrix(self, x, storage, borrow)


class Matrix:
    def __init__(self, vec, x, storage, borrow):
        self.vec, self.x, self.h = vec, x, C.c_void_p()
        err = _Error()
        vec._check(vec.lib.dspy_vec_matrix_new(vec.h, x, x.shape[0], x.shape[1], x.shape[1],
                                               storage, BORROW if borrow else 0,
                                               C.byref(self.h), C.byref(err)), err)
        self.d = x.shape[1]

    def close(self):
        if self.h:
            self.vec.lib.dspy_vec_matrix_free(self.h)
            self.h = C.c_void_p()

    @property
    def nbytes(self):
        return self.vec.lib.dspy_vec_matrix_bytes(self.h)

    def read(self):
        s = C.c_uint64()
        err = _Error()
        self.vec._check(self.vec.lib.dspy_vec_matrix_read(self.vec.h, self.h, C.byref(s),
                                                           C.byref(err)), err)
        return s.value

    def topk(self, q, k, metric=IP, scores=None, ids=None):
        q = np.ascontiguousarray(q, np.float32).reshape(-1, self.d)
        nq = q.shape[0]
        scores = scores if scores is not None else np.empty((nq, k), np.float32)
        ids = ids if ids is not None else np.empty((nq, k), np.int64)
        err = _Error()
        self.vec._check(self.vec.lib.dspy_vec_topk(self.vec.h, self.h, metric, q, nq, self.d, k,
                                                   scores, ids, C.byref(err)), err)
        return scores, ids

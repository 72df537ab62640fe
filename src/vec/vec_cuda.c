/* The vec layer's CUDA backend: the driver API, cuBLAS and NVRTC loaded with dlopen at run
 * time (no CUDA headers or libraries at build time; the few types and entry points used
 * are declared here), custom kernels (normalize, decode, metric, top-k) compiled from the
 * source below with NVRTC when a context opens, sgemm from cuBLAS. Without a usable GPU
 * every entry fails cleanly and dspy_vec_probe() says why. */
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "base/status.h"
#include "vec/vec_int.h"

/* ---- the driver, cuBLAS and NVRTC, as far as used ---- */

typedef int CUresult; /* 0 = CUDA_SUCCESS */
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef unsigned long long CUdeviceptr;
typedef struct CUarray_st *CUarray;
enum { CU_MEMORYTYPE_HOST = 1, CU_MEMORYTYPE_DEVICE = 2 };
enum { CUDA_ERROR_OUT_OF_MEMORY = 2 };
enum {
    CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
};
typedef struct {
    size_t srcXInBytes, srcY;
    int srcMemoryType;
    const void *srcHost;
    CUdeviceptr srcDevice;
    CUarray srcArray;
    size_t srcPitch;
    size_t dstXInBytes, dstY;
    int dstMemoryType;
    void *dstHost;
    CUdeviceptr dstDevice;
    CUarray dstArray;
    size_t dstPitch;
    size_t WidthInBytes, Height;
} CUDA_MEMCPY2D;

typedef struct cublasContext *cublasHandle_t;
typedef int cublasStatus_t; /* 0 = CUBLAS_STATUS_SUCCESS */
enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };

typedef struct _nvrtcProgram *nvrtcProgram;
typedef int nvrtcResult; /* 0 = NVRTC_SUCCESS */

static struct cuda_api {
    bool ok;
    char reason[256];
    void *cuda, *cublas, *nvrtc;
    CUresult (*cuInit)(unsigned);
    CUresult (*cuDeviceGetCount)(int *);
    CUresult (*cuDeviceGet)(CUdevice *, int);
    CUresult (*cuDeviceGetName)(char *, int, CUdevice);
    CUresult (*cuDeviceTotalMem)(size_t *, CUdevice);
    CUresult (*cuDeviceGetAttribute)(int *, int, CUdevice);
    CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*cuDevicePrimaryCtxRelease)(CUdevice);
    CUresult (*cuCtxPushCurrent)(CUcontext);
    CUresult (*cuCtxPopCurrent)(CUcontext *);
    CUresult (*cuCtxSynchronize)(void);
    CUresult (*cuMemAlloc)(CUdeviceptr *, size_t);
    CUresult (*cuMemFree)(CUdeviceptr);
    CUresult (*cuMemcpyHtoD)(CUdeviceptr, const void *, size_t);
    CUresult (*cuMemcpyDtoH)(void *, CUdeviceptr, size_t);
    CUresult (*cuMemcpy2DUnaligned)(const CUDA_MEMCPY2D *);
    CUresult (*cuMemsetD8)(CUdeviceptr, unsigned char, size_t);
    CUresult (*cuModuleLoadData)(CUmodule *, const void *);
    CUresult (*cuModuleUnload)(CUmodule);
    CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
    CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                               unsigned, unsigned, CUstream, void **, void **);
    CUresult (*cuGetErrorName)(CUresult, const char **);
    CUresult (*cuGetErrorString)(CUresult, const char **);
    cublasStatus_t (*cublasCreate)(cublasHandle_t *);
    cublasStatus_t (*cublasDestroy)(cublasHandle_t);
    cublasStatus_t (*cublasSgemm)(cublasHandle_t, int, int, int, int, int, const float *,
                                  const float *, int, const float *, int, const float *, float *,
                                  int);
    nvrtcResult (*nvrtcCreateProgram)(nvrtcProgram *, const char *, const char *, int,
                                      const char *const *, const char *const *);
    nvrtcResult (*nvrtcCompileProgram)(nvrtcProgram, int, const char *const *);
    nvrtcResult (*nvrtcGetPTXSize)(nvrtcProgram, size_t *);
    nvrtcResult (*nvrtcGetPTX)(nvrtcProgram, char *);
    nvrtcResult (*nvrtcGetProgramLogSize)(nvrtcProgram, size_t *);
    nvrtcResult (*nvrtcGetProgramLog)(nvrtcProgram, char *);
    nvrtcResult (*nvrtcDestroyProgram)(nvrtcProgram *);
    const char *(*nvrtcGetErrorString)(nvrtcResult);
} api;
static pthread_once_t api_once = PTHREAD_ONCE_INIT;

static void *open_first(const char *const *names, char *why, size_t why_len)
{
    for (const char *const *n = names; *n; n++) {
        void *h = dlopen(*n, RTLD_NOW | RTLD_LOCAL);
        if (h)
            return h;
        if (n == names) {
            const char *e = dlerror();
            snprintf(why, why_len, "%s", e ? e : *n);
        }
    }
    return NULL;
}

/* Resolve `name` (or `name_v2` first when v2) into *slot; false with the reason set. */
static bool sym(void *lib, const char *name, bool v2, void *slot)
{
    char full[64];
    void *p = NULL;
    if (v2) {
        snprintf(full, sizeof(full), "%s_v2", name);
        p = dlsym(lib, full);
    }
    if (!p)
        p = dlsym(lib, name);
    if (!p) {
        snprintf(api.reason, sizeof(api.reason), "the CUDA libraries lack %s", name);
        return false;
    }
    memcpy(slot, &p, sizeof(p));
    return true;
}

static const char *cu_err(CUresult r)
{
    const char *s = NULL;
    if (api.cuGetErrorName && api.cuGetErrorName(r, &s) == 0 && s)
        return s;
    return "CUDA error";
}

static void load_api(void)
{
    static const char *const cuda_names[] = { "libcuda.so.1", "libcuda.so", NULL };
    static const char *const cublas_names[] = { "libcublas.so.13", "libcublas.so.12",
                                                "libcublas.so.11", "libcublas.so", NULL };
    static const char *const nvrtc_names[] = { "libnvrtc.so.13",
                                               "libnvrtc.so.12",
                                               "libnvrtc.so.11.2",
                                               "libnvrtc.so.11.1",
                                               "libnvrtc.so.11.0",
                                               "libnvrtc.so",
                                               NULL };
    char why[200];
    if (!(api.cuda = open_first(cuda_names, why, sizeof(why)))) {
        snprintf(api.reason, sizeof(api.reason), "no CUDA driver: %s", why);
        return;
    }
#define S(lib, f, v2)                  \
    if (!sym(api.lib, #f, v2, &api.f)) \
        return;
    S(cuda, cuInit, false)
    S(cuda, cuDeviceGetCount, false)
    S(cuda, cuDeviceGet, false)
    S(cuda, cuDeviceGetName, false)
    S(cuda, cuDeviceTotalMem, true)
    S(cuda, cuDeviceGetAttribute, false)
    S(cuda, cuDevicePrimaryCtxRetain, false)
    S(cuda, cuDevicePrimaryCtxRelease, true)
    S(cuda, cuCtxPushCurrent, true)
    S(cuda, cuCtxPopCurrent, true)
    S(cuda, cuCtxSynchronize, false)
    S(cuda, cuMemAlloc, true)
    S(cuda, cuMemFree, true)
    S(cuda, cuMemcpyHtoD, true)
    S(cuda, cuMemcpyDtoH, true)
    S(cuda, cuMemcpy2DUnaligned, true)
    S(cuda, cuMemsetD8, true)
    S(cuda, cuModuleLoadData, false)
    S(cuda, cuModuleUnload, false)
    S(cuda, cuModuleGetFunction, false)
    S(cuda, cuLaunchKernel, false)
    S(cuda, cuGetErrorName, false)
    S(cuda, cuGetErrorString, false)
    CUresult r = api.cuInit(0);
    if (r) {
        const char *s = NULL;
        api.cuGetErrorString(r, &s);
        snprintf(api.reason, sizeof(api.reason), "cuInit failed: %s (%s)", cu_err(r), s ? s : "?");
        return;
    }
    if (!(api.cublas = open_first(cublas_names, why, sizeof(why)))) {
        snprintf(api.reason, sizeof(api.reason), "no cuBLAS: %s", why);
        return;
    }
    S(cublas, cublasCreate, true)
    S(cublas, cublasDestroy, true)
    S(cublas, cublasSgemm, true)
    if (!(api.nvrtc = open_first(nvrtc_names, why, sizeof(why)))) {
        snprintf(api.reason, sizeof(api.reason), "no NVRTC: %s", why);
        return;
    }
    S(nvrtc, nvrtcCreateProgram, false)
    S(nvrtc, nvrtcCompileProgram, false)
    S(nvrtc, nvrtcGetPTXSize, false)
    S(nvrtc, nvrtcGetPTX, false)
    S(nvrtc, nvrtcGetProgramLogSize, false)
    S(nvrtc, nvrtcGetProgramLog, false)
    S(nvrtc, nvrtcDestroyProgram, false)
    S(nvrtc, nvrtcGetErrorString, false)
#undef S
    api.ok = true;
}

void dspy__vec_cuda_probe(struct dspy_vec_info *info)
{
    pthread_once(&api_once, load_api);
    info->cuda_available = false;
    if (!api.ok) {
        snprintf(info->cuda_reason, sizeof(info->cuda_reason), "%s", api.reason);
        return;
    }
    int count = 0;
    CUresult r = api.cuDeviceGetCount(&count);
    if (r || count <= 0) {
        snprintf(info->cuda_reason, sizeof(info->cuda_reason), "no CUDA device (%s)",
                 r ? cu_err(r) : "count 0");
        return;
    }
    for (int i = 0; i < count && info->ndevices < DSPY_VEC_MAX_DEVICES; i++) {
        struct dspy_vec_device_info *d = &info->devices[info->ndevices];
        CUdevice dev;
        size_t mem = 0;
        memset(d, 0, sizeof(*d));
        if (api.cuDeviceGet(&dev, i))
            continue;
        snprintf(d->id, sizeof(d->id), "cuda:%d", i);
        if (api.cuDeviceGetName(d->name, (int)sizeof(d->name), dev))
            snprintf(d->name, sizeof(d->name), "unknown");
        api.cuDeviceTotalMem(&mem, dev);
        d->memory_bytes = mem;
        api.cuDeviceGetAttribute(&d->cc_major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev);
        api.cuDeviceGetAttribute(&d->cc_minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev);
        api.cuDeviceGetAttribute(&d->cores, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev);
        info->ndevices++;
    }
    info->cuda_available = info->ndevices > 1;
    info->cuda_reason[0] = 0;
}

/* ---- the kernels ---- */

#define KMAX \
    64 /* largest k selected on the GPU (as in vec_cuda_kernels.c); above it the
                  * scores come to the host */

/* ---- backend state ---- */

struct cuda_be {
    CUdevice dev;
    CUcontext ctx;
    CUmodule mod;
    CUfunction f_normalize, f_decode_f16, f_decode_i8, f_finish, f_topk, f_read;
    cublasHandle_t blas;
    int sms;
    CUdeviceptr scratch; /* kept between calls; dspy_vec_trim() releases it */
    size_t scratch_bytes;
};

struct cuda_matrix {
    CUdeviceptr rows, norms, scales;
};

static dspy_status cu_fail(struct dspy_error *err, CUresult r, const char *what)
{
    const char *s = NULL;
    if (api.cuGetErrorString)
        api.cuGetErrorString(r, &s);
    return dspy__err(err, r == CUDA_ERROR_OUT_OF_MEMORY ? DSPY_ENOMEM : DSPY_EIO,
                     "vec: cuda: %s: %s (%s)", what, cu_err(r), s ? s : "?");
}

#define CU(call, what)                   \
    do {                                 \
        CUresult r_ = (call);            \
        if (r_) {                        \
            rc = cu_fail(err, r_, what); \
            goto out;                    \
        }                                \
    } while (0)

/* Device memory charged to the context; the budget and the device both may refuse. */
static dspy_status dev_alloc(struct dspy_vec *v, CUdeviceptr *p, size_t bytes,
                             struct dspy_error *err)
{
    *p = 0;
    if (!bytes)
        bytes = 4;
    if (dspy__vec_charge(v, bytes))
        return dspy__err(err, DSPY_ENOMEM, "vec: %zu bytes on %s would pass the %llu-byte budget",
                         bytes, v->device, (unsigned long long)v->budget);
    CUresult r = api.cuMemAlloc(p, bytes);
    if (r) {
        dspy__vec_uncharge(v, bytes);
        v->mem[v->slot].failures++;
        *p = 0;
        return cu_fail(err, r, "cuMemAlloc");
    }
    return DSPY_OK;
}

static void dev_free(struct dspy_vec *v, CUdeviceptr p, size_t bytes)
{
    if (!p)
        return;
    api.cuMemFree(p);
    dspy__vec_uncharge(v, bytes ? bytes : 4);
}

/* The kept scratch, grown to at least `bytes`. */
static dspy_status scratch(struct dspy_vec *v, size_t bytes, CUdeviceptr *out,
                           struct dspy_error *err)
{
    struct cuda_be *be = v->be;
    if (be->scratch_bytes < bytes) {
        dev_free(v, be->scratch, be->scratch_bytes);
        be->scratch = 0;
        be->scratch_bytes = 0;
        dspy_status rc = dev_alloc(v, &be->scratch, bytes, err);
        if (rc)
            return rc;
        be->scratch_bytes = bytes;
    }
    *out = be->scratch;
    return DSPY_OK;
}

/* Most scratch one call takes without a budget: larger work goes through in batches. */
#define SCRATCH_CAP ((uint64_t)2 << 30)

/* Bytes of scratch that can still be had: the budget's room plus what is already held,
 * at most SCRATCH_CAP. */
static uint64_t scratch_room(const struct dspy_vec *v)
{
    const struct cuda_be *be = v->be;
    uint64_t room = dspy__vec_room(v);
    room = room == UINT64_MAX ? room : room + be->scratch_bytes;
    return room < SCRATCH_CAP ? room : SCRATCH_CAP;
}

static void cuda_trim(struct dspy_vec *v)
{
    struct cuda_be *be = v->be;
    if (!be || !be->scratch)
        return;
    api.cuCtxPushCurrent(be->ctx);
    dev_free(v, be->scratch, be->scratch_bytes);
    be->scratch = 0;
    be->scratch_bytes = 0;
    CUcontext old;
    api.cuCtxPopCurrent(&old);
}

static dspy_status compile(struct cuda_be *be, int ccmaj, int ccmin, struct dspy_error *err)
{
    nvrtcProgram prog = NULL;
    char arch[48], *ptx = NULL, *log = NULL;
    dspy_status rc = DSPY_OK;
    snprintf(arch, sizeof(arch), "--gpu-architecture=compute_%d%d", ccmaj, ccmin);
    /* No --use_fast_math: it would flush subnormals and change NaN handling; keep IEEE. */
    const char *opts[] = { arch };
    nvrtcResult nr = api.nvrtcCreateProgram(&prog, dspy__vec_cuda_kernels, "dspyc_vec.cu", 0, NULL,
                                            NULL);
    if (nr)
        return dspy__err(err, DSPY_EIO, "vec: cuda: nvrtcCreateProgram: %s",
                         api.nvrtcGetErrorString(nr));
    nr = api.nvrtcCompileProgram(prog, 1, opts);
    if (nr) {
        size_t n = 0;
        api.nvrtcGetProgramLogSize(prog, &n);
        log = dspy_malloc(n + 1);
        if (log) {
            api.nvrtcGetProgramLog(prog, log);
            log[n] = 0;
        }
        rc = dspy__err(err, DSPY_EIO, "vec: cuda: NVRTC could not compile the kernels (%s): %.300s",
                       api.nvrtcGetErrorString(nr), log ? log : "");
        goto out;
    }
    size_t n = 0;
    api.nvrtcGetPTXSize(prog, &n);
    if (!(ptx = dspy_malloc(n + 1))) {
        rc = dspy__err(err, DSPY_ENOMEM, "vec: cuda: out of memory");
        goto out;
    }
    api.nvrtcGetPTX(prog, ptx);
    ptx[n] = 0;
    CU(api.cuModuleLoadData(&be->mod, ptx), "loading the NVRTC kernels");
    CU(api.cuModuleGetFunction(&be->f_normalize, be->mod, "normalize_rows"), "normalize_rows");
    CU(api.cuModuleGetFunction(&be->f_decode_f16, be->mod, "decode_f16"), "decode_f16");
    CU(api.cuModuleGetFunction(&be->f_decode_i8, be->mod, "decode_i8"), "decode_i8");
    CU(api.cuModuleGetFunction(&be->f_finish, be->mod, "finish_scores"), "finish_scores");
    CU(api.cuModuleGetFunction(&be->f_topk, be->mod, "topk_partial"), "topk_partial");
    CU(api.cuModuleGetFunction(&be->f_read, be->mod, "read_sum"), "read_sum");
out:
    dspy_free(log);
    dspy_free(ptx);
    api.nvrtcDestroyProgram(&prog);
    return rc;
}

static void cuda_close(struct dspy_vec *v)
{
    struct cuda_be *be = v->be;
    if (!be)
        return;
    CUcontext old;
    api.cuCtxPushCurrent(be->ctx);
    if (be->scratch)
        dev_free(v, be->scratch, be->scratch_bytes);
    if (be->blas)
        api.cublasDestroy(be->blas);
    if (be->mod)
        api.cuModuleUnload(be->mod);
    api.cuCtxPopCurrent(&old);
    api.cuDevicePrimaryCtxRelease(be->dev);
    dspy_free(be);
    v->be = NULL;
}

static dspy_status cuda_open(struct dspy_vec *v, int index, struct dspy_error *err)
{
    struct dspy_vec_info info;
    dspy_vec_probe(&info);
    if (!info.cuda_available)
        return dspy__err(err, DSPY_EUNSUPPORTED, "vec: cuda is not usable: %s", info.cuda_reason);
    const struct dspy_vec_device_info *d = NULL;
    char id[16];
    snprintf(id, sizeof(id), "cuda:%d", index);
    for (int i = 1; i < info.ndevices; i++)
        if (!strcmp(info.devices[i].id, id))
            d = &info.devices[i];
    if (!d)
        return dspy__err(err, DSPY_EUNSUPPORTED, "vec: no device %s (%d CUDA devices)", id,
                         info.ndevices - 1);
    struct cuda_be *be = dspy_calloc(1, sizeof(*be));
    if (!be)
        return dspy__err(err, DSPY_ENOMEM, "vec: out of memory");
    dspy_status rc = DSPY_OK;
    bool pushed = false;
    v->be = be;
    be->sms = d->cores > 0 ? d->cores : 1;
    CU(api.cuDeviceGet(&be->dev, index), "cuDeviceGet");
    CU(api.cuDevicePrimaryCtxRetain(&be->ctx, be->dev), "cuDevicePrimaryCtxRetain");
    CU(api.cuCtxPushCurrent(be->ctx), "cuCtxPushCurrent");
    pushed = true;
    if ((rc = compile(be, d->cc_major, d->cc_minor, err)))
        goto out;
    if (api.cublasCreate(&be->blas)) {
        be->blas = NULL;
        rc = dspy__err(err, DSPY_EIO, "vec: cuda: cublasCreate failed on %s", id);
    }
out:
    if (pushed) {
        CUcontext old;
        api.cuCtxPopCurrent(&old);
    }
    if (rc) {
        if (be->ctx) {
            if (be->mod) {
                api.cuCtxPushCurrent(be->ctx);
                api.cuModuleUnload(be->mod);
                CUcontext old;
                api.cuCtxPopCurrent(&old);
            }
            api.cuDevicePrimaryCtxRelease(be->dev);
        }
        dspy_free(be);
        v->be = NULL;
    }
    return rc;
}

/* ---- helpers on the device ---- */

static CUresult launch(CUfunction f, unsigned gx, unsigned gy, unsigned block, void **args)
{
    return api.cuLaunchKernel(f, gx ? gx : 1, gy ? gy : 1, 1, block, 1, 1, 0, NULL, args, NULL);
}

static unsigned grid_for(const struct cuda_be *be, uint64_t items, unsigned block)
{
    uint64_t g = (items + block - 1) / block, cap = (uint64_t)be->sms * 32;
    return (unsigned)(g < 1 ? 1 : g > cap ? cap : g);
}

/* rows x width floats from host rows `ld` floats apart into a dense device block. */
static CUresult upload_rows(CUdeviceptr dst, const float *src, size_t rows, size_t width, size_t ld,
                            size_t dst_ld)
{
    if (ld == width && dst_ld == width)
        return api.cuMemcpyHtoD(dst, src, rows * width * 4);
    CUDA_MEMCPY2D c;
    memset(&c, 0, sizeof(c));
    c.srcMemoryType = CU_MEMORYTYPE_HOST;
    c.srcHost = src;
    c.srcPitch = ld * 4;
    c.dstMemoryType = CU_MEMORYTYPE_DEVICE;
    c.dstDevice = dst;
    c.dstPitch = dst_ld * 4;
    c.WidthInBytes = width * 4;
    c.Height = rows;
    return api.cuMemcpy2DUnaligned(&c);
}

static CUresult download_rows(float *dst, size_t ld, CUdeviceptr src, size_t rows, size_t width)
{
    if (ld == width)
        return api.cuMemcpyDtoH(dst, src, rows * width * 4);
    CUDA_MEMCPY2D c;
    memset(&c, 0, sizeof(c));
    c.srcMemoryType = CU_MEMORYTYPE_DEVICE;
    c.srcDevice = src;
    c.srcPitch = width * 4;
    c.dstMemoryType = CU_MEMORYTYPE_HOST;
    c.dstHost = dst;
    c.dstPitch = ld * 4;
    c.WidthInBytes = width * 4;
    c.Height = rows;
    return api.cuMemcpy2DUnaligned(&c);
}

/* Row-major C[m x n] = A[m x k] · Bᵀ (B n x k) or A · B (B k x n), all on the device:
 * cuBLAS is column-major, so this is Cᵀ = op(B)ᵀ · Aᵀ. */
static dspy_status gemm(struct cuda_be *be, size_t m, size_t n, size_t k, CUdeviceptr a, size_t lda,
                        CUdeviceptr b, size_t ldb, bool trans_b, CUdeviceptr c, size_t ldc,
                        struct dspy_error *err)
{
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t s = api.cublasSgemm(be->blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N,
                                       (int)n, (int)m, (int)k, &one, (const float *)(uintptr_t)b,
                                       (int)ldb, (const float *)(uintptr_t)a, (int)lda, &zero,
                                       (float *)(uintptr_t)c, (int)ldc);
    if (s)
        return dspy__err(err, DSPY_EIO, "vec: cuda: cublasSgemm failed (status %d)", s);
    return DSPY_OK;
}

#define ENTER()                        \
    struct cuda_be *be = v->be;        \
    dspy_status rc = DSPY_OK;          \
    if (api.cuCtxPushCurrent(be->ctx)) \
    return dspy__err(err, DSPY_EIO, "vec: cuda: cannot make %s current", v->device)
#define LEAVE()                     \
    do {                            \
        CUcontext old_;             \
        api.cuCtxPopCurrent(&old_); \
        return rc;                  \
    } while (0)

/* ---- kernels on caller memory ---- */

static dspy_status cuda_normalize(struct dspy_vec *v, float *x, size_t n, size_t d, size_t ld,
                                  struct dspy_error *err)
{
    ENTER();
    uint64_t room = scratch_room(v), row = (uint64_t)d * 4;
    size_t chunk = room / row < n ? (size_t)(room / row) : n;
    CUdeviceptr buf;
    if (!chunk) {
        rc = dspy__err(err, DSPY_ENOMEM, "vec: one row of %zu floats does not fit the budget", d);
        goto out;
    }
    if ((rc = scratch(v, chunk * row, &buf, err)))
        goto out;
    for (size_t i = 0; i < n; i += chunk) {
        size_t cn = n - i < chunk ? n - i : chunk;
        unsigned long long nn = cn;
        unsigned dd = (unsigned)d;
        void *args[] = { &buf, &nn, &dd };
        CU(upload_rows(buf, x + i * ld, cn, d, ld, d), "copying rows to the device");
        CU(launch(be->f_normalize, grid_for(be, cn * 256, 256), 1, 256, args), "normalize_rows");
        CU(download_rows(x + i * ld, ld, buf, cn, d), "copying rows back");
    }
out:
    LEAVE();
}

static dspy_status cuda_matmul(struct dspy_vec *v, size_t m, size_t n, size_t k, const float *a,
                               size_t lda, const float *b, size_t ldb, bool trans_b, float *c,
                               size_t ldc, struct dspy_error *err)
{
    ENTER();
    size_t brows = trans_b ? n : k, bcols = trans_b ? k : n;
    uint64_t bbytes = (uint64_t)brows * bcols * 4, per_row = ((uint64_t)k + n) * 4;
    uint64_t room = scratch_room(v);
    CUdeviceptr buf;
    if (room < bbytes + per_row) {
        rc = dspy__err(err, DSPY_ENOMEM,
                       "vec: matmul needs B (%llu bytes) and one row on %s; the budget leaves %llu",
                       (unsigned long long)bbytes, v->device, (unsigned long long)room);
        goto out;
    }
    /* B stays on the device; rows of A (and C) go through in batches that fit. */
    uint64_t fit = (room - bbytes) / per_row;
    size_t chunk = fit < m ? (size_t)fit : m;
    if ((rc = scratch(v, bbytes + chunk * per_row, &buf, err)))
        goto out;
    CUdeviceptr db = buf, da = buf + bbytes, dc = da + (uint64_t)chunk * k * 4;
    CU(upload_rows(db, b, brows, bcols, ldb, bcols), "copying B to the device");
    for (size_t i = 0; i < m; i += chunk) {
        size_t cn = m - i < chunk ? m - i : chunk;
        CU(upload_rows(da, a + i * lda, cn, k, lda, k), "copying A to the device");
        if ((rc = gemm(be, cn, n, k, da, k, db, bcols, trans_b, dc, n, err)))
            goto out;
        CU(download_rows(c + i * ldc, ldc, dc, cn, n), "copying C back");
    }
out:
    LEAVE();
}

static void host_norms(const float *x, size_t n, size_t d, size_t ld, float *out)
{
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (size_t t = 0; t < d; t++)
            s += (double)x[i * ld + t] * x[i * ld + t];
        out[i] = (float)sqrt(s);
    }
}

static dspy_status cuda_scores(struct dspy_vec *v, enum dspy_vec_metric metric, const float *q,
                               size_t nq, size_t ldq, const float *x, size_t n, size_t ldx,
                               size_t d, float *out, size_t ldo, struct dspy_error *err)
{
    ENTER();
    float *qn = NULL, *xn = NULL;
    uint64_t xbytes = (uint64_t)n * (d + 1) * 4, per_q = ((uint64_t)d + n + 1) * 4;
    uint64_t room = scratch_room(v);
    CUdeviceptr buf;
    if (room < xbytes + per_q) {
        rc = dspy__err(err, DSPY_ENOMEM,
                       "vec: scores need the rows (%llu bytes) and one query on %s; the budget "
                       "leaves %llu",
                       (unsigned long long)xbytes, v->device, (unsigned long long)room);
        goto out;
    }
    uint64_t fit = (room - xbytes) / per_q;
    size_t chunk = fit < nq ? (size_t)fit : nq;
    if ((rc = scratch(v, xbytes + chunk * per_q, &buf, err)))
        goto out;
    qn = dspy_malloc((nq + n) * sizeof(float));
    if (!qn) {
        rc = dspy__err(err, DSPY_ENOMEM, "vec: out of memory");
        goto out;
    }
    xn = qn + nq;
    host_norms(q, nq, d, ldq, qn);
    host_norms(x, n, d, ldx, xn);
    CUdeviceptr dx = buf, dxn = dx + (uint64_t)n * d * 4, dq = dxn + (uint64_t)n * 4;
    CUdeviceptr dqn = dq + (uint64_t)chunk * d * 4, ds = dqn + (uint64_t)chunk * 4;
    CU(upload_rows(dx, x, n, d, ldx, d), "copying rows to the device");
    CU(api.cuMemcpyHtoD(dxn, xn, n * 4), "copying norms");
    for (size_t i = 0; i < nq; i += chunk) {
        size_t cn = nq - i < chunk ? nq - i : chunk;
        CU(upload_rows(dq, q + i * ldq, cn, d, ldq, d), "copying queries to the device");
        CU(api.cuMemcpyHtoD(dqn, qn + i, cn * 4), "copying query norms");
        if ((rc = gemm(be, cn, n, d, dq, d, dx, d, true, ds, n, err)))
            goto out;
        if (metric != DSPY_VEC_IP) {
            unsigned long long a1 = cn, a2 = n, a3 = n;
            CUdeviceptr none = 0;
            int met = (int)metric, as_key = 0;
            void *args[] = { &ds, &a1, &a2, &a3, &dqn, &dxn, &none, &none, &met, &as_key };
            CU(launch(be->f_finish, grid_for(be, (uint64_t)cn * n, 256), 1, 256, args),
               "finish_scores");
        }
        CU(download_rows(out + i * ldo, ldo, ds, cn, n), "copying scores back");
    }
out:
    dspy_free(qn);
    LEAVE();
}

/* ---- stored matrices ---- */

static dspy_status cuda_matrix_store(struct dspy_vec *v, struct dspy_vec_matrix *m,
                                     struct dspy_error *err)
{
    ENTER();
    struct cuda_matrix *cm = dspy_calloc(1, sizeof(*cm));
    size_t es = dspy__vec_elem_size(m->storage);
    /* vec.c charged m->bytes already: allocate with the driver directly. */
    if (!cm) {
        rc = dspy__err(err, DSPY_ENOMEM, "vec: out of memory");
        goto out;
    }
    CU(api.cuMemAlloc(&cm->rows, (m->n ? m->n : 1) * m->ld * es), "cuMemAlloc (rows)");
    CU(api.cuMemAlloc(&cm->norms, (m->n ? m->n : 1) * 4), "cuMemAlloc (norms)");
    if (m->storage == DSPY_VEC_I8)
        CU(api.cuMemAlloc(&cm->scales, (m->n ? m->n : 1) * 4), "cuMemAlloc (scales)");
    if (m->n) {
        CU(api.cuMemcpyHtoD(cm->rows, m->rows, m->n * m->ld * es), "copying the matrix");
        CU(api.cuMemcpyHtoD(cm->norms, m->norms, m->n * 4), "copying the norms");
        if (cm->scales)
            CU(api.cuMemcpyHtoD(cm->scales, m->scales, m->n * 4), "copying the scales");
    }
    m->be = cm;
    dspy__vec_encoded_free(m); /* the host copy is not needed any more */
out:
    if (rc && cm) {
        if (cm->rows)
            api.cuMemFree(cm->rows);
        if (cm->norms)
            api.cuMemFree(cm->norms);
        if (cm->scales)
            api.cuMemFree(cm->scales);
        dspy_free(cm);
        v->mem[v->slot].failures++;
    }
    LEAVE();
}

static void cuda_matrix_release(struct dspy_vec *v, struct dspy_vec_matrix *m)
{
    struct cuda_be *be = v->be;
    struct cuda_matrix *cm = m->be;
    if (!cm)
        return;
    CUcontext old;
    api.cuCtxPushCurrent(be->ctx);
    api.cuMemFree(cm->rows);
    api.cuMemFree(cm->norms);
    if (cm->scales)
        api.cuMemFree(cm->scales);
    api.cuCtxPopCurrent(&old);
    dspy_free(cm);
    m->be = NULL;
}

static dspy_status cuda_matrix_read(struct dspy_vec *v, const struct dspy_vec_matrix *m,
                                    uint64_t *checksum, struct dspy_error *err)
{
    ENTER();
    const struct cuda_matrix *cm = m->be;
    CUdeviceptr out;
    unsigned long long count = (unsigned long long)m->n * m->ld * dspy__vec_elem_size(m->storage) /
                               8;
    if ((rc = scratch(v, 8, &out, err)))
        goto out;
    CU(api.cuMemsetD8(out, 0, 8), "cuMemsetD8");
    {
        CUdeviceptr rows = cm->rows;
        void *args[] = { &rows, &count, &out };
        CU(launch(be->f_read, grid_for(be, count, 256), 1, 256, args), "read_sum");
    }
    CU(api.cuMemcpyDtoH(checksum, out, 8), "copying the checksum");
out:
    LEAVE();
}

/* ---- top-k ---- */

/* Exact top-k on the GPU: for each block of rows, the raw dot products of a chunk of
 * queries (cuBLAS; F16 and I8 rows decoded to float first, I8 as exact integers), the
 * metric, then two passes of per-thread selection; the host merges 256·k candidates per
 * query into its heaps. For k > KMAX the keys come to the host and are selected there. */
static dspy_status cuda_topk(struct dspy_vec *v, const struct dspy_vec_matrix *m,
                             enum dspy_vec_metric metric, const float *q, size_t nq, size_t ldq,
                             size_t k, float *scores, int64_t *ids, struct dspy_error *err)
{
    ENTER();
    const struct cuda_matrix *cm = m->be;
    size_t pad = m->ld, kk = k < m->n ? k : (m->n ? m->n : 1);
    bool on_gpu = kk <= KMAX, decode = m->storage != DSPY_VEC_F32;
    const unsigned block = 256;
    size_t qc = nq < 1024 ? nq : 1024, nb = m->n < 262144 ? (m->n ? m->n : 1) : 262144;
    unsigned nseg = 1;
    uint64_t need = 0;
    float *hq = NULL, *hkeys = NULL;
    int64_t *hids = NULL;
    struct dspy__vec_hit *hits = NULL;
    struct dspy__vec_sel *sels = NULL;
    int8_t *q8 = NULL;
    size_t hcap = 0;
    for (;;) {
        uint64_t segs = (2ull * (uint64_t)be->sms + qc - 1) / qc;
        uint64_t maxseg = nb / ((uint64_t)block * 32);
        nseg = (unsigned)(segs < 1 ? 1 : segs > maxseg ? (maxseg ? maxseg : 1) : segs);
        uint64_t cand1 = on_gpu ? (uint64_t)qc * nseg * block * kk : 0;
        uint64_t cand2 = on_gpu ? (uint64_t)qc * block * kk : 0;
        need = (uint64_t)qc * pad * 4 + (uint64_t)qc * 8 /* queries, norms, scales */
               + (uint64_t)qc * nb * 4                   /* keys */
               + (decode ? (uint64_t)nb * pad * 4 : 0)   /* decoded rows */
               + (cand1 + cand2) * 12 + 1024;
        if (need <= scratch_room(v))
            break;
        if (qc > 1)
            qc = (qc + 1) / 2;
        else if (nb > 1024)
            nb /= 2;
        else {
            rc = dspy__err(err, DSPY_ENOMEM,
                           "vec: top-k needs %llu scratch bytes on %s even for one query; the "
                           "budget leaves %llu",
                           (unsigned long long)need, v->device,
                           (unsigned long long)scratch_room(v));
            goto out;
        }
    }
    CUdeviceptr buf;
    if ((rc = scratch(v, need, &buf, err)))
        goto out;
    uint64_t cand1 = on_gpu ? (uint64_t)qc * nseg * block * kk : 0;
    uint64_t cand2 = on_gpu ? (uint64_t)qc * block * kk : 0;
    CUdeviceptr dq = buf, dqn = dq + (uint64_t)qc * pad * 4, dqs = dqn + (uint64_t)qc * 4;
    CUdeviceptr dkeys = (dqs + (uint64_t)qc * 4 + 255) & ~(CUdeviceptr)255;
    CUdeviceptr ddec = dkeys + (uint64_t)qc * nb * 4;
    CUdeviceptr dc1k = ddec + (decode ? (uint64_t)nb * pad * 4 : 0);
    CUdeviceptr dc1i = (dc1k + cand1 * 4 + 7) & ~(CUdeviceptr)7;
    CUdeviceptr dc2k = dc1i + cand1 * 8, dc2i = (dc2k + cand2 * 4 + 7) & ~(CUdeviceptr)7;
    /* Host side: prepared queries, the candidates (or keys) that come back, the heaps. */
    hcap = on_gpu ? (size_t)cand2 : qc * nb;
    hq = dspy_malloc(qc * pad * 4 + qc * 8);
    hkeys = dspy_malloc(hcap * 4);
    hids = on_gpu ? dspy_malloc(hcap * 8) : NULL;
    hits = dspy_malloc(qc * kk * sizeof(*hits));
    sels = dspy_malloc(qc * sizeof(*sels));
    if (!hq || !hkeys || (on_gpu && !hids) || !hits || !sels) {
        rc = dspy__err(err, DSPY_ENOMEM, "vec: out of host memory for top-k");
        goto out;
    }
    float *hqn = hq + qc * pad, *hqs = hqn + qc;
    if (!(q8 = dspy_malloc(pad))) {
        rc = dspy__err(err, DSPY_ENOMEM, "vec: out of memory");
        goto out;
    }
    for (size_t c0 = 0; c0 < nq; c0 += qc) {
        size_t cn = nq - c0 < qc ? nq - c0 : qc;
        for (size_t a = 0; a < cn; a++) {
            const float *qa = q + (c0 + a) * ldq;
            float *dst = hq + a * pad;
            double s = 0;
            for (size_t t = 0; t < m->d; t++)
                s += (double)qa[t] * qa[t];
            hqn[a] = (float)sqrt(s);
            if (m->storage == DSPY_VEC_I8) {
                hqs[a] = dspy__vec_quantize(qa, m->d, pad, q8, NULL);
                for (size_t t = 0; t < pad; t++)
                    dst[t] = (float)q8[t];
            } else {
                memcpy(dst, qa, m->d * 4);
                memset(dst + m->d, 0, (pad - m->d) * 4);
            }
            dspy__vec_sel_init(&sels[a], hits + a * kk, kk);
        }
        CU(api.cuMemcpyHtoD(dq, hq, cn * pad * 4), "copying queries");
        CU(api.cuMemcpyHtoD(dqn, hqn, cn * 4), "copying query norms");
        CU(api.cuMemcpyHtoD(dqs, hqs, cn * 4), "copying query scales");
        for (size_t r0 = 0; r0 < m->n; r0 += nb) {
            size_t rn = m->n - r0 < nb ? m->n - r0 : nb;
            CUdeviceptr rows = cm->rows + (uint64_t)r0 * pad * dspy__vec_elem_size(m->storage);
            if (decode) {
                unsigned long long count = (unsigned long long)rn * pad;
                void *args[] = { &rows, &ddec, &count };
                CU(launch(m->storage == DSPY_VEC_F16 ? be->f_decode_f16 : be->f_decode_i8,
                          grid_for(be, count, 256), 1, 256, args),
                   "decoding rows");
                rows = ddec;
            }
            if ((rc = gemm(be, cn, rn, pad, dq, pad, rows, pad, true, dkeys, rn, err)))
                goto out;
            {
                unsigned long long a1 = cn, a2 = rn, a3 = rn;
                CUdeviceptr xn = cm->norms + (uint64_t)r0 * 4, none = 0;
                CUdeviceptr xs = cm->scales ? cm->scales + (uint64_t)r0 * 4 : 0;
                CUdeviceptr qs = cm->scales ? dqs : none;
                int met = (int)metric, as_key = 1;
                void *args[] = { &dkeys, &a1, &a2, &a3, &dqn, &xn, &qs, &xs, &met, &as_key };
                CU(launch(be->f_finish, grid_for(be, (uint64_t)cn * rn, 256), 1, 256, args),
                   "finish_scores");
            }
            if (!on_gpu) {
                CU(api.cuMemcpyDtoH(hkeys, dkeys, cn * rn * 4), "copying keys back");
                for (size_t a = 0; a < cn; a++)
                    for (size_t j = 0; j < rn; j++)
                        dspy__vec_sel_offer(&sels[a], hkeys[a * rn + j], (int64_t)(r0 + j));
                continue;
            }
            unsigned long long count = rn, ld = rn, count2 = (unsigned long long)nseg * block * kk;
            unsigned kk32 = (unsigned)kk;
            long long id0 = (long long)r0, zero = 0;
            CUdeviceptr noids = 0;
            void *a1[] = { &dkeys, &noids, &count, &ld, &kk32, &id0, &dc1k, &dc1i };
            CU(launch(be->f_topk, nseg, (unsigned)cn, block, a1), "topk_partial");
            void *a2[] = { &dc1k, &dc1i, &count2, &count2, &kk32, &zero, &dc2k, &dc2i };
            CU(launch(be->f_topk, 1, (unsigned)cn, block, a2), "topk_partial (merge)");
            CU(api.cuMemcpyDtoH(hkeys, dc2k, cn * block * kk * 4), "copying candidates");
            CU(api.cuMemcpyDtoH(hids, dc2i, cn * block * kk * 8), "copying candidate ids");
            for (size_t a = 0; a < cn; a++)
                for (size_t e = 0; e < block * kk; e++) {
                    size_t at = a * block * kk + e;
                    if (hids[at] >= 0)
                        dspy__vec_sel_push_slow(&sels[a], hkeys[at], hids[at]);
                }
        }
        for (size_t a = 0; a < cn; a++) {
            float *sc = scores + (c0 + a) * k;
            int64_t *id = ids + (c0 + a) * k;
            dspy__vec_sel_finish(&sels[a], metric, sc, id);
            for (size_t e = kk; e < k; e++) {
                sc[e] = metric == DSPY_VEC_L2 ? INFINITY : -INFINITY;
                id[e] = -1;
            }
        }
    }
out:
    dspy_free(q8);
    dspy_free(hq);
    dspy_free(hkeys);
    dspy_free(hids);
    dspy_free(hits);
    dspy_free(sels);
    LEAVE();
}

const struct dspy__vec_ops dspy__vec_cuda_ops = {
    .name = "cuda",
    .open = cuda_open,
    .close = cuda_close,
    .trim = cuda_trim,
    .normalize = cuda_normalize,
    .matmul = cuda_matmul,
    .scores = cuda_scores,
    .matrix_store = cuda_matrix_store,
    .matrix_release = cuda_matrix_release,
    .matrix_read = cuda_matrix_read,
    .topk = cuda_topk,
};

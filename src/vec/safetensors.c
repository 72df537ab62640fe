/* safetensors reader (vec layer). Layout: 8 bytes little-endian header length N, N bytes of
 * JSON ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}),
 * then the tensor bytes, offsets relative to byte 8 + N. Tensors in the file are not aligned
 * (here they start at 24 mod 64), so readers copy them out. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "base/status.h"
#include "vec/safetensors.h"

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {
    [DSPY__ST_BOOL] = { "BOOL", 1 }, [DSPY__ST_U8] = { "U8", 1 },   [DSPY__ST_I8] = { "I8", 1 },
    [DSPY__ST_I16] = { "I16", 2 },   [DSPY__ST_U16] = { "U16", 2 }, [DSPY__ST_F16] = { "F16", 2 },
    [DSPY__ST_BF16] = { "BF16", 2 }, [DSPY__ST_I32] = { "I32", 4 }, [DSPY__ST_U32] = { "U32", 4 },
    [DSPY__ST_F32] = { "F32", 4 },   [DSPY__ST_I64] = { "I64", 8 }, [DSPY__ST_U64] = { "U64", 8 },
    [DSPY__ST_F64] = { "F64", 8 },
};
#define N_DTYPES (sizeof(dtypes) / sizeof(dtypes[0]))

const char *dspy__st_dtype_name(enum dspy__st_dtype t)
{
    return (size_t)t < N_DTYPES ? dtypes[t].name : "?";
}

void dspy__st_close(struct dspy__safetensors *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n; i++)
        dspy_free(st->tensors[i].name);
    dspy_free(st->tensors);
    if (st->map)
        munmap(st->map, st->map_len);
    dspy_free(st->path);
    dspy_free(st);
}

static dspy_status bad(struct dspy_error *err, const char *name, long offset, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static dspy_status bad(struct dspy_error *err, const char *name, long offset, const char *fmt, ...)
{
    char what[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    dspy__err(err, DSPY_EPARSE, "%s: corrupt safetensors file: %s", name, what);
    dspy__err_file(err, name);
    if (err)
        err->offset = offset;
    return DSPY_EPARSE;
}

static int by_offset(const void *a, const void *b)
{
    const struct dspy__st_tensor *x = a, *y = b;
    if (x->data != y->data)
        return x->data < y->data ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static bool get_u64(json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static dspy_status parse_entry(const char *name, const char *key, json_t *v,
                               const unsigned char *base, uint64_t data_len,
                               struct dspy__st_tensor *t, struct dspy_error *err)
{
    json_t *dt = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape");
    json_t *offs = json_object_get(v, "data_offsets");
    if (!json_is_object(v) || !json_is_string(dt) || !json_is_array(shape) || !json_is_array(offs))
        return bad(err, name, 8,
                   "tensor '%s': expected an object with dtype, shape, "
                   "data_offsets",
                   key);
    size_t k;
    for (k = 0; k < N_DTYPES; k++)
        if (!strcmp(json_string_value(dt), dtypes[k].name))
            break;
    if (k == N_DTYPES)
        return bad(err, name, 8, "tensor '%s': unknown dtype", key);
    t->dtype = (enum dspy__st_dtype)k;
    if (json_array_size(shape) > DSPY__ST_MAX_DIMS)
        return bad(err, name, 8, "tensor '%s': more than %d dimensions", key, DSPY__ST_MAX_DIMS);
    t->ndim = (int)json_array_size(shape);
    uint64_t count = 1;
    bool overflow = false;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t s;
        if (!get_u64(json_array_get(shape, (size_t)d), &s))
            return bad(err, name, 8, "tensor '%s': dimension %d is not a size", key, d);
        t->shape[d] = s;
        if (s && count > UINT64_MAX / s)
            overflow = true;
        count *= s;
    }
    uint64_t begin, end;
    if (json_array_size(offs) != 2 || !get_u64(json_array_get(offs, 0), &begin) ||
        !get_u64(json_array_get(offs, 1), &end) || end < begin)
        return bad(err, name, 8, "tensor '%s': data_offsets must be [begin, end]", key);
    if (end > data_len)
        return bad(err, name, 8,
                   "tensor '%s' ends at data byte %llu, past the %llu bytes of data "
                   "(the file is truncated)",
                   key, (unsigned long long)end, (unsigned long long)data_len);
    if (overflow || count > UINT64_MAX / dtypes[k].size || end - begin != count * dtypes[k].size)
        return bad(err, name, 8, "tensor '%s': %llu bytes in data_offsets, the shape needs %llu",
                   key, (unsigned long long)(end - begin),
                   overflow ? ~0ull : (unsigned long long)(count * dtypes[k].size));
    t->data = base + begin;
    t->nbytes = (size_t)(end - begin);
    t->name = dspy_strdup(key);
    return t->name ? DSPY_OK : DSPY_ENOMEM;
}

dspy_status dspy__st_parse(const void *data, size_t len, const char *name,
                           struct dspy__safetensors **out, struct dspy_error *err)
{
    const unsigned char *p = data;
    json_t *h = NULL;
    dspy_status rc = DSPY_OK;
    *out = NULL;
    if (len < 8)
        return bad(err, name, 0, "%zu bytes, shorter than the 8-byte header length", len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | p[i];
    if (hlen > DSPY__ST_MAX_HEADER || hlen > len - 8)
        return bad(err, name, 0, "header length %llu does not fit in the file's %zu bytes",
                   (unsigned long long)hlen, len);
    json_error_t je;
    h = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!h)
        return bad(err, name, 8 + je.position, "header is not JSON: %s (header byte %d)", je.text,
                   je.position);
    if (!json_is_object(h)) {
        rc = bad(err, name, 8, "the header is not a JSON object");
        goto out;
    }
    struct dspy__safetensors *st = dspy_calloc(1, sizeof(*st));
    if (!st || !(st->path = dspy_strdup(name)) ||
        !(st->tensors = dspy_calloc(json_object_size(h) + 1, sizeof(*st->tensors)))) {
        dspy__st_close(st);
        rc = DSPY_ENOMEM;
        goto out;
    }
    const unsigned char *base = p + 8 + hlen;
    uint64_t data_len = len - 8 - hlen;
    const char *key;
    json_t *v;
    json_object_foreach(h, key, v) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(v)) {
                rc = bad(err, name, 8, "__metadata__ is not an object");
                break;
            }
            continue;
        }
        rc = parse_entry(name, key, v, base, data_len, &st->tensors[st->n], err);
        if (rc)
            break;
        st->n++;
    }
    if (!rc && st->n > 1) { /* no two tensors may share bytes */
        struct dspy__st_tensor *sorted = dspy_malloc(st->n * sizeof(*sorted));
        if (!sorted) {
            rc = DSPY_ENOMEM;
        } else {
            memcpy(sorted, st->tensors, st->n * sizeof(*sorted));
            qsort(sorted, st->n, sizeof(*sorted), by_offset);
            for (size_t i = 1; i < st->n && !rc; i++)
                if (sorted[i - 1].data + sorted[i - 1].nbytes > sorted[i].data)
                    rc = bad(err, name, 8,
                             "tensors '%s' and the next one overlap "
                             "(data bytes %llu and %llu)",
                             sorted[i - 1].name, (unsigned long long)(sorted[i - 1].data - base),
                             (unsigned long long)(sorted[i].data - base));
            dspy_free(sorted);
        }
    }
    if (rc) {
        dspy__st_close(st);
        goto out;
    }
    *out = st;
out:
    json_decref(h);
    return rc;
}

dspy_status dspy__st_open(const char *path, struct dspy__safetensors **out, struct dspy_error *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        dspy_status rc = dspy__err(err, errno == ENOENT ? DSPY_ENOTFOUND : DSPY_EIO,
                                   "%s: cannot open: %s", path, strerror(errno));
        dspy__err_file(err, path);
        return rc;
    }
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        dspy__err(err, DSPY_EIO, "%s: not a regular file", path);
        dspy__err_file(err, path);
        return DSPY_EIO;
    }
    size_t len = (size_t)sb.st_size;
    void *map = NULL;
    if (len) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            dspy__err(err, DSPY_EIO, "%s: cannot map: %s", path, strerror(e));
            dspy__err_file(err, path);
            return DSPY_EIO;
        }
    }
    close(fd);
    dspy_status rc = dspy__st_parse(map ? map : "", len, path, out, err);
    if (rc) {
        if (map)
            munmap(map, len);
        return rc;
    }
    (*out)->map = map;
    (*out)->map_len = len;
    return DSPY_OK;
}

const struct dspy__st_tensor *dspy__st_find(const struct dspy__safetensors *st, const char *name)
{
    for (size_t i = 0; i < st->n; i++)
        if (!strcmp(st->tensors[i].name, name))
            return &st->tensors[i];
    return NULL;
}

dspy_status dspy__st_get_f32(const struct dspy__safetensors *st, const char *name, int ndim,
                             const uint64_t *shape, const unsigned char **data,
                             struct dspy_error *err)
{
    const struct dspy__st_tensor *t = dspy__st_find(st, name);
    if (!t) {
        dspy__err(err, DSPY_ENOTFOUND, "%s: no tensor '%s' (not an all-MiniLM-L6-v2 file?)",
                  st->path, name);
        dspy__err_file(err, st->path);
        dspy__err_field(err, name);
        return DSPY_ENOTFOUND;
    }
    bool same = t->dtype == DSPY__ST_F32 && t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = t->shape[d] == shape[d];
    if (!same) {
        char want[96] = "", got[96] = "";
        size_t w = 0, g = 0;
        for (int d = 0; d < ndim && w < sizeof(want); d++)
            w += (size_t)snprintf(want + w, sizeof(want) - w, "%s%llu", d ? "," : "",
                                  (unsigned long long)shape[d]);
        for (int d = 0; d < t->ndim && g < sizeof(got); d++)
            g += (size_t)snprintf(got + g, sizeof(got) - g, "%s%llu", d ? "," : "",
                                  (unsigned long long)t->shape[d]);
        dspy__err(err, DSPY_EPARSE, "%s: tensor '%s' is %s [%s], expected F32 [%s]", st->path, name,
                  dspy__st_dtype_name(t->dtype), got, want);
        dspy__err_file(err, st->path);
        dspy__err_field(err, name);
        return DSPY_EPARSE;
    }
    *data = t->data;
    return DSPY_OK;
}

dspy_status dspy__st_read_f32(const struct dspy__safetensors *st, const char *name, int ndim,
                              const uint64_t *shape, float *dst, struct dspy_error *err)
{
    const unsigned char *data;
    dspy_status rc = dspy__st_get_f32(st, name, ndim, shape, &data, err);
    size_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= (size_t)shape[d];
    if (!rc)
        memcpy(dst, data, n * sizeof(float)); /* little-endian host assumed (x86-64, arm64) */
    return rc;
}

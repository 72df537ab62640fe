/* A bounded, validating reader of safetensors files (vec layer): the u64 header length, the
 * JSON header, tensor bounds, sizes and overlaps are all checked before any tensor is read,
 * so a truncated or corrupt file is an error naming the file and what is wrong. */
#ifndef DSPY_VEC_SAFETENSORS_H
#define DSPY_VEC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include <dspyc/common.h>

#define DSPY__ST_MAX_DIMS 8
#define DSPY__ST_MAX_HEADER ((size_t)100 << 20) /* the format's own limit */

enum dspy__st_dtype {
    DSPY__ST_BOOL,
    DSPY__ST_U8,
    DSPY__ST_I8,
    DSPY__ST_I16,
    DSPY__ST_U16,
    DSPY__ST_F16,
    DSPY__ST_BF16,
    DSPY__ST_I32,
    DSPY__ST_U32,
    DSPY__ST_F32,
    DSPY__ST_I64,
    DSPY__ST_U64,
    DSPY__ST_F64
};

struct dspy__st_tensor {
    char *name;
    enum dspy__st_dtype dtype;
    int ndim;
    uint64_t shape[DSPY__ST_MAX_DIMS];
    const unsigned char *data; /* inside the file; no alignment promised */
    size_t nbytes;
};

struct dspy__safetensors {
    char *path;                      /* for messages */
    struct dspy__st_tensor *tensors; /* in header order */
    size_t n;
    void *map; /* the mapped file (dspy__st_open), or NULL */
    size_t map_len;
};

/* Map and validate a file. DSPY_ENOTFOUND when missing, DSPY_EIO unreadable, DSPY_EPARSE
 * for anything malformed (the message names the file, the tensor and the byte offsets). */
dspy_status dspy__st_open(const char *path, struct dspy__safetensors **out, struct dspy_error *err);
/* Validate `len` bytes already in memory (borrowed until dspy__st_close); `name` labels
 * messages. */
dspy_status dspy__st_parse(const void *data, size_t len, const char *name,
                           struct dspy__safetensors **out, struct dspy_error *err);
void dspy__st_close(struct dspy__safetensors *st);

const struct dspy__st_tensor *dspy__st_find(const struct dspy__safetensors *st, const char *name);
const char *dspy__st_dtype_name(enum dspy__st_dtype t);

/* The bytes of tensor `name` (unaligned, little-endian floats), after checking it is F32 of
 * exactly `ndim` dims `shape`; errors as dspy__st_read_f32. */
dspy_status dspy__st_get_f32(const struct dspy__safetensors *st, const char *name, int ndim,
                             const uint64_t *shape, const unsigned char **data,
                             struct dspy_error *err);
/* Copy tensor `name`, which must be F32 with exactly `ndim` dims `shape`, into dst (any
 * alignment). Missing tensor → DSPY_ENOTFOUND, another dtype or shape → DSPY_EPARSE; the
 * message names file and tensor. */
dspy_status dspy__st_read_f32(const struct dspy__safetensors *st, const char *name, int ndim,
                              const uint64_t *shape, float *dst, struct dspy_error *err);

#endif

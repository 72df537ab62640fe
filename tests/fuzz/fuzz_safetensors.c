/* Fuzz target for the safetensors reader (vec layer): any bytes are parsed; a file that is
 * accepted must describe only tensors inside it whose sizes match their shapes, each read
 * back through dspy__st_read_f32 when it is F32. Any violation aborts (and ASan catches
 * reads out of bounds). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vec/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly `size` bytes, so any read past it is caught. */
    uint8_t *copy = malloc(size ? size : 1);
    memcpy(copy, data, size);
    struct dspy__safetensors *st = NULL;
    struct dspy_error err;
    if (dspy__st_parse(copy, size, "fuzz.safetensors", &st, &err)) {
        if (st || !strstr(err.message, "fuzz.safetensors"))
            abort();
        free(copy);
        return 0;
    }
    for (size_t i = 0; i < st->n; i++) {
        const struct dspy__st_tensor *t = &st->tensors[i];
        if (t->data < copy || t->data + t->nbytes > copy + size)
            abort();
        if (dspy__st_find(st, t->name) == NULL)
            abort();
        if (t->dtype == DSPY__ST_F32 && t->nbytes <= ((size_t)1 << 20)) {
            float *out = malloc(t->nbytes + 4);
            if (dspy__st_read_f32(st, t->name, t->ndim, t->shape, out, NULL))
                abort();
            free(out);
        }
    }
    dspy__st_close(st);
    free(copy);
    return 0;
}

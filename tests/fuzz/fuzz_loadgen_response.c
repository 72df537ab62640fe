/* Fuzz target for the HTTP/1.1 response parser (net/http1.c, the framing the engine's own
 * client and the load generator share) with the load generator's scan on top: the input is a
 * response, fed whole and then byte by byte (again after a reset, as on a kept-alive
 * connection); status, completion, token counts and outcome must agree. Any difference
 * aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/loadgen_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct verdict {
    int r;
    size_t used;
    int status;
    uint32_t chunks;
    long usage;
    enum dspy_loadgen_outcome oc;
};

static void feed(struct dspy__lg_parser *p, const uint8_t *data, size_t size, size_t piece,
                 struct verdict *v)
{
    size_t off = 0, used;
    int r = LG_MORE;
    while (off < size && r == LG_MORE) {
        size_t n = piece && size - off > piece ? piece : size - off;
        r = dspy__lg_parser_feed(p, (const char *)data + off, n, off, &used);
        if (used > n)
            abort();
        off += used;
    }
    if (r == LG_MORE)
        r = dspy__lg_parser_eof(p) == LG_DONE ? LG_DONE : LG_MORE;
    v->r = r;
    v->used = off;
    v->status = p->h.status;
    v->chunks = p->chunks;
    v->usage = p->usage_tokens;
    v->oc = r == LG_DONE ? dspy__lg_parser_outcome(p) : DSPY_LG_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dspy__lg_parser p;
    struct verdict a, b;
    if (dspy__lg_parser_init(&p, DSPY_LOADGEN_OPENAI, 256, 16))
        return 0;
    feed(&p, data, size, 0, &a);
    dspy__lg_parser_reset(&p);
    feed(&p, data, size, 1, &b);
    /* A byte-wise feed may stop earlier only on an error found at a byte the whole feed
     * consumed in one go; everything else must match. */
    if (a.r != b.r ||
        (a.r == LG_DONE && (a.used != b.used || a.status != b.status || a.chunks != b.chunks ||
                            a.usage != b.usage || a.oc != b.oc)))
        abort();
    dspy__lg_parser_release(&p);
    return 0;
}

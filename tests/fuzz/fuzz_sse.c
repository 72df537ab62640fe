/* Fuzz target for the SSE scanner (net layer): the first byte seeds how the rest is cut
 * into reads and the size limit; the events, status and end state must be the same as
 * when the whole input is fed at once, and byte by byte. Any difference aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "net/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct outcome {
    struct dspy_buf log; /* events rendered with lengths, so any byte difference shows */
    dspy_status rc;
    bool clean;
    long retry_ms;
};

static int record(void *ud, const struct dspy__sse_event *ev)
{
    struct dspy_buf *log = ud;
    if (ev->data.len && !ev->data.ptr)
        abort();
    dspy__buf_addf(log, "%zu:%zu:%zu:%d|", ev->type.len, ev->id.len, ev->data.len, ev->done);
    dspy__buf_add(log, ev->type.ptr, ev->type.len);
    dspy__buf_add(log, ev->id.ptr, ev->id.len);
    dspy__buf_add(log, ev->data.ptr, ev->data.len);
    return ev->data.len == 4 && memcmp(ev->data.ptr, "STOP", 4) == 0;
}

/* Feed in pieces of 1..max_piece bytes drawn from `seed` (max_piece 0: all at once). */
static void run(const uint8_t *data, size_t size, size_t limit, uint32_t seed, size_t max_piece,
                struct outcome *o)
{
    struct dspy__sse s;
    dspy__buf_init(&o->log, (size_t)16 << 20);
    dspy__sse_init(&s, limit, record, &o->log);
    o->rc = DSPY_OK;
    for (size_t at = 0; at < size && !o->rc;) {
        size_t n = size - at;
        if (max_piece) {
            seed = seed * 1103515245u + 12345u;
            size_t k = 1 + (seed >> 16) % max_piece;
            n = k < n ? k : n;
        }
        /* Each read lives in its own allocation, freed after the feed, so a view that
         * outlives its read is caught by ASan. */
        char *piece = malloc(n);
        memcpy(piece, data + at, n);
        o->rc = dspy__sse_feed(&s, piece, n, at);
        free(piece);
        at += n;
    }
    o->clean = dspy__sse_finish(&s);
    o->retry_ms = s.retry_ms;
    dspy__sse_release(&s);
}

static void same(const struct outcome *a, const struct outcome *b)
{
    if (a->rc != b->rc || a->clean != b->clean || a->retry_ms != b->retry_ms ||
        a->log.len != b->log.len || (a->log.len && memcmp(a->log.ptr, b->log.ptr, a->log.len))) {
        fprintf(stderr, "fuzz_sse: outcome depends on how the input is split\n");
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint32_t seed = data[0];
    size_t limit = (seed & 0x80) ? 64 : 0;
    data++;
    size--;
    struct outcome whole, split, bytes;
    run(data, size, limit, 0, 0, &whole);
    run(data, size, limit, seed, 1 + (seed & 0x3f), &split);
    same(&whole, &split);
    dspy__buf_release(&split.log);
    if (size <= 4096) {
        run(data, size, limit, 0, 1, &bytes);
        same(&whole, &bytes);
        dspy__buf_release(&bytes.log);
    }
    dspy__buf_release(&whole.log);
    return 0;
}

/* Fuzz target for Redis replies as the jobs layer reads them: any bytes are parsed by
 * hiredis's reader into replies, and each reply goes through every reader of
 * src/jobs/redis.c (the server's events, the worker registry, a claim, XAUTOCLAIM, XPENDING,
 * stream entries). A hostile or broken Redis must get its replies ignored, never a crash, a
 * read outside them or an allocation larger than the reader's limits. */
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "jobs/jobs_int.h"
#include "net/redis_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t touched;

static void touch(const char *s)
{
    if (s)
        touched += strlen(s); /* reads the whole string: ASan sees any overrun */
}

static bool on_entry(void *ud, const char *stream, const char *entry, const redisReply *fields)
{
    (void)ud;
    touch(stream);
    touch(entry);
    touch(dspy__rj_field(fields, "id"));
    touch(dspy__rj_field(fields, "spec"));
    return true;
}

static void read_all_ways(const redisReply *r)
{
    static struct dspy__rj_events ev;
    size_t n = dspy__rj_events_parse(r, &ev);
    if (n > DSPY__RJ_EVENTS_MAX)
        __builtin_trap();
    for (size_t i = 0; i < n; i++) {
        const struct dspy__rj_event *e = &ev.ev[i];
        if (!e->entry || (e->id && strlen(e->id) >= 40))
            __builtin_trap(); /* an event always has its entry id; job ids fit */
        touch(e->entry);
        touch(e->id);
        touch(e->state);
        touch(e->error);
        touch(e->progress);
        touch(e->result);
    }
    dspy__rj_streams(r, on_entry, NULL);
    struct dspy__rj_pool_stats pool;
    dspy__rj_pool(r, 1700000000000LL, &pool);
    if (pool.running > pool.slots)
        __builtin_trap(); /* a worker never reports more jobs than slots */
    const char *stream, *flag;
    const redisReply *entry, *fields;
    if (dspy__rj_claim(r, &stream, &entry, &flag)) {
        touch(stream);
        touch(flag);
        touch(dspy__rj_entry(entry, &fields));
        touch(dspy__rj_field(fields, "id"));
    }
    const redisReply *e = dspy__rj_autoclaimed(r);
    if (e) {
        touch(dspy__rj_entry(e, &fields));
        touch(dspy__rj_field(fields, "spec"));
    }
    if (dspy__rj_deliveries(r) < 1)
        __builtin_trap();
}

/* The bounded reader the server, the workers and the cache read with, at its own limits:
 * an array header declaring more ("*857108864") is a protocol error, not an allocation. A
 * smaller byte limit than a connection's lets inputs reach it. */
static const struct dspy__redis_limits limits = { (size_t)1 << 20, (size_t)1 << 16 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 20)
        return 0;
    redisReader *rd = dspy__redis_reader_new(&limits);
    if (!rd)
        return 0;
    if (redisReaderFeed(rd, (const char *)data, size) == REDIS_OK) {
        for (int i = 0; i < 16; i++) {
            void *reply = NULL;
            if (dspy__redis_reader_get_reply(rd, &reply) != REDIS_OK || !reply)
                break;
            read_all_ways(reply);
            freeReplyObject(reply);
        }
    }
    dspy__redis_reader_free(rd);
    return 0;
}

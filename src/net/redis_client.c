/* Bounded Redis connections (net layer): hiredis contexts whose reader holds each reply to a
 * number of array elements and of bytes. The elements are checked where hiredis creates an
 * array (its reply object functions, wrapped: the objects stay hiredis's own, so
 * freeReplyObject frees them); the bytes where replies are taken from the reader, which is
 * why commands go through the functions here rather than redisCommand/redisGetReply. */
#include "net/redis_client.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <limits.h>
#include <stdio.h>

#include <dspyc/common.h>

/* Per reader (its privdata, which hiredis copies into every read task). */
struct bound {
    struct dspy__redis_limits lim;
    size_t elements; /* declared by the arrays of the reply being read */
    size_t bytes;    /* consumed by the reader for the reply being read */
    size_t refused;  /* elements of the array that broke the limit (for the message) */
};

static redisReplyObjectFunctions base_fns, bounded_fns;
static bool fns_ready;
static pthread_once_t fns_once = PTHREAD_ONCE_INIT;

/* hiredis refuses the reply as out of memory when this returns NULL; the reader's caller
 * below turns that into the message. */
static void *create_array(const redisReadTask *task, int n)
{
    struct bound *b = task->privdata;
    if (!task->parent)
        b->elements = 0; /* the root of a new reply */
    size_t total = b->elements + (size_t)(n > 0 ? n : 0);
    if (total > b->lim.max_elements) {
        b->refused = total;
        return NULL;
    }
    b->elements = total;
    return base_fns.createArray(task, n);
}

/* hiredis keeps its default functions to itself: a throwaway reader shows them. */
static void fns_init(void)
{
    redisReader *r = redisReaderCreate();
    if (!r)
        return;
    base_fns = *r->fn;
    redisReaderFree(r);
    bounded_fns = base_fns;
    bounded_fns.createArray = create_array;
    fns_ready = true;
}

static bool attach(redisReader *r, const struct dspy__redis_limits *lim)
{
    pthread_once(&fns_once, fns_init);
    struct bound *b = fns_ready ? dspy_calloc(1, sizeof(*b)) : NULL;
    if (!b)
        return false;
    b->lim = lim ? *lim : (struct dspy__redis_limits)DSPY__REDIS_LIMITS_INIT;
    r->fn = &bounded_fns;
    r->privdata = b;
    return true;
}

static struct bound *bound_of(const redisReader *r)
{
    return r && r->fn == &bounded_fns ? r->privdata : NULL;
}

static size_t unread(const redisReader *r)
{
    return r->buf ? r->len - r->pos : 0;
}

/* The length a bulk string being read declares, once its header line is in; -1 before.
 * hiredis leaves the reader at that line until the whole string has arrived. */
static long long pending_bulk(const redisReader *r)
{
    if (r->ridx < 0 || !r->buf || r->rstack[r->ridx].type != REDIS_REPLY_STRING)
        return -1;
    unsigned long long n = 0;
    for (size_t i = r->pos; i < r->len; i++) {
        char ch = r->buf[i];
        if (ch == '\r')
            return (long long)n;
        if (ch < '0' || ch > '9')
            return -1; /* "-1" (nil) or a bad length: hiredis answers those itself */
        n = n > (unsigned long long)LLONG_MAX / 10 ? (unsigned long long)LLONG_MAX
                                                   : n * 10 + (unsigned long long)(ch - '0');
    }
    return -1;
}

static int refuse(redisReader *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->errstr, sizeof(r->errstr), fmt, ap);
    va_end(ap);
    r->err = REDIS_ERR_PROTOCOL;
    if (r->reply) { /* what was read of it goes now; the reader is done */
        r->fn->freeObject(r->reply);
        r->reply = NULL;
    }
    return REDIS_ERR;
}

int dspy__redis_reader_get_reply(redisReader *r, void **reply)
{
    struct bound *b = bound_of(r);
    if (!b || r->err)
        return redisReaderGetReply(r, reply);
    size_t before = unread(r);
    b->refused = 0;
    int rc = redisReaderGetReply(r, reply);
    if (rc != REDIS_OK) {
        if (b->refused && r->err == REDIS_ERR_OOM)
            return refuse(r, "Redis reply too large: %zu elements (at most %zu)", b->refused,
                          b->lim.max_elements);
        return rc;
    }
    size_t after = unread(r);
    b->bytes += before - after;
    if (r->ridx < 0) { /* a reply came out, or none began */
        b->bytes = 0;
        return REDIS_OK;
    }
    long long bulk = pending_bulk(r);
    if (bulk >= 0 && (unsigned long long)bulk > b->lim.max_bytes)
        return refuse(r, "Redis reply too large: a string of %lld bytes (at most %zu)", bulk,
                      b->lim.max_bytes);
    size_t want = b->bytes + (bulk >= 0 ? (size_t)bulk : after);
    if (want > b->lim.max_bytes)
        return refuse(r, "Redis reply too large: over %zu bytes", b->lim.max_bytes);
    return REDIS_OK;
}

redisReader *dspy__redis_reader_new(const struct dspy__redis_limits *lim)
{
    redisReader *r = redisReaderCreate();
    if (r && !attach(r, lim)) {
        redisReaderFree(r);
        return NULL;
    }
    return r;
}

void dspy__redis_reader_free(redisReader *r)
{
    struct bound *b = bound_of(r);
    redisReaderFree(r);
    dspy_free(b);
}

redisContext *dspy__redis_connect(const char *host, int port, const char *unix_path,
                                  struct timeval connect_timeout, struct timeval io_timeout,
                                  const struct dspy__redis_limits *lim)
{
    redisContext *c = unix_path ? redisConnectUnixWithTimeout(unix_path, connect_timeout)
                                : redisConnectWithTimeout(host, port, connect_timeout);
    if (!c || c->err || redisSetTimeout(c, io_timeout) != REDIS_OK)
        return c;
    if (!attach(c->reader, lim)) {
        c->err = REDIS_ERR_OOM;
        snprintf(c->errstr, sizeof(c->errstr), "Out of memory");
    }
    return c;
}

void dspy__redis_free(redisContext *c)
{
    struct bound *b = c ? bound_of(c->reader) : NULL;
    redisFree(c);
    dspy_free(b);
}

/* One reply from the reader into c's error when it fails. */
static int take(redisContext *c, void **reply)
{
    if (dspy__redis_reader_get_reply(c->reader, reply) == REDIS_OK)
        return REDIS_OK;
    c->err = c->reader->err;
    snprintf(c->errstr, sizeof(c->errstr), "%s", c->reader->errstr);
    return REDIS_ERR;
}

/* As hiredis's redisGetReply for a blocking context, with every read checked. */
int dspy__redis_get_reply(redisContext *c, redisReply **out)
{
    void *reply = NULL;
    *out = NULL;
    if (c->err || take(c, &reply) != REDIS_OK)
        return REDIS_ERR;
    if (!reply && (c->flags & REDIS_BLOCK)) {
        int done = 0;
        do {
            if (redisBufferWrite(c, &done) != REDIS_OK)
                return REDIS_ERR;
        } while (!done);
        do {
            if (redisBufferRead(c) != REDIS_OK || take(c, &reply) != REDIS_OK)
                return REDIS_ERR;
        } while (!reply);
    }
    *out = reply;
    return REDIS_OK;
}

redisReply *dspy__redis_command(redisContext *c, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    int rc = redisvAppendCommand(c, format, ap);
    va_end(ap);
    redisReply *reply = NULL;
    if (rc == REDIS_OK)
        dspy__redis_get_reply(c, &reply);
    return reply;
}

redisReply *dspy__redis_command_argv(redisContext *c, int argc, const char **argv,
                                     const size_t *lens)
{
    redisReply *reply = NULL;
    if (redisAppendCommandArgv(c, argc, argv, lens) == REDIS_OK)
        dspy__redis_get_reply(c, &reply);
    return reply;
}

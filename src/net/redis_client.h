/* Bounded Redis connections (net layer): the one place hiredis contexts are opened, read
 * and closed for the cache's L2 and the jobs transport. hiredis 0.14 allocates whatever an
 * array header declares ("*857108864" asks for 6.8 GB) and buffers a bulk string of any
 * declared length; here each reply is held to a number of array elements and of bytes, and
 * one that declares more ends in a protocol error ("Redis reply too large: N elements"),
 * never in the allocation. */
#ifndef DSPY_NET_REDIS_CLIENT_H
#define DSPY_NET_REDIS_CLIENT_H

#include <stddef.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

struct dspy__redis_limits {
    size_t max_elements; /* array elements in one reply, every level together */
    size_t max_bytes;    /* bytes read for one reply */
};

/* A million elements (8 MB of element pointers); 512 MiB, Redis's own proto-max-bulk-len
 * default and above the cache's largest value. */
#define DSPY__REDIS_LIMITS_INIT            \
    {                                      \
        (size_t)1 << 20, (size_t)512 << 20 \
    }

/* Connect to host:port, or to the Unix socket `unix_path` when it is not NULL, within
 * `connect_timeout`; `io_timeout` bounds each read and write afterwards. `lim` NULL means
 * DSPY__REDIS_LIMITS_INIT. Returns NULL when out of memory, else a context to check as
 * hiredis's (err, errstr) and to close with dspy__redis_free, also when it failed. */
redisContext *dspy__redis_connect(const char *host, int port, const char *unix_path,
                                  struct timeval connect_timeout, struct timeval io_timeout,
                                  const struct dspy__redis_limits *lim);
/* Close a context from dspy__redis_connect; NULL is a no-op. */
void dspy__redis_free(redisContext *c);

/* redisGetReply, redisCommand, redisCommandArgv within the limits: a reply past them sets
 * c->err to REDIS_ERR_PROTOCOL with errstr "Redis reply too large: ...", and the context is
 * no longer usable (as after any hiredis error). The caller frees replies with
 * freeReplyObject. Blocking contexts only. */
int dspy__redis_get_reply(redisContext *c, redisReply **reply);
/* `format` is hiredis's (%s, %d, %b for a pointer and length), not printf's. */
redisReply *dspy__redis_command(redisContext *c, const char *format, ...);
redisReply *dspy__redis_command_argv(redisContext *c, int argc, const char **argv,
                                     const size_t *lens);

/* A standalone reader within the limits (what a context reads with): feed it with
 * redisReaderFeed, take replies with dspy__redis_reader_get_reply (as
 * redisReaderGetReply), free it with dspy__redis_reader_free. NULL when out of memory. */
redisReader *dspy__redis_reader_new(const struct dspy__redis_limits *lim);
int dspy__redis_reader_get_reply(redisReader *r, void **reply);
void dspy__redis_reader_free(redisReader *r);

#endif

/* HTTP/1.1 response framing (net layer): one incremental parser of the status line, the
 * headers and the body's framing (Content-Length, chunked, read-to-close; keep-alive or
 * close), shared by the engine's own HTTP/1.1 transport and the load generator. Body bytes
 * go to a callback as they arrive, in reads of any size; the head is kept for header
 * look-ups until the next response. Written by hand: the only allocation is the head
 * buffer, which grows to the largest head seen and is reused. */
#ifndef DSPY_NET_HTTP1_H
#define DSPY_NET_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dspyc/common.h>

#include "base/buf.h"

/* Results of feeding bytes. */
enum {
    DSPY__H1_MORE = 0,     /* the response goes on */
    DSPY__H1_DONE = 1,     /* the response is complete */
    DSPY__H1_ERROR = -1,   /* broken framing or an oversized head: see `error` */
    DSPY__H1_STOPPED = -2, /* the body callback returned non-zero */
};

enum dspy__h1_phase {
    DSPY__H1_HEAD = 0,   /* status line and headers, gathered in `head` */
    DSPY__H1_BODY_LEN,   /* Content-Length body, `left` bytes to go */
    DSPY__H1_CHUNK_SIZE, /* chunked: size line */
    DSPY__H1_CHUNK_EXT,  /* chunked: extension after the size, up to LF */
    DSPY__H1_CHUNK_DATA, /* chunked: `left` data bytes to go */
    DSPY__H1_CHUNK_END,  /* chunked: the CRLF after data */
    DSPY__H1_TRAILER,    /* chunked: trailer lines up to an empty one */
    DSPY__H1_BODY_EOF,   /* body runs to the end of the connection */
    DSPY__H1_COMPLETE
};

/* Body bytes of the response, received at `now`. Non-zero stops the feed. */
typedef int (*dspy__h1_body_fn)(void *userdata, const char *data, size_t len, uint64_t now);

/* Caller-allocated; one connection's responses, one at a time; not thread-safe. */
struct dspy__h1 {
    enum dspy__h1_phase phase;
    int status;     /* of the final response; interim 1xx answers are skipped */
    bool keepalive; /* the connection may carry the next request */
    bool chunked;
    bool stream;   /* Content-Type: text/event-stream */
    bool no_body;  /* set by the caller before feeding: the answer to a HEAD request */
    uint64_t left; /* body or chunk bytes to go */
    uint64_t chunk_size;
    uint32_t line_len; /* trailer line in progress */
    int size_digits;
    size_t line_start;    /* head: where the line in progress starts */
    struct dspy_buf head; /* the response head; max = the head limit */
    uint64_t bytes;       /* bytes consumed of this response, head included */
    uint64_t first_byte_ns;
    const char *error; /* static text, set with DSPY__H1_ERROR */
    bool oversize;     /* that error is a head over the limit */
    dspy__h1_body_fn on_body;
    void *userdata;
};

#define DSPY__H1_MAX_HEAD_DEFAULT ((size_t)64 << 10)

/* `max_head` bounds the status line and headers together (0 = DSPY__H1_MAX_HEAD_DEFAULT). */
void dspy__h1_init(struct dspy__h1 *p, size_t max_head, dspy__h1_body_fn on_body, void *userdata);
void dspy__h1_release(struct dspy__h1 *p);
/* Get ready for the next response on the connection, keeping the memory. */
void dspy__h1_reset(struct dspy__h1 *p);
/* Feed `len` bytes received at `now`; *used gets how many were consumed (less than len only
 * when the response ended, failed or was stopped inside them). */
int dspy__h1_feed(struct dspy__h1 *p, const char *data, size_t len, uint64_t now, size_t *used);
/* The peer closed the connection: DSPY__H1_DONE when that ends a read-to-close body (or
 * the response was complete), else DSPY__H1_ERROR. */
int dspy__h1_eof(struct dspy__h1 *p);
/* True once the head has been parsed. */
bool dspy__h1_head_done(const struct dspy__h1 *p);
/* The first header `name` (case-insensitive) of a parsed head: a trimmed view borrowed
 * until the next reset; false when absent. */
bool dspy__h1_header(const struct dspy__h1 *p, const char *name, const char **value, size_t *len);

#endif

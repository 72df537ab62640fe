/* Private declarations shared by the load generator's files (net layer): the seeded random
 * source, and the incremental HTTP/1.1 response parser with its OpenAI body scanner. */
#ifndef DSPY_NET_LOADGEN_INT_H
#define DSPY_NET_LOADGEN_INT_H

#include <dspyc/loadgen.h>

#include "net/sse.h"

uint64_t dspy__lg_splitmix(uint64_t *x);
void dspy__lg_rng_seed(uint64_t rng[4], uint64_t seed);
double dspy__lg_uniform(uint64_t s[4]);
double dspy__lg_exponential(uint64_t s[4]);

enum lg_phase {
    LG_HEAD = 0,   /* status line and headers, gathered in `head` */
    LG_BODY_LEN,   /* Content-Length body, `left` bytes to go */
    LG_CHUNK_SIZE, /* chunked: size line */
    LG_CHUNK_EXT,  /* chunked: extension after the size, up to LF */
    LG_CHUNK_DATA, /* chunked: `left` data bytes to go */
    LG_CHUNK_END,  /* chunked: the CRLF after data */
    LG_TRAILER,    /* chunked: trailer lines up to an empty one */
    LG_BODY_EOF,   /* body runs to the end of the connection */
    LG_COMPLETE
};

/* Parser and per-response measurements of one connection. Fixed buffers, allocated once
 * when the connection is first used; reset between responses. */
struct dspy__lg_parser {
    enum lg_phase phase;
    enum dspy_loadgen_parse mode;
    int status;
    bool keepalive;
    bool chunked;
    bool stream;      /* Content-Type: text/event-stream */
    bool malformed;   /* the HTTP framing, the JSON body or an event did not parse */
    bool saw_done;    /* "data: [DONE]" */
    bool error_event; /* an SSE event carrying an error object */
    uint64_t left;    /* body or chunk bytes to go */
    uint64_t chunk_size;
    uint32_t line_len; /* length of the trailer line in progress */
    int size_digits;
    char *head; /* response head, up to head_cap bytes */
    size_t head_len, head_cap;
    char *body; /* the last body bytes (non-stream), up to body_cap */
    size_t body_len, body_cap;
    char first_ch, last_ch; /* first and last non-space body bytes (JSON shape check) */
    bool seen_first;        /* first_ch is set (it may be a NUL byte) */
    struct dspy__sse sse;
    /* measurements of the current response */
    uint64_t bytes;
    uint64_t first_byte_ns, first_token_ns, first_content_ns, last_token_ns;
    uint32_t chunks;
    uint64_t *chunk_ns;
    uint32_t chunk_cap;
    long usage_tokens, prompt_tokens;
};

dspy_status dspy__lg_parser_init(struct dspy__lg_parser *p, enum dspy_loadgen_parse mode,
                                 size_t body_cap, uint32_t chunk_cap);
void dspy__lg_parser_release(struct dspy__lg_parser *p);
void dspy__lg_parser_reset(struct dspy__lg_parser *p);

/* Results of feeding bytes. */
enum { LG_MORE = 0, LG_DONE = 1, LG_ERROR = -1 };

/* Feed `len` bytes received at `now`; *used gets how many were consumed (less than len
 * only on LG_DONE). */
int dspy__lg_parser_feed(struct dspy__lg_parser *p, const char *data, size_t len, uint64_t now,
                         size_t *used);
/* The peer closed the connection: LG_DONE when that ends a read-to-close body, else
 * LG_ERROR. */
int dspy__lg_parser_eof(struct dspy__lg_parser *p);
/* The outcome of a complete response. */
enum dspy_loadgen_outcome dspy__lg_parser_outcome(const struct dspy__lg_parser *p);

/* Scan a JSON text for "key" followed by ':' and return the position after the colon and
 * spaces, or NULL. A shallow scan: it does not know nesting. */
const char *dspy__lg_json_key(const char *s, size_t len, const char *key, size_t keylen);
/* The integer at `p` (after optional spaces) or -1. */
long dspy__lg_json_long(const char *p, const char *end);

#endif

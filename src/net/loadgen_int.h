/* Private declarations shared by the load generator's files (net layer): the seeded random
 * source, and the incremental HTTP/1.1 response parser with its OpenAI body scanner. */
#ifndef DSPY_NET_LOADGEN_INT_H
#define DSPY_NET_LOADGEN_INT_H

#include <dspyc/loadgen.h>

#include "net/http1.h"
#include "net/sse.h"

uint64_t dspy__lg_splitmix(uint64_t *x);
void dspy__lg_rng_seed(uint64_t rng[4], uint64_t seed);
double dspy__lg_uniform(uint64_t s[4]);
double dspy__lg_exponential(uint64_t s[4]);

/* Parser and per-response measurements of one connection: the shared HTTP/1.1 framing
 * (net/http1.h) with the OpenAI scan on top. Fixed buffers, allocated once when the
 * connection is first used; reset between responses. */
struct dspy__lg_parser {
    struct dspy__h1 h; /* status, keep-alive, stream, bytes, first_byte_ns */
    enum dspy_loadgen_parse mode;
    bool malformed;   /* the HTTP framing, the JSON body or an event did not parse */
    bool saw_done;    /* "data: [DONE]" */
    bool error_event; /* an SSE event carrying an error object */
    char *body;       /* the last body bytes (non-stream), up to body_cap */
    size_t body_len, body_cap;
    char first_ch, last_ch; /* first and last non-space body bytes (JSON shape check) */
    bool seen_first;        /* first_ch is set (it may be a NUL byte) */
    struct dspy__sse sse;
    /* measurements of the current response */
    uint64_t first_token_ns, first_content_ns, last_token_ns;
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
enum { LG_MORE = DSPY__H1_MORE, LG_DONE = DSPY__H1_DONE, LG_ERROR = DSPY__H1_ERROR };

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

/* Incremental Server-Sent Events scanner (net layer), after the WHATWG event-stream rules:
 * bytes go in as they arrive, in reads of any size, and each complete event comes out as a
 * callback with {ptr, len} views and the receive timestamp of the read that completed it.
 * Written by hand (no packaged library does this); memory is reused across events and
 * streams, so a warm scanner allocates nothing per event. */
#ifndef DSPY_NET_SSE_H
#define DSPY_NET_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dspyc/common.h>

#include "base/buf.h"

/* A borrowed byte range; not NUL-terminated. */
struct dspy__sse_view {
    const char *ptr;
    size_t len;
};

/* One dispatched event. Every view is borrowed until the callback returns. */
struct dspy__sse_event {
    struct dspy__sse_view type; /* the `event:` field; "message" when the event named none */
    struct dspy__sse_view data; /* `data:` lines joined by '\n' (no trailing newline) */
    struct dspy__sse_view id;   /* last event id seen on the stream, empty if none */
    uint64_t recv_ns;           /* timestamp passed with the read that completed the event */
    bool done;                  /* data is exactly "[DONE]" (OpenAI's end of stream) */
};

/* Return 0 to go on, non-zero to stop: dspy__sse_feed() then returns DSPY_ECANCELED and
 * the scanner ignores further input until reset. */
typedef int (*dspy__sse_event_fn)(void *userdata, const struct dspy__sse_event *ev);

/* Scanner state. Caller-allocated; one stream at a time; not thread-safe (one thread feeds
 * it at a time). Fields are private to sse.c. */
struct dspy__sse {
    dspy__sse_event_fn on_event;
    void *userdata;
    size_t max_bytes;                /* longest line and longest joined data allowed */
    struct dspy_buf line;            /* the start of a line split across reads */
    struct dspy_buf data;            /* joined data, when it could not stay a view into the read */
    struct dspy_buf type;            /* event type of the event in progress */
    struct dspy_buf id;              /* last event id (persists across events, as the spec says) */
    struct dspy__sse_view data_view; /* single data line still inside the current read */
    size_t data_len;                 /* logical length of the joined data */
    uint32_t data_lines;             /* data lines in the event in progress */
    bool skip_lf;       /* the last read ended in CR: an LF opening the next is its pair */
    bool first_line;    /* BOM check pending */
    bool in_event;      /* some field line seen since the last dispatch */
    dspy_status failed; /* sticky error (DSPY_ETOOBIG or DSPY_ECANCELED) */
    long retry_ms;      /* last valid `retry:` field, -1 if none */
    uint64_t events;    /* events dispatched */
    uint64_t comments;  /* `:` comment lines seen (keep-alives) */
    bool saw_done;      /* a "[DONE]" event was dispatched */
};

#define DSPY__SSE_MAX_DEFAULT ((size_t)1 << 20)

/* `max_bytes` bounds a line and an event's data (0 = DSPY__SSE_MAX_DEFAULT). */
void dspy__sse_init(struct dspy__sse *s, size_t max_bytes, dspy__sse_event_fn on_event,
                    void *userdata);
/* Change the bound on lines and event data (0 = DSPY__SSE_MAX_DEFAULT); takes effect for
 * bytes fed afterwards. */
void dspy__sse_set_limit(struct dspy__sse *s, size_t max_bytes);
/* Start a new stream: forget all state (including the last event id), keep the memory. */
void dspy__sse_reset(struct dspy__sse *s);
void dspy__sse_release(struct dspy__sse *s);

/* Scan `len` bytes received at `recv_ns`. Calls on_event for every event completed by
 * these bytes, in order. Errors: DSPY_ETOOBIG (a line or an event's data exceeds max_bytes),
 * DSPY_ECANCELED (the callback asked to stop), DSPY_ENOMEM. Errors are sticky. */
dspy_status dspy__sse_feed(struct dspy__sse *s, const char *data, size_t len, uint64_t recv_ns);

/* At end of stream: true when it ended between events, false when a partial line or a
 * partial event was left (the spec discards it; callers report a truncated stream). */
bool dspy__sse_finish(const struct dspy__sse *s);

#endif

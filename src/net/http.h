/* Blocking HTTP client (net layer) over libcurl easy handles: one request in, status and
 * bounded body out, with failures classed as the LM layer needs them. A client keeps a
 * small pool of easy handles so that concurrent callers each reuse a kept-alive connection
 * instead of serializing on one. To be replaced by a single multi loop later; the interface
 * is kept small for that reason. */
#ifndef DSPY_NET_HTTP_H
#define DSPY_NET_HTTP_H

#include <stddef.h>

#include <dspyc/common.h>

struct dspy__http_client;

/* A fixed set of request header lines ("Name: value"), built once and shared read-only by
 * every request that uses it (thread-safe once built). */
struct dspy__http_headers;

struct dspy__http_request {
    const char *url;                          /* absolute http(s) URL */
    const struct dspy__http_headers *headers; /* may be NULL */
    const char *body;                         /* NULL = GET, else POST of body_len bytes */
    size_t body_len;
    double timeout_s;          /* whole exchange; <= 0 = none */
    double connect_timeout_s;  /* <= 0 = libcurl's default */
    size_t max_response_bytes; /* 0 = 16 MiB */
};

struct dspy__http_response {
    long status;    /* HTTP status code */
    char *body;     /* NUL-terminated, dspy_malloc'd; caller owns (dspy_free) */
    size_t body_len;
};

/* Process-wide libcurl setup, done once whatever the number of threads asking. */
dspy_status dspy__http_global_init(void);

/* `max_idle` easy handles (and their connections) are kept between requests; more callers
 * than that still run at once, each with a fresh handle. Returns NULL on failure. */
struct dspy__http_client *dspy__http_client_new(size_t max_idle);
void dspy__http_client_free(struct dspy__http_client *c);

/* Copies the `n` lines. NULL on failure. */
struct dspy__http_headers *dspy__http_headers_new(const char *const *lines, size_t n);
void dspy__http_headers_free(struct dspy__http_headers *h);

/* Perform one exchange and wait for it. Any HTTP status is DSPY_OK (the caller classifies
 * it). Failures: DSPY_ELM_NETWORK (resolve, connect, send, receive, dropped connection),
 * DSPY_ELM_TIMEOUT, DSPY_ETOOBIG (body over the limit), DSPY_EINVAL (bad URL), DSPY_ENOMEM.
 * Error messages name the URL's host part only, never header values. Thread-safe. */
dspy_status dspy__http_request(struct dspy__http_client *c, const struct dspy__http_request *req,
                               struct dspy__http_response *resp, struct dspy_error *err);
void dspy__http_response_release(struct dspy__http_response *resp);

#endif

/* Fuzz target for what the proxy reads from clients and from its cache (serve layer): the
 * input as a request body (its "cache" controls) and as a stored chat completion replayed as
 * an SSE stream. A replay that succeeds must be well formed: "data: " events whose JSON
 * parses, ending with [DONE]. Anything else aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/buf.h"
#include "serve/serve_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_stream(const struct dspy_buf *b)
{
    static const char done[] = "data: [DONE]\n\n";
    size_t n = sizeof(done) - 1;
    if (b->len < n || memcmp(b->ptr + b->len - n, done, n))
        abort();
    const char *p = b->ptr, *end = b->ptr + b->len - n;
    while (p < end) {
        if (end - p < 6 || memcmp(p, "data: ", 6))
            abort();
        const char *e = strstr(p, "\n\n");
        if (!e || e > end)
            abort();
        json_t *v = json_loadb(p + 6, (size_t)(e - p - 6), 0, NULL);
        if (!json_is_object(v))
            abort();
        json_decref(v);
        p = e + 2;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *body = json_loadb((const char *)data, size, 0, NULL);
    if (json_is_object(body)) {
        struct dspy_cache_ctl ctl = DSPY_CACHE_CTL_INIT;
        double s_maxage = 0;
        const char *ns = NULL, *why = NULL;
        if (dspy__serve_body_controls(body, &ctl, &s_maxage, &ns, &why)) {
            if (ctl.ttl_s < 0 || s_maxage < 0 || (ns && strlen(ns) > DSPY_CACHE_NS_MAX))
                abort();
        } else if (!why) {
            abort();
        }
    }
    json_decref(body);
    for (int usage = 0; usage < 2; usage++) {
        struct dspy_buf b;
        dspy__buf_init(&b, (size_t)64 << 20);
        if (!dspy__serve_replay_sse((const char *)data, size, usage, &b))
            check_stream(&b);
        dspy__buf_release(&b);
    }
    return 0;
}

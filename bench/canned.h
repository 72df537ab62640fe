/* An in-process LM for benchmarks that measure everything but the network: every request
 * gets the same chat completion (a Predict's `answer`: Paris), and the calls are counted in
 * the `long` the transport's userdata points to (atomically: batches call from many
 * threads). Header-only, for bench programs. */
#ifndef DSPY_BENCH_CANNED_H
#define DSPY_BENCH_CANNED_H

#include <string.h>

#include <dspyc/dspyc.h>

#define CANNED                                                                                 \
    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":0,\"model\":\"sim\","   \
    "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"[[ ## answer" \
    " ## ]]\\nParis\\n\\n[[ ## completed ## ]]\"},\"finish_reason\":\"stop\"}],\"usage\":{"    \
    "\"prompt_tokens\":120,\"completion_tokens\":12,\"total_tokens\":132}}"

static dspy_status canned_transport(void *userdata, const char *url, const char *body,
                                    size_t body_len, long *http_status, char **response,
                                    size_t *response_len, struct dspy_error *err)
{
    (void)url;
    (void)body;
    (void)body_len;
    (void)err;
    if (userdata)
        __atomic_fetch_add((long *)userdata, 1, __ATOMIC_RELAXED);
    *http_status = 200;
    *response_len = sizeof(CANNED) - 1;
    if (!(*response = dspy_malloc(sizeof(CANNED))))
        return DSPY_ENOMEM;
    memcpy(*response, CANNED, sizeof(CANNED));
    return DSPY_OK;
}

#endif

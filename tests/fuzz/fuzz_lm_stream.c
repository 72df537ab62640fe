/* Fuzz target for the streamed-delta assembly (lm layer): the input is the body of an SSE
 * answer, handed to dspy_lm_stream() by a transport hook. Whatever the events hold, the call
 * must end with a status, never a crash; when it succeeds, the deltas handed to the caller,
 * concatenated, must be exactly the assembled text of choice 0. Any difference aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/dspyc.h>

#include "base/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct body {
    const uint8_t *data;
    size_t size;
};

static dspy_status answer(void *userdata, const char *url, const char *req, size_t req_len,
                          long *http_status, char **response, size_t *response_len,
                          struct dspy_error *err)
{
    struct body *b = userdata;
    (void)url;
    (void)req;
    (void)req_len;
    (void)err;
    *http_status = 200;
    *response = dspy_malloc(b->size + 1);
    if (!*response)
        return DSPY_ENOMEM;
    memcpy(*response, b->data, b->size);
    (*response)[b->size] = '\0';
    *response_len = b->size;
    return DSPY_OK;
}

static int on_delta(void *userdata, const char *text, size_t len, uint64_t recv_ns)
{
    struct dspy_buf *deltas = userdata;
    (void)recv_ns;
    if (len && !text)
        abort();
    dspy__buf_add(deltas, text, len);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct body b = { data, size };
    struct dspy_lm_options o = DSPY_LM_OPTIONS_INIT;
    dspy_lm *lm = NULL;
    o.base_url = "http://lm.test/v1";
    o.model = "openai/m";
    o.transport = answer;
    o.transport_userdata = &b;
    o.max_response_bytes = 1 << 20;
    if (dspy_lm_new(&o, &lm, NULL))
        return 0;
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", "hi");
    struct dspy_lm_request req = DSPY_LM_REQUEST_INIT;
    req.messages = msgs;
    struct dspy_lm_response resp;
    struct dspy_buf deltas;
    struct dspy_error err;
    dspy__buf_init(&deltas, (size_t)16 << 20);
    dspy_status rc = dspy_lm_stream(lm, &req, on_delta, &deltas, &resp, &err);
    if (rc == DSPY_OK) {
        if (resp.n < 1 || !resp.texts || !resp.texts[0])
            abort();
        size_t n = strlen(resp.texts[0]);
        if (n != deltas.len || (n && memcmp(resp.texts[0], deltas.ptr, n))) {
            fprintf(stderr, "fuzz_lm_stream: the deltas differ from the assembled text\n");
            abort();
        }
        dspy_lm_response_release(&resp);
    } else if (!err.message[0]) {
        fprintf(stderr, "fuzz_lm_stream: status %d without a message\n", rc);
        abort();
    }
    dspy__buf_release(&deltas);
    json_decref(msgs);
    dspy_lm_free(lm);
    return 0;
}

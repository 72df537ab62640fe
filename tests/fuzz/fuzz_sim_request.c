/* Fuzz target for the simulator's request side (sim layer): the input is a chat-completions
 * request body. Reading it (message list, roles, content strings and arrays of parts, n,
 * max_tokens, response_format), hashing it, and reading and answering the prompt it carries
 * must never crash, leak or read out of bounds, whatever the bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sim/sim_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t e;
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &e);
    if (!json_is_object(body)) {
        json_decref(body);
        return 0;
    }
    struct dspy__sim_chat c;
    struct dspy__sim_bad why;
    dspy__sim_chat_init(&c);
    if (dspy__sim_chat_parse(body, &c, &why)) {
        struct dspy__sim_prompt p;
        size_t tokens = 0;
        dspy__sim_prompt_parse(&p, c.msgs, c.n_msgs);
        for (size_t i = 0; i < c.n_msgs; i++)
            tokens += dspy__sim_tokens(c.msgs[i].text.p, c.msgs[i].text.n);
        struct dspy__sim_answer_opts o = { 1,
                                           dspy__sim_request_hash(body),
                                           0,
                                           c.temperature,
                                           c.ignore_eos && c.max_tokens < 64
                                               ? (unsigned)c.max_tokens
                                               : 0,
                                           c.schema,
                                           c.json_object,
                                           1.0 };
        /* Two choices at most: enough to reach the per-choice paths, cheap per input. */
        for (size_t k = 0; k < c.n && k < 2; k++) {
            struct dspy_buf out;
            dspy__buf_init(&out, 1 << 22);
            o.choice = (unsigned)k;
            dspy__sim_answer(&p, &o, &out);
            dspy__sim_tokens_prefix(out.ptr ? out.ptr : "", out.len, tokens % 32);
            dspy__buf_release(&out);
        }
        dspy__sim_prompt_release(&p);
    } else if (!why.code || !why.message[0]) {
        abort(); /* a refusal always says why */
    }
    dspy__sim_chat_release(&c);
    json_decref(body);
    return 0;
}

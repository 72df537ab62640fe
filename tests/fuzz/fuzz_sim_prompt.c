/* Fuzz target for the simulator's prompt reader and answerer (sim layer): the
 * input is a message list, messages separated by 0x1e (system first, then user/assistant
 * turns). Parsing, answering in every mode, block reading, arith recognition and embedding
 * must never crash, leak or read out of bounds, whatever the bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sim/sim_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dspy__sim_msg msgs[32];
    size_t n = 0;
    const char *p = (const char *)data, *end = p + size;
    while (p <= end && n < 32) {
        const char *sep = memchr(p, 0x1e, (size_t)(end - p));
        const char *e = sep ? sep : end;
        enum dspy__sim_role role = n == 0  ? DSPY__SIM_ROLE_SYSTEM
                                   : n % 2 ? DSPY__SIM_ROLE_USER
                                           : DSPY__SIM_ROLE_ASSISTANT;
        msgs[n++] = (struct dspy__sim_msg){ role, { p, (size_t)(e - p) } };
        if (!sep)
            break;
        p = sep + 1;
    }

    struct dspy__sim_prompt prompt;
    dspy__sim_prompt_parse(&prompt, msgs, n);
    json_t *schema = json_pack("{s:s, s:{s:{s:s}, s:{s:s}}}", "type", "object", "properties", "a",
                               "type", "integer", "b", "type", "string");
    for (unsigned mode = 0; mode < 4; mode++) {
        struct dspy_buf out;
        struct dspy__sim_answer_opts o = {
            mode,      size, mode, mode * 0.5, mode == 1 ? 20u : 0u, mode == 2 ? schema : NULL,
            mode == 3, 1.0
        };
        dspy__buf_init(&out, 1 << 22);
        dspy__sim_answer(&prompt, &o, &out);
        dspy__sim_tokens(out.ptr ? out.ptr : "", out.len);
        dspy__buf_release(&out);
    }
    json_decref(schema);
    dspy__sim_prompt_release(&prompt);

    struct dspy__sim_block blocks[DSPY__SIM_MAX_BLOCKS];
    dspy__sim_blocks((struct dspy__sim_view){ (const char *)data, size }, blocks,
                     DSPY__SIM_MAX_BLOCKS);
    struct dspy__sim_arith q;
    dspy__sim_arith_find((const char *)data, size, &q);
    float vec[16];
    dspy__sim_embed((const char *)data, size, vec, 16);
    dspy__sim_tokens_prefix((const char *)data, size, size / 2);
    dspy__sim_utf8_check((const char *)data, size);
    return 0;
}

/* Fuzz target for the simulator's prompt reader and answerer (apps layer, cli/sim): the
 * input is a message list, messages separated by 0x1e (system first, then user/assistant
 * turns). Parsing, answering in every mode, block reading, arith recognition and embedding
 * must never crash, leak or read out of bounds, whatever the bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../cli/sim/sim_answer.c"
#include "../../cli/sim/sim_arith.c"
#include "../../cli/sim/sim_embed.c"
#include "../../cli/sim/sim_prompt.c"
#include "../../cli/sim/sim_propose.c"
#include "../../cli/sim/sim_text.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sim_msg msgs[32];
    size_t n = 0;
    const char *p = (const char *)data, *end = p + size;
    while (p <= end && n < 32) {
        const char *sep = memchr(p, 0x1e, (size_t)(end - p));
        const char *e = sep ? sep : end;
        enum sim_role role = n == 0 ? SIM_ROLE_SYSTEM : n % 2 ? SIM_ROLE_USER : SIM_ROLE_ASSISTANT;
        msgs[n++] = (struct sim_msg){ role, { p, (size_t)(e - p) } };
        if (!sep)
            break;
        p = sep + 1;
    }

    struct sim_prompt prompt;
    sim_prompt_parse(&prompt, msgs, n);
    json_t *schema = json_pack("{s:s, s:{s:{s:s}, s:{s:s}}}", "type", "object", "properties",
                               "a", "type", "integer", "b", "type", "string");
    for (unsigned mode = 0; mode < 4; mode++) {
        struct dspy_buf out;
        struct sim_answer_opts o = { mode, size, mode, mode * 0.5, mode == 1 ? 20u : 0u,
                                     mode == 2 ? schema : NULL, mode == 3 };
        dspy__buf_init(&out, 1 << 22);
        sim_answer(&prompt, &o, &out);
        sim_tokens(out.ptr ? out.ptr : "", out.len);
        dspy__buf_release(&out);
    }
    json_decref(schema);
    sim_prompt_release(&prompt);

    struct sim_block blocks[SIM_MAX_BLOCKS];
    sim_blocks((struct sim_view){ (const char *)data, size }, blocks, SIM_MAX_BLOCKS);
    struct sim_arith q;
    sim_arith_find((const char *)data, size, &q);
    float vec[16];
    sim_embed((const char *)data, size, vec, 16);
    sim_tokens_prefix((const char *)data, size, size / 2);
    sim_utf8_check((const char *)data, size);
    return 0;
}

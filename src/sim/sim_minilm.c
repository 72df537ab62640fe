/* Real embeddings for the simulator (sim layer): with `--embedder minilm`, POST
 * /v1/embeddings answers with all-MiniLM-L6-v2 vectors from the library's embedder instead
 * of the hashed ones of sim_embed.c, so an OpenAI client gets meaningful embeddings offline. */
#include <string.h>

#include "base/status.h"
#include "sim_int.h"

dspy_status dspy__sim_minilm_open(struct dspy_sim *s, const struct dspy_sim_options *o,
                                  struct dspy_error *err)
{
    s->o.embedder = "hash"; /* the caller's strings are borrowed: keep none */
    s->o.embed_model = NULL;
    if (!o->embedder || strcmp(o->embedder, "minilm")) /* checked: hash or minilm */
        return DSPY_OK;
    struct dspy_embedder_options eo = DSPY_EMBEDDER_OPTIONS_INIT;
    eo.model_dir = o->embed_model;
    dspy_status rc = dspy_embedder_new(&eo, &s->minilm, err);
    if (rc) {
        dspy__err_prefix(err, "--embedder minilm"); /* which flag needed the model */
        return rc;
    }
    s->o.embedder = "minilm";
    return DSPY_OK;
}

dspy_status dspy__sim_minilm_embed(struct dspy_sim *s, const char *text, size_t n, float *out)
{
    return dspy_embedder_embed(s->minilm, &text, &n, 1, out, NULL);
}

size_t dspy__sim_minilm_tokens(struct dspy_sim *s, const char *text, size_t n)
{
    size_t count = 0;
    dspy_embedder_tokenize(s->minilm, text, n, NULL, 0, &count, NULL);
    return count;
}

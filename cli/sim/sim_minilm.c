/* Real embeddings for the simulator (apps layer): with `--embedder minilm`, POST
 * /v1/embeddings answers with all-MiniLM-L6-v2 vectors from the library's embedder instead
 * of the hashed ones of sim_embed.c, so an OpenAI client gets meaningful embeddings offline. */
#include <stdio.h>
#include <string.h>

#include "sim_int.h"

int sim_minilm_open(struct sim *s, char *errbuf, size_t errlen)
{
    const char *which = s->o.embedder, *model_dir = s->o.embed_model;
    s->o.embedder = "hash";
    s->o.embed_model = NULL; /* borrowed from the caller; the embedder keeps its own copy */
    if (!which || !*which || !strcmp(which, "hash"))
        return 0;
    if (strcmp(which, "minilm")) {
        snprintf(errbuf, errlen, "--embedder must be hash or minilm, not '%s'", which);
        return -1;
    }
    struct dspy_embedder_options o = DSPY_EMBEDDER_OPTIONS_INIT;
    struct dspy_error err;
    o.model_dir = model_dir;
    if (dspy_embedder_new(&o, &s->minilm, &err)) {
        snprintf(errbuf, errlen, "--embedder minilm: %s", err.message);
        return -1;
    }
    s->o.embedder = "minilm";
    return 0;
}

void sim_minilm_close(struct sim *s)
{
    dspy_embedder_free(s->minilm);
    s->minilm = NULL;
}

dspy_status sim_minilm_embed(struct sim *s, const char *text, size_t n, float *out)
{
    return dspy_embedder_embed(s->minilm, &text, &n, 1, out, NULL);
}

size_t sim_minilm_tokens(struct sim *s, const char *text, size_t n)
{
    size_t count = 0;
    dspy_embedder_tokenize(s->minilm, text, n, NULL, 0, &count, NULL);
    return count;
}

dspy_status sim_minilm_add_floats(struct dspy_buf *b, const float *v, unsigned dim)
{
    char num[DSPY_PY_FLOAT_MAX];
    dspy_status rc = DSPY_OK;
    for (unsigned d = 0; !rc && d < dim; d++) {
        rc = dspy__buf_addc(b, d ? ',' : '[');
        if (!rc)
            rc = dspy__buf_add(b, num, dspy__py_float32_repr(v[d], num));
    }
    return rc ? rc : dspy__buf_addc(b, ']');
}

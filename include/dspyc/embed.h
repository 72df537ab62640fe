/* Sentence embeddings in C (vec layer): all-MiniLM-L6-v2 (the sentence-transformers model)
 * with its own WordPiece tokenizer, a 6-layer BERT encoder, mean pooling and L2
 * normalization, batched and multi-threaded. Weights and vocabulary are read from local
 * files (scripts/fetch-model.sh puts them in models/all-MiniLM-L6-v2/); nothing is
 * downloaded at run time. See docs/embed.md. */
#ifndef DSPYC_EMBED_H
#define DSPYC_EMBED_H

#include <dspyc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Dimensions of every embedding. */
#define DSPY_EMBED_DIM 384
/** Word pieces per text, [CLS] and [SEP] included, that the model sees (as
 * sentence-transformers' max_seq_length); longer texts are cut. */
#define DSPY_EMBED_MAX_TOKENS 256
/** Environment variable naming the model folder when the options do not. */
#define DSPY_EMBED_MODEL_ENV "DSPYC_EMBED_MODEL"

/** Configuration. Strings are copied by dspy_embedder_new(). */
struct dspy_embedder_options {
    const char *model_dir; /* folder with model.safetensors and vocab.txt. NULL: the
                              DSPYC_EMBED_MODEL variable, else models/all-MiniLM-L6-v2 in the
                              folder above the running program's (a build tree's repo) */
    unsigned threads;      /* worker threads one embed call may use; 0 = one per CPU;
                              default 1 */
    unsigned max_tokens;   /* 2..512; default DSPY_EMBED_MAX_TOKENS */
};
#define DSPY_EMBEDDER_OPTIONS_INIT                        \
    {                                                     \
        .threads = 1, .max_tokens = DSPY_EMBED_MAX_TOKENS \
    }

/** A loaded model: about 91 MB of weights, read-only after dspy_embedder_new().
 * Threading: dspy_embedder_embed() and dspy_embedder_tokenize() may be called from many
 * threads at once on one handle (each call uses its own scratch space; a call with more
 * than one text may run up to `threads` workers, the calling thread included). Only
 * dspy_embedder_free() needs no call to be running. The matrix multiplies run on OpenBLAS,
 * which the embedder sets to one thread per call (openblas_set_num_threads(1)), so its
 * own workers are the only parallelism. */
typedef struct dspy_embedder dspy_embedder;

/** Load the model. Errors name the file and what is wrong: DSPY_ENOTFOUND (folder or file
 * missing: run scripts/fetch-model.sh), DSPY_EPARSE (a corrupt or truncated file, a tensor
 * of the wrong shape), DSPY_EIO, DSPY_EINVAL (bad option), DSPY_ENOMEM. On error *out is
 * NULL. */
DSPY_EXTERN dspy_status dspy_embedder_new(const struct dspy_embedder_options *opts,
                                          dspy_embedder **out, struct dspy_error *err);
/** Release everything; NULL is a no-op. */
DSPY_EXTERN void dspy_embedder_free(dspy_embedder *e);
/** The folder the model was read from (borrowed until dspy_embedder_free()). */
DSPY_EXTERN const char *dspy_embedder_model_dir(const dspy_embedder *e);

/** Embed `n` UTF-8 texts: texts[i] has lens[i] bytes (lens NULL: NUL-terminated). Writes
 * n * DSPY_EMBED_DIM floats to out (caller-allocated), row i the unit-length embedding of
 * text i, as sentence-transformers' encode(normalize_embeddings=True) gives (cosine
 * >= 0.9999). An empty text embeds [CLS] [SEP]. Errors: DSPY_EUTF8 when a text is not
 * valid UTF-8 (err names the text's index in `field` as "text[i]" and the byte offset),
 * DSPY_ENOMEM; then `out` is unspecified. */
DSPY_EXTERN dspy_status dspy_embedder_embed(dspy_embedder *e, const char *const *texts,
                                            const size_t *lens, size_t n, float *out,
                                            struct dspy_error *err);

/** The token ids the model sees for `text` ([CLS] ... [SEP], cut at the handle's
 * max_tokens): up to `max` of them written to ids (ids may be NULL when max is 0), the
 * full count in *n. Errors: DSPY_EUTF8 with the byte offset. */
DSPY_EXTERN dspy_status dspy_embedder_tokenize(const dspy_embedder *e, const char *text, size_t len,
                                               int32_t *ids, size_t max, size_t *n,
                                               struct dspy_error *err);

/** The number of word pieces in the whole of `text`, never cut, [CLS] and [SEP] not
 * counted: what the context budget counts with the embedder's tokenizer. Errors:
 * DSPY_EUTF8 with the byte offset, DSPY_ENOMEM. */
DSPY_EXTERN dspy_status dspy_embedder_count_tokens(const dspy_embedder *e, const char *text,
                                                   size_t len, size_t *n, struct dspy_error *err);

/** Longest text dspy_embedding_json() writes for DSPY_EMBED_DIM floats, NUL included
 * (each float at most 15 bytes plus its comma, two brackets). */
#define DSPY_EMBEDDING_JSON_MAX (DSPY_EMBED_DIM * 16 + 3)

/** `v` (dim floats) as a JSON array of shortest float32 texts in Python's float layout
 * ("[0.0123,-0.5,1e-05]"), the digits numpy prints for float32, so that a reader that
 * parses them as float32 gets `v` back exactly. Writes at most `cap` bytes into `out`
 * (NUL-terminated); returns the length, or 0 when `cap` is too small (16 * dim + 3 always
 * suffices). Non-finite values are written as null. Any thread. */
DSPY_EXTERN size_t dspy_embedding_json(const float *v, size_t dim, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif

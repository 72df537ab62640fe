/* Retrieval: corpora of passages, the BM25 index (built once, memory-mapped at open) and
 * retrievers behind one handle with DSPy's Retrieve(k) semantics: a query in, the k best
 * passages out. See docs/retrieve.md. */
#ifndef DSPYC_RETRIEVE_H
#define DSPYC_RETRIEVE_H

#include <jansson.h>

#include <dspyc/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** BM25Okapi's parameters, as rank_bm25 defaults them. */
#define DSPY_BM25_K1 1.5
#define DSPY_BM25_B 0.75
#define DSPY_BM25_EPSILON 0.25

/** The most passages one search returns. */
#define DSPY_RETRIEVE_MAX_K 1000

/** One passage found. */
struct dspy_passage {
    char *id;     /* the corpus's "id" (a ColBERTv2 server's pid as text); caller owns */
    char *title;  /* "title", or NULL; caller owns */
    char *text;   /* DSPy's long_text: "title | text" when the passage has a title, else
                   * the text (a ColBERTv2 server's "text"); caller owns */
    double score; /* the retriever's score (BM25: rank_bm25's get_scores value) */
    uint64_t pid; /* position in the corpus (0-based), or the server's pid */
};

/** Release `n` passages and the array (dspy_free'd); NULL is a no-op. */
DSPY_EXTERN void dspy_passages_free(struct dspy_passage *p, size_t n);

/** The tokenizer of the BM25 index, exposed so that callers (and tests) can reproduce it:
 * ASCII letters are lower-cased, and a token is a maximal run of ASCII letters and digits
 * and bytes >= 0x80 (so non-ASCII words stay whole, unchanged). Calls `fn` per token with
 * a view into `text` (not lower-cased; compare case-insensitively) and returns the count. */
typedef void (*dspy_token_fn)(void *userdata, const char *tok, size_t len);
DSPY_EXTERN size_t dspy_bm25_tokenize(const char *text, size_t len, dspy_token_fn fn,
                                      void *userdata);

struct dspy_index_build_stats {
    uint64_t docs, terms, postings, tokens;
    uint64_t bytes; /* size of the index file */
};

/** Build the BM25 index of a corpus file (JSON lines: "id" string or integer, "text"
 * string, optional "title" string; other keys are ignored) into directory `out_dir`
 * (created when missing) as `out_dir/bm25.idx`, written to a temporary name and renamed.
 * A bad line fails the build with an error naming the file, line and field (err->file,
 * line, field); so do an empty corpus and a repeated id. `stats` may be NULL. */
DSPY_EXTERN dspy_status dspy_index_build(const char *corpus_path, const char *out_dir,
                                         struct dspy_index_build_stats *stats,
                                         struct dspy_error *err);

/** Threading: dspy_retriever_search() and dspy_retriever_retrieve() may run on many threads
 * at once; free only when no search is in flight. */
typedef struct dspy_retriever dspy_retriever;

/** Open a BM25 index directory (or the bm25.idx file itself) built by dspy_index_build: the
 * file is memory-mapped and checked (magic, version, section bounds, checksum) first; a
 * file cut short or damaged is DSPY_ECORRUPT with a message naming the file and what is
 * wrong. */
DSPY_EXTERN dspy_status dspy_retriever_open_bm25(const char *index_path, dspy_retriever **out,
                                                 struct dspy_error *err);
/** Build a BM25 retriever over a corpus file in memory (the same index, never written). */
DSPY_EXTERN dspy_status dspy_retriever_bm25_from_corpus(const char *corpus_path,
                                                        dspy_retriever **out,
                                                        struct dspy_error *err);

struct dspy_colbert_options {
    const char *url;    /* the server, e.g. "http://20.102.90.50:2017/wiki17_abstracts";
                         * copied */
    long timeout_ms;    /* per request; 0 = 10000 (DSPy's 10 s) */
    bool post_requests; /* DSPy's post_requests: POST {"query", "k"} instead of GET */
};
#define DSPY_COLBERT_OPTIONS_INIT \
    {                             \
        .url = NULL               \
    }

/** A client of a ColBERTv2 server speaking DSPy's ColBERTv2(url) protocol: GET
 * url?query=...&k=... (or POST), answer {"topk": [{"text", "pid", "score", ...}]}, an
 * answer with "error" set is an error carrying its "message". Nothing is sent until a
 * search. */
DSPY_EXTERN dspy_status dspy_retriever_colbert(const struct dspy_colbert_options *opts,
                                               dspy_retriever **out, struct dspy_error *err);

struct dspy_dense_options {
    const char *base_url; /* an OpenAI-compatible API, e.g. "http://127.0.0.1:8000/v1";
                           * POST base_url/embeddings. Copied */
    const char *model;    /* the embedding model, e.g. "text-embedding-3-small". Copied */
    const char *api_key;  /* sent as a bearer token when not NULL or empty; copied, never
                           * printed, wiped at free */
    long timeout_ms;      /* per request; 0 = 60000 */
    double mmr_lambda;    /* > 0: diverse selection by maximal marginal relevance among the
                           * top mmr_depth by cosine, lambda weighing relevance against
                           * similarity to the passages already picked (1 = plain top-k);
                           * 0 = off */
    size_t mmr_depth;     /* MMR candidates; 0 = 50 */
    /* "minilm": the in-process all-MiniLM-L6-v2 encoder (include/dspyc/embed.h) instead of
     * an endpoint (base_url and model are then not used); NULL = the endpoint */
    const char *encoder;
    const char *model_dir; /* with "minilm": the model folder (NULL: as the embedder finds it) */
    /* with "minilm": a dense.vec file (dspy_index_build_dense) holding the passages'
     * vectors, memory-mapped instead of embedding them now; NULL = embed them now */
    const char *vectors;
};
#define DSPY_DENSE_OPTIONS_INIT \
    {                           \
        .base_url = NULL        \
    }

/** Dense retrieval over the passages of a BM25 retriever (an index or a corpus): every
 * passage's long text embedded now through the endpoint (128 a request), or by the
 * in-process MiniLM encoder (encoder "minilm"; with `vectors`, read from the index's
 * dense.vec, memory-mapped and checked against `passages`), kept as unit vectors; each
 * search embeds the query and returns the exact top k by cosine (scores are the cosines).
 * Holds its own reference to `passages`. Errors name the endpoint, the model folder or the
 * vector file (DSPY_ECORRUPT: damaged or cut short; DSPY_EINVAL: built for another index
 * or model). */
DSPY_EXTERN dspy_status dspy_retriever_dense(dspy_retriever *passages,
                                             const struct dspy_dense_options *opts,
                                             dspy_retriever **out, struct dspy_error *err);
/** Embed the passages of the BM25 index in folder `index_dir` (its bm25.idx) with the
 * in-process MiniLM encoder (`model_dir`: NULL = as the embedder finds it; all CPUs) and
 * write their unit vectors, float32, to `index_dir`/dense.vec (a header naming the model,
 * the dimensions and the index it belongs to, checksummed; written to a temporary name and
 * renamed). `*rows` (may be NULL) gets the passages embedded. Errors name the file or the
 * model folder: DSPY_ENOTFOUND (no index, no model files), DSPY_ECORRUPT, DSPY_EIO. */
DSPY_EXTERN dspy_status dspy_index_build_dense(const char *index_dir, const char *model_dir,
                                               uint64_t *rows, struct dspy_error *err);

/** Hybrid retrieval: reciprocal-rank fusion of two retrievers (score = sum of 1 / (60 +
 * rank), a passage being the same in both when its text is; ties keep `a`'s order), from
 * the top `depth` of each (0 = 50; at least k). Holds its own references. */
DSPY_EXTERN dspy_status dspy_retriever_hybrid(dspy_retriever *a, dspy_retriever *b, size_t depth,
                                              dspy_retriever **out, struct dspy_error *err);

/** Embedding re-rank of another retriever's passages. */
struct dspy_rerank_options {
    const char *model_dir; /* the MiniLM model folder (dspy_embedder_options.model_dir: NULL =
                              DSPYC_EMBED_MODEL, else models/all-MiniLM-L6-v2 beside the
                              program's build tree); read now */
    size_t depth;          /* candidates taken from the retriever; 0 = 20; at least k */
    double mmr_lambda;     /* > 0: the k picked by maximal marginal relevance among the
                              candidates (as dspy_dense_options.mmr_lambda); 0 = off */
    const char *vectors;   /* a dense.vec (dspyc index build --dense minilm) of the index the
                              retriever's passages come from: their stored vectors are used
                              and only the query is embedded per search; mapped now, checked
                              against that index (an error when it does not match); NULL =
                              every candidate embedded per search */
};
#define DSPY_RERANK_OPTIONS_INIT \
    {                            \
        .model_dir = NULL        \
    }

/** A retriever that takes `base`'s top `depth` passages for a query, embeds the query and
 * each passage's long text with the in-process all-MiniLM-L6-v2 encoder (include/dspyc/
 * embed.h), and returns the k best by cosine to the query (scores are the cosines; equal
 * cosines keep `base`'s order), or the MMR pick. Holds its own reference to `base` and its
 * own loaded model. Errors: the model's (DSPY_ENOTFOUND naming the folder or file when the
 * model files are missing: scripts/fetch-model.sh fetches them), DSPY_EINVAL. */
DSPY_EXTERN dspy_status dspy_retriever_rerank(dspy_retriever *base,
                                              const struct dspy_rerank_options *opts,
                                              dspy_retriever **out, struct dspy_error *err);

/** Release the caller's reference; a program holding the retriever (a retrieve step)
 * keeps its own, so the caller may free it right after dspy_program_add_retrieve(). */
DSPY_EXTERN void dspy_retriever_free(dspy_retriever *r);
/** "bm25", "colbertv2", "dense", "hybrid" or "rerank". */
DSPY_EXTERN const char *dspy_retriever_kind(const dspy_retriever *r);
/** Passages in the corpus (0 when the retriever cannot tell: a remote server). */
DSPY_EXTERN uint64_t dspy_retriever_size(const dspy_retriever *r);

/** The best `k` passages (1..DSPY_RETRIEVE_MAX_K) for `query`, best first: *out (caller
 * owns, dspy_passages_free) and *n (fewer than k when fewer passages match: BM25 returns
 * only passages that share a token with the query; ties go to the earlier passage). */
DSPY_EXTERN dspy_status dspy_retriever_search(dspy_retriever *r, const char *query, size_t k,
                                              struct dspy_passage **out, size_t *n,
                                              struct dspy_error *err);
/** DSPy's Retrieve(k)(query): a JSON array of the passages' long texts, best first (caller
 * owns). */
DSPY_EXTERN dspy_status dspy_retriever_retrieve(dspy_retriever *r, const char *query, size_t k,
                                                json_t **passages, struct dspy_error *err);

#ifdef __cplusplus
}
#endif
#endif

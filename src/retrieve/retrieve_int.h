/* Internals of the retrieve layer: the retriever handle's small vtable (bm25, colbertv2;
 * dense and hybrid plug in the same way), and the on-disk BM25 index layout shared by
 * the builder and the reader. */
#ifndef DSPY_RETRIEVE_RETRIEVE_INT_H
#define DSPY_RETRIEVE_RETRIEVE_INT_H

#include <dspyc/retrieve.h>

struct dspy__retriever_ops {
    const char *kind;
    dspy_status (*search)(void *impl, const char *query, size_t k, struct dspy_passage **out,
                          size_t *n, struct dspy_error *err);
    uint64_t (*size)(const void *impl);
    void (*free)(void *impl);
    bool (*local)(const void *impl); /* searches in this process; NULL: a remote service */
    /* the BM25 retriever whose passage order the passages' pids follow; NULL: none */
    const dspy_retriever *(*rows)(const dspy_retriever *self, const void *impl);
};

struct dspy_retriever {
    const struct dspy__retriever_ops *ops;
    void *impl;
    int refs; /* atomic: dspy_retriever_free drops one; programs sharing it hold one each */
};

/* Another reference to `r` (a program copy sharing its retrieve steps' retrievers). */
dspy_retriever *dspy__retriever_ref(dspy_retriever *r);

/* Whether `r` searches without leaving the process (an index or corpus here, the in-process
 * encoder): the batch executor may then run it ahead for a run of records. */
bool dspy__retriever_local(const dspy_retriever *r);

/* The BM25 retriever (an index or corpus) whose passages `r` returns, their pid its row:
 * what a dense.vec must match for its vectors to stand for them. NULL when there is none
 * (a remote server, a fusion of two corpora). */
const dspy_retriever *dspy__retriever_rows(const dspy_retriever *r);

/* Wrap an implementation; on failure `impl` is released with ops->free. */
dspy_status dspy__retriever_wrap(const struct dspy__retriever_ops *ops, void *impl,
                                 dspy_retriever **out, struct dspy_error *err);

/* ---- the BM25 index file (bm25.idx), little-endian, every array 8-byte aligned -------- */

#define DSPY__BM25_MAGIC "DSPYBM25"
#define DSPY__BM25_VERSION 1u
#define DSPY__BM25_NO_TITLE 0xffffffffu

struct dspy__bm25_header { /* 128 bytes at offset 0 */
    char magic[8];
    uint32_t version;
    uint32_t header_size;
    uint64_t file_size;
    uint64_t docs, terms, postings, tokens; /* tokens: the sum of the document lengths */
    uint64_t terms_off;                     /* terms x struct dspy__bm25_term, by text */
    uint64_t strs_off, strs_len;            /* the terms' lower-cased text */
    uint64_t post_off;                      /* postings x struct dspy__bm25_posting */
    uint64_t docs_off;                      /* docs x struct dspy__bm25_doc */
    uint64_t blob_off, blob_len;            /* ids, titles and texts */
    uint64_t checksum;                      /* XXH3-64 of bytes [header_size, file_size) */
    uint64_t reserved;
};

struct dspy__bm25_term {
    uint64_t str_off; /* in the strings section */
    uint32_t str_len;
    uint32_t df;         /* documents holding the term = its postings */
    uint64_t post_start; /* index of its first posting; postings by document, ascending */
    double idf;          /* rank_bm25's, with the epsilon floor applied */
};

struct dspy__bm25_posting {
    uint32_t doc;
    uint32_t tf;
};

struct dspy__bm25_doc {
    uint64_t id_off, title_off, text_off; /* in the blob */
    uint32_t id_len, title_len;           /* title_len DSPY__BM25_NO_TITLE: none */
    uint32_t text_len;
    uint32_t len; /* tokens */
};

/* Build the index image of a corpus in memory (dspy_malloc'd, *size bytes). */
dspy_status dspy__bm25_build_image(const char *corpus_path, unsigned char **image, size_t *size,
                                   struct dspy_index_build_stats *stats, struct dspy_error *err);
/* The same from corpus text in memory; `path` names it in errors. */
dspy_status dspy__bm25_build_text(const char *path, const char *text, size_t len,
                                  unsigned char **image, size_t *size,
                                  struct dspy_index_build_stats *stats, struct dspy_error *err);
/* A retriever over an image: `owned` is freed with the retriever (dspy_free), else the image
 * is an mmap of `map_len` bytes unmapped at free. `origin` names it in errors. */
dspy_status dspy__bm25_open_image(unsigned char *image, size_t size, bool owned, const char *origin,
                                  dspy_retriever **out, struct dspy_error *err);
/* Passage `doc` of a bm25 retriever, with `score` (caller owns the strings). */
dspy_status dspy__bm25_passage(dspy_retriever *r, uint32_t doc, double score,
                               struct dspy_passage *out);
/* The checksum in a bm25 retriever's header (0 for another kind): what a dense vector
 * file records of the index it was built from. */
uint64_t dspy__bm25_checksum(const dspy_retriever *r);

/* ---- dense vectors beside an index (dense.vec), little-endian ------------------------- */

#define DSPY__DVEC_MAGIC "DSPYDVEC"
#define DSPY__DVEC_VERSION 1u
#define DSPY__DVEC_MODEL "all-MiniLM-L6-v2"
#define DSPY__DVEC_F32 0u

struct dspy__dvec_header { /* 128 bytes at offset 0; rows x dim floats follow */
    char magic[8];
    uint32_t version;
    uint32_t header_size;
    uint64_t file_size;
    uint64_t rows;          /* = the index's passages, in its order */
    uint32_t dim;           /* 384 */
    uint32_t dtype;         /* DSPY__DVEC_F32 */
    uint64_t bm25_checksum; /* the header checksum of the bm25.idx the rows embed */
    uint64_t checksum;      /* XXH3-64 of the rows */
    char model[32];         /* DSPY__DVEC_MODEL, NUL-padded */
    char reserved[40];
};

/* Checks a dense.vec image against the bm25 retriever it belongs to; DSPY_ECORRUPT (or
 * DSPY_EINVAL for a file of another index or model) naming `origin` and what is wrong. */
dspy_status dspy__dvec_validate(const unsigned char *image, size_t size, const dspy_retriever *bm25,
                                const char *origin, struct dspy_error *err);

/* Map `path` (a dense.vec) read-only and check it against `bm25`: *map and *len to munmap,
 * *rows the vectors (rows x dim float32, unit length). */
dspy_status dspy__dvec_map(const char *path, const dspy_retriever *bm25, void **map, size_t *len,
                           const float **rows, struct dspy_error *err);

/* Checks an image fully (header, bounds, checksum, every entry); DSPY_ECORRUPT naming what. */
dspy_status dspy__bm25_validate(const unsigned char *image, size_t size, const char *origin,
                                struct dspy_error *err);

/* Answers of remote services, for their clients and fuzz targets: a ColBERTv2 search
 * answer (at most k passages), and an embeddings answer of `n` rows into *out (allocated
 * when NULL; freed again on error; *dim fixed by the first row when 0). */
dspy_status dspy__colbert_read_topk(const char *where, const char *body, size_t len, size_t k,
                                    struct dspy_passage **out, size_t *nout,
                                    struct dspy_error *err);
dspy_status dspy__dense_read_embeddings(const char *where, const char *text, size_t len, size_t n,
                                        float **out, size_t *dim, struct dspy_error *err);

#endif

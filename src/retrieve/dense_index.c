/* Dense vectors beside a BM25 index (retrieve layer): `dspyc index build --dense minilm`
 * embeds every passage once with the in-process MiniLM encoder and writes dense.vec (a
 * checksummed header naming the model and the index, then float32 rows); dense retrieval
 * maps the file read-only at open and checks it against the index. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include <dspyc/embed.h>

#include "base/status.h"
#include "retrieve/retrieve_int.h"

#define BUILD_BATCH 64 /* passages per embed call */

static dspy_status bad(struct dspy_error *err, dspy_status code, const char *origin,
                       const char *what)
{
    dspy__err(err, code,
              "%s: %s (rebuild it with 'dspyc index build CORPUS --out DIR --dense minilm')",
              origin, what);
    dspy__err_file(err, origin);
    return code;
}

dspy_status dspy__dvec_validate(const unsigned char *image, size_t size, const dspy_retriever *bm25,
                                const char *origin, struct dspy_error *err)
{
    struct dspy__dvec_header h;
    if (size < sizeof(h))
        return bad(err, DSPY_ECORRUPT, origin, "not a dense vector file: shorter than its header");
    memcpy(&h, image, sizeof(h));
    if (memcmp(h.magic, DSPY__DVEC_MAGIC, 8))
        return bad(err, DSPY_ECORRUPT, origin, "not a dense vector file (bad magic)");
    if (h.version != DSPY__DVEC_VERSION || h.header_size != sizeof(h))
        return bad(err, DSPY_ECORRUPT, origin, "a dense vector file of another format version");
    if (h.file_size != size)
        return bad(err, DSPY_ECORRUPT, origin,
                   "the file size does not match its header (cut short?)");
    if (h.dim != DSPY_EMBED_DIM || h.dtype != DSPY__DVEC_F32 ||
        strncmp(h.model, DSPY__DVEC_MODEL, sizeof(h.model)))
        return bad(err, DSPY_EINVAL, origin,
                   "vectors of another model or layout than " DSPY__DVEC_MODEL " float32");
    if (h.rows > (size - sizeof(h)) / (h.dim * sizeof(float)) ||
        sizeof(h) + h.rows * h.dim * sizeof(float) != size)
        return bad(err, DSPY_ECORRUPT, origin, "the rows do not fill the file");
    if (h.rows != dspy_retriever_size(bm25) || h.bm25_checksum != dspy__bm25_checksum(bm25))
        return bad(err, DSPY_EINVAL, origin, "built for another bm25.idx than the one beside it");
    if (XXH3_64bits(image + sizeof(h), size - sizeof(h)) != h.checksum)
        return bad(err, DSPY_ECORRUPT, origin, "checksum mismatch (the file is damaged)");
    return DSPY_OK;
}

dspy_status dspy__dvec_map(const char *path, const dspy_retriever *bm25, void **map, size_t *len,
                           const float **rows, struct dspy_error *err)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        dspy_status code = errno == ENOENT ? DSPY_ENOTFOUND : DSPY_EIO;
        dspy__err(err, code, "%s: cannot open the dense vectors: %s%s", path, strerror(errno),
                  errno == ENOENT ? " (build them with 'dspyc index build CORPUS --out DIR "
                                    "--dense minilm')"
                                  : "");
        dspy__err_file(err, path);
        return code;
    }
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size <= 0) {
        close(fd);
        return bad(err, DSPY_ECORRUPT, path, "not a dense vector file: empty or not a file");
    }
    size_t size = (size_t)st.st_size;
    void *m = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        dspy__err(err, DSPY_EIO, "%s: cannot map: %s", path, strerror(errno));
        dspy__err_file(err, path);
        return DSPY_EIO;
    }
    dspy_status rc = dspy__dvec_validate(m, size, bm25, path, err);
    if (rc) {
        munmap(m, size);
        return rc;
    }
    *map = m;
    *len = size;
    *rows = (const float *)((const unsigned char *)m + sizeof(struct dspy__dvec_header));
    return DSPY_OK;
}

/* Embed every passage of `r` into `f` after the header, hashing the rows as they go. */
static dspy_status write_rows(dspy_retriever *r, dspy_embedder *e, FILE *f, XXH3_state_t *xs,
                              const char *path, struct dspy_error *err)
{
    size_t docs = (size_t)dspy_retriever_size(r);
    struct dspy_passage p[BUILD_BATCH];
    const char *texts[BUILD_BATCH];
    float *v = dspy_malloc(BUILD_BATCH * DSPY_EMBED_DIM * sizeof(float));
    dspy_status rc = v ? DSPY_OK : dspy__err(err, DSPY_ENOMEM, "out of memory");
    memset(p, 0, sizeof(p));
    for (size_t at = 0; !rc && at < docs; at += BUILD_BATCH) {
        size_t n = docs - at < BUILD_BATCH ? docs - at : BUILD_BATCH;
        for (size_t i = 0; !rc && i < n; i++) {
            if (dspy__bm25_passage(r, (uint32_t)(at + i), 0, &p[i]))
                rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
            texts[i] = p[i].text;
        }
        if (!rc && !(rc = dspy_embedder_embed(e, texts, NULL, n, v, err))) {
            size_t bytes = n * DSPY_EMBED_DIM * sizeof(float);
            XXH3_64bits_update(xs, v, bytes);
            if (fwrite(v, 1, bytes, f) != bytes)
                rc = dspy__err(err, DSPY_EIO, "%s: cannot write: %s", path, strerror(errno));
        }
        for (size_t i = 0; i < n; i++) {
            dspy_free(p[i].id);
            dspy_free(p[i].title);
            dspy_free(p[i].text);
            memset(&p[i], 0, sizeof(p[i]));
        }
    }
    dspy_free(v);
    return rc;
}

dspy_status dspy_index_build_dense(const char *index_dir, const char *model_dir, uint64_t *rows,
                                   struct dspy_error *err)
{
    char path[4096], tmp[4200];
    dspy_retriever *r = NULL;
    dspy_embedder *e = NULL;
    XXH3_state_t *xs = NULL;
    FILE *f = NULL;
    dspy_status rc;
    if (!index_dir)
        return dspy__err(err, DSPY_EINVAL, "dspy_index_build_dense: index_dir is required");
    if ((size_t)snprintf(path, sizeof(path), "%s/dense.vec", index_dir) >= sizeof(path))
        return dspy__err(err, DSPY_EINVAL, "%s: path too long", index_dir);
    if ((rc = dspy_retriever_open_bm25(index_dir, &r, err)))
        return rc;
    struct dspy_embedder_options eo = DSPY_EMBEDDER_OPTIONS_INIT;
    eo.model_dir = model_dir;
    eo.threads = 0; /* one per CPU: the build embeds every passage */
    if ((rc = dspy_embedder_new(&eo, &e, err)))
        goto out;
    if (!(xs = XXH3_createState())) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out;
    }
    XXH3_64bits_reset(xs);
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    if (!(f = fopen(tmp, "wb"))) {
        rc = dspy__err(err, DSPY_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        dspy__err_file(err, tmp);
        goto out;
    }
    struct dspy__dvec_header h;
    memset(&h, 0, sizeof(h));
    if (fwrite(&h, 1, sizeof(h), f) != sizeof(h) ||
        (rc = write_rows(r, e, f, xs, tmp, err))) { /* the header goes last, once known */
        rc = rc ? rc : dspy__err(err, DSPY_EIO, "%s: cannot write: %s", tmp, strerror(errno));
        goto remove;
    }
    memcpy(h.magic, DSPY__DVEC_MAGIC, 8);
    h.version = DSPY__DVEC_VERSION;
    h.header_size = sizeof(h);
    h.rows = dspy_retriever_size(r);
    h.dim = DSPY_EMBED_DIM;
    h.dtype = DSPY__DVEC_F32;
    h.file_size = sizeof(h) + h.rows * h.dim * sizeof(float);
    h.bm25_checksum = dspy__bm25_checksum(r);
    h.checksum = XXH3_64bits_digest(xs);
    snprintf(h.model, sizeof(h.model), "%s", DSPY__DVEC_MODEL);
    bool ok = !fseek(f, 0, SEEK_SET) && fwrite(&h, 1, sizeof(h), f) == sizeof(h);
    ok = !fflush(f) && ok;
    ok = !fsync(fileno(f)) && ok;
    ok = !fclose(f) && ok;
    f = NULL;
    if (!ok || rename(tmp, path)) {
        rc = dspy__err(err, DSPY_EIO, "%s: cannot write: %s", path, strerror(errno));
        dspy__err_file(err, path);
        goto remove;
    }
    if (rows)
        *rows = h.rows;
    goto out;
remove:
    if (f)
        fclose(f);
    unlink(tmp);
out:
    XXH3_freeState(xs);
    dspy_embedder_free(e);
    dspy_retriever_free(r);
    return rc;
}

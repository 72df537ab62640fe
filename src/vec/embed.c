/* The all-MiniLM-L6-v2 encoder (vec layer): weights from model.safetensors copied at load
 * into an aligned block, the linear layers packed for the multiply kernel (query, key and
 * value fused into one matrix), then per batch: embeddings + LayerNorm, 6 BERT layers, mean
 * pooling, L2 normalization. The sequences of a batch are packed back to back with no
 * padding, so every linear layer is one multiply over all tokens and attention runs per
 * sequence with nothing to mask. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dspyc/embed.h>

#include "base/fmtfloat.h"
#include "base/path.h"
#include "base/status.h"
#include "vec/embed_int.h"
#include "vec/safetensors.h"
#include "vec/wordpiece.h"

#define HID 384
#define HEADS 12
#define HDIM 32
#define FFN 1536
#define LAYERS 6
#define VOCAB 30522
#define POSITIONS 512
#define LN_EPS 1e-12f
#define MODEL_SUBDIR "models/all-MiniLM-L6-v2"
/* Tokens one worker packs into one pass (at least; a pass always holds a longest text): big
 * enough to reuse each weight panel across many token tiles, small enough that a pass's
 * activations stay in L2 (the FFN's 128 x 1536 floats are 768 KB). Measured: 128 beat 64
 * and 256 at batch 32. */
#define CHUNK_TOKENS 128

struct layer {
    struct dspy__embed_weight qkv; /* [3*HID][HID]: query, key, value rows */
    struct dspy__embed_weight o;   /* attention output [HID][HID] */
    struct dspy__embed_weight w1;  /* [FFN][HID] */
    struct dspy__embed_weight w2;  /* [HID][FFN] */
    const float *bqkv, *bo, *b1, *b2;
    const float *ln1g, *ln1b, *ln2g, *ln2b;
};

/* Scratch of one worker for one pass of up to `cap` tokens. */
struct workspace {
    struct workspace *next; /* free list, under dspy_embedder.lock */
    size_t cap;
    float *x, *qkv, *ctx, *tmp, *h, *scores;
    void *raw;
};

struct dspy_embedder {
    char *dir;
    struct dspy__wordpiece *wp;
    const float *word, *pos, *type0, *lng, *lnb;
    struct layer layer[LAYERS];
    void *blob;   /* all weights, 64-byte aligned inside */
    void *packed; /* the linear layers' weights in panels (AVX-512 CPUs), or NULL */
    unsigned threads, max_tokens;
    pthread_mutex_t lock; /* guards free_ws */
    struct workspace *free_ws;
};

/* ---- Small aligned allocations ---- */

static void *alloc_aligned(size_t bytes, void **raw)
{
    *raw = dspy_malloc(bytes + 64);
    if (!*raw)
        return NULL;
    uintptr_t p = ((uintptr_t)*raw + 63) & ~(uintptr_t)63;
    return (void *)p;
}

/* ---- The math ---- */

static void layernorm(float *x, const float *g, const float *b)
{
    float mean = 0, var = 0;
    for (int i = 0; i < HID; i++)
        mean += x[i];
    mean /= HID;
    for (int i = 0; i < HID; i++) {
        float d = x[i] - mean;
        var += d * d;
    }
    var /= HID;
    float inv = 1.0f / sqrtf(var + LN_EPS);
    for (int i = 0; i < HID; i++)
        x[i] = (x[i] - mean) * inv * g[i] + b[i];
}

/* C[t] = bias for every row, ready for a multiply with beta = 1. */
static void fill_bias(float *c, size_t rows, const float *bias, size_t n)
{
    for (size_t r = 0; r < rows; r++)
        memcpy(c + r * n, bias, n * sizeof(float));
}

static void softmax_row(float *s, size_t n)
{
    float mx = s[0];
    for (size_t j = 1; j < n; j++)
        mx = s[j] > mx ? s[j] : mx;
    float sum = 0;
    for (size_t j = 0; j < n; j++) {
        s[j] = expf(s[j] - mx);
        sum += s[j];
    }
    float inv = 1.0f / sum;
    for (size_t j = 0; j < n; j++)
        s[j] *= inv;
}

static void attention(const struct workspace *w, size_t start, size_t n)
{
    const float scale = 0.17677669529663687f; /* 1/sqrt(32) */
    const float *qkv = w->qkv + start * 3 * HID;
    float *ctx = w->ctx + start * HID;
    for (int h = 0; h < HEADS; h++) {
        const float *q = qkv + h * HDIM, *k = qkv + HID + h * HDIM, *v = qkv + 2 * HID + h * HDIM;
        dspy__embed_matmul(n, n, HDIM, scale, q, 3 * HID, k, 3 * HID, true, 0.0f, w->scores, n);
        for (size_t i = 0; i < n; i++)
            softmax_row(w->scores + i * n, n);
        dspy__embed_matmul(n, HDIM, n, 1.0f, w->scores, n, v, 3 * HID, false, 0.0f, ctx + h * HDIM,
                           HID);
    }
}

/* erf as a rational function of x^2 on [-4, 4] (Eigen's fast erf; |error| < 1e-7, below
 * float rounding at GELU's scale), branch-free so the loop vectorizes: libm's erff was a
 * tenth of the encoder's time. */
static inline float erf_fast(float x)
{
    x = x > 4.0f ? 4.0f : x < -4.0f ? -4.0f : x;
    float x2 = x * x;
    float p = x2 * -2.72614225801306e-10f + 2.77068142495902e-08f;
    p = x2 * p + -2.10102402082508e-06f;
    p = x2 * p + -5.69250639462346e-05f;
    p = x2 * p + -7.34990630326855e-04f;
    p = x2 * p + -2.95459980854025e-03f;
    p = x2 * p + -1.60960333262415e-02f;
    float q = x2 * -1.45660718464996e-05f + -2.13374055278905e-04f;
    q = x2 * q + -1.68282697438203e-03f;
    q = x2 * q + -7.37332916720468e-03f;
    q = x2 * q + -1.42647390514189e-02f;
    return x * p / q;
}

/* The exact (erf) GELU of BERT. */
static void gelu(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = 0.5f * x[i] * (1.0f + erf_fast(x[i] * 0.70710678118654752f));
}

/* One pass over `count` packed sequences (ids[starts[s]..] of lens[s] each, total tokens
 * `total`), pooled and normalized into out[s * HID]. */
static void encode(const dspy_embedder *e, struct workspace *w, const int32_t *ids,
                   const size_t *lens, size_t count, size_t total, float *out)
{
    float *x = w->x;
    size_t t = 0;
    for (size_t s = 0; s < count; s++)
        for (size_t p = 0; p < lens[s]; p++, t++) {
            const float *we = e->word + (size_t)ids[t] * HID, *pe = e->pos + p * HID;
            float *row = x + t * HID;
            for (int i = 0; i < HID; i++)
                row[i] = we[i] + pe[i] + e->type0[i];
            layernorm(row, e->lng, e->lnb);
        }
    for (int l = 0; l < LAYERS; l++) {
        const struct layer *L = &e->layer[l];
        fill_bias(w->qkv, total, L->bqkv, 3 * HID);
        dspy__embed_linear(total, x, HID, &L->qkv, 1.0f, w->qkv, 3 * HID);
        for (size_t s = 0, at = 0; s < count; at += lens[s], s++)
            attention(w, at, lens[s]);
        fill_bias(w->tmp, total, L->bo, HID);
        dspy__embed_linear(total, w->ctx, HID, &L->o, 1.0f, w->tmp, HID);
        for (size_t r = 0; r < total; r++) {
            float *xr = x + r * HID, *tr = w->tmp + r * HID;
            for (int i = 0; i < HID; i++)
                xr[i] += tr[i];
            layernorm(xr, L->ln1g, L->ln1b);
        }
        fill_bias(w->h, total, L->b1, FFN);
        dspy__embed_linear(total, x, HID, &L->w1, 1.0f, w->h, FFN);
        gelu(w->h, total * FFN);
        fill_bias(w->tmp, total, L->b2, HID);
        dspy__embed_linear(total, w->h, FFN, &L->w2, 1.0f, w->tmp, HID);
        for (size_t r = 0; r < total; r++) {
            float *xr = x + r * HID, *tr = w->tmp + r * HID;
            for (int i = 0; i < HID; i++)
                xr[i] += tr[i];
            layernorm(xr, L->ln2g, L->ln2b);
        }
    }
    /* Mean over every token ([CLS] and [SEP] included), then unit length. */
    for (size_t s = 0, at = 0; s < count; at += lens[s], s++) {
        float *o = out + s * HID;
        memset(o, 0, HID * sizeof(float));
        for (size_t r = at; r < at + lens[s]; r++)
            for (int i = 0; i < HID; i++)
                o[i] += x[r * HID + i];
        float inv_n = 1.0f / (float)lens[s], norm = 0;
        for (int i = 0; i < HID; i++) {
            o[i] *= inv_n;
            norm += o[i] * o[i];
        }
        norm = sqrtf(norm);
        float inv = 1.0f / (norm > 1e-12f ? norm : 1e-12f);
        for (int i = 0; i < HID; i++)
            o[i] *= inv;
    }
}

/* ---- Workspaces ---- */

static void ws_free(struct workspace *w)
{
    if (w) {
        dspy_free(w->raw);
        dspy_free(w);
    }
}

static struct workspace *ws_take(dspy_embedder *e)
{
    pthread_mutex_lock(&e->lock);
    struct workspace *w = e->free_ws;
    if (w)
        e->free_ws = w->next;
    pthread_mutex_unlock(&e->lock);
    if (w)
        return w;
    size_t cap = CHUNK_TOKENS > e->max_tokens ? CHUNK_TOKENS : e->max_tokens;
    size_t floats[6] = { cap * HID, cap * 3 * HID, cap * HID,
                         cap * HID, cap * FFN,     (size_t)e->max_tokens * e->max_tokens };
    size_t total = 0;
    for (int i = 0; i < 6; i++)
        total += (floats[i] + 15) & ~(size_t)15;
    w = dspy_calloc(1, sizeof(*w));
    float *p = w ? alloc_aligned(total * sizeof(float), &w->raw) : NULL;
    if (!p) {
        dspy_free(w);
        return NULL;
    }
    w->cap = cap;
    float **dst[6] = { &w->x, &w->qkv, &w->ctx, &w->tmp, &w->h, &w->scores };
    for (int i = 0; i < 6; i++) {
        *dst[i] = p;
        p += (floats[i] + 15) & ~(size_t)15;
    }
    return w;
}

static void ws_give(dspy_embedder *e, struct workspace *w)
{
    pthread_mutex_lock(&e->lock);
    w->next = e->free_ws;
    e->free_ws = w;
    pthread_mutex_unlock(&e->lock);
}

/* ---- Loading ---- */

static dspy_status file_in(const char *dir, const char *name, char *out, size_t cap,
                           struct dspy_error *err)
{
    if ((size_t)snprintf(out, cap, "%s/%s", dir, name) >= cap)
        return dspy__err(err, DSPY_EINVAL, "model folder path too long: %s", dir);
    return DSPY_OK;
}

static bool is_dir(const char *p)
{
    struct stat sb;
    return !stat(p, &sb) && S_ISDIR(sb.st_mode);
}

/* The folder named by the options, else the environment, else the one beside the running
 * program's parent folder (build/dspyc -> models/all-MiniLM-L6-v2 in the repository). */
static dspy_status resolve_dir(const char *opt, char *out, size_t cap, struct dspy_error *err)
{
    dspy_status rc = dspy__data_dir(opt, DSPY_EMBED_MODEL_ENV, MODEL_SUBDIR, out, cap, err);
    if (rc)
        return rc;
    if (!is_dir(out)) {
        dspy__err(err, DSPY_ENOTFOUND,
                  "model folder %s not found: run scripts/fetch-model.sh, or name the folder "
                  "(--embed-model DIR or %s)",
                  out, DSPY_EMBED_MODEL_ENV);
        dspy__err_file(err, out);
        return DSPY_ENOTFOUND;
    }
    return DSPY_OK;
}

struct loader {
    const struct dspy__safetensors *st;
    float *at; /* next free float in the blob, 64-byte aligned */
    float *pk; /* next free float in the packed block, or NULL: no packing */
    struct dspy_error *err;
    dspy_status rc;
};

static const float *take(struct loader *ld, const char *name, uint64_t d0, uint64_t d1)
{
    if (ld->rc)
        return NULL;
    uint64_t shape[2] = { d0, d1 };
    float *dst = ld->at;
    ld->rc = dspy__st_read_f32(ld->st, name, d1 ? 2 : 1, shape, dst, ld->err);
    ld->at += ((d0 * (d1 ? d1 : 1)) + 15) & ~(uint64_t)15;
    return dst;
}

/* A linear layer's weight from `parts` tensors of `rows` x `k` each, stacked (query, key and
 * value make one), as rows in the blob or packed into panels. */
static void take_linear(struct loader *ld, const char *const *names, int parts, size_t rows,
                        size_t k, struct dspy__embed_weight *w)
{
    w->n = rows * (size_t)parts;
    w->k = k;
    float *dst = ld->pk ? ld->pk : ld->at;
    for (int i = 0; i < parts && !ld->rc; i++) {
        uint64_t shape[2] = { rows, k };
        const unsigned char *data;
        ld->rc = dspy__st_get_f32(ld->st, names[i], 2, shape, &data, ld->err);
        if (ld->rc)
            break;
        if (ld->pk)
            dspy__embed_pack(dst + (size_t)i * rows * k, data, rows, k);
        else
            memcpy(dst + (size_t)i * rows * k, data, rows * k * sizeof(float));
    }
    if (ld->pk) {
        w->packed = dst;
        ld->pk += w->n * k;
    } else {
        w->w = dst;
        ld->at += w->n * k;
    }
}

static const float *take_l(struct loader *ld, int l, const char *what, uint64_t d0, uint64_t d1)
{
    char name[96];
    snprintf(name, sizeof(name), "encoder.layer.%d.%s", l, what);
    return take(ld, name, d0, d1);
}

/* Query, key and value biases into one [3*HID] vector. */
static const float *take_qkv_bias(struct loader *ld, int l)
{
    const float *b = NULL;
    static const char *const part[3] = { "query", "key", "value" };
    for (int k = 0; k < 3; k++) {
        char what[64];
        snprintf(what, sizeof(what), "attention.self.%s.bias", part[k]);
        const float *p = take_l(ld, l, what, HID, 0); /* consecutive: HID is a multiple of 16 */
        b = k ? b : p;
    }
    return b;
}

static void take_layer(struct loader *ld, int l, struct layer *L)
{
    char names[4][3][96];
    static const char *const part[3] = { "query", "key", "value" };
    for (int k = 0; k < 3; k++)
        snprintf(names[0][k], sizeof(names[0][k]), "encoder.layer.%d.attention.self.%s.weight", l,
                 part[k]);
    snprintf(names[1][0], sizeof(names[1][0]), "encoder.layer.%d.attention.output.dense.weight", l);
    snprintf(names[2][0], sizeof(names[2][0]), "encoder.layer.%d.intermediate.dense.weight", l);
    snprintf(names[3][0], sizeof(names[3][0]), "encoder.layer.%d.output.dense.weight", l);
    const char *qkv[3] = { names[0][0], names[0][1], names[0][2] };
    const char *o[1] = { names[1][0] }, *w1[1] = { names[2][0] }, *w2[1] = { names[3][0] };
    take_linear(ld, qkv, 3, HID, HID, &L->qkv);
    take_linear(ld, o, 1, HID, HID, &L->o);
    take_linear(ld, w1, 1, FFN, HID, &L->w1);
    take_linear(ld, w2, 1, HID, FFN, &L->w2);
    L->bqkv = take_qkv_bias(ld, l);
    L->bo = take_l(ld, l, "attention.output.dense.bias", HID, 0);
    L->ln1g = take_l(ld, l, "attention.output.LayerNorm.weight", HID, 0);
    L->ln1b = take_l(ld, l, "attention.output.LayerNorm.bias", HID, 0);
    L->b1 = take_l(ld, l, "intermediate.dense.bias", FFN, 0);
    L->b2 = take_l(ld, l, "output.dense.bias", HID, 0);
    L->ln2g = take_l(ld, l, "output.LayerNorm.weight", HID, 0);
    L->ln2b = take_l(ld, l, "output.LayerNorm.bias", HID, 0);
}

#define LAYER_WEIGHT_FLOATS ((size_t)(4 * HID * HID + 2 * FFN * HID))

static size_t blob_floats(void)
{
    size_t per_layer = 3 * HID * HID + 3 * HID + 16 + HID * HID + 2 * FFN * HID + FFN + 6 * HID +
                       16 * 8;
    return (size_t)VOCAB * HID + POSITIONS * HID + 2 * HID + 3 * HID + 64 + LAYERS * per_layer;
}

static dspy_status load_weights(dspy_embedder *e, const char *path, struct dspy_error *err)
{
    struct dspy__safetensors *st = NULL;
    dspy_status rc = dspy__st_open(path, &st, err);
    if (rc)
        return rc;
    float *base = alloc_aligned(blob_floats() * sizeof(float), &e->blob);
    if (!base) {
        rc = DSPY_ENOMEM;
        goto out;
    }
    float *pk = NULL;
    if (dspy__embed_packs()) {
        pk = alloc_aligned(LAYERS * LAYER_WEIGHT_FLOATS * sizeof(float), &e->packed);
        if (!pk) {
            rc = DSPY_ENOMEM;
            goto out;
        }
    }
    struct loader ld = { st, base, pk, err, DSPY_OK };
    e->word = take(&ld, "embeddings.word_embeddings.weight", VOCAB, HID);
    e->pos = take(&ld, "embeddings.position_embeddings.weight", POSITIONS, HID);
    e->type0 = take(&ld, "embeddings.token_type_embeddings.weight", 2, HID); /* type 0 only */
    e->lng = take(&ld, "embeddings.LayerNorm.weight", HID, 0);
    e->lnb = take(&ld, "embeddings.LayerNorm.bias", HID, 0);
    for (int l = 0; l < LAYERS && !ld.rc; l++)
        take_layer(&ld, l, &e->layer[l]);
    rc = ld.rc;
    if (!rc && (size_t)(ld.at - base) > blob_floats())
        rc = dspy__err(err, DSPY_EINVAL, "internal: weight block too small");
out:
    dspy__st_close(st);
    return rc;
}

dspy_status dspy_embedder_new(const struct dspy_embedder_options *opts, dspy_embedder **out,
                              struct dspy_error *err)
{
    struct dspy_embedder_options def = DSPY_EMBEDDER_OPTIONS_INIT;
    char dir[PATH_MAX], path[PATH_MAX + 32];
    dspy_status rc;
    *out = NULL;
    if (!opts)
        opts = &def;
    if (opts->max_tokens < 2 || opts->max_tokens > POSITIONS)
        return dspy__err(err, DSPY_EINVAL, "max_tokens must be from 2 to %d, not %u", POSITIONS,
                         opts->max_tokens);
    if ((rc = resolve_dir(opts->model_dir, dir, sizeof(dir), err)))
        return rc;
    dspy_embedder *e = dspy_calloc(1, sizeof(*e));
    if (!e)
        return DSPY_ENOMEM;
    pthread_mutex_init(&e->lock, NULL);
    e->max_tokens = opts->max_tokens;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    e->threads = opts->threads ? opts->threads : (unsigned)(cpus > 0 ? cpus : 1);
    if (!(e->dir = dspy_strdup(dir))) {
        rc = DSPY_ENOMEM;
        goto fail;
    }
    if ((rc = file_in(dir, "vocab.txt", path, sizeof(path), err)) ||
        (rc = dspy__wordpiece_load(path, &e->wp, err)))
        goto fail;
    if (dspy__wordpiece_size(e->wp) != VOCAB) {
        rc = dspy__err(err, DSPY_EPARSE, "%s: %zu tokens, all-MiniLM-L6-v2 has %d", path,
                       dspy__wordpiece_size(e->wp), VOCAB);
        dspy__err_file(err, path);
        goto fail;
    }
    dspy__embed_matmul_init();
    if ((rc = file_in(dir, "model.safetensors", path, sizeof(path), err)) ||
        (rc = load_weights(e, path, err)))
        goto fail;
    *out = e;
    return DSPY_OK;
fail:
    dspy_embedder_free(e);
    return rc;
}

void dspy_embedder_free(dspy_embedder *e)
{
    if (!e)
        return;
    while (e->free_ws) {
        struct workspace *w = e->free_ws;
        e->free_ws = w->next;
        ws_free(w);
    }
    pthread_mutex_destroy(&e->lock);
    dspy__wordpiece_free(e->wp);
    dspy_free(e->blob);
    dspy_free(e->packed);
    dspy_free(e->dir);
    dspy_free(e);
}

const char *dspy_embedder_model_dir(const dspy_embedder *e)
{
    return e->dir;
}

dspy_status dspy_embedder_tokenize(const dspy_embedder *e, const char *text, size_t len,
                                   int32_t *ids, size_t max, size_t *n, struct dspy_error *err)
{
    int32_t tmp[POSITIONS];
    size_t got = 0;
    dspy_status rc = dspy__wordpiece_encode(e->wp, text, len, tmp, e->max_tokens, &got, err);
    *n = rc ? 0 : got;
    if (!rc && ids)
        memcpy(ids, tmp, (got < max ? got : max) * sizeof(int32_t));
    return rc;
}

dspy_status dspy_embedder_count_tokens(const dspy_embedder *e, const char *text, size_t len,
                                       size_t *n, struct dspy_error *err)
{
    /* Counted, not stored: no id array in proportion to the text; [CLS] and [SEP] off. */
    size_t got = 0;
    *n = 0;
    dspy_status rc = dspy__wordpiece_encode(e->wp, text, len, NULL, SIZE_MAX, &got, err);
    if (!rc)
        *n = got - 2;
    return rc;
}

/* ---- Embedding: tokenize all, split the texts among workers by token count ---- */

struct job {
    dspy_embedder *e;
    const int32_t *ids; /* packed ids of texts [first, last) start at ids */
    const size_t *lens; /* per text */
    size_t first, last;
    float *out; /* rows of texts [first, last) */
    dspy_status rc;
};

static void *run_job(void *arg)
{
    struct job *j = arg;
    struct workspace *w = ws_take(j->e);
    if (!w) {
        j->rc = DSPY_ENOMEM;
        return NULL;
    }
    const int32_t *ids = j->ids;
    size_t s = j->first;
    while (s < j->last) {
        size_t total = 0, k = s;
        while (k < j->last && total + j->lens[k] <= w->cap)
            total += j->lens[k++];
        encode(j->e, w, ids, j->lens + s, k - s, total, j->out + (s - j->first) * HID);
        ids += total;
        s = k;
    }
    ws_give(j->e, w);
    return NULL;
}

#define MAX_WORKERS 64
/* Texts tokenized at once: bounds the ids buffer of one call (1024 x 256 ids = 1 MiB). */
#define WINDOW 1024

static dspy_status embed_window(dspy_embedder *e, const char *const *texts, const size_t *lens,
                                size_t n, size_t first_index, float *out, struct dspy_error *err)
{
    dspy_status rc = DSPY_OK;
    int32_t *ids = dspy_malloc(n * e->max_tokens * sizeof(int32_t));
    size_t *tl = dspy_malloc(n * sizeof(size_t));
    if (!ids || !tl) {
        rc = DSPY_ENOMEM;
        goto out;
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = lens ? lens[i] : strlen(texts[i]);
        rc = dspy__wordpiece_encode(e->wp, texts[i], len, ids + total, e->max_tokens, &tl[i], err);
        if (rc) {
            char field[32];
            snprintf(field, sizeof(field), "text[%zu]", first_index + i);
            dspy__err_field(err, field);
            dspy__err_prefix(err, "%s", field);
            goto out;
        }
        total += tl[i];
    }
    size_t workers = e->threads < n ? e->threads : n;
    if (workers > MAX_WORKERS)
        workers = MAX_WORKERS;
    struct job jobs[MAX_WORKERS];
    pthread_t tids[MAX_WORKERS];
    size_t first = 0, at = 0, done = 0;
    for (size_t w = 0; w < workers; w++) { /* contiguous runs of about total/workers tokens */
        size_t goal = total * (w + 1) / workers, last = first, tokens = 0;
        while (last < n && (w == workers - 1 || done + tokens < goal || last == first))
            tokens += tl[last++];
        jobs[w] = (struct job){ e, ids + at, tl, first, last, out + first * HID, DSPY_OK };
        at += tokens;
        done += tokens;
        first = last;
    }
    size_t started = 0;
    for (size_t w = 1; w < workers; w++) {
        if (jobs[w].first == jobs[w].last)
            continue;
        if (pthread_create(&tids[w], NULL, run_job, &jobs[w])) {
            run_job(&jobs[w]);            /* no thread to be had: do it here */
            jobs[w].first = jobs[w].last; /* mark as not joinable */
            continue;
        }
        started |= (size_t)1 << w;
    }
    run_job(&jobs[0]);
    for (size_t w = 1; w < workers; w++)
        if (started & ((size_t)1 << w))
            pthread_join(tids[w], NULL);
    for (size_t w = 0; w < workers && !rc; w++)
        rc = jobs[w].rc;
out:
    dspy_free(ids);
    dspy_free(tl);
    return rc;
}

dspy_status dspy_embedder_embed(dspy_embedder *e, const char *const *texts, const size_t *lens,
                                size_t n, float *out, struct dspy_error *err)
{
    for (size_t at = 0; at < n; at += WINDOW) {
        size_t k = n - at < WINDOW ? n - at : WINDOW;
        dspy_status rc = embed_window(e, texts + at, lens ? lens + at : NULL, k, at, out + at * HID,
                                      err);
        if (rc)
            return rc;
    }
    return DSPY_OK;
}

size_t dspy_embedding_json(const float *v, size_t dim, char *out, size_t cap)
{
    char num[DSPY__FLOAT_MAX];
    size_t o = 0;
    if (cap < 3)
        return 0;
    out[o++] = '[';
    for (size_t d = 0; d < dim; d++) {
        size_t n = isfinite(v[d]) ? dspy__float32_fmt(num, v[d], DSPY__FLOAT_PYTHON)
                                  : (memcpy(num, "null", 5), 4);
        if (o + n + 3 > cap)
            return 0;
        if (d)
            out[o++] = ',';
        memcpy(out + o, num, n);
        o += n;
    }
    out[o++] = ']';
    out[o] = '\0';
    return o;
}

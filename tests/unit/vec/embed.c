/* Unit tests for the MiniLM embedder against sentence-transformers: the token ids and the
 * embeddings of tests/data/minilm_reference.json (made by make_minilm_reference.py), batched
 * and threaded runs giving the same vectors, invalid UTF-8, and the errors a user gets for a
 * missing or corrupt model folder. Needs the model files (scripts/fetch-model.sh).
 * no-tsan: it runs the whole model over every reference text several times, which takes many
 * minutes under TSan; the embedder's threads are checked there by embed_threads.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include <dspyc/embed.h>

#define REF "tests/data/minilm_reference.json"

static json_t *ref_texts;
static dspy_embedder *emb;

static int setup(void **state)
{
    (void)state;
    json_error_t je;
    json_t *ref = json_load_file(REF, JSON_ALLOW_NUL, &je);
    if (!ref) {
        fprintf(stderr, "cannot read %s: %s\n", REF, je.text);
        return -1;
    }
    ref_texts = json_incref(json_object_get(ref, "texts"));
    json_decref(ref);
    struct dspy_embedder_options o = DSPY_EMBEDDER_OPTIONS_INIT;
    struct dspy_error err;
    if (dspy_embedder_new(&o, &emb, &err)) {
        fprintf(stderr, "embedder: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    dspy_embedder_free(emb);
    json_decref(ref_texts);
    return 0;
}

static const char *text_at(size_t i, size_t *len)
{
    json_t *t = json_object_get(json_array_get(ref_texts, i), "text");
    *len = json_string_length(t);
    return json_string_value(t);
}

static void test_token_ids_match_reference(void **state)
{
    (void)state;
    size_t n = json_array_size(ref_texts);
    assert_true(n >= 40);
    for (size_t i = 0; i < n; i++) {
        size_t len, got;
        const char *text = text_at(i, &len);
        int32_t ids[DSPY_EMBED_MAX_TOKENS];
        struct dspy_error err;
        assert_int_equal(dspy_embedder_tokenize(emb, text, len, ids, DSPY_EMBED_MAX_TOKENS, &got,
                                                &err),
                         DSPY_OK);
        json_t *want = json_object_get(json_array_get(ref_texts, i), "ids");
        if (got != json_array_size(want))
            fail_msg("text %zu: %zu ids, reference %zu", i, got, json_array_size(want));
        for (size_t k = 0; k < got; k++)
            if (ids[k] != json_integer_value(json_array_get(want, k)))
                fail_msg("text %zu, id %zu: %d, reference %lld", i, k, ids[k],
                         (long long)json_integer_value(json_array_get(want, k)));
    }
}

static double cosine_to_ref(const float *v, size_t i)
{
    json_t *want = json_object_get(json_array_get(ref_texts, i), "embedding");
    assert_int_equal(json_array_size(want), DSPY_EMBED_DIM);
    double dot = 0, na = 0, nb = 0;
    for (size_t d = 0; d < DSPY_EMBED_DIM; d++) {
        double r = json_real_value(json_array_get(want, d));
        dot += v[d] * r;
        na += (double)v[d] * v[d];
        nb += r * r;
    }
    return dot / sqrt(na * nb);
}

static void embed_all(dspy_embedder *e, float *out, size_t n)
{
    const char **texts = malloc(n * sizeof(*texts));
    size_t *lens = malloc(n * sizeof(*lens));
    for (size_t i = 0; i < n; i++)
        texts[i] = text_at(i, &lens[i]);
    struct dspy_error err;
    assert_int_equal(dspy_embedder_embed(e, texts, lens, n, out, &err), DSPY_OK);
    free(texts);
    free(lens);
}

static void test_embeddings_match_reference(void **state)
{
    (void)state;
    size_t n = json_array_size(ref_texts);
    float *out = malloc(n * DSPY_EMBED_DIM * sizeof(float));
    embed_all(emb, out, n);
    double worst = 1;
    for (size_t i = 0; i < n; i++) {
        double c = cosine_to_ref(out + i * DSPY_EMBED_DIM, i);
        double norm = 0;
        for (size_t d = 0; d < DSPY_EMBED_DIM; d++)
            norm += (double)out[i * DSPY_EMBED_DIM + d] * out[i * DSPY_EMBED_DIM + d];
        assert_true(fabs(norm - 1) < 1e-5);
        if (c < 0.9999)
            fail_msg("text %zu: cosine %.7f to sentence-transformers' vector", i, c);
        worst = c < worst ? c : worst;
    }
    printf("lowest cosine to the reference over %zu texts: 1 - %.2e\n", n, 1 - worst);
    free(out);
}

/* The OpenBLAS path (CPUs without AVX-512, or DSPYC_EMBED_KERNEL=blas) gives the same. */
static void test_blas_path_matches_reference(void **state)
{
    (void)state;
    setenv("DSPYC_EMBED_KERNEL", "blas", 1);
    dspy_embedder *e;
    struct dspy_embedder_options o = DSPY_EMBEDDER_OPTIONS_INIT;
    assert_int_equal(dspy_embedder_new(&o, &e, NULL), DSPY_OK);
    unsetenv("DSPYC_EMBED_KERNEL");
    size_t n = json_array_size(ref_texts);
    float *out = malloc(n * DSPY_EMBED_DIM * sizeof(float));
    embed_all(e, out, n);
    for (size_t i = 0; i < n; i++)
        if (cosine_to_ref(out + i * DSPY_EMBED_DIM, i) < 0.9999)
            fail_msg("text %zu: cosine %.7f on the OpenBLAS path", i,
                     cosine_to_ref(out + i * DSPY_EMBED_DIM, i));
    free(out);
    dspy_embedder_free(e);
}

/* One text at a time, all at once, and on 3 threads: the same vectors. */
static void test_batch_and_threads_agree(void **state)
{
    (void)state;
    size_t n = json_array_size(ref_texts);
    float *all = malloc(n * DSPY_EMBED_DIM * sizeof(float));
    float *one = malloc(DSPY_EMBED_DIM * sizeof(float));
    float *thr = malloc(n * DSPY_EMBED_DIM * sizeof(float));
    embed_all(emb, all, n);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *t = text_at(i, &len);
        assert_int_equal(dspy_embedder_embed(emb, &t, &len, 1, one, NULL), DSPY_OK);
        for (size_t d = 0; d < DSPY_EMBED_DIM; d++)
            assert_true(fabsf(one[d] - all[i * DSPY_EMBED_DIM + d]) < 1e-5f);
    }
    struct dspy_embedder_options o = DSPY_EMBEDDER_OPTIONS_INIT;
    o.threads = 3;
    dspy_embedder *e3;
    assert_int_equal(dspy_embedder_new(&o, &e3, NULL), DSPY_OK);
    embed_all(e3, thr, n);
    for (size_t k = 0; k < n * DSPY_EMBED_DIM; k++)
        assert_true(fabsf(thr[k] - all[k]) < 1e-5f);
    dspy_embedder_free(e3);
    free(all);
    free(one);
    free(thr);
}

static void test_invalid_utf8_names_text_and_offset(void **state)
{
    (void)state;
    const char *texts[3] = { "fine", "also fine", "bad \xC3\x28 here" };
    float out[3 * DSPY_EMBED_DIM];
    struct dspy_error err;
    assert_int_equal(dspy_embedder_embed(emb, texts, NULL, 3, out, &err), DSPY_EUTF8);
    assert_string_equal(err.field, "text[2]");
    assert_int_equal(err.offset, 4);
    assert_non_null(strstr(err.message, "text[2]"));
    size_t n;
    assert_int_equal(dspy_embedder_tokenize(emb, "\xFF", 1, NULL, 0, &n, &err), DSPY_EUTF8);
    assert_int_equal(err.offset, 0);
    /* Past the first 1024 texts (one internal window) the index is still the caller's. */
    size_t many = 1031;
    const char **t = calloc(many, sizeof(*t));
    float *v = malloc(many * DSPY_EMBED_DIM * sizeof(float));
    for (size_t i = 0; i < many; i++)
        t[i] = i == 1030 ? "x\x80" : "";
    assert_int_equal(dspy_embedder_embed(emb, t, NULL, many, v, &err), DSPY_EUTF8);
    assert_string_equal(err.field, "text[1030]");
    assert_int_equal(err.offset, 1);
    t[1030] = "";
    assert_int_equal(dspy_embedder_embed(emb, t, NULL, many, v, &err), DSPY_OK);
    for (size_t d = 0; d < DSPY_EMBED_DIM; d++) /* every empty text embeds alike */
        assert_true(fabsf(v[1030 * DSPY_EMBED_DIM + d] - v[d]) < 1e-6f);
    free(t);
    free(v);
}

static void test_long_text_is_cut_at_256_pieces(void **state)
{
    (void)state;
    size_t len = 10000;
    char *t = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        t[i] = i % 5 == 4 ? ' ' : "word"[i % 5];
    t[len] = '\0';
    int32_t ids[DSPY_EMBED_MAX_TOKENS];
    size_t n;
    assert_int_equal(dspy_embedder_tokenize(emb, t, len, ids, DSPY_EMBED_MAX_TOKENS, &n, NULL),
                     DSPY_OK);
    assert_int_equal(n, DSPY_EMBED_MAX_TOKENS);
    assert_int_equal(ids[0], 101);
    assert_int_equal(ids[n - 1], 102);
    float v[DSPY_EMBED_DIM];
    const char *tp = t;
    assert_int_equal(dspy_embedder_embed(emb, &tp, &len, 1, v, NULL), DSPY_OK);
    /* The same as the text cut to its first 254 words: truncation, not a crash. */
    float w[DSPY_EMBED_DIM];
    size_t cut = 254 * 5 - 1;
    assert_int_equal(dspy_embedder_embed(emb, &tp, &cut, 1, w, NULL), DSPY_OK);
    for (size_t d = 0; d < DSPY_EMBED_DIM; d++)
        assert_true(fabsf(v[d] - w[d]) < 1e-6f);
    free(t);
}

/* ---- Model folder errors ---- */

static char tmpdir[64];

static void write_file(const char *dir, const char *name, const void *data, size_t len)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void *read_prefix(const char *path, size_t n, size_t *got)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    void *p = malloc(n);
    *got = fread(p, 1, n, f);
    fclose(f);
    return p;
}

static dspy_status open_dir(const char *dir, struct dspy_error *err)
{
    struct dspy_embedder_options o = DSPY_EMBEDDER_OPTIONS_INIT;
    o.model_dir = dir;
    dspy_embedder *e = NULL;
    dspy_status rc = dspy_embedder_new(&o, &e, err);
    if (!rc)
        dspy_embedder_free(e);
    else
        assert_null(e);
    return rc;
}

static void test_missing_and_corrupt_model_files(void **state)
{
    (void)state;
    struct dspy_error err;
    char path[512];
    assert_int_equal(open_dir("/nonexistent/model/dir", &err), DSPY_ENOTFOUND);
    assert_non_null(strstr(err.message, "/nonexistent/model/dir"));
    assert_non_null(strstr(err.message, "fetch-model.sh"));

    snprintf(tmpdir, sizeof(tmpdir), "/tmp/dspyc-embed-test-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    assert_int_equal(open_dir(tmpdir, &err), DSPY_ENOTFOUND); /* no vocab.txt */
    assert_non_null(strstr(err.message, "vocab.txt"));

    size_t len;
    char *vocab = read_prefix("models/all-MiniLM-L6-v2/vocab.txt", 1u << 20, &len);
    write_file(tmpdir, "vocab.txt", vocab, len);
    assert_int_equal(open_dir(tmpdir, &err), DSPY_ENOTFOUND); /* no weights */
    assert_non_null(strstr(err.message, "model.safetensors"));

    size_t got;
    void *head = read_prefix("models/all-MiniLM-L6-v2/model.safetensors", 1u << 20, &got);
    write_file(tmpdir, "model.safetensors", head, got); /* truncated at 1 MiB */
    assert_int_equal(open_dir(tmpdir, &err), DSPY_EPARSE);
    assert_non_null(strstr(err.message, "model.safetensors"));
    assert_non_null(strstr(err.message, "truncated"));

    memset((char *)head + 8, 'x', 16); /* the header is no longer JSON */
    write_file(tmpdir, "model.safetensors", head, got);
    assert_int_equal(open_dir(tmpdir, &err), DSPY_EPARSE);
    assert_non_null(strstr(err.message, "not JSON"));

    write_file(tmpdir, "vocab.txt", "[PAD]\nhello\n", 12); /* not a BERT vocabulary */
    assert_int_equal(open_dir(tmpdir, &err), DSPY_EPARSE);
    assert_non_null(strstr(err.message, "vocab.txt"));

    snprintf(path, sizeof(path), "%s/vocab.txt", tmpdir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/model.safetensors", tmpdir);
    unlink(path);
    rmdir(tmpdir);
    free(vocab);
    free(head);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_ids_match_reference),
        cmocka_unit_test(test_embeddings_match_reference),
        cmocka_unit_test(test_blas_path_matches_reference),
        cmocka_unit_test(test_batch_and_threads_agree),
        cmocka_unit_test(test_invalid_utf8_names_text_and_offset),
        cmocka_unit_test(test_long_text_is_cut_at_256_pieces),
        cmocka_unit_test(test_missing_and_corrupt_model_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

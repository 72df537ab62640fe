/* Fuzz target for OpenAI BPE tokenization (retrieve layer): the input, after a first byte
 * that picks the encoding's split pattern and special tokens, is split and encoded over a
 * small rank file; the pieces must tile the text on character boundaries, the ids' bytes
 * must give the text back, the count must match, and the call must fail with DSPY_EUTF8
 * exactly when the text is not valid UTF-8. The input is also read as a rank file. Any
 * violation aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/pyfmt.h"
#include "retrieve/bpe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The 256 bytes and a few merges ("th", "the", " t", "he", "in", "  ", "e\xcc\x81"). */
static dspy_tokenizer *small(const char *encoding)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static const char merges[] = "dGg= 256\ndGhl 257\nIHQ= 258\naGU= 259\naW4= 260\nICA= 261\n"
                                 "ZcyB 262\n";
    char text[256 * 10 + sizeof(merges)];
    size_t o = 0;
    for (unsigned b = 0; b < 256; b++)
        o += (size_t)snprintf(text + o, sizeof(text) - o, "%c%c== %u\n", b64[b >> 2],
                              b64[(b & 3) << 4], b);
    memcpy(text + o, merges, sizeof(merges) - 1);
    o += sizeof(merges) - 1;
    dspy_tokenizer *t;
    struct dspy_error err;
    if (dspy__tokenizer_parse(encoding, text, o, "fuzz", &t, &err)) {
        fprintf(stderr, "fuzz_bpe: %s\n", err.message);
        abort();
    }
    return t;
}

static void check_pieces(enum dspy__bpe_split split, const char *text, size_t len)
{
    for (size_t i = 0; i < len;) {
        size_t e = dspy__bpe_next_piece(split, text, len, i);
        if (e <= i || e > len || (e < len && ((unsigned char)text[e] & 0xC0) == 0x80))
            abort();
        i = e;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static dspy_tokenizer *enc[2];
    if (!enc[0]) {
        enc[0] = small("cl100k_base");
        enc[1] = small("o200k_base");
    }
    if (size < 1)
        return 0;
    const dspy_tokenizer *t = enc[data[0] & 1];
    unsigned flags = data[0] & 2 ? DSPY_TOKENS_SPECIAL : 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1, n = 0, count = 0;
    bool valid = dspy__utf8_valid(text, len);
    if (valid)
        check_pieces(data[0] & 1 ? DSPY__BPE_SPLIT_O200K : DSPY__BPE_SPLIT_CL100K, text, len);
    uint32_t *ids = NULL;
    struct dspy_error err;
    dspy_status rc = dspy_tokenizer_encode(t, text, len, flags, &ids, &n, &err);
    if (rc != (valid ? DSPY_OK : DSPY_EUTF8)) {
        fprintf(stderr, "fuzz_bpe: status %d does not match the UTF-8 check\n", rc);
        abort();
    }
    if (!rc) {
        size_t at = 0;
        for (size_t k = 0; k < n; k++) {
            const char *b;
            size_t bl;
            if (!dspy_tokenizer_token(t, ids[k], &b, &bl) || at + bl > len ||
                memcmp(text + at, b, bl))
                abort();
            at += bl;
        }
        if (at != len || dspy_tokenizer_count(t, text, len, flags, &count, NULL) || count != n)
            abort();
    } else if (err.offset < 0 || (size_t)err.offset >= len) {
        abort();
    }
    dspy_free(ids);
    dspy_tokenizer *own = NULL;
    if (!dspy__tokenizer_parse("cl100k_base", text, len, "fuzz-ranks", &own, NULL)) {
        if (dspy_tokenizer_count(own, "the cat's hello", 15, 0, &n, NULL) || !n)
            abort();
        dspy_tokenizer_free(own);
    }
    return 0;
}

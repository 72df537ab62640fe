/* Fuzz target for the BERT tokenizer (vec layer): the input is tokenized with a small fixed
 * vocabulary at a budget drawn from its first byte, and also loaded as a vocabulary. The ids
 * must be framed by [CLS] and [SEP], within the vocabulary and the budget, and the call must
 * fail with DSPY_EUTF8 exactly when the text is not valid UTF-8. Any violation aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/pyfmt.h"
#include "vec/wordpiece.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char vocab[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n##s\na\n##a\n,\n.\n東\n##東\n"
                            "\xc3\xa9\n##\xc3\xa9\ne\n##e\nhello\n##llo\nhe\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct dspy__wordpiece *wp;
    if (!wp && dspy__wordpiece_parse(vocab, sizeof(vocab) - 1, "fuzz", &wp, NULL))
        abort();
    if (size < 1)
        return 0;
    size_t max = 2 + data[0] % 300;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    int32_t *ids = malloc(max * sizeof(int32_t));
    size_t n = 0;
    struct dspy_error err;
    dspy_status rc = dspy__wordpiece_encode(wp, text, len, ids, max, &n, &err);
    if (rc != (dspy__utf8_valid(text, len) ? DSPY_OK : DSPY_EUTF8)) {
        fprintf(stderr, "fuzz_wordpiece: status %d does not match the UTF-8 check\n", rc);
        abort();
    }
    if (!rc) {
        if (n < 2 || n > max || ids[0] != 2 || ids[n - 1] != 3)
            abort();
        for (size_t k = 0; k < n; k++)
            if (ids[k] < 0 || (size_t)ids[k] >= dspy__wordpiece_size(wp))
                abort();
    } else if (err.offset < 0 || (size_t)err.offset >= len) {
        abort();
    }
    free(ids);
    struct dspy__wordpiece *v = NULL;
    if (!dspy__wordpiece_parse(text, len, "fuzz-vocab", &v, NULL)) {
        int32_t more[64];
        if (dspy__wordpiece_encode(v, "the cat's hello", 15, more, 64, &n, NULL) || n < 2)
            abort();
        dspy__wordpiece_free(v);
    }
    return 0;
}

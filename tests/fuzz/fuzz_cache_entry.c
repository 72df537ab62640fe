/* Fuzz target for the cache entry frame decoder (cache layer), the code that reads back
 * whatever L2 and L3 hold. Input: byte 0 picks the mode, bytes 1..16 the key, the rest is
 * the stored frame. Mode bit 0 set: the checksum is recomputed first, so the fuzzer also
 * reaches the length rules and the zlib inflate behind it. */
#include <stdint.h>
#include <string.h>

#include "cache/cache_int.h"

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

static void fix_checksum(const uint8_t key[16], unsigned char *f, size_t len)
{
    XXH3_state_t st;
    uint64_t sum;
    XXH3_INITSTATE(&st);
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, key, 16);
    XXH3_64bits_update(&st, f, 32);
    XXH3_64bits_update(&st, f + DSPY__FRAME_HDR, len - DSPY__FRAME_HDR);
    sum = XXH3_64bits_digest(&st);
    for (int i = 0; i < 8; i++)
        f[32 + i] = (unsigned char)(sum >> (8 * i));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dspy__frame f;
    uint8_t key[16];
    if (size < 17)
        return 0;
    memcpy(key, data + 1, 16);
    size_t len = size - 17;
    unsigned char *frame = dspy_malloc(len ? len : 1);
    if (!frame)
        return 0;
    memcpy(frame, data + 17, len);
    if ((data[0] & 1) && len >= DSPY__FRAME_HDR)
        fix_checksum(key, frame, len);
    if (dspy__frame_check(key, frame, len, &f) == DSPY_OK) {
        unsigned char *out = dspy_malloc(f.value_len ? f.value_len : 1);
        if (out) {
            if (dspy__frame_decode(&f, out) == DSPY_OK && !(f.flags & DSPY__FRAME_ZLIB) &&
                f.value_len && memcmp(out, f.payload, f.value_len) != 0)
                __builtin_trap();
            dspy_free(out);
        }
    }
    /* and the encoder on the same bytes must produce a frame that checks and decodes back */
    size_t cap = dspy__frame_bound(len), n;
    unsigned char *enc = dspy_malloc(cap);
    if (enc && dspy__frame_encode(key, frame, len, 1, 2, data[0] & 2 ? 1 : 0, enc, &n) == DSPY_OK) {
        unsigned char *back = dspy_malloc(len ? len : 1);
        if (dspy__frame_check(key, enc, n, &f) != DSPY_OK || f.value_len != len || !back ||
            dspy__frame_decode(&f, back) != DSPY_OK || (len && memcmp(back, frame, len) != 0))
            __builtin_trap();
        dspy_free(back);
    }
    dspy_free(enc);
    dspy_free(frame);
    return 0;
}

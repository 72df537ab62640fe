/* Unit tests for the safetensors reader: a valid file read back (unaligned data included),
 * and every kind of corruption a user could meet, each an error that names the file and
 * what is wrong: short files, a header length past the end, non-JSON headers, bad entries,
 * truncated data, overlapping tensors, wrong shapes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "vec/safetensors.h"

/* A file: 8-byte length, header, then `data_len` bytes of data (floats 0, 1, 2, ...). */
static unsigned char *make(const char *header, size_t data_len, size_t *len)
{
    size_t h = strlen(header);
    *len = 8 + h + data_len;
    unsigned char *p = calloc(1, *len);
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(p + 8, header, h);
    for (size_t k = 0; k + 4 <= data_len; k += 4) {
        float f = (float)(k / 4);
        memcpy(p + 8 + h + k, &f, 4);
    }
    return p;
}

static dspy_status parse(const char *header, size_t data_len, struct dspy_error *err,
                         struct dspy__safetensors **st, unsigned char **buf)
{
    size_t len;
    *buf = make(header, data_len, &len);
    return dspy__st_parse(*buf, len, "w.safetensors", st, err);
}

static void test_valid_file_reads_back(void **state)
{
    (void)state;
    struct dspy__safetensors *st;
    unsigned char *buf;
    struct dspy_error err;
    /* Header of odd length, so tensor data is not aligned in memory. */
    const char *h = "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[8,32]},"
                    "\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}  ";
    assert_int_equal(parse(h, 32, &err, &st, &buf), DSPY_OK);
    assert_int_equal(st->n, 2);
    const struct dspy__st_tensor *t = dspy__st_find(st, "b");
    assert_non_null(t);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[1], 3);
    float out[6];
    uint64_t shape[2] = { 2, 3 };
    assert_int_equal(dspy__st_read_f32(st, "b", 2, shape, out, &err), DSPY_OK);
    assert_true(out[0] == 2.0f && out[5] == 7.0f);
    uint64_t wrong[2] = { 3, 2 };
    assert_int_equal(dspy__st_read_f32(st, "b", 2, wrong, out, &err), DSPY_EPARSE);
    assert_non_null(strstr(err.message, "F32 [2,3], expected F32 [3,2]"));
    assert_int_equal(dspy__st_read_f32(st, "a", 1, shape, out, &err), DSPY_EPARSE);
    assert_non_null(strstr(err.message, "I64"));
    assert_int_equal(dspy__st_read_f32(st, "missing", 1, shape, out, &err), DSPY_ENOTFOUND);
    assert_non_null(strstr(err.message, "w.safetensors"));
    assert_string_equal(err.field, "missing");
    dspy__st_close(st);
    free(buf);
}

struct bad_case {
    const char *header;
    size_t data_len;
    const char *says;
};

static void test_corrupt_files_are_named_errors(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        { "[1,2]", 0, "not a JSON object" },
        { "{\"a\":", 0, "not JSON" },
        { "{\"a\":1}", 0, "expected an object" },
        { "{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "not a size" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
          "dimensions" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
          "the shape needs 8" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "[begin, end]" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 12, "truncated" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
          12, "overlap" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
          "\"data_offsets\":[0,4]}}",
          4, "the shape needs" },
        { "{\"__metadata__\":3}", 0, "__metadata__" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
          "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
          4, "not JSON" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct dspy__safetensors *st = (void *)1;
        unsigned char *buf;
        struct dspy_error err;
        assert_int_equal(parse(cases[i].header, cases[i].data_len, &err, &st, &buf), DSPY_EPARSE);
        assert_null(st);
        if (!strstr(err.message, cases[i].says) || !strstr(err.message, "w.safetensors"))
            fail_msg("case %zu: '%s' does not say '%s'", i, err.message, cases[i].says);
        assert_string_equal(err.file, "w.safetensors");
        free(buf);
    }
}

static void test_short_files_and_lengths(void **state)
{
    (void)state;
    struct dspy__safetensors *st;
    struct dspy_error err;
    assert_int_equal(dspy__st_parse("abc", 3, "w.safetensors", &st, &err), DSPY_EPARSE);
    assert_non_null(strstr(err.message, "shorter than the 8-byte header length"));
    unsigned char big[16] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f };
    assert_int_equal(dspy__st_parse(big, sizeof(big), "w.safetensors", &st, &err), DSPY_EPARSE);
    assert_non_null(strstr(err.message, "does not fit"));
    unsigned char over[16] = { 9 }; /* 9 header bytes, 8 present */
    assert_int_equal(dspy__st_parse(over, sizeof(over), "w.safetensors", &st, &err), DSPY_EPARSE);
    assert_int_equal(dspy__st_open("/nonexistent/w.safetensors", &st, &err), DSPY_ENOTFOUND);
    assert_non_null(strstr(err.message, "/nonexistent/w.safetensors"));
    assert_int_equal(dspy__st_open("/tmp", &st, &err), DSPY_EIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_file_reads_back),
        cmocka_unit_test(test_corrupt_files_are_named_errors),
        cmocka_unit_test(test_short_files_and_lengths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

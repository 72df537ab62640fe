/* Unit tests for cache keys: canonical JSON equal to orjson's OPT_SORT_KEYS output (and so
 * to DSPy's hashed bytes), the published key vectors of docs/cache.md, field-order
 * independence, the ignore list, namespaces, and the incremental fast path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dspyc/cache.h>

struct vector {
    const char *name;
    const char *ns;
    const char *key_hex;
    const char *canonical;
};

/* Canonical bytes from orjson 3.8 (ryu floats), keys from python-xxhash xxh3_128 over
 * "dspyc-cache-key/v1\0" + ns + "\0" + canonical. */
static const struct vector vectors[] = {
    { "dspy_golden", "", "f9f6dcf68204e58cb92271a742e69695",
      "{\"_fn_identifier\":\"dspy.clients.lm.litellm_completion\",\"max_tokens\":null,"
      "\"messages\":[{\"content\":\"Your input fields are:\\n1. `question` (str):\\nYour "
      "output fields are:\\n1. `answer` (str):\\nAll interactions will be structured "
      "in the following way, with the appropriate values filled in.\\n\\n[[ ## "
      "question ## ]]\\n{question}\\n\\n[[ ## answer ## ]]\\n{answer}\\n\\n[[ "
      "## completed ## ]]\\nIn adhering to this structure, your objective is: "
      "\\n        Given the fields `question`, produce the fields `answer`.\","
      "\"role\":\"system\"},{\"content\":\"[[ ## question ## ]]\\nWhat is the "
      "capital of France?\\n\\nRespond with the corresponding output fields, starting "
      "with the field `[[ ## answer ## ]]`, and then ending with the marker for "
      "`[[ ## completed ## ]]`.\",\"role\":\"user\"}],\"model\":\"openai/gpt-4o-mini\","
      "\"temperature\":null}" },
    { "minimal", "", "e35967d9c2320a83ade415547cd08a62",
      "{\"messages\":[{\"content\":\"Hi\",\"role\":\"user\"}],\"model\":\"gpt-4o-mini\"}" },
    { "minimal_ns", "tenant-a", "c2b71d50cc229453e69d356c5bb52956",
      "{\"messages\":[{\"content\":\"Hi\",\"role\":\"user\"}],\"model\":\"gpt-4o-mini\"}" },
    { "sampling", "", "639d9c59a98f283cb29735bba99a6269",
      "{\"max_tokens\":1000,\"messages\":[{\"content\":\"Hi\",\"role\":\"user\"}],"
      "\"model\":\"gpt-4o-mini\",\"n\":3,\"rollout_id\":1,\"temperature\":0.7,"
      "\"top_p\":1.0}" },
    { "int_zero", "", "cb2d42bec0c341d8d379a1ab47fbf2ce", "{\"model\":\"m\",\"temperature\":0}" },
    { "float_zero", "", "9202b923c787074a6613e4d0b86a6665",
      "{\"model\":\"m\",\"temperature\":0.0}" },
    { "numbers", "", "a8ea2b8ce819f4bba3cc4a50393708e6",
      "{\"a\":[1e20,1e-7,1e16,1000000000000000.0,0.1,-0.0,0.00001,1e-6,5e-324,"
      "1.7976931348623157e308,1.2345678901234568e17,0.30000000000000004,9007199254740993,"
      "-42,9223372036854775807,100.0,1.5]}" },
    { "strings", "", "e3e0cd0fed66c57ac0161182451f09ac",
      "{\"s\":\"tab\\there \\\"q\\\" back\\\\slash \\u0001\\u001f\177 caf\303\251 "
      "\342\200\250 \360\237\230\200 /\"}" },
    { "tools", "", "f4b5ff1d68f2e590f1b03cd025f4f94a",
      "{\"messages\":[{\"content\":\"weather?\",\"role\":\"user\"}],\"model\":\"gpt-4o\","
      "\"response_format\":{\"type\":\"json_object\"},\"tool_choice\":\"auto\","
      "\"tools\":[{\"function\":{\"name\":\"get_weather\",\"parameters\":"
      "{\"properties\":{\"city\":{\"type\":\"string\"}},"
      "\"required\":[\"city\"],\"type\":\"object\"}},\"type\":\"function\"}]}" },
};

/* The same value with every object's members inserted in reverse order. */
static json_t *reversed(json_t *v)
{
    if (json_is_array(v)) {
        json_t *a = json_array();
        for (size_t i = 0; i < json_array_size(v); i++)
            json_array_append_new(a, reversed(json_array_get(v, i)));
        return a;
    }
    if (!json_is_object(v))
        return json_incref(v);
    const char *keys[64];
    size_t n = 0;
    const char *k;
    json_t *m;
    json_object_foreach(v, k, m)
        keys[n++] = k;
    json_t *o = json_object();
    while (n--)
        json_object_set_new(o, keys[n], reversed(json_object_get(v, keys[n])));
    return o;
}

static json_t *load(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    if (!v)
        print_error("json: %s at %d\n", e.text, e.position);
    assert_non_null(v);
    return v;
}

static void vectors_match_orjson_and_published_keys(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        const struct vector *t = &vectors[i];
        json_t *req = load(t->canonical), *rev = reversed(req);
        char *canon, hex[33];
        size_t len;
        struct dspy_cache_key k1, k2, k3;
        assert_int_equal(dspy_cache_canonical_json(rev, NULL, &canon, &len, NULL), DSPY_OK);
        if (strcmp(canon, t->canonical) != 0)
            print_error("%s:\n got  %s\n want %s\n", t->name, canon, t->canonical);
        assert_string_equal(canon, t->canonical);
        assert_int_equal(len, strlen(t->canonical));
        assert_int_equal(dspy_cache_key_from_json(req, NULL, t->ns, &k1, NULL), DSPY_OK);
        assert_int_equal(dspy_cache_key_from_json(rev, NULL, t->ns, &k2, NULL), DSPY_OK);
        dspy_cache_key_from_canonical(canon, len, t->ns, &k3);
        dspy_cache_key_hex(&k1, hex);
        if (strcmp(hex, t->key_hex) != 0)
            print_error("%s: key %s, want %s\n", t->name, hex, t->key_hex);
        assert_string_equal(hex, t->key_hex);
        assert_memory_equal(k1.bytes, k2.bytes, 16);
        assert_memory_equal(k1.bytes, k3.bytes, 16);
        dspy_free(canon);
        json_decref(req);
        json_decref(rev);
    }
}

static void key_of(const char *text, const char *ns, struct dspy_cache_key *k)
{
    json_t *v = load(text);
    assert_int_equal(dspy_cache_key_from_json(v, NULL, ns, k, NULL), DSPY_OK);
    json_decref(v);
}

static void transport_fields_are_ignored(void **state)
{
    (void)state;
    struct dspy_cache_key a, b, c;
    key_of("{\"model\":\"m\",\"messages\":[]}", NULL, &a);
    key_of("{\"api_key\":\"sk-secret\",\"base_url\":\"http://x\",\"timeout\":5,\"stream\":true,"
           "\"num_retries\":3,\"messages\":[],\"model\":\"m\",\"api_base\":\"y\"}",
           NULL, &b);
    assert_memory_equal(a.bytes, b.bytes, 16);
    /* ignoring is top-level only: a tool schema with a "timeout" property keeps it */
    key_of("{\"model\":\"m\",\"messages\":[],\"tools\":[{\"timeout\":1}]}", NULL, &b);
    key_of("{\"model\":\"m\",\"messages\":[],\"tools\":[{}]}", NULL, &c);
    assert_memory_not_equal(b.bytes, c.bytes, 16);
    /* a custom ignore list replaces the default */
    json_t *v = load("{\"model\":\"m\",\"messages\":[],\"stream\":true}");
    const char *none[] = { NULL };
    assert_int_equal(dspy_cache_key_from_json(v, none, NULL, &c, NULL), DSPY_OK);
    assert_memory_not_equal(a.bytes, c.bytes, 16);
    json_decref(v);
}

static void answer_changing_fields_change_the_key(void **state)
{
    (void)state;
    static const char *const reqs[] = {
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
        "{\"model\":\"m2\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi!\"}]}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"n\":2}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"temperature\":0}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
        "\"temperature\":0.0}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"rollout_id\":1}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"rollout_id\":2}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
        "\"response_format\":{\"type\":\"json_object\"}}",
    };
    enum { N = sizeof(reqs) / sizeof(reqs[0]) };
    struct dspy_cache_key k[N + 1];
    for (size_t i = 0; i < N; i++)
        key_of(reqs[i], NULL, &k[i]);
    key_of(reqs[0], "tenant", &k[N]);
    for (size_t i = 0; i <= N; i++)
        for (size_t j = i + 1; j <= N; j++)
            assert_memory_not_equal(k[i].bytes, k[j].bytes, 16);
}

static void hasher_in_pieces_equals_one_shot(void **state)
{
    (void)state;
    const char *canon = vectors[0].canonical;
    size_t len = strlen(canon);
    struct dspy_cache_key one, pieces;
    struct dspy_cache_key_hasher h;
    dspy_cache_key_from_canonical(canon, len, "ns", &one);
    dspy_cache_key_hasher_init(&h, "ns");
    for (size_t i = 0; i < len; i += 7)
        dspy_cache_key_hasher_update(&h, canon + i, len - i < 7 ? len - i : 7);
    dspy_cache_key_hasher_final(&h, &pieces);
    assert_memory_equal(one.bytes, pieces.bytes, 16);
}

static void hex_round_trip_and_bad_input(void **state)
{
    (void)state;
    struct dspy_cache_key k, back;
    char hex[33];
    for (int i = 0; i < 16; i++)
        k.bytes[i] = (uint8_t)(i * 17 + 3);
    dspy_cache_key_hex(&k, hex);
    assert_int_equal(dspy_cache_key_parse_hex(hex, &back), DSPY_OK);
    assert_memory_equal(k.bytes, back.bytes, 16);
    assert_int_equal(dspy_cache_key_parse_hex("F9F6DCF68204E58CB92271A742E69695", &back), DSPY_OK);
    assert_int_equal(dspy_cache_key_parse_hex("f9f6", &back), DSPY_EINVAL);
    assert_int_equal(dspy_cache_key_parse_hex("g9f6dcf68204e58cb92271a742e69695", &back),
                     DSPY_EINVAL);
    assert_int_equal(dspy_cache_key_parse_hex("f9f6dcf68204e58cb92271a742e696950", &back),
                     DSPY_EINVAL);
}

static void bad_requests_are_rejected(void **state)
{
    (void)state;
    struct dspy_cache_key k;
    struct dspy_error err;
    json_t *arr = json_array();
    assert_int_equal(dspy_cache_key_from_json(arr, NULL, NULL, &k, &err), DSPY_EINVAL);
    json_decref(arr);
    /* nesting deeper than 128 */
    json_t *deep = json_object(), *cur = deep;
    for (int i = 0; i < 200; i++) {
        json_t *next = json_object();
        json_object_set_new(cur, "x", next);
        cur = next;
    }
    assert_int_equal(dspy_cache_key_from_json(deep, NULL, NULL, &k, &err), DSPY_EINVAL);
    json_decref(deep);
    char ns[DSPY_CACHE_NS_MAX + 2];
    memset(ns, 'a', sizeof(ns) - 1);
    ns[sizeof(ns) - 1] = '\0';
    json_t *o = json_object();
    assert_int_equal(dspy_cache_key_from_json(o, NULL, ns, &k, &err), DSPY_EINVAL);
    /* many members take the allocating path and still sort */
    for (int i = 99; i >= 0; i--) {
        char name[8];
        snprintf(name, sizeof(name), "k%02d", i);
        json_object_set_new(o, name, json_integer(i));
    }
    char *canon;
    size_t len;
    assert_int_equal(dspy_cache_canonical_json(o, NULL, &canon, &len, NULL), DSPY_OK);
    assert_memory_equal(canon, "{\"k00\":0,\"k01\":1,", 17);
    dspy_free(canon);
    json_decref(o);
}

static void reals_are_shortest_round_trip(void **state)
{
    (void)state;
    static const struct {
        double v;
        const char *text;
    } cases[] = {
        { 0.7, "0.7" },           { 1.0, "1.0" },
        { 1e20, "1e20" },         { -0.0, "-0.0" },
        { 0.0, "0.0" },           { 1e-5, "0.00001" },
        { 1e-6, "1e-6" },         { 123.456, "123.456" },
        { -2.5e-10, "-2.5e-10" }, { 9007199254740992.0, "9007199254740992.0" },
        { 1e16, "1e16" },
    };
    char out[32];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(dspy_cache_canonical_real(cases[i].v, out), strlen(cases[i].text));
        assert_string_equal(out, cases[i].text);
    }
    assert_int_equal(dspy_cache_canonical_real(NAN, out), 0);
    assert_int_equal(dspy_cache_canonical_real(INFINITY, out), 0);
    /* random bit patterns: every finite double reads back exactly */
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 20000; i++) {
        double v;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(&v, &x, sizeof(v));
        size_t n = dspy_cache_canonical_real(v, out);
        if (v != v || v - v != 0) {
            assert_int_equal(n, 0);
            continue;
        }
        assert_true(n > 0 && n < 32);
        assert_true(strtod(out, NULL) == v);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(vectors_match_orjson_and_published_keys),
        cmocka_unit_test(transport_fields_are_ignored),
        cmocka_unit_test(answer_changing_fields_change_the_key),
        cmocka_unit_test(hasher_in_pieces_equals_one_shot),
        cmocka_unit_test(hex_round_trip_and_bad_input),
        cmocka_unit_test(bad_requests_are_rejected),
        cmocka_unit_test(reals_are_shortest_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

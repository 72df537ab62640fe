/* Unit tests for string signatures: fields and types as DSPy 3.3.1 parses them, type names
 * as get_annotation_name prints them, inferred prefixes, default and cleandoc'd
 * instructions, error positions, setters, and allocation failures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dspyc/signature.h>

static dspy_signature *parse_ok(const char *text, const char *instructions)
{
    struct dspy_error err;
    dspy_signature *sig = NULL;
    dspy_error_clear(&err);
    dspy_status rc = dspy_signature_parse(text, instructions, &sig, &err);
    if (rc)
        fail_msg("parse of \"%s\" failed: %s", text, err.message);
    return sig;
}

static char *type_of(const dspy_signature *sig, size_t i)
{
    static char out[256];
    char *n = dspy_type_name(dspy_signature_field(sig, i)->type);
    assert_non_null(n);
    snprintf(out, sizeof(out), "%s", n);
    dspy_free(n);
    return out;
}

static void basic_fields(void **state)
{
    (void)state;
    dspy_signature *sig = parse_ok("question: str, k: int -> answer: list[str]", NULL);
    assert_int_equal(dspy_signature_nfields(sig), 3);
    assert_int_equal(dspy_signature_ninputs(sig), 2);
    const struct dspy_field *q = dspy_signature_field(sig, 0);
    assert_string_equal(q->name, "question");
    assert_int_equal(q->role, DSPY_FIELD_INPUT);
    assert_true(q->type_given);
    assert_string_equal(q->desc, "${question}");
    assert_string_equal(q->prefix, "Question:");
    assert_string_equal(type_of(sig, 1), "int");
    assert_string_equal(type_of(sig, 2), "list[str]");
    assert_int_equal(dspy_signature_field(sig, 2)->role, DSPY_FIELD_OUTPUT);
    assert_int_equal(dspy_signature_find(sig, "k"), 1);
    assert_int_equal(dspy_signature_find(sig, "nope"), -1);
    assert_null(dspy_signature_field(sig, 3));
    assert_string_equal(dspy_signature_instructions(sig),
                        "Given the fields `question`, `k`, produce the fields `answer`.");
    dspy_signature_free(sig);

    sig = parse_ok("  context ,question->answer  ", NULL);
    assert_false(dspy_signature_field(sig, 0)->type_given);
    assert_string_equal(type_of(sig, 0), "str");
    dspy_signature_free(sig);
    dspy_signature_free(NULL);
}

static void type_names_match_dspy(void **state)
{
    /* Expected names printed by DSPy 3.3.1's get_annotation_name. */
    static const struct {
        const char *sig, *name;
    } cases[] = {
        { "q: Optional[str] -> a", "Union[str, NoneType]" },
        { "q: str | None -> a", "Union[str, NoneType]" },
        { "q: None | int -> a", "Union[NoneType, int]" },
        { "q: NoneType | int -> a", "Union[int, NoneType]" },
        { "q: int | None | str -> a", "Union[int, NoneType, str]" },
        { "q: Union[int, Union[str, None]] -> a", "Union[int, str, NoneType]" },
        { "q: Optional[Optional[int]] -> a", "Union[int, NoneType]" },
        { "q: Union[int, int] -> a", "int" },
        { "q: dict[str, int] -> a", "dict[str, int]" },
        { "q: Dict[str, List[int]] -> a", "dict[str, list[int]]" },
        { "q: list -> a", "list" },
        { "q: dict -> a", "dict" },
        { "q: tuple -> a", "tuple" },
        { "q: tuple[int, ...] -> a", "tuple[int, Ellipsis]" },
        { "q: Tuple[int, str] -> a", "tuple[int, str]" },
        { "q: Any -> a", "Any" },
        { "q: NoneType -> a", "NoneType" },
        { "q: None -> a", "str" },
        { "q: Literal['pos', 'neg'] -> a", "Literal['pos', 'neg']" },
        { "q: Literal[\"it's\"] -> a", "Literal[\"it's\"]" },
        { "q: Literal['say \"hi\"'] -> a", "Literal['say \"hi\"']" },
        { "q: Literal['a\\'b\"c'] -> a", "Literal['a\\'b\"c']" },
        { "q: Literal[1, 1, 'a'] -> a", "Literal[1, 'a']" },
        { "q: Literal[True, 1, None] -> a", "Literal[True, 1, None]" },
        { "q: Literal[1.50, 1e3, 0x10] -> a", "Literal[1.5, 1000.0, 16]" },
        { "q: Literal['a', Literal['b', 'a']] -> a", "Literal['a', 'b']" },
        { "q: Literal['x' 'y', u'z'] -> a", "Literal['xy', 'z']" },
        { "q: Optional[Literal['a', 'b']] -> a", "Union[Literal['a', 'b'], NoneType]" },
        { "q: list[int | str] -> a", "list[Union[int, str]]" },
        { "q: (int | None) -> a", "Union[int, NoneType]" },
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        dspy_signature *sig = parse_ok(cases[i].sig, NULL);
        assert_string_equal(type_of(sig, 0), cases[i].name);
        dspy_signature_free(sig);
    }
}

static void type_tree_shape(void **state)
{
    (void)state;
    dspy_signature *sig = parse_ok("q: Literal['a', 2, None] -> t: tuple[float, ...]", NULL);
    const struct dspy_type *t = dspy_signature_field(sig, 0)->type;
    assert_int_equal(t->kind, DSPY_TYPE_LITERAL);
    assert_int_equal(t->nliterals, 3);
    assert_string_equal(t->literals[0], "a");
    assert_true(t->literal_is_str[0]);
    assert_string_equal(t->literals[1], "2");
    assert_false(t->literal_is_str[1]);
    assert_string_equal(t->literals[2], "None");
    t = dspy_signature_field(sig, 1)->type;
    assert_int_equal(t->kind, DSPY_TYPE_TUPLE);
    assert_true(t->variadic);
    assert_int_equal(t->nargs, 1);
    assert_int_equal(t->args[0]->kind, DSPY_TYPE_FLOAT);
    dspy_signature_free(sig);
}

static void prefixes_match_infer_prefix(void **state)
{
    /* DSPy 3.3.1 infer_prefix(name) + ":" */
    static const struct {
        const char *name, *prefix;
    } cases[] = {
        { "camelCaseText", "Camel Case Text:" },
        { "snake_case_text", "Snake Case Text:" },
        { "text2number", "Text 2 Number:" },
        { "HTMLParser", "HTML Parser:" },
        { "question", "Question:" },
        { "a", "A:" },
        { "x1", "X 1:" },
        { "ABC", "ABC:" },
        { "getHTTPResponseCode", "Get HTTP Response Code:" },
        { "already_Snake", "Already  Snake:" },
        { "A1B2", "A 1 B 2:" },
        { "userID", "User ID:" },
        { "IOStream", "IO Stream:" },
        { "ab_CD", "Ab CD:" },
        { "simpleXMLHttp", "Simple XML Http:" },
        { "v2_api", "V 2 Api:" },
        { "trailing_", "Trailing :" },
    };
    char text[128];
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), "%s -> out", cases[i].name);
        dspy_signature *sig = parse_ok(text, NULL);
        assert_string_equal(dspy_signature_field(sig, 0)->prefix, cases[i].prefix);
        dspy_signature_free(sig);
    }
}

static void instructions_follow_dspy(void **state)
{
    (void)state;
    dspy_signature *sig = parse_ok("q -> a", "\n    First line.\n      Indented.\n\tTab\n\n");
    /* inspect.cleandoc: tabs expanded, common indent removed, blank edges dropped */
    assert_string_equal(dspy_signature_instructions(sig), "First line.\n  Indented.\n    Tab");
    dspy_signature_free(sig);

    sig = parse_ok("q -> a", "");
    assert_string_equal(dspy_signature_instructions(sig),
                        "Given the fields `q`, produce the fields `a`.");
    assert_int_equal(dspy_signature_set_instructions(sig, "   "), DSPY_OK);
    assert_string_equal(dspy_signature_instructions(sig), "");
    /* ChainOfThought on empty instructions: DSPy rebuilds the default, naming reasoning */
    assert_int_equal(dspy_signature_prepend_output(sig, "reasoning", NULL), DSPY_OK);
    assert_string_equal(dspy_signature_instructions(sig),
                        "Given the fields `q`, produce the fields `reasoning`, `a`.");
    dspy_signature_free(sig);

    sig = parse_ok("-> a", NULL);
    assert_string_equal(dspy_signature_instructions(sig),
                        "Given the fields , produce the fields `a`.");
    dspy_signature_free(sig);
}

static void parse_errors_point_at_the_problem(void **state)
{
    static const struct {
        const char *sig;
        long offset;
        const char *needle;
    } cases[] = {
        { "question answer", 15, "expected '->'" },
        { "a -> b -> c", 7, "exactly one '->'" },
        { "q: foo -> a", 3, "unknown type 'foo' at offset 3" },
        { "question: str, k: intt -> a", 18, "unknown type 'intt'" },
        { "q -> q", 5, "both an input and an output" },
        { "q, q -> a", 3, "duplicate field name 'q'" },
        { "a, , b -> c", 3, "empty field name" },
        { "class -> a", 0, "Python keyword" },
        { "_x -> a", 0, "may not start with '_'" },
        { "1abc -> a", 0, "invalid field name" },
        { "q: list[int -> a", 12, "expected ',' or ']'" },
        { "q: Literal[-1] -> a", 11, "signed numbers" },
        { "q: Literal[] -> a", 11, "at least one value" },
        { "q: int[str] -> a", 3, "not subscriptable" },
        { "q: List -> a", 3, "needs arguments" },
        { "q: dict[str] -> a", 3, "two type arguments" },
        { "q: Optional[int, str] -> a", 3, "exactly one type argument" },
        { "q = 3 -> a", 2, "default values" },
        { "q a -> b", 2, "unexpected 'a'" },
        { "q: set[int] -> a", 3, "unknown type 'set'" },
        { "q: typing.List[int] -> a", 3, "unknown type 'typing.List'" },
        { "q: list[None] -> a", 8, "NoneType" },
        { "q: Literal['a -> b", 0, "" },
        { "x\xC2\xB2 -> a", 1, "Python identifier" }, /* x² */
        { "\xEF\xAC\x81"
          "eld -> a",
          0, "NFKC" }, /* the ligature fi */
        { "q -> a\xE2\x86\x92"
          "b",
          6, "Python identifier" }, /* a→b */
        { "q: 'str' -> a", 3, "expected a type" },
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct dspy_error err;
        dspy_signature *sig = (dspy_signature *)&err; /* must stay untouched */
        dspy_error_clear(&err);
        dspy_status rc = dspy_signature_parse(cases[i].sig, NULL, &sig, &err);
        if (rc != DSPY_EPARSE)
            fail_msg("\"%s\": rc %d (%s)", cases[i].sig, rc, err.message);
        assert_ptr_equal(sig, (dspy_signature *)&err);
        if (!strstr(err.message, cases[i].needle))
            fail_msg("\"%s\": message \"%s\" lacks \"%s\"", cases[i].sig, err.message,
                     cases[i].needle);
        if (cases[i].needle[0] && err.offset != cases[i].offset)
            fail_msg("\"%s\": offset %ld, want %ld (%s)", cases[i].sig, err.offset, cases[i].offset,
                     err.message);
        assert_int_equal(err.code, DSPY_EPARSE);
        assert_int_equal(err.line, 1);
    }
}

/* str.isidentifier() names, as DSPy takes them: réponse, 名前, a·b. */
static void non_ascii_identifiers(void **state)
{
    (void)state;
    dspy_signature *sig = parse_ok("r\xC3\xA9ponse, \xE5\x90\x8D\xE5\x89\x8D -> a\xC2\xB7"
                                   "b",
                                   NULL);
    assert_int_equal(dspy_signature_nfields(sig), 3);
    assert_string_equal(dspy_signature_field(sig, 0)->name, "r\xC3\xA9ponse");
    assert_string_equal(dspy_signature_field(sig, 1)->name, "\xE5\x90\x8D\xE5\x89\x8D");
    assert_string_equal(dspy_signature_field(sig, 2)->name, "a\xC2\xB7"
                                                            "b");
    dspy_signature_free(sig);
}

static void bad_utf8_is_refused(void **state)
{
    struct dspy_error err;
    dspy_signature *sig = NULL;
    (void)state;
    assert_int_equal(dspy_signature_parse("q: Literal['\xFF'] -> a", NULL, &sig, &err), DSPY_EUTF8);
    assert_int_equal(err.offset, 12);
    assert_int_equal(dspy_signature_parse("q -> a", "bad \xC3", &sig, &err), DSPY_EUTF8);
    assert_null(sig);
    sig = parse_ok("q -> a", NULL);
    assert_int_equal(dspy_signature_set_desc(sig, "q", "x\xC0\xAF"), DSPY_EUTF8);
    assert_int_equal(dspy_signature_set_instructions(sig, "\xFE"), DSPY_EUTF8);
    dspy_signature_free(sig);
}

static void setters_and_copy(void **state)
{
    (void)state;
    dspy_signature *sig = parse_ok("question -> answer: int", "Answer well.");
    assert_int_equal(dspy_signature_set_desc(sig, "answer", "a number"), DSPY_OK);
    assert_int_equal(dspy_signature_set_prefix(sig, "answer", "Ans:"), DSPY_OK);
    assert_int_equal(dspy_signature_set_desc(sig, "nope", "x"), DSPY_ENOTFOUND);
    assert_int_equal(dspy_signature_prepend_output(sig, "reasoning", NULL), DSPY_OK);
    assert_int_equal(dspy_signature_prepend_output(sig, "reasoning", NULL), DSPY_EINVAL);
    assert_int_equal(dspy_signature_prepend_output(sig, "bad name", NULL), DSPY_EINVAL);
    assert_int_equal(dspy_signature_nfields(sig), 3);
    const struct dspy_field *r = dspy_signature_field(sig, 1);
    assert_string_equal(r->name, "reasoning");
    assert_string_equal(r->desc, "${reasoning}");
    assert_string_equal(r->prefix, "Reasoning:");
    assert_int_equal(r->type->kind, DSPY_TYPE_STR);
    assert_string_equal(dspy_signature_instructions(sig), "Answer well.");

    dspy_signature *c = dspy_signature_copy(sig);
    assert_non_null(c);
    dspy_signature_free(sig);
    assert_string_equal(dspy_signature_field(c, 2)->desc, "a number");
    assert_string_equal(dspy_signature_field(c, 2)->prefix, "Ans:");
    assert_string_equal(type_of(c, 2), "int");
    char *def = dspy_signature_default_instructions(c);
    assert_string_equal(def, "Given the fields `question`, produce the fields `reasoning`, "
                             "`answer`.");
    dspy_free(def);
    dspy_signature_free(c);
}

/* An allocator that fails the n-th allocation, to prove every failure path. */
static long alloc_budget = -1;
static void *fail_malloc(size_t n)
{
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return malloc(n);
}
static void *fail_realloc(void *p, size_t n)
{
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return realloc(p, n);
}

static void survives_every_allocation_failure(void **state)
{
    const struct dspy_allocator hooks = { fail_malloc, fail_realloc, free };
    (void)state;
    dspy_set_allocator(&hooks);
    for (long n = 0;; n++) {
        struct dspy_error err;
        dspy_signature *sig = NULL, *c = NULL;
        alloc_budget = n;
        dspy_status rc = dspy_signature_parse(
            "q: Literal['a', 'b'], ctx: list[Optional[int]] -> camelAnswer: dict[str, int | None]",
            "  Some\n    instructions", &sig, &err);
        if (!rc) {
            rc = dspy_signature_prepend_output(sig, "reasoning", NULL);
            if (!rc && !(c = dspy_signature_copy(sig)))
                rc = DSPY_ENOMEM;
            char *name = c ? dspy_type_name(dspy_signature_field(c, 1)->type) : NULL;
            if (c && !name)
                rc = DSPY_ENOMEM;
            dspy_free(name);
        }
        bool done = alloc_budget > 0;
        alloc_budget = -1;
        dspy_signature_free(c);
        dspy_signature_free(sig);
        if (rc)
            assert_int_equal(rc, DSPY_ENOMEM);
        if (done) {
            assert_int_equal(rc, DSPY_OK);
            break;
        }
    }
    dspy_set_allocator(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(basic_fields),
        cmocka_unit_test(type_names_match_dspy),
        cmocka_unit_test(type_tree_shape),
        cmocka_unit_test(prefixes_match_infer_prefix),
        cmocka_unit_test(instructions_follow_dspy),
        cmocka_unit_test(parse_errors_point_at_the_problem),
        cmocka_unit_test(non_ascii_identifiers),
        cmocka_unit_test(bad_utf8_is_refused),
        cmocka_unit_test(setters_and_copy),
        cmocka_unit_test(survives_every_allocation_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

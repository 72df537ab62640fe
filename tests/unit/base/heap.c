/* Unit tests for the base layer's binary heap: ordering against a sorted reference,
 * replace_top as the bounded top-k idiom, caller storage limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "base/heap.h"

static int int_less(const void *a, const void *b, void *ctx)
{
    (void)ctx;
    int x = *(const int *)a, y = *(const int *)b;
    return x < y ? -1 : x > y;
}

static void pops_in_order(void **state)
{
    (void)state;
    struct dspy_heap h;
    dspy__heap_init(&h, sizeof(int), 0, int_less, NULL);
    unsigned seed = 7;
    int seen[1000] = { 0 };
    for (int i = 0; i < 1000; i++) {
        seed = seed * 1103515245u + 12345u;
        int v = (int)(seed >> 8) % 1000;
        seen[v]++;
        assert_int_equal(dspy__heap_push(&h, &v), DSPY_OK);
    }
    assert_int_equal(dspy__heap_len(&h), 1000);
    int prev = -1, v, n = 0;
    while (dspy__heap_pop(&h, &v)) {
        assert_true(v >= prev);
        assert_true(seen[v]-- > 0);
        prev = v;
        n++;
    }
    assert_int_equal(n, 1000);
    assert_null(dspy__heap_top(&h));
    dspy__heap_release(&h);
}

static void bounded_top_k(void **state)
{
    (void)state;
    int storage[5];
    struct dspy_heap h;
    dspy__heap_init_over(&h, storage, sizeof(int), 5, int_less, NULL);
    for (int v = 0; v < 100; v++) {
        int x = (v * 37) % 100; /* a permutation of 0..99 */
        if (dspy__heap_len(&h) < 5)
            assert_int_equal(dspy__heap_push(&h, &x), DSPY_OK);
        else if (x > *(int *)dspy__heap_top(&h))
            dspy__heap_replace_top(&h, &x);
    }
    int extra = 1000;
    assert_int_equal(dspy__heap_push(&h, &extra), DSPY_ETOOBIG);
    for (int want = 95; want < 100; want++) {
        int got;
        assert_true(dspy__heap_pop(&h, &got));
        assert_int_equal(got, want);
    }
    dspy__heap_release(&h);
}

static void growable_maximum(void **state)
{
    (void)state;
    struct dspy_heap h;
    dspy__heap_init(&h, sizeof(int), 3, int_less, NULL);
    for (int v = 0; v < 3; v++)
        assert_int_equal(dspy__heap_push(&h, &v), DSPY_OK);
    int v = 9;
    assert_int_equal(dspy__heap_push(&h, &v), DSPY_ETOOBIG);
    assert_int_equal(*(int *)dspy__heap_top(&h), 0);
    dspy__heap_release(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pops_in_order),
        cmocka_unit_test(bounded_top_k),
        cmocka_unit_test(growable_maximum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

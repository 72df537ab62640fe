/* Unit tests for the one binary heap: order against a sorted reference under random
 * pushes, pops, removals and re-keying; the index hook after every change; ties; a
 * bounded top-k with replace_top; reserve making pushes infallible; allocation failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "base/heap.h"

/* ---- by value: (key, id) pairs, smallest key first ---- */

struct item {
    int key;
    int id;
};

static bool item_before(const void *a, const void *b)
{
    return ((const struct item *)a)->key < ((const struct item *)b)->key;
}

static const struct dspy__heap_type items = { sizeof(struct item), item_before, NULL };

static uint64_t rng = 88172645463325252u;
static unsigned next_rand(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (unsigned)(rng >> 11);
}

static void pops_in_order(void **state)
{
    (void)state;
    struct dspy__heap h;
    dspy__heap_init(&h, &items);
    assert_null(dspy__heap_top(&h));
    assert_false(dspy__heap_pop(&h, NULL));
    for (int i = 0; i < 5000; i++) {
        struct item it = { (int)(next_rand() % 1000), i };
        assert_int_equal(dspy__heap_push(&h, &it), DSPY_OK);
    }
    assert_int_equal(dspy__heap_len(&h), 5000);
    int last = -1;
    struct item out;
    while (dspy__heap_pop(&h, &out)) {
        assert_true(out.key >= last);
        last = out.key;
    }
    assert_int_equal(dspy__heap_len(&h), 0);
    dspy__heap_release(&h);
}

/* ---- intrusive: pointers to timers that keep their index ---- */

struct timer {
    uint64_t due;
    size_t idx;
};

static bool timer_before(const void *a, const void *b)
{
    return (*(struct timer *const *)a)->due < (*(struct timer *const *)b)->due;
}

static void timer_moved(void *elem, size_t idx)
{
    (*(struct timer **)elem)->idx = idx;
}

static const struct dspy__heap_type timers = { sizeof(struct timer *), timer_before, timer_moved };

static void check_indexes(const struct dspy__heap *h, const struct timer *t, size_t n)
{
    size_t armed = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i].idx == SIZE_MAX)
            continue;
        armed++;
        assert_ptr_equal(*(struct timer **)dspy__heap_at(h, t[i].idx), &t[i]);
        if (t[i].idx > 0) /* heap order with the parent */
            assert_true((*(struct timer **)dspy__heap_at(h, (t[i].idx - 1) / 2))->due <= t[i].due);
    }
    assert_int_equal(armed, dspy__heap_len(h));
}

static void remove_and_rekey_keep_indexes(void **state)
{
    (void)state;
    enum { N = 300 };
    struct timer t[N];
    struct dspy__heap h;
    dspy__heap_init(&h, &timers);
    assert_int_equal(dspy__heap_reserve(&h, N), DSPY_OK);
    for (int i = 0; i < N; i++)
        t[i] = (struct timer){ .due = 0, .idx = SIZE_MAX };
    for (int round = 0; round < 20000; round++) {
        struct timer *x = &t[next_rand() % N], *p = x;
        switch (next_rand() % 4) {
        case 0: /* arm or re-arm */
            x->due = next_rand() % 10000;
            if (x->idx == SIZE_MAX)
                assert_int_equal(dspy__heap_push(&h, &p), DSPY_OK);
            else
                dspy__heap_update(&h, x->idx);
            break;
        case 1: /* cancel */
            if (x->idx != SIZE_MAX)
                dspy__heap_remove(&h, x->idx, NULL);
            assert_int_equal(x->idx, SIZE_MAX);
            break;
        case 2: { /* pop the earliest; nothing armed is earlier */
            struct timer *first;
            if (dspy__heap_pop(&h, &first)) {
                assert_int_equal(first->idx, SIZE_MAX);
                for (int i = 0; i < N; i++)
                    if (t[i].idx != SIZE_MAX)
                        assert_true(t[i].due >= first->due);
            }
            break;
        }
        default: break;
        }
        if (round % 97 == 0)
            check_indexes(&h, t, N);
    }
    check_indexes(&h, t, N);
    dspy__heap_release(&h);
    for (int i = 0; i < N; i++)
        assert_int_equal(t[i].idx, SIZE_MAX); /* release disarms what was left */
}

/* ---- ties keep what the order says: (key, seq) pairs come out FIFO ---- */

static bool fifo_before(const void *a, const void *b)
{
    const struct item *x = a, *y = b;
    return x->key < y->key || (x->key == y->key && x->id < y->id);
}

static void ties_follow_the_order(void **state)
{
    (void)state;
    static const struct dspy__heap_type fifo = { sizeof(struct item), fifo_before, NULL };
    struct dspy__heap h;
    dspy__heap_init(&h, &fifo);
    for (int i = 0; i < 100; i++) {
        struct item it = { i % 3, i };
        assert_int_equal(dspy__heap_push(&h, &it), DSPY_OK);
    }
    struct item out, prev = { -1, -1 };
    while (dspy__heap_pop(&h, &out)) {
        assert_true(out.key > prev.key || (out.key == prev.key && out.id > prev.id));
        prev = out;
    }
    dspy__heap_release(&h);
}

/* ---- bounded top-k: worst of the k best first, replaced when something better comes ---- */

static int cmp_desc(const void *a, const void *b)
{
    return *(const int *)b - *(const int *)a;
}

static void top_k_with_replace_top(void **state)
{
    (void)state;
    enum { K = 10, N = 2000 };
    /* smallest first => the worst kept score at the top: keep the K largest */
    static const struct dspy__heap_type best = { sizeof(struct item), item_before, NULL };
    int all[N];
    struct dspy__heap h;
    dspy__heap_init(&h, &best);
    for (int i = 0; i < N; i++) {
        struct item it = { (int)(next_rand() % 100000), i };
        all[i] = it.key;
        if (dspy__heap_len(&h) < K)
            assert_int_equal(dspy__heap_push(&h, &it), DSPY_OK);
        else if (it.key > ((struct item *)dspy__heap_top(&h))->key)
            dspy__heap_replace_top(&h, &it);
    }
    qsort(all, N, sizeof(int), cmp_desc);
    for (int i = K - 1; i >= 0; i--) {
        struct item out;
        assert_true(dspy__heap_pop(&h, &out));
        assert_int_equal(out.key, all[i]);
    }
    dspy__heap_release(&h);
}

/* ---- allocation failure leaves the heap as it was ---- */

static int fail_after = -1;
/* Over caller storage: pushes up to the capacity work with every allocation failing, the
 * next one is refused with DSPY_ETOOBIG, and release leaves the storage to the caller. */
static void *no_malloc(size_t n)
{
    (void)n;
    return NULL;
}

static void *no_realloc(void *p, size_t n)
{
    (void)p, (void)n;
    return NULL;
}

static void over_caller_storage_never_allocates(void **state)
{
    (void)state;
    struct item storage[4];
    struct dspy__heap h;
    static const struct dspy_allocator none = { no_malloc, no_realloc, free };
    static const struct dspy_allocator libc = { malloc, realloc, free };
    dspy_set_allocator(&none);
    dspy__heap_init_over(&h, &items, storage, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(dspy__heap_push(&h, &(struct item){ 10 - i, i }), DSPY_OK);
    assert_int_equal(dspy__heap_push(&h, &(struct item){ 0, 9 }), DSPY_ETOOBIG);
    assert_int_equal(dspy__heap_len(&h), 4);
    struct item out;
    assert_true(dspy__heap_pop(&h, &out));
    assert_int_equal(out.key, 7);
    dspy__heap_release(&h);
    dspy_set_allocator(&libc);
    assert_true(storage[0].key >= 8 && storage[0].key <= 10); /* still the caller's */
}

static void *failing_malloc(size_t n)
{
    return fail_after-- == 0 ? NULL : malloc(n);
}
static void *failing_realloc(void *p, size_t n)
{
    return fail_after-- == 0 ? NULL : realloc(p, n);
}

static void push_fails_cleanly(void **state)
{
    (void)state;
    struct dspy__heap h;
    dspy__heap_init(&h, &items);
    for (int i = 0; i < 64; i++) {
        struct item it = { 64 - i, i };
        assert_int_equal(dspy__heap_push(&h, &it), DSPY_OK);
    }
    static const struct dspy_allocator failing = { failing_malloc, failing_realloc, free };
    static const struct dspy_allocator libc = { malloc, realloc, free };
    dspy_set_allocator(&failing);
    fail_after = 0;
    struct item it = { 0, 99 };
    assert_int_equal(dspy__heap_push(&h, &it), DSPY_ENOMEM);
    dspy_set_allocator(&libc);
    assert_int_equal(dspy__heap_len(&h), 64);
    assert_int_equal(((struct item *)dspy__heap_top(&h))->key, 1);
    dspy__heap_release(&h);
    struct dspy__heap zero;
    memset(&zero, 0, sizeof(zero));
    dspy__heap_release(&zero); /* never initialized: a no-op */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pops_in_order),
        cmocka_unit_test(remove_and_rekey_keep_indexes),
        cmocka_unit_test(ties_follow_the_order),
        cmocka_unit_test(top_k_with_replace_top),
        cmocka_unit_test(push_fails_cleanly),
        cmocka_unit_test(over_caller_storage_never_allocates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Allocator hooks (base layer): every allocation in the library goes through here, so a
 * caller can substitute its own allocator and tests can fail allocations on purpose. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <dspyc/common.h>

static void *(*hook_malloc)(size_t) = malloc;
static void *(*hook_realloc)(void *, size_t) = realloc;
static void (*hook_free)(void *) = free;

void dspy_set_allocator(const struct dspy_allocator *alloc)
{
    hook_malloc = alloc && alloc->malloc ? alloc->malloc : malloc;
    hook_realloc = alloc && alloc->realloc ? alloc->realloc : realloc;
    hook_free = alloc && alloc->free ? alloc->free : free;
    /* jansson values are part of our API: route them through the same hooks. */
    json_set_alloc_funcs(hook_malloc, hook_free);
}

void *dspy_malloc(size_t size)
{
    return hook_malloc(size ? size : 1);
}

void *dspy_calloc(size_t n, size_t size)
{
    if (size && n > (size_t)-1 / size)
        return NULL;
    size_t total = n * size;
    void *p = hook_malloc(total ? total : 1);
    if (p)
        memset(p, 0, total);
    return p;
}

void *dspy_realloc(void *ptr, size_t size)
{
    return hook_realloc(ptr, size ? size : 1);
}

void dspy_free(void *ptr)
{
    if (ptr)
        hook_free(ptr);
}

char *dspy_strndup(const char *s, size_t n)
{
    char *p = dspy_malloc(n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *dspy_strdup(const char *s)
{
    return s ? dspy_strndup(s, strlen(s)) : NULL;
}

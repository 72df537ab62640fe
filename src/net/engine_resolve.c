/* HTTP client engine, host name lookups (net layer): the own HTTP/1.1 client's names are
 * looked up on a few resolver threads, never on the loop, so a slow DNS server delays only
 * the calls to that name. A lookup goes out on a queue and comes back as a message in the
 * engine's inbox, which wakes the loop like a submission. The threads and their queue are
 * shared with the engine and freed by the last one out: freeing the engine does not wait
 * for a lookup that may take the resolver's whole timeout.
 *
 * Failed lookups are remembered per host name for NEG_TTL_NS (5 s): a retry of a dead name
 * within that time fails at once with the same error instead of taking a resolver thread
 * for another full DNS timeout. Up to NEG_MAX names are kept, the oldest replaced first; a
 * lookup that succeeds forgets its name's failure. */
#include <netdb.h>
#include <string.h>

#include "base/clock.h"
#include "net/engine_int.h"

#define MAX_THREADS 4u
#define NEG_MAX 16u
#define NEG_TTL_NS 5000000000ull

/* A host name whose lookup failed, and getaddrinfo's error for it. */
struct neg_entry {
    char *host; /* NULL = free */
    uint64_t at_ns;
    int rc;
};

struct dspy__engine_resolver {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct dspy__engine *e; /* NULL once detached; guarded by mu, like all below */
    dspy__engine_getaddrinfo_fn fn;
    struct dspy__engine_lookup *head, *tail;
    unsigned nthreads, nidle;
    unsigned refs; /* the engine's and one per thread */
    struct neg_entry neg[NEG_MAX];
};

/* Under mu: the entry for `host`, or NULL. */
static struct neg_entry *neg_find(struct dspy__engine_resolver *r, const char *host)
{
    for (unsigned i = 0; i < NEG_MAX; i++)
        if (r->neg[i].host && !strcmp(r->neg[i].host, host))
            return &r->neg[i];
    return NULL;
}

/* Under mu: remember (rc != 0) or forget (rc == 0) the failure of `host`. Out of memory,
 * the failure is just not remembered. */
static void neg_note(struct dspy__engine_resolver *r, const char *host, int rc)
{
    struct neg_entry *n = neg_find(r, host);
    if (!rc) {
        if (n) {
            dspy_free(n->host);
            n->host = NULL;
        }
        return;
    }
    if (!n) {
        n = &r->neg[0];
        for (unsigned i = 0; i < NEG_MAX && n->host; i++)
            if (!r->neg[i].host || r->neg[i].at_ns < n->at_ns)
                n = &r->neg[i];
        char *h = dspy_strdup(host);
        if (!h)
            return;
        dspy_free(n->host);
        n->host = h;
    }
    n->at_ns = dspy__now_ns();
    n->rc = rc;
}

/* Under mu: the remembered failure of `host` (nonzero) if still fresh, else 0. */
static int neg_lookup(struct dspy__engine_resolver *r, const char *host)
{
    struct neg_entry *n = neg_find(r, host);
    if (!n || dspy__now_ns() - n->at_ns >= NEG_TTL_NS)
        return 0;
    return n->rc;
}

int dspy__engine_getaddrs(dspy__engine_getaddrinfo_fn fn, const char *host, const char *port,
                          int flags, struct sockaddr_storage *addr, socklen_t *addrlen,
                          uint32_t *naddr)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = flags;
    *naddr = 0;
    int rc = (fn ? fn : getaddrinfo)(host, port, &hints, &res);
    if (rc)
        return rc;
    for (struct addrinfo *a = res; a && *naddr < DSPY__H1_MAX_ADDRS; a = a->ai_next) {
        if (a->ai_addrlen > sizeof(addr[0]))
            continue;
        memcpy(&addr[*naddr], a->ai_addr, a->ai_addrlen);
        addrlen[(*naddr)++] = a->ai_addrlen;
    }
    freeaddrinfo(res);
    return *naddr ? 0 : EAI_NONAME;
}

static void lookup_run(struct dspy__engine_lookup *l, dspy__engine_getaddrinfo_fn fn)
{
    l->rc = dspy__engine_getaddrs(fn, l->host, l->port, 0, l->addr, l->addrlen, &l->naddr);
}

/* Drop a reference: entered with mu held, returns with it released (and maybe freed). */
static void unref(struct dspy__engine_resolver *r)
{
    bool last = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (!last)
        return;
    while (r->head) {
        struct dspy__engine_lookup *l = r->head;
        r->head = l->next;
        dspy_free(l);
    }
    for (unsigned i = 0; i < NEG_MAX; i++)
        dspy_free(r->neg[i].host);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    dspy_free(r);
}

static void *resolver_main(void *arg)
{
    struct dspy__engine_resolver *r = arg;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (r->e && !r->head) {
            r->nidle++;
            pthread_cond_wait(&r->cv, &r->mu);
            r->nidle--;
        }
        if (!r->e)
            break;
        struct dspy__engine_lookup *l = r->head;
        if (!(r->head = l->next))
            r->tail = NULL;
        dspy__engine_getaddrinfo_fn fn = r->fn;
        pthread_mutex_unlock(&r->mu);
        lookup_run(l, fn);
        pthread_mutex_lock(&r->mu);
        neg_note(r, l->host, l->rc);
        if (r->e) /* under mu: the engine cannot be freed between the check and the push */
            dspy__engine_push(r->e, &l->msg);
        else
            dspy_free(l);
    }
    r->nthreads--;
    unref(r);
    return NULL;
}

struct dspy__engine_resolver *dspy__engine_resolver_new(struct dspy__engine *e,
                                                        dspy__engine_getaddrinfo_fn fn)
{
    struct dspy__engine_resolver *r = dspy_calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    if (pthread_mutex_init(&r->mu, NULL))
        goto free_resolver;
    if (pthread_cond_init(&r->cv, NULL))
        goto destroy_mutex;
    r->e = e;
    r->fn = fn;
    r->refs = 1;
    return r;

destroy_mutex:
    pthread_mutex_destroy(&r->mu);
free_resolver:
    dspy_free(r);
    return NULL;
}

/* Under mu. Threads are started from the loop thread, whose signals are all blocked, so
 * they inherit that mask. */
static void start_thread(struct dspy__engine_resolver *r)
{
    pthread_t t;
    pthread_attr_t attr;
    if (pthread_attr_init(&attr))
        return;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    r->refs++;
    r->nthreads++;
    if (pthread_create(&t, &attr, resolver_main, r)) {
        r->refs--;
        r->nthreads--;
    }
    pthread_attr_destroy(&attr);
}

void dspy__engine_resolver_submit(struct dspy__engine_resolver *r, struct dspy__engine_lookup *l)
{
    l->msg.kind = DSPY__MSG_RESOLVED;
    l->next = NULL;
    pthread_mutex_lock(&r->mu);
    int neg = neg_lookup(r, l->host);
    if (neg) { /* failed a moment ago: fail again without asking DNS */
        struct dspy__engine *e = r->e;
        pthread_mutex_unlock(&r->mu);
        if (!e) {
            dspy_free(l);
            return;
        }
        l->rc = neg;
        l->naddr = 0;
        dspy__engine_push(e, &l->msg);
        return;
    }
    if (r->nidle == 0 && r->nthreads < MAX_THREADS)
        start_thread(r);
    if (r->nthreads == 0) { /* no thread could be started: look it up here, as before */
        dspy__engine_getaddrinfo_fn fn = r->fn;
        struct dspy__engine *e = r->e;
        pthread_mutex_unlock(&r->mu);
        if (!e) { /* detached: the engine is stopping */
            dspy_free(l);
            return;
        }
        lookup_run(l, fn);
        pthread_mutex_lock(&r->mu);
        neg_note(r, l->host, l->rc);
        pthread_mutex_unlock(&r->mu);
        dspy__engine_push(e, &l->msg);
        return;
    }
    if (r->tail)
        r->tail->next = l;
    else
        r->head = l;
    r->tail = l;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

void dspy__engine_resolver_detach(struct dspy__engine_resolver *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->e = NULL;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

void dspy__engine_resolver_release(struct dspy__engine_resolver *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    unref(r);
}

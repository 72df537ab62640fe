/* L2 of the cache (cache layer): Redis through hiredis, with a small connection pool,
 * short connect and command timeouts, a TTL on every SET, and reconnect with backoff.
 * Redis being down or slow turns into misses and skipped writes, counted and reported,
 * never an error to the caller. Also the cross-process single-flight lease. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "base/clock.h"
#include "base/status.h"
#include "cache/cache_int.h"
#include "net/redis_client.h"

#define PREFIX_MAX 128
#define KEYBUF (PREFIX_MAX + 6 + 33)
#define BACKOFF_START_MS 25
#define SCAN_BATCH "500"

struct redis {
    char *host, *unix_path, *user, *password;
    int port, db;
    char prefix[PREFIX_MAX + 1];
    size_t prefix_len;
    struct timeval timeout;
    unsigned backoff_max_ms;
    double ttl_s;
    size_t compress_min;

    pthread_mutex_t lock;
    pthread_cond_t cond;         /* a connection was returned; lock */
    redisContext **idle;         /* connected, unused; lock */
    unsigned nidle, pool, out;   /* out: connections lent (or being opened); lock */
    unsigned backoff_ms;         /* next backoff; lock */
    atomic_ullong down_until_ns; /* calls before this time are skipped */

    atomic_ullong hits, misses, puts, corrupt, skipped;
    atomic_ullong round_trips; /* commands or pipelines sent, each waited on */
    struct dspy__cache_errlog errors;
};

/* hiredis writes with write(2): a peer that died turns into SIGPIPE. Block it on this
 * thread around the I/O and swallow one that became pending, as libcurl does. */
struct pipe_guard {
    sigset_t old;
    bool was_pending;
};

static void guard_on(struct pipe_guard *g)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &g->old);
}

static void guard_off(struct pipe_guard *g)
{
    sigset_t set, pending;
    sigpending(&pending);
    if (!g->was_pending && sigismember(&pending, SIGPIPE)) {
        struct timespec zero = { 0, 0 };
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

static void key_name(const struct redis *r, const char *kind, const uint8_t key[16],
                     char out[KEYBUF])
{
    struct dspy_cache_key k;
    char hex[33];
    memcpy(k.bytes, key, 16);
    dspy_cache_key_hex(&k, hex);
    snprintf(out, KEYBUF, "%s%s%s", r->prefix, kind, hex);
}

/* --- connections ---------------------------------------------------------------------- */

static void mark_down(struct redis *r, const char *what, const char *why)
{
    dspy__cache_errlog_set(&r->errors, "redis %s: %s", what, why);
    pthread_mutex_lock(&r->lock);
    atomic_store(&r->down_until_ns, dspy__now_ns() + (uint64_t)r->backoff_ms * 1000000u);
    r->backoff_ms = r->backoff_ms * 2 > r->backoff_max_ms ? r->backoff_max_ms : r->backoff_ms * 2;
    pthread_mutex_unlock(&r->lock);
}

static bool is_down(struct redis *r)
{
    return dspy__now_ns() < atomic_load(&r->down_until_ns);
}

static redisReply *command(redisContext *c, int argc, const char **argv, const size_t *lens)
{
    struct pipe_guard g;
    guard_on(&g);
    redisReply *rep = dspy__redis_command_argv(c, argc, argv, lens);
    guard_off(&g);
    return rep;
}

static bool setup_ok(redisContext *c, int argc, const char **argv)
{
    redisReply *rep = command(c, argc, argv, NULL);
    bool ok = rep && rep->type != REDIS_REPLY_ERROR;
    if (rep)
        freeReplyObject(rep);
    return ok;
}

static redisContext *connect_one(struct redis *r)
{
    redisContext *c = dspy__redis_connect(r->host, r->port, r->unix_path, r->timeout, r->timeout,
                                          NULL);
    char db[16];
    if (!c || c->err) {
        mark_down(r, "connect", c ? c->errstr : "out of memory");
        goto out_free;
    }
    if (r->password) {
        const char *auth_user[] = { "AUTH", r->user, r->password };
        const char *auth[] = { "AUTH", r->password };
        if (!(r->user ? setup_ok(c, 3, auth_user) : setup_ok(c, 2, auth))) {
            mark_down(r, "connect", "AUTH failed");
            goto out_free;
        }
    }
    snprintf(db, sizeof(db), "%d", r->db);
    if (r->db && !setup_ok(c, 2, (const char *[]){ "SELECT", db })) {
        mark_down(r, "connect", "SELECT failed");
        goto out_free;
    }
    pthread_mutex_lock(&r->lock);
    r->backoff_ms = BACKOFF_START_MS;
    pthread_mutex_unlock(&r->lock);
    return c;
out_free:
    dspy__redis_free(c);
    return NULL;
}

/* A connection for one operation, or NULL (backing off, or every connection busy past
 * the timeout). *fresh says whether it was just opened. */
static redisContext *borrow(struct redis *r, bool *fresh)
{
    redisContext *c = NULL;
    struct timespec until;
    if (is_down(r)) {
        atomic_fetch_add(&r->skipped, 1);
        return NULL;
    }
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += (long)r->timeout.tv_usec * 1000;
    until.tv_sec += r->timeout.tv_sec + until.tv_nsec / 1000000000;
    until.tv_nsec %= 1000000000;
    pthread_mutex_lock(&r->lock);
    while (!r->nidle && r->out >= r->pool)
        if (pthread_cond_timedwait(&r->cond, &r->lock, &until) == ETIMEDOUT)
            break;
    if (r->nidle) {
        c = r->idle[--r->nidle];
        r->out++;
        *fresh = false;
        pthread_mutex_unlock(&r->lock);
        return c;
    }
    if (r->out >= r->pool) {
        pthread_mutex_unlock(&r->lock);
        atomic_fetch_add(&r->skipped, 1);
        return NULL;
    }
    r->out++;
    pthread_mutex_unlock(&r->lock);
    *fresh = true;
    if (!(c = connect_one(r))) {
        pthread_mutex_lock(&r->lock);
        r->out--;
        pthread_cond_signal(&r->cond);
        pthread_mutex_unlock(&r->lock);
    }
    return c;
}

/* Return a connection; a broken one (error set) is closed instead of pooled. */
static void give_back(struct redis *r, redisContext *c)
{
    bool broken = c->err != 0;
    pthread_mutex_lock(&r->lock);
    r->out--;
    if (!broken)
        r->idle[r->nidle++] = c;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    if (broken)
        dspy__redis_free(c);
}

/* Close every pooled connection: after one turned out dead (Redis restarted), the rest
 * are dead too. */
static void drop_idle(struct redis *r)
{
    redisContext *dead[256];
    unsigned n;
    pthread_mutex_lock(&r->lock);
    n = r->nidle;
    memcpy(dead, r->idle, n * sizeof(*dead));
    r->nidle = 0;
    pthread_mutex_unlock(&r->lock);
    for (unsigned i = 0; i < n; i++)
        dspy__redis_free(dead[i]);
}

/* Run one command with reconnect: a pooled connection found closed (Redis restarted,
 * idle socket dropped) is replaced by a fresh one and the command tried once more; a
 * timeout is not retried. NULL when Redis cannot be reached; the failure is recorded. */
static redisReply *run(struct redis *r, const char *what, int argc, const char **argv,
                       const size_t *lens)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        bool fresh;
        redisContext *c = borrow(r, &fresh);
        if (!c)
            return NULL;
        errno = 0;
        atomic_fetch_add(&r->round_trips, 1);
        redisReply *rep = command(c, argc, argv, lens);
        int e = errno;
        if (rep) {
            give_back(r, c);
            return rep;
        }
        char why[128];
        snprintf(why, sizeof(why), "%s", c->errstr[0] ? c->errstr : "no reply");
        bool closed = c->err == REDIS_ERR_EOF ||
                      (c->err == REDIS_ERR_IO && (e == ECONNRESET || e == EPIPE));
        if (!c->err)
            c->err = REDIS_ERR_OTHER;
        give_back(r, c);
        if (fresh || attempt || !closed) {
            mark_down(r, what, why);
            return NULL;
        }
        drop_idle(r);
    }
    return NULL;
}

/* --- the level ---------------------------------------------------------------------- */

static struct dspy__cache_entry *decode(const uint8_t key[16], const char *buf, size_t len,
                                        bool *corrupt)
{
    struct dspy__frame f;
    struct dspy__cache_entry *e;
    *corrupt = false;
    if (dspy__frame_check(key, buf, len, &f) != DSPY_OK) {
        *corrupt = true;
        return NULL;
    }
    if (!(e = dspy__cache_entry_new(key, NULL, f.value_len, f.expires_ms)))
        return NULL;
    if (dspy__frame_decode(&f, e->data) != DSPY_OK) {
        dspy__cache_entry_unref(e);
        *corrupt = true;
        return NULL;
    }
    return e;
}

static void redis_del(void *lvl, const uint8_t key[16])
{
    struct redis *r = lvl;
    char name[KEYBUF];
    key_name(r, "", key, name);
    redisReply *rep = run(r, "DEL", 2, (const char *[]){ "DEL", name }, NULL);
    if (rep)
        freeReplyObject(rep);
}

static bool redis_get(void *lvl, const uint8_t key[16], struct dspy__cache_entry **out)
{
    struct redis *r = lvl;
    char name[KEYBUF];
    bool corrupt;
    key_name(r, "", key, name);
    redisReply *rep = run(r, "GET", 2, (const char *[]){ "GET", name }, NULL);
    if (!rep)
        return false;
    if (rep->type != REDIS_REPLY_STRING) {
        if (rep->type == REDIS_REPLY_ERROR)
            dspy__cache_errlog_set(&r->errors, "redis GET: %s", rep->str);
        else
            atomic_fetch_add(&r->misses, 1);
        freeReplyObject(rep);
        return false;
    }
    *out = decode(key, rep->str, rep->len, &corrupt);
    freeReplyObject(rep);
    if (corrupt) {
        atomic_fetch_add(&r->corrupt, 1);
        dspy__cache_errlog_set(&r->errors, "redis: corrupt entry %s dropped", name);
        redis_del(r, key);
    }
    if (!*out) {
        atomic_fetch_add(&r->misses, 1);
        return false;
    }
    atomic_fetch_add(&r->hits, 1);
    return true;
}

#define MGET_CHUNK 256

/* MGET the keys still missing, in chunks of MGET_CHUNK sent as one pipeline: one round
 * trip for the whole batch. */
static void redis_get_many(void *lvl, const struct dspy_cache_key *keys, size_t n,
                           struct dspy__cache_entry **out)
{
    struct redis *r = lvl;
    size_t *idx = dspy_malloc(n * sizeof(*idx)), m = 0, chunks;
    char(*names)[KEYBUF] = NULL;
    const char **argv = NULL;
    size_t *lens = NULL;
    struct pipe_guard g;
    bool fresh, failed = false;
    redisContext *c = NULL;
    if (!idx)
        return;
    for (size_t i = 0; i < n; i++)
        if (!out[i])
            idx[m++] = i;
    if (!m)
        goto out_idx;
    names = dspy_malloc(m * sizeof(*names));
    argv = dspy_malloc((m + MGET_CHUNK) * sizeof(*argv));
    lens = dspy_malloc((m + MGET_CHUNK) * sizeof(*lens));
    if (!names || !argv || !lens || !(c = borrow(r, &fresh)))
        goto out_idx;
    chunks = (m + MGET_CHUNK - 1) / MGET_CHUNK;
    atomic_fetch_add(&r->round_trips, 1);
    guard_on(&g);
    for (size_t ch = 0, a = 0; ch < chunks; ch++) {
        size_t first = ch * MGET_CHUNK, cnt = m - first < MGET_CHUNK ? m - first : MGET_CHUNK;
        argv[a] = "MGET";
        lens[a] = 4;
        for (size_t j = 0; j < cnt; j++) {
            key_name(r, "", keys[idx[first + j]].bytes, names[first + j]);
            argv[a + 1 + j] = names[first + j];
            lens[a + 1 + j] = strlen(names[first + j]);
        }
        redisAppendCommandArgv(c, (int)cnt + 1, argv + a, lens + a);
        a += cnt + 1;
    }
    for (size_t ch = 0; ch < chunks && !failed; ch++) {
        redisReply *rep = NULL;
        size_t first = ch * MGET_CHUNK, cnt = m - first < MGET_CHUNK ? m - first : MGET_CHUNK;
        if (dspy__redis_get_reply(c, &rep) != REDIS_OK || !rep) {
            failed = true;
            break;
        }
        /* no more values than keys asked for, whatever the reply holds */
        for (size_t j = 0; rep->type == REDIS_REPLY_ARRAY && j < rep->elements && j < cnt; j++) {
            const redisReply *v = rep->element[j];
            size_t i = idx[first + j];
            bool corrupt;
            if (v->type != REDIS_REPLY_STRING) {
                atomic_fetch_add(&r->misses, 1);
                continue;
            }
            out[i] = decode(keys[i].bytes, v->str, v->len, &corrupt);
            atomic_fetch_add(out[i] ? &r->hits : &r->misses, 1);
            if (corrupt)
                atomic_fetch_add(&r->corrupt, 1);
        }
        freeReplyObject(rep);
    }
    guard_off(&g);
    if (failed) {
        char why[128];
        snprintf(why, sizeof(why), "%s", c->errstr[0] ? c->errstr : "no reply");
        if (!c->err)
            c->err = REDIS_ERR_OTHER;
        give_back(r, c);
        mark_down(r, "MGET", why);
    } else {
        give_back(r, c);
    }
out_idx:
    dspy_free(lens);
    dspy_free(argv);
    dspy_free(names);
    dspy_free(idx);
}

/* The frame of `e` and its time to live in ms as text; NULL when it is not to be written
 * (expired, Redis backing off, out of memory). The caller frees the frame. */
static unsigned char *put_frame(struct redis *r, const struct dspy__cache_entry *e, size_t *len,
                                char px[24])
{
    uint64_t now = dspy__wall_ms();
    uint64_t exp = dspy__cache_level_expiry(e, r->ttl_s, now);
    unsigned char *frame;
    if (exp <= now || is_down(r)) {
        if (exp > now)
            atomic_fetch_add(&r->skipped, 1);
        return NULL;
    }
    if (!(frame = dspy_malloc(dspy__frame_bound(e->len))))
        return NULL;
    if (dspy__frame_encode(e->key, e->data, e->len, now, exp, r->compress_min, frame, len)) {
        dspy_free(frame);
        return NULL;
    }
    snprintf(px, 24, "%llu", (unsigned long long)(exp - now));
    return frame;
}

/* Count the reply of a write (a put when `stored`); frees it. */
static void put_reply(struct redis *r, const char *what, redisReply *rep, bool stored)
{
    if (!rep)
        return;
    if (rep->type == REDIS_REPLY_ERROR)
        dspy__cache_errlog_set(&r->errors, "redis %s: %s", what, rep->str);
    else if (stored)
        atomic_fetch_add(&r->puts, 1);
    freeReplyObject(rep);
}

static void redis_put(void *lvl, struct dspy__cache_entry *e)
{
    struct redis *r = lvl;
    char name[KEYBUF], px[24];
    size_t len;
    unsigned char *frame = put_frame(r, e, &len, px);
    if (!frame)
        return;
    key_name(r, "", e->key, name);
    const char *argv[] = { "SET", name, (const char *)frame, "PX", px };
    size_t lens[] = { 3, strlen(name), len, 2, strlen(px) };
    put_reply(r, "SET", run(r, "SET", 5, argv, lens), true);
    dspy_free(frame);
}

/* Escape glob characters so the prefix matches only itself in SCAN ... MATCH. */
static void match_pattern(const struct redis *r, const char *tail, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = r->prefix; *p && n + 2 < cap; p++) {
        if (strchr("*?[]\\", *p))
            out[n++] = '\\';
        out[n++] = *p;
    }
    snprintf(out + n, cap - n, "%s", tail);
}

static const char *reply_type_name(int type)
{
    switch (type) {
    case REDIS_REPLY_ARRAY: return "an array";
    case REDIS_REPLY_INTEGER: return "an integer";
    case REDIS_REPLY_NIL: return "nil";
    case REDIS_REPLY_STATUS: return "a status";
    case REDIS_REPLY_ERROR: return "an error";
    default: return "another type";
    }
}

/* Walk keys under the prefix matching `tail`, calling `batch` with each SCAN page (whose
 * elements are checked to be strings: the batches read them as such). */
typedef dspy_status (*scan_fn)(struct redis *r, redisReply *keys, void *ud);

static dspy_status scan(struct redis *r, const char *tail, scan_fn batch, void *ud,
                        struct dspy_error *err)
{
    char pattern[2 * PREFIX_MAX + 40], cursor[32] = "0";
    dspy_status rc = DSPY_OK;
    match_pattern(r, tail, pattern, sizeof(pattern));
    do {
        const char *argv[] = { "SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_BATCH };
        redisReply *rep = run(r, "SCAN", 6, argv, NULL);
        if (!rep)
            return dspy__err(err, DSPY_ELM_NETWORK, "redis unreachable during SCAN");
        if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
            rep->element[0]->type != REDIS_REPLY_STRING ||
            rep->element[1]->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(rep);
            return dspy__err(err, DSPY_EPARSE,
                             "unexpected SCAN reply from redis: not a cursor and an array");
        }
        const redisReply *ks = rep->element[1];
        for (size_t i = 0; i < ks->elements; i++) {
            if (ks->element[i]->type != REDIS_REPLY_STRING) {
                const char *type = reply_type_name(ks->element[i]->type);
                freeReplyObject(rep);
                return dspy__err(err, DSPY_EPARSE,
                                 "unexpected SCAN reply from redis: key %zu is %s, not a string", i,
                                 type);
            }
        }
        snprintf(cursor, sizeof(cursor), "%s", rep->element[0]->str);
        if (rep->element[1]->elements)
            rc = batch(r, rep->element[1], ud);
        freeReplyObject(rep);
    } while (!rc && strcmp(cursor, "0") != 0);
    return rc;
}

static dspy_status unlink_batch(struct redis *r, redisReply *keys, void *ud)
{
    size_t n = keys->elements + 1;
    const char **argv = dspy_malloc(n * sizeof(*argv));
    size_t *lens = dspy_malloc(n * sizeof(*lens));
    dspy_status rc = DSPY_OK;
    (void)ud;
    if (!argv || !lens) {
        rc = DSPY_ENOMEM;
        goto out_free;
    }
    argv[0] = "UNLINK";
    lens[0] = 6;
    for (size_t i = 0; i < keys->elements; i++) {
        argv[i + 1] = keys->element[i]->str;
        lens[i + 1] = keys->element[i]->len;
    }
    redisReply *rep = run(r, "UNLINK", (int)n, argv, lens);
    if (!rep)
        rc = DSPY_ELM_NETWORK;
    else
        freeReplyObject(rep);
out_free:
    dspy_free(argv);
    dspy_free(lens);
    return rc;
}

static dspy_status redis_clear(void *lvl, struct dspy_error *err)
{
    dspy_status rc = scan(lvl, "*", unlink_batch, NULL, err);
    if (rc == DSPY_ELM_NETWORK || rc == DSPY_ENOMEM)
        return dspy__err(err, rc, "redis clear failed: %s", dspy_strerror(rc));
    return rc;
}

struct each_ctx {
    dspy__cache_each_fn fn;
    void *ud;
};

/* One SCAN page: fetch the values in one pipelined round trip, then report them. */
static dspy_status each_batch(struct redis *r, redisReply *keys, void *ud)
{
    struct each_ctx *ctx = ud;
    struct pipe_guard g;
    dspy_status rc = DSPY_OK;
    bool fresh;
    redisContext *c = borrow(r, &fresh);
    if (!c)
        return DSPY_ELM_NETWORK;
    atomic_fetch_add(&r->round_trips, 1);
    guard_on(&g);
    for (size_t i = 0; i < keys->elements; i++)
        redisAppendCommand(c, "GET %b", keys->element[i]->str, keys->element[i]->len);
    for (size_t i = 0; i < keys->elements; i++) {
        redisReply *rep = NULL;
        struct dspy_cache_key k;
        if (dspy__redis_get_reply(c, &rep) != REDIS_OK) {
            rc = DSPY_ELM_NETWORK;
            break;
        }
        const redisReply *kr = keys->element[i];
        if (!rc && rep->type == REDIS_REPLY_STRING && kr->len == r->prefix_len + 32 &&
            dspy_cache_key_parse_hex(kr->str + r->prefix_len, &k) == DSPY_OK) {
            struct dspy__frame f;
            if (dspy__frame_check(k.bytes, rep->str, rep->len, &f) == DSPY_OK) {
                unsigned char *v = dspy_malloc(f.value_len);
                if (!v)
                    rc = DSPY_ENOMEM;
                else if (dspy__frame_decode(&f, v) == DSPY_OK)
                    rc = ctx->fn(ctx->ud, k.bytes, v, f.value_len, f.expires_ms);
                dspy_free(v);
            }
        }
        freeReplyObject(rep);
    }
    guard_off(&g);
    give_back(r, c);
    return rc;
}

static dspy_status redis_each(void *lvl, dspy__cache_each_fn fn, void *ud, struct dspy_error *err)
{
    struct each_ctx ctx = { fn, ud };
    /* 32 single-character wildcards: value keys only, not lease keys */
    dspy_status rc = scan(lvl, "????????????????????????????????", each_batch, &ctx, err);
    if (rc == DSPY_ELM_NETWORK)
        return dspy__err(err, rc, "redis unreachable during export");
    return rc;
}

static void redis_stats(void *lvl, struct dspy_cache_level_stats *st)
{
    struct redis *r = lvl;
    memset(st, 0, sizeof(*st));
    st->hits = atomic_load(&r->hits);
    st->misses = atomic_load(&r->misses);
    st->puts = atomic_load(&r->puts);
    st->corrupt = atomic_load(&r->corrupt);
    st->skipped = atomic_load(&r->skipped);
    st->round_trips = atomic_load(&r->round_trips);
    st->errors = atomic_load(&r->errors.count);
    dspy__cache_errlog_get(&r->errors, st->last_error, sizeof(st->last_error));
}

bool dspy__cache_redis_up(void *lvl)
{
    return !is_down(lvl);
}

enum dspy__lease_state dspy__cache_redis_lease(void *lvl, const uint8_t key[16], const char *token,
                                               unsigned lease_ms, struct dspy__cache_entry **out)
{
    /* One atomic round trip: the value if present, else try to take the lease. */
    static const char script[] =
        "local v = redis.call('GET', KEYS[1]) "
        "if v then return {1, v} end "
        "if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end "
        "return {0}";
    struct redis *r = lvl;
    char name[KEYBUF], lease[KEYBUF], ms[16];
    enum dspy__lease_state st = DSPY__LEASE_DOWN;
    bool corrupt;
    key_name(r, "", key, name);
    key_name(r, "lease:", key, lease);
    snprintf(ms, sizeof(ms), "%u", lease_ms);
    const char *argv[] = { "EVAL", script, "2", name, lease, token, ms };
    redisReply *rep = run(r, "EVAL", 7, argv, NULL);
    if (!rep)
        return DSPY__LEASE_DOWN;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
        rep->element[0]->type != REDIS_REPLY_INTEGER) {
        dspy__cache_errlog_set(&r->errors, "redis lease: %s",
                               rep->type == REDIS_REPLY_ERROR ? rep->str : "bad reply");
    } else if (rep->element[0]->integer == 2) {
        st = DSPY__LEASE_ACQUIRED;
    } else if (rep->element[0]->integer == 0) {
        st = DSPY__LEASE_BUSY;
    } else if (rep->elements == 2 && rep->element[1]->type == REDIS_REPLY_STRING) {
        *out = decode(key, rep->element[1]->str, rep->element[1]->len, &corrupt);
        st = *out ? DSPY__LEASE_VALUE : DSPY__LEASE_BUSY;
        if (corrupt) {
            atomic_fetch_add(&r->corrupt, 1);
            redis_del(r, key);
        }
    }
    freeReplyObject(rep);
    return st;
}

void dspy__cache_redis_put_unlease(void *lvl, const uint8_t key[16], struct dspy__cache_entry *e,
                                   const char *token)
{
    /* One atomic round trip: the value written (when ARGV[2] is given), then the lease
     * released if it is still ours. */
    static const char script[] =
        "if ARGV[2] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end "
        "if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end "
        "return 1";
    struct redis *r = lvl;
    char name[KEYBUF], lease[KEYBUF], px[24];
    size_t len = 0;
    unsigned char *frame = e ? put_frame(r, e, &len, px) : NULL;
    key_name(r, "", key, name);
    key_name(r, "lease:", key, lease);
    const char *argv[] = { "EVAL", script, "2", name, lease, token, (const char *)frame, px };
    size_t lens[] = { 4,   strlen(script),        1, strlen(name), strlen(lease), strlen(token),
                      len, frame ? strlen(px) : 0 };
    put_reply(r, "EVAL", run(r, "EVAL", frame ? 8 : 6, argv, lens), frame != NULL);
    dspy_free(frame);
}

/* --- setup -------------------------------------------------------------------------- */

static char *dup_range(const char *s, size_t n)
{
    return dspy_strndup(s, n);
}

/* redis://[user:password@]host[:port][/db] or unix:///path */
static dspy_status parse_url(struct redis *r, const char *url, struct dspy_error *err)
{
    const char *p, *at, *slash, *colon;
    if (strncmp(url, "unix://", 7) == 0) {
        if (!(r->unix_path = dspy_strdup(url + 7)))
            return DSPY_ENOMEM;
        return url[7] ? DSPY_OK : dspy__err(err, DSPY_EINVAL, "redis URL: no socket path");
    }
    if (strncmp(url, "redis://", 8) != 0)
        return dspy__err(err, DSPY_EINVAL,
                         "redis URL must start with redis:// or unix:// (got \"%.64s\")", url);
    p = url + 8;
    slash = strchr(p, '/');
    at = strchr(p, '@');
    if (at && (!slash || at < slash)) {
        colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            if (colon > p && !(r->user = dup_range(p, (size_t)(colon - p))))
                return DSPY_ENOMEM;
            if (!(r->password = dup_range(colon + 1, (size_t)(at - colon - 1))))
                return DSPY_ENOMEM;
        } else if (!(r->password = dup_range(p, (size_t)(at - p)))) {
            return DSPY_ENOMEM;
        }
        p = at + 1;
    }
    size_t hostlen = slash ? (size_t)(slash - p) : strlen(p);
    colon = memchr(p, ':', hostlen);
    r->port = 6379;
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (end != p + hostlen || port <= 0 || port > 65535)
            return dspy__err(err, DSPY_EINVAL, "redis URL: bad port in \"%.64s\"", url);
        r->port = (int)port;
        hostlen = (size_t)(colon - p);
    }
    if (!(r->host = hostlen ? dup_range(p, hostlen) : dspy_strdup("127.0.0.1")))
        return DSPY_ENOMEM;
    if (slash && slash[1]) {
        char *end;
        long db = strtol(slash + 1, &end, 10);
        if (*end || db < 0 || db > 1000000)
            return dspy__err(err, DSPY_EINVAL, "redis URL: bad database in \"%.64s\"", url);
        r->db = (int)db;
    }
    return DSPY_OK;
}

static void redis_free(void *lvl)
{
    struct redis *r = lvl;
    if (!r)
        return;
    for (unsigned i = 0; i < r->nidle; i++)
        dspy__redis_free(r->idle[i]);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    dspy_free(r->idle);
    dspy_free(r->host);
    dspy_free(r->unix_path);
    dspy_free(r->user);
    dspy_free(r->password);
    dspy_free(r);
}

dspy_status dspy__cache_redis_new(const struct dspy_cache_options *o, void **out,
                                  struct dspy_error *err)
{
    struct redis *r;
    dspy_status rc;
    const char *prefix = o->redis_prefix ? o->redis_prefix : DSPY_CACHE_DEFAULT_REDIS_PREFIX;
    if (!o->redis_url)
        return dspy__err(err, DSPY_EINVAL, "cache: L2 needs redis_url");
    if (strlen(prefix) > PREFIX_MAX)
        return dspy__err(err, DSPY_EINVAL, "cache: redis_prefix longer than %d", PREFIX_MAX);
    if (!(o->redis_ttl_s > 0))
        return dspy__err(err, DSPY_EINVAL, "cache: redis_ttl_s must be > 0");
    if (!(r = dspy_calloc(1, sizeof(*r))))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    snprintf(r->prefix, sizeof(r->prefix), "%s", prefix);
    r->prefix_len = strlen(r->prefix);
    unsigned ms = o->redis_timeout_ms ? o->redis_timeout_ms : DSPY_CACHE_DEFAULT_REDIS_TIMEOUT_MS;
    r->timeout.tv_sec = ms / 1000;
    r->timeout.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    r->backoff_max_ms = o->redis_backoff_max_ms ? o->redis_backoff_max_ms
                                                : DSPY_CACHE_DEFAULT_REDIS_BACKOFF_MAX_MS;
    r->backoff_ms = BACKOFF_START_MS;
    r->ttl_s = o->redis_ttl_s;
    r->compress_min = o->redis_compress_min;
    r->pool = o->redis_pool ? o->redis_pool : DSPY_CACHE_DEFAULT_REDIS_POOL;
    if (r->pool > 256)
        r->pool = 256;
    if (!(r->idle = dspy_calloc(r->pool, sizeof(*r->idle)))) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out_free;
    }
    if ((rc = parse_url(r, o->redis_url, err))) {
        if (rc == DSPY_ENOMEM)
            dspy__err(err, rc, "out of memory");
        goto out_free;
    }
    /* Open one connection now so a reachable Redis is ready; failure only degrades. */
    bool fresh;
    redisContext *c = borrow(r, &fresh);
    if (c)
        give_back(r, c);
    *out = r;
    return DSPY_OK;
out_free:
    redis_free(r);
    return rc;
}

const struct dspy__cache_level_ops dspy__cache_redis_ops = {
    "l2",        redis_get,  redis_put,      redis_del, redis_clear, redis_each,
    redis_stats, redis_free, redis_get_many, NULL, /* Redis evicts and expires on its own and says nothing */
};

/* The Redis Streams transport (jobs layer): one stream per priority read by a consumer
 * group, an events stream back to the server, results written once per job id, reclaim of
 * stalled jobs with XAUTOCLAIM, heartbeats with XCLAIM JUSTID, and the dead-letter stream
 * after max_attempts deliveries (Redis 7.0 has no XNACK or idempotent XADD, so these are
 * ours). Both the server's side and `dspyc worker`. */
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/status.h"
#include "jobs/jobs_int.h"

struct rconf {
    char host[256];
    int port, db;
};

static dspy_status parse_url(const char *url, struct rconf *c, struct dspy_error *err)
{
    c->port = 6379;
    c->db = 0;
    const char *p = url;
    if (!strncmp(p, "redis://", 8))
        p += 8;
    else
        return dspy__err(err, DSPY_EINVAL, "a Redis URL is redis://HOST[:PORT][/DB], not '%s'",
                         url);
    size_t n = strcspn(p, ":/");
    if (!n || n >= sizeof(c->host))
        return dspy__err(err, DSPY_EINVAL, "Redis URL '%s': no host", url);
    memcpy(c->host, p, n);
    c->host[n] = 0;
    p += n;
    if (*p == ':') {
        c->port = atoi(p + 1);
        p += 1 + strspn(p + 1, "0123456789");
    }
    if (*p == '/')
        c->db = atoi(p + 1);
    if (c->port <= 0 || c->port > 65535)
        return dspy__err(err, DSPY_EINVAL, "Redis URL '%s': bad port", url);
    return DSPY_OK;
}

static void msleep(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static redisContext *rconnect(const struct rconf *c)
{
    struct timeval tv = { 2, 0 };
    redisContext *ctx = redisConnectWithTimeout(c->host, c->port, tv);
    if (!ctx || ctx->err) {
        if (ctx)
            redisFree(ctx);
        return NULL;
    }
    redisSetTimeout(ctx, (struct timeval){ 5, 0 });
    if (c->db) {
        redisReply *r = redisCommand(ctx, "SELECT %d", c->db);
        freeReplyObject(r);
    }
    /* the groups, created once (BUSYGROUP afterwards is fine) */
    for (int p = 0; p < 10; p++) {
        redisReply *r = redisCommand(ctx,
                                     "XGROUP CREATE " DSPY__RJ_STREAM "%d " DSPY__RJ_GROUP
                                     " 0 MKSTREAM",
                                     p);
        freeReplyObject(r);
    }
    return ctx;
}

/* A command on *ctx, reconnecting once when the connection is gone. */
static redisReply *cmdv(redisContext **ctx, const struct rconf *c, int argc, const char **argv,
                        const size_t *lens)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!*ctx && !(*ctx = rconnect(c)))
            return NULL;
        redisReply *r = redisCommandArgv(*ctx, argc, argv, lens);
        if (r)
            return r;
        redisFree(*ctx);
        *ctx = NULL;
    }
    return NULL;
}

static const char *field(const redisReply *kv, const char *name, size_t *len)
{
    for (size_t i = 0; kv && i + 1 < kv->elements; i += 2)
        if (kv->element[i]->type == REDIS_REPLY_STRING && !strcmp(kv->element[i]->str, name)) {
            if (len)
                *len = kv->element[i + 1]->len;
            return kv->element[i + 1]->str;
        }
    return NULL;
}

/* ---- the server's side -------------------------------------------------------------------- */

struct dspy__rjobs {
    struct rconf conf;
    pthread_mutex_t lock; /* guards ctx */
    redisContext *ctx;
    pthread_t thread;
    atomic_bool stop;
    dspy__rjobs_event_fn fn;
    void *ud;
    atomic_uint workers, slots, running; /* live workers, from their heartbeats */
};

/* The worker registry: each worker's heartbeat writes "CONCURRENCY RUNNING UNIX_MS". */
static void read_pool(struct dspy__rjobs *r, redisContext *ctx)
{
    redisReply *rep = redisCommand(ctx, "HGETALL " DSPY__RJ_WORKERS);
    unsigned w = 0, slots = 0, running = 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    for (size_t i = 0; rep && rep->type == REDIS_REPLY_ARRAY && i + 1 < rep->elements; i += 2) {
        unsigned c = 0, n = 0;
        long long at = 0;
        if (sscanf(rep->element[i + 1]->str, "%u %u %lld", &c, &n, &at) == 3 && now - at < 15000) {
            w++;
            slots += c;
            running += n;
        }
    }
    freeReplyObject(rep);
    atomic_store(&r->workers, w);
    atomic_store(&r->slots, slots);
    atomic_store(&r->running, running);
}

void dspy__rjobs_pool(struct dspy__rjobs *r, unsigned *workers, unsigned *slots, unsigned *running)
{
    *workers = atomic_load(&r->workers);
    *slots = atomic_load(&r->slots);
    *running = atomic_load(&r->running);
}

static void *events_main(void *arg)
{
    struct dspy__rjobs *r = arg;
    redisContext *ctx = NULL;
    char last[64] = "0";
    uint64_t next_pool = 0;
    while (!atomic_load(&r->stop)) {
        if (!ctx && !(ctx = rconnect(&r->conf))) {
            msleep(200);
            continue;
        }
        struct timespec mt;
        clock_gettime(CLOCK_MONOTONIC, &mt);
        uint64_t now_ms = (uint64_t)mt.tv_sec * 1000 + (uint64_t)mt.tv_nsec / 1000000;
        if (now_ms >= next_pool) {
            next_pool = now_ms + 500;
            read_pool(r, ctx);
        }
        redisReply *rep = redisCommand(ctx, "XREAD COUNT 500 BLOCK 200 STREAMS %s %s",
                                       DSPY__RJ_EVENTS, last);
        if (!rep) {
            redisFree(ctx);
            ctx = NULL;
            continue;
        }
        bool lost = false;
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 1) {
            redisReply *entries = rep->element[0]->element[1];
            for (size_t i = 0; i < entries->elements && !lost; i++) {
                redisReply *e = entries->element[i];
                redisReply *kv = e->element[1];
                const char *id = field(kv, "id", NULL), *state = field(kv, "state", NULL);
                redisReply *res = NULL;
                if (id && state && !strcmp(state, "succeeded") &&
                    !(res = redisCommand(ctx, "GET " DSPY__RJ_RESULT "%s", id))) {
                    lost = true; /* read this event again once connected */
                    break;
                }
                if (id && state)
                    r->fn(r->ud, id, state, field(kv, "error", NULL), field(kv, "progress", NULL),
                          res && res->type == REDIS_REPLY_STRING ? res->str : NULL);
                freeReplyObject(res);
                snprintf(last, sizeof(last), "%s", e->element[0]->str);
            }
        }
        if (lost) {
            redisFree(ctx);
            ctx = NULL;
        }
        freeReplyObject(rep);
    }
    if (ctx)
        redisFree(ctx);
    return NULL;
}

dspy_status dspy__rjobs_open(const char *url, dspy__rjobs_event_fn fn, void *ud,
                             struct dspy__rjobs **out, struct dspy_error *err)
{
    *out = NULL;
    struct dspy__rjobs *r = dspy_calloc(1, sizeof(*r));
    if (!r)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    dspy_status rc = parse_url(url, &r->conf, err);
    if (rc) {
        dspy_free(r);
        return rc;
    }
    if (!(r->ctx = rconnect(&r->conf))) {
        dspy_free(r);
        return dspy__err(err, DSPY_EIO, "cannot connect to Redis at %s", url);
    }
    pthread_mutex_init(&r->lock, NULL);
    atomic_init(&r->stop, false);
    atomic_init(&r->workers, 0);
    atomic_init(&r->slots, 0);
    atomic_init(&r->running, 0);
    r->fn = fn;
    r->ud = ud;
    if (pthread_create(&r->thread, NULL, events_main, r)) {
        redisFree(r->ctx);
        pthread_mutex_destroy(&r->lock);
        dspy_free(r);
        return dspy__err(err, DSPY_ERESOURCE, "cannot start the Redis events thread");
    }
    *out = r;
    return DSPY_OK;
}

void dspy__rjobs_close(struct dspy__rjobs *r)
{
    if (!r)
        return;
    atomic_store(&r->stop, true);
    pthread_join(r->thread, NULL);
    if (r->ctx)
        redisFree(r->ctx);
    pthread_mutex_destroy(&r->lock);
    dspy_free(r);
}

dspy_status dspy__rjobs_publish(struct dspy__rjobs *r, const char *id, int priority,
                                const char *spec, unsigned attempts)
{
    char stream[32], att[16];
    snprintf(stream, sizeof(stream), DSPY__RJ_STREAM "%d", priority);
    snprintf(att, sizeof(att), "%u", attempts);
    const char *argv[] = { "XADD", stream, "*", "id", id, "spec", spec, "attempts", att };
    size_t lens[9];
    for (int i = 0; i < 9; i++)
        lens[i] = strlen(argv[i]);
    pthread_mutex_lock(&r->lock);
    redisReply *rep = cmdv(&r->ctx, &r->conf, 9, argv, lens);
    pthread_mutex_unlock(&r->lock);
    dspy_status rc = rep && rep->type == REDIS_REPLY_STRING ? DSPY_OK : DSPY_EIO;
    freeReplyObject(rep);
    return rc;
}

dspy_status dspy__rjobs_cancel(struct dspy__rjobs *r, const char *id)
{
    char key[96];
    snprintf(key, sizeof(key), DSPY__RJ_CANCEL "%s", id);
    const char *argv[] = { "SET", key, "1", "EX", "86400" };
    size_t lens[5];
    for (int i = 0; i < 5; i++)
        lens[i] = strlen(argv[i]);
    pthread_mutex_lock(&r->lock);
    redisReply *rep = cmdv(&r->ctx, &r->conf, 5, argv, lens);
    pthread_mutex_unlock(&r->lock);
    dspy_status rc = rep ? DSPY_OK : DSPY_EIO;
    freeReplyObject(rep);
    return rc;
}

/* ---- workers ------------------------------------------------------------------------------ */

struct inflight {
    char stream[32];
    char entry[64];
    char id[40];
    atomic_bool cancel;
    bool used;
};

struct wpool {
    const struct dspy_worker_options *o;
    struct rconf conf;
    char name[128];
    unsigned max_attempts;
    long visibility_ms;
    pthread_mutex_t lock; /* guards slots */
    struct inflight *slots;
    unsigned nslots;
    atomic_bool stop;
};

struct wthread {
    struct wpool *w;
    unsigned slot;
    redisContext *ctx;
    uint64_t last_progress_ns;
};

static bool stopping(struct wpool *w)
{
    return atomic_load(&w->stop) || (w->o->stop && __atomic_load_n(w->o->stop, __ATOMIC_RELAXED));
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static redisReply *wcmd(struct wthread *t, int argc, const char **argv)
{
    size_t lens[40];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return cmdv(&t->ctx, &t->w->conf, argc, argv, lens);
}

static void event(struct wthread *t, const char *id, const char *state, const char *error,
                  const char *progress)
{
    const char *argv[12] = { "XADD", DSPY__RJ_EVENTS, "MAXLEN", "~", "200000", "*", "id",
                             id,     "state",         state };
    int n = 10;
    if (error) {
        argv[n++] = "error";
        argv[n++] = error;
    } else if (progress) {
        argv[n++] = "progress";
        argv[n++] = progress;
    }
    freeReplyObject(wcmd(t, n, argv));
}

static void ack(struct wthread *t, const char *stream, const char *entry)
{
    const char *argv[] = { "XACK", stream, DSPY__RJ_GROUP, entry };
    freeReplyObject(wcmd(t, 4, argv));
}

static void on_progress(void *ud, const struct dspy_job_progress *p)
{
    struct wthread *t = ud;
    uint64_t now = mono_ns();
    if (now - t->last_progress_ns < 200000000u) /* at most 5 a second per job */
        return;
    t->last_progress_ns = now;
    char buf[512];
    char best[32] = "null", eta[32] = "null";
    if (p->best == p->best)
        snprintf(best, sizeof(best), "%.4f", p->best);
    if (p->eta_s >= 0)
        snprintf(eta, sizeof(eta), "%.3f", p->eta_s);
    snprintf(buf, sizeof(buf),
             "{\"done\":%llu,\"planned\":%llu,\"fraction\":%.4f,\"iterations_per_s\":%.4f,"
             "\"eta_s\":%s,\"warned\":%s,\"exceeded\":%s,\"best_score\":%s,\"lm_calls\":%llu}",
             (unsigned long long)p->done, (unsigned long long)p->planned, p->fraction,
             p->iterations_per_s, eta, p->warned ? "true" : "false", p->exceeded ? "true" : "false",
             best, (unsigned long long)p->lm_calls);
    struct inflight *f = &t->w->slots[t->slot];
    event(t, f->id, "progress", NULL, buf);
}

static bool on_cancelled(void *ud)
{
    struct wthread *t = ud;
    return atomic_load(&t->w->slots[t->slot].cancel) || stopping(t->w);
}

/* Deliveries of one pending entry so far (XPENDING's count), 1 when unknown. */
static long deliveries(struct wthread *t, const char *stream, const char *entry)
{
    const char *argv[] = { "XPENDING", stream, DSPY__RJ_GROUP, entry, entry, "1" };
    redisReply *r = wcmd(t, 6, argv);
    long n = 1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements == 4)
        n = (long)r->element[0]->element[3]->integer;
    freeReplyObject(r);
    return n;
}

static bool exists(struct wthread *t, const char *prefix, const char *id)
{
    char key[96];
    snprintf(key, sizeof(key), "%s%s", prefix, id);
    const char *argv[] = { "EXISTS", key };
    redisReply *r = wcmd(t, 2, argv);
    bool yes = r && r->type == REDIS_REPLY_INTEGER && r->integer > 0;
    freeReplyObject(r);
    return yes;
}

/* Whether the job has a result already and whether it was cancelled: one round trip. */
static void checks(struct wthread *t, const char *id, bool *done, bool *cancelled)
{
    char rkey[96], ckey[96];
    snprintf(rkey, sizeof(rkey), DSPY__RJ_RESULT "%s", id);
    snprintf(ckey, sizeof(ckey), DSPY__RJ_CANCEL "%s", id);
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!t->ctx && !(t->ctx = rconnect(&t->w->conf)))
            return;
        redisAppendCommand(t->ctx, "EXISTS %s", rkey);
        redisAppendCommand(t->ctx, "EXISTS %s", ckey);
        redisReply *a = NULL, *b = NULL;
        if (redisGetReply(t->ctx, (void **)&a) == REDIS_OK &&
            redisGetReply(t->ctx, (void **)&b) == REDIS_OK) {
            *done = a->type == REDIS_REPLY_INTEGER && a->integer > 0;
            *cancelled = b->type == REDIS_REPLY_INTEGER && b->integer > 0;
            freeReplyObject(a);
            freeReplyObject(b);
            return;
        }
        freeReplyObject(a);
        freeReplyObject(b);
        redisFree(t->ctx);
        t->ctx = NULL;
    }
}

/* The end of a job in one round trip: its result (once: NX), its event, the
 * acknowledgement. False when Redis is gone (the entry stays pending and comes again). */
static bool finish_job(struct wthread *t, const char *stream, const char *entry, const char *id,
                       const char *result, const char *state, const char *error)
{
    if (!t->ctx && !(t->ctx = rconnect(&t->w->conf)))
        return false;
    char rkey[96];
    snprintf(rkey, sizeof(rkey), DSPY__RJ_RESULT "%s", id);
    int n = 0;
    if (result) {
        const char *argv[] = { "SET", rkey, result, "NX" };
        redisAppendCommandArgv(t->ctx, 4, argv, NULL);
        n++;
    }
    if (error) {
        const char *argv[] = { "XADD", DSPY__RJ_EVENTS, "MAXLEN", "~",     "200000", "*", "id",
                               id,     "state",         state,    "error", error };
        redisAppendCommandArgv(t->ctx, 12, argv, NULL);
    } else {
        const char *argv[] = { "XADD", DSPY__RJ_EVENTS, "MAXLEN", "~", "200000", "*", "id",
                               id,     "state",         state };
        redisAppendCommandArgv(t->ctx, 10, argv, NULL);
    }
    const char *argv[] = { "XACK", stream, DSPY__RJ_GROUP, entry };
    redisAppendCommandArgv(t->ctx, 4, argv, NULL);
    n += 2;
    bool ok = true;
    for (int i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(t->ctx, (void **)&r) != REDIS_OK) {
            ok = false;
            break;
        }
        freeReplyObject(r);
    }
    if (!ok) {
        redisFree(t->ctx);
        t->ctx = NULL;
    }
    return ok;
}

/* Run one claimed entry. `flags` NULL: check the result and cancel keys here; else the
 * claiming script did ("done", "cancelled" or "running": it reported the run already). */
static void process(struct wthread *t, const char *stream, const redisReply *e, bool reclaimed,
                    const char *flags)
{
    struct wpool *w = t->w;
    const char *entry = e->element[0]->str;
    const redisReply *kv = e->element[1];
    if (kv->type != REDIS_REPLY_ARRAY) { /* deleted under us */
        ack(t, stream, entry);
        return;
    }
    const char *id = field(kv, "id", NULL), *spec_text = field(kv, "spec", NULL);
    if (!id || !spec_text) {
        ack(t, stream, entry);
        return;
    }
    bool done = false, cancelled = false;
    if (flags) {
        done = !strcmp(flags, "done");
        cancelled = !strcmp(flags, "cancelled");
    } else {
        checks(t, id, &done, &cancelled);
    }
    if (done) { /* ran before: tell again, do not run twice */
        event(t, id, "succeeded", NULL, NULL);
        ack(t, stream, entry);
        return;
    }
    if (cancelled) {
        event(t, id, "cancelled", "cancelled", NULL);
        ack(t, stream, entry);
        return;
    }
    long n = reclaimed ? deliveries(t, stream, entry) : 1;
    if (n > (long)w->max_attempts) {
        char why[96];
        snprintf(why, sizeof(why), "delivered %ld times without an answer", n - 1);
        const char *argv[] = {
            "XADD", DSPY__RJ_DEAD, "*", "id", id, "spec", spec_text, "error", why
        };
        freeReplyObject(wcmd(t, 9, argv));
        event(t, id, "dead", why, NULL);
        ack(t, stream, entry);
        return;
    }
    struct inflight *f = &w->slots[t->slot];
    pthread_mutex_lock(&w->lock);
    snprintf(f->stream, sizeof(f->stream), "%s", stream);
    snprintf(f->entry, sizeof(f->entry), "%s", entry);
    snprintf(f->id, sizeof(f->id), "%s", id);
    atomic_store(&f->cancel, false);
    f->used = true;
    pthread_mutex_unlock(&w->lock);
    if (!flags)
        event(t, id, "running", NULL, NULL);

    json_t *spec = json_loads(spec_text, 0, NULL);
    json_t *result = NULL;
    struct dspy_error err;
    dspy_error_clear(&err);
    dspy_status rc;
    char dir[4200] = "";
    if (w->o->checkpoint_root && spec && dspy__job_kind(spec) == 0)
        snprintf(dir, sizeof(dir), "%s/%s", w->o->checkpoint_root, id);
    if (!spec || dspy_job_spec_check(spec, &err)) {
        rc = DSPY_EINVAL;
        if (!err.message[0])
            snprintf(err.message, sizeof(err.message), "the spec is not JSON");
    } else {
        struct dspy_job_exec_options eo = { w->o->lm,    w->o->lm_userdata, dir[0] ? dir : NULL,
                                            on_progress, on_cancelled,      t };
        rc = dspy_job_execute(spec, &eo, &result, &err);
    }
    json_decref(spec);
    pthread_mutex_lock(&w->lock);
    f->used = false;
    pthread_mutex_unlock(&w->lock);
    if (stopping(w) && rc == DSPY_ECANCELED && !atomic_load(&f->cancel)) {
        /* shutting down: leave it pending; another worker reclaims it */
        json_decref(result);
        return;
    }
    char *text = !rc ? json_dumps(result, JSON_COMPACT) : NULL;
    json_decref(result);
    if (!rc)
        finish_job(t, stream, entry, id, text ? text : "null", "succeeded", NULL);
    else if (rc == DSPY_ECANCELED)
        finish_job(t, stream, entry, id, NULL, "cancelled", "cancelled");
    else
        finish_job(t, stream, entry, id, NULL, "failed",
                   err.message[0] ? err.message : dspy_strerror(rc));
    dspy_free(text); /* jansson allocates through dspy_malloc */
}

/* One round trip for "the oldest new entry of the highest priority that has one", its checks
 * and its "running" event: a script tries the streams from priority 9 down (XREADGROUP
 * without BLOCK is allowed in scripts), looks at the job's result and cancel keys, and reports
 * the run unless either is set. It returns {stream, entry, "running"|"done"|"cancelled"} or
 * nil. */
static const char READ_SCRIPT[] =
    "for i = 1, #KEYS do "
    " local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', '1', 'STREAMS', "
    "KEYS[i], '>') "
    " if r then "
    "  local e = r[1][2][1] "
    "  local f = e[2] "
    "  local id = nil "
    "  for k = 1, #f, 2 do if f[k] == 'id' then id = f[k + 1] end end "
    "  local flag = 'running' "
    "  if id then "
    "   if redis.call('EXISTS', ARGV[3] .. id) == 1 then flag = 'done' "
    "   elseif redis.call('EXISTS', ARGV[4] .. id) == 1 then flag = 'cancelled' "
    "   else redis.call('XADD', ARGV[5], 'MAXLEN', '~', '200000', '*', 'id', id, 'state', "
    "'running') end "
    "  end "
    "  return {KEYS[i], e, flag} "
    " end "
    "end "
    "return false";

static bool read_new(struct wthread *t)
{
    char streams[10][24];
    const char *argv[32] = { "EVAL", READ_SCRIPT, "10" };
    int n = 3;
    for (int p = 9; p >= 0; p--) {
        snprintf(streams[p], sizeof(streams[p]), DSPY__RJ_STREAM "%d", p);
        argv[n++] = streams[p];
    }
    argv[n++] = DSPY__RJ_GROUP;
    argv[n++] = t->w->name;
    argv[n++] = DSPY__RJ_RESULT;
    argv[n++] = DSPY__RJ_CANCEL;
    argv[n++] = DSPY__RJ_EVENTS;
    redisReply *r = wcmd(t, n, argv);
    if (!r) {
        msleep(200);
        return false;
    }
    bool got = false;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
        process(t, r->element[0]->str, r->element[1], false, r->element[2]->str);
        got = true;
    } else if (r->type == REDIS_REPLY_ERROR && strstr(r->str, "NOGROUP")) {
        redisFree(t->ctx); /* Redis lost its data: the next connection makes the groups */
        t->ctx = NULL;
    }
    freeReplyObject(r);
    if (got)
        return true;
    /* nothing anywhere: wait on all of them at once */
    const char *bargv[32] = { "XREADGROUP", "GROUP", DSPY__RJ_GROUP, t->w->name, "COUNT",
                              "1",          "BLOCK", "100",          "STREAMS" };
    n = 9;
    for (int p = 9; p >= 0; p--)
        bargv[n++] = streams[p];
    for (int p = 9; p >= 0; p--)
        bargv[n++] = ">";
    r = wcmd(t, n, bargv);
    if (!r)
        return false;
    if (r->type == REDIS_REPLY_ARRAY)
        for (size_t k = 0; k < r->elements; k++) {
            redisReply *entries = r->element[k]->element[1];
            for (size_t i = 0; i < entries->elements; i++) {
                process(t, r->element[k]->element[0]->str, entries->element[i], false, NULL);
                got = true;
            }
        }
    freeReplyObject(r);
    return got;
}

/* Take over one entry idle past the visibility timeout (a dead worker's), if any. */
static bool reclaim(struct wthread *t)
{
    char idle[32];
    snprintf(idle, sizeof(idle), "%ld", t->w->visibility_ms);
    for (int p = 9; p >= 0; p--) {
        char stream[24];
        snprintf(stream, sizeof(stream), DSPY__RJ_STREAM "%d", p);
        const char *argv[] = { "XAUTOCLAIM", stream, DSPY__RJ_GROUP, t->w->name,
                               idle,         "0-0",  "COUNT",        "1" };
        redisReply *r = wcmd(t, 8, argv);
        bool got = false;
        /* Redis 7: [cursor, [entries], [deleted ids]] */
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
            r->element[1]->type == REDIS_REPLY_ARRAY && r->element[1]->elements) {
            process(t, stream, r->element[1]->element[0], true, NULL);
            got = true;
        }
        freeReplyObject(r);
        if (got)
            return true;
    }
    return false;
}

static void *wthread_main(void *arg)
{
    struct wthread *t = arg;
    uint64_t next_reclaim = 0;
    while (!stopping(t->w)) {
        uint64_t now = mono_ns();
        if (now >= next_reclaim) {
            next_reclaim = now + (uint64_t)t->w->visibility_ms * 1000000u / 2;
            if (reclaim(t))
                continue;
        }
        read_new(t);
    }
    if (t->ctx)
        redisFree(t->ctx);
    t->ctx = NULL;
    return NULL;
}

/* Keeps this worker's jobs from looking stalled (XCLAIM JUSTID resets their idle time
 * without counting a delivery) and sees cancellations. */
static void *heartbeat_main(void *arg)
{
    struct wpool *w = arg;
    struct wthread hb = { w, 0, NULL, 0 };
    long every = w->visibility_ms / 4 > 50 ? w->visibility_ms / 4 : 50;
    long every_reg = every < 1000 ? every : 1000;
    if (every > every_reg)
        every = every_reg;
    while (!stopping(w)) {
        unsigned busy = 0;
        for (unsigned i = 0; i < w->nslots; i++) {
            pthread_mutex_lock(&w->lock);
            busy += w->slots[i].used;
            pthread_mutex_unlock(&w->lock);
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        char val[64];
        snprintf(val, sizeof(val), "%u %u %lld", w->nslots, busy,
                 (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
        const char *reg[] = { "HSET", DSPY__RJ_WORKERS, w->name, val };
        freeReplyObject(wcmd(&hb, 4, reg));
        for (long slept = 0; slept < every && !stopping(w); slept += 50)
            msleep(50);
        for (unsigned i = 0; i < w->nslots; i++) {
            struct inflight f;
            pthread_mutex_lock(&w->lock);
            f = w->slots[i];
            pthread_mutex_unlock(&w->lock);
            if (!f.used)
                continue;
            const char *argv[] = { "XCLAIM", f.stream, DSPY__RJ_GROUP, w->name,
                                   "0",      f.entry,  "JUSTID" };
            freeReplyObject(wcmd(&hb, 7, argv));
            if (exists(&hb, DSPY__RJ_CANCEL, f.id))
                atomic_store(&w->slots[i].cancel, true);
        }
    }
    const char *unreg[] = { "HDEL", DSPY__RJ_WORKERS, w->name };
    freeReplyObject(wcmd(&hb, 3, unreg));
    if (hb.ctx)
        redisFree(hb.ctx);
    return NULL;
}

dspy_status dspy_worker_run(const struct dspy_worker_options *o, struct dspy_error *err)
{
    struct wpool w;
    memset(&w, 0, sizeof(w));
    w.o = o;
    if (!o->redis_url || !o->lm)
        return dspy__err(err, DSPY_EINVAL, "a worker needs a Redis URL and an LM");
    dspy_status rc = parse_url(o->redis_url, &w.conf, err);
    if (rc)
        return rc;
    redisContext *probe = rconnect(&w.conf);
    if (!probe)
        return dspy__err(err, DSPY_EIO, "cannot connect to Redis at %s", o->redis_url);
    redisFree(probe);
    if (o->name) {
        snprintf(w.name, sizeof(w.name), "%s", o->name);
    } else {
        char host[64] = "host";
        gethostname(host, sizeof(host));
        host[sizeof(host) - 1] = 0;
        snprintf(w.name, sizeof(w.name), "%s:%ld", host, (long)getpid());
    }
    w.max_attempts = o->max_attempts ? o->max_attempts : 3;
    w.visibility_ms = (long)((o->visibility_s > 0 ? o->visibility_s : 10) * 1000);
    w.nslots = o->concurrency ? o->concurrency : 4;
    atomic_init(&w.stop, false);
    pthread_mutex_init(&w.lock, NULL);
    w.slots = dspy_calloc(w.nslots, sizeof(*w.slots));
    struct wthread *ts = dspy_calloc(w.nslots, sizeof(*ts));
    pthread_t *th = dspy_calloc(w.nslots + 1, sizeof(*th));
    unsigned started = 0;
    if (!w.slots || !ts || !th) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out;
    }
    for (unsigned i = 0; i < w.nslots; i++) {
        atomic_init(&w.slots[i].cancel, false);
        ts[i] = (struct wthread){ &w, i, NULL, 0 };
    }
    if (pthread_create(&th[0], NULL, heartbeat_main, &w)) {
        rc = dspy__err(err, DSPY_ERESOURCE, "cannot start the heartbeat thread");
        goto out;
    }
    started = 1;
    for (unsigned i = 0; i < w.nslots; i++, started++)
        if (pthread_create(&th[i + 1], NULL, wthread_main, &ts[i])) {
            atomic_store(&w.stop, true);
            rc = dspy__err(err, DSPY_ERESOURCE, "cannot start worker thread %u", i);
            break;
        }
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
out:
    dspy_free(th);
    dspy_free(ts);
    dspy_free(w.slots);
    pthread_mutex_destroy(&w.lock);
    return rc;
}

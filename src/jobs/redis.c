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
#include "net/redis_client.h"

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

/* A connection with the groups made, or NULL; `why` (when not NULL) gets the reason. */
static redisContext *rconnect_why(const struct rconf *c, char *why, size_t cap)
{
    redisContext *ctx = dspy__redis_connect(c->host, c->port, NULL, (struct timeval){ 2, 0 },
                                            (struct timeval){ 5, 0 }, NULL);
    if (ctx && !ctx->err && c->db) {
        redisReply *r = dspy__redis_command(ctx, "SELECT %d", c->db);
        if (r && r->type == REDIS_REPLY_ERROR && !ctx->err) {
            ctx->err = REDIS_ERR_OTHER;
            snprintf(ctx->errstr, sizeof(ctx->errstr), "SELECT %d: %s", c->db,
                     r->str ? r->str : "refused");
        }
        freeReplyObject(r);
    }
    /* the groups, created once (BUSYGROUP afterwards is fine) */
    for (int p = 0; p < 10 && ctx && !ctx->err; p++) {
        redisReply *r = dspy__redis_command(ctx,
                                            "XGROUP CREATE " DSPY__RJ_STREAM "%d " DSPY__RJ_GROUP
                                            " 0 MKSTREAM",
                                            p);
        freeReplyObject(r);
    }
    if (!ctx || ctx->err) {
        if (why)
            snprintf(why, cap, "%s", ctx ? ctx->errstr : "out of memory");
        dspy__redis_free(ctx);
        return NULL;
    }
    return ctx;
}

static redisContext *rconnect(const struct rconf *c)
{
    return rconnect_why(c, NULL, 0);
}

/* A command on *ctx, reconnecting once when the connection is gone. */
static redisReply *cmdv(redisContext **ctx, const struct rconf *c, int argc, const char **argv,
                        const size_t *lens)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!*ctx && !(*ctx = rconnect(c)))
            return NULL;
        redisReply *r = dspy__redis_command_argv(*ctx, argc, argv, lens);
        if (r)
            return r;
        dspy__redis_free(*ctx);
        *ctx = NULL;
    }
    return NULL;
}

/* ---- reading replies ----------------------------------------------------------------------
 * Redis is trusted no more than any peer: every reply is checked for the shape it must have
 * before it is read (tests/fuzz/fuzz_redis_reply.c feeds these arbitrary replies). */

static bool is_str(const redisReply *r)
{
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) && r->str;
}

static bool is_array(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ARRAY && (r->element || !r->elements);
}

const char *dspy__rj_field(const redisReply *kv, const char *name)
{
    for (size_t i = 0; is_array(kv) && i + 1 < kv->elements; i += 2)
        if (is_str(kv->element[i]) && !strcmp(kv->element[i]->str, name))
            return is_str(kv->element[i + 1]) ? kv->element[i + 1]->str : NULL;
    return NULL;
}

const char *dspy__rj_entry(const redisReply *e, const redisReply **fields)
{
    *fields = NULL;
    if (!is_array(e) || e->elements != 2 || !is_str(e->element[0]))
        return NULL;
    if (is_array(e->element[1]))
        *fields = e->element[1]; /* else nil: the entry was deleted */
    return e->element[0]->str;
}

size_t dspy__rj_streams(const redisReply *rep, dspy__rj_entry_fn fn, void *ud)
{
    size_t n = 0;
    for (size_t k = 0; is_array(rep) && k < rep->elements; k++) {
        const redisReply *s = rep->element[k];
        if (!is_array(s) || s->elements != 2 || !is_str(s->element[0]) || !is_array(s->element[1]))
            continue;
        const redisReply *entries = s->element[1];
        for (size_t i = 0; i < entries->elements; i++) {
            const redisReply *fields;
            const char *entry = dspy__rj_entry(entries->element[i], &fields);
            if (entry && !fn(ud, s->element[0]->str, entry, fields))
                return n + 1;
            n += entry != NULL;
        }
    }
    return n;
}

bool dspy__rj_pool(const redisReply *rep, long long now_ms, struct dspy__rj_pool_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!is_array(rep))
        return false;
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
        if (!is_str(rep->element[i + 1]))
            continue;
        unsigned c = 0, n = 0;
        long long at = 0;
        unsigned long long used = 0, budget = 0, lm_in_flight = 0, lm_waiting = 0;
        int got = sscanf(rep->element[i + 1]->str, "%u %u %lld %llu %llu %llu %llu", &c, &n, &at,
                         &used, &budget, &lm_in_flight, &lm_waiting);
        if (got >= 3 && now_ms - at < 15000 && c <= 1u << 20 && n <= c) {
            out->workers++;
            out->slots += c;
            out->running += n;
            if (got >= 5) {
                out->mem_used += used;
                out->mem_budget += budget;
            }
            if (got == 7) {
                out->lm_in_flight += lm_in_flight;
                out->lm_waiting += lm_waiting;
            }
        }
    }
    return true;
}

bool dspy__rj_claim(const redisReply *rep, const char **stream, const redisReply **entry,
                    const char **flag)
{
    if (!is_array(rep) || rep->elements != 3 || !is_str(rep->element[0]) ||
        !is_str(rep->element[2]))
        return false;
    const redisReply *fields;
    if (!dspy__rj_entry(rep->element[1], &fields))
        return false;
    *stream = rep->element[0]->str;
    *entry = rep->element[1];
    *flag = rep->element[2]->str;
    return true;
}

const redisReply *dspy__rj_autoclaimed(const redisReply *rep)
{
    /* Redis 7: [cursor, [entries], [deleted ids]]; 6.2: [cursor, [entries]] */
    if (!is_array(rep) || rep->elements < 2 || !is_array(rep->element[1]) ||
        !rep->element[1]->elements)
        return NULL;
    const redisReply *fields;
    return dspy__rj_entry(rep->element[1]->element[0], &fields) ? rep->element[1]->element[0]
                                                                : NULL;
}

long dspy__rj_deliveries(const redisReply *rep)
{
    /* XPENDING stream group start end 1: [[entry, consumer, idle ms, deliveries]] */
    if (!is_array(rep) || rep->elements != 1 || !is_array(rep->element[0]) ||
        rep->element[0]->elements != 4 || !rep->element[0]->element[3] ||
        rep->element[0]->element[3]->type != REDIS_REPLY_INTEGER)
        return 1;
    long long n = rep->element[0]->element[3]->integer;
    return n < 1 ? 1 : n > 1000000 ? 1000000 : (long)n;
}

/* ---- the server's side -------------------------------------------------------------------- */

/* A job waiting to be written to its stream. */
struct pub {
    struct pub *next;
    int priority;
    unsigned attempts;
    const char *spec;
    char id[40];
    char mem[];
};

struct dspy__rjobs {
    struct rconf conf;
    pthread_mutex_t lock; /* guards ctx */
    redisContext *ctx;
    pthread_t thread, publisher;
    bool publisher_started, thread_started;
    atomic_bool stop;
    dspy__rjobs_event_fn fn;
    dspy__rjobs_published_fn published;
    void *ud;
    pthread_mutex_t pool_lock;       /* guards pool */
    struct dspy__rj_pool_stats pool; /* live workers, from their heartbeats */
    pthread_mutex_t pub_lock;        /* guards the list below */
    pthread_cond_t pub_wake;
    struct pub *head, *tail;
    size_t pending;
    uint64_t failed_batches; /* batches Redis did not take (tried again); pub_lock */
};

/* The worker registry: each worker's heartbeat writes "CONCURRENCY RUNNING UNIX_MS
 * MEM_USED MEM_BUDGET". */
static void read_pool(struct dspy__rjobs *r, redisContext *ctx)
{
    redisReply *rep = dspy__redis_command(ctx, "HGETALL " DSPY__RJ_WORKERS);
    struct dspy__rj_pool_stats st;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    dspy__rj_pool(rep, now, &st);
    freeReplyObject(rep);
    pthread_mutex_lock(&r->pool_lock);
    r->pool = st;
    pthread_mutex_unlock(&r->pool_lock);
}

void dspy__rjobs_pool(struct dspy__rjobs *r, struct dspy__rj_pool_stats *out)
{
    pthread_mutex_lock(&r->pool_lock);
    *out = r->pool;
    pthread_mutex_unlock(&r->pool_lock);
}

uint64_t dspy__rjobs_failed_batches(struct dspy__rjobs *r)
{
    pthread_mutex_lock(&r->pub_lock);
    uint64_t n = r->failed_batches;
    pthread_mutex_unlock(&r->pub_lock);
    return n;
}

size_t dspy__rjobs_unpublished(struct dspy__rjobs *r)
{
    pthread_mutex_lock(&r->pub_lock);
    size_t n = r->pending;
    pthread_mutex_unlock(&r->pub_lock);
    return n;
}

static bool collect_event(void *ud, const char *stream, const char *entry, const redisReply *fields)
{
    (void)stream;
    struct dspy__rj_events *b = ud;
    if (b->n == DSPY__RJ_EVENTS_MAX)
        return false;
    struct dspy__rj_event *e = &b->ev[b->n++];
    e->entry = entry;
    e->id = dspy__rj_field(fields, "id");
    e->state = dspy__rj_field(fields, "state");
    e->error = dspy__rj_field(fields, "error");
    e->progress = dspy__rj_field(fields, "progress");
    e->result = dspy__rj_field(fields, "result");
    if (e->id && strlen(e->id) >= 40)
        e->id = NULL; /* no job of ours has such an id */
    return true;
}

size_t dspy__rj_events_parse(const redisReply *rep, struct dspy__rj_events *b)
{
    b->n = 0;
    dspy__rj_streams(rep, collect_event, b);
    return b->n;
}

static bool wants_result(const struct dspy__rj_event *e)
{
    return e->id && e->state && !e->result && !strcmp(e->state, "succeeded");
}

/* One XREAD answer: the results of the succeeded ones read in one pipeline, then each event
 * handed on in order. False when the connection broke (read them again). */
static bool handle_events(struct dspy__rjobs *r, redisContext *ctx, const redisReply *rep,
                          struct dspy__rj_events *b, char *last, size_t last_size)
{
    redisReply **res = b->res;
    dspy__rj_events_parse(rep, b);
    size_t asked = 0;
    for (size_t i = 0; i < b->n; i++) {
        res[i] = NULL;
        if (wants_result(&b->ev[i])) {
            redisAppendCommand(ctx, "GET " DSPY__RJ_RESULT "%s", b->ev[i].id);
            asked++;
        }
    }
    bool ok = true;
    for (size_t i = 0; i < b->n && ok && asked; i++)
        if (wants_result(&b->ev[i])) {
            asked--;
            ok = dspy__redis_get_reply(ctx, &res[i]) == REDIS_OK;
        }
    for (size_t i = 0; ok && i < b->n; i++) {
        const struct dspy__rj_event *e = &b->ev[i];
        if (e->id && e->state)
            r->fn(r->ud, e->id, e->state, e->error, e->progress,
                  e->result                                              ? e->result
                  : is_str(res[i]) && res[i]->type == REDIS_REPLY_STRING ? res[i]->str
                                                                         : NULL);
        snprintf(last, last_size, "%s", e->entry);
    }
    for (size_t i = 0; i < b->n; i++)
        freeReplyObject(res[i]);
    return ok;
}

static void *events_main(void *arg)
{
    struct dspy__rjobs *r = arg;
    redisContext *ctx = NULL;
    char last[64] = "0";
    uint64_t next_pool = 0;
    struct dspy__rj_events *b = dspy_malloc(sizeof(*b));
    while (b && !atomic_load(&r->stop)) {
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
        redisReply *rep = dspy__redis_command(ctx, "XREAD COUNT %d BLOCK 200 STREAMS %s %s",
                                              DSPY__RJ_EVENTS_MAX, DSPY__RJ_EVENTS, last);
        bool ok = rep && handle_events(r, ctx, rep, b, last, sizeof(last));
        if (!ok) {
            dspy__redis_free(ctx);
            ctx = NULL;
        }
        freeReplyObject(rep);
        /* a short batch: let the next events gather a moment rather than wake for each one
         * (two per job) */
        if (ok && b->n && b->n < DSPY__RJ_EVENTS_MAX / 4)
            msleep(2);
    }
    if (!b)
        fprintf(stderr, "dspyc jobs: out of memory: no Redis events are read\n");
    dspy_free(b);
    if (ctx)
        dspy__redis_free(ctx);
    return NULL;
}

/* Writes queued jobs to their streams, pipelined, in the order they were queued; what Redis
 * does not take is tried again (the jobs are in the store meanwhile). */
static void *publisher_main(void *arg)
{
    struct dspy__rjobs *r = arg;
    redisContext *ctx = NULL;
    bool warned = false;
    pthread_mutex_lock(&r->pub_lock);
    while (!atomic_load(&r->stop)) {
        if (!r->head) {
            pthread_cond_wait(&r->pub_wake, &r->pub_lock);
            continue;
        }
        struct pub *batch = r->head, *end = batch;
        size_t n = 1;
        while (end->next && n < 256) {
            end = end->next;
            n++;
        }
        pthread_mutex_unlock(&r->pub_lock);
        size_t done = 0;
        if (ctx || (ctx = rconnect(&r->conf))) {
            /* the n entries from batch on; end->next is not read: a publish appends there */
            size_t i = 0;
            for (struct pub *p = batch; i < n; p = ++i < n ? p->next : p) {
                char stream[32], att[16];
                snprintf(stream, sizeof(stream), DSPY__RJ_STREAM "%d", p->priority);
                snprintf(att, sizeof(att), "%u", p->attempts);
                const char *argv[] = { "XADD", stream,  "*",        "id", p->id,
                                       "spec", p->spec, "attempts", att };
                redisAppendCommandArgv(ctx, 9, argv, NULL);
            }
            i = 0;
            for (struct pub *p = batch; i < n; p = ++i < n ? p->next : p) {
                redisReply *rep = NULL;
                if (dspy__redis_get_reply(ctx, &rep) != REDIS_OK) {
                    dspy__redis_free(ctx);
                    ctx = NULL;
                    break;
                }
                bool ok = rep->type == REDIS_REPLY_STRING;
                if (!ok && !warned) {
                    fprintf(stderr, "dspyc jobs: Redis refused a job: %s (trying again)\n",
                            rep->type == REDIS_REPLY_ERROR && rep->str ? rep->str : "?");
                    warned = true;
                }
                freeReplyObject(rep);
                if (!ok) { /* the rest of the pipeline is read and dropped; all come again */
                    dspy__redis_free(ctx);
                    ctx = NULL;
                    break;
                }
                if (r->published)
                    r->published(r->ud, p->id);
                done++;
            }
        }
        pthread_mutex_lock(&r->pub_lock);
        bool failed = done < n;
        for (; done; done--) {
            struct pub *p = r->head;
            r->head = p->next;
            if (!r->head)
                r->tail = NULL;
            r->pending--;
            dspy_free(p);
        }
        if (failed) { /* Redis is away: wait a little, without holding up the stop */
            r->failed_batches++;
            pthread_mutex_unlock(&r->pub_lock);
            for (int i = 0; i < 4 && !atomic_load(&r->stop); i++)
                msleep(50);
            pthread_mutex_lock(&r->pub_lock);
        } else {
            warned = false;
            if (n < 32 && !atomic_load(&r->stop)) {
                /* a short batch: gather the next jobs a moment rather than wake for each */
                pthread_mutex_unlock(&r->pub_lock);
                msleep(1);
                pthread_mutex_lock(&r->pub_lock);
            }
        }
    }
    pthread_mutex_unlock(&r->pub_lock);
    if (ctx)
        dspy__redis_free(ctx);
    return NULL;
}

dspy_status dspy__rjobs_open(const char *url, dspy__rjobs_event_fn fn,
                             dspy__rjobs_published_fn published, void *ud, struct dspy__rjobs **out,
                             struct dspy_error *err)
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
    char why[128];
    if (!(r->ctx = rconnect_why(&r->conf, why, sizeof(why)))) {
        dspy_free(r);
        return dspy__err(err, DSPY_EIO, "cannot connect to Redis at %s: %s", url, why);
    }
    pthread_mutex_init(&r->lock, NULL);
    pthread_mutex_init(&r->pub_lock, NULL);
    pthread_cond_init(&r->pub_wake, NULL);
    atomic_init(&r->stop, false);
    pthread_mutex_init(&r->pool_lock, NULL);
    r->fn = fn;
    r->published = published;
    r->ud = ud;
    if (pthread_create(&r->publisher, NULL, publisher_main, r)) {
        dspy__rjobs_close(r);
        return dspy__err(err, DSPY_ERESOURCE, "cannot start the Redis publisher thread");
    }
    r->publisher_started = true;
    if (pthread_create(&r->thread, NULL, events_main, r)) {
        dspy__rjobs_close(r);
        return dspy__err(err, DSPY_ERESOURCE, "cannot start the Redis events thread");
    }
    r->thread_started = true;
    *out = r;
    return DSPY_OK;
}

void dspy__rjobs_close(struct dspy__rjobs *r)
{
    if (!r)
        return;
    atomic_store(&r->stop, true);
    pthread_mutex_lock(&r->pub_lock);
    pthread_cond_broadcast(&r->pub_wake);
    pthread_mutex_unlock(&r->pub_lock);
    if (r->publisher_started)
        pthread_join(r->publisher, NULL);
    if (r->thread_started)
        pthread_join(r->thread, NULL);
    /* what is still unpublished is in the store, unpublished: the next start publishes it */
    while (r->head) {
        struct pub *p = r->head;
        r->head = p->next;
        dspy_free(p);
    }
    if (r->ctx)
        dspy__redis_free(r->ctx);
    pthread_cond_destroy(&r->pub_wake);
    pthread_mutex_destroy(&r->pub_lock);
    pthread_mutex_destroy(&r->pool_lock);
    pthread_mutex_destroy(&r->lock);
    dspy_free(r);
}

dspy_status dspy__rjobs_publish(struct dspy__rjobs *r, const char *id, int priority,
                                const char *spec, unsigned attempts)
{
    size_t n = strlen(spec) + 1;
    struct pub *p = dspy_malloc(sizeof(*p) + n);
    if (!p)
        return DSPY_ENOMEM;
    p->next = NULL;
    p->priority = priority;
    p->attempts = attempts;
    snprintf(p->id, sizeof(p->id), "%s", id);
    memcpy(p->mem, spec, n);
    p->spec = p->mem;
    pthread_mutex_lock(&r->pub_lock);
    if (r->tail)
        r->tail->next = p;
    else
        r->head = p;
    r->tail = p;
    r->pending++;
    pthread_cond_signal(&r->pub_wake);
    pthread_mutex_unlock(&r->pub_lock);
    return DSPY_OK;
}

/* A command on the server's own connection (cancel, purge), reconnecting once. */
static redisReply *server_cmd(struct dspy__rjobs *r, int argc, const char **argv)
{
    size_t lens[16];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    pthread_mutex_lock(&r->lock);
    redisReply *rep = cmdv(&r->ctx, &r->conf, argc, argv, lens);
    pthread_mutex_unlock(&r->lock);
    return rep;
}

dspy_status dspy__rjobs_cancel(struct dspy__rjobs *r, const char *id)
{
    char key[96];
    snprintf(key, sizeof(key), DSPY__RJ_CANCEL "%s", id);
    const char *argv[] = { "SET", key, "1", "EX", "86400" };
    redisReply *rep = server_cmd(r, 5, argv);
    dspy_status rc = rep ? DSPY_OK : DSPY_EIO;
    freeReplyObject(rep);
    return rc;
}

struct sid {
    unsigned long long ms, seq;
};

static bool parse_sid(const char *s, struct sid *out)
{
    return s && sscanf(s, "%llu-%llu", &out->ms, &out->seq) == 2;
}

static bool sid_before(struct sid a, struct sid b)
{
    return a.ms != b.ms ? a.ms < b.ms : a.seq < b.seq;
}

/* The first entry of `stream` that must stay: none older than `cut`, nor one the group has
 * not delivered yet, nor one still pending (delivered, not acknowledged). */
static struct sid keep_from(redisContext *ctx, const char *stream, struct sid cut)
{
    redisReply *g = dspy__redis_command(ctx, "XINFO GROUPS %s", stream);
    for (size_t i = 0; is_array(g) && i < g->elements; i++) {
        const char *name = dspy__rj_field(g->element[i], "name");
        struct sid last;
        if (name && !strcmp(name, DSPY__RJ_GROUP) &&
            parse_sid(dspy__rj_field(g->element[i], "last-delivered-id"), &last)) {
            last.seq++; /* entries after the last delivered one are still to come */
            if (sid_before(last, cut))
                cut = last;
        }
    }
    freeReplyObject(g);
    redisReply *p = dspy__redis_command(ctx, "XPENDING %s " DSPY__RJ_GROUP, stream);
    struct sid oldest;
    if (is_array(p) && p->elements == 4 && is_str(p->element[1]) &&
        parse_sid(p->element[1]->str, &oldest) && sid_before(oldest, cut))
        cut = oldest;
    freeReplyObject(p);
    return cut;
}

dspy_status dspy__rjobs_purge(struct dspy__rjobs *r, const char *const *ids, size_t n,
                              long long before_ms)
{
    dspy_status rc = DSPY_OK;
    pthread_mutex_lock(&r->lock);
    if (!r->ctx && !(r->ctx = rconnect(&r->conf))) {
        rc = DSPY_EIO;
        goto out;
    }
    for (size_t at = 0; at < n; at += 256) { /* pipelined, 256 at a time */
        size_t m = n - at < 256 ? n - at : 256;
        for (size_t i = 0; i < m; i++)
            redisAppendCommand(r->ctx, "DEL " DSPY__RJ_RESULT "%s " DSPY__RJ_CANCEL "%s",
                               ids[at + i], ids[at + i]);
        for (size_t i = 0; i < m; i++) {
            redisReply *rep = NULL;
            if (dspy__redis_get_reply(r->ctx, &rep) != REDIS_OK) {
                rc = DSPY_EIO;
                goto broken;
            }
            freeReplyObject(rep);
        }
    }
    if (before_ms > 0) {
        struct sid cut = { (unsigned long long)before_ms, 0 };
        for (int p = 0; p < 10; p++) {
            char stream[32], minid[48];
            snprintf(stream, sizeof(stream), DSPY__RJ_STREAM "%d", p);
            struct sid keep = keep_from(r->ctx, stream, cut);
            snprintf(minid, sizeof(minid), "%llu-%llu", keep.ms, keep.seq);
            freeReplyObject(dspy__redis_command(r->ctx, "XTRIM %s MINID %s", stream, minid));
        }
        char minid[48];
        snprintf(minid, sizeof(minid), "%llu-0", cut.ms);
        freeReplyObject(dspy__redis_command(r->ctx, "XTRIM " DSPY__RJ_EVENTS " MINID %s", minid));
        freeReplyObject(dspy__redis_command(r->ctx, "XTRIM " DSPY__RJ_DEAD " MINID %s", minid));
        if (r->ctx->err) {
            rc = DSPY_EIO;
            goto broken;
        }
    }
    goto out;
broken:
    dspy__redis_free(r->ctx);
    r->ctx = NULL;
out:
    pthread_mutex_unlock(&r->lock);
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
    pthread_mutex_t lock; /* guards slots and mem_used */
    pthread_cond_t mem_freed;
    struct inflight *slots;
    unsigned nslots;
    uint64_t mem_budget, mem_used; /* bytes; budget 0 = none */
    atomic_bool stop;
};

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

struct wthread {
    struct wpool *w;
    unsigned slot;
    redisContext *ctx;
    uint64_t last_progress_ns;
    redisReply *claimed; /* the next job's claim, read in the pipeline that ended the last */
};

/* The claiming script's command (below) appended to the pipeline, or its argv. */
static int claim_argv(struct wthread *t, const char **argv, char (*streams)[24])
{
    int n = 0;
    argv[n++] = "EVAL";
    argv[n++] = READ_SCRIPT;
    argv[n++] = "10";
    for (int p = 9; p >= 0; p--) {
        snprintf(streams[p], sizeof(streams[p]), DSPY__RJ_STREAM "%d", p);
        argv[n++] = streams[p];
    }
    argv[n++] = DSPY__RJ_GROUP;
    argv[n++] = t->w->name;
    argv[n++] = DSPY__RJ_RESULT;
    argv[n++] = DSPY__RJ_CANCEL;
    argv[n++] = DSPY__RJ_EVENTS;
    return n;
}

static bool stopping(struct wpool *w)
{
    return atomic_load(&w->stop) || (w->o->stop && __atomic_load_n(w->o->stop, __ATOMIC_RELAXED));
}

/* Wait for the job's share of the memory budget (the whole budget for a job needing more:
 * it runs alone). The share taken, or UINT64_MAX when stopping. */
static uint64_t take_memory(struct wpool *w, const json_t *spec)
{
    if (!w->mem_budget)
        return 0;
    uint64_t need = dspy__job_memory(spec);
    uint64_t share = need < w->mem_budget ? need : w->mem_budget;
    pthread_mutex_lock(&w->lock);
    while (w->mem_used + share > w->mem_budget && !stopping(w)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w->mem_freed, &w->lock, &ts);
    }
    bool stop = stopping(w);
    if (!stop)
        w->mem_used += share;
    pthread_mutex_unlock(&w->lock);
    return stop ? UINT64_MAX : share;
}

static void give_memory(struct wpool *w, uint64_t share)
{
    if (!share || share == UINT64_MAX)
        return;
    pthread_mutex_lock(&w->lock);
    w->mem_used -= share;
    pthread_cond_broadcast(&w->mem_freed);
    pthread_mutex_unlock(&w->lock);
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
    long n = dspy__rj_deliveries(r);
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
        if (dspy__redis_get_reply(t->ctx, &a) == REDIS_OK &&
            dspy__redis_get_reply(t->ctx, &b) == REDIS_OK) {
            *done = a->type == REDIS_REPLY_INTEGER && a->integer > 0;
            *cancelled = b->type == REDIS_REPLY_INTEGER && b->integer > 0;
            freeReplyObject(a);
            freeReplyObject(b);
            return;
        }
        freeReplyObject(a);
        freeReplyObject(b);
        dspy__redis_free(t->ctx);
        t->ctx = NULL;
    }
}

/* The end of a job in one round trip: its result (once: NX), its event, the
 * acknowledgement. False when Redis is gone (the entry stays pending and comes again). */
/* The end of a job, atomically: its result once (SET NX), its event (carrying a small result
 * when this run's was the one stored, so the server need not read it back), XACK. */
static const char FINISH_SCRIPT[] =
    "local inline = false "
    "if ARGV[7] == '1' and redis.call('SET', KEYS[1], ARGV[4], 'NX') then "
    " inline = #ARGV[4] <= " DSPY__RJ_INLINE_RESULT_MAX_S " end "
    "local ev = {'XADD', KEYS[2], 'MAXLEN', '~', '200000', '*', 'id', ARGV[1], 'state', ARGV[2]} "
    "if ARGV[3] ~= '' then ev[#ev + 1] = 'error'; ev[#ev + 1] = ARGV[3] end "
    "if inline then ev[#ev + 1] = 'result'; ev[#ev + 1] = ARGV[4] end "
    "redis.call(unpack(ev)) "
    "redis.call('XACK', KEYS[3], ARGV[5], ARGV[6]) "
    "return 1";

static bool finish_job(struct wthread *t, const char *stream, const char *entry, const char *id,
                       const char *result, const char *state, const char *error)
{
    if (!t->ctx && !(t->ctx = rconnect(&t->w->conf)))
        return false;
    char rkey[96];
    snprintf(rkey, sizeof(rkey), DSPY__RJ_RESULT "%s", id);
    const char *argv[] = { "EVAL",
                           FINISH_SCRIPT,
                           "3",
                           rkey,
                           DSPY__RJ_EVENTS,
                           stream,
                           id,
                           state,
                           error ? error : "",
                           result ? result : "",
                           DSPY__RJ_GROUP,
                           entry,
                           result ? "1" : "0" };
    redisAppendCommandArgv(t->ctx, 13, argv, NULL);
    int n = 1;
    /* and the claim of the next job in the same round trip */
    bool claim = !t->claimed && !stopping(t->w);
    if (claim) {
        const char *cargv[32];
        char streams[10][24];
        redisAppendCommandArgv(t->ctx, claim_argv(t, cargv, streams), cargv, NULL);
    }
    bool ok = true;
    for (int i = 0; i < n + claim; i++) {
        redisReply *r = NULL;
        if (dspy__redis_get_reply(t->ctx, &r) != REDIS_OK) {
            ok = false;
            break;
        }
        if (i == n)
            t->claimed = r;
        else
            freeReplyObject(r);
    }
    if (!ok) {
        dspy__redis_free(t->ctx);
        t->ctx = NULL;
    }
    return ok;
}

/* Run one claimed entry. `flags` NULL: check the result and cancel keys here; else the
 * claiming script did ("done", "cancelled" or "running": it reported the run already). */
static void process(struct wthread *t, const char *stream, const char *entry, const redisReply *kv,
                    bool reclaimed, const char *flags)
{
    struct wpool *w = t->w;
    if (strlen(entry) >= sizeof(w->slots[0].entry) || strlen(stream) >= sizeof(w->slots[0].stream))
        return; /* not an entry: nothing to acknowledge */
    if (!kv) {  /* deleted under us */
        ack(t, stream, entry);
        return;
    }
    const char *id = dspy__rj_field(kv, "id"), *spec_text = dspy__rj_field(kv, "spec");
    if (!id || !spec_text || strlen(id) >= sizeof(w->slots[0].id)) {
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
    uint64_t mem = 0;
    if (!spec || dspy_job_spec_check(spec, &err)) {
        rc = DSPY_EINVAL;
        if (!err.message[0])
            snprintf(err.message, sizeof(err.message), "the spec is not JSON");
    } else if ((mem = take_memory(w, spec)) == UINT64_MAX) {
        rc = DSPY_ECANCELED; /* stopping while it waited for memory */
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
        give_memory(w, mem);
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
    dspy_free(text);     /* jansson allocates through dspy_malloc */
    give_memory(w, mem); /* once its end is written: the next job starts after it */
}

static bool process_new(void *ud, const char *stream, const char *entry, const redisReply *fields)
{
    process(ud, stream, entry, fields, false, NULL);
    return true;
}

static bool read_new(struct wthread *t)
{
    char streams[10][24];
    const char *argv[32];
    int n = claim_argv(t, argv, streams);
    redisReply *r = t->claimed ? t->claimed : wcmd(t, n, argv);
    t->claimed = NULL;
    if (!r) {
        msleep(200);
        return false;
    }
    bool got = false;
    const char *stream, *flag;
    const redisReply *entry;
    if (dspy__rj_claim(r, &stream, &entry, &flag)) {
        const redisReply *kv;
        const char *id = dspy__rj_entry(entry, &kv);
        process(t, stream, id, kv, false, flag);
        got = true;
    } else if (r->type == REDIS_REPLY_ERROR && r->str && strstr(r->str, "NOGROUP")) {
        dspy__redis_free(t->ctx); /* Redis lost its data: the next connection makes the groups */
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
    got = dspy__rj_streams(r, process_new, t) > 0;
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
        const redisReply *e = dspy__rj_autoclaimed(r);
        bool got = e != NULL;
        const redisReply *kv;
        const char *entry = e ? dspy__rj_entry(e, &kv) : NULL;
        if (entry)
            process(t, stream, entry, kv, true, NULL);
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
        if (!t->claimed && now >= next_reclaim) {
            next_reclaim = now + (uint64_t)t->w->visibility_ms * 1000000u / 2;
            if (reclaim(t))
                continue;
        }
        read_new(t);
    }
    /* a job claimed and not run stays pending: another worker reclaims it */
    freeReplyObject(t->claimed);
    t->claimed = NULL;
    if (t->ctx)
        dspy__redis_free(t->ctx);
    t->ctx = NULL;
    return NULL;
}

/* Keeps this worker's jobs from looking stalled (XCLAIM JUSTID resets their idle time
 * without counting a delivery) and sees cancellations. */
static void *heartbeat_main(void *arg)
{
    struct wpool *w = arg;
    struct wthread hb = { w, 0, NULL, 0, NULL };
    long every = w->visibility_ms / 4 > 50 ? w->visibility_ms / 4 : 50;
    long every_reg = every < 1000 ? every : 1000;
    if (every > every_reg)
        every = every_reg;
    while (!stopping(w)) {
        unsigned busy = 0;
        pthread_mutex_lock(&w->lock);
        for (unsigned i = 0; i < w->nslots; i++)
            busy += w->slots[i].used;
        unsigned long long used = w->mem_used;
        pthread_mutex_unlock(&w->lock);
        struct dspy_jobq_pool lm = { 0 };
        if (w->o->lm_pool)
            w->o->lm_pool(w->o->lm_userdata, &lm);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        char val[160];
        snprintf(val, sizeof(val), "%u %u %lld %llu %llu %llu %llu", w->nslots, busy,
                 (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, used,
                 (unsigned long long)w->mem_budget, (unsigned long long)lm.in_flight,
                 (unsigned long long)lm.waiting);
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
        dspy__redis_free(hb.ctx);
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
    char why[128];
    redisContext *probe = rconnect_why(&w.conf, why, sizeof(why));
    if (!probe)
        return dspy__err(err, DSPY_EIO, "cannot connect to Redis at %s: %s", o->redis_url, why);
    dspy__redis_free(probe);
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
    w.mem_budget = o->memory_budget;
    atomic_init(&w.stop, false);
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.mem_freed, NULL);
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
        ts[i] = (struct wthread){ &w, i, NULL, 0, NULL };
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
    pthread_cond_destroy(&w.mem_freed);
    pthread_mutex_destroy(&w.lock);
    return rc;
}

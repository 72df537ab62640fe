/* The semantic cache level (cache layer): per-partition sets of unit-length embeddings of
 * the requests' projected texts, searched exactly with the vec layer's kernels on an exact
 * miss, the guards applied to the candidates, and the records persisted in an append-only
 * log beside the disk store (memory-mapped and replayed at start). See
 * docs/semantic-cache.md. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include <dspyc/embed.h>
#include <dspyc/vec.h>

#include "base/status.h"
#include "cache/cache_int.h"

#define DIM DSPY_EMBED_DIM
#define NBUCKETS 256
#define CANDIDATES 4 /* best candidates at or above the threshold put through the guards */
#define EMB_SLOTS 32 /* recent projections' embeddings (a lookup's miss is put right after) */
#define LOG_NAME "semantic.log"
static const char log_magic[16] = "dspyc-semantic1\n";
#define REC_MAGIC 0x4d455344u /* "DSEM" */
#define OP_ADD 1
#define OP_DEL 2

struct rec {
    uint8_t key[16];
    uint64_t seq; /* order of arrival, for eviction (oldest first) */
    char *text;
    uint32_t len;
};

struct part {
    uint8_t id[16];
    size_t n, cap;
    float *vecs; /* n * DIM, unit length */
    struct rec *recs;
    struct part *next;
};

struct emb_slot {
    uint64_t h;
    size_t len;
    bool used;
    float v[DIM];
};

struct dspy__semantic {
    pthread_mutex_t lock; /* everything below */
    struct part *buckets[NBUCKETS];
    uint64_t seq, bytes, entries, partitions;
    dspy_vec *vec;
    float *scores;
    size_t scores_cap;
    struct emb_slot emb[EMB_SLOTS];
    int fd; /* the log, or -1 (no disk level) */
    char *log_path;
    uint64_t log_live, log_size;
    /* the model, loaded on first use */
    pthread_mutex_t model_lock;
    dspy_embedder *embedder;
    bool model_tried, unavailable;
    char *model_dir;
    /* counters */
    atomic_ullong lookups, hits, below, stale, puts, evictions, guarded[DSPY_SEMANTIC_NGUARDS];
    double sim_sum; /* lock */
};

/* Record framing in the log: header, text, DIM floats (adds only), XXH3-64 of the rest. */
struct rec_hdr {
    uint32_t magic;
    uint8_t op, pad[3];
    uint32_t text_len;
    uint8_t part[16];
    uint8_t key[16];
};

static size_t rec_cost(uint32_t len)
{
    return DIM * sizeof(float) + len + sizeof(struct rec) + 16;
}

/* ---- partitions ------------------------------------------------------------------------ */

static struct part *find_part(struct dspy__semantic *s, const uint8_t id[16], bool create)
{
    struct part **pp = &s->buckets[id[0]];
    for (struct part *p = *pp; p; p = p->next)
        if (!memcmp(p->id, id, 16))
            return p;
    if (!create)
        return NULL;
    struct part *p = dspy_calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    memcpy(p->id, id, 16);
    p->next = *pp;
    *pp = p;
    s->partitions++;
    return p;
}

static void remove_at(struct dspy__semantic *s, struct part *p, size_t i)
{
    s->bytes -= rec_cost(p->recs[i].len);
    s->entries--;
    dspy_free(p->recs[i].text);
    memmove(&p->recs[i], &p->recs[i + 1], (p->n - i - 1) * sizeof(*p->recs));
    memmove(p->vecs + i * DIM, p->vecs + (i + 1) * DIM, (p->n - i - 1) * DIM * sizeof(float));
    p->n--;
}

static ssize_t find_rec(const struct part *p, const uint8_t key[16])
{
    for (size_t i = 0; i < p->n; i++)
        if (!memcmp(p->recs[i].key, key, 16))
            return (ssize_t)i;
    return -1;
}

/* Add (or replace) a record; false on allocation failure. */
static bool insert(struct dspy__semantic *s, const uint8_t part_id[16], const uint8_t key[16],
                   const char *text, uint32_t len, const float *v)
{
    struct part *p = find_part(s, part_id, true);
    if (!p)
        return false;
    ssize_t old = find_rec(p, key);
    if (old >= 0)
        remove_at(s, p, (size_t)old);
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 8;
        float *nv = dspy_realloc(p->vecs, cap * DIM * sizeof(float));
        if (!nv)
            return false;
        p->vecs = nv;
        struct rec *nr = dspy_realloc(p->recs, cap * sizeof(*nr));
        if (!nr)
            return false;
        p->recs = nr;
        p->cap = cap;
    }
    char *t = dspy_malloc((size_t)len + 1);
    if (!t)
        return false;
    memcpy(t, text, len);
    t[len] = 0;
    struct rec *r = &p->recs[p->n];
    memcpy(r->key, key, 16);
    r->seq = ++s->seq;
    r->text = t;
    r->len = len;
    memcpy(p->vecs + p->n * DIM, v, DIM * sizeof(float));
    p->n++;
    s->entries++;
    s->bytes += rec_cost(len);
    return true;
}

/* ---- the log --------------------------------------------------------------------------- */

static void log_write(struct dspy__semantic *s, int op, const uint8_t part[16],
                      const uint8_t key[16], const char *text, uint32_t len, const float *v)
{
    if (s->fd < 0)
        return;
    struct rec_hdr h = { .magic = REC_MAGIC, .op = (uint8_t)op, .text_len = len };
    memcpy(h.part, part, 16);
    memcpy(h.key, key, 16);
    size_t total = sizeof(h) + len + (op == OP_ADD ? DIM * sizeof(float) : 0) + 8;
    unsigned char *buf = dspy_malloc(total);
    if (!buf)
        return;
    memcpy(buf, &h, sizeof(h));
    memcpy(buf + sizeof(h), text, len);
    if (op == OP_ADD)
        memcpy(buf + sizeof(h) + len, v, DIM * sizeof(float));
    uint64_t sum = XXH3_64bits(buf, total - 8);
    memcpy(buf + total - 8, &sum, 8);
    if (write(s->fd, buf, total) == (ssize_t)total)
        s->log_size += total;
    if (op == OP_ADD)
        s->log_live += total;
    dspy_free(buf);
}

/* Rewrite the log with the live records only. */
static void log_compact(struct dspy__semantic *s)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", s->log_path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    int old = s->fd;
    s->fd = fd;
    s->log_size = s->log_live = 0;
    if (write(fd, log_magic, sizeof(log_magic)) == (ssize_t)sizeof(log_magic))
        s->log_size = sizeof(log_magic);
    for (int b = 0; b < NBUCKETS; b++)
        for (struct part *p = s->buckets[b]; p; p = p->next)
            for (size_t i = 0; i < p->n; i++)
                log_write(s, OP_ADD, p->id, p->recs[i].key, p->recs[i].text, p->recs[i].len,
                          p->vecs + i * DIM);
    if (rename(tmp, s->log_path)) {
        close(fd);
        unlink(tmp);
        s->fd = old;
        return;
    }
    close(old);
}

static void evict(struct dspy__semantic *s, size_t max_bytes)
{
    while (s->bytes > max_bytes && s->entries > 1) {
        struct part *best = NULL;
        for (int b = 0; b < NBUCKETS; b++)
            for (struct part *p = s->buckets[b]; p; p = p->next)
                if (p->n && (!best || p->recs[0].seq < best->recs[0].seq))
                    best = p;
        if (!best)
            return;
        log_write(s, OP_DEL, best->id, best->recs[0].key, "", 0, NULL);
        remove_at(s, best, 0);
        atomic_fetch_add(&s->evictions, 1);
    }
}

/* Replay the log: memory-mapped, each record checked; at the first bad one the file is cut
 * there (a crash mid-append leaves a torn tail) with one warning naming the offset. */
static void log_open(struct dspy__semantic *s, size_t max_bytes)
{
    int fd = open(s->log_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        fprintf(stderr,
                "dspyc: warning: semantic cache: cannot open %s: %s; records are kept "
                "in memory only\n",
                s->log_path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    size_t size = (size_t)st.st_size, off = sizeof(log_magic), good = 0;
    if (size == 0) {
        if (write(fd, log_magic, sizeof(log_magic)) != (ssize_t)sizeof(log_magic)) {
            close(fd);
            return;
        }
        s->fd = fd;
        s->log_size = sizeof(log_magic);
        return;
    }
    const unsigned char *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED || size < sizeof(log_magic) || memcmp(m, log_magic, sizeof(log_magic))) {
        fprintf(stderr,
                "dspyc: warning: semantic cache: %s is not a semantic record log; "
                "starting it empty\n",
                s->log_path);
        if (m != MAP_FAILED)
            munmap((void *)m, size);
        if (ftruncate(fd, 0) || write(fd, log_magic, sizeof(log_magic)) < 0) {
            close(fd);
            return;
        }
        s->fd = fd;
        s->log_size = sizeof(log_magic);
        return;
    }
    good = off;
    while (off + sizeof(struct rec_hdr) + 8 <= size) {
        struct rec_hdr h;
        memcpy(&h, m + off, sizeof(h));
        if (h.magic != REC_MAGIC || (h.op != OP_ADD && h.op != OP_DEL) || h.text_len > size - off)
            break;
        size_t total = sizeof(h) + h.text_len + (h.op == OP_ADD ? DIM * sizeof(float) : 0) + 8;
        if (total > size - off)
            break;
        uint64_t sum;
        memcpy(&sum, m + off + total - 8, 8);
        if (sum != XXH3_64bits(m + off, total - 8))
            break;
        const char *text = (const char *)(m + off + sizeof(h));
        if (h.op == OP_ADD) {
            float v[DIM];
            memcpy(v, m + off + sizeof(h) + h.text_len, sizeof(v));
            insert(s, h.part, h.key, text, h.text_len, v);
        } else {
            struct part *p = find_part(s, h.part, false);
            ssize_t i = p ? find_rec(p, h.key) : -1;
            if (i >= 0)
                remove_at(s, p, (size_t)i);
        }
        off += total;
        good = off;
    }
    munmap((void *)m, size);
    if (good < size) {
        fprintf(stderr,
                "dspyc: warning: semantic cache: %s: damaged record at byte %zu; "
                "cut there (%zu bytes dropped)\n",
                s->log_path, good, size - good);
        if (ftruncate(fd, (off_t)good)) {
            close(fd);
            return;
        }
    }
    if (lseek(fd, 0, SEEK_END) < 0) {
        close(fd);
        return;
    }
    s->fd = fd;
    s->log_size = good;
    evict(s, max_bytes);
    /* live bytes after replay: one add per record */
    s->log_live = 0;
    for (int b = 0; b < NBUCKETS; b++)
        for (struct part *p = s->buckets[b]; p; p = p->next)
            for (size_t i = 0; i < p->n; i++)
                s->log_live += sizeof(struct rec_hdr) + p->recs[i].len + DIM * sizeof(float) + 8;
    if (s->log_size > 2 * s->log_live + ((size_t)1 << 20))
        log_compact(s);
}

/* ---- open / close ---------------------------------------------------------------------- */

dspy_status dspy__semantic_new(struct dspy_cache *c, struct dspy_error *err)
{
    struct dspy__semantic *s = dspy_calloc(1, sizeof(*s));
    struct dspy_vec_options vo = DSPY_VEC_OPTIONS_INIT;
    dspy_status rc;
    if (!s)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->model_lock, NULL);
    s->fd = -1;
    vo.device = "cpu";
    vo.threads = 1;
    if ((rc = dspy_vec_new(&vo, &s->vec, err)))
        goto fail;
    if (c->opts.embed_model && !(s->model_dir = dspy_strdup(c->opts.embed_model))) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto fail;
    }
    if ((c->levels & DSPY_CACHE_L3) && c->disk_path) {
        size_t n = strlen(c->disk_path) + sizeof(LOG_NAME) + 2;
        if (!(s->log_path = dspy_malloc(n))) {
            rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
            goto fail;
        }
        snprintf(s->log_path, n, "%s/%s", c->disk_path, LOG_NAME);
        log_open(s, c->opts.semantic_max_bytes);
    }
    c->sem = s;
    return DSPY_OK;
fail:
    c->sem = s;
    dspy__semantic_free(c);
    return rc;
}

static void drop_all(struct dspy__semantic *s)
{
    for (int b = 0; b < NBUCKETS; b++) {
        struct part *p = s->buckets[b];
        while (p) {
            struct part *next = p->next;
            for (size_t i = 0; i < p->n; i++)
                dspy_free(p->recs[i].text);
            dspy_free(p->recs);
            dspy_free(p->vecs);
            dspy_free(p);
            p = next;
        }
        s->buckets[b] = NULL;
    }
    s->bytes = s->entries = s->partitions = 0;
}

void dspy__semantic_free(struct dspy_cache *c)
{
    struct dspy__semantic *s = c->sem;
    if (!s)
        return;
    drop_all(s);
    if (s->fd >= 0)
        close(s->fd);
    dspy_vec_free(s->vec);
    dspy_embedder_free(s->embedder);
    dspy_free(s->scores);
    dspy_free(s->log_path);
    dspy_free(s->model_dir);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->model_lock);
    dspy_free(s);
    c->sem = NULL;
}

void dspy__semantic_clear(struct dspy_cache *c)
{
    struct dspy__semantic *s = c->sem;
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    drop_all(s);
    memset(s->emb, 0, sizeof(s->emb));
    if (s->fd >= 0 && !ftruncate(s->fd, 0) && lseek(s->fd, 0, SEEK_SET) == 0 &&
        write(s->fd, log_magic, sizeof(log_magic)) == (ssize_t)sizeof(log_magic))
        s->log_size = sizeof(log_magic);
    s->log_live = 0;
    pthread_mutex_unlock(&s->lock);
}

void dspy__semantic_stats(struct dspy_cache *c, struct dspy_cache_stats *out)
{
    struct dspy__semantic *s = c->sem;
    if (!s)
        return;
    out->sem_lookups = atomic_load(&s->lookups);
    out->sem_hits = atomic_load(&s->hits);
    out->sem_below = atomic_load(&s->below);
    out->sem_stale = atomic_load(&s->stale);
    out->sem_puts = atomic_load(&s->puts);
    out->sem_evictions = atomic_load(&s->evictions);
    for (int i = 0; i < DSPY_SEMANTIC_NGUARDS; i++)
        out->sem_guarded[i] = atomic_load(&s->guarded[i]);
    pthread_mutex_lock(&s->lock);
    out->sem_similarity_sum = s->sim_sum;
    out->sem_entries = s->entries;
    out->sem_bytes = s->bytes;
    out->sem_partitions = s->partitions;
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_lock(&s->model_lock);
    out->sem_unavailable = s->unavailable;
    pthread_mutex_unlock(&s->model_lock);
}

/* ---- embedding ------------------------------------------------------------------------- */

static dspy_embedder *embedder(struct dspy__semantic *s)
{
    pthread_mutex_lock(&s->model_lock);
    if (!s->model_tried) {
        struct dspy_embedder_options eo = DSPY_EMBEDDER_OPTIONS_INIT;
        struct dspy_error err;
        dspy_error_clear(&err);
        eo.model_dir = s->model_dir;
        s->model_tried = true;
        if (dspy_embedder_new(&eo, &s->embedder, &err)) {
            s->unavailable = true;
            fprintf(stderr, "dspyc: warning: semantic cache off (every lookup misses): %s\n",
                    err.message);
        }
    }
    dspy_embedder *e = s->embedder;
    pthread_mutex_unlock(&s->model_lock);
    return e;
}

/* The embedding of `text` into v, from the recent-projections slots or the model. */
static bool embed(struct dspy__semantic *s, const char *text, size_t len, float v[DIM])
{
    uint64_t h = XXH3_64bits(text, len);
    struct emb_slot *slot = &s->emb[h % EMB_SLOTS];
    pthread_mutex_lock(&s->lock);
    if (slot->used && slot->h == h && slot->len == len) {
        memcpy(v, slot->v, sizeof(slot->v));
        pthread_mutex_unlock(&s->lock);
        return true;
    }
    pthread_mutex_unlock(&s->lock);
    dspy_embedder *e = embedder(s);
    if (!e || dspy_embedder_embed(e, &text, &len, 1, v, NULL))
        return false;
    pthread_mutex_lock(&s->lock);
    slot->used = true;
    slot->h = h;
    slot->len = len;
    memcpy(slot->v, v, sizeof(slot->v));
    pthread_mutex_unlock(&s->lock);
    return true;
}

/* ---- lookup and put -------------------------------------------------------------------- */

static const char *ns_for(const struct dspy_cache *c, const struct dspy_cache_ctl *ctl)
{
    return ctl && ctl->ns ? ctl->ns : c->ns;
}

dspy_status dspy_cache_semantic_get(dspy_cache *c, const json_t *request,
                                    const struct dspy_cache_ctl *ctl, struct dspy_cache_value *out,
                                    struct dspy_cache_semantic_hit *hit)
{
    struct dspy__semantic *s = c ? c->sem : NULL;
    struct dspy_cache_key part;
    char *text = NULL;
    size_t len = 0;
    float q[DIM];
    dspy_status rc = DSPY_ENOTFOUND;
    if (hit)
        memset(hit, 0, sizeof(*hit));
    if (!s || !out || (ctl && (ctl->no_cache || ctl->no_semantic)) ||
        (ctl && ctl->levels && !(ctl->levels & DSPY_CACHE_SEMANTIC)))
        return DSPY_ENOTFOUND;
    if (dspy_cache_semantic_partition(request, ns_for(c, ctl), c->opts.semantic_projection, &part,
                                      &text, &len, NULL))
        return DSPY_ENOTFOUND;
    atomic_fetch_add(&s->lookups, 1);
    if (!embed(s, text, len, q)) {
        atomic_fetch_add(&s->below, 1);
        goto out;
    }
    struct {
        float sim;
        uint8_t key[16];
    } chosen = { 0 };
    bool found = false;
    unsigned refused = 0;
    float threshold = (float)c->opts.semantic_threshold;
    pthread_mutex_lock(&s->lock);
    struct part *p = find_part(s, part.bytes, false);
    if (p && p->n) {
        if (s->scores_cap < p->n) {
            float *ns = dspy_realloc(s->scores, p->n * sizeof(float));
            if (ns) {
                s->scores = ns;
                s->scores_cap = p->n;
            }
        }
        if (s->scores_cap >= p->n && !dspy_vec_scores(s->vec, DSPY_VEC_IP, q, 1, DIM, p->vecs, p->n,
                                                      DIM, DIM, s->scores, p->n, NULL)) {
            size_t best[CANDIDATES];
            int nb = 0;
            for (size_t i = 0; i < p->n; i++) {
                float sc = s->scores[i];
                if (!(sc >= threshold))
                    continue;
                int j = nb < CANDIDATES ? nb++ : CANDIDATES;
                if (j == CANDIDATES) {
                    if (!(sc > s->scores[best[CANDIDATES - 1]]))
                        continue;
                    j = CANDIDATES - 1;
                }
                while (j > 0 && s->scores[best[j - 1]] < sc) {
                    best[j] = best[j - 1];
                    j--;
                }
                best[j] = i;
            }
            for (int j = 0; j < nb && !found; j++) {
                const struct rec *r = &p->recs[best[j]];
                unsigned g = dspy_cache_semantic_guard(text, len, r->text, r->len,
                                                       c->opts.semantic_guards);
                if (g) {
                    if (!refused)
                        refused = g;
                    continue;
                }
                found = true;
                chosen.sim = s->scores[best[j]];
                memcpy(chosen.key, r->key, 16);
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (!found) {
        if (refused) {
            for (int i = 0; i < DSPY_SEMANTIC_NGUARDS; i++)
                if (refused == 1u << i)
                    atomic_fetch_add(&s->guarded[i], 1);
            if (hit)
                hit->guard = refused;
        } else {
            atomic_fetch_add(&s->below, 1);
        }
        goto out;
    }
    struct dspy_cache_key k;
    struct dspy_cache_ctl exact = ctl ? *ctl : (struct dspy_cache_ctl)DSPY_CACHE_CTL_INIT;
    memcpy(k.bytes, chosen.key, 16);
    exact.levels = (ctl && ctl->levels ? ctl->levels : c->levels) & DSPY_CACHE_ALL;
    if (!exact.levels) /* the request allows no exact level to read the answer from */
        goto out;
    if (dspy_cache_get(c, &k, &exact, out)) {
        /* its exact entry was evicted, expired or deleted: the record goes with it */
        atomic_fetch_add(&s->stale, 1);
        pthread_mutex_lock(&s->lock);
        struct part *pp = find_part(s, part.bytes, false);
        ssize_t i = pp ? find_rec(pp, chosen.key) : -1;
        if (i >= 0) {
            log_write(s, OP_DEL, pp->id, chosen.key, "", 0, NULL);
            remove_at(s, pp, (size_t)i);
        }
        pthread_mutex_unlock(&s->lock);
        goto out;
    }
    atomic_fetch_add(&s->hits, 1);
    pthread_mutex_lock(&s->lock);
    s->sim_sum += chosen.sim;
    pthread_mutex_unlock(&s->lock);
    if (hit) {
        hit->key = k;
        hit->similarity = chosen.sim;
    }
    rc = DSPY_OK;
out:
    dspy_free(text);
    return rc;
}

void dspy_cache_semantic_put(dspy_cache *c, const json_t *request, const struct dspy_cache_key *key,
                             const struct dspy_cache_ctl *ctl)
{
    struct dspy__semantic *s = c ? c->sem : NULL;
    struct dspy_cache_key part;
    char *text = NULL;
    size_t len = 0;
    float v[DIM];
    if (!s || !key || (ctl && ctl->no_store) ||
        (ctl && ctl->levels && !(ctl->levels & DSPY_CACHE_SEMANTIC)))
        return;
    if (dspy_cache_semantic_partition(request, ns_for(c, ctl), c->opts.semantic_projection, &part,
                                      &text, &len, NULL))
        return;
    if (len <= UINT32_MAX && embed(s, text, len, v)) {
        pthread_mutex_lock(&s->lock);
        if (insert(s, part.bytes, key->bytes, text, (uint32_t)len, v)) {
            log_write(s, OP_ADD, part.bytes, key->bytes, text, (uint32_t)len, v);
            atomic_fetch_add(&s->puts, 1);
        }
        evict(s, c->opts.semantic_max_bytes);
        pthread_mutex_unlock(&s->lock);
    }
    dspy_free(text);
}

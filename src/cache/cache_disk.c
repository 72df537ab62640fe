/* L3 of the cache (cache layer): a persistent LMDB store shared safely by several
 * processes (LMDB's own locking), with a byte budget enforced by evicting the oldest
 * entries, optional zlib compression, and framed entries whose checksum catches corrupt
 * or truncated values: those are deleted, counted and reported, never returned.
 * Layout: DB "entries" key(16) -> frame; DB "age" created_ms(8, big-endian)+key(16) ->
 * ""; DB "meta" "bytes" -> u64 total frame bytes, "format" -> u32 (1). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>

#include "base/status.h"
#include "base/clock.h"
#include "cache/cache_int.h"

#define FORMAT 1u
#define MIN_MAP ((size_t)64 << 20)

struct disk {
    MDB_env *env;
    MDB_dbi entries, age, meta;
    pthread_rwlock_t resize; /* shared by every txn; exclusive to adopt a grown map */
    size_t max_bytes;
    double ttl_s;
    size_t compress_min;
    atomic_ullong hits, misses, puts, evictions, expired, corrupt;
    struct dspy__cache_errlog errors;
    dspy__cache_gone_fn gone; /* set once before use (disk_watch), or NULL */
    void *gone_ud;
};

static void age_key(unsigned char out[24], uint64_t created_ms, const uint8_t key[16])
{
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)(created_ms >> (56 - 8 * i));
    memcpy(out + 8, key, 16);
}

/* created_ms from a frame header, valid or not (only used to find its age record). */
static uint64_t header_created(const MDB_val *v)
{
    const unsigned char *p = v->mv_data;
    uint64_t c = 0;
    if (v->mv_size < 24)
        return 0;
    for (int i = 7; i >= 0; i--)
        c = c << 8 | p[16 + i];
    return c;
}

static uint64_t get_bytes(struct disk *d, MDB_txn *txn)
{
    MDB_val k = { 5, (void *)"bytes" }, v;
    uint64_t n = 0;
    if (mdb_get(txn, d->meta, &k, &v) == 0 && v.mv_size == sizeof(n))
        memcpy(&n, v.mv_data, sizeof(n));
    return n;
}

static int set_bytes(struct disk *d, MDB_txn *txn, uint64_t n)
{
    MDB_val k = { 5, (void *)"bytes" }, v = { sizeof(n), &n };
    return mdb_put(txn, d->meta, &k, &v, 0);
}

/* Begin a transaction while holding `resize` shared; if another process grew the map,
 * adopt the new size (needs no transaction of ours open, hence the exclusive lock). */
static int begin(struct disk *d, unsigned flags, MDB_txn **txn)
{
    int rc;
    pthread_rwlock_rdlock(&d->resize);
    while ((rc = mdb_txn_begin(d->env, NULL, flags, txn)) == MDB_MAP_RESIZED) {
        pthread_rwlock_unlock(&d->resize);
        pthread_rwlock_wrlock(&d->resize);
        mdb_env_set_mapsize(d->env, 0);
        pthread_rwlock_unlock(&d->resize);
        pthread_rwlock_rdlock(&d->resize);
    }
    if (rc)
        pthread_rwlock_unlock(&d->resize);
    return rc;
}

static void end_read(struct disk *d, MDB_txn *txn)
{
    mdb_txn_abort(txn);
    pthread_rwlock_unlock(&d->resize);
}

static int end_write(struct disk *d, MDB_txn *txn)
{
    int rc = mdb_txn_commit(txn);
    pthread_rwlock_unlock(&d->resize);
    return rc;
}

/* Remove the entry under `key` (and its age record) inside `txn`; *freed gets its size. */
static int remove_entry(struct disk *d, MDB_txn *txn, const uint8_t key[16], size_t *freed)
{
    MDB_val k = { 16, (void *)key }, v;
    unsigned char ak[24];
    int rc = mdb_get(txn, d->entries, &k, &v);
    *freed = 0;
    if (rc)
        return rc == MDB_NOTFOUND ? 0 : rc;
    *freed = v.mv_size;
    age_key(ak, header_created(&v), key);
    MDB_val a = { 24, ak };
    rc = mdb_del(txn, d->age, &a, NULL);
    if (rc && rc != MDB_NOTFOUND)
        return rc;
    return mdb_del(txn, d->entries, &k, NULL);
}

/* Evict the oldest entry. An age record whose entry was since replaced or deleted is
 * just dropped. *freed is 0 when nothing was left to evict. */
static int evict_oldest(struct disk *d, MDB_txn *txn, size_t *freed)
{
    MDB_cursor *cur;
    MDB_val a, empty, k, v;
    uint8_t key[16];
    int rc = mdb_cursor_open(txn, d->age, &cur);
    *freed = 0;
    if (rc)
        return rc;
    while ((rc = mdb_cursor_get(cur, &a, &empty, MDB_FIRST)) == 0) {
        memcpy(key, (unsigned char *)a.mv_data + 8, 16);
        uint64_t created = 0;
        for (int i = 0; i < 8; i++)
            created = created << 8 | ((unsigned char *)a.mv_data)[i];
        k = (MDB_val){ 16, key };
        bool live = mdb_get(txn, d->entries, &k, &v) == 0 && header_created(&v) == created;
        if ((rc = mdb_cursor_del(cur, 0)))
            break;
        if (live) {
            *freed = v.mv_size;
            rc = mdb_del(txn, d->entries, &k, NULL);
            atomic_fetch_add(&d->evictions, 1);
            if (d->gone) /* in the transaction that evicts it */
                d->gone(d->gone_ud, key);
            break;
        }
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Delete an entry found corrupt or expired, in its own write transaction. With
 * `only_created` set, only if it is still the frame that was read (same creation time):
 * another process may have replaced it meanwhile. */
static void drop_key(struct disk *d, const uint8_t key[16], bool only_created, uint64_t created)
{
    MDB_txn *txn;
    MDB_val k = { 16, (void *)key }, v;
    size_t freed;
    if (begin(d, 0, &txn))
        return;
    if (only_created && (mdb_get(txn, d->entries, &k, &v) != 0 || header_created(&v) != created)) {
        end_read(d, txn);
        return;
    }
    if (remove_entry(d, txn, key, &freed) == 0 && freed) {
        uint64_t b = get_bytes(d, txn);
        set_bytes(d, txn, b > freed ? b - freed : 0);
        if (d->gone)
            d->gone(d->gone_ud, key);
    }
    end_write(d, txn);
}

static bool disk_get(void *lvl, const uint8_t key[16], struct dspy__cache_entry **out)
{
    struct disk *d = lvl;
    MDB_txn *txn;
    MDB_val k = { 16, (void *)key }, v;
    struct dspy__frame f;
    struct dspy__cache_entry *e = NULL;
    bool corrupt = false, expired = false;
    uint64_t created = 0;
    int rc = begin(d, MDB_RDONLY, &txn);
    if (rc) {
        dspy__cache_errlog_set(&d->errors, "disk read: %s", mdb_strerror(rc));
        atomic_fetch_add(&d->misses, 1);
        return false;
    }
    rc = mdb_get(txn, d->entries, &k, &v);
    if (rc == 0) {
        created = header_created(&v);
        if (dspy__frame_check(key, v.mv_data, v.mv_size, &f) != DSPY_OK)
            corrupt = true;
        else if (f.expires_ms && f.expires_ms <= dspy__wall_ms())
            expired = true;
        else if ((e = dspy__cache_entry_new(key, NULL, f.value_len, f.expires_ms)) &&
                 dspy__frame_decode(&f, e->data) != DSPY_OK) {
            dspy__cache_entry_unref(e);
            e = NULL;
            corrupt = true;
        }
    } else if (rc != MDB_NOTFOUND) {
        dspy__cache_errlog_set(&d->errors, "disk read: %s", mdb_strerror(rc));
    }
    end_read(d, txn);
    if (corrupt) {
        struct dspy_cache_key ck;
        char hex[33];
        memcpy(ck.bytes, key, 16);
        dspy_cache_key_hex(&ck, hex);
        atomic_fetch_add(&d->corrupt, 1);
        dspy__cache_errlog_set(&d->errors, "disk: corrupt entry %s dropped", hex);
    }
    if (expired)
        atomic_fetch_add(&d->expired, 1);
    if (corrupt || expired)
        drop_key(d, key, true, created);
    if (!e) {
        atomic_fetch_add(&d->misses, 1);
        return false;
    }
    atomic_fetch_add(&d->hits, 1);
    *out = e;
    return true;
}

/* One attempt at storing a frame; MDB_MAP_FULL is returned for the caller to make room. */
static int store(struct disk *d, const uint8_t key[16], const unsigned char *frame, size_t len,
                 uint64_t created)
{
    MDB_txn *txn;
    MDB_val k = { 16, (void *)key }, v = { len, (void *)frame }, empty = { 0, NULL };
    unsigned char ak[24];
    size_t freed;
    int rc = begin(d, 0, &txn);
    if (rc)
        return rc;
    uint64_t bytes = get_bytes(d, txn);
    if ((rc = remove_entry(d, txn, key, &freed)))
        goto out_abort;
    bytes = bytes > freed ? bytes - freed : 0;
    age_key(ak, created, key);
    MDB_val a = { 24, ak };
    if ((rc = mdb_put(txn, d->entries, &k, &v, 0)) || (rc = mdb_put(txn, d->age, &a, &empty, 0)))
        goto out_abort;
    bytes += len;
    while (bytes > d->max_bytes) {
        if ((rc = evict_oldest(d, txn, &freed)))
            goto out_abort;
        if (!freed)
            break;
        bytes = bytes > freed ? bytes - freed : 0;
    }
    if ((rc = set_bytes(d, txn, bytes)))
        goto out_abort;
    return end_write(d, txn);
out_abort:
    end_read(d, txn);
    return rc;
}

/* The map is full before the budget is (fragmentation, or a budget near the map size):
 * evict the oldest eighth of the entries. */
static int make_room(struct disk *d)
{
    MDB_txn *txn;
    MDB_stat st;
    size_t freed;
    int rc = begin(d, 0, &txn);
    if (rc)
        return rc;
    uint64_t bytes = get_bytes(d, txn);
    if ((rc = mdb_stat(txn, d->entries, &st)))
        goto out_abort;
    for (size_t i = 0; i < st.ms_entries / 8 + 1; i++) {
        if ((rc = evict_oldest(d, txn, &freed)))
            goto out_abort;
        if (!freed)
            break;
        bytes = bytes > freed ? bytes - freed : 0;
    }
    if ((rc = set_bytes(d, txn, bytes)))
        goto out_abort;
    return end_write(d, txn);
out_abort:
    end_read(d, txn);
    return rc;
}

static void disk_put(void *lvl, struct dspy__cache_entry *e)
{
    struct disk *d = lvl;
    uint64_t now = dspy__wall_ms();
    uint64_t exp = dspy__cache_level_expiry(e, d->ttl_s, now);
    size_t len;
    unsigned char *frame;
    int rc;
    if ((exp && exp <= now) || dspy__frame_bound(e->len) > d->max_bytes)
        return;
    if (!(frame = dspy_malloc(dspy__frame_bound(e->len))))
        return;
    if (dspy__frame_encode(e->key, e->data, e->len, now, exp, d->compress_min, frame, &len))
        goto out_frame;
    rc = store(d, e->key, frame, len, now);
    if (rc == MDB_MAP_FULL && make_room(d) == 0)
        rc = store(d, e->key, frame, len, now);
    if (rc)
        dspy__cache_errlog_set(&d->errors, "disk write: %s", mdb_strerror(rc));
    else
        atomic_fetch_add(&d->puts, 1);
out_frame:
    dspy_free(frame);
}

static void disk_del(void *lvl, const uint8_t key[16])
{
    drop_key(lvl, key, false, 0);
}

static dspy_status disk_clear(void *lvl, struct dspy_error *err)
{
    struct disk *d = lvl;
    MDB_txn *txn;
    int rc = begin(d, 0, &txn);
    if (rc)
        return dspy__err(err, DSPY_EIO, "disk cache clear: %s", mdb_strerror(rc));
    if ((rc = mdb_drop(txn, d->entries, 0)) || (rc = mdb_drop(txn, d->age, 0)) ||
        (rc = set_bytes(d, txn, 0))) {
        end_read(d, txn);
        return dspy__err(err, DSPY_EIO, "disk cache clear: %s", mdb_strerror(rc));
    }
    if ((rc = end_write(d, txn)))
        return dspy__err(err, DSPY_EIO, "disk cache clear: %s", mdb_strerror(rc));
    return DSPY_OK;
}

static dspy_status disk_each(void *lvl, dspy__cache_each_fn fn, void *ud, struct dspy_error *err)
{
    struct disk *d = lvl;
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    dspy_status st = DSPY_OK;
    uint64_t now = dspy__wall_ms();
    int rc = begin(d, MDB_RDONLY, &txn);
    if (rc)
        return dspy__err(err, DSPY_EIO, "disk cache read: %s", mdb_strerror(rc));
    if ((rc = mdb_cursor_open(txn, d->entries, &cur))) {
        end_read(d, txn);
        return dspy__err(err, DSPY_EIO, "disk cache read: %s", mdb_strerror(rc));
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !st;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        struct dspy__frame f;
        if (k.mv_size != 16 || dspy__frame_check(k.mv_data, v.mv_data, v.mv_size, &f) ||
            (f.expires_ms && f.expires_ms <= now))
            continue;
        unsigned char *val = dspy_malloc(f.value_len);
        if (!val)
            st = dspy__err(err, DSPY_ENOMEM, "out of memory reading the disk cache");
        else if (dspy__frame_decode(&f, val) == DSPY_OK)
            st = fn(ud, k.mv_data, val, f.value_len, f.expires_ms);
        dspy_free(val);
    }
    mdb_cursor_close(cur);
    end_read(d, txn);
    return st;
}

static void disk_stats(void *lvl, struct dspy_cache_level_stats *st)
{
    struct disk *d = lvl;
    MDB_txn *txn;
    MDB_stat ms;
    memset(st, 0, sizeof(*st));
    st->hits = atomic_load(&d->hits);
    st->misses = atomic_load(&d->misses);
    st->puts = atomic_load(&d->puts);
    st->evictions = atomic_load(&d->evictions);
    st->expired = atomic_load(&d->expired);
    st->corrupt = atomic_load(&d->corrupt);
    st->errors = atomic_load(&d->errors.count);
    dspy__cache_errlog_get(&d->errors, st->last_error, sizeof(st->last_error));
    if (begin(d, MDB_RDONLY, &txn) == 0) {
        if (mdb_stat(txn, d->entries, &ms) == 0)
            st->entries = ms.ms_entries;
        st->bytes = get_bytes(d, txn);
        end_read(d, txn);
    }
}

static void disk_free(void *lvl)
{
    struct disk *d = lvl;
    if (!d)
        return;
    if (d->env) {
        mdb_env_sync(d->env, 1);
        mdb_env_close(d->env);
    }
    pthread_rwlock_destroy(&d->resize);
    dspy_free(d);
}

/* mkdir -p with private permissions: cached prompts and answers are the user's data. */
static int make_dirs(const char *path)
{
    char tmp[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(tmp))
        return ENAMETOOLONG;
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] != '/' && tmp[i] != '\0')
            continue;
        char c = tmp[i];
        tmp[i] = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
            return errno;
        tmp[i] = c;
    }
    return 0;
}

/* ---- the file against its own header, before LMDB maps it ----------------------------- */

/* LMDB maps the size its meta pages record and reads any page up to the last one they
 * name: a file cut short (a full disk, a copy that stopped) makes those reads SIGBUS
 * inside mdb_env_open or mdb_dbi_open. So read the two meta pages with pread first.
 * Their layout (LMDB 0.9 mdb.c: MDB_page header, then MDB_meta) in size_t words S:
 *   page header: pgno(S) pad(2) flags(2) lower/upper(4); meta: magic(4) version(4)
 *   address(S) mapsize(S) dbs[2] of { pad(4) flags(2) depth(2) 5 x S } last_pg(S)
 *   txnid(S); the page size is dbs[0].pad. */
#define LMDB_MAGIC 0xBEEFC0DEu
#define LMDB_DATA_VERSION 1u
#define LMDB_P_META 0x08u

struct meta_view {
    uint32_t psize;
    uint64_t last_pg, txnid;
};

static uint64_t word_at(const unsigned char *p)
{
    size_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* One meta page at `off`: 0 when it reads as one, else a reason. */
static const char *read_meta(int fd, off_t off, struct meta_view *m)
{
    const size_t S
    = sizeof(size_t), hdr = S
    +8;
    const size_t meta_len = 8 + 2 * S
    +2 * (8 + 5 * S) + 2 * S;
    unsigned char buf[256];
    uint16_t flags;
    uint32_t magic, version;
    if (pread(fd, buf, hdr + meta_len, off) != (ssize_t)(hdr + meta_len))
        return "a meta page is missing";
    memcpy(&flags, buf + S + 2, 2);
    memcpy(&magic, buf + hdr, 4);
    memcpy(&version, buf + hdr + 4, 4);
    if (!(flags & LMDB_P_META) || magic != LMDB_MAGIC)
        return "not an LMDB file";
    if (version != LMDB_DATA_VERSION)
        return "an LMDB format this build does not read";
    memcpy(&m->psize, buf + hdr + 8 + 2 * S, 4);
    m->last_pg = word_at(buf + hdr + 8 + 2 * S + 2 * (8 + 5 * S));
    m->txnid = word_at(buf + hdr + 8 + 2 * S + 2 * (8 + 5 * S) + S);
    return NULL;
}

/* DSPY_OK when `dir`'s data.mdb is absent, empty (LMDB starts it) or whole; DSPY_ECORRUPT
 * with the reason otherwise. A file that cannot be opened is left to LMDB to report. The
 * size is read after the meta pages: a writer in another process extends the file before
 * it writes the meta page that names the new pages, so a size read first could be older. */
static dspy_status check_once(const char *dir, struct dspy_error *err)
{
    char path[4200], sz[2][32];
    struct meta_view m[2];
    struct stat st;
    const char *why = NULL;
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return DSPY_OK;
    if (fstat(fd, &st) || st.st_size == 0) {
        close(fd);
        return DSPY_OK;
    }
    if ((why = read_meta(fd, 0, &m[0])) == NULL) {
        if (m[0].psize < 512 || m[0].psize > 65536 || (m[0].psize & (m[0].psize - 1)))
            why = "its page size is not one LMDB writes";
        else
            why = read_meta(fd, (off_t)m[0].psize, &m[1]);
    }
    if (fstat(fd, &st))
        st.st_size = 0;
    close(fd);
    if (!why) {
        const struct meta_view *cur = m[1].txnid > m[0].txnid ? &m[1] : &m[0];
        uint64_t need = (cur->last_pg + 1) * (uint64_t)m[0].psize;
        if (need > (uint64_t)st.st_size) {
            snprintf(sz[0], sizeof(sz[0]), "%llu", (unsigned long long)need);
            snprintf(sz[1], sizeof(sz[1]), "%lld", (long long)st.st_size);
            dspy__err(err, DSPY_ECORRUPT,
                      "cache: the disk cache file %s is damaged: its "
                      "header names %s bytes of pages, the file has %s (cut short?)",
                      path, sz[0], sz[1]);
            dspy__err_file(err, path);
            return DSPY_ECORRUPT;
        }
        return DSPY_OK;
    }
    dspy__err(err, DSPY_ECORRUPT, "cache: the disk cache file %s is damaged (%s, %lld bytes)", path,
              why, (long long)st.st_size);
    dspy__err_file(err, path);
    return DSPY_ECORRUPT;
}

/* A file another process is creating looks cut short for the moment its first write takes
 * (its meta pages land one page at a time), so a damaged verdict is only given when it
 * holds for 100 ms. */
static dspy_status check_file(const char *dir, struct dspy_error *err)
{
    dspy_status rc;
    for (int i = 0; (rc = check_once(dir, err)) == DSPY_ECORRUPT && i < 5; i++) {
        struct timespec ts = { 0, 20 * 1000000L };
        nanosleep(&ts, NULL);
    }
    return rc;
}

dspy_status dspy_cache_disk_reset(const char *dir, struct dspy_error *err)
{
    static const char *const files[] = { "data.mdb", "lock.mdb" };
    char path[4200];
    if (!dir || !*dir)
        return dspy__err(err, DSPY_EINVAL, "cache: no disk cache directory");
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        if (unlink(path) && errno != ENOENT) {
            dspy__err(err, DSPY_EIO, "cache: cannot remove %s: %s", path, strerror(errno));
            dspy__err_file(err, path);
            return DSPY_EIO;
        }
    }
    return DSPY_OK;
}

static int open_dbs(struct disk *d)
{
    MDB_txn *txn;
    MDB_val k = { 6, (void *)"format" }, v;
    uint32_t format = FORMAT;
    int rc = mdb_txn_begin(d->env, NULL, 0, &txn);
    if (rc)
        return rc;
    if ((rc = mdb_dbi_open(txn, "entries", MDB_CREATE, &d->entries)) ||
        (rc = mdb_dbi_open(txn, "age", MDB_CREATE, &d->age)) ||
        (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &d->meta)))
        goto out_abort;
    if (mdb_get(txn, d->meta, &k, &v) == 0) {
        if (v.mv_size != sizeof(format) || memcmp(v.mv_data, &format, sizeof(format)) != 0) {
            rc = MDB_INCOMPATIBLE;
            goto out_abort;
        }
    } else {
        v = (MDB_val){ sizeof(format), &format };
        if ((rc = mdb_put(txn, d->meta, &k, &v, 0)))
            goto out_abort;
    }
    return mdb_txn_commit(txn);
out_abort:
    mdb_txn_abort(txn);
    return rc;
}

dspy_status dspy__cache_disk_new(const struct dspy_cache_options *o, void **out,
                                 struct dspy_error *err)
{
    struct disk *d;
    int rc;
    if (!o->disk_path || !*o->disk_path)
        return dspy__err(err, DSPY_EINVAL, "cache: L3 needs disk_path");
    if ((rc = make_dirs(o->disk_path)))
        return dspy__err(err, DSPY_EIO, "cache: cannot create %s: %s", o->disk_path, strerror(rc));
    if ((rc = check_file(o->disk_path, err)))
        return rc;
    if (!(d = dspy_calloc(1, sizeof(*d))))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    pthread_rwlock_init(&d->resize, NULL);
    d->max_bytes = o->disk_max_bytes ? o->disk_max_bytes : DSPY_CACHE_DEFAULT_DISK_MAX_BYTES;
    d->ttl_s = o->disk_ttl_s;
    d->compress_min = o->disk_compress_min;
    /* Twice the budget: values near LMDB's page size waste up to half a page each. */
    size_t map = d->max_bytes * 2 + ((size_t)16 << 20);
    if (map < MIN_MAP)
        map = MIN_MAP;
    if ((rc = mdb_env_create(&d->env))) {
        d->env = NULL;
        goto out_free;
    }
    if ((rc = mdb_env_set_maxdbs(d->env, 4)) || (rc = mdb_env_set_maxreaders(d->env, 512)) ||
        (rc = mdb_env_set_mapsize(d->env, map)) ||
        (rc = mdb_env_open(d->env, o->disk_path, MDB_NOTLS | (o->disk_sync ? 0 : MDB_NOSYNC),
                           0600)))
        goto out_free;
    /* Free reader slots left by processes that died mid-read. */
    mdb_reader_check(d->env, NULL);
    if ((rc = open_dbs(d)))
        goto out_free;
    *out = d;
    return DSPY_OK;
out_free:
    if (d->env)
        mdb_env_close(d->env);
    d->env = NULL;
    disk_free(d);
    return dspy__err(err, rc == MDB_INCOMPATIBLE ? DSPY_EUNSUPPORTED : DSPY_EIO,
                     "cache: cannot open the disk cache in %s: %s", o->disk_path, mdb_strerror(rc));
}

static void disk_watch(void *lvl, dspy__cache_gone_fn gone, void *ud)
{
    struct disk *d = lvl;
    d->gone = gone;
    d->gone_ud = ud;
}

const struct dspy__cache_level_ops dspy__cache_disk_ops = {
    "l3",      disk_get,   disk_put,  disk_del, disk_clear,
    disk_each, disk_stats, disk_free, NULL,     disk_watch,
};

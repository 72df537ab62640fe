/* OpenAI BPE token counting (retrieve layer): the rank file read once into an
 * open-addressing hash, the pre-tokenizer's pieces (bpe.c) merged as tiktoken merges them
 * (the lowest-ranked adjacent pair first, the leftmost on a tie), special tokens when
 * asked, and chat messages counted as OpenAI counts them. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <xxhash.h>

#include <dspyc/tokens.h>

#include "base/base64.h"
#include "base/heap.h"
#include "base/path.h"
#include "base/pyfmt.h"
#include "base/status.h"
#include "retrieve/bpe.h"

#define MAX_RANK_FILE ((size_t)64 << 20)
#define NO_RANK UINT32_MAX
/* Ranks count up from 0, the special tokens a little past them: a rank file's ranks stay
 * below its line count plus this. */
#define MAX_RANK_GAP 65536
/* Pieces up to this many bytes merge by tiktoken's own scan (quadratic, fastest when
 * short); longer ones through a heap, so a megabyte without a space stays n log n. */
#define SCAN_MAX 128

struct special {
    const char *text;
    uint32_t id;
};

struct encoding {
    const char *name;
    enum dspy__bpe_split split;
    const struct special *specials;
    size_t nspecials;
};

static const struct special cl100k_specials[] = {
    { "<|endoftext|>", 100257 },  { "<|fim_prefix|>", 100258 },  { "<|fim_middle|>", 100259 },
    { "<|fim_suffix|>", 100260 }, { "<|endofprompt|>", 100276 },
};
static const struct special o200k_specials[] = {
    { "<|endoftext|>", 199999 },
    { "<|endofprompt|>", 200018 },
};
static const struct encoding encodings[] = {
    { "cl100k_base", DSPY__BPE_SPLIT_CL100K, cl100k_specials,
      sizeof(cl100k_specials) / sizeof(cl100k_specials[0]) },
    { "o200k_base", DSPY__BPE_SPLIT_O200K, o200k_specials,
      sizeof(o200k_specials) / sizeof(o200k_specials[0]) },
};

struct slot {
    uint32_t tag;  /* high half of the hash */
    uint32_t rank; /* NO_RANK: empty */
    uint32_t off;  /* token bytes in `bytes` */
    uint32_t len;
};

struct span {
    uint32_t off, len; /* len 0: no token of this rank */
};

struct dspy_tokenizer {
    const struct encoding *enc;
    unsigned char *bytes; /* every token's bytes */
    struct slot *slots;
    size_t mask;          /* slots - 1, a power of two */
    uint32_t *short_rank; /* the rank of each 1- and 2-byte token, without hashing:
                             [b] for one byte b, [256 + (b0 << 8 | b1)] for two */
    struct span *by_rank; /* rank -> bytes, for decoding */
    uint32_t nranks;      /* highest rank + 1 */
};

/* ---- Models and encodings ---- */

const char *dspy_tokenizer_encoding_for_model(const char *model)
{
    /* tiktoken's tables (model.py), for the two encodings built in. */
    static const struct {
        const char *name;
        bool prefix;
        const char *enc;
    } models[] = {
        { "o1", false, "o200k_base" },
        { "o1-", true, "o200k_base" },
        { "o3", false, "o200k_base" },
        { "o3-", true, "o200k_base" },
        { "o4-mini", true, "o200k_base" },
        { "gpt-5", true, "o200k_base" },
        { "gpt-4.5-", true, "o200k_base" },
        { "gpt-4.1", true, "o200k_base" },
        { "chatgpt-4o-", true, "o200k_base" },
        { "gpt-4o", true, "o200k_base" },
        { "ft:gpt-4o", true, "o200k_base" },
        { "gpt-4", true, "cl100k_base" },
        { "gpt-3.5", true, "cl100k_base" },
        { "gpt-35-turbo", true, "cl100k_base" },
        { "ft:gpt-4", true, "cl100k_base" },
        { "ft:gpt-3.5-turbo", true, "cl100k_base" },
        { "davinci-002", false, "cl100k_base" },
        { "babbage-002", false, "cl100k_base" },
        { "ft:davinci-002", true, "cl100k_base" },
        { "ft:babbage-002", true, "cl100k_base" },
        { "text-embedding-ada-002", false, "cl100k_base" },
        { "text-embedding-3-", true, "cl100k_base" },
    };
    if (!model)
        return NULL;
    const char *slash = strrchr(model, '/'); /* a provider prefix, "openai/gpt-4o" */
    if (slash)
        model = slash + 1;
    for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++) {
        size_t n = strlen(models[i].name);
        if (models[i].prefix ? !strncmp(model, models[i].name, n) : !strcmp(model, models[i].name))
            return models[i].enc;
    }
    return NULL;
}

const char *dspy_tokenizer_name(const dspy_tokenizer *t)
{
    return t->enc->name;
}

/* ---- The rank file ---- */

static uint32_t find_hashed(const dspy_tokenizer *t, const unsigned char *p, size_t n)
{
    uint64_t h = XXH3_64bits(p, n);
    uint32_t tag = (uint32_t)(h >> 32);
    for (size_t i = (size_t)h & t->mask;; i = (i + 1) & t->mask) {
        const struct slot *s = &t->slots[i];
        if (s->rank == NO_RANK)
            return NO_RANK;
        if (s->tag == tag && s->len == n && !memcmp(t->bytes + s->off, p, n))
            return s->rank;
    }
}

/* The rank of token p[0..n), or NO_RANK. Most lookups (a piece's first pairs) are short. */
static inline uint32_t find(const dspy_tokenizer *t, const unsigned char *p, size_t n)
{
    if (n <= 2)
        return t->short_rank[n == 1 ? p[0] : 256u + ((unsigned)p[0] << 8 | p[1])];
    return find_hashed(t, p, n);
}

static bool insert(dspy_tokenizer *t, uint32_t off, uint32_t len, uint32_t rank)
{
    uint64_t h = XXH3_64bits(t->bytes + off, len);
    uint32_t tag = (uint32_t)(h >> 32);
    for (size_t i = (size_t)h & t->mask;; i = (i + 1) & t->mask) {
        struct slot *s = &t->slots[i];
        if (s->rank == NO_RANK) {
            *s = (struct slot){ tag, rank, off, len };
            return true;
        }
        if (s->tag == tag && s->len == len && !memcmp(t->bytes + s->off, t->bytes + off, len))
            return false;
    }
}

static dspy_status bad_line(struct dspy_error *err, const char *path, long line, const char *what)
{
    dspy__err(err, DSPY_EPARSE, "%s: line %ld: %s", path, line, what);
    dspy__err_file(err, path);
    if (err)
        err->line = line;
    return DSPY_EPARSE;
}

/* Lines "base64-token rank": every token distinct, every rank distinct. */
static dspy_status parse_ranks(dspy_tokenizer *t, const char *text, size_t len, const char *path,
                               struct dspy_error *err)
{
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    if (len && text[len - 1] != '\n')
        lines++;
    if (!lines)
        return bad_line(err, path, 1, "empty rank file");
    size_t nslots = 1;
    while (nslots < lines * 2)
        nslots <<= 1;
    t->mask = nslots - 1;
    if (!(t->slots = dspy_malloc(nslots * sizeof(*t->slots))) ||
        !(t->bytes = dspy_malloc(len / 4 * 3 + 4)))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    for (size_t i = 0; i < nslots; i++)
        t->slots[i].rank = NO_RANK;
    uint32_t used = 0, max_rank = 0;
    long line = 0;
    for (size_t i = 0; i < len;) {
        const char *p = text + i, *nl = memchr(p, '\n', len - i);
        size_t n = nl ? (size_t)(nl - p) : len - i;
        i += n + 1;
        line++;
        const char *sp = memchr(p, ' ', n);
        if (!sp || sp == p)
            return bad_line(err, path, line, "expected \"base64-token rank\"");
        size_t b64 = (size_t)(sp - p), dl = 0;
        unsigned long long rank = 0;
        const char *d = sp + 1;
        for (; d < p + n && *d >= '0' && *d <= '9' && rank < NO_RANK; d++, dl++)
            rank = rank * 10 + (unsigned)(*d - '0');
        if (!dl || d != p + n || rank >= NO_RANK)
            return bad_line(err, path, line, "the rank is not a number below 2^32 - 1");
        if (rank >= lines + MAX_RANK_GAP) /* ranks index an array: no huge gaps */
            return bad_line(err, path, line, "the rank is far above the number of tokens");
        size_t blen;
        if (!dspy__base64_decode(p, b64, t->bytes + used, &blen) || !blen)
            return bad_line(err, path, line, "the token is not base64");
        if (!insert(t, used, (uint32_t)blen, (uint32_t)rank))
            return bad_line(err, path, line, "the token is listed twice");
        used += (uint32_t)blen;
        if (rank > max_rank)
            max_rank = (uint32_t)rank;
    }
    for (size_t i = 0; i < t->enc->nspecials; i++)
        if (t->enc->specials[i].id > max_rank)
            max_rank = t->enc->specials[i].id;
    t->nranks = max_rank + 1;
    if (!(t->by_rank = dspy_calloc(t->nranks, sizeof(*t->by_rank))) ||
        !(t->short_rank = dspy_malloc((256 + 65536) * sizeof(*t->short_rank))))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    for (size_t i = 0; i < 256 + 65536; i++)
        t->short_rank[i] = NO_RANK;
    for (size_t i = 0; i <= t->mask; i++) {
        const struct slot *s = &t->slots[i];
        if (s->rank == NO_RANK)
            continue;
        if (s->len <= 2) {
            const unsigned char *b = t->bytes + s->off;
            t->short_rank[s->len == 1 ? b[0] : 256u + ((unsigned)b[0] << 8 | b[1])] = s->rank;
        }
        if (t->by_rank[s->rank].len) {
            dspy__err(err, DSPY_EPARSE, "%s: rank %u is given to two tokens", path, s->rank);
            dspy__err_file(err, path);
            return DSPY_EPARSE;
        }
        t->by_rank[s->rank] = (struct span){ s->off, s->len };
    }
    for (unsigned b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        if (find(t, &c, 1) == NO_RANK) {
            dspy__err(err, DSPY_EPARSE, "%s: no token for the byte 0x%02X: not a BPE rank file",
                      path, b);
            dspy__err_file(err, path);
            return DSPY_EPARSE;
        }
    }
    for (size_t i = 0; i < t->enc->nspecials; i++)
        if (t->by_rank[t->enc->specials[i].id].len) {
            dspy__err(err, DSPY_EPARSE, "%s: rank %u is %s's special token %s", path,
                      t->enc->specials[i].id, t->enc->name, t->enc->specials[i].text);
            dspy__err_file(err, path);
            return DSPY_EPARSE;
        }
    return DSPY_OK;
}

static dspy_status read_file(const char *path, char **data, size_t *len, struct dspy_error *err)
{
    dspy_status rc = DSPY_OK;
    FILE *f = fopen(path, "rb");
    *data = NULL;
    if (!f) {
        rc = dspy__err(err, errno == ENOENT ? DSPY_ENOTFOUND : DSPY_EIO, "%s: cannot open: %s%s",
                       path, strerror(errno),
                       errno == ENOENT ? " (run scripts/fetch-tiktoken.sh)" : "");
        dspy__err_file(err, path);
        return rc;
    }
    if (!(*data = dspy_malloc(MAX_RANK_FILE + 1))) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out;
    }
    *len = fread(*data, 1, MAX_RANK_FILE + 1, f);
    if (ferror(f))
        rc = dspy__err(err, DSPY_EIO, "%s: read failed", path);
    else if (*len > MAX_RANK_FILE)
        rc = dspy__err(err, DSPY_ETOOBIG, "%s: larger than 64 MiB: not a rank file", path);
    if (rc) {
        dspy__err_file(err, path);
        dspy_free(*data);
        *data = NULL;
    }
out:
    fclose(f);
    return rc;
}

void dspy_tokenizer_free(dspy_tokenizer *t)
{
    if (!t)
        return;
    dspy_free(t->bytes);
    dspy_free(t->slots);
    dspy_free(t->by_rank);
    dspy_free(t->short_rank);
    dspy_free(t);
}

static const struct encoding *find_encoding(const char *name, struct dspy_error *err)
{
    for (size_t i = 0; name && i < sizeof(encodings) / sizeof(encodings[0]); i++)
        if (!strcmp(name, encodings[i].name))
            return &encodings[i];
    dspy__err(err, DSPY_ENOTFOUND, "unknown encoding %s (known: cl100k_base, o200k_base)",
              name ? name : "(null)");
    return NULL;
}

static dspy_status parse(const struct encoding *enc, const char *text, size_t len, const char *name,
                         dspy_tokenizer **out, struct dspy_error *err)
{
    dspy_status rc;
    dspy_tokenizer *t = dspy_calloc(1, sizeof(*t));
    if (!t)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    t->enc = enc;
    if ((rc = parse_ranks(t, text, len, name, err))) {
        dspy_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return DSPY_OK;
}

dspy_status dspy__tokenizer_parse(const char *encoding, const char *text, size_t len,
                                  const char *name, dspy_tokenizer **out, struct dspy_error *err)
{
    const struct encoding *enc = find_encoding(encoding, err);
    *out = NULL;
    return enc ? parse(enc, text, len, name, out, err) : DSPY_ENOTFOUND;
}

dspy_status dspy_tokenizer_open(const char *encoding, const char *dir, dspy_tokenizer **out,
                                struct dspy_error *err)
{
    const struct encoding *enc = find_encoding(encoding, err);
    char folder[4096], path[4200], *data = NULL;
    size_t len = 0;
    dspy_status rc;
    *out = NULL;
    if (!enc)
        return DSPY_ENOTFOUND;
    if ((rc = dspy__data_dir(dir, DSPY_TOKENIZER_DIR_ENV, "models/tiktoken", folder, sizeof(folder),
                             err)))
        return rc;
    if ((size_t)snprintf(path, sizeof(path), "%s/%s.tiktoken", folder, enc->name) >= sizeof(path))
        return dspy__err(err, DSPY_EINVAL, "rank file path too long: %s", folder);
    if ((rc = read_file(path, &data, &len, err)))
        return rc;
    rc = parse(enc, data, len, path, out, err);
    dspy_free(data);
    return rc;
}

dspy_status dspy_tokenizer_open_model(const char *model, const char *dir, dspy_tokenizer **out,
                                      struct dspy_error *err)
{
    const char *enc = dspy_tokenizer_encoding_for_model(model);
    *out = NULL;
    if (!enc)
        return dspy__err(err, DSPY_ENOTFOUND, "no known encoding for model %s",
                         model ? model : "(null)");
    return dspy_tokenizer_open(enc, dir, out, err);
}

bool dspy_tokenizer_token(const dspy_tokenizer *t, uint32_t id, const char **bytes, size_t *len)
{
    for (size_t i = 0; i < t->enc->nspecials; i++)
        if (t->enc->specials[i].id == id) {
            *bytes = t->enc->specials[i].text;
            *len = strlen(*bytes);
            return true;
        }
    if (id >= t->nranks || !t->by_rank[id].len)
        return false;
    *bytes = (const char *)t->bytes + t->by_rank[id].off;
    *len = t->by_rank[id].len;
    return true;
}

/* ---- Encoding ---- */

/* Where ids go: stored (ids != NULL after the first) or only counted. */
struct sink {
    bool store;
    uint32_t *ids;
    size_t n, cap;
};

static dspy_status emit(struct sink *k, uint32_t id)
{
    if (k->store && k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 256;
        uint32_t *ids = dspy_realloc(k->ids, cap * sizeof(*ids));
        if (!ids)
            return DSPY_ENOMEM;
        k->ids = ids;
        k->cap = cap;
    }
    if (k->store)
        k->ids[k->n] = id;
    k->n++;
    return DSPY_OK;
}

struct part {
    uint32_t start, rank;
};

/* tiktoken's _byte_pair_merge: parts[i] is a part's start and the rank of it merged with
 * the next part; the lowest rank merges, the leftmost on a tie. */
static dspy_status merge_scan(const dspy_tokenizer *t, const unsigned char *p, size_t n,
                              struct sink *k)
{
    struct part parts[SCAN_MAX + 1];
    size_t np = n + 1;
    for (size_t i = 0; i + 1 < n; i++)
        parts[i] = (struct part){ (uint32_t)i, find(t, p + i, 2) };
    parts[n - 1] = (struct part){ (uint32_t)(n - 1), NO_RANK };
    parts[n] = (struct part){ (uint32_t)n, NO_RANK };
    for (;;) {
        uint32_t min = NO_RANK;
        size_t at = 0;
        for (size_t i = 0; i + 1 < np; i++)
            if (parts[i].rank < min) {
                min = parts[i].rank;
                at = i;
            }
        if (min == NO_RANK)
            break;
        /* The rank of part i merged with the next two: what parts i, i+1 become. */
        if (at > 0)
            parts[at - 1].rank = at + 2 < np ? find(t, p + parts[at - 1].start,
                                                    parts[at + 2].start - parts[at - 1].start)
                                             : NO_RANK;
        parts[at].rank = at + 3 < np
                             ? find(t, p + parts[at].start, parts[at + 3].start - parts[at].start)
                             : NO_RANK;
        memmove(&parts[at + 1], &parts[at + 2], (np - at - 2) * sizeof(parts[0]));
        np--;
    }
    for (size_t i = 0; i + 1 < np; i++) {
        dspy_status rc = emit(k, find(t, p + parts[i].start, parts[i + 1].start - parts[i].start));
        if (rc)
            return rc;
    }
    return DSPY_OK;
}

struct pair {
    uint32_t rank, start;
};

static bool pair_before(const void *a, const void *b)
{
    const struct pair *x = a, *y = b;
    return x->rank < y->rank || (x->rank == y->rank && x->start < y->start);
}

static const struct dspy__heap_type pair_heap = { sizeof(struct pair), pair_before, NULL };

/* The same merges for a long piece: parts form a linked list (next[s] is the start of the
 * part after the one at s) and candidate pairs wait in a heap keyed (rank, start), which is
 * the scan's order; an entry whose part has since merged no longer matches rank[s]. */
static dspy_status merge_heap(const dspy_tokenizer *t, const unsigned char *p, size_t n,
                              struct sink *k)
{
    dspy_status rc = DSPY_OK;
    struct dspy__heap h;
    dspy__heap_init(&h, &pair_heap);
    uint32_t *next = dspy_malloc((n + 1) * sizeof(*next));
    uint32_t *prev = dspy_malloc((n + 1) * sizeof(*prev));
    uint32_t *rank = dspy_malloc((n + 1) * sizeof(*rank));
    if (!next || !prev || !rank || dspy__heap_reserve(&h, n)) {
        rc = DSPY_ENOMEM;
        goto out;
    }
    for (size_t s = 0; s < n; s++) {
        next[s] = (uint32_t)s + 1;
        prev[s] = (uint32_t)s - 1;
        rank[s] = s + 2 <= n ? find(t, p + s, 2) : NO_RANK;
        if (rank[s] != NO_RANK &&
            (rc = dspy__heap_push(&h, &(struct pair){ rank[s], (uint32_t)s })))
            goto out;
    }
    struct pair top;
    while (dspy__heap_pop(&h, &top)) {
        uint32_t s = top.start;
        if (rank[s] != top.rank)
            continue;
        uint32_t q = next[s];
        next[s] = next[q];
        if (next[s] < n)
            prev[next[s]] = s;
        rank[q] = NO_RANK;
        rank[s] = next[s] < n ? find(t, p + s, next[next[s]] - s) : NO_RANK;
        if (rank[s] != NO_RANK && (rc = dspy__heap_push(&h, &(struct pair){ rank[s], s })))
            goto out;
        if (s > 0) {
            uint32_t ps = prev[s];
            rank[ps] = find(t, p + ps, next[s] - ps);
            if (rank[ps] != NO_RANK && (rc = dspy__heap_push(&h, &(struct pair){ rank[ps], ps })))
                goto out;
        }
    }
    for (uint32_t s = 0; s < n && !rc; s = next[s])
        rc = emit(k, find(t, p + s, next[s] - s));
out:
    dspy__heap_release(&h);
    dspy_free(next);
    dspy_free(prev);
    dspy_free(rank);
    return rc;
}

static dspy_status encode_piece(const dspy_tokenizer *t, const unsigned char *p, size_t n,
                                struct sink *k)
{
    uint32_t whole = find(t, p, n);
    if (whole != NO_RANK)
        return emit(k, whole);
    if (n > UINT32_MAX - 2)
        return DSPY_ETOOBIG;
    return n <= SCAN_MAX ? merge_scan(t, p, n, k) : merge_heap(t, p, n, k);
}

static dspy_status encode_ordinary(const dspy_tokenizer *t, const char *text, size_t len,
                                   struct sink *k)
{
    dspy_status rc = DSPY_OK;
    for (size_t i = 0; i < len && !rc;) {
        size_t e = dspy__bpe_next_piece(t->enc->split, text, len, i);
        rc = encode_piece(t, (const unsigned char *)text + i, e - i, k);
        i = e;
    }
    return rc;
}

/* The first special token at or after text[from], or NULL. */
static const struct special *next_special(const dspy_tokenizer *t, const char *text, size_t len,
                                          size_t from, size_t *at)
{
    for (size_t i = from; i + 1 < len; i++) {
        const char *lt = memchr(text + i, '<', len - i - 1);
        if (!lt)
            return NULL;
        i = (size_t)(lt - text);
        if (text[i + 1] != '|')
            continue;
        for (size_t s = 0; s < t->enc->nspecials; s++) {
            size_t n = strlen(t->enc->specials[s].text);
            if (n <= len - i && !memcmp(text + i, t->enc->specials[s].text, n)) {
                *at = i;
                return &t->enc->specials[s];
            }
        }
    }
    return NULL;
}

/* The offset of the first byte that is not valid UTF-8, or len. */
static size_t utf8_bad(const char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t n = dspy__utf8_decode(s, len, i, &cp);
        if (cp == 0xFFFD && n == 1)
            return i;
        i += n;
    }
    return len;
}

static dspy_status encode(const dspy_tokenizer *t, const char *text, size_t len, unsigned flags,
                          struct sink *k, struct dspy_error *err)
{
    size_t bad = utf8_bad(text, len), from = 0, at;
    dspy_status rc = DSPY_OK;
    if (bad < len)
        return dspy__err_at(err, DSPY_EUTF8, text, bad, "invalid UTF-8 at byte %zu", bad);
    if (flags & DSPY_TOKENS_SPECIAL) {
        const struct special *sp;
        while (!rc && (sp = next_special(t, text, len, from, &at))) {
            if (!(rc = encode_ordinary(t, text + from, at - from, k)))
                rc = emit(k, sp->id);
            from = at + strlen(sp->text);
        }
    }
    if (!rc)
        rc = encode_ordinary(t, text + from, len - from, k);
    if (rc == DSPY_ETOOBIG)
        return dspy__err(err, rc, "a piece of the text is over 4 GiB");
    return rc ? dspy__err(err, rc, "out of memory") : DSPY_OK;
}

dspy_status dspy_tokenizer_encode(const dspy_tokenizer *t, const char *text, size_t len,
                                  unsigned flags, uint32_t **ids, size_t *n, struct dspy_error *err)
{
    struct sink k = { true, NULL, 0, 0 };
    dspy_status rc = encode(t, text, len, flags, &k, err);
    *ids = rc ? NULL : k.ids;
    *n = rc ? 0 : k.n;
    if (rc)
        dspy_free(k.ids);
    return rc;
}

dspy_status dspy_tokenizer_count(const dspy_tokenizer *t, const char *text, size_t len,
                                 unsigned flags, size_t *n, struct dspy_error *err)
{
    struct sink k = { false, NULL, 0, 0 };
    dspy_status rc = encode(t, text, len, flags, &k, err);
    *n = rc ? 0 : k.n;
    return rc;
}

/* ---- Chat messages ---- */

static dspy_status count_value(const dspy_tokenizer *t, const json_t *v, long *total,
                               struct dspy_error *err)
{
    size_t n = 0;
    dspy_status rc = DSPY_OK;
    if (json_is_string(v)) {
        rc = dspy_tokenizer_count(t, json_string_value(v), json_string_length(v), 0, &n, err);
        *total += (long)n;
    } else if (json_is_array(v)) { /* content parts: the text ones count */
        size_t i;
        const json_t *part;
        json_array_foreach((json_t *)(uintptr_t)v, i, part) {
            const json_t *text = json_object_get(part, "text");
            if (json_is_string(text) && (rc = count_value(t, text, total, err)))
                break;
        }
    }
    return rc;
}

dspy_status dspy_tokenizer_count_messages(const dspy_tokenizer *t, const json_t *messages, long *n,
                                          struct dspy_error *err)
{
    long total = 3; /* every reply is primed with <|start|>assistant<|message|> */
    size_t i;
    const json_t *m;
    *n = 0;
    if (!json_is_array(messages))
        return dspy__err(err, DSPY_EINVAL, "messages: expected an array");
    json_array_foreach((json_t *)(uintptr_t)messages, i, m) {
        const char *key;
        const json_t *v;
        if (!json_is_object(m)) {
            dspy__err(err, DSPY_EINVAL, "messages[%zu]: expected an object", i);
            return DSPY_EINVAL;
        }
        total += 3;
        json_object_foreach((json_t *)(uintptr_t)m, key, v) {
            dspy_status rc = count_value(t, v, &total, err);
            if (rc) {
                dspy__err_prefix(err, "messages[%zu].%s", i, key);
                return rc;
            }
            total += !strcmp(key, "name");
        }
    }
    *n = total;
    return DSPY_OK;
}

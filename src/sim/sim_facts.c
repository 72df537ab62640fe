/* The facts task pack of the simulator (sim layer): a synthetic knowledge base of towns
 * with attributes, one passage per fact, questions needing one fact ("What is the river of
 * Kelvaro?") or two ("What is the river of the twin of Kelvaro?"), and the answer model:
 * the simulator answers right only when the supporting passages are in the prompt, and
 * then with the accuracy model's probability. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "sim_int.h"

#define N_TOWNS 500

static const char *const syl_a[16] = { "Kel", "Vor", "Ama", "Bri", "Dun", "Esk", "Fal", "Gor",
                                       "Hal", "Ith", "Jor", "Lun", "Mar", "Nor", "Ost", "Pel" };
static const char *const syl_b[16] = { "va", "ri", "mo", "le", "sa", "tu", "na", "ke",
                                       "do", "bi", "ra", "fe", "lo", "zu", "gi", "pa" };
static const char *const syl_c[16] = { "ro",  "th",  "n",   "x",   "dor", "mir", "ssa", "ven",
                                       "lia", "gar", "tos", "wyn", "bel", "rak", "sel", "qua" };

/* Attributes: the first ones name a value word, the last two another town. */
static const char *const attrs[] = { "river",    "founder", "mascot", "dish",
                                     "festival", "twin",    "rival" };
#define N_ATTRS 7
#define N_TOWN_ATTRS 2 /* twin, rival */

static void town_name(unsigned i, char *out, size_t cap)
{
    unsigned x = (i * 2654435761u + 977u) % 4096u; /* a bijection on 0..4095 */
    snprintf(out, cap, "%s%s%s", syl_a[x / 256], syl_b[(x / 16) % 16], syl_c[x % 16]);
}

static void value_word(uint64_t h, char *out, size_t cap)
{
    snprintf(out, cap, "%s%s%s", syl_a[h % 16], syl_c[(h >> 4) % 16], syl_b[(h >> 8) % 16]);
}

/* The value of attribute `a` of town `t`: a word, or (twin, rival) another town. */
static void fact_value(uint64_t seed, unsigned t, unsigned a, char *out, size_t cap)
{
    uint64_t h = dspy__sim_mix(dspy__sim_mix(dspy__sim_mix(seed, 0xfac75ull), t), a);
    if (a >= N_ATTRS - N_TOWN_ATTRS) {
        unsigned other = (unsigned)(h % (N_TOWNS - 1));
        town_name(other >= t ? other + 1 : other, out, cap);
    } else
        value_word(h >> 12, out, cap);
}

static unsigned town_of_value(uint64_t seed, unsigned t, unsigned a)
{
    uint64_t h = dspy__sim_mix(dspy__sim_mix(dspy__sim_mix(seed, 0xfac75ull), t), a);
    unsigned other = (unsigned)(h % (N_TOWNS - 1));
    return other >= t ? other + 1 : other;
}

static dspy_status write_line(FILE *f, struct dspy_buf *b, struct dspy_error *err)
{
    if (fwrite(b->ptr, 1, b->len, f) != b->len)
        return dspy__err(err, DSPY_EIO, "write failed");
    return DSPY_OK;
}

dspy_status dspy_sim_write_facts(FILE *questions, FILE *corpus, uint64_t n, uint64_t seed,
                                 struct dspy_error *err)
{
    struct dspy_buf b;
    char town[32], val[32], mid[32];
    dspy_status rc = DSPY_OK;
    if (!questions || !corpus)
        return dspy__err(err, DSPY_EINVAL, "the facts pack writes questions and a corpus");
    dspy__buf_init(&b, 4096);
    for (unsigned t = 0; t < N_TOWNS && !rc; t++) {
        town_name(t, town, sizeof(town));
        for (unsigned a = 0; a < N_ATTRS && !rc; a++) {
            fact_value(seed, t, a, val, sizeof(val));
            dspy__buf_reset(&b);
            if ((rc = dspy__buf_addf(&b,
                                     "{\"id\": \"f%u_%s\", \"text\": \"The %s of %s is %s.\"}\n", t,
                                     attrs[a], attrs[a], town, val)))
                break;
            if ((rc = write_line(corpus, &b, err)))
                break;
            /* A distractor that shares the fact's words but not the fact, so that the top
             * passage by BM25 is often not the one needed and a larger k helps. */
            uint64_t hd = dspy__sim_mix(dspy__sim_mix(seed, 0xd157ull), t * 16u + a);
            unsigned other = (unsigned)(hd % (N_TOWNS - 1));
            town_name(other >= t ? other + 1 : other, mid, sizeof(mid));
            dspy__buf_reset(&b);
            if ((rc = dspy__buf_addf(&b,
                                     "{\"id\": \"d%u_%s\", \"title\": \"%s\", \"text\": "
                                     "\"Travellers often confuse the %s of %s with the %s of "
                                     "%s.\"}\n",
                                     t, attrs[a], town, attrs[a], town, attrs[a], mid)))
                break;
            rc = write_line(corpus, &b, err);
        }
    }
    for (uint64_t i = 0; i < n && !rc; i++) {
        uint64_t h = dspy__sim_mix(dspy__sim_mix(seed, 0x9e57ull), i);
        unsigned t = (unsigned)(h % N_TOWNS);
        town_name(t, town, sizeof(town));
        dspy__buf_reset(&b);
        if (dspy__sim_unit(dspy__sim_mix(h, 1)) < 0.3) { /* two hops */
            unsigned a1 = N_ATTRS - N_TOWN_ATTRS + (unsigned)(dspy__sim_mix(h, 2) % N_TOWN_ATTRS);
            unsigned a2 = (unsigned)(dspy__sim_mix(h, 3) % (N_ATTRS - N_TOWN_ATTRS));
            unsigned t2 = town_of_value(seed, t, a1);
            town_name(t2, mid, sizeof(mid));
            fact_value(seed, t2, a2, val, sizeof(val));
            rc = dspy__buf_addf(&b,
                                "{\"question\": \"What is the %s of the %s of %s?\", \"answer\": "
                                "\"%s\", \"supporting\": [\"f%u_%s\", \"f%u_%s\"], \"hops\": 2}\n",
                                attrs[a2], attrs[a1], town, val, t, attrs[a1], t2, attrs[a2]);
        } else {
            unsigned a = (unsigned)(dspy__sim_mix(h, 4) % N_ATTRS);
            fact_value(seed, t, a, val, sizeof(val));
            rc = dspy__buf_addf(&b,
                                "{\"question\": \"What is the %s of %s?\", \"answer\": \"%s\", "
                                "\"supporting\": [\"f%u_%s\"], \"hops\": 1}\n",
                                attrs[a], town, val, t, attrs[a]);
        }
        if (!rc)
            rc = write_line(questions, &b, err);
    }
    if (rc && !(err && err->code))
        dspy__err(err, rc, "cannot build the facts pack: %s", dspy_strerror(rc));
    dspy__buf_release(&b);
    return rc;
}

/* ---- reading questions and facts out of prompts -------------------------------------- */

static const char *find_bytes(const char *hay, size_t n, const char *needle, size_t m)
{
    for (size_t i = 0; m && n >= m && i <= n - m; i++)
        if (hay[i] == needle[0] && !memcmp(hay + i, needle, m))
            return hay + i;
    return NULL;
}

static bool read_attr(const char *s, size_t n, size_t *i, int *attr)
{
    for (int a = 0; a < N_ATTRS; a++) {
        size_t l = strlen(attrs[a]);
        if (*i + l <= n && !memcmp(s + *i, attrs[a], l)) {
            *attr = a;
            *i += l;
            return true;
        }
    }
    return false;
}

static bool read_lit(const char *s, size_t n, size_t *i, const char *lit)
{
    size_t l = strlen(lit);
    if (*i + l > n || memcmp(s + *i, lit, l))
        return false;
    *i += l;
    return true;
}

static size_t read_word(const char *s, size_t n, size_t i)
{
    size_t j = i;
    while (j < n && ((s[j] >= 'a' && s[j] <= 'z') || (s[j] >= 'A' && s[j] <= 'Z')))
        j++;
    return j - i;
}

bool dspy__sim_facts_find(const char *s, size_t n, struct dspy__sim_facts_q *q)
{
    static const char open[] = "What is the ";
    for (const char *at = s; at && (size_t)(at - s) < n;) {
        at = find_bytes(at, n - (size_t)(at - s), open, sizeof(open) - 1);
        if (!at)
            return false;
        size_t i = (size_t)(at - s) + sizeof(open) - 1;
        at++;
        memset(q, 0, sizeof(*q));
        if (!read_attr(s, n, &i, &q->attr2) || !read_lit(s, n, &i, " of "))
            continue;
        q->hops = 1;
        if (read_lit(s, n, &i, "the ")) {
            if (!read_attr(s, n, &i, &q->attr1) || !read_lit(s, n, &i, " of "))
                continue;
            q->hops = 2;
        }
        size_t w = read_word(s, n, i);
        if (!w || w >= sizeof(q->town) || i + w >= n || s[i + w] != '?')
            continue;
        memcpy(q->town, s + i, w);
        q->town[w] = '\0';
        return true;
    }
    return false;
}

/* "The <attr> of <town> is <value>." anywhere in the prompt's inputs. */
static bool lookup(const struct dspy__sim_prompt *p, const char *attr, const char *town, char *out,
                   size_t cap)
{
    char pat[96];
    int pn = snprintf(pat, sizeof(pat), "The %s of %s is ", attr, town);
    struct dspy__sim_view where[DSPY__SIM_MAX_FIELDS + 1];
    size_t nw = 0;
    if (p->adapter == DSPY__SIM_ADAPTER_NONE)
        where[nw++] = p->final_user;
    for (size_t i = 0; i < p->n_inputs; i++)
        if (p->inputs[i].value.p)
            where[nw++] = p->inputs[i].value;
    for (size_t k = 0; k < nw; k++) {
        const char *hit = find_bytes(where[k].p, where[k].n, pat, (size_t)pn);
        if (!hit)
            continue;
        size_t i = (size_t)(hit - where[k].p) + (size_t)pn;
        size_t w = read_word(where[k].p, where[k].n, i);
        if (!w || w >= cap)
            continue;
        memcpy(out, where[k].p + i, w);
        out[w] = '\0';
        return true;
    }
    return false;
}

bool dspy__sim_facts_answer(const struct dspy__sim_prompt *p, const struct dspy__sim_facts_q *q,
                            uint64_t h, bool reasoning, double quality, char *out, size_t cap)
{
    char mid[32];
    bool found;
    if (q->hops == 2)
        found = lookup(p, attrs[q->attr1], q->town, mid, sizeof(mid)) &&
                lookup(p, attrs[q->attr2], mid, out, cap);
    else
        found = lookup(p, attrs[q->attr2], q->town, out, cap);
    /* The accuracy model: right with p when the facts are there (a reasoning field helps). */
    double acc = (reasoning ? DSPY__SIM_FACTS_ACC_COT : DSPY__SIM_FACTS_ACC) *
                 (quality > 0 ? quality : 1.0);
    acc = acc > 0.99 ? 0.99 : acc;
    if (found && dspy__sim_unit(dspy__sim_mix(h, 0xfac7ull)) < acc)
        return true;
    value_word(dspy__sim_mix(h, 0xbadull), out, cap); /* a plausible wrong answer */
    return false;
}

/* ---- ranking prompts ------------------------------------------------------------------ */

static const struct dspy__sim_field *input_named(const struct dspy__sim_prompt *p, const char *name)
{
    for (size_t i = 0; i < p->n_inputs; i++)
        if (dspy__sim_view_eq(p->inputs[i].name, name) && p->inputs[i].value.p)
            return &p->inputs[i];
    return NULL;
}

/* The items of a list as DSPy shows it to a str field ("[1] «a»\n[2] «b»"), at most max;
 * a value without the marks is one item. */
static size_t split_numbered(struct dspy__sim_view v, struct dspy__sim_view *out, size_t max)
{
    char mark[24];
    int ml = snprintf(mark, sizeof(mark), "[1] ");
    if (v.n < (size_t)ml || memcmp(v.p, mark, (size_t)ml)) {
        out[0] = v;
        return 1;
    }
    size_t n = 0, at = (size_t)ml;
    while (n < max) {
        ml = snprintf(mark, sizeof(mark), "\n[%zu] ", n + 2);
        const char *next = find_bytes(v.p + at, v.n - at, mark, (size_t)ml);
        size_t end = next ? (size_t)(next - v.p) : v.n;
        out[n++] = (struct dspy__sim_view){ v.p + at, end - at };
        if (!next)
            break;
        at = end + (size_t)ml;
    }
    return n;
}

/* Whether `doc` holds "The <attr> of <town> is <word>"; the word into val. */
static bool doc_fact(struct dspy__sim_view doc, const char *attr, const char *town, char *val,
                     size_t cap)
{
    char pat[96];
    int pn = snprintf(pat, sizeof(pat), "The %s of %s is ", attr, town);
    const char *hit = find_bytes(doc.p, doc.n, pat, (size_t)pn);
    if (!hit)
        return false;
    size_t i = (size_t)(hit - doc.p) + (size_t)pn, w = read_word(doc.p, doc.n, i);
    if (val && w && w < cap) {
        memcpy(val, doc.p + i, w);
        val[w] = '\0';
    }
    return w > 0;
}

json_t *dspy__sim_facts_rank(const struct dspy__sim_prompt *p, uint64_t h, bool as_list)
{
    const struct dspy__sim_field *docs = input_named(p, "documents");
    const struct dspy__sim_field *query = input_named(p, "query");
    struct dspy__sim_view items[DSPY__SIM_RANK_MAX];
    bool first[DSPY__SIM_RANK_MAX] = { false };
    struct dspy__sim_facts_q q;
    char mid[32] = "";
    if (!docs)
        return NULL;
    size_t n = split_numbered(docs->value, items, DSPY__SIM_RANK_MAX);
    if (query && dspy__sim_facts_find(query->value.p, query->value.n, &q) &&
        dspy__sim_unit(dspy__sim_mix(h, 0x4a4bull)) < DSPY__SIM_FACTS_RANK_ACC) {
        const char *a1 = attrs[q.hops == 2 ? q.attr1 : q.attr2];
        for (size_t i = 0; i < n; i++)
            if (doc_fact(items[i], a1, q.town, q.hops == 2 && !mid[0] ? mid : NULL, sizeof(mid)))
                first[i] = true;
        for (size_t i = 0; q.hops == 2 && mid[0] && i < n; i++)
            if (doc_fact(items[i], attrs[q.attr2], mid, NULL, 0))
                first[i] = true;
    }
    json_t *order = json_array();
    for (int pass = 0; order && pass < 2; pass++)
        for (size_t i = 0; i < n; i++)
            if (first[i] == (pass == 0) &&
                json_array_append_new(order, json_integer((json_int_t)i + 1))) {
                json_decref(order);
                return NULL;
            }
    if (as_list || !order)
        return order;
    char *text = json_dumps(order, JSON_COMPACT);
    json_decref(order);
    json_t *v = text ? json_string(text) : NULL;
    free(text);
    return v;
}

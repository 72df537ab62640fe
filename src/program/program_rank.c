/* Rank steps of programs (program layer): an LM orders a list field of the record (the
 * passages of a retrieve step) through a Predict of `query, documents -> ranked_documents`,
 * and the best k go on to the next predictor. The LM's answer is read leniently (numbers or
 * texts, a JSON list or plain text); what cannot be read keeps the original order, with a
 * warning in the outputs, never a failed record. */
#include <stdio.h>
#include <string.h>

#include "base/status.h"
#include "program/module_int.h"
#include "program/program_int.h"

#define RANK_INSTRUCTIONS                                                                  \
    "Rank the documents by how well they answer the query, most relevant first. Give the " \
    "documents' numbers as shown, best first, as a JSON list such as [3, 1, 2]."

dspy_module *dspy__rank_module(const char *instructions, enum dspy_adapter_kind adapter)
{
    dspy_signature *sig = NULL;
    if (dspy_signature_parse("query, documents -> ranked_documents",
                             instructions ? instructions : RANK_INSTRUCTIONS, &sig, NULL))
        return NULL;
    dspy_module *m = dspy_module_new(DSPY_MODULE_PREDICT, sig, adapter);
    dspy_signature_free(sig);
    return m;
}

/* ---- reading the ranking ------------------------------------------------------------- */

struct ranking {
    const json_t *docs;
    size_t n;
    size_t *order; /* the documents named so far */
    size_t got;
    bool *seen;
    bool bad; /* an item named no document */
};

static void take(struct ranking *r, size_t doc)
{
    if (doc >= r->n || r->seen[doc])
        return; /* a repeat: the first mention counts */
    r->seen[doc] = true;
    r->order[r->got++] = doc;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* `s` trimmed of spaces, quotes, guillemets and list marks around it. */
static void trim(const char **s, size_t *n)
{
    for (;;) {
        const char *p = *s;
        size_t m = *n;
        while (m &&
               (is_space(*p) || *p == '"' || *p == '\'' || *p == '-' || *p == '*' || *p == ','))
            p++, m--;
        while (m && (is_space(p[m - 1]) || p[m - 1] == '"' || p[m - 1] == '\'' || p[m - 1] == ',' ||
                     p[m - 1] == '.'))
            m--;
        if (m >= 2 && !memcmp(p, "\xC2\xAB", 2)) /* « */
            p += 2, m -= 2;
        if (m >= 2 && !memcmp(p + m - 2, "\xC2\xBB", 2)) /* » */
            m -= 2;
        bool same = p == *s && m == *n;
        *s = p;
        *n = m;
        if (same)
            return;
    }
}

/* A document number in `s`: "3", "[3]", "3." or "(3)", 1-based; -1 when it is not one. */
static long number_of(const char *s, size_t n)
{
    trim(&s, &n);
    if (n && (*s == '[' || *s == '(') && (s[n - 1] == ']' || s[n - 1] == ')'))
        s++, n -= 2;
    if (!n || n > 6)
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* A document whose text is `s` (trimmed; a leading "[3] " mark dropped), or failing that
 * the one document that `s` starts or is contained in. -1 when none or several. */
static long text_of(const struct ranking *r, const char *s, size_t n)
{
    trim(&s, &n);
    if (n > 2 && *s == '[') {
        const char *close = memchr(s, ']', n < 8 ? n : 8);
        if (close && number_of(s, (size_t)(close - s) + 1) >= 0) {
            n -= (size_t)(close + 1 - s);
            s = close + 1;
            trim(&s, &n);
        }
    }
    if (!n)
        return -1;
    long found = -1;
    for (size_t i = 0; i < r->n; i++) {
        const char *d = json_string_value(json_array_get(r->docs, i));
        size_t dn = d ? strlen(d) : 0;
        if (dn == n && !memcmp(d, s, n))
            return (long)i;
        if (found == -1 && n >= 8 && dn >= n && !memcmp(d, s, n))
            found = (long)i;
        else if (n >= 8 && dn >= n && !memcmp(d, s, n))
            found = -2; /* a prefix of several */
    }
    return found >= 0 ? found : -1;
}

/* One item of the answer: a number, or a document's text. */
static void item(struct ranking *r, const char *s, size_t n)
{
    long v = number_of(s, n);
    if (v >= 1 && (size_t)v <= r->n) {
        take(r, (size_t)v - 1);
        return;
    }
    long t = v < 0 ? text_of(r, s, n) : -1;
    if (t >= 0)
        take(r, (size_t)t);
    else
        r->bad = true;
}

static void read_json_list(struct ranking *r, const json_t *list)
{
    size_t i;
    const json_t *v;
    json_array_foreach(list, i, v) {
        if (json_is_integer(v) && json_integer_value(v) >= 1 &&
            (size_t)json_integer_value(v) <= r->n)
            take(r, (size_t)json_integer_value(v) - 1);
        else if (json_is_string(v))
            item(r, json_string_value(v), json_string_length(v));
        else
            r->bad = true;
    }
}

/* Plain text: items split at commas, semicolons, ">" and line ends; or, when the text
 * holds "[n]" marks, those marks in order. */
static void read_text(struct ranking *r, const char *s, size_t n)
{
    bool marks = false;
    for (size_t i = 0; i + 2 < n && !marks; i++)
        marks = s[i] == '[' && s[i + 1] >= '0' && s[i + 1] <= '9';
    if (marks) {
        for (size_t i = 0; i < n; i++) {
            if (s[i] != '[')
                continue;
            const char *close = memchr(s + i, ']', n - i < 8 ? n - i : 8);
            long v = close ? number_of(s + i, (size_t)(close - (s + i)) + 1) : -1;
            if (v >= 1 && (size_t)v <= r->n)
                take(r, (size_t)v - 1);
            else if (v >= 0)
                r->bad = true;
        }
        return;
    }
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != ',' && s[i] != ';' && s[i] != '>' && s[i] != '\n')
            continue;
        const char *p = s + start;
        size_t m = i - start;
        trim(&p, &m);
        if (m)
            item(r, p, m);
        start = i + 1;
    }
}

bool dspy__rank_read(const char *text, size_t len, const json_t *documents, size_t *order)
{
    struct ranking r = { documents, json_array_size(documents), order, 0, NULL, false };
    if (!r.n)
        return true;
    if (!(r.seen = dspy_calloc(r.n, sizeof(*r.seen))))
        r.bad = true;
    else if (text && len) {
        const char *s = text;
        size_t n = len;
        while (n && is_space(*s))
            s++, n--;
        json_t *j = n && *s == '[' ? json_loadb(s, n, JSON_DECODE_ANY, NULL) : NULL;
        if (json_is_array(j))
            read_json_list(&r, j);
        else
            read_text(&r, s, n);
        json_decref(j);
    }
    bool complete = r.got > 0 && !r.bad;
    for (size_t i = 0; i < r.n; i++) /* the rest, in their order */
        if (!r.seen || !r.seen[i])
            order[r.got++] = i;
    dspy_free(r.seen);
    return complete;
}

/* ---- the step ------------------------------------------------------------------------ */

dspy_status dspy__program_add_rank(dspy_program *p, size_t before, const char *name,
                                   const char *query, const char *documents, const char *output,
                                   size_t k, dspy_module *ranker)
{
    struct dspy__retrieve_step *steps;
    if (!ranker || !(steps = dspy_realloc(p->steps, (p->nsteps + 1) * sizeof(*steps)))) {
        dspy_module_free(ranker);
        return DSPY_ENOMEM;
    }
    p->steps = steps;
    size_t at = p->nsteps;
    while (at > 0 && steps[at - 1].before > before)
        at--;
    struct dspy__retrieve_step s = { dspy_strdup(name),
                                     dspy_strdup(query),
                                     dspy_strdup(output),
                                     k,
                                     before,
                                     NULL,
                                     dspy_strdup(documents),
                                     ranker };
    if (!s.name || !s.query || !s.output || !s.documents) {
        dspy_free(s.name);
        dspy_free(s.query);
        dspy_free(s.output);
        dspy_free(s.documents);
        dspy_module_free(ranker);
        return DSPY_ENOMEM;
    }
    memmove(steps + at + 1, steps + at, (p->nsteps - at) * sizeof(*steps));
    steps[at] = s;
    p->nsteps++;
    p->flat = false;
    return DSPY_OK;
}

/* Add a warning to the outputs' "warnings" list. */
static dspy_status warn(json_t *all, const char *msg)
{
    json_t *list = json_object_get(all, "warnings");
    if (!list && (!(list = json_array()) || json_object_set_new(all, "warnings", list)))
        return DSPY_ENOMEM;
    return json_array_append_new(list, json_string(msg)) ? DSPY_ENOMEM : DSPY_OK;
}

dspy_status dspy__rank_step_run(struct dspy__retrieve_step *s, json_t *record, json_t *all,
                                dspy_lm *lm, struct dspy__engine_group *group,
                                const struct dspy_call_config *cfg, struct dspy_call_info *info,
                                struct dspy_error *err)
{
    json_t *q = json_object_get(record, s->query), *docs = json_object_get(record, s->documents);
    json_t *inputs = NULL, *pred = NULL, *ranked = NULL;
    size_t *order = NULL, n = json_array_size(docs);
    struct dspy_error e;
    dspy_status rc;
    if (!json_is_string(q) || !json_is_array(docs)) {
        const char *field = !json_is_string(q) ? s->query : s->documents;
        const json_t *v = !json_is_string(q) ? q : docs;
        rc = v ? DSPY_EINVAL : DSPY_ENOTFOUND;
        dspy__err(err, rc, "rank step %s: the field \"%s\" %s", s->name, field,
                  !v                  ? "is missing"
                  : field == s->query ? "must be a string"
                                      : "must be a list (the passages of a retrieve step)");
        dspy__err_field(err, field);
        return rc;
    }
    for (size_t i = 0; i < n; i++)
        if (!json_is_string(json_array_get(docs, i))) {
            dspy__err(err, DSPY_EINVAL, "rank step %s: item %zu of \"%s\" is not a string", s->name,
                      i, s->documents);
            dspy__err_field(err, s->documents);
            return DSPY_EINVAL;
        }
    if (!(order = dspy_malloc((n ? n : 1) * sizeof(*order))) || !(ranked = json_array()))
        goto oom;
    if (n > 1) {
        if (!(inputs = json_pack("{s:O, s:O}", "query", q, "documents", docs)))
            goto oom;
        struct dspy_call_info one;
        dspy_error_clear(&e);
        rc = dspy__module_call_in(s->ranker, lm, group, NULL, inputs, cfg, &pred, NULL, &one, &e);
        if (info) {
            info->lm_calls += one.lm_calls;
            info->cache_hits += one.cache_hits;
            info->usage.prompt_tokens += one.usage.prompt_tokens;
            info->usage.completion_tokens += one.usage.completion_tokens;
            info->usage.total_tokens += one.usage.total_tokens;
            info->cached_usage.prompt_tokens += one.cached_usage.prompt_tokens;
            info->cached_usage.completion_tokens += one.cached_usage.completion_tokens;
            info->cached_usage.total_tokens += one.cached_usage.total_tokens;
        }
        if (rc && rc != DSPY_EADAPTER) { /* the LM failed: the record does, as a predictor's */
            if (err)
                *err = e;
            dspy__err_prefix(err, "rank step %s", s->name);
            goto out;
        }
        json_t *v = json_object_get(pred, "ranked_documents");
        const char *text = json_string_value(v);
        bool read = !rc && dspy__rank_read(text, text ? json_string_length(v) : 0, docs, order);
        char msg[sizeof(e.message) + 128];
        if (rc)
            snprintf(msg, sizeof(msg),
                     "rank step %s: the LM's answer does not parse (%s); the documents keep "
                     "their order",
                     s->name, e.message);
        else
            snprintf(msg, sizeof(msg),
                     "rank step %s: part of the ranking names no document; the documents it "
                     "does not name keep their order",
                     s->name);
        if (!read && (rc = warn(all ? all : record, msg)))
            goto oom;
        if (!read && !text) /* nothing read: the original order */
            for (size_t i = 0; i < n; i++)
                order[i] = i;
    } else if (n) {
        order[0] = 0;
    }
    size_t keep = s->k && s->k < n ? s->k : n;
    for (size_t i = 0; i < keep; i++)
        if (json_array_append(ranked, json_array_get(docs, order[i])))
            goto oom;
    if (json_object_set(record, s->output, ranked) ||
        (all && json_object_set(all, s->output, ranked)))
        goto oom;
    rc = DSPY_OK;
    goto out;
oom:
    rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
out:
    json_decref(inputs);
    json_decref(pred);
    json_decref(ranked);
    dspy_free(order);
    return rc;
}

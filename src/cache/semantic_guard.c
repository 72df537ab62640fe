/* Guards and partitions of the semantic cache level (cache layer): the word-level checks
 * that refuse a near-duplicate when the two texts differ in numbers, negation, dates,
 * named entities, scope, antonyms or a substituted action or object, and the partition id and projected text of a request.
 * Pure functions, table-tested without the model; see docs/semantic-cache.md sections 3, 5. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/cache.h>

#include "base/buf.h"
#include "base/status.h"
#include "semantic_lexicon.h"

/* ---- words ----------------------------------------------------------------------------- */

#define WORD_MAX 48
#define WORDS_MAX 1024

struct word {
    char w[WORD_MAX];
    bool entity; /* capitalized away from sentence start */
};

struct words {
    size_t n;
    struct word *v; /* sorted by w after split() */
    size_t nq;
    char (*quoted)[WORD_MAX * 2]; /* quoted strings, lower-cased, sorted */
};

static bool is_word_byte(unsigned char ch)
{
    return isalnum(ch) || ch >= 0x80;
}

static void add_word(struct words *ws, const char *s, size_t n, bool entity)
{
    if (ws->n >= WORDS_MAX || !n)
        return;
    struct word *w = &ws->v[ws->n++];
    if (n >= WORD_MAX)
        n = WORD_MAX - 1;
    for (size_t i = 0; i < n; i++)
        w->w[i] = (char)tolower((unsigned char)s[i]);
    w->w[n] = 0;
    w->entity = entity;
}

/* Contractions: "don't" -> "do" "not", "can't" -> "ca" "not", "i'd" -> "i". */
static void add_token(struct words *ws, const char *s, size_t n, bool entity)
{
    const char *ap = memchr(s, '\'', n);
    if (!ap) {
        add_word(ws, s, n, entity);
        return;
    }
    size_t stem = (size_t)(ap - s);
    if (stem >= 1 && (s[stem - 1] == 'n' || s[stem - 1] == 'N') && n - stem == 2 &&
        (s[stem + 1] == 't' || s[stem + 1] == 'T')) {
        add_word(ws, s, stem - 1, false);
        add_word(ws, "not", 3, false);
        return;
    }
    add_word(ws, s, stem, entity);
}

static int cmp_word(const void *a, const void *b)
{
    return strcmp(((const struct word *)a)->w, ((const struct word *)b)->w);
}

static int cmp_quoted(const void *a, const void *b)
{
    return strcmp(a, b);
}

static bool split(const char *s, size_t len, struct words *ws)
{
    ws->n = ws->nq = 0;
    ws->v = dspy_malloc(sizeof(*ws->v) * WORDS_MAX);
    ws->quoted = dspy_malloc(sizeof(*ws->quoted) * 64);
    if (!ws->v || !ws->quoted)
        return false;
    bool sentence_start = true;
    size_t i = 0;
    while (i < len) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '`') { /* a quoted string: kept whole */
            const char *end = memchr(s + i + 1, ch, len - i - 1);
            if (end && ws->nq < 64) {
                size_t n = (size_t)(end - (s + i + 1)), k;
                if (n >= sizeof(ws->quoted[0]))
                    n = sizeof(ws->quoted[0]) - 1;
                for (k = 0; k < n; k++)
                    ws->quoted[ws->nq][k] = (char)tolower((unsigned char)s[i + 1 + k]);
                ws->quoted[ws->nq++][n] = 0;
            }
            i++;
            continue;
        }
        if (!is_word_byte(ch)) {
            if (ch == '.' || ch == '?' || ch == '!' || ch == ':' || ch == '\n' || ch == ';')
                sentence_start = true;
            i++;
            continue;
        }
        size_t st = i;
        while (i < len &&
               (is_word_byte((unsigned char)s[i]) ||
                (s[i] == '\'' && i + 1 < len && isalpha((unsigned char)s[i + 1]) && i > st)))
            i++;
        bool cap = isupper((unsigned char)s[st]);
        size_t n = i - st;
        /* "I", "I'm", "I'd" are capitalized everywhere */
        bool pronoun = (s[st] == 'I') && (n == 1 || s[st + 1] == '\'');
        add_token(ws, s + st, n, cap && !sentence_start && !pronoun);
        sentence_start = false;
    }
    qsort(ws->v, ws->n, sizeof(*ws->v), cmp_word);
    qsort(ws->quoted, ws->nq, sizeof(*ws->quoted), cmp_quoted);
    return true;
}

static void words_free(struct words *ws)
{
    dspy_free(ws->v);
    dspy_free(ws->quoted);
}

static bool has(const struct words *ws, const char *w)
{
    struct word key;
    snprintf(key.w, sizeof(key.w), "%s", w);
    return bsearch(&key, ws->v, ws->n, sizeof(*ws->v), cmp_word) != NULL;
}

static bool in_list(const char *w, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(w, *list))
            return true;
    return false;
}

/* ---- the lists (docs/semantic-cache.md section 5) -------------------------------------- */

static const char *const negations[] = { "not",     "no",      "never",   "none",
                                         "nor",     "neither", "without", "cannot",
                                         "nothing", "nobody",  "nowhere", "except",
                                         "stop",    "avoid",   "against", NULL };
static const char *const neg_prefixes[] = { "un", "in", "im", "il", "ir", "dis", "non", NULL };
static const char *const dates[] = {
    "monday",   "tuesday",   "wednesday", "thursday", "friday",   "saturday",  "sunday",
    "january",  "february",  "march",     "april",    "may",      "june",      "july",
    "august",   "september", "october",   "november", "december", "jan",       "feb",
    "mar",      "apr",       "jun",       "jul",      "aug",      "sep",       "sept",
    "oct",      "nov",       "dec",       "today",    "tomorrow", "yesterday", "tonight",
    "morning",  "afternoon", "evening",   "night",    "weekend",  "weekday",   "week",
    "month",    "year",      "daily",     "weekly",   "monthly",  "yearly",    "annual",
    "annually", "hourly",    "now",       "spring",   "summer",   "autumn",    "fall",
    "winter",   NULL
};
static const char *const scopes[] = { "all",    "any",    "every",  "each",     "some",   "only",
                                      "most",   "least",  "first",  "last",     "more",   "less",
                                      "fewer",  "before", "after",  "both",     "either", "latest",
                                      "oldest", "newest", "next",   "previous", "many",   "few",
                                      "entire", "whole",  "single", "per",      "total",  "average",
                                      NULL };
static const char *const antonyms[][2] = {
    { "enable", "disable" },  { "on", "off" },
    { "open", "close" },      { "increase", "decrease" },
    { "buy", "sell" },        { "add", "remove" },
    { "start", "stop" },      { "in", "out" },
    { "up", "down" },         { "max", "min" },
    { "maximum", "minimum" }, { "high", "low" },
    { "higher", "lower" },    { "best", "worst" },
    { "cheap", "expensive" }, { "cheapest", "expensive" },
    { "safe", "dangerous" },  { "hot", "cold" },
    { "import", "export" },   { "upload", "download" },
    { "login", "logout" },    { "encrypt", "decrypt" },
    { "allow", "deny" },      { "accept", "reject" },
    { "win", "lose" },        { "true", "false" },
    { "yes", "no" },          { "subscribe", "unsubscribe" },
    { "include", "exclude" }, { "send", "receive" },
    { "before", "after" },    { "above", "below" },
    { "over", "under" },      { "large", "small" },
    { "larger", "smaller" },  { "long", "short" },
    { "fast", "slow" },       { "faster", "slower" },
    { "north", "south" },     { "east", "west" },
    { "left", "right" },      { "male", "female" },
    { "men", "women" },       { "adult", "child" },
    { "adults", "children" }, { "install", "uninstall" },
    { "lock", "unlock" },     { "join", "leave" },
    { "create", "delete" },   { "hire", "fire" },
    { "arrive", "depart" },
};

const char *dspy_cache_semantic_guard_name(unsigned bit)
{
    switch (bit) {
    case DSPY_SEMANTIC_GUARD_NUMBER: return "number";
    case DSPY_SEMANTIC_GUARD_NEGATION: return "negation";
    case DSPY_SEMANTIC_GUARD_DATE: return "date";
    case DSPY_SEMANTIC_GUARD_ENTITY: return "entity";
    case DSPY_SEMANTIC_GUARD_SCOPE: return "scope";
    case DSPY_SEMANTIC_GUARD_ANTONYM: return "antonym";
    case DSPY_SEMANTIC_GUARD_SUBSTITUTION: return "substitution";
    default: return "";
    }
}

/* The guards that fire on the words of `x` missing from `y` (the other text). */
static unsigned one_side(const struct words *x, const struct words *y)
{
    unsigned fired = 0;
    for (size_t i = 0; i < x->n; i++) {
        const struct word *w = &x->v[i];
        if (i && !strcmp(w->w, x->v[i - 1].w) && !w->entity)
            continue;
        if (has(y, w->w))
            continue;
        if (strpbrk(w->w, "0123456789"))
            fired |= DSPY_SEMANTIC_GUARD_NUMBER;
        if (in_list(w->w, negations))
            fired |= DSPY_SEMANTIC_GUARD_NEGATION;
        for (const char *const *p = neg_prefixes; *p; p++) {
            size_t pl = strlen(*p);
            if (!strncmp(w->w, *p, pl) && strlen(w->w) >= pl + 3 && has(y, w->w + pl))
                fired |= DSPY_SEMANTIC_GUARD_NEGATION;
        }
        if (in_list(w->w, dates))
            fired |= DSPY_SEMANTIC_GUARD_DATE;
        if (w->entity)
            fired |= DSPY_SEMANTIC_GUARD_ENTITY;
        if (in_list(w->w, scopes))
            fired |= DSPY_SEMANTIC_GUARD_SCOPE;
        for (size_t k = 0; k < sizeof(antonyms) / sizeof(antonyms[0]); k++)
            for (int side = 0; side < 2; side++)
                if (!strcmp(w->w, antonyms[k][side]) && has(y, antonyms[k][!side]) &&
                    !has(x, antonyms[k][!side]))
                    fired |= DSPY_SEMANTIC_GUARD_ANTONYM;
    }
    return fired;
}

/* ---- substitution: a content word of each text that the other lacks ----------------- */

/* A word that may name an action or a thing: not a function word, nor one the number,
 * negation, date, entity or scope guards judge (switching one off leaves its words be). */
static bool content_word(const struct word *w)
{
    if (w->entity || strlen(w->w) < 2 || strpbrk(w->w, "0123456789") ||
        dspy__semantic_function_word(w->w) || in_list(w->w, negations) || in_list(w->w, dates) ||
        in_list(w->w, scopes))
        return false;
    return true; /* antonyms count: "install" / "connect" is a substitution */
}

/* A typo's distance: one adjacent transposition, insertion or deletion (words of 4
 * letters or more), or one replaced letter (6 or more). "lock" / "look" stay apart. */
static bool typo_close(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la == lb) {
        size_t d[3], nd = 0;
        for (size_t i = 0; i < la && nd < 3; i++)
            if (a[i] != b[i])
                d[nd++] = i;
        if (nd == 1)
            return la >= 6;
        return nd == 2 && la >= 4 && d[1] == d[0] + 1 && a[d[0]] == b[d[1]] && a[d[1]] == b[d[0]];
    }
    if (la + 1 == lb) { /* b is a with one more letter */
        const char *t = a;
        a = b;
        b = t;
        la = lb;
    } else if (lb + 1 != la)
        return false;
    if (la - 1 < 4)
        return false;
    size_t i = 0;
    while (i < la - 1 && a[i] == b[i])
        i++;
    return !strcmp(a + i + 1, b + i);
}

struct lex {
    char stem[WORD_MAX];
    int group;
};

static void lex_of(const char *w, struct lex *l)
{
    dspy__semantic_stem(w, l->stem, sizeof(l->stem));
    l->group = dspy__semantic_synonym_group(l->stem);
}

/* Whether `x` has a content word that no word of `y` matches as the same word, an
 * inflection (same stem), a synonym (same group) or a typo of it. `*ly` holds the stems
 * of `y`, made on first need; false with *oom set when there is no memory for them. */
static bool unmatched_content(const struct words *x, const struct words *y, struct lex **ly,
                              bool *oom)
{
    for (size_t i = 0; i < x->n; i++) {
        const struct word *w = &x->v[i];
        if ((i && !strcmp(w->w, x->v[i - 1].w)) || !content_word(w) || has(y, w->w))
            continue;
        if (!*ly) {
            if (!(*ly = dspy_malloc(sizeof(**ly) * (y->n ? y->n : 1)))) {
                *oom = true;
                return false;
            }
            for (size_t k = 0; k < y->n; k++)
                lex_of(y->v[k].w, &(*ly)[k]);
        }
        struct lex lw;
        lex_of(w->w, &lw);
        bool matched = false;
        for (size_t k = 0; k < y->n && !matched; k++)
            matched = !strcmp(lw.stem, (*ly)[k].stem) ||
                      (lw.group >= 0 && lw.group == (*ly)[k].group) || typo_close(w->w, y->v[k].w);
        if (!matched)
            return true;
    }
    return false;
}

/* Fires when each text has a content word the other lacks: one action or object put in
 * place of another ("cancel my order" / "track my order"). A word only added ("reset my
 * password" / "reset my password quickly") is left to the threshold. */
static bool substituted(const struct words *a, const struct words *b, bool *oom)
{
    struct lex *la = NULL, *lb = NULL;
    bool r = unmatched_content(a, b, &lb, oom) && unmatched_content(b, a, &la, oom);
    dspy_free(la);
    dspy_free(lb);
    return r;
}

/* A word capitalized in one text counts as an entity wherever it occurs in it: "Paris"
 * against "paris" is the same word, "Paris" against "Rome" is not. */
unsigned dspy_cache_semantic_guard(const char *a, size_t alen, const char *b, size_t blen,
                                   unsigned guards)
{
    struct words wa = { 0 }, wb = { 0 };
    unsigned fired = 0;
    if (!a || !b)
        return 0;
    if (!split(a, alen, &wa) || !split(b, blen, &wb)) {
        fired = guards & DSPY_SEMANTIC_GUARDS_ALL; /* out of memory: refuse, never guess */
        goto out;
    }
    fired = one_side(&wa, &wb) | one_side(&wb, &wa);
    if (!(fired & guards) && (guards & DSPY_SEMANTIC_GUARD_SUBSTITUTION)) {
        bool oom = false;
        if (substituted(&wa, &wb, &oom) || oom)
            fired |= DSPY_SEMANTIC_GUARD_SUBSTITUTION;
    }
    if (wa.nq != wb.nq)
        fired |= DSPY_SEMANTIC_GUARD_ENTITY;
    else
        for (size_t i = 0; i < wa.nq; i++)
            if (strcmp(wa.quoted[i], wb.quoted[i]))
                fired |= DSPY_SEMANTIC_GUARD_ENTITY;
out:
    words_free(&wa);
    words_free(&wb);
    fired &= guards;
    return fired & (~fired + 1); /* the lowest bit: guards are reported in bit order */
}

/* ---- projection and partition ---------------------------------------------------------- */

#define PLACEHOLDER "\001dspyc-semantic-projection"

/* Text of a message's content: a string, or the text parts of an array joined by "\n". */
static bool content_text(const json_t *content, struct dspy_buf *b)
{
    if (json_is_string(content))
        return dspy__buf_add(b, json_string_value(content), json_string_length(content)) == DSPY_OK;
    if (!json_is_array(content))
        return true;
    size_t i;
    json_t *part;
    bool first = true;
    json_array_foreach(content, i, part) {
        json_t *t = json_object_get(part, "text");
        if (!json_is_string(t))
            continue;
        if ((!first && dspy__buf_add(b, "\n", 1)) ||
            dspy__buf_add(b, json_string_value(t), json_string_length(t)))
            return false;
        first = false;
    }
    return true;
}

/* DSPy's adapters wrap the inputs in the user message as "[[ ## field ## ]]" lines and end
 * it with "Respond with the corresponding output fields, ..."; that frame is the same for
 * every request of a partition (its system prompt names the fields) and would only pull
 * the embeddings of different questions together, so the projection leaves it out. */
static void strip_adapter_frame(char *t, size_t *len)
{
    static const char respond[] = "Respond with the corresponding output fields";
    size_t r = 0, w = 0, n = *len;
    while (r < n) {
        size_t e = r;
        while (e < n && t[e] != '\n')
            e++;
        size_t l = e - r;
        bool marker = l >= 10 && !strncmp(t + r, "[[ ## ", 6) && !strncmp(t + e - 6, " ## ]]", 6);
        if (!strncmp(t + r, respond, l < sizeof(respond) - 1 ? l : sizeof(respond) - 1) &&
            l >= sizeof(respond) - 1) {
            /* to the end of its paragraph */
            while (e < n && !(t[e] == '\n' && (e + 1 >= n || t[e + 1] == '\n')))
                e++;
            marker = true;
        }
        if (!marker) {
            memmove(t + w, t + r, l);
            w += l;
            if (e < n)
                t[w++] = '\n';
        }
        r = e < n ? e + 1 : n;
    }
    size_t b = 0;
    while (b < w && (t[b] == '\n' || t[b] == ' '))
        b++;
    while (w > b && (t[w - 1] == '\n' || t[w - 1] == ' '))
        w--;
    memmove(t, t + b, w - b);
    *len = w - b;
    t[*len] = 0;
}

dspy_status dspy_cache_semantic_partition(const json_t *request, const char *ns, int projection,
                                          struct dspy_cache_key *partition, char **text,
                                          size_t *text_len, struct dspy_error *err)
{
    json_t *msgs = json_object_get(request, "messages"), *copy = NULL, *cmsgs, *m;
    struct dspy_buf b;
    dspy_status rc;
    size_t i, last = (size_t)-1;
    *text = NULL;
    *text_len = 0;
    dspy__buf_init(&b, DSPY_BUF_MAX_DEFAULT);
    if (!json_is_object(request))
        return dspy__err(err, DSPY_EINVAL, "semantic cache: the request is not an object");
    if (!json_is_array(msgs) || !json_array_size(msgs))
        return DSPY_ENOTFOUND;
    json_array_foreach(msgs, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (role && !strcmp(role, "user"))
            last = i;
    }
    if (last == (size_t)-1 && projection != DSPY_SEMANTIC_ALL)
        return DSPY_ENOTFOUND;
    if (!(copy = json_deep_copy(request)))
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    cmsgs = json_object_get(copy, "messages");
    rc = DSPY_ENOMEM;
    json_array_foreach(cmsgs, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        bool user = role && !strcmp(role, "user");
        bool take = projection == DSPY_SEMANTIC_ALL ||
                    (projection == DSPY_SEMANTIC_USER_TURNS ? user : i == last);
        if (!take)
            continue;
        if (b.len && dspy__buf_add(&b, "\n", 1))
            goto out;
        if (projection == DSPY_SEMANTIC_ALL &&
            (dspy__buf_add(&b, role ? role : "", role ? strlen(role) : 0) ||
             dspy__buf_add(&b, ": ", 2)))
            goto out;
        if (!content_text(json_object_get(m, "content"), &b))
            goto out;
        if (json_is_object(m) && json_object_set_new(m, "content", json_string(PLACEHOLDER)))
            goto out;
    }
    if (json_object_set_new(copy, "_semantic", json_integer(1)))
        goto out;
    if ((rc = dspy_cache_key_from_json(copy, NULL, ns, partition, err)))
        goto out;
    *text = dspy__buf_detach(&b, text_len);
    if (projection != DSPY_SEMANTIC_ALL)
        strip_adapter_frame(*text, text_len);
    rc = DSPY_OK;
out:
    if (rc == DSPY_ENOMEM && err && !err->code)
        dspy__err(err, DSPY_ENOMEM, "out of memory");
    dspy__buf_release(&b);
    json_decref(copy);
    return rc;
}

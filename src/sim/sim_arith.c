/* The "arith" task pack of the simulator (sim layer): a small grammar of arithmetic word
 * problems, its generator, a recognizer that solves any question of the grammar, and the
 * documented accuracy model that decides whether the simulator answers one correctly. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "sim_int.h"

struct person {
    const char *name;
    bool she;
};

static const struct person people[] = {
    { "Ava", true },  { "Liam", false },  { "Mia", true },   { "Noah", false },
    { "Emma", true }, { "Lucas", false }, { "Zoe", true },   { "Omar", false },
    { "Lena", true }, { "Ravi", false },  { "Sofia", true }, { "Mateo", false },
    { "Nora", true }, { "Kenji", false }, { "Priya", true }, { "Diego", false },
    { "Hana", true }, { "Tom", false },   { "Iris", true },  { "Felix", false },
};
#define N_PEOPLE (sizeof(people) / sizeof(people[0]))

static const char *const items[] = {
    "marbles", "apples", "stickers", "books",  "coins",    "pencils",
    "cookies", "cards",  "shells",   "stamps", "balloons", "crayons",
};
#define N_ITEMS (sizeof(items) / sizeof(items[0]))

struct verb {
    const char *text;
    int sign;
};

static const struct verb verbs[] = {
    { "gives away", -1 }, { "loses", -1 }, { "sells", -1 },
    { "buys", +1 },       { "finds", +1 }, { "receives", +1 },
};
#define N_VERBS (sizeof(verbs) / sizeof(verbs[0]))

/* %N name, %P She/He, %I item, %a %b %c numbers, %1 %2 verbs. */
static const char *const templates[] = {
    "%N has %a %I. %P %1 %b and then %2 %c more. How many %I does %N have now?",
    "%N buys %a boxes of %I. Each box holds %b %I. %P gives away %c of them. "
    "How many %I does %N have left?",
    "%N has %a %I and shares them equally among %b friends. How many %I does each friend get?",
    "A shop has %a %I. It sells %b in the morning and %c in the afternoon. How many %I are left?",
    "%N reads %a pages a day for %b days and then %c more pages. "
    "How many pages does %N read in total?",
};
#define N_TEMPLATES (sizeof(templates) / sizeof(templates[0]))

static long solve(const struct dspy__sim_arith *q)
{
    switch (q->kind) {
    case 0: return q->a + verbs[q->op1].sign * q->b + verbs[q->op2].sign * q->c;
    case 1: return q->a * q->b - q->c;
    case 2: return q->b ? q->a / q->b : 0;
    case 3: return q->a - q->b - q->c;
    default: return q->a * q->b + q->c;
    }
}

/* ---- Recognizer ---- */

static size_t match_word(const char *s, size_t n, const char *w)
{
    size_t k = strlen(w);
    if (k > n || memcmp(s, w, k) || (k < n && (isalnum((unsigned char)s[k]))))
        return 0;
    return k;
}

/* Match template t at s; fills q and returns the length matched, or 0. */
static size_t match(const char *t, const char *s, size_t n, struct dspy__sim_arith *q)
{
    size_t i = 0;
    memset(q, 0, sizeof(*q));
    for (; *t; t++) {
        size_t k = 0;
        if (*t != '%') {
            if (i >= n || s[i] != *t)
                return 0;
            i++;
            continue;
        }
        switch (*++t) {
        case 'N':
            if (q->name[0]) {
                k = match_word(s + i, n - i, q->name);
                break;
            }
            for (size_t j = 0; j < N_PEOPLE && !k; j++)
                if ((k = match_word(s + i, n - i, people[j].name))) {
                    snprintf(q->name, sizeof(q->name), "%s", people[j].name);
                    q->she = people[j].she;
                }
            break;
        case 'P': k = match_word(s + i, n - i, q->she ? "She" : "He"); break;
        case 'I':
            if (q->item[0]) {
                k = match_word(s + i, n - i, q->item);
                break;
            }
            for (size_t j = 0; j < N_ITEMS && !k; j++)
                if ((k = match_word(s + i, n - i, items[j])))
                    snprintf(q->item, sizeof(q->item), "%s", items[j]);
            break;
        case 'a':
        case 'b':
        case 'c': {
            long v = 0;
            while (i + k < n && k < 7 && isdigit((unsigned char)s[i + k]))
                v = v * 10 + (s[i + k++] - '0');
            if (k == 7 || (i + k < n && isdigit((unsigned char)s[i + k])))
                return 0;
            *(*t == 'a' ? &q->a : *t == 'b' ? &q->b : &q->c) = v;
            break;
        }
        case '1':
        case '2':
            for (size_t j = 0; j < N_VERBS && !k; j++)
                if ((k = match_word(s + i, n - i, verbs[j].text)))
                    *(*t == '1' ? &q->op1 : &q->op2) = (int)j;
            break;
        default: return 0;
        }
        if (!k)
            return 0;
        i += k;
    }
    return i;
}

bool dspy__sim_arith_find(const char *s, size_t n, struct dspy__sim_arith *q)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 'A' || s[i] > 'Z' || (i && isalnum((unsigned char)s[i - 1])))
            continue;
        for (size_t t = 0; t < N_TEMPLATES; t++) {
            size_t len = match(templates[t], s + i, n - i, q);
            if (len) {
                q->kind = (int)t;
                q->start = i;
                q->len = len;
                q->answer = solve(q);
                return true;
            }
        }
    }
    return false;
}

/* ---- Generator ---- */

static long draw(uint64_t h, unsigned k, long lo, long hi)
{
    return lo + (long)(dspy__sim_mix(h, k) % (uint64_t)(hi - lo + 1));
}

static dspy_status render(const struct dspy__sim_arith *q, struct dspy_buf *b)
{
    dspy_status rc = DSPY_OK;
    for (const char *t = templates[q->kind]; *t && !rc; t++) {
        if (*t != '%') {
            rc = dspy__buf_addc(b, *t);
            continue;
        }
        switch (*++t) {
        case 'N': rc = dspy__buf_adds(b, q->name); break;
        case 'P': rc = dspy__buf_adds(b, q->she ? "She" : "He"); break;
        case 'I': rc = dspy__buf_adds(b, q->item); break;
        case 'a': rc = dspy__buf_addf(b, "%ld", q->a); break;
        case 'b': rc = dspy__buf_addf(b, "%ld", q->b); break;
        case 'c': rc = dspy__buf_addf(b, "%ld", q->c); break;
        case '1': rc = dspy__buf_adds(b, verbs[q->op1].text); break;
        default: rc = dspy__buf_adds(b, verbs[q->op2].text); break;
        }
    }
    return rc;
}

dspy_status dspy__sim_arith_generate(uint64_t seed, uint64_t index, struct dspy_buf *out,
                                     long *answer)
{
    struct dspy__sim_arith q;
    uint64_t h = dspy__sim_mix(dspy__sim_mix(seed, 0xa417ull), index);
    memset(&q, 0, sizeof(q));
    q.kind = (int)(h % N_TEMPLATES);
    const struct person *who = &people[draw(h, 1, 0, N_PEOPLE - 1)];
    snprintf(q.name, sizeof(q.name), "%s", who->name);
    q.she = who->she;
    snprintf(q.item, sizeof(q.item), "%s", items[draw(h, 2, 0, N_ITEMS - 1)]);
    switch (q.kind) {
    case 0:
        q.a = draw(h, 3, 10, 60);
        q.b = draw(h, 4, 2, 20);
        q.c = draw(h, 5, 2, 20);
        q.op1 = (int)draw(h, 6, 0, N_VERBS - 1);
        q.op2 = (int)draw(h, 7, 0, N_VERBS - 1);
        /* Never take away more than there is. */
        if (verbs[q.op1].sign < 0 && q.b > q.a)
            q.op1 = 3;
        if (verbs[q.op2].sign < 0 && q.c > q.a + verbs[q.op1].sign * q.b)
            q.op2 = 4;
        break;
    case 1:
        q.a = draw(h, 3, 2, 9);
        q.b = draw(h, 4, 3, 12);
        q.c = draw(h, 5, 1, q.a * q.b - 1);
        break;
    case 2:
        q.b = draw(h, 3, 2, 9);
        q.a = q.b * draw(h, 4, 2, 12);
        break;
    case 3:
        q.a = draw(h, 3, 30, 99);
        q.b = draw(h, 4, 1, q.a / 2);
        q.c = draw(h, 5, 1, q.a - q.b);
        break;
    default:
        q.a = draw(h, 3, 5, 30);
        q.b = draw(h, 4, 2, 9);
        q.c = draw(h, 5, 1, 20);
        break;
    }
    *answer = solve(&q);
    return render(&q, out);
}

/* ---- Accuracy model (docs/simulator.md states it exactly; keep the two in step) ---- */

struct keyword {
    const char *const words[3];
    double weight;
};

static const struct keyword keywords[] = {
    { { "step by step", "step-by-step", NULL }, 0.06 },
    { { "careful", NULL, NULL }, 0.04 },
    { { "double-check", "double check", "verify" }, 0.04 },
    { { "arithmetic", NULL, NULL }, 0.03 },
    { { "show your work", NULL, NULL }, 0.03 },
    { { "calculat", NULL, NULL }, 0.02 },
};

#define P_BASE 0.25
#define P_DEMOS 0.40 /* times 1 - 0.75^right */
#define P_DEMO_DECAY 0.75
#define P_DEMO_WRONG 0.05 /* each, at most 4 counted */
#define P_REASONING 0.15
#define P_INSTR_CAP 0.15
#define P_MIN 0.05
#define P_MAX 0.95

static double instruction_bonus(struct dspy__sim_view text)
{
    double sum = 0;
    for (size_t i = 0; i < sizeof(keywords) / sizeof(keywords[0]); i++)
        for (size_t w = 0; w < 3 && keywords[i].words[w]; w++)
            if (dspy__sim_find_ci(text, keywords[i].words[w])) {
                sum += keywords[i].weight;
                break;
            }
    return sum > P_INSTR_CAP ? P_INSTR_CAP : sum;
}

/* The last whole number in v; false if none. */
static bool last_number(struct dspy__sim_view v, long *out)
{
    size_t i = v.n;
    while (i > 0 && !isdigit((unsigned char)v.p[i - 1]))
        i--;
    if (!i)
        return false;
    size_t end = i;
    while (i > 0 && isdigit((unsigned char)v.p[i - 1]) && end - i < 12)
        i--;
    long n = 0;
    for (size_t k = i; k < end; k++)
        n = n * 10 + (v.p[k] - '0');
    *out = (i > 0 && v.p[i - 1] == '-') ? -n : n;
    return true;
}

/* The number a demo's assistant message gives as its answer. */
static bool demo_answer(struct dspy__sim_view text, long *out)
{
    struct dspy__sim_block blocks[DSPY__SIM_MAX_BLOCKS];
    size_t nb = dspy__sim_blocks(text, blocks, DSPY__SIM_MAX_BLOCKS);
    struct dspy__sim_view ans = { NULL, 0 };
    for (size_t i = 0; i < nb; i++) {
        if (dspy__sim_view_eq(blocks[i].name, "answer")) {
            ans = blocks[i].value;
            break;
        }
        if (!dspy__sim_view_eq(blocks[i].name, "reasoning") &&
            !dspy__sim_view_eq(blocks[i].name, "completed"))
            ans = blocks[i].value;
    }
    if (ans.p)
        return last_number(ans, out);
    json_error_t e;
    struct dspy__sim_view s = dspy__sim_view_strip(text);
    json_t *obj = s.n && s.p[0] == '{' ? json_loadb(s.p, s.n, JSON_DISABLE_EOF_CHECK, &e) : NULL;
    bool ok = false;
    if (json_is_object(obj)) {
        json_t *a = json_object_get(obj, "answer");
        if (json_is_integer(a)) {
            *out = (long)json_integer_value(a);
            ok = true;
        } else if (json_is_string(a)) {
            ok = last_number((struct dspy__sim_view){ json_string_value(a), json_string_length(a) },
                             out);
        }
        json_decref(obj);
        return ok;
    }
    json_decref(obj);
    return last_number(text, out);
}

void dspy__sim_arith_accuracy(const struct dspy__sim_prompt *p, struct dspy__sim_accuracy *acc)
{
    memset(acc, 0, sizeof(*acc));
    size_t first = p->n_msgs && p->msgs[0].role == DSPY__SIM_ROLE_SYSTEM ? 1 : 0;
    for (size_t i = first; i + 1 < p->final_idx; i++) {
        if (p->msgs[i].role != DSPY__SIM_ROLE_USER ||
            p->msgs[i + 1].role != DSPY__SIM_ROLE_ASSISTANT)
            continue;
        struct dspy__sim_arith dq;
        long claimed;
        if (dspy__sim_arith_find(p->msgs[i].text.p, p->msgs[i].text.n, &dq)) {
            if (demo_answer(p->msgs[i + 1].text, &claimed) && claimed == dq.answer)
                acc->demos_right++;
            else
                acc->demos_wrong++;
        }
        i++;
    }
    acc->reasoning = dspy__sim_prompt_output(p, "reasoning") ||
                     dspy__sim_prompt_output(p, "rationale");
    acc->instruction = instruction_bonus(p->instructions);
    if (p->adapter == DSPY__SIM_ADAPTER_NONE) {
        double more = instruction_bonus(p->final_user);
        if (more > acc->instruction)
            acc->instruction = more;
    }
    int wrong = acc->demos_wrong > 4 ? 4 : acc->demos_wrong;
    double v = P_BASE + P_DEMOS * (1.0 - pow(P_DEMO_DECAY, acc->demos_right)) -
               P_DEMO_WRONG * wrong + (acc->reasoning ? P_REASONING : 0) + acc->instruction;
    acc->p = v < P_MIN ? P_MIN : v > P_MAX ? P_MAX : v;
}

long dspy__sim_arith_answer(const struct dspy__sim_prompt *p, const struct dspy__sim_arith *q,
                            const struct dspy__sim_answer_opts *o, bool *correct)
{
    struct dspy__sim_accuracy acc;
    dspy__sim_arith_accuracy(p, &acc);
    /* A question's difficulty is fixed by its content and the seed, so at temperature 0 a
     * better prompt never turns a right answer wrong. Temperature re-draws some of it. */
    long key[6] = { q->kind, q->a, q->b, q->c, q->op1, q->op2 };
    uint64_t hq = dspy__sim_hash(o->seed ^ 0xd1ffull, key, sizeof(key));
    hq = dspy__sim_mix(hq, dspy__sim_hash(hq, q->name, strlen(q->name)) ^
                               dspy__sim_hash(hq, q->item, strlen(q->item)));
    double u = dspy__sim_unit(hq);
    if (o->temperature > 0) {
        uint64_t hr = dspy__sim_mix(dspy__sim_mix(o->req_hash, o->choice), 0x7e5aull);
        double share = o->temperature >= 1 ? 0.5 : 0.5 * o->temperature;
        if (dspy__sim_unit(hr) < share)
            u = dspy__sim_unit(dspy__sim_mix(hr, 1));
    }
    double pm = acc.p * (o->quality > 0 ? o->quality : 1.0);
    *correct = u < (pm < P_MIN ? P_MIN : pm > P_MAX ? P_MAX : pm);
    if (*correct)
        return q->answer;
    uint64_t hw = dspy__sim_mix(hq, 0x3a7full);
    long delta = 1 + (long)(hw % 3);
    long wrong = (hw >> 8) & 1 ? q->answer + delta : q->answer - delta;
    return wrong < 0 ? q->answer + delta : wrong;
}

dspy_status dspy__sim_arith_reasoning(const struct dspy__sim_arith *q, long claimed,
                                      struct dspy_buf *out)
{
    const char *pro = q->she ? "she" : "he";
    switch (q->kind) {
    case 0: {
        long mid = q->a + verbs[q->op1].sign * q->b;
        return dspy__buf_addf(out,
                              "%s starts with %ld %s. %s %s %ld, so %s has %ld. "
                              "Then %s %s %ld more, giving %ld.",
                              q->name, q->a, q->item, q->she ? "She" : "He", verbs[q->op1].text,
                              q->b, pro, mid, pro, verbs[q->op2].text, q->c, claimed);
    }
    case 1:
        return dspy__buf_addf(out,
                              "%ld boxes with %ld %s each make %ld %s. "
                              "Giving away %ld of them leaves %ld.",
                              q->a, q->b, q->item, q->a * q->b, q->item, q->c, claimed);
    case 2:
        return dspy__buf_addf(out, "%ld %s shared equally among %ld friends is %ld each.", q->a,
                              q->item, q->b, claimed);
    case 3:
        return dspy__buf_addf(out,
                              "The shop starts with %ld %s. Selling %ld in the morning and %ld "
                              "in the afternoon leaves %ld.",
                              q->a, q->item, q->b, q->c, claimed);
    default:
        return dspy__buf_addf(out,
                              "%ld pages a day for %ld days is %ld pages. Adding %ld more pages "
                              "gives %ld.",
                              q->a, q->b, q->a * q->b, q->c, claimed);
    }
}

/* ---- Task files (`dspyc sim gen-task`) ---- */

dspy_status dspy_sim_write_task(FILE *out, const char *task, uint64_t n, uint64_t seed,
                                struct dspy_error *err)
{
    if (!task || strcmp(task, "arith"))
        return dspy__err(err, DSPY_ENOTFOUND, "no task pack '%s'; the only one is 'arith'",
                         task ? task : "");
    struct dspy_buf q, line;
    dspy__buf_init(&q, 4096);
    dspy__buf_init(&line, 8192);
    dspy_status rc = DSPY_OK;
    for (uint64_t i = 0; i < n && !rc; i++) {
        long answer;
        dspy__buf_reset(&q);
        dspy__buf_reset(&line);
        if ((rc = dspy__sim_arith_generate(seed, i, &q, &answer)) ||
            (rc = dspy__buf_adds(&line, "{\"question\": ")) ||
            (rc = dspy__buf_add_json_str(&line, q.ptr, q.len)) ||
            (rc = dspy__buf_addf(&line, ", \"answer\": \"%ld\"}\n", answer)))
            dspy__err(err, rc, "cannot build question %llu", (unsigned long long)i);
        else if (fwrite(line.ptr, 1, line.len, out) != line.len)
            rc = dspy__err(err, DSPY_EIO, "write failed");
    }
    dspy__buf_release(&q);
    dspy__buf_release(&line);
    return rc;
}

/* Answer generation of the simulator (sim layer): for a parsed prompt, a reply with a
 * value of the right type for every output field (Chat adapter blocks or a JSON object), or
 * a plain deterministic text. Every choice is a pure function of (request hash, seed,
 * choice index); arith questions go through the accuracy model in sim_arith.c. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sim_int.h"

#define MAX_KW 12

struct ctx {
    const struct dspy__sim_prompt *p;
    const struct dspy__sim_answer_opts *o;
    uint64_t h; /* this choice's hash */
    struct dspy__sim_view kw[MAX_KW];
    size_t nkw;
    bool arith;
    struct dspy__sim_arith q;
    long claimed;
    const struct dspy__sim_field *answer_field;
    bool facts;
    struct dspy__sim_facts_q fq;
    char fact[32]; /* the facts answer given */
};

enum vtype { V_STR, V_INT, V_FLOAT, V_BOOL, V_CHOICE, V_LIST, V_DICT, V_SCHEMA };

static uint64_t field_hash(const struct ctx *c, struct dspy__sim_view name)
{
    return dspy__sim_mix(c->h, dspy__sim_hash(0xf1e1dull, name.p, name.n));
}

/* ---- Text ---- */

static const char *const fillers[] = {
    "The details depend on the context given.",
    "Each part follows from the one before it.",
    "More information would refine this answer.",
    "In short, the main point stands.",
    "Several factors are worth weighing here.",
    "This summary leaves out minor points.",
    "The reasoning is straightforward from the inputs.",
    "A closer look confirms the same conclusion.",
};
#define N_FILLERS (sizeof(fillers) / sizeof(fillers[0]))

static const char *const instructions[] = {
    "Answer the question directly.",
    "Solve the problem step by step, checking the arithmetic carefully.",
    "Read the question and give a concise answer.",
    "Work through the numbers carefully and double-check the final result.",
    "Think about what is asked, then answer.",
    "Show your work, then state the final answer.",
    "Use careful arithmetic and verify each step before answering.",
    "Give only the final answer.",
};
#define N_INSTRUCTIONS (sizeof(instructions) / sizeof(instructions[0]))

static struct dspy__sim_view kw_at(const struct ctx *c, uint64_t h, size_t k)
{
    static const struct dspy__sim_view fallback[] = { DSPY__SIM_VIEW_INIT("result"),
                                                      DSPY__SIM_VIEW_INIT("value"),
                                                      DSPY__SIM_VIEW_INIT("answer") };
    if (!c->nkw)
        return fallback[(h + k) % 3];
    return c->kw[(h + k) % c->nkw];
}

/* A short phrase built from the inputs' keywords. */
static dspy_status short_text(const struct ctx *c, uint64_t h, struct dspy_buf *b)
{
    struct dspy__sim_view k0 = kw_at(c, h, 0), k1 = kw_at(c, h, 1), k2 = kw_at(c, h, 2);
    switch ((h >> 32) % 4) {
    case 0: return dspy__buf_addf(b, "%.*s %.*s", (int)k0.n, k0.p, (int)k1.n, k1.p);
    case 1: return dspy__buf_addf(b, "%.*s and %.*s.", (int)k0.n, k0.p, (int)k1.n, k1.p);
    case 2:
        return dspy__buf_addf(b, "It concerns %.*s, %.*s and %.*s.", (int)k0.n, k0.p, (int)k1.n,
                              k1.p, (int)k2.n, k2.p);
    default:
        return dspy__buf_addf(b, "%.*s: %.*s %.*s.", (int)k0.n, k0.p, (int)k1.n, k1.p, (int)k2.n,
                              k2.p);
    }
}

static dspy_status reasoning_text(const struct ctx *c, uint64_t h, struct dspy_buf *b)
{
    if (c->arith)
        return dspy__sim_arith_reasoning(&c->q, c->claimed, b);
    struct dspy__sim_view k0 = kw_at(c, h, 0), k1 = kw_at(c, h, 1);
    return dspy__buf_addf(b,
                          "The inputs are about %.*s and %.*s. Weighing them together, the "
                          "outputs follow directly. %s",
                          (int)k0.n, k0.p, (int)k1.n, k1.p, fillers[(h >> 16) % N_FILLERS]);
}

/* Plain text of about `tokens` tokens (0 = a natural length from the hash). */
static dspy_status plain_text(const struct ctx *c, unsigned tokens, struct dspy_buf *b)
{
    size_t start = b->len;
    struct dspy__sim_view k0 = kw_at(c, c->h, 0), k1 = kw_at(c, c->h, 1), k2 = kw_at(c, c->h, 2);
    size_t want = tokens ? tokens : 16 + (size_t)(c->h % 48);
    dspy_status rc = dspy__buf_addf(b, "This is a simulated reply about %.*s, %.*s and %.*s.",
                                    (int)k0.n, k0.p, (int)k1.n, k1.p, (int)k2.n, k2.p);
    /* Every sentence ends with '.', a token of its own, so counts add up sentence by
     * sentence and the loop stays linear in the reply's length. */
    size_t have = rc ? 0 : dspy__sim_tokens(b->ptr + start, b->len - start);
    for (unsigned i = 0; !rc && have < want; i++) {
        size_t at = b->len;
        rc = dspy__buf_addf(b, " %s", fillers[dspy__sim_mix(c->h, i) % N_FILLERS]);
        if (!rc)
            have += dspy__sim_tokens(b->ptr + at, b->len - at);
    }
    if (!rc && tokens) {
        b->len = start + dspy__sim_tokens_prefix(b->ptr + start, b->len - start, tokens);
        b->ptr[b->len] = '\0';
    }
    return rc;
}

static json_t *text_json(dspy_status (*fn)(const struct ctx *, uint64_t, struct dspy_buf *),
                         const struct ctx *c, uint64_t h)
{
    struct dspy_buf b;
    dspy__buf_init(&b, 1 << 16);
    json_t *v = fn(c, h, &b) ? NULL : json_stringn(b.ptr ? b.ptr : "", b.len);
    dspy__buf_release(&b);
    return v ? v : json_string("");
}

/* ---- Values by type ---- */

static struct dspy__sim_view unwrap_optional(struct dspy__sim_view t)
{
    static const char *const wraps[] = { "Optional[", "Union[", "UnionType[" };
    for (size_t i = 0; i < 3; i++) {
        size_t k = strlen(wraps[i]);
        if (t.n > k + 1 && !memcmp(t.p, wraps[i], k) && t.p[t.n - 1] == ']') {
            struct dspy__sim_view in = { t.p + k, t.n - k - 1 };
            int depth = 0;
            for (size_t j = 0; j < in.n; j++) {
                char ch = in.p[j];
                depth += ch == '[' ? 1 : ch == ']' ? -1 : 0;
                if (ch == ',' && depth == 0) {
                    in.n = j;
                    break;
                }
            }
            return dspy__sim_view_strip(in);
        }
    }
    return t;
}

static bool starts(struct dspy__sim_view v, const char *s)
{
    size_t k = strlen(s);
    return v.n >= k && !strncasecmp(v.p, s, k);
}

static enum vtype classify(const struct dspy__sim_field *f, struct dspy__sim_view *inner)
{
    struct dspy__sim_view t = unwrap_optional(f->type);
    *inner = t;
    if (dspy__sim_find(t, "Literal[") || starts(f->note, "must be one of") ||
        starts(f->note, "must exactly match"))
        return V_CHOICE;
    if (dspy__sim_view_eq(t, "str"))
        return V_STR;
    if (dspy__sim_view_eq(t, "int"))
        return V_INT;
    if (dspy__sim_view_eq(t, "float"))
        return V_FLOAT;
    if (dspy__sim_view_eq(t, "bool"))
        return V_BOOL;
    if (f->schema)
        return V_SCHEMA;
    if (starts(t, "list[") || starts(t, "tuple[") || starts(t, "set[") ||
        dspy__sim_view_eq(t, "list"))
        return V_LIST;
    if (starts(t, "dict"))
        return V_DICT;
    return V_STR;
}

static json_t *scalar(const struct ctx *c, struct dspy__sim_view type, uint64_t h)
{
    if (dspy__sim_view_eq(type, "int"))
        return json_integer((json_int_t)(h % 100));
    if (dspy__sim_view_eq(type, "float"))
        return json_real((double)(h % 100) / 100.0);
    if (dspy__sim_view_eq(type, "bool"))
        return json_boolean(h & 1);
    struct dspy__sim_view k = kw_at(c, h, 0);
    return json_stringn(k.p, k.n);
}

/* list[T] and dict[K, V] without a schema: T and V as scalars. */
static json_t *container(const struct ctx *c, enum vtype vt, struct dspy__sim_view t, uint64_t h)
{
    const char *lb = memchr(t.p, '[', t.n);
    struct dspy__sim_view in = lb ? (struct dspy__sim_view){ lb + 1, (size_t)(t.p + t.n - lb - 2) }
                                  : DSPY__SIM_VIEW("str");
    if (vt == V_DICT) {
        const char *comma = memchr(in.p, ',', in.n);
        struct dspy__sim_view val = comma ? dspy__sim_view_strip((struct dspy__sim_view){
                                                comma + 1, (size_t)(in.p + in.n - comma - 1) })
                                          : DSPY__SIM_VIEW("str");
        json_t *o = json_object();
        for (size_t i = 0; o && i < 2; i++) {
            struct dspy__sim_view k = kw_at(c, h, i);
            char key[64];
            snprintf(key, sizeof(key), "%.*s", (int)(k.n < 60 ? k.n : 60), k.p);
            json_object_set_new(o, key, scalar(c, val, dspy__sim_mix(h, i + 1)));
        }
        return o;
    }
    json_t *a = json_array();
    for (size_t i = 0; a && i < 2 + h % 2; i++)
        json_array_append_new(a, scalar(c, dspy__sim_view_strip(in), dspy__sim_mix(h, i + 7)));
    return a;
}

static json_t *arith_value(const struct ctx *c, enum vtype vt, const struct dspy__sim_field *f)
{
    if (vt == V_INT)
        return json_integer(c->claimed);
    if (vt == V_FLOAT)
        return json_real((double)c->claimed);
    if (vt == V_SCHEMA) {
        json_t *t = json_object_get(f->schema, "type");
        if (json_is_string(t) && !strcmp(json_string_value(t), "integer"))
            return json_integer(c->claimed);
        if (json_is_string(t) && !strcmp(json_string_value(t), "number"))
            return json_real((double)c->claimed);
    }
    char num[32];
    snprintf(num, sizeof(num), "%ld", c->claimed);
    return json_string(num);
}

static json_t *field_value(const struct ctx *c, const struct dspy__sim_field *f)
{
    struct dspy__sim_view t;
    enum vtype vt = classify(f, &t);
    uint64_t h = field_hash(c, f->name);
    json_t *choices;

    if ((dspy__sim_view_eq(f->name, "reasoning") || dspy__sim_view_eq(f->name, "rationale")) &&
        vt == V_STR)
        return text_json(reasoning_text, c, h);
    if (dspy__sim_view_eq(f->name, "ranked_documents") && (vt == V_STR || vt == V_LIST)) {
        json_t *ranked = dspy__sim_facts_rank(c->p, h, vt == V_LIST);
        if (ranked)
            return ranked;
    }
    if (c->arith && f == c->answer_field)
        return arith_value(c, vt, f);
    if (c->facts && f == c->answer_field && (vt == V_STR || vt == V_CHOICE))
        return json_string(c->fact);
    json_t *described = vt == V_STR ? dspy__sim_propose_description(c->p, f, h) : NULL;
    if (described)
        return described;
    if (vt == V_STR && dspy__sim_find_ci(f->name, "instruction"))
        return dspy__sim_propose_is_meta(c->p)
                   ? dspy__sim_propose_instruction(c->p,
                                                   dspy__sim_mix(c->o->req_hash, c->o->choice))
                   : json_string(instructions[dspy__sim_mix(c->o->req_hash, c->o->choice) %
                                              N_INSTRUCTIONS]);
    switch (vt) {
    case V_CHOICE:
        choices = dspy__sim_type_choices(f->type, f->note);
        if (choices) {
            json_t *v = json_incref(json_array_get(choices, h % json_array_size(choices)));
            json_decref(choices);
            return v;
        }
        return text_json(short_text, c, h);
    case V_INT:
    case V_FLOAT:
    case V_BOOL: return scalar(c, t, h);
    case V_SCHEMA: return dspy__sim_schema_value(f->schema, f->schema, h, c->kw, c->nkw, 0);
    case V_LIST:
    case V_DICT: return container(c, vt, t, h);
    default: return text_json(short_text, c, h);
    }
}

/* ---- JSON schema values ---- */

static json_t *resolve_ref(json_t *root, const char *ref)
{
    if (strncmp(ref, "#/", 2))
        return NULL;
    json_t *cur = root;
    char seg[128];
    const char *p = ref + 2;
    while (*p && cur) {
        size_t k = strcspn(p, "/");
        if (k >= sizeof(seg))
            return NULL;
        memcpy(seg, p, k);
        seg[k] = '\0';
        cur = json_object_get(cur, seg);
        p += k + (p[k] == '/');
    }
    return cur;
}

static const char *schema_type(json_t *s)
{
    json_t *t = json_object_get(s, "type");
    if (json_is_string(t))
        return json_string_value(t);
    for (size_t i = 0; json_is_array(t) && i < json_array_size(t); i++) {
        const char *name = json_string_value(json_array_get(t, i));
        if (name && strcmp(name, "null"))
            return name;
    }
    if (json_object_get(s, "properties"))
        return "object";
    return "string";
}

static json_int_t bound(json_t *s, const char *key, const char *xkey, json_int_t dflt, int dir)
{
    json_t *v = json_object_get(s, key);
    if (json_is_number(v))
        return (json_int_t)json_number_value(v);
    v = json_object_get(s, xkey);
    if (json_is_number(v))
        return (json_int_t)json_number_value(v) + dir;
    return dflt;
}

json_t *dspy__sim_schema_value(json_t *s, json_t *root, uint64_t h, const struct dspy__sim_view *kw,
                               size_t nkw, int depth)
{
    struct ctx c;
    json_t *v;
    memset(&c, 0, sizeof(c));
    c.nkw = nkw > MAX_KW ? MAX_KW : nkw;
    if (c.nkw)
        memcpy(c.kw, kw, c.nkw * sizeof(*kw));
    if (depth > 8 || !json_is_object(s))
        return json_null();
    const char *ref = json_string_value(json_object_get(s, "$ref"));
    if (ref)
        return dspy__sim_schema_value(resolve_ref(root, ref), root, h, kw, nkw, depth + 1);
    if ((v = json_object_get(s, "const")))
        return json_deep_copy(v);
    json_t *e = json_object_get(s, "enum");
    if (json_is_array(e) && json_array_size(e))
        return json_deep_copy(json_array_get(e, h % json_array_size(e)));
    static const char *const alts[] = { "anyOf", "oneOf", "allOf" };
    for (size_t i = 0; i < 3; i++) {
        json_t *arr = json_object_get(s, alts[i]);
        for (size_t k = 0; json_is_array(arr) && k < json_array_size(arr); k++) {
            json_t *alt = json_array_get(arr, k);
            const char *t = json_string_value(json_object_get(alt, "type"));
            if (!t || strcmp(t, "null"))
                return dspy__sim_schema_value(alt, root, h, kw, nkw, depth + 1);
        }
    }
    const char *type = schema_type(s);
    if (!strcmp(type, "object")) {
        json_t *o = json_object(), *props = json_object_get(s, "properties"), *sub;
        const char *key;
        json_object_foreach(props, key, sub) {
            uint64_t hk = dspy__sim_mix(h, dspy__sim_hash(0, key, strlen(key)));
            json_object_set_new(o, key, dspy__sim_schema_value(sub, root, hk, kw, nkw, depth + 1));
        }
        json_t *addl = json_object_get(s, "additionalProperties");
        if (!props && json_is_object(addl)) {
            struct dspy__sim_view k = kw_at(&c, h, 0);
            char name[64];
            snprintf(name, sizeof(name), "%.*s", (int)(k.n < 60 ? k.n : 60), k.p);
            json_object_set_new(o, name,
                                dspy__sim_schema_value(addl, root, dspy__sim_mix(h, 3), kw, nkw,
                                                       depth + 1));
        }
        return o;
    }
    if (!strcmp(type, "array")) {
        json_t *a = json_array(), *items = json_object_get(s, "items");
        json_t *prefix = json_object_get(s, "prefixItems");
        json_int_t n = bound(s, "minItems", "minItems", 2, 0);
        json_int_t mx = bound(s, "maxItems", "maxItems", 5, 0);
        if (n < 1 && mx > 0)
            n = 1;
        if (n > mx)
            n = mx;
        if (n > 5)
            n = 5;
        if (json_is_array(prefix)) {
            for (size_t i = 0; i < json_array_size(prefix); i++)
                json_array_append_new(a, dspy__sim_schema_value(json_array_get(prefix, i), root,
                                                                dspy__sim_mix(h, i + 11), kw, nkw,
                                                                depth + 1));
            return a;
        }
        for (json_int_t i = 0; i < n; i++) {
            uint64_t hi = dspy__sim_mix(h, (uint64_t)i + 11);
            json_array_append_new(a, items ? dspy__sim_schema_value(items, root, hi, kw, nkw,
                                                                    depth + 1)
                                           : scalar(&c, DSPY__SIM_VIEW("str"), hi));
        }
        return a;
    }
    if (!strcmp(type, "integer") || !strcmp(type, "number")) {
        json_int_t lo = bound(s, "minimum", "exclusiveMinimum", 0, 1);
        json_int_t hi = bound(s, "maximum", "exclusiveMaximum", lo + 100, -1);
        if (hi < lo)
            hi = lo;
        json_int_t n = lo + (json_int_t)(h % (uint64_t)(hi - lo + 1));
        return !strcmp(type, "integer") ? json_integer(n) : json_real((double)n);
    }
    if (!strcmp(type, "boolean"))
        return json_boolean(h & 1);
    if (!strcmp(type, "null"))
        return json_null();
    const char *fmt = json_string_value(json_object_get(s, "format"));
    if (fmt && !strcmp(fmt, "date-time"))
        return json_string("2024-01-01T00:00:00Z");
    if (fmt && !strcmp(fmt, "date"))
        return json_string("2024-01-01");
    struct dspy__sim_view k = kw_at(&c, h, 0);
    json_int_t maxlen = bound(s, "maxLength", "maxLength", 1 << 20, 0);
    size_t len = k.n;
    while ((json_int_t)len > maxlen && len > 0) /* whole characters only */
        for (len--; len > 0 && ((unsigned char)k.p[len] & 0xc0) == 0x80; len--)
            ;
    return json_stringn(k.p, len);
}

/* ---- Rendering ---- */

static dspy_status render_chat_value(json_t *v, struct dspy_buf *b)
{
    if (json_is_string(v))
        return dspy__buf_add(b, json_string_value(v), json_string_length(v));
    if (json_is_true(v))
        return dspy__buf_adds(b, "True");
    if (json_is_false(v))
        return dspy__buf_adds(b, "False");
    if (!v || json_is_null(v))
        return dspy__buf_adds(b, "None");
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    if (!s)
        return DSPY_ENOMEM;
    dspy_status rc = dspy__buf_adds(b, s);
    free(s);
    return rc;
}

static dspy_status answer_fields(const struct ctx *c, struct dspy_buf *b)
{
    const struct dspy__sim_prompt *p = c->p;
    json_t *obj = json_object();
    dspy_status rc = obj ? DSPY_OK : DSPY_ENOMEM;
    for (size_t i = 0; !rc && i < p->n_outputs; i++) {
        const struct dspy__sim_field *f = &p->outputs[i];
        json_t *v = field_value(c, f);
        if (p->adapter == DSPY__SIM_ADAPTER_CHAT) {
            rc = dspy__buf_addf(b, "[[ ## %.*s ## ]]\n", (int)f->name.n, f->name.p);
            if (!rc)
                rc = render_chat_value(v, b);
            if (!rc)
                rc = dspy__buf_adds(b, "\n\n");
            json_decref(v);
        } else {
            char key[128];
            snprintf(key, sizeof(key), "%.*s", (int)(f->name.n < 120 ? f->name.n : 120), f->name.p);
            json_object_set_new(obj, key, v ? v : json_null());
        }
    }
    if (!rc && p->adapter == DSPY__SIM_ADAPTER_CHAT)
        rc = dspy__buf_adds(b, "[[ ## completed ## ]]");
    else if (!rc) {
        char *s = json_dumps(obj, JSON_PRESERVE_ORDER | JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        rc = s ? dspy__buf_adds(b, s) : DSPY_ENOMEM;
        free(s);
    }
    json_decref(obj);
    return rc;
}

static dspy_status plain_answer(const struct ctx *c, struct dspy_buf *b)
{
    const struct dspy__sim_answer_opts *o = c->o;
    json_t *v = NULL;
    dspy_status rc;
    if (o->json_schema) {
        v = dspy__sim_schema_value(o->json_schema, o->json_schema, c->h, c->kw, c->nkw, 0);
    } else if (o->json_object) {
        v = json_object();
        if (c->arith)
            json_object_set_new(v, "answer", json_integer(c->claimed));
        else
            json_object_set_new(v, "response", text_json(short_text, c, c->h));
    }
    if (v) {
        char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
        rc = s ? dspy__buf_adds(b, s) : DSPY_ENOMEM;
        free(s);
        json_decref(v);
        return rc;
    }
    if (c->facts)
        return dspy__buf_addf(b, "The answer is %s.", c->fact);
    if (!c->arith)
        return plain_text(c, o->reply_tokens, b);
    rc = DSPY_OK;
    if (dspy__sim_find_ci(c->p->final_user, "step") ||
        dspy__sim_find_ci(c->p->instructions, "step")) {
        rc = dspy__sim_arith_reasoning(&c->q, c->claimed, b);
        if (!rc)
            rc = dspy__buf_addc(b, ' ');
    }
    return rc ? rc : dspy__buf_addf(b, "The answer is %ld.", c->claimed);
}

/* The field that carries an arith answer: `answer` or a like name, else the last output
 * that is not reasoning. */
static const struct dspy__sim_field *pick_answer_field(const struct dspy__sim_prompt *p)
{
    static const char *const names[] = { "answer", "final_answer", "result", "solution", "number" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const struct dspy__sim_field *f = dspy__sim_prompt_output(p, names[i]);
        if (f)
            return f;
    }
    for (size_t i = p->n_outputs; i-- > 0;)
        if (!dspy__sim_view_eq(p->outputs[i].name, "reasoning") &&
            !dspy__sim_view_eq(p->outputs[i].name, "rationale"))
            return &p->outputs[i];
    return NULL;
}

dspy_status dspy__sim_answer(const struct dspy__sim_prompt *p,
                             const struct dspy__sim_answer_opts *o, struct dspy_buf *out)
{
    struct ctx c;
    memset(&c, 0, sizeof(c));
    c.p = p;
    c.o = o;
    c.h = dspy__sim_mix(dspy__sim_mix(o->req_hash, o->seed), o->choice);
    if (p->adapter == DSPY__SIM_ADAPTER_NONE) {
        if (dspy__sim_propose_reflection(p, c.h, out))
            return DSPY_OK;
        c.nkw = dspy__sim_keywords(p->final_user, c.kw, 0, MAX_KW);
        c.arith = dspy__sim_arith_find(p->final_user.p, p->final_user.n, &c.q);
    } else {
        for (size_t i = 0; i < p->n_inputs; i++) {
            const struct dspy__sim_field *f = &p->inputs[i];
            if (!f->value.p)
                continue;
            c.nkw = dspy__sim_keywords(f->value, c.kw, c.nkw, MAX_KW);
            if (!c.arith)
                c.arith = dspy__sim_arith_find(f->value.p, f->value.n, &c.q);
        }
        c.answer_field = pick_answer_field(p);
        if (!c.answer_field || dspy__sim_propose_is_meta(p))
            c.arith = false;
    }
    if (c.arith) {
        bool correct;
        c.claimed = dspy__sim_arith_answer(p, &c.q, o, &correct);
    } else if (!dspy__sim_propose_is_meta(p) &&
               (p->adapter == DSPY__SIM_ADAPTER_NONE || c.answer_field)) {
        if (p->adapter == DSPY__SIM_ADAPTER_NONE)
            c.facts = dspy__sim_facts_find(p->final_user.p, p->final_user.n, &c.fq);
        for (size_t i = 0; !c.facts && i < p->n_inputs; i++)
            if (p->inputs[i].value.p)
                c.facts = dspy__sim_facts_find(p->inputs[i].value.p, p->inputs[i].value.n, &c.fq);
        if (c.facts) {
            bool reasoning = dspy__sim_prompt_output(p, "reasoning") != NULL;
            dspy__sim_facts_answer(p, &c.fq, c.h, reasoning, o->quality, c.fact, sizeof(c.fact));
        }
    }
    return p->adapter == DSPY__SIM_ADAPTER_NONE ? plain_answer(&c, out) : answer_fields(&c, out);
}

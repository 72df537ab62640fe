/* MIPROv2 (optimize layer): demo-set candidates by bootstrapping (all at once), instruction
 * candidates from DSPy's grounded proposer on the prompt model (its calls concurrent, beside
 * the bootstraps), and a TPE search over (instruction,
 * demos) per predictor with minibatch trials in fixed waves (concurrent, reproducible) and
 * periodic full evaluations; --auto budgets as DSPy computes them. */
#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "base/clock.h"
#include "base/status.h"
#include "optimize/optimize_run.h"
#include "optimize/tpe.h"

bool dspy__mipro_auto(const char *name, long *n, long *val_size)
{
    if (!strcmp(name, "light"))
        *n = 6, *val_size = 100;
    else if (!strcmp(name, "medium"))
        *n = 12, *val_size = 300;
    else if (!strcmp(name, "heavy"))
        *n = 18, *val_size = 1000;
    else
        return false;
    return true;
}

long dspy__mipro_num_trials(size_t predictors, long n, bool zero_shot)
{
    double v = (double)predictors * (zero_shot ? 1.0 : 2.0);
    double a = 2.0 * v * log2((double)n), b = 1.5 * (double)n;
    return (long)(a > b ? a : b);
}

struct mipro_cfg {
    long n_fewshot, n_instruct, trials, val_size, boot, labeled, mb, full_every;
    bool zero_shot;
};

static bool mipro_settings(struct opt_run *r, struct mipro_cfg *c)
{
    const struct dspy_optimize_options *o = r->o;
    c->boot = o->max_bootstrapped_demos < 0 ? 4 : o->max_bootstrapped_demos;
    c->labeled = o->max_labeled_demos < 0 ? 4 : o->max_labeled_demos;
    c->zero_shot = !c->boot && !c->labeled;
    c->mb = o->minibatch_size > 0 ? o->minibatch_size : 35;
    c->full_every = o->minibatch_full_eval_steps > 0 ? o->minibatch_full_eval_steps : 5;
    c->val_size = 0;
    if (o->auto_budget || (o->num_trials < 0 && o->num_candidates < 0)) {
        long n;
        if (!dspy__mipro_auto(o->auto_budget ? o->auto_budget : "light", &n, &c->val_size))
            return false;
        c->n_fewshot = n;
        c->n_instruct = c->zero_shot ? n : (long)(0.5 * (double)n);
        c->trials = dspy__mipro_num_trials(dspy_program_count(r->student), n, c->zero_shot);
    } else {
        c->n_fewshot = c->n_instruct = o->num_candidates > 0 ? o->num_candidates : 6;
        c->trials = o->num_trials > 0 ? o->num_trials : 10;
    }
    if (o->num_trials > 0)
        c->trials = o->num_trials;
    if (c->n_instruct < 1)
        c->n_instruct = 1;
    return true;
}

/* The validation examples the search uses: the auto size sampled from the valset. */
static json_t *mipro_valset(struct opt_run *r, const struct mipro_cfg *c);

json_t *opt_mipro_valset(struct opt_run *r)
{
    struct mipro_cfg c;
    return mipro_settings(r, &c) ? mipro_valset(r, &c) : NULL;
}

/* DSPy's MIPROv2 makes its draws from one random.Random(seed), in this order: the --auto
 * valset sample (create_minibatch: sample() of every index when the valset is smaller),
 * the demo sets' shuffles and sizes, the proposer's tips and rollout ids, then each trial's
 * minibatch. */
static json_t *mipro_valset_draw(struct opt_run *r, const struct mipro_cfg *c,
                                 struct dspy__pyrandom *rng)
{
    size_t n = json_array_size(r->val);
    if (!c->val_size)
        return json_incref((json_t *)r->val);
    size_t k = (size_t)c->val_size < n ? (size_t)c->val_size : n;
    size_t *idx = dspy_malloc((k + 1) * sizeof(*idx));
    json_t *v = json_array();
    if (!idx || !v || dspy__pyrandom_sample(rng, n, k, idx)) {
        dspy_free(idx);
        json_decref(v);
        return NULL;
    }
    for (size_t i = 0; i < k; i++)
        json_array_append(v, json_array_get(r->val, idx[i]));
    dspy_free(idx);
    return v;
}

static json_t *mipro_valset(struct opt_run *r, const struct mipro_cfg *c)
{
    struct dspy__pyrandom rng;
    dspy__pyrandom_seed(&rng, r->o->seed);
    return mipro_valset_draw(r, c, &rng);
}

json_t *opt_mipro_plan(struct opt_run *r, double tpc)
{
    struct mipro_cfg c;
    if (!mipro_settings(r, &c))
        return NULL;
    size_t np = dspy_program_count(r->student);
    size_t nv = json_array_size(r->val);
    if (c.val_size && (size_t)c.val_size < nv)
        nv = (size_t)c.val_size;
    bool minibatch = nv > 50;
    long mb = minibatch ? c.mb : (long)nv;
    long fulls = minibatch ? c.trials / c.full_every + 1 : 0;
    /* DSPy's estimate: prompt model 10 + N*P + (P+1); task model 35*T + |val|*(T//5+1) */
    double prompt = 10.0 + (double)c.n_instruct * (double)np + (double)np + 1.0;
    double boot = (double)(c.n_fewshot > 3 ? c.n_fewshot - 2 : 1) * (double)c.boot * 4.0;
    double task = (double)mb * (double)c.trials + (double)nv * (double)(fulls + 1) + boot;
    return json_pack("{s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:b, s:I, s:f, s:f}", "task_calls", task,
                     "prompt_calls", prompt, "tokens", task * tpc + prompt * (tpc * 3 + 200),
                     "trials", (json_int_t)c.trials, "instruction_candidates",
                     (json_int_t)c.n_instruct, "demo_candidates", (json_int_t)c.n_fewshot,
                     "full_evals", (json_int_t)(fulls + 1), "minibatch", minibatch,
                     "minibatch_size", (json_int_t)mb, "tokens_first_trial",
                     tpc * (double)(nv + (size_t)mb), "calls_first_trial",
                     (double)(nv + (size_t)mb));
}

/* ---- the grounded proposer ------------------------------------------------------------ */

static const char *const TIPS[] = {
    "",
    "Don't be afraid to be creative when creating the new instruction!",
    "Keep the instruction clear and concise.",
    "Make sure your instruction is very informative and descriptive.",
    "The instruction should include a high stakes scenario in which the LM must solve the "
    "task!",
    "Include a persona that is relevant to the task in the instruction (ie. \"You are a "
    "...\")",
};

static const char DESCRIPTOR_SIG[] = "examples -> observations";
static const char DESCRIPTOR_DOC[] =
    "Given several examples from a dataset please write observations about trends that hold "
    "for most or all of the samples. Some areas you may consider in your observations: "
    "topics, content, syntax, conciseness, etc. It will be useful to make an educated guess "
    "as to the nature of the task this dataset will enable. Don't be afraid to be creative";
static const char SUMMARIZER_SIG[] = "observations -> summary";
static const char SUMMARIZER_DOC[] =
    "Given a series of observations I have made about my dataset, please summarize them into "
    "a brief 2-3 sentence summary which highlights only the most important details.";
static const char DESCRIBE_PROGRAM_SIG[] = "program_code, program_example -> program_description";
static const char DESCRIBE_PROGRAM_DOC[] =
    "Below is some pseudo-code for a pipeline that solves tasks with calls to language "
    "models. Please describe what type of task this program appears to be designed to solve, "
    "and how it appears to work.";
static const char DESCRIBE_MODULE_SIG[] =
    "program_code, program_example, program_description, module -> module_description";
static const char DESCRIBE_MODULE_DOC[] =
    "Below is some pseudo-code for a pipeline that solves tasks with calls to language "
    "models. Please describe the purpose of one of the specified module in this pipeline.";
static const char PROPOSE_SIG[] =
    "dataset_description, program_code, program_description, module, module_description, "
    "task_demos, basic_instruction, tip -> proposed_instruction";
static const char PROPOSE_DOC[] =
    "Use the information below to learn about a task that we are trying to solve using calls "
    "to an LM, then generate a new instruction that will be used to prompt a Language Model "
    "to better solve the task.";

static const struct {
    const char *field, *desc;
} DESCS[] = {
    { "examples", "Sample data points from the dataset" },
    { "observations", "Somethings that holds true for most or all of the data you observed" },
    { "summary", "Two to Three sentence summary of only the most significant highlights of my "
                 "observations" },
    { "program_code", "Pseudocode for a language model program designed to solve a particular "
                      "task." },
    { "program_example", "An example of the program in use." },
    { "program_description", "Summary of the task the program is designed to solve, and how "
                             "it goes about solving it." },
    { "module", "The module in the program that we want to describe." },
    { "module_description", "Description of the module's role in the broader program." },
    { "dataset_description", "A description of the dataset that we are using." },
    { "task_demos", "Example inputs/outputs of our module." },
    { "basic_instruction", "Basic instruction." },
    { "tip", "A suggestion for how to go about generating the new instruction." },
    { "proposed_instruction", "Propose an instruction that will be used to prompt a Language "
                              "Model to perform this task." },
};

static dspy_program *proposer_program(const char *sigtext, const char *doc)
{
    dspy_signature *sig = NULL;
    if (dspy_signature_parse(sigtext, doc, &sig, NULL))
        return NULL;
    for (size_t i = 0; i < sizeof(DESCS) / sizeof(DESCS[0]); i++)
        if (dspy_signature_find(sig, DESCS[i].field) >= 0)
            dspy_signature_set_desc(sig, DESCS[i].field, DESCS[i].desc);
    dspy_module *m = dspy_module_new(DSPY_MODULE_PREDICT, sig, DSPY_ADAPTER_CHAT);
    dspy_signature_free(sig);
    dspy_program *p = m ? dspy_program_single(m) : NULL;
    if (!p)
        dspy_module_free(m);
    return p;
}

/* One proposer call: a signature on the prompt model, its named output as text ("" when
 * the call fails: a failed proposal step, counted). Runs on any thread; what it cost is
 * accounted by pcalls_account on the run's thread. */
struct pcall {
    const char *sig, *doc, *out_field;
    json_t *inputs; /* owned */
    dspy_lm *lm;
    char *text; /* owned */
    struct dspy_call_info info;
    dspy_status rc;
};

static void pcall_set(struct pcall *c, struct opt_run *r, const char *sig, const char *doc,
                      json_t *inputs, const char *out_field)
{
    memset(c, 0, sizeof(*c));
    c->sig = sig;
    c->doc = doc;
    c->inputs = inputs;
    c->out_field = out_field;
    c->lm = r->o->prompt_lm ? r->o->prompt_lm : r->o->task_lm;
}

static void pcall_run(struct pcall *c)
{
    dspy_program *p = proposer_program(c->sig, c->doc);
    json_t *out = NULL;
    struct dspy_call_config cfg = DSPY_CALL_CONFIG_INIT;
    cfg.temperature = 1.0; /* DSPy's init_temperature */
    c->rc = p && c->inputs ? dspy_program_call(p, c->lm, c->inputs, &cfg, &out, &c->info, NULL)
                           : DSPY_ENOMEM;
    const json_t *v = out ? json_object_get(out, c->out_field) : NULL;
    c->text = dspy_strdup(json_is_string(v) ? json_string_value(v) : "");
    json_decref(out);
    dspy_program_free(p);
}

static void pcall_task(void *ctx, size_t i)
{
    pcall_run(&((struct pcall *)ctx)[i]);
}

/* Run n independent proposer calls, at most `limit` at once (the calling thread among
 * them). Their results do not depend on the order they run in. */
static void pcalls_run(struct pcall *calls, size_t n, unsigned limit)
{
    dspy__run_tasks(n, limit, pcall_task, calls);
}

/* Account the calls in order and release their inputs (the texts stay). */
static void pcalls_account(struct opt_run *r, struct pcall *calls, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        opt_account(r, calls[i].lm, &calls[i].info, calls[i].rc);
        json_decref(calls[i].inputs);
        calls[i].inputs = NULL;
    }
}

void dspy__strip_prefix(char *s)
{
    char *p = s;
    while (*p == '*' || isspace((unsigned char)*p))
        p++;
    char *q = p;
    int words = 0;
    while (*q && words < 5) {
        char *w = q;
        while (*q && (isalnum((unsigned char)*q) || *q == '_' || *q == '\'' || *q == '-'))
            q++;
        if (q == w)
            break;
        words++;
        if (*q == ':') {
            q++;
            while (isspace((unsigned char)*q))
                q++;
            memmove(s, q, strlen(q) + 1);
            goto quotes;
        }
        if (!isspace((unsigned char)*q))
            break;
        while (isspace((unsigned char)*q))
            q++;
    }
quotes:;
    size_t n = strlen(s);
    while (n && s[n - 1] == '"')
        s[--n] = '\0';
    size_t lead = strspn(s, "\"");
    if (lead)
        memmove(s, s + lead, n - lead + 1);
}

/* The program as pseudo-code, for the program-aware proposer. */
static char *program_code(dspy_program *p)
{
    char buf[4096];
    size_t off = (size_t)snprintf(buf, sizeof(buf),
                                  "class Program(dspy.Module):\n"
                                  "    def __init__(self):\n");
    for (size_t i = 0; i < dspy_program_count(p) && off < sizeof(buf) - 256; i++) {
        dspy_module *m = dspy_program_module(p, i);
        const dspy_signature *sig = dspy_module_signature(m);
        char fields[600] = "";
        size_t fo = 0;
        for (size_t f = 0; f < dspy_signature_nfields(sig) && fo < sizeof(fields) - 64; f++) {
            const char *name = dspy_signature_field(sig, f)->name;
            if (!strcmp(name, "reasoning"))
                continue;
            fo += (size_t)snprintf(fields + fo, sizeof(fields) - fo, "%s%s",
                                   f == dspy_signature_ninputs(sig) ? " -> "
                                   : f                              ? ", "
                                                                    : "",
                                   name);
        }
        off += (size_t)snprintf(buf + off, sizeof(buf) - off, "        self.%s = dspy.%s(\"%s\")\n",
                                dspy_program_state_name(p, i),
                                dspy_module_kind(m) == DSPY_MODULE_COT ? "ChainOfThought"
                                                                       : "Predict",
                                fields);
    }
    return dspy_strdup(buf);
}

/* Up to 3 augmented demos rendered "Prefix: value" per field, as DSPy's task_demos. */
static char *task_demos(dspy_program *p, size_t pred, const json_t *demos)
{
    const dspy_signature *sig = dspy_module_signature(dspy_program_module(p, pred));
    char buf[8192];
    size_t off = 0, shown = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < json_array_size(demos) && shown < 3; i++) {
        const json_t *d = json_array_get(demos, i);
        if (!json_is_true(json_object_get(d, "augmented")))
            continue;
        shown++;
        for (size_t f = 0; f < dspy_signature_nfields(sig) && off < sizeof(buf) - 512; f++) {
            const struct dspy_field *fd = dspy_signature_field(sig, f);
            const json_t *v = json_object_get(d, fd->name);
            char *t = v ? (json_is_string(v) ? dspy_strdup(json_string_value(v))
                                             : json_dumps(v, JSON_ENCODE_ANY))
                        : NULL;
            off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s %.400s\n", fd->prefix,
                                    t ? t : "None");
            dspy_free(t);
        }
        off += (size_t)snprintf(buf + off, sizeof(buf) - off, "\n\n");
    }
    return dspy_strdup(shown ? buf : "No task demos provided.");
}

static char *examples_repr(const json_t *set, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n && i < json_array_size(set); i++)
        json_array_append(a, json_array_get(set, i));
    char *t = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return t;
}

/* The grounded proposer's calls before the proposals, which need no demo set: the dataset
 * summary (DatasetDescriptor, then ObservationSummarizer), the program description, then
 * each predictor's module description; each stage's calls at once. */
struct prestage {
    struct opt_run *r;
    char *ex, *ex1, *code;
    struct pcall first[2]; /* descriptor, program description */
    struct pcall *second;  /* summarizer, then one module description per predictor */
    size_t np;
    unsigned limit;
    pthread_t thread;
    bool started;
};

static void *prestage_main(void *arg)
{
    struct prestage *s = arg;
    struct opt_run *r = s->r;
    pcalls_run(s->first, 2, s->limit);
    const char *obs = s->first[0].text ? s->first[0].text : "";
    const char *pdesc = s->first[1].text ? s->first[1].text : "";
    pcall_set(&s->second[0], r, SUMMARIZER_SIG, SUMMARIZER_DOC,
              json_pack("{s:s}", "observations", obs), "summary");
    for (size_t p = 0; p < s->np; p++) {
        char module[300];
        snprintf(module, sizeof(module), "self.%s", dspy_program_state_name(r->student, p));
        pcall_set(&s->second[1 + p], r, DESCRIBE_MODULE_SIG, DESCRIBE_MODULE_DOC,
                  json_pack("{s:s, s:s, s:s, s:s}", "program_code", s->code, "program_example",
                            s->ex1 ? s->ex1 : "", "program_description", pdesc, "module", module),
                  "module_description");
    }
    pcalls_run(s->second, 1 + s->np, s->limit);
    return NULL;
}

/* Prepare the stage; false when out of memory. */
static bool prestage_init(struct prestage *s, struct opt_run *r)
{
    memset(s, 0, sizeof(*s));
    s->r = r;
    s->np = dspy_program_count(r->student);
    s->ex = examples_repr(r->train, 10);
    s->ex1 = examples_repr(r->train, 1);
    s->code = program_code(r->student);
    s->second = dspy_calloc(s->np + 1, sizeof(*s->second));
    if (!s->code || !s->second)
        return false;
    pcall_set(&s->first[0], r, DESCRIPTOR_SIG, DESCRIPTOR_DOC,
              json_pack("{s:s}", "examples", s->ex ? s->ex : "[]"), "observations");
    pcall_set(&s->first[1], r, DESCRIBE_PROGRAM_SIG, DESCRIBE_PROGRAM_DOC,
              json_pack("{s:s, s:s}", "program_code", s->code, "program_example",
                        s->ex1 ? s->ex1 : ""),
              "program_description");
    return true;
}

static void prestage_release(struct prestage *s)
{
    for (size_t i = 0; i < 2; i++) {
        json_decref(s->first[i].inputs);
        dspy_free(s->first[i].text);
    }
    for (size_t i = 0; s->second && i < s->np + 1; i++) {
        json_decref(s->second[i].inputs);
        dspy_free(s->second[i].text);
    }
    dspy_free(s->second);
    dspy_free(s->ex);
    dspy_free(s->ex1);
    dspy_free(s->code);
}

/* Instruction candidates per predictor: [original, proposals...] (memoized), from the
 * finished prestage; every proposal's call at once, at most --concurrency in flight. */
static json_t *propose(struct opt_run *r, const struct mipro_cfg *c, json_t *const *demo_sets,
                       const size_t *tips, struct prestage *pre)
{
    json_t *saved = opt_memo_get(r, "instructions");
    if (saved)
        return json_incref(saved);
    size_t np = dspy_program_count(r->student), per = (size_t)(c->n_instruct - 1);
    struct pcall *calls = dspy_calloc(np * per + 1, sizeof(*calls));
    char **demos = dspy_calloc(np * per + 1, sizeof(*demos));
    json_t *all = json_array();
    if (!calls || !demos || !all) {
        dspy_free(calls);
        dspy_free(demos);
        json_decref(all);
        return NULL;
    }
    const char *summary = pre->second[0].text ? pre->second[0].text : "";
    const char *pdesc = pre->first[1].text ? pre->first[1].text : "";
    for (size_t p = 0; p < np; p++) {
        dspy_module *m = dspy_program_module(r->student, p);
        const char *basic = dspy_signature_instructions(dspy_module_signature(m));
        const char *mdesc = pre->second[1 + p].text ? pre->second[1 + p].text : "";
        char module[300];
        snprintf(module, sizeof(module), "self.%s", dspy_program_state_name(r->student, p));
        for (size_t i = 1; i <= per; i++) {
            size_t q = p * per + i - 1;
            const json_t *dset = demo_sets[i % (size_t)c->n_fewshot];
            demos[q] = task_demos(r->student, p, json_array_get(json_object_get(dset, "demos"), p));
            const char *tip = TIPS[tips[p * (size_t)c->n_instruct + i]];
            pcall_set(&calls[q], r, PROPOSE_SIG, PROPOSE_DOC,
                      json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "dataset_description",
                                summary, "program_code", pre->code, "program_description", pdesc,
                                "module", module, "module_description", mdesc, "task_demos",
                                demos[q] ? demos[q] : "", "basic_instruction", basic, "tip", tip),
                      "proposed_instruction");
        }
    }
    pcalls_run(calls, np * per, r->o->concurrency ? r->o->concurrency : 16);
    pcalls_account(r, calls, np * per);
    for (size_t p = 0; p < np; p++) {
        const char *basic = dspy_signature_instructions(
            dspy_module_signature(dspy_program_module(r->student, p)));
        json_t *cands = json_array();
        json_array_append_new(cands, json_string(basic));
        for (size_t i = 1; i <= per; i++) {
            char *inst = calls[p * per + i - 1].text;
            if (inst)
                dspy__strip_prefix(inst);
            json_array_append_new(cands, json_string(inst && *inst ? inst : basic));
        }
        json_array_append_new(all, cands);
    }
    for (size_t q = 0; q < np * per; q++) {
        dspy_free(calls[q].text);
        dspy_free(demos[q]);
    }
    dspy_free(calls);
    dspy_free(demos);
    opt_memo_put(r, "instructions", json_incref(all));
    return all;
}

/* ---- the search ----------------------------------------------------------------------- */

/* The program of a point: instruction and demo-set choice per predictor. */
static json_t *point_candidate(struct opt_run *r, const size_t *x, const json_t *instr,
                               json_t *const *demo_sets)
{
    json_t *cand = opt_candidate_of(r->student);
    size_t np = dspy_program_count(r->student);
    for (size_t p = 0; cand && p < np; p++) {
        json_array_set(json_object_get(cand, "instructions"), p,
                       json_array_get(json_array_get(instr, p), x[2 * p]));
        json_array_set(json_object_get(cand, "demos"), p,
                       json_array_get(json_object_get(demo_sets[x[2 * p + 1]], "demos"), p));
    }
    return cand;
}

static json_t *point_json(const size_t *x, size_t np)
{
    json_t *a = json_array();
    for (size_t i = 0; i < 2 * np; i++)
        json_array_append_new(a, json_integer((json_int_t)x[i]));
    return a;
}

struct combo {
    size_t x[DSPY__TPE_MAX_DIMS];
    double sum;
    size_t count;
    bool full;
};

dspy_status opt_mipro(struct opt_run *r, struct dspy_error *err)
{
    const struct dspy_optimize_options *o = r->o;
    struct mipro_cfg c;
    size_t np = dspy_program_count(r->student);
    json_t **demo_sets = NULL, *instr = NULL, *val = NULL;
    struct combo *combos = NULL;
    size_t ncombos = 0;
    struct dspy__tpe tpe;
    dspy_status rc = DSPY_OK;
    memset(&tpe, 0, sizeof(tpe));
    if (!mipro_settings(r, &c))
        return dspy__err(err, DSPY_EINVAL, "unknown --auto");
    if (2 * np > DSPY__TPE_MAX_DIMS)
        return dspy__err(err, DSPY_EUNSUPPORTED, "mipro handles at most %d predictors",
                         DSPY__TPE_MAX_DIMS / 2);
    if (o->cycle)
        dspy_cycle_plan(o->cycle, (uint64_t)c.trials);
    /* 1. demo-set candidates: the random-search seed schedule (-3 zero-shot, -2 labeled,
     * -1 unshuffled bootstrap, then shuffled ones) */
    /* zero-shot: DSPy bootstraps the n sets (3 demos each, none labelled) for the proposer
     * only; the search then has one demo choice, none */
    size_t nsets = c.zero_shot ? 1 : (size_t)c.n_fewshot;
    size_t nsched = (size_t)c.n_fewshot;
    demo_sets = dspy_calloc(nsched + 1, sizeof(*demo_sets));
    if (!demo_sets)
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    opt_event(r, "bootstrap", 0, 0, NAN);
    struct dspy__pyrandom rng; /* DSPy's self.rng, past the valset sample */
    dspy__pyrandom_seed(&rng, o->seed);
    json_decref(mipro_valset_draw(r, &c, &rng));
    /* The proposer's first calls need no demo set: unless the proposals were checkpointed
     * they run on a thread while the demo sets bootstrap, their calls reserved out of
     * --concurrency (run after the bootstraps when --concurrency leaves no room). */
    struct prestage pre;
    bool need_pre = !json_object_get(r->memo, "instructions");
    unsigned conc = o->concurrency ? o->concurrency : 16;
    unsigned width = (unsigned)(np + 1 > 2 ? np + 1 : 2);
    if (!prestage_init(&pre, r)) {
        prestage_release(&pre);
        return dspy__err(err, DSPY_ENOMEM, "out of memory");
    }
    pre.limit = conc;
    if (need_pre && conc > width) {
        pre.limit = width;
        r->reserved = width;
        pre.started = !pthread_create(&pre.thread, NULL, prestage_main, &pre);
        if (!pre.started)
            r->reserved = 0;
    }
    /* 1. demo-set candidates: the random-search seed schedule (-3 zero-shot, -2 labeled,
     * -1 unshuffled bootstrap, then shuffled ones), every draw first, then the bootstraps
     * at once */
    long *seeds = dspy_calloc(nsched + 1, sizeof(*seeds));
    for (size_t i = 0; seeds && i < nsched; i++)
        seeds[i] = (long)i - 3;
    rc = !seeds ? DSPY_ENOMEM
                : opt_schedule_candidates(r, nsched, seeds, c.zero_shot ? 3 : c.boot,
                                          c.zero_shot ? 0 : c.labeled, 1, &rng, demo_sets);
    dspy_free(seeds);
    if (pre.started)
        pthread_join(pre.thread, NULL);
    r->reserved = 0;
    if (need_pre && !rc) {
        if (!pre.started) {
            pre.limit = conc;
            prestage_main(&pre);
        }
        pcalls_account(r, pre.first, 2);
        pcalls_account(r, pre.second, np + 1);
        opt_event(r, "propose", 0, 0, NAN); /* the proposals: the last of the proposer */
    }
    if (rc) {
        prestage_release(&pre);
        goto out;
    }
    /* the proposer's draws, per predictor and candidate (candidate 0 too, whose proposal
     * DSPy overwrites with the original): a tip, then a rollout id */
    size_t ntips = np * (size_t)(c.n_instruct > 0 ? c.n_instruct : 1);
    size_t *tips = dspy_calloc(ntips, sizeof(*tips));
    if (!tips) {
        prestage_release(&pre);
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t k = 0; k < ntips; k++) {
        tips[k] = dspy__pyrandom_below(&rng, sizeof(TIPS) / sizeof(TIPS[0]));
        (void)dspy__pyrandom_randint(&rng, 0, 1000000000);
    }
    /* 2. instruction candidates */
    instr = propose(r, &c, demo_sets, tips, &pre);
    prestage_release(&pre);
    dspy_free(tips);
    if (!instr) {
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out;
    }
    if (c.zero_shot) /* the search sees one demo choice: set 0, the zero-shot one */
        for (size_t p = 0; p < np; p++)
            json_array_set_new(json_object_get(demo_sets[0], "demos"), p, json_array());
    /* 3. the search */
    if (!(val = json_incref((json_t *)r->val))) { /* sampled by the driver */
        rc = dspy__err(err, DSPY_ENOMEM, "out of memory");
        goto out;
    }
    size_t nv = json_array_size(val);
    bool minibatch = nv > 50;
    size_t mb = minibatch ? (size_t)c.mb : nv;
    if (mb > nv)
        mb = nv;
    size_t dims[DSPY__TPE_MAX_DIMS];
    for (size_t p = 0; p < np; p++) {
        dims[2 * p] = json_array_size(json_array_get(instr, p));
        dims[2 * p + 1] = nsets;
    }
    if ((rc = dspy__tpe_init(&tpe, 2 * np, dims)))
        goto out;
    size_t zero[DSPY__TPE_MAX_DIMS] = { 0 };
    dspy__tpe_observe(&tpe, zero, r->baseline); /* DSPy adds the baseline as a trial */
    if (!(combos = dspy_calloc((size_t)c.trials + 1, sizeof(*combos)))) {
        rc = DSPY_ENOMEM;
        goto out;
    }
    combos[ncombos].full = true; /* the baseline point had its full evaluation */
    combos[ncombos].count = 1;
    combos[ncombos++].sum = r->baseline;
    size_t wave = o->parallel_trials ? o->parallel_trials : 4;
    size_t T = (size_t)c.trials;
    for (size_t start = 1; start <= T && !opt_check_budget(r); start += wave) {
        size_t end = start + wave - 1 < T ? start + wave - 1 : T, m = 0;
        size_t xs[64][DSPY__TPE_MAX_DIMS];
        json_t *cands[64], *sets[64];
        size_t which[64];
        double scores[64];
        uint64_t t0 = dspy__now_ns(), c0 = r->lm_calls;
        json_t *recs = NULL;
        /* suggestions of a wave see the history up to the wave's start */
        for (size_t t = start; t <= end; t++, m++) {
            struct dspy__rng trng;
            dspy__rng_seed(&trng, o->seed, RNG_TPE, t);
            dspy__tpe_suggest(&tpe, &trng, xs[m]);
            cands[m] = point_candidate(r, xs[m], instr, demo_sets);
            sets[m] = json_array();
            size_t *idx = dspy_malloc(mb * sizeof(*idx) + 1);
            if (!idx || dspy__pyrandom_sample(&rng, nv, mb, idx)) {
                dspy_free(idx);
                rc = DSPY_ENOMEM;
                m++; /* its candidate and set are released below */
                goto wave_out;
            }
            for (size_t k = 0; k < mb; k++)
                json_array_append(sets[m], json_array_get(val, idx[k]));
            dspy_free(idx);
            which[m] = t;
        }
        /* a wave is one checkpoint unit: its trials' evaluations ran together */
        char wkey[32];
        snprintf(wkey, sizeof(wkey), "wave:%zu", start);
        json_t *saved = opt_memo_get(r, wkey);
        if (saved) {
            recs = json_incref(saved);
        } else {
            if ((rc = opt_eval(r, cands, (const json_t *const *)sets, m, NULL, false, scores, NULL,
                               NULL)))
                goto wave_out;
            recs = json_array();
            for (size_t i = 0; i < m; i++)
                json_array_append_new(recs,
                                      json_pack("{s:I, s:s, s:o, s:f, s:f, s:I, s:I}", "trial",
                                                (json_int_t)which[i], "kind",
                                                minibatch ? "minibatch" : "full", "candidate",
                                                point_json(xs[i], np), "score", scores[i],
                                                "elapsed_s", (double)(dspy__now_ns() - t0) / 1e9,
                                                "lm_calls", (json_int_t)((r->lm_calls - c0) / m),
                                                "examples", (json_int_t)mb));
            opt_memo_put(r, wkey, json_incref(recs));
        }
        for (size_t i = 0; i < m; i++)
            scores[i] = json_real_value(json_object_get(json_array_get(recs, i), "score"));
        for (size_t i = 0; i < m; i++) {
            json_t *rec = json_incref(json_array_get(recs, i));
            dspy__tpe_observe(&tpe, xs[i], scores[i]);
            size_t k;
            for (k = 0; k < ncombos; k++)
                if (!memcmp(combos[k].x, xs[i], 2 * np * sizeof(size_t)))
                    break;
            if (k == ncombos) {
                memcpy(combos[k].x, xs[i], 2 * np * sizeof(size_t));
                ncombos++;
            }
            combos[k].sum += scores[i];
            combos[k].count++;
            opt_trial(r, rec, cands[i], !minibatch, scores[i], which[i], T);
            if (!minibatch)
                combos[k].full = true;
            /* periodic full evaluation of the best-mean point not yet fully evaluated */
            size_t t = which[i];
            if (minibatch && (t % (size_t)c.full_every == 0 || t == T)) {
                size_t best = ncombos;
                for (size_t q = 0; q < ncombos; q++)
                    if (!combos[q].full &&
                        (best == ncombos || combos[q].sum / (double)combos[q].count >
                                                combos[best].sum / (double)combos[best].count))
                        best = q;
                if (best == ncombos)
                    continue;
                combos[best].full = true;
                char fkey[32];
                snprintf(fkey, sizeof(fkey), "full:%zu", t);
                json_t *fc = point_candidate(r, combos[best].x, instr, demo_sets);
                json_t *fsaved = opt_memo_get(r, fkey), *frec;
                double fs;
                uint64_t f0 = dspy__now_ns(), fc0 = r->lm_calls;
                if (fsaved) {
                    frec = json_incref(fsaved);
                    fs = json_real_value(json_object_get(fsaved, "score"));
                } else {
                    const json_t *fv = val;
                    if ((rc = opt_eval(r, &fc, &fv, 1, NULL, false, &fs, NULL, NULL))) {
                        json_decref(fc);
                        goto wave_out;
                    }
                    frec = json_pack("{s:I, s:s, s:o, s:f, s:f, s:I, s:I}", "trial", (json_int_t)t,
                                     "kind", "full", "candidate", point_json(combos[best].x, np),
                                     "score", fs, "elapsed_s", (double)(dspy__now_ns() - f0) / 1e9,
                                     "lm_calls", (json_int_t)(r->lm_calls - fc0), "examples",
                                     (json_int_t)nv);
                    opt_memo_put(r, fkey, json_incref(frec));
                }
                dspy__tpe_observe(&tpe, combos[best].x, fs);
                json_array_append_new(r->trials, frec);
                if (isnan(r->best) || fs > r->best) {
                    r->best = fs;
                    json_decref(r->best_cand);
                    r->best_cand = json_incref(fc);
                }
                opt_event(r, "full", t, T, fs);
                json_decref(fc);
            }
        }
    wave_out:
        json_decref(recs);
        for (size_t i = 0; i < m; i++) {
            json_decref(cands[i]);
            json_decref(sets[i]);
        }
        if (rc)
            goto out;
    }
out:
    for (size_t i = 0; demo_sets && i < nsched; i++)
        json_decref(demo_sets[i]);
    dspy_free(demo_sets);
    dspy_free(combos);
    dspy__tpe_release(&tpe);
    json_decref(instr);
    json_decref(val);
    return rc;
}

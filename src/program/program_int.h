/* Internals shared by the program files (program layer): the program struct, reading a
 * bounded file, and errors that name the input file, line and JSON path of a problem. */
#ifndef DSPY_PROGRAM_PROGRAM_INT_H
#define DSPY_PROGRAM_PROGRAM_INT_H

#include <dspyc/program.h>

struct dspy__predictor {
    char *name;       /* name in the program file; NULL for a lone unnamed module */
    char *state_name; /* DSPy's: "answer.predict", "answer", "predict" or "self" */
    dspy_module *module;
};

/* A step between predictors: DSPy's Retrieve(k), or an LM ranking of a list field (a
 * Predict of `query, documents -> ranked_documents`, program_rank.c). */
struct dspy__retrieve_step {
    char *name;
    char *query;               /* the record's field holding the query text */
    char *output;              /* the field the passages (ranked documents) go to */
    size_t k;                  /* passages to retrieve; ranked documents to keep (0 = all) */
    size_t before;             /* runs before predictor `before`; n = after the last */
    dspy_retriever *retriever; /* a reference of the program's own; NULL for a rank step */
    char *documents;           /* rank step: the record's list field to rank */
    dspy_module *ranker;       /* rank step: the program's own */
};

struct dspy_program {
    char *name;  /* program file "name", may be NULL */
    char *model; /* program file "lm.model", may be NULL */
    bool flat;   /* a lone bare Predict: its state is the whole save file */
    size_t n;
    struct dspy__predictor *preds;
    json_t *state_metadata; /* "metadata" of the last state applied, written back by
                               dspy_program_dump_state; NULL: dspyc's own */
    size_t nsteps;          /* retrieve steps, in the order they run */
    struct dspy__retrieve_step *steps;
    long context_budget;                    /* tokens of context; 0 = no budget */
    long completion_budget;                 /* of them, kept for the completion */
    const dspy_tokenizer *context_bpe;      /* counts the budget's tokens; borrowed */
    const dspy_embedder *context_wordpiece; /* else this one's word pieces; borrowed */
    long prompt_budget;                     /* prompt trimming's target in tokens; 0 = none */
    struct dspy__demo_select *demo_select;  /* diverse demo selection (demos.c), or NULL */
};

/* Diverse demo selection (demos.c): a copy of predictor `pred`'s module holding the demos
 * MMR keeps for this record in *use (left NULL when all are kept), their indices added to
 * `report` under the predictor's name. */
dspy_status dspy__demo_select_fit(dspy_program *p, size_t pred, const json_t *record,
                                  dspy_module **use, json_t *report, struct dspy_error *err);
void dspy__demo_select_free(struct dspy__demo_select *d);

/* A path into a JSON document, for error messages: predictors[1].demos. */
#define DSPY__JPATH_MAX 8
struct dspy__jpath {
    int depth;
    struct {
        const char *key; /* NULL: an array index */
        size_t index;
    } step[DSPY__JPATH_MAX];
    const char *at_key; /* when set, the error is about this key of the object at the path:
                           its position is reported, and the message names it already */
};

void dspy__jpath_key(struct dspy__jpath *p, const char *key);
void dspy__jpath_index(struct dspy__jpath *p, size_t index);
void dspy__jpath_pop(struct dspy__jpath *p);

/* Where an input came from, for error messages: the file name (or another origin) and,
 * when known, its text, so errors can name a line and column. */
struct dspy__jsource {
    const char *origin; /* may be NULL */
    const char *text;   /* may be NULL */
    size_t len;
};

/* Byte offset in `text` of the key named by the path's last step (or of the array element
 * when the last step is an index), or -1 when not found. */
long dspy__json_locate(const char *text, size_t len, const struct dspy__jpath *path);

/* Set err to "<origin>:<line>:<column>: <path>: <message>", with err->file, line, column,
 * offset and field (path->at_key, else the last key of the path) filled. Returns `code`. */
dspy_status dspy__jpath_err(struct dspy_error *err, dspy_status code,
                            const struct dspy__jsource *src, const struct dspy__jpath *path,
                            const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Read a whole file of at most `max` bytes (NUL-terminated, caller frees). */
dspy_status dspy__read_file(const char *path, size_t max, char **text, size_t *len,
                            struct dspy_error *err);

/* Parse JSON text (duplicate keys rejected); errors name origin, line and column. */
dspy_status dspy__json_parse(const struct dspy__jsource *src, json_t **out, struct dspy_error *err);

/* The text-based forms of dspy_program_from_json and dspy_program_apply_state, whose
 * errors can name lines; used by the file loaders and the fuzz target. */
dspy_status dspy__program_from_text(const struct dspy__jsource *src, dspy_program **out,
                                    struct dspy_error *err);
dspy_status dspy__program_apply_state_src(dspy_program *p, const json_t *state,
                                          const struct dspy__jsource *src, struct dspy_error *err);

/* The context-window manager (context.c). The estimate of a message list's tokens; and
 * fitting predictor `pred`'s prompt for `record` into the budget: passages dropped in
 * `record`, and *use set to a module copy with fewer demos (caller frees) when demos had to
 * go; what was dropped goes into `report` under the predictor's name. A module already in
 * *use (this call's, from demo selection) is the one fitted, and replaced (freed) when the
 * fit copies it; on failure *use is left as it was. */
long dspy__context_estimate(const json_t *messages);
/* The prompt tokens of `messages` as the program's budget counts them. */
dspy_status dspy__context_count(const dspy_program *p, const json_t *messages, long *tokens,
                                struct dspy_error *err);
dspy_status dspy__context_fit(dspy_program *p, size_t pred, json_t *record, dspy_module **use,
                              json_t *report, struct dspy_error *err);

/* Retrieve steps (program_retrieve.c). */
void dspy__program_steps_free(dspy_program *p);
bool dspy__program_name_taken(const dspy_program *p, const char *name);
dspy_status dspy__program_add_step(dspy_program *p, size_t before, const char *name,
                                   dspy_retriever *r, const char *query, const char *output,
                                   size_t k);
dspy_status dspy__program_steps_copy(dspy_program *dst, const dspy_program *src);
/* Run the steps placed before predictor `before`: passages into `record` (and `all` when
 * not NULL). A rank step calls `lm` (joining `group`, with `cfg`; its LM calls added to
 * `info`); the LM is not needed when there is none. */
struct dspy__engine_group;
dspy_status dspy__program_run_steps(dspy_program *p, size_t before, json_t *record, json_t *all,
                                    dspy_lm *lm, struct dspy__engine_group *group,
                                    const struct dspy_call_config *cfg, struct dspy_call_info *info,
                                    struct dspy_error *err);
/* Add a rank step (takes ownership of `ranker`, also on error: DSPY_ENOMEM). */
dspy_status dspy__program_add_rank(dspy_program *p, size_t before, const char *name,
                                   const char *query, const char *documents, const char *output,
                                   size_t k, dspy_module *ranker);
/* Run a rank step over `record`: the best k of its documents into its output field (and
 * `all`'s, where warnings go too). An LM failure fails the record; an answer that does
 * not read keeps the original order with a warning. */
dspy_status dspy__rank_step_run(struct dspy__retrieve_step *s, json_t *record, json_t *all,
                                dspy_lm *lm, struct dspy__engine_group *group,
                                const struct dspy_call_config *cfg, struct dspy_call_info *info,
                                struct dspy_error *err);
/* A rank step's module: `query, documents -> ranked_documents` with the ranking
 * instructions (or `instructions`). NULL when out of memory. */
dspy_module *dspy__rank_module(const char *instructions, enum dspy_adapter_kind adapter);
/* Read an LM's ranking of `n` documents (the ranked_documents value: document numbers as
 * shown, 1-based, or their texts, in a JSON list or plain text) into order[] (a
 * permutation: the documents named, best first, then the others in their order). Returns
 * false when part of it could not be read (a warning for the caller: the unread part is
 * left in the original order; nothing read = the original order). */
bool dspy__rank_read(const char *text, size_t len, const json_t *documents, size_t *order);
/* The first predictor's input, prepared ahead by the batch executor for a run of records:
 * the record after the local steps before the first predictor and its context fit, so the
 * first LM call's key is known before the call and the call does not redo that work. */
struct dspy__program_first {
    json_t *record;   /* the first predictor's input; NULL: not prepared */
    json_t *all;      /* the outputs so far (the steps' passages) */
    json_t *report;   /* what the context fit dropped, or NULL */
    dspy_module *use; /* the context fit's module with fewer demos, or NULL */
};
void dspy__program_first_release(struct dspy__program_first *f);
/* dspy_program_call() with every LM call joining `group` (dspy__lm_group_new; NULL = none),
 * for the batch executor's workers; `pre` (may be NULL) is the batch's lookup of the first
 * LM call's key and `first` (may be NULL; taken, left released) the input prepared for it
 * (dspy__program_prepare). */
struct dspy__engine_group;
struct dspy__lm_prefetched;
dspy_status dspy__program_call_in(dspy_program *p, dspy_lm *lm, struct dspy__engine_group *group,
                                  struct dspy__lm_prefetched *pre,
                                  struct dspy__program_first *first, const json_t *inputs,
                                  const struct dspy_call_config *cfg, json_t **outputs,
                                  struct dspy_call_info *info, struct dspy_error *err);
/* Whether the work before the first LM call of `p` is local (no LM rank step, no remote
 * retriever before the first predictor): dspy__program_prepare can then run it ahead. */
bool dspy__program_first_local(const dspy_program *p);
/* Prepare `inputs` for the first predictor (into *first, released by the caller or taken
 * by dspy__program_call_in) and compute the cache key and control of its LM call. An error
 * (a bad record, a failing step, remote work before the first call) means no key and
 * nothing prepared: the call then does all of it itself, failing the same way. */
dspy_status dspy__program_prepare(dspy_program *p, dspy_lm *lm, const json_t *inputs,
                                  const struct dspy_call_config *cfg,
                                  struct dspy__program_first *first, struct dspy_cache_key *key,
                                  struct dspy_cache_ctl *ctl);

#endif

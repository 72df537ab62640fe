/* Programs: named predictors run in order over a record, declared in a JSON program file
 * or built in code, with DSPy's saved-program state (program.save("x.json")) read and
 * written per predictor name. */
#ifndef DSPYC_PROGRAM_H
#define DSPYC_PROGRAM_H

#include <signal.h>

#include <jansson.h>

#include <dspyc/common.h>
#include <dspyc/embed.h>
#include <dspyc/module.h>
#include <dspyc/retrieve.h>
#include <dspyc/tokens.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Threading: dspy_program_call() may run on many threads at once; loading state may not
 * run while a call is in flight. */
typedef struct dspy_program dspy_program;

/** A program of one module, named as DSPy names it: a bare Predict is the whole state file
 * ("self"), a ChainOfThought is "predict". Takes ownership of `m`; NULL on failure. */
DSPY_EXTERN dspy_program *dspy_program_single(dspy_module *m);
/** Read a program file (see docs/program-file.md). Errors name the file, line and key. */
DSPY_EXTERN dspy_status dspy_program_load(const char *path, dspy_program **out,
                                          struct dspy_error *err);
/** Build from a parsed program file; `origin` names it in errors (may be NULL). */
DSPY_EXTERN dspy_status dspy_program_from_json(const json_t *spec, const char *origin,
                                               dspy_program **out, struct dspy_error *err);
DSPY_EXTERN void dspy_program_free(dspy_program *p);
/** A deep copy of every predictor (signature, demos, instructions, config), for candidate
 * programs that change independently. NULL on allocation failure. */
DSPY_EXTERN dspy_program *dspy_program_copy(const dspy_program *src);

DSPY_EXTERN size_t dspy_program_count(const dspy_program *p);
/** Predictor i's state name, as in DSPy save files ("answer.predict"); borrowed. */
DSPY_EXTERN const char *dspy_program_state_name(const dspy_program *p, size_t i);
/** Module i; borrowed. */
DSPY_EXTERN dspy_module *dspy_program_module(dspy_program *p, size_t i);
/** The model the program file names in its "lm" section, or NULL; borrowed. */
DSPY_EXTERN const char *dspy_program_model(const dspy_program *p);
/** Input fields the program needs from the caller (JSON array of names, caller owns). */
DSPY_EXTERN json_t *dspy_program_inputs(const dspy_program *p);

/** Add a retrieve step, DSPy's Retrieve(k): before predictor `before` runs (0 .. count;
 * count = after the last), it reads the record's string field `query` and writes the k
 * best passages' texts, a JSON array best first, to the record's field `output`
 * ("passages" when NULL), which the outputs of the program include too. `name` may be NULL
 * ("retrieve"; names are unique among steps and predictors). The program keeps its own
 * reference to `r` (the caller may free its own); copies of the program share it. */
DSPY_EXTERN dspy_status dspy_program_add_retrieve(dspy_program *p, size_t before, const char *name,
                                                  dspy_retriever *r, const char *query,
                                                  const char *output, size_t k,
                                                  struct dspy_error *err);
/** Retrieve steps of the program (program files: entries with "module": "retrieve"). */
DSPY_EXTERN size_t dspy_program_retrieve_count(const dspy_program *p);

/** The context-window manager: before each predictor's call the prompt (its tokens counted
 * as dspy_program_set_context_tokenizer() says) must fit `context_tokens` minus
 * `completion_tokens`; over it, the passages of retrieve steps are dropped lowest-ranked
 * first, then the last demos, and a prompt that still does not fit fails the record with
 * DSPY_ELM_CONTEXT (it is never sent). What was dropped is reported in the outputs under
 * "context_dropped". 0 = no budget (the default). Not while calls are in flight. */
DSPY_EXTERN dspy_status dspy_program_set_context_budget(dspy_program *p, long context_tokens,
                                                        long completion_tokens,
                                                        struct dspy_error *err);

/** How the context budget counts a prompt's tokens: with `tokenizer` (the model's BPE
 * encoding, as OpenAI counts chat messages: dspy_tokenizer_count_messages()), else with
 * `embedder`'s WordPiece tokenizer (the same framing, 3 per message and 3 for the reply,
 * over word pieces), else (both NULL, the default) the estimate: 3 + per message 4 +
 * ceil(content bytes / 4). Borrowed until the program and its copies are freed. Not while
 * calls are in flight. */
DSPY_EXTERN void dspy_program_set_context_tokenizer(dspy_program *p,
                                                    const dspy_tokenizer *tokenizer,
                                                    const dspy_embedder *embedder);
/** What the context budget counts with: the encoding's name ("o200k_base"), "wordpiece" or
 * "estimate". Static or borrowed like the tokenizer. */
DSPY_EXTERN const char *dspy_program_context_counting(const dspy_program *p);

/** Prompt trimming to a target of `tokens` (0 = none; the default): over it, redundant
 * whitespace in the instructions and demos is collapsed first (runs of spaces and tabs to
 * one space, trailing spaces, runs of blank lines to one; never in the record's inputs),
 * then the last (lowest-value) demos are dropped, on a copy for that call. The inputs are
 * never trimmed, so a prompt may stay over the target (then sent as trimmed as it gets,
 * with "over_budget": true). Reported in the outputs under "context_dropped" with
 * "whitespace_tokens" saved. With a context budget too, the tighter of the two applies
 * and only the context budget drops passages or refuses a record. Tokens are counted as
 * the context budget counts them (dspy_program_set_context_tokenizer). Not while calls are
 * in flight. */
DSPY_EXTERN dspy_status dspy_program_set_prompt_budget(dspy_program *p, long tokens,
                                                       struct dspy_error *err);

/** Diverse demo selection: before each call of a predictor with more than `k` demos, keep
 * `k` of them (in their own order), picked by maximal marginal relevance over MiniLM
 * embeddings of their input fields: relevance is the cosine between the record's input
 * values and the demo's, and `lambda` (0 to 1) weighs it against the similarity to the
 * demos already picked (1 = the k most similar, lower = more diverse). The demos are
 * embedded here (so set demos and state first); each record's inputs per call. The kept
 * indices (0-based) are reported in the outputs under "demos_selected". `embedder` is
 * borrowed until the program is freed or this is called again; k 0 turns it off. Not
 * copied by dspy_program_copy. Errors: the embedder's (DSPY_EUTF8 naming the demo). */
typedef struct dspy_embedder dspy_embedder;
DSPY_EXTERN dspy_status dspy_program_set_demo_select(dspy_program *p, size_t k, double lambda,
                                                     dspy_embedder *embedder,
                                                     struct dspy_error *err);

/** The estimate's token count of a chat message list (a JSON array of {role, content}):
 * 3 + per message 4 + ceil(content bytes / 4), what budgets count with when no tokenizer
 * is set (dspy_program_set_context_tokenizer). */
DSPY_EXTERN long dspy_prompt_tokens(const json_t *messages);

/** Apply a DSPy save file: instructions, field prefixes and descriptions, demos. Errors
 * name the predictor and key; the program is unchanged on failure. */
DSPY_EXTERN dspy_status dspy_program_load_state(dspy_program *p, const char *path,
                                                struct dspy_error *err);
DSPY_EXTERN dspy_status dspy_program_apply_state(dspy_program *p, const json_t *state,
                                                 struct dspy_error *err);
/** The state object DSPy's save() would write (caller owns), and a file of it. */
DSPY_EXTERN json_t *dspy_program_dump_state(const dspy_program *p);
DSPY_EXTERN dspy_status dspy_program_save_state(const dspy_program *p, const char *path,
                                                struct dspy_error *err);

/** Run every predictor in order. Each sees the caller's inputs and the outputs of the
 * predictors before it; *outputs gets the outputs of all predictors (caller owns).
 * `cfg` and `info` may be NULL; `info` sums over the predictors. */
DSPY_EXTERN dspy_status dspy_program_call(dspy_program *p, dspy_lm *lm, const json_t *inputs,
                                          const struct dspy_call_config *cfg, json_t **outputs,
                                          struct dspy_call_info *info, struct dspy_error *err);

/* ---- batch execution ------------------------------------------------------------------ */

/** One record of a batch. A source fills it; the sink gets it back, with its result, in
 * input order. */
struct dspy_batch_item {
    json_t *inputs;          /* object of input fields; the batch takes ownership. NULL = the
                              * record fails with `error` without running (a bad input line) */
    void *tag;               /* the caller's, handed back untouched */
    struct dspy_error error; /* the failure when inputs is NULL */
    unsigned lm;             /* the LM that runs it: 0 = the batch's, i = opts->lms[i - 1]
                              * (a model selector's choice) */
};

/** What one record came to. `outputs` belongs to the batch until the sink returns; a sink
 * that keeps it sets the field to NULL (takes ownership). */
struct dspy_batch_result {
    dspy_status status;      /* DSPY_OK, the record's error, or DSPY_ECANCELED when it
                                  * never ran or was cut off (cancel, max_errors) */
    json_t *outputs;         /* as dspy_program_call's; NULL on failure */
    struct dspy_error error; /* on failure */
    struct dspy_call_info info;
    uint64_t latency_ns; /* from start to end of the program call; 0 if not run */
};

struct dspy_batch_progress {
    size_t done;   /* records delivered to the sink, in order */
    size_t total;  /* dspy_batch_options.total (0 = unknown) */
    size_t errors; /* of done, failed */
    uint64_t elapsed_ns;
};

/** Pull one record: return 1 with `item` filled, 0 at the end of the input, -1 to stop the
 * batch (a read error: the batch returns DSPY_EIO). Called one at a time: on the batch's
 * worker threads, or on the calling thread when the calls run on the event loop. */
typedef int (*dspy_batch_source_fn)(void *userdata, struct dspy_batch_item *item);
/** Receive record `index` (0-based, in input order) with its result: called once per record
 * pulled, one at a time: on whichever worker completed the head of the window, or on the
 * calling thread when the calls run on the event loop. Return
 * non-zero to stop the batch (a write error: the batch returns DSPY_EIO). Must not call
 * back into the batch. */
typedef int (*dspy_batch_sink_fn)(void *userdata, size_t index, struct dspy_batch_item *item,
                                  struct dspy_batch_result *result);
/** After each record delivered, one at a time on the sink's thread; non-zero cancels the
 * batch: records in flight end with DSPY_ECANCELED, no more are pulled. */
typedef int (*dspy_batch_progress_fn)(void *userdata, const struct dspy_batch_progress *p);

struct dspy_batch_options {
    unsigned concurrency; /* records in flight at once; 0 = 16. A program of one predictor
                            * over an LM without a cache or transport hook runs its calls
                            * on the LM's event loop, fed from the calling thread, with no
                            * thread per record; other programs run on a pool of that many
                            * worker threads, at most DSPY_BATCH_MAX_WORKERS */
    size_t max_errors;    /* DSPy's max_errors: once this many records have failed, cancel
                            * the rest (DSPY_ECANCELED); 0 = never stop */
    size_t total;         /* records expected, for progress only; 0 = unknown */
    const struct dspy_call_config *cfg; /* per call, may be NULL; borrowed */
    dspy_batch_progress_fn progress;    /* may be NULL */
    void *progress_userdata;
    /* Stop switch, may be NULL: once *cancel is non-zero the batch is cancelled as by the
     * progress callback (calls in flight end with DSPY_ECANCELED, no more records are
     * pulled, those pulled are still delivered), seen within about 20 ms even while every
     * call hangs. Meant for a signal handler (it is only read here); another thread should
     * not write it (a data race): cancel from the progress callback instead. Borrowed for
     * the call. */
    volatile sig_atomic_t *cancel;
    /* Over a cache with a level below L1 (Redis, disk), the pool reads records ahead and
     * looks their first LM calls up together (dspy_cache_get_many: one pipelined MGET for
     * the L1 misses); only the misses run upstream. A read ahead waits for up to 512
     * records (or the end of input) from `source`, so a source that may block, such as a
     * pipe read as lines arrive, wants true: each record looks itself up alone, as a single
     * call would (also for comparison). */
    bool lookup_each;
    /* More LMs a record may name (dspy_batch_item.lm), e.g. other models of the endpoint;
     * borrowed for the call. At most DSPY_BATCH_MAX_LMS. */
    dspy_lm *const *lms;
    size_t nlms;
};
#define DSPY_BATCH_MAX_LMS 16
#define DSPY_BATCH_OPTIONS_INIT \
    {                           \
        .concurrency = 16       \
    }
#define DSPY_BATCH_MAX_WORKERS 4096

/** Totals of a batch. Retries and rate-limit waits are the LM handle's counters over the
 * batch's span (other users of the same handle at the same time count too). */
struct dspy_batch_stats {
    size_t records, ok, failed, cancelled; /* cancelled: of failed, never ran or cut off */
    uint64_t lm_calls, retries, ratelimit_waits, rejected_busy;
    uint64_t wall_ns;
    size_t threads; /* worker threads the batch ran on; 0 when its calls went straight onto
                     * the LM's event loop */
};

/** Run the program over every record a source yields, at most `concurrency` at a time, and
 * hand each result to the sink in input order. At most 4 x concurrency records are pulled
 * and not yet delivered at any time, so memory stays flat however long the input. Each
 * record's failure is its own; the batch goes on (see max_errors). Returns DSPY_OK when
 * every record pulled was delivered (whatever their status), DSPY_ECANCELED when the
 * progress callback or max_errors stopped it (the records pulled are still delivered,
 * marked DSPY_ECANCELED), DSPY_EIO when the source or sink asked to stop, DSPY_ENOMEM (also
 * when no worker thread could start: nothing ran). `stats` may be NULL. Call from any
 * thread but not from inside a callback of this batch. */
DSPY_EXTERN dspy_status dspy_program_batch_stream(dspy_program *p, dspy_lm *lm,
                                                  const struct dspy_batch_options *opts,
                                                  dspy_batch_source_fn source,
                                                  dspy_batch_sink_fn sink, void *userdata,
                                                  struct dspy_batch_stats *stats,
                                                  struct dspy_error *err);

/** The same over an array: `inputs` (a JSON array of objects; borrowed) in, `results` (n =
 * json_array_size(inputs) entries, caller-allocated) out in the same order: each holds a
 * prediction (caller owns; release with dspy_batch_results_release) or a structured error.
 * A record that is not an object fails alone with DSPY_EINVAL. */
DSPY_EXTERN dspy_status dspy_program_batch(dspy_program *p, dspy_lm *lm, const json_t *inputs,
                                           const struct dspy_batch_options *opts,
                                           struct dspy_batch_result *results,
                                           struct dspy_batch_stats *stats, struct dspy_error *err);
/** Free the outputs of `n` results (and zero them). */
DSPY_EXTERN void dspy_batch_results_release(struct dspy_batch_result *results, size_t n);

#ifdef __cplusplus
}
#endif
#endif

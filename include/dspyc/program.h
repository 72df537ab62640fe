/* Programs: named predictors run in order over a record, declared in a JSON program file
 * or built in code, with DSPy's saved-program state (program.save("x.json")) read and
 * written per predictor name. */
#ifndef DSPYC_PROGRAM_H
#define DSPYC_PROGRAM_H

#include <jansson.h>

#include <dspyc/common.h>
#include <dspyc/module.h>

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

DSPY_EXTERN size_t dspy_program_count(const dspy_program *p);
/** Predictor i's state name, as in DSPy save files ("answer.predict"); borrowed. */
DSPY_EXTERN const char *dspy_program_state_name(const dspy_program *p, size_t i);
/** Module i; borrowed. */
DSPY_EXTERN dspy_module *dspy_program_module(dspy_program *p, size_t i);
/** The model the program file names in its "lm" section, or NULL; borrowed. */
DSPY_EXTERN const char *dspy_program_model(const dspy_program *p);
/** Input fields the program needs from the caller (JSON array of names, caller owns). */
DSPY_EXTERN json_t *dspy_program_inputs(const dspy_program *p);

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

#ifdef __cplusplus
}
#endif
#endif

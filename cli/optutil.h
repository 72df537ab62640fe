/* Helpers shared by `dspyc eval` and `dspyc optimize` (apps layer): the program from a file
 * or --signature, example files with their line numbers, metrics from flags. */
#ifndef DSPYC_CLI_OPTUTIL_H
#define DSPYC_CLI_OPTUTIL_H

#include <stdbool.h>

#include <dspyc/dspyc.h>
#include <dspyc/optimize.h>

struct examples {
    const char *path;
    json_t *items; /* array of objects */
    long *lines;   /* file line of each item */
    size_t cap;    /* room in lines */
};

/* Read a JSON-lines file of examples; false after printing "file:line: why". An empty
 * file is an error naming it when `nonempty`. */
bool examples_load(struct examples *ex, const char *path, bool nonempty);
void examples_release(struct examples *ex);
/* Print a library error about example `err->line` (1-based index) of `ex` as file:line. */
void examples_print_error(const char *cmd, const struct examples *ex, const struct dspy_error *err);

/* The program: a program file, or one module over --signature. NULL after printing why. */
dspy_program *opt_program(const char *cmd, const char *path, const char *signature, int module,
                          const char *state_path);
/* A metric from --metric (exact_match:F, f1:F, contains:F, judge:PROGRAM.json) on `lm`
 * (for the judge). *judge gets the judge program to free after the metric. */
dspy_metric *opt_metric(const char *cmd, const char *spec, dspy_lm *lm, dspy_program **judge);

/* A Python metric MODULE:FUNCTION through the embedded interpreter (DSPy's
 * metric(example, pred, trace) or GEPA's 5-argument form; a float, bool, or an object with
 * .score and .feedback). The function is imported now; NULL after printing why. */
dspy_metric *opt_metric_python(const char *cmd, const char *target);
/* Stop the interpreter (after the metric is freed). */
void opt_metric_python_done(void);

#endif

/* Small helpers shared by the dspyc subcommands (apps layer): flag values, JSON lines
 * input, error records. */
#ifndef DSPYC_CLI_UTIL_H
#define DSPYC_CLI_UTIL_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include <dspyc/dspyc.h>

/* Parse a number flag; print "dspyc: --flag: ..." and return -1 when it is not one or is
 * outside [lo, hi]. */
int parse_double_flag(const char *flag, const char *arg, double lo, double hi, double *out);
int parse_long_flag(const char *flag, const char *arg, long lo, long hi, long *out);
/* A byte count: digits with an optional K, M, G or T (binary multiples), in [lo, hi]. */
int parse_size_flag(const char *flag, const char *arg, double lo, double hi, uint64_t *out);

/* A JSON-lines reader that never holds more than `max` bytes of one line: a longer line is
 * consumed to its end and reported as too long. It reads the descriptor under `f` itself
 * (read(2), its own buffer): nothing else may read `f`. */
struct line_reader {
    FILE *f;
    char *buf;
    size_t cap;
    size_t max;
    long lineno;      /* number of the line last read, 1-based */
    char in[1 << 16]; /* bytes read and not yet consumed: in[in_pos, in_len) */
    size_t in_pos, in_len;
    bool eof;
    /* When set: while no input is ready (a pipe), look at *stop every 50 ms and end the
     * input once it is non-zero, so a signal handler's flag stops a read that would block. */
    volatile sig_atomic_t *stop;
};
void line_reader_init(struct line_reader *r, FILE *f, size_t max);
void line_reader_release(struct line_reader *r);
/* 1 with *line (borrowed until the next call) and *len, 0 at end of input (or on *stop),
 * -1 on a read error. *too_long is set when the line exceeded the maximum (then *line is
 * its start). A '\r' before the '\n' is dropped. */
int line_reader_next(struct line_reader *r, const char **line, size_t *len, bool *too_long);

/* One line of a JSON-lines input as read_jsonl hands it over: the object (borrowed for the
 * call; json_incref to keep it), or NULL with what is wrong in *err: DSPY_ETOOBIG (over the
 * maximum), DSPY_EPARSE (not JSON, or not `expect`: a value other than an object) or
 * DSPY_EINVAL (a blank line, when blank lines are not skipped), with the line number and,
 * for JSON, the column. A non-zero return stops the reading. */
typedef int (*jsonl_fn)(void *ud, long index, long lineno, json_t *obj, struct dspy_error *err);
/* Read the JSON lines of `path` ('-' is stdin), no line over `max_line` bytes held, and hand
 * each to `fn` in order; `index` counts the lines handed over, from 0. Lines of spaces and
 * tabs are skipped when `skip_blank`, else handed over as errors. -1 after printing "dspyc
 * CMD: cannot open PATH: why" or "dspyc CMD: reading PATH: why" ("dspyc: ..." when CMD is
 * ""); else what `fn` last returned (0 at the end of the input). */
int read_jsonl(const char *cmd, const char *path, size_t max_line, bool skip_blank,
               const char *expect, jsonl_fn fn, void *ud);

/* The JSON form of an error, {"class", "message", and where: field, line, column, offset,
 * http_status when known}. Caller owns. */
json_t *error_to_json(const struct dspy_error *err);
/* Print `err` to stderr as one "dspyc: ..." line. */
void print_error(const char *what, const struct dspy_error *err);

/* Read a JSON-lines file of objects into an array (caller owns); NULL after printing why
 * (a line that is not an object, an empty or blank line included, names its number). */
json_t *load_jsonl_objects(const char *path);
/* "name=value": the value is that JSON value when it parses as JSON, else a string. */
int parse_assignment(const char *arg, json_t *into);

/* The price table of `--prices FILE` (NULL: the defaults only); NULL after printing
 * "dspyc CMD: --prices: why". */
dspy_price_table *prices_open(const char *cmd, const char *path);
/* The summary's cost lines from a tally's JSON (dspy_cost_tally_json): "estimated cost: $X
 * (...)", one part per model with its price, what the cache hits saved, and the models
 * without a price. */
void print_cost_summary(FILE *out, const json_t *cost);
/* The help text of --prices, shared by every command that takes it. */
#define PRICES_USAGE                                                                            \
    "  --prices FILE         USD per 1k prompt / completion tokens by model (JSON, {\"m\":\n"   \
    "                        {\"input_per_1k\": N, \"output_per_1k\": N}}) over the defaults\n" \
    "                        for common models, for the cost estimate (cache hits cost\n"       \
    "                        nothing; what they saved is shown)\n"

#endif

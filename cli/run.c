/* `dspyc run`: run a program over a JSON-lines file, one output line per input line
 * (apps layer), up to --concurrency records at once through the batch executor. Input is
 * streamed and output written in input order through a bounded window, in whole lines, so
 * memory stays flat however long the file is; SIGINT/SIGTERM stop it cleanly and --resume
 * finishes an interrupted file. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <dspyc/embed.h>
#include <dspyc/metrics.h>

#include "cli.h"
#include "endpoint.h"
#include "optutil.h"
#include "selector.h"
#include "util.h"

/* In two parts: one string literal may be at most 4095 bytes in ISO C. */
static const char run_intro[] =
    "usage: dspyc run (PROGRAM.json | --signature SIG [--module M] [--adapter A])\n"
    "                 --input IN.jsonl --output OUT.jsonl [options]\n\n"
    "Run a program over every line of IN.jsonl (one JSON object of input fields per line).\n"
    "Every input line yields exactly one output line, in order:\n"
    "  {\"line\": N, \"ok\": true, \"prediction\": {...}}\n"
    "  {\"line\": N, \"ok\": false, \"error\": {\"class\": ..., \"message\": ..., ...}}\n"
    "A bad line never stops the run; an empty or blank line gets an error record too.\n"
    "Exit status: 0 when every record succeeded, 1 when any failed, 2 when the run could\n"
    "not start, 130 / 143 when SIGINT / SIGTERM stopped it. A summary goes to stderr.\n\n"
    "SIGINT or SIGTERM stops the run promptly: the calls in flight are cancelled, every\n"
    "record that had finished is written (whole lines only; the cut-off ones are not\n"
    "written) and the summary is printed; --resume then finishes the file. A second\n"
    "signal exits at once (say, while output waits on a full pipe). Output is written in\n"
    "whole lines, so even after SIGKILL the file ends with whole records (or one half\n"
    "line, which --resume drops).\n\n";
static const char run_usage[] =
    "options:\n"
    "  --signature SIG       run one module with this signature instead of a program file\n"
    "  --module predict|cot  module for --signature (default predict)\n"
    "  --adapter chat|json   prompt format (default chat)\n"
    "  --instructions TEXT   instructions for --signature\n"
    "  --demos FILE.jsonl    demos for --signature\n"
    "  --state DSPY.json     apply a DSPy save file (program.save(...)) before running\n"
    "  --save-state OUT.json write the program's state as a DSPy save file and continue\n"
    "  --input FILE          input JSON lines ('-' for stdin)\n"
    "  --output FILE         output JSON lines ('-' for stdout)\n"
    "  --resume              continue an earlier run's --output file: keep its whole\n"
    "                        lines, drop a trailing half line, run only the input lines\n"
    "                        that have no record yet (by their \"line\" number) and\n"
    "                        append theirs (records then follow input order within\n"
    "                        each run, not across runs). Records already there are\n"
    "                        kept, failed ones too, and count in the exit status\n"
    "  --max-line-bytes N    longest accepted input line (default 16 MiB)\n"
    "  --context-budget N    fit every prompt into N tokens of context minus --max-tokens\n"
    "                        (the completion's): retrieved passages are dropped lowest-\n"
    "                        ranked first, then the last demos; a record whose prompt still\n"
    "                        does not fit fails (never sent); what was dropped is reported\n"
    "                        in the prediction's \"context_dropped\"\n"
    "  --context-tokens HOW  how the budget counts tokens: auto (default: the model's BPE\n"
    "                        encoding when its name is known, gpt-4o -> o200k_base, gpt-4\n"
    "                        -> cl100k_base, else the estimate), cl100k_base, o200k_base,\n"
    "                        wordpiece (the embedder's tokenizer, --embed-model) or\n"
    "                        estimate (3 + per message 4 + bytes / 4, "
    "docs/retrieve.md)\n" PRICES_USAGE
    "  --score FIELD[:em|f1] score each prediction's FIELD against the input's FIELD (the\n"
    "                        label rides in the input record, as in a DSPy Example) with\n"
    "                        DSPy's exact match (em, default) or token F1; adds \"score\"\n"
    "                        to each output line and the average to the summary\n"
    "  --concurrency N       records in flight at once (default 16, at most 4096);\n"
    "                        output stays in input order. Each needs a connection:\n"
    "                        the open-files limit is raised to its hard limit at start\n"
    "                        and, if still too low, connections are capped to fit it\n"
    "                        (with a warning)\n"
    "  --max-errors N        stop after N failed records (DSPy's max_errors); records\n"
    "                        already read are still written, as cancelled (default: never)\n"
    "  -q, --quiet           no summary, no progress bar (the bar is shown only when\n"
    "                        stderr is a terminal)\n"
    "  -h, --help            this text\n\n";

/* The usage text, the model selector's part and the endpoint's. */
static void run_print_usage(FILE *out)
{
    fputs(run_intro, out);
    fputs(run_usage, out);
    fputs("prompt trimming (docs/cost.md):\n"
          "  --prompt-budget N     trim each prompt toward N tokens: collapse redundant\n"
          "                        whitespace in instructions and demos, then drop the last\n"
          "                        (lowest-value) demos; inputs are never trimmed. What was\n"
          "                        trimmed is in the prediction's \"context_dropped\"\n"
          "  --demo-select mmr:K[:LAMBDA]  keep K of each predictor's demos per record, by\n"
          "                        maximal marginal relevance over MiniLM embeddings\n"
          "                        (relevance to the record's inputs against similarity to\n"
          "                        those picked; LAMBDA default 0.5, 1 = most similar); the\n"
          "                        model folder is --embed-model's; kept indices are in the\n"
          "                        prediction's \"demos_selected\"\n\n",
          out);
    fputs(SELECT_USAGE "  --metric METRIC       what measured: scores with, as for dspyc eval\n"
                       "                        (exact_match:FIELD, f1:FIELD, ...)\n\n",
          out);
    endpoint_print_usage(out, "");
}

enum {
    OPT_SIGNATURE = 1,
    OPT_MODULE,
    OPT_ADAPTER,
    OPT_INSTRUCTIONS,
    OPT_DEMOS,
    OPT_STATE,
    OPT_SAVE_STATE,
    OPT_INPUT,
    OPT_OUTPUT,
    OPT_MAX_LINE,
    OPT_SCORE,
    OPT_CONCURRENCY,
    OPT_MAX_ERRORS,
    OPT_RESUME,
    OPT_PRICES,
    OPT_CONTEXT_BUDGET,
    OPT_CONTEXT_TOKENS,
    OPT_METRIC,
    OPT_PROMPT_BUDGET,
    OPT_DEMO_SELECT,
};

struct run_args {
    const char *program_path, *signature, *instructions, *demos_path;
    const char *state_path, *save_state_path, *input_path, *output_path;
    int module, adapter;
    long max_line;
    long concurrency, max_errors;
    bool quiet, resume;
    char score_field[128]; /* --score: the labelled field, "" for none */
    bool score_f1;
    long context_budget;          /* --context-budget, 0 = none */
    const char *context_tokens;   /* --context-tokens */
    const char *context_counting; /* what the budget counted with, for the summary */
    long prompt_budget;           /* --prompt-budget, 0 = none */
    long demo_k;                  /* --demo-select mmr:K[:LAMBDA], 0 = none */
    double demo_lambda;
    const char *prices_path; /* --prices */
    dspy_price_table *prices;
    const char *model;       /* the endpoint's, for the cost */
    const char *metric_spec; /* --metric, for --select measured: */
    struct selector_args sa; /* --models, --select, --quality-bar */
    struct selection sel;    /* the model selector, when --models */
};

struct run_totals {
    long records, ok, failed, lm_calls, cache_hits;
    double score_sum; /* over every record with a label, failures scoring 0 */
    long scored;
    struct dspy_lm_usage usage, cached_usage;
    dspy_hist *latency;
    dspy_cost_tally *cost; /* usage and cost by model */
};

static dspy_program *build_program(const struct run_args *a)
{
    struct dspy_error err;
    dspy_program *p = NULL;
    dspy_error_clear(&err);
    if (a->program_path) {
        if (dspy_program_load(a->program_path, &p, &err)) {
            print_error("program", &err);
            return NULL;
        }
    } else {
        dspy_signature *sig = NULL;
        json_t *demos = NULL;
        dspy_module *m = NULL;
        if (dspy_signature_parse(a->signature, a->instructions, &sig, &err)) {
            print_error("signature", &err);
            return NULL;
        }
        if (a->demos_path && !(demos = load_jsonl_objects(a->demos_path)))
            goto out;
        m = dspy_module_new((enum dspy_module_kind)a->module, sig,
                            (enum dspy_adapter_kind)a->adapter);
        if (!m || (demos && dspy_module_set_demos(m, demos)) || !(p = dspy_program_single(m))) {
            fprintf(stderr, "dspyc run: out of memory\n");
            if (!p)
                dspy_module_free(m);
        }
    out:
        json_decref(demos);
        dspy_signature_free(sig);
        if (!p)
            return NULL;
    }
    if (a->state_path && dspy_program_load_state(p, a->state_path, &err)) {
        print_error("state", &err);
        dspy_program_free(p);
        return NULL;
    }
    if (a->save_state_path && dspy_program_save_state(p, a->save_state_path, &err)) {
        print_error("save state", &err);
        dspy_program_free(p);
        return NULL;
    }
    return p;
}

/* One input line in, one output record out. */
/* Score the prediction against the label the input carries (failures score 0, as DSPy's
 * Evaluate gives failure_score); records without the label are not scored. */
static void score_record(const struct run_args *a, const json_t *inputs, const json_t *outputs,
                         json_t *rec, struct run_totals *t)
{
    const json_t *gold = json_object_get(inputs, a->score_field);
    if (!a->score_field[0] || !gold)
        return;
    const json_t *pred = outputs ? json_object_get(outputs, a->score_field) : NULL;
    double score = !pred         ? 0.0
                   : a->score_f1 ? dspy_metric_f1(pred, gold)
                                 : dspy_metric_exact_match(pred, gold);
    json_object_set_new(rec, "score", json_real(score));
    t->score_sum += score;
    t->scored++;
}

/* One record's output line; `model` (the selector's choice) or NULL. */
static json_t *record_json(long lineno, struct dspy_batch_result *r, const char *model)
{
    json_t *rec;
    if (!r->status) {
        rec = json_pack("{s:I, s:b, s:o}", "line", (json_int_t)lineno, "ok", 1, "prediction",
                        r->outputs);
        r->outputs = NULL; /* taken by the record */
    } else {
        rec = json_pack("{s:I, s:b, s:o}", "line", (json_int_t)lineno, "ok", 0, "error",
                        error_to_json(&r->error));
    }
    if (!rec || (model && json_object_set_new(rec, "model", json_string(model))))
        abort();
    return rec;
}

static void add_totals(struct run_totals *t, const char *model, const struct dspy_batch_result *r)
{
    const struct dspy_call_info *info = &r->info;
    if (info->lm_calls && dspy_cost_tally_add(t->cost, model, info->lm_calls, info->cache_hits,
                                              &info->usage, &info->cached_usage))
        abort(); /* the CLI may abort on OOM (STYLE 16) */
    t->records++;
    if (r->status)
        t->failed++;
    else
        t->ok++;
    if (r->latency_ns)
        dspy_hist_record(t->latency, r->latency_ns);
    t->lm_calls += info->lm_calls;
    t->usage.prompt_tokens += info->usage.prompt_tokens;
    t->usage.completion_tokens += info->usage.completion_tokens;
    t->usage.total_tokens += info->usage.total_tokens;
    t->cache_hits += info->cache_hits;
    t->cached_usage.prompt_tokens += info->cached_usage.prompt_tokens;
    t->cached_usage.completion_tokens += info->cached_usage.completion_tokens;
}

/* The cache section: what the LM calls found where, and what the levels did. */
static void print_cache_summary(const struct run_totals *t, const struct cache_config *cc)
{
    struct dspy_cache_stats st;
    char names[32];
    dspy_cache_stats(cc->cache, &st);
    fprintf(stderr,
            "cache (%s): %ld of %ld LM calls answered from the cache (%.1f%%), %ld sent "
            "upstream\n",
            cache_levels_name(cc->levels, names, sizeof(names)), t->cache_hits, t->lm_calls,
            t->lm_calls ? 100.0 * (double)t->cache_hits / (double)t->lm_calls : 0.0,
            t->lm_calls - t->cache_hits);
    fprintf(stderr,
            "  lookups %llu, hits %llu, misses %llu; upstream fills %llu (%llu failed), "
            "waited on another call %llu, on another process %llu\n",
            (unsigned long long)st.gets, (unsigned long long)st.hits, (unsigned long long)st.misses,
            (unsigned long long)st.fills, (unsigned long long)st.fill_errors,
            (unsigned long long)st.coalesced, (unsigned long long)st.lease_waits);
    cache_print_levels(stderr, &st, cc->levels, "  ");
}

/* How --context-budget counts: -1 after printing why when the tokenizer cannot be opened. */
static int context_tokens(struct run_args *a, dspy_program *p, const char *model,
                          const char *embed_dir, dspy_tokenizer **tok, dspy_embedder **wp)
{
    const char *how = a->context_tokens ? a->context_tokens : "auto";
    struct dspy_error err;
    if (!strcmp(how, "wordpiece")) {
        struct dspy_embedder_options o = DSPY_EMBEDDER_OPTIONS_INIT;
        o.model_dir = embed_dir;
        if (dspy_embedder_new(&o, wp, &err)) {
            fprintf(stderr, "dspyc run: --context-tokens wordpiece: %s\n", err.message);
            return -1;
        }
    } else if (strcmp(how, "estimate")) {
        const char *enc = strcmp(how, "auto") ? how : dspy_tokenizer_encoding_for_model(model);
        if (enc && dspy_tokenizer_open(enc, NULL, tok, &err)) {
            fprintf(stderr, "dspyc run: --context-tokens %s: %s\n", enc, err.message);
            return -1;
        }
    }
    dspy_program_set_context_tokenizer(p, *tok, *wp);
    a->context_counting = dspy_program_context_counting(p);
    return 0;
}

static void print_summary(const struct run_args *a, const struct run_totals *t,
                          const struct cache_config *cc, double secs)
{
    fprintf(stderr, "dspyc run: %ld records, %ld ok, %ld failed in %.2f s (%.1f records/s)\n",
            t->records, t->ok, t->failed, secs, secs > 0 ? (double)t->records / secs : 0.0);
    if (dspy_hist_count(t->latency)) {
        const dspy_hist *h = t->latency;
        fprintf(stderr,
                "latency per record: mean %.2f ms  p50 %.2f ms  p95 %.2f ms  p99 %.2f ms  "
                "max %.2f ms\n",
                dspy_hist_mean(h) / 1e6, (double)dspy_hist_percentile(h, 50) / 1e6,
                (double)dspy_hist_percentile(h, 95) / 1e6,
                (double)dspy_hist_percentile(h, 99) / 1e6, (double)dspy_hist_max(h) / 1e6);
    }
    fprintf(stderr, "LM calls: %ld  tokens: %ld prompt, %ld completion", t->lm_calls,
            t->usage.prompt_tokens, t->usage.completion_tokens);
    if (t->cache_hits)
        fprintf(stderr, " (of which from the cache: %ld prompt, %ld completion)",
                t->cached_usage.prompt_tokens, t->cached_usage.completion_tokens);
    fputc('\n', stderr);
    json_t *cost = dspy_cost_tally_json(t->cost);
    print_cost_summary(stderr, cost);
    json_decref(cost);
    selection_print(&a->sel, stderr);
    if (a->context_budget)
        fprintf(stderr, "context budget: %ld tokens, counted with %s\n", a->context_budget,
                a->context_counting);
    if (t->scored)
        fprintf(stderr, "score (%s on `%s`): %.2f / %ld (%.1f %%)\n",
                a->score_f1 ? "token F1" : "exact match", a->score_field, t->score_sum, t->scored,
                100.0 * t->score_sum / (double)t->scored);
    if (cc->cache)
        print_cache_summary(t, cc);
}

/* ---- output in whole lines -------------------------------------------------------------- */

/* Records are buffered here and written with write(2) only in whole lines, so a kill at
 * any moment leaves whole records (at worst a half line from a short write, which --resume
 * drops), and a second signal may _exit without any stdio buffer half flushed. */
#define OUT_FLUSH_BYTES ((size_t)4 << 10) /* as often as stdio wrote the file before */
#define OUT_FLUSH_NS 1000000000ull        /* also flush what waited this long */

struct out_lines {
    int fd;
    char *buf;
    size_t len, cap;
    uint64_t flushed_ns;
    int err; /* errno of the first failed write, 0 = none */
};

static int out_flush(struct out_lines *w)
{
    size_t off = 0;
    while (off < w->len && !w->err) {
        ssize_t n = write(w->fd, w->buf + off, w->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            w->err = n < 0 ? errno : EIO;
        else
            off += (size_t)n;
    }
    w->len = 0;
    w->flushed_ns = dspy_clock_ns();
    return w->err ? -1 : 0;
}

static int out_append(const char *p, size_t n, void *ud)
{
    struct out_lines *w = ud;
    if (w->len + n + 1 > w->cap) {
        size_t cap = w->cap ? w->cap : OUT_FLUSH_BYTES * 2;
        while (cap < w->len + n + 1)
            cap *= 2;
        char *b = realloc(w->buf, cap);
        if (!b)
            abort(); /* the CLI may abort on OOM (STYLE 16) */
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
    return 0;
}

static int out_record(struct out_lines *w, const json_t *rec)
{
    if (json_dump_callback(rec, out_append, w, JSON_COMPACT) || out_append("\n", 1, w))
        return -1;
    if (w->len >= OUT_FLUSH_BYTES || dspy_clock_ns() - w->flushed_ns >= OUT_FLUSH_NS)
        return out_flush(w);
    return w->err ? -1 : 0;
}

/* ---- resuming: which input lines already have a record ---------------------------------- */

struct done_lines {
    unsigned char *bits; /* bit N: input line N has a record */
    size_t cap;          /* bytes */
    long count, ok, failed;
};

static bool done_has(const struct done_lines *d, long line)
{
    size_t i = (size_t)line >> 3;
    return line >= 0 && i < d->cap && (d->bits[i] >> (line & 7) & 1);
}

static void done_add(struct done_lines *d, long line)
{
    size_t i = (size_t)line >> 3;
    if (i >= d->cap) {
        size_t cap = d->cap ? d->cap : 4096;
        while (cap <= i)
            cap *= 2;
        unsigned char *b = realloc(d->bits, cap);
        if (!b)
            abort();
        memset(b + d->cap, 0, cap - d->cap);
        d->bits = b;
        d->cap = cap;
    }
    d->bits[i] |= (unsigned char)(1u << (line & 7));
}

/* Open OUT for --resume: read its records, cut a trailing half line, and leave fd at the
 * end for appending. -1 after printing why; the file is then untouched. */
static int open_resume(const char *path, struct done_lines *d, bool quiet)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        fprintf(stderr, "dspyc run: --resume: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    int rfd = dup(fd);
    FILE *f = rfd >= 0 ? fdopen(rfd, "rb") : NULL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    off_t keep = 0;
    long k = 0;
    if (!f) {
        fprintf(stderr, "dspyc run: --resume: reading %s: %s\n", path, strerror(errno));
        if (rfd >= 0)
            close(rfd);
        close(fd);
        return -1;
    }
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] != '\n')
            break; /* a half line: the run was killed while writing it */
        k++;
        json_t *rec = json_loadb(line, (size_t)n, 0, NULL);
        json_t *no = json_object_get(rec, "line");
        if (!json_is_integer(no) || json_integer_value(no) < 1) {
            fprintf(stderr,
                    "dspyc run: --resume: %s, line %ld is not a record of 'dspyc run' "
                    "(no \"line\" number); not resuming into it\n",
                    path, k);
            json_decref(rec);
            free(line);
            fclose(f);
            close(fd);
            return -1;
        }
        if (!done_has(d, (long)json_integer_value(no))) {
            done_add(d, (long)json_integer_value(no));
            d->count++;
            if (json_is_true(json_object_get(rec, "ok")))
                d->ok++;
            else
                d->failed++;
        }
        json_decref(rec);
        keep += n;
    }
    bool read_failed = ferror(f);
    free(line);
    fclose(f);
    struct stat st;
    if (read_failed || fstat(fd, &st)) {
        fprintf(stderr, "dspyc run: --resume: reading %s: %s\n", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (st.st_size > keep) {
        if (ftruncate(fd, keep)) {
            fprintf(stderr,
                    "dspyc run: --resume: cannot cut the half line at the end of %s: "
                    "%s\n",
                    path, strerror(errno));
            close(fd);
            return -1;
        }
        if (!quiet)
            fprintf(stderr,
                    "dspyc run: --resume: dropped a half line (%lld bytes) at the end "
                    "of %s\n",
                    (long long)(st.st_size - keep), path);
    }
    if (lseek(fd, 0, SEEK_END) < 0) {
        fprintf(stderr, "dspyc run: --resume: %s: %s\n", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!quiet)
        fprintf(stderr, "dspyc run: --resume: %ld input lines already have a record in %s\n",
                d->count, path);
    return fd;
}

/* ---- signals ---------------------------------------------------------------------------- */

/* The first SIGINT or SIGTERM: the batch sees it through dspy_batch_options.cancel and
 * stops; a second one exits at once. Nothing else happens in the handler. */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
    if (stop_signal)
        _exit(128 + sig);
    stop_signal = sig;
}

/* ---- the batch: input lines in, output lines out in order ------------------------------ */

struct run_io {
    const struct run_args *a;
    struct line_reader r;
    struct out_lines out;
    struct done_lines done; /* --resume: lines already in the output */
    struct run_totals t;
    long cut_off; /* records cancelled by a signal: not written (--resume runs them) */
    bool write_failed;
    bool bar;        /* progress bar on stderr */
    uint64_t bar_ns; /* last drawn */
};

/* The next input line as a record; bad lines (empty ones too) become records that fail
 * alone. Lines that already have a record (--resume) are passed over. */
static int run_source(void *ud, struct dspy_batch_item *item)
{
    struct run_io *io = ud;
    const char *line;
    size_t len;
    bool too_long;
    int got;
    while ((got = line_reader_next(&io->r, &line, &len, &too_long)) == 1 &&
           done_has(&io->done, io->r.lineno))
        ;
    if (got != 1)
        return got < 0 ? -1 : 0;
    item->tag = (void *)(uintptr_t)io->r.lineno;
    struct dspy_error *err = &item->error;
    if (too_long) {
        err->code = DSPY_ETOOBIG;
        snprintf(err->message, sizeof(err->message), "input line is longer than %ld bytes",
                 io->a->max_line);
        return 1;
    }
    if (strspn(line, " \t\r") == len) {
        err->code = DSPY_EINVAL;
        snprintf(err->message, sizeof(err->message),
                 "empty line: every input line must be a JSON object of field values");
        return 1;
    }
    json_error_t je;
    json_t *inputs = json_loadb(line, len, JSON_ALLOW_NUL, &je);
    if (!inputs) {
        err->code = DSPY_EPARSE;
        err->column = je.column;
        err->offset = je.position;
        snprintf(err->message, sizeof(err->message), "input is not valid JSON: %s", je.text);
    } else if (!json_is_object(inputs)) {
        json_decref(inputs);
        err->code = DSPY_EINVAL;
        snprintf(err->message, sizeof(err->message), "input must be a JSON object of field values");
    } else {
        item->inputs = inputs;
        if (io->a->sel.sel)
            item->lm = selection_route((void *)&io->a->sel, inputs);
    }
    return 1;
}

static int run_sink(void *ud, size_t index, struct dspy_batch_item *item,
                    struct dspy_batch_result *r)
{
    struct run_io *io = ud;
    (void)index;
    if (stop_signal && r->status == DSPY_ECANCELED) {
        io->cut_off++; /* never finished: no record, so --resume runs it */
        return 0;
    }
    const char *model = selection_model(&io->a->sel, item->lm, io->a->model);
    add_totals(&io->t, model, r);
    json_t *rec = record_json((long)(uintptr_t)item->tag, r, io->a->sel.sel ? model : NULL);
    if (item->inputs)
        score_record(io->a, item->inputs, json_object_get(rec, "prediction"), rec, &io->t);
    int bad = out_record(&io->out, rec);
    json_decref(rec);
    if (bad)
        io->write_failed = true;
    return bad;
}

/* done/total, rate, ETA and errors on one terminal line, at most ten times a second. */
static int run_progress(void *ud, const struct dspy_batch_progress *p)
{
    struct run_io *io = ud;
    uint64_t now = dspy_clock_ns();
    bool last = p->total && p->done >= p->total;
    if (io->bar && (now - io->bar_ns >= 100000000ull || last)) {
        double secs = (double)p->elapsed_ns / 1e9;
        double rate = secs > 0 ? (double)p->done / secs : 0;
        io->bar_ns = now;
        if (p->total && p->done <= p->total) {
            double eta = rate > 0 ? (double)(p->total - p->done) / rate : 0;
            int width = 30, fill = (int)((double)width * (double)p->done / (double)p->total);
            fprintf(stderr, "\r[%.*s%*s] %zu/%zu  %.1f/s  ETA %.0fs  errors %zu ", fill,
                    "##############################", width - fill, "", p->done, p->total, rate,
                    eta, p->errors);
        } else {
            fprintf(stderr, "\r%zu done  %.1f/s  errors %zu ", p->done, rate, p->errors);
        }
    }
    return 0;
}

/* Lines in a regular file, for the progress bar's total (0 when not known). */
static size_t count_lines(const char *path)
{
    char buf[1 << 16];
    size_t n = 0, got;
    bool partial = false;
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : NULL;
    if (!f)
        return 0;
    while ((got = fread(buf, 1, sizeof(buf), f)) > 0) {
        for (const char *p = buf; (p = memchr(p, '\n', got - (size_t)(p - buf))); p++)
            n++;
        partial = buf[got - 1] != '\n';
    }
    fclose(f);
    return n + partial;
}

static void print_traffic(const struct dspy_batch_stats *st, long concurrency)
{
    fprintf(stderr,
            "LM traffic (concurrency %ld): %llu retries, %llu rate-limit waits, %llu refused "
            "as busy\n",
            concurrency, (unsigned long long)st->retries, (unsigned long long)st->ratelimit_waits,
            (unsigned long long)st->rejected_busy);
}

static int open_output(const struct run_args *a, struct run_io *io)
{
    if (!strcmp(a->output_path, "-")) {
        if (a->resume) {
            fprintf(stderr, "dspyc run: --resume needs an --output file, not stdout\n");
            return -1;
        }
        io->out.fd = 1;
        return 0;
    }
    if (a->resume)
        io->out.fd = open_resume(a->output_path, &io->done, a->quiet);
    else if ((io->out.fd = open(a->output_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)) <
             0)
        fprintf(stderr, "dspyc run: cannot create %s: %s\n", a->output_path, strerror(errno));
    return io->out.fd < 0 ? -1 : 0;
}

static int run_file(const struct run_args *a, dspy_program *p, dspy_lm *lm,
                    const struct cache_config *cc)
{
    struct run_io io = { .a = a };
    struct dspy_batch_options o = DSPY_BATCH_OPTIONS_INIT;
    struct dspy_batch_stats st;
    struct dspy_error err;
    struct sigaction sa, old_int, old_term;
    int rc = 2;
    FILE *in = strcmp(a->input_path, "-") ? fopen(a->input_path, "rb") : stdin;
    if (!in) {
        fprintf(stderr, "dspyc run: cannot open %s: %s\n", a->input_path, strerror(errno));
        return 2;
    }
    if (open_output(a, &io))
        goto close_in;
    if (!(io.t.latency = dspy_hist_new()) || !(io.t.cost = dspy_cost_tally_new(a->prices, NULL)))
        abort();
    line_reader_init(&io.r, in, (size_t)a->max_line);
    io.r.stop = &stop_signal; /* a signal also ends a read waiting on a pipe */
    io.out.flushed_ns = dspy_clock_ns();
    io.bar = !a->quiet && isatty(2);
    o.concurrency = (unsigned)a->concurrency;
    /* Records are read ahead for one cache lookup of many only from a file: from a pipe or
     * a terminal, a read ahead would hold the first records until more lines come. */
    struct stat in_st;
    o.lookup_each = fstat(fileno(in), &in_st) || !S_ISREG(in_st.st_mode);
    o.max_errors = (size_t)a->max_errors;
    o.total = io.bar ? count_lines(a->input_path) : 0;
    if (o.total)
        o.total = o.total > (size_t)io.done.count ? o.total - (size_t)io.done.count : 0;
    o.progress = run_progress;
    o.progress_userdata = &io;
    o.cancel = &stop_signal;
    o.lms = a->sel.lms;
    o.nlms = a->sel.n;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    dspy_error_clear(&err);
    dspy_status brc = dspy_program_batch_stream(p, lm, &o, run_source, run_sink, &io, &st, &err);
    int sig = stop_signal;
    if (io.bar)
        fputc('\n', stderr);
    if (out_flush(&io.out) || io.write_failed) {
        fprintf(stderr, "dspyc run: writing %s: %s\n", a->output_path,
                strerror(io.out.err ? io.out.err : EIO));
        goto release;
    }
    if (brc == DSPY_EIO) {
        fprintf(stderr, "dspyc run: reading %s: %s\n", a->input_path, strerror(errno));
        goto release;
    }
    if (brc && brc != DSPY_ECANCELED) {
        fprintf(stderr, "dspyc run: %s\n", err.message);
        goto release;
    }
    if (sig)
        fprintf(stderr,
                "dspyc run: stopped by %s: %ld records written, %ld cut off in flight "
                "(not written); run again with --resume to finish\n",
                sig == SIGINT ? "SIGINT" : "SIGTERM", io.t.records, io.cut_off);
    else if (brc == DSPY_ECANCELED)
        fprintf(stderr,
                "dspyc run: stopped (--max-errors reached) after %zu records; the rest "
                "were not run\n",
                st.records);
    if (!a->quiet) {
        double secs = (double)st.wall_ns / 1e9;
        if (a->resume && io.done.count)
            fprintf(stderr,
                    "dspyc run: resumed: %ld records were already in %s (%ld ok, %ld "
                    "failed)\n",
                    io.done.count, a->output_path, io.done.ok, io.done.failed);
        print_summary(a, &io.t, cc, secs);
        print_traffic(&st, a->concurrency);
    }
    rc = sig ? 128 + sig : io.t.failed || io.done.failed || brc ? 1 : 0;
release:
    line_reader_release(&io.r);
    dspy_hist_free(io.t.latency);
    dspy_cost_tally_free(io.t.cost);
    free(io.out.buf);
    free(io.done.bits);
    if (io.out.fd > 2 && close(io.out.fd) && rc != 2) {
        fprintf(stderr, "dspyc run: writing %s: %s\n", a->output_path, strerror(errno));
        rc = 2;
    }
    /* Restored only now: a signal while the summary is written still goes to the handler. */
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
close_in:
    if (in != stdin)
        fclose(in);
    return rc;
}

int cmd_run(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "signature", required_argument, NULL, OPT_SIGNATURE },
        { "module", required_argument, NULL, OPT_MODULE },
        { "adapter", required_argument, NULL, OPT_ADAPTER },
        { "instructions", required_argument, NULL, OPT_INSTRUCTIONS },
        { "demos", required_argument, NULL, OPT_DEMOS },
        { "state", required_argument, NULL, OPT_STATE },
        { "save-state", required_argument, NULL, OPT_SAVE_STATE },
        { "input", required_argument, NULL, OPT_INPUT },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "max-line-bytes", required_argument, NULL, OPT_MAX_LINE },
        { "score", required_argument, NULL, OPT_SCORE },
        { "prices", required_argument, NULL, OPT_PRICES },
        { "context-budget", required_argument, NULL, OPT_CONTEXT_BUDGET },
        { "context-tokens", required_argument, NULL, OPT_CONTEXT_TOKENS },
        { "metric", required_argument, NULL, OPT_METRIC },
        { "prompt-budget", required_argument, NULL, OPT_PROMPT_BUDGET },
        { "demo-select", required_argument, NULL, OPT_DEMO_SELECT },
        SELECT_LONG_OPTIONS,
        { "concurrency", required_argument, NULL, OPT_CONCURRENCY },
        { "max-errors", required_argument, NULL, OPT_MAX_ERRORS },
        { "resume", no_argument, NULL, OPT_RESUME },
        { "quiet", no_argument, NULL, 'q' },
        { "help", no_argument, NULL, 'h' },
        ENDPOINT_LONG_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    struct run_args a = { .module = DSPY_MODULE_PREDICT,
                          .adapter = DSPY_ADAPTER_CHAT,
                          .max_line = 16L << 20,
                          .concurrency = 16 };
    struct endpoint ep;
    int opt;
    endpoint_init(&ep);
    selector_args_init(&a.sa);
    ep.cache.default_levels = "mem,disk"; /* as DSPy: memory and disk by default */
    optind = 1;
    while ((opt = getopt_long(argc, argv, "hq", longopts, NULL)) != -1) {
        int sc = selector_option(&a.sa, "run", opt, optarg);
        if (sc < 0)
            return 2;
        if (sc)
            continue;
        int e = endpoint_option(&ep, opt, optarg);
        if (e < 0)
            return 2;
        if (e)
            continue;
        switch (opt) {
        case OPT_SIGNATURE: a.signature = optarg; break;
        case OPT_MODULE:
            if ((a.module = dspy_module_kind_from_name(optarg)) < 0) {
                fprintf(stderr, "dspyc run: --module: '%s' is not predict or cot\n", optarg);
                return 2;
            }
            break;
        case OPT_ADAPTER:
            if ((a.adapter = dspy_adapter_from_name(optarg)) < 0) {
                fprintf(stderr, "dspyc run: --adapter: '%s' is not chat or json\n", optarg);
                return 2;
            }
            break;
        case OPT_INSTRUCTIONS: a.instructions = optarg; break;
        case OPT_DEMOS: a.demos_path = optarg; break;
        case OPT_STATE: a.state_path = optarg; break;
        case OPT_SAVE_STATE: a.save_state_path = optarg; break;
        case OPT_INPUT: a.input_path = optarg; break;
        case OPT_OUTPUT: a.output_path = optarg; break;
        case OPT_MAX_LINE:
            if (parse_long_flag("--max-line-bytes", optarg, 1, 1L << 32, &a.max_line))
                return 2;
            break;
        case OPT_PRICES: a.prices_path = optarg; break;
        case OPT_METRIC: a.metric_spec = optarg; break;
        case OPT_DEMO_SELECT: {
            char *end = NULL;
            a.demo_lambda = 0.5;
            a.demo_k = strncmp(optarg, "mmr:", 4) ? 0 : strtol(optarg + 4, &end, 10);
            if (a.demo_k >= 1 && end && *end == ':' && end[1])
                a.demo_lambda = strtod(end + 1, &end);
            if (a.demo_k < 1 || a.demo_k > 1000 || !end || *end || !(a.demo_lambda >= 0) ||
                a.demo_lambda > 1) {
                fprintf(stderr,
                        "dspyc run: --demo-select: '%s' is not mmr:K or mmr:K:LAMBDA "
                        "(K from 1 to 1000, LAMBDA from 0 to 1)\n",
                        optarg);
                return 2;
            }
            break;
        }
        case OPT_PROMPT_BUDGET:
            if (parse_long_flag("--prompt-budget", optarg, 1, 100000000, &a.prompt_budget))
                return 2;
            break;
        case OPT_CONTEXT_BUDGET:
            if (parse_long_flag("--context-budget", optarg, 1, 100000000, &a.context_budget))
                return 2;
            break;
        case OPT_CONTEXT_TOKENS:
            if (strcmp(optarg, "auto") && strcmp(optarg, "estimate") &&
                strcmp(optarg, "cl100k_base") && strcmp(optarg, "o200k_base") &&
                strcmp(optarg, "wordpiece")) {
                fprintf(stderr,
                        "dspyc run: --context-tokens: expected auto, cl100k_base, "
                        "o200k_base, wordpiece or estimate, not '%s'\n",
                        optarg);
                return 2;
            }
            a.context_tokens = optarg;
            break;
        case OPT_SCORE: {
            const char *colon = strchr(optarg, ':');
            size_t n = colon ? (size_t)(colon - optarg) : strlen(optarg);
            if (!n || n >= sizeof(a.score_field) ||
                (colon && strcmp(colon, ":em") && strcmp(colon, ":f1"))) {
                fprintf(stderr, "dspyc run: --score: '%s' is not FIELD, FIELD:em or FIELD:f1\n",
                        optarg);
                return 2;
            }
            memcpy(a.score_field, optarg, n);
            a.score_field[n] = '\0';
            a.score_f1 = colon && !strcmp(colon, ":f1");
            break;
        }
        case OPT_CONCURRENCY:
            if (parse_long_flag("--concurrency", optarg, 1, DSPY_BATCH_MAX_WORKERS, &a.concurrency))
                return 2;
            break;
        case OPT_MAX_ERRORS:
            if (parse_long_flag("--max-errors", optarg, 1, 1L << 40, &a.max_errors))
                return 2;
            break;
        case OPT_RESUME: a.resume = true; break;
        case 'q': a.quiet = true; break;
        case 'h': run_print_usage(stdout); return 0;
        default: run_print_usage(stderr); return 2;
        }
    }
    if (optind < argc)
        a.program_path = argv[optind++];
    if (optind < argc || !a.input_path || !a.output_path || !a.program_path == !a.signature) {
        fprintf(stderr, "dspyc run: name a program file or --signature (one of them), "
                        "--input and --output\n\n");
        run_print_usage(stderr);
        return 2;
    }
    dspy_program *p = build_program(&a);
    if (!p)
        return 2;
    struct dspy_error perr;
    dspy_error_clear(&perr);
    if (!(a.prices = prices_open("run", a.prices_path))) {
        dspy_program_free(p);
        return 2;
    }
    if (a.prompt_budget && dspy_program_set_prompt_budget(p, a.prompt_budget, &perr)) {
        fprintf(stderr, "dspyc run: --prompt-budget: %s\n", perr.message);
        dspy_price_table_free(a.prices);
        dspy_program_free(p);
        return 2;
    }
    if (a.context_budget &&
        dspy_program_set_context_budget(p, a.context_budget, ep.max_tokens > 0 ? ep.max_tokens : 0,
                                        &perr)) {
        fprintf(stderr, "dspyc run: --context-budget: %s\n", perr.message);
        dspy_price_table_free(a.prices);
        dspy_program_free(p);
        return 2;
    }
    dspy_lm *lm = endpoint_open(&ep);
    a.model = ep.model;
    long soft, hard, room = lm ? endpoint_connection_room(&ep, &soft, &hard) : -1;
    if (room > 0 && a.concurrency > room) {
        /* Past the limit, sockets fail with EMFILE: run fewer at once instead. */
        char hard_text[32];
        snprintf(hard_text, sizeof(hard_text), hard < 0 ? "unlimited" : "%ld", hard);
        fprintf(stderr,
                "dspyc run: warning: the open-files limit is %ld (hard limit %s), room "
                "for %ld connections: --concurrency %ld lowered to %ld; raise the "
                "limit (ulimit -n) to run more at once\n",
                soft, hard_text, room, a.concurrency, room);
        a.concurrency = room;
    }
    dspy_metric *metric = NULL;
    dspy_program *judge = NULL;
    int rc = lm ? 0 : 2;
    dspy_embedder *embedder = NULL;
    dspy_tokenizer *tok = NULL;
    dspy_embedder *wp = NULL;
    if (!rc && (a.context_budget || a.prompt_budget) &&
        context_tokens(&a, p, ep.model, ep.cache.embed_model, &tok, &wp))
        rc = 2;
    if (!rc && a.demo_k) { /* after endpoint_open: --embed-model is resolved there */
        struct dspy_embedder_options eo = DSPY_EMBEDDER_OPTIONS_INIT;
        eo.model_dir = ep.cache.embed_model;
        if (dspy_embedder_new(&eo, &embedder, &perr) ||
            dspy_program_set_demo_select(p, (size_t)a.demo_k, a.demo_lambda, embedder, &perr)) {
            fprintf(stderr, "dspyc run: --demo-select: %s\n", perr.message);
            rc = 2;
        }
    }
    if (!rc && a.metric_spec && !(metric = opt_metric("run", a.metric_spec, lm, &judge)))
        rc = 2;
    if (!rc && selection_open(&a.sel, "run", &a.sa, &ep, a.prices, p, metric,
                              (unsigned)a.concurrency, a.quiet))
        rc = 2;
    if (!rc)
        rc = run_file(&a, p, lm, &ep.cache);
    selection_close(&a.sel);
    dspy_metric_free(metric);
    dspy_program_free(judge);
    endpoint_close(&ep, lm);
    dspy_tokenizer_free(tok);
    dspy_embedder_free(wp);
    dspy_price_table_free(a.prices);
    dspy_program_free(p);
    dspy_embedder_free(embedder);
    return rc;
}

/* `dspyc tokens` (apps layer): exact OpenAI BPE token counts (and ids) of texts given as
 * arguments or as JSON lines, one output line per text in input order, from the library's
 * tokenizer over the local rank files. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/tokens.h>

#include "cli.h"
#include "util.h"

static const char tokens_usage[] =
    "usage: dspyc tokens [options] TEXT...\n"
    "       dspyc tokens [options] --input FILE.jsonl\n\n"
    "Count the tokens of texts in one of OpenAI's BPE encodings, exactly as tiktoken counts\n"
    "them. One JSON line per text on stdout, in input order:\n"
    "  {\"index\": I, \"tokens\": N}                (with --ids: \"ids\": [...] too)\n"
    "  {\"index\": I, \"line\": N, \"error\": {\"class\": ..., \"message\": ..., ...}}\n"
    "A line {\"messages\": [...]} counts chat messages as OpenAI bills them: 3 per message,\n"
    "the tokens of each value, 1 per name, 3 priming the reply. A bad line or text never stops\n"
    "the rest. Exit status: 0 when every text was counted, 1 when any failed, 2 when nothing\n"
    "could start.\n\n"
    "options:\n"
    "  --encoding NAME        cl100k_base or o200k_base (default o200k_base)\n"
    "  --model M              the encoding model M uses (gpt-4o, gpt-4.1, gpt-5, o1, o3:\n"
    "                         o200k_base; gpt-4, gpt-3.5-turbo, text-embedding-3-*:\n"
    "                         cl100k_base); an unknown model is an error\n"
    "  --ids                  print the token ids as well\n"
    "  --special              read special tokens (<|endoftext|> ...) in the text as such;\n"
    "                         by default they are ordinary text, as in a user's message\n"
    "  --input FILE           JSON lines {\"text\": \"...\"} or {\"messages\": [...]} ('-' for\n"
    "                         stdin); blank lines are skipped, other fields ignored\n"
    "  --ranks DIR            folder of the rank files <encoding>.tiktoken. Default:\n"
    "                         $DSPYC_TIKTOKEN_DIR, else models/tiktoken next to this build's\n"
    "                         folder, where scripts/fetch-tiktoken.sh puts them\n"
    "  --max-line-bytes N     longest accepted input line (default 64 MiB)\n"
    "  -h, --help             this text\n\n";

enum { OPT_ENCODING = 1, OPT_MODEL, OPT_IDS, OPT_SPECIAL, OPT_INPUT, OPT_RANKS, OPT_MAX_LINE };

struct tokens_run {
    const dspy_tokenizer *t;
    bool ids;
    unsigned flags;
    long failed;
    char *out; /* one output line */
    size_t out_cap;
};

static void add(struct tokens_run *r, size_t *len, const char *s, size_t n)
{
    if (*len + n + 1 > r->out_cap) {
        while (*len + n + 1 > r->out_cap)
            r->out_cap = r->out_cap ? r->out_cap * 2 : 16384;
        r->out = realloc(r->out, r->out_cap);
        if (!r->out)
            abort(); /* the CLI may abort on OOM (STYLE 16) */
    }
    memcpy(r->out + *len, s, n);
    *len += n;
}

static void print_error_record(struct tokens_run *r, long index, long line,
                               const struct dspy_error *err)
{
    json_t *o = json_pack("{s:I}", "index", (json_int_t)index);
    if (line >= 0)
        json_object_set_new(o, "line", json_integer(line));
    json_object_set_new(o, "error", error_to_json(err));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    puts(s);
    free(s);
    json_decref(o);
    r->failed++;
}

/* `ids` NULL: the count alone (an empty text with --ids prints "ids": []). */
static void print_count(struct tokens_run *r, long index, size_t n, const uint32_t *ids)
{
    char num[64];
    size_t len = 0;
    add(r, &len, num,
        (size_t)snprintf(num, sizeof(num), "{\"index\":%ld,\"tokens\":%zu", index, n));
    if (r->ids && ids != NULL) {
        add(r, &len, ",\"ids\":[", 8);
        for (size_t k = 0; k < n; k++)
            add(r, &len, num, (size_t)snprintf(num, sizeof(num), "%s%u", k ? "," : "", ids[k]));
        add(r, &len, "]", 1);
    }
    add(r, &len, "}\n", 2);
    fwrite(r->out, 1, len, stdout);
}

static void count_text(struct tokens_run *r, long index, long line, const char *text, size_t len)
{
    struct dspy_error err;
    uint32_t *ids = NULL;
    size_t n;
    dspy_status rc = r->ids ? dspy_tokenizer_encode(r->t, text, len, r->flags, &ids, &n, &err)
                            : dspy_tokenizer_count(r->t, text, len, r->flags, &n, &err);
    if (rc) {
        snprintf(err.field, sizeof(err.field), "text");
        print_error_record(r, index, line, &err);
        return;
    }
    static const uint32_t none[1];
    print_count(r, index, n, r->ids ? (ids ? ids : none) : NULL);
    dspy_free(ids);
}

static void count_messages(struct tokens_run *r, long index, long line, const json_t *msgs)
{
    struct dspy_error err;
    long n;
    if (r->ids) {
        dspy_error_clear(&err);
        err.code = DSPY_EINVAL;
        snprintf(err.message, sizeof(err.message), "--ids takes texts, not messages");
        print_error_record(r, index, line, &err);
        return;
    }
    if (dspy_tokenizer_count_messages(r->t, msgs, &n, &err)) {
        print_error_record(r, index, line, &err);
        return;
    }
    print_count(r, index, (size_t)n, NULL);
}

static void line_error(struct tokens_run *r, long index, long line, dspy_status code, long column,
                       const char *field, const char *what)
{
    struct dspy_error err;
    dspy_error_clear(&err);
    err.code = code;
    err.line = line;
    err.column = column;
    snprintf(err.message, sizeof(err.message), "%s", what);
    if (field)
        snprintf(err.field, sizeof(err.field), "%s", field);
    print_error_record(r, index, line, &err);
}

static int on_line(void *ud, long i, long ln, json_t *v, struct dspy_error *err)
{
    struct tokens_run *r = ud;
    json_t *t = json_object_get(v, "text"), *m = json_object_get(v, "messages");
    if (!v)
        print_error_record(r, i, ln, err);
    else if (json_is_string(t))
        count_text(r, i, ln, json_string_value(t), json_string_length(t));
    else if (!t && m)
        count_messages(r, i, ln, m);
    else
        line_error(r, i, ln, DSPY_EINVAL, -1, "text",
                   t ? "\"text\" must be a string" : "no \"text\" or \"messages\" field");
    return 0;
}

static int read_input(struct tokens_run *r, const char *path, long max_line)
{
    return read_jsonl("tokens", path, (size_t)max_line, true, "a JSON object {\"text\": ...}",
                      on_line, r);
}

int cmd_tokens(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "encoding", required_argument, NULL, OPT_ENCODING },
        { "model", required_argument, NULL, OPT_MODEL },
        { "ids", no_argument, NULL, OPT_IDS },
        { "special", no_argument, NULL, OPT_SPECIAL },
        { "input", required_argument, NULL, OPT_INPUT },
        { "ranks", required_argument, NULL, OPT_RANKS },
        { "max-line-bytes", required_argument, NULL, OPT_MAX_LINE },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *encoding = NULL, *model = NULL, *input = NULL, *ranks = NULL;
    long max_line = 64L << 20;
    struct tokens_run r = { 0 };
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case OPT_ENCODING: encoding = optarg; break;
        case OPT_MODEL: model = optarg; break;
        case OPT_IDS: r.ids = true; break;
        case OPT_SPECIAL: r.flags |= DSPY_TOKENS_SPECIAL; break;
        case OPT_INPUT: input = optarg; break;
        case OPT_RANKS: ranks = optarg; break;
        case OPT_MAX_LINE:
            if (parse_long_flag("--max-line-bytes", optarg, 16, 1L << 30, &max_line))
                return 2;
            break;
        case 'h': fputs(tokens_usage, stdout); return 0;
        default: fputs(tokens_usage, stderr); return 2;
        }
    }
    if (!input == (optind >= argc)) {
        fprintf(stderr, "dspyc tokens: give texts as arguments or --input FILE, not %s\n",
                input ? "both" : "neither");
        return 2;
    }
    if (encoding && model) {
        fprintf(stderr, "dspyc tokens: give --encoding or --model, not both\n");
        return 2;
    }
    if (model && !(encoding = dspy_tokenizer_encoding_for_model(model))) {
        fprintf(stderr, "dspyc tokens: --model %s: no known encoding; pass --encoding\n", model);
        return 2;
    }
    dspy_tokenizer *t;
    struct dspy_error err;
    if (dspy_tokenizer_open(encoding ? encoding : "o200k_base", ranks, &t, &err)) {
        print_error("tokens", &err);
        return 2;
    }
    r.t = t;
    int rc = 0;
    if (input)
        rc = read_input(&r, input, max_line);
    else
        for (int i = optind; i < argc; i++)
            count_text(&r, i - optind, -1, argv[i], strlen(argv[i]));
    fflush(stdout);
    dspy_tokenizer_free(t);
    free(r.out);
    if (rc)
        return 2;
    return r.failed ? 1 : 0;
}

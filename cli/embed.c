/* `dspyc embed` (apps layer): all-MiniLM-L6-v2 sentence embeddings of texts given as
 * arguments or as JSON lines, one output line per text in input order, computed in this
 * process by the library's embedder (no server, no network). Input is read in batches, so
 * memory stays flat however long the file is. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dspyc/embed.h>

#include "cli.h"
#include "util.h"

static const char embed_usage[] =
    "usage: dspyc embed [options] TEXT...\n"
    "       dspyc embed [options] --input FILE.jsonl\n\n"
    "Embed texts with all-MiniLM-L6-v2 (the sentence-transformers model), run in this process:\n"
    "384 dimensions, unit length, cosine >= 0.9999 to sentence-transformers' own vectors.\n"
    "Texts longer than 256 word pieces are cut, as sentence-transformers cuts them.\n"
    "One JSON line per text on stdout, in input order:\n"
    "  {\"index\": I, \"embedding\": [...]}\n"
    "  {\"index\": I, \"line\": N, \"error\": {\"class\": ..., \"message\": ..., ...}}\n"
    "(\"line\" with --input only). A bad line or text never stops the rest. Exit status: 0\n"
    "when every text was embedded, 1 when any failed, 2 when nothing could start.\n\n"
    "options:\n"
    "  --input FILE           JSON lines {\"text\": \"...\"} ('-' for stdin); blank lines are\n"
    "                         skipped, other fields ignored\n"
    "  --model DIR            model folder with model.safetensors and vocab.txt (also\n"
    "                         --embed-model). Default: $DSPYC_EMBED_MODEL, else\n"
    "                         models/all-MiniLM-L6-v2 next to this build's folder, where\n"
    "                         scripts/fetch-model.sh puts it\n"
    "  --batch N              texts per forward pass (default 32)\n"
    "  --threads N            worker threads per batch (default 1; 0 = one per CPU)\n"
    "  --tokens               print the model's token ids (\"ids\": [...]) instead\n"
    "  --max-line-bytes N     longest accepted input line (default 16 MiB)\n"
    "  -h, --help             this text\n\n";

enum { OPT_INPUT = 1, OPT_MODEL, OPT_BATCH, OPT_THREADS, OPT_TOKENS, OPT_MAX_LINE };

/* One input record of the current batch: a text to embed, or an error already known. */
struct record {
    long index, line; /* line -1 for argument texts */
    char *text;       /* owned; NULL for an error record */
    size_t len;
    struct dspy_error err;
};

struct embed_run {
    dspy_embedder *e;
    bool tokens;
    size_t batch;
    struct record *recs;
    size_t n;
    long failed;
    char *out; /* one output line */
    size_t out_cap;
};

static void add(struct embed_run *r, size_t *len, const char *s, size_t n)
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

static void print_error_record(struct embed_run *r, const struct record *rec)
{
    json_t *o = json_pack("{s:I}", "index", (json_int_t)rec->index);
    if (rec->line >= 0)
        json_object_set_new(o, "line", json_integer(rec->line));
    json_object_set_new(o, "error", error_to_json(&rec->err));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    puts(s);
    free(s);
    json_decref(o);
    r->failed++;
}

static void print_vector(struct embed_run *r, long index, const float *v)
{
    char head[64], json[DSPY_EMBEDDING_JSON_MAX];
    size_t len = 0;
    add(r, &len, head,
        (size_t)snprintf(head, sizeof(head), "{\"index\":%ld,\"embedding\":", index));
    add(r, &len, json, dspy_embedding_json(v, DSPY_EMBED_DIM, json, sizeof(json)));
    add(r, &len, "}\n", 2);
    fwrite(r->out, 1, len, stdout);
}

static void print_ids(struct embed_run *r, struct record *rec)
{
    int32_t ids[DSPY_EMBED_MAX_TOKENS * 2];
    size_t n, len = 0;
    char num[32];
    if (dspy_embedder_tokenize(r->e, rec->text, rec->len, ids, sizeof(ids) / sizeof(ids[0]), &n,
                               &rec->err)) {
        print_error_record(r, rec);
        return;
    }
    add(r, &len, num, (size_t)snprintf(num, sizeof(num), "{\"index\":%ld,\"ids\":[", rec->index));
    for (size_t k = 0; k < n; k++)
        add(r, &len, num, (size_t)snprintf(num, sizeof(num), "%s%d", k ? "," : "", ids[k]));
    add(r, &len, "]}\n", 3);
    fwrite(r->out, 1, len, stdout);
}

/* Embed and print the pending records in order; a text the embedder refuses (invalid
 * UTF-8) becomes an error record and the others are embedded again without it. */
static void flush(struct embed_run *r)
{
    const char **texts = malloc(r->n * sizeof(*texts) + 1);
    size_t *lens = malloc(r->n * sizeof(*lens) + 1);
    size_t *which = malloc(r->n * sizeof(*which) + 1);
    float *vecs = malloc(r->n * DSPY_EMBED_DIM * sizeof(float) + 1);
    if (!texts || !lens || !which || !vecs)
        abort();
    if (r->tokens) {
        for (size_t i = 0; i < r->n; i++)
            r->recs[i].text ? print_ids(r, &r->recs[i]) : print_error_record(r, &r->recs[i]);
        goto out;
    }
    for (;;) {
        size_t k = 0;
        for (size_t i = 0; i < r->n; i++)
            if (r->recs[i].text) {
                texts[k] = r->recs[i].text;
                lens[k] = r->recs[i].len;
                which[k++] = i;
            }
        struct dspy_error err;
        dspy_status rc = k ? dspy_embedder_embed(r->e, texts, lens, k, vecs, &err) : DSPY_OK;
        if (!rc) {
            for (size_t i = 0, j = 0; i < r->n; i++) {
                if (!r->recs[i].text) {
                    print_error_record(r, &r->recs[i]);
                } else {
                    print_vector(r, r->recs[i].index, vecs + j * DSPY_EMBED_DIM);
                    j++;
                }
            }
            break;
        }
        size_t bad;
        if (rc != DSPY_EUTF8 || sscanf(err.field, "text[%zu]", &bad) != 1 || bad >= k) {
            print_error("embed", &err);
            exit(2);
        }
        struct record *rec = &r->recs[which[bad]];
        rec->err = err;
        snprintf(rec->err.field, sizeof(rec->err.field), "text");
        snprintf(rec->err.message, sizeof(rec->err.message), "invalid UTF-8 at byte %ld",
                 err.offset);
        free(rec->text);
        rec->text = NULL;
    }
out:
    fflush(stdout);
    for (size_t i = 0; i < r->n; i++)
        free(r->recs[i].text);
    r->n = 0;
    free(texts);
    free(lens);
    free(which);
    free(vecs);
}

static struct record *next_record(struct embed_run *r, long index, long line)
{
    if (r->n == r->batch)
        flush(r);
    struct record *rec = &r->recs[r->n++];
    memset(rec, 0, sizeof(*rec));
    dspy_error_clear(&rec->err);
    rec->index = index;
    rec->line = line;
    return rec;
}

static void line_error(struct record *rec, dspy_status code, long column, const char *what)
{
    rec->err.code = code;
    rec->err.line = rec->line;
    rec->err.column = column;
    snprintf(rec->err.message, sizeof(rec->err.message), "%s", what);
}

static int on_line(void *ud, long index, long lineno, json_t *v, struct dspy_error *err)
{
    struct record *rec = next_record(ud, index, lineno);
    json_t *t = json_object_get(v, "text");
    if (!v) {
        rec->err = *err;
    } else if (!json_is_string(t)) {
        line_error(rec, DSPY_EINVAL, -1, t ? "\"text\" must be a string" : "no \"text\" field");
        snprintf(rec->err.field, sizeof(rec->err.field), "text");
    } else {
        rec->len = json_string_length(t);
        rec->text = malloc(rec->len + 1);
        if (!rec->text)
            abort();
        memcpy(rec->text, json_string_value(t), rec->len + 1);
    }
    return 0;
}

static int read_input(struct embed_run *r, const char *path, long max_line)
{
    return read_jsonl("embed", path, (size_t)max_line, true, "a JSON object {\"text\": ...}",
                      on_line, r);
}

int cmd_embed(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "input", required_argument, NULL, OPT_INPUT },
        { "model", required_argument, NULL, OPT_MODEL },
        { "embed-model", required_argument, NULL, OPT_MODEL },
        { "batch", required_argument, NULL, OPT_BATCH },
        { "threads", required_argument, NULL, OPT_THREADS },
        { "tokens", no_argument, NULL, OPT_TOKENS },
        { "max-line-bytes", required_argument, NULL, OPT_MAX_LINE },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct dspy_embedder_options o = DSPY_EMBEDDER_OPTIONS_INIT;
    const char *input = NULL;
    long batch = 32, threads = 1, max_line = 16L << 20;
    bool tokens = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case OPT_INPUT: input = optarg; break;
        case OPT_MODEL: o.model_dir = optarg; break;
        case OPT_BATCH:
            if (parse_long_flag("--batch", optarg, 1, 4096, &batch))
                return 2;
            break;
        case OPT_THREADS:
            if (parse_long_flag("--threads", optarg, 0, 256, &threads))
                return 2;
            break;
        case OPT_TOKENS: tokens = true; break;
        case OPT_MAX_LINE:
            if (parse_long_flag("--max-line-bytes", optarg, 16, 1L << 30, &max_line))
                return 2;
            break;
        case 'h': fputs(embed_usage, stdout); return 0;
        default: fputs(embed_usage, stderr); return 2;
        }
    }
    if (!input == (optind >= argc)) {
        fprintf(stderr, "dspyc embed: give texts as arguments or --input FILE, not %s\n",
                input ? "both" : "neither");
        return 2;
    }
    o.threads = (unsigned)threads;
    struct embed_run r = { 0 };
    struct dspy_error err;
    if (dspy_embedder_new(&o, &r.e, &err)) {
        print_error("embed", &err);
        return 2;
    }
    r.tokens = tokens;
    r.batch = (size_t)batch;
    r.recs = calloc(r.batch, sizeof(*r.recs));
    if (!r.recs)
        abort();
    int rc = 0;
    if (input) {
        rc = read_input(&r, input, max_line);
    } else {
        for (int i = optind; i < argc; i++) {
            struct record *rec = next_record(&r, i - optind, -1);
            rec->len = strlen(argv[i]);
            rec->text = strdup(argv[i]);
            if (!rec->text)
                abort();
        }
    }
    flush(&r);
    dspy_embedder_free(r.e);
    free(r.recs);
    free(r.out);
    if (rc)
        return 2;
    return r.failed ? 1 : 0;
}

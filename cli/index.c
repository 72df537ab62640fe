/* `dspyc index`: build a BM25 index of a JSON-lines corpus (and its dense vectors), and
 * search one (apps layer). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "util.h"

static const char index_usage[] =
    "usage: dspyc index build CORPUS.jsonl --out DIR [--dense minilm [--embed-model DIR]]\n"
    "       dspyc index search INDEX [-k N] [--corpus] (QUERY... | --queries FILE)\n\n"
    "build   index a corpus of passages, one JSON object per line: \"id\" (string or\n"
    "        integer, unique), \"text\" (string), optional \"title\" (string); other keys\n"
    "        are ignored. Writes DIR/bm25.idx, memory-mapped when a program opens it.\n"
    "        A passage's tokens are its title's, then its text's: ASCII letters\n"
    "        lower-cased, split on anything but letters, digits and non-ASCII bytes\n"
    "        (docs/retrieve.md). A bad line stops the build with its file, line and\n"
    "        field. With --dense minilm, also embeds every passage with the in-process\n"
    "        all-MiniLM-L6-v2 encoder into DIR/dense.vec (float32 rows, checked against\n"
    "        bm25.idx when mapped), for retrieve steps with \"mode\": \"dense\" or\n"
    "        \"hybrid\".\n"
    "search  the k best passages for QUERY (the words joined by spaces), or for each\n"
    "        line of --queries FILE (each result line then has \"query\": its line\n"
    "        number, 1-based), BM25Okapi scores as rank_bm25 computes them, best\n"
    "        first: one JSON object per line, {\"rank\", \"id\", \"pid\", \"score\",\n"
    "        \"text\"} (text: \"title | text\" when the passage has a title, as DSPy's\n"
    "        long_text). Only passages sharing a token with the query are returned\n\n"
    "options:\n"
    "  --out DIR     (build) the index directory, created when missing\n"
    "  --dense minilm  (build) also write DIR/dense.vec (the only encoder: minilm)\n"
    "  --embed-model DIR  (build) the MiniLM model folder; default $DSPYC_EMBED_MODEL,\n"
    "                else models/all-MiniLM-L6-v2 next to this build's folder\n"
    "  -k N          (search) passages to return, 1..1000 (default 3, DSPy's Retrieve)\n"
    "  --corpus      (search) INDEX is a corpus file: index it in memory first\n"
    "  --queries F   (search) one query per line of F\n"
    "  -h, --help    this text\n\n";

static int index_build(int argc, char **argv)
{
    const char *out = NULL, *corpus = NULL, *dense = NULL, *model = NULL;
    static const struct option longopts[] = { { "out", required_argument, NULL, 'o' },
                                              { "dense", required_argument, NULL, 'd' },
                                              { "embed-model", required_argument, NULL, 'm' },
                                              { "help", no_argument, NULL, 'h' },
                                              { NULL, 0, NULL, 0 } };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
        if (c == 'o')
            out = optarg;
        else if (c == 'd')
            dense = optarg;
        else if (c == 'm')
            model = optarg;
        else if (c == 'h') {
            fputs(index_usage, stdout);
            return 0;
        } else {
            fputs(index_usage, stderr);
            return 2;
        }
    }
    if (optind + 1 != argc || !out) {
        fprintf(stderr, "dspyc index build: needs one CORPUS.jsonl and --out DIR\n");
        return 2;
    }
    if (dense && strcmp(dense, "minilm")) {
        fprintf(stderr, "dspyc index build: --dense must be minilm (the in-process encoder)\n");
        return 2;
    }
    if (model && !dense) {
        fprintf(stderr, "dspyc index build: --embed-model goes with --dense minilm\n");
        return 2;
    }
    corpus = argv[optind];
    struct dspy_index_build_stats st;
    struct dspy_error err;
    dspy_error_clear(&err);
    uint64_t t0 = dspy_clock_ns();
    if (dspy_index_build(corpus, out, &st, &err)) {
        print_error("index build", &err);
        return 1;
    }
    fprintf(stderr,
            "dspyc: indexed %llu passages (%llu tokens, %llu terms, %llu postings) into "
            "%s/bm25.idx, %llu bytes, in %.3f s\n",
            (unsigned long long)st.docs, (unsigned long long)st.tokens,
            (unsigned long long)st.terms, (unsigned long long)st.postings, out,
            (unsigned long long)st.bytes, (double)(dspy_clock_ns() - t0) / 1e9);
    if (dense) {
        uint64_t rows = 0;
        t0 = dspy_clock_ns();
        if (dspy_index_build_dense(out, model, &rows, &err)) {
            print_error("index build --dense", &err);
            return 1;
        }
        fprintf(stderr,
                "dspyc: embedded %llu passages (minilm, 384 float32) into %s/dense.vec in "
                "%.3f s\n",
                (unsigned long long)rows, out, (double)(dspy_clock_ns() - t0) / 1e9);
    }
    return 0;
}

/* One query's passages as JSON lines; `lineno` > 0 adds "query". */
static int search_one(dspy_retriever *r, const char *query, size_t k, long lineno)
{
    struct dspy_passage *p;
    size_t n;
    struct dspy_error err;
    dspy_error_clear(&err);
    if (dspy_retriever_search(r, query, k, &p, &n, &err)) {
        print_error("index search", &err);
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *line = json_pack("{s:I, s:s, s:I, s:f, s:s}", "rank", (json_int_t)i + 1, "id",
                                 p[i].id, "pid", (json_int_t)p[i].pid, "score", p[i].score, "text",
                                 p[i].text);
        if (line && lineno > 0)
            json_object_set_new(line, "query", json_integer(lineno));
        char *s = line ? json_dumps(line, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
        if (!s)
            abort();
        puts(s);
        free(s);
        json_decref(line);
    }
    dspy_passages_free(p, n);
    return 0;
}

static int index_search(int argc, char **argv)
{
    const char *queries = NULL;
    long k = 3;
    bool corpus = false;
    static const struct option longopts[] = { { "corpus", no_argument, NULL, 'c' },
                                              { "queries", required_argument, NULL, 'q' },
                                              { "help", no_argument, NULL, 'h' },
                                              { NULL, 0, NULL, 0 } };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "k:h", longopts, NULL)) != -1) {
        if (c == 'k') {
            if (parse_long_flag("-k", optarg, 1, DSPY_RETRIEVE_MAX_K, &k))
                return 2;
        } else if (c == 'c')
            corpus = true;
        else if (c == 'q')
            queries = optarg;
        else if (c == 'h') {
            fputs(index_usage, stdout);
            return 0;
        } else {
            fputs(index_usage, stderr);
            return 2;
        }
    }
    if (optind + (queries ? 1 : 2) > argc || (queries && optind + 1 != argc)) {
        fprintf(stderr, "dspyc index search: needs INDEX and QUERY\n");
        return 2;
    }
    const char *where = argv[optind++];
    struct dspy_error err;
    dspy_error_clear(&err);
    dspy_retriever *r = NULL;
    dspy_status rc = corpus ? dspy_retriever_bm25_from_corpus(where, &r, &err)
                            : dspy_retriever_open_bm25(where, &r, &err);
    if (rc) {
        print_error("index search", &err);
        return 1;
    }
    int status = 0;
    if (queries) {
        FILE *f = fopen(queries, "r");
        if (!f) {
            fprintf(stderr, "dspyc index search: %s: cannot open\n", queries);
            dspy_retriever_free(r);
            return 1;
        }
        char *line = NULL;
        size_t cap = 0;
        ssize_t got;
        long lineno = 0;
        while (!status && (got = getline(&line, &cap, f)) >= 0) {
            lineno++;
            while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
                line[--got] = '\0';
            status = search_one(r, line, (size_t)k, lineno);
        }
        free(line);
        fclose(f);
    } else {
        size_t qlen = 0;
        for (int i = optind; i < argc; i++)
            qlen += strlen(argv[i]) + 1;
        char *query = calloc(1, qlen + 1);
        if (!query)
            abort();
        for (int i = optind; i < argc; i++) {
            if (i > optind)
                strcat(query, " ");
            strcat(query, argv[i]);
        }
        status = search_one(r, query, (size_t)k, 0);
        free(query);
    }
    dspy_retriever_free(r);
    return status;
}

int cmd_index(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(index_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "build"))
        return index_build(argc - 1, argv + 1);
    if (!strcmp(argv[1], "search"))
        return index_search(argc - 1, argv + 1);
    fprintf(stderr, "dspyc index: '%s' is not a subcommand (build, search)\n", argv[1]);
    return 2;
}

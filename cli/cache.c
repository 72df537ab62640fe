/* `dspyc cache`: look at and manage the persistent cache levels (disk, Redis) that run,
 * predict and bench use, configured by the same flags, environment and config file
 * (apps layer): stats, clear, export, import. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_config.h"
#include "cli.h"
#include "util.h"

static const char cache_usage[] =
    "usage: dspyc cache stats [--json] [--check] [options]\n"
    "       dspyc cache clear [--level L] [options]\n"
    "       dspyc cache export FILE [--level L] [options]\n"
    "       dspyc cache import FILE [options]\n\n"
    "Look at and manage the persistent cache levels (disk, Redis) that 'dspyc run' and\n"
    "'dspyc predict' read and fill. The memory level lives inside each process and is not\n"
    "reached from here.\n\n"
    "  stats        entries and bytes per level, Redis reachability; --json for one object;\n"
    "               --check also reads every disk entry and counts those that are\n"
    "               unreadable (corrupt or truncated) or expired\n"
    "  clear        remove every entry (of --level, default every open level; Redis: only\n"
    "               keys under dspyc's prefix)\n"
    "  export FILE  write one level's live entries as JSON lines ('-' for stdout):\n"
    "               {\"key\": \"<32 hex>\", \"ttl_s\": N, \"text\": \"...\"} (or \"b64\")\n"
    "               --level disk (default when open) or redis\n"
    "  import FILE  read such lines back into the open levels ('-' for stdin)\n\n"
    "options:\n"
    "  --level L    mem, redis or disk\n"
    "  --json       stats as JSON\n"
    "  --check      see stats\n"
    "  -h, --help   this text\n\n" CACHE_HELP
    "\nWithout --cache, the levels are the default ones minus memory: the disk store.\n";

enum { OPT_LEVEL = 1, OPT_JSON, OPT_CHECK };

struct cache_args {
    const char *verb, *file;
    unsigned level; /* --level bit, 0 = not given */
    bool json, check;
};

/* Count the disk entries that read back cleanly, by exporting them to nowhere. */
static int check_disk(dspy_cache *c, size_t *readable)
{
    struct dspy_error err;
    FILE *null = fopen("/dev/null", "w");
    dspy_error_clear(&err);
    if (!null) {
        fprintf(stderr, "dspyc cache: cannot open /dev/null: %s\n", strerror(errno));
        return -1;
    }
    dspy_status rc = dspy_cache_export(c, DSPY_CACHE_L3, null, readable, &err);
    fclose(null);
    if (rc) {
        fprintf(stderr, "dspyc cache: reading the disk cache: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int cmd_stats(const struct cache_args *a, struct cache_config *cc)
{
    struct dspy_cache_stats st;
    char url[512], names[32], bytes[32];
    size_t readable = 0;
    bool checked = a->check && (cc->levels & DSPY_CACHE_L3);
    if (checked && check_disk(cc->cache, &readable))
        return 1;
    dspy_cache_stats(cc->cache, &st);
    dspy_url_redact(cc->redis_url, url, sizeof(url));
    if (a->json) {
        json_t *o = dspy_cache_stats_json(cc->cache);
        json_t *conf = json_pack("{s:s, s:s?, s:s?, s:s?}", "levels",
                                 cache_levels_name(cc->levels, names, sizeof(names)), "dir",
                                 (cc->levels & DSPY_CACHE_L3) ? cc->dir : NULL, "redis_url",
                                 (cc->levels & DSPY_CACHE_L2) ? url : NULL, "namespace", cc->ns);
        if (!o || !conf || json_object_set_new(o, "config", conf))
            abort();
        if (checked) {
            json_t *l3 = json_object_get(o, "l3");
            uint64_t unreadable = st.level[2].entries > readable ? st.level[2].entries - readable
                                                                 : 0;
            json_object_set_new(l3, "readable", json_integer((json_int_t)readable));
            json_object_set_new(l3, "unreadable", json_integer((json_int_t)unreadable));
        }
        char *s = json_dumps(o, JSON_INDENT(2));
        if (!s)
            abort();
        puts(s);
        free(s);
        json_decref(o);
        return 0;
    }
    printf("%-6s %10s %12s  %s\n", "level", "entries", "bytes", "where");
    if (cc->levels & DSPY_CACHE_L3)
        printf("%-6s %10llu %12s  %s\n", "disk", (unsigned long long)st.level[2].entries,
               cache_fmt_bytes(st.level[2].bytes, bytes, sizeof(bytes)), cc->dir);
    if (cc->levels & DSPY_CACHE_L2)
        printf("%-6s %10s %12s  %s (%s)\n", "redis", "-", "-", url, st.redis_up ? "up" : "down");
    if (cc->levels & DSPY_CACHE_SEMANTIC)
        cache_print_semantic(stdout, &st, "");
    if (cc->ns)
        printf("namespace: %s\n", cc->ns);
    if (checked)
        printf("check: %zu disk entries read back cleanly, %llu unreadable (corrupt or "
               "truncated) or expired\n",
               readable,
               (unsigned long long)(st.level[2].entries > readable ? st.level[2].entries - readable
                                                                   : 0));
    for (int i = 1; i < 3; i++)
        if (st.level[i].last_error[0])
            printf("%s: %s\n", i == 1 ? "redis" : "disk", st.level[i].last_error);
    return 0;
}

/* `stats` when the disk store is damaged and nothing else is open: say so, and how to
 * repair it (the warning said it too); exit 0, as a look at the cache succeeded. */
static int stats_damaged(const struct cache_args *a, const struct cache_config *cc)
{
    if (a->json) {
        json_t *o = json_pack("{s:{s:s, s:s}, s:{s:b, s:s, s:s}}", "config", "levels", "off", "dir",
                              cc->dir, "l3", "damaged", 1, "error", cc->disk_damage, "repair",
                              "dspyc cache clear --level disk");
        char *text = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
        if (!text)
            abort();
        puts(text);
        free(text);
        json_decref(o);
        return 0;
    }
    printf("%-6s %10s %12s  %s\n", "level", "entries", "bytes", "where");
    printf("%-6s %10s %12s  %s\n", "disk", "damaged", "-", cc->dir);
    printf("disk: %s; repair with `dspyc cache clear --level disk`\n", cc->disk_damage);
    return 0;
}

static int cmd_clear(const struct cache_args *a, struct cache_config *cc)
{
    struct dspy_error err;
    struct dspy_cache_stats before;
    char names[32];
    unsigned levels = a->level ? a->level : cc->levels;
    dspy_error_clear(&err);
    dspy_cache_stats(cc->cache, &before);
    if (dspy_cache_clear(cc->cache, levels, &err)) {
        fprintf(stderr, "dspyc cache clear: %s\n", err.message);
        return 1;
    }
    printf("cleared %s", cache_levels_name(levels & cc->levels, names, sizeof(names)));
    if (levels & DSPY_CACHE_L3)
        printf(" (%llu disk entries)", (unsigned long long)before.level[2].entries);
    printf("\n");
    return 0;
}

static int cmd_export(const struct cache_args *a, struct cache_config *cc)
{
    struct dspy_error err;
    size_t n = 0;
    unsigned level = a->level                       ? a->level
                     : (cc->levels & DSPY_CACHE_L3) ? DSPY_CACHE_L3
                                                    : DSPY_CACHE_L2;
    FILE *out = strcmp(a->file, "-") ? fopen(a->file, "w") : stdout;
    dspy_error_clear(&err);
    if (!out) {
        fprintf(stderr, "dspyc cache export: cannot create %s: %s\n", a->file, strerror(errno));
        return 1;
    }
    dspy_status rc = dspy_cache_export(cc->cache, level, out, &n, &err);
    if ((out != stdout && fclose(out)) || (out == stdout && fflush(out))) {
        fprintf(stderr, "dspyc cache export: writing %s: %s\n", a->file, strerror(errno));
        return 1;
    }
    if (rc) {
        fprintf(stderr, "dspyc cache export: %s\n", err.message);
        return 1;
    }
    fprintf(stderr, "dspyc cache export: %zu entries\n", n);
    return 0;
}

static int cmd_import(const struct cache_args *a, struct cache_config *cc)
{
    struct dspy_error err;
    struct dspy_cache_ctl ctl = DSPY_CACHE_CTL_INIT;
    size_t n = 0;
    FILE *in = strcmp(a->file, "-") ? fopen(a->file, "r") : stdin;
    dspy_error_clear(&err);
    if (!in) {
        fprintf(stderr, "dspyc cache import: cannot open %s: %s\n", a->file, strerror(errno));
        return 1;
    }
    ctl.levels = a->level ? a->level : cc->levels;
    ctl.ttl_s = cc->ttl_s;
    dspy_status rc = dspy_cache_import(cc->cache, in, &ctl, &n, &err);
    if (in != stdin)
        fclose(in);
    if (rc) {
        fprintf(stderr, "dspyc cache import: %s (%zu entries stored before it)\n", err.message, n);
        return 1;
    }
    fprintf(stderr, "dspyc cache import: %zu entries\n", n);
    return 0;
}

static int parse_args(struct cache_args *a, struct cache_config *cc, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "level", required_argument, NULL, OPT_LEVEL },
        { "json", no_argument, NULL, OPT_JSON },
        { "check", no_argument, NULL, OPT_CHECK },
        { "help", no_argument, NULL, 'h' },
        CACHE_LONG_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int e = cache_config_option(cc, opt, optarg);
        if (e < 0)
            return 2;
        if (e)
            continue;
        switch (opt) {
        case OPT_LEVEL:
            a->level = !strcmp(optarg, "mem") || !strcmp(optarg, "l1")     ? DSPY_CACHE_L1
                       : !strcmp(optarg, "redis") || !strcmp(optarg, "l2") ? DSPY_CACHE_L2
                       : !strcmp(optarg, "disk") || !strcmp(optarg, "l3")  ? DSPY_CACHE_L3
                                                                           : 0;
            if (!a->level) {
                fprintf(stderr, "dspyc cache: --level: '%s' is not mem, redis or disk\n", optarg);
                return 2;
            }
            break;
        case OPT_JSON: a->json = true; break;
        case OPT_CHECK: a->check = true; break;
        case 'h': fputs(cache_usage, stdout); return 1;
        default: fputs(cache_usage, stderr); return 2;
        }
    }
    if (optind < argc)
        a->verb = argv[optind++];
    if (optind < argc)
        a->file = argv[optind++];
    bool wants_file = a->verb && (!strcmp(a->verb, "export") || !strcmp(a->verb, "import"));
    bool known = a->verb && (wants_file || !strcmp(a->verb, "stats") || !strcmp(a->verb, "clear"));
    if (!known || optind < argc || wants_file != (a->file != NULL)) {
        fputs(cache_usage, stderr);
        return 2;
    }
    return 0;
}

int cmd_cache(int argc, char **argv)
{
    struct cache_args a = { 0 };
    struct cache_config cc;
    int rc;
    cache_config_init(&cc, "disk");
    if ((rc = parse_args(&a, &cc, argc, argv)))
        return rc == 1 ? 0 : rc;
    /* The memory level of this process is empty and dies with it: leave it out. */
    cc.exclude = DSPY_CACHE_L1;
    /* `clear` of the disk level repairs a damaged store: removed, started empty. */
    cc.repair_disk = !strcmp(a.verb, "clear") && (!a.level || a.level == DSPY_CACHE_L3);
    if (cache_config_open(&cc, "dspyc cache"))
        return 2;
    if (cc.disk_damage[0] && !strcmp(a.verb, "stats") && !(cc.levels & DSPY_CACHE_L2)) {
        rc = stats_damaged(&a, &cc);
        cache_config_close(&cc);
        return rc;
    }
    if (cc.disk_damage[0] && !(cc.levels & (DSPY_CACHE_L2 | DSPY_CACHE_L3))) {
        fprintf(stderr,
                "dspyc cache %s: nothing to do without the disk level; repair it "
                "first with `dspyc cache clear --level disk`\n",
                a.verb);
        cache_config_close(&cc);
        return 2;
    }
    if (!(cc.levels & (DSPY_CACHE_L2 | DSPY_CACHE_L3))) {
        fprintf(stderr, "dspyc cache: no persistent level configured (--cache names only "
                        "memory or off); nothing to do\n");
        cache_config_close(&cc);
        return 2;
    }
    if (a.level && !(a.level & cc.levels)) {
        char names[32];
        fprintf(stderr, "dspyc cache: --level: that level is not open (levels: %s)\n",
                cache_levels_name(cc.levels, names, sizeof(names)));
        cache_config_close(&cc);
        return 2;
    }
    if (!strcmp(a.verb, "stats"))
        rc = cmd_stats(&a, &cc);
    else if (!strcmp(a.verb, "clear"))
        rc = cmd_clear(&a, &cc);
    else if (!strcmp(a.verb, "export"))
        rc = cmd_export(&a, &cc);
    else
        rc = cmd_import(&a, &cc);
    cache_config_close(&cc);
    return rc;
}

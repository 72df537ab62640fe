/* Word lists of the substitution guard (cache layer). Hand-listed data, kept short:
 * - function words: articles, pronouns, auxiliaries, prepositions, question words, and the
 *   words that frame a request without naming its action or object ("tell me", "the best
 *   way to", "steps to", "explain ... simply"): they may differ between paraphrases;
 * - synonym groups: verbs and nouns of everyday requests that name the same action or
 *   thing ("fix" / "repair", "sofa" / "couch"), written in base form, compared by stem.
 * A word of another guard's list never reaches these (semantic_guard.c). What the lists
 * miss makes the guard refuse a true paraphrase (a lost hit), never serve a wrong answer. */
#include "semantic_lexicon.h"

#include <string.h>

static const char *const function_words[] = {
    "a",      "about",   "also",     "am",          "an",       "and",   "are",     "as",
    "at",     "be",      "been",     "being",       "best",     "brief", "briefly", "but",
    "by",     "can",     "could",    "define",      "describe", "did",   "do",      "does",
    "doing",  "done",    "explain",  "explanation", "for",      "from",  "give",    "go",
    "going",  "had",     "has",      "have",        "having",   "he",    "help",    "her",
    "here",   "his",     "how",      "i",           "if",       "into",  "is",      "it",
    "its",    "just",    "know",     "like",        "may",      "me",    "mean",    "meaning",
    "means",  "might",   "must",     "my",          "need",     "of",    "onto",    "or",
    "our",    "plain",   "please",   "possible",    "really",   "shall", "she",     "short",
    "should", "show",    "simple",   "simply",      "so",       "step",  "steps",   "tell",
    "terms",  "than",    "that",     "the",         "their",    "them",  "then",    "there",
    "these",  "they",    "thing",    "things",      "this",     "those", "to",      "try",
    "trying", "us",      "very",     "want",        "was",      "way",   "ways",    "we",
    "were",   "what",    "when",     "where",       "which",    "who",   "whom",    "whose",
    "why",    "will",    "with",     "word",        "words",    "would", "you",     "your",
    "happen", "happens", "happened", "s",           "t",        "d",     "ll",      "ve",
    "re",     "m",       "ca",       NULL
};

/* Each group: words naming one action or thing in everyday requests. */
static const char *const synonym_groups[] = { "fix repair mend",
                                              "delete erase remove",
                                              "buy purchase",
                                              "get obtain acquire",
                                              "choose pick select",
                                              "begin start commence",
                                              "finish complete",
                                              "cancel end terminate discontinue",
                                              "make build create construct",
                                              "change modify alter edit adjust",
                                              "reduce lower decrease cut lessen minimize",
                                              "increase raise boost",
                                              "improve enhance better strengthen",
                                              "contact reach",
                                              "quick fast rapid speedy",
                                              "big large huge",
                                              "small little tiny",
                                              "picture photo photograph image pic",
                                              "sofa couch settee",
                                              "faucet tap",
                                              "price cost fee",
                                              "doctor physician",
                                              "kid kids child children",
                                              "tip advice hint suggestion recommendation",
                                              "gift present",
                                              "symptom sign",
                                              "pause suspend",
                                              "calm relax",
                                              "home house",
                                              "car automobile vehicle",
                                              "movie film",
                                              "shop store",
                                              "work function operate",
                                              "error mistake",
                                              "problem issue trouble",
                                              "answer reply respond response",
                                              "show display",
                                              "find locate",
                                              "search look",
                                              "talk speak chat",
                                              "write compose draft",
                                              "phone mobile cellphone",
                                              "email mail",
                                              "trip journey",
                                              "close shut",
                                              "hide conceal",
                                              "require need",
                                              "use utilize employ",
                                              "pain ache",
                                              "rubbish trash garbage waste",
                                              "quiet silent",
                                              "understand comprehend",
                                              NULL };

static bool in(const char *w, const char *const *list)
{
    for (; *list; list++)
        if (**list == *w && !strcmp(*list, w))
            return true;
    return false;
}

bool dspy__semantic_function_word(const char *w)
{
    return in(w, function_words);
}

static bool ends(const char *w, size_t n, const char *suf, size_t keep)
{
    size_t l = strlen(suf);
    return n >= l + keep && !memcmp(w + n - l, suf, l);
}

void dspy__semantic_stem(const char *w, char *out, size_t size)
{
    size_t n = strlen(w);
    if (n >= size)
        n = size - 1;
    memcpy(out, w, n);
    out[n] = 0;
    bool stripped = false;
    if (ends(out, n, "ies", 2)) {
        n -= 3;
        out[n++] = 'y';
    } else if (ends(out, n, "ing", 3) || ends(out, n, "est", 4)) {
        n -= 3;
        stripped = true;
    } else if (ends(out, n, "ed", 3) || ends(out, n, "es", 3) || ends(out, n, "ly", 3)) {
        n -= 2;
        stripped = true;
    } else if (ends(out, n, "s", 3) && out[n - 2] != 's' && out[n - 2] != 'u') {
        n -= 1;
    }
    /* "stopped" -> "stop", "planning" -> "plan" */
    if (stripped && n >= 4 && out[n - 1] == out[n - 2] && !strchr("aeiouls", out[n - 1]))
        n--;
    if (n > 3 && out[n - 1] == 'e')
        n--;
    out[n] = 0;
}

int dspy__semantic_synonym_group(const char *stem)
{
    size_t sl = strlen(stem);
    for (int g = 0; synonym_groups[g]; g++) {
        const char *p = synonym_groups[g];
        while (*p) {
            size_t l = strcspn(p, " ");
            /* only an entry that starts like the stem can stem to it */
            if (l >= sl && !memcmp(p, stem, sl > 2 ? 3 : sl)) {
                char e[32], s[32];
                if (l < sizeof(e)) {
                    memcpy(e, p, l);
                    e[l] = 0;
                    dspy__semantic_stem(e, s, sizeof(s));
                    if (!strcmp(s, stem))
                        return g;
                }
            }
            p += l;
            while (*p == ' ')
                p++;
        }
    }
    return -1;
}

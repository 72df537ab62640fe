/* Model capabilities (lm layer): which OpenAI models accept a JSON-schema response_format,
 * as litellm's model table says (supports_response_schema), looked up by name the way
 * litellm does, so the JSON adapter sends structured outputs where DSPy does. */
#include <ctype.h>
#include <stdbool.h>
#include <string.h>

#include <dspyc/lm.h>

/* OpenAI chat models in litellm's model_prices_and_context_window.json (the copy litellm
 * 1.110 ships), with its supports_response_schema. The models that say false are listed
 * too: an exact name wins before a dated form falls back to its stem
 * ("gpt-4o-2024-05-13" is false although "gpt-4o" is true). Sorted. */
static const struct {
    const char *model;
    bool schema;
} models[] = {
    { "chat-latest", true },
    { "computer-use-preview", false },
    { "computer-use-preview-2025-03-11", false },
    { "daybreak-blue-latest", true },
    { "daybreak-red-latest", true },
    { "ft:gpt-3.5-turbo", false },
    { "ft:gpt-3.5-turbo-0125", false },
    { "ft:gpt-3.5-turbo-0613", false },
    { "ft:gpt-3.5-turbo-1106", false },
    { "ft:gpt-4-0613", false },
    { "ft:gpt-4.1-2025-04-14", true },
    { "ft:gpt-4.1-mini-2025-04-14", true },
    { "ft:gpt-4.1-nano-2025-04-14", true },
    { "ft:gpt-4o-2024-08-06", true },
    { "ft:gpt-4o-2024-11-20", true },
    { "ft:gpt-4o-mini-2024-07-18", true },
    { "ft:o4-mini-2025-04-16", true },
    { "gpt-3.5-turbo", false },
    { "gpt-3.5-turbo-0125", false },
    { "gpt-3.5-turbo-1106", false },
    { "gpt-3.5-turbo-16k", false },
    { "gpt-4", false },
    { "gpt-4-0613", false },
    { "gpt-4-1106-preview", false },
    { "gpt-4-turbo", false },
    { "gpt-4-turbo-2024-04-09", false },
    { "gpt-4.1", true },
    { "gpt-4.1-2025-04-14", true },
    { "gpt-4.1-mini", true },
    { "gpt-4.1-mini-2025-04-14", true },
    { "gpt-4.1-nano", true },
    { "gpt-4.1-nano-2025-04-14", true },
    { "gpt-4o", true },
    { "gpt-4o-2024-05-13", false },
    { "gpt-4o-2024-08-06", true },
    { "gpt-4o-2024-11-20", true },
    { "gpt-4o-audio-preview-2024-12-17", false },
    { "gpt-4o-audio-preview-2025-06-03", false },
    { "gpt-4o-mini", true },
    { "gpt-4o-mini-2024-07-18", true },
    { "gpt-4o-mini-audio-preview-2024-12-17", false },
    { "gpt-4o-mini-search-preview", true },
    { "gpt-4o-mini-search-preview-2025-03-11", true },
    { "gpt-4o-search-preview", true },
    { "gpt-4o-search-preview-2025-03-11", true },
    { "gpt-5", true },
    { "gpt-5-2025-08-07", true },
    { "gpt-5-chat", true },
    { "gpt-5-chat-latest", true },
    { "gpt-5-mini", true },
    { "gpt-5-mini-2025-08-07", true },
    { "gpt-5-nano", true },
    { "gpt-5-nano-2025-08-07", true },
    { "gpt-5-search-api", true },
    { "gpt-5-search-api-2025-10-14", true },
    { "gpt-5.1", true },
    { "gpt-5.1-2025-11-13", true },
    { "gpt-5.1-chat-latest", true },
    { "gpt-5.2", true },
    { "gpt-5.2-2025-12-11", true },
    { "gpt-5.2-chat-latest", true },
    { "gpt-5.3-chat-latest", true },
    { "gpt-5.4", true },
    { "gpt-5.4-2026-03-05", true },
    { "gpt-5.4-mini", true },
    { "gpt-5.4-mini-2026-03-17", true },
    { "gpt-5.4-nano", true },
    { "gpt-5.4-nano-2026-03-17", true },
    { "gpt-5.5", true },
    { "gpt-5.5-2026-04-23", true },
    { "gpt-5.5-cyber", false },
    { "gpt-5.5-cyber-preview", false },
    { "gpt-5.6", true },
    { "gpt-5.6-cyber", true },
    { "gpt-5.6-luna", true },
    { "gpt-5.6-sol", true },
    { "gpt-5.6-terra", true },
    { "gpt-6-astra", true },
    { "gpt-6-astra-law", true },
    { "gpt-6-cyber", true },
    { "gpt-6-luna", true },
    { "gpt-6-rosalind", true },
    { "gpt-6-sol", true },
    { "gpt-6.1-sol", true },
    { "gpt-6.1-terra", true },
    { "gpt-audio", false },
    { "gpt-audio-1.5", false },
    { "gpt-audio-2025-08-28", false },
    { "gpt-audio-mini", false },
    { "gpt-audio-mini-2025-10-06", false },
    { "gpt-audio-mini-2025-12-15", false },
    { "gpt-rosalind-discovery", false },
    { "gpt-rosalind-research", false },
    { "o1", true },
    { "o1-2024-12-17", true },
    { "o3", true },
    { "o3-2025-04-16", true },
    { "o3-mini", true },
    { "o3-mini-2025-01-31", true },
    { "o4-mini", true },
    { "o4-mini-2025-04-16", true },
};

static bool lookup(const char *name, size_t len, bool *schema)
{
    size_t lo = 0, hi = sizeof(models) / sizeof(models[0]);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *m = models[mid].model;
        int c = 0;
        size_t i = 0;
        for (; i < len && m[i]; i++)
            if ((c = tolower((unsigned char)name[i]) - (unsigned char)m[i]))
                break;
        if (!c)
            c = i < len ? 1 : (m[i] ? -1 : 0);
        if (!c) {
            *schema = models[mid].schema;
            return true;
        }
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return false;
}

/* litellm's _strip_model_name for OpenAI: a fine-tuned name loses its last three
 * ":"-separated parts ("ft:gpt-4o-2024-08-06:org::id"), any other its "-YYYY-MM-DD". */
static size_t strip_len(const char *name, size_t len)
{
    if (strstr(name, "ft:")) {
        size_t n = len, colons = 0;
        while (n && colons < 3)
            if (name[--n] == ':')
                colons++;
        return colons == 3 ? n : len;
    }
    if (len >= 11) {
        const char *s = name + len - 11;
        static const char shape[] = "-dddd-dd-dd";
        for (size_t i = 0; i < 11; i++)
            if (shape[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != '-')
                return len;
        return len - 11;
    }
    return len;
}

bool dspy_model_supports_response_schema(const char *model)
{
    bool schema = false;
    if (!model)
        return false;
    while (!strncmp(model, "openai/", 7))
        model += 7;
    if (strchr(model, '/'))
        return false; /* another provider's name: litellm would not ask OpenAI's table */
    size_t len = strlen(model), stem;
    if (lookup(model, len, &schema))
        return schema;
    if ((stem = strip_len(model, len)) != len && lookup(model, stem, &schema))
        return schema;
    return false;
}

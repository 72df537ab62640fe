/* URL credentials masking (base layer): the one place that turns
 * "scheme://user:password@host/..." into "scheme://user:***@host/..." before a URL reaches
 * an error message, a record, a report or a log line. */
#include <stdio.h>
#include <string.h>

#include <dspyc/common.h>

/* The userinfo of `url`: [*start, *at) before the '@' that ends it; false when none. */
static bool find_userinfo(const char *url, const char **start, const char **at)
{
    const char *scheme = strstr(url, "://");
    const char *host = scheme ? scheme + 3 : url;
    size_t auth_len = strcspn(host, "/?#");
    const char *a = NULL;
    /* The last '@' of the authority ends the userinfo (a password may hold '@' unescaped). */
    for (const char *p = host; p < host + auth_len; p++)
        if (*p == '@')
            a = p;
    if (!a)
        return false;
    *start = host;
    *at = a;
    return true;
}

bool dspy_url_has_credentials(const char *url)
{
    const char *start, *at;
    return url && find_userinfo(url, &start, &at);
}

size_t dspy_url_redact(const char *url, char *out, size_t cap)
{
    const char *start, *at;
    if (!out || !cap)
        return 0;
    if (!url) {
        out[0] = '\0';
        return 0;
    }
    if (!find_userinfo(url, &start, &at)) {
        snprintf(out, cap, "%s", url);
        return strlen(out);
    }
    const char *colon = memchr(start, ':', (size_t)(at - start));
    int n;
    if (colon) /* user:password@ -> user:***@ */
        n = snprintf(out, cap, "%.*s:***%s", (int)(colon - url), url, at);
    else /* a lone user part is often a token (https://TOKEN@host): mask it all */
        n = snprintf(out, cap, "%.*s***%s", (int)(start - url), url, at);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}
